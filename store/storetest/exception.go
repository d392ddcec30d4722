package storetest

import (
	"errors"
	"testing"
	"time"

	"github.com/keyward/keyward"
	"github.com/keyward/keyward/store"
)

// runException tests the store's part in governance exceptions.
func runException(t *testing.T, open func(t *testing.T) store.Store) {
	tests := []struct {
		name string
		fn   func(t *testing.T, s store.Store)
	}{
		{"RoundTrip", testExceptionsRoundTrip},
		{"ErrNotFound", testExceptionsNotFound},
		{"ErrConflict", testExceptionsConflict},
		{"ErrInvalid", testExceptionsInvalid},
		{"Update", testExceptionsUpdate},
		{"Filter", testExceptionsFilter},
	}
	for _, tt := range tests {
		t.Run("Exceptions/"+tt.name, func(t *testing.T) { tt.fn(t, open(t)) })
	}
}

func newException(id, targetID, rule, productID string) *keyward.Exception {
	return &keyward.Exception{
		ID: id, TargetType: "key", TargetID: targetID, ProductID: productID, Rule: rule, Until: at(30 * 24 * time.Hour),
		Justification: "legal hold on old signatures", RequestedBy: "tok_rotator", RequestedByName: "rob",
		ApprovalID: "apr_" + id, State: keyward.ExceptionPending, CreatedAt: at(0), UpdatedAt: at(0),
	}
}

func testExceptionsRoundTrip(t *testing.T, s store.Store) {
	full := newException("exc_full", "kid-1", "destroy", "p1")
	full.State, full.DecidedAt, full.UpdatedAt = keyward.ExceptionActive, ptr(time.Hour), at(time.Hour)
	// A registry key's exception has no product; one activated without
	// approval has no approval id.
	bare := newException("exc_bare", "kid-registry", "destroy", "")
	bare.ApprovalID = ""
	lic := newException("exc_lic", "lic_1", "retire-unpaid", "p1")
	lic.TargetType = "license"
	update(t, s, func(tx store.Tx) error {
		return errors.Join(tx.CreateException(full), tx.CreateException(bare), tx.CreateException(lic))
	})
	for _, want := range []*keyward.Exception{full, bare, lic} {
		got := get(t, s, func(tx store.Tx) (*keyward.Exception, error) { return tx.Exception(want.ID) })
		wantEqual(t, "Exception("+want.ID+")", got, want)
	}
	wantList(t, "Exceptions({})", get(t, s, func(tx store.Tx) ([]*keyward.Exception, error) { return tx.Exceptions(store.ExceptionFilter{}) }),
		[]*keyward.Exception{bare, full, lic})
}

func testExceptionsNotFound(t *testing.T, s store.Store) {
	err := viewErr(t, s, func(tx store.Tx) error { _, err := tx.Exception("exc_missing"); return err })
	wantNotFound(t, "Exception(missing)", err, "exc_missing")
	err = updateErr(t, s, func(tx store.Tx) error {
		return tx.UpdateException(newException("exc_missing", "kid-1", "destroy", ""))
	})
	wantNotFound(t, "UpdateException(missing)", err, "exc_missing")
	if es := get(t, s, func(tx store.Tx) ([]*keyward.Exception, error) { return tx.Exceptions(store.ExceptionFilter{}) }); len(es) != 0 {
		t.Fatalf("Exceptions() of an empty store = %s, want none", show(es))
	}
}

func testExceptionsConflict(t *testing.T, s store.Store) {
	first := newException("exc_1", "kid-1", "destroy", "")
	update(t, s, func(tx store.Tx) error { return tx.CreateException(first) })
	err := updateErr(t, s, func(tx store.Tx) error { return tx.CreateException(newException("exc_1", "kid-2", "destroy", "")) })
	wantCode(t, "CreateException(duplicate id)", err, keyward.EConflict)
	got := get(t, s, func(tx store.Tx) (*keyward.Exception, error) { return tx.Exception("exc_1") })
	wantEqual(t, "Exception(exc_1) after the refused duplicate", got, first)
}

