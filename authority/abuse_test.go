package authority_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/keyward/keyward"
	"github.com/keyward/keyward/authority"
	"github.com/keyward/keyward/licensekey"
	"github.com/keyward/keyward/store"
)

// abuseGuards are the revocation guards of a test policy.
type abuseGuards struct {
	cooldown string // autoSuspendCooldown
	ceiling  int    // autoSuspendCeiling
	onSignal string // suspendOnSignal, e.g. "[leak]"
}

var defaultGuards = abuseGuards{cooldown: "24h", ceiling: 10, onSignal: "[leak]"}

// applyAbusePolicy applies to product a policy with approvals 1 (as in
// production), no second factor or duties, the guards g, and rules given
// as "name: expression". It returns the version.
func applyAbusePolicy(t *testing.T, f *fixture, product string, g abuseGuards, rules ...string) int {
	t.Helper()
	var b strings.Builder
	fmt.Fprintf(&b, "apiVersion: keyward.dev/v1\nkind: LifecyclePolicy\nmetadata: {name: abuse-test, product: %s}\nspec:\n", product)
	fmt.Fprintf(&b, "  licenses: {maxMachines: 2}\n  duties: {separate: []}\n  mfa: []\n  revocation:\n    approvals: 1\n")
	fmt.Fprintf(&b, "    autoSuspendCooldown: %s\n    autoSuspendCeiling: %d\n    suspendOnSignal: %s\n    autoSuspend:", g.cooldown, g.ceiling, g.onSignal)
	if len(rules) == 0 {
		b.WriteString(" []\n")
	} else {
		b.WriteString("\n")
	}
	for _, r := range rules {
		name, when, _ := strings.Cut(r, ": ")
		fmt.Fprintf(&b, "      - name: %s\n        when: %q\n", name, when)
	}
	ch, err := f.auth.ApplyPolicy(f.ctx, product, b.String(), "abuse test")
	if err != nil {
		t.Fatalf("ApplyPolicy:\n%s\n%v", b.String(), err)
	}
	return ch.Record.Version
}

// validateFrom validates key as a client at source would.
func (f *fixture) validateFrom(t *testing.T, r authority.ValidateRequest) *authority.Validation {
	t.Helper()
	v, err := f.auth.Validate(context.Background(), r)
	if err != nil {
		t.Fatalf("Validate(%s…) = %v", r.Key[:9], err)
	}
	return v
}

// autoSuspensions returns the audit entries of automatic suspensions
// (license.suspend entries naming a rule), in order.
func (f *fixture) autoSuspensions(t *testing.T) []*keyward.AuditEntry {
	t.Helper()
	var out []*keyward.AuditEntry
	for _, e := range f.audited(t, "license.suspend") {
		if e.Rule != "" {
			out = append(out, e)
		}
	}
	return out
}

