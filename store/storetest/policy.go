package storetest

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/keyward/keyward"
	"github.com/keyward/keyward/store"
)

// runPolicy tests the store's part in versioned lifecycle policies:
// versions numbered 1, 2, 3, … per product inside the writing transaction,
// every field kept, history in version order, missing rows ENotFound, and
// nothing kept from a failed transaction.
func runPolicy(t *testing.T, open func(t *testing.T) store.Store) {
	tests := []struct {
		name string
		fn   func(t *testing.T, s store.Store)
	}{
		{"Policies/RoundTrip", testPoliciesRoundTrip},
		{"Policies/VersionsPerProduct", testPoliciesVersions},
		{"Policies/ErrNotFound", testPoliciesNotFound},
		{"Policies/RollbackOfMustBeEarlier", testPoliciesRollbackOf},
		{"Policies/RolledBackTxKeepsNoVersion", testPoliciesTxRollback},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) { tt.fn(t, open(t)) })
	}
}

func newPolicyRecord(productID string, n int) *keyward.PolicyRecord {
	doc := fmt.Sprintf("apiVersion: keyward.dev/v1\nkind: LifecyclePolicy\nmetadata: {name: v%d, product: %s}\n", n, productID)
	return &keyward.PolicyRecord{
		ProductID:     productID,
		Document:      doc,
		Hash:          fmt.Sprintf("%064x", n),
		Author:        "tok_admin",
		AuthorName:    "Ada Admin",
		CreatedAt:     at(time.Duration(n) * day),
		Justification: fmt.Sprintf("change %d: ticket OPS-%d", n, n),
	}
}

func testPoliciesRoundTrip(t *testing.T, s store.Store) {
	update(t, s, func(tx store.Tx) error { return tx.CreateProduct(newProduct("p1")) })
	r := newPolicyRecord("p1", 1)
	r.Document += "spec:\n  licenses:\n    maxMachines: 3 # ünïcode ✓\n"
	update(t, s, func(tx store.Tx) error { return tx.CreatePolicy(r) })
	if r.Version != 1 {
		t.Fatalf("CreatePolicy set Version = %d, want 1", r.Version)
	}
	got := get(t, s, func(tx store.Tx) (*keyward.PolicyRecord, error) { return tx.PolicyVersion("p1", 1) })
	wantEqual(t, "PolicyVersion(p1, 1)", got, r)
	got = get(t, s, func(tx store.Tx) (*keyward.PolicyRecord, error) { return tx.LatestPolicy("p1") })
	wantEqual(t, "LatestPolicy(p1)", got, r)

	// A rollback record keeps RollbackOf.
	r2 := newPolicyRecord("p1", 2)
	r2.Document, r2.Hash, r2.RollbackOf = r.Document, r.Hash, 1
	update(t, s, func(tx store.Tx) error { return tx.CreatePolicy(r2) })
	got = get(t, s, func(tx store.Tx) (*keyward.PolicyRecord, error) { return tx.PolicyVersion("p1", 2) })
	wantEqual(t, "PolicyVersion(p1, 2)", got, r2)
}

func testPoliciesVersions(t *testing.T, s store.Store) {
	update(t, s, func(tx store.Tx) error {
		return errors.Join(tx.CreateProduct(newProduct("p1")), tx.CreateProduct(newProduct("p2")))
	})
	if v := get(t, s, func(tx store.Tx) (int, error) { return tx.LatestPolicyVersion("p1") }); v != 0 {
		t.Fatalf("LatestPolicyVersion(p1) before any = %d, want 0", v)
	}
	if v := get(t, s, func(tx store.Tx) (int, error) { return tx.LatestPolicyVersion("no-such-product") }); v != 0 {
		t.Fatalf("LatestPolicyVersion(unknown product) = %d, want 0", v)
	}
	var want1, want2 []*keyward.PolicyRecord
	// Two versions in one transaction, interleaved with another product.
	update(t, s, func(tx store.Tx) error {
		for n := 1; n <= 2; n++ {
			r := newPolicyRecord("p1", n)
			if err := tx.CreatePolicy(r); err != nil {
				return err
			}
			if r.Version != n {
				return fmt.Errorf("p1 record %d got Version %d", n, r.Version)
			}
			want1 = append(want1, r)
		}
		r := newPolicyRecord("p2", 1)
		if err := tx.CreatePolicy(r); err != nil {
			return err
		}
		if r.Version != 1 {
			return fmt.Errorf("first p2 record got Version %d, want 1", r.Version)
		}
		want2 = append(want2, r)
		return nil
	})
	r := newPolicyRecord("p1", 3)
	update(t, s, func(tx store.Tx) error { return tx.CreatePolicy(r) })
	if r.Version != 3 {
		t.Fatalf("third p1 record got Version %d, want 3", r.Version)
	}
	want1 = append(want1, r)

	wantList(t, "PolicyHistory(p1)", get(t, s, func(tx store.Tx) ([]*keyward.PolicyRecord, error) { return tx.PolicyHistory("p1") }), want1)
	wantList(t, "PolicyHistory(p2)", get(t, s, func(tx store.Tx) ([]*keyward.PolicyRecord, error) { return tx.PolicyHistory("p2") }), want2)
	if v := get(t, s, func(tx store.Tx) (int, error) { return tx.LatestPolicyVersion("p1") }); v != 3 {
		t.Fatalf("LatestPolicyVersion(p1) = %d, want 3", v)
	}
	wantEqual(t, "LatestPolicy(p1)", get(t, s, func(tx store.Tx) (*keyward.PolicyRecord, error) { return tx.LatestPolicy("p1") }), r)
	wantEqual(t, "PolicyVersion(p1, 2)", get(t, s, func(tx store.Tx) (*keyward.PolicyRecord, error) { return tx.PolicyVersion("p1", 2) }), want1[1])
}

