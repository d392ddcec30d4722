package sdk_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/keyward/keyward"
	"github.com/keyward/keyward/keys"
	"github.com/keyward/keyward/licensekey"
	"github.com/keyward/keyward/sdk"
)

// TestLeaseKeeperRenewsThenStops: the keeper renews before expiry and
// stops, dropping the lease, when the server refuses (the license was
// revoked).
func TestLeaseKeeperRenewsThenStops(t *testing.T) {
	lic := mustKey(t, keys.Ed25519, 9)
	key, err := licensekey.Generate(nil)
	if err != nil {
		t.Fatal(err)
	}
	var calls, revokedAfter atomic.Int32
	revokedAfter.Store(3)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := calls.Add(1)
		var req struct{ Key, Fingerprint string }
		_ = json.NewDecoder(r.Body).Decode(&req)
		w.Header().Set("Content-Type", "application/json")
		if n > revokedAfter.Load() {
			json.NewEncoder(w).Encode(map[string]any{"valid": false, "code": "REVOKED"})
			return
		}
		now := time.Now()
		c := leaseClaims()
		c.IssuedAt, c.NotBefore, c.Expiry, c.Fingerprint = now.Unix(), now.Unix(), now.Add(2*time.Second).Unix(), req.Fingerprint
		tok := mustSign(t, lic, keyward.TypLease, c)
		json.NewEncoder(w).Encode(map[string]any{"valid": true, "code": "VALID", "lease": map[string]any{"token": tok, "expires_at": now.Add(2 * time.Second)}})
	}))
	defer srv.Close()
	v := mustVerifier(t, sdk.Options{Now: time.Now}, jwk(lic, "active"))
	renewed := make(chan *keyward.LeaseClaims, 8)
	k := &sdk.LeaseKeeper{
		Client: sdk.NewClient(srv.URL), Verifier: v, Key: string(key), Fingerprint: "fp-1", RenewAfter: 0.05,
		OnRenew: func(_ string, c *keyward.LeaseClaims) { renewed <- c },
	}
	if _, _, err := k.Lease(); !errors.Is(err, sdk.ErrNoLease) {
		t.Errorf("Lease before Run = %v, want ErrNoLease", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err = k.Run(ctx)
	var refused *sdk.LeaseRefusedError
	if !errors.As(err, &refused) || refused.Code != "REVOKED" {
		t.Fatalf("Run = %v, want a refusal with REVOKED", err)
	}
	if len(renewed) != 3 {
		t.Errorf("%d leases before the refusal, want 3 (renewed before expiry)", len(renewed))
	}
	if _, _, err := k.Lease(); !errors.As(err, &refused) {
		t.Errorf("Lease after the refusal = %v, want the refusal (the lease is dropped)", err)
	}
	// A mistyped key is not retried.
	bad := &sdk.LeaseKeeper{Client: sdk.NewClient(srv.URL), Verifier: v, Key: "KW1-00000-00000-00000-00000-00000", Fingerprint: "fp-1"}
	if err := bad.Run(ctx); !errors.Is(err, licensekey.ErrChecksum) && !errors.Is(err, licensekey.ErrFormat) {
		t.Errorf("Run with a bad key = %v, want licensekey's error", err)
	}
}
