package postgres

import (
	"context"
	"fmt"
	"slices"

	"github.com/jackc/pgx/v5"

	"github.com/keyward/keyward"
)

// RowSource is a consistent, read-only view of another Keyward database
// at the same schema version, table by table (*sqlite.Snapshot implements
// it). Values are int64 for INTEGER columns, string for TEXT, []byte for
// BLOB and nil for NULL.
type RowSource interface {
	SchemaVersion() (int, error)
	Tables() ([]string, error)
	Count(table string) (int64, error)
	// Rows calls fn with the values of columns of each row of table.
	Rows(table string, columns []string, fn func(row []any) error) error
	// Sequence returns the largest value table's auto-increment key ever
	// had, 0 if it has none.
	Sequence(table string) (int64, error)
}

// CopyProgress reports how far CopyFrom got: Done of Total rows of Table,
// the Tables-th of NumTables.
type CopyProgress struct {
	Table       string
	Done, Total int64
	Index       int // 1-based position of Table
	NumTables   int
}

// CopyFrom copies every row of every table of src into this store, which
// MUST be empty (nothing but its schema: a database no server has started
// on), as it is: sealed keys and secrets stay sealed under the same KEK,
// hashes and audit entries byte for byte, times and sequence numbers
// unchanged; identity sequences continue after the copied values. It runs
// in one transaction holding the write lock, so a failure leaves the store
// empty and other processes see all or nothing.
//
// Errors: EConflict if the store is not empty, EInvalid if src's schema
// version or tables differ from this store's (open the source with the
// same keyward version first, which migrates it). progress (optional) is
// called after each batch.
func (db *DB) CopyFrom(ctx context.Context, src RowSource, progress func(CopyProgress)) error {
	srcVersion, err := src.SchemaVersion()
	if err != nil {
		return err
	}
	version, err := db.SchemaVersion(ctx)
	if err != nil {
		return err
	}
	if srcVersion != version {
		return keyward.Errorf(keyward.EInvalid, "the source database is at schema version %d, the target at %d: open both with the same keyward version", srcVersion, version)
	}
	return pgx.BeginTxFunc(ctx, db.pool, pgx.TxOptions{IsoLevel: pgx.ReadCommitted}, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1)`, db.writeKey); err != nil {
			return fmt.Errorf("postgres: write lock: %w", err)
		}
		tables, err := copyOrder(ctx, tx)
		if err != nil {
			return err
		}
		srcTables, err := src.Tables()
		if err != nil {
			return err
		}
		if want := slices.Sorted(slices.Values(tables)); !slices.Equal(want, slices.Sorted(slices.Values(srcTables))) {
			return keyward.Errorf(keyward.EInvalid, "the source has tables %v, the target %v", srcTables, want)
		}
		// schema_migrations is each store's own record of its migrations.
		tables = slices.DeleteFunc(tables, func(t string) bool { return t == "schema_migrations" })
		for _, t := range tables {
			var has bool
			if err := tx.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM `+pgx.Identifier{t}.Sanitize()+`)`).Scan(&has); err != nil {
				return fmt.Errorf("postgres: %s: %w", t, err)
			}
			if has {
				return keyward.Errorf(keyward.EConflict, "the target database is not empty (table %s has rows): copy only into a fresh database or schema", t)
			}
		}
		for i, t := range tables {
			if err := copyTable(ctx, tx, src, t, func(done, total int64) {
				if progress != nil {
					progress(CopyProgress{Table: t, Done: done, Total: total, Index: i + 1, NumTables: len(tables)})
				}
			}); err != nil {
				return err
			}
		}
		return nil
	})
}

// copyBatch is how many rows go into one COPY.
const copyBatch = 5000

type pgColumn struct {
	name     string
	typ      string // bigint, text or bytea
	identity bool
}

