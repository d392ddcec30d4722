package cli_test

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/keyward/keyward"
	"github.com/keyward/keyward/cli"
)

const (
	examplePolicy = "../examples/policy.yaml"
	exampleCases  = "../examples/policy-cases.yaml"
)

// runCLI runs the CLI offline (no server) and returns stdout, stderr and
// the exit status.
func runCLI(args ...string) (string, string, int) {
	var out, errb bytes.Buffer
	code := cli.Run(context.Background(), append([]string{"keyward"}, args...), &out, &errb)
	return out.String(), errb.String(), code
}

func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func readExample(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestPolicyLintCommand(t *testing.T) {
	out, errs, code := runCLI("policy", "lint", examplePolicy)
	if code != 0 || !strings.Contains(out, "policy.yaml: ok") {
		t.Fatalf("lint example: exit %d, %q %q", code, out, errs)
	}

	bad := strings.NewReplacer("destroyAfter: 400d", "destroyAfter: 90d", "approvals: 1 ", "approvals: 0 ",
		"leaseTTL: 15m", "leaseTTL: 45d").Replace(readExample(t, examplePolicy))
	file := writeFile(t, "bad.yaml", bad)
	out, errs, code = runCLI("policy", "lint", file)
	if code != 1 {
		t.Fatalf("lint bad: exit %d, want 1", code)
	}
	for _, want := range []string{
		file + ":16: spec.signingKeys.destroyAfter: 90d is shorter than spec.licenses.duration 365d: licenses signed by a key would outlive its verification",
		file + ":20: spec.licenses.leaseTTL: 45d is longer than spec.licenses.certificateTTL 30d",
		file + ":28: spec.revocation.approvals: 0 turns off",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("lint output lacks %q:\n%s", want, out)
		}
	}
	if !strings.Contains(errs, "3 problem(s)") {
		t.Errorf("stderr %q does not count the problems", errs)
	}

	// --dev allows approvals 0, nothing else.
	if out, _, code := runCLI("policy", "lint", "--dev", file); code != 1 || strings.Contains(out, "approvals") || !strings.Contains(out, "destroyAfter") {
		t.Errorf("lint --dev: exit %d\n%s", code, out)
	}
	// -o json lists the problems.
	out, _, code = runCLI("-o", "json", "policy", "lint", file)
	var js struct {
		File     string `json:"file"`
		Problems []struct {
			Path    string `json:"path"`
			Line    int    `json:"line"`
			Message string `json:"message"`
		} `json:"problems"`
	}
	if err := json.Unmarshal([]byte(out), &js); err != nil || code != 1 || len(js.Problems) != 3 || js.Problems[0].Line != 16 {
		t.Errorf("lint -o json: exit %d, %+v, %v", code, js, err)
	}

	if _, errs, code := runCLI("policy", "lint", filepath.Join(t.TempDir(), "missing.yaml")); code != 1 || !strings.Contains(errs, "missing.yaml") {
		t.Errorf("lint missing file: exit %d %q", code, errs)
	}
	if _, _, code := runCLI("policy", "lint"); code != 2 {
		t.Errorf("lint without a file: exit %d, want 2", code)
	}
}

