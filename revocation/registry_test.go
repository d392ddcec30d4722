package revocation_test

import (
	"context"
	"encoding/json"
	"errors"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/keyward/keyward"
	"github.com/keyward/keyward/authority"
	"github.com/keyward/keyward/keys"
	"github.com/keyward/keyward/revocation"
	"github.com/keyward/keyward/sdk"
	"github.com/keyward/keyward/store"
	"github.com/keyward/keyward/store/sqlite"
)

type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time          { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) Advance(d time.Duration) { c.mu.Lock(); c.t = c.t.Add(d); c.mu.Unlock() }

type env struct {
	st    store.Store
	auth  *authority.Authority
	reg   *revocation.Registry
	clock *clock
	ctx   context.Context // issues licenses, rotates keys
	rctx  context.Context // suspends, revokes (separation of duties: not the issuer)
}

// newEnv starts a registry over a real SQLite store and authority; commits
// notify the registry as the server wires them.
func newEnv(t *testing.T, cfg revocation.Config) *env {
	t.Helper()
	ctx := context.Background()
	st, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "k.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	kek, err := keys.GenerateKEK(nil)
	if err != nil {
		t.Fatal(err)
	}
	c := &clock{t: time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)}
	cfg.Clock = c
	reg := revocation.New(cfg)
	a, err := authority.New(ctx, authority.Config{Store: store.NotifyRevocations(st, reg.Notify), KEKs: keys.NewKEKRing(kek), Clock: c, Issuer: "keyward-test", Dev: true})
	if err != nil {
		t.Fatal(err)
	}
	if err := reg.Start(ctx, a); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(reg.Close)
	admin := keyward.NewContextWithPrincipal(ctx, keyward.Principal{ID: "tok_admin", Name: "admin", Roles: []string{keyward.RoleAdmin}})
	revoker := keyward.NewContextWithPrincipal(ctx, keyward.Principal{ID: "tok_revoker", Name: "revoker", Roles: []string{keyward.RoleRevoker}})
	return &env{st: st, auth: a, reg: reg, clock: c, ctx: admin, rctx: revoker}
}

