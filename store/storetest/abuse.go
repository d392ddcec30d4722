package storetest

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/keyward/keyward"
	"github.com/keyward/keyward/store"
)

// runAbuse tests the store's part in abuse signals: signals and the
// auto-suspension records the cooldown and the ceiling are computed from.
func runAbuse(t *testing.T, open func(t *testing.T) store.Store) {
	tests := []struct {
		name string
		fn   func(t *testing.T, s store.Store)
	}{
		{"Signals/RoundTrip", testSignalsRoundTrip},
		{"Signals/ErrNotFound", testSignalsNotFound},
		{"Signals/ErrConflict", testSignalsConflict},
		{"Signals/ErrInvalid", testSignalsInvalid},
		{"Signals/Filter", testSignalsFilter},
		{"AutoSuspensions/RoundTrip", testAutoSuspensionsRoundTrip},
		{"AutoSuspensions/ErrNotFound", testAutoSuspensionsNotFound},
		{"AutoSuspensions/ErrConflict", testAutoSuspensionsConflict},
		{"AutoSuspensions/ErrInvalid", testAutoSuspensionsInvalid},
		{"AutoSuspensions/Filter", testAutoSuspensionsFilter},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) { tt.fn(t, open(t)) })
	}
}

func newSignal(id, licenseID string, d time.Duration) *keyward.Signal {
	return &keyward.Signal{
		ID: id, LicenseID: licenseID, ProductID: "p1", Kind: keyward.SignalLeak, Detail: "key posted on a forum",
		Actor: "tok_support", ActorName: "sam", CreatedAt: at(d), Outcome: keyward.SignalRecorded,
	}
}

func newAutoSuspension(id, licenseID, productID, outcome string, d time.Duration) *keyward.AutoSuspension {
	return &keyward.AutoSuspension{ID: id, LicenseID: licenseID, ProductID: productID, Rule: "burst", PolicyVersion: 3, Outcome: outcome, At: at(d)}
}

func testSignalsRoundTrip(t *testing.T, s store.Store) {
	withLicense(t, s)
	full := newSignal("sig_full", "l1", time.Second)
	full.Kind, full.Outcome = keyward.SignalChargeback, keyward.SignalSuspended
	full.Detail = "payment reversed: \"case 42\"\nsecond line ✓"
	bare := &keyward.Signal{ID: "sig_bare", LicenseID: "l1", ProductID: "p1", Kind: keyward.SignalOther, Actor: "system", CreatedAt: at(2 * time.Second), Outcome: keyward.SignalCeiling}
	update(t, s, func(tx store.Tx) error { return errors.Join(tx.CreateSignal(full), tx.CreateSignal(bare)) })
	wantList(t, "Signals({})", get(t, s, func(tx store.Tx) ([]*keyward.Signal, error) { return tx.Signals(store.SignalFilter{}) }),
		[]*keyward.Signal{full, bare})
}

func testSignalsNotFound(t *testing.T, s store.Store) {
	withLicense(t, s)
	err := updateErr(t, s, func(tx store.Tx) error { return tx.CreateSignal(newSignal("sig_1", "l_missing", 0)) })
	wantNotFound(t, "CreateSignal(missing license)", err, "l_missing")
	if ss := get(t, s, func(tx store.Tx) ([]*keyward.Signal, error) { return tx.Signals(store.SignalFilter{}) }); len(ss) != 0 {
		t.Fatalf("Signals() after a refused insert = %s, want none", show(ss))
	}
}

func testSignalsConflict(t *testing.T, s store.Store) {
	withLicense(t, s)
	update(t, s, func(tx store.Tx) error { return tx.CreateSignal(newSignal("sig_1", "l1", 0)) })
	err := updateErr(t, s, func(tx store.Tx) error { return tx.CreateSignal(newSignal("sig_1", "l1", time.Second)) })
	wantCode(t, "CreateSignal(same id)", err, keyward.EConflict)
}

func testSignalsInvalid(t *testing.T, s store.Store) {
	withLicense(t, s)
	for _, tc := range []struct {
		name string
		mod  func(sg *keyward.Signal)
	}{
		{"UnknownKind", func(sg *keyward.Signal) { sg.Kind = "fraud" }},
		{"UnknownOutcome", func(sg *keyward.Signal) { sg.Outcome = "ignored" }},
		{"NoOutcome", func(sg *keyward.Signal) { sg.Outcome = "" }},
	} {
		sg := newSignal("sig_"+tc.name, "l1", 0)
		tc.mod(sg)
		err := updateErr(t, s, func(tx store.Tx) error { return tx.CreateSignal(sg) })
		wantCode(t, "CreateSignal("+tc.name+")", err, keyward.EInvalid)
	}
	if ss := get(t, s, func(tx store.Tx) ([]*keyward.Signal, error) { return tx.Signals(store.SignalFilter{}) }); len(ss) != 0 {
		t.Fatalf("Signals() after refused inserts = %s, want none", show(ss))
	}
}

func testSignalsFilter(t *testing.T, s store.Store) {
	update(t, s, func(tx store.Tx) error {
		return errors.Join(tx.CreateProduct(newProduct("p1")), tx.CreateProduct(newProduct("p2")),
			tx.CreateLicense(newLicense("l1", "p1")), tx.CreateLicense(newLicense("l2", "p1")), tx.CreateLicense(newLicense("l3", "p2")))
	})
	// Inserted out of order: the listing is by time, then id.
	s3 := newSignal("sig_3", "l1", 3*time.Second)
	s1 := newSignal("sig_1", "l2", time.Second)
	s2b := newSignal("sig_2b", "l1", 2*time.Second)
	s2a := newSignal("sig_2a", "l1", 2*time.Second)
	s4 := newSignal("sig_4", "l3", time.Second)
	s4.ProductID = "p2"
	update(t, s, func(tx store.Tx) error {
		return errors.Join(tx.CreateSignal(s3), tx.CreateSignal(s1), tx.CreateSignal(s2b), tx.CreateSignal(s2a), tx.CreateSignal(s4))
	})
	for _, tc := range []struct {
		f    store.SignalFilter
		want []*keyward.Signal
	}{
		{store.SignalFilter{}, []*keyward.Signal{s1, s4, s2a, s2b, s3}},
		{store.SignalFilter{LicenseID: "l1"}, []*keyward.Signal{s2a, s2b, s3}},
		{store.SignalFilter{ProductID: "p1"}, []*keyward.Signal{s1, s2a, s2b, s3}},
		{store.SignalFilter{ProductID: "p2"}, []*keyward.Signal{s4}},
		{store.SignalFilter{LicenseID: "l1", Limit: 2}, []*keyward.Signal{s2a, s2b}},
		{store.SignalFilter{LicenseID: "l_none"}, nil},
	} {
		got := get(t, s, func(tx store.Tx) ([]*keyward.Signal, error) { return tx.Signals(tc.f) })
		wantList(t, fmt.Sprintf("Signals(%+v)", tc.f), got, tc.want)
	}
}

func testAutoSuspensionsRoundTrip(t *testing.T, s store.Store) {
	withLicense(t, s)
	a := newAutoSuspension("aus_1", "l1", "p1", keyward.AutoSuspended, time.Second)
	b := newAutoSuspension("aus_2", "l1", "p1", keyward.AutoCeiling, 2*time.Second)
	b.Rule, b.PolicyVersion = "suspendOnSignal", 0
	update(t, s, func(tx store.Tx) error { return errors.Join(tx.CreateAutoSuspension(a), tx.CreateAutoSuspension(b)) })
	wantList(t, "AutoSuspensions({})", get(t, s, func(tx store.Tx) ([]*keyward.AutoSuspension, error) {
		return tx.AutoSuspensions(store.AutoSuspensionFilter{})
	}), []*keyward.AutoSuspension{a, b})
}

func testAutoSuspensionsNotFound(t *testing.T, s store.Store) {
	withLicense(t, s)
	for _, a := range []*keyward.AutoSuspension{
		newAutoSuspension("aus_1", "l_missing", "p1", keyward.AutoSuspended, 0),
		newAutoSuspension("aus_2", "l1", "p_missing", keyward.AutoSuspended, 0),
	} {
		err := updateErr(t, s, func(tx store.Tx) error { return tx.CreateAutoSuspension(a) })
		wantCode(t, "CreateAutoSuspension("+a.LicenseID+", "+a.ProductID+")", err, keyward.ENotFound)
	}
	if as := get(t, s, func(tx store.Tx) ([]*keyward.AutoSuspension, error) {
		return tx.AutoSuspensions(store.AutoSuspensionFilter{})
	}); len(as) != 0 {
		t.Fatalf("AutoSuspensions() after refused inserts = %s, want none", show(as))
	}
}

