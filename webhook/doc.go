// Package webhook delivers Keyward's outbox events to HTTP endpoints, signed
// with the Standard Webhooks scheme (https://www.standardwebhooks.com).
//
// Signing: every request carries webhook-id (the event id, the same on every
// attempt, so receivers dedupe by it), webhook-timestamp (Unix seconds of the
// attempt) and webhook-signature, a space-separated list of
// "v1," + base64(HMAC-SHA256(key, id + "." + timestamp + "." + body)), one per
// secret the endpoint has: two during a secret rotation's grace period.
// Secrets are "whsec_" + base64 of 32 random bytes. Verify is the receiving
// side, for tests and Go receivers.
//
// Delivery: a Dispatcher reads the outbox after a persisted cursor and, in
// the same transaction that moves the cursor, creates one delivery per
// matching enabled endpoint; so a restart resumes where the last commit
// left off and no committed event is skipped. Each delivery is POSTed with a
// per-attempt timeout; a 2xx answer is success, anything else (3xx
// included: redirects are not followed) is a failed attempt, retried after
// an exponential, fully jittered wait (Schedule) until the attempts run out
// and the delivery is failed. A 410 Gone fails it at once and disables the
// endpoint. Delivery is at least once: an attempt that reached the receiver
// but whose result was not recorded (a crash, a shutdown) is made again.
// Deliveries are not ordered, not even per endpoint.
//
// What it does not do: it holds no keys (the authority opens secrets,
// through Endpoints) and writes no audit entries for attempts (the delivery
// log is their record); endpoint changes are audited by the authority.
//
// SSRF: CheckURL and NewClient refuse loopback, private, link-local and
// other non-public addresses unless AllowPrivate (dev mode, tests), the
// latter after DNS resolution, at connect time.
package webhook
