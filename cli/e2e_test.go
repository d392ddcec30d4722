package cli_test

import (
	"bytes"
	"context"
	"crypto"
	"encoding/json"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/keyward/keyward/cli"
	"github.com/keyward/keyward/keys"
	"github.com/keyward/keyward/sdk"
)

// lockedBuffer is a goroutine-safe log sink.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}
func (l *lockedBuffer) String() string { l.mu.Lock(); defer l.mu.Unlock(); return l.b.String() }

type harness struct {
	t      *testing.T
	dir    string
	url    string
	token  string
	server *cli.RunningServer
	logs   *lockedBuffer
}

func start(t *testing.T, dir string, logs *lockedBuffer) *harness {
	t.Helper()
	rs, err := cli.StartServer(context.Background(), cli.ServerConfig{
		Dev: true, DataDir: dir, Listen: "127.0.0.1:0",
		Logger: slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
	})
	if err != nil {
		t.Fatalf("StartServer: %v", err)
	}
	tok, err := os.ReadFile(filepath.Join(dir, "admin.token"))
	if err != nil {
		t.Fatal(err)
	}
	return &harness{t: t, dir: dir, url: "http://" + rs.Addr, token: strings.TrimSpace(string(tok)), server: rs, logs: logs}
}

func (h *harness) stop() {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second) // generous: CI machines are loaded
	defer cancel()
	if err := h.server.Shutdown(ctx); err != nil {
		h.t.Errorf("Shutdown: %v", err)
	}
}

// run runs the CLI with -o json and returns stdout, stderr and the status.
func (h *harness) run(args ...string) (string, string, int) {
	h.t.Helper()
	var out, errb bytes.Buffer
	all := append([]string{"keyward", "--server", h.url, "--token", h.token, "-o", "json"}, args...)
	code := cli.Run(context.Background(), all, &out, &errb)
	return out.String(), errb.String(), code
}

// ok runs the CLI, requires status 0 and decodes stdout into v.
func (h *harness) ok(v any, args ...string) {
	h.t.Helper()
	out, errs, code := h.run(args...)
	if code != 0 {
		h.t.Fatalf("keyward %s: exit %d: %s", strings.Join(args, " "), code, errs)
	}
	if v != nil {
		if err := json.Unmarshal([]byte(out), v); err != nil {
			h.t.Fatalf("keyward %s: output %q: %v", strings.Join(args, " "), out, err)
		}
	}
}

// fails runs the CLI and requires a non-zero status and, if code is not
// empty, that stderr names it.
func (h *harness) fails(code string, args ...string) string {
	h.t.Helper()
	out, errs, status := h.run(args...)
	if status == 0 {
		h.t.Fatalf("keyward %s succeeded: %s", strings.Join(args, " "), out)
	}
	if code != "" && !strings.Contains(errs, code) {
		h.t.Fatalf("keyward %s: stderr %q does not name %s", strings.Join(args, " "), errs, code)
	}
	return out
}

type validation struct {
	Valid bool   `json:"valid"`
	Code  string `json:"code"`
	Lease *struct {
		Token string `json:"token"`
	} `json:"lease"`
}

func (h *harness) validate(key, fp string) validation {
	h.t.Helper()
	out, errs, code := h.run("license", "validate", key, "--fingerprint", fp)
	var v validation
	if err := json.Unmarshal([]byte(out), &v); err != nil {
		h.t.Fatalf("validate: %q %q: %v", out, errs, err)
	}
	if (code == 0) != v.Valid {
		h.t.Fatalf("validate exit %d with valid=%v", code, v.Valid)
	}
	return v
}

func (h *harness) jwksFile(name string) string {
	h.t.Helper()
	set, err := sdk.NewClient(h.url).JWKS(context.Background())
	if err != nil {
		h.t.Fatal(err)
	}
	b, _ := json.Marshal(set)
	p := filepath.Join(h.dir, name)
	if err := os.WriteFile(p, b, 0o644); err != nil {
		h.t.Fatal(err)
	}
	return p
}

