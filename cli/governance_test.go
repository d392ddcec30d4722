package cli_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/keyward/keyward/authority"
)

// as returns a harness that runs the CLI with another token.
func (h *harness) as(token string) *harness {
	h2 := *h
	h2.token = token
	return &h2
}

// TestGovernanceThroughCLI walks the four-eyes flow of docs/governance.md on
// a dev server through the CLI: a policy asking for approvals, duties and a
// second factor; a revoker with TOTP; the dev approver granting.
func TestGovernanceThroughCLI(t *testing.T) {
	dir := t.TempDir()
	h := start(t, dir, &lockedBuffer{})
	defer h.stop()

	approverTok, err := os.ReadFile(filepath.Join(dir, "approver.token"))
	if err != nil {
		t.Fatalf("dev mode wrote no approver token: %v", err)
	}
	if fi, _ := os.Stat(filepath.Join(dir, "approver.token")); fi.Mode().Perm() != 0o600 {
		t.Errorf("approver.token mode %v, want 0600", fi.Mode().Perm())
	}
	approver := h.as(strings.TrimSpace(string(approverTok)))

	h.ok(nil, "product", "create", "acme-pro")
	h.ok(nil, "policy", "apply", "-f", examplePolicy, "--justification", "governance on")

	var rita struct {
		ID, Token string
		ExpiresAt time.Time `json:"expires_at"`
	}
	h.ok(&rita, "token", "create", "--name", "rita", "--role", "revoker", "--ttl", "1h")
	if !strings.HasPrefix(rita.Token, authority.TokenPrefix) || rita.ExpiresAt.IsZero() {
		t.Fatalf("token create -o json = %+v", rita)
	}
	h.fails("", "token", "create", "--name", "x") // a role is required
	revoker := h.as(rita.Token)

	var lic struct{ ID string }
	h.ok(&lic, "license", "issue", "--product", "acme-pro", "--holder", "cust-1")
	// The issuer may not revoke what it issued (default duties), second
	// factor or not.
	h.fails("MFA_REQUIRED", "license", "revoke", lic.ID, "--reason", "abuse")
	var am struct{ Secret string }
	h.ok(&am, "mfa", "enroll")
	adminSecret, err := authority.DecodeTOTPSecret(am.Secret)
	if err != nil {
		t.Fatal(err)
	}
	h.fails("DUTY_CONFLICT", "license", "revoke", lic.ID, "--reason", "abuse", "--otp", authority.TOTP(adminSecret, time.Now(), 6))
	// license.revoke is under mfa.
	revoker.fails("MFA_REQUIRED", "license", "revoke", lic.ID, "--reason", "abuse")
	var m struct{ Secret, URI string }
	revoker.ok(&m, "mfa", "enroll")
	if !strings.HasPrefix(m.URI, "otpauth://totp/") {
		t.Fatalf("mfa enroll -o json = %+v", m)
	}
	secret, err := authority.DecodeTOTPSecret(m.Secret)
	if err != nil {
		t.Fatal(err)
	}
	revoker.fails("MFA_INVALID", "license", "revoke", lic.ID, "--reason", "abuse", "--otp", "12345")
	var pending struct {
		State    string
		Approval struct{ ID, State string }
	}
	revoker.ok(&pending, "license", "revoke", lic.ID, "--reason", "abuse", "--otp", authority.TOTP(secret, time.Now(), 6))
	if pending.State != "suspended" || pending.Approval.ID == "" || pending.Approval.State != "pending" {
		t.Fatalf("revoke with approvals = %+v", pending)
	}

	var list []map[string]any
	approver.ok(&list, "approval", "list")
	if len(list) != 1 || list[0]["id"] != pending.Approval.ID || list[0]["action"] != "license.revoke" ||
		list[0]["target"] != lic.ID || list[0]["requested_by"] != "rita" || list[0]["state"] != "pending" {
		t.Fatalf("approval list -o json = %v", list)
	}
	revoker.fails("FORBIDDEN", "approval", "grant", pending.Approval.ID) // a revoker holds no approval.grant
	h.fails("DUTY_CONFLICT", "approval", "grant", pending.Approval.ID)   // the admin issued the license
	approver.fails("", "approval", "deny", pending.Approval.ID)          // --reason is required
	var granted struct{ State string }
	approver.ok(&granted, "approval", "grant", pending.Approval.ID, "--comment", "checked")
	if granted.State != "granted" {
		t.Fatalf("grant = %+v", granted)
	}
	var shown struct{ State string }
	h.ok(&shown, "license", "show", lic.ID)
	if shown.State != "revoked" {
		t.Errorf("after the grant the license is %s", shown.State)
	}
	approver.fails("ILLEGAL_TRANSITION", "approval", "grant", pending.Approval.ID)

	// Tokens: listed without secrets; revoked at once.
	var toks []struct{ ID, Name, State, Token string }
	h.ok(&toks, "token", "list")
	if len(toks) != 3 {
		t.Fatalf("token list = %+v", toks)
	}
	for _, tk := range toks {
		if tk.Token != "" {
			t.Errorf("token list shows a secret")
		}
	}
	h.ok(nil, "token", "revoke", rita.ID)
	revoker.fails("UNAUTHENTICATED", "license", "show", lic.ID)
	h.ok(nil, "mfa", "reset", "rita")
	h.fails("NOT_FOUND", "mfa", "reset", "rita")
}
