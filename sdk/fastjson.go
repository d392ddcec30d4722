package sdk

import (
	"bytes"
	"encoding/json"

	"github.com/keyward/keyward"
)

// The verification fast path. Decoding claims through checkJSON, object
// and fields costs about half an Ed25519 verify; tokens that are plainly
// well formed — nearly all — take this path instead: one scan for
// duplicate, escaped or case-variant member names (noting which claims are
// present and which are null), then one json.Unmarshal into a struct of
// plain values. Anything unusual falls back to the exact slow path, which
// then accepts or refuses with a precise message; the fast path accepts
// only what the slow path would accept, with the same result
// (TestFastPathAgrees, FuzzFastPathAgrees).

// Claim names the fast path knows, as bits.
const (
	bIss = 1 << iota
	bSub
	bAud
	bIat
	bNbf
	bExp
	bJti
	bLic
	bMid
	bFpr
	bPolicy // members of lic from here
	bEntitlements
	bExpiresAt
	bMaxMachines
	bHolder
)

// claimBit returns the bit of a top-level claim name, or of a member of
// "lic" when inLic, and whether name is a case variant of a known name
// (which the slow path refuses: encoding/json would accept it).
func claimBit(name []byte, inLic bool) (bit int, variant bool) {
	names := [...]string{"iss", "sub", "aud", "iat", "nbf", "exp", "jti", "lic", "mid", "fpr",
		"policy", "entitlements", "expires_at", "max_machines", "holder"}
	lo, hi := 0, 10
	if inLic {
		lo, hi = 10, len(names)
	}
	for i := lo; i < hi; i++ {
		if string(name) == names[i] {
			return 1 << i, false
		}
	}
	for _, k := range names {
		if len(k) == len(name) && bytes.EqualFold(name, []byte(k)) {
			return 0, true
		}
	}
	return 0, false
}

// scanClaims scans data without allocating. It reports false if any object
// has a duplicate, escaped or case-variant member name, more than 16
// members or more than 8 levels; otherwise it returns which known claims
// (top level, and members of the top-level "lic" object) are present and
// which of those are null. It tolerates invalid JSON (Unmarshal refuses it).
func scanClaims(data []byte) (present, null int, ok bool) {
	type frame struct {
		object, wantKey, lic bool
		n                    int
		keys                 [16][2]uint16 // name offsets into data
	}
	const maxDepth = 8
	if len(data) > 1<<16-1 {
		return 0, 0, false
	}
	var stack [maxDepth]frame
	depth := 0
	openLic := false // the value being opened belongs to the top-level "lic"
	for i := 0; i < len(data); i++ {
		switch c := data[i]; c {
		case '{', '[':
			if depth == maxDepth {
				return 0, 0, false
			}
			stack[depth] = frame{object: c == '{', wantKey: c == '{', lic: openLic && c == '{'}
			openLic = false
			depth++
		case '}', ']':
			if depth == 0 {
				return 0, 0, false
			}
			depth--
		case ',':
			if depth > 0 && stack[depth-1].object {
				stack[depth-1].wantKey = true
			}
		case '"':
			j := i + 1
			key := depth > 0 && stack[depth-1].wantKey
			for j < len(data) && data[j] != '"' {
				if data[j] == '\\' {
					if key {
						return 0, 0, false // escaped member name: the slow path unescapes it
					}
					j++
				}
				j++
			}
			if j >= len(data) {
				return 0, 0, false
			}
			if key {
				f := &stack[depth-1]
				name := data[i+1 : j]
				if f.n == len(f.keys) {
					return 0, 0, false
				}
				for _, k := range f.keys[:f.n] {
					if bytes.Equal(data[k[0]:k[1]], name) {
						return 0, 0, false
					}
				}
				f.keys[f.n] = [2]uint16{uint16(i + 1), uint16(j)}
				f.n++
				f.wantKey = false
				if depth == 1 || (depth == 2 && f.lic) {
					bit, variant := claimBit(name, depth == 2)
					if variant {
						return 0, 0, false
					}
					present |= bit
					k := j + 1 // the value after ':' and white space
					for k < len(data) && (data[k] == ':' || data[k] == ' ' || data[k] == '\t' || data[k] == '\n' || data[k] == '\r') {
						k++
					}
					if k < len(data) && data[k] == 'n' {
						null |= bit
					}
					openLic = bit == bLic
				}
			}
			i = j
		}
	}
	return present, null, depth == 0
}

// wireClaims mirrors the claims of both token types for the fast path.
type wireClaims struct {
	Iss, Sub, Aud, Jti string
	Iat, Nbf, Exp      int64
	Lic                struct {
		Policy       int
		Entitlements []string
		ExpiresAt    *int64 `json:"expires_at"`
		MaxMachines  int    `json:"max_machines"`
		Holder       string
	}
	Mid, Fpr string
}

const (
	registeredBits = bIss | bSub | bAud | bIat | bNbf | bExp | bJti
	licBits        = bPolicy | bEntitlements | bExpiresAt | bMaxMachines | bHolder
)

// fastClaims decodes payload if it is plainly well formed and has the
// claims in need; ok is false when the slow path must decide.
func fastClaims(payload []byte, need int) (w wireClaims, c registered, ok bool) {
	if len(payload) == 0 || payload[0] != '{' {
		return w, c, false
	}
	present, null, ok := scanClaims(payload)
	// Required claims present; none null except lic.expires_at.
	if !ok || present&need != need || null&^bExpiresAt != 0 {
		return w, c, false
	}
	if json.Unmarshal(payload, &w) != nil {
		return w, c, false
	}
	if w.Iss == "" || w.Sub == "" || w.Aud == "" || w.Jti == "" {
		return w, c, false
	}
	for _, t := range [...]int64{w.Iat, w.Nbf, w.Exp} {
		if t < 0 || t > maxUnix {
			return w, c, false
		}
	}
	return w, registered{iss: w.Iss, sub: w.Sub, aud: w.Aud, jti: w.Jti, iat: w.Iat, nbf: w.Nbf, exp: w.Exp}, true
}

// fastCertificate is the fast path of VerifyCertificate's claim decoding.
func fastCertificate(payload []byte) (*keyward.CertificateClaims, registered, bool) {
	w, c, ok := fastClaims(payload, registeredBits|bLic|licBits)
	if !ok {
		return nil, c, false
	}
	l := w.Lic
	if l.Policy < 0 || l.MaxMachines < 0 || (l.ExpiresAt != nil && (*l.ExpiresAt < 0 || *l.ExpiresAt > maxUnix)) {
		return nil, c, false
	}
	return &keyward.CertificateClaims{
		Issuer: c.iss, Subject: c.sub, Audience: c.aud, IssuedAt: c.iat, NotBefore: c.nbf, Expiry: c.exp, ID: c.jti,
		License: keyward.LicenseInfo{Policy: l.Policy, Entitlements: l.Entitlements, ExpiresAt: l.ExpiresAt, MaxMachines: l.MaxMachines, Holder: l.Holder},
	}, c, true
}

// fastLease is the fast path of VerifyLease's claim decoding.
func fastLease(payload []byte) (*keyward.LeaseClaims, registered, bool) {
	w, c, ok := fastClaims(payload, registeredBits|bMid|bFpr)
	if !ok || w.Mid == "" || w.Fpr == "" {
		return nil, c, false
	}
	return &keyward.LeaseClaims{Issuer: c.iss, Subject: c.sub, Audience: c.aud, IssuedAt: c.iat, NotBefore: c.nbf,
		Expiry: c.exp, ID: c.jti, Machine: w.Mid, Fingerprint: w.Fpr}, c, true
}
