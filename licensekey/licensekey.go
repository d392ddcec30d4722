// Package licensekey implements the customer's license key string:
//
//	KW1-DDJQJ-XV1E9-J20V3-9CDJP-WWV5T
//
// A key is the version prefix "KW1" followed by 25 symbols of Crockford's
// base32 alphabet ([Alphabet]) written as five dash-separated groups of five:
// 24 random symbols (120 bits from a cryptographic source) and one check symbol.
//
// The check symbol is a Damm check digit over the quasigroup of order 32
// x∘y = α·x ⊕ y, where α·x is multiplication by x in GF(2⁵) = GF(2)[x]/(x⁵+x²+1)
// and ⊕ is addition (XOR). Because α ∉ {0, 1} this quasigroup is totally
// anti-symmetric, so the check catches every single-symbol substitution and
// every transposition of two adjacent symbols. The check covers the version
// symbols K, W, 1 followed by the 24 payload symbols: a payload with a valid
// check under another version prefix does not validate as a KW1 key.
//
// [Parse] is lenient in the ways a person typing a key needs (case, Crockford
// aliases, optional separators) and strict in everything else. The check is a
// typo detector, not an authenticator: anyone can compute it, so a key that
// parses still has to be looked up by the server.
//
// A key is a secret credential. [Key.String] returns it in full so that it can
// be shown once at issue; [Key.LogValue] and [Key.Prefix] show only the
// display prefix, and errors from [Parse] never contain the input.
package licensekey

