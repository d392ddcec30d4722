package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"
	"strings"

	"modernc.org/sqlite"
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

// auditStmts are the statements of the audit hot path, prepared once per
// connection pool: preparing costs more than running them. They are
// prepared at Open, because a pool of one connection cannot prepare while
// a transaction holds it.
type auditStmts struct {
	// appendHash[k-1] inserts k hashes, (?1, ?2), (?3, ?4), …, if the
	// table holds exactly ?1 hashes, so the hashes stay a gap-free
	// sequence. SQLite evaluates the condition before inserting.
	appendHash [2]*sql.Stmt
	// appendEdge[k-1] inserts k hashes without that condition, for a
	// writer whose tree edge knows the count (treeEdge). An INSERT whose
	// SELECT reads the table it inserts into first copies its rows into a
	// temporary table, which made appendHash the dearest statement of an
	// append.
	appendEdge [4]*sql.Stmt
	// appendEdgeMany inserts edgeMany hashes as appendEdge does: the
	// hashes of a batch of entries (audit.AppendAll).
	appendEdgeMany *sql.Stmt
	readHash       *sql.Stmt
}

// edgeMany is the number of hashes appendEdgeMany inserts.
const edgeMany = 64

func prepareAudit(ctx context.Context, db *sql.DB) (*auditStmts, error) {
	s := &auditStmts{}
	type query struct {
		dst **sql.Stmt
		q   string
	}
	queries := []query{
		{&s.appendHash[0], `INSERT INTO audit_hashes (idx, hash) SELECT ?1, ?2
			WHERE (SELECT COALESCE(MAX(idx) + 1, 0) FROM audit_hashes) = ?1`},
		{&s.appendHash[1], `INSERT INTO audit_hashes (idx, hash) SELECT column1, column2 FROM (VALUES (?1, ?2), (?3, ?4))
			WHERE (SELECT COALESCE(MAX(idx) + 1, 0) FROM audit_hashes) = ?1`},
		{&s.readHash, `SELECT hash FROM audit_hashes WHERE idx = ?`},
	}
	edge := func(k int) string {
		rows := make([]string, k)
		for i := range rows {
			rows[i] = fmt.Sprintf("(?%d, ?%d)", 2*i+1, 2*i+2)
		}
		return `INSERT INTO audit_hashes (idx, hash) VALUES ` + strings.Join(rows, ", ")
	}
	for k := range s.appendEdge {
		queries = append(queries, query{&s.appendEdge[k], edge(k + 1)})
	}
	queries = append(queries, query{&s.appendEdgeMany, edge(edgeMany)})
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
	for _, st := range append(append([]*sql.Stmt{s.readHash, s.appendEdgeMany}, s.appendHash[:]...), s.appendEdge[:]...) {
		if st != nil {
			errs = append(errs, st.Close())
		}
	}
	return errors.Join(errs...)
}

// AppendAuditHashes stores hs at start, start+1, … if the table holds
// exactly start hashes; a refusal writes nothing (the first statement is
// the one refused). A writer whose tree edge knows the count inserts
// without having SQLite count; otherwise SQLite checks, and the edge
// learns the count from the append.
func (t *tx) AppendAuditHashes(start int64, hs []tlog.Hash) error {
	if start < 0 {
		return keyward.Errorf(keyward.EInvalid, "audit hash index %d is negative", start)
	}
	if len(hs) == 0 {
		return nil
	}
	e := t.tree.edge()
	if e != nil && e.known && e.count == start {
		if err := t.insertEdge(start, hs); err != nil {
			// Only an edge wrong about the count can be refused here.
			t.tree.forget()
			return err
		}
		e.appended(start, hs)
		return nil
	}
	// A known edge that counts otherwise is right and SQLite refuses; if
	// SQLite does not, the edge starts afresh from what it proved.
	if err := t.insertHashes(t.audit.appendHash[:], start, hs); err != nil {
		return err
	}
	if e != nil {
		if !e.known || e.count != start {
			*e = treeEdge{known: true, count: start}
		}
		e.appended(start, hs)
	}
	return nil
}

