package cli_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ed25519"
	"database/sql"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"

	"github.com/keyward/keyward/audit"
	"github.com/keyward/keyward/cli"
	"github.com/keyward/keyward/keys"
)

// startAudit starts a dev server in dir whose background signer stays
// quiet (it signs once at start), so tests decide when to sign.
func startAudit(t *testing.T, dir string) *harness {
	t.Helper()
	logs := &lockedBuffer{}
	rs, err := cli.StartServer(context.Background(), cli.ServerConfig{
		Dev: true, DataDir: dir, Listen: "127.0.0.1:0", CheckpointInterval: time.Hour,
		Logger: slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
	})
	if err != nil {
		t.Fatalf("StartServer: %v", err)
	}
	tok, err := os.ReadFile(filepath.Join(dir, "admin.token"))
	if err != nil {
		t.Fatal(err)
	}
	h := &harness{t: t, dir: dir, url: "http://" + rs.Addr, token: strings.TrimSpace(string(tok)), server: rs, logs: logs}
	t.Cleanup(func() {
		if h.server != nil {
			h.stop()
		}
	})
	return h
}

// sign has the server sign a checkpoint now and returns its size.
func (h *harness) sign() int64 {
	h.t.Helper()
	c, _, err := h.server.Checkpoints.Sign(context.Background())
	if err != nil {
		h.t.Fatalf("Checkpoints.Sign: %v", err)
	}
	return c.Size
}

// activity makes a few audited changes.
func (h *harness) activity(n int) {
	h.t.Helper()
	for i := range n {
		var l struct{ ID string }
		h.ok(&l, "license", "issue", "--product", "demo", "--holder", fmt.Sprintf("cust-%d", i))
		h.ok(nil, "license", "suspend", l.ID, "--reason", "check")
	}
}

func (h *harness) get(path, token string) (int, http.Header, []byte) {
	h.t.Helper()
	req, _ := http.NewRequest("GET", h.url+path, nil)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		h.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, b
}

type verifyOut struct {
	Verified       bool   `json:"verified"`
	Origin         string `json:"origin"`
	Size           int64  `json:"size"`
	KID            string `json:"kid"`
	ConsistentWith int64  `json:"consistent_with"`
	Pending        int64  `json:"pending"`
	FirstBadSeq    int64  `json:"first_bad_seq"`
	Error          string `json:"error"`
}

