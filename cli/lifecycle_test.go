package cli_test

import (
	"strings"
	"testing"

	"github.com/keyward/keyward/api"
)

// TestLifecycleThroughCLI: key schedule, compromise with the re-sign
// followed to its end by the real server's scheduler, key show exposure,
// rollback and its refusals.
func TestLifecycleThroughCLI(t *testing.T) {
	h := start(t, t.TempDir(), &lockedBuffer{})
	defer h.stop()
	var s api.Schedule
	h.ok(&s, "key", "schedule")
	if len(s.Rings) != 2 || s.Rings[1].Product != "demo" || len(s.Rings[1].Steps) == 0 || s.Rings[1].Steps[0].Action != "rotate" {
		t.Fatalf("key schedule = %+v, want the registry ring and demo's, whose next step is a rotation", s)
	}
	h.ok(&s, "key", "schedule", "--product", "demo")
	if len(s.Rings) != 1 {
		t.Fatalf("key schedule --product demo: %d rings", len(s.Rings))
	}
	var batch []api.IssuedLicense
	h.ok(&batch, "license", "issue", "--product", "demo", "--holder", "h1", "--max-machines", "0", "--count", "3")
	for _, l := range batch {
		h.ok(nil, "license", "checkout", l.ID)
	}
	active := s.Rings[0].Active
	var k api.Key
	h.ok(&k, "key", "show", "--", active) // "--": a key id may begin with "-"
	if k.Exposure == nil || k.Exposure.LiveCertificates != 3 {
		t.Fatalf("key show exposure = %+v, want 3 live certificates", k.Exposure)
	}
	// Compromise: the command waits for the server to re-sign everything.
	out, errs, code := h.run("key", "revoke", "--reason", "key_compromise", "--", active)
	if code != 0 || !strings.Contains(errs, "done, 3 re-signed") {
		t.Fatalf("key revoke: exit %d\nstdout %s\nstderr %s", code, out, errs)
	}
	h.ok(&k, "key", "show", "--", active) // "--": a key id may begin with "-"
	if k.State != "compromised" || k.Exposure.LiveCertificates != 0 || k.Exposure.Resign == nil || k.Exposure.Resign.Done != 3 {
		t.Fatalf("after revoke: %+v exposure %+v", k, k.Exposure)
	}
	var j api.ResignJob
	h.ok(&j, "key", "resign", active)
	if j.Reason != "compromised" || j.State != "done" {
		t.Fatalf("key resign = %+v", j)
	}
	// The replacement replaced a compromised key, not a retired one.
	h.fails("ILLEGAL_TRANSITION", "key", "rollback", "--product", "demo", "--justification", "try")
	if _, _, code := h.run("key", "rollback", "--product", "demo"); code != 2 {
		t.Errorf("key rollback without --justification: exit %d, want 2", code)
	}
	var rot api.Key
	h.ok(&rot, "key", "rotate", "--product", "demo")
	var rb api.Rollback
	h.ok(&rb, "key", "rollback", "--product", "demo", "--justification", "client pins the previous key")
	if rb.Retired.KID != rot.KID || rb.Activated.State != "active" {
		t.Fatalf("key rollback = %+v", rb)
	}
}

// TestDashedKeyID: one key id in 64 begins with "-"; without "--" it
// reads as flags, and the error says what to do.
func TestDashedKeyID(t *testing.T) {
	const kid = "-_vgvaK635yLVrZAE0pxVybOvSx8WZN9IA4LULK-wwQ"
	_, errs, code := runCLI("key", "show", kid)
	if code != 2 || !strings.Contains(errs, `put "--" before it`) || !strings.Contains(errs, "keyward key show -- "+kid) {
		t.Errorf("exit %d, stderr %q", code, errs)
	}
	_, errs, code = runCLI("key", "revoke", kid, "--reason", "key_compromise")
	if code != 2 || !strings.Contains(errs, `put "--" before it`) {
		t.Errorf("revoke: exit %d, stderr %q", code, errs)
	}
	// "-o" is --output's shorthand: the rest of the id becomes its value
	// and the error is about the missing argument, still with the hint.
	const kidO = "-oBCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnop"
	if _, errs, code = runCLI("key", "show", kidO); code != 2 || !strings.Contains(errs, "keyward key show -- "+kidO) {
		t.Errorf("key id beginning -o: exit %d, stderr %q", code, errs)
	}
	// Flags after "--" are arguments: the error says to move them.
	if _, errs, code = runCLI("key", "revoke", "--", kid, "--reason", "key_compromise"); code != 2 || !strings.Contains(errs, `--reason comes after "--"`) {
		t.Errorf("flag after --: exit %d, stderr %q", code, errs)
	}
	// An ordinary unknown flag gets no such hint.
	if _, errs, code = runCLI("key", "show", "--bogus"); code != 2 || strings.Contains(errs, "before it") || strings.Contains(errs, "comes after") {
		t.Errorf("unknown flag: exit %d, stderr %q", code, errs)
	}
}
