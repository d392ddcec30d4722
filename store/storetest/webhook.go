package storetest

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/keyward/keyward"
	"github.com/keyward/keyward/store"
)

// runWebhook tests the store's part in webhooks: endpoints, the delivery
// log and the dispatcher's outbox cursor.
func runWebhook(t *testing.T, open func(t *testing.T) store.Store) {
	tests := []struct {
		name string
		fn   func(t *testing.T, s store.Store)
	}{
		{"Webhooks/EndpointRoundTrip", testEndpointRoundTrip},
		{"Webhooks/EndpointErrNotFound", testEndpointNotFound},
		{"Webhooks/EndpointErrConflict", testEndpointConflict},
		{"Webhooks/EndpointUpdate", testEndpointUpdate},
		{"Webhooks/DeliveryRoundTrip", testDeliveryRoundTrip},
		{"Webhooks/DeliveryErrors", testDeliveryErrors},
		{"Webhooks/DeliveryUpdate", testDeliveryUpdate},
		{"Webhooks/DeliveryFilter", testDeliveryFilter},
		{"Webhooks/Due", testDeliveriesDue},
		{"Webhooks/Cursor", testWebhookCursor},
		{"Webhooks/LastEventSeq", testLastEventSeq},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) { tt.fn(t, open(t)) })
	}
}

func newEndpoint(id string) *keyward.WebhookEndpoint {
	return &keyward.WebhookEndpoint{
		ID: id, URL: "https://hooks.example.com/" + id, Events: []string{"license.revoked"},
		State: keyward.WebhookEnabled, Secret: []byte("sealed " + id), CreatedAt: at(0), UpdatedAt: at(0),
	}
}

func newDelivery(id, endpointID, eventID string, next time.Duration) *keyward.WebhookDelivery {
	return &keyward.WebhookDelivery{
		ID: id, EndpointID: endpointID, EventID: eventID, EventSeq: 1, EventType: "license.revoked",
		Payload: []byte(`{"type":"license.revoked"}`), State: keyward.DeliveryPending,
		NextAttemptAt: ptr(next), CreatedAt: at(0), UpdatedAt: at(0),
	}
}

func testEndpointRoundTrip(t *testing.T, s store.Store) {
	full := &keyward.WebhookEndpoint{
		ID: "whk_full", URL: "https://user:pw@hooks.example.com/keyward?x=1", Events: []string{"license.revoked", "key.*"},
		Description: "billing", State: keyward.WebhookDisabled, Secret: []byte("sealed current"),
		PreviousSecret: []byte("sealed previous"), PreviousExpiresAt: ptr(day), StartSeq: 42,
		CreatedAt: at(time.Second), UpdatedAt: at(2 * time.Second),
	}
	bare := &keyward.WebhookEndpoint{ID: "whk_bare", URL: "http://h/", Events: []string{"*"}, State: keyward.WebhookRemoved,
		CreatedAt: at(0), UpdatedAt: at(0)}
	update(t, s, func(tx store.Tx) error {
		return errors.Join(tx.CreateWebhookEndpoint(full), tx.CreateWebhookEndpoint(bare))
	})
	for _, want := range []*keyward.WebhookEndpoint{full, bare} {
		got := get(t, s, func(tx store.Tx) (*keyward.WebhookEndpoint, error) { return tx.WebhookEndpoint(want.ID) })
		wantEqual(t, "WebhookEndpoint("+want.ID+")", got, want)
	}
	// Ordered by creation time, then id.
	wantList(t, "WebhookEndpoints()",
		get(t, s, func(tx store.Tx) ([]*keyward.WebhookEndpoint, error) { return tx.WebhookEndpoints() }),
		[]*keyward.WebhookEndpoint{bare, full})
}

