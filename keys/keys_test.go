package keys_test

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/asn1"
	"encoding/base64"
	"encoding/json"
	"math/big"
	"strings"
	"testing"

	"github.com/keyward/keyward/keys"
)

// RFC 8037 Appendix A.
const (
	rfcD     = "nWGxne_9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A"
	rfcX     = "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"
	rfcKid   = "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k"
	rfcInput = "eyJhbGciOiJFZERTQSJ9.RXhhbXBsZSBvZiBFZDI1NTE5IHNpZ25pbmc"
	rfcSig   = "hgyY0il_MGCjP0JzlnLWG1PPOt7-09PGcvMg3AIbQR6dWbhijcNR4ki4iylGjg5BhVsPt9g7sVvpAr_MuM0KAg"
)

var algs = []keys.Algorithm{keys.Ed25519, keys.ES256}

func mustB64(tb testing.TB, s string) []byte {
	tb.Helper()
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil {
		tb.Fatal(err)
	}
	return b
}

// mustRFCKey returns the RFC 8037 Appendix A private key.
func mustRFCKey(tb testing.TB) *keys.PrivateKey {
	tb.Helper()
	k, err := keys.NewEd25519FromSeed(mustB64(tb, rfcD))
	if err != nil {
		tb.Fatal(err)
	}
	return k
}

func mustGenerate(tb testing.TB, alg keys.Algorithm) *keys.PrivateKey {
	tb.Helper()
	k, err := keys.Generate(alg, nil)
	if err != nil {
		tb.Fatalf("Generate(%s) = %v", alg, err)
	}
	return k
}

func TestParseAlgorithm(t *testing.T) {
	for _, a := range algs {
		if got, err := keys.ParseAlgorithm(string(a)); got != a || err != nil {
			t.Errorf("ParseAlgorithm(%q) = %q, %v, want %q, nil", a, got, err, a)
		}
	}
	for _, s := range []string{"", "ed25519", "EdDSA", "es256", "ES384", "RS256", "none", "Ed25519 "} {
		if got, err := keys.ParseAlgorithm(s); err == nil {
			t.Errorf("ParseAlgorithm(%q) = %q, nil, want error", s, got)
		}
	}
	if got := keys.Ed25519.JWSAlg(); got != "EdDSA" {
		t.Errorf("Ed25519.JWSAlg() = %q, want EdDSA", got)
	}
	if got := keys.ES256.JWSAlg(); got != "ES256" {
		t.Errorf("ES256.JWSAlg() = %q, want ES256", got)
	}
	if got := keys.Algorithm("RS256").JWSAlg(); got != "" {
		t.Errorf("RS256.JWSAlg() = %q, want \"\"", got)
	}
}

func TestRFC8037(t *testing.T) {
	k := mustRFCKey(t)
	if got := k.KID(); got != rfcKid {
		t.Errorf("KID() = %q, want %q", got, rfcKid)
	}
	j := k.Public().JWK()
	want := keys.JWK{Kty: "OKP", Crv: "Ed25519", X: rfcX, Kid: rfcKid, Alg: "EdDSA", Use: "sig"}
	if j != want {
		t.Errorf("JWK() = %+v, want %+v", j, want)
	}
	sig, err := k.Sign([]byte(rfcInput))
	if err != nil {
		t.Fatal(err)
	}
	if got := base64.RawURLEncoding.EncodeToString(sig); got != rfcSig {
		t.Errorf("Sign(%q) = %s, want %s", rfcInput, got, rfcSig)
	}

	// The RFC's JWK, with and without our kid.
	for _, kid := range []string{"", rfcKid} {
		p, err := keys.PublicKeyFromJWK(keys.JWK{Kty: "OKP", Crv: "Ed25519", X: rfcX, Kid: kid})
		if err != nil {
			t.Fatalf("PublicKeyFromJWK(kid %q) = %v", kid, err)
		}
		if p != k.Public() {
			t.Errorf("PublicKeyFromJWK(kid %q) != k.Public()", kid)
		}
		if got := p.Thumbprint(); got != rfcKid {
			t.Errorf("Thumbprint() = %q, want %q", got, rfcKid)
		}
		if !p.Verify([]byte(rfcInput), mustB64(t, rfcSig)) {
			t.Errorf("Verify(RFC signature) = false, want true")
		}
		if _, err := keys.VerifyJWS(rfcInput+"."+rfcSig, p); err != nil {
			t.Errorf("VerifyJWS(RFC token) = %v, want nil", err)
		}
	}

	// Generate reads the seed from rand.
	g, err := keys.Generate(keys.Ed25519, bytes.NewReader(mustB64(t, rfcD)))
	if err != nil || g.KID() != rfcKid {
		t.Errorf("Generate(Ed25519, RFC seed) = %v, %v, want kid %s", g, err, rfcKid)
	}
}