func testAutoSuspensionsConflict(t *testing.T, s store.Store) {
	withLicense(t, s)
	update(t, s, func(tx store.Tx) error {
		return tx.CreateAutoSuspension(newAutoSuspension("aus_1", "l1", "p1", keyward.AutoSuspended, 0))
	})
	err := updateErr(t, s, func(tx store.Tx) error {
		return tx.CreateAutoSuspension(newAutoSuspension("aus_1", "l1", "p1", keyward.AutoCeiling, time.Second))
	})
	wantCode(t, "CreateAutoSuspension(same id)", err, keyward.EConflict)
}

func testAutoSuspensionsInvalid(t *testing.T, s store.Store) {
	withLicense(t, s)
	for _, outcome := range []string{"", "held", "Suspended"} {
		err := updateErr(t, s, func(tx store.Tx) error {
			return tx.CreateAutoSuspension(newAutoSuspension("aus_1", "l1", "p1", outcome, 0))
		})
		wantCode(t, fmt.Sprintf("CreateAutoSuspension(outcome %q)", outcome), err, keyward.EInvalid)
	}
}

func testAutoSuspensionsFilter(t *testing.T, s store.Store) {
	update(t, s, func(tx store.Tx) error {
		return errors.Join(tx.CreateProduct(newProduct("p1")), tx.CreateProduct(newProduct("p2")),
			tx.CreateLicense(newLicense("l1", "p1")), tx.CreateLicense(newLicense("l2", "p1")), tx.CreateLicense(newLicense("l3", "p2")))
	})
	a1 := newAutoSuspension("aus_a1", "l1", "p1", keyward.AutoSuspended, time.Minute)
	a2 := newAutoSuspension("aus_a2", "l2", "p1", keyward.AutoCeiling, 2*time.Minute)
	a3b := newAutoSuspension("aus_a3b", "l2", "p1", keyward.AutoSuspended, time.Hour)
	a3a := newAutoSuspension("aus_a3a", "l1", "p1", keyward.AutoSuspended, time.Hour)
	a4 := newAutoSuspension("aus_a4", "l3", "p2", keyward.AutoSuspended, 2*time.Minute)
	update(t, s, func(tx store.Tx) error {
		return errors.Join(tx.CreateAutoSuspension(a3b), tx.CreateAutoSuspension(a1), tx.CreateAutoSuspension(a4),
			tx.CreateAutoSuspension(a3a), tx.CreateAutoSuspension(a2))
	})
	for _, tc := range []struct {
		f    store.AutoSuspensionFilter
		want []*keyward.AutoSuspension
	}{
		{store.AutoSuspensionFilter{}, []*keyward.AutoSuspension{a1, a2, a4, a3a, a3b}},
		{store.AutoSuspensionFilter{ProductID: "p1"}, []*keyward.AutoSuspension{a1, a2, a3a, a3b}},
		{store.AutoSuspensionFilter{ProductID: "p1", Outcome: keyward.AutoSuspended}, []*keyward.AutoSuspension{a1, a3a, a3b}},
		{store.AutoSuspensionFilter{LicenseID: "l2"}, []*keyward.AutoSuspension{a2, a3b}},
		{store.AutoSuspensionFilter{ProductID: "p1", Since: at(2 * time.Minute)}, []*keyward.AutoSuspension{a2, a3a, a3b}}, // inclusive
		{store.AutoSuspensionFilter{ProductID: "p1", Since: at(2*time.Minute + time.Microsecond)}, []*keyward.AutoSuspension{a3a, a3b}},
		{store.AutoSuspensionFilter{LicenseID: "l1", Outcome: keyward.AutoSuspended, Since: at(0), Limit: 1}, []*keyward.AutoSuspension{a1}},
		{store.AutoSuspensionFilter{Outcome: keyward.AutoCeiling}, []*keyward.AutoSuspension{a2}},
		{store.AutoSuspensionFilter{ProductID: "p_none"}, nil},
	} {
		got := get(t, s, func(tx store.Tx) ([]*keyward.AutoSuspension, error) { return tx.AutoSuspensions(tc.f) })
		wantList(t, fmt.Sprintf("AutoSuspensions(%+v)", tc.f), got, tc.want)
	}
}