// insertEdge inserts hs at start, start+1, … with appendEdgeMany, then
// appendEdge.
func (t *tx) insertEdge(start int64, hs []tlog.Hash) error {
	if n := len(hs) / edgeMany * edgeMany; n > 0 {
		// insertHashes takes k hashes at a time with stmts[k-1]: a list
		// whose only statement is the 64-hash one, for a multiple of 64.
		many := make([]*sql.Stmt, edgeMany)
		many[edgeMany-1] = t.audit.appendEdgeMany
		if err := t.insertHashes(many, start, hs[:n]); err != nil {
			return err
		}
		start, hs = start+int64(n), hs[n:]
	}
	return t.insertHashes(t.audit.appendEdge[:], start, hs)
}

// insertHashes runs stmts[k-1] (appendHash or appendEdge) on k hashes at a
// time: (start, hs[0]), (start+1, hs[1]), …
func (t *tx) insertHashes(stmts []*sql.Stmt, start int64, hs []tlog.Hash) error {
	for len(hs) > 0 {
		k := min(len(hs), len(stmts))
		args := make([]any, 0, 2*k)
		for i := range k {
			args = append(args, start+int64(i), hs[i][:])
		}
		res, err := t.execHot(stmts[k-1], args...)
		if constraint(err) == sqlite3.SQLITE_CONSTRAINT_PRIMARYKEY {
			return keyward.Errorf(keyward.EConflict, "audit hashes from %d: the tree holds more than %d hashes", start, start)
		}
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

// treeEdge is what the writer knows of the audit tree between
// transactions, so that an append need not ask SQLite: how many hashes
// audit_hashes holds, and the stored hashes whose parent is not stored
// yet. Those are the tree's right edge, at most one per level, and the
// only stored hashes an append reads (tlog.StoredHashesForRecordHash).
// Hashes of the edge it has not seen are read when first asked for.
//
// The edge is true of the database as long as no other connection
// (another process, an operator's sqlite3 shell) wrote it. It keeps the
// writer connection's data version of the file (SQLITE_FCNTL_DATA_VERSION)
// from the end of the last transaction, and the next one uses it only if
// the version is still the same once it holds the write lock. The
// version moves with the connection's own commits and whenever SQLite
// drops its page cache because another connection committed, so the edge
// is as coherent as SQLite's own cache.
type treeEdge struct {
	known   bool   // the rest holds
	version uint32 // the writer connection's data version
	count   int64  // hashes in audit_hashes
	hashes  []edgeHash
}

type edgeHash struct {
	idx  int64
	hash tlog.Hash
}

func (e *treeEdge) lookup(idx int64) (tlog.Hash, bool) {
	for _, h := range e.hashes {
		if h.idx == idx {
			return h.hash, true
		}
	}
	return tlog.Hash{}, false
}

// needed reports whether an append can still read stored hash idx: its
// parent is not stored yet.
func (e *treeEdge) needed(idx int64) bool {
	level, n := tlog.SplitStoredHashIndex(idx)
	return idx < e.count && tlog.StoredHashIndex(level+1, n>>1) >= e.count
}

// remember adds stored hash idx, read from the table, if an append can
// still need it.
func (e *treeEdge) remember(idx int64, h tlog.Hash) {
	if !e.known || !e.needed(idx) {
		return
	}
	if _, ok := e.lookup(idx); !ok {
		e.hashes = append(e.hashes, edgeHash{idx, h})
	}
}

// appended records that hs were stored at e.count, e.count+1, … and drops
// the hashes they complete.
func (e *treeEdge) appended(start int64, hs []tlog.Hash) {
	e.count = start + int64(len(hs))
	kept := e.hashes[:0]
	for _, h := range e.hashes {
		if e.needed(h.idx) {
			kept = append(kept, h)
		}
	}
	e.hashes = kept
	for i, h := range hs {
		if idx := start + int64(i); e.needed(idx) {
			e.hashes = append(e.hashes, edgeHash{idx, h})
		}
	}
}

// treeTx is a write transaction's part in the tree edge: its copy, made
// on first use and published to the DB's once the transaction commits,
// so that a rollback forgets what it appended. shared is nil in a View.
type treeTx struct {
	shared *treeEdge
	conn   *sql.Conn // the writer connection the transaction runs on
	valid  bool      // shared was true of the database when the transaction began
	cur    treeEdge
	loaded bool
}

// begin checks, once the transaction holds the write lock, that no other
// connection wrote the database since the DB's edge was true of it; if
// one did, the edge is forgotten.
func (tr *treeTx) begin() error {
	if tr.shared == nil || !tr.shared.known {
		return nil
	}
	v, err := dataVersion(tr.conn)
	if err != nil {
		return err
	}
	tr.valid = v == tr.shared.version
	if !tr.valid {
		*tr.shared = treeEdge{}
	}
	return nil
}

// edge returns the transaction's edge, or nil in a View.
func (tr *treeTx) edge() *treeEdge {
	if tr.shared == nil {
		return nil
	}
	if !tr.loaded {
		if tr.valid {
			tr.cur = *tr.shared
			tr.cur.hashes = slices.Clone(tr.shared.hashes)
		}
		tr.loaded = true
	}
	return &tr.cur
}

// forget drops what the edge knows, in the DB's edge too.
func (tr *treeTx) forget() {
	if tr.shared != nil {
		*tr.shared, tr.cur, tr.valid = treeEdge{}, treeEdge{}, false
	}
}

// end runs after the transaction committed (publishing its edge) or
// rolled back (keeping the DB's). The edge takes the data version the
// connection has now: its own commit changed it, and it cannot have seen
// another connection's commit since the transaction began.
func (tr *treeTx) end(committed bool) {
	if tr.shared == nil {
		return
	}
	next := *tr.shared
	if committed && tr.loaded {
		next = tr.cur
	}
	if !next.known {
		*tr.shared = treeEdge{}
		return
	}
	v, err := dataVersion(tr.conn)
	if err != nil {
		*tr.shared = treeEdge{}
		return
	}
	next.version = v
	*tr.shared = next
}

// dataVersion returns SQLITE_FCNTL_DATA_VERSION of the main database on
// conn, without running a statement (PRAGMA data_version, which ignores
// the connection's own commits, costs as much as the read it would save).
func dataVersion(conn *sql.Conn) (uint32, error) {
	var v uint32
	err := conn.Raw(func(dc any) error {
		fc, ok := dc.(sqlite.FileControl)
		if !ok {
			return fmt.Errorf("driver connection %T has no file control", dc)
		}
		var err error
		v, err = fc.FileControlDataVersion("main")
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("sqlite: data version: %w", err)
	}
	return v, nil
}

// maxVars bounds the parameters of one IN list (SQLite's default limit is
// 32766).
const maxVars = 500

// AuditHashes returns the stored hashes at indexes, in the order asked. In
// an Update, hashes of the tree edge come from it.
func (t *tx) AuditHashes(indexes []int64) ([]tlog.Hash, error) {
	if len(indexes) == 0 {
		// Every even leaf appends without reading: no statement for it.
		return nil, nil
	}
	e := t.tree.edge()
	if e == nil || !e.known {
		return t.readHashes(indexes)
	}
	out := make([]tlog.Hash, len(indexes))
	var missing []int // positions in indexes
	for i, x := range indexes {
		if h, ok := e.lookup(x); ok {
			out[i] = h
		} else {
			missing = append(missing, i)
		}
	}
	if len(missing) == 0 {
		return out, nil
	}
	xs := make([]int64, len(missing))
	for j, i := range missing {
		xs[j] = indexes[i]
	}
	read, err := t.readHashes(xs)
	if err != nil {
		return nil, err
	}
	for j, i := range missing {
		out[i] = read[j]
		e.remember(xs[j], read[j])
	}
	return out, nil
}

// readHashes reads the hashes at indexes from the table: a few by the
// prepared statement, many by IN lists.
func (t *tx) readHashes(indexes []int64) ([]tlog.Hash, error) {
	if len(indexes) <= 16 {
		out := make([]tlog.Hash, len(indexes))
		stmt := t.stmt(t.audit.readHash)
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
