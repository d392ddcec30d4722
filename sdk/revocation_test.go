package sdk_test

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/keyward/keyward"
	"github.com/keyward/keyward/keys"
	"github.com/keyward/keyward/revocation"
	"github.com/keyward/keyward/sdk"
)

// registryFixture plays the server: a registry key and a license key, and
// documents signed with them.
type registryFixture struct {
	reg, lic *keys.PrivateKey
	jwks     keys.JWKS
	now      time.Time
}

func newRegistryFixture(tb testing.TB) *registryFixture {
	tb.Helper()
	f := &registryFixture{reg: mustKey(tb, keys.Ed25519, 7), lic: mustKey(tb, keys.Ed25519, 8), now: testNow}
	rj := f.reg.Public().JWK()
	rj.State, rj.Purpose = "active", "registry"
	f.jwks = keys.JWKS{Keys: []keys.JWK{rj, jwk(f.lic, "active")}}
	return f
}

func (f *registryFixture) cache(tb testing.TB, opts sdk.RevocationOptions) *sdk.RevocationCache {
	tb.Helper()
	if opts.Now == nil {
		opts.Now = func() time.Time { return f.now }
	}
	if opts.Product == "" {
		opts.Product = testProduct
	}
	c, err := sdk.NewRevocationCache(f.jwks, opts)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { c.Close() })
	return c
}

func lic(id, state string, seq int64) revocation.LicenseEntry {
	return revocation.LicenseEntry{ID: id, State: state, Reason: "abuse", Time: testNow.Unix() - 100, Seq: seq}
}

// snapshot signs a snapshot of testProduct at seq, issued at f.now.
func (f *registryFixture) snapshot(tb testing.TB, seq int64, ls ...revocation.LicenseEntry) string {
	tb.Helper()
	return f.sign(tb, f.reg, revocation.TypSnapshot, revocation.EncodeSnapshot(&revocation.Snapshot{
		Issuer: testIssuer, Product: testProduct, Seq: seq, IssuedAt: f.now.Unix(), NextUpdate: f.now.Add(time.Hour).Unix(), Licenses: ls,
	}))
}

func (f *registryFixture) delta(tb testing.TB, from, to int64, ls ...revocation.LicenseEntry) string {
	tb.Helper()
	return f.sign(tb, f.reg, revocation.TypDelta, revocation.EncodeDelta(&revocation.Delta{
		Issuer: testIssuer, Product: testProduct, FromSeq: from, ToSeq: to, IssuedAt: f.now.Unix(), NextUpdate: f.now.Add(time.Hour).Unix(), Licenses: ls,
	}))
}

func (f *registryFixture) sign(tb testing.TB, s keys.Signer, typ string, payload []byte) string {
	tb.Helper()
	tok, err := revocation.Sign(s, typ, payload)
	if err != nil {
		tb.Fatal(err)
	}
	return tok
}

func TestRevocationCacheRollbackAndDeltas(t *testing.T) {
	f := newRegistryFixture(t)
	c := f.cache(t, sdk.RevocationOptions{Issuer: testIssuer})
	wantReason(t, "delta before any snapshot", c.ApplyDelta(f.delta(t, 0, 1)), sdk.ErrGap)
	must(t, c.ApplySnapshot(f.snapshot(t, 5, lic("lic_a", "revoked", 2), lic("lic_b", "suspended", 5))))
	wantReason(t, "Check(lic_a)", c.Check("lic_a", ""), sdk.ErrRevoked)
	wantReason(t, "Check(lic_b)", c.Check("lic_b", ""), sdk.ErrSuspended)

	wantReason(t, "older snapshot", c.ApplySnapshot(f.snapshot(t, 4)), sdk.ErrRollback)
	wantReason(t, "delta ending before the seq held", c.ApplyDelta(f.delta(t, 1, 4)), sdk.ErrRollback)
	wantReason(t, "delta starting after the seq held", c.ApplyDelta(f.delta(t, 6, 8, lic("lic_c", "revoked", 8))), sdk.ErrGap)
	if revoked, err := c.IsRevoked("lic_c"); revoked || err != nil {
		t.Errorf("a refused delta changed the state: IsRevoked(lic_c) = %v, %v", revoked, err)
	}

	// A delta reinstating b and revoking c.
	must(t, c.ApplyDelta(f.delta(t, 5, 7, lic("lic_b", "active", 6), lic("lic_c", "revoked", 7))))
	if err := c.Check("lic_b", ""); err != nil {
		t.Errorf("reinstated lic_b: %v", err)
	}
	wantReason(t, "Check(lic_c)", c.Check("lic_c", ""), sdk.ErrRevoked)
	// An overlapping delta: entries the cache already reflects are skipped.
	must(t, c.ApplyDelta(f.delta(t, 3, 9, lic("lic_c", "revoked", 7), lic("lic_d", "suspended", 9))))
	wantReason(t, "Check(lic_d)", c.Check("lic_d", ""), sdk.ErrSuspended)
	if s, _ := c.State(); s.Seq != 9 || s.Licenses != 3 {
		t.Errorf("state %+v, want seq 9 with 3 licenses", s)
	}
	// A replayed stream event (to < held) is refused; a re-sent one (to ==
	// held) is harmless.
	wantReason(t, "replayed event", c.ApplyDelta(f.delta(t, 5, 7, lic("lic_b", "active", 6))), sdk.ErrRollback)
	must(t, c.ApplyDelta(f.delta(t, 7, 9, lic("lic_d", "suspended", 9))))
	// A newer snapshot replaces everything.
	must(t, c.ApplySnapshot(f.snapshot(t, 12, lic("lic_e", "revoked", 11))))
	if revoked, _ := c.IsRevoked("lic_a"); revoked {
		t.Errorf("lic_a still revoked after a snapshot without it")
	}
}