// TestEndToEnd drives the real server on loopback through the CLI and the
// SDK: issue → validate → lease → checkout → offline verify → suspend →
// reinstate → revoke, with a key rotation and a compromise on the way, and
// a restart that must keep everything.
func TestEndToEnd(t *testing.T) {
	dir := t.TempDir()
	logs := &lockedBuffer{}
	h := start(t, dir, logs)

	h.ok(nil, "product", "create", "acme")
	h.fails("CONFLICT", "product", "create", "acme")
	var issued struct {
		ID, Key, State string
		Entitlements   []string
	}
	h.ok(&issued, "license", "issue", "--product", "acme", "--holder", "cust-1", "--expires", "2099-01-01", "--entitlement", "feature-x", "--max-machines", "2")
	if issued.ID == "" || !strings.HasPrefix(issued.Key, "KW1-") || issued.State != "active" {
		t.Fatalf("issue -o json = %+v", issued)
	}

	// Validate: fingerprint required, machines up to the limit, a lease.
	if v := h.validate(issued.Key, ""); v.Code != "FINGERPRINT_REQUIRED" {
		t.Errorf("no fingerprint: %s", v.Code)
	}
	v := h.validate(strings.ToLower(strings.ReplaceAll(issued.Key, "-", "")), "machine-1")
	if !v.Valid || v.Lease == nil {
		t.Fatalf("validate: %+v", v)
	}
	h.validate(issued.Key, "machine-2")
	if v := h.validate(issued.Key, "machine-3"); v.Code != "TOO_MANY_MACHINES" {
		t.Errorf("third machine: %s", v.Code)
	}

	// The lease verifies offline with the SDK and with a standard JWT library.
	jwksPath := h.jwksFile("jwks.json")
	data, _ := os.ReadFile(jwksPath)
	set, err := sdk.ParseJWKS(data)
	if err != nil {
		t.Fatal(err)
	}
	verifier, err := sdk.NewVerifier(set, sdk.Options{Issuer: "keyward", Audience: "acme"})
	if err != nil {
		t.Fatal(err)
	}
	lease, err := verifier.VerifyLease(v.Lease.Token)
	if err != nil || lease.Subject != issued.ID || lease.Fingerprint != "machine-1" {
		t.Fatalf("VerifyLease = %+v, %v", lease, err)
	}
	verifyWithJWT(t, set, v.Lease.Token, "lease+jwt")

	// Check out a certificate and verify it offline with `keyward verify`.
	certPath := filepath.Join(dir, "cert.jwt")
	var cert struct{ KID string }
	h.ok(&cert, "license", "checkout", issued.ID, "--out", certPath)
	var verified struct {
		Valid  bool
		Claims struct {
			Sub string
			Lic struct{ Entitlements []string }
		}
	}
	h.ok(&verified, "verify", "--cert", certPath, "--jwks", jwksPath)
	if !verified.Valid || verified.Claims.Sub != issued.ID || len(verified.Claims.Lic.Entitlements) != 1 {
		t.Fatalf("verify = %+v", verified)
	}
	certTok, _ := os.ReadFile(certPath)
	verifyWithJWT(t, set, strings.TrimSpace(string(certTok)), "license+jwt")
	h.fails("", "verify", "--lease", certPath, "--jwks", jwksPath) // a certificate is not a lease

	// Suspend → SUSPENDED, no lease; reinstate → VALID again.
	h.ok(nil, "license", "suspend", issued.ID, "--reason", "abuse suspected")
	if v := h.validate(issued.Key, "machine-1"); v.Code != "SUSPENDED" || v.Lease != nil {
		t.Errorf("suspended: %+v", v)
	}
	h.fails("LICENSE_INACTIVE", "license", "checkout", issued.ID)
	h.ok(nil, "license", "reinstate", issued.ID)
	if v := h.validate(issued.Key, "machine-1"); v.Code != "VALID" {
		t.Errorf("reinstated: %s", v.Code)
	}

	// Rotate: new certificates come from the new key; the old certificate
	// still verifies while the retired key is published.
	var rotated struct{ KID, State string }
	h.ok(&rotated, "key", "rotate", "--product", "acme")
	if rotated.State != "active" || rotated.KID == cert.KID {
		t.Fatalf("rotate: %+v", rotated)
	}
	var cert2 struct{ KID string }
	h.ok(&cert2, "license", "checkout", issued.ID, "--out", filepath.Join(dir, "cert2.jwt"))
	if cert2.KID != rotated.KID {
		t.Errorf("checkout after rotation signed by %s, want %s", cert2.KID, rotated.KID)
	}
	jwks2 := h.jwksFile("jwks2.json")
	h.ok(nil, "verify", "--cert", certPath, "--jwks", jwks2)

	// Compromise the new key: its certificates stop verifying.
	h.ok(nil, "key", "revoke", "--reason", "key_compromise", "--", rotated.KID) // "--": a key id may begin with "-"
	jwks3 := h.jwksFile("jwks3.json")
	h.fails("unknown_key", "verify", "--cert", filepath.Join(dir, "cert2.jwt"), "--jwks", jwks3)
	if _, errs, _ := h.run("verify", "--cert", filepath.Join(dir, "cert2.jwt"), "--jwks", jwks3); strings.Count(errs, "keyward:") != 1 {
		t.Errorf("verify error %q: want one \"keyward:\" prefix", errs)
	}
	// The compromise re-signed it (same claims, the replacement key):
	// fetched from the license's current certificate, it verifies again.
	var cert3 struct{ KID string }
	h.ok(&cert3, "license", "certificate", issued.ID, "--out", filepath.Join(dir, "cert3.jwt"))
	if cert3.KID == rotated.KID || cert3.KID == "" {
		t.Errorf("current certificate after the compromise signed by %q, want the replacement key", cert3.KID)
	}
	h.ok(nil, "verify", "--cert", filepath.Join(dir, "cert3.jwt"), "--jwks", jwks3)
	h.fails("NOT_FOUND", "license", "certificate", "lic_missing")
	// A license never checked out has no certificate; a file that cannot
	// be written is an error (exit 1), and the certificate can be fetched
	// again.
	var fresh struct{ ID string }
	h.ok(&fresh, "license", "issue", "--product", "acme", "--holder", "cust-2", "--max-machines", "0")
	if _, errs, code := h.run("license", "certificate", fresh.ID); code != 1 || !strings.Contains(errs, "NOT_FOUND") || !strings.Contains(errs, "has no certificate") {
		t.Errorf("license certificate of a license never checked out: exit %d, %q", code, errs)
	}
	if _, errs, code := h.run("license", "certificate", issued.ID, "--out", filepath.Join(dir, "no-such-dir", "c.jwt")); code != 1 || !strings.Contains(errs, "no-such-dir") {
		t.Errorf("license certificate --out into a missing directory: exit %d, %q", code, errs)
	}
	h.fails("ILLEGAL_TRANSITION", "key", "activate", "--", rotated.KID)

	// Reissue, then revoke: permanent.
	var re struct{ Key string }
	h.ok(&re, "license", "reissue", issued.ID, "--grace", "0s")
	if v := h.validate(issued.Key, "machine-1"); v.Code != "SUPERSEDED" {
		t.Errorf("old key after reissue with no grace: %s", v.Code)
	}
	h.fails("", "license", "revoke", issued.ID) // --reason is required
	h.fails("INVALID_ARGUMENT", "license", "revoke", issued.ID, "--reason", "because")
	h.ok(nil, "license", "revoke", issued.ID, "--reason", "abuse")
	if v := h.validate(re.Key, "machine-1"); v.Code != "REVOKED" {
		t.Errorf("revoked: %s", v.Code)
	}
	h.fails("ILLEGAL_TRANSITION", "license", "reinstate", issued.ID)
	h.fails("INVALID_LICENSE_KEY", "license", "validate", "KW1-NOT-A-KEY")
	h.fails("UNAUTHENTICATED", "--token", "kwt_wrong", "product", "list")

	// Machines can be listed and deactivated.
	var machines []struct{ ID string }
	h.ok(&machines, "license", "machines", issued.ID)
	if len(machines) != 2 {
		t.Fatalf("machines = %d, want 2", len(machines))
	}
	h.ok(nil, "license", "deactivate", issued.ID, machines[0].ID)
	h.fails("NOT_FOUND", "license", "deactivate", issued.ID, machines[0].ID)

	// Batch issuance prints a JSON array of licenses with their keys.
	var batch []struct{ ID, Key string }
	h.ok(&batch, "license", "issue", "--product", "acme", "--holder", "seat-pack", "--count", "25", "--max-machines", "0")
	if len(batch) != 25 || batch[0].Key == batch[1].Key || !strings.HasPrefix(batch[24].Key, "KW1-") {
		t.Fatalf("batch issue: %d licenses", len(batch))
	}
	if v := h.validate(batch[24].Key, ""); !v.Valid {
		t.Errorf("batch license: %s", v.Code)
	}
	h.fails("INVALID_ARGUMENT", "license", "issue", "--product", "acme", "--holder", "x", "--count", "0")

	// Restart from the same directory: nothing regenerated, nothing lost.
	kek1, _ := os.ReadFile(filepath.Join(dir, "kek"))
	h.stop()
	h = start(t, dir, logs)
	defer h.stop()
	kek2, _ := os.ReadFile(filepath.Join(dir, "kek"))
	if !bytes.Equal(kek1, kek2) {
		t.Errorf("restart changed the KEK file")
	}
	var shown struct{ State string }
	h.ok(&shown, "license", "show", issued.ID)
	if shown.State != "revoked" {
		t.Errorf("after restart, license is %q", shown.State)
	}
	var products []struct{ Name string }
	h.ok(&products, "product", "list")
	if len(products) != 2 {
		t.Errorf("after restart, %d products (want demo and acme)", len(products))
	}

	// The logs never carry a license key or a token.
	for _, secret := range []string{issued.Key, re.Key, h.token} {
		if strings.Contains(logs.String(), secret) {
			t.Errorf("server logs contain a secret (%s…)", secret[:6])
		}
	}
}

