package keys

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	cryptorand "crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strconv"
	"sync"
)

// Signer signs JWS signing inputs. It is the seam for keystores that never
// reveal private bytes (a future PKCS#11 keystore); *PrivateKey is the
// in-memory implementation.
type Signer interface {
	// Algorithm returns the signature algorithm.
	Algorithm() Algorithm
	// KID returns the RFC 7638 thumbprint of the public key.
	KID() string
	// Sign returns the 64-byte JWS signature of signingInput.
	Sign(signingInput []byte) ([]byte, error)
}

var _ Signer = (*PrivateKey)(nil)

// PrivateKey is a private signature key held in memory. It never prints its
// secret (see String, Format and LogValue) and is not comparable with ==.
// A *PrivateKey is safe for concurrent use, Zero included: Zero waits for
// signatures in progress, and Sign fails after it.
type PrivateKey struct {
	_   [0]func() // not comparable
	pub PublicKey
	kid string
	// The key material is reached through a closure because reflection
	// cannot see into one: fmt prints a func as an address, even on the
	// paths that skip Format (a PrivateKey in an unexported struct field,
	// or fmt's bad-verb output, which walks pointers).
	secret func() *material
}

// material holds exactly one of ed and ec, or neither once zeroed. mu
// keeps Zero from wiping the bytes under a signature in progress.
type material struct {
	mu sync.RWMutex
	ed ed25519.PrivateKey
	ec *ecdsa.PrivateKey
}

// use calls fn with the ed25519.PrivateKey or *ecdsa.PrivateKey (nil if k
// is zeroed or the zero PrivateKey), holding the material's read lock so
// Zero cannot run meanwhile.
func (k *PrivateKey) use(fn func(crypto.PrivateKey) error) error {
	if k.secret == nil {
		return fn(nil)
	}
	s := k.secret()
	s.mu.RLock()
	defer s.mu.RUnlock()
	switch {
	case s.ed != nil:
		return fn(s.ed)
	case s.ec != nil:
		return fn(s.ec)
	}
	return fn(nil)
}

// newPrivateKey wraps an ed25519.PrivateKey or a P-256 *ecdsa.PrivateKey.
func newPrivateKey(priv crypto.PrivateKey) (*PrivateKey, error) {
	var s material
	switch priv := priv.(type) {
	case ed25519.PrivateKey:
		if len(priv) != ed25519.PrivateKeySize {
			return nil, errors.New("keys: bad Ed25519 private key length")
		}
		s.ed = priv
	case *ecdsa.PrivateKey:
		s.ec = priv
	default:
		return nil, fmt.Errorf("keys: unsupported private key type %T", priv)
	}
	pub, err := newPublicKey(priv.(crypto.Signer).Public())
	if err != nil {
		return nil, err
	}
	return &PrivateKey{pub: pub, kid: pub.Thumbprint(), secret: func() *material { return &s }}, nil
}

// Generate returns a new private key for alg, reading randomness from rand,
// or from crypto/rand if rand is nil. rand MUST be a cryptographically
// secure source; given the same bytes, Generate returns the same key.
func Generate(alg Algorithm, rand io.Reader) (*PrivateKey, error) {
	if rand == nil {
		rand = cryptorand.Reader
	}
	switch alg {
	case Ed25519:
		seed := make([]byte, ed25519.SeedSize)
		defer clear(seed)
		if _, err := io.ReadFull(rand, seed); err != nil {
			return nil, fmt.Errorf("keys: generate %s: %w", alg, err)
		}
		return NewEd25519FromSeed(seed)
	case ES256:
		// Rejection sampling (FIPS 186-5 A.4.2): ecdsa.GenerateKey ignores
		// its reader since Go 1.26, and we want rand to be honoured.
		// A uniform 256-bit string is a valid scalar with probability
		// about 1-2^-32, so the loop almost never repeats.
		b := make([]byte, 32)
		defer clear(b)
		for range 8 {
			if _, err := io.ReadFull(rand, b); err != nil {
				return nil, fmt.Errorf("keys: generate %s: %w", alg, err)
			}
			if k, err := ecdsa.ParseRawPrivateKey(elliptic.P256(), b); err == nil {
				return newPrivateKey(k)
			}
		}
		return nil, fmt.Errorf("keys: generate %s: random source keeps returning invalid scalars", alg)
	}
	return nil, fmt.Errorf("keys: generate: unknown algorithm %q", alg)
}

