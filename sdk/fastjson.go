package sdk

import (
	"bytes"
	"encoding/json"

	"github.com/keyward/keyward"
)

// The verification fast path. Decoding claims through checkJSON, object
// and fields costs about half an Ed25519 verify; tokens that are well
// formed — nearly all — take this path instead: json.Valid, one scan for
// duplicate or case-variant member names, one json.Unmarshal into a struct.
// Anything unusual falls back to the exact slow path, which then accepts or
// refuses with a precise message, so the fast path never accepts what the
// slow path would refuse.

// scanNames reports whether every object in data (valid JSON) has distinct
// member names, none escaped, none a case variant of a name in known, at
// most 16 members per object and maxJSONDepth levels.
func scanNames(data []byte, known []string) bool {
	type frame struct {
		object  bool
		wantKey bool
		n       int
		keys    [16][]byte
	}
	var stack [maxJSONDepth]frame
	depth := 0
	for i := 0; i < len(data); i++ {
		switch c := data[i]; c {
		case '{', '[':
			if depth == maxJSONDepth {
				return false
			}
			stack[depth] = frame{object: c == '{', wantKey: c == '{'}
			depth++
		case '}', ']':
			depth--
		case ',':
			if depth > 0 && stack[depth-1].object {
				stack[depth-1].wantKey = true
			}
		case '"':
			j := i + 1
			for j < len(data) && data[j] != '"' {
				if data[j] == '\\' {
					if depth > 0 && stack[depth-1].wantKey {
						return false // escaped member name: let the slow path unescape it
					}
					j++
				}
				j++
			}
			if depth > 0 && stack[depth-1].wantKey {
				f := &stack[depth-1]
				name := data[i+1 : j]
				if f.n == len(f.keys) {
					return false
				}
				for _, k := range f.keys[:f.n] {
					if bytes.Equal(k, name) {
						return false
					}
				}
				for _, k := range known {
					if len(k) == len(name) && string(name) != k && bytes.EqualFold(name, []byte(k)) {
						return false
					}
				}
				f.keys[f.n] = name
				f.n++
				f.wantKey = false
			}
			i = j
		}
	}
	return true
}

var claimNames = []string{"iss", "sub", "aud", "iat", "nbf", "exp", "jti", "lic", "mid", "fpr",
	"policy", "entitlements", "expires_at", "max_machines", "holder"}

// wireClaims mirrors the claims of both token types for the fast path.
type wireClaims struct {
	Iss, Sub, Aud, Jti *string
	Iat, Nbf, Exp      *int64
	Lic                *struct {
		Policy       *int
		Entitlements *[]string
		ExpiresAt    json.RawMessage `json:"expires_at"`
		MaxMachines  *int            `json:"max_machines"`
		Holder       *string
	}
	Mid, Fpr *string
}

// fastClaims decodes payload if it is plainly well formed; ok is false when
// the slow path must decide.
func fastClaims(payload []byte) (w wireClaims, c registered, ok bool) {
	if !json.Valid(payload) || len(payload) == 0 || payload[0] != '{' || !scanNames(payload, claimNames) {
		return w, c, false
	}
	if json.Unmarshal(payload, &w) != nil {
		return w, c, false
	}
	for _, s := range []*string{w.Iss, w.Sub, w.Aud, w.Jti} {
		if s == nil || *s == "" {
			return w, c, false
		}
	}
	for _, t := range []*int64{w.Iat, w.Nbf, w.Exp} {
		if t == nil || *t < 0 || *t > maxUnix {
			return w, c, false
		}
	}
	return w, registered{iss: *w.Iss, sub: *w.Sub, aud: *w.Aud, jti: *w.Jti, iat: *w.Iat, nbf: *w.Nbf, exp: *w.Exp}, true
}

// fastCertificate is the fast path of VerifyCertificate's claim decoding.
func fastCertificate(payload []byte) (*keyward.CertificateClaims, registered, bool) {
	w, c, ok := fastClaims(payload)
	if !ok {
		return nil, c, false
	}
	l := w.Lic
	if l == nil || l.Policy == nil || *l.Policy < 0 || l.MaxMachines == nil || *l.MaxMachines < 0 ||
		l.Holder == nil || l.Entitlements == nil || len(l.ExpiresAt) == 0 {
		return nil, c, false
	}
	out := &keyward.CertificateClaims{
		Issuer: c.iss, Subject: c.sub, Audience: c.aud, IssuedAt: c.iat, NotBefore: c.nbf, Expiry: c.exp, ID: c.jti,
		License: keyward.LicenseInfo{Policy: *l.Policy, Entitlements: *l.Entitlements, MaxMachines: *l.MaxMachines, Holder: *l.Holder},
	}
	if string(l.ExpiresAt) != "null" {
		var exp int64
		if json.Unmarshal(l.ExpiresAt, &exp) != nil || exp < 0 || exp > maxUnix {
			return nil, c, false
		}
		out.License.ExpiresAt = &exp
	}
	return out, c, true
}
