package keys_test

import (
	"bytes"
	"encoding/base64"
	"errors"
	"strings"
	"testing"

	"github.com/keyward/keyward/keys"
)

// mustFixedKey returns a key of alg that is the same in every run.
func mustFixedKey(tb testing.TB, alg keys.Algorithm) *keys.PrivateKey {
	tb.Helper()
	k, err := keys.Generate(alg, bytes.NewReader(bytes.Repeat([]byte{42}, 64)))
	if err != nil {
		tb.Fatal(err)
	}
	return k
}

func mustSignJWS(tb testing.TB, s keys.Signer, typ string, payload []byte) string {
	tb.Helper()
	tok, err := keys.SignJWS(s, typ, payload)
	if err != nil {
		tb.Fatalf("SignJWS = %v", err)
	}
	return tok
}

// b64 is unpadded base64url.
func b64(s string) string { return base64.RawURLEncoding.EncodeToString([]byte(s)) }

func wantVerificationError(t *testing.T, what string, err error) {
	t.Helper()
	var ve *keys.VerificationError
	if !errors.As(err, &ve) {
		t.Errorf("%s = %v (%T), want *keys.VerificationError", what, err, err)
	} else if !strings.HasPrefix(err.Error(), "jws: ") {
		t.Errorf("%s error %q lacks prefix \"jws: \"", what, err)
	}
}

func TestSignVerifyJWS(t *testing.T) {
	for _, alg := range algs {
		t.Run(string(alg), func(t *testing.T) {
			k := mustGenerate(t, alg)
			payload := []byte(`{"sub":"lic_1"}`)
			tok := mustSignJWS(t, k, "keyward-license+jws", payload)
			j, err := keys.VerifyJWS(tok, k.Public())
			if err != nil {
				t.Fatalf("VerifyJWS(%q) = %v", tok, err)
			}
			wantHeader := `{"alg":"` + alg.JWSAlg() + `","kid":"` + k.KID() + `","typ":"keyward-license+jws"}`
			if string(j.RawHeader) != wantHeader {
				t.Errorf("RawHeader = %s, want %s", j.RawHeader, wantHeader)
			}
			if j.Header != (keys.Header{Alg: alg.JWSAlg(), Kid: k.KID(), Typ: "keyward-license+jws"}) {
				t.Errorf("Header = %+v", j.Header)
			}
			if !bytes.Equal(j.Payload, payload) || len(j.Signature) != 64 {
				t.Errorf("Payload = %s, len(Signature) = %d", j.Payload, len(j.Signature))
			}
			if string(j.SigningInput) != tok[:strings.LastIndexByte(tok, '.')] {
				t.Errorf("SigningInput = %s", j.SigningInput)
			}

			// Empty typ is left out.
			j, err = keys.VerifyJWS(mustSignJWS(t, k, "", payload), k.Public())
			if err != nil || string(j.RawHeader) != `{"alg":"`+alg.JWSAlg()+`","kid":"`+k.KID()+`"}` {
				t.Errorf("VerifyJWS(no typ) = %s, %v", j.RawHeader, err)
			}

			// Claims are JSON-encoded.
			tok, err = keys.SignJWSClaims(k, "t", map[string]int{"n": 1})
			if err != nil {
				t.Fatal(err)
			}
			if j, err := keys.VerifyJWS(tok, k.Public()); err != nil || string(j.Payload) != `{"n":1}` {
				t.Errorf("VerifyJWS(SignJWSClaims) = %v", err)
			}
			if _, err := keys.SignJWSClaims(k, "t", func() {}); err == nil {
				t.Errorf("SignJWSClaims(func) = nil error")
			}
		})
	}
}

func TestVerifyJWSWrongKey(t *testing.T) {
	ed, ec := mustGenerate(t, keys.Ed25519), mustGenerate(t, keys.ES256)
	tok := mustSignJWS(t, ed, "", []byte("p"))
	tests := []struct {
		name string
		key  keys.PublicKey
		want string
	}{
		{"OtherEd25519", mustGenerate(t, keys.Ed25519).Public(), "jws: bad signature"},
		{"ES256", ec.Public(), `jws: alg mismatch: token "EdDSA", key "ES256"`},
		{"Zero", keys.PublicKey{}, "jws: no public key"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			j, err := keys.VerifyJWS(tok, tt.key)
			if j != nil || err == nil || err.Error() != tt.want {
				t.Errorf("VerifyJWS = %v, %v, want nil, %s", j, err, tt.want)
			}
			wantVerificationError(t, "VerifyJWS", err)
		})
	}
}

