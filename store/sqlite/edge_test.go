package sqlite

import (
	"errors"
	"fmt"
	"math/bits"
	"path/filepath"
	"testing"

	"golang.org/x/mod/sumdb/tlog"

	"github.com/keyward/keyward/store"
)

// TestTreeEdgeStaysKnown checks what the edge is for: after the writer's
// own transactions (appends, other writes, rollbacks) it still knows the
// count and the whole right edge, so an append reads nothing; only
// another connection's write makes it start over.
func TestTreeEdgeStaysKnown(t *testing.T) {
	path := filepath.Join(t.TempDir(), "k.db")
	db, err := Open(t.Context(), path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	update := func(fn func(tx store.Tx) error) error { return db.Update(t.Context(), fn) }
	appendLeaf := func(tx store.Tx, n int64) error {
		hs, err := tlog.StoredHashes(n, fmt.Appendf(nil, "leaf %d", n), tlog.HashReaderFunc(tx.AuditHashes))
		if err != nil {
			return err
		}
		return tx.AppendAuditHashes(tlog.StoredHashIndex(0, n), hs)
	}
	check := func(leaves int64) {
		t.Helper()
		e := db.edge
		if !e.known || e.count != tlog.StoredHashCount(leaves) || len(e.hashes) != bits.OnesCount64(uint64(leaves)) {
			t.Fatalf("after %d leaves the edge knows %v, count %d, %d hashes; want count %d, %d hashes",
				leaves, e.known, e.count, len(e.hashes), tlog.StoredHashCount(leaves), bits.OnesCount64(uint64(leaves)))
		}
		for _, h := range e.hashes {
			level, n := tlog.SplitStoredHashIndex(h.idx)
			if leaves>>level != n+1 || n%2 != 0 {
				t.Fatalf("after %d leaves the edge holds hash (%d, %d), which is not on the right edge", leaves, level, n)
			}
		}
	}
	for n := range int64(100) {
		if err := update(func(tx store.Tx) error { return appendLeaf(tx, n) }); err != nil {
			t.Fatal(err)
		}
		switch n % 5 {
		case 1: // another write
			if err := update(func(tx store.Tx) error { return tx.PutSecret("s", []byte{byte(n)}) }); err != nil {
				t.Fatal(err)
			}
		case 2: // a rolled-back write
			errBack := errors.New("back")
			if err := update(func(tx store.Tx) error { tx.PutSecret("s", nil); return errBack }); !errors.Is(err, errBack) {
				t.Fatal(err)
			}
		case 3: // a rolled-back append
			errBack := errors.New("back")
			if err := update(func(tx store.Tx) error { appendLeaf(tx, n+1); return errBack }); !errors.Is(err, errBack) {
				t.Fatal(err)
			}
		}
		check(n + 1)
	}

	raw, err := Open(t.Context(), path) // another connection
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	if err := raw.Update(t.Context(), func(tx store.Tx) error { return tx.PutSecret("s", []byte("other")) }); err != nil {
		t.Fatal(err)
	}
	if err := update(func(stx store.Tx) error {
		if e := stx.(*tx).tree.edge(); e.known {
			t.Errorf("the edge is still known after another connection wrote the database")
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}