func testEndpointNotFound(t *testing.T, s store.Store) {
	err := viewErr(t, s, func(tx store.Tx) error { _, err := tx.WebhookEndpoint("whk_missing"); return err })
	wantNotFound(t, "WebhookEndpoint(missing)", err, "whk_missing")
	err = updateErr(t, s, func(tx store.Tx) error { return tx.UpdateWebhookEndpoint(newEndpoint("whk_missing")) })
	wantNotFound(t, "UpdateWebhookEndpoint(missing)", err, "whk_missing")
	if eps := get(t, s, func(tx store.Tx) ([]*keyward.WebhookEndpoint, error) { return tx.WebhookEndpoints() }); len(eps) != 0 {
		t.Fatalf("WebhookEndpoints() of an empty store = %s, want none", show(eps))
	}
}

func testEndpointConflict(t *testing.T, s store.Store) {
	update(t, s, func(tx store.Tx) error { return tx.CreateWebhookEndpoint(newEndpoint("whk_1")) })
	err := updateErr(t, s, func(tx store.Tx) error { return tx.CreateWebhookEndpoint(newEndpoint("whk_1")) })
	wantCode(t, "CreateWebhookEndpoint(duplicate id)", err, keyward.EConflict)
	bad := newEndpoint("whk_2")
	bad.State = "sleeping"
	err = updateErr(t, s, func(tx store.Tx) error { return tx.CreateWebhookEndpoint(bad) })
	wantCode(t, "CreateWebhookEndpoint(bad state)", err, keyward.EInvalid)
}

func testEndpointUpdate(t *testing.T, s store.Store) {
	ep := newEndpoint("whk_1")
	update(t, s, func(tx store.Tx) error { return tx.CreateWebhookEndpoint(ep) })

	// Rotation: a new secret, the old one kept until a deadline; a new start.
	ep.PreviousSecret, ep.Secret, ep.PreviousExpiresAt, ep.UpdatedAt = ep.Secret, []byte("sealed new"), ptr(day), at(time.Hour)
	ep.StartSeq = 17
	update(t, s, func(tx store.Tx) error { return tx.UpdateWebhookEndpoint(ep) })
	got := get(t, s, func(tx store.Tx) (*keyward.WebhookEndpoint, error) { return tx.WebhookEndpoint("whk_1") })
	wantEqual(t, "WebhookEndpoint after rotation", got, ep)

	// Removal erases both secrets.
	ep.State, ep.Secret, ep.PreviousSecret, ep.PreviousExpiresAt, ep.UpdatedAt = keyward.WebhookRemoved, nil, nil, nil, at(2*time.Hour)
	update(t, s, func(tx store.Tx) error { return tx.UpdateWebhookEndpoint(ep) })
	got = get(t, s, func(tx store.Tx) (*keyward.WebhookEndpoint, error) { return tx.WebhookEndpoint("whk_1") })
	wantEqual(t, "WebhookEndpoint after removal", got, ep)
	if got.Secret != nil || got.PreviousSecret != nil {
		t.Fatalf("WebhookEndpoint after removal kept secrets %q, %q; want nil", got.Secret, got.PreviousSecret)
	}

	// Only the mutable fields are written.
	changed := *ep
	changed.URL, changed.Events, changed.Description, changed.CreatedAt = "https://elsewhere/", []string{"*"}, "other", at(day)
	update(t, s, func(tx store.Tx) error { return tx.UpdateWebhookEndpoint(&changed) })
	got = get(t, s, func(tx store.Tx) (*keyward.WebhookEndpoint, error) { return tx.WebhookEndpoint("whk_1") })
	wantEqual(t, "WebhookEndpoint after updating immutable fields", got, ep)
}