// events returns the outbox events of type typ.
func (f *fixture) events(t *testing.T, typ string) []*keyward.Event {
	t.Helper()
	var out []*keyward.Event
	err := f.store.View(context.Background(), func(tx store.Tx) error {
		es, err := tx.Events(0, 0)
		for _, e := range es {
			if e.Type == typ {
				out = append(out, e)
			}
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

type suspendDetails struct {
	ProductID     string         `json:"product_id"`
	Automatic     bool           `json:"automatic"`
	Rule          string         `json:"rule"`
	When          string         `json:"when"`
	Usage         map[string]int `json:"usage"`
	License       map[string]int `json:"license"`
	PolicyVersion int            `json:"policy_version"`
	ApprovalID    string         `json:"approval_id"`
	SignalID      string         `json:"signal_id"`
	Kind          string         `json:"kind"`
}

func details(t *testing.T, e *keyward.AuditEntry) suspendDetails {
	t.Helper()
	var d suspendDetails
	if err := json.Unmarshal(e.Details, &d); err != nil {
		t.Fatalf("audit details %s: %v", e.Details, err)
	}
	return d
}

// TestAutoSuspendBurst replays the issue's burst: 700 validations in under
// a minute against "usage.validations_per_minute > 600" suspend the license
// exactly once, with an audit entry naming the rule, the values and the
// policy version; the event goes to webhooks and the registry row to the
// stream; another license validating normally is untouched.
func TestAutoSuspendBurst(t *testing.T) {
	f := newFixture(t)
	p := f.product(t, "acme")
	version := applyAbusePolicy(t, f, "acme", defaultGuards, "burst: usage.validations_per_minute > 600")
	hot := f.issue(t, authority.IssueRequest{Product: "acme", Holder: "hot", MaxMachines: intp(0)})
	calm := f.issue(t, authority.IssueRequest{Product: "acme", Holder: "calm", MaxMachines: intp(0)})
	src := netip.MustParseAddr("198.51.100.7")

	codes := map[string]int{}
	firstSuspended := 0
	for i := 1; i <= 700; i++ {
		f.clock.Advance(70 * time.Millisecond) // 700 in 49 s
		v := f.validateFrom(t, authority.ValidateRequest{Key: string(hot.Key), Source: src})
		codes[v.Code]++
		if v.Code == keyward.CodeSuspended && firstSuspended == 0 {
			firstSuspended = i
		}
		if i%100 == 0 { // the calm license, once in a while, from elsewhere
			if v := f.validateFrom(t, authority.ValidateRequest{Key: string(calm.Key), Source: netip.MustParseAddr("203.0.113.9")}); v.Code != keyward.CodeValid {
				t.Fatalf("calm license: %s", v.Code)
			}
		}
	}
	// The rule is monotone in the rate, so the gate knows its exact
	// threshold (usage.go): it fires at the 601st validation.
	if firstSuspended != 601 || codes[keyward.CodeValid] != firstSuspended-1 {
		t.Fatalf("first SUSPENDED at validation %d; codes %v", firstSuspended, codes)
	}
	sus := f.autoSuspensions(t)
	if len(sus) != 1 {
		t.Fatalf("%d automatic suspensions, want exactly 1: %+v", len(sus), sus)
	}
	e := sus[0]
	d := details(t, e)
	if e.TargetID != hot.License.ID || e.Rule != "burst" || e.PolicyVersion != version || e.Actor != "system:abuse" ||
		e.Before != "active" || e.After != "suspended" || e.Reason != "abuse" {
		t.Errorf("audit entry = %+v", e)
	}
	if !d.Automatic || d.Rule != "burst" || d.When != "usage.validations_per_minute > 600" || d.PolicyVersion != version ||
		d.Usage["validations_per_minute"] != firstSuspended || d.Usage["distinct_networks_24h"] != 1 || d.ProductID != p.ID || d.ApprovalID == "" {
		t.Errorf("audit details = %s", e.Details)
	}
	if l := f.license(t, hot.License.ID); l.State != keyward.LicenseSuspended || l.Reason != "abuse" {
		t.Errorf("hot license %s (%s)", l.State, l.Reason)
	}
	if l := f.license(t, calm.License.ID); l.State != keyward.LicenseActive {
		t.Errorf("calm license %s", l.State)
	}
	// The event for webhooks, from the outbox.
	evs := f.events(t, "license.auto_suspended")
	if len(evs) != 1 || evs[0].Subject != hot.License.ID {
		t.Fatalf("license.auto_suspended events = %+v", evs)
	}
	var data struct {
		After    string `json:"after"`
		AuditSeq int64  `json:"audit_seq"`
		Details  struct {
			Rule string `json:"rule"`
		} `json:"details"`
	}
	if err := json.Unmarshal(evs[0].Data, &data); err != nil || data.After != "suspended" || data.AuditSeq != e.Seq || data.Details.Rule != "burst" {
		t.Errorf("event data = %s (%v)", evs[0].Data, err)
	}
	// The revocation registry row the stream publishes.
	var row *keyward.Revocation
	for _, r := range f.registry(t) {
		if r.Subject == hot.License.ID {
			row = r
		}
	}
	if row == nil || row.State != "suspended" || row.Reason != "abuse" {
		t.Errorf("registry row = %+v", row)
	}
	// Metrics.
	if st := f.auth.AbuseStats(); len(st) != 1 || st[0] != (authority.AbuseStat{Product: "acme", Rule: "burst", Outcome: "suspended", Count: 1}) {
		t.Errorf("AbuseStats = %+v", st)
	}
}

// TestAutoSuspendRules fires each kind of rule and checks its audit entry
// names it with the values that tripped it.
func TestAutoSuspendRules(t *testing.T) {
	tests := []struct {
		name, rule string
		// drive validates the license id (key, its previous key after a
		// reissue) until the rule fires; it returns how many validations.
		drive      func(t *testing.T, f *fixture, id, key, oldKey string) int
		wantValues map[string]int
	}{
		{"FingerprintSpray", "license.max_machines > 0 && usage.distinct_fingerprints_24h > 5 * license.max_machines",
			func(t *testing.T, f *fixture, id, key, _ string) int {
				for i := 1; i <= 20; i++ {
					f.clock.Advance(time.Minute)
					if v := f.validateFrom(t, authority.ValidateRequest{Key: key, Fingerprint: fmt.Sprint("machine-", i)}); v.Code == keyward.CodeSuspended {
						return i
					}
				}
				return 0
			}, map[string]int{"distinct_fingerprints_24h": 11}},
		{"FailuresWrongProduct", "usage.failed_validations_in_row >= 5",
			func(t *testing.T, f *fixture, id, key, _ string) int {
				for i := 1; i <= 20; i++ {
					f.clock.Advance(time.Second)
					v := f.validateFrom(t, authority.ValidateRequest{Key: key, Fingerprint: "m1", Product: "other-product"})
					if v.Code != keyward.CodeNotFound {
						t.Fatalf("wrong product: %s", v.Code)
					}
					if f.license(t, id).State == keyward.LicenseSuspended {
						return i
					}
				}
				return 0
			}, map[string]int{"failed_validations_in_row": 5}},
		{"FailuresTooManyMachines", "usage.failed_validations_in_row >= 3 && usage.distinct_fingerprints_24h < 10",
			func(t *testing.T, f *fixture, id, key, _ string) int {
				for i := 1; i <= 20; i++ {
					f.clock.Advance(time.Second)
					// Two machines fit (max_machines 2); the third is refused, again and again.
					fp := fmt.Sprint("m", min(i, 3))
					if v := f.validateFrom(t, authority.ValidateRequest{Key: key, Fingerprint: fp}); v.Code == keyward.CodeSuspended {
						return i
					}
				}
				return 0
			}, map[string]int{"failed_validations_in_row": 3, "distinct_fingerprints_24h": 3}},
		{"FailuresSuperseded", "usage.failed_validations_in_row >= 4",
			func(t *testing.T, f *fixture, _, _, oldKey string) int {
				for i := 1; i <= 20; i++ {
					f.clock.Advance(time.Second)
					if v := f.validateFrom(t, authority.ValidateRequest{Key: oldKey, Fingerprint: "m1"}); v.Code == keyward.CodeSuspended {
						return i
					}
				}
				return 0
			}, map[string]int{"failed_validations_in_row": 4}},
		{"Networks", "usage.distinct_networks_24h > 3",
			func(t *testing.T, f *fixture, id, key, _ string) int {
				// Addresses of one /24 (or one /48) are one network.
				for i, a := range []string{"192.0.2.1", "192.0.2.99", "::ffff:192.0.2.200", "2001:db8:7::1", "2001:db8:7:ff::2", "198.51.100.1", "192.0.2.5", "203.0.113.4"} {
					f.clock.Advance(time.Minute)
					if v := f.validateFrom(t, authority.ValidateRequest{Key: key, Fingerprint: "m1", Source: netip.MustParseAddr(a)}); v.Code == keyward.CodeSuspended {
						return i + 1
					}
				}
				return 0
			}, map[string]int{"distinct_networks_24h": 4}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t)
			f.product(t, "acme")
			version := applyAbusePolicy(t, f, "acme", defaultGuards, "the-rule: "+tt.rule)
			is := f.issue(t, authority.IssueRequest{Product: "acme", Holder: "c"})
			key, oldKey := string(is.Key), ""
			if tt.name == "FailuresSuperseded" {
				oldKey = key
				re, err := f.auth.ReissueLicense(f.ctx, is.License.ID, new(time.Duration)) // the old key is refused at once
				if err != nil {
					t.Fatal(err)
				}
				key = string(re.Key)
			}
			n := tt.drive(t, f, is.License.ID, key, oldKey)
			if n == 0 {
				t.Fatal("the rule never fired")
			}
			sus := f.autoSuspensions(t)
			if len(sus) != 1 || sus[0].Rule != "the-rule" || sus[0].PolicyVersion != version || sus[0].TargetID != is.License.ID {
				t.Fatalf("after %d validations: automatic suspensions %+v", n, sus)
			}
			d := details(t, sus[0])
			for k, want := range tt.wantValues {
				if d.Usage[k] != want {
					t.Errorf("usage.%s in the audit entry = %d, want %d (all: %v)", k, d.Usage[k], want, d.Usage)
				}
			}
			if d.License["max_machines"] != 2 || d.When != tt.rule {
				t.Errorf("audit details = %s", sus[0].Details)
			}
			if evs := f.events(t, "license.auto_suspended"); len(evs) != 1 {
				t.Errorf("%d license.auto_suspended events", len(evs))
			}
		})
	}
}

// TestAutoSuspendOpensApproval: under a production policy (approvals 1)
// the suspension files a revocation request for a person, who confirms
// it (revoked) or reinstates the license (the request is cancelled).
func TestAutoSuspendOpensApproval(t *testing.T) {
	for _, decide := range []string{"grant", "reinstate"} {
		t.Run(decide, func(t *testing.T) {
			f := newFixture(t)
			f.product(t, "acme")
			version := applyAbusePolicy(t, f, "acme", defaultGuards, "failures: usage.failed_validations_in_row >= 3")
			is := f.issue(t, authority.IssueRequest{Product: "acme", Holder: "c"})
			for range 3 {
				f.validateFrom(t, authority.ValidateRequest{Key: string(is.Key), Fingerprint: "m1", Product: "nope"})
			}
			aps, err := f.auth.Approvals(f.ctx, authority.ApprovalQuery{State: keyward.ApprovalPending, Target: is.License.ID})
			if err != nil || len(aps) != 1 {
				t.Fatalf("pending approvals = %+v, %v", aps, err)
			}
			ap := aps[0]
			if ap.Action != authority.PermLicenseRevoke || ap.RequestedBy != "system:abuse" || ap.Reason != "abuse" || ap.PolicyVersion != version || ap.Required != 1 {
				t.Errorf("approval = %+v", ap)
			}
			if d := details(t, f.autoSuspensions(t)[0]); d.ApprovalID != ap.ID {
				t.Errorf("the suspension's audit entry names approval %q, want %s", d.ApprovalID, ap.ID)
			}
			switch decide {
			case "grant":
				if _, err := f.auth.GrantApproval(as("abe", keyward.RoleApprover), ap.ID, "confirmed: shared on a forum"); err != nil {
					t.Fatal(err)
				}
				if l := f.license(t, is.License.ID); l.State != keyward.LicenseRevoked || l.Reason != "abuse" {
					t.Errorf("after the grant: %s (%s)", l.State, l.Reason)
				}
			case "reinstate":
				if _, err := f.auth.TransitionLicense(as("rita", keyward.RoleRevoker), is.License.ID, keyward.LicenseReinstate, "false alarm"); err != nil {
					t.Fatal(err)
				}
				if got, _ := f.auth.Approval(f.ctx, ap.ID); got.State != keyward.ApprovalCancelled {
					t.Errorf("approval after reinstatement: %s", got.State)
				}
				if v := f.validateFrom(t, authority.ValidateRequest{Key: string(is.Key), Fingerprint: "m1"}); v.Code != keyward.CodeValid {
					t.Errorf("validate after reinstatement: %s", v.Code)
				}
			}
		})
	}
}

// TestAutoSuspendDevNoApproval: where the policy needs no approvals (a dev
// server) the license is suspended and no request is filed.
func TestAutoSuspendDevNoApproval(t *testing.T) {
	f := newDevFixture(t)
	f.product(t, "acme")
	is := f.issue(t, authority.IssueRequest{Product: "acme", Holder: "c", MaxMachines: intp(0)})
	for range 602 { // the built-in burst rule (usage.validations_per_minute > 600, exact to 1/256: usage.go)
		f.validateFrom(t, authority.ValidateRequest{Key: string(is.Key)})
	}
	if l := f.license(t, is.License.ID); l.State != keyward.LicenseSuspended {
		t.Fatalf("license %s", l.State)
	}
	sus := f.autoSuspensions(t)
	if len(sus) != 1 || sus[0].Rule != "burst" || sus[0].PolicyVersion != 0 {
		t.Fatalf("automatic suspensions = %+v", sus)
	}
	if aps, _ := f.auth.Approvals(f.ctx, authority.ApprovalQuery{}); len(aps) != 0 {
		t.Errorf("approvals = %+v, want none", aps)
	}
}

// TestAutoSuspendCooldown: a license a person reinstated is not suspended
// again by rule before the cooldown ends.
func TestAutoSuspendCooldown(t *testing.T) {
	f := newFixture(t)
	f.product(t, "acme")
	applyAbusePolicy(t, f, "acme", abuseGuards{cooldown: "6h", ceiling: 10, onSignal: "[leak]"}, "failures: usage.failed_validations_in_row >= 3")
	is := f.issue(t, authority.IssueRequest{Product: "acme", Holder: "c"})
	fail := func(n int) string {
		for range n {
			f.clock.Advance(time.Second)
			f.validateFrom(t, authority.ValidateRequest{Key: string(is.Key), Fingerprint: "m1", Product: "nope"})
		}
		return string(f.license(t, is.License.ID).State)
	}
	if st := fail(3); st != "suspended" {
		t.Fatalf("after 3 failures: %s", st)
	}
	suspendedAt := f.clock.Now()
	reinstate := func() {
		t.Helper()
		if _, err := f.auth.TransitionLicense(as("rita", keyward.RoleRevoker), is.License.ID, keyward.LicenseReinstate, "customer explained"); err != nil {
			t.Fatal(err)
		}
	}
	reinstate()
	if st := fail(50); st != "active" {
		t.Fatalf("within the cooldown: %s", st)
	}
	u, err := f.auth.LicenseUsage(f.ctx, is.License.ID)
	if err != nil || u.CooldownUntil == nil || !u.CooldownUntil.Equal(suspendedAt.Add(6*time.Hour)) || u.Usage.FailedValidationsInRow != 53 || !u.Tracked {
		t.Fatalf("LicenseUsage = %+v, %v", u, err)
	}
	f.clock.Advance(6 * time.Hour)
	if st := fail(1); st != "suspended" {
		t.Fatalf("after the cooldown: %s", st)
	}
	if n := len(f.autoSuspensions(t)); n != 2 {
		t.Errorf("%d automatic suspensions, want 2", n)
	}
	// A second process (another replica: no memory of the first) finds the
	// cooldown in the store.
	reinstate()
	a2, err := authority.New(context.Background(), authority.Config{Store: f.store, KEKs: f.ring, Clock: f.clock})
	if err != nil {
		t.Fatal(err)
	}
	for range 5 {
		if v, err := a2.Validate(context.Background(), authority.ValidateRequest{Key: string(is.Key), Fingerprint: "m1", Product: "nope"}); err != nil || v.Code != keyward.CodeNotFound {
			t.Fatalf("replica validate = %v, %v", v, err)
		}
	}
	if l := f.license(t, is.License.ID); l.State != keyward.LicenseActive {
		t.Errorf("the replica suspended within the cooldown: %s", l.State)
	}
}

// TestAutoSuspendCeiling: a rule that matches everything suspends at most
// the ceiling per product per hour; then one alert, and the rest are held.
func TestAutoSuspendCeiling(t *testing.T) {
	f := newFixture(t)
	f.product(t, "acme")
	f.product(t, "other")
	// Matches any license validated 3 times in a minute: a bad rule.
	version := applyAbusePolicy(t, f, "acme", abuseGuards{cooldown: "24h", ceiling: 2, onSignal: "[leak]"}, "too-eager: usage.validations_per_minute >= 3")
	applyAbusePolicy(t, f, "other", abuseGuards{cooldown: "24h", ceiling: 2, onSignal: "[leak]"}, "too-eager: usage.validations_per_minute >= 3")
	var ls []*authority.Issued
	for i := range 6 {
		ls = append(ls, f.issue(t, authority.IssueRequest{Product: "acme", Holder: fmt.Sprint("c", i), MaxMachines: intp(0)}))
	}
	burst := func(is *authority.Issued) string {
		for range 3 {
			f.validateFrom(t, authority.ValidateRequest{Key: string(is.Key)})
		}
		return string(f.license(t, is.License.ID).State)
	}
	want := []string{"suspended", "suspended", "active", "active", "active"}
	for i, w := range want {
		if st := burst(ls[i]); st != w {
			t.Errorf("license %d: %s, want %s", i, st, w)
		}
	}
	if n := len(f.autoSuspensions(t)); n != 2 {
		t.Errorf("%d automatic suspensions, want 2", n)
	}
	alerts := f.audited(t, "license.auto_suspend_ceiling")
	if len(alerts) != 1 || alerts[0].TargetID != ls[2].License.ID || alerts[0].Rule != "too-eager" || alerts[0].PolicyVersion != version || alerts[0].After != "active" {
		t.Fatalf("ceiling alerts = %+v", alerts)
	}
	var d struct {
		Ceiling   int            `json:"ceiling"`
		Suspended int            `json:"suspended_in_window"`
		Usage     map[string]int `json:"usage"`
	}
	if err := json.Unmarshal(alerts[0].Details, &d); err != nil || d.Ceiling != 2 || d.Suspended != 2 || d.Usage["validations_per_minute"] != 3 {
		t.Errorf("alert details = %s", alerts[0].Details)
	}
	if evs := f.events(t, "license.auto_suspend_ceiling"); len(evs) != 1 {
		t.Errorf("%d license.auto_suspend_ceiling events, want 1", len(evs))
	}
	st := f.auth.AbuseStats()
	wantStats := []authority.AbuseStat{
		{Product: "acme", Rule: "too-eager", Outcome: "alerted", Count: 1},
		{Product: "acme", Rule: "too-eager", Outcome: "held", Count: 2},
		{Product: "acme", Rule: "too-eager", Outcome: "suspended", Count: 2},
	}
	if !slices.Equal(st, wantStats) {
		t.Errorf("AbuseStats = %+v, want %+v", st, wantStats)
	}
	// Another product has its own ceiling.
	o := f.issue(t, authority.IssueRequest{Product: "other", Holder: "o", MaxMachines: intp(0)})
	if st := burst(o); st != "suspended" {
		t.Errorf("another product's license: %s", st)
	}
	// An hour after the first suspensions the window has room again.
	f.clock.Advance(time.Hour)
	if st := burst(ls[5]); st != "suspended" {
		t.Errorf("an hour later: %s", st)
	}
	if st := burst(ls[2]); st != "suspended" {
		t.Errorf("the license held back, validating again an hour later: %s", st)
	}
	if n := len(f.audited(t, "license.auto_suspend_ceiling")); n != 1 {
		t.Errorf("%d alerts, want still 1", n)
	}
}

// TestAutoSuspendCeilingZero: ceiling 0 only alerts (a dry run of new rules).
func TestAutoSuspendCeilingZero(t *testing.T) {
	f := newFixture(t)
	f.product(t, "acme")
	applyAbusePolicy(t, f, "acme", abuseGuards{cooldown: "24h", ceiling: 0, onSignal: "[]"}, "trial: usage.validations_per_minute >= 3")
	is := f.issue(t, authority.IssueRequest{Product: "acme", Holder: "c", MaxMachines: intp(0)})
	for range 10 {
		f.validateFrom(t, authority.ValidateRequest{Key: string(is.Key)})
	}
	if l := f.license(t, is.License.ID); l.State != keyward.LicenseActive {
		t.Errorf("license %s", l.State)
	}
	if n := len(f.audited(t, "license.auto_suspend_ceiling")); n != 1 {
		t.Errorf("%d alerts, want 1", n)
	}
}

// TestAutoSuspendNotAWeapon: nobody can get a license suspended without
// holding its key. Validations of unknown keys count nowhere; another
// license's key counts only for that license, however it is used.
func TestAutoSuspendNotAWeapon(t *testing.T) {
	f := newFixture(t)
	f.product(t, "acme")
	f.product(t, "other")
	applyAbusePolicy(t, f, "acme", defaultGuards,
		"burst: usage.validations_per_minute > 50",
		"failures: usage.failed_validations_in_row >= 5",
		"spray: usage.distinct_fingerprints_24h > 4",
		"networks: usage.distinct_networks_24h > 3")
	victim := f.issue(t, authority.IssueRequest{Product: "acme", Holder: "victim", MaxMachines: intp(3)})
	attacker := f.issue(t, authority.IssueRequest{Product: "acme", Holder: "attacker", MaxMachines: intp(3)})
	auditBefore, _ := f.counts(t)

	// 1. Unknown keys: well-formed, with fingerprints, from many networks,
	// naming the victim's product.
	for i := range 300 {
		k, err := licensekey.Generate(nil)
		if err != nil {
			t.Fatal(err)
		}
		v := f.validateFrom(t, authority.ValidateRequest{Key: string(k), Fingerprint: fmt.Sprint("fp", i), Product: "acme",
			Source: netip.AddrFrom4([4]byte{10, byte(i), 0, 1})})
		if v.Code != keyward.CodeNotFound || v.License != nil {
			t.Fatalf("unknown key: %s", v.Code)
		}
	}
	// Malformed keys and keys with a bad check symbol: errors, counted nowhere.
	victimKey := string(victim.Key)
	badCheck := victimKey[:len(victimKey)-1] + "Z"
	if badCheck == victimKey { // the check symbol was Z already
		badCheck = victimKey[:len(victimKey)-1] + "Y"
	}
	for _, k := range []string{"KW1-", badCheck, strings.ToLower(victimKey[:20])} {
		if _, err := f.auth.Validate(context.Background(), authority.ValidateRequest{Key: k}); keyward.ErrorCode(err) != keyward.EInvalidLicenseKey {
			t.Fatalf("Validate(%q) = %v", k, err)
		}
	}
	// 2. The attacker's own key, abused every way: only the attacker's
	// license is suspended.
	for i := range 60 {
		f.validateFrom(t, authority.ValidateRequest{Key: string(attacker.Key), Fingerprint: fmt.Sprint("spray", i), Product: "other",
			Source: netip.AddrFrom4([4]byte{172, 16, byte(i), 1})})
	}
	if l := f.license(t, attacker.License.ID); l.State != keyward.LicenseSuspended {
		t.Errorf("attacker's license %s", l.State)
	}
	// The victim is untouched: active, no counters at all, nothing audited
	// about it, and its own normal use still works.
	if l := f.license(t, victim.License.ID); l.State != keyward.LicenseActive {
		t.Fatalf("victim's license %s", l.State)
	}
	if u, err := f.auth.LicenseUsage(f.ctx, victim.License.ID); err != nil || u.Tracked || u.Usage != (authority.UsageReport{}).Usage {
		t.Errorf("victim's usage = %+v, %v; want untracked", u, err)
	}
	var entries []*keyward.AuditEntry
	_ = f.store.View(context.Background(), func(tx store.Tx) error {
		var err error
		entries, err = tx.AuditEntries(store.AuditFilter{AfterSeq: int64(auditBefore)})
		return err
	})
	for _, e := range entries {
		if e.TargetID == victim.License.ID || strings.Contains(string(e.Details), victim.License.ID) {
			t.Errorf("audit entry about the victim: %+v", e)
		}
	}
	if v := f.validateFrom(t, authority.ValidateRequest{Key: victimKey, Fingerprint: "home"}); v.Code != keyward.CodeValid {
		t.Errorf("victim validates: %s", v.Code)
	}
}

// TestSignals records explicit signals: the policy's suspendOnSignal kinds
// suspend at once (with a revocation request), others are recorded.
func TestSignals(t *testing.T) {
	f := newFixture(t)
	f.product(t, "acme")
	version := applyAbusePolicy(t, f, "acme", abuseGuards{cooldown: "1h", ceiling: 10, onSignal: "[leak, chargeback]"})
	is := f.issue(t, authority.IssueRequest{Product: "acme", Holder: "c"})
	support := as("sam", keyward.RoleSupport)
	tick := func() { f.clock.Advance(time.Second) } // signals list in time order

	// abuse: recorded only.
	res, err := f.auth.RecordSignal(support, authority.SignalRequest{LicenseID: is.License.ID, Kind: keyward.SignalAbuse, Detail: "resold on a marketplace"})
	if err != nil || res.Signal.Outcome != keyward.SignalRecorded || res.License.State != keyward.LicenseActive || res.Approval != nil {
		t.Fatalf("abuse signal = %+v, %v", res, err)
	}
	// leak: suspended at once, with a revocation request (approvals 1).
	tick()
	res, err = f.auth.RecordSignal(support, authority.SignalRequest{LicenseID: is.License.ID, Kind: keyward.SignalLeak, Detail: "key in a public repo\nhttps://example.com/x"})
	if err != nil || res.Signal.Outcome != keyward.SignalSuspended || res.License.State != keyward.LicenseSuspended || res.Approval == nil ||
		res.Approval.Reason != "key_compromise" || res.Approval.RequestedByName != "sam" {
		t.Fatalf("leak signal = %+v, %+v, %v", res, res.Approval, err)
	}
	if v := f.validateFrom(t, authority.ValidateRequest{Key: string(is.Key), Fingerprint: "m1"}); v.Code != keyward.CodeSuspended {
		t.Errorf("validate after the leak signal: %s", v.Code)
	}
	sigs := f.audited(t, "license.signal")
	if len(sigs) != 2 || sigs[0].Rule != "" || sigs[1].Rule != "suspendOnSignal" || sigs[1].PolicyVersion != version || sigs[1].Actor != "tok_sam" ||
		!strings.Contains(string(sigs[1].Details), `"detail":"key in a public repo\nhttps://example.com/x"`) {
		t.Errorf("license.signal audit = %+v", sigs)
	}
	sus := f.autoSuspensions(t)
	if len(sus) != 1 || sus[0].Rule != "suspendOnSignal" || sus[0].Seq <= sigs[1].Seq || details(t, sus[0]).SignalID != res.Signal.ID || sus[0].Reason != "key_compromise" {
		t.Errorf("suspension audit = %+v", sus)
	}
	if n := len(f.events(t, "license.signal_recorded")); n != 2 {
		t.Errorf("%d license.signal_recorded events", n)
	}
	// chargeback on the suspended license: inactive.
	tick()
	res, err = f.auth.RecordSignal(as("svc", keyward.RoleService), authority.SignalRequest{LicenseID: is.License.ID, Kind: keyward.SignalChargeback, Detail: "dispute 77"})
	if err != nil || res.Signal.Outcome != keyward.SignalInactive {
		t.Fatalf("chargeback on a suspended license = %+v, %v", res, err)
	}
	// Reinstated within the cooldown: a new leak report does not suspend.
	if _, err := f.auth.TransitionLicense(as("rita", keyward.RoleRevoker), is.License.ID, keyward.LicenseReinstate, "key rotated"); err != nil {
		t.Fatal(err)
	}
	tick()
	res, err = f.auth.RecordSignal(support, authority.SignalRequest{LicenseID: is.License.ID, Kind: keyward.SignalLeak, Detail: "same leak, reported again"})
	if err != nil || res.Signal.Outcome != keyward.SignalCooldown || res.License.State != keyward.LicenseActive {
		t.Fatalf("leak within the cooldown = %+v, %v", res, err)
	}
	f.clock.Advance(time.Hour - 2*time.Second) // the cooldown counts from the suspension
	res, err = f.auth.RecordSignal(support, authority.SignalRequest{LicenseID: is.License.ID, Kind: keyward.SignalLeak, Detail: "leaked again"})
	if err != nil || res.Signal.Outcome != keyward.SignalSuspended {
		t.Fatalf("leak after the cooldown = %+v, %v", res, err)
	}
	got, err := f.auth.Signals(f.ctx, is.License.ID)
	if err != nil || len(got) != 5 {
		t.Fatalf("Signals = %d, %v", len(got), err)
	}
	outcomes := []string{}
	for _, s := range got {
		outcomes = append(outcomes, s.Outcome)
	}
	if want := []string{"recorded", "suspended", "inactive", "cooldown", "suspended"}; !slices.Equal(outcomes, want) {
		t.Errorf("signal outcomes %v, want %v", outcomes, want)
	}
}

// TestSignalRefused: bad input is refused with a precise error and writes
// nothing.
func TestSignalRefused(t *testing.T) {
	f := newFixture(t)
	f.product(t, "acme")
	f.product(t, "other")
	is := f.issue(t, authority.IssueRequest{Product: "acme", Holder: "c"})
	id := is.License.ID
	auditBefore, eventsBefore := f.counts(t)
	scoped := keyward.NewContextWithPrincipal(context.Background(), keyward.Principal{ID: "tok_s", Name: "svc", Roles: []string{keyward.RoleService}, ProductID: "prd_other"})
	tests := []struct {
		name string
		ctx  context.Context
		r    authority.SignalRequest
		code string
	}{
		{"UnknownKind", f.ctx, authority.SignalRequest{LicenseID: id, Kind: "fraud", Detail: "x"}, keyward.EInvalid},
		{"NoKind", f.ctx, authority.SignalRequest{LicenseID: id, Detail: "x"}, keyward.EInvalid},
		{"NoDetail", f.ctx, authority.SignalRequest{LicenseID: id, Kind: keyward.SignalLeak, Detail: "  \n"}, keyward.EInvalid},
		{"OversizedDetail", f.ctx, authority.SignalRequest{LicenseID: id, Kind: keyward.SignalLeak, Detail: strings.Repeat("x", authority.MaxSignalDetail+1)}, keyward.EInvalid},
		{"ControlCharacters", f.ctx, authority.SignalRequest{LicenseID: id, Kind: keyward.SignalLeak, Detail: "a\x1b[2Jb"}, keyward.EInvalid},
		{"NotUTF8", f.ctx, authority.SignalRequest{LicenseID: id, Kind: keyward.SignalLeak, Detail: "\xff\xfe"}, keyward.EInvalid},
		{"UnknownLicense", f.ctx, authority.SignalRequest{LicenseID: "lic_missing", Kind: keyward.SignalLeak, Detail: "x"}, keyward.ENotFound},
		{"OtherProductsToken", scoped, authority.SignalRequest{LicenseID: id, Kind: keyward.SignalLeak, Detail: "x"}, keyward.ENotFound},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := f.auth.RecordSignal(tt.ctx, tt.r)
			wantCode(t, err, tt.code)
		})
	}
	if got, err := f.auth.Signals(f.ctx, id); err != nil || len(got) != 0 {
		t.Errorf("signals after refusals: %d, %v", len(got), err)
	}
	if l := f.license(t, id); l.State != keyward.LicenseActive {
		t.Errorf("license %s", l.State)
	}
	// Only the out-of-scope refusal is audited (as every scope refusal is).
	audit, events := f.counts(t)
	denied := f.audited(t, "access.deny")
	if audit != auditBefore+len(denied) || len(denied) != 1 || events != eventsBefore {
		t.Errorf("audit %d → %d (%d refusals), events %d → %d", auditBefore, audit, len(denied), eventsBefore, events)
	}
	// The exact limit is accepted.
	if _, err := f.auth.RecordSignal(f.ctx, authority.SignalRequest{LicenseID: id, Kind: keyward.SignalOther, Detail: strings.Repeat("é", authority.MaxSignalDetail/2)}); err != nil {
		t.Errorf("detail of exactly %d bytes: %v", authority.MaxSignalDetail, err)
	}
}

