package storetest

import (
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"golang.org/x/mod/sumdb/tlog"

	"github.com/keyward/keyward"
	"github.com/keyward/keyward/audit"
	"github.com/keyward/keyward/store"
)

// runBatch tests the batch writes of batch issuance: CreateLicenses,
// CreateLicenseKeys, AppendAudits (through audit.AppendAll) and
// AppendEvents write what the one-row methods write.
func runBatch(t *testing.T, open func(t *testing.T) store.Store) {
	tests := []struct {
		name string
		fn   func(t *testing.T, s store.Store)
	}{
		{"Batch/Licenses", testBatchLicenses},
		{"Batch/LicensesErrConflict", testBatchLicensesConflict},
		{"Batch/LicenseKeysErrConflict", testBatchLicenseKeysConflict},
		{"Batch/LicenseKeysErrNotFound", testBatchLicenseKeysNotFound},
		{"Batch/Audit", testBatchAudit},
		{"Batch/AuditTree", testBatchAuditTree},
		{"Batch/Events", testBatchEvents},
		{"Batch/EventsErrConflict", testBatchEventsConflict},
		{"Batch/Rollback", testBatchRollback},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) { tt.fn(t, open(t)) })
	}
}

// batchSize crosses the chunk sizes of both stores' multi-row statements.
const batchSize = 530

func batchLicenses(n int) ([]*keyward.License, []*keyward.LicenseKey) {
	ls := make([]*keyward.License, n)
	ks := make([]*keyward.LicenseKey, n)
	for i := range ls {
		l := newLicense(fmt.Sprintf("lic_%04d", i), "p1")
		if i%2 == 0 {
			l.Entitlements = []string{"export", "pro"}
			l.MaxMachines = 3
			l.ExpiresAt = ptr(365 * day)
		}
		ls[i] = l
		h := sha256.Sum256([]byte(l.ID))
		ks[i] = &keyward.LicenseKey{Hash: h[:], LicenseID: l.ID, Prefix: l.KeyPrefix, CreatedAt: at(time.Duration(i) * time.Second)}
	}
	return ls, ks
}

func testBatchLicenses(t *testing.T, s store.Store) {
	ls, ks := batchLicenses(batchSize)
	update(t, s, func(tx store.Tx) error {
		if err := tx.CreateProduct(newProduct("p1")); err != nil {
			return err
		}
		if err := tx.CreateLicenses(ls); err != nil {
			return err
		}
		return tx.CreateLicenseKeys(ks)
	})
	got := get(t, s, func(tx store.Tx) ([]*keyward.License, error) { return tx.Licenses(store.LicenseFilter{}) })
	wantList(t, "Licenses", got, ls)
	for _, k := range []*keyward.LicenseKey{ks[0], ks[1], ks[batchSize/2], ks[batchSize-1]} {
		got := get(t, s, func(tx store.Tx) (*keyward.LicenseKey, error) { return tx.LicenseKeyByHash(k.Hash) })
		wantEqual(t, "LicenseKeyByHash("+k.Prefix+")", got, k)
	}
	// Empty batches write nothing and are no error.
	update(t, s, func(tx store.Tx) error {
		if err := tx.CreateLicenses(nil); err != nil {
			return err
		}
		if err := tx.CreateLicenseKeys(nil); err != nil {
			return err
		}
		if err := tx.AppendAudits(nil); err != nil {
			return err
		}
		return tx.AppendEvents(nil)
	})
}

func testBatchLicensesConflict(t *testing.T, s store.Store) {
	withLicense(t, s)
	ls, _ := batchLicenses(batchSize)
	ls[batchSize-3] = newLicense("l1", "p1")
	wantCode(t, "CreateLicenses(existing id)", updateErr(t, s, func(tx store.Tx) error { return tx.CreateLicenses(ls) }), keyward.EConflict)
	wantBatchNothingWritten(t, s, 1)
	ls, _ = batchLicenses(batchSize)
	ls[7].ProductID = "p_missing"
	err := updateErr(t, s, func(tx store.Tx) error { return tx.CreateLicenses(ls) })
	wantCode(t, "CreateLicenses(missing product)", err, keyward.ENotFound)
	if strings.Contains(err.Error(), "product p1 ") {
		t.Errorf("CreateLicenses(missing product): %v names the product that exists", err)
	}
	wantBatchNothingWritten(t, s, 1)
	// All of one missing product: the error names it.
	ls, _ = batchLicenses(batchSize)
	for _, l := range ls {
		l.ProductID = "p_gone"
	}
	err = updateErr(t, s, func(tx store.Tx) error { return tx.CreateLicenses(ls) })
	wantCode(t, "CreateLicenses(all of a missing product)", err, keyward.ENotFound)
	if !strings.Contains(err.Error(), "p_gone") {
		t.Errorf("CreateLicenses(all of a missing product): %v does not name p_gone", err)
	}
	wantBatchNothingWritten(t, s, 1)
}