func TestGenerate(t *testing.T) {
	for _, alg := range algs {
		t.Run(string(alg), func(t *testing.T) {
			k := mustGenerate(t, alg)
			if k.Algorithm() != alg || k.Public().Algorithm() != alg {
				t.Errorf("Algorithm() = %s, %s, want %s", k.Algorithm(), k.Public().Algorithm(), alg)
			}
			if k.KID() != k.Public().Thumbprint() || len(k.KID()) != 43 {
				t.Errorf("KID() = %q, Thumbprint() = %q", k.KID(), k.Public().Thumbprint())
			}
			if k2 := mustGenerate(t, alg); k2.Public() == k.Public() {
				t.Errorf("two generated keys are equal")
			}
			// Same random bytes, same key.
			seed := bytes.Repeat([]byte{7}, 64)
			a, err1 := keys.Generate(alg, bytes.NewReader(seed))
			b, err2 := keys.Generate(alg, bytes.NewReader(seed))
			if err1 != nil || err2 != nil || a.KID() != b.KID() {
				t.Errorf("Generate with same rand: %v %v, kids %s %s", err1, err2, a, b)
			}
			if _, err := keys.Generate(alg, bytes.NewReader(nil)); err == nil {
				t.Errorf("Generate(empty reader) = nil error")
			}
		})
	}
	if _, err := keys.Generate("RS256", nil); err == nil {
		t.Errorf("Generate(RS256) = nil error")
	}
	if _, err := keys.NewEd25519FromSeed(make([]byte, 31)); err == nil {
		t.Errorf("NewEd25519FromSeed(31 bytes) = nil error")
	}
}

func TestSignVerify(t *testing.T) {
	for _, alg := range algs {
		t.Run(string(alg), func(t *testing.T) {
			k := mustGenerate(t, alg)
			p := k.Public()
			msg := []byte("signing input")
			sig, err := k.Sign(msg)
			if err != nil || len(sig) != 64 {
				t.Fatalf("Sign = %x, %v, want 64 bytes", sig, err)
			}
			if !p.Verify(msg, sig) {
				t.Errorf("Verify = false, want true")
			}
			if p.Verify([]byte("other input"), sig) {
				t.Errorf("Verify(other input) = true")
			}
			for i := range sig {
				bad := bytes.Clone(sig)
				bad[i] ^= 1
				if p.Verify(msg, bad) {
					t.Errorf("Verify(sig with byte %d flipped) = true", i)
				}
			}
			if p.Verify(msg, sig[:63]) || p.Verify(msg, append(sig, 0)) {
				t.Errorf("Verify(wrong length) = true")
			}
			if mustGenerate(t, alg).Public().Verify(msg, sig) {
				t.Errorf("Verify with another key = true")
			}
			if (keys.PublicKey{}).Verify(msg, sig) {
				t.Errorf("zero PublicKey Verify = true")
			}
		})
	}
}

func TestES256IsRawRS(t *testing.T) {
	k := mustGenerate(t, keys.ES256)
	msg := []byte("x")
	sig, err := k.Sign(msg)
	if err != nil {
		t.Fatal(err)
	}
	// sig is r||s; re-encoded as ASN.1 DER, crypto/ecdsa verifies it.
	h := sha256.Sum256(msg)
	pub := k.Public().CryptoPublicKey().(*ecdsa.PublicKey)
	der, err := asn1.Marshal(struct{ R, S *big.Int }{new(big.Int).SetBytes(sig[:32]), new(big.Int).SetBytes(sig[32:])})
	if err != nil {
		t.Fatal(err)
	}
	if !ecdsa.VerifyASN1(pub, h[:], der) {
		t.Errorf("ecdsa.VerifyASN1(ASN.1 of r||s) = false, want true")
	}
	if ecdsa.VerifyASN1(pub, h[:], sig) {
		t.Errorf("ecdsa.VerifyASN1(raw r||s) = true, want false")
	}
}

