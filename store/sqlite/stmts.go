package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
)

// hotStmts are the statements that run once per license in a batch
// issuance (10 000 per transaction), once per buffered last-seen time, and
// on every validation that misses the cache. Parsed per run, they cost a
// quarter of the server's CPU in a profile of batch issuance at 1M
// licenses (docs/benchmarks.md, issue 9). So they
// are prepared once per connection pool at Open (a pool of one connection
// cannot prepare while a transaction holds it), bound to a transaction once
// (tx.stmt) and run with quick contexts.
type hotStmts struct {
	insertLicense, insertLicenseKey, insertAudit, insertEvent *sql.Stmt
	touchLicense, touchMachine                                *sql.Stmt
	license, licenseKeyByHash, product, machineByFingerprint  *sql.Stmt

	// Multi-row INSERTs of batch issuance (batch.go).
	insertLicenses, insertLicenseKeys, insertAudits, insertEvents batchStmts

	// Narrow upserts of re-signed certificates, by resignChunks size, and
	// the read of re-sign candidates (lifecycle.go).
	resign           [len(resignChunks)]*sql.Stmt
	resignCandidates *sql.Stmt
}

func prepareHot(ctx context.Context, db *sql.DB) (*hotStmts, error) {
	s := &hotStmts{}
	for _, q := range s.queries() {
		st, err := db.PrepareContext(ctx, q.q)
		if err != nil {
			s.close()
			return nil, fmt.Errorf("prepare: %w", err)
		}
		*q.dst = st
	}
	return s, nil
}

func (s *hotStmts) queries() []struct {
	dst **sql.Stmt
	q   string
} {
	return append([]struct {
		dst **sql.Stmt
		q   string
	}{
		{&s.insertLicense, `INSERT INTO licenses (` + licenseCols + `) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`},
		{&s.insertLicenseKey, `INSERT INTO license_keys (` + licenseKeyCols + `) VALUES (?, ?, ?, ?, ?, ?)`},
		// AppendAudit numbers the entry max(seq)+1 (see there). These two
		// read the new seq as the last inserted rowid: with RETURNING (a
		// result set per insert) a micro-benchmark took 28 instead of
		// 18.8 µs per row (docs/benchmarks.md, issue 9).
		{&s.insertAudit, `INSERT INTO audit (` + auditCols + `)
			VALUES ((SELECT COALESCE(MAX(seq), 0) + 1 FROM audit), ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`},
		{&s.insertEvent, `INSERT INTO outbox (id, type, time, subject, data) VALUES (?, ?, ?, ?, ?)`},
		{&s.touchLicense, `UPDATE licenses SET last_validated_at = ? WHERE id = ?`},
		{&s.touchMachine, `UPDATE machines SET last_seen_at = ? WHERE id = ?`},
		{&s.license, `SELECT ` + licenseCols + ` FROM licenses WHERE id = ?`},
		{&s.licenseKeyByHash, `SELECT ` + licenseKeyCols + ` FROM license_keys WHERE hash = ?`},
		{&s.product, `SELECT ` + productCols + ` FROM products WHERE id = ?1 OR name = ?1 ORDER BY id = ?1 DESC LIMIT 1`},
		{&s.machineByFingerprint, `SELECT ` + machineCols + ` FROM machines WHERE license_id = ? AND fingerprint = ?`},
	}, append(s.batchQueries(), s.resignQueries()...)...)
}

func (s *hotStmts) close() error {
	if s == nil {
		return nil
	}
	var errs []error
	for _, q := range s.queries() {
		if *q.dst != nil {
			errs = append(errs, (*q.dst).Close())
		}
	}
	return errors.Join(errs...)
}

// stmt returns s bound to the transaction, binding it on first use:
// sql.Tx.StmtContext allocates a statement and remembers it until the
// transaction ends, which a batch of 10 000 inserts would otherwise do
// 40 000 times.
func (t *tx) stmt(s *sql.Stmt) *sql.Stmt {
	if b, ok := t.bound[s]; ok {
		return b
	}
	if t.bound == nil {
		t.bound = make(map[*sql.Stmt]*sql.Stmt, 4)
	}
	b := t.tx.StmtContext(t.ctx, s)
	t.bound[s] = b
	return b
}

// execHot runs a prepared statement in the transaction.
func (t *tx) execHot(s *sql.Stmt, args ...any) (sql.Result, error) {
	return t.stmt(s).ExecContext(quick(t.ctx), args...)
}

// queryRowHot runs a prepared query of at most one row in the transaction.
func (t *tx) queryRowHot(s *sql.Stmt, args ...any) *sql.Row {
	return t.stmt(s).QueryRowContext(quick(t.ctx), args...)
}
