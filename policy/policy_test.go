package policy_test

import (
	"os"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/keyward/keyward"
	"github.com/keyward/keyward/authority"
	"github.com/keyward/keyward/policy"
)

const (
	examplePolicy = "../examples/policy.yaml"
	exampleCases  = "../examples/policy-cases.yaml"
)

func mustRead(t testing.TB, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// opts are the options the server lints with.
func opts() policy.LintOptions {
	return policy.LintOptions{Permissions: authority.PolicyPermissions()}
}

func mustCompile(t testing.TB, doc string) *policy.Compiled {
	t.Helper()
	d, ps := policy.Check([]byte(doc), opts())
	if len(ps) > 0 {
		t.Fatalf("Check: %v", ps)
	}
	c, err := policy.Compile(d.Policy())
	if err != nil {
		t.Fatalf("Compile: %v", err)
	}
	return c
}

func TestExamplePolicyIsClean(t *testing.T) {
	d, ps := policy.Check([]byte(mustRead(t, examplePolicy)), opts())
	if len(ps) > 0 {
		t.Fatalf("examples/policy.yaml has problems: %v", ps)
	}
	p := d.Policy()
	const day = 24 * time.Hour
	if p.Name != "default" || p.Product != "acme-pro" || p.RotateEvery != 90*day || p.Prepublish != 7*day ||
		p.DestroyAfter != 400*day || p.LicenseDuration != 365*day || p.LeaseTTL != 15*time.Minute ||
		p.OfflineGrace != 72*time.Hour || p.MaxMachines != 3 || p.RevocationApprovals != 1 {
		t.Errorf("Policy() = %+v: values differ from the document", p)
	}
	if len(p.Retire) != 1 || p.Retire[0].Name != "inactive" || len(p.AutoSuspend) != 2 || p.AutoSuspend[1].Name != "fingerprint-spray" {
		t.Errorf("rules = %+v, %+v", p.Retire, p.AutoSuspend)
	}
	if !reflect.DeepEqual(p.Duties, [][]string{{"license.issue", "license.revoke"}, {"key.rotate", "approval.grant"}}) {
		t.Errorf("duties = %v", p.Duties)
	}
}

func TestExampleCasesPass(t *testing.T) {
	c := mustCompile(t, mustRead(t, examplePolicy))
	cases, err := policy.ParseCases([]byte(mustRead(t, exampleCases)))
	if err != nil {
		t.Fatal(err)
	}
	if len(cases) < 20 {
		t.Fatalf("examples/policy-cases.yaml has %d cases, want at least 20", len(cases))
	}
	seen := map[policy.Action]bool{}
	for _, r := range policy.RunCases(c, cases) {
		if !r.Pass {
			t.Errorf("case %q: got %v (err %v), want %v", r.Name, r.Got, r.Err, r.Want)
		}
		for _, d := range r.Got {
			seen[d.Action] = true
		}
	}
	for _, a := range policy.Actions() {
		if !seen[a] {
			t.Errorf("no example case produces %s", a)
		}
	}
}

// TestBuiltinDefault checks the built-in default is a clean document that
// reads back to itself, and that dev mode is what allows its approvals 0.
func TestBuiltinDefault(t *testing.T) {
	want := keyward.DefaultPolicy()
	want.Product = "acme"
	doc := policy.Format(want)
	d, ps := policy.Check(doc, opts())
	if len(ps) > 0 {
		t.Fatalf("Format(DefaultPolicy()) has problems: %v\n%s", ps, doc)
	}
	if got := d.Policy(); !reflect.DeepEqual(got, want) {
		t.Errorf("Parse(Format(DefaultPolicy())) =\n%+v\nwant\n%+v", got, want)
	}
	if _, err := policy.Compile(keyward.DefaultPolicy()); err != nil {
		t.Errorf("Compile(DefaultPolicy()): %v", err)
	}

	dev := keyward.DefaultPolicy()
	dev.Product, dev.RevocationApprovals = "acme", 0
	if _, ps := policy.Check(policy.Format(dev), policy.LintOptions{Dev: true, Permissions: authority.PolicyPermissions()}); len(ps) > 0 {
		t.Errorf("dev default, linted for dev: %v", ps)
	}
	_, ps = policy.Check(policy.Format(dev), opts())
	if len(ps) != 1 || ps[0].Path != "spec.revocation.approvals" {
		t.Errorf("dev default, linted for production: %v, want one approvals problem", ps)
	}
}

// TestFormatEmptyLists: a policy without rules, duties or mfa renders as
// explicit empty lists, which read back as empty (not as the defaults).
func TestFormatEmptyLists(t *testing.T) {
	p := keyward.DefaultPolicy()
	p.Product, p.Retire, p.AutoSuspend, p.Duties, p.MFA = "acme", nil, nil, nil, nil
	p.LicenseDuration, p.LeaseTTL = 90*24*time.Hour, 90*time.Second
	doc := policy.Format(p)
	d, ps := policy.Check(doc, opts())
	if len(ps) > 0 {
		t.Fatalf("%v\n%s", ps, doc)
	}
	got := d.Policy()
	if len(got.Retire)+len(got.AutoSuspend)+len(got.Duties)+len(got.MFA) != 0 || got.LicenseDuration != p.LicenseDuration || got.LeaseTTL != p.LeaseTTL {
		t.Errorf("read back %+v from\n%s", got, doc)
	}
	if !strings.Contains(string(doc), "leaseTTL: 90s") || !strings.Contains(string(doc), "duration: 90d") {
		t.Errorf("durations not written as people write them:\n%s", doc)
	}
}

// TestOmittedFieldsTakeDefaults: a minimal document is the built-in
// default; an explicit [] empties a list.
func TestOmittedFieldsTakeDefaults(t *testing.T) {
	min := "apiVersion: keyward.dev/v1\nkind: LifecyclePolicy\nmetadata: {name: min, product: acme}\nspec: {}\n"
	d, ps := policy.Check([]byte(min), opts())
	if len(ps) > 0 {
		t.Fatal(ps)
	}
	want := keyward.DefaultPolicy()
	want.Name, want.Product = "min", "acme"
	if got := d.Policy(); !reflect.DeepEqual(got, want) {
		t.Errorf("minimal document = %+v, want the default %+v", got, want)
	}
	d, ps = policy.Check([]byte(min[:len(min)-len("spec: {}\n")]+"spec:\n  licenses: {retire: []}\n  revocation: {autoSuspend: []}\n  mfa: []\n"), opts())
	if len(ps) > 0 {
		t.Fatal(ps)
	}
	if p := d.Policy(); len(p.Retire) != 0 || len(p.AutoSuspend) != 0 || len(p.MFA) != 0 || len(p.Duties) != 2 {
		t.Errorf("explicit []: retire %v, autoSuspend %v, mfa %v, duties %v", p.Retire, p.AutoSuspend, p.MFA, p.Duties)
	}
}

// wantProblem fails unless ps has a problem at path whose message contains msg.
func wantProblem(t *testing.T, ps policy.Problems, path, msg string) policy.Problem {
	t.Helper()
	for _, p := range ps {
		if p.Path == path && strings.Contains(p.Message, msg) {
			return p
		}
	}
	t.Fatalf("problems %q\nwant one at %q containing %q", ps, path, msg)
	return policy.Problem{}
}

func TestParseProblems(t *testing.T) {
	const head = "apiVersion: keyward.dev/v1\nkind: LifecyclePolicy\nmetadata: {name: p, product: acme}\n"
	tests := []struct {
		name, doc, path, msg string
		line                 int
	}{
		{"InvalidYAML", head + "spec:\n  licenses: {leaseTTL: 15m\n", "", "invalid YAML", 0},
		{"Empty", "", "", "empty document", 0},
		{"TwoDocuments", head + "spec: {}\n---\n" + head + "spec: {}\n", "", "more than one YAML document", 5},
		{"NotAMapping", "- a\n- b\n", "", "want a YAML mapping", 1},
		{"WrongAPIVersion", strings.Replace(head, "keyward.dev/v1", "keyward.dev/v2", 1) + "spec: {}\n", "apiVersion", `"keyward.dev/v2" is not supported`, 1},
		{"WrongKind", strings.Replace(head, "LifecyclePolicy", "Policy", 1) + "spec: {}\n", "kind", `"Policy" is not a policy`, 2},
		{"MissingSpec", head, "spec", "required field missing", 0},
		{"MissingMetadata", "apiVersion: keyward.dev/v1\nkind: LifecyclePolicy\nspec: {}\n", "metadata", "required field missing", 0},
		{"MissingProduct", "apiVersion: keyward.dev/v1\nkind: LifecyclePolicy\nmetadata: {name: p}\nspec: {}\n", "metadata.product", "required field missing", 3},
		{"UnknownTopLevel", head + "spec: {}\ncolour: blue\n", "colour", "unknown field", 5},
		{"UnknownNested", head + "spec:\n  signingKeys:\n    rotateEvry: 90d\n", "spec.signingKeys.rotateEvry", "unknown field (known: algorithm", 6},
		{"WrongCase", head + "spec:\n  signingKeys:\n    RotateEvery: 90d\n", "spec.signingKeys.RotateEvery", "did you mean rotateEvery?", 6},
		{"Repeated", head + "spec:\n  licenses:\n    leaseTTL: 15m\n    leaseTTL: 20m\n", "spec.licenses.leaseTTL", "given twice", 7},
		{"BadDurationUnit", head + "spec:\n  signingKeys: {rotateEvery: 90x}\n", "spec.signingKeys.rotateEvery", `bad duration "90x"`, 5},
		{"DurationWithoutUnit", head + "spec:\n  signingKeys: {rotateEvery: 90}\n", "spec.signingKeys.rotateEvery", `bad duration "90"`, 5},
		{"NegativeDuration", head + "spec:\n  signingKeys: {verifyWindow: -5d}\n", "spec.signingKeys.verifyWindow", `bad duration "-5d"`, 5},
		{"DurationNotScalar", head + "spec:\n  licenses: {leaseTTL: [15m]}\n", "spec.licenses.leaseTTL", "want a value, got a list", 5},
		{"IntNotANumber", head + "spec:\n  licenses: {maxMachines: three}\n", "spec.licenses.maxMachines", `want a whole number, got "three"`, 5},
		{"IntFloat", head + "spec:\n  licenses: {maxMachines: 3.5}\n", "spec.licenses.maxMachines", `want a whole number`, 5},
		{"IntQuoted", head + "spec:\n  revocation: {approvals: \"2\"}\n", "spec.revocation.approvals", `want a whole number`, 5},
		{"NullValue", head + "spec:\n  licenses:\n    leaseTTL:\n", "spec.licenses.leaseTTL", "no value given", 6},
		{"SectionNotMapping", head + "spec:\n  licenses: 3\n", "spec.licenses", `want a mapping, got "3"`, 5},
		{"RulesNotList", head + "spec:\n  licenses: {retire: {name: a, when: 'true'}}\n", "spec.licenses.retire", "want a list of rules", 5},
		{"RuleMissingWhen", head + "spec:\n  licenses:\n    retire:\n      - name: a\n", "spec.licenses.retire[0].when", "required field missing", 7},
		{"RuleUnknownField", head + "spec:\n  revocation:\n    autoSuspend:\n      - {name: a, when: 'true', unless: 'false'}\n", "spec.revocation.autoSuspend[0].unless", "unknown field", 7},
		{"MFANotList", head + "spec:\n  mfa: policy.apply\n", "spec.mfa", "want a list", 5},
		{"DutiesNotList", head + "spec:\n  duties: {separate: [a, b]}\n", "spec.duties.separate[0]", "want a list", 5},
		{"TooLarge", head + "spec: {}\n#" + strings.Repeat("x", policy.MaxDocumentBytes), "", "more than the 32768 allowed", 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, ps := policy.Check([]byte(tt.doc), opts())
			p := wantProblem(t, ps, tt.path, tt.msg)
			if tt.line != 0 && p.Line != tt.line {
				t.Errorf("problem %v at line %d, want line %d", p, p.Line, tt.line)
			}
		})
	}
}