func testDeliveryRoundTrip(t *testing.T, s store.Store) {
	update(t, s, func(tx store.Tx) error { return tx.CreateWebhookEndpoint(newEndpoint("whk_1")) })
	full := &keyward.WebhookDelivery{
		ID: "dlv_full", EndpointID: "whk_1", EventID: "evt_1", EventSeq: 7, EventType: "key.compromised",
		Payload: []byte(`{"type":"key.compromised","timestamp":"2025-03-14T15:09:26.535897Z","data":{"a": 1}}`),
		State:   keyward.DeliveryFailed, Attempts: 10, LastAttemptAt: ptr(time.Hour), LastStatus: 503,
		LastError: "503 Service Unavailable", CreatedAt: at(time.Second), UpdatedAt: at(time.Hour),
	}
	bare := newDelivery("dlv_bare", "whk_1", "evt_2", 0)
	update(t, s, func(tx store.Tx) error {
		return errors.Join(tx.CreateWebhookDelivery(full), tx.CreateWebhookDelivery(bare))
	})
	for _, want := range []*keyward.WebhookDelivery{full, bare} {
		got := get(t, s, func(tx store.Tx) (*keyward.WebhookDelivery, error) { return tx.WebhookDelivery(want.ID) })
		wantEqual(t, "WebhookDelivery("+want.ID+")", got, want)
		// The payload is what was signed: byte for byte, white space included.
		if string(got.Payload) != string(want.Payload) {
			t.Fatalf("WebhookDelivery(%s).Payload = %q, want %q", want.ID, got.Payload, want.Payload)
		}
	}
}

func testDeliveryErrors(t *testing.T, s store.Store) {
	err := viewErr(t, s, func(tx store.Tx) error { _, err := tx.WebhookDelivery("dlv_missing"); return err })
	wantNotFound(t, "WebhookDelivery(missing)", err, "dlv_missing")
	err = updateErr(t, s, func(tx store.Tx) error {
		return tx.UpdateWebhookDelivery(newDelivery("dlv_missing", "whk_1", "evt_1", 0))
	})
	wantNotFound(t, "UpdateWebhookDelivery(missing)", err, "dlv_missing")
	err = updateErr(t, s, func(tx store.Tx) error {
		return tx.CreateWebhookDelivery(newDelivery("dlv_1", "whk_missing", "evt_1", 0))
	})
	wantNotFound(t, "CreateWebhookDelivery(missing endpoint)", err, "whk_missing")

	update(t, s, func(tx store.Tx) error {
		return errors.Join(tx.CreateWebhookEndpoint(newEndpoint("whk_1")), tx.CreateWebhookDelivery(newDelivery("dlv_1", "whk_1", "evt_1", 0)))
	})
	err = updateErr(t, s, func(tx store.Tx) error { return tx.CreateWebhookDelivery(newDelivery("dlv_1", "whk_1", "evt_2", 0)) })
	wantCode(t, "CreateWebhookDelivery(duplicate id)", err, keyward.EConflict)
	err = updateErr(t, s, func(tx store.Tx) error { return tx.CreateWebhookDelivery(newDelivery("dlv_2", "whk_1", "evt_1", 0)) })
	wantCode(t, "CreateWebhookDelivery(same endpoint and event)", err, keyward.EConflict)
	bad := newDelivery("dlv_3", "whk_1", "evt_3", 0)
	bad.State = "lost"
	err = updateErr(t, s, func(tx store.Tx) error { return tx.CreateWebhookDelivery(bad) })
	wantCode(t, "CreateWebhookDelivery(bad state)", err, keyward.EInvalid)
}

