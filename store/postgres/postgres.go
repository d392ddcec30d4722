// Package postgres implements store.Store on PostgreSQL (15 or later) with
// pgx, for running several Keyward servers on one database.
//
// # Transactions
//
// Update transactions are serialized across every process sharing the
// database: each begins (READ COMMITTED), takes a transaction-level
// advisory lock (the store's write lock) before anything else, and holds it
// until it commits or rolls back. Every statement after the lock sees every
// transaction committed before it, and no other Update commits meanwhile,
// so an Update behaves exactly as if the store had one writer, as SQLite
// does: read-check-write rules hold without retries, fn runs once, and
// numbers assigned inside Update (audit seq as max+1, policy versions,
// outbox and revocation seqs) are gap-free where the store promises it and
// always become visible in increasing order. docs/postgres.md explains why
// this was preferred to SERIALIZABLE with retries. View transactions are
// REPEATABLE READ, READ ONLY: one snapshot, no lock, never blocked by
// writers.
//
// # Schema
//
// Open applies the migrations of package migrations, translated (see
// Migrations), in one transaction under the write lock, and refuses a
// schema newer than this binary. The store lives in the connection's
// current schema (the first of search_path, "public" by default; set it
// with search_path=NAME in the URL): several Keyward installations, or test
// runs, can share one database in separate schemas. Lock keys and the
// notification channel are derived from the schema name, so they do not
// collide. Times are BIGINT nanoseconds since the Unix epoch, as in the
// SQLite store, so a copy between the two is exact.
//
// # Several processes
//
// DB implements store.Locker with session advisory locks on dedicated
// connections, and store.ChangeFeed with LISTEN/NOTIFY: every Update that
// changed something other processes keep in memory sends, in the same
// transaction, a notification describing it (see Listen). NOTIFY is
// transactional, so a notification is delivered if and only if its
// transaction commits, after the commit, in commit order.
//
// The package stores and looks up; it holds no lifecycle rules. The
// database guarantees what only it can: at most one active signing key per
// ring, unique product names, license-key and token hashes, one machine per
// (license, fingerprint), at most one pending approval per action and
// target, and audit sequence numbers without gaps.
package postgres

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/keyward/keyward/store"
)

// Options tunes a DB; the zero value is ready to use.
type Options struct {
	// Logger receives the listener's and the locks' connection trouble;
	// nil = discard. Connection strings are never logged.
	Logger *slog.Logger
	// MaxConns bounds the connection pool (0 = pgx's default, the larger
	// of 4 and the number of CPUs). Locks and listeners use connections of
	// their own, outside the pool.
	MaxConns int32
	// LockCheck is how often a lock taken with TryLock checks that its
	// connection is alive (0 = DefaultLockCheck): a holder notices a lost
	// lock within about this long.
	LockCheck time.Duration
	// ListenCheck is how often an idle listener checks its connection
	// (0 = DefaultListenCheck).
	ListenCheck time.Duration
}

// Defaults of Options.
const (
	DefaultLockCheck   = time.Second
	DefaultListenCheck = 5 * time.Second
)

// DB is a Keyward store in one PostgreSQL schema. It is safe for concurrent
// use.
type DB struct {
	pool     *pgxpool.Pool
	connCfg  *pgx.ConnConfig // for the dedicated connections of locks and listeners
	schema   string
	writeKey int64  // advisory lock serializing Update
	channel  string // NOTIFY channel
	origin   string // random id of this DB, so Listen skips its own notifications
	log      *slog.Logger
	opts     Options

	mu        sync.Mutex // guards isClosed and bg.Add against Close
	isClosed  bool
	closed    chan struct{}  // closed by Close
	bg        sync.WaitGroup // listeners and lock watchers
	listenPID atomic.Uint32  // backend pid of the listener's connection, 0 when not connected
}

var (
	_ store.Store      = (*DB)(nil)
	_ store.Locker     = (*DB)(nil)
	_ store.ChangeFeed = (*DB)(nil)
)

// Open connects to the database at url (postgres://… or a key=value
// connection string), brings the schema up to date and returns the store.
// The schema named first in search_path must exist.
func Open(ctx context.Context, url string, o Options) (*DB, error) {
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		return nil, fmt.Errorf("postgres: %w", err)
	}
	if o.MaxConns > 0 {
		cfg.MaxConns = o.MaxConns
	}
	if cfg.ConnConfig.RuntimeParams["application_name"] == "" {
		cfg.ConnConfig.RuntimeParams["application_name"] = "keyward"
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.LockCheck <= 0 {
		o.LockCheck = DefaultLockCheck
	}
	if o.ListenCheck <= 0 {
		o.ListenCheck = DefaultListenCheck
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("postgres: %w", err)
	}
	var schema *string
	if err := pool.QueryRow(ctx, `SELECT current_schema()`).Scan(&schema); err != nil {
		pool.Close()
		return nil, fmt.Errorf("postgres: connect: %w", err)
	}
	if schema == nil {
		pool.Close()
		return nil, errors.New("postgres: no schema: the schemas in search_path do not exist (create one, or drop search_path from the URL to use public)")
	}
	var id [8]byte
	if _, err := rand.Read(id[:]); err != nil {
		pool.Close()
		return nil, err
	}
	db := &DB{
		pool: pool, connCfg: cfg.ConnConfig, schema: *schema, origin: hex.EncodeToString(id[:]),
		log: o.Logger, opts: o, closed: make(chan struct{}),
	}
	db.writeKey = db.lockKey("write")
	db.channel = channelName(*schema)
	if err := db.migrate(ctx); err != nil {
		pool.Close()
		return nil, fmt.Errorf("postgres: %w", err)
	}
	return db, nil
}

