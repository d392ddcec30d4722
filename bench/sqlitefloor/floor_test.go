// Package sqlitefloor measures what SQLite itself costs per certificate in
// a bulk re-sign, outside Keyward: the floor under BenchmarkBulkResign
// (scheduler) and BenchmarkResignStore (store/sqlite). It is its own
// module so that the cgo driver it compares against (mattn/go-sqlite3)
// never becomes a dependency of Keyward; `go test ./...` at the root does
// not run it. Run it with
//
//	cd bench/sqlitefloor && go test -run XXX -bench . -benchtime 30x -count 2
//
// Each benchmark builds 2 048 licenses with 600-byte certificates (two
// products, interleaved, for the layouts that filter by product), then in
// each iteration moves every certificate of one product from one kid to
// the other in one transaction, 128 at a time: read the candidates
// (payload, current signature, license eligibility), write the new
// signatures, commit. It reports read, write and commit time per
// certificate. docs/benchmarks.md ("Bulk re-sign") records the results.
package sqlitefloor

import (
	"context"
	"database/sql"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	_ "github.com/mattn/go-sqlite3" // cgo: the C library itself
	_ "modernc.org/sqlite"          // pure Go: Keyward's driver
)

// The tables of migrations 0001, 0007 and 0010, cut to what a re-sign
// touches; certificate_signatures has a product_id for the layouts that
// need one, and %s takes the layout's indexes.
const schema = `
CREATE TABLE licenses (id TEXT PRIMARY KEY, product_id TEXT NOT NULL, holder TEXT NOT NULL,
	state TEXT NOT NULL CHECK (state IN ('active', 'suspended')), key_prefix TEXT NOT NULL,
	entitlements TEXT NOT NULL CHECK (json_valid(entitlements)), max_machines INTEGER NOT NULL, expires_at INTEGER,
	created_at INTEGER NOT NULL, updated_at INTEGER NOT NULL, reason TEXT NOT NULL) STRICT;
CREATE TABLE license_certificates (license_id TEXT PRIMARY KEY REFERENCES licenses (id), product_id TEXT NOT NULL,
	kid TEXT NOT NULL, jti TEXT NOT NULL, issued_at INTEGER NOT NULL, expires_at INTEGER NOT NULL, token TEXT NOT NULL) STRICT;
CREATE TABLE certificate_signatures (
	license_id    TEXT PRIMARY KEY REFERENCES license_certificates (license_id),
	product_id    TEXT NOT NULL,
	kid           TEXT NOT NULL,
	expires_at    INTEGER NOT NULL,
	header_b64    TEXT,
	signature_b64 TEXT
) STRICT;
%s`

// layout is one way to find and rewrite a product's certificates.
type layout struct {
	indexes string
	read    string // ?1 now, ?2 kid, ?3 after, ?4 limit, ?5 product
}

var layouts = map[string]layout{
	// Keyward's (migration 0010): candidates by kid, so every re-signed
	// certificate moves in the kid index.
	"kid-index": {`CREATE INDEX s_kid ON certificate_signatures (kid, license_id);`, `SELECT c.license_id, c.expires_at, c.token, s.header_b64, s.signature_b64,
		l.state = 'active' AND (l.expires_at IS NULL OR l.expires_at > ?1)
	FROM certificate_signatures s JOIN license_certificates c ON c.license_id = s.license_id JOIN licenses l ON l.id = s.license_id
	WHERE s.kid = ?2 AND s.expires_at > ?1 AND s.license_id > ?3 AND ?5 <> '' ORDER BY s.license_id LIMIT ?4`},
	// Candidates by product, filtered by kid: no index changes on a
	// re-sign, but counting what depends on a key scans its product.
	"product-index": {`CREATE INDEX s_prd ON certificate_signatures (product_id, license_id);`, `SELECT c.license_id, c.expires_at, c.token, s.header_b64, s.signature_b64,
		l.state = 'active' AND (l.expires_at IS NULL OR l.expires_at > ?1)
	FROM certificate_signatures s JOIN license_certificates c ON c.license_id = s.license_id JOIN licenses l ON l.id = s.license_id
	WHERE s.product_id = ?5 AND s.kid = ?2 AND s.expires_at > ?1 AND s.license_id > ?3 ORDER BY s.license_id LIMIT ?4`},
	// The same without the license's eligibility: the cost of that join.
	"product-index-no-license": {`CREATE INDEX s_prd ON certificate_signatures (product_id, license_id);`, `SELECT c.license_id, c.expires_at, c.token, s.header_b64, s.signature_b64, 1
	FROM certificate_signatures s JOIN license_certificates c ON c.license_id = s.license_id
	WHERE s.product_id = ?5 AND s.kid = ?2 AND s.expires_at > ?1 AND s.license_id > ?3 ORDER BY s.license_id LIMIT ?4`},
}

// write is Keyward's ResignCertificates upsert of 128 rows.
var write = `INSERT INTO certificate_signatures (license_id, product_id, kid, expires_at, header_b64, signature_b64) VALUES (?, 'prd_0', ?, ?, ?, ?)` +
	strings.Repeat(", (?, 'prd_0', ?, ?, ?, ?)", 127) +
	` ON CONFLICT (license_id) DO UPDATE SET kid = excluded.kid, header_b64 = excluded.header_b64, signature_b64 = excluded.signature_b64`

