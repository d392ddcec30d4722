package keys

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"math/big"
)

// Algorithm names a signature algorithm of Keyward keys.
type Algorithm string

const (
	// Ed25519 is EdDSA over edwards25519 (RFC 8032); its JWS alg is "EdDSA".
	Ed25519 Algorithm = "Ed25519"
	// ES256 is ECDSA over NIST P-256 with SHA-256; its JWS alg is "ES256".
	ES256 Algorithm = "ES256"
)

// ParseAlgorithm returns the Algorithm named exactly s, "Ed25519" or "ES256".
// Any other string, including another case or the JWS name "EdDSA", is an error.
func ParseAlgorithm(s string) (Algorithm, error) {
	switch a := Algorithm(s); a {
	case Ed25519, ES256:
		return a, nil
	}
	return "", fmt.Errorf("keys: unknown algorithm %q", s)
}

// JWSAlg returns the JWS "alg" header value of a: "EdDSA" or "ES256",
// or "" if a is not a known Algorithm.
func (a Algorithm) JWSAlg() string {
	switch a {
	case Ed25519:
		return "EdDSA"
	case ES256:
		return "ES256"
	}
	return ""
}

// PublicKey is a public signature key. The zero value is no key: it
// verifies nothing and has no thumbprint.
//
// PublicKey values are safe to compare with == (unlike a crypto.PublicKey
// holding an ed25519.PublicKey slice, which panics): two values are equal
// exactly when they hold the same algorithm and the same key.
type PublicKey struct {
	alg Algorithm
	raw string // Ed25519: the 32-byte key; ES256: the 65-byte uncompressed SEC 1 point
}

// newPublicKey wraps an ed25519.PublicKey or a P-256 *ecdsa.PublicKey.
func newPublicKey(pub crypto.PublicKey) (PublicKey, error) {
	switch pub := pub.(type) {
	case ed25519.PublicKey:
		if len(pub) != ed25519.PublicKeySize {
			return PublicKey{}, fmt.Errorf("keys: Ed25519 public key is %d bytes, want %d", len(pub), ed25519.PublicKeySize)
		}
		return PublicKey{alg: Ed25519, raw: string(pub)}, nil
	case *ecdsa.PublicKey:
		if pub.Curve != elliptic.P256() {
			return PublicKey{}, errors.New("keys: ECDSA public key is not on P-256")
		}
		b, err := pub.Bytes()
		if err != nil {
			return PublicKey{}, fmt.Errorf("keys: ECDSA public key: %w", err)
		}
		return PublicKey{alg: ES256, raw: string(b)}, nil
	}
	return PublicKey{}, fmt.Errorf("keys: unsupported public key type %T", pub)
}

// Algorithm returns the key's algorithm, or "" for the zero PublicKey.
func (p PublicKey) Algorithm() Algorithm { return p.alg }

// CryptoPublicKey returns a fresh ed25519.PublicKey or *ecdsa.PublicKey,
// or nil for the zero PublicKey. Changing it does not change p.
func (p PublicKey) CryptoPublicKey() crypto.PublicKey {
	switch p.alg {
	case Ed25519:
		return ed25519.PublicKey(p.raw)
	case ES256:
		pub, err := ecdsa.ParseUncompressedPublicKey(elliptic.P256(), []byte(p.raw))
		if err != nil {
			return nil // unreachable: raw was validated when p was made
		}
		return pub
	}
	return nil
}

// members returns the RFC 7638 required members of p's JWK, or JWK{}.
func (p PublicKey) members() JWK {
	enc := base64.RawURLEncoding
	switch p.alg {
	case Ed25519:
		return JWK{Kty: "OKP", Crv: "Ed25519", X: enc.EncodeToString([]byte(p.raw))}
	case ES256:
		return JWK{Kty: "EC", Crv: "P-256", X: enc.EncodeToString([]byte(p.raw[1:33])), Y: enc.EncodeToString([]byte(p.raw[33:]))}
	}
	return JWK{}
}