func testDeliveryUpdate(t *testing.T, s store.Store) {
	d := newDelivery("dlv_1", "whk_1", "evt_1", 0)
	update(t, s, func(tx store.Tx) error {
		return errors.Join(tx.CreateWebhookEndpoint(newEndpoint("whk_1")), tx.CreateWebhookDelivery(d))
	})
	d.Attempts, d.NextAttemptAt, d.LastAttemptAt, d.LastStatus, d.LastError, d.UpdatedAt = 1, ptr(5*time.Second), ptr(0), 500, "500 Internal Server Error", at(time.Millisecond)
	update(t, s, func(tx store.Tx) error { return tx.UpdateWebhookDelivery(d) })
	got := get(t, s, func(tx store.Tx) (*keyward.WebhookDelivery, error) { return tx.WebhookDelivery("dlv_1") })
	wantEqual(t, "WebhookDelivery after a failed attempt", got, d)

	d.State, d.Attempts, d.NextAttemptAt, d.LastStatus, d.LastError = keyward.DeliverySucceeded, 2, nil, 204, ""
	update(t, s, func(tx store.Tx) error { return tx.UpdateWebhookDelivery(d) })
	got = get(t, s, func(tx store.Tx) (*keyward.WebhookDelivery, error) { return tx.WebhookDelivery("dlv_1") })
	wantEqual(t, "WebhookDelivery after success", got, d)

	// Only the mutable fields are written.
	changed := *d
	changed.EndpointID, changed.EventID, changed.Payload, changed.CreatedAt = "whk_other", "evt_other", []byte("{}"), at(day)
	update(t, s, func(tx store.Tx) error { return tx.UpdateWebhookDelivery(&changed) })
	got = get(t, s, func(tx store.Tx) (*keyward.WebhookDelivery, error) { return tx.WebhookDelivery("dlv_1") })
	wantEqual(t, "WebhookDelivery after updating immutable fields", got, d)
}

func testDeliveryFilter(t *testing.T, s store.Store) {
	var all []*keyward.WebhookDelivery
	update(t, s, func(tx store.Tx) error {
		errs := []error{tx.CreateWebhookEndpoint(newEndpoint("whk_a")), tx.CreateWebhookEndpoint(newEndpoint("whk_b"))}
		for i := range 6 {
			d := newDelivery(fmt.Sprintf("dlv_%d", i), []string{"whk_a", "whk_b"}[i%2], fmt.Sprintf("evt_%d", i), 0)
			if i >= 4 {
				d.State, d.NextAttemptAt = keyward.DeliveryFailed, nil
			}
			all = append(all, d)
			errs = append(errs, tx.CreateWebhookDelivery(d))
		}
		return errors.Join(errs...)
	})
	deliveries := func(f store.DeliveryFilter) []*keyward.WebhookDelivery {
		return get(t, s, func(tx store.Tx) ([]*keyward.WebhookDelivery, error) { return tx.WebhookDeliveries(f) })
	}
	// Newest (greatest id) first.
	wantList(t, "WebhookDeliveries({})", deliveries(store.DeliveryFilter{}),
		[]*keyward.WebhookDelivery{all[5], all[4], all[3], all[2], all[1], all[0]})
	wantList(t, "WebhookDeliveries(endpoint a)", deliveries(store.DeliveryFilter{EndpointID: "whk_a"}),
		[]*keyward.WebhookDelivery{all[4], all[2], all[0]})
	wantList(t, "WebhookDeliveries(failed)", deliveries(store.DeliveryFilter{State: keyward.DeliveryFailed}),
		[]*keyward.WebhookDelivery{all[5], all[4]})
	wantList(t, "WebhookDeliveries(endpoint b, failed)", deliveries(store.DeliveryFilter{EndpointID: "whk_b", State: keyward.DeliveryFailed}),
		[]*keyward.WebhookDelivery{all[5]})
	wantList(t, "WebhookDeliveries(before dlv_4, limit 2)", deliveries(store.DeliveryFilter{Before: "dlv_4", Limit: 2}),
		[]*keyward.WebhookDelivery{all[3], all[2]})
	wantList(t, "WebhookDeliveries(endpoint missing)", deliveries(store.DeliveryFilter{EndpointID: "whk_missing"}), nil)
}