func run(b *testing.B, driver string, l layout) {
	const n, chunk = 2048, 128
	ctx := context.Background()
	db, err := sql.Open(driver, "file:"+filepath.Join(b.TempDir(), "floor.db"))
	if err != nil {
		b.Fatal(err)
	}
	db.SetMaxOpenConns(1)
	defer db.Close()
	// Keyward's pragmas (store/sqlite dsn).
	for _, p := range []string{"PRAGMA journal_mode=WAL", "PRAGMA synchronous=NORMAL", "PRAGMA foreign_keys=1", "PRAGMA cache_size=-65536"} {
		if _, err := db.Exec(p); err != nil {
			b.Fatal(err)
		}
	}
	if _, err := db.Exec(fmt.Sprintf(schema, l.indexes)); err != nil {
		b.Fatal(err)
	}
	now := time.Now()
	exp := now.Add(time.Hour).UnixNano()
	header := "eyJhbGciOiJFZERTQSIsImtpZCI6ImtpZF9hIiwidHlwIjoia2V5d2FyZC1jZXJ0K2p3dCJ9"
	tok := header + "." + strings.Repeat("x", 420) + "." + strings.Repeat("s", 86)
	tx, err := db.Begin()
	if err != nil {
		b.Fatal(err)
	}
	for i := range n {
		for p := range 2 {
			id, prd := fmt.Sprintf("lic_06hcx2ym00m6twgsrrq%08d%d", i, p), fmt.Sprintf("prd_%d", p)
			for _, q := range []struct {
				q    string
				args []any
			}{
				{`INSERT INTO licenses VALUES (?, ?, 'cus-1', 'active', 'KW1-AAAA', '[]', 0, NULL, 1, 1, '')`, []any{id, prd}},
				{`INSERT INTO license_certificates VALUES (?, ?, 'kid_a', ?, 1, ?, ?)`, []any{id, prd, "crt_" + id, exp, tok}},
				{`INSERT INTO certificate_signatures (license_id, product_id, kid, expires_at) VALUES (?, ?, ?, ?)`, []any{id, prd, "kid_a" + prd, exp}},
			} {
				if _, err := tx.Exec(q.q, q.args...); err != nil {
					b.Fatal(err)
				}
			}
		}
	}
	if err := tx.Commit(); err != nil {
		b.Fatal(err)
	}
	rs, err := db.Prepare(l.read)
	if err != nil {
		b.Fatal(err)
	}
	ws, err := db.Prepare(write)
	if err != nil {
		b.Fatal(err)
	}
	kids := [2]string{"kid_aprd_0", "kid_bprd_0"}
	sigs := [2]string{strings.Repeat("t", 86), strings.Repeat("u", 86)}
	var readT, writeT, commitT time.Duration
	it := 0
	for b.Loop() {
		from, to, sig := kids[it%2], kids[(it+1)%2], sigs[it%2]
		it++
		tx, err := db.BeginTx(ctx, nil)
		if err != nil {
			b.Fatal(err)
		}
		trs, tws := tx.Stmt(rs), tx.Stmt(ws)
		after, moved := "", 0
		for {
			t0 := time.Now()
			rows, err := trs.QueryContext(ctx, now.UnixNano(), from, after, chunk, "prd_0")
			if err != nil {
				b.Fatal(err)
			}
			var ids []string
			for rows.Next() {
				var id, tok string
				var e int64
				var h, s sql.Null[string]
				var eligible bool
				if err := rows.Scan(&id, &e, &tok, &h, &s, &eligible); err != nil {
					b.Fatal(err)
				}
				ids = append(ids, id)
			}
			if err := rows.Close(); err != nil {
				b.Fatal(err)
			}
			readT += time.Since(t0)
			if len(ids) == 0 {
				break
			}
			if len(ids) != chunk {
				b.Fatalf("read %d candidates, want %d", len(ids), chunk)
			}
			t1 := time.Now()
			args := make([]any, 0, 5*chunk)
			for _, id := range ids {
				args = append(args, id, to, exp, header, sig)
			}
			if _, err := tws.ExecContext(ctx, args...); err != nil {
				b.Fatal(err)
			}
			writeT += time.Since(t1)
			after, moved = ids[len(ids)-1], moved+len(ids)
		}
		t2 := time.Now()
		if err := tx.Commit(); err != nil {
			b.Fatal(err)
		}
		commitT += time.Since(t2)
		if moved != n {
			b.Fatalf("moved %d certificates, want %d", moved, n)
		}
	}
	per := func(d time.Duration) float64 { return float64(d.Nanoseconds()) / float64(b.N*n) }
	b.ReportMetric(per(readT), "read-ns/cert")
	b.ReportMetric(per(writeT), "write-ns/cert")
	b.ReportMetric(per(commitT), "commit-ns/cert")
	b.ReportMetric(per(readT+writeT+commitT), "total-ns/cert")
	b.ReportMetric(0, "ns/op")
}

// BenchmarkDriver: Keyward's layout through the pure-Go driver and
// through the C library.
func BenchmarkDriver(b *testing.B) {
	for _, d := range []struct{ name, driver string }{{"modernc", "sqlite"}, {"cgo", "sqlite3"}} {
		b.Run(d.name, func(b *testing.B) { run(b, d.driver, layouts["kid-index"]) })
	}
}

// BenchmarkLayout: the layouts through Keyward's driver.
func BenchmarkLayout(b *testing.B) {
	for _, name := range []string{"kid-index", "product-index", "product-index-no-license"} {
		b.Run(name, func(b *testing.B) { run(b, "sqlite", layouts[name]) })
	}
}
