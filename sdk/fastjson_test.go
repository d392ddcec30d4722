package sdk

import (
	"bytes"
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/keyward/keyward"
	"github.com/keyward/keyward/keys"
)

const (
	seedCert  = `{"iss":"keyward","sub":"lic_1","aud":"acme","iat":1800000000,"nbf":1800000000,"exp":1802592000,"jti":"crt_1","lic":{"policy":2,"entitlements":["pro","sync"],"expires_at":1831536000,"max_machines":3,"holder":"hld_1"}}`
	seedLease = `{"iss":"keyward","sub":"lic_1","aud":"acme","iat":1800000000,"nbf":1800000000,"exp":1800000900,"jti":"lse_1","mid":"mch_1","fpr":"m1"}`
)

// slowLease is VerifyLease's strict decoding, for the differential test.
func slowLease(payload []byte) (string, string, registered, bool) {
	f, c, err := commonClaims(payload)
	if err != nil {
		return "", "", c, false
	}
	mid, fpr := f.str("mid", true, true), f.str("fpr", true, true)
	return mid, fpr, c, f.err == nil
}

// checkAgrees fails if a fast path accepts a payload the strict path
// refuses, or decodes it differently.
func checkAgrees(t *testing.T, payload []byte) {
	t.Helper()
	if canon, cc, ok := canonicalCertificate(payload); ok {
		slow, sc, err := slowCertificate(payload)
		if err != nil {
			t.Fatalf("canonical path accepts a certificate the strict path refuses (%v): %s", err, payload)
		}
		if !reflect.DeepEqual(canon, slow) || cc != sc {
			t.Fatalf("canonical and strict paths disagree on %s:\ncanonical %+v\nstrict    %+v", payload, canon, slow)
		}
	}
	if canon, cc, ok := canonicalLease(payload); ok {
		mid, fpr, sc, sok := slowLease(payload)
		if !sok || mid != canon.Machine || fpr != canon.Fingerprint || cc != sc {
			t.Fatalf("canonical and strict paths disagree on lease %s", payload)
		}
	}
	if fast, fc, ok := fastCertificate(payload); ok {
		slow, sc, err := slowCertificate(payload)
		if err != nil {
			t.Fatalf("fast path accepts a certificate the strict path refuses (%v): %s", err, payload)
		}
		if !reflect.DeepEqual(fast, slow) || fc != sc {
			t.Fatalf("paths disagree on %s:\nfast %+v\nslow %+v", payload, fast, slow)
		}
	}
	if fast, fc, ok := fastLease(payload); ok {
		mid, fpr, sc, sok := slowLease(payload)
		if !sok || mid != fast.Machine || fpr != fast.Fingerprint || fc != sc {
			t.Fatalf("paths disagree on lease %s", payload)
		}
	}
}

// TestFastPathAgrees mutates valid claims every way the flip/cut tests do
// and checks the fast path never accepts what the strict path refuses.
func TestFastPathAgrees(t *testing.T) {
	for _, seed := range []string{seedCert, seedLease} {
		if _, _, ok := fastCertificate([]byte(seedCert)); !ok {
			t.Fatal("fast path refuses a plain certificate: it would never be used")
		}
		b := []byte(seed)
		for i := range b {
			for _, r := range []byte{'"', '\\', '{', '}', '[', ']', ',', ':', 'n', '0', 'E', ' ', 0} {
				m := append([]byte(nil), b...)
				m[i] = r
				checkAgrees(t, m)
			}
			checkAgrees(t, b[:i])
			checkAgrees(t, append(append([]byte(nil), b[:i]...), b[i+1:]...))
		}
	}
	for _, p := range []string{
		`{"iss":"k","ISS":"x","sub":"s","aud":"a","iat":1,"nbf":1,"exp":2,"jti":"j","mid":"m","fpr":"f"}`,
		`{"iss":"k","sub":"s","aud":"a","iat":1,"nbf":1,"exp":2,"jti":"j","mid":"m","fpr":"f","fpr":"g"}`,
		`{"iss":"k","sub":"s","aud":"a","iat":null,"nbf":1,"exp":2,"jti":"j","mid":"m","fpr":"f"}`,
		`{"iss":"k","sub":"s","aud":"a","iat":1,"nbf":1,"exp":2,"jti":"j","mid":"m","f\u0070r":"f"}`,
		`{"iss":"k","sub":"s","aud":"a","iat":1.5,"nbf":1,"exp":2,"jti":"j","mid":"m","fpr":"f"}`,
		`{"iss":"k","sub":"s","aud":"a","iat":1,"nbf":1,"exp":2,"jti":"j","lic":{"policy":1,"POLICY":2,"entitlements":null,"expires_at":null,"max_machines":0,"holder":""}}`,
		`{"iss":"k","sub":"s","aud":"a","iat":1,"nbf":1,"exp":2,"jti":"j","lic":{"policy":1,"entitlements":null,"expires_at":null,"max_machines":0,"holder":""}}`,
	} {
		checkAgrees(t, []byte(p))
	}
}