// TestOneProblemPerMistake: a value that cannot be read is reported once,
// not again by the guardrails that would check it.
func TestOneProblemPerMistake(t *testing.T) {
	for _, tt := range []struct{ old, new, path string }{
		{"rotateEvery: 90d", "rotateEvery: 90x", "spec.signingKeys.rotateEvery"},
		{"leaseTTL: 15m", "leaseTTL:", "spec.licenses.leaseTTL"},
		{"maxMachines: 3", "maxMachines: many", "spec.licenses.maxMachines"},
		{"approvals: 1 ", "approvals: [1]", "spec.revocation.approvals"},
	} {
		_, ps := policy.Check([]byte(edit(t, tt.old, tt.new)), opts())
		if len(ps) != 1 || ps[0].Path != tt.path {
			t.Errorf("%s: problems %v, want exactly one at %s", tt.new, ps, tt.path)
		}
	}
}

func TestInvalidYAMLHasLine(t *testing.T) {
	_, ps := policy.Parse([]byte("apiVersion: keyward.dev/v1\nkind: [\n"))
	if len(ps) != 1 || ps[0].Line == 0 || !strings.Contains(ps[0].Message, "invalid YAML") {
		t.Fatalf("Parse = %v, want one invalid YAML problem with a line", ps)
	}
}

