package sdk_test

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/keyward/keyward"
	"github.com/keyward/keyward/keys"
	"github.com/keyward/keyward/sdk"
)

const (
	testIssuer  = "https://licenses.acme.example"
	testProduct = "acme-pro"
)

// testNow is the injected clock of every test.
var testNow = time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)

func fixedClock(t time.Time) func() time.Time { return func() time.Time { return t } }

// mustKey returns a key of alg that is the same in every run for the same seed.
func mustKey(tb testing.TB, alg keys.Algorithm, seed byte) *keys.PrivateKey {
	tb.Helper()
	k, err := keys.Generate(alg, bytes.NewReader(bytes.Repeat([]byte{seed}, 256)))
	if err != nil {
		tb.Fatalf("Generate(%s) = %v", alg, err)
	}
	return k
}

// jwk returns k's public JWK labelled as a license key of testProduct in state.
func jwk(k *keys.PrivateKey, state string) keys.JWK {
	j := k.Public().JWK()
	j.State, j.Product, j.Purpose = state, testProduct, "license"
	return j
}

func mustVerifier(tb testing.TB, opts sdk.Options, ks ...keys.JWK) *sdk.Verifier {
	tb.Helper()
	if opts.Now == nil {
		opts.Now = fixedClock(testNow)
	}
	v, err := sdk.NewVerifier(keys.JWKS{Keys: ks}, opts)
	if err != nil {
		tb.Fatalf("NewVerifier = %v", err)
	}
	return v
}

func certClaims() keyward.CertificateClaims {
	licExp := testNow.Add(365 * 24 * time.Hour).Unix()
	return keyward.CertificateClaims{
		Issuer: testIssuer, Subject: "lic_1", Audience: testProduct,
		IssuedAt: testNow.Add(-time.Hour).Unix(), NotBefore: testNow.Add(-time.Hour).Unix(),
		Expiry: testNow.Add(30 * 24 * time.Hour).Unix(), ID: "crt_1",
		License: keyward.LicenseInfo{Policy: 2, Entitlements: []string{"pro", "sync"}, ExpiresAt: &licExp, MaxMachines: 3, Holder: "hld_1"},
	}
}

func leaseClaims() keyward.LeaseClaims {
	return keyward.LeaseClaims{
		Issuer: testIssuer, Subject: "lic_1", Audience: testProduct,
		IssuedAt: testNow.Add(-time.Minute).Unix(), NotBefore: testNow.Add(-time.Minute).Unix(),
		Expiry: testNow.Add(14 * time.Minute).Unix(), ID: "lse_1", Machine: "mch_1", Fingerprint: "fp-1",
	}
}

func mustSign(tb testing.TB, s keys.Signer, typ string, claims any) string {
	tb.Helper()
	tok, err := keys.SignJWSClaims(s, typ, claims)
	if err != nil {
		tb.Fatalf("SignJWSClaims = %v", err)
	}
	return tok
}

// claimsMap returns c as a JSON object to edit.
func claimsMap(tb testing.TB, c any) map[string]any {
	tb.Helper()
	b, err := json.Marshal(c)
	if err != nil {
		tb.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		tb.Fatal(err)
	}
	return m
}

// wantReason checks that err is an *sdk.Error matching want with errors.Is.
func wantReason(t *testing.T, what string, err, want error) {
	t.Helper()
	var e *sdk.Error
	if !errors.As(err, &e) {
		t.Fatalf("%s = %v (%T), want *sdk.Error %v", what, err, err, want)
	}
	if !errors.Is(err, want) {
		t.Errorf("%s = %v, want %v", what, err, want)
	}
	if !strings.HasPrefix(err.Error(), "keyward: "+string(e.Reason)) {
		t.Errorf("%s error %q lacks prefix %q", what, err, "keyward: "+string(e.Reason))
	}
}

