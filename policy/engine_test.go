package policy_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/keyward/keyward"
	"github.com/keyward/keyward/policy"
)

var t0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

const day = 24 * time.Hour

func compiled(t testing.TB, edit func(p *keyward.Policy)) *policy.Compiled {
	t.Helper()
	p := keyward.DefaultPolicy()
	p.Version, p.LicenseDuration = 7, 365*day
	if edit != nil {
		edit(p)
	}
	c, err := policy.Compile(p)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestDecideRecordsRuleVersionAndReason(t *testing.T) {
	c := compiled(t, nil)
	keys := []policy.Key{{KID: "k1", State: "active", CreatedAt: t0, ActivatedAt: t0}}
	due := t0.Add(90*day - 7*day)
	got, err := c.Decide(policy.State{Keys: keys}, due.Add(time.Hour))
	if err != nil || len(got) != 1 {
		t.Fatalf("Decide = %v, %v; want one rotate", got, err)
	}
	d := got[0]
	if d.Action != policy.ActionRotate || d.Rule != policy.RuleRotateEvery || d.PolicyVersion != 7 || !d.Due.Equal(due) || d.Target != "" {
		t.Errorf("decision = %+v", d)
	}
	if !strings.Contains(d.Reason, "k1") || !strings.Contains(d.Reason, "90d") || !strings.Contains(d.Reason, "7d") {
		t.Errorf("reason %q does not explain the rule", d.Reason)
	}
}

func TestDecideKeys(t *testing.T) {
	c := compiled(t, nil)
	active := policy.Key{KID: "k1", State: "active", CreatedAt: t0.Add(-day), ActivatedAt: t0}
	tests := []struct {
		name string
		keys []policy.Key
		now  time.Time
		want string
	}{
		{"NoKeys", nil, t0, ""},
		{"ActivatedAtMissingUsesCreatedAt", []policy.Key{{KID: "k1", State: "active", CreatedAt: t0}}, t0.Add(83 * day), "rotate (rotateEvery)"},
		{"NewestPendingIsTheSuccessor", []policy.Key{active,
			{KID: "old", State: "pending", CreatedAt: t0.Add(80 * day)},
			{KID: "new", State: "pending", CreatedAt: t0.Add(83 * day)}}, t0.Add(90 * day), "activate new (rotateEvery), retire k1 (rotateEvery)"},
		{"NoActiveNoPending", []policy.Key{{KID: "kx", State: "compromised", CreatedAt: t0}}, t0, "rotate (noActiveKey)"},
		{"RetiredWithoutTimeIsKept", []policy.Key{active, {KID: "k0", State: "retired", CreatedAt: t0.Add(-900 * day)}}, t0, ""},
		{"SeveralRetiredInRetirementOrder", []policy.Key{active,
			{KID: "kb", State: "retired", RetiredAt: t0.Add(-401 * day)},
			{KID: "ka", State: "retired", RetiredAt: t0.Add(-500 * day)},
			{KID: "kc", State: "retired", RetiredAt: t0.Add(-399 * day)}}, t0, "destroy ka (destroyAfter), destroy kb (destroyAfter)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := c.Decide(policy.State{Keys: tt.keys}, tt.now)
			if err != nil {
				t.Fatal(err)
			}
			var s []string
			for _, d := range got {
				s = append(s, d.String())
			}
			if g := strings.Join(s, ", "); g != tt.want {
				t.Errorf("Decide = %q, want %q", g, tt.want)
			}
		})
	}
}

// TestDecideRotationYear drives a ring through a year of daily scheduler
// ticks, applying each decision, and checks the ring always has exactly one
// active key, every successor is published prepublish before it signs, and
// keys rotate every rotateEvery.
func TestDecideRotationYear(t *testing.T) {
	c := compiled(t, nil)
	p := c.Policy()
	keys := []policy.Key{{KID: "k0", State: "active", CreatedAt: t0, ActivatedAt: t0}}
	n := 0
	var activations []time.Time
	for now := t0; now.Before(t0.Add(2 * 365 * day)); now = now.Add(time.Hour) {
		ds, err := c.Decide(policy.State{Keys: keys}, now)
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range ds {
			switch d.Action {
			case policy.ActionRotate:
				n++
				keys = append(keys, policy.Key{KID: fmt.Sprintf("k%d", n), State: "pending", CreatedAt: now})
			case policy.ActionActivate, policy.ActionRetire, policy.ActionDestroy:
				for i := range keys {
					if keys[i].KID != d.Target {
						continue
					}
					switch d.Action {
					case policy.ActionActivate:
						if now.Sub(keys[i].CreatedAt) < p.Prepublish {
							t.Fatalf("%s activated %v after publication, want >= %v", d.Target, now.Sub(keys[i].CreatedAt), p.Prepublish)
						}
						keys[i].State, keys[i].ActivatedAt = "active", now
						activations = append(activations, now)
					case policy.ActionRetire:
						keys[i].State, keys[i].RetiredAt = "retired", now
					case policy.ActionDestroy:
						keys[i].State = "destroyed"
					}
				}
			default:
				t.Fatalf("unexpected %v", d)
			}
		}
		active := 0
		for _, k := range keys {
			if k.State == "active" {
				active++
			}
		}
		if active != 1 {
			t.Fatalf("at %v the ring has %d active keys", now, active)
		}
	}
	if len(activations) != 8 { // 730 days / 90
		t.Fatalf("%d activations in two years, want 8", len(activations))
	}
	for i, a := range activations {
		if want := t0.Add(time.Duration(i+1) * p.RotateEvery); !a.Equal(want) {
			t.Errorf("activation %d at %v, want %v", i, a, want)
		}
	}
	destroyed := 0
	for _, k := range keys {
		if k.State == "destroyed" {
			destroyed++
		}
	}
	if destroyed != 3 { // retired at days 90, 180, 270, 360…; destroyed 400 days later: 490, 580, 670 (760 is past day 730)
		t.Errorf("%d keys destroyed, want 3", destroyed)
	}
}