// JWK returns p as a JWK with kid = p.Thumbprint(), alg = the JWS alg and
// use = "sig". The keyward_* members are left empty for the caller to set.
// The zero PublicKey gives JWK{}.
func (p PublicKey) JWK() JWK {
	j := p.members()
	if j.Kty != "" {
		j.Kid, j.Alg, j.Use = p.Thumbprint(), p.alg.JWSAlg(), "sig"
	}
	return j
}

// Thumbprint returns the RFC 7638 thumbprint of p: base64url without
// padding of SHA-256 over {"crv","kty","x"} (Ed25519) or
// {"crv","kty","x","y"} (EC), in that order without white space.
// Keyward uses it as the key's kid. The zero PublicKey gives "".
func (p PublicKey) Thumbprint() string {
	j := p.members()
	var s string
	switch j.Kty {
	case "OKP":
		s = `{"crv":"` + j.Crv + `","kty":"OKP","x":"` + j.X + `"}`
	case "EC":
		s = `{"crv":"` + j.Crv + `","kty":"EC","x":"` + j.X + `","y":"` + j.Y + `"}`
	default:
		return ""
	}
	sum := sha256.Sum256([]byte(s))
	return base64.RawURLEncoding.EncodeToString(sum[:])
}

// Verify reports whether sig is p's signature of signingInput: plain
// Ed25519, or for ES256 a 64-byte r||s (the JWS form, not ASN.1) over the
// SHA-256 of signingInput.
func (p PublicKey) Verify(signingInput, sig []byte) bool {
	switch p.alg {
	case Ed25519:
		return len(sig) == ed25519.SignatureSize && ed25519.Verify(ed25519.PublicKey(p.raw), signingInput, sig)
	case ES256:
		if len(sig) != 64 {
			return false
		}
		pub, ok := p.CryptoPublicKey().(*ecdsa.PublicKey)
		if !ok {
			return false
		}
		h := sha256.Sum256(signingInput)
		r, s := new(big.Int).SetBytes(sig[:32]), new(big.Int).SetBytes(sig[32:])
		return ecdsa.Verify(pub, h[:], r, s)
	}
	return false
}

// PublicKeyFromJWK returns the public key of j. It accepts only kty "OKP"
// with crv "Ed25519" and a 32-byte x (and no y), and kty "EC" with crv
// "P-256" and 32-byte x and y that make a point on the curve; coordinates
// MUST be unpadded base64url. If present, alg MUST be the key's JWS alg,
// use MUST be "sig", and kid MUST equal the thumbprint. The keyward_*
// members are ignored.
func PublicKeyFromJWK(j JWK) (PublicKey, error) {
	var p PublicKey
	switch {
	case j.Kty == "OKP" && j.Crv == "Ed25519":
		x, err := decodeB64URL(j.X)
		if err != nil || len(x) != ed25519.PublicKeySize || j.Y != "" {
			return PublicKey{}, errors.New("keys: jwk: Ed25519 key wants a 32-byte base64url x and no y")
		}
		p = PublicKey{alg: Ed25519, raw: string(x)}
	case j.Kty == "EC" && j.Crv == "P-256":
		x, errx := decodeB64URL(j.X)
		y, erry := decodeB64URL(j.Y)
		if errx != nil || erry != nil || len(x) != 32 || len(y) != 32 {
			return PublicKey{}, errors.New("keys: jwk: P-256 key wants 32-byte base64url x and y")
		}
		raw := append(append([]byte{4}, x...), y...)
		if _, err := ecdsa.ParseUncompressedPublicKey(elliptic.P256(), raw); err != nil {
			return PublicKey{}, errors.New("keys: jwk: point is not on P-256")
		}
		p = PublicKey{alg: ES256, raw: string(raw)}
	default:
		return PublicKey{}, fmt.Errorf("keys: jwk: unsupported kty %q crv %q", j.Kty, j.Crv)
	}
	if j.Alg != "" && j.Alg != p.alg.JWSAlg() {
		return PublicKey{}, fmt.Errorf("keys: jwk: alg %q does not fit a %s key", j.Alg, p.alg)
	}
	if j.Use != "" && j.Use != "sig" {
		return PublicKey{}, fmt.Errorf("keys: jwk: use %q, want \"sig\"", j.Use)
	}
	if t := p.Thumbprint(); j.Kid != "" && j.Kid != t {
		return PublicKey{}, fmt.Errorf("keys: jwk: kid %q does not match thumbprint %q", j.Kid, t)
	}
	return p, nil
}

