package store

import (
	"time"

	"github.com/keyward/keyward"
)

// DeliveryFilter selects webhook deliveries, newest first (by id, which
// sorts by creation time); zero fields match everything.
type DeliveryFilter struct {
	EndpointID string
	State      keyward.DeliveryState
	Before     string // id cursor: only ids less than this
	Limit      int    // 0 = no limit
}

// WebhookTx is the part of Tx for webhook endpoints, their deliveries and
// the dispatcher's outbox cursor.
//
// The dispatcher reads the outbox after a persisted cursor, so a store MUST
// make events visible in seq order: an event whose seq is below one already
// visible to a reader must never commit later. SQLite guarantees it by
// serializing writers; PostgreSQL needs the outbox append to take a lock
// held to commit (e.g. an advisory transaction lock), or gaps to be waited
// for.
type WebhookTx interface {
	// CreateWebhookEndpoint stores ep; EConflict if the id exists.
	CreateWebhookEndpoint(ep *keyward.WebhookEndpoint) error
	// WebhookEndpoint returns the endpoint, removed ones included, or ENotFound.
	WebhookEndpoint(id string) (*keyward.WebhookEndpoint, error)
	// WebhookEndpoints returns every endpoint, removed ones included,
	// ordered by creation time, then id.
	WebhookEndpoints() ([]*keyward.WebhookEndpoint, error)
	// UpdateWebhookEndpoint writes State, Secret, PreviousSecret,
	// PreviousExpiresAt, StartSeq and UpdatedAt; ENotFound if the endpoint
	// is missing.
	UpdateWebhookEndpoint(ep *keyward.WebhookEndpoint) error

	// CreateWebhookDelivery stores d; ENotFound if its endpoint is missing,
	// EConflict if the id exists or the endpoint already has a delivery of
	// the event.
	CreateWebhookDelivery(d *keyward.WebhookDelivery) error
	// WebhookDelivery returns the delivery or ENotFound.
	WebhookDelivery(id string) (*keyward.WebhookDelivery, error)
	// WebhookDeliveries returns the deliveries matching f, newest first.
	WebhookDeliveries(f DeliveryFilter) ([]*keyward.WebhookDelivery, error)
	// DueWebhookDeliveries returns up to limit pending deliveries whose
	// NextAttemptAt is at or before now, the longest-waiting first (by
	// NextAttemptAt, then id); limit 0 means no limit.
	DueWebhookDeliveries(now time.Time, limit int) ([]*keyward.WebhookDelivery, error)
	// NextWebhookAttempt returns the earliest NextAttemptAt of a pending
	// delivery, or nil when none is pending.
	NextWebhookAttempt() (*time.Time, error)
	// UpdateWebhookDelivery writes State, Attempts, NextAttemptAt,
	// LastAttemptAt, LastStatus, LastError and UpdatedAt; ENotFound if the
	// delivery is missing.
	UpdateWebhookDelivery(d *keyward.WebhookDelivery) error

	// WebhookCursor returns the seq of the last outbox event the dispatcher
	// has fanned out, 0 before the first.
	WebhookCursor() (int64, error)
	// SetWebhookCursor stores seq as the dispatcher's cursor.
	SetWebhookCursor(seq int64) error
	// LastEventSeq returns the greatest outbox seq, 0 when the outbox is empty.
	LastEventSeq() (int64, error)
}