func TestJWKRoundTrip(t *testing.T) {
	for _, alg := range algs {
		t.Run(string(alg), func(t *testing.T) {
			k := mustGenerate(t, alg)
			j := k.Public().JWK()
			if j.Kid != k.KID() || j.Alg != alg.JWSAlg() || j.Use != "sig" {
				t.Errorf("JWK() = %+v", j)
			}
			if (alg == keys.ES256) != (j.Y != "") {
				t.Errorf("JWK() y = %q for %s", j.Y, alg)
			}
			j.State, j.Product, j.Purpose = "active", "acme", "license"
			b, err := json.Marshal(keys.JWKS{Keys: []keys.JWK{j}})
			if err != nil {
				t.Fatal(err)
			}
			var set keys.JWKS
			if err := json.Unmarshal(b, &set); err != nil {
				t.Fatal(err)
			}
			got, ok := set.Find(k.KID())
			if !ok || got != j {
				t.Fatalf("Find(%q) = %+v, %v, want %+v", k.KID(), got, ok, j)
			}
			p, err := keys.PublicKeyFromJWK(got)
			if err != nil {
				t.Fatalf("PublicKeyFromJWK(%+v) = %v", got, err)
			}
			if p != k.Public() || p.Thumbprint() != k.KID() {
				t.Errorf("round trip changed the key")
			}
			if _, ok := set.Find("nope"); ok {
				t.Errorf("Find(nope) = true")
			}
			if _, ok := (keys.JWKS{Keys: []keys.JWK{{}}}).Find(""); ok {
				t.Errorf("Find(\"\") = true")
			}
		})
	}
	if (keys.PublicKey{}).JWK() != (keys.JWK{}) || (keys.PublicKey{}).Thumbprint() != "" {
		t.Errorf("zero PublicKey has a JWK or thumbprint")
	}
}

func TestPublicKeyFromJWKRejects(t *testing.T) {
	ed := mustRFCKey(t).Public().JWK()
	ec := mustGenerate(t, keys.ES256).Public().JWK()
	enc := base64.RawURLEncoding.EncodeToString
	flipLast := func(s string) string {
		b := mustB64(t, s)
		b[len(b)-1] ^= 1
		return enc(b)
	}
	tests := map[string]func(j *keys.JWK){
		"EdWrongKid":       func(j *keys.JWK) { j.Kid = ec.Kid },
		"EdX31":            func(j *keys.JWK) { j.X = enc(make([]byte, 31)) },
		"EdX33":            func(j *keys.JWK) { j.X = enc(make([]byte, 33)) },
		"EdXEmpty":         func(j *keys.JWK) { j.X = "" },
		"EdXPadded":        func(j *keys.JWK) { j.X += "=" },
		"EdXStdAlphabet":   func(j *keys.JWK) { j.X = strings.ReplaceAll(j.X, "_", "/") },
		"EdXNewline":       func(j *keys.JWK) { j.X = j.X[:10] + "\n" + j.X[10:] },
		"EdXTrailingBits":  func(j *keys.JWK) { j.X = j.X[:42] + "p" },
		"EdWithY":          func(j *keys.JWK) { j.Y = j.X },
		"EdAlgES256":       func(j *keys.JWK) { j.Alg = "ES256" },
		"EdUseEnc":         func(j *keys.JWK) { j.Use = "enc" },
		"EdCrvX25519":      func(j *keys.JWK) { j.Crv = "X25519" },
		"EdKtyEC":          func(j *keys.JWK) { j.Kty = "EC" },
		"ECWrongKid":       func(j *keys.JWK) { j.Kid = rfcKid },
		"ECX31":            func(j *keys.JWK) { j.X = enc(mustB64(t, j.X)[1:]) },
		"ECY33":            func(j *keys.JWK) { j.Y = enc(append([]byte{0}, mustB64(t, j.Y)...)) },
		"ECNoY":            func(j *keys.JWK) { j.Y = "" },
		"ECOffCurve":       func(j *keys.JWK) { j.Y = flipLast(j.Y); j.Kid = "" },
		"ECZeroPoint":      func(j *keys.JWK) { j.X, j.Y, j.Kid = enc(make([]byte, 32)), enc(make([]byte, 32)), "" },
		"ECUnreduced":      func(j *keys.JWK) { j.X, j.Kid = enc(bytes.Repeat([]byte{0xff}, 32)), "" },
		"ECCrvP384":        func(j *keys.JWK) { j.Crv = "P-384" },
		"ECCrvLower":       func(j *keys.JWK) { j.Crv = "p-256" },
		"ECAlgEdDSA":       func(j *keys.JWK) { j.Alg = "EdDSA" },
		"KtyRSA":           func(j *keys.JWK) { j.Kty = "RSA" },
		"KtyOct":           func(j *keys.JWK) { j.Kty = "oct" },
		"KtyEmpty":         func(j *keys.JWK) { j.Kty = "" },
		"ECKidOfOtherCase": func(j *keys.JWK) { j.Kid = strings.ToUpper(j.Kid) },
	}
	for name, mangle := range tests {
		t.Run(name, func(t *testing.T) {
			j := ed
			if strings.HasPrefix(name, "EC") || strings.HasPrefix(name, "Kty") {
				j = ec
			}
			mangle(&j)
			if p, err := keys.PublicKeyFromJWK(j); err == nil {
				t.Errorf("PublicKeyFromJWK(%+v) = %v, nil, want error", j, p)
			}
		})
	}
	// The unmangled keys are fine.
	for _, j := range []keys.JWK{ed, ec} {
		if _, err := keys.PublicKeyFromJWK(j); err != nil {
			t.Errorf("PublicKeyFromJWK(%+v) = %v", j, err)
		}
	}
}