// edit returns the example policy with each old replaced by new (each old
// must occur exactly once).
func edit(t *testing.T, pairs ...string) string {
	t.Helper()
	doc := mustRead(t, examplePolicy)
	for i := 0; i+1 < len(pairs); i += 2 {
		if n := strings.Count(doc, pairs[i]); n != 1 {
			t.Fatalf("example policy holds %q %d times, want once", pairs[i], n)
		}
		doc = strings.Replace(doc, pairs[i], pairs[i+1], 1)
	}
	return doc
}

// TestLintGuardrails breaks one guardrail at a time in the example policy
// and checks that exactly that problem is reported, at its path and line.
func TestLintGuardrails(t *testing.T) {
	const rule0 = `when: license.last_validated_at < now - duration("180d")`
	tests := []struct {
		name  string
		edits []string
		path  string
		msg   string
	}{
		{"AlgorithmOffAllowlist", []string{"allowedAlgorithms: [Ed25519, ES256]", "allowedAlgorithms: [ES256]"},
			"spec.signingKeys.algorithm", "Ed25519 is off the allowlist spec.signingKeys.allowedAlgorithms [ES256]"},
		{"AlgorithmUnsupported", []string{"algorithm: Ed25519", "algorithm: RS256"},
			"spec.signingKeys.algorithm", `"RS256" is not a supported algorithm`},
		{"AllowedAlgorithmUnsupported", []string{"[Ed25519, ES256]", "[Ed25519, HS256]"},
			"spec.signingKeys.allowedAlgorithms[1]", `"HS256" is not a supported algorithm`},
		{"AllowedAlgorithmTwice", []string{"[Ed25519, ES256]", "[Ed25519, Ed25519]"},
			"spec.signingKeys.allowedAlgorithms[1]", "listed twice"},
		{"AllowlistEmpty", []string{"[Ed25519, ES256]", "[]"},
			"spec.signingKeys.allowedAlgorithms", "empty"},
		{"RotateEveryBelowAnHour", []string{"rotateEvery: 90d", "rotateEvery: 59m", "prepublish: 7d ", "prepublish: 10m"},
			"spec.signingKeys.rotateEvery", "59m is shorter than 1h"},
		{"RotateEveryAboveThreeYears", []string{"rotateEvery: 90d", "rotateEvery: 1096d"},
			"spec.signingKeys.rotateEvery", "1096d is longer than 3 years"},
		{"RotateEveryZero", []string{"rotateEvery: 90d", "rotateEvery: 0s"},
			"spec.signingKeys.rotateEvery", "want a positive duration"},
		{"PrepublishNotShorter", []string{"prepublish: 7d ", "prepublish: 90d"},
			"spec.signingKeys.prepublish", "90d is not shorter than spec.signingKeys.rotateEvery 90d"},
		{"PrepublishZero", []string{"prepublish: 7d ", "prepublish: 0s"},
			"spec.signingKeys.prepublish", "want a positive duration"},
		{"DestroyBeforeLicensesEnd", []string{"destroyAfter: 400d", "destroyAfter: 90d"},
			"spec.signingKeys.destroyAfter", "90d is shorter than spec.licenses.duration 365d: licenses signed by a key would outlive its verification"},
		{"DestroyBeforeCertificatesEnd", []string{"destroyAfter: 400d", "destroyAfter: 20d", "verifyWindow: 30d", "verifyWindow: 10d", "    duration: 365d\n", ""},
			"spec.signingKeys.destroyAfter", "20d is shorter than spec.licenses.certificateTTL 30d: certificates signed by a key"},
		{"DestroyBeforeVerifyWindowEnds", []string{"verifyWindow: 30d", "verifyWindow: 500d"},
			"spec.signingKeys.destroyAfter", "400d is shorter than spec.signingKeys.verifyWindow 500d: a retired key would be destroyed while its verify window is open"},
		{"LeaseOutlivesCertificate", []string{"leaseTTL: 15m", "leaseTTL: 31d"},
			"spec.licenses.leaseTTL", "31d is longer than spec.licenses.certificateTTL 30d"},
		{"LeaseZero", []string{"leaseTTL: 15m", "leaseTTL: 0s"},
			"spec.licenses.leaseTTL", "want a positive duration"},
		{"CertificateOutlivesLicense", []string{"duration: 365d", "duration: 20d"},
			"spec.licenses.certificateTTL", "30d is longer than spec.licenses.duration 20d"},
		{"LicenseDurationZero", []string{"duration: 365d", "duration: 0s"},
			"spec.licenses.duration", "leave the field out for perpetual licenses"},
		{"MaxMachinesNegative", []string{"maxMachines: 3", "maxMachines: -1"},
			"spec.licenses.maxMachines", "-1: want 0 (no limit) to 100000"},
		{"MaxMachinesTooMany", []string{"maxMachines: 3", "maxMachines: 100001"},
			"spec.licenses.maxMachines", "want 0 (no limit) to 100000"},
		{"ApprovalsOffOutsideDev", []string{"approvals: 1 ", "approvals: 0 "},
			"spec.revocation.approvals", "allowed only on a --dev server"},
		{"ApprovalsTooMany", []string{"approvals: 1 ", "approvals: 11 "},
			"spec.revocation.approvals", "11: want 1 to 10"},
		{"RuleNameTwice", []string{"name: burst", "name: inactive"},
			"spec.revocation.autoSuspend[0].name", `"inactive" is already the name of spec.licenses.retire[0]`},
		{"RuleNameEmpty", []string{"name: burst", `name: ""`},
			"spec.revocation.autoSuspend[0].name", `"": want 1-63 characters`},
		{"RuleNameBad", []string{"name: burst", "name: Burst!"},
			"spec.revocation.autoSuspend[0].name", `"Burst!": want 1-63 characters`},
		{"CELSyntax", []string{rule0, "when: license.last_validated_at <"},
			"spec.licenses.retire[0].when", "CEL does not compile"},
		{"CELUnknownField", []string{rule0, "when: license.colour == 'blue'"},
			"spec.licenses.retire[0].when", "undefined field 'colour'"},
		{"CELUnknownVariable", []string{rule0, "when: customer.vip"},
			"spec.licenses.retire[0].when", "undeclared reference to 'customer'"},
		{"CELNotBool", []string{"when: usage.validations_per_minute > 600", "when: usage.validations_per_minute + 600"},
			"spec.revocation.autoSuspend[0].when", "CEL expression is of type int: want bool"},
		{"CELTypeError", []string{rule0, `when: license.last_validated_at < "yesterday"`},
			"spec.licenses.retire[0].when", "CEL does not compile"},
		{"CELBadDurationLiteral", []string{`duration("180d")`, `duration("180 days")`},
			"spec.licenses.retire[0].when", `duration("180 days")`},
		{"CELBadTimestampLiteral", []string{rule0, `when: license.created_at < timestamp("2025-13-01")`},
			"spec.licenses.retire[0].when", `timestamp("2025-13-01"): want RFC 3339`},
		{"DutyUnknownPermission", []string{"[key.rotate, approval.grant]", "[key.rotate, approval.grnat]"},
			"spec.duties.separate[1][1]", `"approval.grnat" is not a permission`},
		{"DutyNotAPair", []string{"[key.rotate, approval.grant]", "[key.rotate, approval.grant, key.retire]"},
			"spec.duties.separate[1]", "want a pair of two permissions, got 3"},
		{"DutyWithItself", []string{"[key.rotate, approval.grant]", "[key.rotate, key.rotate]"},
			"spec.duties.separate[1]", "key.rotate is paired with itself"},
		{"DutyTwice", []string{"[key.rotate, approval.grant]", "[license.revoke, license.issue]"},
			"spec.duties.separate[1]", "already spec.duties.separate[0]"},
		{"MFAUnknownAction", []string{"key.destroy, policy.apply]", "key.destory, policy.apply]"},
			"spec.mfa[2]", `"key.destory" is not a permission`},
		{"MFATwice", []string{"key.destroy, policy.apply]", "key.destroy, key.destroy]"},
			"spec.mfa[3]", "listed twice"},
		{"MetadataNameBad", []string{"name: default,", "name: Default Policy,"},
			"metadata.name", `"Default Policy": want the policy's name`},
		{"MetadataProductBad", []string{"product: acme-pro", "product: Acme_Pro"},
			"metadata.product", `"Acme_Pro": want the name of the product`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			doc := edit(t, tt.edits...)
			d, ps := policy.Check([]byte(doc), opts())
			if len(ps) != 1 {
				t.Fatalf("got %d problems, want exactly one at %s:\n%v", len(ps), tt.path, ps)
			}
			p := wantProblem(t, ps, tt.path, tt.msg)
			if want := d.Line(tt.path); want != 0 && p.Line != want {
				t.Errorf("problem at line %d, want the field's line %d", p.Line, want)
			}
			if p.Line == 0 {
				t.Errorf("problem %v has no line", p)
			}
		})
	}
}