func TestPolicyTestCommand(t *testing.T) {
	out, errs, code := runCLI("policy", "test", examplePolicy, exampleCases)
	if code != 0 {
		t.Fatalf("policy test examples: exit %d\n%s%s", code, out, errs)
	}
	n := strings.Count(out, "PASS  ")
	if n < 20 || strings.Contains(out, "FAIL") || !strings.Contains(out, "PASS: 22/22") {
		t.Errorf("policy test output (%d PASS lines):\n%s", n, out)
	}

	// A changed policy fails the cases that depend on it.
	changed := writeFile(t, "policy.yaml", strings.Replace(readExample(t, examplePolicy), "> 600", "> 700", 1))
	out, _, code = runCLI("policy", "test", changed, exampleCases)
	if code != 1 || !strings.Contains(out, "FAIL  a burst of validations suspends the license\n      want: auto-suspend lic4 (burst)\n      got:  none\n") ||
		!strings.Contains(out, "PASS: 21/22\nFAIL: 1/22\n") {
		t.Errorf("policy test with a changed policy: exit %d\n%s", code, out)
	}
	out, _, code = runCLI("-o", "json", "policy", "test", changed, exampleCases)
	var js struct {
		Passed int `json:"passed"`
		Failed int `json:"failed"`
		Cases  []struct {
			Name string `json:"name"`
			Pass bool   `json:"pass"`
		} `json:"cases"`
	}
	if err := json.Unmarshal([]byte(out), &js); err != nil || code != 1 || js.Passed != 21 || js.Failed != 1 || len(js.Cases) != 22 {
		t.Errorf("policy test -o json: exit %d %+v %v", code, js, err)
	}

	// A policy with lint problems is not tested.
	bad := writeFile(t, "bad.yaml", strings.Replace(readExample(t, examplePolicy), "leaseTTL: 15m", "leaseTTL: 45d", 1))
	if _, errs, code := runCLI("policy", "test", bad, exampleCases); code != 1 || !strings.Contains(errs, "spec.licenses.leaseTTL") {
		t.Errorf("policy test with a bad policy: exit %d %q", code, errs)
	}
	// A bad cases file says where.
	cases := writeFile(t, "cases.yaml", "apiVersion: keyward.dev/v1\nkind: LifecyclePolicyTest\ncases:\n  - name: a\n    now: soon\n    expect: none\n    keys: [{kid: k, state: active}]\n")
	if _, errs, code := runCLI("policy", "test", examplePolicy, cases); code != 1 || !strings.Contains(errs, `now "soon"`) {
		t.Errorf("policy test with a bad cases file: exit %d %q", code, errs)
	}
	if _, _, code := runCLI("policy", "test", examplePolicy); code != 2 {
		t.Errorf("policy test with one file: exit %d, want 2", code)
	}
}

func TestPolicyShowBuiltinOffline(t *testing.T) {
	out, _, code := runCLI("policy", "show")
	if code != 0 || !strings.Contains(out, "kind: LifecyclePolicy") || !strings.Contains(out, "rotateEvery: 90d") {
		t.Fatalf("policy show: exit %d\n%s", code, out)
	}
	// The output is a clean document once it names a product.
	file := writeFile(t, "default.yaml", out)
	if out, _, code := runCLI("policy", "lint", file); code != 0 {
		t.Errorf("lint of `policy show`: exit %d\n%s", code, out)
	}
}

