package keys

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"sync/atomic"
)

// MaxJWSSize is the longest token, in bytes, that ParseJWS accepts and
// SignJWS produces.
const MaxJWSSize = 16 << 10

// Header is a JWS protected header (RFC 7515 section 4). SignJWS writes
// exactly {"alg":…,"kid":…,"typ":…}, in that order, leaving out an empty
// kid or typ.
type Header struct {
	Alg string `json:"alg"`
	Kid string `json:"kid,omitempty"`
	Typ string `json:"typ,omitempty"`
}

// SignJWS signs payload with s and returns the JWS compact serialization
// (RFC 7515 section 7.1) with header {"alg":s's JWS alg,"kid":s.KID(),"typ":typ}.
// It fails if s's algorithm is unknown, s.Sign fails or returns other than
// 64 bytes, or the token would be longer than MaxJWSSize.
func SignJWS(s Signer, typ string, payload []byte) (string, error) {
	return signJWS(s, typ, func(dst []byte) []byte { return base64.RawURLEncoding.AppendEncode(dst, payload) },
		base64.RawURLEncoding.EncodedLen(len(payload)))
}

// ResignJWS signs the payload of token again with s: the result has the
// header {"alg":s's JWS alg,"kid":s.KID(),"typ":token's typ} and token's
// payload, byte for byte. token must be a JWS that ParseJWS accepts; its
// signature is not checked (the caller vouches for the payload, e.g. a
// token read back from its own store).
func ResignJWS(s Signer, token string) (string, error) {
	return NewResigner(s).Resign(token)
}

// A Resigner is ResignJWS with one signer, for many tokens: it remembers
// the last header segment it accepted and its typ, so that tokens sharing
// a header (the certificates of one bulk re-sign were all signed by the
// same key) have it parsed once. It is safe for concurrent use.
type Resigner struct {
	s    Signer
	last atomic.Pointer[checkedHeader]
}

type checkedHeader struct{ seg, typ string }

// NewResigner returns a Resigner that signs with s.
func NewResigner(s Signer) *Resigner { return &Resigner{s: s} }

// Resign is ResignJWS(s, token) for the Resigner's signer s.
func (r *Resigner) Resign(token string) (string, error) {
	typ, seg, err := resignParts(token, &r.last)
	if err != nil {
		return "", fmt.Errorf("keys: resign jws: %w", err)
	}
	return signJWS(r.s, typ, func(dst []byte) []byte { return append(dst, seg...) }, len(seg))
}

// resignParts checks token as ParseJWS does and returns its typ and
// payload segment. Unlike ParseJWS it keeps nothing it decodes: the header
// is decoded into a buffer on the stack (or not at all when it is the
// segment held by last, which it replaces otherwise), and the payload and
// signature are only checked to be strict unpadded base64url
// (checkSegment), not decoded: bulk re-signing calls it once per
// certificate.
func resignParts(token string, last *atomic.Pointer[checkedHeader]) (typ, payload string, err error) {
	if len(token) > MaxJWSSize {
		return "", "", verificationErrorf("malformed: token longer than %d bytes", MaxJWSSize)
	}
	h, rest, ok1 := strings.Cut(token, ".")
	payload, sig, ok2 := strings.Cut(rest, ".")
	if !ok1 || !ok2 || strings.IndexByte(sig, '.') >= 0 {
		return "", "", verificationErrorf("malformed: want 3 parts")
	}
	for i, part := range [3]string{h, payload, sig} {
		name := [3]string{"header", "payload", "signature"}[i]
		if part == "" {
			return "", "", verificationErrorf("malformed: empty %s", name)
		}
		if i == 0 {
			if c := last.Load(); c != nil && c.seg == part {
				typ = c.typ // the same header segment parses to the same typ
				continue
			}
			var buf [256]byte
			dec, err := AppendDecodeSegment(buf[:0], part)
			if err != nil {
				return "", "", verificationErrorf("malformed: %s is not unpadded base64url", name)
			}
			hdr, err := parseHeader(dec)
			if err != nil {
				return "", "", err
			}
			typ = hdr.Typ
			last.Store(&checkedHeader{seg: strings.Clone(part), typ: typ})
			continue
		}
		n, ok := checkSegment(part)
		if !ok {
			return "", "", verificationErrorf("malformed: %s is not unpadded base64url", name)
		}
		if i == 2 && n != 64 {
			return "", "", verificationErrorf("malformed: signature is %d bytes, want 64", n)
		}
	}
	return typ, payload, nil
}

// b64urlValue is the value of each byte in unpadded base64url, 0xff for a
// byte outside its alphabet.
var b64urlValue = func() (t [256]byte) {
	for i := range t {
		t[i] = 0xff
	}
	for i, c := range "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_" {
		t[c] = byte(i)
	}
	return t
}()

