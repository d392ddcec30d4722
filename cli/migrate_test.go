package cli_test

import (
	"context"
	"encoding/json"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/keyward/keyward/cli"
	"github.com/keyward/keyward/store/postgres/pgtest"
)

type migrateResult struct {
	Tables       int    `json:"tables"`
	Rows         int64  `json:"rows"`
	AuditEntries int64  `json:"audit_entries"`
	AuditRoot    string `json:"audit_root"`
	Checkpoint   int64  `json:"checkpoint"`
}

func TestMigrateToPostgres(t *testing.T) {
	url := pgtest.URL(t)
	dir := t.TempDir()

	// A single-node install with some history.
	h := start(t, dir, &lockedBuffer{})
	var kept, revoked issuedLicense
	h.ok(&kept, "license", "issue", "--product", "demo", "--holder", "cus_kept", "--max-machines", "0")
	h.ok(&revoked, "license", "issue", "--product", "demo", "--holder", "cus_gone", "--max-machines", "0")
	h.ok(nil, "license", "revoke", revoked.ID, "--reason", "abuse")
	h.ok(nil, "key", "rotate", "--product", "demo")
	h.sign()
	h.activity(2)
	h.stop()

	var out, errb strings.Builder
	code := cli.Run(context.Background(), []string{"keyward", "-o", "json", "migrate", "--from", "sqlite:" + filepath.Join(dir, "keyward.db"), "--to", url}, &out, &errb)
	if code != 0 {
		t.Fatalf("migrate: exit %d: %s", code, errb.String())
	}
	var res migrateResult
	if err := json.Unmarshal([]byte(out.String()), &res); err != nil {
		t.Fatalf("migrate output %q: %v", out.String(), err)
	}
	if res.Tables < 10 || res.Rows < 20 || res.AuditEntries < 8 || res.Checkpoint == 0 || res.Checkpoint >= res.AuditEntries {
		t.Fatalf("migrate = %+v: want every table, the audit log, and a checkpoint older than the log", res)
	}
	if !strings.Contains(errb.String(), "audit: ") {
		t.Errorf("no progress on stderr: %q", errb.String())
	}

	// The same data directory (its KEK) on PostgreSQL: keys stayed
	// sealed under it and still sign; license keys still validate (same
	// pepper); the log goes on and verifies.
	logs := &lockedBuffer{}
	rs, err := cli.StartServer(context.Background(), cli.ServerConfig{
		Dev: true, DataDir: dir, DB: url, Listen: "127.0.0.1:0",
		Logger: slog.New(slog.NewJSONHandler(logs, nil)),
	})
	if err != nil {
		t.Fatalf("StartServer on the copy: %v", err)
	}
	tok, _ := os.ReadFile(filepath.Join(dir, "admin.token"))
	pg := &harness{t: t, dir: dir, url: "http://" + rs.Addr, token: strings.TrimSpace(string(tok)), server: rs, logs: logs}
	defer pg.stop()
	if code := pg.validationCode(kept.Key); code != "VALID" {
		t.Errorf("kept license on the copy: %s", code)
	}
	if code := pg.validationCode(revoked.Key); code != "REVOKED" {
		t.Errorf("revoked license on the copy: %s", code)
	}
	pg.ok(nil, "license", "checkout", kept.ID)
	pg.ok(nil, "license", "suspend", kept.ID, "--reason", "after the move")
	var audit struct {
		Entries []struct {
			Seq int64 `json:"seq"`
		} `json:"entries"`
	}
	pg.ok(&audit, "audit", "list", "--target", kept.ID)
	if last := audit.Entries[len(audit.Entries)-1].Seq; last <= res.AuditEntries {
		t.Errorf("first entry after the copy has seq %d, want after %d", last, res.AuditEntries)
	}
	pg.sign()
	var v struct {
		Size int64 `json:"size"`
	}
	pg.ok(&v, "audit", "verify")
	if v.Size <= res.AuditEntries {
		t.Errorf("audit verify on the copy covered %d entries, want more than %d", v.Size, res.AuditEntries)
	}

	// A second copy into the same database is refused, and changes nothing.
	out.Reset()
	errb.Reset()
	code = cli.Run(context.Background(), []string{"keyward", "migrate", "--from", "sqlite:" + filepath.Join(dir, "keyward.db"), "--to", url}, &out, &errb)
	if code != 1 || !strings.Contains(errb.String(), "not empty") {
		t.Errorf("migrate into a used database: exit %d, %q; want 1 and \"not empty\"", code, errb.String())
	}
	if code := pg.validationCode(kept.Key); code != "SUSPENDED" {
		t.Errorf("after the refused copy: %s", code)
	}
}

func TestMigrateUsage(t *testing.T) {
	dir := t.TempDir()
	tests := []struct {
		args []string
		code int
		msg  string
	}{
		{[]string{"--from", "keyward.db", "--to", "postgres://x/y"}, 2, "want sqlite:PATH"},
		{[]string{"--from", "sqlite:k.db", "--to", "mysql://x/y"}, 2, "want a postgres:// URL"},
		{[]string{"--to", "postgres://x/y"}, 2, "required flag"},
		{[]string{"--from", "sqlite:" + filepath.Join(dir, "missing.db"), "--to", "postgres://127.0.0.1:1/none"}, 1, "no such file"},
	}
	for _, tt := range tests {
		var out, errb strings.Builder
		code := cli.Run(context.Background(), append([]string{"keyward", "migrate"}, tt.args...), &out, &errb)
		if code != tt.code || !strings.Contains(errb.String(), tt.msg) {
			t.Errorf("migrate %v: exit %d, %q; want %d and %q", tt.args, code, errb.String(), tt.code, tt.msg)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "missing.db")); err == nil {
		t.Error("migrate created the missing source file")
	}
}
