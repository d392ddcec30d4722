package storetest

import (
	"bytes"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/keyward/keyward"
	"github.com/keyward/keyward/store"
)

// runGovernance tests the store's part in governance: approval requests,
// MFA enrollments and token lookups by id.
func runGovernance(t *testing.T, open func(t *testing.T) store.Store) {
	tests := []struct {
		name string
		fn   func(t *testing.T, s store.Store)
	}{
		{"Approvals/RoundTrip", testApprovalsRoundTrip},
		{"Approvals/ErrNotFound", testApprovalsNotFound},
		{"Approvals/ErrConflict", testApprovalsConflict},
		{"Approvals/OnePendingPerTarget", testApprovalsOnePending},
		{"Approvals/Update", testApprovalsUpdate},
		{"Approvals/Filter", testApprovalsFilter},
		{"MFA/RoundTrip", testMFARoundTrip},
		{"MFA/ErrNotFound", testMFANotFound},
		{"MFA/Replace", testMFAReplace},
		{"Tokens/ByID", testTokenByID},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) { tt.fn(t, open(t)) })
	}
}

func newApproval(id, action, targetID, productID string) *keyward.Approval {
	return &keyward.Approval{
		ID: id, Action: action, TargetType: "license", TargetID: targetID, ProductID: productID, Reason: "abuse",
		RequestedBy: "tok_revoker", RequestedByName: "rita", Required: 1, State: keyward.ApprovalPending,
		CreatedAt: at(0), ExpiresAt: at(72 * time.Hour), UpdatedAt: at(0),
	}
}

func testApprovalsRoundTrip(t *testing.T, s store.Store) {
	full := &keyward.Approval{
		ID: "apr_full", Action: "key.destroy", TargetType: "key", TargetID: "kid-1", ProductID: "p1", Reason: "destroyAfter",
		RequestedBy: "system", RequestedByName: "keyward server", Required: 2, PolicyVersion: 7,
		State: keyward.ApprovalGranted, CreatedAt: at(time.Second), ExpiresAt: at(72 * time.Hour), UpdatedAt: at(2 * time.Hour),
		Grants: []keyward.ApprovalGrant{
			{By: "tok_a", ByName: "alice", At: at(time.Hour), Comment: "checked the exposure report"},
			{By: "tok_b", ByName: "bob", At: at(2 * time.Hour)},
		},
		DecidedAt: ptr(2 * time.Hour), DecidedBy: "tok_b", DecidedByName: "bob", DecisionReason: "",
	}
	// A registry key's request has no product.
	bare := newApproval("apr_bare", "key.destroy", "kid-registry", "")
	bare.TargetType = "key"
	update(t, s, func(tx store.Tx) error {
		return errors.Join(tx.CreateProduct(newProduct("p1")), tx.CreateApproval(full), tx.CreateApproval(bare))
	})
	for _, want := range []*keyward.Approval{full, bare} {
		got := get(t, s, func(tx store.Tx) (*keyward.Approval, error) { return tx.Approval(want.ID) })
		wantEqual(t, "Approval("+want.ID+")", got, want)
	}
	wantList(t, "Approvals({})", get(t, s, func(tx store.Tx) ([]*keyward.Approval, error) { return tx.Approvals(store.ApprovalFilter{}) }),
		[]*keyward.Approval{bare, full})
}

func testApprovalsNotFound(t *testing.T, s store.Store) {
	err := viewErr(t, s, func(tx store.Tx) error { _, err := tx.Approval("apr_missing"); return err })
	wantNotFound(t, "Approval(missing)", err, "apr_missing")
	err = updateErr(t, s, func(tx store.Tx) error {
		return tx.UpdateApproval(newApproval("apr_missing", "license.revoke", "l1", ""))
	})
	wantNotFound(t, "UpdateApproval(missing)", err, "apr_missing")
	if as := get(t, s, func(tx store.Tx) ([]*keyward.Approval, error) { return tx.Approvals(store.ApprovalFilter{}) }); len(as) != 0 {
		t.Fatalf("Approvals() of an empty store = %s, want none", show(as))
	}
}

func testApprovalsConflict(t *testing.T, s store.Store) {
	update(t, s, func(tx store.Tx) error { return tx.CreateApproval(newApproval("apr_1", "license.revoke", "l1", "")) })
	dup := newApproval("apr_1", "license.revoke", "l2", "")
	wantCode(t, "CreateApproval(duplicate id)", updateErr(t, s, func(tx store.Tx) error { return tx.CreateApproval(dup) }), keyward.EConflict)
	bad := newApproval("apr_2", "license.revoke", "l3", "")
	bad.State = "maybe"
	wantCode(t, "CreateApproval(bad state)", updateErr(t, s, func(tx store.Tx) error { return tx.CreateApproval(bad) }), keyward.EInvalid)
}

