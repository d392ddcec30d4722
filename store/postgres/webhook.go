package postgres

import (
	"encoding/json"
	"fmt"
	"time"

	"github.com/keyward/keyward"
	"github.com/keyward/keyward/store"
)

// Webhook endpoints. Sealed secrets never appear in messages.

const endpointCols = `id, url, events, description, state, secret, previous_secret, previous_expires_at,
	start_seq, created_at, updated_at`

func scanEndpoint(s scanner) (*keyward.WebhookEndpoint, error) {
	var ep keyward.WebhookEndpoint
	var events, state string
	var created, updated int64
	var prevExpires *int64
	if err := s.Scan(&ep.ID, &ep.URL, &events, &ep.Description, &state, &ep.Secret, &ep.PreviousSecret,
		&prevExpires, &ep.StartSeq, &created, &updated); err != nil {
		return nil, err
	}
	ep.State = keyward.WebhookState(state)
	if err := json.Unmarshal([]byte(events), &ep.Events); err != nil {
		return nil, fmt.Errorf("webhook endpoint %s: events: %w", ep.ID, err)
	}
	ep.PreviousExpiresAt = fromNullNanos(prevExpires)
	ep.CreatedAt = fromNanos(created)
	ep.UpdatedAt = fromNanos(updated)
	return &ep, nil
}

func (t *tx) CreateWebhookEndpoint(ep *keyward.WebhookEndpoint) error {
	events, err := jsonStrings(ep.Events)
	if err != nil {
		return wrap(err, "create webhook endpoint %s", ep.ID)
	}
	_, err = t.exec(`INSERT INTO webhook_endpoints (`+endpointCols+`) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)`,
		ep.ID, ep.URL, events, ep.Description, string(ep.State), nullBytes(ep.Secret), nullBytes(ep.PreviousSecret),
		toNullNanos(ep.PreviousExpiresAt), ep.StartSeq, toNanos(ep.CreatedAt), toNanos(ep.UpdatedAt))
	switch code, _ := violation(err); code {
	case uniqueViolation:
		return keyward.Errorf(keyward.EConflict, "webhook endpoint %s already exists", ep.ID)
	case checkViolation:
		return keyward.Errorf(keyward.EInvalid, "webhook endpoint %s: invalid state %q", ep.ID, ep.State)
	}
	return wrap(err, "create webhook endpoint %s", ep.ID)
}

func (t *tx) WebhookEndpoint(id string) (*keyward.WebhookEndpoint, error) {
	ep, err := queryOne(t, keyward.Errorf(keyward.ENotFound, "webhook endpoint %s not found", id), scanEndpoint,
		`SELECT `+endpointCols+` FROM webhook_endpoints WHERE id = $1`, id)
	return ep, wrap(err, "webhook endpoint %s", id)
}

// WebhookEndpoints returns every endpoint ordered by creation time, then id.
func (t *tx) WebhookEndpoints() ([]*keyward.WebhookEndpoint, error) {
	eps, err := queryAll(t, scanEndpoint, `SELECT `+endpointCols+` FROM webhook_endpoints ORDER BY created_at, id`)
	return eps, wrap(err, "webhook endpoints")
}

func (t *tx) UpdateWebhookEndpoint(ep *keyward.WebhookEndpoint) error {
	err := t.execOne(keyward.Errorf(keyward.ENotFound, "webhook endpoint %s not found", ep.ID),
		`UPDATE webhook_endpoints SET state = $1, secret = $2, previous_secret = $3, previous_expires_at = $4, start_seq = $5,
			updated_at = $6
		WHERE id = $7`,
		string(ep.State), nullBytes(ep.Secret), nullBytes(ep.PreviousSecret), toNullNanos(ep.PreviousExpiresAt), ep.StartSeq,
		toNanos(ep.UpdatedAt), ep.ID)
	if code, _ := violation(err); code == checkViolation {
		return keyward.Errorf(keyward.EInvalid, "webhook endpoint %s: invalid state %q", ep.ID, ep.State)
	}
	return wrap(err, "update webhook endpoint %s", ep.ID)
}

// Webhook deliveries.

const deliveryCols = `id, endpoint_id, event_id, event_seq, event_type, payload, state, attempts,
	next_attempt_at, last_attempt_at, last_status, last_error, created_at, updated_at`

func scanDelivery(s scanner) (*keyward.WebhookDelivery, error) {
	var d keyward.WebhookDelivery
	var state string
	var next, last *int64
	var created, updated int64
	if err := s.Scan(&d.ID, &d.EndpointID, &d.EventID, &d.EventSeq, &d.EventType, &d.Payload, &state, &d.Attempts,
		&next, &last, &d.LastStatus, &d.LastError, &created, &updated); err != nil {
		return nil, err
	}
	d.State = keyward.DeliveryState(state)
	d.NextAttemptAt = fromNullNanos(next)
	d.LastAttemptAt = fromNullNanos(last)
	d.CreatedAt = fromNanos(created)
	d.UpdatedAt = fromNanos(updated)
	return &d, nil
}