// checkSegment reports whether AppendDecodeSegment accepts part (strict
// unpadded base64url: its alphabet only, no length of 1 mod 4, zero
// trailing bits) and how many bytes it decodes to, without decoding it.
// The loop only ORs the values: any byte outside the alphabet sets the
// high bit (bulk re-signing checks every byte of every certificate).
func checkSegment(part string) (int, bool) {
	var acc byte
	for i := 0; i < len(part); i++ {
		acc |= b64urlValue[part[i]]
	}
	if acc&0x80 != 0 {
		return 0, false
	}
	var last byte
	if len(part) > 0 {
		last = b64urlValue[part[len(part)-1]]
	}
	switch len(part) % 4 {
	case 1:
		return 0, false
	case 2:
		if last&0x0f != 0 {
			return 0, false
		}
	case 3:
		if last&0x03 != 0 {
			return 0, false
		}
	}
	return len(part) * 3 / 4, true
}

// signJWS signs the header of s and typ followed by the encoded payload
// that appendPayload appends (encLen bytes).
func signJWS(s Signer, typ string, appendPayload func([]byte) []byte, encLen int) (string, error) {
	alg := s.Algorithm().JWSAlg()
	if alg == "" {
		return "", fmt.Errorf("keys: sign jws: unknown algorithm %q", s.Algorithm())
	}
	h, err := json.Marshal(Header{Alg: alg, Kid: s.KID(), Typ: typ})
	if err != nil {
		return "", fmt.Errorf("keys: sign jws: %w", err)
	}
	enc := base64.RawURLEncoding
	n := enc.EncodedLen(len(h)) + 1 + encLen + 1 + enc.EncodedLen(64)
	if n > MaxJWSSize {
		return "", fmt.Errorf("keys: sign jws: token would be %d bytes, more than %d", n, MaxJWSSize)
	}
	tok := make([]byte, 0, n)
	tok = enc.AppendEncode(tok, h)
	tok = append(tok, '.')
	tok = appendPayload(tok)
	sig, err := s.Sign(tok)
	if err != nil {
		return "", fmt.Errorf("keys: sign jws: %w", err)
	}
	if len(sig) != 64 {
		return "", fmt.Errorf("keys: sign jws: signer returned %d bytes, want 64", len(sig))
	}
	tok = append(tok, '.')
	tok = enc.AppendEncode(tok, sig)
	return string(tok), nil
}

// SignJWSClaims is SignJWS of json.Marshal(claims).
func SignJWSClaims(s Signer, typ string, claims any) (string, error) {
	payload, err := json.Marshal(claims)
	if err != nil {
		return "", fmt.Errorf("keys: sign jws: %w", err)
	}
	return SignJWS(s, typ, payload)
}

// JWS is a parsed, not necessarily verified, JWS compact serialization.
type JWS struct {
	Header       Header
	RawHeader    []byte // decoded header JSON
	Payload      []byte // decoded payload
	SigningInput []byte // "b64header.b64payload" as sent
	Signature    []byte
}

// ParseJWS parses a JWS compact serialization without verifying it. It is
// strict: the token MUST be at most MaxJWSSize bytes of exactly three
// non-empty parts of unpadded base64url with zero trailing bits; the header
// MUST be one JSON object without duplicate members, with a string alg of
// "EdDSA" or "ES256", string kid and typ if present, no "crit", and no member
// that differs from alg, kid, typ or crit only in case; the signature MUST
// be 64 bytes. Other header members are ignored. A token that parses is the
// only encoding of its parts. Every error is a *VerificationError.
func ParseJWS(token string) (*JWS, error) {
	if len(token) > MaxJWSSize {
		return nil, verificationErrorf("malformed: token longer than %d bytes", MaxJWSSize)
	}
	parts := strings.SplitN(token, ".", 4)
	if len(parts) != 3 {
		return nil, verificationErrorf("malformed: want 3 parts")
	}
	var dec [3][]byte
	for i, name := range [3]string{"header", "payload", "signature"} {
		if parts[i] == "" {
			return nil, verificationErrorf("malformed: empty %s", name)
		}
		b, err := decodeB64URL(parts[i])
		if err != nil {
			return nil, verificationErrorf("malformed: %s is not unpadded base64url", name)
		}
		dec[i] = b
	}
	h, err := parseHeader(dec[0])
	if err != nil {
		return nil, err
	}
	if len(dec[2]) != 64 {
		return nil, verificationErrorf("malformed: signature is %d bytes, want 64", len(dec[2]))
	}
	return &JWS{
		Header:       h,
		RawHeader:    dec[0],
		Payload:      dec[1],
		SigningInput: []byte(token[:len(parts[0])+1+len(parts[1])]),
		Signature:    dec[2],
	}, nil
}

