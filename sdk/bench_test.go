package sdk_test

import (
	"crypto/ed25519"
	"testing"

	"github.com/keyward/keyward/keys"
	"github.com/keyward/keyward/sdk"
)

// BenchmarkVerifyCertificate is offline verification of a real-sized
// certificate; compare with BenchmarkEd25519Verify (the anchor: one raw
// Ed25519 verify of the same signing input). Target: ≤ 1.15×.
func BenchmarkVerifyCertificate(b *testing.B) {
	k := mustKey(b, keys.Ed25519, 1)
	tok := mustSign(b, k, "license+jwt", certClaims())
	v := mustVerifier(b, sdk.Options{Now: fixedClock(testNow)}, jwk(k, "active"))
	if _, err := v.VerifyCertificate(tok); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := v.VerifyCertificate(tok); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkEd25519Verify(b *testing.B) {
	k := mustKey(b, keys.Ed25519, 1)
	tok := mustSign(b, k, "license+jwt", certClaims())
	j, err := keys.ParseJWS(tok)
	if err != nil {
		b.Fatal(err)
	}
	pub := k.Public().CryptoPublicKey().(ed25519.PublicKey)
	for b.Loop() {
		if !ed25519.Verify(pub, j.SigningInput, j.Signature) {
			b.Fatal("bad signature")
		}
	}
}
