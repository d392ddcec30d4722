package policy_test

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/keyward/keyward"
	"github.com/keyward/keyward/policy"
)

// TestAbuseGuardsParsed: the example's guards reach the policy, and a
// document without them gets the built-in defaults.
func TestAbuseGuardsParsed(t *testing.T) {
	d, ps := policy.Check([]byte(edit(t, "autoSuspendCooldown: 24h", "autoSuspendCooldown: 2h", "autoSuspendCeiling: 10", "autoSuspendCeiling: 0",
		"suspendOnSignal: [leak]", "suspendOnSignal: [chargeback, leak]")), opts())
	if len(ps) > 0 {
		t.Fatal(ps)
	}
	p := d.Policy()
	if p.AutoSuspendCooldown != 2*time.Hour || p.AutoSuspendCeiling != 0 || !slices.Equal(p.SuspendOnSignal, []keyward.SignalKind{"chargeback", "leak"}) {
		t.Errorf("guards = %s, %d, %v", p.AutoSuspendCooldown, p.AutoSuspendCeiling, p.SuspendOnSignal)
	}
	d, _ = policy.Check([]byte("apiVersion: keyward.dev/v1\nkind: LifecyclePolicy\nmetadata: {name: p, product: acme}\nspec: {}\n"), opts())
	def := keyward.DefaultPolicy()
	if p := d.Policy(); p.AutoSuspendCooldown != 24*time.Hour || p.AutoSuspendCeiling != 10 || !slices.Equal(p.SuspendOnSignal, []keyward.SignalKind{keyward.SignalLeak}) ||
		p.AutoSuspendCooldown != def.AutoSuspendCooldown || p.AutoSuspendCeiling != def.AutoSuspendCeiling {
		t.Errorf("defaults = %s, %d, %v", p.AutoSuspendCooldown, p.AutoSuspendCeiling, p.SuspendOnSignal)
	}
	d, ps = policy.Check([]byte(edit(t, "suspendOnSignal: [leak]", "suspendOnSignal: []")), opts())
	if p := d.Policy(); len(ps) > 0 || len(p.SuspendOnSignal) != 0 {
		t.Errorf("suspendOnSignal: [] = %v (%v)", p.SuspendOnSignal, ps)
	}
	// Format writes them back.
	out := string(policy.Format(def))
	for _, want := range []string{"autoSuspendCooldown: 24h", "autoSuspendCeiling: 10", "suspendOnSignal: [leak]"} {
		if !strings.Contains(out, want) {
			t.Errorf("Format lacks %q:\n%s", want, out)
		}
	}
	def.Product = "acme"
	if _, ps := policy.Check(policy.Format(def), opts()); len(ps) > 0 {
		t.Errorf("the formatted built-in default does not lint: %v", ps)
	}
}

// TestLintAbuseGuardrails breaks one automatic-suspension guardrail at a
// time in the example policy.
func TestLintAbuseGuardrails(t *testing.T) {
	const burst = "when: usage.validations_per_minute > 600"
	tests := []struct {
		name  string
		edits []string
		path  string
		msg   string
	}{
		{"CooldownTooShort", []string{"autoSuspendCooldown: 24h", "autoSuspendCooldown: 1m"},
			"spec.revocation.autoSuspendCooldown", "1m: want 5m to 30d"},
		{"CooldownTooLong", []string{"autoSuspendCooldown: 24h", "autoSuspendCooldown: 31d"},
			"spec.revocation.autoSuspendCooldown", "31d: want 5m to 30d"},
		{"CooldownZero", []string{"autoSuspendCooldown: 24h", "autoSuspendCooldown: 0s"},
			"spec.revocation.autoSuspendCooldown", "want 5m to 30d"},
		{"CeilingNegative", []string{"autoSuspendCeiling: 10", "autoSuspendCeiling: -1"},
			"spec.revocation.autoSuspendCeiling", "-1: want 0 (alerts only) to 1000"},
		{"CeilingTooHigh", []string{"autoSuspendCeiling: 10", "autoSuspendCeiling: 1001"},
			"spec.revocation.autoSuspendCeiling", "1001: want 0 (alerts only) to 1000"},
		{"SignalKindUnknown", []string{"suspendOnSignal: [leak]", "suspendOnSignal: [leak, fraud]"},
			"spec.revocation.suspendOnSignal[1]", `"fraud" is not a signal kind (known: abuse, leak, chargeback, other)`},
		{"SignalKindTwice", []string{"suspendOnSignal: [leak]", "suspendOnSignal: [leak, leak]"},
			"spec.revocation.suspendOnSignal[1]", "leak is listed twice"},
		{"RuleReadsNoUsage", []string{burst, "when: license.max_machines == 0"},
			"spec.revocation.autoSuspend[0].when", "reads no usage counter"},
		{"RuleMatchesEveryValidation", []string{burst, "when: usage.validations_per_minute > 0"},
			"spec.revocation.autoSuspend[0].when", "true for a license in quiet, ordinary use"},
		{"RuleMatchesNoFailures", []string{burst, "when: usage.failed_validations_in_row < 3"},
			"spec.revocation.autoSuspend[0].when", "true for a license in quiet, ordinary use"},
		{"RuleMatchesUnlimitedLicenses", []string{burst, "when: usage.distinct_fingerprints_24h > license.max_machines"},
			"spec.revocation.autoSuspend[0].when", "max_machines 0"},
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
		})
	}
	// Rules that are fine: thresholds above quiet use, usage combined with
	// license fields.
	for _, when := range []string{
		"usage.validations_per_minute > 2",
		"usage.failed_validations_in_row >= 20",
		"has(license.expires_at) && usage.distinct_networks_24h > 10",
		"usage.distinct_fingerprints_24h > 2 * license.max_machines && license.max_machines > 0",
		"usage.validations_per_minute / (usage.failed_validations_in_row) > 3", // fails on quiet use (division by zero): does not fire
	} {
		if _, ps := policy.Check([]byte(edit(t, burst, "when: "+when)), opts()); len(ps) != 0 {
			t.Errorf("%s: %v", when, ps)
		}
	}
}