// TestLintReportsDefaults: a guardrail broken against a default value says
// the value is the default.
func TestLintReportsDefaults(t *testing.T) {
	doc := "apiVersion: keyward.dev/v1\nkind: LifecyclePolicy\nmetadata: {name: p, product: acme}\nspec:\n  licenses: {duration: 500d}\n"
	_, ps := policy.Check([]byte(doc), opts())
	p := wantProblem(t, ps, "spec.signingKeys.destroyAfter", "400d (default) is shorter than spec.licenses.duration 500d")
	if p.Line != 4 {
		t.Errorf("line %d, want 4 (spec, the nearest given field)", p.Line)
	}
}

func TestLintDevAllowsApprovalsZero(t *testing.T) {
	doc := edit(t, "approvals: 1 ", "approvals: 0 ")
	if _, ps := policy.Check([]byte(doc), policy.LintOptions{Dev: true, Permissions: authority.PolicyPermissions()}); len(ps) != 0 {
		t.Errorf("dev lint: %v, want none", ps)
	}
}

// TestLintListsEveryProblem: one document breaking many rules gets all of
// them, in line order.
func TestLintListsEveryProblem(t *testing.T) {
	doc := edit(t,
		"algorithm: Ed25519", "algorithm: RS256",
		"destroyAfter: 400d", "destroyAfter: 90d",
		"leaseTTL: 15m", "leaseTTL: 45d",
		"maxMachines: 3", "maxMachines: 3\n    maxMachine: 4",
		"approvals: 1 ", "approvals: 0 ",
		"> 600", "+ 600",
	)
	_, ps := policy.Check([]byte(doc), opts())
	want := []string{"spec.signingKeys.algorithm", "spec.signingKeys.destroyAfter", "spec.licenses.leaseTTL",
		"spec.licenses.maxMachine", "spec.revocation.approvals", "spec.revocation.autoSuspend[0].when"}
	if len(ps) != len(want) {
		t.Fatalf("got %d problems, want %d:\n%v", len(ps), len(want), ps)
	}
	for i, p := range ps {
		if p.Path != want[i] {
			t.Errorf("problem %d at %s, want %s", i, p.Path, want[i])
		}
		if i > 0 && p.Line < ps[i-1].Line {
			t.Errorf("problems not in line order: %v", ps)
		}
	}
}

