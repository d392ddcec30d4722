package sdk_test

import (
	"crypto/ed25519"
	"slices"
	"testing"
	"time"

	"github.com/keyward/keyward/keys"
	"github.com/keyward/keyward/sdk"
)

// BenchmarkVerifyCertificate is offline verification of a real-sized
// certificate; compare with BenchmarkEd25519Verify (the anchor: one raw
// Ed25519 verify of the same signing input). Target: ≤ 1.15×.
// BenchmarkVerifyOverhead measures the same ratio interleaved.
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

// BenchmarkVerifyOverhead is the issue 9 target measured so that machine
// noise cancels out: each iteration runs one VerifyCertificate and one raw
// ed25519.Verify of the same token, in alternating order, and times each.
// "ratio" is the median over iterations of sdk time / raw time (target
// ≤ 1.15); "sdk-ns" and "raw-ns" are the median times per call. Two
// benchmarks run one after the other see different noise, and a mean is
// swayed by the calls that another process preempted; two calls a few
// microseconds apart see the same machine, and the median drops the pairs
// that were interrupted.
func BenchmarkVerifyOverhead(b *testing.B) {
	k := mustKey(b, keys.Ed25519, 1)
	tok := mustSign(b, k, "license+jwt", certClaims())
	v := mustVerifier(b, sdk.Options{Now: fixedClock(testNow)}, jwk(k, "active"))
	j, err := keys.ParseJWS(tok)
	if err != nil {
		b.Fatal(err)
	}
	pub := k.Public().CryptoPublicKey().(ed25519.PublicKey)
	sdkVerify := func() time.Duration {
		t0 := time.Now()
		_, err := v.VerifyCertificate(tok)
		d := time.Since(t0)
		if err != nil {
			b.Fatal(err)
		}
		return d
	}
	rawVerify := func() time.Duration {
		t0 := time.Now()
		ok := ed25519.Verify(pub, j.SigningInput, j.Signature)
		d := time.Since(t0)
		if !ok {
			b.Fatal("bad signature")
		}
		return d
	}
	sdkVerify()
	rawVerify()
	var sdkT, rawT []time.Duration
	var ratios []float64
	for b.Loop() {
		var s, r time.Duration
		if len(ratios)%2 == 0 {
			s, r = sdkVerify(), rawVerify()
		} else {
			r, s = rawVerify(), sdkVerify()
		}
		sdkT, rawT = append(sdkT, s), append(rawT, r)
		ratios = append(ratios, float64(s)/float64(r))
	}
	slices.Sort(sdkT)
	slices.Sort(rawT)
	slices.Sort(ratios)
	b.ReportMetric(ratios[len(ratios)/2], "ratio")
	b.ReportMetric(float64(sdkT[len(sdkT)/2].Nanoseconds()), "sdk-ns")
	b.ReportMetric(float64(rawT[len(rawT)/2].Nanoseconds()), "raw-ns")
}
