package store

import (
	"time"

	"golang.org/x/mod/sumdb/tlog"
)

// Checkpoint is a signed tree head of the audit log: a C2SP tlog-checkpoint
// note over the first Size audit entries (see package audit).
type Checkpoint struct {
	Size     int64     // number of audit entries covered
	Root     tlog.Hash // RFC 6962 root hash of those entries
	KID      string    // registry key that signed Note
	SignedAt time.Time
	Note     []byte // the signed note, exactly as served
}

// AuditTx is the part of Tx for the tamper-evident audit log. The store
// keeps the Merkle tree's stored hashes (tlog.StoredHashIndex numbering) and
// the signed checkpoints; package audit computes them. Callers MUST append
// audit entries through audit.Append, which writes an entry's hashes in the
// same transaction, never through Tx.AppendAudit alone.
type AuditTx interface {
	// AuditSize returns the number of audit entries: the largest seq, or 0.
	AuditSize() (int64, error)

	// AuditHashCount returns the number of stored tree hashes: one more
	// than the largest idx, or 0.
	AuditHashCount() (int64, error)
	// AppendAuditHashes stores hs at indexes start, start+1, … if start
	// is the number of hashes stored (AuditHashCount); otherwise it writes
	// nothing and returns EConflict, so the hashes stay a gap-free
	// sequence. A refusal leaves the transaction usable.
	AppendAuditHashes(start int64, hs []tlog.Hash) error
	// AuditHashes returns the hashes at the given indexes, in that order;
	// a missing index is ENotFound. It implements tlog.HashReader's
	// contract.
	AuditHashes(indexes []int64) ([]tlog.Hash, error)

	// AppendCheckpoint stores c; a second checkpoint of the same size is
	// EConflict.
	AppendCheckpoint(c *Checkpoint) error
	// LatestCheckpoint returns the checkpoint of the largest size, or
	// ENotFound when none was signed yet.
	LatestCheckpoint() (*Checkpoint, error)
	// CheckpointAt returns the checkpoint of exactly size entries, or
	// ENotFound.
	CheckpointAt(size int64) (*Checkpoint, error)
}