// TestBuiltinAutoSuspendRulesPassGuardrails: lint skips the built-in rules
// (they are not in a document); they must pass the same checks.
func TestBuiltinAutoSuspendRulesPassGuardrails(t *testing.T) {
	var b strings.Builder
	b.WriteString("apiVersion: keyward.dev/v1\nkind: LifecyclePolicy\nmetadata: {name: p, product: acme}\nspec:\n  revocation:\n    autoSuspend:\n")
	for _, r := range keyward.DefaultPolicy().AutoSuspend {
		b.WriteString("      - name: " + r.Name + "\n        when: " + r.When + "\n")
	}
	if _, ps := policy.Check([]byte(b.String()), opts()); len(ps) != 0 {
		t.Errorf("built-in autoSuspend rules: %v", ps)
	}
}

func TestMatchAutoSuspend(t *testing.T) {
	c := compiled(t, func(p *keyward.Policy) {
		p.AutoSuspend = []keyward.PolicyRule{
			{Name: "ratio", When: "usage.validations_per_minute / usage.failed_validations_in_row > 3"},
			{Name: "burst", When: "usage.validations_per_minute > 600"},
			{Name: "young", When: "license.created_at > now - duration(\"1d\") && usage.distinct_networks_24h > 2"},
			{Name: "keyed", When: "key.algorithm == 'ES256' && usage.distinct_networks_24h > 1"},
		}
	})
	l := &policy.License{ID: "l1", State: "active", CreatedAt: t0, LastValidatedAt: t0}
	tests := []struct {
		name string
		u    policy.Usage
		key  *policy.Key
		now  time.Time
		want string
		err  bool
	}{
		{"None", policy.Usage{ValidationsPerMinute: 10, FailedValidationsInRow: 5}, nil, t0, "", false},
		{"FirstTrue", policy.Usage{ValidationsPerMinute: 700, FailedValidationsInRow: 1}, nil, t0, "ratio", false},
		{"ErrorDoesNotFireOthersDo", policy.Usage{ValidationsPerMinute: 601}, nil, t0, "burst", true},
		{"ErrorOnly", policy.Usage{ValidationsPerMinute: 6}, nil, t0, "", true},
		{"Now", policy.Usage{ValidationsPerMinute: 1, FailedValidationsInRow: 1, DistinctNetworks24h: 3}, nil, t0.Add(time.Hour), "young", false},
		{"NowLater", policy.Usage{ValidationsPerMinute: 1, FailedValidationsInRow: 1, DistinctNetworks24h: 3}, nil, t0.Add(25 * time.Hour), "", false},
		{"NilKeyIsZero", policy.Usage{ValidationsPerMinute: 1, FailedValidationsInRow: 1, DistinctNetworks24h: 2}, nil, t0.Add(25 * time.Hour), "", false},
		{"Key", policy.Usage{ValidationsPerMinute: 1, FailedValidationsInRow: 1, DistinctNetworks24h: 2}, &policy.Key{Algorithm: "ES256"}, t0.Add(25 * time.Hour), "keyed", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, ok, err := c.MatchAutoSuspend(l, tt.key, &tt.u, tt.now)
			if ok != (tt.want != "") || r.Name != tt.want || (err != nil) != tt.err {
				t.Errorf("MatchAutoSuspend = %q, %v, %v; want %q, error %v", r.Name, ok, err, tt.want, tt.err)
			}
			if err != nil && !strings.Contains(err.Error(), "ratio") {
				t.Errorf("error %v does not name the rule", err)
			}
			// Decide agrees where no rule fails.
			if !tt.err {
				ds, derr := c.Decide(policy.State{License: l, Usage: tt.u, Keys: keysOf(tt.key)}, tt.now)
				got := ""
				for _, d := range ds {
					if d.Action == policy.ActionAutoSuspend {
						got = d.Rule
					}
				}
				if derr != nil || (got != tt.want && tt.key == nil) {
					t.Errorf("Decide = %v, %v; MatchAutoSuspend %q", ds, derr, tt.want)
				}
			}
		})
	}
}