func TestCompileRefusesBadRules(t *testing.T) {
	p := keyward.DefaultPolicy()
	p.Retire = []keyward.PolicyRule{{Name: "a", When: "license.machines"}, {Name: "b", When: "now <"}}
	_, err := policy.Compile(p)
	ps, ok := err.(policy.Problems)
	if !ok || len(ps) != 2 {
		t.Fatalf("Compile = %v, want two Problems", err)
	}
	if ps[0].Path != "spec.licenses.retire[0].when" || !strings.Contains(ps[0].Message, "want bool") ||
		ps[1].Path != "spec.licenses.retire[1].when" || !strings.Contains(ps[1].Message, "does not compile") {
		t.Errorf("problems = %v", ps)
	}
}

func TestDiff(t *testing.T) {
	lines := func(n int, change map[int]string) string {
		var b strings.Builder
		for i := 1; i <= n; i++ {
			if s, ok := change[i]; ok {
				if s != "" {
					b.WriteString(s + "\n")
				}
				continue
			}
			b.WriteString("line " + string(rune('a'+i-1)) + "\n")
		}
		return b.String()
	}
	base := lines(20, nil)
	tests := []struct {
		name, a, b, want string
	}{
		{"Equal", base, base, ""},
		{"OneLine", base, lines(20, map[int]string{10: "LINE j"}),
			"--- a\n+++ b\n@@ -7,7 +7,7 @@\n line g\n line h\n line i\n-line j\n+LINE j\n line k\n line l\n line m\n"},
		{"InsertAtStart", "x\ny\n", "new\nx\ny\n", "--- a\n+++ b\n@@ -1,2 +1,3 @@\n+new\n x\n y\n"},
		{"DeleteAtEnd", "x\ny\nz\n", "x\ny\n", "--- a\n+++ b\n@@ -1,3 +1,2 @@\n x\n y\n-z\n"},
		{"FromEmpty", "", "x\n", "--- a\n+++ b\n@@ -0,0 +1 @@\n+x\n"},
		{"TwoHunks", base, lines(20, map[int]string{2: "", 19: "LINE s"}),
			"--- a\n+++ b\n@@ -1,5 +1,4 @@\n line a\n-line b\n line c\n line d\n line e\n" +
				"@@ -16,5 +15,5 @@\n line p\n line q\n line r\n-line s\n+LINE s\n line t\n"},
		{"CloseChangesMerge", base, lines(20, map[int]string{5: "E", 11: "K"}),
			"--- a\n+++ b\n@@ -2,13 +2,13 @@\n line b\n line c\n line d\n-line e\n+E\n line f\n line g\n line h\n line i\n line j\n-line k\n+K\n line l\n line m\n line n\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := policy.Diff("a", "b", tt.a, tt.b); got != tt.want {
				t.Errorf("Diff =\n%s\nwant\n%s", got, tt.want)
			}
		})
	}
}