func (t *tx) CreateWebhookDelivery(d *keyward.WebhookDelivery) error {
	payload := d.Payload
	if payload == nil {
		payload = []byte{}
	}
	_, err := t.exec(`INSERT INTO webhook_deliveries (`+deliveryCols+`) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)`,
		d.ID, d.EndpointID, d.EventID, d.EventSeq, d.EventType, payload, string(d.State), d.Attempts,
		toNullNanos(d.NextAttemptAt), toNullNanos(d.LastAttemptAt), d.LastStatus, d.LastError,
		toNanos(d.CreatedAt), toNanos(d.UpdatedAt))
	switch code, name := violation(err); {
	case code == uniqueViolation && name == "webhook_deliveries_pkey":
		return keyward.Errorf(keyward.EConflict, "webhook delivery %s already exists", d.ID)
	case code == uniqueViolation:
		return keyward.Errorf(keyward.EConflict, "webhook endpoint %s already has a delivery of event %s", d.EndpointID, d.EventID)
	case code == fkViolation:
		return keyward.Errorf(keyward.ENotFound, "webhook endpoint %s not found", d.EndpointID)
	case code == checkViolation:
		return keyward.Errorf(keyward.EInvalid, "webhook delivery %s: invalid state %q", d.ID, d.State)
	}
	return wrap(err, "create webhook delivery %s", d.ID)
}

func (t *tx) WebhookDelivery(id string) (*keyward.WebhookDelivery, error) {
	d, err := queryOne(t, keyward.Errorf(keyward.ENotFound, "webhook delivery %s not found", id), scanDelivery,
		`SELECT `+deliveryCols+` FROM webhook_deliveries WHERE id = $1`, id)
	return d, wrap(err, "webhook delivery %s", id)
}

// WebhookDeliveries returns the deliveries matching f, newest (greatest id) first.
func (t *tx) WebhookDeliveries(f store.DeliveryFilter) ([]*keyward.WebhookDelivery, error) {
	var w where
	w.add(f.EndpointID != "", "endpoint_id = ?", f.EndpointID)
	w.add(f.State != "", "state = ?", string(f.State))
	w.add(f.Before != "", "id < ?", f.Before)
	ds, err := queryAll(t, scanDelivery, `SELECT `+deliveryCols+` FROM webhook_deliveries`+w.String()+
		` ORDER BY id DESC`+limit(f.Limit), w.args...)
	return ds, wrap(err, "webhook deliveries")
}

// DueWebhookDeliveries returns pending deliveries due at now, by next
// attempt time, then id.
func (t *tx) DueWebhookDeliveries(now time.Time, n int) ([]*keyward.WebhookDelivery, error) {
	ds, err := queryAll(t, scanDelivery, `SELECT `+deliveryCols+` FROM webhook_deliveries
		WHERE state = 'pending' AND next_attempt_at <= $1 ORDER BY next_attempt_at, id`+limit(n), toNanos(now))
	return ds, wrap(err, "due webhook deliveries")
}

func (t *tx) NextWebhookAttempt() (*time.Time, error) {
	var next *int64
	err := t.tx.QueryRow(t.ctx, `SELECT MIN(next_attempt_at) FROM webhook_deliveries WHERE state = 'pending'`).Scan(&next)
	if err != nil {
		return nil, wrap(err, "next webhook attempt")
	}
	return fromNullNanos(next), nil
}

func (t *tx) UpdateWebhookDelivery(d *keyward.WebhookDelivery) error {
	err := t.execOne(keyward.Errorf(keyward.ENotFound, "webhook delivery %s not found", d.ID),
		`UPDATE webhook_deliveries SET state = $1, attempts = $2, next_attempt_at = $3, last_attempt_at = $4,
			last_status = $5, last_error = $6, updated_at = $7
		WHERE id = $8`,
		string(d.State), d.Attempts, toNullNanos(d.NextAttemptAt), toNullNanos(d.LastAttemptAt),
		d.LastStatus, d.LastError, toNanos(d.UpdatedAt), d.ID)
	if code, _ := violation(err); code == checkViolation {
		return keyward.Errorf(keyward.EInvalid, "webhook delivery %s: invalid state %q", d.ID, d.State)
	}
	return wrap(err, "update webhook delivery %s", d.ID)
}

// The dispatcher's cursor.

const webhookCursorName = "webhooks"

func (t *tx) WebhookCursor() (int64, error) {
	seq, err := t.queryInt64(`SELECT COALESCE((SELECT seq FROM webhook_cursor WHERE name = $1), 0)`, webhookCursorName)
	return seq, wrap(err, "webhook cursor")
}

func (t *tx) SetWebhookCursor(seq int64) error {
	_, err := t.exec(`INSERT INTO webhook_cursor (name, seq) VALUES ($1, $2)
		ON CONFLICT (name) DO UPDATE SET seq = excluded.seq`, webhookCursorName, seq)
	return wrap(err, "set webhook cursor")
}

// LastEventSeq returns the greatest seq the outbox has handed out: the
// larger of the greatest stored seq and the identity sequence's last value,
// so it stays right even if delivered rows are later deleted. Inside an
// Update no other writer is running, so a handed-out value belongs to a
// committed event or to a rolled-back one (a gap that no event will fill).
func (t *tx) LastEventSeq() (int64, error) {
	seq, err := t.queryInt64(`SELECT GREATEST(
		COALESCE((SELECT MAX(seq) FROM outbox), 0),
		COALESCE(pg_sequence_last_value(pg_get_serial_sequence('outbox', 'seq')::regclass), 0))`)
	return seq, wrap(err, "last event seq")
}