// connect opens a dedicated connection (outside the pool) for a lock or a
// listener; role is appended to the application name, so operators can
// tell them apart in pg_stat_activity.
func (db *DB) connect(ctx context.Context, role string) (*pgx.Conn, error) {
	cfg := db.connCfg.Copy()
	cfg.RuntimeParams["application_name"] += " " + role
	return pgx.ConnectConfig(ctx, cfg)
}

// background registers a goroutine that Close waits for; false once the
// DB is closed.
func (db *DB) background() bool {
	db.mu.Lock()
	defer db.mu.Unlock()
	if db.isClosed {
		return false
	}
	db.bg.Add(1)
	return true
}

// lockKey returns the advisory lock key of name in this store's schema.
func (db *DB) lockKey(name string) int64 {
	h := sha256.Sum256([]byte("keyward\x00" + db.schema + "\x00" + name))
	return int64(binary.BigEndian.Uint64(h[:8]))
}

// channelName returns the NOTIFY channel of a schema: "keyward" for
// public, "keyward:SCHEMA" otherwise (hashed when that exceeds PostgreSQL's
// 63-byte identifiers).
func channelName(schema string) string {
	if schema == "public" {
		return "keyward"
	}
	if c := "keyward:" + schema; len(c) <= 63 {
		return c
	}
	h := sha256.Sum256([]byte(schema))
	return "keyward:" + hex.EncodeToString(h[:16])
}

// Schema returns the PostgreSQL schema the store lives in.
func (db *DB) Schema() string { return db.schema }

// Channel returns the NOTIFY channel the store's changes are announced on.
func (db *DB) Channel() string { return db.channel }

// Close stops the listeners and lock watchers and closes the connections.
// Locks still held are released (their connections close).
func (db *DB) Close() error {
	db.mu.Lock()
	if !db.isClosed {
		db.isClosed = true
		close(db.closed)
	}
	db.mu.Unlock()
	db.bg.Wait()
	db.pool.Close()
	return nil
}

// Ping checks that the database answers.
func (db *DB) Ping(ctx context.Context) error {
	if err := db.pool.Ping(ctx); err != nil {
		return fmt.Errorf("postgres: ping: %w", err)
	}
	return nil
}

// Update runs fn in a read-write transaction and commits if fn returns nil.
// If fn returns an error or panics, nothing fn wrote is kept; the error is
// returned as is and the panic continues. Updates are serialized across
// every process sharing the database (see the package comment); fn runs
// exactly once, and MUST NOT call Update or View on the same store (with
// all pool connections busy it would wait forever; Update within Update
// always does, for the write lock).
func (db *DB) Update(ctx context.Context, fn func(store.Tx) error) error {
	ptx, err := db.pool.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.ReadCommitted})
	if err != nil {
		return fmt.Errorf("postgres: begin: %w", err)
	}
	// Rolls back on error and on panic; a no-op after Commit.
	defer ptx.Rollback(context.WithoutCancel(ctx))
	if _, err := ptx.Exec(ctx, `SELECT pg_advisory_xact_lock($1)`, db.writeKey); err != nil {
		return fmt.Errorf("postgres: write lock: %w", err)
	}
	t := &tx{ctx: ctx, tx: ptx, ch: &changes{}}
	if err := fn(t); err != nil {
		return err
	}
	for _, p := range t.ch.payloads(db.origin) {
		if _, err := ptx.Exec(ctx, `SELECT pg_notify($1, $2)`, db.channel, p); err != nil {
			return fmt.Errorf("postgres: notify: %w", err)
		}
	}
	if err := ptx.Commit(ctx); err != nil {
		return fmt.Errorf("postgres: commit: %w", err)
	}
	return nil
}

// View runs fn in a read-only transaction: every read in fn sees the same
// snapshot of the database. Writes through the tx fail.
func (db *DB) View(ctx context.Context, fn func(store.Tx) error) error {
	ptx, err := db.pool.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly})
	if err != nil {
		return fmt.Errorf("postgres: begin: %w", err)
	}
	defer ptx.Rollback(context.WithoutCancel(ctx))
	if err := fn(&tx{ctx: ctx, tx: ptx}); err != nil {
		return err
	}
	if err := ptx.Commit(ctx); err != nil {
		return fmt.Errorf("postgres: commit: %w", err)
	}
	return nil
}
