package sdk_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"time"

	"github.com/keyward/keyward/keys"
	"github.com/keyward/keyward/revocation"
	"github.com/keyward/keyward/sdk"
)

// A relying party keeps a revocation cache current in the background and
// lets its Verifier consult it.
func ExampleRevocationWatcher() {
	ctx := context.Background()
	client := sdk.NewClient("https://licenses.acme.example")
	bundle, err := client.JWKS(ctx) // or ship the bundle with the app
	if err != nil {
		log.Fatal(err)
	}
	cache, err := sdk.NewRevocationCache(bundle, sdk.RevocationOptions{
		Product:   "acme-pro",
		CacheFile: "/var/lib/acme/revocations.cache", // survives restarts, verified on load
	})
	if err != nil {
		log.Fatal(err)
	}
	w := &sdk.RevocationWatcher{Client: client, Cache: cache, Product: "acme-pro", RefreshKeys: true,
		OnError: func(err error) { log.Printf("revocations: %v", err) }}
	go w.Run(ctx) // follows the push stream; polls deltas when it is down

	v, err := sdk.NewVerifier(bundle, sdk.Options{Audience: "acme-pro", Revocations: cache})
	if err != nil {
		log.Fatal(err)
	}
	_, err = v.VerifyCertificate("eyJ…")
	switch {
	case errors.Is(err, sdk.ErrRevoked), errors.Is(err, sdk.ErrSuspended):
		// the registry lists the license: refuse it
	case errors.Is(err, sdk.ErrStale):
		// no fresh revocation state for longer than the offline grace: fail closed
	}
}

// The cache refuses an old snapshot replayed by an attacker (rollback).
func ExampleRevocationCache_ApplySnapshot() {
	registry, _ := keys.Generate(keys.Ed25519, nil)
	pub := registry.Public().JWK()
	pub.State, pub.Purpose = "active", "registry"
	now := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	snapshot := func(seq int64, licenses ...revocation.LicenseEntry) string {
		tok, _ := revocation.Sign(registry, revocation.TypSnapshot, revocation.EncodeSnapshot(&revocation.Snapshot{
			Issuer: "keyward", Product: "acme-pro", Seq: seq, IssuedAt: now.Unix(), NextUpdate: now.Add(time.Hour).Unix(), Licenses: licenses}))
		return tok
	}
	cache, _ := sdk.NewRevocationCache(keys.JWKS{Keys: []keys.JWK{pub}}, sdk.RevocationOptions{
		Product: "acme-pro", Now: func() time.Time { return now }})

	fmt.Println(cache.ApplySnapshot(snapshot(7, revocation.LicenseEntry{ID: "lic_1", State: "revoked", Time: now.Unix(), Seq: 7})))
	fmt.Println(cache.Check("lic_1", ""))
	fmt.Println(cache.ApplySnapshot(snapshot(5)))
	// Output:
	// <nil>
	// keyward: revoked: license lic_1 revoked at 2030-01-01T00:00:00Z (registry seq 7)
	// keyward: rollback: snapshot seq 5 is lower than the seq held, 7
}
