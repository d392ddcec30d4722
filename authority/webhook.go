package authority

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/keyward/keyward"
	"github.com/keyward/keyward/keys"
	"github.com/keyward/keyward/store"
	"github.com/keyward/keyward/webhook"
)

// Webhook limits and defaults.
const (
	// DefaultWebhookGrace is how long, after a secret rotation, deliveries
	// also carry a signature by the previous secret.
	DefaultWebhookGrace = 24 * time.Hour
	MaxWebhookGrace     = 30 * 24 * time.Hour
	maxWebhookPatterns  = 64
	maxWebhookDesc      = 256
	maxDeliveryPage     = 1000
	// DefaultDeliveryPage is the page size of WebhookDeliveries.
	DefaultDeliveryPage = 100
)

var _ webhook.Endpoints = (*Authority)(nil)

// WebhookRequest describes a new webhook endpoint.
type WebhookRequest struct {
	URL         string
	Events      []string // event types (EventTypes), "prefix.*" or "*"
	Description string
}

// webhookAD binds a sealed webhook secret to its endpoint, so a sealed blob
// moved to another endpoint's row does not open.
func webhookAD(id string) []byte { return []byte("webhook:" + id) }

// CreateWebhook adds an endpoint that receives the events committed after
// it, and returns it with its signing secret. The secret is returned this
// once; the store keeps it sealed under the KEK. Errors: EInvalid for a URL
// that is not an absolute http(s) URL (or names a non-public address when
// the authority does not allow them) and for an unknown event type, whose
// message lists the valid ones.
func (a *Authority) CreateWebhook(ctx context.Context, r WebhookRequest) (*keyward.WebhookEndpoint, webhook.Secret, error) {
	if _, err := webhook.CheckURL(r.URL, a.webhookAllowPrivate); err != nil {
		return nil, webhook.Secret{}, err
	}
	events, err := checkEventPatterns(r.Events)
	if err != nil {
		return nil, webhook.Secret{}, err
	}
	if len(r.Description) > maxWebhookDesc {
		return nil, webhook.Secret{}, keyward.Errorf(keyward.EInvalid, "description: at most %d characters", maxWebhookDesc)
	}
	secret, err := webhook.NewSecret(a.rand)
	if err != nil {
		return nil, webhook.Secret{}, err
	}
	var out *keyward.WebhookEndpoint
	err = a.store.Update(ctx, func(tx store.Tx) error {
		now := a.clock.Now()
		id, err := a.newID("whk")
		if err != nil {
			return err
		}
		sealed, err := a.keks.Seal(secret.Bytes(), webhookAD(id))
		if err != nil {
			return fmt.Errorf("seal webhook secret: %w", err)
		}
		if err := a.record(ctx, tx, now, change{
			action: "webhook.create", event: "webhook.created", targetType: "webhook", targetID: id,
			after: string(keyward.WebhookEnabled), details: webhookDetails(r.URL, events, nil),
		}); err != nil {
			return err
		}
		// The endpoint receives what commits after it, not its own creation.
		start, err := tx.LastEventSeq()
		if err != nil {
			return err
		}
		ep := &keyward.WebhookEndpoint{
			ID: id, URL: r.URL, Events: events, Description: r.Description, State: keyward.WebhookEnabled,
			Secret: sealed, StartSeq: start, CreatedAt: now, UpdatedAt: now,
		}
		if err := tx.CreateWebhookEndpoint(ep); err != nil {
			return err
		}
		out = ep
		return nil
	})
	if err != nil {
		return nil, webhook.Secret{}, err
	}
	return out, secret, nil
}

// webhookDetails is what audit entries and events say about an endpoint:
// never its secret, and its URL only redacted (URLs often carry a token).
func webhookDetails(url string, events []string, extra map[string]any) map[string]any {
	d := map[string]any{"url": webhook.RedactURL(url), "events": events}
	for k, v := range extra {
		d[k] = v
	}
	return d
}

// checkEventPatterns validates and de-duplicates subscription patterns.
func checkEventPatterns(ps []string) ([]string, error) {
	known := EventTypes()
	valid := func() string { return "*, <group>.*, or one of " + strings.Join(known, ", ") }
	if len(ps) == 0 {
		return nil, keyward.Errorf(keyward.EInvalid, "events: give at least one event type (%s)", valid())
	}
	if len(ps) > maxWebhookPatterns {
		return nil, keyward.Errorf(keyward.EInvalid, "events: at most %d entries", maxWebhookPatterns)
	}
	var out []string
	for _, p := range ps {
		switch group, isGroup := strings.CutSuffix(p, ".*"); {
		case p == "*" || slices.Contains(known, p):
		case isGroup && group != "" && slices.ContainsFunc(known, func(t string) bool { return strings.HasPrefix(t, group+".") }):
		default:
			if len(p) > 64 {
				p = p[:64] + "…"
			}
			return nil, keyward.Errorf(keyward.EInvalid, "unknown event type %q (valid: %s)", p, valid())
		}
		if !slices.Contains(out, p) {
			out = append(out, p)
		}
	}
	return out, nil
}