func keysOf(k *policy.Key) []policy.Key {
	if k == nil {
		return nil
	}
	return []policy.Key{{KID: "k", State: "active", Algorithm: k.Algorithm, CreatedAt: t0, ActivatedAt: t0}}
}

func TestAutoSuspendReads(t *testing.T) {
	tests := []struct {
		when string
		want policy.AutoSuspendInputs
	}{
		{"usage.validations_per_minute > 600", policy.AutoSuspendInputs{RateMonotone: true}},
		{"license.max_machines > 0 && usage.distinct_fingerprints_24h > 5 * license.max_machines", policy.AutoSuspendInputs{RateMonotone: true}},
		{"usage.distinct_fingerprints_24h > license.machines + 2", policy.AutoSuspendInputs{Machines: true, RateMonotone: true}},
		{"has(license.machines) && usage.validations_per_minute > 9", policy.AutoSuspendInputs{Machines: true, RateMonotone: true}},
		{"usage.distinct_networks_24h > 10 && key.algorithm == 'Ed25519'", policy.AutoSuspendInputs{Key: true, RateMonotone: true}},
		{"usage.validations_per_minute % 600 == 0", policy.AutoSuspendInputs{}},
	}
	for _, tt := range tests {
		c := compiled(t, func(p *keyward.Policy) { p.AutoSuspend = []keyward.PolicyRule{{Name: "r", When: tt.when}} })
		if got := c.AutoSuspendReads(); got != tt.want {
			t.Errorf("AutoSuspendReads(%s) = %+v, want %+v", tt.when, got, tt.want)
		}
	}
	c := compiled(t, func(p *keyward.Policy) {
		p.AutoSuspend = []keyward.PolicyRule{{Name: "a", When: "usage.validations_per_minute > 600"}, {Name: "b", When: "license.machines > 1 && key.state == 'active' && usage.validations_per_minute > 1"}}
	})
	if got := c.AutoSuspendReads(); got != (policy.AutoSuspendInputs{Machines: true, Key: true, RateMonotone: true}) {
		t.Errorf("two rules: %+v", got)
	}
	c = compiled(t, func(p *keyward.Policy) {
		p.AutoSuspend = []keyward.PolicyRule{{Name: "a", When: "usage.validations_per_minute > 600"}, {Name: "b", When: "usage.validations_per_minute < 2 && usage.failed_validations_in_row > 5"}}
	})
	if got := c.AutoSuspendReads(); got != (policy.AutoSuspendInputs{}) {
		t.Errorf("one rule not monotone in the rate: %+v", got)
	}
}

// BenchmarkMatchAutoSuspend is one evaluation of the built-in rules on
// the validation path (when the evaluation gate opens: authority/usage.go).
func BenchmarkMatchAutoSuspend(b *testing.B) {
	c := compiled(b, nil)
	l := &policy.License{ID: "l1", State: "active", MaxMachines: 3, CreatedAt: t0, LastValidatedAt: t0}
	u := &policy.Usage{ValidationsPerMinute: 20, DistinctFingerprints24h: 2, DistinctNetworks24h: 1}
	b.ReportAllocs()
	for b.Loop() {
		if _, ok, err := c.MatchAutoSuspend(l, nil, u, t0); ok || err != nil {
			b.Fatal(ok, err)
		}
	}
}