func testBatchLicenseKeysConflict(t *testing.T, s store.Store) {
	ls, ks := batchLicenses(batchSize)
	update(t, s, func(tx store.Tx) error {
		return firstErr(tx.CreateProduct(newProduct("p1")), tx.CreateLicenses(ls), tx.CreateLicenseKey(ks[100]))
	})
	wantCode(t, "CreateLicenseKeys(existing hash)", updateErr(t, s, func(tx store.Tx) error { return tx.CreateLicenseKeys(ks) }), keyward.EConflict)
}

func testBatchLicenseKeysNotFound(t *testing.T, s store.Store) {
	withLicense(t, s)
	_, ks := batchLicenses(batchSize)
	wantCode(t, "CreateLicenseKeys(missing license)", updateErr(t, s, func(tx store.Tx) error { return tx.CreateLicenseKeys(ks) }), keyward.ENotFound)
}

func batchAudit(n int, from int) []*keyward.AuditEntry {
	es := make([]*keyward.AuditEntry, n)
	for i := range es {
		e := newAudit("license.issue", fmt.Sprintf("lic_%04d", from+i))
		e.Details = json.RawMessage(fmt.Sprintf(`{"key_prefix":"KW1-%04d","policy_version":1}`, from+i))
		e.Roles = []string{"issuer"}
		if i%3 == 0 {
			e.ApprovalIDs, e.PolicyVersion, e.Rule = []string{"apr_1"}, 2, "r"
		}
		es[i] = e
	}
	return es
}

func testBatchAudit(t *testing.T, s store.Store) {
	update(t, s, func(tx store.Tx) error { return tx.AppendAudit(newAudit("product.create", "p1")) })
	es := batchAudit(batchSize, 0)
	update(t, s, func(tx store.Tx) error { return tx.AppendAudits(es) })
	last := newAudit("license.suspend", "lic_0001")
	update(t, s, func(tx store.Tx) error { return tx.AppendAudit(last) })
	for i, e := range es {
		if e.Seq != int64(i+2) {
			t.Fatalf("AppendAudits: entry %d has seq %d, want %d", i, e.Seq, i+2)
		}
	}
	if last.Seq != batchSize+2 {
		t.Fatalf("AppendAudit after a batch: seq %d, want %d", last.Seq, batchSize+2)
	}
	got := get(t, s, func(tx store.Tx) ([]*keyward.AuditEntry, error) {
		return tx.AuditEntries(store.AuditFilter{AfterSeq: 1, Limit: batchSize})
	})
	wantList(t, "AuditEntries", got, es)
}

// testBatchAuditTree checks that audit.AppendAll stores the tree hashes
// audit.Append would: the tree over batches of several sizes has the root
// of the entries' leaf hashes, and proofs from it verify.
func testBatchAuditTree(t *testing.T, s store.Store) {
	n := 0
	for _, size := range []int{1, 2, 3, batchSize, 1, 64, 7} {
		es := batchAudit(size, n)
		update(t, s, func(tx store.Tx) error { return audit.AppendAll(tx, es) })
		n += size
	}
	view(t, s, func(tx store.Tx) error {
		size, err := audit.TreeSize(tx)
		if err != nil {
			return err
		}
		if size != int64(n) {
			t.Fatalf("TreeSize = %d, want %d", size, n)
		}
		es, err := tx.AuditEntries(store.AuditFilter{})
		if err != nil {
			return err
		}
		var want []tlog.Hash // every stored hash, recomputed from the entries
		for i, e := range es {
			h, err := audit.LeafHash(e)
			if err != nil {
				return err
			}
			hs, err := tlog.StoredHashesForRecordHash(int64(i), h, tlog.HashReaderFunc(func(idx []int64) ([]tlog.Hash, error) {
				out := make([]tlog.Hash, len(idx))
				for j, x := range idx {
					out[j] = want[x]
				}
				return out, nil
			}))
			if err != nil {
				return err
			}
			want = append(want, hs...)
		}
		got, err := tx.AuditHashes(indexes(len(want)))
		if err != nil {
			return err
		}
		for i := range want {
			if got[i] != want[i] {
				t.Fatalf("stored hash %d = %x, want %x", i, got[i], want[i])
			}
		}
		return nil
	})
}

