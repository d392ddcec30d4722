package keyward

import "time"

// WebhookState is a webhook endpoint's place in its life.
//
//	enabled ──disable──> disabled ──enable──> enabled
//	enabled|disabled ──remove──> removed        (secrets erased; history kept)
type WebhookState string

const (
	WebhookEnabled  WebhookState = "enabled"  // receives new events
	WebhookDisabled WebhookState = "disabled" // receives nothing; pending deliveries are cancelled
	WebhookRemoved  WebhookState = "removed"  // final; its signing secrets are erased
)

// WebhookAction names a webhook endpoint transition.
type WebhookAction string

const (
	WebhookEnable  WebhookAction = "enable"
	WebhookDisable WebhookAction = "disable"
	WebhookRemove  WebhookAction = "remove"
	WebhookRotate  WebhookAction = "rotate-secret" // new signing secret; state unchanged
)

// webhookTransitions is the one table of legal webhook endpoint transitions.
var webhookTransitions = map[WebhookAction]map[WebhookState]WebhookState{
	WebhookEnable:  {WebhookDisabled: WebhookEnabled},
	WebhookDisable: {WebhookEnabled: WebhookDisabled},
	WebhookRemove:  {WebhookEnabled: WebhookRemoved, WebhookDisabled: WebhookRemoved},
	WebhookRotate:  {WebhookEnabled: WebhookEnabled, WebhookDisabled: WebhookDisabled},
}

// WebhookTransition returns the state an endpoint in state from reaches by
// action, or an EIllegalTransition error.
func WebhookTransition(from WebhookState, action WebhookAction) (WebhookState, error) {
	if to, ok := webhookTransitions[action][from]; ok {
		return to, nil
	}
	return "", Errorf(EIllegalTransition, "cannot %s a %s webhook endpoint", action, from)
}

// WebhookStates lists every webhook endpoint state.
func WebhookStates() []WebhookState {
	return []WebhookState{WebhookEnabled, WebhookDisabled, WebhookRemoved}
}

// WebhookEndpoint is a URL that receives outbox events, signed with the
// Standard Webhooks scheme. Its signing secrets are stored sealed under the
// KEK (they must be usable for HMAC, so they cannot be hashed); they are
// shown once, at creation and at rotation, and never again.
type WebhookEndpoint struct {
	ID          string
	URL         string   // absolute http(s) URL; MAY carry credentials, so it is shown only to admins
	Events      []string // event types, "prefix.*" groups, or "*" for every type
	Description string
	State       WebhookState
	Secret      []byte // current signing secret, KEK-sealed; nil once removed
	// PreviousSecret is the secret replaced by the last rotation, KEK-sealed.
	// Deliveries carry a signature by it too until PreviousExpiresAt.
	PreviousSecret    []byte
	PreviousExpiresAt *time.Time
	// StartSeq is the outbox seq at creation: the endpoint receives events
	// with a greater seq only.
	StartSeq  int64
	CreatedAt time.Time
	UpdatedAt time.Time
}

// DeliveryState is where a webhook delivery stands.
//
//	pending ──2xx──> succeeded
//	pending ──attempts exhausted──> failed
//	pending ──endpoint disabled or removed──> cancelled
//	succeeded|failed|cancelled ──replay──> pending
type DeliveryState string

const (
	DeliveryPending   DeliveryState = "pending"   // waiting for its next attempt
	DeliverySucceeded DeliveryState = "succeeded" // a 2xx answer was received
	DeliveryFailed    DeliveryState = "failed"    // every attempt failed
	DeliveryCancelled DeliveryState = "cancelled" // the endpoint stopped receiving
)

// DeliveryStates lists every delivery state.
func DeliveryStates() []DeliveryState {
	return []DeliveryState{DeliveryPending, DeliverySucceeded, DeliveryFailed, DeliveryCancelled}
}

// WebhookDelivery is one outbox event on its way to one endpoint: the
// delivery log. Payload is the exact body sent (and signed) on every attempt.
type WebhookDelivery struct {
	ID            string
	EndpointID    string
	EventID       string // the webhook-id header: receivers dedupe by it
	EventSeq      int64
	EventType     string
	Payload       []byte
	State         DeliveryState
	Attempts      int        // attempts made (or started) so far
	NextAttemptAt *time.Time // set while pending
	LastAttemptAt *time.Time
	LastStatus    int    // HTTP status of the last answer; 0 = none (network error, timeout)
	LastError     string // why the last attempt failed; never secret
	CreatedAt     time.Time
	UpdatedAt     time.Time
}