// fakeSigner signs with key but claims another algorithm and kid.
type fakeSigner struct {
	key *keys.PrivateKey
	alg keys.Algorithm
	kid string
}

func (f fakeSigner) Algorithm() keys.Algorithm          { return f.alg }
func (f fakeSigner) KID() string                        { return f.kid }
func (f fakeSigner) Sign(in []byte) ([]byte, error)     { return f.key.Sign(in) }
func (f fakeSigner) with(alg keys.Algorithm) fakeSigner { f.alg = alg; return f }
func (f fakeSigner) withKID(kid string) fakeSigner      { f.kid = kid; return f }
func newFake(k *keys.PrivateKey) fakeSigner {
	return fakeSigner{key: k, alg: k.Algorithm(), kid: k.KID()}
}
func b64(s string) string         { return base64.RawURLEncoding.EncodeToString([]byte(s)) }
func payloadOf(tok string) string { return strings.Split(tok, ".")[1] }
func replacePayload(tok, payload string) string {
	p := strings.Split(tok, ".")
	p[1] = payload
	return strings.Join(p, ".")
}
func mustJSON(tb testing.TB, v any) []byte {
	tb.Helper()
	b, err := json.Marshal(v)
	must(tb, err)
	return b
}
func must(tb testing.TB, err error) {
	tb.Helper()
	if err != nil {
		tb.Fatal(err)
	}
}
func secondsFrom(t time.Time, d time.Duration) int64  { return t.Add(d).Unix() }
func withClaim(m map[string]any, k string, v any) any { m[k] = v; return m }
func withoutClaim(m map[string]any, k string) any     { delete(m, k); return m }
func licWithout(m map[string]any, k string) any       { delete(m["lic"].(map[string]any), k); return m }

func TestVerifyCertificate(t *testing.T) {
	for _, alg := range []keys.Algorithm{keys.Ed25519, keys.ES256} {
		t.Run(string(alg), func(t *testing.T) {
			k := mustKey(t, alg, 1)
			v := mustVerifier(t, sdk.Options{Issuer: testIssuer, Audience: testProduct}, jwk(k, "active"))
			want := certClaims()
			tok := mustSign(t, k, keyward.TypCertificate, want)
			got, err := v.VerifyCertificate(tok)
			if err != nil {
				t.Fatalf("VerifyCertificate(%q) = %v", tok, err)
			}
			if !equalJSON(t, got, want) {
				t.Errorf("VerifyCertificate = %+v, want %+v", got, want)
			}
		})
	}
}

func equalJSON(tb testing.TB, a, b any) bool {
	tb.Helper()
	return bytes.Equal(mustJSON(tb, a), mustJSON(tb, b))
}

func TestVerifyCertificateStates(t *testing.T) {
	// Pending (pre-published), active, retired and unlabelled keys verify.
	for _, state := range []string{"pending", "active", "retired", ""} {
		k := mustKey(t, keys.Ed25519, 2)
		j := jwk(k, state)
		if state == "" {
			j.Product, j.Purpose = "", ""
		}
		v := mustVerifier(t, sdk.Options{}, j)
		if _, err := v.VerifyCertificate(mustSign(t, k, keyward.TypCertificate, certClaims())); err != nil {
			t.Errorf("state %q: VerifyCertificate = %v", state, err)
		}
	}
}

func TestVerifyLease(t *testing.T) {
	k := mustKey(t, keys.ES256, 3)
	v := mustVerifier(t, sdk.Options{Issuer: testIssuer, Audience: testProduct}, jwk(k, "active"))
	want := leaseClaims()
	got, err := v.VerifyLease(mustSign(t, k, keyward.TypLease, want))
	if err != nil {
		t.Fatalf("VerifyLease = %v", err)
	}
	if *got != want {
		t.Errorf("VerifyLease = %+v, want %+v", got, want)
	}
}

