package authority_test

import (
	"context"
	"errors"
	"testing"

	"github.com/keyward/keyward"
	"github.com/keyward/keyward/authority"
	"github.com/keyward/keyward/store"
)

// revoker is a second principal: separation of duties keeps the issuer of
// a license from revoking it.
func revoker() context.Context {
	return keyward.NewContextWithPrincipal(context.Background(), keyward.Principal{ID: "tok_revoker", Name: "revoker", Roles: []string{keyward.RoleRevoker}})
}

// devAuthority is the fixture's authority in dev mode: the built-in policy
// then revokes without a second approval.
func devAuthority(t *testing.T, f *fixture, st store.Store) *authority.Authority {
	t.Helper()
	a, err := authority.New(context.Background(), authority.Config{Store: st, KEKs: f.ring, Clock: f.clock, Dev: true})
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func (f *fixture) registry(t *testing.T) []*keyward.Revocation {
	t.Helper()
	rs, err := f.auth.RevocationRows(context.Background(), "", 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	return rs
}

// TestRevocationRegistryRows checks that each revocation-relevant change
// appends one registry row with the next seq, and nothing else does.
func TestRevocationRegistryRows(t *testing.T) {
	f := newFixture(t)
	f.auth = devAuthority(t, f, f.store)
	p := f.product(t, "acme")
	a := f.issue(t, authority.IssueRequest{Product: "acme", Holder: "a"})
	b := f.issue(t, authority.IssueRequest{Product: "acme", Holder: "b"})
	if rs := f.registry(t); len(rs) != 0 {
		t.Fatalf("registry after issuing: %d rows, want 0", len(rs))
	}
	step := func(id string, action keyward.LicenseAction, reason string) {
		t.Helper()
		if _, err := f.auth.TransitionLicense(revoker(), id, action, reason); err != nil {
			t.Fatalf("%s %s: %v", action, id, err)
		}
	}
	step(a.License.ID, keyward.LicenseSuspend, "fraud investigation #42") // free text: not published
	step(a.License.ID, keyward.LicenseReinstate, "")
	step(b.License.ID, keyward.LicenseRevoke, "abuse")
	step(a.License.ID, keyward.LicenseRetire, "no longer needed") // not revocation-relevant
	keysBefore := activeKeys(t, f, p.ID)
	if _, err := f.auth.RevokeKey(revoker(), keysBefore[0].KID, "key_compromise"); err != nil {
		t.Fatal(err)
	}
	want := []keyward.Revocation{
		{ProductID: p.ID, Kind: keyward.RevocationLicense, Subject: a.License.ID, State: "suspended", Reason: ""},
		{ProductID: p.ID, Kind: keyward.RevocationLicense, Subject: a.License.ID, State: "active", Reason: ""},
		{ProductID: p.ID, Kind: keyward.RevocationLicense, Subject: b.License.ID, State: "revoked", Reason: "abuse"},
		{ProductID: p.ID, Kind: keyward.RevocationKey, Subject: keysBefore[0].KID, State: "compromised", Reason: "key_compromise"},
	}
	rs := f.registry(t)
	if len(rs) != len(want) {
		t.Fatalf("registry has %d rows, want %d: %+v", len(rs), len(want), rs)
	}
	for i, r := range rs {
		w := want[i]
		if r.ProductID != w.ProductID || r.Kind != w.Kind || r.Subject != w.Subject || r.State != w.State || r.Reason != w.Reason {
			t.Errorf("row %d = %+v, want %+v", i, *r, w)
		}
		if i > 0 && r.Seq <= rs[i-1].Seq {
			t.Errorf("row %d seq %d after %d: want increasing", i, r.Seq, rs[i-1].Seq)
		}
		if !r.Time.Equal(f.clock.Now()) {
			t.Errorf("row %d time %s, want the transaction's %s", i, r.Time, f.clock.Now())
		}
	}
	head, err := f.auth.RevocationHead(context.Background())
	if err != nil || head != rs[len(rs)-1].Seq {
		t.Errorf("RevocationHead = %d, %v; want %d", head, err, rs[len(rs)-1].Seq)
	}
	only, err := f.auth.RevocationRows(context.Background(), p.ID, rs[1].Seq, 1)
	if err != nil || len(only) != 1 || only[0].Seq != rs[2].Seq {
		t.Errorf("RevocationRows(after %d, limit 1) = %+v, %v; want seq %d", rs[1].Seq, only, err, rs[2].Seq)
	}
	if _, err := f.auth.RevocationRows(context.Background(), "", -1, 0); keyward.ErrorCode(err) != keyward.EInvalid {
		t.Errorf("RevocationRows(after -1) = %v, want INVALID_ARGUMENT", err)
	}
}

// TestRevocationRowAtomic forces a failure after a revocation (and its
// registry row) was written, before commit: no row is left, and the next
// change still gets a higher seq than every committed one.
func TestRevocationRowAtomic(t *testing.T) {
	f := newFixture(t)
	p := f.product(t, "acme")
	is := f.issue(t, authority.IssueRequest{Product: "acme", Holder: "c"})
	other := f.issue(t, authority.IssueRequest{Product: "acme", Holder: "d"})
	if _, err := f.auth.TransitionLicense(revoker(), other.License.ID, keyward.LicenseSuspend, ""); err != nil {
		t.Fatal(err)
	}
	committed := f.registry(t)
	f.auth = devAuthority(t, f, f.store)
	armed := false
	failing := devAuthority(t, f, failingStore{f.store, &armed})
	armed = true
	if _, err := failing.TransitionLicense(revoker(), is.License.ID, keyward.LicenseRevoke, "abuse"); !errors.Is(err, errInjected) {
		t.Fatalf("revoke = %v, want injected failure", err)
	}
	if _, err := failing.RevokeKey(revoker(), activeKeys(t, f, p.ID)[0].KID, ""); !errors.Is(err, errInjected) {
		t.Fatalf("revoke key = %v, want injected failure", err)
	}
	if rs := f.registry(t); len(rs) != len(committed) {
		t.Fatalf("failed revocations left %d registry rows, want %d", len(rs), len(committed))
	}
	l, err := f.auth.TransitionLicense(revoker(), is.License.ID, keyward.LicenseRevoke, "abuse")
	if err != nil || l.State != keyward.LicenseRevoked {
		t.Fatalf("revoke after the failure = %v, %v", l, err)
	}
	rs := f.registry(t)
	if last := rs[len(rs)-1]; last.Subject != is.License.ID || last.Seq <= committed[len(committed)-1].Seq {
		t.Fatalf("row after the failure = %+v; want the revocation with a seq above %d", *last, committed[len(committed)-1].Seq)
	}
}

// TestNoLeaseForRevokedOrSuspended keeps what makes revocation reach
// offline-capable clients within one lease TTL: a suspended or revoked
// license gets no new lease, and a reinstated one gets leases again.
func TestNoLeaseForRevokedOrSuspended(t *testing.T) {
	f := newFixture(t)
	f.auth = devAuthority(t, f, f.store)
	f.product(t, "acme")
	is := f.issue(t, authority.IssueRequest{Product: "acme", Holder: "c", MaxMachines: intp(2)})
	key := string(is.Key)
	if v := f.validate(t, key, "fp-1"); !v.Valid || v.Lease == nil {
		t.Fatalf("active license: valid %v, lease %v; want a lease", v.Valid, v.Lease)
	}
	for _, c := range []struct {
		action keyward.LicenseAction
		reason string
		code   string
		lease  bool
	}{
		{keyward.LicenseSuspend, "", keyward.CodeSuspended, false},
		{keyward.LicenseReinstate, "", keyward.CodeValid, true},
		{keyward.LicenseRevoke, "abuse", keyward.CodeRevoked, false},
	} {
		if _, err := f.auth.TransitionLicense(revoker(), is.License.ID, c.action, c.reason); err != nil {
			t.Fatalf("%s: %v", c.action, err)
		}
		for _, fp := range []string{"fp-1", "fp-2"} { // a known machine and a new one
			v := f.validate(t, key, fp)
			if v.Code != c.code || (v.Lease != nil) != c.lease {
				t.Errorf("after %s, Validate(%s) = code %s, lease %v; want %s, lease %v", c.action, fp, v.Code, v.Lease != nil, c.code, c.lease)
			}
		}
		if _, err := f.auth.Checkout(f.ctx, is.License.ID); (err == nil) != c.lease {
			t.Errorf("after %s, Checkout = %v", c.action, err)
		}
	}
}