func FuzzFastPathAgrees(f *testing.F) {
	f.Add([]byte(seedCert))
	f.Add([]byte(seedLease))
	for _, c := range marshalledClaims(f) {
		f.Add(c)
	}
	f.Fuzz(func(t *testing.T, payload []byte) {
		if !json.Valid(payload) && len(payload) > 0 {
			// invalid JSON must never be accepted by a fast path
			if _, _, ok := fastCertificate(payload); ok {
				t.Fatalf("fast path accepts invalid JSON %q", payload)
			}
			if _, _, ok := canonicalCertificate(payload); ok {
				t.Fatalf("canonical path accepts invalid JSON %q", payload)
			}
			if _, _, ok := canonicalLease(payload); ok {
				t.Fatalf("canonical path accepts invalid lease JSON %q", payload)
			}
		}
		checkAgrees(t, payload)
	})
}

// marshalledClaims returns claims as Keyward signs them (json.Marshal of
// the claim types), with the values that change their shape: null and
// empty entitlements, more entitlements than the canonical reader keeps on
// the stack, perpetual and zero expiry, an empty holder, non-ASCII text,
// the largest values, and characters Marshal escapes.
func marshalledClaims(tb testing.TB) [][]byte {
	tb.Helper()
	zero, maxT := int64(0), int64(maxUnix)
	cert := func(edit func(*keyward.CertificateClaims)) keyward.CertificateClaims {
		exp := int64(1831536000)
		c := keyward.CertificateClaims{Issuer: "keyward", Subject: "lic_1", Audience: "acme", IssuedAt: 1800000000,
			NotBefore: 1800000000, Expiry: 1802592000, ID: "crt_1",
			License: keyward.LicenseInfo{Policy: 2, Entitlements: []string{"pro", "sync"}, ExpiresAt: &exp, MaxMachines: 3, Holder: "hld_1"}}
		edit(&c)
		return c
	}
	var out [][]byte
	for _, c := range []any{
		cert(func(c *keyward.CertificateClaims) {}),
		cert(func(c *keyward.CertificateClaims) { c.License.Entitlements = nil }),
		cert(func(c *keyward.CertificateClaims) { c.License.Entitlements = []string{} }),
		cert(func(c *keyward.CertificateClaims) {
			c.License.Entitlements = strings.Split("a,b,c,d,e,f,g,h,i,j,k,", ",")
		}),
		cert(func(c *keyward.CertificateClaims) { c.License.ExpiresAt = nil }),
		cert(func(c *keyward.CertificateClaims) { c.License.ExpiresAt = &zero }),
		cert(func(c *keyward.CertificateClaims) { c.License.ExpiresAt = &maxT }),
		cert(func(c *keyward.CertificateClaims) { c.License.Holder = "" }),
		cert(func(c *keyward.CertificateClaims) { c.License.Holder, c.Audience = "Müller ✓", "straße" }),
		cert(func(c *keyward.CertificateClaims) { c.IssuedAt, c.NotBefore, c.Expiry = 0, 0, maxUnix }),
		cert(func(c *keyward.CertificateClaims) { c.License.Policy, c.License.MaxMachines = 0, 1<<31-1 }),
		cert(func(c *keyward.CertificateClaims) { c.Issuer = "https://a.example/?x=1&y=<2>" }),
		cert(func(c *keyward.CertificateClaims) { c.License.Holder = "tab\tquote\"line\u2028" }),
		keyward.LeaseClaims{Issuer: "keyward", Subject: "lic_1", Audience: "acme", IssuedAt: 1800000000, NotBefore: 1800000000,
			Expiry: 1800000900, ID: "lse_1", Machine: "mch_1", Fingerprint: "m1"},
		keyward.LeaseClaims{Issuer: "ü", Subject: "s", Audience: "a", ID: "j", Machine: "m", Fingerprint: "<&>"},
	} {
		b, err := json.Marshal(c)
		if err != nil {
			tb.Fatal(err)
		}
		out = append(out, b)
	}
	return out
}

