package revocation

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/keyward/keyward/keys"
)

// JWS "typ" values and the media type of registry documents.
const (
	TypSnapshot = "revocations+jwt"       // a snapshot
	TypDelta    = "revocations-delta+jwt" // a delta, also the data of a push event
	MediaType   = "application/jose"      // RFC 7515 section 9.2.1: JWS compact serialization
)

// License states that appear in entries. Snapshots hold only revoked and
// suspended licenses; deltas also say "active" for a reinstated one.
const (
	StateRevoked   = "revoked"
	StateSuspended = "suspended"
	StateActive    = "active"
)

// MaxDocumentSize is the largest document Parse accepts by default: about
// 3.4 million license entries.
const MaxDocumentSize = 256 << 20

// LicenseEntry is a license's registry state.
type LicenseEntry struct {
	ID     string `json:"id"`               // license id (a certificate's sub)
	State  string `json:"state"`            // revoked, suspended, or active (deltas only)
	Reason string `json:"reason,omitempty"` // a reason code (keyward.RevocationReasons), if one was given
	Time   int64  `json:"time"`             // when the change was made, Unix seconds
	Seq    int64  `json:"seq"`              // the registry row of the change
}

// KeyEntry is a compromised signing key.
type KeyEntry struct {
	KID    string `json:"kid"`
	Reason string `json:"reason,omitempty"`
	Time   int64  `json:"time"` // compromised since, Unix seconds: every signature by it is invalid
	Seq    int64  `json:"seq"`
}

// Snapshot is the payload of a snapshot document.
type Snapshot struct {
	Issuer     string         `json:"issuer"`
	Product    string         `json:"product"` // product name of the view, "" for the whole registry
	Seq        int64          `json:"seq"`
	IssuedAt   int64          `json:"issued_at"`   // Unix seconds
	NextUpdate int64          `json:"next_update"` // Unix seconds
	Licenses   []LicenseEntry `json:"licenses"`    // sorted by id
	Keys       []KeyEntry     `json:"compromised_keys"`
}

// Delta is the payload of a delta document and of a push event.
type Delta struct {
	Issuer     string         `json:"issuer"`
	Product    string         `json:"product"`
	FromSeq    int64          `json:"from_seq"`
	ToSeq      int64          `json:"to_seq"`
	IssuedAt   int64          `json:"issued_at"`
	NextUpdate int64          `json:"next_update"`
	Licenses   []LicenseEntry `json:"licenses"` // in seq order
	Keys       []KeyEntry     `json:"compromised_keys"`
}

// Sign returns the JWS compact serialization of payload signed by s, with
// header {"alg","kid","typ"}. Unlike keys.SignJWS it has no small size
// limit (snapshots can be large), only MaxDocumentSize.
func Sign(s keys.Signer, typ string, payload []byte) (string, error) {
	alg := s.Algorithm().JWSAlg()
	if alg == "" {
		return "", fmt.Errorf("revocation: sign: unknown algorithm %q", s.Algorithm())
	}
	h, err := json.Marshal(keys.Header{Alg: alg, Kid: s.KID(), Typ: typ})
	if err != nil {
		return "", fmt.Errorf("revocation: sign: %w", err)
	}
	enc := base64.RawURLEncoding
	n := enc.EncodedLen(len(h)) + 1 + enc.EncodedLen(len(payload)) + 1 + enc.EncodedLen(64)
	if n > MaxDocumentSize {
		return "", fmt.Errorf("revocation: sign: document would be %d bytes, more than %d", n, MaxDocumentSize)
	}
	tok := make([]byte, 0, n)
	tok = enc.AppendEncode(tok, h)
	tok = append(tok, '.')
	tok = enc.AppendEncode(tok, payload)
	sig, err := s.Sign(tok)
	if err != nil {
		return "", fmt.Errorf("revocation: sign: %w", err)
	}
	if len(sig) != 64 {
		return "", fmt.Errorf("revocation: sign: signer returned %d bytes, want 64", len(sig))
	}
	tok = append(tok, '.')
	tok = enc.AppendEncode(tok, sig)
	return string(tok), nil
}

// Token is a parsed, not yet verified, registry document.
type Token struct {
	Header       keys.Header
	Payload      []byte
	signingInput []byte
	signature    []byte
}