func TestVerifyErrors(t *testing.T) {
	k := mustKey(t, keys.Ed25519, 4)
	other := mustKey(t, keys.Ed25519, 5)     // not in the bundle
	bad := mustKey(t, keys.ES256, 6)         // compromised in the bundle
	gone := mustKey(t, keys.Ed25519, 7)      // destroyed in the bundle
	registry := mustKey(t, keys.Ed25519, 8)  // registry purpose
	otherProd := mustKey(t, keys.Ed25519, 9) // another product's key
	regJWK := jwk(registry, "active")
	regJWK.Product, regJWK.Purpose = "", "registry"
	opJWK := jwk(otherProd, "active")
	opJWK.Product = "acme-lite"
	bundle := []keys.JWK{jwk(k, "active"), jwk(bad, "compromised"), jwk(gone, "destroyed"), regJWK, opJWK}

	cert := func(edit func(*keyward.CertificateClaims)) string {
		c := certClaims()
		if edit != nil {
			edit(&c)
		}
		return mustSign(t, k, keyward.TypCertificate, c)
	}
	certMap := func(edit func(m map[string]any) any) string {
		return mustSign(t, k, keyward.TypCertificate, edit(claimsMap(t, certClaims())))
	}
	good := cert(nil)
	tampered := replacePayload(good, b64(strings.Replace(string(mustJSON(t, certClaims())), `"lic_1"`, `"lic_2"`, 1)))
	rawCert := func(payload string) string {
		tok, err := keys.SignJWS(k, keyward.TypCertificate, []byte(payload))
		must(t, err)
		return tok
	}

	tests := []struct {
		name  string
		opts  sdk.Options
		token string
		want  error
	}{
		{"Garbage", sdk.Options{}, "not a token", sdk.ErrMalformed},
		{"Empty", sdk.Options{}, "", sdk.ErrMalformed},
		{"AlgNone", sdk.Options{}, b64(`{"alg":"none","typ":"license+jwt"}`) + "." + payloadOf(good) + ".", sdk.ErrMalformed},
		{"LeaseAsCertificate", sdk.Options{}, mustSign(t, k, keyward.TypLease, leaseClaims()), sdk.ErrWrongType},
		{"NoTyp", sdk.Options{}, mustSign(t, k, "", certClaims()), sdk.ErrWrongType},
		{"TypJWT", sdk.Options{}, mustSign(t, k, "JWT", certClaims()), sdk.ErrWrongType},
		{"NoKID", sdk.Options{}, mustSign(t, newFake(k).withKID(""), keyward.TypCertificate, certClaims()), sdk.ErrUnknownKey},
		{"UnknownKID", sdk.Options{}, mustSign(t, other, keyward.TypCertificate, certClaims()), sdk.ErrUnknownKey},
		{"RegistryKey", sdk.Options{}, mustSign(t, registry, keyward.TypCertificate, certClaims()), sdk.ErrUnknownKey},
		{"CompromisedInJWKS", sdk.Options{}, mustSign(t, bad, keyward.TypCertificate, certClaims()), sdk.ErrKeyCompromised},
		{"DestroyedInJWKS", sdk.Options{}, mustSign(t, gone, keyward.TypCertificate, certClaims()), sdk.ErrKeyCompromised},
		{"KIDOfAnotherKey", sdk.Options{}, mustSign(t, newFake(other).withKID(k.KID()), keyward.TypCertificate, certClaims()), sdk.ErrBadSignature},
		{"AlgMismatch", sdk.Options{}, mustSign(t, newFake(bad).with(keys.ES256).withKID(k.KID()), keyward.TypCertificate, certClaims()), sdk.ErrBadSignature},
		{"TamperedPayload", sdk.Options{}, tampered, sdk.ErrBadSignature},
		{"Expired", sdk.Options{}, cert(func(c *keyward.CertificateClaims) { c.Expiry = secondsFrom(testNow, -61*time.Second) }), sdk.ErrExpired},
		{"ExpiredNoLeeway", sdk.Options{Leeway: -1}, cert(func(c *keyward.CertificateClaims) { c.Expiry = testNow.Unix() }), sdk.ErrExpired},
		{"ExpiredPastLeeway", sdk.Options{Leeway: 10 * time.Second}, cert(func(c *keyward.CertificateClaims) { c.Expiry = secondsFrom(testNow, -10*time.Second) }), sdk.ErrExpired},
		{"NotYetValid", sdk.Options{}, cert(func(c *keyward.CertificateClaims) { c.NotBefore = secondsFrom(testNow, 61*time.Second) }), sdk.ErrNotYetValid},
		{"NotYetValidNoLeeway", sdk.Options{Leeway: -1}, cert(func(c *keyward.CertificateClaims) { c.NotBefore = secondsFrom(testNow, time.Second) }), sdk.ErrNotYetValid},
		{"WrongIssuer", sdk.Options{Issuer: "https://evil.example"}, good, sdk.ErrWrongIssuer},
		{"WrongAudience", sdk.Options{Audience: "acme-lite"}, good, sdk.ErrWrongAudience},
		{"AudienceNotKeysProduct", sdk.Options{}, mustSign(t, otherProd, keyward.TypCertificate, certClaims()), sdk.ErrWrongAudience},
		{"DuplicateClaim", sdk.Options{}, rawCert(`{"iss":"a","iss":"b"}`), sdk.ErrMalformed},
		{"ClaimsNotObject", sdk.Options{}, rawCert(`["iss"]`), sdk.ErrMalformed},
		{"ClaimsNull", sdk.Options{}, rawCert(`null`), sdk.ErrMalformed},
		{"ClaimsTrailingData", sdk.Options{}, rawCert(string(mustJSON(t, certClaims())) + `{}`), sdk.ErrMalformed},
		{"ClaimsNotJSON", sdk.Options{}, rawCert(`{"iss":`), sdk.ErrMalformed},
		{"WrongCase", sdk.Options{}, certMap(func(m map[string]any) any { m["EXP"] = m["exp"]; delete(m, "exp"); return m }), sdk.ErrMalformed},
		{"IssNumber", sdk.Options{}, certMap(func(m map[string]any) any { return withClaim(m, "iss", 7) }), sdk.ErrMalformed},
		{"IssEmpty", sdk.Options{}, certMap(func(m map[string]any) any { return withClaim(m, "iss", "") }), sdk.ErrMalformed},
		{"AudArray", sdk.Options{}, certMap(func(m map[string]any) any { return withClaim(m, "aud", []string{testProduct}) }), sdk.ErrMalformed},
		{"ExpString", sdk.Options{}, certMap(func(m map[string]any) any { return withClaim(m, "exp", "2040-01-01") }), sdk.ErrMalformed},
		{"ExpFraction", sdk.Options{}, certMap(func(m map[string]any) any { return withClaim(m, "exp", 1.5e9+0.5) }), sdk.ErrMalformed},
		{"ExpNegative", sdk.Options{}, certMap(func(m map[string]any) any { return withClaim(m, "nbf", -1) }), sdk.ErrMalformed},
		{"ExpHuge", sdk.Options{}, certMap(func(m map[string]any) any { return withClaim(m, "exp", int64(1)<<62) }), sdk.ErrMalformed},
		{"ExpNull", sdk.Options{}, certMap(func(m map[string]any) any { return withClaim(m, "exp", nil) }), sdk.ErrMalformed},
		{"LicNull", sdk.Options{}, certMap(func(m map[string]any) any { return withClaim(m, "lic", nil) }), sdk.ErrMalformed},
		{"LicString", sdk.Options{}, certMap(func(m map[string]any) any { return withClaim(m, "lic", "pro") }), sdk.ErrMalformed},
		{"LicNegativeMachines", sdk.Options{}, certMap(func(m map[string]any) any {
			m["lic"].(map[string]any)["max_machines"] = -1
			return m
		}), sdk.ErrMalformed},
	}
	for _, claim := range []string{"iss", "sub", "aud", "iat", "nbf", "exp", "jti", "lic"} {
		tests = append(tests, struct {
			name  string
			opts  sdk.Options
			token string
			want  error
		}{"Missing_" + claim, sdk.Options{}, certMap(func(m map[string]any) any { return withoutClaim(m, claim) }), sdk.ErrMalformed})
	}
	for _, member := range []string{"policy", "entitlements", "expires_at", "max_machines", "holder"} {
		tests = append(tests, struct {
			name  string
			opts  sdk.Options
			token string
			want  error
		}{"MissingLic_" + member, sdk.Options{}, certMap(func(m map[string]any) any { return licWithout(m, member) }), sdk.ErrMalformed})
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v := mustVerifier(t, tt.opts, bundle...)
			c, err := v.VerifyCertificate(tt.token)
			if c != nil {
				t.Errorf("VerifyCertificate returned claims %+v with error %v", c, err)
			}
			wantReason(t, "VerifyCertificate", err, tt.want)
		})
	}
}

