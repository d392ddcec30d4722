package sqlite

import (
	"bytes"
	"database/sql"
	"errors"
	"slices"
	"strings"

	sqlite3 "modernc.org/sqlite/lib"

	"github.com/keyward/keyward"
	"github.com/keyward/keyward/store"
)

// Batch inserts: the rows of a batch issuance (10 000 licenses, each with
// its key, audit entry and event) go in with multi-row INSERTs, since
// through the pure-Go driver a statement's fixed cost (binding, stepping,
// resetting, database/sql) is larger than the VDBE work of one more row.

// batchSizes are the row counts of the prepared multi-row INSERTs of a
// table, largest first: a batch is written by as many statements of the
// largest size as fit, then of the next, so no batch needs a statement
// prepared for it.
var batchSizes = [...]int{64, 8, 1}

// batchStmts are one table's multi-row INSERTs, of batchSizes rows.
type batchStmts [len(batchSizes)]*sql.Stmt

// multiInsert returns an INSERT of rows rows of n parameters each.
func multiInsert(table, cols string, n, rows int) string {
	row := "(" + strings.Repeat("?, ", n-1) + "?)"
	return `INSERT INTO ` + table + ` (` + cols + `) VALUES ` + strings.Repeat(row+", ", rows-1) + row
}

// batchQueries returns the queries of the batch statements, for hotStmts.
func (s *hotStmts) batchQueries() []struct {
	dst **sql.Stmt
	q   string
} {
	var qs []struct {
		dst **sql.Stmt
		q   string
	}
	for i, rows := range batchSizes {
		qs = append(qs, []struct {
			dst **sql.Stmt
			q   string
		}{
			{&s.insertLicenses[i], multiInsert("licenses", licenseCols, 13, rows)},
			{&s.insertLicenseKeys[i], multiInsert("license_keys", licenseKeyCols, 6, rows)},
			// With their seqs (AppendAudits reads max(seq) once).
			{&s.insertAudits[i], multiInsert("audit", auditCols, 16, rows)},
			{&s.insertEvents[i], multiInsert("outbox", "id, type, time, subject, data", 5, rows)},
		}...)
	}
	return qs
}

// insertBatch inserts n rows, appending the parameters of row i to args
// with row(i, args), by the statements of stmts. done is called after
// each statement with the rows it wrote, [from, to), and its result.
func (t *tx) insertBatch(stmts *batchStmts, n int, row func(i int, args []any) ([]any, error), done func(from, to int, res sql.Result) error) error {
	var args []any
	for i := 0; i < n; {
		k := 0
		for j, size := range batchSizes {
			if n-i >= size {
				k = j
				break
			}
		}
		size := batchSizes[k]
		args = args[:0]
		for r := i; r < i+size; r++ {
			var err error
			if args, err = row(r, args); err != nil {
				return err
			}
		}
		res, err := t.execHot(stmts[k], args...)
		if err != nil {
			return &batchError{from: i, to: i + size, err: err}
		}
		if done != nil {
			if err := done(i, i+size, res); err != nil {
				return err
			}
		}
		i += size
	}
	return nil
}

// batchError is a failed statement of a batch: rows [from, to) of it.
type batchError struct {
	from, to int
	err      error
}

func (e *batchError) Error() string { return e.err.Error() }
func (e *batchError) Unwrap() error { return e.err }

// rowsOf returns the rows of the batch the failed statement wrote.
func rowsOf(err error, n int) (from, to int) {
	var e *batchError
	if errors.As(err, &e) {
		return e.from, e.to
	}
	return 0, n
}

// CreateLicenses inserts ls with multi-row INSERTs. A violated constraint
// names the licenses of the statement that failed, or the product or state
// they all share.
func (t *tx) CreateLicenses(ls []*keyward.License) error {
	if len(ls) == 0 {
		return nil
	}
	err := t.insertBatch(&t.hot.insertLicenses, len(ls), func(i int, args []any) ([]any, error) {
		return licenseArgs(args, ls[i])
	}, nil)
	if err == nil {
		return nil
	}
	from, to := rowsOf(err, len(ls))
	if to-from > 1 {
		first, last := ls[from].ID, ls[to-1].ID
		switch c := constraint(err); {
		case c == sqlite3.SQLITE_CONSTRAINT_PRIMARYKEY:
			return keyward.Errorf(keyward.EConflict, "one of licenses %s to %s already exists", first, last)
		case store.LicensesAlike(ls[from:to]):
		case c == sqlite3.SQLITE_CONSTRAINT_FOREIGNKEY:
			return keyward.Errorf(keyward.ENotFound, "the product of one of licenses %s to %s not found", first, last)
		case c == sqlite3.SQLITE_CONSTRAINT_CHECK:
			return keyward.Errorf(keyward.EInvalid, "one of licenses %s to %s has an invalid state", first, last)
		}
	}
	return wrap(licenseErr(err, ls[from]), "create licenses %s to %s", ls[from].ID, ls[to-1].ID)
}

