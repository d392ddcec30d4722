package revocation_test

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/keyward/keyward"
	"github.com/keyward/keyward/keys"
	"github.com/keyward/keyward/revocation"
)

// fakeSource signs with a fixed key; only what BuildSnapshot uses works.
type fakeSource struct{ signer keys.Signer }

func (s fakeSource) RevocationRows(context.Context, string, int64, int) ([]*keyward.Revocation, error) {
	return nil, errors.New("fakeSource: no rows")
}
func (s fakeSource) RevocationHead(context.Context) (int64, error) { return 0, nil }
func (s fakeSource) RevocationSigner(context.Context) (keys.Signer, error) {
	return s.signer, nil
}
func (s fakeSource) Product(_ context.Context, p string) (*keyward.Product, error) {
	return nil, keyward.Errorf(keyward.ENotFound, "product %s not found", p)
}
func (s fakeSource) Issuer() string { return "keyward" }

var _ revocation.Source = fakeSource{}

func mustSigner(tb testing.TB) keys.Signer {
	tb.Helper()
	k, err := keys.Generate(keys.Ed25519, nil)
	if err != nil {
		tb.Fatal(err)
	}
	return k
}

// entries makes n revoked-license entries with realistic ids.
func entries(n int) []revocation.LicenseEntry {
	out := make([]revocation.LicenseEntry, n)
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for i := range out {
		id, _ := keyward.NewID("lic", t0.Add(time.Duration(i)*time.Second), nil)
		out[i] = revocation.LicenseEntry{ID: id, State: revocation.StateRevoked, Reason: "abuse", Time: t0.Unix() + int64(i), Seq: int64(i + 1)}
	}
	return out
}

// TestParseRejectsMangled flips every byte and cuts at every position of a
// signed document: each result fails to parse or to verify.
func TestParseRejectsMangled(t *testing.T) {
	s := mustSigner(t)
	doc, err := revocation.BuildSnapshot(context.Background(), fakeSource{s}, revocation.View{Product: "acme"}, 3, entries(2), nil, time.Now(), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	pub := s.(*keys.PrivateKey).Public()
	check := func(what, tok string) {
		t.Helper()
		p, err := revocation.Parse(tok, 0)
		if err == nil && p.Verify(pub) == nil {
			t.Errorf("%s: accepted", what)
		}
	}
	if p, err := revocation.Parse(doc.Token, 0); err != nil || p.Verify(pub) != nil {
		t.Fatalf("the original does not verify: %v", err)
	}
	for i := 0; i < len(doc.Token); i++ {
		b := []byte(doc.Token)
		b[i] ^= 0x01
		check(fmt.Sprintf("flip byte %d", i), string(b))
		check(fmt.Sprintf("cut at %d", i), doc.Token[:i])
	}
	for _, bad := range []string{
		"", "a.b", "a.b.c.d",
		b64(`{"alg":"none","kid":"k","typ":"t"}`) + "." + b64("{}") + "." + b64(strings.Repeat("x", 64)),
		b64(`{"alg":"EdDSA","kid":"k","typ":"t","crit":["b64"]}`) + "." + b64("{}") + "." + b64(strings.Repeat("x", 64)),
		b64(`{"alg":"EdDSA","typ":"t"}`) + "." + b64("{}") + "." + b64(strings.Repeat("x", 64)),
		b64(`{"alg":"EdDSA","kid":"k","typ":"t"}`) + "." + b64("{}") + "." + b64(strings.Repeat("x", 63)),
		b64(`[1]`) + "." + b64("{}") + "." + b64(strings.Repeat("x", 64)),
	} {
		if _, err := revocation.Parse(bad, 0); err == nil {
			t.Errorf("Parse(%q) accepted", bad)
		}
	}
	if _, err := revocation.Parse(doc.Token, len(doc.Token)-1); err == nil {
		t.Errorf("Parse with a smaller size limit accepted")
	}
}

func b64(s string) string {
	return strings.TrimRight(strings.NewReplacer("+", "-", "/", "_").Replace(stdB64(s)), "=")
}

func TestDecodeRefuses(t *testing.T) {
	for _, c := range []struct{ name, payload string }{
		{"NoIssuer", `{"issuer":"","product":"","seq":1,"issued_at":1,"next_update":2,"licenses":[],"compromised_keys":[]}`},
		{"NextUpdateNotAfter", `{"issuer":"k","product":"","seq":1,"issued_at":2,"next_update":2,"licenses":[],"compromised_keys":[]}`},
		{"NegativeSeq", `{"issuer":"k","product":"","seq":-1,"issued_at":1,"next_update":2,"licenses":[],"compromised_keys":[]}`},
		{"EntryAfterSeq", `{"issuer":"k","product":"","seq":1,"issued_at":1,"next_update":2,"licenses":[{"id":"a","state":"revoked","time":1,"seq":2}],"compromised_keys":[]}`},
		{"ActiveInSnapshot", `{"issuer":"k","product":"","seq":1,"issued_at":1,"next_update":2,"licenses":[{"id":"a","state":"active","time":1,"seq":1}],"compromised_keys":[]}`},
		{"Twice", `{"issuer":"k","product":"","seq":3,"issued_at":1,"next_update":2,"licenses":[{"id":"a","state":"revoked","time":1,"seq":1},{"id":"a","state":"revoked","time":1,"seq":2}],"compromised_keys":[]}`},
		{"KeyWithoutKid", `{"issuer":"k","product":"","seq":3,"issued_at":1,"next_update":2,"licenses":[],"compromised_keys":[{"kid":"","time":1,"seq":1}]}`},
		{"NotJSON", `{"issuer":`},
	} {
		if _, err := revocation.DecodeSnapshot([]byte(c.payload)); err == nil {
			t.Errorf("%s: DecodeSnapshot accepted %s", c.name, c.payload)
		}
	}
	for _, c := range []struct{ name, payload string }{
		{"FromAfterTo", `{"issuer":"k","product":"","from_seq":3,"to_seq":2,"issued_at":1,"next_update":2,"licenses":[],"compromised_keys":[]}`},
		{"EntryAtFrom", `{"issuer":"k","product":"","from_seq":2,"to_seq":3,"issued_at":1,"next_update":2,"licenses":[{"id":"a","state":"active","time":1,"seq":2}],"compromised_keys":[]}`},
		{"UnknownState", `{"issuer":"k","product":"","from_seq":2,"to_seq":3,"issued_at":1,"next_update":2,"licenses":[{"id":"a","state":"expired","time":1,"seq":3}],"compromised_keys":[]}`},
	} {
		if _, err := revocation.DecodeDelta([]byte(c.payload)); err == nil {
			t.Errorf("%s: DecodeDelta accepted %s", c.name, c.payload)
		}
	}
}

// BenchmarkBuildSnapshot measures building (sort, encode, sign) a snapshot
// of n revoked licenses, and reports its size as JWS and gzip-compressed.
func BenchmarkBuildSnapshot(b *testing.B) {
	s := mustSigner(b)
	for _, n := range []int{1000, 100_000, 1_000_000} {
		es := entries(n)
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			var doc *revocation.Document
			for b.Loop() {
				var err error
				doc, err = revocation.BuildSnapshot(context.Background(), fakeSource{s}, revocation.View{}, int64(n), es, nil, time.Now(), time.Hour)
				if err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(len(doc.Token)), "jws-bytes")
			b.ReportMetric(float64(len(doc.Gzip())), "gzip-bytes")
		})
	}
}

func stdB64(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }
