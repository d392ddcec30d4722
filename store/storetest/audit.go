package storetest

import (
	"crypto/sha256"
	"encoding/json"
	"errors"
	"testing"
	"time"

	"golang.org/x/mod/sumdb/tlog"

	"github.com/keyward/keyward"
	"github.com/keyward/keyward/audit"
	"github.com/keyward/keyward/store"
)

// runAudit tests the store's part in the tamper-evident audit log: tree
// hashes and checkpoints (store.AuditTx), and that an entry reads back
// exactly as audit.Append hashed it.
func runAudit(t *testing.T, open func(t *testing.T) store.Store) {
	tests := []struct {
		name string
		fn   func(t *testing.T, s store.Store)
	}{
		{"AuditLog/Size", testAuditSize},
		{"AuditLog/Hashes", testAuditHashes},
		{"AuditLog/HashesErrConflict", testAuditHashesConflict},
		{"AuditLog/HashesErrNotFound", testAuditHashesNotFound},
		{"AuditLog/Checkpoints", testCheckpoints},
		{"AuditLog/CheckpointsErrNotFound", testCheckpointsNotFound},
		{"AuditLog/CheckpointsErrConflict", testCheckpointsConflict},
		{"AuditLog/LeafStable", testAuditLeafStable},
		{"AuditLog/Rollback", testAuditRollback},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) { tt.fn(t, open(t)) })
	}
}

func hashOf(s string) tlog.Hash { return tlog.Hash(sha256.Sum256([]byte(s))) }

func testAuditSize(t *testing.T, s store.Store) {
	if n := get(t, s, func(tx store.Tx) (int64, error) { return tx.AuditSize() }); n != 0 {
		t.Fatalf("AuditSize of an empty log = %d, want 0", n)
	}
	update(t, s, func(tx store.Tx) error {
		return errors.Join(tx.AppendAudit(newAudit("a", "x")), tx.AppendAudit(newAudit("b", "x")), tx.AppendAudit(newAudit("c", "x")))
	})
	if n := get(t, s, func(tx store.Tx) (int64, error) { return tx.AuditSize() }); n != 3 {
		t.Fatalf("AuditSize = %d, want 3", n)
	}
}

func testAuditHashes(t *testing.T, s store.Store) {
	if n := get(t, s, func(tx store.Tx) (int64, error) { return tx.AuditHashCount() }); n != 0 {
		t.Fatalf("AuditHashCount of an empty tree = %d, want 0", n)
	}
	hs := []tlog.Hash{hashOf("0"), hashOf("1"), hashOf("2")}
	update(t, s, func(tx store.Tx) error { return tx.AppendAuditHashes(0, hs[:1]) })
	update(t, s, func(tx store.Tx) error { return tx.AppendAuditHashes(1, hs[1:]) })
	if n := get(t, s, func(tx store.Tx) (int64, error) { return tx.AuditHashCount() }); n != 3 {
		t.Fatalf("AuditHashCount = %d, want 3", n)
	}
	got := get(t, s, func(tx store.Tx) ([]tlog.Hash, error) { return tx.AuditHashes([]int64{2, 0, 1, 2}) })
	want := []tlog.Hash{hs[2], hs[0], hs[1], hs[2]}
	if len(got) != len(want) {
		t.Fatalf("AuditHashes([2 0 1 2]) = %d hashes, want %d", len(got), len(want))
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("AuditHashes([2 0 1 2])[%d] = %v, want %v", i, got[i], want[i])
		}
	}
	if got := get(t, s, func(tx store.Tx) ([]tlog.Hash, error) { return tx.AuditHashes(nil) }); len(got) != 0 {
		t.Fatalf("AuditHashes(nil) = %v, want none", got)
	}
	// Many at once: tlog asks for up to a few hundred.
	many := make([]tlog.Hash, 1200)
	idx := make([]int64, len(many))
	for i := range many {
		many[i] = hashOf(string(rune('a' + i%26)))
		idx[i] = int64(3 + i)
	}
	update(t, s, func(tx store.Tx) error { return tx.AppendAuditHashes(3, many) })
	got = get(t, s, func(tx store.Tx) ([]tlog.Hash, error) { return tx.AuditHashes(idx) })
	for i := range many {
		if got[i] != many[i] {
			t.Fatalf("AuditHashes(3..1202)[%d] = %v, want %v", i, got[i], many[i])
		}
	}
}

