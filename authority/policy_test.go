package authority_test

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/keyward/keyward"
	"github.com/keyward/keyward/authority"
	"github.com/keyward/keyward/keys"
	"github.com/keyward/keyward/policy"
	"github.com/keyward/keyward/store"
)

func examplePolicy(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile("../examples/policy.yaml")
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func latestVersion(t *testing.T, f *fixture, productID string) int {
	t.Helper()
	var v int
	if err := f.store.View(context.Background(), func(tx store.Tx) error {
		var err error
		v, err = tx.LatestPolicyVersion(productID)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	return v
}

func lastAudit(t *testing.T, f *fixture) *keyward.AuditEntry {
	t.Helper()
	var out *keyward.AuditEntry
	if err := f.store.View(context.Background(), func(tx store.Tx) error {
		es, err := tx.AuditEntries(store.AuditFilter{})
		if len(es) > 0 {
			out = es[len(es)-1]
		}
		return err
	}); err != nil {
		t.Fatal(err)
	}
	return out
}

func lastEvent(t *testing.T, f *fixture) *keyward.Event {
	t.Helper()
	var out *keyward.Event
	if err := f.store.View(context.Background(), func(tx store.Tx) error {
		es, err := tx.Events(0, 0)
		if len(es) > 0 {
			out = es[len(es)-1]
		}
		return err
	}); err != nil {
		t.Fatal(err)
	}
	return out
}

func TestPolicyApplyRollbackHistory(t *testing.T) {
	f := newFixture(t)
	p := f.product(t, "acme-pro")
	const day = 24 * time.Hour

	// Before any apply: the built-in default, version 0.
	if pol, _ := f.auth.Policy(f.ctx, p.ID); pol.Version != 0 || pol.LicenseDuration != 0 || pol.RevocationApprovals != 1 {
		t.Fatalf("policy before apply = %+v, want the built-in default", pol)
	}

	v1doc := examplePolicy(t)
	c1, err := f.auth.ApplyPolicy(f.ctx, "acme-pro", v1doc, "  initial policy, OPS-1  ")
	if err != nil {
		t.Fatalf("ApplyPolicy: %v", err)
	}
	r := c1.Record
	if r.Version != 1 || c1.Previous != 0 || r.ProductID != p.ID || r.Document != v1doc || r.Author != "tok_admin" ||
		r.AuthorName != "admin" || r.Justification != "initial policy, OPS-1" || !r.CreatedAt.Equal(f.clock.Now()) || len(r.Hash) != 64 {
		t.Errorf("record = %+v", r)
	}
	if !strings.HasPrefix(c1.Diff, "--- acme-pro@builtin\n+++ acme-pro@v1\n") || !strings.Contains(c1.Diff, "+    duration: 365d\n") {
		t.Errorf("diff against the built-in default:\n%s", c1.Diff)
	}
	e := lastAudit(t, f)
	var details map[string]any
	_ = json.Unmarshal(e.Details, &details)
	if e.Action != "policy.apply" || e.TargetType != "policy" || e.TargetID != p.ID || e.Before != "builtin" || e.After != "v1" ||
		e.Reason != "initial policy, OPS-1" || e.Actor != "tok_admin" || details["version"] != 1.0 || details["hash"] != r.Hash {
		t.Errorf("audit entry = %+v, details %v", e, details)
	}
	if ev := lastEvent(t, f); ev.Type != "policy.applied" || ev.Subject != p.ID {
		t.Errorf("event = %+v, want policy.applied", ev)
	}

	// The applied policy is in force: license duration, and the version in
	// certificates.
	pol, err := f.auth.Policy(f.ctx, p.ID)
	if err != nil || pol.Version != 1 || pol.LicenseDuration != 365*day || pol.Hash != r.Hash {
		t.Fatalf("policy after apply = %+v, %v", pol, err)
	}
	is := f.issue(t, authority.IssueRequest{Product: "acme-pro", Holder: "cus_1"})
	if is.License.ExpiresAt == nil || !is.License.ExpiresAt.Equal(f.clock.Now().Add(365*day)) {
		t.Errorf("license expiry = %v, want now + 365d from the policy", is.License.ExpiresAt)
	}
	cert, err := f.auth.Checkout(f.ctx, is.License.ID)
	if err != nil {
		t.Fatal(err)
	}
	var claims keyward.CertificateClaims
	if j, err := keys.ParseJWS(cert.Token); err != nil || json.Unmarshal(j.Payload, &claims) != nil || claims.License.Policy != 1 {
		t.Errorf("certificate lic.policy = %d (%v), want 1", claims.License.Policy, err)
	}

	// Version 2 shortens leases; the diff says so.
	f.clock.Advance(time.Hour)
	v2doc := strings.Replace(v1doc, "leaseTTL: 15m", "leaseTTL: 10m", 1)
	c2, err := f.auth.ApplyPolicy(f.ctx, p.ID, v2doc, "shorter leases")
	if err != nil {
		t.Fatal(err)
	}
	if c2.Record.Version != 2 || c2.Previous != 1 || !strings.Contains(c2.Diff, "-    leaseTTL: 15m\n+    leaseTTL: 10m\n") {
		t.Errorf("apply v2 = %+v\n%s", c2.Record, c2.Diff)
	}
	v := f.validate(t, string(is.Key), "fp-1")
	if v.Lease == nil || v.Lease.ExpiresAt.Sub(f.clock.Now()) != 10*time.Minute {
		t.Errorf("lease after v2 = %+v, want a 10m lease", v.Lease)
	}

	// Rollback to 1 makes version 3 with v1's document.
	c3, err := f.auth.RollbackPolicy(f.ctx, "acme-pro", 1, "leases too short for field clients")
	if err != nil {
		t.Fatal(err)
	}
	if c3.Record.Version != 3 || c3.Record.RollbackOf != 1 || c3.Record.Document != v1doc || c3.Record.Hash != r.Hash || c3.Previous != 2 ||
		!strings.Contains(c3.Diff, "-    leaseTTL: 10m\n+    leaseTTL: 15m\n") {
		t.Errorf("rollback = %+v\n%s", c3.Record, c3.Diff)
	}
	if e := lastAudit(t, f); e.Action != "policy.rollback" || e.Before != "v2" || e.After != "v3" || e.Reason != "leases too short for field clients" {
		t.Errorf("rollback audit = %+v", e)
	}
	if pol, _ := f.auth.Policy(f.ctx, p.ID); pol.Version != 3 || pol.LeaseTTL != 15*time.Minute {
		t.Errorf("policy after rollback = v%d lease %v", pol.Version, pol.LeaseTTL)
	}

	// History, show and diff.
	h, err := f.auth.PolicyHistory(f.ctx, "acme-pro")
	if err != nil || len(h) != 3 || h[0].Version != 1 || h[2].RollbackOf != 1 || h[1].Justification != "shorter leases" {
		t.Fatalf("history = %v, %v", h, err)
	}
	if cur, err := f.auth.PolicyVersion(f.ctx, "acme-pro", -1); err != nil || cur.Version != 3 {
		t.Errorf("latest = %+v, %v", cur, err)
	}
	b, err := f.auth.PolicyVersion(f.ctx, "acme-pro", 0)
	if err != nil || b.Version != 0 || !strings.Contains(b.Document, "product: acme-pro") {
		t.Errorf("version 0 = %+v, %v", b, err)
	}
	if d, err := f.auth.PolicyDiff(f.ctx, "acme-pro", 1, 3); err != nil || d != "" {
		t.Errorf("diff 1 3 = %q, %v; want none", d, err)
	}
	if d, err := f.auth.PolicyDiff(f.ctx, "acme-pro", 2, 1); err != nil || !strings.HasPrefix(d, "--- acme-pro@v2\n+++ acme-pro@v1\n") {
		t.Errorf("diff 2 1 = %q, %v", d, err)
	}
	if c, err := f.auth.CompiledPolicy(f.ctx, "acme-pro"); err != nil || c.Version() != 3 {
		t.Errorf("CompiledPolicy = %v, %v", c, err)
	}

	// A restarted authority loads the version in force.
	a2 := mustNew(t, f, f.store)
	if pol, _ := a2.Policy(f.ctx, p.ID); pol.Version != 3 || pol.LicenseDuration != 365*day {
		t.Errorf("after restart: v%d", pol.Version)
	}
	// What another replica applies is seen after ReloadPolicies.
	if _, err := a2.ApplyPolicy(f.ctx, p.ID, v2doc, "from the other replica"); err != nil {
		t.Fatal(err)
	}
	if pol, _ := f.auth.Policy(f.ctx, p.ID); pol.Version != 3 {
		t.Errorf("before reload: v%d, want 3", pol.Version)
	}
	if err := f.auth.ReloadPolicies(f.ctx); err != nil {
		t.Fatal(err)
	}
	if pol, _ := f.auth.Policy(f.ctx, p.ID); pol.Version != 4 || pol.LeaseTTL != 10*time.Minute {
		t.Errorf("after reload: v%d lease %v, want v4 10m", pol.Version, pol.LeaseTTL)
	}
}

// TestPolicyBadInput: every refusal is precise and writes nothing.
func TestPolicyBadInput(t *testing.T) {
	f := newFixture(t)
	p := f.product(t, "acme-pro")
	f.product(t, "other")
	good := examplePolicy(t)
	if _, err := f.auth.ApplyPolicy(f.ctx, "acme-pro", good, "v1"); err != nil {
		t.Fatal(err)
	}
	scoped := keyward.NewContextWithPrincipal(context.Background(), keyward.Principal{ID: "tok_o", Name: "other-admin", Roles: []string{keyward.RoleAdmin}, ProductID: "prd_other"})
	tests := []struct {
		name   string
		do     func() error
		code   string
		msg    string
		fields []string // paths expected in Error.Fields
	}{
		{"NoJustification", func() error { _, err := f.auth.ApplyPolicy(f.ctx, "acme-pro", good, " \n "); return err },
			keyward.EInvalid, "justification is required", nil},
		{"JustificationTooLong", func() error {
			_, err := f.auth.ApplyPolicy(f.ctx, "acme-pro", good, strings.Repeat("x", authority.MaxJustification+1))
			return err
		}, keyward.EInvalid, "at most 1000", nil},
		{"YAMLError", func() error { _, err := f.auth.ApplyPolicy(f.ctx, "acme-pro", "spec: [", "x"); return err },
			keyward.EInvalid, "invalid YAML", []string{""}},
		{"WrongKind", func() error {
			_, err := f.auth.ApplyPolicy(f.ctx, "acme-pro", strings.Replace(good, "kind: LifecyclePolicy", "kind: Policy", 1), "x")
			return err
		}, keyward.EInvalid, "kind", []string{"kind"}},
		{"LintProblems", func() error {
			doc := strings.NewReplacer("destroyAfter: 400d", "destroyAfter: 90d", "rotateEvery: 90d", "rotateEvry: 90d").Replace(good)
			_, err := f.auth.ApplyPolicy(f.ctx, "acme-pro", doc, "x")
			return err
		}, keyward.EInvalid, "2 problems", []string{"spec.signingKeys.rotateEvry", "spec.signingKeys.destroyAfter"}},
		{"ApprovalsZeroOutsideDev", func() error {
			_, err := f.auth.ApplyPolicy(f.ctx, "acme-pro", strings.Replace(good, "approvals: 1 ", "approvals: 0 ", 1), "x")
			return err
		}, keyward.EInvalid, "--dev", []string{"spec.revocation.approvals"}},
		{"UnknownProduct", func() error {
			_, err := f.auth.ApplyPolicy(f.ctx, "nope", strings.Replace(good, "product: acme-pro", "product: nope", 1), "x")
			return err
		}, keyward.ENotFound, "nope", nil},
		{"ProductMismatch", func() error { _, err := f.auth.ApplyPolicy(f.ctx, "other", good, "x"); return err },
			keyward.EInvalid, `metadata.product is "acme-pro" but the policy is applied to product "other"`, []string{"metadata.product"}},
		{"Identical", func() error { _, err := f.auth.ApplyPolicy(f.ctx, p.ID, good, "again"); return err },
			keyward.EConflict, "identical to version 1", nil},
		{"OtherProductsToken", func() error { _, err := f.auth.ApplyPolicy(scoped, "acme-pro", good, "x"); return err },
			keyward.EForbidden, "another product", nil},
		{"RollbackUnknownVersion", func() error { _, err := f.auth.RollbackPolicy(f.ctx, "acme-pro", 9, "x"); return err },
			keyward.ENotFound, "no policy version 9", nil},
		{"RollbackToZero", func() error { _, err := f.auth.RollbackPolicy(f.ctx, "acme-pro", 0, "x"); return err },
			keyward.EInvalid, "version 0", nil},
		{"RollbackToCurrent", func() error { _, err := f.auth.RollbackPolicy(f.ctx, "acme-pro", 1, "x"); return err },
			keyward.EConflict, "identical to version 1", nil},
		{"RollbackNoJustification", func() error { _, err := f.auth.RollbackPolicy(f.ctx, "acme-pro", 1, ""); return err },
			keyward.EInvalid, "justification is required", nil},
		{"ShowUnknownVersion", func() error { _, err := f.auth.PolicyVersion(f.ctx, "acme-pro", 2); return err },
			keyward.ENotFound, "no policy version 2", nil},
		{"DiffUnknownVersion", func() error { _, err := f.auth.PolicyDiff(f.ctx, "acme-pro", 1, 5); return err },
			keyward.ENotFound, "no policy version 5", nil},
		{"HistoryOtherProductsToken", func() error { _, err := f.auth.PolicyHistory(scoped, "acme-pro"); return err },
			keyward.EForbidden, "another product", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a0, e0 := f.counts(t)
			err := tt.do()
			wantCode(t, err, tt.code)
			if !strings.Contains(keyward.ErrorMessage(err), tt.msg) {
				t.Errorf("message %q does not contain %q", keyward.ErrorMessage(err), tt.msg)
			}
			var ke *keyward.Error
			errors.As(err, &ke)
			var paths []string
			for _, fe := range ke.Fields {
				paths = append(paths, fe.Path)
			}
			for _, want := range tt.fields {
				if !slices.Contains(paths, want) {
					t.Errorf("fields %v do not name %q", paths, want)
				}
			}
			if a1, e1 := f.counts(t); a1 != a0 || e1 != e0 {
				t.Errorf("audit/events %d/%d -> %d/%d: a refused change wrote something", a0, e0, a1, e1)
			}
			if v := latestVersion(t, f, p.ID); v != 1 {
				t.Errorf("latest version = %d, want 1", v)
			}
		})
	}
}

func TestPolicyDevMode(t *testing.T) {
	f := newFixture(t)
	dev, err := authority.New(context.Background(), authority.Config{Store: f.store, KEKs: f.ring, Clock: f.clock, Dev: true})
	if err != nil {
		t.Fatal(err)
	}
	p, err := dev.CreateProduct(f.ctx, "acme-pro")
	if err != nil {
		t.Fatal(err)
	}
	if pol, _ := dev.Policy(f.ctx, p.ID); pol.RevocationApprovals != 0 {
		t.Errorf("dev built-in approvals = %d, want 0", pol.RevocationApprovals)
	}
	if pol, _ := f.auth.Policy(f.ctx, p.ID); pol.RevocationApprovals != 1 {
		t.Errorf("production built-in approvals = %d, want 1", pol.RevocationApprovals)
	}
	doc := strings.Replace(examplePolicy(t), "approvals: 1 ", "approvals: 0 ", 1)
	if _, err := dev.ApplyPolicy(f.ctx, "acme-pro", doc, "dev"); err != nil {
		t.Errorf("dev ApplyPolicy(approvals 0) = %v", err)
	}
	if !dev.LintOptions().Dev || f.auth.LintOptions().Dev {
		t.Error("LintOptions().Dev does not follow Config.Dev")
	}
}

func TestPolicyPermissions(t *testing.T) {
	ps := authority.PolicyPermissions()
	for _, want := range []string{authority.PermPolicyApply, authority.PermPolicyRead, authority.PermLicenseRevoke, authority.PermKeyDestroy, authority.PermTokenAdmin, "approval.grant"} {
		if !slices.Contains(ps, want) {
			t.Errorf("PolicyPermissions() lacks %s", want)
		}
	}
	if policy.MaxMachines != authority.MaxMachinesLimit {
		t.Errorf("policy.MaxMachines = %d, authority.MaxMachinesLimit = %d", policy.MaxMachines, authority.MaxMachinesLimit)
	}
	// Who may read and apply (docs/policy.md).
	for _, r := range []string{keyward.RoleIssuer, keyward.RoleRotator, keyward.RoleRevoker, keyward.RoleApprover, keyward.RoleAuditor, keyward.RoleSupport} {
		pr := keyward.Principal{Roles: []string{r}}
		if !authority.Allowed(pr, authority.PermPolicyRead, "") || authority.Allowed(pr, authority.PermPolicyApply, "") {
			t.Errorf("role %s: want policy.read and not policy.apply", r)
		}
	}
	if authority.Allowed(keyward.Principal{Roles: []string{keyward.RoleService}}, authority.PermPolicyRead, "") {
		t.Error("service may read policies")
	}
	if !authority.Allowed(keyward.Principal{Roles: []string{keyward.RoleAdmin}}, authority.PermPolicyApply, "") {
		t.Error("admin may not apply policies")
	}
}