// Parse parses a registry document without verifying it. It is strict: at
// most maxSize bytes (0 = MaxDocumentSize), exactly three non-empty parts
// of unpadded base64url with zero trailing bits, a header that is one JSON
// object with string alg ("EdDSA" or "ES256"), kid and typ and no "crit",
// and a 64-byte signature.
func Parse(token string, maxSize int) (*Token, error) {
	if maxSize <= 0 {
		maxSize = MaxDocumentSize
	}
	if len(token) > maxSize {
		return nil, fmt.Errorf("document longer than %d bytes", maxSize)
	}
	h, rest, ok1 := strings.Cut(token, ".")
	p, sig, ok2 := strings.Cut(rest, ".")
	if !ok1 || !ok2 || strings.Contains(sig, ".") {
		return nil, errors.New("not a JWS compact serialization: want 3 parts")
	}
	enc := base64.RawURLEncoding.Strict()
	var parts [3][]byte
	for i, s := range [3]string{h, p, sig} {
		if s == "" {
			return nil, fmt.Errorf("empty JWS part %d", i+1)
		}
		b, err := enc.DecodeString(s)
		if err != nil {
			return nil, fmt.Errorf("JWS part %d is not unpadded base64url", i+1)
		}
		parts[i] = b
	}
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(parts[0], &raw); err != nil || raw == nil {
		return nil, errors.New("header is not a JSON object")
	}
	if _, ok := raw["crit"]; ok {
		return nil, errors.New("unsupported crit header")
	}
	var hd keys.Header
	for name, dst := range map[string]*string{"alg": &hd.Alg, "kid": &hd.Kid, "typ": &hd.Typ} {
		v, ok := raw[name]
		if !ok {
			return nil, fmt.Errorf("header has no %s", name)
		}
		if json.Unmarshal(v, dst) != nil || *dst == "" || !bytes.HasPrefix(v, []byte(`"`)) {
			return nil, fmt.Errorf("header %s is not a non-empty string", name)
		}
	}
	if hd.Alg != keys.Ed25519.JWSAlg() && hd.Alg != keys.ES256.JWSAlg() {
		return nil, fmt.Errorf("unsupported alg %q", hd.Alg)
	}
	if len(parts[2]) != 64 {
		return nil, fmt.Errorf("signature is %d bytes, want 64", len(parts[2]))
	}
	return &Token{Header: hd, Payload: parts[1], signingInput: []byte(token[:len(h)+1+len(p)]), signature: parts[2]}, nil
}

// Verify checks t's signature with pub; the header alg MUST be pub's.
func (t *Token) Verify(pub keys.PublicKey) error {
	want := pub.Algorithm().JWSAlg()
	if want == "" {
		return errors.New("no public key")
	}
	if t.Header.Alg != want {
		return fmt.Errorf("alg mismatch: document %q, key %q", t.Header.Alg, want)
	}
	if !pub.Verify(t.signingInput, t.signature) {
		return errors.New("bad signature")
	}
	return nil
}

// DecodeSnapshot decodes and checks a snapshot payload: issuer set, seq >=
// 0, issued_at > 0, next_update after issued_at; license entries with an
// id, state revoked or suspended, 0 < seq <= the snapshot's seq, each id
// once; key entries likewise with a kid. Unknown members are ignored.
func DecodeSnapshot(payload []byte) (*Snapshot, error) {
	var s Snapshot
	if err := json.Unmarshal(payload, &s); err != nil {
		return nil, fmt.Errorf("snapshot: %w", err)
	}
	if err := checkHeader(s.Issuer, s.IssuedAt, s.NextUpdate); err != nil {
		return nil, fmt.Errorf("snapshot: %w", err)
	}
	if s.Seq < 0 {
		return nil, fmt.Errorf("snapshot: seq %d is negative", s.Seq)
	}
	if err := checkEntries(s.Licenses, s.Keys, 0, s.Seq, false); err != nil {
		return nil, fmt.Errorf("snapshot: %w", err)
	}
	return &s, nil
}

// DecodeDelta decodes and checks a delta payload: as DecodeSnapshot, with
// 0 <= from_seq <= to_seq, entry seqs in (from_seq, to_seq], and license
// state active allowed.
func DecodeDelta(payload []byte) (*Delta, error) {
	var d Delta
	if err := json.Unmarshal(payload, &d); err != nil {
		return nil, fmt.Errorf("delta: %w", err)
	}
	if err := checkHeader(d.Issuer, d.IssuedAt, d.NextUpdate); err != nil {
		return nil, fmt.Errorf("delta: %w", err)
	}
	if d.FromSeq < 0 || d.ToSeq < d.FromSeq {
		return nil, fmt.Errorf("delta: from_seq %d, to_seq %d: want 0 <= from_seq <= to_seq", d.FromSeq, d.ToSeq)
	}
	if err := checkEntries(d.Licenses, d.Keys, d.FromSeq, d.ToSeq, true); err != nil {
		return nil, fmt.Errorf("delta: %w", err)
	}
	return &d, nil
}

func checkHeader(issuer string, issuedAt, nextUpdate int64) error {
	switch {
	case issuer == "":
		return errors.New("no issuer")
	case issuedAt <= 0:
		return fmt.Errorf("issued_at %d: want a positive Unix time", issuedAt)
	case nextUpdate <= issuedAt:
		return fmt.Errorf("next_update %d is not after issued_at %d", nextUpdate, issuedAt)
	}
	return nil
}