func TestPKIXAndPKCS8(t *testing.T) {
	for _, alg := range algs {
		t.Run(string(alg), func(t *testing.T) {
			k := mustGenerate(t, alg)
			der, err := keys.MarshalPublic(k.Public())
			if err != nil {
				t.Fatal(err)
			}
			p, err := keys.ParsePublic(der)
			if err != nil || p != k.Public() {
				t.Fatalf("ParsePublic(MarshalPublic(k)) = %v, %v", p, err)
			}
			if _, err := keys.ParsePublic(append(der, 0)); err == nil {
				t.Errorf("ParsePublic(trailing byte) = nil error")
			}

			sec, err := keys.MarshalPrivate(k)
			if err != nil {
				t.Fatal(err)
			}
			k2, err := keys.ParsePrivate(sec)
			if err != nil {
				t.Fatal(err)
			}
			if k2.KID() != k.KID() || k2.Public() != k.Public() {
				t.Errorf("ParsePrivate(MarshalPrivate(k)) kid = %s, want %s", k2.KID(), k.KID())
			}
			sig, err := k2.Sign([]byte("m"))
			if err != nil || !k.Public().Verify([]byte("m"), sig) {
				t.Errorf("parsed key signs unverifiably: %v", err)
			}
		})
	}

	// Other curves and garbage are refused.
	p384, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	pubDER, _ := x509.MarshalPKIXPublicKey(&p384.PublicKey)
	privDER, _ := x509.MarshalPKCS8PrivateKey(p384)
	if _, err := keys.ParsePublic(pubDER); err == nil {
		t.Errorf("ParsePublic(P-384) = nil error")
	}
	if _, err := keys.ParsePrivate(privDER); err == nil {
		t.Errorf("ParsePrivate(P-384) = nil error")
	}
	if _, err := keys.ParsePublic([]byte("junk")); err == nil {
		t.Errorf("ParsePublic(junk) = nil error")
	}
	if _, err := keys.ParsePrivate([]byte("junk")); err == nil {
		t.Errorf("ParsePrivate(junk) = nil error")
	}
	if _, err := keys.MarshalPublic(keys.PublicKey{}); err == nil {
		t.Errorf("MarshalPublic(zero) = nil error")
	}
}