func TestRevocationCacheFreezeAndStale(t *testing.T) {
	f := newRegistryFixture(t)
	c := f.cache(t, sdk.RevocationOptions{Tolerance: 5 * time.Minute, OfflineGrace: 72 * time.Hour})
	wantReason(t, "Check with no snapshot", c.Check("lic_a", ""), sdk.ErrStale)
	old := f.snapshot(t, 3, lic("lic_a", "revoked", 3))
	f.now = f.now.Add(time.Hour + 6*time.Minute) // past next_update + tolerance
	wantReason(t, "frozen snapshot", c.ApplySnapshot(old), sdk.ErrFrozen)
	f.now = testNow.Add(time.Hour + 4*time.Minute)
	must(t, c.ApplySnapshot(old)) // within tolerance
	// Offline: the state held answers until next_update + OfflineGrace.
	f.now = testNow.Add(time.Hour + 71*time.Hour)
	wantReason(t, "Check within the offline grace", c.Check("lic_a", ""), sdk.ErrRevoked)
	f.now = testNow.Add(time.Hour + 72*time.Hour + time.Second)
	wantReason(t, "Check past the offline grace", c.Check("lic_b", ""), sdk.ErrStale)
	if _, err := c.IsRevoked("lic_b"); err == nil {
		t.Errorf("IsRevoked past the offline grace answered")
	}
	// A fresh delta revives it; then turning the clock back does not make
	// stale state fresh again, nor frozen documents acceptable.
	f.now = testNow.Add(80 * time.Hour)
	must(t, c.ApplyDelta(f.delta(t, 3, 3)))
	must(t, c.Check("lic_b", ""))
	f.now = testNow
	wantReason(t, "old snapshot with the clock turned back", c.ApplySnapshot(f.snapshot(t, 3)), sdk.ErrFrozen)
}

func TestRevocationCacheRefusesForgeries(t *testing.T) {
	f := newRegistryFixture(t)
	c := f.cache(t, sdk.RevocationOptions{Issuer: testIssuer})
	snap := f.snapshot(t, 2, lic("lic_a", "revoked", 2))
	must(t, c.ApplySnapshot(snap))
	event := f.delta(t, 2, 3, lic("lic_a", "active", 3)) // "reinstate" lic_a

	// A proxy edits the event's payload: the signature no longer matches.
	parts := strings.Split(event, ".")
	p, _ := revocation.Parse(event, 0)
	forged := strings.Replace(string(p.Payload), `"state":"active"`, `"state":"active" `, 1)
	parts[1] = b64(forged)
	wantReason(t, "tampered event", c.ApplyDelta(strings.Join(parts, ".")), sdk.ErrBadSignature)
	// Or signs its own with a license key of the bundle: not a registry key.
	byLicenseKey := f.sign(t, f.lic, revocation.TypDelta, p.Payload)
	wantReason(t, "event signed by a license key", c.ApplyDelta(byLicenseKey), sdk.ErrUnknownKey)
	// Or passes a delta off as a snapshot.
	wantReason(t, "delta as a snapshot", c.ApplySnapshot(event), sdk.ErrWrongType)
	// Or serves another issuer's or product's documents.
	other := f.sign(t, f.reg, revocation.TypDelta, revocation.EncodeDelta(&revocation.Delta{
		Issuer: "someone-else", Product: testProduct, FromSeq: 2, ToSeq: 3, IssuedAt: f.now.Unix(), NextUpdate: f.now.Add(time.Hour).Unix()}))
	wantReason(t, "other issuer", c.ApplyDelta(other), sdk.ErrWrongIssuer)
	otherProduct := f.sign(t, f.reg, revocation.TypDelta, revocation.EncodeDelta(&revocation.Delta{
		Issuer: testIssuer, Product: "other", FromSeq: 2, ToSeq: 3, IssuedAt: f.now.Unix(), NextUpdate: f.now.Add(time.Hour).Unix()}))
	wantReason(t, "other product", c.ApplyDelta(otherProduct), sdk.ErrWrongAudience)
	wantReason(t, "Check(lic_a) after forgeries", c.Check("lic_a", ""), sdk.ErrRevoked)
	// The genuine event applies.
	must(t, c.ApplyDelta(event))
	must(t, c.Check("lic_a", ""))
}

