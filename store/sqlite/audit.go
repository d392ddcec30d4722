package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"

	sqlite3 "modernc.org/sqlite/lib"

	"golang.org/x/mod/sumdb/tlog"

	"github.com/keyward/keyward"
	"github.com/keyward/keyward/store"
)

// The tamper-evident audit log: tree hashes and checkpoints (store.AuditTx).

// AuditSize returns the largest audit seq, or 0 for an empty log.
func (t *tx) AuditSize() (int64, error) {
	var n int64
	err := t.tx.QueryRowContext(t.ctx, `SELECT COALESCE(MAX(seq), 0) FROM audit`).Scan(&n)
	return n, wrap(err, "audit size")
}

// AuditHashCount returns one more than the largest stored hash index, or 0.
func (t *tx) AuditHashCount() (int64, error) {
	var n int64
	err := t.tx.QueryRowContext(t.ctx, `SELECT COALESCE(MAX(idx) + 1, 0) FROM audit_hashes`).Scan(&n)
	return n, wrap(err, "audit hash count")
}

// auditStmts are the statements of the audit hot path (an entry appends
// about two hashes and reads about one), prepared once per connection pool:
// preparing costs more than running them. They are prepared at Open,
// because a pool of one connection cannot prepare while a transaction
// holds it.
type auditStmts struct {
	// appendHash[k-1] inserts k hashes, (?1, ?2), (?3, ?4), …, if the
	// table holds exactly ?1 hashes, so the hashes stay a gap-free
	// sequence. SQLite evaluates the condition before inserting.
	appendHash [2]*sql.Stmt
	readHash   *sql.Stmt
}

func prepareAudit(ctx context.Context, db *sql.DB) (*auditStmts, error) {
	s := &auditStmts{}
	queries := []struct {
		dst **sql.Stmt
		q   string
	}{
		{&s.appendHash[0], `INSERT INTO audit_hashes (idx, hash) SELECT ?1, ?2
			WHERE (SELECT COALESCE(MAX(idx) + 1, 0) FROM audit_hashes) = ?1`},
		{&s.appendHash[1], `INSERT INTO audit_hashes (idx, hash) SELECT column1, column2 FROM (VALUES (?1, ?2), (?3, ?4))
			WHERE (SELECT COALESCE(MAX(idx) + 1, 0) FROM audit_hashes) = ?1`},
		{&s.readHash, `SELECT hash FROM audit_hashes WHERE idx = ?`},
	}
	for _, q := range queries {
		st, err := db.PrepareContext(ctx, q.q)
		if err != nil {
			s.close()
			return nil, fmt.Errorf("prepare: %w", err)
		}
		*q.dst = st
	}
	return s, nil
}

// quick returns ctx without its cancellation, for statements that touch a
// row or two: the driver watches a cancellable context with a goroutine
// per statement, which costs more than such a statement. The transaction
// itself still ends with ctx.
func quick(ctx context.Context) context.Context { return context.WithoutCancel(ctx) }

func (s *auditStmts) close() error {
	if s == nil {
		return nil
	}
	var errs []error
	for _, st := range []*sql.Stmt{s.appendHash[0], s.appendHash[1], s.readHash} {
		if st != nil {
			errs = append(errs, st.Close())
		}
	}
	return errors.Join(errs...)
}

// AppendAuditHashes stores hs at start, start+1, … if the table holds
// exactly start hashes; a refusal writes nothing (the first statement is
// the one refused).
func (t *tx) AppendAuditHashes(start int64, hs []tlog.Hash) error {
	if start < 0 {
		return keyward.Errorf(keyward.EInvalid, "audit hash index %d is negative", start)
	}
	for len(hs) > 0 {
		k := min(len(hs), len(t.audit.appendHash))
		args := make([]any, 0, 2*k)
		for i := range k {
			args = append(args, start+int64(i), hs[i][:])
		}
		res, err := t.tx.StmtContext(t.ctx, t.audit.appendHash[k-1]).ExecContext(quick(t.ctx), args...)
		if err != nil {
			return wrap(err, "append audit hashes from %d", start)
		}
		if n, err := res.RowsAffected(); err != nil {
			return wrap(err, "append audit hashes from %d", start)
		} else if n != int64(k) {
			return keyward.Errorf(keyward.EConflict, "audit hashes from %d: the tree does not hold exactly %d hashes", start, start)
		}
		start, hs = start+int64(k), hs[k:]
	}
	return nil
}

// maxVars bounds the parameters of one IN list (SQLite's default limit is
// 32766).
const maxVars = 500

// AuditHashes returns the stored hashes at indexes, in the order asked:
// a few by the prepared statement, many by IN lists.
func (t *tx) AuditHashes(indexes []int64) ([]tlog.Hash, error) {
	if len(indexes) <= 16 {
		out := make([]tlog.Hash, len(indexes))
		stmt := t.tx.StmtContext(t.ctx, t.audit.readHash)
		for i, x := range indexes {
			var b []byte
			err := stmt.QueryRowContext(quick(t.ctx), x).Scan(&b)
			if errors.Is(err, sql.ErrNoRows) {
				return nil, keyward.Errorf(keyward.ENotFound, "audit hash %d not found", x)
			}
			if err != nil {
				return nil, wrap(err, "audit hash %d", x)
			}
			if len(b) != tlog.HashSize {
				return nil, fmt.Errorf("sqlite: audit hash %d is %d bytes", x, len(b))
			}
			out[i] = tlog.Hash(b)
		}
		return out, nil
	}
	found := make(map[int64]tlog.Hash, len(indexes))
	for chunk := range chunks(indexes, maxVars) {
		args := make([]any, len(chunk))
		for i, x := range chunk {
			args[i] = x
		}
		rows, err := t.tx.QueryContext(t.ctx,
			`SELECT idx, hash FROM audit_hashes WHERE idx IN (`+strings.Repeat("?, ", len(args)-1)+`?)`, args...)
		if err != nil {
			return nil, wrap(err, "audit hashes")
		}
		for rows.Next() {
			var idx int64
			var b []byte
			if err := rows.Scan(&idx, &b); err != nil {
				rows.Close()
				return nil, wrap(err, "audit hashes")
			}
			if len(b) != tlog.HashSize {
				rows.Close()
				return nil, fmt.Errorf("sqlite: audit hash %d is %d bytes", idx, len(b))
			}
			found[idx] = tlog.Hash(b)
		}
		err = errors.Join(rows.Err(), rows.Close())
		if err != nil {
			return nil, wrap(err, "audit hashes")
		}
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

// chunks yields s in pieces of at most n; nothing for an empty s.
func chunks[T any](s []T, n int) func(yield func([]T) bool) {
	return func(yield func([]T) bool) {
		for len(s) > 0 {
			k := min(n, len(s))
			if !yield(s[:k]) {
				return
			}
			s = s[k:]
		}
	}
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
	_, err := t.exec(`INSERT INTO audit_checkpoints (`+checkpointCols+`) VALUES (?, ?, ?, ?, ?)`,
		c.Size, c.Root[:], c.KID, toNanos(c.SignedAt), string(c.Note))
	switch constraint(err) {
	case sqlite3.SQLITE_CONSTRAINT_PRIMARYKEY:
		return keyward.Errorf(keyward.EConflict, "a checkpoint of size %d already exists", c.Size)
	case sqlite3.SQLITE_CONSTRAINT_CHECK:
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
		`SELECT `+checkpointCols+` FROM audit_checkpoints WHERE size = ?`, size)
	return c, wrap(err, "checkpoint %d", size)
}