// parseHeader checks and decodes a JWS header as ParseJWS describes.
func parseHeader(b []byte) (Header, error) {
	if h, ok := canonicalHeader(b); ok {
		return h, nil
	}
	malformed := func(why string, args ...any) (Header, error) {
		return Header{}, verificationErrorf("malformed header: "+why, args...)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	if t, err := dec.Token(); err != nil || t != json.Delim('{') {
		return malformed("not a JSON object")
	}
	var h Header
	seen := map[string]bool{}
	for dec.More() {
		t, err := dec.Token()
		name, ok := t.(string)
		if err != nil || !ok {
			return malformed("bad JSON")
		}
		var v json.RawMessage
		if err := dec.Decode(&v); err != nil {
			return malformed("bad JSON")
		}
		if seen[name] {
			return malformed("duplicate member %q", name)
		}
		seen[name] = true
		var dst *string
		switch name {
		case "alg":
			dst = &h.Alg
		case "kid":
			dst = &h.Kid
		case "typ":
			dst = &h.Typ
		case "crit":
			return Header{}, verificationErrorf("unsupported crit header")
		default:
			for _, known := range []string{"alg", "kid", "typ", "crit"} {
				if strings.EqualFold(name, known) {
					return malformed("member %q differs from %q only in case", name, known)
				}
			}
			continue
		}
		if v[0] != '"' || json.Unmarshal(v, dst) != nil {
			return malformed("%s is not a string", name)
		}
	}
	if t, err := dec.Token(); err != nil || t != json.Delim('}') {
		return malformed("bad JSON")
	}
	if _, err := dec.Token(); err != io.EOF {
		return malformed("data after the JSON object")
	}
	switch {
	case !seen["alg"]:
		return malformed("missing alg")
	case h.Alg != Ed25519.JWSAlg() && h.Alg != ES256.JWSAlg():
		return Header{}, verificationErrorf("unsupported alg %q", h.Alg)
	}
	return h, nil
}

// canonicalHeader parses, without allocating, the exact form SignJWS writes:
// {"alg":"…"[,"kid":"…"][,"typ":"…"]} with plain (unescaped) values and a
// supported alg. Anything else goes through the general parser, so both
// accept the same headers.
func canonicalHeader(b []byte) (Header, bool) {
	var h Header
	rest, ok := bytes.CutPrefix(b, []byte(`{"alg":"`))
	if !ok {
		return h, false
	}
	if h.Alg, rest, ok = plainString(rest); !ok || (h.Alg != "EdDSA" && h.Alg != "ES256") {
		return h, false
	}
	if r, ok := bytes.CutPrefix(rest, []byte(`,"kid":"`)); ok {
		if h.Kid, rest, ok = plainString(r); !ok {
			return h, false
		}
	}
	if r, ok := bytes.CutPrefix(rest, []byte(`,"typ":"`)); ok {
		if h.Typ, rest, ok = plainString(r); !ok {
			return h, false
		}
	}
	return h, len(rest) == 1 && rest[0] == '}'
}

// plainString reads a JSON string body up to its closing quote; ok is false
// if it holds an escape or a control character or is unterminated.
func plainString(b []byte) (string, []byte, bool) {
	for i, c := range b {
		switch {
		case c == '"':
			return string(b[:i]), b[i+1:], true
		case c == '\\' || c < 0x20:
			return "", nil, false
		}
	}
	return "", nil, false
}

// Verify checks j's signature with p. The header alg MUST be p's JWS alg.
// Verify does not look at the kid or the payload: choosing p by kid and
// checking claims are the caller's. Every error is a *VerificationError.
func (j *JWS) Verify(p PublicKey) error {
	want := p.Algorithm().JWSAlg()
	if want == "" {
		return verificationErrorf("no public key")
	}
	if j.Header.Alg != want {
		return verificationErrorf("alg mismatch: token %q, key %q", j.Header.Alg, want)
	}
	if !p.Verify(j.SigningInput, j.Signature) {
		return verificationErrorf("bad signature")
	}
	return nil
}

// VerifyJWS parses token and verifies it with p. It returns the JWS only if
// both succeed; every error is a *VerificationError.
func VerifyJWS(token string, p PublicKey) (*JWS, error) {
	j, err := ParseJWS(token)
	if err != nil {
		return nil, err
	}
	if err := j.Verify(p); err != nil {
		return nil, err
	}
	return j, nil
}

// VerificationError reports why a JWS did not parse or verify.
type VerificationError struct {
	Reason string // what failed, e.g. "malformed: want 3 parts", "bad signature", "alg mismatch: …"
}

// Error returns "jws: " followed by the reason.
func (e *VerificationError) Error() string { return "jws: " + e.Reason }

func verificationErrorf(format string, args ...any) *VerificationError {
	return &VerificationError{Reason: fmt.Sprintf(format, args...)}
}