func TestAuditCLI(t *testing.T) {
	h := startAudit(t, t.TempDir())
	h.activity(2)

	// List with filters.
	var page struct {
		Entries []struct {
			Seq      int64    `json:"seq"`
			Action   string   `json:"action"`
			TargetID string   `json:"target_id"`
			Roles    []string `json:"roles"`
		} `json:"entries"`
	}
	h.ok(&page, "audit", "list", "--action", "license.suspend")
	if len(page.Entries) != 2 || page.Entries[0].Action != "license.suspend" || len(page.Entries[0].Roles) != 1 || page.Entries[0].Roles[0] != "admin" {
		t.Fatalf("audit list --action license.suspend = %+v", page.Entries)
	}
	target := page.Entries[1].TargetID
	h.ok(&page, "audit", "list", "--target", target)
	if len(page.Entries) != 2 { // issue and suspend
		t.Fatalf("audit list --target %s = %+v, want 2 entries", target, page.Entries)
	}
	h.ok(&page, "audit", "list", "--since", "2999-01-01")
	if len(page.Entries) != 0 {
		t.Fatalf("audit list --since 2999-01-01 = %+v, want none", page.Entries)
	}
	if out, _, code := h.run("-o", "table", "audit", "list", "--limit", "3"); code != 0 || !strings.Contains(out, "SEQ") || !strings.Contains(out, "more: --after 3") {
		t.Fatalf("audit list -o table: exit %d\n%s", code, out)
	}
	h.fails("", "audit", "list", "--since", "yesterday")

	// Verify and save; more activity; verify against the saved checkpoint.
	n1 := h.sign()
	saved := filepath.Join(h.dir, "checkpoint.txt")
	var v verifyOut
	h.ok(&v, "audit", "verify", "--save", saved)
	if !v.Verified || v.Size != n1 || v.Origin != "keyward" || v.KID == "" {
		t.Fatalf("audit verify = %+v, want verified %d entries", v, n1)
	}
	h.activity(1)
	var pending verifyOut
	h.ok(&pending, "audit", "verify")
	if pending.Pending != 2 {
		t.Fatalf("audit verify before signing = %+v, want 2 pending entries", pending)
	}
	n2 := h.sign()
	h.ok(&v, "audit", "verify", "--checkpoint", saved, "--save", saved)
	if !v.Verified || v.Size != n2 || v.ConsistentWith != n1 {
		t.Fatalf("audit verify --checkpoint = %+v, want %d consistent with %d", v, n2, n1)
	}
	if out, _, code := h.run("-o", "table", "audit", "verify"); code != 0 || !strings.Contains(out, fmt.Sprintf("%d entries match", n2)) {
		t.Fatalf("audit verify -o table: exit %d\n%s", code, out)
	}

	// The checkpoint is a C2SP signed note that note.Open verifies with a
	// verifier made from the JWKS registry key.
	status, hdr, cp := h.get("/v1/audit/checkpoint", h.token)
	if status != 200 || !strings.HasPrefix(hdr.Get("Content-Type"), "text/plain") {
		t.Fatalf("GET /v1/audit/checkpoint = %d %s", status, hdr.Get("Content-Type"))
	}
	registry := registryKey(t, h, hdr.Get("Keyward-Checkpoint-Kid"))
	vkey, err := note.NewEd25519VerifierKey("keyward", registry)
	if err != nil {
		t.Fatal(err)
	}
	nv, err := note.NewVerifier(vkey)
	if err != nil {
		t.Fatal(err)
	}
	n, err := note.Open(cp, note.VerifierList(nv))
	if err != nil {
		t.Fatalf("note.Open(checkpoint) = %v", err)
	}
	if lines := strings.Split(n.Text, "\n"); len(lines) != 5 || lines[0] != "keyward" || lines[1] != fmt.Sprint(n2) || lines[3] != "kid "+hdr.Get("Keyward-Checkpoint-Kid") {
		t.Fatalf("checkpoint text = %q", n.Text)
	}

	// Export, then verify the file with nothing but the checkpoint and the
	// public key, as docs/audit.md tells an auditor to.
	exported := filepath.Join(h.dir, "audit.jsonl")
	exportCP := filepath.Join(h.dir, "export-checkpoint.txt")
	var ex struct{ Entries int64 }
	h.ok(&ex, "audit", "export", "--format", "jsonl", "--out", exported, "--checkpoint", exportCP)
	if ex.Entries < n2 {
		t.Fatalf("export wrote %d entries, want at least %d", ex.Entries, n2)
	}
	verifyExport(t, exported, exportCP, registry)
	var stdout bytes.Buffer
	var stderr bytes.Buffer
	if code := cli.Run(context.Background(), []string{"keyward", "--server", h.url, "--token", h.token, "audit", "export"}, &stdout, &stderr); code != 0 {
		t.Fatalf("audit export to stdout: exit %d: %s", code, stderr.String())
	}
	if lines := bytes.Count(stdout.Bytes(), []byte("\n")); int64(lines) != ex.Entries {
		t.Fatalf("audit export to stdout: %d lines, want %d", lines, ex.Entries)
	}
	h.fails("", "audit", "export", "--format", "csv")

	// Registry-key rotation: new checkpoints name the new kid; the saved
	// one still verifies against the retired key, which stays published.
	h.fails("INVALID_ARGUMENT", "key", "rotate", "--registry", "--algorithm", "ES256")
	var rotated struct{ KID string }
	h.ok(&rotated, "key", "rotate", "--registry")
	n3 := h.sign()
	h.ok(&v, "audit", "verify", "--checkpoint", saved)
	if !v.Verified || v.KID != rotated.KID || v.Size != n3 || v.ConsistentWith != n2 {
		t.Fatalf("audit verify after registry rotation = %+v, want size %d by %s consistent with %d", v, n3, rotated.KID, n2)
	}

	// Who may read it.
	var auditor, issuer, scoped struct{ Token string }
	h.ok(&auditor, "token", "create", "--name", "aud", "--role", "auditor")
	h.ok(&issuer, "token", "create", "--name", "iss", "--role", "issuer")
	h.ok(&scoped, "token", "create", "--name", "scoped", "--role", "auditor", "--product", "demo")
	if status, _, body := h.get("/v1/audit/checkpoint", auditor.Token); status != 200 {
		t.Fatalf("auditor: GET /v1/audit/checkpoint = %d %s", status, body)
	}
	for _, tok := range []string{issuer.Token, scoped.Token} {
		if status, _, _ := h.get("/v1/audit?limit=1", tok); status != 403 {
			t.Fatalf("GET /v1/audit as issuer or product-scoped auditor = %d, want 403", status)
		}
	}
	if status, _, _ := h.get("/v1/audit", ""); status != 401 {
		t.Fatalf("GET /v1/audit without a token = %d, want 401", status)
	}
}

