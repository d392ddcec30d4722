package audit

import (
	"fmt"
	"sort"

	"golang.org/x/mod/sumdb/tlog"

	"github.com/keyward/keyward"
	"github.com/keyward/keyward/store"
)

// Append appends e to the audit log through tx and stores the tree hashes
// it completes (tlog.StoredHashes) in the same transaction. It sets e.Seq,
// and normalizes e.Time (UTC, microseconds) and e.Details (canonical JSON)
// to what the store keeps. Every writer of audit entries MUST use Append
// rather than tx.AppendAudit.
//
// Entries a writer appended without Append are hashed first, in seq order,
// as long as no checkpoint covers them yet. Errors: EInvalid for details
// that are not JSON or text that is not UTF-8; a *TamperError if the tree
// in the store does not fit the entries.
func Append(tx store.Tx, e *keyward.AuditEntry) error {
	if err := normalize(e); err != nil {
		return err
	}
	if err := tx.AppendAudit(e); err != nil {
		return err
	}
	leaf, err := encode(e, e.Details)
	if err != nil {
		return err
	}
	// Fast path: the tree holds every earlier entry, so the store takes
	// the new hashes at once. Anything else (a straggler, tampering) shows
	// as a missing hash or a refused append, and takes the slow path.
	n, h := e.Seq-1, tlog.RecordHash(leaf)
	err = storeLeaf(tx, n, h)
	if err == nil {
		return nil
	}
	if c := keyward.ErrorCode(err); c != keyward.EConflict && c != keyward.ENotFound {
		return err
	}
	hashed, err := TreeSize(tx)
	if err != nil {
		return err
	}
	if hashed > n {
		return &TamperError{Seq: e.Seq, Problem: fmt.Sprintf("the tree already has %d leaves but the log only %d entries before this one", hashed, n)}
	}
	if err := uncovered(tx, hashed); err != nil {
		return err
	}
	if err := extend(tx, hashed, n); err != nil {
		return err
	}
	return storeLeaf(tx, n, h)
}

// storeLeaf stores the hashes completed by leaf n (0-based) with hash h.
func storeLeaf(tx store.AuditTx, n int64, h tlog.Hash) error {
	hs, err := tlog.StoredHashesForRecordHash(n, h, HashReader(tx))
	if err != nil {
		return fmt.Errorf("audit: hashes of entry %d: %w", n+1, err)
	}
	if err := tx.AppendAuditHashes(tlog.StoredHashIndex(0, n), hs); err != nil {
		return fmt.Errorf("audit: hashes of entry %d: %w", n+1, err)
	}
	return nil
}

// uncovered checks that no checkpoint covers more than the first hashed
// entries, so hashing the entries after them records nothing a checkpoint
// already committed to.
func uncovered(tx store.AuditTx, hashed int64) error {
	latest, err := tx.LatestCheckpoint()
	if keyward.ErrorCode(err) == keyward.ENotFound {
		return nil
	} else if err != nil {
		return err
	}
	if latest.Size > hashed {
		return &TamperError{Seq: hashed + 1, Problem: fmt.Sprintf("its tree hashes are missing, yet checkpoint %d covers it", latest.Size)}
	}
	return nil
}

// extend hashes the entries with from < seq <= to, which are in the log
// but not yet in the tree.
func extend(tx store.Tx, from, to int64) error {
	for from < to {
		es, err := tx.AuditEntries(store.AuditFilter{AfterSeq: from, Limit: int(min(to-from, 1000))})
		if err != nil {
			return err
		}
		if len(es) == 0 {
			return &TamperError{Seq: from + 1, Problem: "entry is missing"}
		}
		for _, e := range es {
			if e.Seq != from+1 {
				return &TamperError{Seq: from + 1, Problem: "entry is missing"}
			}
			h, err := LeafHash(e)
			if err != nil {
				return &TamperError{Seq: e.Seq, Problem: err.Error()}
			}
			if err := storeLeaf(tx, from, h); err != nil {
				return err
			}
			from++
		}
	}
	return nil
}

// HashReader returns a tlog.HashReader over the tree hashes in tx.
func HashReader(tx store.AuditTx) tlog.HashReader {
	return tlog.HashReaderFunc(tx.AuditHashes)
}

// TreeSize returns the number of leaves whose hashes tx holds: the size
// of the tree proofs can be made for. A hash count that no tree size
// produces is a *TamperError.
func TreeSize(tx store.AuditTx) (int64, error) {
	count, err := tx.AuditHashCount()
	if err != nil {
		return 0, err
	}
	n, ok := leavesOf(count)
	if !ok {
		return 0, &TamperError{Problem: fmt.Sprintf("the tree holds %d hashes, which no tree size has", count)}
	}
	return n, nil
}

// leavesOf returns the tree size n with tlog.StoredHashCount(n) == count.
func leavesOf(count int64) (int64, bool) {
	// StoredHashCount is strictly increasing and StoredHashCount(n) >= n.
	n := int64(sort.Search(int(count)+1, func(i int) bool { return tlog.StoredHashCount(int64(i)) >= count }))
	return n, tlog.StoredHashCount(n) == count
}

// TamperError says the stored log, tree or checkpoints contradict each
// other. Seq names the first entry concerned, or is 0 when no one entry is.
type TamperError struct {
	Seq     int64
	Problem string
}

func (e *TamperError) Error() string {
	if e.Seq > 0 {
		return fmt.Sprintf("audit log tampered with: entry %d: %s", e.Seq, e.Problem)
	}
	return "audit log tampered with: " + e.Problem
}