func TestVerifyLeaseErrors(t *testing.T) {
	k := mustKey(t, keys.Ed25519, 10)
	v := mustVerifier(t, sdk.Options{}, jwk(k, "active"))
	lease := func(edit func(m map[string]any) any) string {
		return mustSign(t, k, keyward.TypLease, edit(claimsMap(t, leaseClaims())))
	}
	tests := []struct {
		name  string
		token string
		want  error
	}{
		{"CertificateAsLease", mustSign(t, k, keyward.TypCertificate, certClaims()), sdk.ErrWrongType},
		{"MissingMachine", lease(func(m map[string]any) any { return withoutClaim(m, "mid") }), sdk.ErrMalformed},
		{"MissingFingerprint", lease(func(m map[string]any) any { return withoutClaim(m, "fpr") }), sdk.ErrMalformed},
		{"MissingJTI", lease(func(m map[string]any) any { return withoutClaim(m, "jti") }), sdk.ErrMalformed},
		{"Expired", lease(func(m map[string]any) any { return withClaim(m, "exp", secondsFrom(testNow, -2*time.Minute)) }), sdk.ErrExpired},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := v.VerifyLease(tt.token)
			wantReason(t, "VerifyLease", err, tt.want)
		})
	}
}

func TestLeeway(t *testing.T) {
	k := mustKey(t, keys.Ed25519, 11)
	tok := func(nbf, exp time.Duration) string {
		c := certClaims()
		c.NotBefore, c.Expiry = secondsFrom(testNow, nbf), secondsFrom(testNow, exp)
		return mustSign(t, k, keyward.TypCertificate, c)
	}
	tests := []struct {
		name     string
		leeway   time.Duration
		nbf, exp time.Duration
		want     error // nil: accepted
	}{
		{"DefaultAcceptsExpired60s", 0, -time.Hour, -60*time.Second + time.Second, nil},
		{"DefaultRefusesExpired60s", 0, -time.Hour, -60 * time.Second, sdk.ErrExpired},
		{"DefaultAcceptsEarly60s", 0, 60 * time.Second, time.Hour, nil},
		{"DefaultRefusesEarly61s", 0, 61 * time.Second, time.Hour, sdk.ErrNotYetValid},
		{"CustomAccepts", 5 * time.Minute, 4 * time.Minute, -4 * time.Minute, nil},
		{"CustomRefuses", 5 * time.Minute, -time.Hour, -5 * time.Minute, sdk.ErrExpired},
		{"NoneAcceptsNow", -1, 0, time.Second, nil},
		{"NoneRefusesExpAtNow", -1, -time.Hour, 0, sdk.ErrExpired},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v := mustVerifier(t, sdk.Options{Leeway: tt.leeway}, jwk(k, "active"))
			_, err := v.VerifyCertificate(tok(tt.nbf, tt.exp))
			if tt.want == nil {
				if err != nil {
					t.Errorf("VerifyCertificate = %v, want success", err)
				}
				return
			}
			wantReason(t, "VerifyCertificate", err, tt.want)
		})
	}
}