func testApprovalsOnePending(t *testing.T, s store.Store) {
	first := newApproval("apr_1", "license.revoke", "l1", "")
	update(t, s, func(tx store.Tx) error { return tx.CreateApproval(first) })
	second := newApproval("apr_2", "license.revoke", "l1", "")
	err := updateErr(t, s, func(tx store.Tx) error { return tx.CreateApproval(second) })
	wantCode(t, "CreateApproval(second pending for the same action and target)", err, keyward.EConflict)

	// Another action on the same target, or a non-pending request, is fine.
	other := newApproval("apr_3", "key.destroy", "l1", "")
	done := newApproval("apr_4", "license.revoke", "l1", "")
	done.State = keyward.ApprovalDenied
	update(t, s, func(tx store.Tx) error { return errors.Join(tx.CreateApproval(other), tx.CreateApproval(done)) })

	// Once the first is decided, a new pending request may exist…
	first.State, first.UpdatedAt = keyward.ApprovalExpired, at(time.Hour)
	update(t, s, func(tx store.Tx) error { return tx.UpdateApproval(first) })
	update(t, s, func(tx store.Tx) error { return tx.CreateApproval(second) })
	// …and the decided one cannot be made pending again beside it.
	first.State = keyward.ApprovalPending
	err = updateErr(t, s, func(tx store.Tx) error { return tx.UpdateApproval(first) })
	wantCode(t, "UpdateApproval(back to pending beside another)", err, keyward.EConflict)
}

func testApprovalsUpdate(t *testing.T, s store.Store) {
	ap := newApproval("apr_1", "license.revoke", "l1", "")
	update(t, s, func(tx store.Tx) error { return tx.CreateApproval(ap) })

	ap.Grants = []keyward.ApprovalGrant{{By: "tok_a", ByName: "alice", At: at(time.Hour), Comment: "ok"}}
	ap.State, ap.UpdatedAt, ap.DecidedAt, ap.DecidedBy, ap.DecidedByName = keyward.ApprovalGranted, at(time.Hour), ptr(time.Hour), "tok_a", "alice"
	update(t, s, func(tx store.Tx) error { return tx.UpdateApproval(ap) })
	wantEqual(t, "Approval after grant", get(t, s, func(tx store.Tx) (*keyward.Approval, error) { return tx.Approval("apr_1") }), ap)

	// Only the mutable fields are written.
	changed := *ap
	changed.Action, changed.TargetID, changed.RequestedBy, changed.Required, changed.ExpiresAt, changed.Reason = "key.destroy", "l9", "tok_x", 5, at(day), "other"
	update(t, s, func(tx store.Tx) error { return tx.UpdateApproval(&changed) })
	wantEqual(t, "Approval after updating immutable fields", get(t, s, func(tx store.Tx) (*keyward.Approval, error) { return tx.Approval("apr_1") }), ap)

	// A denial keeps its reason; bad states are refused.
	ap.State, ap.DecisionReason, ap.Grants = keyward.ApprovalDenied, "not abuse, a test rig", nil
	update(t, s, func(tx store.Tx) error { return tx.UpdateApproval(ap) })
	wantEqual(t, "Approval after deny", get(t, s, func(tx store.Tx) (*keyward.Approval, error) { return tx.Approval("apr_1") }), ap)
	bad := *ap
	bad.State = "maybe"
	wantCode(t, "UpdateApproval(bad state)", updateErr(t, s, func(tx store.Tx) error { return tx.UpdateApproval(&bad) }), keyward.EInvalid)
}

func testApprovalsFilter(t *testing.T, s store.Store) {
	a1 := newApproval("apr_1", "license.revoke", "l1", "p1")
	a2 := newApproval("apr_2", "key.destroy", "kid-1", "p1")
	a2.TargetType = "key"
	a3 := newApproval("apr_3", "license.revoke", "l2", "p2")
	a3.State = keyward.ApprovalGranted
	a4 := newApproval("apr_4", "license.revoke", "l1", "p1")
	a4.State = keyward.ApprovalDenied
	update(t, s, func(tx store.Tx) error {
		return errors.Join(tx.CreateProduct(newProduct("p1")), tx.CreateProduct(newProduct("p2")),
			tx.CreateApproval(a4), tx.CreateApproval(a3), tx.CreateApproval(a2), tx.CreateApproval(a1))
	})
	cases := []struct {
		name string
		f    store.ApprovalFilter
		want []*keyward.Approval
	}{
		{"All", store.ApprovalFilter{}, []*keyward.Approval{a1, a2, a3, a4}},
		{"Pending", store.ApprovalFilter{State: keyward.ApprovalPending}, []*keyward.Approval{a1, a2}},
		{"Product", store.ApprovalFilter{ProductID: "p2"}, []*keyward.Approval{a3}},
		{"Target", store.ApprovalFilter{TargetID: "l1"}, []*keyward.Approval{a1, a4}},
		{"Action", store.ApprovalFilter{Action: "key.destroy"}, []*keyward.Approval{a2}},
		{"Combined", store.ApprovalFilter{State: keyward.ApprovalPending, ProductID: "p1", Action: "license.revoke"}, []*keyward.Approval{a1}},
		{"Limit", store.ApprovalFilter{Limit: 3}, []*keyward.Approval{a1, a2, a3}},
		{"NoMatch", store.ApprovalFilter{TargetID: "l9"}, nil},
	}
	for _, c := range cases {
		got := get(t, s, func(tx store.Tx) ([]*keyward.Approval, error) { return tx.Approvals(c.f) })
		wantList(t, "Approvals("+c.name+")", got, c.want)
	}
}