func TestDecideLicenseRules(t *testing.T) {
	c := compiled(t, func(p *keyward.Policy) {
		p.Retire = []keyward.PolicyRule{
			{Name: "trial-over", When: `"trial" in license.entitlements && license.created_at + duration("30d") <= now`},
			{Name: "inactive", When: `license.last_validated_at < now - duration("180d")`},
		}
		p.AutoSuspend = []keyward.PolicyRule{
			{Name: "failures", When: "usage.failed_validations_in_row >= 20"},
			{Name: "networks", When: "usage.distinct_networks_24h > 10 && key.algorithm == 'Ed25519'"},
			{Name: "perpetual-only", When: "!has(license.expires_at) && usage.validations_per_minute > 100"},
		}
	})
	base := policy.License{ID: "l1", State: "active", MaxMachines: 3, Entitlements: []string{"pro"}, CreatedAt: t0, LastValidatedAt: t0}
	key := []policy.Key{{KID: "k1", State: "active", Algorithm: "Ed25519", CreatedAt: t0, ActivatedAt: t0}}
	tests := []struct {
		name  string
		lic   func(l *policy.License)
		usage policy.Usage
		keys  []policy.Key
		now   time.Time
		want  string // "action rule" or ""
	}{
		{"Nothing", nil, policy.Usage{}, nil, t0.Add(day), ""},
		{"FirstMatchingRuleWins", func(l *policy.License) { l.Entitlements = []string{"trial"} }, policy.Usage{}, nil, t0.Add(200 * day), "retire-license trial-over"},
		{"SecondRule", nil, policy.Usage{}, nil, t0.Add(181 * day), "retire-license inactive"},
		{"RetireBeforeSuspend", nil, policy.Usage{FailedValidationsInRow: 50}, nil, t0.Add(181 * day), "retire-license inactive"},
		{"Suspend", nil, policy.Usage{FailedValidationsInRow: 20}, nil, t0.Add(day), "auto-suspend failures"},
		{"KeyVariable", nil, policy.Usage{DistinctNetworks24h: 11}, key, t0.Add(day), "auto-suspend networks"},
		{"KeyVariableZeroWithoutKeys", nil, policy.Usage{DistinctNetworks24h: 11}, nil, t0.Add(day), ""},
		{"HasExpiresAt", func(l *policy.License) { l.ExpiresAt = t0.Add(300 * day) }, policy.Usage{ValidationsPerMinute: 101}, nil, t0.Add(day), ""},
		{"HasNoExpiresAt", nil, policy.Usage{ValidationsPerMinute: 101}, nil, t0.Add(day), "auto-suspend perpetual-only"},
		{"ExpiredFirst", func(l *policy.License) { l.ExpiresAt = t0.Add(10 * day) }, policy.Usage{FailedValidationsInRow: 50}, nil, t0.Add(181 * day), "expire expiry"},
		{"RevokedIgnored", func(l *policy.License) { l.State = "revoked"; l.ExpiresAt = t0 }, policy.Usage{FailedValidationsInRow: 50}, nil, t0.Add(181 * day), ""},
		{"SuspendedNotExpiredByEngine", func(l *policy.License) { l.State = "suspended"; l.ExpiresAt = t0 }, policy.Usage{}, nil, t0.Add(day), ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l := base
			if tt.lic != nil {
				tt.lic(&l)
			}
			got, err := c.Decide(policy.State{Keys: tt.keys, License: &l, Usage: tt.usage}, tt.now)
			if err != nil {
				t.Fatal(err)
			}
			var s []string
			for _, d := range got {
				if d.Target == "l1" || d.Target == "" && d.Action != policy.ActionRotate {
					s = append(s, string(d.Action)+" "+d.Rule)
				}
			}
			if g := strings.Join(s, ", "); g != tt.want {
				t.Errorf("Decide = %q (all: %v), want %q", g, got, tt.want)
			}
		})
	}
}

