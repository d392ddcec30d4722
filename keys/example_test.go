package keys_test

import (
	"fmt"
	"log"

	"github.com/keyward/keyward/keys"
)

func ExampleSignJWS() {
	k, err := keys.Generate(keys.Ed25519, nil)
	if err != nil {
		log.Fatal(err)
	}
	token, err := keys.SignJWS(k, "keyward-license+jws", []byte(`{"sub":"lic_1"}`))
	if err != nil {
		log.Fatal(err)
	}

	// A relying party finds the key by the token's kid in the JWKS.
	jwks := keys.JWKS{Keys: []keys.JWK{k.Public().JWK()}}
	unverified, err := keys.ParseJWS(token)
	if err != nil {
		log.Fatal(err)
	}
	jwk, ok := jwks.Find(unverified.Header.Kid)
	if !ok {
		log.Fatal("unknown kid")
	}
	pub, err := keys.PublicKeyFromJWK(jwk)
	if err != nil {
		log.Fatal(err)
	}
	jws, err := keys.VerifyJWS(token, pub)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(jws.Header.Alg, jws.Header.Typ, string(jws.Payload))

	// Anything else fails with a reason.
	_, err = keys.VerifyJWS(token+"x", pub)
	fmt.Println(err)
	// Output:
	// EdDSA keyward-license+jws {"sub":"lic_1"}
	// jws: malformed: signature is not unpadded base64url
}

func ExampleKEK_Seal() {
	kek, err := keys.GenerateKEK(nil)
	if err != nil {
		log.Fatal(err)
	}
	k, err := keys.Generate(keys.ES256, nil)
	if err != nil {
		log.Fatal(err)
	}
	der, err := keys.MarshalPrivate(k)
	if err != nil {
		log.Fatal(err)
	}
	// The kid is the additional data: the blob opens only for this key.
	sealed, err := kek.Seal(der, []byte(k.KID()))
	clear(der)
	if err != nil {
		log.Fatal(err)
	}

	der, err = kek.Open(sealed, []byte(k.KID()))
	if err != nil {
		log.Fatal(err)
	}
	opened, err := keys.ParsePrivate(der)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(opened.KID() == k.KID())

	_, err = kek.Open(sealed, []byte("another kid"))
	fmt.Println(err)
	// Output:
	// true
	// keys: decryption failed
}