// MarshalPublic returns p in PKIX (SubjectPublicKeyInfo) DER.
func MarshalPublic(p PublicKey) ([]byte, error) {
	pub := p.CryptoPublicKey()
	if pub == nil {
		return nil, errors.New("keys: marshal zero public key")
	}
	return x509.MarshalPKIXPublicKey(pub)
}

// ParsePublic parses a PKIX DER public key. Keys other than Ed25519 and
// P-256 ECDSA are an error.
func ParsePublic(der []byte) (PublicKey, error) {
	pub, err := x509.ParsePKIXPublicKey(der)
	if err != nil {
		return PublicKey{}, fmt.Errorf("keys: parse public key: %w", err)
	}
	return newPublicKey(pub)
}

// JWK is a JSON Web Key (RFC 7517) as Keyward publishes it, with Keyward's
// own members for the key's state, product and purpose.
type JWK struct {
	Kty     string `json:"kty"`
	Crv     string `json:"crv"`
	X       string `json:"x"`
	Y       string `json:"y,omitempty"`
	Kid     string `json:"kid,omitempty"`
	Alg     string `json:"alg,omitempty"`
	Use     string `json:"use,omitempty"`
	State   string `json:"keyward_state,omitempty"`   // pending|active|retired|compromised
	Product string `json:"keyward_product,omitempty"` // product name, or "" for the server registry ring
	Purpose string `json:"keyward_purpose,omitempty"` // "license" | "registry"
}

// JWKS is a JWK Set (RFC 7517 section 5).
type JWKS struct {
	Keys []JWK `json:"keys"`
}

// Find returns the first key of s whose kid is kid. An empty kid finds nothing.
func (s JWKS) Find(kid string) (JWK, bool) {
	for _, j := range s.Keys {
		if kid != "" && j.Kid == kid {
			return j, true
		}
	}
	return JWK{}, false
}

// decodeB64URL decodes unpadded base64url, rejecting every other spelling:
// padding, the standard alphabet, non-zero trailing bits, and the CR and LF
// that package base64 would otherwise skip.
func decodeB64URL(s string) ([]byte, error) {
	return AppendDecodeSegment(nil, s)
}

// AppendDecodeSegment appends the decoding of part, one part of a JWS
// compact serialization, to dst and returns the extended buffer. It accepts
// exactly what ParseJWS accepts in a non-empty part: unpadded base64url
// with zero trailing bits, refusing padding, the standard alphabet and the
// CR and LF that package base64 would skip, so every byte string has one
// accepted spelling. It does not allocate when dst has room, which lets a
// verifier that recognizes a token's header decode the payload and
// signature into buffers of its own. On error it returns dst with its
// length unchanged (bytes past it may have been written).
func AppendDecodeSegment(dst []byte, part string) ([]byte, error) {
	for i := 0; i < len(part); i++ {
		c := part[i]
		if !('A' <= c && c <= 'Z' || 'a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '-' || c == '_') {
			return dst, errors.New("invalid base64url character")
		}
	}
	b, err := base64.RawURLEncoding.Strict().AppendDecode(dst, []byte(part))
	if err != nil {
		return dst, err
	}
	return b, nil
}