func testExceptionsInvalid(t *testing.T, s store.Store) {
	for name, mod := range map[string]func(e *keyward.Exception){
		"stored expired": func(e *keyward.Exception) { e.State = keyward.ExceptionExpired },
		"unknown state":  func(e *keyward.Exception) { e.State = "held" },
		"target type":    func(e *keyward.Exception) { e.TargetType = "product" },
		"no rule":        func(e *keyward.Exception) { e.Rule = "" },
		"no reason":      func(e *keyward.Exception) { e.Justification = "" },
	} {
		e := newException("exc_bad", "kid-1", "destroy", "")
		mod(e)
		err := updateErr(t, s, func(tx store.Tx) error { return tx.CreateException(e) })
		wantCode(t, "CreateException("+name+")", err, keyward.EInvalid)
	}
	if es := get(t, s, func(tx store.Tx) ([]*keyward.Exception, error) { return tx.Exceptions(store.ExceptionFilter{}) }); len(es) != 0 {
		t.Fatalf("Exceptions() after refused inserts = %s, want none", show(es))
	}
	e := newException("exc_1", "kid-1", "destroy", "")
	update(t, s, func(tx store.Tx) error { return tx.CreateException(e) })
	bad := *e
	bad.State = keyward.ExceptionExpired
	err := updateErr(t, s, func(tx store.Tx) error { return tx.UpdateException(&bad) })
	wantCode(t, "UpdateException(expired)", err, keyward.EInvalid)
	got := get(t, s, func(tx store.Tx) (*keyward.Exception, error) { return tx.Exception("exc_1") })
	wantEqual(t, "Exception(exc_1) after the refused update", got, e)
}

func testExceptionsUpdate(t *testing.T, s store.Store) {
	e := newException("exc_1", "kid-1", "destroy", "p1")
	update(t, s, func(tx store.Tx) error { return tx.CreateException(e) })
	want := *e
	want.State, want.UpdatedAt, want.DecidedAt = keyward.ExceptionActive, at(2*time.Hour), ptr(2*time.Hour)
	// Only State, UpdatedAt and DecidedAt are written.
	sent := want
	sent.Rule, sent.Justification, sent.Until = "expire", "changed", at(time.Hour)
	update(t, s, func(tx store.Tx) error { return tx.UpdateException(&sent) })
	got := get(t, s, func(tx store.Tx) (*keyward.Exception, error) { return tx.Exception("exc_1") })
	wantEqual(t, "Exception(exc_1) after UpdateException", got, &want)
}

func testExceptionsFilter(t *testing.T, s store.Store) {
	a := newException("exc_a", "kid-1", "destroy", "p1")
	b := newException("exc_b", "kid-1", "destroy", "p1")
	b.State = keyward.ExceptionActive
	c := newException("exc_c", "lic_1", "expire", "p2")
	c.TargetType = "license"
	d := newException("exc_d", "kid-2", "destroy", "")
	d.State = keyward.ExceptionDenied
	update(t, s, func(tx store.Tx) error {
		return errors.Join(tx.CreateException(d), tx.CreateException(c), tx.CreateException(b), tx.CreateException(a))
	})
	for _, tt := range []struct {
		name string
		f    store.ExceptionFilter
		want []*keyward.Exception
	}{
		{"all", store.ExceptionFilter{}, []*keyward.Exception{a, b, c, d}},
		{"state", store.ExceptionFilter{State: keyward.ExceptionActive}, []*keyward.Exception{b}},
		{"product", store.ExceptionFilter{ProductID: "p1"}, []*keyward.Exception{a, b}},
		{"target", store.ExceptionFilter{TargetID: "kid-1"}, []*keyward.Exception{a, b}},
		{"rule", store.ExceptionFilter{Rule: "expire"}, []*keyward.Exception{c}},
		{"approval", store.ExceptionFilter{ApprovalID: "apr_exc_d"}, []*keyward.Exception{d}},
		{"target and state", store.ExceptionFilter{TargetID: "kid-1", State: keyward.ExceptionPending}, []*keyward.Exception{a}},
		{"limit", store.ExceptionFilter{Limit: 3}, []*keyward.Exception{a, b, c}},
		{"none", store.ExceptionFilter{TargetID: "kid-9"}, nil},
	} {
		got := get(t, s, func(tx store.Tx) ([]*keyward.Exception, error) { return tx.Exceptions(tt.f) })
		wantList(t, "Exceptions("+tt.name+")", got, tt.want)
	}
}
