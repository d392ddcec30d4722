package postgres_test

import (
	"context"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/keyward/keyward/store"
	"github.com/keyward/keyward/store/postgres"
	"github.com/keyward/keyward/store/postgres/pgtest"
	"github.com/keyward/keyward/store/storetest"
)

// mustOpen opens a store in a scratch schema and closes it when t ends.
func mustOpen(t *testing.T, url string) *postgres.DB {
	t.Helper()
	db, err := postgres.Open(t.Context(), url, postgres.Options{})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() {
		if err := db.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return db
}

// TestStore runs the shared suite. Its subtests share one schema, emptied
// before each (deleting a few rows is much faster than a new schema and
// its migrations, or TRUNCATE); the migrations run at the first Open.
func TestStore(t *testing.T) {
	url := pgtest.URL(t)
	mustOpen(t, url)
	empty := emptySchema(t, url)
	storetest.Run(t, func(t *testing.T) store.Store {
		db := mustOpen(t, url)
		conn, err := pgx.Connect(t.Context(), url)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close(context.Background())
		if _, err := conn.Exec(t.Context(), empty); err != nil {
			t.Fatalf("empty the schema: %v", err)
		}
		return db
	})
}

// emptySchema returns the SQL that deletes every row of the store's
// tables (referencing tables first) and restarts identity sequences.
func emptySchema(t *testing.T, url string) string {
	t.Helper()
	conn, err := pgx.Connect(t.Context(), url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	rows, err := conn.Query(t.Context(), `SELECT tablename FROM pg_tables
		WHERE schemaname = current_schema() AND tablename <> 'schema_migrations' ORDER BY tablename`)
	if err != nil {
		t.Fatal(err)
	}
	tables, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	rows, err = conn.Query(t.Context(), `SELECT conrelid::regclass::text, confrelid::regclass::text FROM pg_constraint
		WHERE contype = 'f' AND connamespace = current_schema()::regnamespace`)
	if err != nil {
		t.Fatal(err)
	}
	type ref struct{ from, to string }
	refs, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (ref, error) {
		var x ref
		return x, r.Scan(&x.from, &x.to)
	})
	if err != nil {
		t.Fatal(err)
	}
	var stmts []string
	deleted := map[string]bool{}
	for len(deleted) < len(tables) {
		progress := false
		for _, tb := range tables {
			ready := !deleted[tb]
			for _, r := range refs {
				ready = ready && (r.to != tb || r.from == tb || deleted[r.from])
			}
			if ready {
				stmts, deleted[tb], progress = append(stmts, "DELETE FROM "+tb), true, true
			}
		}
		if !progress {
			t.Fatalf("foreign keys form a cycle among %v", tables)
		}
	}
	rows, err = conn.Query(t.Context(), `SELECT format('SELECT setval(pg_get_serial_sequence(%L, %L), 1, false)', table_name, column_name)
		FROM information_schema.columns WHERE table_schema = current_schema() AND is_identity = 'YES'`)
	if err != nil {
		t.Fatal(err)
	}
	restart, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	return strings.Join(append(stmts, restart...), ";\n")
}
