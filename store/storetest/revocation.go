package storetest

import (
	"errors"
	"sync/atomic"
	"testing"

	"github.com/keyward/keyward"
	"github.com/keyward/keyward/store"
)

// runRevocation tests the store's part in the revocation registry.
func runRevocation(t *testing.T, open func(t *testing.T) store.Store) {
	tests := []struct {
		name string
		fn   func(t *testing.T, s store.Store)
	}{
		{"Revocations/RoundTrip", testRevocationsRoundTrip},
		{"Revocations/Filter", testRevocationsFilter},
		{"Revocations/SeqIncreasing", testRevocationsSeq},
		{"Revocations/ErrInvalid", testRevocationsInvalid},
		{"Revocations/Notify", testRevocationsNotify},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) { tt.fn(t, open(t)) })
	}
}

func newRevocation(product, kind, subject, state string) *keyward.Revocation {
	return &keyward.Revocation{ProductID: product, Kind: kind, Subject: subject, State: state, Reason: "key_compromise", Time: at(day)}
}

func appendRevocations(t *testing.T, s store.Store, rs ...*keyward.Revocation) {
	t.Helper()
	update(t, s, func(tx store.Tx) error {
		for _, r := range rs {
			if err := tx.AppendRevocation(r); err != nil {
				return err
			}
		}
		return nil
	})
}

func testRevocationsRoundTrip(t *testing.T, s store.Store) {
	if head := get(t, s, func(tx store.Tx) (int64, error) { return tx.RevocationHead() }); head != 0 {
		t.Fatalf("RevocationHead of an empty registry = %d, want 0", head)
	}
	want := []*keyward.Revocation{
		newRevocation("p1", keyward.RevocationLicense, "l1", "revoked"),
		{ProductID: "", Kind: keyward.RevocationKey, Subject: "kid-registry", State: "compromised", Reason: "", Time: at(2 * day)},
	}
	appendRevocations(t, s, want...)
	if want[0].Seq <= 0 || want[1].Seq <= want[0].Seq {
		t.Fatalf("seqs %d, %d: want positive and increasing", want[0].Seq, want[1].Seq)
	}
	got := get(t, s, func(tx store.Tx) ([]*keyward.Revocation, error) { return tx.Revocations(store.RevocationFilter{}) })
	wantList(t, "Revocations", got, want)
	if head := get(t, s, func(tx store.Tx) (int64, error) { return tx.RevocationHead() }); head != want[1].Seq {
		t.Fatalf("RevocationHead = %d, want %d", head, want[1].Seq)
	}
}

func testRevocationsFilter(t *testing.T, s store.Store) {
	l1 := newRevocation("p1", keyward.RevocationLicense, "l1", "suspended")
	l2 := newRevocation("p2", keyward.RevocationLicense, "l2", "revoked")
	reg := newRevocation("", keyward.RevocationKey, "kid-reg", "compromised")
	l1b := newRevocation("p1", keyward.RevocationLicense, "l1", "active")
	appendRevocations(t, s, l1, l2, reg, l1b)
	seqs := func(f store.RevocationFilter) []int64 {
		rs := get(t, s, func(tx store.Tx) ([]*keyward.Revocation, error) { return tx.Revocations(f) })
		out := []int64{}
		for _, r := range rs {
			out = append(out, r.Seq)
		}
		return out
	}
	for _, c := range []struct {
		name string
		f    store.RevocationFilter
		want []int64
	}{
		{"All", store.RevocationFilter{}, []int64{l1.Seq, l2.Seq, reg.Seq, l1b.Seq}},
		{"ProductWithGlobal", store.RevocationFilter{ProductID: "p1"}, []int64{l1.Seq, reg.Seq, l1b.Seq}},
		{"OtherProduct", store.RevocationFilter{ProductID: "p2"}, []int64{l2.Seq, reg.Seq}},
		{"UnknownProduct", store.RevocationFilter{ProductID: "p9"}, []int64{reg.Seq}},
		{"AfterSeq", store.RevocationFilter{AfterSeq: l2.Seq}, []int64{reg.Seq, l1b.Seq}},
		{"AfterSeqProduct", store.RevocationFilter{ProductID: "p2", AfterSeq: l2.Seq}, []int64{reg.Seq}},
		{"Limit", store.RevocationFilter{Limit: 2}, []int64{l1.Seq, l2.Seq}},
		{"AfterHead", store.RevocationFilter{AfterSeq: l1b.Seq}, []int64{}},
	} {
		if got := seqs(c.f); !equalInts(got, c.want) {
			t.Errorf("%s: Revocations(%+v) seqs = %v, want %v", c.name, c.f, got, c.want)
		}
	}
}