func TestDecideEvaluationError(t *testing.T) {
	c := compiled(t, func(p *keyward.Policy) {
		p.AutoSuspend = []keyward.PolicyRule{{Name: "ratio", When: "usage.validations_per_minute / usage.failed_validations_in_row > 3"}}
	})
	keys := []policy.Key{{KID: "k1", State: "active", CreatedAt: t0, ActivatedAt: t0}}
	l := policy.License{ID: "l1", State: "active", CreatedAt: t0, LastValidatedAt: t0}
	got, err := c.Decide(policy.State{Keys: keys, License: &l}, t0.Add(85*day))
	if err == nil || !strings.Contains(err.Error(), "ratio") || !strings.Contains(err.Error(), "division by zero") {
		t.Fatalf("Decide error = %v, want one naming the rule and the cause", err)
	}
	if len(got) != 1 || got[0].Action != policy.ActionRotate {
		t.Errorf("decisions before the error = %v, want the rotate", got)
	}
}

func TestKeyOfLicenseOf(t *testing.T) {
	act, ret := t0.Add(day), t0.Add(2*day)
	k := policy.KeyOf(&keyward.SigningKey{KID: "k", State: keyward.KeyRetired, Algorithm: "ES256", CreatedAt: t0, ActivatedAt: &act, RetiredAt: &ret})
	if k != (policy.Key{KID: "k", State: "retired", Algorithm: "ES256", CreatedAt: t0, ActivatedAt: act, RetiredAt: ret}) {
		t.Errorf("KeyOf = %+v", k)
	}
	l := policy.LicenseOf(&keyward.License{ID: "l", State: keyward.LicenseActive, Holder: "h", MaxMachines: 2, CreatedAt: t0}, 1)
	if !l.LastValidatedAt.Equal(t0) || !l.ExpiresAt.IsZero() || l.Entitlements == nil || l.Machines != 1 {
		t.Errorf("LicenseOf(never validated, perpetual) = %+v", l)
	}
	exp, val := t0.Add(9*day), t0.Add(3*day)
	l = policy.LicenseOf(&keyward.License{ID: "l", State: keyward.LicenseActive, CreatedAt: t0, ExpiresAt: &exp, LastValidatedAt: &val, Entitlements: []string{"a"}}, 0)
	if !l.LastValidatedAt.Equal(val) || !l.ExpiresAt.Equal(exp) || len(l.Entitlements) != 1 {
		t.Errorf("LicenseOf = %+v", l)
	}
}

func TestParseCasesRefusesBadFiles(t *testing.T) {
	const head = "apiVersion: keyward.dev/v1\nkind: LifecyclePolicyTest\ncases:\n"
	const key = "    keys: [{kid: k1, state: active, created_at: 2026-01-01T00:00:00Z}]\n"
	tests := []struct{ name, doc, msg string }{
		{"Empty", "", "empty cases file"},
		{"WrongKind", "apiVersion: keyward.dev/v1\nkind: LifecyclePolicy\ncases: []\n", "want apiVersion keyward.dev/v1 and kind LifecyclePolicyTest"},
		{"NoCases", head, "no cases"},
		{"UnknownField", head + "  - name: a\n    now: 2026-01-01T00:00:00Z\n    expect: none\n    colour: red\n" + key, "field colour not found"},
		{"UnknownKeyField", head + "  - name: a\n    now: 2026-01-01T00:00:00Z\n    expect: none\n    keys: [{kid: k1, state: active, colour: red}]\n", "field colour not found"},
		{"MissingName", head + "  - now: 2026-01-01T00:00:00Z\n    expect: none\n" + key, "cases[0]: name is required"},
		{"BadNow", head + "  - name: a\n    now: tomorrow\n    expect: none\n" + key, `case "a": now "tomorrow"`},
		{"MissingExpect", head + "  - name: a\n    now: 2026-01-01T00:00:00Z\n" + key, "expect is required"},
		{"UnknownAction", head + "  - name: a\n    now: 2026-01-01T00:00:00Z\n    expect: [explode]\n" + key, `unknown action "explode"`},
		{"UnknownExpectField", head + "  - name: a\n    now: 2026-01-01T00:00:00Z\n    expect: [{action: rotate, why: x}]\n" + key, `unknown field "why"`},
		{"RepeatedName", head + "  - name: a\n    now: 2026-01-01T00:00:00Z\n    expect: none\n" + key + "  - name: a\n    now: 2026-01-01T00:00:00Z\n    expect: none\n" + key, "name used twice"},
		{"UnknownKeyState", head + "  - name: a\n    now: 2026-01-01T00:00:00Z\n    expect: none\n    keys: [{kid: k1, state: asleep}]\n", `unknown state "asleep"`},
		{"RepeatedKID", head + "  - name: a\n    now: 2026-01-01T00:00:00Z\n    expect: none\n    keys: [{kid: k1, state: active}, {kid: k1, state: pending}]\n", "keys[1]: want a unique kid"},
		{"UnknownLicenseState", head + "  - name: a\n    now: 2026-01-01T00:00:00Z\n    expect: none\n    license: {state: lost}\n", `license: unknown state "lost"`},
		{"NoState", head + "  - name: a\n    now: 2026-01-01T00:00:00Z\n    expect: none\n", "give keys, a license, or both"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := policy.ParseCases([]byte(tt.doc))
			if err == nil || !strings.Contains(err.Error(), tt.msg) {
				t.Errorf("ParseCases = %v, want an error containing %q", err, tt.msg)
			}
		})
	}
}