// CreateLicenseKeys inserts ks in hash order, with multi-row INSERTs: the
// hashes are random, and in order consecutive rows land in the same or
// nearby pages of the primary key.
func (t *tx) CreateLicenseKeys(ks []*keyward.LicenseKey) error {
	if len(ks) == 0 {
		return nil
	}
	ks = slices.SortedFunc(slices.Values(ks), func(a, b *keyward.LicenseKey) int { return bytes.Compare(a.Hash, b.Hash) })
	err := t.insertBatch(&t.hot.insertLicenseKeys, len(ks), func(i int, args []any) ([]any, error) {
		k := ks[i]
		return append(args, k.Hash, k.LicenseID, k.Prefix, toNanos(k.CreatedAt), toNullNanos(k.SupersededAt), toNullNanos(k.GraceUntil)), nil
	}, nil)
	if err == nil {
		return nil
	}
	from, to := rowsOf(err, len(ks))
	switch constraint(err) {
	case sqlite3.SQLITE_CONSTRAINT_PRIMARYKEY:
		if to-from == 1 {
			return keyward.Errorf(keyward.EConflict, "license key %s already exists", ks[from].Prefix)
		}
		return keyward.Errorf(keyward.EConflict, "one of %d license keys already exists", to-from)
	case sqlite3.SQLITE_CONSTRAINT_FOREIGNKEY:
		if to-from == 1 {
			return keyward.Errorf(keyward.ENotFound, "license %s not found", ks[from].LicenseID)
		}
		return keyward.Errorf(keyward.ENotFound, "the license of one of %d license keys was not found", to-from)
	}
	return wrap(err, "create %d license keys", len(ks))
}

// AppendAudits numbers es max(seq)+1, max(seq)+2, … (see AppendAudit) and
// inserts them with multi-row INSERTs.
func (t *tx) AppendAudits(es []*keyward.AuditEntry) error {
	if len(es) == 0 {
		return nil
	}
	last, err := t.AuditSize()
	if err != nil {
		return err
	}
	err = t.insertBatch(&t.hot.insertAudits, len(es), func(i int, args []any) ([]any, error) {
		return auditArgs(append(args, last+1+int64(i)), es[i])
	}, nil)
	if err != nil {
		from, _ := rowsOf(err, len(es))
		if constraint(err) == sqlite3.SQLITE_CONSTRAINT_CHECK {
			return keyward.Errorf(keyward.EInvalid, "audit entries from %s: details are not valid JSON", es[from].Action)
		}
		return wrap(err, "append %d audit entries", len(es))
	}
	for i, e := range es {
		e.Seq = last + 1 + int64(i)
	}
	return nil
}

// AppendEvents inserts es with multi-row INSERTs. outbox.seq is an
// AUTOINCREMENT rowid, so the rows of one statement get consecutive seqs
// ending at its last insert rowid.
func (t *tx) AppendEvents(es []*keyward.Event) error {
	if len(es) == 0 {
		return nil
	}
	err := t.insertBatch(&t.hot.insertEvents, len(es), func(i int, args []any) ([]any, error) {
		e := es[i]
		return append(args, e.ID, e.Type, toNanos(e.Time), e.Subject, nullJSON(e.Data)), nil
	}, func(from, to int, res sql.Result) error {
		last, err := res.LastInsertId()
		if err != nil {
			return wrap(err, "append events")
		}
		for i := from; i < to; i++ {
			es[i].Seq = last - int64(to-1-i)
		}
		return nil
	})
	if err == nil {
		return nil
	}
	from, to := rowsOf(err, len(es))
	switch constraint(err) {
	case sqlite3.SQLITE_CONSTRAINT_UNIQUE:
		if to-from == 1 {
			return keyward.Errorf(keyward.EConflict, "event %s already exists", es[from].ID)
		}
		return keyward.Errorf(keyward.EConflict, "one of events %s to %s already exists", es[from].ID, es[to-1].ID)
	case sqlite3.SQLITE_CONSTRAINT_CHECK:
		return keyward.Errorf(keyward.EInvalid, "events from %s: data is not valid JSON", es[from].ID)
	}
	return wrap(err, "append %d events", len(es))
}
