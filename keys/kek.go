package keys

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	cryptorand "crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"slices"
)

// ErrDecrypt is returned, possibly wrapped, when a sealed blob does not
// open: wrong KEK, wrong additional data, or a changed or malformed blob.
var ErrDecrypt = errors.New("keys: decryption failed")

// Sealed blob layout:
//
//	"kwk1" (4 bytes) || KEK id (8 bytes) || nonce (12 random bytes) || AES-256-GCM ciphertext || tag (16 bytes)
//
// The KEK id is the first 8 bytes of SHA-256("keyward-kek-id\x00" || key),
// so a ring can pick the KEK that opens a blob. The GCM additional data is
// the caller's ad alone; the prefix needs no binding because a changed
// magic or id finds no KEK, and a changed nonce fails the tag.
const (
	sealMagic  = "kwk1"
	kekIDLen   = 8
	nonceLen   = 12
	sealPrefix = len(sealMagic) + kekIDLen + nonceLen
	gcmTagLen  = 16
)

// KEK is a key-encryption key: a 32-byte AES-256-GCM key that seals private
// keys and other server secrets at rest. Random 96-bit nonces limit one KEK
// to about 2^32 seals; rotate long before that with a KEKRing. A KEK never
// prints its key and is not comparable with ==. It is safe for concurrent use.
// A KEK MUST come from NewKEK, GenerateKEK or LoadKEKFile; the zero KEK panics.
type KEK struct {
	_  [0]func() // not comparable
	id [kekIDLen]byte
	s  func() *kekSecret // a closure so that reflection cannot print it; see PrivateKey
}

type kekSecret struct {
	raw  [32]byte
	aead cipher.AEAD
}

// GenerateKEK returns a new random KEK, reading from rand, or from
// crypto/rand if rand is nil. rand MUST be a cryptographically secure source.
func GenerateKEK(rand io.Reader) (*KEK, error) {
	if rand == nil {
		rand = cryptorand.Reader
	}
	raw := make([]byte, 32)
	defer clear(raw)
	if _, err := io.ReadFull(rand, raw); err != nil {
		return nil, fmt.Errorf("keys: generate kek: %w", err)
	}
	return NewKEK(raw)
}

// NewKEK returns the KEK of raw, which MUST be exactly 32 uniformly random
// bytes. It copies raw; the caller may wipe it.
func NewKEK(raw []byte) (*KEK, error) {
	if len(raw) != 32 {
		return nil, fmt.Errorf("keys: kek is %d bytes, want 32", len(raw))
	}
	s := &kekSecret{}
	copy(s.raw[:], raw)
	block, err := aes.NewCipher(s.raw[:])
	if err != nil {
		return nil, fmt.Errorf("keys: kek: %w", err)
	}
	if s.aead, err = cipher.NewGCM(block); err != nil {
		return nil, fmt.Errorf("keys: kek: %w", err)
	}
	h := sha256.New()
	h.Write([]byte("keyward-kek-id\x00"))
	h.Write(raw)
	k := &KEK{s: func() *kekSecret { return s }}
	copy(k.id[:], h.Sum(nil))
	return k, nil
}

// ID returns the KEK's public id: hex of the first 8 bytes of
// SHA-256("keyward-kek-id\x00" || key).
func (k *KEK) ID() string { return hex.EncodeToString(k.id[:]) }

// Seal encrypts plaintext under k with additional data ad and returns the
// blob described above. Open needs the same ad; Keyward passes the kid of
// the key being sealed, so a blob cannot be swapped onto another key.
func (k *KEK) Seal(plaintext, ad []byte) ([]byte, error) {
	blob := make([]byte, sealPrefix, sealPrefix+len(plaintext)+gcmTagLen)
	copy(blob, sealMagic)
	copy(blob[len(sealMagic):], k.id[:])
	nonce := blob[sealPrefix-nonceLen:]
	cryptorand.Read(nonce) // never fails
	return k.s().aead.Seal(blob, nonce, plaintext, ad), nil
}