func testAuditHashesConflict(t *testing.T, s store.Store) {
	update(t, s, func(tx store.Tx) error { return tx.AppendAuditHashes(0, []tlog.Hash{hashOf("0"), hashOf("1")}) })
	err := updateErr(t, s, func(tx store.Tx) error { return tx.AppendAuditHashes(1, []tlog.Hash{hashOf("x")}) })
	wantCode(t, "AppendAuditHashes(1) again", err, keyward.EConflict)
	err = updateErr(t, s, func(tx store.Tx) error { return tx.AppendAuditHashes(3, []tlog.Hash{hashOf("x")}) })
	wantCode(t, "AppendAuditHashes(3) leaving a gap", err, keyward.EConflict)
	// A refusal leaves the transaction usable.
	update(t, s, func(tx store.Tx) error {
		if err := tx.AppendAuditHashes(0, []tlog.Hash{hashOf("x")}); keyward.ErrorCode(err) != keyward.EConflict {
			t.Errorf("AppendAuditHashes(0) = %v, want EConflict", err)
		}
		return tx.AppendAuditHashes(2, []tlog.Hash{hashOf("2")})
	})
	if n := get(t, s, func(tx store.Tx) (int64, error) { return tx.AuditHashCount() }); n != 3 {
		t.Fatalf("AuditHashCount after the refusals = %d, want 3", n)
	}
	got := get(t, s, func(tx store.Tx) ([]tlog.Hash, error) { return tx.AuditHashes([]int64{1}) })
	if got[0] != hashOf("1") {
		t.Fatalf("AuditHashes([1]) after the refused overwrite = %v, want the first value", got[0])
	}
}

func testAuditHashesNotFound(t *testing.T, s store.Store) {
	update(t, s, func(tx store.Tx) error { return tx.AppendAuditHashes(0, []tlog.Hash{hashOf("0")}) })
	err := viewErr(t, s, func(tx store.Tx) error {
		_, err := tx.AuditHashes([]int64{0, 7})
		return err
	})
	wantNotFound(t, "AuditHashes([0 7])", err, "7")
}

func newCheckpoint(size int64) *store.Checkpoint {
	return &store.Checkpoint{Size: size, Root: hashOf("root"), KID: "kid_registry", SignedAt: at(time.Duration(size) * time.Second),
		Note: []byte("keyward\n" + string(rune('0'+size)) + "\n…\n\n— keyward sig\n")}
}

func testCheckpoints(t *testing.T, s store.Store) {
	c3, c9, c5 := newCheckpoint(3), newCheckpoint(9), newCheckpoint(5)
	c9.Root = hashOf("nine")
	update(t, s, func(tx store.Tx) error { return tx.AppendCheckpoint(c3) })
	update(t, s, func(tx store.Tx) error { return errors.Join(tx.AppendCheckpoint(c9), tx.AppendCheckpoint(c5)) })
	latest := get(t, s, func(tx store.Tx) (*store.Checkpoint, error) { return tx.LatestCheckpoint() })
	wantEqual(t, "LatestCheckpoint", latest, c9)
	got := get(t, s, func(tx store.Tx) (*store.Checkpoint, error) { return tx.CheckpointAt(5) })
	wantEqual(t, "CheckpointAt(5)", got, c5)
}

func testCheckpointsNotFound(t *testing.T, s store.Store) {
	err := viewErr(t, s, func(tx store.Tx) error { _, err := tx.LatestCheckpoint(); return err })
	wantCode(t, "LatestCheckpoint of an empty store", err, keyward.ENotFound)
	update(t, s, func(tx store.Tx) error { return tx.AppendCheckpoint(newCheckpoint(2)) })
	err = viewErr(t, s, func(tx store.Tx) error { _, err := tx.CheckpointAt(3); return err })
	wantNotFound(t, "CheckpointAt(3)", err, "3")
}