func testMFARoundTrip(t *testing.T, s store.Store) {
	full := &keyward.MFAEnrollment{Principal: "name:alice", Name: "Alice", Sealed: []byte("sealed totp"), CreatedAt: at(time.Second),
		LastStep: 58_000_000, Failures: 3, LockedUntil: ptr(time.Hour)}
	bare := &keyward.MFAEnrollment{Principal: "name:bob", Name: "bob", Sealed: []byte("sealed bob"), CreatedAt: at(0)}
	update(t, s, func(tx store.Tx) error { return errors.Join(tx.PutMFAEnrollment(full), tx.PutMFAEnrollment(bare)) })
	for _, want := range []*keyward.MFAEnrollment{full, bare} {
		got := get(t, s, func(tx store.Tx) (*keyward.MFAEnrollment, error) { return tx.MFAEnrollment(want.Principal) })
		wantEqual(t, "MFAEnrollment("+want.Principal+")", got, want)
	}
	// Ordered by principal.
	wantList(t, "MFAEnrollments()", get(t, s, func(tx store.Tx) ([]*keyward.MFAEnrollment, error) { return tx.MFAEnrollments() }),
		[]*keyward.MFAEnrollment{full, bare})
}

func testMFANotFound(t *testing.T, s store.Store) {
	err := viewErr(t, s, func(tx store.Tx) error { _, err := tx.MFAEnrollment("name:nobody"); return err })
	wantNotFound(t, "MFAEnrollment(missing)", err, "name:nobody")
	err = updateErr(t, s, func(tx store.Tx) error { return tx.DeleteMFAEnrollment("name:nobody") })
	wantNotFound(t, "DeleteMFAEnrollment(missing)", err, "name:nobody")
}

func testMFAReplace(t *testing.T, s store.Store) {
	e := &keyward.MFAEnrollment{Principal: "name:alice", Name: "alice", Sealed: []byte("sealed one"), CreatedAt: at(0), LastStep: 10, Failures: 2}
	update(t, s, func(tx store.Tx) error { return tx.PutMFAEnrollment(e) })
	// A code accepted: the step advances, failures reset, lock cleared.
	e.LastStep, e.Failures, e.LockedUntil = 11, 0, nil
	update(t, s, func(tx store.Tx) error { return tx.PutMFAEnrollment(e) })
	wantEqual(t, "MFAEnrollment after update", get(t, s, func(tx store.Tx) (*keyward.MFAEnrollment, error) { return tx.MFAEnrollment("name:alice") }), e)
	// Re-enrollment replaces the secret.
	re := &keyward.MFAEnrollment{Principal: "name:alice", Name: "Alice", Sealed: []byte("sealed two"), CreatedAt: at(day)}
	update(t, s, func(tx store.Tx) error { return tx.PutMFAEnrollment(re) })
	got := get(t, s, func(tx store.Tx) (*keyward.MFAEnrollment, error) { return tx.MFAEnrollment("name:alice") })
	wantEqual(t, "MFAEnrollment after re-enrollment", got, re)
	if !bytes.Equal(got.Sealed, []byte("sealed two")) {
		t.Fatalf("re-enrollment kept the old secret")
	}
	// Deletion removes it; the error message never carries the secret.
	update(t, s, func(tx store.Tx) error { return tx.DeleteMFAEnrollment("name:alice") })
	err := viewErr(t, s, func(tx store.Tx) error { _, err := tx.MFAEnrollment("name:alice"); return err })
	wantNotFound(t, "MFAEnrollment(deleted)", err)
	if strings.Contains(err.Error(), "sealed") {
		t.Errorf("MFAEnrollment error %v reveals the sealed secret", err)
	}
}

func testTokenByID(t *testing.T, s store.Store) {
	tok := &keyward.Token{ID: "tok_1", Name: "one", Hash: []byte("hash"), Roles: []string{keyward.RoleApprover}, CreatedAt: at(0), ExpiresAt: ptr(8 * time.Hour)}
	update(t, s, func(tx store.Tx) error { return tx.CreateToken(tok) })
	wantEqual(t, "Token(tok_1)", get(t, s, func(tx store.Tx) (*keyward.Token, error) { return tx.Token("tok_1") }), tok)
	err := viewErr(t, s, func(tx store.Tx) error { _, err := tx.Token("tok_missing"); return err })
	wantNotFound(t, "Token(missing)", err, "tok_missing")
}
