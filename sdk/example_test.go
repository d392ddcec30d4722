package sdk_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log"
	"time"

	"github.com/keyward/keyward"
	"github.com/keyward/keyward/keys"
	"github.com/keyward/keyward/sdk"
)

func ExampleVerifier_VerifyCertificate() {
	// On the server: the product's signing key signs a certificate, and
	// the public half is published as the trust bundle.
	signer, err := keys.Generate(keys.Ed25519, nil)
	if err != nil {
		log.Fatal(err)
	}
	pub := signer.Public().JWK()
	pub.State, pub.Purpose, pub.Product = "active", "license", "acme-pro"
	bundle, _ := json.Marshal(keys.JWKS{Keys: []keys.JWK{pub}})
	issued := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	token, err := keys.SignJWSClaims(signer, keyward.TypCertificate, keyward.CertificateClaims{
		Issuer: "https://licenses.acme.example", Subject: "lic_1", Audience: "acme-pro",
		IssuedAt: issued.Unix(), NotBefore: issued.Unix(), Expiry: issued.AddDate(0, 0, 30).Unix(), ID: "crt_1",
		License: keyward.LicenseInfo{Entitlements: []string{"pro", "sync"}, MaxMachines: 3, Holder: "hld_1"},
	})
	if err != nil {
		log.Fatal(err)
	}

	// In the app, offline: the bundle was shipped or fetched earlier.
	jwks, err := sdk.ParseJWKS(bundle)
	if err != nil {
		log.Fatal(err)
	}
	now := issued.AddDate(0, 0, 10)
	v, err := sdk.NewVerifier(jwks, sdk.Options{
		Issuer:   "https://licenses.acme.example",
		Audience: "acme-pro",
		Now:      func() time.Time { return now },
	})
	if err != nil {
		log.Fatal(err)
	}
	c, err := v.VerifyCertificate(token)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(c.Subject, c.License.Entitlements, time.Unix(c.Expiry, 0).UTC().Format(time.DateOnly))

	// Twenty-one days later the certificate has expired: check out a new one.
	now = now.AddDate(0, 0, 21)
	_, err = v.VerifyCertificate(token)
	fmt.Println(errors.Is(err, sdk.ErrExpired))
	// Output:
	// lic_1 [pro sync] 2030-01-31
	// true
}

func ExampleClient_Validate() {
	c := sdk.NewClient("https://licenses.acme.example")
	c.UserAgent = "acme-pro/2.1"
	v, err := c.Validate(context.Background(), "KW1-DDJQJ-XV1E9-J20V3-9CDJP-WWV5T", "machine-fingerprint", "acme-pro")
	var apiErr *sdk.APIError
	switch {
	case errors.As(err, &apiErr):
		log.Printf("server refused: %s (%s)", apiErr.Code, apiErr.Detail)
	case err != nil:
		log.Printf("cannot validate: %v", err) // a typo, or the network: fall back to the offline certificate
	case !v.Valid:
		log.Printf("license not valid: %s", v.Code)
	default:
		log.Printf("valid until %v", v.License.ExpiresAt)
	}
}