func TestCryptoPublicKey(t *testing.T) {
	k := mustRFCKey(t)
	pub := k.Public().CryptoPublicKey().(ed25519.PublicKey)
	if base64.RawURLEncoding.EncodeToString(pub) != rfcX {
		t.Fatalf("CryptoPublicKey() = %x", pub)
	}
	pub[0] ^= 1 // must not change the key
	if k.Public().Thumbprint() != rfcKid {
		t.Errorf("changing CryptoPublicKey() changed the key")
	}
}

func TestZero(t *testing.T) {
	for _, alg := range algs {
		t.Run(string(alg), func(t *testing.T) {
			k := mustGenerate(t, alg)
			kid := k.KID()
			k.Zero()
			if _, err := k.Sign([]byte("m")); err == nil {
				t.Errorf("Sign after Zero = nil error")
			}
			if _, err := keys.MarshalPrivate(k); err == nil {
				t.Errorf("MarshalPrivate after Zero = nil error")
			}
			if k.KID() != kid {
				t.Errorf("KID after Zero = %q, want %q", k.KID(), kid)
			}
			k.Zero() // idempotent
		})
	}
	// The Ed25519 secret bytes are wiped in place: a copy made before Zero
	// sees the wipe too and cannot sign.
	k := mustRFCKey(t)
	c := *k
	k.Zero()
	if _, err := c.Sign([]byte("m")); err == nil {
		t.Errorf("copy signs after Zero")
	}
	var nilKey *keys.PrivateKey
	nilKey.Zero()
}

// TestZeroWhileSigning: Zero may run while other goroutines sign (a key
// compromised while leases are being signed); under -race this is the
// proof, and every signature is either valid or refused.
func TestZeroWhileSigning(t *testing.T) {
	k, err := keys.Generate(keys.Ed25519, nil)
	if err != nil {
		t.Fatal(err)
	}
	pub := k.Public()
	msg := []byte("signing input")
	done := make(chan struct{})
	for range 4 {
		go func() {
			defer func() { done <- struct{}{} }()
			for range 200 {
				sig, err := k.Sign(msg)
				if err == nil && !pub.Verify(msg, sig) {
					t.Error("a signature made during Zero does not verify")
					return
				}
			}
		}()
	}
	k.Zero()
	for range 4 {
		<-done
	}
	if _, err := k.Sign(msg); err == nil {
		t.Error("Sign succeeded after Zero")
	}
}

// TestAppendDecodeSegment: the same strictness as ParseJWS, appending to
// dst in place when it has room, and dst unchanged on error.
func TestAppendDecodeSegment(t *testing.T) {
	var room [80]byte
	dst := append(room[:0], "pre"...)
	got, err := keys.AppendDecodeSegment(dst, rfcSig)
	if err != nil {
		t.Fatalf("AppendDecodeSegment(rfcSig) = %v", err)
	}
	if want := append([]byte("pre"), mustB64(t, rfcSig)...); !bytes.Equal(got, want) {
		t.Errorf("AppendDecodeSegment = %x, want %x", got, want)
	}
	if &got[0] != &room[0] {
		t.Error("AppendDecodeSegment did not decode into dst's room")
	}
	if got, err := keys.AppendDecodeSegment(nil, ""); err != nil || len(got) != 0 {
		t.Errorf(`AppendDecodeSegment(nil, "") = %q, %v, want empty`, got, err)
	}
	for _, bad := range []string{
		"QQ==",       // padding
		"QR",         // non-zero trailing bits
		"Q",          // impossible length
		"a+b/",       // standard alphabet
		"QUJD\nREVG", // a line break package base64 would skip
		"QUJD\rREVG",
		"QUJD.REVG",
		"QUJD REVG",
	} {
		got, err := keys.AppendDecodeSegment(dst, bad)
		if err == nil {
			t.Errorf("AppendDecodeSegment(%q) = %q, want an error", bad, got)
			continue
		}
		if string(got) != "pre" {
			t.Errorf("AppendDecodeSegment(%q) returned %q on error, want dst %q", bad, got, "pre")
		}
		if _, err := keys.ParseJWS(b64(`{"alg":"EdDSA"}`) + "." + bad + "." + rfcSig); err == nil {
			t.Errorf("ParseJWS accepts payload part %q that AppendDecodeSegment refuses", bad)
		}
	}
}