// TestCanonicalClaims: the canonical readers take claims as Keyward signs
// them (else they would never be used) unless Marshal escaped something,
// and agree with the strict path on them and on every mutation.
func TestCanonicalClaims(t *testing.T) {
	for _, p := range marshalledClaims(t) {
		_, _, certOK := canonicalCertificate(p)
		_, _, leaseOK := canonicalLease(p)
		if want := !bytes.Contains(p, []byte(`\`)); (certOK || leaseOK) != want {
			t.Errorf("canonical readers accept %s: %v (certificate), %v (lease), want %v", p, certOK, leaseOK, want)
		}
		checkAgrees(t, p)
		for i := range p {
			for _, r := range []byte{'"', '\\', ']', ',', '0', '.', 0xff} {
				m := bytes.Clone(p)
				m[i] = r
				checkAgrees(t, m)
			}
			checkAgrees(t, p[:i])
			checkAgrees(t, append(bytes.Clone(p[:i]), p[i+1:]...))
			checkAgrees(t, append(append(bytes.Clone(p[:i]), '0'), p[i:]...))
		}
		for _, tail := range []string{" ", "\n", "x", "}", ",", "{}", "null"} {
			checkAgrees(t, append(bytes.Clone(p), tail...))
		}
	}
	// Shapes the strict path accepts but the canonical readers leave to it,
	// and empty claims that the strict path refuses.
	for _, p := range []string{
		`{"iss":"","sub":"s","aud":"a","iat":1,"nbf":1,"exp":2,"jti":"j","mid":"m","fpr":"f"}`,
		`{"iss":"k","sub":"","aud":"a","iat":1,"nbf":1,"exp":2,"jti":"j","mid":"m","fpr":"f"}`,
		`{"iss":"k","sub":"s","aud":"","iat":1,"nbf":1,"exp":2,"jti":"j","mid":"m","fpr":"f"}`,
		`{"iss":"k","sub":"s","aud":"a","iat":1,"nbf":1,"exp":2,"jti":"","mid":"m","fpr":"f"}`,
		`{"iss":"k","sub":"s","aud":"a","iat":1,"nbf":1,"exp":2,"jti":"j","mid":"","fpr":"f"}`,
		`{"iss":"k","sub":"s","aud":"a","iat":1,"nbf":1,"exp":2,"jti":"j","mid":"m","fpr":""}`,
		`{"iss":"k","sub":"s","aud":"a","iat":1,"nbf":1,"exp":2,"jti":"","lic":{"policy":1,"entitlements":[],"expires_at":null,"max_machines":0,"holder":""}}`,
		`{"iss":"k","sub":"s","aud":"a","iat":1,"nbf":1,"exp":2,"jti":"j","mid":"m","fpr":"f","x":1}`,
		`{"iss":"k","sub":"s","aud":"a","iat":1,"nbf":1,"exp":2,"jti":"j","fpr":"f","mid":"m"}`,
		`{"iss":"k","sub":"s","aud":"a","iat":1,"nbf":1,"exp":2,"jti":"j","mid":"m","fpr":"f"} `,
		`{"iss":"k","sub":"s","aud":"a","iat":-0,"nbf":1,"exp":2,"jti":"j","mid":"m","fpr":"f"}`,
		`{"iss":"k","sub":"s","aud":"a","iat":01,"nbf":1,"exp":2,"jti":"j","mid":"m","fpr":"f"}`,
		`{"iss":"k","sub":"s","aud":"a","iat":1,"nbf":1,"exp":2,"jti":"j","mid":"m","fpr":"\u0066"}`,
		`{"iss":"k","sub":"s","aud":"a","iat":1,"nbf":1,"exp":2,"jti":"j","lic":{"policy":1,"entitlements":[],"expires_at":null,"max_machines":0,"holder":"","x":[]}}`,
		`{"iss":"k","sub":"s","aud":"a","iat":1,"nbf":1,"exp":2,"jti":"j","lic":{"policy":9223372036854775808,"entitlements":[],"expires_at":null,"max_machines":0,"holder":""}}`,
		`{"iss":"k","sub":"s","aud":"a","iat":1,"nbf":1,"exp":2,"jti":"j","lic":{"policy":0,"entitlements":[],"expires_at":null,"max_machines":9223372036854775808,"holder":""}}`,
		`{"iss":"k","sub":"s","aud":"a","iat":1,"nbf":1,"exp":2,"jti":"j","lic":{"policy":99999999999999999999,"entitlements":[],"expires_at":null,"max_machines":0,"holder":""}}`,
		`{"iss":"k","sub":"s","aud":"a","iat":1,"nbf":1,"exp":2,"jti":"j","lic":{"policy":1,"entitlements":[],"expires_at":253402300800,"max_machines":0,"holder":""}}`,
	} {
		if _, _, ok := canonicalLease([]byte(p)); ok {
			t.Errorf("canonicalLease accepts %s", p)
		}
		if _, _, ok := canonicalCertificate([]byte(p)); ok {
			t.Errorf("canonicalCertificate accepts %s", p)
		}
		checkAgrees(t, []byte(p))
	}
}

// testSigner returns a key of alg that is the same in every run for seed.
func testSigner(tb testing.TB, alg keys.Algorithm, seed byte) *keys.PrivateKey {
	tb.Helper()
	k, err := keys.Generate(alg, bytes.NewReader(bytes.Repeat([]byte{seed}, 256)))
	if err != nil {
		tb.Fatal(err)
	}
	return k
}

// headerTestVerifier returns a verifier trusting an Ed25519 and an ES256
// license key, a registry key and a key marked compromised after the
// fact, and one token of each kind the fast path of verifySignature must
// handle like the slow one.
func headerTestVerifier(tb testing.TB) (*Verifier, []string) {
	tb.Helper()
	ed, es := testSigner(tb, keys.Ed25519, 1), testSigner(tb, keys.ES256, 2)
	reg, bad := testSigner(tb, keys.Ed25519, 3), testSigner(tb, keys.Ed25519, 4)
	var set keys.JWKS
	for _, k := range []*keys.PrivateKey{ed, es, reg, bad} {
		j := k.Public().JWK()
		j.State, j.Purpose, j.Product = "active", "license", "acme"
		if k == reg {
			j.Purpose, j.Product = "registry", ""
		}
		set.Keys = append(set.Keys, j)
	}
	v, err := NewVerifier(set, Options{})
	if err != nil {
		tb.Fatal(err)
	}
	v.MarkCompromised(bad.KID())
	var cert keyward.CertificateClaims
	var lease keyward.LeaseClaims
	if err := json.Unmarshal([]byte(seedCert), &cert); err != nil {
		tb.Fatal(err)
	}
	if err := json.Unmarshal([]byte(seedLease), &lease); err != nil {
		tb.Fatal(err)
	}
	sign := func(k *keys.PrivateKey, typ string, claims any) string {
		tok, err := keys.SignJWSClaims(k, typ, claims)
		if err != nil {
			tb.Fatal(err)
		}
		return tok
	}
	edCert := sign(ed, keyward.TypCertificate, cert)
	otherSig := sign(ed, keyward.TypCertificate, lease)
	return v, []string{
		edCert,
		sign(es, keyward.TypCertificate, cert),
		sign(ed, keyward.TypLease, lease),
		sign(es, keyward.TypLease, lease),
		sign(reg, keyward.TypCertificate, cert),
		sign(bad, keyward.TypCertificate, cert),
		edCert[:strings.LastIndexByte(edCert, '.')] + otherSig[strings.LastIndexByte(otherSig, '.'):], // bad signature
	}
}

// checkHeaderAgrees fails unless verifyKnownHeader, whenever it decides,
// decides as verifyParsed does: same key, payload and error.
func checkHeaderAgrees(t *testing.T, v *Verifier, token string) {
	t.Helper()
	for _, typ := range []string{keyward.TypCertificate, keyward.TypLease} {
		key, payload, done, err := v.verifyKnownHeader(token, typ, nil)
		if !done {
			if err != nil || payload != nil || key != (trustedKey{}) {
				t.Fatalf("verifyKnownHeader(%q, %s) undecided with results %v, %q, %v", token, typ, key.kid, payload, err)
			}
			continue
		}
		wkey, wpayload, werr := v.verifyParsed(token, typ)
		var e, we *Error
		errors.As(err, &e)
		errors.As(werr, &we)
		if key != wkey || !bytes.Equal(payload, wpayload) || (err == nil) != (werr == nil) || (e != nil && (we == nil || *e != *we)) {
			t.Fatalf("verifyKnownHeader(%q, %s) = %v, %q, %v; verifyParsed = %v, %q, %v", token, typ, key.kid, payload, err, wkey.kid, wpayload, werr)
		}
	}
}

// TestKnownHeaderAgrees: the fast path of verifySignature takes the tokens
// Keyward signs, and on them and every mutation of them decides as the
// slow path does (or leaves the token to it).
func TestKnownHeaderAgrees(t *testing.T) {
	v, tokens := headerTestVerifier(t)
	wantFast := map[int]string{0: keyward.TypCertificate, 1: keyward.TypCertificate, 2: keyward.TypLease, 3: keyward.TypLease,
		5: keyward.TypCertificate, 6: keyward.TypCertificate}
	for i, tok := range tokens {
		if typ, ok := wantFast[i]; ok {
			if _, _, done, _ := v.verifyKnownHeader(tok, typ, nil); !done {
				t.Errorf("token #%d (%s) takes the slow path: the fast path would never be used", i, typ)
			}
		}
		checkHeaderAgrees(t, v, tok)
	}
	if testing.Short() {
		tokens = tokens[:1]
	}
	for _, tok := range tokens {
		b := []byte(tok)
		dots := []int{strings.IndexByte(tok, '.'), strings.LastIndexByte(tok, '.')}
		for i := range b {
			// A changed payload character only fails the signature: try a
			// few, and every character of the header and signature.
			inPayload := i > dots[0]+2 && i < dots[1]-2
			if !inPayload || i%41 == 0 {
				for _, r := range []byte{'A', 'e', '_', '-', '.', '=', '+', '\n', 0} {
					m := bytes.Clone(b)
					m[i] = r
					checkHeaderAgrees(t, v, string(m))
				}
			}
			checkHeaderAgrees(t, v, tok[:i])
			checkHeaderAgrees(t, v, tok[:i]+tok[i+1:])
			checkHeaderAgrees(t, v, tok[:i]+"A"+tok[i:])
		}
		checkHeaderAgrees(t, v, tok+".")
		checkHeaderAgrees(t, v, tok+"."+tok)
		checkHeaderAgrees(t, v, tok[:dots[1]]+"."+strings.Repeat("A", 86))
		checkHeaderAgrees(t, v, tok[:dots[0]]+".."+tok[dots[1]+1:])
	}
	long := tokens[0][:strings.IndexByte(tokens[0], '.')+1] + strings.Repeat("e30", keys.MaxJWSSize/3) + "." + strings.Repeat("A", 86)
	checkHeaderAgrees(t, v, long)
}

func FuzzKnownHeaderAgrees(f *testing.F) {
	v, tokens := headerTestVerifier(f)
	for _, tok := range tokens {
		f.Add(tok)
	}
	f.Fuzz(func(t *testing.T, token string) {
		checkHeaderAgrees(t, v, token)
	})
}

// TestVerifyCertificateAllocs guards the fast paths' point: a certificate
// as Keyward signs it verifies with three allocations (the payload as a
// string, the claims, the entitlements), which holds only while the
// decoding buffers stay on the stack.
func TestVerifyCertificateAllocs(t *testing.T) {
	v, tokens := headerTestVerifier(t)
	v.now = func() time.Time { return time.Unix(1800000001, 0) }
	if _, err := v.VerifyCertificate(tokens[0]); err != nil {
		t.Fatal(err)
	}
	if n := testing.AllocsPerRun(20, func() { _, _ = v.VerifyCertificate(tokens[0]) }); n > 3 {
		t.Errorf("VerifyCertificate allocates %v times, want at most 3", n)
	}
}