func TestMarkCompromised(t *testing.T) {
	k := mustKey(t, keys.Ed25519, 12)
	k2 := mustKey(t, keys.ES256, 13)
	v := mustVerifier(t, sdk.Options{}, jwk(k, "retired"), jwk(k2, "active"))
	tok := mustSign(t, k, keyward.TypCertificate, certClaims())
	tok2 := mustSign(t, k2, keyward.TypLease, leaseClaims())
	if _, err := v.VerifyCertificate(tok); err != nil {
		t.Fatalf("VerifyCertificate before MarkCompromised = %v", err)
	}
	var wg sync.WaitGroup // MarkCompromised may race with verification
	for range 4 {
		wg.Go(func() { _, _ = v.VerifyCertificate(tok) })
	}
	v.MarkCompromised("", k.KID(), "someone-elses-kid")
	wg.Wait()
	_, err := v.VerifyCertificate(tok)
	wantReason(t, "VerifyCertificate after MarkCompromised", err, sdk.ErrKeyCompromised)
	if _, err := v.VerifyLease(tok2); err != nil {
		t.Errorf("VerifyLease by another key = %v", err)
	}
	// A kid marked compromised that the bundle never held also says so.
	v.MarkCompromised(mustKey(t, keys.Ed25519, 14).KID())
	_, err = v.VerifyCertificate(mustSign(t, mustKey(t, keys.Ed25519, 14), keyward.TypCertificate, certClaims()))
	wantReason(t, "VerifyCertificate by a kid only marked", err, sdk.ErrKeyCompromised)
}