// Webhooks lists the endpoints by creation time; removed ones only when
// includeRemoved.
func (a *Authority) Webhooks(ctx context.Context, includeRemoved bool) ([]*keyward.WebhookEndpoint, error) {
	var out []*keyward.WebhookEndpoint
	err := a.store.View(ctx, func(tx store.Tx) error {
		eps, err := tx.WebhookEndpoints()
		if err != nil {
			return err
		}
		out = out[:0]
		for _, ep := range eps {
			if includeRemoved || ep.State != keyward.WebhookRemoved {
				out = append(out, ep)
			}
		}
		return nil
	})
	return out, err
}

// Webhook returns one endpoint, or ENotFound.
func (a *Authority) Webhook(ctx context.Context, id string) (*keyward.WebhookEndpoint, error) {
	var out *keyward.WebhookEndpoint
	err := a.store.View(ctx, func(tx store.Tx) error {
		var err error
		out, err = tx.WebhookEndpoint(id)
		return err
	})
	return out, err
}

// EnableWebhook lets a disabled endpoint receive events again: those
// committed from now on (events committed while it was disabled are not
// sent; replay its cancelled deliveries to catch up on those it had).
func (a *Authority) EnableWebhook(ctx context.Context, id, reason string) (*keyward.WebhookEndpoint, error) {
	return a.transitionWebhook(ctx, id, keyward.WebhookEnable, reason)
}

// DisableWebhook stops deliveries to an endpoint and cancels its pending
// ones. The dispatcher calls it when a receiver answers 410 Gone.
func (a *Authority) DisableWebhook(ctx context.Context, id, reason string) (*keyward.WebhookEndpoint, error) {
	return a.transitionWebhook(ctx, id, keyward.WebhookDisable, reason)
}

// RemoveWebhook removes an endpoint for good: its pending deliveries are
// cancelled and its secrets erased; the endpoint and its delivery log stay
// listable.
func (a *Authority) RemoveWebhook(ctx context.Context, id, reason string) (*keyward.WebhookEndpoint, error) {
	return a.transitionWebhook(ctx, id, keyward.WebhookRemove, reason)
}

var webhookEvents = map[keyward.WebhookAction]string{
	keyward.WebhookEnable:  "webhook.enabled",
	keyward.WebhookDisable: "webhook.disabled",
	keyward.WebhookRemove:  "webhook.removed",
}

func (a *Authority) transitionWebhook(ctx context.Context, id string, action keyward.WebhookAction, reason string) (*keyward.WebhookEndpoint, error) {
	if len(reason) > 1024 {
		return nil, keyward.Errorf(keyward.EInvalid, "reason: at most 1024 characters")
	}
	var out *keyward.WebhookEndpoint
	err := a.store.Update(ctx, func(tx store.Tx) error {
		now := a.clock.Now()
		ep, err := tx.WebhookEndpoint(id)
		if err != nil {
			return err
		}
		to, err := keyward.WebhookTransition(ep.State, action)
		if err != nil {
			return err
		}
		before := ep.State
		ep.State, ep.UpdatedAt = to, now
		cancelled := 0
		if to != keyward.WebhookEnabled {
			if cancelled, err = cancelPending(tx, ep.ID, now, fmt.Sprintf("cancelled: endpoint %s", to)); err != nil {
				return err
			}
		}
		if to == keyward.WebhookRemoved {
			clear(ep.Secret)
			clear(ep.PreviousSecret)
			ep.Secret, ep.PreviousSecret, ep.PreviousExpiresAt = nil, nil, nil
		}
		if err := a.record(ctx, tx, now, change{
			action: "webhook." + string(action), event: webhookEvents[action], targetType: "webhook", targetID: ep.ID,
			before: string(before), after: string(to), reason: reason,
			details: webhookDetails(ep.URL, ep.Events, map[string]any{"cancelled_deliveries": cancelled}),
		}); err != nil {
			return err
		}
		if to == keyward.WebhookEnabled {
			// Re-enabled: events from now on, not those it missed.
			if ep.StartSeq, err = tx.LastEventSeq(); err != nil {
				return err
			}
		}
		if err := tx.UpdateWebhookEndpoint(ep); err != nil {
			return err
		}
		out = ep
		return nil
	})
	return out, err
}

