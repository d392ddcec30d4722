package cli

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/spf13/cobra"
	"golang.org/x/mod/sumdb/tlog"

	"github.com/keyward/keyward"
	"github.com/keyward/keyward/audit"
	"github.com/keyward/keyward/store"
	"github.com/keyward/keyward/store/postgres"
	"github.com/keyward/keyward/store/sqlite"
)

// MigrateResult is what `keyward migrate` reports.
type MigrateResult struct {
	From          string `json:"from"` // the SQLite file
	Tables        int    `json:"tables"`
	Rows          int64  `json:"rows"`
	AuditEntries  int64  `json:"audit_entries"`
	AuditRoot     string `json:"audit_root"`     // base64 RFC 6962 root of the whole log, the same in both stores
	Checkpoint    int64  `json:"checkpoint"`     // size of the latest signed checkpoint, checked against the copy (0: none yet)
	SchemaVersion int    `json:"schema_version"` // of both stores
}

func migrateCmd(e *env) *cobra.Command {
	var from, to string
	c := &cobra.Command{
		Use:   "migrate --from sqlite:PATH --to postgres://…",
		Short: "Copy a single-node SQLite install into an empty PostgreSQL database",
		Long: `Copy every table of a SQLite database (a single-node install) into an empty
PostgreSQL database or schema, in one transaction: sealed signing keys and
secrets stay sealed under the same KEK (start the PostgreSQL servers with the
same KEK file), hashes, audit entries, sequence numbers and times are copied
as they are. Afterwards the audit tree is rebuilt from the copied entries and
checked against the copied tree hashes, the latest signed checkpoint and the
source's tree. Stop the servers using the SQLite file first: writes made
during the copy are not copied. Both databases are brought to this binary's
schema version first. Progress goes to stderr.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			path, ok := strings.CutPrefix(from, "sqlite:")
			if !ok || path == "" {
				return usageError(fmt.Errorf("--from %q: want sqlite:PATH", from))
			}
			if !strings.HasPrefix(to, "postgres://") && !strings.HasPrefix(to, "postgresql://") {
				return usageError(errors.New("--to: want a postgres:// URL"))
			}
			res, err := migrateToPostgres(e.ctx, path, to, e.stderr)
			if err != nil {
				return err
			}
			return e.print(res, func(w io.Writer) {
				fmt.Fprintf(w, "copied\t%d rows in %d tables from %s\n", res.Rows, res.Tables, res.From)
				fmt.Fprintf(w, "schema\tversion %d\n", res.SchemaVersion)
				fmt.Fprintf(w, "audit\t%d entries, root %s, verified\n", res.AuditEntries, res.AuditRoot)
				if res.Checkpoint > 0 {
					fmt.Fprintf(w, "checkpoint\tsize %d matches the copied log\n", res.Checkpoint)
				}
			})
		},
	}
	c.Flags().StringVar(&from, "from", "", "source database: sqlite:PATH (required)")
	c.Flags().StringVar(&to, "to", "", "target database: postgres://… (required; must be empty)")
	_ = c.MarkFlagRequired("from")
	_ = c.MarkFlagRequired("to")
	return c
}

// migrateToPostgres copies the SQLite database at path into the
// PostgreSQL database at url and verifies the audit log of the copy.
func migrateToPostgres(ctx context.Context, path, url string, stderr io.Writer) (*MigrateResult, error) {
	if _, err := os.Stat(path); err != nil {
		return nil, fmt.Errorf("source: %w", err)
	}
	src, err := sqlite.Open(ctx, path)
	if err != nil {
		return nil, fmt.Errorf("source: %w", err)
	}
	defer src.Close()
	dst, err := postgres.Open(ctx, url, postgres.Options{})
	if err != nil {
		return nil, fmt.Errorf("target: %w", err)
	}
	defer dst.Close()
	res := &MigrateResult{From: path}
	tty := isTerminal(stderr)
	err = src.Snapshot(ctx, func(s *sqlite.Snapshot) error {
		var lastTable string
		return dst.CopyFrom(ctx, s, func(p postgres.CopyProgress) {
			if p.Table != lastTable {
				if tty && lastTable != "" {
					fmt.Fprintln(stderr)
				}
				lastTable = p.Table
				res.Tables++
			}
			if p.Done == p.Total {
				res.Rows += p.Total
			}
			switch {
			case tty:
				fmt.Fprintf(stderr, "\r[%d/%d] %-20s %d/%d rows", p.Index, p.NumTables, p.Table, p.Done, p.Total)
			case p.Done == p.Total:
				fmt.Fprintf(stderr, "[%d/%d] %s: %d rows\n", p.Index, p.NumTables, p.Table, p.Total)
			}
		})
	})
	if tty && res.Tables > 0 {
		fmt.Fprintln(stderr)
	}
	if err != nil {
		return nil, fmt.Errorf("copy: %w", err)
	}
	if res.SchemaVersion, err = dst.SchemaVersion(ctx); err != nil {
		return nil, err
	}
	srcSize, srcRoot, _, err := verifyStoredAudit(ctx, src, nil)
	if err != nil {
		return nil, fmt.Errorf("source audit log: %w", err)
	}
	size, root, cp, err := verifyStoredAudit(ctx, dst, audit.Progress(func(done, total int64) {
		if tty {
			fmt.Fprintf(stderr, "\rverified %d/%d audit entries", done, total)
			if done >= total {
				fmt.Fprintln(stderr)
			}
		}
	}))
	if err != nil {
		return nil, fmt.Errorf("copied audit log: %w", err)
	}
	if size != srcSize || root != srcRoot {
		return nil, fmt.Errorf("copied audit log: %d entries with root %s, the source has %d with root %s", size, root, srcSize, srcRoot)
	}
	res.AuditEntries, res.AuditRoot, res.Checkpoint = size, base64.StdEncoding.EncodeToString(root[:]), cp
	return res, nil
}

// hashSlice is a tlog.HashReader over hashes held in memory.
type hashSlice []tlog.Hash

func (h hashSlice) ReadHashes(indexes []int64) ([]tlog.Hash, error) {
	out := make([]tlog.Hash, len(indexes))
	for i, x := range indexes {
		if x < 0 || x >= int64(len(h)) {
			return nil, fmt.Errorf("no tree hash %d", x)
		}
		out[i] = h[x]
	}
	return out, nil
}

// verifyStoredAudit rebuilds the audit tree from the entries in st (one
// snapshot) and checks it against the tree hashes st stores and against
// its latest signed checkpoint. It returns the log's size and root and the
// size of the checkpoint it checked (0 when there is none).
func verifyStoredAudit(ctx context.Context, st store.Store, progress audit.Progress) (size int64, root tlog.Hash, checkpoint int64, err error) {
	err = st.View(ctx, func(tx store.Tx) error {
		var err error
		if size, err = tx.AuditSize(); err != nil {
			return err
		}
		var hs hashSlice
		for n := int64(0); n < size; {
			es, err := tx.AuditEntries(store.AuditFilter{AfterSeq: n, Limit: 1000})
			if err != nil {
				return err
			}
			if len(es) == 0 {
				return fmt.Errorf("entry %d is missing", n+1)
			}
			for _, e := range es {
				if e.Seq != n+1 {
					return fmt.Errorf("entry %d is missing", n+1)
				}
				leaf, err := audit.LeafHash(e)
				if err != nil {
					return fmt.Errorf("entry %d: %w", e.Seq, err)
				}
				more, err := tlog.StoredHashesForRecordHash(n, leaf, hs)
				if err != nil {
					return err
				}
				hs = append(hs, more...)
				n++
			}
			if progress != nil {
				progress(n, size)
			}
		}
		if root, err = tlog.TreeHash(size, hs); err != nil {
			return err
		}
		stored, err := tlog.TreeHash(size, audit.HashReader(tx))
		if err != nil {
			return fmt.Errorf("stored tree hashes: %w", err)
		}
		if stored != root {
			return fmt.Errorf("the stored tree hashes (root %s) do not match the entries (root %s)", stored, root)
		}
		cp, err := tx.LatestCheckpoint()
		if keyward.ErrorCode(err) == keyward.ENotFound {
			return nil
		} else if err != nil {
			return err
		}
		at, err := tlog.TreeHash(cp.Size, hs)
		if err != nil {
			return fmt.Errorf("checkpoint %d: %w", cp.Size, err)
		}
		if at != cp.Root {
			return fmt.Errorf("signed checkpoint %d has root %s, the entries give %s", cp.Size, cp.Root, at)
		}
		checkpoint = cp.Size
		return nil
	})
	return size, root, checkpoint, err
}
