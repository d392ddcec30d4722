package postgres

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/keyward/keyward/store/postgres/pgtest"
	"github.com/keyward/keyward/store/storetest"
)

// TestUpgradeFrom9KeepsCertificates: a schema at version 9 with current
// certificates in license_certificates keeps them, through migration 0010
// (certificate_signatures), as Open upgrades it. The schema is built as
// migrate builds it, stopping after migration 9.
func TestUpgradeFrom9KeepsCertificates(t *testing.T) {
	url := pgtest.URL(t)
	ctx := t.Context()
	all, err := Migrations()
	if err != nil {
		t.Fatal(err)
	}
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	n := 0
	err = pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, prelude); err != nil {
			return err
		}
		now := time.Now().UnixNano()
		for _, m := range all {
			if m.Version > 9 {
				continue
			}
			if _, err := tx.Exec(ctx, m.SQL); err != nil {
				return err
			}
			if _, err := tx.Exec(ctx, `INSERT INTO schema_migrations (version, applied_at) VALUES ($1, $2)`, m.Version, now); err != nil {
				return err
			}
			n++
		}
		var exists bool
		if err := tx.QueryRow(ctx, `SELECT to_regclass('certificate_signatures') IS NOT NULL`).Scan(&exists); err != nil {
			return err
		}
		if exists {
			return fmt.Errorf("certificate_signatures exists at version 9")
		}
		for _, q := range storetest.Schema9Certificates() {
			if _, err := tx.Exec(ctx, q); err != nil {
				return fmt.Errorf("%s: %w", q, err)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatalf("migrate to 9: %v", err)
	}
	if n != 9 || len(all) <= 9 {
		t.Fatalf("migrations 1..9 = %d of %d, want 9 of more", n, len(all))
	}

	db, err := Open(ctx, url, Options{})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() {
		if err := db.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	if v, err := db.SchemaVersion(ctx); err != nil || v != all[len(all)-1].Version {
		t.Fatalf("after Open: SchemaVersion() = %d, %v, want %d", v, err, all[len(all)-1].Version)
	}
	storetest.CheckUpgradedFrom9(t, db)
}
