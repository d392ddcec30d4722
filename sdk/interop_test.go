package sdk_test

import (
	"crypto/x509"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/keyward/keyward"
	"github.com/keyward/keyward/keys"
	"github.com/keyward/keyward/sdk"
)

// TestInteropGolangJWT shows that a standard JWT library accepts Keyward
// certificates with nothing but the public JWK from the trust bundle, and
// that the Verifier accepts certificates that library signs.
func TestInteropGolangJWT(t *testing.T) {
	for _, alg := range []keys.Algorithm{keys.Ed25519, keys.ES256} {
		t.Run(string(alg), func(t *testing.T) {
			k := mustKey(t, alg, 30)
			set := keys.JWKS{Keys: []keys.JWK{jwk(k, "active")}}

			// What a relying party without this SDK does: parse the JWKS
			// JSON, take the key by kid, verify with the JWT library.
			bundle, err := sdk.ParseJWKS(mustJSON(t, set))
			must(t, err)
			tok := mustSign(t, k, keyward.TypCertificate, certClaims())
			keyfunc := func(tk *jwt.Token) (any, error) {
				kid, _ := tk.Header["kid"].(string)
				j, ok := bundle.Find(kid)
				if !ok {
					t.Fatalf("token kid %q not in the bundle", kid)
				}
				pub, err := keys.PublicKeyFromJWK(j)
				if err != nil {
					return nil, err
				}
				return pub.CryptoPublicKey(), nil // ed25519.PublicKey or *ecdsa.PublicKey
			}
			parsed, err := jwt.Parse(tok, keyfunc,
				jwt.WithValidMethods([]string{alg.JWSAlg()}),
				jwt.WithTimeFunc(fixedClock(testNow)),
				jwt.WithIssuer(testIssuer),
				jwt.WithAudience(testProduct),
				jwt.WithExpirationRequired(),
				jwt.WithNotBeforeRequired(),
				jwt.WithIssuedAt(),
				jwt.WithStrictDecoding(),
			)
			if err != nil {
				t.Fatalf("jwt.Parse(%q) = %v", tok, err)
			}
			if !parsed.Valid || parsed.Header["typ"] != keyward.TypCertificate || parsed.Method.Alg() != alg.JWSAlg() {
				t.Errorf("jwt.Parse: valid %v, header %v, method %s", parsed.Valid, parsed.Header, parsed.Method.Alg())
			}
			mc := parsed.Claims.(jwt.MapClaims)
			if sub, _ := mc.GetSubject(); sub != "lic_1" {
				t.Errorf("jwt sub = %q, want lic_1", sub)
			}
			lic, _ := mc["lic"].(map[string]any)
			if lic["holder"] != "hld_1" {
				t.Errorf("jwt lic = %v", mc["lic"])
			}

			// The library refuses what we refuse: a tampered payload,
			// and the token after its exp.
			tampered := replacePayload(tok, b64(strings.Replace(string(mustJSON(t, certClaims())), `"lic_1"`, `"lic_2"`, 1)))
			if _, err := jwt.Parse(tampered, keyfunc, jwt.WithTimeFunc(fixedClock(testNow))); err == nil {
				t.Errorf("jwt.Parse(tampered) succeeded")
			}
			late := fixedClock(time.Unix(certClaims().Expiry, 0).Add(time.Minute))
			if _, err := jwt.Parse(tok, keyfunc, jwt.WithTimeFunc(late)); err == nil {
				t.Errorf("jwt.Parse(expired) succeeded")
			}

			// The other way: a certificate signed by golang-jwt verifies.
			der, err := keys.MarshalPrivate(k)
			must(t, err)
			priv, err := x509.ParsePKCS8PrivateKey(der)
			must(t, err)
			method := jwt.GetSigningMethod(alg.JWSAlg())
			var claims jwt.MapClaims
			must(t, json.Unmarshal(mustJSON(t, certClaims()), &claims))
			jt := jwt.NewWithClaims(method, claims)
			jt.Header["typ"] = keyward.TypCertificate
			jt.Header["kid"] = k.KID()
			theirs, err := jt.SignedString(priv)
			must(t, err)
			v := mustVerifier(t, sdk.Options{Issuer: testIssuer, Audience: testProduct}, set.Keys...)
			got, err := v.VerifyCertificate(theirs)
			if err != nil {
				t.Fatalf("VerifyCertificate(golang-jwt token %q) = %v", theirs, err)
			}
			if !equalJSON(t, got, certClaims()) {
				t.Errorf("VerifyCertificate(golang-jwt token) = %+v, want %+v", got, certClaims())
			}
		})
	}
}
