package keys

import (
	"strings"
	"sync/atomic"
	"testing"
)

// TestCheckSegment: checkSegment accepts exactly what AppendDecodeSegment
// decodes, and counts its bytes: every byte value at every one of 1 to 8
// positions in a valid segment.
func TestCheckSegment(t *testing.T) {
	const valid = "eyJhbGciOi"
	for n := 1; n <= 8; n++ {
		for at := range n {
			for c := 0; c < 256; c++ {
				b := []byte(valid[:n])
				b[at] = byte(c)
				part := string(b)
				dec, err := AppendDecodeSegment(nil, part)
				got, ok := checkSegment(part)
				if ok != (err == nil) || ok && got != len(dec) {
					t.Errorf("checkSegment(%q) = %d, %v; AppendDecodeSegment: %d bytes, %v", part, got, ok, len(dec), err)
				}
			}
		}
	}
	if n, ok := checkSegment(""); !ok || n != 0 {
		t.Errorf(`checkSegment("") = %d, %v; want 0, true`, n, ok)
	}
}

// BenchmarkResignParts: the token check of one bulk re-signed certificate
// (a 600-byte certificate, the header the same as the last one's).
func BenchmarkResignParts(b *testing.B) {
	s, err := Generate(Ed25519, nil)
	if err != nil {
		b.Fatal(err)
	}
	tok, err := SignJWS(s, "keyward-cert+jwt", []byte(`{"iss":"keyward","sub":"lic_06hcx2ym00m6twgsrrqy6213nc","aud":"acme","iat":1,"nbf":1,"exp":2,"jti":"crt_06hcx2ym00m6twgsrrqy6213nc","lic":{"policy":0,"entitlements":["pro","sso","audit-export"],"expires_at":null,"max_machines":5,"holder":"customer-00001@example.com"}}`))
	if err != nil {
		b.Fatal(err)
	}
	var last atomic.Pointer[checkedHeader]
	for b.Loop() {
		if _, _, err := resignParts(tok, &last); err != nil {
			b.Fatal(err)
		}
	}
}

// TestResignPartsHeaderCache: a header that resignParts accepted is not
// parsed again, and nothing else passes for it: every one-byte change of
// the cached header segment still fails as it would have.
func TestResignPartsHeaderCache(t *testing.T) {
	s, err := Generate(Ed25519, nil)
	if err != nil {
		t.Fatal(err)
	}
	tok, err := SignJWS(s, "keyward-cert+jwt", []byte(`{"sub":"lic_1"}`))
	if err != nil {
		t.Fatal(err)
	}
	var last atomic.Pointer[checkedHeader]
	if typ, _, err := resignParts(tok, &last); err != nil || typ != "keyward-cert+jwt" {
		t.Fatalf("resignParts = %q, %v", typ, err)
	}
	if c := last.Load(); c == nil || c.seg != tok[:strings.IndexByte(tok, '.')] {
		t.Fatalf("header not cached: %+v", c)
	}
	h := strings.IndexByte(tok, '.')
	for i := range h {
		for _, c := range []byte{'A', 'z', '0', '_', '=', '.', '%'} {
			if tok[i] == c {
				continue
			}
			bad := tok[:i] + string(c) + tok[i+1:]
			last.Store(&checkedHeader{seg: tok[:h], typ: "keyward-cert+jwt"})
			typ, _, err := resignParts(bad, &last)
			if err == nil && typ == "keyward-cert+jwt" {
				// A different header that still parses must say the same
				// typ only if it really does: decode it to compare.
				dec, derr := AppendDecodeSegment(nil, bad[:h])
				hdr, perr := parseHeader(dec)
				if derr != nil || perr != nil || hdr.Typ != typ {
					t.Errorf("header byte %d = %q: accepted as %q from the cache", i, c, typ)
				}
			}
		}
	}
}