// cancelPending cancels the endpoint's pending deliveries.
func cancelPending(tx store.Tx, endpointID string, now time.Time, why string) (int, error) {
	ds, err := tx.WebhookDeliveries(store.DeliveryFilter{EndpointID: endpointID, State: keyward.DeliveryPending})
	if err != nil {
		return 0, err
	}
	for _, d := range ds {
		d.State, d.NextAttemptAt, d.LastError, d.UpdatedAt = keyward.DeliveryCancelled, nil, why, now
		if err := tx.UpdateWebhookDelivery(d); err != nil {
			return 0, err
		}
	}
	return len(ds), nil
}

// RotateWebhookSecret gives an endpoint a new signing secret and returns it
// (this once). For grace (nil = DefaultWebhookGrace, 0 = none, at most
// MaxWebhookGrace) every delivery carries a signature by the previous
// secret too, so the receiver can switch without losing a message; a
// secret older than the previous one is dropped at once.
func (a *Authority) RotateWebhookSecret(ctx context.Context, id string, grace *time.Duration) (*keyward.WebhookEndpoint, webhook.Secret, error) {
	g := DefaultWebhookGrace
	if grace != nil {
		g = *grace
	}
	if g < 0 || g > MaxWebhookGrace {
		return nil, webhook.Secret{}, keyward.Errorf(keyward.EInvalid, "grace %s: want 0 to %s", g, keyward.FormatDuration(MaxWebhookGrace))
	}
	secret, err := webhook.NewSecret(a.rand)
	if err != nil {
		return nil, webhook.Secret{}, err
	}
	var out *keyward.WebhookEndpoint
	err = a.store.Update(ctx, func(tx store.Tx) error {
		now := a.clock.Now()
		ep, err := tx.WebhookEndpoint(id)
		if err != nil {
			return err
		}
		if _, err := keyward.WebhookTransition(ep.State, keyward.WebhookRotate); err != nil {
			return err
		}
		sealed, err := a.keks.Seal(secret.Bytes(), webhookAD(ep.ID))
		if err != nil {
			return fmt.Errorf("seal webhook secret: %w", err)
		}
		ep.PreviousSecret, ep.PreviousExpiresAt = nil, nil
		if g > 0 {
			until := now.Add(g)
			ep.PreviousSecret, ep.PreviousExpiresAt = ep.Secret, &until
		}
		ep.Secret, ep.UpdatedAt = sealed, now
		if err := tx.UpdateWebhookEndpoint(ep); err != nil {
			return err
		}
		out = ep
		return a.record(ctx, tx, now, change{
			action: "webhook.rotate-secret", event: "webhook.secret_rotated", targetType: "webhook", targetID: ep.ID,
			before: string(ep.State), after: string(ep.State),
			details: webhookDetails(ep.URL, ep.Events, map[string]any{"grace": keyward.FormatDuration(g), "previous_valid_until": ep.PreviousExpiresAt}),
		})
	})
	if err != nil {
		return nil, webhook.Secret{}, err
	}
	return out, secret, nil
}

// WebhookSecrets implements webhook.Endpoints: it opens ep's current secret
// and, until PreviousExpiresAt, its previous one.
func (a *Authority) WebhookSecrets(ep *keyward.WebhookEndpoint, now time.Time) ([]webhook.Secret, error) {
	if ep.Secret == nil {
		return nil, fmt.Errorf("webhook endpoint %s has no secret (%s)", ep.ID, ep.State)
	}
	open := func(sealed []byte) (webhook.Secret, error) {
		raw, err := a.keks.Open(sealed, webhookAD(ep.ID))
		if err != nil {
			return webhook.Secret{}, fmt.Errorf("open webhook secret of %s (wrong KEK file?): %w", ep.ID, err)
		}
		defer clear(raw)
		return webhook.SecretFromBytes(raw)
	}
	cur, err := open(ep.Secret)
	if err != nil {
		return nil, err
	}
	out := []webhook.Secret{cur}
	if ep.PreviousSecret != nil && ep.PreviousExpiresAt != nil && now.Before(*ep.PreviousExpiresAt) {
		prev, err := open(ep.PreviousSecret)
		if err != nil {
			return nil, err
		}
		out = append(out, prev)
	}
	return out, nil
}

// DeliveryQuery selects deliveries for WebhookDeliveries.
type DeliveryQuery struct {
	Endpoint string // "" = every endpoint
	State    string // "" = every state
	Before   string // delivery id cursor
	Limit    int    // 0 = 100; at most 1000
}