func TestNewVerifier(t *testing.T) {
	k := mustKey(t, keys.Ed25519, 15)
	k2 := mustKey(t, keys.Ed25519, 16)
	wrongKID := jwk(k2, "active")
	wrongKID.Kid = k.KID()
	noKID := jwk(k2, "active")
	noKID.Kid = ""
	unknownState := jwk(k2, "frozen")
	badX := jwk(k2, "active")
	badX.X = "AAAA"
	registry := jwk(k2, "active")
	registry.Purpose = "registry"
	for _, tt := range []struct {
		name string
		set  []keys.JWK
	}{
		{"Empty", nil},
		{"OnlyCompromised", []keys.JWK{jwk(k, "compromised")}},
		{"OnlyDestroyed", []keys.JWK{jwk(k, "destroyed")}},
		{"OnlyRegistry", []keys.JWK{registry}},
		{"KIDNotThumbprint", []keys.JWK{wrongKID}},
		{"NoKID", []keys.JWK{noKID}},
		{"UnknownState", []keys.JWK{unknownState}},
		{"BadKey", []keys.JWK{badX}},
		{"CompromisedWins", []keys.JWK{jwk(k, "active"), jwk(k, "compromised")}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if v, err := sdk.NewVerifier(keys.JWKS{Keys: tt.set}, sdk.Options{}); err == nil {
				t.Errorf("NewVerifier(%+v) = %v, nil; want error", tt.set, v)
			}
		})
	}

	t.Run("SkipsUnusable", func(t *testing.T) {
		k3 := mustKey(t, keys.Ed25519, 17)
		bad := jwk(k3, "active")
		bad.Alg = "ES256" // does not fit an Ed25519 key
		conflictA, conflictB := jwk(k2, "active"), jwk(k2, "retired")
		conflictB.Product = "acme-lite"
		v := mustVerifier(t, sdk.Options{}, jwk(k, "active"), bad, conflictA, conflictB, unknownState)
		if _, err := v.VerifyCertificate(mustSign(t, k, keyward.TypCertificate, certClaims())); err != nil {
			t.Errorf("VerifyCertificate by the good key = %v", err)
		}
		for _, s := range []*keys.PrivateKey{k2, k3} {
			_, err := v.VerifyCertificate(mustSign(t, s, keyward.TypCertificate, certClaims()))
			wantReason(t, "VerifyCertificate by a skipped key", err, sdk.ErrUnknownKey)
			if !strings.Contains(err.Error(), "skipped") {
				t.Errorf("error %q does not say the key was skipped", err)
			}
		}
	})
	t.Run("IdenticalDuplicates", func(t *testing.T) {
		v := mustVerifier(t, sdk.Options{}, jwk(k, "active"), jwk(k, "active"))
		if _, err := v.VerifyCertificate(mustSign(t, k, keyward.TypCertificate, certClaims())); err != nil {
			t.Errorf("VerifyCertificate = %v", err)
		}
	})
}