func TestLicenseUsage(t *testing.T) {
	f := newFixture(t)
	f.product(t, "acme")
	is := f.issue(t, authority.IssueRequest{Product: "acme", Holder: "c", MaxMachines: intp(2)})
	for i, src := range []string{"192.0.2.1", "192.0.2.2", "2001:db8::1"} {
		f.clock.Advance(time.Second)
		f.validateFrom(t, authority.ValidateRequest{Key: string(is.Key), Fingerprint: fmt.Sprint("m", i), Source: netip.MustParseAddr(src)})
	}
	u, err := f.auth.LicenseUsage(f.ctx, is.License.ID)
	want := authority.UsageReport{LicenseID: is.License.ID, Tracked: true}
	want.Usage.ValidationsPerMinute, want.Usage.DistinctFingerprints24h, want.Usage.FailedValidationsInRow, want.Usage.DistinctNetworks24h = 3, 3, 1, 2
	if err != nil || u.Usage != want.Usage || !u.Tracked || u.CooldownUntil != nil || len(u.AutoSuspensions) != 0 {
		t.Fatalf("LicenseUsage = %+v, %v; want %+v", u, err, want)
	}
	f.clock.Advance(time.Minute)
	if u, _ := f.auth.LicenseUsage(f.ctx, is.License.ID); u.Usage.ValidationsPerMinute != 0 || u.Usage.DistinctFingerprints24h != 3 {
		t.Errorf("a minute later: %+v", u.Usage)
	}
	_, err = f.auth.LicenseUsage(f.ctx, "lic_missing")
	wantCode(t, err, keyward.ENotFound)
}

