// Package sqlite implements store.Store on a SQLite database file, using the
// pure-Go driver modernc.org/sqlite.
//
// A DB holds two connection pools on the same file. Writes go through a pool
// of exactly one connection whose transactions begin with BEGIN IMMEDIATE, so
// read-write transactions are serialised in the process and take SQLite's
// write lock up front instead of failing with SQLITE_BUSY on upgrade. Reads
// go through a separate pool of read-only (query_only) connections; the
// database runs in WAL mode, so readers see a consistent snapshot and never
// block the writer or each other. Other processes opening the same file wait
// for locks for up to busy_timeout (10s).
//
// The schema is versioned: Open applies the migrations the file lacks
// (package store/sqlite/migrations, the schema's one source of truth, which
// store/postgres translates), in order and in one transaction, and refuses
// a file whose schema is newer than this package knows.
//
// The package stores and looks up; it holds no lifecycle rules. The database
// does guarantee what only it can: at most one active signing key per ring,
// unique product names, license-key and token hashes, one machine per
// (license, fingerprint), and audit sequence numbers without gaps.
package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/url"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	_ "modernc.org/sqlite" // registers the "sqlite" driver

	"github.com/keyward/keyward/store"
	schema "github.com/keyward/keyward/store/sqlite/migrations"
)

// DB is a Keyward store in one SQLite file. It is safe for concurrent use.
type DB struct {
	write *sql.DB // one connection, BEGIN IMMEDIATE
	read  *sql.DB // query_only connections for View
	// Statements of the audit hot path, prepared once per pool.
	writeAudit, readAudit *auditStmts
	// edge is what the writer knows of the audit tree (treeEdge). Only
	// the holder of the writer connection uses it.
	edge treeEdge
	// Statements of issuance and validation (stmts.go), likewise.
	writeHot, readHot *hotStmts
}

var _ store.Store = (*DB)(nil)

// Open opens (creating if needed) the database file at path and brings its
// schema up to date. It fails if the file's schema version is newer than this
// binary supports. path is a file system path, not a URI; ":memory:" is not
// supported.
func Open(ctx context.Context, path string) (*DB, error) {
	if path == "" || path == ":memory:" || strings.HasPrefix(path, "file:") {
		return nil, fmt.Errorf("sqlite: open %q: want a file path", path)
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("sqlite: open %s: %w", path, err)
	}
	// The writer's page cache is 64 MiB instead of SQLite's 2 MiB: batch
	// issuance inserts 10 000 random key hashes per transaction into an
	// index of a million, whose pages a 2 MiB cache kept reading back from
	// the file. At 1M licenses it took server CPU per license from
	// 189–216 µs to 178–205 µs (interleaved, docs/benchmarks.md issue 9).
	// It fills only as pages are used: RSS after the 1M-license load was
	// 140–161 MiB instead of 117 MiB.
	write, err := sql.Open("sqlite", dsn(abs, "_txlock=immediate&_pragma=cache_size(-65536)"))
	if err != nil {
		return nil, fmt.Errorf("sqlite: open %s: %w", path, err)
	}
	write.SetMaxOpenConns(1)
	if err := migrate(ctx, write); err != nil {
		write.Close()
		return nil, fmt.Errorf("sqlite: open %s: %w", path, err)
	}

	// Readers are opened after the writer has switched the file to WAL.
	read, err := sql.Open("sqlite", dsn(abs, "_pragma=query_only(1)"))
	if err != nil {
		write.Close()
		return nil, fmt.Errorf("sqlite: open %s: %w", path, err)
	}
	n := max(4, runtime.GOMAXPROCS(0))
	read.SetMaxOpenConns(n)
	read.SetMaxIdleConns(n)
	if err := read.PingContext(ctx); err != nil {
		write.Close()
		read.Close()
		return nil, fmt.Errorf("sqlite: open %s: %w", path, err)
	}
	db := &DB{write: write, read: read}
	if db.writeAudit, err = prepareAudit(ctx, write); err == nil {
		db.readAudit, err = prepareAudit(ctx, read)
	}
	if err == nil {
		db.writeHot, err = prepareHot(ctx, write)
	}
	if err == nil {
		db.readHot, err = prepareHot(ctx, read)
	}
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("sqlite: open %s: %w", path, err)
	}
	return db, nil
}

// dsn returns the driver's URI for the file at abs with the pragmas every
// connection needs, plus extra ("key=value&…", already escaped).
func dsn(abs, extra string) string {
	q := url.Values{"_pragma": {
		"busy_timeout(10000)",
		"journal_mode(WAL)",
		"foreign_keys(1)",
		"synchronous(NORMAL)",
	}}.Encode()
	if extra != "" {
		q += "&" + extra
	}
	// url.URL escapes '?', '#' and '%' in the path; SQLite decodes them.
	u := url.URL{Scheme: "file", Path: filepath.ToSlash(abs), RawQuery: q}
	return u.String()
}