// TestVerifyMangled flips every bit and cuts at every position of a valid
// certificate: every variant fails with an *sdk.Error and nothing panics.
func TestVerifyMangled(t *testing.T) {
	for _, alg := range []keys.Algorithm{keys.Ed25519, keys.ES256} {
		t.Run(string(alg), func(t *testing.T) {
			k := mustKey(t, alg, 18)
			v := mustVerifier(t, sdk.Options{}, jwk(k, "active"))
			tok := mustSign(t, k, keyward.TypCertificate, certClaims())
			if _, err := v.VerifyCertificate(tok); err != nil {
				t.Fatalf("VerifyCertificate(valid) = %v", err)
			}
			check := func(what, mangled string) {
				t.Helper()
				c, err := v.VerifyCertificate(mangled)
				var e *sdk.Error
				if err == nil || c != nil || !errors.As(err, &e) {
					t.Fatalf("VerifyCertificate(%s %q) = %+v, %v; want nil, *sdk.Error", what, mangled, c, err)
				}
			}
			b := []byte(tok)
			for i := range b {
				for bit := range 8 {
					b[i] ^= 1 << bit
					check("flipped", string(b))
					b[i] ^= 1 << bit
				}
			}
			for i := range len(tok) {
				check("prefix", tok[:i])
				check("suffix", tok[i+1:])
			}
			check("doubled", tok+tok)
			check("extra part", tok+".")
			check("trailing space", tok+" ")
		})
	}
}

func TestErrorIs(t *testing.T) {
	err := error(&sdk.Error{Reason: sdk.ReasonExpired, Detail: "certificate expired at …"})
	if !errors.Is(err, sdk.ErrExpired) {
		t.Errorf("errors.Is(%v, ErrExpired) = false", err)
	}
	if errors.Is(err, sdk.ErrNotYetValid) {
		t.Errorf("errors.Is(%v, ErrNotYetValid) = true", err)
	}
	if errors.Is(err, &sdk.Error{Reason: sdk.ReasonExpired, Detail: "other"}) {
		t.Errorf("errors.Is matched an *Error with another Detail")
	}
	if got, want := sdk.ErrExpired.Error(), "keyward: expired"; got != want {
		t.Errorf("ErrExpired.Error() = %q, want %q", got, want)
	}
}