// TestAutoSuspendConcurrentBurst: validations racing from several
// goroutines suspend the license exactly once.
func TestAutoSuspendConcurrentBurst(t *testing.T) {
	f := newFixture(t)
	f.product(t, "acme")
	applyAbusePolicy(t, f, "acme", defaultGuards, "burst: usage.validations_per_minute > 100")
	is := f.issue(t, authority.IssueRequest{Product: "acme", Holder: "c", MaxMachines: intp(0)})
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 100 {
				if _, err := f.auth.Validate(context.Background(), authority.ValidateRequest{Key: string(is.Key)}); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	if n := len(f.autoSuspensions(t)); n != 1 {
		t.Errorf("%d automatic suspensions, want 1", n)
	}
	if n := len(f.events(t, "license.auto_suspended")); n != 1 {
		t.Errorf("%d license.auto_suspended events, want 1", n)
	}
	if aps, _ := f.auth.Approvals(f.ctx, authority.ApprovalQuery{Target: is.License.ID}); len(aps) != 1 {
		t.Errorf("%d approval requests, want 1", len(aps))
	}
}

// TestAutoSuspendClientHangsUp: a client that cancels its requests (hangs
// up) as soon as they are sent still gets its license suspended.
func TestAutoSuspendClientHangsUp(t *testing.T) {
	f := newFixture(t)
	f.product(t, "acme")
	applyAbusePolicy(t, f, "acme", defaultGuards, "burst: usage.validations_per_minute > 20")
	is := f.issue(t, authority.IssueRequest{Product: "acme", Holder: "c", MaxMachines: intp(0)})
	for range 2 { // the first touches the license (which drops it from the cache), the second caches it
		f.validateFrom(t, authority.ValidateRequest{Key: string(is.Key)})
	}
	gone, cancel := context.WithCancel(context.Background())
	cancel()
	for i := range 30 {
		v, err := f.auth.Validate(gone, authority.ValidateRequest{Key: string(is.Key)})
		if err != nil {
			// Once suspended the license left the cache: reading it again
			// needs the store, which the cancelled context cannot reach.
			if l := f.license(t, is.License.ID); l.State != keyward.LicenseSuspended {
				t.Fatalf("validation %d: %v while the license is %s", i, err, l.State)
			}
			break
		}
		if v.Code == keyward.CodeSuspended {
			break
		}
	}
	if l := f.license(t, is.License.ID); l.State != keyward.LicenseSuspended {
		t.Errorf("license %s, want suspended", l.State)
	}
}
