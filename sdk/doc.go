// Package sdk is what relying parties import: vendors' shipped apps and
// backends. It verifies Keyward license certificates and lease tokens
// offline against a trust bundle (the server's JWKS), and talks to the
// Keyward HTTP API for online validation, certificate check-out and the
// trust bundle itself.
//
// # Offline verification
//
// A [Verifier] is built from a JWKS ([NewVerifier], [ParseJWKS]). Its
// VerifyCertificate and VerifyLease methods accept a token only if all of
// these hold, checked in this order; the first that fails decides the
// [Reason] of the returned *[Error]:
//
//  1. the token is a strict JWS compact serialization (keys.ParseJWS:
//     EdDSA or ES256 only, never "none", one accepted spelling per token);
//  2. its typ is exactly "license+jwt" for a certificate or "lease+jwt" for
//     a lease, so neither is accepted as the other;
//  3. it names a kid, and that kid is neither compromised nor destroyed
//     (per the JWKS's keyward_state or [Verifier.MarkCompromised]);
//  4. the kid is a key of the trust bundle that may sign license tokens
//     (not a keyward_purpose "registry" key);
//  5. the header alg is the key's and the signature verifies;
//  6. the claims are one JSON object without duplicate members, and the
//     required claims are present with the right types, matched by exact
//     name: iss, sub, aud, jti (non-empty strings), iat, nbf, exp (integer
//     seconds); for a certificate, lic, an object with policy,
//     entitlements, expires_at (null for perpetual), max_machines and
//     holder; for a lease, mid and fpr (non-empty strings). Unknown claims
//     and lic members are ignored, for forward compatibility;
//  7. nbf <= now+leeway and now-leeway < exp;
//  8. iss and aud equal [Options.Issuer] and [Options.Audience] when those
//     are set, and aud equals the signing key's keyward_product when the
//     JWKS labels the key with one (a product's key cannot speak for
//     another product);
//  9. when [Options.Revocations] is set, the revocation registry lists
//     neither the license (sub) as revoked or suspended nor the kid as
//     compromised, and its state is fresh enough to say so (else
//     [ErrStale]: fail closed).
//
// # What it does not guarantee
//
//   - Without [Options.Revocations], revocation is not visible offline: a
//     certificate stays valid until its exp even if the license was
//     suspended or revoked after it was checked out; certificates are
//     therefore short-lived and MUST be refreshed by check-out. Relying
//     parties that need to learn of a revocation sooner use lease tokens
//     (short TTL, no new lease for a revoked license) and a
//     [RevocationCache] kept current by a [RevocationWatcher]; it is only as
//     current as the last document it verified.
//   - The clock is the caller's. A client whose clock is turned back accepts
//     expired tokens; inject a trusted clock through [Options.Now] where that
//     matters.
//   - A lease is bound to a machine fingerprint (the fpr claim). VerifyLease
//     checks the signature and times, not that fpr is this machine's: the
//     caller MUST compare it with its own fingerprint.
//   - The trust bundle is only as good as the channel it came from. Pin or
//     ship it with the app, or fetch it over TLS from a server you trust.
//
// # Online client
//
// [Client] calls the API: Validate (POST /v1/validate), Checkout
// (POST /v1/checkout) and JWKS (GET /.well-known/jwks.json). A license key
// is checked offline with licensekey.Parse before any request, so a typo
// never reaches the network. Error answers (RFC 9457 problem+json) become
// *[APIError]; a 200 answer with valid=false (for example code "REVOKED") is
// a result, not an error.
//
// This package imports no server package (store, authority, api, cli) and
// no database/sql; a test checks that.
package sdk
