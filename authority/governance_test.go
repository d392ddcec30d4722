package authority_test

import (
	"bufio"
	"context"
	"log/slog"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/keyward/keyward"
	"github.com/keyward/keyward/authority"
	"github.com/keyward/keyward/store"
)

// policySource serves one policy for every product.
type policySource struct{ p *keyward.Policy }

func (s policySource) Policy(context.Context, string) (*keyward.Policy, error) {
	p := *s.p
	return &p, nil
}

// newFixtureWith is newFixture with cfg adjusted by fn (Dev, Policies).
func newFixtureWith(t *testing.T, fn func(*authority.Config)) *fixture {
	t.Helper()
	f := newFixture(t)
	cfg := authority.Config{Store: f.store, KEKs: f.ring, Clock: f.clock, Logger: slog.New(slog.NewJSONHandler(f.logs, nil))}
	fn(&cfg)
	a, err := authority.New(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	f.auth = a
	return f
}

// newDevFixture is newFixture on a --dev authority: its built-in policy
// needs no approvals, second factor or separate principals, for tests of
// the lifecycle itself (governance is tested below).
func newDevFixture(t *testing.T) *fixture {
	return newFixtureWith(t, func(c *authority.Config) { c.Dev = true })
}

// newGovFixture runs the authority under pol.
func newGovFixture(t *testing.T, pol *keyward.Policy) *fixture {
	return newFixtureWith(t, func(c *authority.Config) { c.Policies = policySource{pol} })
}

// as returns the context of the principal of a token named name.
func as(name string, roles ...string) context.Context {
	return keyward.NewContextWithPrincipal(context.Background(), keyward.Principal{ID: "tok_" + strings.ReplaceAll(name, " ", "_"), Name: name, Roles: roles})
}

// audited returns the audit entries with action.
func (f *fixture) audited(t *testing.T, action string) []*keyward.AuditEntry {
	t.Helper()
	var out []*keyward.AuditEntry
	err := f.store.View(context.Background(), func(tx store.Tx) error {
		var err error
		out, err = tx.AuditEntries(store.AuditFilter{Action: action})
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func (f *fixture) license(t *testing.T, id string) *keyward.License {
	t.Helper()
	l, err := f.auth.License(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// RFC 4226 Appendix D and RFC 6238 Appendix B (SHA-1), secret
// "12345678901234567890"; /work/shared/testvectors.md lists the two TOTP
// values.
func TestTOTPKnownAnswers(t *testing.T) {
	secret := []byte("12345678901234567890")
	hotp := []string{"755224", "287082", "359152", "969429", "338314", "254676", "287922", "162583", "399871", "520489"}
	for i, want := range hotp {
		if got := authority.HOTP(secret, uint64(i), 6); got != want {
			t.Errorf("HOTP(counter %d) = %s, want %s", i, got, want)
		}
	}
	for _, c := range []struct {
		unix int64
		want string
	}{
		{59, "94287082"},
		{1111111109, "07081804"},
		{1111111111, "14050471"},
		{1234567890, "89005924"},
		{2000000000, "69279037"},
		{20000000000, "65353130"},
	} {
		at := time.Unix(c.unix, 0)
		if got := authority.TOTP(secret, at, 8); got != c.want {
			t.Errorf("TOTP(T=%d, 8 digits) = %s, want %s", c.unix, got, c.want)
		}
		if got := authority.TOTP(secret, at, 6); got != c.want[2:] {
			t.Errorf("TOTP(T=%d, 6 digits) = %s, want %s", c.unix, got, c.want[2:])
		}
	}
	// The base32 form authenticator apps take decodes back.
	b, err := authority.DecodeTOTPSecret("gezd gnbv gy3t qojq gezd gnbv gy3t qojq")
	if err != nil || string(b) != string(secret) {
		t.Errorf("DecodeTOTPSecret = %q, %v", b, err)
	}
}

// TestRolesTableDocumented checks docs/governance.md's roles × permissions
// table against the code's one table, both ways.
func TestRolesTableDocumented(t *testing.T) {
	f, err := os.Open("../docs/governance.md")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var header []string
	doc := map[string]map[string]bool{} // permission → role → allowed
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if !strings.HasPrefix(line, "|") {
			if header != nil && len(doc) > 0 {
				break
			}
			continue
		}
		cells := strings.Split(strings.Trim(line, "|"), "|")
		for i := range cells {
			cells[i] = strings.Trim(strings.TrimSpace(cells[i]), "`")
		}
		if cells[0] == "permission" {
			header = cells[1:]
			continue
		}
		if header == nil || strings.HasPrefix(cells[0], "-") {
			continue
		}
		row := map[string]bool{}
		for i, c := range cells[1:] {
			if i < len(header) {
				row[header[i]] = c == "✓"
			}
		}
		doc[cells[0]] = row
	}
	if !slices.Equal(header, keyward.AllRoles()) {
		t.Fatalf("docs/governance.md table roles = %v, want %v", header, keyward.AllRoles())
	}
	for _, perm := range authority.Permissions() {
		row, ok := doc[perm]
		if !ok {
			t.Errorf("docs/governance.md lacks permission %s", perm)
			continue
		}
		for _, role := range keyward.AllRoles() {
			if want := slices.Contains(authority.RolePermissions(role), perm); row[role] != want {
				t.Errorf("docs/governance.md says %s %s %s: %v, the code says %v", role, map[bool]string{true: "holds", false: "lacks"}[row[role]], perm, row[role], want)
			}
		}
	}
	for perm := range doc {
		if !slices.Contains(authority.Permissions(), perm) {
			t.Errorf("docs/governance.md lists %s, which the code does not know", perm)
		}
	}
}

func TestDutyConflictIsRefusedAndAudited(t *testing.T) {
	f := newGovFixture(t, keyward.DefaultPolicy())
	admin := as("ada", keyward.RoleAdmin)
	if _, err := f.auth.CreateProduct(admin, "acme"); err != nil {
		t.Fatal(err)
	}
	is, err := f.auth.IssueLicense(admin, authority.IssueRequest{Product: "acme", Holder: "c"})
	if err != nil {
		t.Fatal(err)
	}
	// The issuer cannot revoke (policy [license.issue, license.revoke]),
	// whichever of its tokens it uses (principals are names).
	other := keyward.NewContextWithPrincipal(context.Background(), keyward.Principal{ID: "tok_second", Name: "ADA", Roles: []string{keyward.RoleRevoker}})
	for _, ctx := range []context.Context{admin, other} {
		_, _, err := f.auth.RevokeLicense(ctx, is.License.ID, "abuse")
		wantCode(t, err, keyward.EDutyConflict)
	}
	if l := f.license(t, is.License.ID); l.State != keyward.LicenseActive {
		t.Errorf("after refused revocations the license is %s", l.State)
	}
	denied := f.audited(t, "access.deny")
	if len(denied) != 2 || denied[0].TargetID != is.License.ID || denied[0].Actor != "tok_ada" || denied[0].Rule != "duties.separate" ||
		!strings.HasPrefix(denied[0].Reason, "DUTY_CONFLICT: ") || denied[1].Actor != "tok_second" {
		t.Fatalf("refusal audit = %+v", denied)
	}
	// Another principal may.
	l, ap, err := f.auth.RevokeLicense(as("rita", keyward.RoleRevoker), is.License.ID, "abuse")
	if err != nil || ap == nil || l.State != keyward.LicenseSuspended {
		t.Fatalf("RevokeLicense by another principal = %v, %v, %v", l, ap, err)
	}
}

func TestTwoPhaseRevocation(t *testing.T) {
	f := newGovFixture(t, keyward.DefaultPolicy())
	admin := as("ada", keyward.RoleAdmin)
	f.auth.CreateProduct(admin, "acme")
	is, err := f.auth.IssueLicense(as("ivan", keyward.RoleIssuer), authority.IssueRequest{Product: "acme", Holder: "c", MaxMachines: intp(0)})
	if err != nil {
		t.Fatal(err)
	}
	rita := as("rita", keyward.RoleRevoker)

	// The request suspends at once: validation says SUSPENDED.
	l, ap, err := f.auth.RevokeLicense(rita, is.License.ID, "abuse")
	if err != nil || ap == nil || l.State != keyward.LicenseSuspended || ap.State != keyward.ApprovalPending || ap.Required != 1 ||
		ap.RequestedByName != "rita" || ap.Action != authority.PermLicenseRevoke || !ap.ExpiresAt.Equal(f.clock.Now().Add(authority.ApprovalTTL)) {
		t.Fatalf("RevokeLicense = %+v, %+v, %v", l, ap, err)
	}
	if v := f.validate(t, string(is.Key), ""); v.Code != keyward.CodeSuspended {
		t.Errorf("validate after the request: %s, want SUSPENDED", v.Code)
	}
	// A second request for the same license is a conflict.
	_, _, err = f.auth.RevokeLicense(rita, is.License.ID, "abuse")
	wantCode(t, err, keyward.EConflict)

	// The requester cannot approve; nor can the issuer (it would revoke
	// what it issued).
	_, err = f.auth.GrantApproval(rita, ap.ID, "")
	wantCode(t, err, keyward.EDutyConflict)
	_, err = f.auth.GrantApproval(as("ivan", keyward.RoleApprover), ap.ID, "")
	wantCode(t, err, keyward.EDutyConflict)
	if got := f.license(t, is.License.ID); got.State != keyward.LicenseSuspended {
		t.Fatalf("refused grants changed the license to %s", got.State)
	}

	// A second principal grants: revoked in the same transaction.
	granted, err := f.auth.GrantApproval(as("abe", keyward.RoleApprover), ap.ID, "checked the logs")
	if err != nil || granted.State != keyward.ApprovalGranted || len(granted.Grants) != 1 || granted.DecidedByName != "abe" {
		t.Fatalf("GrantApproval = %+v, %v", granted, err)
	}
	if got := f.license(t, is.License.ID); got.State != keyward.LicenseRevoked || got.Reason != "abuse" {
		t.Fatalf("after the grant the license is %s (%s)", got.State, got.Reason)
	}
	if v := f.validate(t, string(is.Key), ""); v.Code != keyward.CodeRevoked {
		t.Errorf("validate after the grant: %s, want REVOKED", v.Code)
	}
	rev := f.audited(t, "license.revoke")
	if len(rev) != 1 || !slices.Equal(rev[0].ApprovalIDs, []string{ap.ID}) || rev[0].Actor != "tok_abe" {
		t.Fatalf("license.revoke audit = %+v", rev)
	}
	// Exactly once: a further grant is refused and changes nothing.
	_, err = f.auth.GrantApproval(as("bob", keyward.RoleApprover), ap.ID, "")
	wantCode(t, err, keyward.EIllegalTransition)
	if n := len(f.audited(t, "license.revoke")); n != 1 {
		t.Errorf("%d license.revoke entries, want 1", n)
	}
	for _, ev := range []string{"approval.request", "approval.grant", "license.suspend"} {
		if len(f.audited(t, ev)) != 1 {
			t.Errorf("want one %s audit entry", ev)
		}
	}
}

func TestApprovalsNeedDistinctPrincipals(t *testing.T) {
	pol := keyward.DefaultPolicy()
	pol.RevocationApprovals = 2
	f := newGovFixture(t, pol)
	f.auth.CreateProduct(as("ada", keyward.RoleAdmin), "acme")
	is, _ := f.auth.IssueLicense(as("ivan", keyward.RoleIssuer), authority.IssueRequest{Product: "acme", Holder: "c"})
	_, ap, err := f.auth.RevokeLicense(as("rita", keyward.RoleRevoker), is.License.ID, "non_payment")
	if err != nil || ap.Required != 2 {
		t.Fatalf("RevokeLicense = %+v, %v", ap, err)
	}
	abe := as("abe", keyward.RoleApprover)
	if g, err := f.auth.GrantApproval(abe, ap.ID, ""); err != nil || g.State != keyward.ApprovalPending || len(g.Grants) != 1 {
		t.Fatalf("first grant = %+v, %v", g, err)
	}
	if f.license(t, is.License.ID).State != keyward.LicenseSuspended {
		t.Fatal("one grant of two revoked the license")
	}
	// The same principal again, with another token: refused.
	abe2 := keyward.NewContextWithPrincipal(context.Background(), keyward.Principal{ID: "tok_abe_laptop", Name: "abe", Roles: []string{keyward.RoleApprover}})
	_, err = f.auth.GrantApproval(abe2, ap.ID, "")
	wantCode(t, err, keyward.EConflict)
	if g, err := f.auth.GrantApproval(as("bea", keyward.RoleApprover), ap.ID, ""); err != nil || g.State != keyward.ApprovalGranted {
		t.Fatalf("second grant = %+v, %v", g, err)
	}
	if f.license(t, is.License.ID).State != keyward.LicenseRevoked {
		t.Fatal("two grants did not revoke")
	}
}

func TestApprovalExpiryRevertsNothing(t *testing.T) {
	f := newGovFixture(t, keyward.DefaultPolicy())
	f.auth.CreateProduct(as("ada", keyward.RoleAdmin), "acme")
	is, _ := f.auth.IssueLicense(as("ivan", keyward.RoleIssuer), authority.IssueRequest{Product: "acme", Holder: "c"})
	rita := as("rita", keyward.RoleRevoker)
	_, ap, err := f.auth.RevokeLicense(rita, is.License.ID, "abuse")
	if err != nil {
		t.Fatal(err)
	}
	f.clock.Advance(authority.ApprovalTTL)
	_, err = f.auth.GrantApproval(as("abe", keyward.RoleApprover), ap.ID, "")
	wantCode(t, err, keyward.EApprovalExpired)
	if !strings.Contains(keyward.ErrorMessage(err), "nothing was reverted") {
		t.Errorf("expiry message %q does not say nothing was reverted", keyward.ErrorMessage(err))
	}
	if l := f.license(t, is.License.ID); l.State != keyward.LicenseSuspended {
		t.Errorf("after expiry the license is %s, want suspended", l.State)
	}
	got, err := f.auth.Approval(context.Background(), ap.ID)
	if err != nil || got.State != keyward.ApprovalExpired {
		t.Fatalf("Approval after expiry = %+v, %v", got, err)
	}
	if aps, _ := f.auth.Approvals(context.Background(), authority.ApprovalQuery{State: keyward.ApprovalPending}); len(aps) != 0 {
		t.Errorf("pending list holds an expired request")
	}
	// A new request is possible and records the old one's expiry.
	_, ap2, err := f.auth.RevokeLicense(rita, is.License.ID, "abuse")
	if err != nil || ap2 == nil || ap2.ID == ap.ID {
		t.Fatalf("request after expiry = %+v, %v", ap2, err)
	}
	if exp := f.audited(t, "approval.expire"); len(exp) != 1 || exp[0].TargetID != ap.ID || exp[0].Actor != "system" {
		t.Errorf("approval.expire audit = %+v", exp)
	}
	f.clock.Advance(authority.ApprovalTTL)
	if n, err := f.auth.ExpireApprovals(context.Background()); n != 1 || err != nil {
		t.Errorf("ExpireApprovals = %d, %v, want 1", n, err)
	}
}

func TestDenyAndReinstate(t *testing.T) {
	f := newGovFixture(t, keyward.DefaultPolicy())
	f.auth.CreateProduct(as("ada", keyward.RoleAdmin), "acme")
	is, _ := f.auth.IssueLicense(as("ivan", keyward.RoleIssuer), authority.IssueRequest{Product: "acme", Holder: "c"})
	rita := as("rita", keyward.RoleRevoker)
	_, ap, _ := f.auth.RevokeLicense(rita, is.License.ID, "abuse")

	_, err := f.auth.DenyApproval(as("abe", keyward.RoleApprover), ap.ID, "")
	wantCode(t, err, keyward.EInvalid)
	d, err := f.auth.DenyApproval(as("abe", keyward.RoleApprover), ap.ID, "false positive: a CI rig")
	if err != nil || d.State != keyward.ApprovalDenied || d.DecisionReason != "false positive: a CI rig" {
		t.Fatalf("DenyApproval = %+v, %v", d, err)
	}
	if l := f.license(t, is.License.ID); l.State != keyward.LicenseSuspended {
		t.Errorf("after a denial the license is %s, want suspended (a human decides)", l.State)
	}
	_, err = f.auth.GrantApproval(as("bea", keyward.RoleApprover), ap.ID, "")
	wantCode(t, err, keyward.EIllegalTransition)

	// Request again, then reinstate: the request is cancelled.
	_, ap2, err := f.auth.RevokeLicense(rita, is.License.ID, "abuse")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.auth.TransitionLicense(rita, is.License.ID, keyward.LicenseReinstate, ""); err != nil {
		t.Fatal(err)
	}
	if got, _ := f.auth.Approval(context.Background(), ap2.ID); got.State != keyward.ApprovalCancelled {
		t.Errorf("after reinstatement the request is %s, want cancelled", got.State)
	}
	_, err = f.auth.GrantApproval(as("bea", keyward.RoleApprover), ap2.ID, "")
	wantCode(t, err, keyward.EIllegalTransition)
	if l := f.license(t, is.License.ID); l.State != keyward.LicenseActive {
		t.Errorf("license is %s, want active", l.State)
	}
}

func TestDirectRevocationWithoutApprovals(t *testing.T) {
	f := newDevFixture(t)
	f.auth.CreateProduct(f.ctx, "acme")
	is := f.issue(t, authority.IssueRequest{Product: "acme", Holder: "c"})
	l, ap, err := f.auth.RevokeLicense(f.ctx, is.License.ID, "abuse")
	if err != nil || ap != nil || l.State != keyward.LicenseRevoked {
		t.Fatalf("RevokeLicense on a dev server = %+v, %+v, %v", l, ap, err)
	}
}

func TestKeyDestructionNeedsApproval(t *testing.T) {
	f := newGovFixture(t, keyward.DefaultPolicy())
	f.auth.CreateProduct(as("ada", keyward.RoleAdmin), "acme")
	ks, _ := f.auth.Keys(context.Background(), store.KeyFilter{ProductID: "acme"})
	first := ks[0].KID
	rob := as("rob", keyward.RoleRotator)
	if _, err := f.auth.RotateKey(rob, authority.RotateRequest{Product: "acme"}); err != nil {
		t.Fatal(err)
	}
	_, ap, err := f.auth.DestroyKeyWithApproval(rob, first, "past destroyAfter")
	if err != nil || ap == nil || ap.TargetType != "key" {
		t.Fatalf("DestroyKeyWithApproval = %+v, %v", ap, err)
	}
	if k, _ := f.auth.Key(context.Background(), first); k.State != keyward.KeyRetired || k.Sealed == nil {
		t.Fatalf("the key changed before approval: %s", k.State)
	}
	// ada created the product, so its first key: [key.rotate, approval.grant].
	_, err = f.auth.GrantApproval(as("ada", keyward.RoleAdmin), ap.ID, "")
	wantCode(t, err, keyward.EDutyConflict)
	if _, err := f.auth.GrantApproval(as("abe", keyward.RoleApprover), ap.ID, ""); err != nil {
		t.Fatal(err)
	}
	k, _ := f.auth.Key(context.Background(), first)
	if k.State != keyward.KeyDestroyed || k.Sealed != nil {
		t.Fatalf("after the grant the key is %s (sealed %v)", k.State, k.Sealed != nil)
	}
	if d := f.audited(t, "key.destroy"); len(d) != 1 || !slices.Equal(d[0].ApprovalIDs, []string{ap.ID}) {
		t.Errorf("key.destroy audit = %+v", d)
	}
	// The rotator of the new key cannot approve its destruction either.
	ks, _ = f.auth.Keys(context.Background(), store.KeyFilter{ProductID: "acme", States: []keyward.KeyState{keyward.KeyActive}})
	if _, err := f.auth.RotateKey(as("ada", keyward.RoleAdmin), authority.RotateRequest{Product: "acme"}); err != nil {
		t.Fatal(err)
	}
	_, ap2, err := f.auth.DestroyKeyWithApproval(as("ada", keyward.RoleAdmin), ks[0].KID, "")
	if err != nil {
		t.Fatal(err)
	}
	_, err = f.auth.GrantApproval(as("rob", keyward.RoleApprover), ap2.ID, "")
	wantCode(t, err, keyward.EDutyConflict)
}

func TestMFA(t *testing.T) {
	f := newGovFixture(t, keyward.DefaultPolicy())
	f.auth.CreateProduct(as("ada", keyward.RoleAdmin), "acme")
	p, _ := f.auth.Product(context.Background(), "acme")
	rita := as("rita", keyward.RoleRevoker)
	req := func(code string) error {
		return f.auth.RequireMFA(authority.WithOTP(rita, code), authority.PermLicenseRevoke, p.ID, "license", "lic_x")
	}
	// Not enrolled: MFA_REQUIRED. In-process callers (no WithOTP) are trusted.
	wantCode(t, req(""), keyward.EMFARequired)
	if err := f.auth.RequireMFA(rita, authority.PermLicenseRevoke, p.ID, "license", "lic_x"); err != nil {
		t.Errorf("RequireMFA without a transport = %v", err)
	}
	// Permissions the policy does not list need nothing.
	if err := f.auth.RequireMFA(authority.WithOTP(rita, ""), authority.PermLicenseSuspend, p.ID, "license", "lic_x"); err != nil {
		t.Errorf("RequireMFA(license.suspend) = %v", err)
	}

	m, err := f.auth.EnrollMFA(authority.WithOTP(rita, ""))
	if err != nil || !strings.HasPrefix(m.URI, "otpauth://totp/Keyward:rita?") || !strings.Contains(m.URI, "secret="+m.Secret) {
		t.Fatalf("EnrollMFA = %+v, %v", m, err)
	}
	secret, err := authority.DecodeTOTPSecret(m.Secret)
	if err != nil || len(secret) != 20 {
		t.Fatalf("secret %q: %v", m.Secret, err)
	}
	code := func() string { return authority.TOTP(secret, f.clock.Now(), 6) }
	// wrong is no code of the window around now.
	wrongCode := func() string {
		for _, c := range []string{"000000", "000001", "000002", "000003"} {
			if !slices.ContainsFunc([]time.Duration{-authority.TOTPPeriod, 0, authority.TOTPPeriod}, func(d time.Duration) bool {
				return authority.TOTP(secret, f.clock.Now().Add(d), 6) == c
			}) {
				return c
			}
		}
		panic("unreachable")
	}

	wantCode(t, req(""), keyward.EMFARequired)
	wrong := wrongCode()
	wantCode(t, req(wrong), keyward.EMFAInvalid)
	wantCode(t, req("12345"), keyward.EMFAInvalid)
	if err := req(code()); err != nil {
		t.Fatalf("RequireMFA(current code) = %v", err)
	}
	// One-time: the same code is a replay; so is the previous step's.
	wantCode(t, req(code()), keyward.EMFAInvalid)
	wantCode(t, req(authority.TOTP(secret, f.clock.Now().Add(-authority.TOTPPeriod), 6)), keyward.EMFAInvalid)
	f.clock.Advance(authority.TOTPPeriod)
	if err := req(code()); err != nil {
		t.Fatalf("RequireMFA(next code) = %v", err)
	}
	// One step of clock skew either way is accepted.
	if err := req(authority.TOTP(secret, f.clock.Now().Add(authority.TOTPPeriod), 6)); err != nil {
		t.Errorf("RequireMFA(code one step ahead) = %v", err)
	}
	if n := len(f.audited(t, "access.deny")); n != 6 {
		t.Errorf("%d refusals audited, want 6", n)
	}

	// Re-enrollment needs a current code; a stolen token alone cannot.
	_, err = f.auth.EnrollMFA(authority.WithOTP(rita, ""))
	wantCode(t, err, keyward.EMFARequired)

	// Wrong codes lock the factor.
	f.clock.Advance(10 * authority.TOTPPeriod)
	wrong = wrongCode()
	for range authority.MFAMaxFailures {
		wantCode(t, req(wrong), keyward.EMFAInvalid)
	}
	err = req(code())
	wantCode(t, err, keyward.EMFAInvalid)
	if !strings.Contains(keyward.ErrorMessage(err), "locked") {
		t.Errorf("locked: %v", err)
	}
	f.clock.Advance(authority.MFALockout)
	if err := req(code()); err != nil {
		t.Errorf("after the lockout: %v", err)
	}

	// An admin resets a lost authenticator; then rita enrolls afresh.
	if err := f.auth.ResetMFA(as("ada", keyward.RoleAdmin), "Rita"); err != nil {
		t.Fatal(err)
	}
	wantCode(t, f.auth.ResetMFA(as("ada", keyward.RoleAdmin), "rita"), keyward.ENotFound)
	if _, err := f.auth.EnrollMFA(authority.WithOTP(rita, "")); err != nil {
		t.Errorf("enroll after reset: %v", err)
	}
	// Only token principals enroll.
	_, err = f.auth.EnrollMFA(keyward.NewContextWithPrincipal(context.Background(), keyward.Principal{ID: "system"}))
	wantCode(t, err, keyward.EForbidden)
}

func TestTokens(t *testing.T) {
	f := newGovFixture(t, keyward.DefaultPolicy())
	sys := keyward.NewContextWithPrincipal(context.Background(), keyward.Principal{ID: "system", Name: "keyward server"})
	root, rootSecret, err := f.auth.CreateToken(sys, authority.TokenRequest{Name: "root", Roles: []string{keyward.RoleAdmin}})
	if err != nil || root.ExpiresAt != nil {
		t.Fatalf("bootstrap token = %+v, %v", root, err)
	}
	admin := as("ada", keyward.RoleAdmin)
	f.auth.CreateProduct(admin, "acme")
	f.auth.CreateProduct(admin, "other")
	acme, _ := f.auth.Product(context.Background(), "acme")

	cases := []struct {
		name string
		ctx  context.Context
		r    authority.TokenRequest
		code string
	}{
		{"HumanNeedsTTL", admin, authority.TokenRequest{Name: "ivan", Roles: []string{keyward.RoleIssuer}}, keyward.EInvalid},
		{"TTLTooLong", admin, authority.TokenRequest{Name: "ivan", Roles: []string{keyward.RoleIssuer}, TTL: 400 * 24 * time.Hour}, keyward.EInvalid},
		{"BadName", admin, authority.TokenRequest{Name: " ivan", Roles: []string{keyward.RoleIssuer}, TTL: time.Hour}, keyward.EInvalid},
		{"ControlInName", admin, authority.TokenRequest{Name: "iv\x1bn", Roles: []string{keyward.RoleIssuer}, TTL: time.Hour}, keyward.EInvalid},
		{"UnknownRole", admin, authority.TokenRequest{Name: "ivan", Roles: []string{"root"}, TTL: time.Hour}, keyward.EInvalid},
		{"NoEscalation", as("ivan", keyward.RoleIssuer), authority.TokenRequest{Name: "x", Roles: []string{keyward.RoleRevoker}, TTL: time.Hour}, keyward.EForbidden},
		{"ScopedCannotWiden", keyward.NewContextWithPrincipal(context.Background(), keyward.Principal{ID: "tok_s", Name: "s", Roles: []string{keyward.RoleAdmin}, ProductID: acme.ID}),
			authority.TokenRequest{Name: "x", Roles: []string{keyward.RoleIssuer}, TTL: time.Hour}, keyward.EForbidden},
		{"ScopedOtherProduct", keyward.NewContextWithPrincipal(context.Background(), keyward.Principal{ID: "tok_s", Name: "s", Roles: []string{keyward.RoleIssuer}, ProductID: acme.ID}),
			authority.TokenRequest{Name: "x", Roles: []string{keyward.RoleIssuer}, Product: "other", TTL: time.Hour}, keyward.ENotFound},
		{"ServiceForever", admin, authority.TokenRequest{Name: "backend", Roles: []string{keyward.RoleService}}, ""},
		{"Issuer", admin, authority.TokenRequest{Name: "ivan", Roles: []string{keyward.RoleIssuer, keyward.RoleIssuer}, Product: "acme", TTL: 8 * time.Hour}, ""},
		{"SameRolesAsOwn", as("ivan", keyward.RoleIssuer), authority.TokenRequest{Name: "ivan ci", Roles: []string{keyward.RoleIssuer}, TTL: time.Hour}, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			tok, secret, err := f.auth.CreateToken(c.ctx, c.r)
			if c.code != "" {
				wantCode(t, err, c.code)
				return
			}
			if err != nil || !strings.HasPrefix(secret, authority.TokenPrefix) {
				t.Fatalf("CreateToken = %+v, %v", tok, err)
			}
			p, err := f.auth.Authenticate(context.Background(), secret)
			if err != nil || p.Name != c.r.Name {
				t.Fatalf("Authenticate = %+v, %v", p, err)
			}
		})
	}

	ts, err := f.auth.Tokens(context.Background())
	if err != nil || len(ts) != 4 {
		t.Fatalf("Tokens = %d, %v", len(ts), err)
	}
	for _, tok := range ts {
		if tok.Hash != nil {
			t.Errorf("Tokens() returns the hash of %s", tok.ID)
		}
	}
	// Revocation takes effect at once; the last admin token stays.
	_, sec, _ := f.auth.CreateToken(admin, authority.TokenRequest{Name: "ivan", Roles: []string{keyward.RoleIssuer}, TTL: time.Hour})
	p, _ := f.auth.Authenticate(context.Background(), sec)
	if _, err := f.auth.RevokeToken(admin, p.ID); err != nil {
		t.Fatal(err)
	}
	_, err = f.auth.Authenticate(context.Background(), sec)
	wantCode(t, err, keyward.EUnauthenticated)
	_, err = f.auth.RevokeToken(admin, p.ID)
	wantCode(t, err, keyward.EIllegalTransition)
	_, err = f.auth.RevokeToken(admin, root.ID)
	wantCode(t, err, keyward.EConflict)
	if _, err := f.auth.Authenticate(context.Background(), rootSecret); err != nil {
		t.Errorf("the last admin token stopped working: %v", err)
	}
	// Expiry.
	f.clock.Advance(8 * time.Hour)
	for _, tok := range ts {
		if tok.Name == "ivan" && authority.TokenState(tok, f.clock.Now()) != "expired" {
			t.Errorf("token %s after its ttl: %s", tok.ID, authority.TokenState(tok, f.clock.Now()))
		}
	}
	if n := len(f.audited(t, "token.revoke")); n != 1 {
		t.Errorf("%d token.revoke entries, want 1", n)
	}
}

func TestProductScope(t *testing.T) {
	f := newGovFixture(t, keyward.DefaultPolicy())
	admin := as("ada", keyward.RoleAdmin)
	f.auth.CreateProduct(admin, "acme")
	f.auth.CreateProduct(admin, "other")
	acme, _ := f.auth.Product(context.Background(), "acme")
	scoped := keyward.NewContextWithPrincipal(context.Background(), keyward.Principal{ID: "tok_s", Name: "s", Roles: []string{keyward.RoleIssuer}, ProductID: acme.ID})
	ps, err := f.auth.Products(scoped)
	if err != nil || len(ps) != 1 || ps[0].Name != "acme" {
		t.Fatalf("Products(scoped) = %v, %v", ps, err)
	}
	_, err = f.auth.IssueLicense(scoped, authority.IssueRequest{Product: "other", Holder: "c"})
	wantCode(t, err, keyward.ENotFound)
	if keyward.ErrorMessage(err) != "product other not found" {
		t.Errorf("out-of-scope message %q differs from a missing product's", keyward.ErrorMessage(err))
	}
	if d := f.audited(t, "access.deny"); len(d) != 1 || !strings.Contains(d[0].Reason, "scope") {
		t.Errorf("scope refusal audit = %+v", d)
	}
	if _, err := f.auth.IssueLicense(scoped, authority.IssueRequest{Product: "acme", Holder: "c"}); err != nil {
		t.Errorf("IssueLicense in scope: %v", err)
	}
	// Approvals of another product are invisible.
	is, _ := f.auth.IssueLicense(as("ivan", keyward.RoleIssuer), authority.IssueRequest{Product: "other", Holder: "c"})
	_, ap, _ := f.auth.RevokeLicense(as("rita", keyward.RoleRevoker), is.License.ID, "abuse")
	_, err = f.auth.Approval(scoped, ap.ID)
	wantCode(t, err, keyward.ENotFound)
	_, err = f.auth.GrantApproval(keyward.NewContextWithPrincipal(context.Background(), keyward.Principal{ID: "tok_a", Name: "a", Roles: []string{keyward.RoleApprover}, ProductID: acme.ID}), ap.ID, "")
	wantCode(t, err, keyward.ENotFound)
	if aps, err := f.auth.Approvals(scoped, authority.ApprovalQuery{}); err != nil || len(aps) != 0 {
		t.Errorf("Approvals(scoped) = %d, %v", len(aps), err)
	}
	_, err = f.auth.Approvals(scoped, authority.ApprovalQuery{Product: "other"})
	wantCode(t, err, keyward.ENotFound)
}

// TestRefusalsLeakNoSecrets: refusal audit entries carry codes and
// messages, never a TOTP code or token.
func TestRefusalsLeakNoSecrets(t *testing.T) {
	f := newGovFixture(t, keyward.DefaultPolicy())
	f.auth.CreateProduct(as("ada", keyward.RoleAdmin), "acme")
	rita := as("rita", keyward.RoleRevoker)
	if _, err := f.auth.EnrollMFA(authority.WithOTP(rita, "")); err != nil {
		t.Fatal(err)
	}
	err := f.auth.RequireMFA(authority.WithOTP(rita, "987654"), authority.PermLicenseRevoke, "", "license", "lic_x")
	if keyward.ErrorCode(err) != keyward.EMFAInvalid {
		t.Fatalf("RequireMFA = %v", err)
	}
	for _, e := range f.audited(t, "access.deny") {
		if strings.Contains(e.Reason, "987654") || strings.Contains(string(e.Details), "987654") {
			t.Errorf("refusal audit carries the code: %+v", e)
		}
	}
}