// Open decrypts a blob from Seal. Any failure (another KEK, other ad, a
// changed byte, a malformed blob) is ErrDecrypt, possibly wrapped with the
// KEK ids involved; errors never include plaintext.
func (k *KEK) Open(blob, ad []byte) ([]byte, error) {
	id, ok := blobKEKID(blob)
	if !ok {
		return nil, fmt.Errorf("%w: malformed blob", ErrDecrypt)
	}
	if id != k.id {
		return nil, fmt.Errorf("%w: sealed under kek %x, not %s", ErrDecrypt, id, k.ID())
	}
	pt, err := k.s().aead.Open(nil, blob[sealPrefix-nonceLen:sealPrefix], blob[sealPrefix:], ad)
	if err != nil {
		return nil, ErrDecrypt
	}
	return pt, nil
}

// blobKEKID returns the KEK id of a blob that is long enough and has the magic.
func blobKEKID(blob []byte) (id [kekIDLen]byte, ok bool) {
	if len(blob) < sealPrefix+gcmTagLen || string(blob[:len(sealMagic)]) != sealMagic {
		return id, false
	}
	copy(id[:], blob[len(sealMagic):])
	return id, true
}

// String returns "keys.KEK{id, REDACTED}".
func (k KEK) String() string { return "keys.KEK{" + hex.EncodeToString(k.id[:]) + ", REDACTED}" }

// Format implements fmt.Formatter: every verb prints String, quoted for %q.
func (k KEK) Format(f fmt.State, verb rune) { formatRedacted(f, verb, k.String()) }

// LogValue implements slog.LogValuer: the KEK logs as String.
func (k KEK) LogValue() slog.Value { return slog.StringValue(k.String()) }

// KEKRing is the set of KEKs a server holds while rotating its KEK: the
// primary KEK seals, and any KEK of the ring opens the blobs it sealed,
// chosen by the id in the blob. Re-seal every blob for which
// SealedWithPrimary is false before dropping an old KEK. A KEKRing is
// immutable and safe for concurrent use.
type KEKRing struct {
	keks []*KEK // primary first, no two with the same id
}

// NewKEKRing returns a ring of primary and older KEKs. A KEK whose id is
// already in the ring is left out. The KEKs MUST NOT be nil.
func NewKEKRing(primary *KEK, older ...*KEK) *KEKRing {
	r := &KEKRing{}
	for _, k := range append([]*KEK{primary}, older...) {
		if k == nil {
			panic("keys: NewKEKRing with a nil KEK")
		}
		if r.find(k.id) == nil {
			r.keks = append(r.keks, k)
		}
	}
	return r
}

func (r *KEKRing) find(id [kekIDLen]byte) *KEK {
	for _, k := range r.keks {
		if k.id == id {
			return k
		}
	}
	return nil
}

// Primary returns the KEK that seals.
func (r *KEKRing) Primary() *KEK { return r.keks[0] }

// All returns the ring's KEKs, primary first, in a new slice: with
// NewKEKRing(newKEK, old.All()...) a rotation keeps every old KEK.
func (r *KEKRing) All() []*KEK { return slices.Clone(r.keks) }

// Seal seals plaintext under the primary KEK; see KEK.Seal.
func (r *KEKRing) Seal(plaintext, ad []byte) ([]byte, error) { return r.Primary().Seal(plaintext, ad) }

// Open opens a blob sealed by any KEK of the ring; see KEK.Open. A blob of a
// KEK not in the ring is ErrDecrypt.
func (r *KEKRing) Open(blob, ad []byte) ([]byte, error) {
	id, ok := blobKEKID(blob)
	if !ok {
		return nil, fmt.Errorf("%w: malformed blob", ErrDecrypt)
	}
	k := r.find(id)
	if k == nil {
		return nil, fmt.Errorf("%w: no kek %x in ring", ErrDecrypt, id)
	}
	return k.Open(blob, ad)
}

// SealedWithPrimary reports whether blob names the primary KEK, that is,
// whether it needs no re-sealing. It does not open blob.
func (r *KEKRing) SealedWithPrimary(blob []byte) bool {
	id, ok := blobKEKID(blob)
	return ok && id == r.Primary().id
}

// KEK file format: text, mode 0600, the first line kekFileHeader, then one
// line "<id> <standard base64 of the 32-byte key>" per KEK, primary first,
// each line ending in "\n".
const (
	kekFileHeader  = "keyward-kek-v1"
	maxKEKFileSize = 1 << 20
)

