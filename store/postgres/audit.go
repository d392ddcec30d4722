package postgres

import (
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
	"golang.org/x/mod/sumdb/tlog"

	"github.com/keyward/keyward"
	"github.com/keyward/keyward/store"
)

// The tamper-evident audit log: tree hashes and checkpoints (store.AuditTx).

// AuditSize returns the largest audit seq, or 0 for an empty log.
func (t *tx) AuditSize() (int64, error) {
	n, err := t.queryInt64(`SELECT COALESCE(MAX(seq), 0) FROM audit`)
	return n, wrap(err, "audit size")
}

// AuditHashCount returns one more than the largest stored hash index, or 0.
func (t *tx) AuditHashCount() (int64, error) {
	n, err := t.queryInt64(`SELECT COALESCE(MAX(idx) + 1, 0) FROM audit_hashes`)
	return n, wrap(err, "audit hash count")
}

// AppendAuditHashes stores hs at start, start+1, … if the table holds
// exactly start hashes, in one statement that inserts nothing otherwise: a
// refusal is not an SQL error, so the transaction stays usable.
func (t *tx) AppendAuditHashes(start int64, hs []tlog.Hash) error {
	if start < 0 {
		return keyward.Errorf(keyward.EInvalid, "audit hash index %d is negative", start)
	}
	if len(hs) == 0 {
		return nil
	}
	idx := make([]int64, len(hs))
	bs := make([][]byte, len(hs))
	for i := range hs {
		idx[i], bs[i] = start+int64(i), hs[i][:]
	}
	tag, err := t.exec(`INSERT INTO audit_hashes (idx, hash)
		SELECT i, h FROM unnest($2::bigint[], $3::bytea[]) AS u (i, h)
		WHERE (SELECT COALESCE(MAX(idx) + 1, 0) FROM audit_hashes) = $1`, start, idx, bs)
	if err != nil {
		return wrap(err, "append audit hashes from %d", start)
	}
	if tag.RowsAffected() != int64(len(hs)) {
		return keyward.Errorf(keyward.EConflict, "audit hashes from %d: the tree does not hold exactly %d hashes", start, start)
	}
	return nil
}

// AuditHashes returns the stored hashes at indexes, in the order asked.
func (t *tx) AuditHashes(indexes []int64) ([]tlog.Hash, error) {
	if len(indexes) == 0 {
		// Every even leaf appends without reading: no round trip for it.
		return nil, nil
	}
	if len(indexes) == 1 {
		var b []byte
		err := t.tx.QueryRow(t.ctx, `SELECT hash FROM audit_hashes WHERE idx = $1`, indexes[0]).Scan(&b)
		if errors.Is(err, pgx.ErrNoRows) {
			return nil, keyward.Errorf(keyward.ENotFound, "audit hash %d not found", indexes[0])
		}
		if err != nil {
			return nil, wrap(err, "audit hash %d", indexes[0])
		}
		if len(b) != tlog.HashSize {
			return nil, fmt.Errorf("postgres: audit hash %d is %d bytes", indexes[0], len(b))
		}
		return []tlog.Hash{tlog.Hash(b)}, nil
	}
	found := make(map[int64]tlog.Hash, len(indexes))
	rows, err := t.tx.Query(t.ctx, `SELECT idx, hash FROM audit_hashes WHERE idx = ANY($1)`, indexes)
	if err != nil {
		return nil, wrap(err, "audit hashes")
	}
	defer rows.Close()
	for rows.Next() {
		var idx int64
		var b []byte
		if err := rows.Scan(&idx, &b); err != nil {
			return nil, wrap(err, "audit hashes")
		}
		if len(b) != tlog.HashSize {
			return nil, fmt.Errorf("postgres: audit hash %d is %d bytes", idx, len(b))
		}
		found[idx] = tlog.Hash(b)
	}
	if err := rows.Err(); err != nil {
		return nil, wrap(err, "audit hashes")
	}
	out := make([]tlog.Hash, len(indexes))
	for i, x := range indexes {
		h, ok := found[x]
		if !ok {
			return nil, keyward.Errorf(keyward.ENotFound, "audit hash %d not found", x)
		}
		out[i] = h
	}
	return out, nil
}

const checkpointCols = `size, root, kid, signed_at, note`

func scanCheckpoint(s scanner) (*store.Checkpoint, error) {
	var c store.Checkpoint
	var root []byte
	var signed int64
	var note string
	if err := s.Scan(&c.Size, &root, &c.KID, &signed, &note); err != nil {
		return nil, err
	}
	if len(root) != tlog.HashSize {
		return nil, fmt.Errorf("checkpoint %d: root is %d bytes", c.Size, len(root))
	}
	c.Root = tlog.Hash(root)
	c.SignedAt = fromNanos(signed)
	c.Note = []byte(note)
	return &c, nil
}

// AppendCheckpoint stores c; its size is the key.
func (t *tx) AppendCheckpoint(c *store.Checkpoint) error {
	_, err := t.exec(`INSERT INTO audit_checkpoints (`+checkpointCols+`) VALUES ($1, $2, $3, $4, $5)`,
		c.Size, c.Root[:], c.KID, toNanos(c.SignedAt), string(c.Note))
	switch code, _ := violation(err); code {
	case uniqueViolation:
		return keyward.Errorf(keyward.EConflict, "a checkpoint of size %d already exists", c.Size)
	case checkViolation:
		return keyward.Errorf(keyward.EInvalid, "checkpoint of size %d is invalid", c.Size)
	}
	return wrap(err, "append checkpoint %d", c.Size)
}

// LatestCheckpoint returns the checkpoint with the largest size.
func (t *tx) LatestCheckpoint() (*store.Checkpoint, error) {
	c, err := queryOne(t, keyward.Errorf(keyward.ENotFound, "no audit checkpoint has been signed yet"), scanCheckpoint,
		`SELECT `+checkpointCols+` FROM audit_checkpoints ORDER BY size DESC LIMIT 1`)
	return c, wrap(err, "latest checkpoint")
}

// CheckpointAt returns the checkpoint of exactly size entries.
func (t *tx) CheckpointAt(size int64) (*store.Checkpoint, error) {
	c, err := queryOne(t, keyward.Errorf(keyward.ENotFound, "no audit checkpoint of size %d", size), scanCheckpoint,
		`SELECT `+checkpointCols+` FROM audit_checkpoints WHERE size = $1`, size)
	return c, wrap(err, "checkpoint %d", size)
}
