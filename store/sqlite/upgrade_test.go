package sqlite

import (
	"database/sql"
	"path/filepath"
	"testing"

	"github.com/keyward/keyward/store/storetest"
)

// TestUpgradeFrom9KeepsCertificates: a database at schema version 9 with
// current certificates in license_certificates keeps them, through
// migration 0010 (certificate_signatures), as Open upgrades it.
func TestUpgradeFrom9KeepsCertificates(t *testing.T) {
	ctx := t.Context()
	path := filepath.Join(t.TempDir(), "k.db")
	all, err := migrations()
	if err != nil {
		t.Fatal(err)
	}
	var ms []migration
	for _, m := range all {
		if m.version <= 9 {
			ms = append(ms, m)
		}
	}
	if len(ms) != 9 || len(all) <= 9 {
		t.Fatalf("migrations 1..9 = %d of %d, want 9 of more", len(ms), len(all))
	}

	raw, err := sql.Open("sqlite", dsn(path, ""))
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	raw.SetMaxOpenConns(1)
	if err := applyMigrations(ctx, raw, ms); err != nil {
		t.Fatalf("migrate to 9: %v", err)
	}
	var version, tables int
	if err := raw.QueryRowContext(ctx, `SELECT MAX(version) FROM schema_migrations`).Scan(&version); err != nil {
		t.Fatal(err)
	}
	if err := raw.QueryRowContext(ctx, `SELECT count(*) FROM sqlite_schema WHERE name = 'certificate_signatures'`).Scan(&tables); err != nil {
		t.Fatal(err)
	}
	if version != 9 || tables != 0 {
		t.Fatalf("before Open: schema version %d, %d certificate_signatures tables; want 9 and 0", version, tables)
	}
	for _, q := range storetest.Schema9Certificates() {
		if _, err := raw.ExecContext(ctx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	if err := raw.Close(); err != nil {
		t.Fatal(err)
	}

	db, err := Open(ctx, path)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() {
		if err := db.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	if err := db.read.QueryRowContext(ctx, `SELECT MAX(version) FROM schema_migrations`).Scan(&version); err != nil {
		t.Fatal(err)
	}
	if latest := all[len(all)-1].version; version != latest {
		t.Fatalf("after Open: schema version %d, want %d", version, latest)
	}
	storetest.CheckUpgradedFrom9(t, db)
}
