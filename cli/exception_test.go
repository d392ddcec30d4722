package cli_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/keyward/keyward/api"
)

// TestExceptionThroughCLI: exception request (pending under a policy that
// needs approvals), the dev approver grants it, list and show -o json, and
// refusals with a non-zero exit.
func TestExceptionThroughCLI(t *testing.T) {
	dir := t.TempDir()
	h := start(t, dir, &lockedBuffer{})
	defer h.stop()
	approverTok, err := os.ReadFile(filepath.Join(dir, "approver.token"))
	if err != nil {
		t.Fatal(err)
	}
	approver := h.as(strings.TrimSpace(string(approverTok)))
	h.ok(nil, "product", "create", "acme-pro")
	h.ok(nil, "policy", "apply", "-f", examplePolicy, "--justification", "governance on")
	var s api.Schedule
	h.ok(&s, "key", "schedule", "--product", "acme-pro")
	kid := s.Rings[0].Active

	until := time.Now().Add(90 * 24 * time.Hour).UTC().Format(time.DateOnly)
	var x api.Exception
	h.ok(&x, "exception", "request", "--target", kid, "--rule", "destroy", "--until", until, "--justification", "legal hold")
	if x.State != "pending" || x.Approval == nil || x.Target != kid || x.Until.Format(time.DateOnly) != until {
		t.Fatalf("exception request -o json = %+v", x)
	}
	h.fails("DUTY_CONFLICT", "approval", "grant", x.ApprovalID)
	approver.ok(nil, "approval", "grant", x.ApprovalID, "--comment", "legal confirmed")
	var got api.Exception
	approver.ok(&got, "exception", "show", x.ID)
	if got.State != "active" || got.ApprovalID != x.ApprovalID {
		t.Fatalf("exception show after the grant = %+v", got)
	}
	var list []api.Exception
	h.ok(&list, "exception", "list", "--state", "active")
	if len(list) != 1 || list[0].ID != x.ID {
		t.Fatalf("exception list = %+v", list)
	}
	h.ok(&list, "exception", "list", "--target", "lic_nope")
	if len(list) != 0 {
		t.Fatalf("exception list --target lic_nope = %+v", list)
	}
	h.fails("INVALID", "exception", "request", "--target", kid, "--rule", "destroy", "--until", "2001-01-01", "--justification", "j")
	h.fails("INVALID", "exception", "request", "--target", kid, "--rule", "expire", "--until", until, "--justification", "j")
	h.fails("NOT_FOUND", "exception", "request", "--target", "nope", "--rule", "destroy", "--until", until, "--justification", "j")
	h.fails("", "exception", "request", "--target", kid, "--rule", "destroy", "--until", until) // --justification is required
	h.fails("NOT_FOUND", "exception", "show", "exc_nope")
}