func testDeliveriesDue(t *testing.T, s store.Store) {
	next := get(t, s, func(tx store.Tx) (*time.Time, error) { return tx.NextWebhookAttempt() })
	if next != nil {
		t.Fatalf("NextWebhookAttempt() of an empty store = %v, want nil", next)
	}
	late := newDelivery("dlv_a", "whk_1", "evt_1", time.Minute)
	early := newDelivery("dlv_b", "whk_1", "evt_2", time.Second)
	tie := newDelivery("dlv_c", "whk_1", "evt_3", time.Second)
	done := newDelivery("dlv_d", "whk_1", "evt_4", 0)
	done.State, done.NextAttemptAt = keyward.DeliverySucceeded, nil
	failed := newDelivery("dlv_e", "whk_1", "evt_5", 0)
	failed.State = keyward.DeliveryFailed // a stale NextAttemptAt must not make it due
	update(t, s, func(tx store.Tx) error {
		errs := []error{tx.CreateWebhookEndpoint(newEndpoint("whk_1"))}
		for _, d := range []*keyward.WebhookDelivery{late, early, tie, done, failed} {
			errs = append(errs, tx.CreateWebhookDelivery(d))
		}
		return errors.Join(errs...)
	})
	due := func(now time.Time, n int) []*keyward.WebhookDelivery {
		return get(t, s, func(tx store.Tx) ([]*keyward.WebhookDelivery, error) { return tx.DueWebhookDeliveries(now, n) })
	}
	wantList(t, "DueWebhookDeliveries(t0)", due(at(0), 0), nil)
	wantList(t, "DueWebhookDeliveries(t0+1s)", due(at(time.Second), 0), []*keyward.WebhookDelivery{early, tie})
	wantList(t, "DueWebhookDeliveries(t0+1h, 0)", due(at(time.Hour), 0), []*keyward.WebhookDelivery{early, tie, late})
	wantList(t, "DueWebhookDeliveries(t0+1h, 1)", due(at(time.Hour), 1), []*keyward.WebhookDelivery{early})

	next = get(t, s, func(tx store.Tx) (*time.Time, error) { return tx.NextWebhookAttempt() })
	if next == nil || !next.Equal(at(time.Second)) {
		t.Fatalf("NextWebhookAttempt() = %v, want %v", next, at(time.Second))
	}
}

func testWebhookCursor(t *testing.T, s store.Store) {
	if seq := get(t, s, func(tx store.Tx) (int64, error) { return tx.WebhookCursor() }); seq != 0 {
		t.Fatalf("WebhookCursor() of an empty store = %d, want 0", seq)
	}
	for _, want := range []int64{5, 9} {
		update(t, s, func(tx store.Tx) error { return tx.SetWebhookCursor(want) })
		if seq := get(t, s, func(tx store.Tx) (int64, error) { return tx.WebhookCursor() }); seq != want {
			t.Fatalf("WebhookCursor() after SetWebhookCursor(%d) = %d", want, seq)
		}
	}
	// The cursor moves with its transaction.
	err := updateErr(t, s, func(tx store.Tx) error {
		if err := tx.SetWebhookCursor(20); err != nil {
			return err
		}
		return keyward.Errorf(keyward.EConflict, "rolled back")
	})
	wantCode(t, "Update(SetWebhookCursor, fail)", err, keyward.EConflict)
	if seq := get(t, s, func(tx store.Tx) (int64, error) { return tx.WebhookCursor() }); seq != 9 {
		t.Fatalf("WebhookCursor() after a rolled-back move = %d, want 9", seq)
	}
}

func testLastEventSeq(t *testing.T, s store.Store) {
	if seq := get(t, s, func(tx store.Tx) (int64, error) { return tx.LastEventSeq() }); seq != 0 {
		t.Fatalf("LastEventSeq() of an empty store = %d, want 0", seq)
	}
	var last *keyward.Event
	for i := range 3 {
		update(t, s, func(tx store.Tx) error {
			last = &keyward.Event{ID: fmt.Sprintf("evt_%d", i), Type: "test", Time: at(0), Subject: "x"}
			return tx.AppendEvent(last)
		})
	}
	if seq := get(t, s, func(tx store.Tx) (int64, error) { return tx.LastEventSeq() }); seq != last.Seq {
		t.Fatalf("LastEventSeq() = %d, want the last appended seq %d", seq, last.Seq)
	}
}