func TestAuditAPIBadParams(t *testing.T) {
	h := startAudit(t, t.TempDir())
	h.activity(1)
	size := h.sign()
	for _, path := range []string{
		"/v1/audit?limit=0", "/v1/audit?limit=1001", "/v1/audit?since=today", "/v1/audit?after=-1",
		"/v1/audit/entries?from=0", "/v1/audit/entries?from=x", "/v1/audit/entries?from=5&to=4",
		"/v1/audit/checkpoint?size=-3",
		"/v1/audit/proof/inclusion", "/v1/audit/proof/inclusion?seq=0", "/v1/audit/proof/inclusion?seq=1&size=x",
		fmt.Sprintf("/v1/audit/proof/inclusion?seq=%d&size=%d", size+1, size),
		fmt.Sprintf("/v1/audit/proof/inclusion?seq=1&size=%d", size+100),
		"/v1/audit/proof/consistency", "/v1/audit/proof/consistency?old=3&new=2",
		fmt.Sprintf("/v1/audit/proof/consistency?old=1&new=%d", size+100),
	} {
		status, hdr, body := h.get(path, h.token)
		var p struct{ Code string }
		if status != 400 || hdr.Get("Content-Type") != "application/problem+json" || json.Unmarshal(body, &p) != nil || p.Code != "INVALID_ARGUMENT" {
			t.Errorf("GET %s = %d %s, want a 400 INVALID_ARGUMENT problem", path, status, body)
		}
	}
	if status, _, _ := h.get("/v1/audit/checkpoint?size=999999", h.token); status != 404 {
		t.Errorf("GET checkpoint of an unsigned size = %d, want 404", status)
	}

	// Proofs check out against the checkpoint.
	_, _, cp := h.get("/v1/audit/checkpoint", h.token)
	text, _, _ := strings.Cut(string(cp), "\n\n")
	c, err := audit.ParseCheckpoint(text + "\n")
	if err != nil {
		t.Fatal(err)
	}
	var inc struct {
		Seq, Size int64
		LeafHash  tlog.Hash   `json:"leaf_hash"`
		Proof     []tlog.Hash `json:"proof"`
	}
	_, _, body := h.get("/v1/audit/proof/inclusion?seq=2", h.token)
	if err := json.Unmarshal(body, &inc); err != nil || inc.Size != c.Size {
		t.Fatalf("inclusion proof = %s, %v", body, err)
	}
	var page struct{ Entries []json.RawMessage }
	_, _, body = h.get("/v1/audit/entries?from=2&to=2", h.token)
	if err := json.Unmarshal(body, &page); err != nil || len(page.Entries) != 1 {
		t.Fatalf("entries 2..2 = %s, %v", body, err)
	}
	if tlog.RecordHash(page.Entries[0]) != inc.LeafHash {
		t.Fatalf("leaf hash of entry 2 as served differs from the proof's")
	}
	if err := tlog.CheckRecord(inc.Proof, c.Size, c.Root, 1, inc.LeafHash); err != nil {
		t.Fatalf("CheckRecord = %v", err)
	}
}

// registryKey returns the Ed25519 public key of kid from the server's JWKS.
func registryKey(t *testing.T, h *harness, kid string) ed25519.PublicKey {
	t.Helper()
	_, _, body := h.get("/.well-known/jwks.json", "")
	var set keys.JWKS
	if err := json.Unmarshal(body, &set); err != nil {
		t.Fatal(err)
	}
	j, ok := set.Find(kid)
	if !ok || j.Purpose != "registry" {
		t.Fatalf("JWKS has no registry key %s", kid)
	}
	raw, err := base64.RawURLEncoding.DecodeString(j.X)
	if err != nil {
		t.Fatal(err)
	}
	return ed25519.PublicKey(raw)
}

// verifyExport checks an exported JSON-lines file against a checkpoint
// with only tlog and note: leaf i is line i, byte for byte.
func verifyExport(t *testing.T, file, checkpointFile string, pub ed25519.PublicKey) {
	t.Helper()
	msg, err := os.ReadFile(checkpointFile)
	if err != nil {
		t.Fatal(err)
	}
	vkey, _ := note.NewEd25519VerifierKey("keyward", pub)
	v, _ := note.NewVerifier(vkey)
	n, err := note.Open(msg, note.VerifierList(v))
	if err != nil {
		t.Fatalf("exported checkpoint: %v", err)
	}
	lines := strings.Split(n.Text, "\n")
	var size int64
	fmt.Sscan(lines[1], &size)
	root, err := tlog.ParseHash(lines[2])
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var hashes []tlog.Hash
	hr := tlog.HashReaderFunc(func(idx []int64) ([]tlog.Hash, error) {
		out := make([]tlog.Hash, len(idx))
		for i, x := range idx {
			out[i] = hashes[x]
		}
		return out, nil
	})
	sc := bufio.NewScanner(f)
	var i int64
	for sc.Scan() && i < size {
		hs, err := tlog.StoredHashes(i, sc.Bytes(), hr)
		if err != nil {
			t.Fatal(err)
		}
		hashes = append(hashes, hs...)
		i++
	}
	if i != size {
		t.Fatalf("export has %d lines, the checkpoint covers %d", i, size)
	}
	got, err := tlog.TreeHash(size, hr)
	if err != nil || got != root {
		t.Fatalf("root of the export = %v, %v; checkpoint says %v", got, err, root)
	}
}