func TestSignJWSLimits(t *testing.T) {
	k := mustGenerate(t, keys.Ed25519)
	if _, err := keys.SignJWS(k, "", make([]byte, keys.MaxJWSSize)); err == nil {
		t.Errorf("SignJWS(huge payload) = nil error")
	}
	if _, err := keys.SignJWS(fakeSigner{alg: "RS256"}, "", nil); err == nil {
		t.Errorf("SignJWS(RS256 signer) = nil error")
	}
	if _, err := keys.SignJWS(fakeSigner{alg: keys.Ed25519, sig: make([]byte, 63)}, "", nil); err == nil {
		t.Errorf("SignJWS(63-byte signature) = nil error")
	}
	if _, err := keys.SignJWS(fakeSigner{alg: keys.Ed25519, err: errors.New("hsm down")}, "", nil); err == nil || !strings.Contains(err.Error(), "hsm down") {
		t.Errorf("SignJWS(failing signer) = %v, want the signer's error", err)
	}
	// The longest payload SignJWS accepts parses.
	n := 0
	for {
		if _, err := keys.SignJWS(k, "", make([]byte, n+1)); err != nil {
			break
		}
		n++
		if n > keys.MaxJWSSize {
			t.Fatal("no limit")
		}
	}
	tok := mustSignJWS(t, k, "", make([]byte, n))
	if _, err := keys.VerifyJWS(tok, k.Public()); err != nil || len(tok) > keys.MaxJWSSize {
		t.Errorf("VerifyJWS(longest token, %d bytes) = %v", len(tok), err)
	}
}

// fakeSigner is a Signer with fixed answers.
type fakeSigner struct {
	alg keys.Algorithm
	sig []byte
	err error
}

func (f fakeSigner) Algorithm() keys.Algorithm   { return f.alg }
func (f fakeSigner) KID() string                 { return "fake" }
func (f fakeSigner) Sign([]byte) ([]byte, error) { return f.sig, f.err }

func TestParseJWSRejects(t *testing.T) {
	sig := b64(strings.Repeat("s", 64))
	pay := b64("payload")
	tok := func(header string) string { return b64(header) + "." + pay + "." + sig }
	tests := map[string]string{
		"Empty":               "",
		"OnePart":             b64(`{"alg":"EdDSA"}`),
		"TwoParts":            b64(`{"alg":"EdDSA"}`) + "." + pay,
		"FourParts":           tok(`{"alg":"EdDSA"}`) + "." + sig,
		"EmptyHeader":         "." + pay + "." + sig,
		"EmptyPayload":        b64(`{"alg":"EdDSA"}`) + ".." + sig,
		"EmptySignature":      b64(`{"alg":"EdDSA"}`) + "." + pay + ".",
		"Padded":              b64(`{"alg":"EdDSA"}`) + "." + base64.URLEncoding.EncodeToString([]byte("payload")) + "." + sig,
		"StdAlphabet":         b64(`{"alg":"EdDSA"}`) + "." + pay + "." + strings.ReplaceAll(sig, "c", "+"),
		"Newline":             b64(`{"alg":"EdDSA"}`) + "." + pay + "." + sig[:20] + "\n" + sig[20:],
		"CR":                  b64(`{"alg":"EdDSA"}`) + "." + pay + "\r." + sig,
		"Space":               b64(`{"alg":"EdDSA"}`) + " ." + pay + "." + sig,
		"TrailingBits":        b64(`{"alg":"EdDSA"}`) + "." + pay + "." + sig[:len(sig)-1] + "t",
		"AlgNone":             tok(`{"alg":"none"}`),
		"AlgHS256":            tok(`{"alg":"HS256"}`),
		"AlgRS256":            tok(`{"alg":"RS256"}`),
		"AlgLower":            tok(`{"alg":"eddsa"}`),
		"AlgEd25519":          tok(`{"alg":"Ed25519"}`),
		"AlgMissing":          tok(`{"kid":"k"}`),
		"AlgEmpty":            tok(`{"alg":""}`),
		"AlgNumber":           tok(`{"alg":1}`),
		"AlgNull":             tok(`{"alg":null}`),
		"AlgArray":            tok(`{"alg":["EdDSA"]}`),
		"KidNumber":           tok(`{"alg":"EdDSA","kid":5}`),
		"TypNull":             tok(`{"alg":"EdDSA","typ":null}`),
		"Crit":                tok(`{"alg":"EdDSA","crit":["exp"],"exp":1}`),
		"CritEmpty":           tok(`{"alg":"EdDSA","crit":[]}`),
		"DuplicateAlg":        tok(`{"alg":"EdDSA","alg":"none"}`),
		"DuplicateEscaped":    tok(`{"alg":"EdDSA","\u0061lg":"none"}`),
		"DuplicateOther":      tok(`{"alg":"EdDSA","x":1,"x":2}`),
		"CaseVariantAlg":      tok(`{"alg":"EdDSA","ALG":"none"}`),
		"CaseVariantKid":      tok(`{"alg":"EdDSA","Kid":"k"}`),
		"KelvinKid":           tok(`{"alg":"EdDSA","\u212aid":"k"}`),
		"HeaderArray":         tok(`["alg","EdDSA"]`),
		"HeaderString":        tok(`"EdDSA"`),
		"HeaderNotJSON":       tok(`alg=EdDSA`),
		"HeaderTrailing":      tok(`{"alg":"EdDSA"}{}`),
		"HeaderTrailingJunk":  tok(`{"alg":"EdDSA"}x`),
		"HeaderUnclosed":      tok(`{"alg":"EdDSA"`),
		"HeaderTrailingComma": tok(`{"alg":"EdDSA",}`),
		"Sig63":               b64(`{"alg":"EdDSA"}`) + "." + pay + "." + b64(strings.Repeat("s", 63)),
		"Sig65":               b64(`{"alg":"EdDSA"}`) + "." + pay + "." + b64(strings.Repeat("s", 65)),
		"TooLong":             b64(`{"alg":"EdDSA"}`) + "." + strings.Repeat("A", keys.MaxJWSSize) + "." + sig,
	}
	for name, token := range tests {
		t.Run(name, func(t *testing.T) {
			j, err := keys.ParseJWS(token)
			if err == nil {
				t.Fatalf("ParseJWS(%q) = %+v, nil, want error", token, j)
			}
			wantVerificationError(t, "ParseJWS", err)
		})
	}
}