func TestParseJWKS(t *testing.T) {
	k := mustKey(t, keys.Ed25519, 19)
	k2 := mustKey(t, keys.ES256, 20)
	want := keys.JWKS{Keys: []keys.JWK{jwk(k, "active"), jwk(k2, "pending")}}
	data := mustJSON(t, want)
	got, err := sdk.ParseJWKS(data)
	if err != nil {
		t.Fatalf("ParseJWKS(%s) = %v", data, err)
	}
	if !equalJSON(t, got, want) {
		t.Errorf("ParseJWKS = %+v, want %+v", got, want)
	}
	// Unknown members are ignored (RFC 7517), at both levels.
	extra := `{"keys":[{"kty":"OKP","crv":"Ed25519","x":"` + want.Keys[0].X + `","kid":"` + k.KID() + `","key_ops":["verify"],"x5c":[]}],"next":1}`
	got, err = sdk.ParseJWKS([]byte(extra))
	if err != nil || len(got.Keys) != 1 || got.Keys[0].Kid != k.KID() {
		t.Errorf("ParseJWKS(%s) = %+v, %v", extra, got, err)
	}
	if got, err := sdk.ParseJWKS([]byte(`{"keys":[]}`)); err != nil || len(got.Keys) != 0 {
		t.Errorf("ParseJWKS(empty set) = %+v, %v", got, err)
	}

	x := want.Keys[0].X
	for _, tt := range []struct{ name, data string }{
		{"Empty", ``},
		{"Null", `null`},
		{"Array", `[]`},
		{"NoKeys", `{}`},
		{"KeysNull", `{"keys":null}`},
		{"KeysObject", `{"keys":{}}`},
		{"KeyNotObject", `{"keys":["x"]}`},
		{"KeyNull", `{"keys":[null]}`},
		{"NoKty", `{"keys":[{"crv":"Ed25519","x":"` + x + `"}]}`},
		{"KidNumber", `{"keys":[{"kty":"OKP","crv":"Ed25519","x":"` + x + `","kid":1}]}`},
		{"WrongCase", `{"Keys":[]}`},
		{"DuplicateTop", `{"keys":[],"keys":[]}`},
		{"DuplicateMember", `{"keys":[{"kty":"OKP","crv":"Ed25519","x":"` + x + `","x":"AAAA"}]}`},
		{"PrivateD", `{"keys":[{"kty":"OKP","crv":"Ed25519","x":"` + x + `","d":"AAAA"}]}`},
		{"Trailing", `{"keys":[]} {}`},
		{"TrailingGarbage", `{"keys":[]}x`},
		{"Truncated", string(data[:len(data)-1])},
		{"TooDeep", `{"keys":[],"x":` + strings.Repeat("[", 100) + strings.Repeat("]", 100) + `}`},
		{"TooLarge", `{"keys":[],"pad":"` + strings.Repeat("a", sdk.MaxJWKSSize) + `"}`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if got, err := sdk.ParseJWKS([]byte(tt.data)); err == nil {
				t.Errorf("ParseJWKS(%.80s) = %+v, nil; want error", tt.data, got)
			}
		})
	}
}

func FuzzVerifyCertificate(f *testing.F) {
	k := mustKey(f, keys.Ed25519, 21)
	v := mustVerifier(f, sdk.Options{}, jwk(k, "active"))
	f.Add(mustSign(f, k, keyward.TypCertificate, certClaims()))
	f.Add(mustSign(f, k, keyward.TypLease, leaseClaims()))
	f.Add("e30.e30.e30")
	f.Fuzz(func(t *testing.T, tok string) {
		c, err := v.VerifyCertificate(tok)
		if (c == nil) == (err == nil) {
			t.Fatalf("VerifyCertificate = %v, %v: want exactly one nil", c, err)
		}
		var e *sdk.Error
		if err != nil && !errors.As(err, &e) {
			t.Fatalf("VerifyCertificate error %v is %T, want *sdk.Error", err, err)
		}
	})
}

func FuzzParseJWKS(f *testing.F) {
	f.Add([]byte(`{"keys":[]}`))
	f.Add(mustJSON(f, keys.JWKS{Keys: []keys.JWK{jwk(mustKey(f, keys.Ed25519, 22), "active")}}))
	f.Fuzz(func(t *testing.T, data []byte) {
		set, err := sdk.ParseJWKS(data)
		if err != nil {
			return
		}
		_, _ = sdk.NewVerifier(set, sdk.Options{}) // must not panic
	})
}
