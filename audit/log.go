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
	return appendAll(tx, []*keyward.AuditEntry{e})
}

// AppendAll appends es, in order, as Append appends each, with few
// statements (tx.AppendAudits, one AppendAuditHashes): they get
// consecutive seqs, and the tree hashes of all of them are stored in the
// same transaction.
func AppendAll(tx store.Tx, es []*keyward.AuditEntry) error {
	return appendAll(tx, es)
}

func appendAll(tx store.Tx, es []*keyward.AuditEntry) error {
	if len(es) == 0 {
		return nil
	}
	for _, e := range es {
		if err := normalize(e); err != nil {
			return err
		}
	}
	var err error
	if len(es) == 1 {
		err = tx.AppendAudit(es[0])
	} else {
		err = tx.AppendAudits(es)
	}
	if err != nil {
		return err
	}
	hs := make([]tlog.Hash, len(es))
	for i, e := range es {
		if e.Seq != es[0].Seq+int64(i) {
			return fmt.Errorf("audit: the store numbered entry %d of a batch %d after %d", i+1, e.Seq, es[0].Seq)
		}
		leaf, err := encode(e, e.Details)
		if err != nil {
			return err
		}
		hs[i] = tlog.RecordHash(leaf)
	}
	// Fast path: the tree holds every earlier entry, so the store takes
	// the new hashes at once. Anything else (a straggler, tampering) shows
	// as a missing hash or a refused append, and takes the slow path.
	n := es[0].Seq - 1
	err = storeLeaves(tx, n, hs)
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
		return &TamperError{Seq: n + 1, Problem: fmt.Sprintf("the tree already has %d leaves but the log only %d entries before this one", hashed, n)}
	}
	if err := uncovered(tx, hashed); err != nil {
		return err
	}
	if err := extend(tx, hashed, n); err != nil {
		return err
	}
	return storeLeaves(tx, n, hs)
}

// storeLeaf stores the hashes completed by leaf n (0-based) with hash h.
func storeLeaf(tx store.AuditTx, n int64, h tlog.Hash) error {
	return storeLeaves(tx, n, []tlog.Hash{h})
}

// storeLeaves stores the hashes completed by leaves n, n+1, … with hashes
// hs, in one AppendAuditHashes: the hashes a leaf completes follow those
// of the leaf before it (tlog.StoredHashIndex), and the leaves of the
// batch read the hashes of earlier ones from the batch.
func storeLeaves(tx store.AuditTx, n int64, hs []tlog.Hash) error {
	start := tlog.StoredHashIndex(0, n)
	var all []tlog.Hash
	r := HashReader(tx)
	if len(hs) > 1 {
		r = batchReader{start: start, batch: &all, tx: r}
	}
	for i, h := range hs {
		stored, err := tlog.StoredHashesForRecordHash(n+int64(i), h, r)
		if err != nil {
			return fmt.Errorf("audit: hashes of entry %d: %w", n+int64(i)+1, err)
		}
		all = append(all, stored...)
	}
	if err := tx.AppendAuditHashes(start, all); err != nil {
		if len(hs) == 1 {
			return fmt.Errorf("audit: hashes of entry %d: %w", n+1, err)
		}
		return fmt.Errorf("audit: hashes of entries %d to %d: %w", n+1, n+int64(len(hs)), err)
	}
	return nil
}

// batchReader reads the hashes from start on from the batch being
// computed, and earlier ones from the store.
type batchReader struct {
	start int64
	batch *[]tlog.Hash
	tx    tlog.HashReader
}

func (r batchReader) ReadHashes(indexes []int64) ([]tlog.Hash, error) {
	var before []int64
	for _, x := range indexes {
		if x < r.start {
			before = append(before, x)
		}
	}
	var read []tlog.Hash
	if len(before) > 0 {
		var err error
		if read, err = r.tx.ReadHashes(before); err != nil {
			return nil, err
		}
	}
	out := make([]tlog.Hash, len(indexes))
	for i, x := range indexes {
		switch {
		case x < r.start:
			out[i], read = read[0], read[1:]
		case x-r.start < int64(len(*r.batch)):
			out[i] = (*r.batch)[x-r.start]
		default:
			return nil, fmt.Errorf("hash %d is not computed yet", x)
		}
	}
	return out, nil
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