// verifyWithJWT checks a token with github.com/golang-jwt/jwt/v5, an
// independent JWT implementation, against the JWKS.
func verifyWithJWT(t *testing.T, set keys.JWKS, token, typ string) {
	t.Helper()
	parsed, err := jwt.Parse(token, func(tok *jwt.Token) (any, error) {
		kid, _ := tok.Header["kid"].(string)
		j, ok := set.Find(kid)
		if !ok {
			return nil, os.ErrNotExist
		}
		pub, err := keys.PublicKeyFromJWK(j)
		if err != nil {
			return nil, err
		}
		return crypto.PublicKey(pub.CryptoPublicKey()), nil
	}, jwt.WithValidMethods([]string{"EdDSA", "ES256"}), jwt.WithIssuer("keyward"), jwt.WithAudience("acme"), jwt.WithExpirationRequired())
	if err != nil || !parsed.Valid {
		t.Fatalf("golang-jwt rejects our %s: %v", typ, err)
	}
	if parsed.Header["typ"] != typ {
		t.Errorf("typ = %v, want %s", parsed.Header["typ"], typ)
	}
}

func TestCLIUsageErrors(t *testing.T) {
	var out, errb bytes.Buffer
	for _, args := range [][]string{
		{"keyward", "nope"},
		{"keyward", "license", "issue"},
		{"keyward", "key", "rotate"},
		{"keyward", "-o", "yaml", "verify", "--cert", "x", "--jwks", "y"},
	} {
		out.Reset()
		errb.Reset()
		if code := cli.Run(context.Background(), args, &out, &errb); code == 0 || errb.Len() == 0 {
			t.Errorf("%v: exit %d, stderr %q; want a message and non-zero exit", args, code, errb.String())
		}
	}
	// An unreachable server is a clear error, not a hang.
	code := cli.Run(context.Background(), []string{"keyward", "--server", "http://127.0.0.1:1", "product", "list"}, &out, &errb)
	if code != 1 || !strings.Contains(errb.String(), "cannot reach") {
		t.Errorf("unreachable: exit %d, %q", code, errb.String())
	}
}