// copyTable copies one table in batches and moves its identity sequences
// past the copied values (and past the source's own counter).
func copyTable(ctx context.Context, tx pgx.Tx, src RowSource, table string, progress func(done, total int64)) error {
	rows, err := tx.Query(ctx, `SELECT column_name, data_type, is_identity = 'YES' FROM information_schema.columns
		WHERE table_schema = current_schema() AND table_name = $1 ORDER BY ordinal_position`, table)
	if err != nil {
		return fmt.Errorf("postgres: columns of %s: %w", table, err)
	}
	cols, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (pgColumn, error) {
		var c pgColumn
		err := r.Scan(&c.name, &c.typ, &c.identity)
		return c, err
	})
	if err != nil {
		return fmt.Errorf("postgres: columns of %s: %w", table, err)
	}
	names := make([]string, len(cols))
	for i, c := range cols {
		names[i] = c.name
	}
	total, err := src.Count(table)
	if err != nil {
		return err
	}
	progress(0, total)
	var batch [][]any
	var done int64
	flush := func() error {
		if len(batch) == 0 {
			return nil
		}
		n, err := tx.CopyFrom(ctx, pgx.Identifier{table}, names, pgx.CopyFromRows(batch))
		if err != nil {
			return fmt.Errorf("postgres: copy %s: %w", table, err)
		}
		done += n
		batch = batch[:0]
		progress(done, total)
		return nil
	}
	err = src.Rows(table, names, func(row []any) error {
		vals := make([]any, len(row))
		for i, v := range row {
			cv, err := convert(v, cols[i].typ)
			if err != nil {
				return fmt.Errorf("copy %s.%s: %w", table, cols[i].name, err)
			}
			vals[i] = cv
		}
		batch = append(batch, vals)
		if len(batch) >= copyBatch {
			return flush()
		}
		return nil
	})
	if err == nil {
		err = flush()
	}
	if err != nil {
		return err
	}
	if done != total {
		return fmt.Errorf("copy %s: copied %d rows, the source counted %d", table, done, total)
	}
	for _, c := range cols {
		if !c.identity {
			continue
		}
		seq, err := src.Sequence(table)
		if err != nil {
			return err
		}
		ident := pgx.Identifier{c.name}.Sanitize()
		if _, err := tx.Exec(ctx, `SELECT setval(pg_get_serial_sequence($1, $2), v) FROM (
				SELECT GREATEST(COALESCE(MAX(`+ident+`), 0), $3::bigint) AS v FROM `+pgx.Identifier{table}.Sanitize()+`) AS m
			WHERE v > 0`, table, c.name, seq); err != nil {
			return fmt.Errorf("postgres: sequence of %s.%s: %w", table, c.name, err)
		}
	}
	return nil
}

// convert checks a source value against the target column type.
func convert(v any, typ string) (any, error) {
	if v == nil {
		return nil, nil
	}
	switch typ {
	case "bigint":
		if n, ok := v.(int64); ok {
			return n, nil
		}
	case "text":
		switch s := v.(type) {
		case string:
			return s, nil
		case []byte:
			return string(s), nil
		}
	case "bytea":
		switch b := v.(type) {
		case []byte:
			return slices.Clone(b), nil
		case string:
			return []byte(b), nil
		}
	}
	return nil, fmt.Errorf("a %T value does not fit a %s column", v, typ)
}

// copyOrder returns the store's tables ordered so that every table comes
// after the tables its foreign keys reference (ties by name).
func copyOrder(ctx context.Context, tx pgx.Tx) ([]string, error) {
	rows, err := tx.Query(ctx, `SELECT table_name FROM information_schema.tables
		WHERE table_schema = current_schema() AND table_type = 'BASE TABLE' ORDER BY table_name`)
	if err != nil {
		return nil, fmt.Errorf("postgres: tables: %w", err)
	}
	tables, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("postgres: tables: %w", err)
	}
	rows, err = tx.Query(ctx, `SELECT c.conrelid::regclass::text, c.confrelid::regclass::text FROM pg_constraint c
		WHERE c.contype = 'f' AND c.connamespace = current_schema()::regnamespace`)
	if err != nil {
		return nil, fmt.Errorf("postgres: foreign keys: %w", err)
	}
	deps := map[string][]string{}
	err = forEachRow(rows, func(r pgx.Rows) error {
		var from, to string
		if err := r.Scan(&from, &to); err != nil {
			return err
		}
		if from != to {
			deps[from] = append(deps[from], to)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("postgres: foreign keys: %w", err)
	}
	var out []string
	placed := map[string]bool{}
	for len(out) < len(tables) {
		progressed := false
		for _, t := range tables {
			if placed[t] {
				continue
			}
			ready := true
			for _, d := range deps[t] {
				ready = ready && placed[d]
			}
			if ready {
				out, placed[t], progressed = append(out, t), true, true
			}
		}
		if !progressed {
			return nil, fmt.Errorf("postgres: foreign keys form a cycle among %v", tables)
		}
	}
	return out, nil
}

func forEachRow(rows pgx.Rows, fn func(pgx.Rows) error) error {
	defer rows.Close()
	for rows.Next() {
		if err := fn(rows); err != nil {
			return err
		}
	}
	return rows.Err()
}