func TestRevocationCacheFile(t *testing.T) {
	f := newRegistryFixture(t)
	file := filepath.Join(t.TempDir(), "revocations.cache")
	c := f.cache(t, sdk.RevocationOptions{CacheFile: file})
	must(t, c.ApplySnapshot(f.snapshot(t, 2, lic("lic_a", "revoked", 2))))
	must(t, c.ApplyDelta(f.delta(t, 2, 4, lic("lic_b", "suspended", 4))))
	must(t, c.Close())

	// Two hours later, offline: the file still answers (offline grace).
	f.now = f.now.Add(2 * time.Hour)
	d := f.cache(t, sdk.RevocationOptions{CacheFile: file})
	if s, ok := d.State(); !ok || s.Seq != 4 || s.Licenses != 2 {
		t.Fatalf("loaded state %+v (held %v), want seq 4 with 2 licenses", s, ok)
	}
	wantReason(t, "Check(lic_b) from the file", d.Check("lic_b", ""), sdk.ErrSuspended)
	must(t, d.ApplyDelta(f.delta(t, 4, 5, lic("lic_c", "revoked", 5))))
	must(t, d.Close())
	e := f.cache(t, sdk.RevocationOptions{CacheFile: file})
	if s, _ := e.State(); s.Seq != 5 {
		t.Errorf("after appending a delta: seq %d, want 5", s.Seq)
	}
	must(t, e.Close())

	// A file edited by someone else is not trusted.
	data, err := os.ReadFile(file)
	must(t, err)
	must(t, os.WriteFile(file, []byte(strings.Replace(string(data), ".", ".x", 1)), 0o600))
	g := f.cache(t, sdk.RevocationOptions{CacheFile: file})
	if _, ok := g.State(); ok {
		t.Errorf("a tampered cache file was loaded")
	}
}

func TestVerifierConsultsRevocations(t *testing.T) {
	f := newRegistryFixture(t)
	c := f.cache(t, sdk.RevocationOptions{})
	v := mustVerifier(t, sdk.Options{Revocations: c}, f.jwks.Keys...)
	cert := mustSign(t, f.lic, keyward.TypCertificate, certClaims())
	lease := mustSign(t, f.lic, keyward.TypLease, leaseClaims())
	_, err := v.VerifyCertificate(cert)
	wantReason(t, "certificate with no registry state", err, sdk.ErrStale)

	must(t, c.ApplySnapshot(f.snapshot(t, 1)))
	if _, err := v.VerifyCertificate(cert); err != nil {
		t.Fatalf("certificate of a license not listed: %v", err)
	}
	must(t, c.ApplyDelta(f.delta(t, 1, 2, lic("lic_1", "revoked", 2))))
	_, err = v.VerifyCertificate(cert)
	wantReason(t, "certificate of a revoked license", err, sdk.ErrRevoked)
	_, err = v.VerifyLease(lease)
	wantReason(t, "lease of a revoked license", err, sdk.ErrRevoked)

	must(t, c.ApplyDelta(f.sign(t, f.reg, revocation.TypDelta, revocation.EncodeDelta(&revocation.Delta{
		Issuer: testIssuer, Product: testProduct, FromSeq: 2, ToSeq: 3, IssuedAt: f.now.Unix(), NextUpdate: f.now.Add(time.Hour).Unix(),
		Licenses: []revocation.LicenseEntry{lic("lic_1", "active", 3)},
		Keys:     []revocation.KeyEntry{{KID: f.lic.KID(), Reason: "key_compromise", Time: f.now.Unix(), Seq: 3}},
	}))))
	_, err = v.VerifyCertificate(cert)
	wantReason(t, "certificate signed by a compromised key", err, sdk.ErrKeyCompromised)
}

// BenchmarkRevocationCacheLoad measures a client loading (verifying,
// decoding and indexing) a snapshot of n revoked licenses.
func BenchmarkRevocationCacheLoad(b *testing.B) {
	f := newRegistryFixture(b)
	for _, n := range []int{1000, 100_000, 1_000_000} {
		ls := make([]revocation.LicenseEntry, n)
		for i := range ls {
			id, _ := keyward.NewID("lic", testNow.Add(time.Duration(i)*time.Millisecond), nil)
			ls[i] = revocation.LicenseEntry{ID: id, State: "revoked", Reason: "abuse", Time: testNow.Unix(), Seq: int64(i + 1)}
		}
		tok := f.snapshot(b, int64(n), ls...)
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			for b.Loop() {
				c := f.cache(b, sdk.RevocationOptions{})
				if err := c.ApplySnapshot(tok); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(len(tok)), "jws-bytes")
		})
	}
}