func testBatchEvents(t *testing.T, s store.Store) {
	first := &keyward.Event{ID: "evt_first", Type: "product.created", Time: at(0), Subject: "p1"}
	update(t, s, func(tx store.Tx) error { return tx.AppendEvent(first) })
	es := make([]*keyward.Event, batchSize)
	for i := range es {
		es[i] = &keyward.Event{ID: fmt.Sprintf("evt_%04d", i), Type: "license.issued", Time: at(time.Second), Subject: fmt.Sprintf("lic_%04d", i),
			Data: json.RawMessage(fmt.Sprintf(`{"audit_seq": %d}`, i))}
	}
	es[5].Data = nil
	update(t, s, func(tx store.Tx) error { return tx.AppendEvents(es) })
	prev := first.Seq
	for i, e := range es {
		if e.Seq <= prev {
			t.Fatalf("AppendEvents: event %d has seq %d after %d, want increasing", i, e.Seq, prev)
		}
		prev = e.Seq
	}
	got := get(t, s, func(tx store.Tx) ([]*keyward.Event, error) { return tx.Events(first.Seq, 0) })
	wantList(t, "Events", got, es)
}

func testBatchEventsConflict(t *testing.T, s store.Store) {
	update(t, s, func(tx store.Tx) error {
		return tx.AppendEvent(&keyward.Event{ID: "evt_0300", Type: "test", Time: at(0), Subject: "x"})
	})
	es := make([]*keyward.Event, batchSize)
	for i := range es {
		es[i] = &keyward.Event{ID: fmt.Sprintf("evt_%04d", i), Type: "test", Time: at(0), Subject: "x"}
	}
	wantCode(t, "AppendEvents(existing id)", updateErr(t, s, func(tx store.Tx) error { return tx.AppendEvents(es) }), keyward.EConflict)
}

// testBatchRollback checks that a failed Update leaves nothing of its
// batches, and the next batch's seqs follow the committed ones.
func testBatchRollback(t *testing.T, s store.Store) {
	ls, ks := batchLicenses(batchSize)
	err := updateErr(t, s, func(tx store.Tx) error {
		return firstErr(tx.CreateProduct(newProduct("p1")), tx.CreateLicenses(ls), tx.CreateLicenseKeys(ks),
			audit.AppendAll(tx, batchAudit(batchSize, 0)), fmt.Errorf("roll back"))
	})
	if err == nil {
		t.Fatal("Update = nil, want the error")
	}
	wantBatchNothingWritten(t, s, 0)
	es := batchAudit(3, 0)
	update(t, s, func(tx store.Tx) error { return audit.AppendAll(tx, es) })
	if es[0].Seq != 1 || es[2].Seq != 3 {
		t.Fatalf("AppendAll after a rollback: seqs %s, want 1..3", show(es))
	}
}

// wantBatchNothingWritten checks the store holds only the licenses it
// held before the failed batch, and no audit entry.
func wantBatchNothingWritten(t *testing.T, s store.Store, licenses int) {
	t.Helper()
	view(t, s, func(tx store.Tx) error {
		ls, err := tx.Licenses(store.LicenseFilter{})
		if err != nil {
			return err
		}
		size, err := tx.AuditSize()
		if err != nil {
			return err
		}
		if len(ls) != licenses || size != 0 {
			t.Fatalf("after a failed batch: %d licenses, %d audit entries; want %d and none", len(ls), size, licenses)
		}
		return nil
	})
}

// firstErr returns the first non-nil error: the calls are made in order,
// but a store's transaction is unusable after an error, so later errors
// say nothing.
func firstErr(errs ...error) error {
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

func indexes(n int) []int64 {
	out := make([]int64, n)
	for i := range out {
		out[i] = int64(i)
	}
	return out
}
