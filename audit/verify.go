package audit

import (
	"context"
	"errors"
	"fmt"
	"sort"

	"golang.org/x/mod/sumdb/tlog"

	"github.com/keyward/keyward"
)

// Tree is an in-memory RFC 6962 tree of canonical entries, kept as tlog's
// stored hashes (about two per entry), for verifying a downloaded log.
// The zero Tree is empty and ready to use.
type Tree struct {
	hashes  []tlog.Hash
	entries []*keyward.AuditEntry
}

// Append decodes the canonical entry data, which must be the next one
// (seq = Size()+1), and adds its leaf.
func (t *Tree) Append(data []byte) (*keyward.AuditEntry, error) {
	e, err := Decode(data)
	if err != nil {
		return nil, err
	}
	n := int64(len(t.entries))
	if e.Seq != n+1 {
		return nil, fmt.Errorf("audit: entry %d where %d belongs", e.Seq, n+1)
	}
	hs, err := tlog.StoredHashes(n, data, t)
	if err != nil {
		return nil, err
	}
	t.hashes = append(t.hashes, hs...)
	t.entries = append(t.entries, e)
	return e, nil
}

// Size returns the number of entries.
func (t *Tree) Size() int64 { return int64(len(t.entries)) }

// Entry returns the entry with seq, or nil.
func (t *Tree) Entry(seq int64) *keyward.AuditEntry {
	if seq < 1 || seq > t.Size() {
		return nil
	}
	return t.entries[seq-1]
}

// Root returns the root hash of the first n entries.
func (t *Tree) Root(n int64) (tlog.Hash, error) {
	if n < 0 || n > t.Size() {
		return tlog.Hash{}, fmt.Errorf("audit: tree of %d entries has no prefix of %d", t.Size(), n)
	}
	return tlog.TreeHash(n, t)
}

// ReadHashes implements tlog.HashReader.
func (t *Tree) ReadHashes(indexes []int64) ([]tlog.Hash, error) {
	out := make([]tlog.Hash, len(indexes))
	for i, x := range indexes {
		if x < 0 || x >= int64(len(t.hashes)) {
			return nil, fmt.Errorf("audit: no stored hash %d", x)
		}
		out[i] = t.hashes[x]
	}
	return out, nil
}

// Source is where VerifyLog reads the log: a Keyward server, or a file.
type Source interface {
	// Entries returns the canonical encodings of the entries with
	// from <= seq <= to, in seq order. It may return fewer than asked
	// (a page, or rows that are missing) but at least one if any entry in
	// the range exists; an empty result means none does.
	Entries(ctx context.Context, from, to int64) ([][]byte, error)
	// ConsistencyProof returns the proof that the tree of size newSize
	// contains the tree of size oldSize (0 < oldSize <= newSize).
	ConsistencyProof(ctx context.Context, oldSize, newSize int64) (tlog.TreeProof, error)
}

// BadEntryError says the log does not match a trusted checkpoint, naming
// the first entry that is missing or cannot be proven.
type BadEntryError struct {
	Seq        int64
	Entry      *keyward.AuditEntry // nil when the entry is missing or unreadable
	Checkpoint int64               // size of the checkpoint it fails against
	Problem    string
}

func (e *BadEntryError) Error() string {
	what := fmt.Sprintf("entry %d", e.Seq)
	if e.Entry != nil {
		what += fmt.Sprintf(" (%s %s %s at %s)", e.Entry.Action, e.Entry.TargetType, e.Entry.TargetID, e.Entry.Time.Format(TimeLayout))
	}
	return fmt.Sprintf("audit log does not match checkpoint %d: first bad entry is %s: %s", e.Checkpoint, what, e.Problem)
}

// Progress is told how many entries were read so far, out of total.
type Progress func(done, total int64)

// VerifyLog downloads the first N entries from src, N the largest size
// among the trusted checkpoints (which the caller verified: signatures,
// origin), rebuilds the tree and checks each checkpoint's root against it,
// so the checkpoints are also proven consistent with each other. It returns
// the tree.
//
// If the log does not match, the error is a *BadEntryError naming the
// first entry that is missing, malformed or out of order, or else (found
// by binary search with consistency proofs from src against the smallest
// failing checkpoint) the first entry whose prefix of the log cannot be
// proven to be the one the checkpoint signed.
func VerifyLog(ctx context.Context, src Source, trusted []Checkpoint, progress Progress) (*Tree, error) {
	if len(trusted) == 0 {
		return nil, errors.New("audit: verify: no checkpoint to verify against")
	}
	cps := append([]Checkpoint(nil), trusted...)
	sort.Slice(cps, func(i, j int) bool { return cps[i].Size < cps[j].Size })
	n := cps[len(cps)-1].Size
	var t Tree
	for t.Size() < n {
		next := t.Size() + 1
		page, err := src.Entries(ctx, next, n)
		if err != nil {
			return nil, fmt.Errorf("audit: read entries from %d: %w", next, err)
		}
		if len(page) == 0 {
			return nil, &BadEntryError{Seq: next, Checkpoint: n, Problem: "missing (the log ends before it)"}
		}
		for _, data := range page {
			seq := t.Size() + 1
			if seq > n {
				break
			}
			if _, err := t.Append(data); err != nil {
				if e, derr := Decode(data); derr == nil && e.Seq > seq {
					return nil, &BadEntryError{Seq: seq, Checkpoint: n, Problem: "missing"}
				}
				return nil, &BadEntryError{Seq: seq, Checkpoint: n, Problem: err.Error()}
			}
		}
		if progress != nil {
			progress(t.Size(), n)
		}
	}
	for _, c := range cps {
		root, err := t.Root(c.Size)
		if err != nil {
			return nil, err
		}
		if root != c.Root {
			return nil, locate(ctx, src, &t, c)
		}
	}
	return &t, nil
}

// locate finds the first entry of t that cannot be proven against c,
// whose root t does not reproduce.
func locate(ctx context.Context, src Source, t *Tree, c Checkpoint) error {
	// Invariant: prefix lo is proven (the empty prefix trivially), prefix
	// hi is not (t's root of c.Size differs from c's).
	lo, hi := int64(0), c.Size
	for hi-lo > 1 {
		mid := lo + (hi-lo)/2
		ok, err := provable(ctx, src, t, c, mid)
		if err != nil {
			return err
		}
		if ok {
			lo = mid
		} else {
			hi = mid
		}
	}
	return &BadEntryError{Seq: hi, Entry: t.Entry(hi), Checkpoint: c.Size, Problem: "its content differs from what the checkpoint signed"}
}

// provable reports whether src proves that t's first m entries are the
// prefix of c's tree.
func provable(ctx context.Context, src Source, t *Tree, c Checkpoint, m int64) (bool, error) {
	root, err := t.Root(m)
	if err != nil {
		return false, err
	}
	p, err := src.ConsistencyProof(ctx, m, c.Size)
	if err != nil {
		if ctx.Err() != nil {
			return false, ctx.Err()
		}
		return false, nil // the source cannot prove it: treat as not proven
	}
	return tlog.CheckTree(p, c.Size, c.Root, m, root) == nil, nil
}