// Close closes both connection pools.
func (db *DB) Close() error {
	return errors.Join(db.writeAudit.close(), db.readAudit.close(), db.writeHot.close(), db.readHot.close(), db.write.Close(), db.read.Close())
}

// Ping checks that the database file can be read.
func (db *DB) Ping(ctx context.Context) error {
	if err := db.read.PingContext(ctx); err != nil {
		return fmt.Errorf("sqlite: ping: %w", err)
	}
	return nil
}

// Update runs fn in a read-write transaction and commits if fn returns nil.
// If fn returns an error or panics, nothing fn wrote is kept; the error is
// returned as is and the panic continues. Update calls are serialised (in
// the process by the one writer connection, across processes by SQLite's
// write lock), so fn MUST NOT call Update itself: it would wait forever.
func (db *DB) Update(ctx context.Context, fn func(store.Tx) error) error {
	// Holding the connection until the transaction's tree edge is
	// published keeps the next Update from starting with the old one.
	conn, err := db.write.Conn(ctx)
	if err != nil {
		return fmt.Errorf("sqlite: begin: %w", err)
	}
	defer conn.Close()
	return run(ctx, conn, db.writeAudit, db.writeHot, treeTx{shared: &db.edge, conn: conn}, nil, fn)
}

// View runs fn in a read-only transaction: every read in fn sees the same
// snapshot of the database. Writes through the tx fail.
func (db *DB) View(ctx context.Context, fn func(store.Tx) error) error {
	return run(ctx, db.read, db.readAudit, db.readHot, treeTx{}, &sql.TxOptions{ReadOnly: true}, fn)
}

// beginner is a *sql.DB or *sql.Conn.
type beginner interface {
	BeginTx(ctx context.Context, opts *sql.TxOptions) (*sql.Tx, error)
}

// run runs fn in a transaction; tree holds the writer's tree edge in an
// Update, nothing in a View.
func run(ctx context.Context, db beginner, audit *auditStmts, hot *hotStmts, tree treeTx, opts *sql.TxOptions, fn func(store.Tx) error) error {
	sqlTx, err := db.BeginTx(ctx, opts)
	if err != nil {
		return fmt.Errorf("sqlite: begin: %w", err)
	}
	// Rolls back on error and on panic; a no-op after Commit.
	defer sqlTx.Rollback()
	t := &tx{ctx: ctx, tx: sqlTx, audit: audit, hot: hot, tree: tree}
	if err := t.tree.begin(); err != nil {
		return err
	}
	if err := fn(t); err != nil {
		if sqlTx.Rollback() == nil {
			t.tree.end(false)
		} else {
			t.tree.forget()
		}
		return err
	}
	if err := sqlTx.Commit(); err != nil {
		t.tree.forget()
		return fmt.Errorf("sqlite: commit: %w", err)
	}
	t.tree.end(true)
	return nil
}

// migration is one embedded schema change, migrations/NNNN_name.sql.
type migration struct {
	version int
	name    string
	sql     string
}

// migrations returns the schema's migrations (package migrations, shared
// with store/postgres) ordered by version.
func migrations() ([]migration, error) {
	all, err := schema.All()
	if err != nil {
		return nil, err
	}
	ms := make([]migration, len(all))
	for i, m := range all {
		ms[i] = migration{version: m.Version, name: m.Name, sql: m.SQL}
	}
	return ms, nil
}

// migrate applies the pending migrations in one transaction and records each
// in schema_migrations. It refuses a schema newer than the latest migration.
func migrate(ctx context.Context, db *sql.DB) error {
	ms, err := migrations()
	if err != nil {
		return err
	}
	return applyMigrations(ctx, db, ms)
}

// applyMigrations is migrate with the migrations given (ordered by version,
// not empty): tests pass a prefix to build a database at an old version.
func applyMigrations(ctx context.Context, db *sql.DB, ms []migration) error {
	latest := ms[len(ms)-1].version

	sqlTx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	defer sqlTx.Rollback()
	if _, err := sqlTx.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (
		version    INTEGER PRIMARY KEY,
		applied_at INTEGER NOT NULL
	) STRICT`); err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	var current int
	if err := sqlTx.QueryRowContext(ctx, `SELECT COALESCE(MAX(version), 0) FROM schema_migrations`).Scan(&current); err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	if current > latest {
		return fmt.Errorf("database schema version %d is newer than this binary supports (%d); upgrade keyward", current, latest)
	}
	if current == latest {
		return nil // the deferred rollback discards the no-op CREATE IF NOT EXISTS
	}
	now := time.Now().UnixNano()
	for _, m := range ms {
		if m.version <= current {
			continue
		}
		if _, err := sqlTx.ExecContext(ctx, m.sql); err != nil {
			return fmt.Errorf("migration %s: %w", m.name, err)
		}
		if _, err := sqlTx.ExecContext(ctx, `INSERT INTO schema_migrations (version, applied_at) VALUES (?, ?)`, m.version, now); err != nil {
			return fmt.Errorf("migration %s: %w", m.name, err)
		}
	}
	if err := sqlTx.Commit(); err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	return nil
}