// NewEd25519FromSeed returns the Ed25519 private key of a 32-byte RFC 8032
// seed (the JWK "d" member). It copies seed; the caller may wipe it.
func NewEd25519FromSeed(seed []byte) (*PrivateKey, error) {
	if len(seed) != ed25519.SeedSize {
		return nil, fmt.Errorf("keys: Ed25519 seed is %d bytes, want %d", len(seed), ed25519.SeedSize)
	}
	return newPrivateKey(ed25519.NewKeyFromSeed(seed))
}

// Algorithm returns the key's algorithm.
func (k *PrivateKey) Algorithm() Algorithm { return k.pub.alg }

// Public returns the key's public half.
func (k *PrivateKey) Public() PublicKey { return k.pub }

// KID returns the key's RFC 7638 thumbprint, computed when k was made.
func (k *PrivateKey) KID() string { return k.kid }

// Sign returns the JWS signature of signingInput: 64 bytes of Ed25519, or
// for ES256 the 64-byte r||s over SHA-256 (not ASN.1 DER). It fails after Zero.
func (k *PrivateKey) Sign(signingInput []byte) ([]byte, error) {
	var sig []byte
	err := k.use(func(key crypto.PrivateKey) error {
		switch priv := key.(type) {
		case ed25519.PrivateKey:
			sig = ed25519.Sign(priv, signingInput)
			return nil
		case *ecdsa.PrivateKey:
			h := sha256.Sum256(signingInput)
			r, s, err := ecdsa.Sign(cryptorand.Reader, priv, h[:])
			if err != nil {
				return fmt.Errorf("keys: sign with %s: %w", k.kid, err)
			}
			sig = make([]byte, 64)
			r.FillBytes(sig[:32])
			s.FillBytes(sig[32:])
			return nil
		}
		return fmt.Errorf("keys: sign with %s: private key was zeroed", k.kid)
	})
	return sig, err
}

// Zero wipes k's secret as far as it can and makes Sign fail from then on,
// also for copies of *k. It waits for signatures in progress.
//
// Limits: the Ed25519 key bytes are overwritten in place, but a P-256
// scalar lives inside crypto/ecdsa, which offers no way to wipe it; Zero
// only drops the reference. Copies the Go runtime or the caller made (for
// example the PKCS#8 bytes from MarshalPrivate) are not reached.
func (k *PrivateKey) Zero() {
	if k == nil || k.secret == nil {
		return
	}
	s := k.secret()
	s.mu.Lock()
	defer s.mu.Unlock()
	clear(s.ed)
	s.ed, s.ec = nil, nil
}

// MarshalPrivate returns k in PKCS#8 DER. The result is the secret in the
// clear: seal it under a KEK and wipe it; never log or store it as is.
func MarshalPrivate(k *PrivateKey) ([]byte, error) {
	var der []byte
	err := k.use(func(priv crypto.PrivateKey) error {
		if priv == nil {
			return fmt.Errorf("keys: marshal %s: private key was zeroed", k.kid)
		}
		var err error
		der, err = x509.MarshalPKCS8PrivateKey(priv)
		return err
	})
	return der, err
}

// ParsePrivate parses a PKCS#8 DER Ed25519 or P-256 ECDSA private key.
func ParsePrivate(der []byte) (*PrivateKey, error) {
	priv, err := x509.ParsePKCS8PrivateKey(der)
	if err != nil {
		return nil, fmt.Errorf("keys: parse private key: %w", err)
	}
	if ec, ok := priv.(*ecdsa.PrivateKey); ok && ec.Curve != elliptic.P256() {
		return nil, errors.New("keys: parse private key: ECDSA key is not on P-256")
	}
	return newPrivateKey(priv)
}

// String returns "keys.PrivateKey{alg, kid, REDACTED}".
// It and Format and LogValue have value receivers so that a PrivateKey
// value prints redacted too.
func (k PrivateKey) String() string {
	return "keys.PrivateKey{" + string(k.pub.alg) + ", " + k.kid + ", REDACTED}"
}

// Format implements fmt.Formatter: every verb prints String, quoted for %q.
func (k PrivateKey) Format(f fmt.State, verb rune) { formatRedacted(f, verb, k.String()) }

// LogValue implements slog.LogValuer: the key logs as String.
func (k PrivateKey) LogValue() slog.Value { return slog.StringValue(k.String()) }

func formatRedacted(f fmt.State, verb rune, s string) {
	if verb == 'q' {
		s = strconv.Quote(s)
	}
	io.WriteString(f, s)
}