import (
	cryptorand "crypto/rand"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Version is the prefix of every key in this format.
const Version = "KW1"

// Alphabet is Crockford's base32 alphabet; a symbol's value is its index.
const Alphabet = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"

const (
	groups       = 5
	groupLen     = 5
	symbols      = groups * groupLen // payload and check symbol
	payloadLen   = symbols - 1       // 24 symbols = 120 bits = 15 bytes
	payloadBytes = payloadLen * 5 / 8
	keyLen       = len(Version) + groups*(1+groupLen) // "KW1" + 5 × "-XXXXX"
	prefixLen    = len(Version) + 1 + groupLen        // "KW1-XXXXX"
	maxInput     = 64
)

// Errors returned by [Parse], wrapped with detail; test with [errors.Is].
var (
	// ErrFormat means the input is not shaped like a key: wrong length,
	// prefix, separator or character.
	ErrFormat = errors.New("licensekey: malformed key")
	// ErrChecksum means the input is shaped like a key but its check symbol
	// does not match, which almost always means a typo.
	ErrChecksum = errors.New("licensekey: check symbol mismatch (typo?)")
)

// Key is a license key in canonical form, "KW1-XXXXX-XXXXX-XXXXX-XXXXX-XXXXX"
// in upper case. Keys from [Generate] and [Parse] are canonical, so two keys
// are the same credential exactly when they are equal strings.
//
// A Key is a secret: log it as a value (it implements [slog.LogValuer]),
// store only a keyed hash of it and its [Key.Prefix].
type Key string

// Generate returns a new random key. It reads exactly 15 bytes (120 bits) from
// rand, or from crypto/rand if rand is nil; rand MUST be a cryptographically
// secure source outside tests. It fails only if reading rand fails.
func Generate(rand io.Reader) (Key, error) {
	if rand == nil {
		rand = cryptorand.Reader
	}
	var buf [payloadBytes]byte
	if _, err := io.ReadFull(rand, buf[:]); err != nil {
		return "", fmt.Errorf("licensekey: generate: %w", err)
	}
	var sym [symbols]byte
	var acc uint32 // only the low bits (< 13) matter
	bits, n := 0, 0
	for _, b := range buf {
		acc = acc<<8 | uint32(b)
		bits += 8
		for bits >= 5 {
			bits -= 5
			sym[n] = byte(acc>>bits) & 31
			n++
		}
	}
	sym[payloadLen] = CheckSymbol(sym[:payloadLen])
	return encode(&sym), nil
}

// Parse reads a key typed or pasted by a person and returns it in canonical form.
//
// The input may be at most 64 bytes long. Surrounding white space is ignored.
// Letters are read case-insensitively, and Crockford's aliases are accepted
// everywhere a symbol is expected: I and L read as 1, O reads as 0 (so the
// prefix may be written "kw1", "KWl" or "KWI"; K and W have no aliases). One
// separator, a dash or a space, may appear after the prefix and between groups;
// each is optional, so "kw1ddjqjxv1e9j20v39cdjpwwv5t" is accepted. U and every
// other character, separators elsewhere and any other number of symbols are
// rejected.
//
// Errors wrap [ErrFormat] for a malformed input and [ErrChecksum] for a wrong
// check symbol. Their text may name one offending character and its position
// (1-based byte offset into s) but never repeats the input.
func Parse(s string) (Key, error) {
	if len(s) > maxInput {
		return "", fmt.Errorf("%w: longer than %d bytes", ErrFormat, maxInput)
	}
	lead := len(s) - len(strings.TrimLeftFunc(s, unicode.IsSpace))
	t := strings.TrimSpace(s)
	if len(t) < len(Version) {
		return "", fmt.Errorf("%w: too short", ErrFormat)
	}
	for i := range len(Version) {
		if v, ok := value(t[i]); !ok || Alphabet[v] != Version[i] {
			return "", fmt.Errorf("%w: missing %s prefix", ErrFormat, Version)
		}
	}
	var sym [symbols]byte
	n := 0
	sepOK := true // a separator may follow the prefix and each complete group
	for i := len(Version); i < len(t); i++ {
		c, pos := t[i], lead+i+1
		if c == '-' || c == ' ' {
			if !sepOK {
				return "", fmt.Errorf("%w: misplaced separator at position %d", ErrFormat, pos)
			}
			sepOK = false
			continue
		}
		v, ok := value(c)
		if !ok {
			return "", fmt.Errorf("%w: %s at position %d", ErrFormat, describe(t[i:]), pos)
		}
		if n == symbols {
			return "", fmt.Errorf("%w: more than %d symbols", ErrFormat, symbols)
		}
		sym[n] = v
		n++
		sepOK = n%groupLen == 0 && n < symbols
	}
	if n != symbols {
		return "", fmt.Errorf("%w: %d symbols, want %d", ErrFormat, n, symbols)
	}
	if damm(versionInterim(), sym[:]) != 0 {
		return "", ErrChecksum
	}
	return encode(&sym), nil
}

// String returns the full key. It is a secret: show it only to its holder.
func (k Key) String() string { return string(k) }

// Prefix returns the display prefix, the version and the first group, for
// example "KW1-DDJQJ". It carries 25 of the key's 120 random bits and is meant
// to be stored and shown to tell keys apart. It returns "" for a Key shorter
// than a prefix, such as the zero Key.
func (k Key) Prefix() string {
	if len(k) < prefixLen {
		return ""
	}
	return string(k[:prefixLen])
}

// LogValue implements [slog.LogValuer]: it logs the display prefix followed
// by "…", never the key.
func (k Key) LogValue() slog.Value {
	return slog.StringValue(k.Prefix() + "…")
}

// CheckSymbol returns the check symbol value of a key whose payload symbol
// values are payload: the Damm check digit over the version symbols K, W, 1
// followed by payload. For a key's 24 payload values the result is the value
// of its 25th symbol, Alphabet[CheckSymbol(payload)].
//
// Every value MUST be below 32; CheckSymbol panics otherwise.
func CheckSymbol(payload []byte) byte {
	for _, v := range payload {
		if v >= 32 {
			panic("licensekey: CheckSymbol: value out of range")
		}
	}
	// The check symbol c makes interim∘c = α·interim ⊕ c zero.
	return mulAlpha(damm(versionInterim(), payload))
}

// op is the quasigroup operation x∘y = α·x ⊕ y on values below 32.
func op(x, y byte) byte { return mulAlpha(x) ^ y }

// mulAlpha multiplies x by α (the class of x) in GF(2)[x]/(x⁵+x²+1).
func mulAlpha(x byte) byte {
	x <<= 1
	if x&0x20 != 0 {
		x ^= 0x25 // x⁵ = x² + 1
	}
	return x
}

// damm folds values into the Damm interim digit, starting from interim.
func damm(interim byte, values []byte) byte {
	for _, v := range values {
		interim = op(interim, v)
	}
	return interim
}

// versionInterim is the Damm interim digit after the symbols of Version.
func versionInterim() byte {
	var d byte
	for i := range len(Version) {
		d = op(d, byte(strings.IndexByte(Alphabet, Version[i])))
	}
	return d
}

// value returns the value of symbol c, reading lower case and Crockford's
// aliases (I, L → 1; O → 0).
func value(c byte) (byte, bool) {
	if 'a' <= c && c <= 'z' {
		c -= 'a' - 'A'
	}
	switch c {
	case 'I', 'L':
		c = '1'
	case 'O':
		c = '0'
	}
	i := strings.IndexByte(Alphabet, c)
	return byte(i), i >= 0
}

// describe names the character at the start of s for an error message.
func describe(s string) string {
	r, size := utf8.DecodeRuneInString(s)
	if r == utf8.RuneError && size <= 1 {
		return fmt.Sprintf("invalid byte %#02x", s[0])
	}
	return fmt.Sprintf("invalid character %q", r)
}

// encode renders symbol values in canonical form.
func encode(sym *[symbols]byte) Key {
	b := make([]byte, 0, keyLen)
	b = append(b, Version...)
	for i, v := range sym {
		if i%groupLen == 0 {
			b = append(b, '-')
		}
		b = append(b, Alphabet[v])
	}
	return Key(b)
}