// TestKEKRotate rotates the KEK of a stopped server with the CLI and shows
// the restarted server still validates keys and signs certificates.
func TestKEKRotate(t *testing.T) {
	dir := t.TempDir()
	h := start(t, dir, &lockedBuffer{})
	var issued struct{ ID, Key string }
	h.ok(&issued, "license", "issue", "--product", "demo", "--holder", "c", "--max-machines", "0")
	h.stop()
	kek1, _ := os.ReadFile(filepath.Join(dir, "kek"))

	var out, errb bytes.Buffer
	if code := cli.Run(context.Background(), []string{"keyward", "-o", "json", "kek", "rotate", "--data-dir", dir}, &out, &errb); code != 0 {
		t.Fatalf("kek rotate: exit %d: %s", code, errb.String())
	}
	var res struct {
		KEKID     string `json:"kek_id"`
		Rewrapped int
	}
	if err := json.Unmarshal(out.Bytes(), &res); err != nil || res.Rewrapped != 3 {
		t.Fatalf("kek rotate output %s: %v; want 3 blobs (registry key, demo key, pepper)", out.String(), err)
	}
	kek2, _ := os.ReadFile(filepath.Join(dir, "kek"))
	if bytes.Equal(kek1, kek2) || bytes.Count(kek2, []byte("\n")) != 2 {
		t.Fatalf("KEK file not replaced by a single new KEK:\n%s", kek2)
	}

	h = start(t, dir, &lockedBuffer{})
	defer h.stop()
	if v := h.validate(issued.Key, "m"); !v.Valid {
		t.Errorf("validate after KEK rotation: %s", v.Code)
	}
	h.ok(nil, "license", "checkout", issued.ID)
}
