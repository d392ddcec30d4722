package sqlite_test

import (
	"errors"
	"fmt"
	"path/filepath"
	"testing"

	"golang.org/x/mod/sumdb/tlog"

	"github.com/keyward/keyward"
	"github.com/keyward/keyward/store"
	"github.com/keyward/keyward/store/sqlite"
)

// The writer remembers the audit tree's right edge between transactions
// (treeEdge). These tests check that what it remembers never shows: reads
// and appends behave as if every hash came from the table.

// appendLeaf stores the hashes of leaf n, as audit.Append does.
func appendLeaf(tx store.Tx, n int64) error {
	hs, err := tlog.StoredHashes(n, fmt.Appendf(nil, "leaf %d", n), tlog.HashReaderFunc(tx.AuditHashes))
	if err != nil {
		return err
	}
	return tx.AppendAuditHashes(tlog.StoredHashIndex(0, n), hs)
}

func mustUpdate(t *testing.T, db *sqlite.DB, fn func(tx store.Tx) error) {
	t.Helper()
	if err := db.Update(t.Context(), fn); err != nil {
		t.Fatal(err)
	}
}

// appendLeaves stores leaves from to to-1, one transaction each.
func appendLeaves(t *testing.T, db *sqlite.DB, from, to int64) {
	t.Helper()
	for n := from; n < to; n++ {
		mustUpdate(t, db, func(tx store.Tx) error { return appendLeaf(tx, n) })
	}
}

// treeHash returns the root of the first n leaves as tx reads it.
func treeHash(tx store.Tx, n int64) (tlog.Hash, error) {
	return tlog.TreeHash(n, tlog.HashReaderFunc(tx.AuditHashes))
}

// sliceReader reads stored hashes from a slice.
type sliceReader []tlog.Hash

func (r sliceReader) ReadHashes(indexes []int64) ([]tlog.Hash, error) {
	out := make([]tlog.Hash, len(indexes))
	for i, x := range indexes {
		out[i] = r[x]
	}
	return out, nil
}

// mustSameTree checks that an Update (which may read the writer's edge)
// and a View (which reads the table) see the tree of leaves 0 to n-1 as
// computed afresh.
func mustSameTree(t *testing.T, db *sqlite.DB, n int64) {
	t.Helper()
	var fresh sliceReader
	for i := range n {
		hs, err := tlog.StoredHashes(i, fmt.Appendf(nil, "leaf %d", i), fresh)
		if err != nil {
			t.Fatal(err)
		}
		fresh = append(fresh, hs...)
	}
	want, err := tlog.TreeHash(n, fresh)
	if err != nil {
		t.Fatal(err)
	}
	var inUpdate, inView tlog.Hash
	mustUpdate(t, db, func(tx store.Tx) (err error) { inUpdate, err = treeHash(tx, n); return err })
	if err := db.View(t.Context(), func(tx store.Tx) (err error) { inView, err = treeHash(tx, n); return err }); err != nil {
		t.Fatal(err)
	}
	if inUpdate != want || inView != want {
		t.Fatalf("tree of %d leaves: Update reads %v, View %v, want %v", n, inUpdate, inView, want)
	}
}

func TestAuditTreeEdgeRollback(t *testing.T) {
	db := mustOpen(t, filepath.Join(t.TempDir(), "k.db"))
	appendLeaves(t, db, 0, 6)
	errRollback := errors.New("roll back")
	err := db.Update(t.Context(), func(tx store.Tx) error {
		for n := range int64(4) {
			if err := appendLeaf(tx, 6+n); err != nil {
				return err
			}
		}
		return errRollback
	})
	if !errors.Is(err, errRollback) {
		t.Fatalf("Update = %v, want %v", err, errRollback)
	}
	mustUpdate(t, db, func(tx store.Tx) error {
		if n, err := tx.AuditHashCount(); err != nil || n != tlog.StoredHashCount(6) {
			t.Errorf("AuditHashCount after the rollback = %d, %v; want %d", n, err, tlog.StoredHashCount(6))
		}
		// Leaf 7 completed the subtree of leaves 0-7, which is gone.
		idx := tlog.StoredHashIndex(3, 0)
		if hs, err := tx.AuditHashes([]int64{idx}); keyward.ErrorCode(err) != keyward.ENotFound {
			t.Errorf("AuditHashes(%d) after the rollback = %v, %v; want ENotFound", idx, hs, err)
		}
		return nil
	})
	appendLeaves(t, db, 6, 11)
	mustSameTree(t, db, 11)
}

func TestAuditTreeEdgeSeesOtherWriters(t *testing.T) {
	path := filepath.Join(t.TempDir(), "k.db")
	db := mustOpen(t, path)
	raw := rawOpen(t, path)
	appendLeaves(t, db, 0, 13)
	mustSameTree(t, db, 13)

	// 13 = 8+4+1: the subtree of leaves 0-7 is on the right edge.
	idx := tlog.StoredHashIndex(3, 0)
	var orig []byte
	if err := raw.QueryRow(`SELECT hash FROM audit_hashes WHERE idx = ?`, idx).Scan(&orig); err != nil {
		t.Fatal(err)
	}
	if _, err := raw.Exec(`UPDATE audit_hashes SET hash = zeroblob(32) WHERE idx = ?`, idx); err != nil {
		t.Fatal(err)
	}
	mustUpdate(t, db, func(tx store.Tx) error {
		hs, err := tx.AuditHashes([]int64{idx})
		if err != nil {
			return err
		}
		if hs[0] != (tlog.Hash{}) {
			t.Errorf("AuditHashes(%d) after another connection zeroed it = %v, want zeros", idx, hs[0])
		}
		return nil
	})
	if _, err := raw.Exec(`UPDATE audit_hashes SET hash = ? WHERE idx = ?`, orig, idx); err != nil {
		t.Fatal(err)
	}

	// Another connection truncates the tree to 10 leaves: appending leaf
	// 13 would leave a gap, appending leaf 10 is right.
	if _, err := raw.Exec(`DELETE FROM audit_hashes WHERE idx >= ?`, tlog.StoredHashCount(10)); err != nil {
		t.Fatal(err)
	}
	err := db.Update(t.Context(), func(tx store.Tx) error {
		return tx.AppendAuditHashes(tlog.StoredHashCount(13), []tlog.Hash{{1}})
	})
	if keyward.ErrorCode(err) != keyward.EConflict {
		t.Fatalf("AppendAuditHashes past the truncated tree = %v, want EConflict", err)
	}
	appendLeaves(t, db, 10, 14)
	mustSameTree(t, db, 14)
}