func testPoliciesNotFound(t *testing.T, s store.Store) {
	update(t, s, func(tx store.Tx) error { return tx.CreateProduct(newProduct("p1")) })
	wantNotFound(t, "LatestPolicy(p1) with none", viewErr(t, s, func(tx store.Tx) error {
		_, err := tx.LatestPolicy("p1")
		return err
	}), "p1")
	wantNotFound(t, "PolicyVersion(p1, 1) with none", viewErr(t, s, func(tx store.Tx) error {
		_, err := tx.PolicyVersion("p1", 1)
		return err
	}), "p1")
	update(t, s, func(tx store.Tx) error { return tx.CreatePolicy(newPolicyRecord("p1", 1)) })
	wantNotFound(t, "PolicyVersion(p1, 2)", viewErr(t, s, func(tx store.Tx) error {
		_, err := tx.PolicyVersion("p1", 2)
		return err
	}), "p1", "2")
	wantNotFound(t, "CreatePolicy for a missing product", updateErr(t, s, func(tx store.Tx) error {
		return tx.CreatePolicy(newPolicyRecord("p9", 1))
	}), "p9")
	if h := get(t, s, func(tx store.Tx) ([]*keyward.PolicyRecord, error) { return tx.PolicyHistory("p9") }); len(h) != 0 {
		t.Fatalf("PolicyHistory(p9) = %s, want empty", show(h))
	}
}

func testPoliciesRollbackOf(t *testing.T, s store.Store) {
	update(t, s, func(tx store.Tx) error { return tx.CreateProduct(newProduct("p1")) })
	r := newPolicyRecord("p1", 1)
	r.RollbackOf = 1 // the first version cannot restore itself or a later one
	err := updateErr(t, s, func(tx store.Tx) error { return tx.CreatePolicy(r) })
	wantCode(t, "CreatePolicy(RollbackOf = own version)", err, keyward.EInvalid)
	if !strings.Contains(keyward.ErrorMessage(err), "rollback") {
		t.Errorf("message %q does not say what is wrong", keyward.ErrorMessage(err))
	}
	if v := get(t, s, func(tx store.Tx) (int, error) { return tx.LatestPolicyVersion("p1") }); v != 0 {
		t.Fatalf("LatestPolicyVersion after refused create = %d, want 0", v)
	}
}

func testPoliciesTxRollback(t *testing.T, s store.Store) {
	update(t, s, func(tx store.Tx) error { return tx.CreateProduct(newProduct("p1")) })
	boom := errors.New("boom")
	err := s.Update(t.Context(), func(tx store.Tx) error {
		if err := tx.CreatePolicy(newPolicyRecord("p1", 1)); err != nil {
			return err
		}
		return boom
	})
	if !errors.Is(err, boom) {
		t.Fatalf("Update = %v, want boom", err)
	}
	if v := get(t, s, func(tx store.Tx) (int, error) { return tx.LatestPolicyVersion("p1") }); v != 0 {
		t.Fatalf("LatestPolicyVersion after a rolled-back create = %d, want 0", v)
	}
	// The number is free again.
	r := newPolicyRecord("p1", 1)
	update(t, s, func(tx store.Tx) error { return tx.CreatePolicy(r) })
	if r.Version != 1 {
		t.Fatalf("Version after a rolled-back create = %d, want 1", r.Version)
	}
}