func TestParseJWSAccepts(t *testing.T) {
	sig := b64(strings.Repeat("s", 64))
	for _, header := range []string{
		`{"alg":"EdDSA"}`,
		`{"alg":"ES256"}`,
		` { "typ" : "x" , "alg" : "EdDSA" , "kid" : "k" } `,
		`{"alg":"EdDSA","x5u":"ignored","nested":{"alg":"none","crit":[]}}`,
		`{"alg":"\u0045dDSA"}`,
	} {
		j, err := keys.ParseJWS(b64(header) + "." + b64("p") + "." + sig)
		if err != nil {
			t.Errorf("ParseJWS(header %s) = %v", header, err)
			continue
		}
		if j.Header.Alg != "EdDSA" && j.Header.Alg != "ES256" {
			t.Errorf("ParseJWS(header %s).Header = %+v", header, j.Header)
		}
	}
}

// TestMangledJWS flips bits of every byte and cuts at every position of
// valid tokens: nothing may panic, and nothing but the original may verify.
func TestMangledJWS(t *testing.T) {
	for _, alg := range algs {
		t.Run(string(alg), func(t *testing.T) {
			k := mustGenerate(t, alg)
			tok := mustSignJWS(t, k, "keyward-license+jws", []byte(`{"sub":"lic_1","exp":1700000000}`))
			check := func(what, bad string) {
				t.Helper()
				if bad == tok {
					return
				}
				if j, err := keys.VerifyJWS(bad, k.Public()); err == nil {
					t.Errorf("VerifyJWS(%s) = %+v, nil, want error", what, j)
				} else {
					wantVerificationError(t, "VerifyJWS("+what+")", err)
				}
			}
			for i := range len(tok) {
				for _, mask := range []byte{0x01, 0x02, 0x04, 0x08, 0x10, 0x20, 0x40, 0x80, 0x03, 0xff} {
					b := []byte(tok)
					b[i] ^= mask
					check("flip", string(b))
				}
				check("prefix", tok[:i])
				check("suffix", tok[i+1:])
				check("delete", tok[:i]+tok[i+1:])
				check("insert", tok[:i]+"A"+tok[i:])
			}
		})
	}
}

func FuzzParseJWS(f *testing.F) {
	var pubs []keys.PublicKey
	for _, alg := range algs {
		k := mustFixedKey(f, alg)
		pubs = append(pubs, k.Public())
		f.Add(mustSignJWS(f, k, "keyward-license+jws", []byte(`{"sub":"lic_1"}`)))
		f.Add(mustSignJWS(f, k, "", nil))
	}
	pubs = append(pubs, mustRFCKey(f).Public())
	f.Add(rfcInput + "." + rfcSig)
	f.Add(b64(`{"alg":"none"}`) + "." + b64("p") + ".")
	f.Add("a.b.c")
	f.Fuzz(func(t *testing.T, token string) {
		j, err := keys.ParseJWS(token)
		if err != nil {
			wantVerificationError(t, "ParseJWS", err)
			return
		}
		enc := base64.RawURLEncoding
		re := enc.EncodeToString(j.RawHeader) + "." + enc.EncodeToString(j.Payload)
		if string(j.SigningInput) != re {
			t.Fatalf("SigningInput = %q, re-encoded %q", j.SigningInput, re)
		}
		if re += "." + enc.EncodeToString(j.Signature); re != token {
			t.Fatalf("ParseJWS(%q) re-encodes to %q", token, re)
		}
		for _, p := range pubs {
			err := j.Verify(p)
			if err != nil {
				wantVerificationError(t, "Verify", err)
			}
			if _, err2 := keys.VerifyJWS(token, p); (err == nil) != (err2 == nil) {
				t.Fatalf("Verify = %v but VerifyJWS = %v", err, err2)
			}
		}
	})
}