// TestPolicyThroughServer applies, shows, diffs and rolls back a policy on
// the real server through the CLI.
func TestPolicyThroughServer(t *testing.T) {
	h := start(t, t.TempDir(), &lockedBuffer{})
	defer h.stop()
	h.ok(nil, "product", "create", "acme-pro")

	// The built-in default lists policy.apply under mfa, and this admin has
	// no second factor: the first version is applied by the server itself
	// (in-process callers are trusted), without policy.apply under mfa.
	noMFA := strings.Replace(readExample(t, examplePolicy), "key.destroy, policy.apply]", "key.destroy]", 1)
	sys := keyward.NewContextWithPrincipal(context.Background(), keyward.Principal{ID: "system", Name: "test"})
	if _, err := h.server.Authority.ApplyPolicy(sys, "acme-pro", noMFA, "bootstrap"); err != nil {
		t.Fatal(err)
	}
	var applied struct {
		Version         int    `json:"version"`
		PreviousVersion int    `json:"previous_version"`
		Diff            string `json:"diff"`
	}
	v2 := writeFile(t, "v2.yaml", strings.Replace(noMFA, "rotateEvery: 90d", "rotateEvery: 60d", 1))
	h.ok(&applied, "policy", "apply", "-f", v2, "--justification", "faster rotation")
	if applied.Version != 2 || applied.PreviousVersion != 1 || !strings.Contains(applied.Diff, "-    rotateEvery: 90d      # cadence\n+    rotateEvery: 60d      # cadence\n") {
		t.Fatalf("apply v2 = %+v", applied)
	}

	// Table output: version line and diff; show prints the document.
	var out, errb bytes.Buffer
	base := []string{"keyward", "--server", h.url, "--token", h.token}
	if code := cli.Run(context.Background(), append(base, "policy", "show", "--product", "acme-pro"), &out, &errb); code != 0 ||
		!strings.HasPrefix(out.String(), "# acme-pro: policy version 2, applied ") || !strings.Contains(out.String(), "rotateEvery: 60d") {
		t.Fatalf("policy show: %d\n%s%s", code, out.String(), errb.String())
	}
	out.Reset()
	if code := cli.Run(context.Background(), append(base, "policy", "diff", "--product", "acme-pro", "1", "2"), &out, &errb); code != 0 ||
		!strings.HasPrefix(out.String(), "--- acme-pro@v1\n+++ acme-pro@v2\n") {
		t.Fatalf("policy diff: %d\n%s", code, out.String())
	}

	var rb struct {
		Version    int `json:"version"`
		RollbackOf int `json:"rollback_of"`
	}
	h.ok(&rb, "policy", "rollback", "--product", "acme-pro", "1", "--justification", "rotation too fast for clients")
	if rb.Version != 3 || rb.RollbackOf != 1 {
		t.Fatalf("rollback = %+v", rb)
	}
	var hist []struct {
		Version       int    `json:"version"`
		Justification string `json:"justification"`
		RollbackOf    int    `json:"rollback_of"`
	}
	h.ok(&hist, "policy", "history", "--product", "acme-pro")
	if len(hist) != 3 || hist[1].Justification != "faster rotation" || hist[2].RollbackOf != 1 {
		t.Fatalf("history = %+v", hist)
	}

	// Refusals: problems listed with file and line; nothing stored.
	bad := writeFile(t, "bad.yaml", strings.Replace(readExample(t, examplePolicy), "leaseTTL: 15m", "leaseTTL: 45d", 1))
	_, errs, code := h.run("policy", "apply", "-f", bad, "--justification", "x")
	if code != 1 || !strings.Contains(errs, bad+":20: spec.licenses.leaseTTL: 45d is longer") {
		t.Fatalf("apply bad: exit %d %q", code, errs)
	}
	h.fails("NOT_FOUND", "policy", "show", "--product", "acme-pro", "--version", "9")
	h.fails("NOT_FOUND", "policy", "history", "--product", "nope")
	h.fails("CONFLICT", "policy", "rollback", "--product", "acme-pro", "1", "--justification", "again")
	if _, _, code := h.run("policy", "apply", "-f", examplePolicy); code != 2 {
		t.Errorf("apply without --justification: exit %d, want 2", code)
	}
	if _, _, code := h.run("policy", "rollback", "--product", "acme-pro", "one", "--justification", "x"); code != 2 {
		t.Errorf("rollback one: exit %d, want 2", code)
	}
	h.ok(&hist, "policy", "history", "--product", "acme-pro")
	if len(hist) != 3 {
		t.Errorf("history after refusals has %d versions, want 3", len(hist))
	}

	// The example itself applies through the CLI; then, since it lists
	// policy.apply under mfa, the next apply needs a second factor.
	h.ok(&applied, "policy", "apply", "-f", examplePolicy, "--justification", "the example")
	if applied.Version != 4 || !strings.Contains(applied.Diff, "+  mfa: [license.revoke, key.revoke, key.destroy, policy.apply]") {
		t.Fatalf("apply example = %+v", applied)
	}
	h.fails("MFA_REQUIRED", "policy", "apply", "-f", v2, "--justification", "no second factor")
}
