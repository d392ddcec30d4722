package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
)

// Snapshot is a consistent, read-only view of every table of the database,
// row by row, for copying an installation to another store (keyward
// migrate). Values come back as the driver gives them: int64 for INTEGER,
// string for TEXT, []byte for BLOB, nil for NULL.
type Snapshot struct {
	ctx    context.Context
	tx     *sql.Tx
	tables map[string]bool
}

// Snapshot runs fn with a Snapshot taken in one read transaction: every
// read in fn sees the database as it was when fn started, whatever other
// processes write meanwhile. The Snapshot MUST NOT be used after fn
// returns.
func (db *DB) Snapshot(ctx context.Context, fn func(s *Snapshot) error) error {
	sqlTx, err := db.read.BeginTx(ctx, &sql.TxOptions{ReadOnly: true})
	if err != nil {
		return fmt.Errorf("sqlite: begin: %w", err)
	}
	defer sqlTx.Rollback()
	s := &Snapshot{ctx: ctx, tx: sqlTx, tables: map[string]bool{}}
	names, err := s.Tables()
	if err != nil {
		return err
	}
	for _, n := range names {
		s.tables[n] = true
	}
	return fn(s)
}

// Tables returns the names of the database's tables (SQLite's own
// excluded), sorted.
func (s *Snapshot) Tables() ([]string, error) {
	rows, err := s.tx.QueryContext(s.ctx, `SELECT name FROM sqlite_schema WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name`)
	if err != nil {
		return nil, fmt.Errorf("sqlite: tables: %w", err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var n string
		if err := rows.Scan(&n); err != nil {
			return nil, fmt.Errorf("sqlite: tables: %w", err)
		}
		out = append(out, n)
	}
	return out, rows.Err()
}

// SchemaVersion returns the highest migration version applied.
func (s *Snapshot) SchemaVersion() (int, error) {
	var v int
	if err := s.tx.QueryRowContext(s.ctx, `SELECT COALESCE(MAX(version), 0) FROM schema_migrations`).Scan(&v); err != nil {
		return 0, fmt.Errorf("sqlite: schema version: %w", err)
	}
	return v, nil
}

// quote returns table as a quoted identifier, or an error if the database
// has no such table.
func (s *Snapshot) quote(table string) (string, error) {
	if !s.tables[table] {
		return "", fmt.Errorf("sqlite: no table %q", table)
	}
	return quoteIdent(table), nil
}

func quoteIdent(name string) string { return `"` + strings.ReplaceAll(name, `"`, `""`) + `"` }

// Count returns the number of rows of table.
func (s *Snapshot) Count(table string) (int64, error) {
	q, err := s.quote(table)
	if err != nil {
		return 0, err
	}
	var n int64
	if err := s.tx.QueryRowContext(s.ctx, `SELECT COUNT(*) FROM `+q).Scan(&n); err != nil {
		return 0, fmt.Errorf("sqlite: count %s: %w", table, err)
	}
	return n, nil
}

// Rows calls fn with the values of columns of every row of table, in rowid
// order. fn MUST NOT keep row: it is reused.
func (s *Snapshot) Rows(table string, columns []string, fn func(row []any) error) error {
	q, err := s.quote(table)
	if err != nil {
		return err
	}
	if len(columns) == 0 {
		return errors.New("sqlite: rows: no columns")
	}
	cols := make([]string, len(columns))
	for i, c := range columns {
		cols[i] = quoteIdent(c)
	}
	rows, err := s.tx.QueryContext(s.ctx, `SELECT `+strings.Join(cols, ", ")+` FROM `+q+` ORDER BY rowid`)
	if err != nil {
		return fmt.Errorf("sqlite: read %s: %w", table, err)
	}
	defer rows.Close()
	vals := make([]any, len(columns))
	ptrs := make([]any, len(columns))
	for i := range vals {
		ptrs[i] = &vals[i]
	}
	for rows.Next() {
		if err := rows.Scan(ptrs...); err != nil {
			return fmt.Errorf("sqlite: read %s: %w", table, err)
		}
		if err := fn(vals); err != nil {
			return err
		}
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("sqlite: read %s: %w", table, err)
	}
	return nil
}

// Sequence returns the AUTOINCREMENT counter of table (the largest value
// it ever handed out, even for rows since deleted), 0 if it has none.
func (s *Snapshot) Sequence(table string) (int64, error) {
	var n int64
	err := s.tx.QueryRowContext(s.ctx, `SELECT COALESCE((SELECT seq FROM sqlite_sequence WHERE name = ?), 0)`, table).Scan(&n)
	if err != nil && !strings.Contains(err.Error(), "no such table") {
		return 0, fmt.Errorf("sqlite: sequence of %s: %w", table, err)
	}
	return n, nil
}