func BenchmarkSignJWS(b *testing.B) {
	for _, alg := range algs {
		b.Run(string(alg), func(b *testing.B) {
			k := mustGenerate(b, alg)
			payload := []byte(`{"sub":"lic_1","exp":1700000000}`)
			for b.Loop() {
				if _, err := keys.SignJWS(k, "keyward-license+jws", payload); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkVerifyJWS(b *testing.B) {
	for _, alg := range algs {
		b.Run(string(alg), func(b *testing.B) {
			k := mustGenerate(b, alg)
			tok := mustSignJWS(b, k, "keyward-license+jws", []byte(`{"sub":"lic_1","exp":1700000000}`))
			p := k.Public()
			for b.Loop() {
				if _, err := keys.VerifyJWS(tok, p); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// TestResignJWS: the re-signed token carries the same payload segment
// byte for byte and the original typ, names the new key, verifies with it
// and not with the old one; malformed input is refused.
func TestResignJWS(t *testing.T) {
	for _, alg := range []keys.Algorithm{keys.Ed25519, keys.ES256} {
		old, nu := mustGenerate(t, keys.Ed25519), mustGenerate(t, alg)
		tok := mustSignJWS(t, old, "license+jwt", []byte(`{"sub":"lic_1","jti":"crt_1","exp":2}`))
		re, err := keys.ResignJWS(nu, tok)
		if err != nil {
			t.Fatalf("%s: ResignJWS = %v", alg, err)
		}
		if got, want := strings.Split(re, ".")[1], strings.Split(tok, ".")[1]; got != want {
			t.Errorf("%s: payload segment %q, want %q", alg, got, want)
		}
		j, err := keys.VerifyJWS(re, nu.Public())
		if err != nil {
			t.Fatalf("%s: VerifyJWS(re-signed, new key) = %v", alg, err)
		}
		if j.Header.Kid != nu.KID() || j.Header.Typ != "license+jwt" || j.Header.Alg != alg.JWSAlg() {
			t.Errorf("%s: header %+v", alg, j.Header)
		}
		if _, err := keys.VerifyJWS(re, old.Public()); err == nil {
			t.Errorf("%s: re-signed token verifies with the old key", alg)
		}
		// The same bytes as SignJWS of the payload with the new key, but for
		// the signature (ECDSA is randomized).
		direct := mustSignJWS(t, nu, "license+jwt", []byte(`{"sub":"lic_1","jti":"crt_1","exp":2}`))
		if a, b := re[:strings.LastIndexByte(re, '.')], direct[:strings.LastIndexByte(direct, '.')]; a != b {
			t.Errorf("%s: signing input %q, SignJWS gives %q", alg, a, b)
		}
	}
	k := mustGenerate(t, keys.Ed25519)
	for _, bad := range []string{"", "a.b", "a.b.c.d", mustSignJWS(t, k, "x", []byte("{}")) + "x"} {
		if _, err := keys.ResignJWS(k, bad); err == nil {
			t.Errorf("ResignJWS(%q) = nil error", bad)
		}
	}
}

// TestResignJWSMangled: ResignJWS, and a Resigner that has seen the valid
// token's header, refuse exactly the tokens ParseJWS refuses, for every
// byte flipped and every cut of a valid token.
func TestResignJWSMangled(t *testing.T) {
	k := mustGenerate(t, keys.Ed25519)
	tok := mustSignJWS(t, k, "license+jwt", []byte(`{"sub":"lic_1","jti":"crt_1","exp":2}`))
	r := keys.NewResigner(k)
	check := func(s string) {
		_, perr := keys.ParseJWS(s)
		_, rerr := keys.ResignJWS(k, s)
		if (perr == nil) != (rerr == nil) {
			t.Errorf("ResignJWS(%q) = %v, ParseJWS = %v", s, rerr, perr)
		}
		if _, err := r.Resign(tok); err != nil { // the valid header is the last one seen
			t.Fatalf("Resign(valid token) = %v", err)
		}
		if _, rerr = r.Resign(s); (perr == nil) != (rerr == nil) {
			t.Errorf("Resigner.Resign(%q) = %v, ParseJWS = %v", s, rerr, perr)
		}
	}
	for i := range len(tok) {
		check(tok[:i])
		for _, x := range []byte{1, 0x20, 0x80} {
			b := []byte(tok)
			b[i] ^= x
			check(string(b))
		}
	}
}