func TestRunCasesReportsFailures(t *testing.T) {
	c := compiled(t, nil)
	doc := `apiVersion: keyward.dev/v1
kind: LifecyclePolicyTest
cases:
  - name: wrong action
    now: 2026-03-25T00:00:00Z
    keys: [{kid: k1, state: active, created_at: 2026-01-01T00:00:00Z, activated_at: 2026-01-01T00:00:00Z}]
    expect: [activate k1]
  - name: missing decision
    now: 2026-03-25T00:00:00Z
    keys: [{kid: k1, state: active, created_at: 2026-01-01T00:00:00Z, activated_at: 2026-01-01T00:00:00Z}]
    expect: none
  - name: wrong rule
    now: 2026-03-25T00:00:00Z
    keys: [{kid: k1, state: active, created_at: 2026-01-01T00:00:00Z, activated_at: 2026-01-01T00:00:00Z}]
    expect: [{action: rotate, rule: noActiveKey}]
  - name: extra decision expected
    now: 2026-03-25T00:00:00Z
    keys: [{kid: k1, state: active, created_at: 2026-01-01T00:00:00Z, activated_at: 2026-01-01T00:00:00Z}]
    expect: [rotate, rotate]
  - name: pass
    now: 2026-03-25T00:00:00Z
    keys: [{kid: k1, state: active, created_at: 2026-01-01T00:00:00Z, activated_at: 2026-01-01T00:00:00Z}]
    expect: [rotate]
`
	cases, err := policy.ParseCases([]byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	rs := policy.RunCases(c, cases)
	for i, r := range rs {
		if want := i == len(rs)-1; r.Pass != want {
			t.Errorf("case %q: Pass = %v, want %v (got %v)", r.Name, r.Pass, want, r.Got)
		}
	}
}

// BenchmarkEvaluateRule measures one compiled CEL rule evaluation (the
// fingerprint-spray rule of the built-in default), as the validation path
// and the scheduler run it.
func BenchmarkEvaluateRule(b *testing.B) {
	c := compiled(b, func(p *keyward.Policy) { p.Retire = nil; p.AutoSuspend = p.AutoSuspend[1:] })
	l := policy.License{ID: "l1", State: "active", MaxMachines: 3, CreatedAt: t0, LastValidatedAt: t0}
	st := policy.State{License: &l, Usage: policy.Usage{DistinctFingerprints24h: 4}}
	b.ReportAllocs()
	for b.Loop() {
		if ds, err := c.Decide(st, t0); err != nil || len(ds) != 0 {
			b.Fatal(ds, err)
		}
	}
}

// BenchmarkDecide measures a full decision for a ring of three keys and a
// license under the built-in default's three rules.
func BenchmarkDecide(b *testing.B) {
	c := compiled(b, nil)
	keys := []policy.Key{
		{KID: "k0", State: "retired", CreatedAt: t0.Add(-200 * day), ActivatedAt: t0.Add(-190 * day), RetiredAt: t0.Add(-100 * day)},
		{KID: "k1", State: "active", CreatedAt: t0.Add(-100 * day), ActivatedAt: t0.Add(-10 * day)},
	}
	l := policy.License{ID: "l1", State: "active", MaxMachines: 3, CreatedAt: t0, LastValidatedAt: t0}
	st := policy.State{Keys: keys, License: &l, Usage: policy.Usage{ValidationsPerMinute: 10, DistinctFingerprints24h: 2}}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := c.Decide(st, t0.Add(day)); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkCompile measures compiling the built-in default (once per
// policy version).
func BenchmarkCompile(b *testing.B) {
	for b.Loop() {
		if _, err := policy.Compile(keyward.DefaultPolicy()); err != nil {
			b.Fatal(err)
		}
	}
}