// TestAuditVerifyDetectsTampering edits, deletes, reorders and truncates
// audit rows directly in the SQLite file of a running server and shows
// `keyward audit verify` fails each time, naming the first bad entry.
func TestAuditVerifyDetectsTampering(t *testing.T) {
	for _, tc := range []struct {
		name    string
		sql     []string
		wantSeq int64
	}{
		{"Untouched", nil, 0},
		{"Edit", []string{`UPDATE audit SET reason = 'nothing happened' WHERE seq = 5`}, 5},
		{"Delete", []string{`DELETE FROM audit WHERE seq = 6`}, 6},
		{"Reorder", []string{
			`UPDATE audit SET seq = -1 WHERE seq = 7`,
			`UPDATE audit SET seq = 7 WHERE seq = 8`,
			`UPDATE audit SET seq = 8 WHERE seq = -1`,
		}, 7},
		{"Truncate", []string{`DELETE FROM audit WHERE seq > 9`}, 10},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := startAudit(t, t.TempDir())
			h.activity(3)
			size := h.sign()
			if size < 11 {
				t.Fatalf("only %d entries; the cases need 11", size)
			}
			db, err := sql.Open("sqlite", "file:"+filepath.Join(h.dir, "keyward.db")+"?_pragma=busy_timeout(10000)")
			if err != nil {
				t.Fatal(err)
			}
			defer db.Close()
			for _, q := range tc.sql {
				if _, err := db.Exec(q); err != nil {
					t.Fatalf("%s: %v", q, err)
				}
			}
			out, errs, code := h.run("audit", "verify")
			var v verifyOut
			if err := json.Unmarshal([]byte(out), &v); err != nil {
				t.Fatalf("audit verify -o json: %q: %v (stderr %s)", out, err, errs)
			}
			if tc.wantSeq == 0 {
				if code != 0 || !v.Verified {
					t.Fatalf("audit verify of an untouched log: exit %d, %+v, %s", code, v, errs)
				}
				return
			}
			if code != 1 || v.Verified || v.FirstBadSeq != tc.wantSeq {
				t.Fatalf("audit verify: exit %d, %+v; want exit 1 naming entry %d", code, v, tc.wantSeq)
			}
			if want := fmt.Sprintf("first bad entry is entry %d", tc.wantSeq); !strings.Contains(errs, want) {
				t.Fatalf("audit verify stderr %q does not say %q", errs, want)
			}
			// The table form says it too.
			if _, errs, code := h.run("-o", "table", "audit", "verify"); code != 1 || !strings.Contains(errs, fmt.Sprintf("entry %d", tc.wantSeq)) {
				t.Fatalf("audit verify -o table: exit %d, stderr %q", code, errs)
			}
		})
	}
}

// TestAuditVerifyCatchesRewriteSinceSave rewrites history completely
// (entries, tree and checkpoints) and restarts the server, which then signs
// the rewritten log: the log verifies against its own new checkpoint, but
// not against a checkpoint saved before the rewrite.
func TestAuditVerifyCatchesRewriteSinceSave(t *testing.T) {
	dir := t.TempDir()
	h := startAudit(t, dir)
	h.activity(2)
	h.sign()
	saved := filepath.Join(dir, "saved.txt")
	h.ok(nil, "audit", "verify", "--save", saved)
	h.stop()
	h.server = nil

	db, err := sql.Open("sqlite", "file:"+filepath.Join(dir, "keyward.db"))
	if err != nil {
		t.Fatal(err)
	}
	for _, q := range []string{
		`UPDATE audit SET reason = 'rewritten' WHERE seq = 3`,
		`DELETE FROM audit_hashes`, `DELETE FROM audit_checkpoints`,
	} {
		if _, err := db.Exec(q); err != nil {
			t.Fatal(err)
		}
	}
	db.Close()

	h = startAudit(t, dir) // signs the rewritten log at start
	h.sign()
	h.ok(nil, "audit", "verify")
	out, errs, code := h.run("audit", "verify", "--checkpoint", saved)
	var v verifyOut
	_ = json.Unmarshal([]byte(out), &v)
	if code != 1 || v.Verified || v.FirstBadSeq < 1 || v.FirstBadSeq > 3 {
		t.Fatalf("audit verify --checkpoint (saved before the rewrite): exit %d, %+v, %s; want a failure at or before entry 3", code, v, errs)
	}
}