// LoadKEKFile reads a KEK file: a first line "keyward-kek-v1", then one line
// "<id> <standard base64 of the 32-byte key>" per KEK, primary first. It
// refuses a file that group or others may access in any way (on Unix), and a
// file that is missing, not regular, malformed, empty of KEKs, repeats a
// KEK, or has an id that does not match its key. Errors never include key
// material.
func LoadKEKFile(path string) (*KEKRing, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("keys: load kek file: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("keys: load kek file: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("keys: load kek file %s: not a regular file", path)
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 && runtime.GOOS != "windows" {
		return nil, fmt.Errorf("keys: load kek file %s: refusing a secret file with mode %#o that group or others can access; run chmod 600 %s", path, perm, path)
	}
	data, err := io.ReadAll(io.LimitReader(f, maxKEKFileSize+1))
	defer clear(data)
	if err != nil {
		return nil, fmt.Errorf("keys: load kek file: %w", err)
	}
	if len(data) > maxKEKFileSize {
		return nil, fmt.Errorf("keys: load kek file %s: larger than %d bytes", path, maxKEKFileSize)
	}
	r, err := parseKEKFile(data)
	if err != nil {
		return nil, fmt.Errorf("keys: load kek file %s: %w", path, err)
	}
	return r, nil
}

func parseKEKFile(data []byte) (*KEKRing, error) {
	lines := bytes.Split(data, []byte("\n"))
	if len(lines) < 2 || len(lines[len(lines)-1]) != 0 {
		return nil, errors.New("want lines ending in newline")
	}
	lines = lines[:len(lines)-1]
	if string(lines[0]) != kekFileHeader {
		return nil, fmt.Errorf("first line is not %q", kekFileHeader)
	}
	var keks []*KEK
	raw := make([]byte, 33) // DecodedLen of 44 characters
	defer clear(raw)
	for i, line := range lines[1:] {
		n := i + 2 // line number
		id, b64, ok := bytes.Cut(line, []byte(" "))
		if !ok || base64.StdEncoding.DecodedLen(len(b64)) != 33 { // 44 characters, one padding
			return nil, fmt.Errorf("line %d: want \"<id> <base64 of 32 bytes>\"", n)
		}
		if m, err := base64.StdEncoding.Strict().Decode(raw, b64); err != nil || m != 32 || bytes.ContainsAny(b64, "\r\n") {
			return nil, fmt.Errorf("line %d: key is not standard base64 of 32 bytes", n)
		}
		k, err := NewKEK(raw[:32])
		if err != nil {
			return nil, fmt.Errorf("line %d: %w", n, err)
		}
		if string(id) != k.ID() {
			return nil, fmt.Errorf("line %d: id does not match its key (whose id is %s)", n, k.ID())
		}
		for _, o := range keks {
			if o.id == k.id {
				return nil, fmt.Errorf("line %d: kek %s repeated", n, k.ID())
			}
		}
		keks = append(keks, k)
	}
	if len(keks) == 0 {
		return nil, errors.New("no keks")
	}
	return NewKEKRing(keks[0], keks[1:]...), nil
}

// WriteKEKFile writes r to path in LoadKEKFile's format with mode 0600,
// atomically: it writes and fsyncs a temporary file in the same directory,
// renames it over path, then fsyncs the directory (best effort).
func WriteKEKFile(path string, r *KEKRing) (err error) {
	enc := base64.StdEncoding
	data := make([]byte, 0, len(kekFileHeader)+1+len(r.keks)*(2*kekIDLen+1+enc.EncodedLen(32)+1))
	defer clear(data[:cap(data)])
	data = append(data, kekFileHeader+"\n"...)
	for _, k := range r.keks {
		data = append(data, k.ID()+" "...)
		data = enc.AppendEncode(data, k.s().raw[:])
		data = append(data, '\n')
	}

	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return fmt.Errorf("keys: write kek file: %w", err)
	}
	tmp := f.Name()
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(tmp)
			err = fmt.Errorf("keys: write kek file %s: %w", path, err)
		}
	}()
	if err = f.Chmod(0o600); err != nil {
		return err
	}
	if _, err = f.Write(data); err != nil {
		return err
	}
	if err = f.Sync(); err != nil {
		return err
	}
	if err = f.Close(); err != nil {
		return err
	}
	if err = os.Rename(tmp, path); err != nil {
		return err
	}
	if d, derr := os.Open(dir); derr == nil {
		d.Sync() // best effort: makes the rename durable where supported
		d.Close()
	}
	return nil
}