func (e *env) product(t *testing.T, name string) *keyward.Product {
	t.Helper()
	p, err := e.auth.CreateProduct(e.ctx, name)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func (e *env) license(t *testing.T, product string) *keyward.License {
	t.Helper()
	is, err := e.auth.IssueLicense(e.ctx, authority.IssueRequest{Product: product, Holder: "cus_1"})
	if err != nil {
		t.Fatal(err)
	}
	return is.License
}

func (e *env) transition(t *testing.T, id string, action keyward.LicenseAction, reason string) {
	t.Helper()
	if _, err := e.auth.TransitionLicense(e.rctx, id, action, reason); err != nil {
		t.Fatalf("%s %s: %v", action, id, err)
	}
}

func (e *env) view(t *testing.T, product string) revocation.View {
	t.Helper()
	v, err := e.reg.ResolveView(context.Background(), product)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// sync waits until the registry has applied every committed row.
func (e *env) sync(t *testing.T) {
	t.Helper()
	head, err := e.auth.RevocationHead(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		d, err := e.reg.Snapshot(context.Background(), revocation.View{})
		if err != nil {
			t.Fatal(err)
		}
		if d.Seq >= head {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("registry at seq %d, store at %d after 5s", d.Seq, head)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func (e *env) jwks(t *testing.T) keys.JWKS {
	t.Helper()
	set, err := e.auth.JWKS(context.Background(), "")
	if err != nil {
		t.Fatal(err)
	}
	return set
}

func (e *env) cache(t *testing.T, product string) *sdk.RevocationCache {
	t.Helper()
	c, err := sdk.NewRevocationCache(e.jwks(t), sdk.RevocationOptions{Product: product, Issuer: "keyward-test", Now: e.clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func payload(t *testing.T, token string) []byte {
	t.Helper()
	tok, err := revocation.Parse(token, 0)
	if err != nil {
		t.Fatal(err)
	}
	return tok.Payload
}

// TestSnapshotVerifiesWithRegistryKey checks a snapshot's content and that
// it verifies with the registry key published in the JWKS, and only there.
func TestSnapshotVerifiesWithRegistryKey(t *testing.T) {
	e := newEnv(t, revocation.Config{})
	acme, other := e.product(t, "acme"), e.product(t, "other")
	revoked, suspended, back, elsewhere := e.license(t, "acme"), e.license(t, "acme"), e.license(t, "acme"), e.license(t, "other")
	e.transition(t, revoked.ID, keyward.LicenseRevoke, "abuse")
	e.transition(t, suspended.ID, keyward.LicenseSuspend, "looking into it")
	e.transition(t, back.ID, keyward.LicenseSuspend, "")
	e.transition(t, back.ID, keyward.LicenseReinstate, "")
	e.transition(t, elsewhere.ID, keyward.LicenseRevoke, "non_payment")
	ks, err := e.auth.Keys(context.Background(), store.KeyFilter{ProductID: acme.ID, States: []keyward.KeyState{keyward.KeyActive}})
	if err != nil {
		t.Fatal(err)
	}
	badKID := ks[0].KID
	if _, err := e.auth.RevokeKey(e.rctx, badKID, "key_compromise"); err != nil {
		t.Fatal(err)
	}
	e.sync(t)

	doc, err := e.reg.Snapshot(context.Background(), e.view(t, "acme"))
	if err != nil {
		t.Fatal(err)
	}
	// The signature, by hand: the registry key of the JWKS verifies it.
	tok, err := revocation.Parse(doc.Token, 0)
	if err != nil {
		t.Fatal(err)
	}
	if tok.Header.Typ != revocation.TypSnapshot {
		t.Errorf("typ = %q, want %q", tok.Header.Typ, revocation.TypSnapshot)
	}
	var verified bool
	for _, j := range e.jwks(t).Keys {
		pub, err := keys.PublicKeyFromJWK(j)
		if err != nil {
			t.Fatal(err)
		}
		err = tok.Verify(pub)
		if j.Kid == tok.Header.Kid {
			if j.Purpose != "registry" || err != nil {
				t.Fatalf("signing key %s: purpose %q, Verify = %v; want the registry key to verify", j.Kid, j.Purpose, err)
			}
			verified = true
		} else if err == nil {
			t.Errorf("key %s (%s) also verifies the snapshot", j.Kid, j.Purpose)
		}
	}
	if !verified {
		t.Fatalf("snapshot kid %s is not in the JWKS", tok.Header.Kid)
	}
	s, err := revocation.DecodeSnapshot(tok.Payload)
	if err != nil {
		t.Fatal(err)
	}
	if s.Issuer != "keyward-test" || s.Product != "acme" || s.Seq != doc.Seq {
		t.Errorf("snapshot issuer %q product %q seq %d; want keyward-test, acme, %d", s.Issuer, s.Product, s.Seq, doc.Seq)
	}
	if got, want := s.NextUpdate-s.IssuedAt, int64(revocation.DefaultTTL/time.Second); got != want {
		t.Errorf("next_update - issued_at = %ds, want %ds", got, want)
	}
	var got []string
	for _, l := range s.Licenses {
		got = append(got, l.ID+":"+l.State+":"+l.Reason)
	}
	want := []string{revoked.ID + ":revoked:abuse", suspended.ID + ":suspended:"}
	if strings.Join(got, " ") != strings.Join(sortedCopy(want), " ") {
		t.Errorf("licenses = %v, want %v (sorted by id; no free-text reasons; no reinstated or other product's)", got, sortedCopy(want))
	}
	if len(s.Keys) != 1 || s.Keys[0].KID != badKID || s.Keys[0].Reason != "key_compromise" {
		t.Errorf("compromised keys = %+v, want %s", s.Keys, badKID)
	}

	// The SDK cache agrees.
	c := e.cache(t, "acme")
	if err := c.ApplySnapshot(doc.Token); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		license, kid string
		want         error
	}{
		{revoked.ID, "", sdk.ErrRevoked},
		{suspended.ID, "", sdk.ErrSuspended},
		{back.ID, "", nil},
		{back.ID, badKID, sdk.ErrKeyCompromised},
	} {
		if err := c.Check(tc.license, tc.kid); !errors.Is(err, tc.want) && !(err == nil && tc.want == nil) {
			t.Errorf("Check(%s, %q) = %v, want %v", tc.license, tc.kid, err, tc.want)
		}
	}

	// Another product's view holds its own license, not acme's.
	od, err := e.reg.Snapshot(context.Background(), e.view(t, other.ID))
	if err != nil {
		t.Fatal(err)
	}
	os, _ := revocation.DecodeSnapshot(payload(t, od.Token))
	if os.Product != "other" || len(os.Licenses) != 1 || os.Licenses[0].ID != elsewhere.ID || len(os.Keys) != 0 {
		t.Errorf("other's snapshot = %+v", os)
	}
	// An acme cache refuses other's snapshot: a proxy cannot swap views.
	if err := c.ApplySnapshot(od.Token); !errors.Is(err, sdk.ErrWrongAudience) {
		t.Errorf("acme cache applying other's snapshot = %v, want ErrWrongAudience", err)
	}
	// The whole registry has everything.
	all, err := e.reg.Snapshot(context.Background(), revocation.View{})
	if err != nil {
		t.Fatal(err)
	}
	as, _ := revocation.DecodeSnapshot(payload(t, all.Token))
	if as.Product != "" || len(as.Licenses) != 3 || len(as.Keys) != 1 || as.Seq != doc.Seq {
		t.Errorf("whole registry: product %q, %d licenses, %d keys, seq %d", as.Product, len(as.Licenses), len(as.Keys), as.Seq)
	}
}

func sortedCopy(s []string) []string {
	out := append([]string(nil), s...)
	for i := range out {
		for j := i + 1; j < len(out); j++ {
			if out[j] < out[i] {
				out[i], out[j] = out[j], out[i]
			}
		}
	}
	return out
}

// TestSnapshotCachedAndResigned checks that a snapshot is served from
// memory while nothing changes, rebuilt when the seq moves, and re-signed
// at half its lifetime even when nothing changed.
func TestSnapshotCachedAndResigned(t *testing.T) {
	e := newEnv(t, revocation.Config{TTL: time.Hour})
	e.product(t, "acme")
	l := e.license(t, "acme")
	v := e.view(t, "acme")
	d1, err := e.reg.Snapshot(context.Background(), v)
	if err != nil {
		t.Fatal(err)
	}
	d2, _ := e.reg.Snapshot(context.Background(), v)
	if d1 != d2 {
		t.Errorf("unchanged registry: a second snapshot was built")
	}
	e.transition(t, l.ID, keyward.LicenseSuspend, "")
	e.sync(t)
	d3, _ := e.reg.Snapshot(context.Background(), v)
	if d3.Seq <= d1.Seq || d3.ETag == d1.ETag {
		t.Errorf("after a change: seq %d -> %d, etag %s -> %s; want both to move", d1.Seq, d3.Seq, d1.ETag, d3.ETag)
	}
	e.clock.Advance(29 * time.Minute)
	if d4, _ := e.reg.Snapshot(context.Background(), v); d4 != d3 {
		t.Errorf("before half-life: snapshot rebuilt")
	}
	e.clock.Advance(2 * time.Minute)
	d5, err := e.reg.Snapshot(context.Background(), v)
	if err != nil {
		t.Fatal(err)
	}
	if d5.Seq != d3.Seq || !d5.IssuedAt.After(d3.IssuedAt) || d5.ETag == d3.ETag {
		t.Errorf("past half-life: seq %d, issued %s (was %s), etag %s (was %s); want same seq, re-signed", d5.Seq, d5.IssuedAt, d3.IssuedAt, d5.ETag, d3.ETag)
	}
	if !d5.NextUpdate.Equal(d5.IssuedAt.Add(time.Hour)) {
		t.Errorf("next_update %s, want issued_at + 1h", d5.NextUpdate)
	}
}

// TestDelta checks deltas: the latest state of each changed subject,
// reinstatements included, applied by the SDK on top of a snapshot.
func TestDelta(t *testing.T) {
	e := newEnv(t, revocation.Config{})
	e.product(t, "acme")
	a, b, c := e.license(t, "acme"), e.license(t, "acme"), e.license(t, "acme")
	e.transition(t, a.ID, keyward.LicenseSuspend, "")
	e.sync(t)
	v := e.view(t, "acme")
	snap, err := e.reg.Snapshot(context.Background(), v)
	if err != nil {
		t.Fatal(err)
	}
	cache := e.cache(t, "acme")
	if err := cache.ApplySnapshot(snap.Token); err != nil {
		t.Fatal(err)
	}
	e.transition(t, a.ID, keyward.LicenseReinstate, "")
	e.transition(t, b.ID, keyward.LicenseSuspend, "")
	e.transition(t, b.ID, keyward.LicenseRevoke, "policy_violation")
	e.transition(t, c.ID, keyward.LicenseSuspend, "")
	delta, err := e.reg.Delta(context.Background(), v, snap.Seq)
	if err != nil {
		t.Fatal(err)
	}
	d, err := revocation.DecodeDelta(payload(t, delta.Token))
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, l := range d.Licenses {
		got = append(got, l.ID+":"+l.State)
	}
	want := []string{a.ID + ":active", b.ID + ":revoked", c.ID + ":suspended"}
	if d.FromSeq != snap.Seq || strings.Join(got, " ") != strings.Join(want, " ") {
		t.Fatalf("delta from %d: %v, want from %d: %v (latest state per subject, seq order)", d.FromSeq, got, snap.Seq, want)
	}
	if err := cache.ApplyDelta(delta.Token); err != nil {
		t.Fatal(err)
	}
	for id, want := range map[string]error{a.ID: nil, b.ID: sdk.ErrRevoked, c.ID: sdk.ErrSuspended} {
		if err := cache.Check(id, ""); !errors.Is(err, want) && !(err == nil && want == nil) {
			t.Errorf("Check(%s) = %v, want %v", id, err, want)
		}
	}
	if st, _ := cache.State(); st.Seq != d.ToSeq {
		t.Errorf("cache seq %d, want %d", st.Seq, d.ToSeq)
	}
	// Nothing new: an empty delta that only refreshes, served from memory.
	e.sync(t)
	empty1, err := e.reg.Delta(context.Background(), v, d.ToSeq)
	if err != nil {
		t.Fatal(err)
	}
	empty2, _ := e.reg.Delta(context.Background(), v, d.ToSeq)
	if empty1 != empty2 || empty1.FromSeq != d.ToSeq || empty1.Seq != d.ToSeq || empty1.Entries != 0 {
		t.Errorf("empty delta: %+v (cached: %v)", empty1, empty1 == empty2)
	}
	if _, err := e.reg.Delta(context.Background(), v, d.ToSeq+1); keyward.ErrorCode(err) != keyward.EInvalid {
		t.Errorf("Delta(since ahead of the registry) = %v, want INVALID_ARGUMENT", err)
	}
}

// TestDelta100Entries measures the issue's size bound: a delta of 100
// revocations, as JWS and gzip-compressed as served.
func TestDelta100Entries(t *testing.T) {
	e := newEnv(t, revocation.Config{})
	e.product(t, "acme")
	head, _ := e.auth.RevocationHead(context.Background())
	for i := 0; i < 100; i++ {
		e.transition(t, e.license(t, "acme").ID, keyward.LicenseRevoke, "abuse")
	}
	d, err := e.reg.Delta(context.Background(), e.view(t, "acme"), head)
	if err != nil {
		t.Fatal(err)
	}
	if d.Entries != 100 {
		t.Fatalf("delta has %d entries, want 100", d.Entries)
	}
	t.Logf("delta of 100 revocations: %d bytes JWS, %d bytes gzip", len(d.Token), len(d.Gzip()))
	if n := len(d.Gzip()); n >= 10<<10 {
		t.Errorf("delta of 100 entries is %d bytes on the wire (gzip), want under 10 KiB", n)
	}
}

// TestRegistryPollsRowsNobodyAnnounced: rows committed without a
// notification (another process) are found by the poll.
func TestRegistryPollsRowsNobodyAnnounced(t *testing.T) {
	e := newEnv(t, revocation.Config{PollInterval: 20 * time.Millisecond})
	e.product(t, "acme")
	l := e.license(t, "acme")
	err := e.st.Update(context.Background(), func(tx store.Tx) error { // the plain store: no Notify
		return tx.AppendRevocation(&keyward.Revocation{ProductID: l.ProductID, Kind: keyward.RevocationLicense, Subject: l.ID, State: "revoked", Time: e.clock.Now()})
	})
	if err != nil {
		t.Fatal(err)
	}
	e.sync(t) // fails after 5s if the poll never runs
}

func TestFormatMatchesEncodingJSON(t *testing.T) {
	strs := []string{"", "plain", "quote\" back\\slash", "<html>&", "tab\tnl\ncr\r\b\f\x00\x1f", "é ünïcode ✓", "\u2028\u2029", "bad \xff utf8", "lic_01kb0e3v8ys1cmw3e5b5m1n2p3"}
	for _, s := range strs {
		snap := &revocation.Snapshot{Issuer: s, Product: s, Seq: 7, IssuedAt: 1, NextUpdate: 2,
			Licenses: []revocation.LicenseEntry{{ID: s, State: "revoked", Reason: s, Time: -5, Seq: 3}, {ID: "x", State: "suspended", Time: 9, Seq: 4}},
			Keys:     []revocation.KeyEntry{{KID: s, Reason: "", Time: 1, Seq: 5}}}
		want, err := json.Marshal(snap)
		if err != nil {
			t.Fatal(err)
		}
		if got := revocation.EncodeSnapshot(snap); string(got) != string(want) {
			t.Errorf("snapshot with %q:\n got %s\nwant %s", s, got, want)
		}
		delta := &revocation.Delta{Issuer: s, Product: s, FromSeq: 1, ToSeq: 9, IssuedAt: 1, NextUpdate: 2,
			Licenses: []revocation.LicenseEntry{{ID: s, State: "active", Time: 1, Seq: 2}}, Keys: []revocation.KeyEntry{}}
		want, _ = json.Marshal(delta)
		if got := revocation.EncodeDelta(delta); string(got) != string(want) {
			t.Errorf("delta with %q:\n got %s\nwant %s", s, got, want)
		}
	}
}
