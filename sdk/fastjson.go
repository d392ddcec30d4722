package sdk

import (
	"bytes"
	"encoding/json"
	"math"
	"strings"
	"unicode/utf8"

	"github.com/keyward/keyward"
)

// The verification fast paths. Decoding claims through checkJSON, object
// and fields (the strict path) costs about half an Ed25519 verify. Two
// faster paths are tried first; each accepts only what the strict path
// would accept, with the same result (TestFastPathAgrees,
// TestCanonicalClaims, FuzzFastPathAgrees), and leaves anything else to
// the next path, the strict one last, which then accepts or refuses with a
// precise message.
//
//  1. canonicalCertificate and canonicalLease read claims in the one form
//     Keyward signs them: what encoding/json's Marshal writes for
//     keyward.CertificateClaims and keyward.LeaseClaims. Member names are
//     compared byte for byte in struct order, and values are decoded
//     without reflection into substrings of one copy of the payload, so a
//     certificate costs three allocations (that copy, the claims, the
//     entitlements).
//  2. fastCertificate and fastLease take claims that are plainly well
//     formed in another way: one scan for duplicate, escaped or
//     case-variant member names (noting which claims are present and which
//     are null), then one json.Unmarshal into a struct of plain values.

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

// canonical reads claims in the form json.Marshal writes them: no white
// space, strings without escapes (Marshal escapes only what needs it, and
// <, >, &, U+2028 and U+2029) holding valid UTF-8, integers in plain
// decimal. ok turns false at the first byte that does not fit, and stays
// false; the values read after that are meaningless.
type canonical struct {
	s  string // the payload
	i  int    // next byte to read
	ok bool
}

// expect reads lit, or fails.
func (r *canonical) expect(lit string) {
	if !r.accept(lit) {
		r.ok = false
	}
}

// accept reads lit if it comes next and reports whether it did.
func (r *canonical) accept(lit string) bool {
	if r.ok && strings.HasPrefix(r.s[r.i:], lit) {
		r.i += len(lit)
		return true
	}
	return false
}

// str reads a string that json.Unmarshal decodes to its bytes as they are:
// no escape, no control character, valid UTF-8 (Unmarshal would replace
// invalid bytes with U+FFFD).
func (r *canonical) str() string {
	if !r.accept(`"`) {
		r.ok = false
		return ""
	}
	ascii := true
	for start := r.i; r.i < len(r.s); r.i++ {
		switch c := r.s[r.i]; {
		case c == '"':
			v := r.s[start:r.i]
			r.i++
			if !ascii && !utf8.ValidString(v) {
				r.ok = false
			}
			return v
		case c == '\\' || c < 0x20:
			r.ok = false
			return ""
		case c >= utf8.RuneSelf:
			ascii = false
		}
	}
	r.ok = false
	return ""
}

// num reads an integer in [0, max] written without sign, leading zero,
// fraction or exponent. Other numbers stop the reader: either the literal
// after them does not match, or they are out of range.
func (r *canonical) num(max uint64) uint64 {
	if !r.ok {
		return 0
	}
	start := r.i
	var v uint64
	// 19 digits cannot overflow a uint64; a 20th is not read, and the
	// literal expected next then fails.
	for r.i < len(r.s) && r.i-start < 19 && '0' <= r.s[r.i] && r.s[r.i] <= '9' {
		v = v*10 + uint64(r.s[r.i]-'0')
		r.i++
	}
	if n := r.i - start; n == 0 || (n > 1 && r.s[start] == '0') || v > max {
		r.ok = false
	}
	return v
}

// registered reads the registered claims that open both token types and
// requires what commonClaims requires of them.
func (r *canonical) registered() registered {
	var c registered
	r.expect(`{"iss":`)
	c.iss = r.str()
	r.expect(`,"sub":`)
	c.sub = r.str()
	r.expect(`,"aud":`)
	c.aud = r.str()
	r.expect(`,"iat":`)
	c.iat = int64(r.num(maxUnix))
	r.expect(`,"nbf":`)
	c.nbf = int64(r.num(maxUnix))
	r.expect(`,"exp":`)
	c.exp = int64(r.num(maxUnix))
	r.expect(`,"jti":`)
	c.jti = r.str()
	if c.iss == "" || c.sub == "" || c.aud == "" || c.jti == "" {
		r.ok = false
	}
	return c
}

// newCanonical returns a reader over a copy of payload, or ok false
// without copying if payload does not even start like claims.
func newCanonical(payload []byte) canonical {
	if !bytes.HasPrefix(payload, []byte(`{"iss":"`)) {
		return canonical{}
	}
	return canonical{s: string(payload), ok: true}
}

// certificateClaims holds a certificate's claims and, in the same
// allocation, the value its License.ExpiresAt points to.
type certificateClaims struct {
	claims    keyward.CertificateClaims
	expiresAt int64
}

// canonicalCertificate is the first fast path of VerifyCertificate's claim
// decoding: claims exactly as json.Marshal writes a
// keyward.CertificateClaims. ok is false when another path must decide.
func canonicalCertificate(payload []byte) (out *keyward.CertificateClaims, c registered, ok bool) {
	r := newCanonical(payload)
	c = r.registered()
	r.expect(`,"lic":{"policy":`)
	policy := r.num(math.MaxInt)
	r.expect(`,"entitlements":`)
	var ents []string
	if !r.accept("null") {
		r.expect("[")
		var room [8]string // on the stack: the result is copied out of it
		list := room[:0]
		if !r.accept("]") {
			for r.ok {
				list = append(list, r.str())
				if r.accept("]") {
					break
				}
				r.expect(",")
			}
		}
		ents = make([]string, len(list)) // [] decodes to an empty slice, not nil
		copy(ents, list)
	}
	r.expect(`,"expires_at":`)
	perpetual := r.accept("null")
	var expiresAt uint64
	if !perpetual {
		expiresAt = r.num(maxUnix)
	}
	r.expect(`,"max_machines":`)
	maxMachines := r.num(math.MaxInt)
	r.expect(`,"holder":`)
	holder := r.str() // may be empty
	r.expect("}}")
	if !r.ok || r.i != len(r.s) {
		return nil, registered{}, false
	}
	o := &certificateClaims{expiresAt: int64(expiresAt)}
	o.claims = keyward.CertificateClaims{
		Issuer: c.iss, Subject: c.sub, Audience: c.aud, IssuedAt: c.iat, NotBefore: c.nbf, Expiry: c.exp, ID: c.jti,
		License: keyward.LicenseInfo{Policy: int(policy), Entitlements: ents, MaxMachines: int(maxMachines), Holder: holder},
	}
	if !perpetual {
		o.claims.License.ExpiresAt = &o.expiresAt
	}
	return &o.claims, c, true
}

// canonicalLease is the first fast path of VerifyLease's claim decoding:
// claims exactly as json.Marshal writes a keyward.LeaseClaims.
func canonicalLease(payload []byte) (*keyward.LeaseClaims, registered, bool) {
	r := newCanonical(payload)
	c := r.registered()
	r.expect(`,"mid":`)
	mid := r.str()
	r.expect(`,"fpr":`)
	fpr := r.str()
	r.expect("}")
	if !r.ok || r.i != len(r.s) || mid == "" || fpr == "" {
		return nil, registered{}, false
	}
	return &keyward.LeaseClaims{Issuer: c.iss, Subject: c.sub, Audience: c.aud, IssuedAt: c.iat, NotBefore: c.nbf,
		Expiry: c.exp, ID: c.jti, Machine: mid, Fingerprint: fpr}, c, true
}