func equalInts(a, b []int64) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// testRevocationsSeq checks that a rolled-back row is never seen and that
// seqs keep increasing across transactions.
func testRevocationsSeq(t *testing.T, s store.Store) {
	first := newRevocation("p1", keyward.RevocationLicense, "l1", "revoked")
	appendRevocations(t, s, first)
	boom := errors.New("boom")
	err := updateErr(t, s, func(tx store.Tx) error {
		if err := tx.AppendRevocation(newRevocation("p1", keyward.RevocationLicense, "l2", "revoked")); err != nil {
			return err
		}
		return boom
	})
	if !errors.Is(err, boom) {
		t.Fatalf("Update = %v, want boom", err)
	}
	rs := get(t, s, func(tx store.Tx) ([]*keyward.Revocation, error) { return tx.Revocations(store.RevocationFilter{}) })
	if len(rs) != 1 || rs[0].Subject != "l1" {
		t.Fatalf("after a rolled-back append: %d rows (%+v), want only l1", len(rs), rs)
	}
	prev := first.Seq
	for i := 0; i < 3; i++ {
		r := newRevocation("p1", keyward.RevocationLicense, "l3", "suspended")
		appendRevocations(t, s, r)
		if r.Seq <= prev {
			t.Fatalf("seq %d after %d: want increasing", r.Seq, prev)
		}
		prev = r.Seq
	}
}

func testRevocationsInvalid(t *testing.T, s store.Store) {
	for _, r := range []*keyward.Revocation{
		newRevocation("p1", "machine", "m1", "revoked"),
		newRevocation("p1", keyward.RevocationLicense, "", "revoked"),
		newRevocation("p1", keyward.RevocationLicense, "l1", ""),
	} {
		err := updateErr(t, s, func(tx store.Tx) error { return tx.AppendRevocation(r) })
		wantCode(t, "AppendRevocation("+r.Kind+","+r.Subject+","+r.State+")", err, keyward.EInvalid)
	}
	if head := get(t, s, func(tx store.Tx) (int64, error) { return tx.RevocationHead() }); head != 0 {
		t.Fatalf("RevocationHead after refused appends = %d, want 0", head)
	}
}

// testRevocationsNotify checks store.NotifyRevocations: notified after a
// commit that appended a row, never for a rollback or a commit without one.
func testRevocationsNotify(t *testing.T, s store.Store) {
	var n atomic.Int32
	ns := store.NotifyRevocations(s, func() { n.Add(1) })
	check := func(what string, want int32) {
		t.Helper()
		if got := n.Load(); got != want {
			t.Fatalf("%s: notified %d times, want %d", what, got, want)
		}
	}
	update(t, ns, func(tx store.Tx) error { return tx.CreateProduct(newProduct("p1")) })
	check("commit without a revocation", 0)
	_ = updateErr(t, ns, func(tx store.Tx) error {
		if err := tx.AppendRevocation(newRevocation("p1", keyward.RevocationLicense, "l1", "revoked")); err != nil {
			return err
		}
		return errors.New("boom")
	})
	check("rolled back", 0)
	update(t, ns, func(tx store.Tx) error {
		return tx.AppendRevocation(newRevocation("p1", keyward.RevocationLicense, "l1", "revoked"))
	})
	check("committed revocation", 1)
	view(t, ns, func(tx store.Tx) error { _, err := tx.RevocationHead(); return err })
	check("view", 1)
}