func testCheckpointsConflict(t *testing.T, s store.Store) {
	update(t, s, func(tx store.Tx) error { return tx.AppendCheckpoint(newCheckpoint(4)) })
	other := newCheckpoint(4)
	other.Root = hashOf("other")
	err := updateErr(t, s, func(tx store.Tx) error { return tx.AppendCheckpoint(other) })
	wantCode(t, "AppendCheckpoint(same size)", err, keyward.EConflict)
	got := get(t, s, func(tx store.Tx) (*store.Checkpoint, error) { return tx.CheckpointAt(4) })
	wantEqual(t, "CheckpointAt(4) after the refused overwrite", got, newCheckpoint(4))
}

// testAuditLeafStable appends through audit.Append and checks that every
// entry, read back, hashes to the leaf the tree stored: a store that
// changed any field (time precision, JSON layout, nil versus empty lists)
// would make an honest log look tampered with.
func testAuditLeafStable(t *testing.T, s store.Store) {
	es := []*keyward.AuditEntry{
		{Time: time.Date(2025, 3, 14, 15, 9, 26, 535897123, time.FixedZone("X", 3600)), Actor: "tok_1", ActorName: "Ops <team> & co",
			Roles: []string{"revoker", "approver"}, Action: "license.revoke", TargetType: "license", TargetID: "lic_1",
			Before: "suspended", After: "revoked", Reason: "abuse", RequestID: "req_1", ApprovalIDs: []string{"apr_1", "apr_2"},
			PolicyVersion: 7, Rule: "burst",
			Details: json.RawMessage(`{ "z": [1, 2.50, "é\u2028"], "a": {"y": null, "b": true}, "n": 1e3 }`)},
		{Time: at(time.Second), Actor: "system", Action: "key.create", TargetType: "key", TargetID: "kid_1", After: "pending"},
		{Time: at(2 * time.Second), Actor: "system", Roles: []string{}, ApprovalIDs: []string{}, Action: "kek.rotate", Details: json.RawMessage(`null`)},
	}
	update(t, s, func(tx store.Tx) error {
		for _, e := range es {
			if err := audit.Append(tx, e); err != nil {
				return err
			}
		}
		return nil
	})
	view(t, s, func(tx store.Tx) error {
		got, err := tx.AuditEntries(store.AuditFilter{})
		if err != nil {
			return err
		}
		if len(got) != len(es) {
			t.Fatalf("AuditEntries = %d entries, want %d", len(got), len(es))
		}
		hr := audit.HashReader(tx)
		for i, e := range got {
			leaf, err := audit.LeafHash(e)
			if err != nil {
				t.Fatalf("LeafHash(entry %d) = %v", e.Seq, err)
			}
			stored, err := hr.ReadHashes([]int64{tlog.StoredHashIndex(0, int64(i))})
			if err != nil {
				return err
			}
			if leaf != stored[0] {
				a, _ := audit.Encode(e)
				b, _ := audit.Encode(es[i])
				t.Errorf("entry %d reads back as\n%s\nbut was hashed as\n%s", e.Seq, a, b)
			}
		}
		n, err := audit.TreeSize(tx)
		if err != nil || n != int64(len(es)) {
			t.Errorf("TreeSize = %d, %v; want %d", n, err, len(es))
		}
		return nil
	})
}

// testAuditRollback checks that hashes roll back with their entry.
func testAuditRollback(t *testing.T, s store.Store) {
	update(t, s, func(tx store.Tx) error { return audit.Append(tx, newAudit("a", "x")) })
	errRollback := errors.New("roll back")
	err := updateErr(t, s, func(tx store.Tx) error {
		if err := audit.Append(tx, newAudit("b", "x")); err != nil {
			return err
		}
		return errRollback
	})
	if !errors.Is(err, errRollback) {
		t.Fatalf("Update = %v, want %v", err, errRollback)
	}
	update(t, s, func(tx store.Tx) error { return audit.Append(tx, newAudit("c", "x")) })
	view(t, s, func(tx store.Tx) error {
		n, err := audit.TreeSize(tx)
		if err != nil || n != 2 {
			t.Errorf("TreeSize after a rolled-back append = %d, %v; want 2", n, err)
		}
		return nil
	})
}
