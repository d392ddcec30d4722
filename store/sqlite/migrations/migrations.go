// Package migrations is Keyward's versioned database schema: the one source
// of truth for both stores.
//
// Each file NNNN_name.sql is one schema change, applied once, in version
// order, in one transaction with the others a database lacks. The files are
// written in the subset of SQL that SQLite and PostgreSQL share, spelled as
// SQLite spells it: store/sqlite runs them as they are, and store/postgres
// runs them through a small, fixed translation (docs/postgres.md lists it):
// the STRICT table option is dropped, INTEGER becomes BIGINT, BLOB becomes
// BYTEA, INTEGER PRIMARY KEY AUTOINCREMENT becomes an identity column, and
// json_valid is a function the PostgreSQL store defines. A migration MUST
// use nothing else that only one of the two engines understands (triggers,
// PRAGMA, INSERT OR …, SQLite's date and JSON functions): the PostgreSQL
// store refuses such a file, and its tests compare the two resulting schemas
// table by table, column by column and index by index.
//
// Type names are written in capitals (INTEGER, TEXT, BLOB): the
// translation matches them as words, case-sensitively.
package migrations

import (
	"embed"
	"fmt"
	"io/fs"
	"sort"
	"strconv"
	"strings"
)

//go:embed *.sql
var files embed.FS

// Migration is one schema change.
type Migration struct {
	Version int    // from the file name's leading number; 1, 2, 3, …
	Name    string // the file name, e.g. "0001_init.sql"
	SQL     string // the file's text, in the source (SQLite) dialect
}

// All returns every migration ordered by version. It fails if a file name
// does not start with a positive version and '_', or if two files share a
// version.
func All() ([]Migration, error) {
	names, err := fs.Glob(files, "*.sql")
	if err != nil {
		return nil, err
	}
	var ms []Migration
	for _, name := range names {
		num, _, ok := strings.Cut(name, "_")
		v, err := strconv.Atoi(num)
		if !ok || err != nil || v <= 0 {
			return nil, fmt.Errorf("migration %s: name must start with a positive version and '_'", name)
		}
		b, err := files.ReadFile(name)
		if err != nil {
			return nil, err
		}
		ms = append(ms, Migration{Version: v, Name: name, SQL: string(b)})
	}
	if len(ms) == 0 {
		return nil, fmt.Errorf("no migrations embedded")
	}
	sort.Slice(ms, func(i, j int) bool { return ms[i].Version < ms[j].Version })
	for i := 1; i < len(ms); i++ {
		if ms[i].Version == ms[i-1].Version {
			return nil, fmt.Errorf("migrations %s and %s have the same version", ms[i-1].Name, ms[i].Name)
		}
	}
	return ms, nil
}

// Latest returns the highest version.
func Latest() (int, error) {
	ms, err := All()
	if err != nil {
		return 0, err
	}
	return ms[len(ms)-1].Version, nil
}