func checkEntries(ls []LicenseEntry, ks []KeyEntry, from, to int64, delta bool) error {
	seen := make(map[string]bool, len(ls))
	for i, e := range ls {
		switch {
		case e.ID == "":
			return fmt.Errorf("license entry %d has no id", i)
		case e.State != StateRevoked && e.State != StateSuspended && !(delta && e.State == StateActive):
			return fmt.Errorf("license %s: state %q not allowed here", e.ID, e.State)
		case e.Seq <= from || e.Seq > to:
			return fmt.Errorf("license %s: seq %d outside (%d, %d]", e.ID, e.Seq, from, to)
		case seen[e.ID]:
			return fmt.Errorf("license %s listed twice", e.ID)
		}
		seen[e.ID] = true
	}
	clear(seen)
	for i, e := range ks {
		switch {
		case e.KID == "":
			return fmt.Errorf("key entry %d has no kid", i)
		case e.Seq <= from || e.Seq > to:
			return fmt.Errorf("key %s: seq %d outside (%d, %d]", e.KID, e.Seq, from, to)
		case seen[e.KID]:
			return fmt.Errorf("key %s listed twice", e.KID)
		}
		seen[e.KID] = true
	}
	return nil
}

// EncodeSnapshot returns the JSON payload of s: what json.Marshal writes
// (tests check that), several times faster for large snapshots. Nil entry
// lists are written as [].
func EncodeSnapshot(s *Snapshot) []byte {
	return appendSnapshot(make([]byte, 0, 128+80*len(s.Licenses)+80*len(s.Keys)), s)
}

// EncodeDelta returns the JSON payload of d, as EncodeSnapshot.
func EncodeDelta(d *Delta) []byte {
	return appendDelta(make([]byte, 0, 160+90*(len(d.Licenses)+len(d.Keys))), d)
}

// appendSnapshot appends the JSON encoding of s.
func appendSnapshot(b []byte, s *Snapshot) []byte {
	b = append(b, `{"issuer":`...)
	b = appendString(b, s.Issuer)
	b = append(b, `,"product":`...)
	b = appendString(b, s.Product)
	b = append(b, `,"seq":`...)
	b = strconv.AppendInt(b, s.Seq, 10)
	b = append(b, `,"issued_at":`...)
	b = strconv.AppendInt(b, s.IssuedAt, 10)
	b = append(b, `,"next_update":`...)
	b = strconv.AppendInt(b, s.NextUpdate, 10)
	b = appendEntries(b, s.Licenses, s.Keys)
	return append(b, '}')
}

// appendDelta appends the JSON encoding of d.
func appendDelta(b []byte, d *Delta) []byte {
	b = append(b, `{"issuer":`...)
	b = appendString(b, d.Issuer)
	b = append(b, `,"product":`...)
	b = appendString(b, d.Product)
	b = append(b, `,"from_seq":`...)
	b = strconv.AppendInt(b, d.FromSeq, 10)
	b = append(b, `,"to_seq":`...)
	b = strconv.AppendInt(b, d.ToSeq, 10)
	b = append(b, `,"issued_at":`...)
	b = strconv.AppendInt(b, d.IssuedAt, 10)
	b = append(b, `,"next_update":`...)
	b = strconv.AppendInt(b, d.NextUpdate, 10)
	b = appendEntries(b, d.Licenses, d.Keys)
	return append(b, '}')
}

func appendEntries(b []byte, ls []LicenseEntry, ks []KeyEntry) []byte {
	b = append(b, `,"licenses":[`...)
	for i := range ls {
		e := &ls[i]
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, `{"id":`...)
		b = appendString(b, e.ID)
		b = append(b, `,"state":`...)
		b = appendString(b, e.State)
		if e.Reason != "" {
			b = append(b, `,"reason":`...)
			b = appendString(b, e.Reason)
		}
		b = append(b, `,"time":`...)
		b = strconv.AppendInt(b, e.Time, 10)
		b = append(b, `,"seq":`...)
		b = strconv.AppendInt(b, e.Seq, 10)
		b = append(b, '}')
	}
	b = append(b, `],"compromised_keys":[`...)
	for i := range ks {
		e := &ks[i]
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, `{"kid":`...)
		b = appendString(b, e.KID)
		if e.Reason != "" {
			b = append(b, `,"reason":`...)
			b = appendString(b, e.Reason)
		}
		b = append(b, `,"time":`...)
		b = strconv.AppendInt(b, e.Time, 10)
		b = append(b, `,"seq":`...)
		b = strconv.AppendInt(b, e.Seq, 10)
		b = append(b, '}')
	}
	return append(b, ']')
}

// appendString appends s as a JSON string the way encoding/json writes it
// (HTML-safe escapes, invalid UTF-8 replaced by U+FFFD).
func appendString(b []byte, s string) []byte {
	const hex = "0123456789abcdef"
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' && c != '<' && c != '>' && c != '&' {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '"', '\\':
				b = append(b, '\\', c)
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			case '\b':
				b = append(b, '\\', 'b')
			case '\f':
				b = append(b, '\\', 'f')
			default:
				b = append(b, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
			i += size
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			b = append(b, s[start:i]...)
			b = append(b, '\\', 'u', '2', '0', '2', hex[r&0xf])
			i += size
			start = i
			continue
		}
		i += size
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}
