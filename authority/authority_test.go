package authority_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/x509"
	"encoding/json"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/keyward/keyward"
	"github.com/keyward/keyward/authority"
	"github.com/keyward/keyward/keys"
	"github.com/keyward/keyward/store"
	"github.com/keyward/keyward/store/sqlite"
)

// clock is a test clock.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time          { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) Advance(d time.Duration) { c.mu.Lock(); c.t = c.t.Add(d); c.mu.Unlock() }

type fixture struct {
	auth  *authority.Authority
	store store.Store
	ring  *keys.KEKRing
	clock *clock
	dir   string
	logs  *bytes.Buffer
	ctx   context.Context
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	dir := t.TempDir()
	ctx := context.Background()
	st, err := sqlite.Open(ctx, filepath.Join(dir, "k.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	k, err := keys.GenerateKEK(nil)
	if err != nil {
		t.Fatal(err)
	}
	f := &fixture{store: st, ring: keys.NewKEKRing(k), clock: &clock{t: time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)}, dir: dir, logs: &bytes.Buffer{}}
	f.auth = mustNew(t, f, st)
	f.ctx = keyward.NewContextWithPrincipal(ctx, keyward.Principal{ID: "tok_admin", Name: "admin", Roles: []string{keyward.RoleAdmin}})
	return f
}

func mustNew(t *testing.T, f *fixture, st store.Store) *authority.Authority {
	t.Helper()
	a, err := authority.New(context.Background(), authority.Config{
		Store: st, KEKs: f.ring, Clock: f.clock,
		Logger: slog.New(slog.NewJSONHandler(f.logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
	})
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func (f *fixture) product(t *testing.T, name string) *keyward.Product {
	t.Helper()
	p, err := f.auth.CreateProduct(f.ctx, name)
	if err != nil {
		t.Fatalf("CreateProduct(%q) = %v", name, err)
	}
	return p
}

func (f *fixture) issue(t *testing.T, r authority.IssueRequest) *authority.Issued {
	t.Helper()
	is, err := f.auth.IssueLicense(f.ctx, r)
	if err != nil {
		t.Fatalf("IssueLicense(%+v) = %v", r, err)
	}
	return is
}

func (f *fixture) validate(t *testing.T, key, fp string) *authority.Validation {
	t.Helper()
	v, err := f.auth.Validate(context.Background(), authority.ValidateRequest{Key: key, Fingerprint: fp})
	if err != nil {
		t.Fatalf("Validate = %v", err)
	}
	return v
}

func (f *fixture) counts(t *testing.T) (audit, events int) {
	t.Helper()
	err := f.store.View(context.Background(), func(tx store.Tx) error {
		a, err := tx.AuditEntries(store.AuditFilter{})
		if err != nil {
			return err
		}
		e, err := tx.Events(0, 0)
		audit, events = len(a), len(e)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return
}

func intp(n int) *int { return &n }

func wantCode(t *testing.T, err error, code string) {
	t.Helper()
	if got := keyward.ErrorCode(err); got != code {
		t.Fatalf("error = %v, want code %s", err, code)
	}
}

func TestLicenseLifecycle(t *testing.T) {
	f := newDevFixture(t) // the lifecycle itself: no approvals, second factor or duties (governance_test.go)
	f.product(t, "acme")
	is := f.issue(t, authority.IssueRequest{Product: "acme", Holder: "cust-1", Entitlements: []string{"feature-x", "feature-x", "a"}, MaxMachines: intp(2)})
	if got := is.License.Entitlements; len(got) != 2 || got[0] != "a" {
		t.Errorf("entitlements = %v, want sorted, deduplicated [a feature-x]", got)
	}
	key := string(is.Key)

	if v := f.validate(t, key, ""); v.Valid || v.Code != keyward.CodeFingerprintRequired {
		t.Errorf("no fingerprint: %v %s, want FINGERPRINT_REQUIRED", v.Valid, v.Code)
	}
	for i, fp := range []string{"m1", "m2", "m1"} {
		v := f.validate(t, key, fp)
		if !v.Valid || v.Code != keyward.CodeValid || v.Lease == nil || v.Machine == nil {
			t.Fatalf("validate #%d (%s): %+v", i, fp, v)
		}
	}
	if v := f.validate(t, key, "m3"); v.Valid || v.Code != keyward.CodeTooManyMachines || v.Lease != nil {
		t.Errorf("third machine: %v %s, want TOO_MANY_MACHINES without lease", v.Valid, v.Code)
	}
	ms, err := f.auth.Machines(f.ctx, is.License.ID)
	if err != nil || len(ms) != 2 {
		t.Fatalf("Machines = %d, %v; want 2", len(ms), err)
	}
	m1 := ms[0]
	if m1.Fingerprint != "m1" {
		m1 = ms[1]
	}
	if err := f.auth.DeactivateMachine(f.ctx, is.License.ID, m1.ID); err != nil {
		t.Fatal(err)
	}
	if v := f.validate(t, key, "m3"); !v.Valid {
		t.Errorf("after deactivation, m3: %s, want VALID", v.Code)
	}
	wantCode(t, f.auth.DeactivateMachine(f.ctx, is.License.ID, m1.ID), keyward.ENotFound)

	steps := []struct {
		action keyward.LicenseAction
		reason string
		code   string
	}{
		{keyward.LicenseSuspend, "", keyward.CodeSuspended},
		{keyward.LicenseReinstate, "", keyward.CodeValid},
		{keyward.LicenseSuspend, "abuse suspected", keyward.CodeSuspended},
		{keyward.LicenseRevoke, "abuse", keyward.CodeRevoked},
	}
	for _, s := range steps {
		if _, err := f.auth.TransitionLicense(f.ctx, is.License.ID, s.action, s.reason); err != nil {
			t.Fatalf("%s: %v", s.action, err)
		}
		if v := f.validate(t, key, "m2"); v.Code != s.code {
			t.Errorf("after %s: code %s, want %s", s.action, v.Code, s.code)
		}
	}
	// A revoked license cannot come back, and the refusal changes nothing.
	a0, e0 := f.counts(t)
	_, err = f.auth.TransitionLicense(f.ctx, is.License.ID, keyward.LicenseReinstate, "")
	wantCode(t, err, keyward.EIllegalTransition)
	_, err = f.auth.Checkout(f.ctx, is.License.ID)
	wantCode(t, err, keyward.ELicenseInactive)
	if a1, e1 := f.counts(t); a1 != a0 || e1 != e0 {
		t.Errorf("refused steps wrote audit %d->%d, events %d->%d", a0, a1, e0, e1)
	}
}

func TestRevokeNeedsReason(t *testing.T) {
	f := newFixture(t)
	f.product(t, "acme")
	is := f.issue(t, authority.IssueRequest{Product: "acme", Holder: "c"})
	for _, r := range []string{"", "because"} {
		_, err := f.auth.TransitionLicense(f.ctx, is.License.ID, keyward.LicenseRevoke, r)
		wantCode(t, err, keyward.EInvalid)
	}
}

func TestReissueGraceThenSuperseded(t *testing.T) {
	f := newFixture(t)
	f.product(t, "acme")
	is := f.issue(t, authority.IssueRequest{Product: "acme", Holder: "c", MaxMachines: intp(0)})
	old := string(is.Key)
	grace := 48 * time.Hour
	re, err := f.auth.ReissueLicense(f.ctx, is.License.ID, &grace)
	if err != nil {
		t.Fatal(err)
	}
	if re.Key == is.Key || re.License.KeyPrefix != re.Key.Prefix() {
		t.Fatalf("reissue gave key prefix %s", re.License.KeyPrefix)
	}
	if v := f.validate(t, old, ""); v.Code != keyward.CodeValid {
		t.Errorf("old key within grace: %s, want VALID", v.Code)
	}
	f.clock.Advance(grace)
	if v := f.validate(t, old, ""); v.Code != keyward.CodeSuperseded {
		t.Errorf("old key after grace: %s, want SUPERSEDED", v.Code)
	}
	if v := f.validate(t, string(re.Key), ""); v.Code != keyward.CodeValid {
		t.Errorf("new key: %s, want VALID", v.Code)
	}
}

func TestExpiry(t *testing.T) {
	f := newFixture(t)
	f.product(t, "acme")
	exp := f.clock.Now().Add(time.Hour)
	is := f.issue(t, authority.IssueRequest{Product: "acme", Holder: "c", ExpiresAt: &exp, MaxMachines: intp(0)})
	c, err := f.auth.Checkout(f.ctx, is.License.ID)
	if err != nil || !c.ExpiresAt.Equal(exp) {
		t.Fatalf("Checkout = %+v, %v; want certificate capped at the license expiry %s", c, err, exp)
	}
	f.clock.Advance(time.Hour)
	if v := f.validate(t, string(is.Key), ""); v.Code != keyward.CodeExpired {
		t.Errorf("after expiry: %s, want EXPIRED", v.Code)
	}
	past := f.clock.Now().Add(-time.Second)
	_, err = f.auth.IssueLicense(f.ctx, authority.IssueRequest{Product: "acme", Holder: "c", ExpiresAt: &past})
	wantCode(t, err, keyward.EInvalid)
}

func TestValidateBadInput(t *testing.T) {
	f := newFixture(t)
	for _, k := range []string{"", "KW1-", "hello", "KW1-00000-00000-00000-00000-00009"} {
		_, err := f.auth.Validate(context.Background(), authority.ValidateRequest{Key: k})
		wantCode(t, err, keyward.EInvalidLicenseKey)
	}
	v, err := f.auth.Validate(context.Background(), authority.ValidateRequest{Key: "KW1-00000-00000-00000-00000-00008"})
	if err != nil || v.Code != keyward.CodeNotFound || v.License != nil {
		t.Errorf("unknown key: %+v, %v; want NOT_FOUND", v, err)
	}
}

func TestIssueBadInput(t *testing.T) {
	f := newFixture(t)
	f.product(t, "acme")
	a0, _ := f.counts(t)
	for name, r := range map[string]authority.IssueRequest{
		"UnknownProduct": {Product: "nope", Holder: "c"},
		"NoHolder":       {Product: "acme"},
		"BadHolder":      {Product: "acme", Holder: "a b"},
		"BadEntitlement": {Product: "acme", Holder: "c", Entitlements: []string{"x y"}},
		"NegMachines":    {Product: "acme", Holder: "c", MaxMachines: intp(-1)},
	} {
		t.Run(name, func(t *testing.T) {
			if _, err := f.auth.IssueLicense(f.ctx, r); err == nil {
				t.Fatal("IssueLicense succeeded")
			}
		})
	}
	if a1, _ := f.counts(t); a1 != a0 {
		t.Errorf("refused issues wrote %d audit entries", a1-a0)
	}
}

func activeKeys(t *testing.T, f *fixture, productID string) []*keyward.SigningKey {
	t.Helper()
	ks, err := f.auth.Keys(f.ctx, store.KeyFilter{Ring: keyward.LicenseRing(productID), States: []keyward.KeyState{keyward.KeyActive}})
	if err != nil {
		t.Fatal(err)
	}
	return ks
}

func TestKeyRotation(t *testing.T) {
	f := newDevFixture(t) // the lifecycle itself: no approvals, second factor or duties (governance_test.go)
	p := f.product(t, "acme")
	first := activeKeys(t, f, p.ID)
	if len(first) != 1 {
		t.Fatalf("new product has %d active keys", len(first))
	}
	// Retiring the only active key is refused: the ring must keep a signer.
	_, err := f.auth.RetireKey(f.ctx, first[0].KID, "")
	wantCode(t, err, keyward.EKeyIsActive)
	_, err = f.auth.DestroyKey(f.ctx, first[0].KID, "")
	wantCode(t, err, keyward.EKeyIsActive)

	pending, err := f.auth.RotateKey(f.ctx, authority.RotateRequest{Product: "acme", Pending: true, Algorithm: "ES256"})
	if err != nil || pending.State != keyward.KeyPending {
		t.Fatalf("RotateKey(pending) = %+v, %v", pending, err)
	}
	set, err := f.auth.JWKS(f.ctx, "acme")
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := set.Find(pending.KID); !ok {
		t.Errorf("pending key %s not pre-published in JWKS", pending.KID)
	}
	// Retiring the active key hands over to the pending one.
	retired, err := f.auth.RetireKey(f.ctx, first[0].KID, "scheduled")
	if err != nil || retired.State != keyward.KeyRetired {
		t.Fatalf("RetireKey = %+v, %v", retired, err)
	}
	if a := activeKeys(t, f, p.ID); len(a) != 1 || a[0].KID != pending.KID {
		t.Fatalf("after retire, active = %v, want the pending key", a)
	}
	// New certificates are signed by the new key.
	is := f.issue(t, authority.IssueRequest{Product: "acme", Holder: "c"})
	c, err := f.auth.Checkout(f.ctx, is.License.ID)
	if err != nil || c.KID != pending.KID {
		t.Fatalf("Checkout signed by %s, %v; want %s", c.KID, err, pending.KID)
	}
	// The retired key is still published within its verify window, then not.
	if set, _ := f.auth.JWKS(f.ctx, ""); !has(set, first[0].KID) {
		t.Errorf("retired key left JWKS at once")
	}
	f.clock.Advance(31 * 24 * time.Hour)
	if set, _ := f.auth.JWKS(f.ctx, ""); has(set, first[0].KID) {
		t.Errorf("retired key still in JWKS after its verify window")
	}
	// Destroy erases the private part; a destroyed key cannot be activated.
	d, err := f.auth.DestroyKey(f.ctx, first[0].KID, "done")
	if err != nil || d.State != keyward.KeyDestroyed || d.Sealed != nil {
		t.Fatalf("DestroyKey = %+v, %v", d, err)
	}
	_, err = f.auth.ActivateKey(f.ctx, first[0].KID, "")
	wantCode(t, err, keyward.EIllegalTransition)

	// Revoking the active key replaces it at once.
	rev, err := f.auth.RevokeKey(f.ctx, pending.KID, "key_compromise")
	if err != nil || rev.State != keyward.KeyCompromised {
		t.Fatalf("RevokeKey = %+v, %v", rev, err)
	}
	a := activeKeys(t, f, p.ID)
	if len(a) != 1 || a[0].KID == pending.KID {
		t.Fatalf("after revoke, active = %v", a)
	}
	if set, _ := f.auth.JWKS(f.ctx, ""); has(set, pending.KID) {
		t.Errorf("compromised key still published")
	}
	_, err = f.auth.RotateKey(f.ctx, authority.RotateRequest{Product: "acme", Algorithm: "RS256"})
	wantCode(t, err, keyward.EInvalid)
}

func has(set keys.JWKS, kid string) bool { _, ok := set.Find(kid); return ok }

// failingStore runs the closure, so every write of the change happens in the
// transaction, then fails before commit.
type failingStore struct {
	store.Store
	armed *bool
}

var errInjected = errors.New("injected failure before commit")

func (s failingStore) Update(ctx context.Context, fn func(store.Tx) error) error {
	return s.Store.Update(ctx, func(tx store.Tx) error {
		if err := fn(tx); err != nil || !*s.armed {
			return err
		}
		return errInjected
	})
}

// TestChangeAuditOutboxAtomic forces a failure after a change (and its audit
// entry and event) were written, before commit: none of the three is left.
func TestChangeAuditOutboxAtomic(t *testing.T) {
	f := newFixture(t)
	f.product(t, "acme")
	is := f.issue(t, authority.IssueRequest{Product: "acme", Holder: "c"})
	a0, e0 := f.counts(t)
	armed := false
	failing := mustNew(t, f, failingStore{f.store, &armed})
	armed = true

	if _, err := failing.TransitionLicense(f.ctx, is.License.ID, keyward.LicenseSuspend, ""); !errors.Is(err, errInjected) {
		t.Fatalf("suspend = %v, want injected failure", err)
	}
	if _, err := failing.IssueLicense(f.ctx, authority.IssueRequest{Product: "acme", Holder: "d"}); !errors.Is(err, errInjected) {
		t.Fatalf("issue = %v, want injected failure", err)
	}
	if _, err := failing.RotateKey(f.ctx, authority.RotateRequest{Product: "acme"}); !errors.Is(err, errInjected) {
		t.Fatalf("rotate = %v, want injected failure", err)
	}
	l, err := f.auth.License(f.ctx, is.License.ID)
	if err != nil || l.State != keyward.LicenseActive {
		t.Errorf("license after failed suspend: %v, %v; want active", l.State, err)
	}
	ls, _ := f.auth.Licenses(f.ctx, store.LicenseFilter{Holder: "d"})
	if len(ls) != 0 {
		t.Errorf("failed issue left %d licenses", len(ls))
	}
	if a1, e1 := f.counts(t); a1 != a0 || e1 != e0 {
		t.Errorf("failed changes left audit %d->%d, events %d->%d", a0, a1, e0, e1)
	}
}

// TestPrivateKeysNeverInClear checks the database files and the logs for
// every private key's raw bytes.
func TestPrivateKeysNeverInClear(t *testing.T) {
	f := newFixture(t)
	f.product(t, "acme")
	if _, err := f.auth.RotateKey(f.ctx, authority.RotateRequest{Product: "acme", Algorithm: "ES256"}); err != nil {
		t.Fatal(err)
	}
	is := f.issue(t, authority.IssueRequest{Product: "acme", Holder: "c", MaxMachines: intp(0)})
	if _, err := f.auth.Checkout(f.ctx, is.License.ID); err != nil {
		t.Fatal(err)
	}
	var secrets [][]byte
	err := f.store.View(context.Background(), func(tx store.Tx) error {
		ks, err := tx.Keys(store.KeyFilter{})
		if err != nil {
			return err
		}
		for _, k := range ks {
			der, err := f.ring.Open(k.Sealed, []byte("kid:"+k.KID))
			if err != nil {
				return err
			}
			secrets = append(secrets, der)
			priv, err := x509.ParsePKCS8PrivateKey(der)
			if err != nil {
				return err
			}
			switch p := priv.(type) {
			case *ecdsa.PrivateKey:
				b, _ := p.Bytes()
				secrets = append(secrets, b)
			default:
				secrets = append(secrets, der[len(der)-32:]) // Ed25519 seed
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(secrets) < 6 {
		t.Fatalf("found %d secrets, want 3 keys × 2", len(secrets))
	}
	files, _ := filepath.Glob(filepath.Join(f.dir, "k.db*"))
	for _, name := range files {
		data, err := os.ReadFile(name)
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range secrets {
			if bytes.Contains(data, s) {
				t.Errorf("%s holds private key bytes in clear", filepath.Base(name))
			}
		}
	}
	for _, s := range secrets {
		if bytes.Contains(f.logs.Bytes(), s) {
			t.Errorf("logs hold private key bytes")
		}
	}
	if bytes.Contains(f.logs.Bytes(), []byte(is.Key)) {
		t.Errorf("logs hold a license key in clear")
	}
}

func TestRewrapAll(t *testing.T) {
	f := newFixture(t)
	f.product(t, "acme")
	is := f.issue(t, authority.IssueRequest{Product: "acme", Holder: "c", MaxMachines: intp(0)})
	k2, _ := keys.GenerateKEK(nil)
	both := keys.NewKEKRing(k2, f.ring.Primary())
	n, err := authority.RewrapAll(f.ctx, f.store, both, f.clock)
	if err != nil || n != 3 { // registry key, acme key, pepper
		t.Fatalf("RewrapAll = %d, %v; want 3", n, err)
	}
	if n, err := authority.RewrapAll(f.ctx, f.store, both, f.clock); err != nil || n != 0 {
		t.Fatalf("second RewrapAll = %d, %v; want 0 (idempotent)", n, err)
	}
	// A server with only the new KEK opens everything: the pepper still
	// matches license keys, and the keys still sign.
	f.ring = keys.NewKEKRing(k2)
	a := mustNew(t, f, f.store)
	v, err := a.Validate(context.Background(), authority.ValidateRequest{Key: string(is.Key)})
	if err != nil || !v.Valid {
		t.Fatalf("validate after KEK rotation: %+v, %v", v, err)
	}
	if _, err := a.Checkout(f.ctx, is.License.ID); err != nil {
		t.Fatalf("checkout after KEK rotation: %v", err)
	}
}

// containsKID reports whether a JWS header names kid.
func containsKID(token, kid string) bool {
	j, err := keys.ParseJWS(token)
	return err == nil && j.Header.Kid == kid
}

// TestIssueBatch: a batch of licenses gets one audit entry and one event
// per license, with consecutive seqs, each event naming its entry, the
// same entries a single issuance writes; every key validates.
func TestIssueBatch(t *testing.T) {
	f := newFixture(t)
	f.product(t, "acme")
	one := f.issue(t, authority.IssueRequest{Product: "acme", Holder: "c", MaxMachines: intp(0)})
	batch, err := f.auth.IssueLicenses(f.ctx, authority.IssueRequest{Product: "acme", Holder: "c", MaxMachines: intp(0)}, 3)
	if err != nil || len(batch) != 3 {
		t.Fatalf("IssueLicenses = %d, %v", len(batch), err)
	}
	entries := f.audited(t, "license.issue")
	events := f.events(t, "license.issued")
	if len(entries) != 4 || len(events) != 4 {
		t.Fatalf("%d audit entries, %d events; want 4 and 4", len(entries), len(events))
	}
	ids := []string{one.License.ID}
	for i, is := range batch {
		if i > 0 && is.License.ID <= batch[i-1].License.ID {
			t.Errorf("licenses not in id order: %s after %s", is.License.ID, batch[i-1].License.ID)
		}
		if v := f.validate(t, string(is.Key), ""); !v.Valid || v.License.ID != is.License.ID {
			t.Errorf("key of %s: %s, license %v", is.License.ID, v.Code, v.License)
		}
		ids = append(ids, is.License.ID)
	}
	for i, e := range entries {
		if e.TargetID != ids[i] || (i > 0 && e.Seq != entries[i-1].Seq+1) {
			t.Errorf("entry %d: seq %d, target %s; want %s after seq %d", i, e.Seq, e.TargetID, ids[i], entries[max(i-1, 0)].Seq)
		}
		var data map[string]any
		if err := json.Unmarshal(events[i].Data, &data); err != nil {
			t.Fatal(err)
		}
		if events[i].Subject != ids[i] || data["audit_seq"] != float64(e.Seq) || data["target_id"] != ids[i] {
			t.Errorf("event %d = %s %s, want the entry %d of %s", i, events[i].Subject, events[i].Data, e.Seq, ids[i])
		}
		// The event data is the JSON the map it replaced encoded to.
		if again, _ := json.Marshal(data); string(again) != string(events[i].Data) {
			t.Errorf("event data %s, as a map %s", events[i].Data, again)
		}
	}
	// The batch's entries are the single one's but for the license.
	strip := func(e *keyward.AuditEntry) string {
		var d map[string]any
		_ = json.Unmarshal(e.Details, &d)
		delete(d, "key_prefix")
		b, _ := json.Marshal(d)
		return e.Action + e.Actor + e.After + e.Before + string(b)
	}
	for _, e := range entries[1:] {
		if strip(e) != strip(entries[0]) {
			t.Errorf("batch entry %+v differs from the single issuance's %+v", e, entries[0])
		}
	}
}