// WebhookDeliveries returns the delivery log, newest first. Errors:
// ENotFound for an unknown endpoint, EInvalid for an unknown state or a
// limit out of range.
func (a *Authority) WebhookDeliveries(ctx context.Context, q DeliveryQuery) ([]*keyward.WebhookDelivery, error) {
	f := store.DeliveryFilter{EndpointID: q.Endpoint, State: keyward.DeliveryState(q.State), Before: q.Before, Limit: q.Limit}
	if q.State != "" && !slices.Contains(keyward.DeliveryStates(), f.State) {
		return nil, keyward.Errorf(keyward.EInvalid, "unknown delivery status %q (want one of %v)", q.State, keyward.DeliveryStates())
	}
	if f.Limit == 0 {
		f.Limit = DefaultDeliveryPage
	}
	if f.Limit < 1 || f.Limit > maxDeliveryPage {
		return nil, keyward.Errorf(keyward.EInvalid, "limit %d: want 1 to %d", q.Limit, maxDeliveryPage)
	}
	var out []*keyward.WebhookDelivery
	err := a.store.View(ctx, func(tx store.Tx) error {
		if f.EndpointID != "" {
			if _, err := tx.WebhookEndpoint(f.EndpointID); err != nil {
				return err
			}
		}
		var err error
		out, err = tx.WebhookDeliveries(f)
		return err
	})
	return out, err
}

// WebhookDelivery returns one delivery, or ENotFound.
func (a *Authority) WebhookDelivery(ctx context.Context, id string) (*keyward.WebhookDelivery, error) {
	var out *keyward.WebhookDelivery
	err := a.store.View(ctx, func(tx store.Tx) error {
		var err error
		out, err = tx.WebhookDelivery(id)
		return err
	})
	return out, err
}

// ReplayWebhookDelivery sends a finished delivery (failed, succeeded or
// cancelled) again: it becomes pending with a fresh set of attempts, due
// now, with the same webhook-id and body. Errors: ENotFound, EConflict if
// it is still pending, EIllegalTransition if its endpoint is not enabled.
func (a *Authority) ReplayWebhookDelivery(ctx context.Context, id string) (*keyward.WebhookDelivery, error) {
	var out *keyward.WebhookDelivery
	err := a.store.Update(ctx, func(tx store.Tx) error {
		now := a.clock.Now()
		d, err := tx.WebhookDelivery(id)
		if err != nil {
			return err
		}
		if d.State == keyward.DeliveryPending {
			return keyward.Errorf(keyward.EConflict, "delivery %s is still pending: its next attempt is already scheduled", d.ID)
		}
		ep, err := tx.WebhookEndpoint(d.EndpointID)
		if err != nil {
			return err
		}
		if ep.State != keyward.WebhookEnabled {
			return keyward.Errorf(keyward.EIllegalTransition, "cannot replay to a %s webhook endpoint (%s)", ep.State, ep.ID)
		}
		before := d.State
		next := now
		d.State, d.Attempts, d.NextAttemptAt, d.UpdatedAt = keyward.DeliveryPending, 0, &next, now
		if err := tx.UpdateWebhookDelivery(d); err != nil {
			return err
		}
		out = d
		return a.record(ctx, tx, now, change{
			action: "webhook.replay", event: "webhook.delivery_replayed", targetType: "webhook_delivery", targetID: d.ID,
			before: string(before), after: string(d.State),
			details: map[string]any{"endpoint_id": d.EndpointID, "event_id": d.EventID, "event_type": d.EventType},
		})
	})
	return out, err
}

// rewrapWebhookSecrets re-seals every endpoint secret not sealed with
// ring's primary KEK (part of RewrapAll).
func rewrapWebhookSecrets(tx store.Tx, ring *keys.KEKRing) (int, error) {
	eps, err := tx.WebhookEndpoints()
	if err != nil {
		return 0, err
	}
	n := 0
	for _, ep := range eps {
		changed := false
		for _, sealed := range []*[]byte{&ep.Secret, &ep.PreviousSecret} {
			if *sealed == nil || ring.SealedWithPrimary(*sealed) {
				continue
			}
			plain, err := ring.Open(*sealed, webhookAD(ep.ID))
			if err != nil {
				return 0, fmt.Errorf("open webhook secret of %s: %w", ep.ID, err)
			}
			*sealed, err = ring.Seal(plain, webhookAD(ep.ID))
			clear(plain)
			if err != nil {
				return 0, err
			}
			changed = true
			n++
		}
		if changed {
			if err := tx.UpdateWebhookEndpoint(ep); err != nil {
				return 0, err
			}
		}
	}
	return n, nil
}
