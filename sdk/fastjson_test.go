package sdk

import (
	"encoding/json"
	"reflect"
	"testing"
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

// checkAgrees fails if the fast path accepts a payload the strict path
// refuses, or decodes it differently.
func checkAgrees(t *testing.T, payload []byte) {
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
	f.Fuzz(func(t *testing.T, payload []byte) {
		if !json.Valid(payload) && len(payload) > 0 {
			// invalid JSON must never be accepted by the fast path
			if _, _, ok := fastCertificate(payload); ok {
				t.Fatalf("fast path accepts invalid JSON %q", payload)
			}
		}
		checkAgrees(t, payload)
	})
}
