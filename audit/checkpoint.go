package audit

import (
	"crypto/ed25519"
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"unicode"

	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"

	"github.com/keyward/keyward/keys"
)

// Checkpoint is the text of a signed checkpoint (C2SP tlog-checkpoint):
//
//	<origin>
//	<size>
//	<base64 root hash>
//	kid <kid of the registry key that signs it>
//
// each line ending in a newline. The signature line that follows in the
// signed note is "— <origin> <base64(key hash ‖ Ed25519 signature)>".
type Checkpoint struct {
	Origin string
	Size   int64
	Root   tlog.Hash
	KID    string
}

// kidPrefix starts the one extension line, which names the signing key.
const kidPrefix = "kid "

// Text returns the note text of c.
func (c Checkpoint) Text() string {
	return fmt.Sprintf("%s\n%d\n%s\n%s%s\n", c.Origin, c.Size, base64.StdEncoding.EncodeToString(c.Root[:]), kidPrefix, c.KID)
}

// ParseCheckpoint parses a checkpoint's note text (the part before the
// blank line). It accepts exactly what Text writes: four lines, a valid
// note name as origin, a decimal size without leading zeros, a padded
// standard-base64 32-byte root and a 43-character base64url kid.
func ParseCheckpoint(text string) (Checkpoint, error) {
	lines := strings.Split(text, "\n")
	if len(lines) != 5 || lines[4] != "" {
		return Checkpoint{}, errors.New("audit: checkpoint: want four lines (origin, size, root, kid)")
	}
	var c Checkpoint
	c.Origin = lines[0]
	if !ValidOrigin(c.Origin) {
		return Checkpoint{}, fmt.Errorf("audit: checkpoint: invalid origin %q", c.Origin)
	}
	size, err := strconv.ParseInt(lines[1], 10, 64)
	if err != nil || size < 0 || strconv.FormatInt(size, 10) != lines[1] {
		return Checkpoint{}, fmt.Errorf("audit: checkpoint: invalid tree size %q", lines[1])
	}
	c.Size = size
	root, err := base64.StdEncoding.Strict().DecodeString(lines[2])
	if err != nil || len(root) != tlog.HashSize || base64.StdEncoding.EncodeToString(root) != lines[2] {
		return Checkpoint{}, fmt.Errorf("audit: checkpoint: invalid root hash %q", lines[2])
	}
	c.Root = tlog.Hash(root)
	kid, ok := strings.CutPrefix(lines[3], kidPrefix)
	if !ok || !validKID(kid) {
		return Checkpoint{}, fmt.Errorf("audit: checkpoint: want %q and a key id, got %q", kidPrefix, lines[3])
	}
	c.KID = kid
	return c, nil
}

// ValidOrigin reports whether s can be a checkpoint's origin, which is
// also its signer's note key name: non-empty, without Unicode spaces or
// '+', and printable.
func ValidOrigin(s string) bool {
	if s == "" {
		return false
	}
	for _, r := range s {
		if r == '+' || unicode.IsSpace(r) || !unicode.IsPrint(r) {
			return false
		}
	}
	return true
}

// validKID reports whether s looks like an RFC 7638 SHA-256 thumbprint:
// 43 characters of unpadded base64url.
func validKID(s string) bool {
	if len(s) != 43 {
		return false
	}
	_, err := base64.RawURLEncoding.Strict().DecodeString(s)
	return err == nil && !strings.ContainsAny(s, "\r\n")
}

// NoteSigner makes a registry key sign checkpoints as a note.Signer named
// origin. The key is used only through s (a keys.Signer, the PKCS#11
// seam); pub is its public half, from which the note key hash is computed.
// Notes need Ed25519: another algorithm is an error, as is a pub that is
// not s's key.
func NoteSigner(origin string, s keys.Signer, pub keys.PublicKey) (note.Signer, error) {
	if s.Algorithm() != keys.Ed25519 || pub.Algorithm() != keys.Ed25519 {
		return nil, fmt.Errorf("audit: registry key %s is %s: signed-note checkpoints need Ed25519", s.KID(), s.Algorithm())
	}
	if pub.Thumbprint() != s.KID() {
		return nil, fmt.Errorf("audit: public key %s does not belong to signer %s", pub.Thumbprint(), s.KID())
	}
	v, err := verifier(origin, pub)
	if err != nil {
		return nil, err
	}
	return &noteSigner{name: origin, hash: v.KeyHash(), s: s}, nil
}

// noteSigner implements note.Signer on a keys.Signer. note.Sign hands it
// the note text, and an Ed25519 note signature is the plain Ed25519
// signature of that text, which is what an Ed25519 keys.Signer returns.
type noteSigner struct {
	name string
	hash uint32
	s    keys.Signer
}

func (n *noteSigner) Name() string                    { return n.name }
func (n *noteSigner) KeyHash() uint32                 { return n.hash }
func (n *noteSigner) Sign(msg []byte) ([]byte, error) { return n.s.Sign(msg) }

// verifier returns the note verifier of an Ed25519 key named origin.
func verifier(origin string, pub keys.PublicKey) (note.Verifier, error) {
	if !ValidOrigin(origin) {
		return nil, fmt.Errorf("audit: origin %q cannot be a note key name (no spaces or '+')", origin)
	}
	raw, ok := pub.CryptoPublicKey().(ed25519.PublicKey)
	if !ok {
		return nil, fmt.Errorf("audit: key %s is %s, not Ed25519", pub.Thumbprint(), pub.Algorithm())
	}
	vkey, err := note.NewEd25519VerifierKey(origin, raw)
	if err != nil {
		return nil, fmt.Errorf("audit: verifier key: %w", err)
	}
	return note.NewVerifier(vkey)
}

// VerifierKey returns the note verifier key ("<origin>+<hash>+<key>", as
// note.NewVerifier and other signed-note tools read it) of an Ed25519
// registry key.
func VerifierKey(origin string, pub keys.PublicKey) (string, error) {
	raw, ok := pub.CryptoPublicKey().(ed25519.PublicKey)
	if !ok || !ValidOrigin(origin) {
		return "", fmt.Errorf("audit: no verifier key for a %s key named %q", pub.Algorithm(), origin)
	}
	return note.NewEd25519VerifierKey(origin, raw)
}

// SignNote signs c with s and returns the signed note.
func SignNote(c Checkpoint, s note.Signer) ([]byte, error) {
	if s.Name() != c.Origin {
		return nil, fmt.Errorf("audit: signer %q does not sign for origin %q", s.Name(), c.Origin)
	}
	msg, err := note.Sign(&note.Note{Text: c.Text()}, s)
	if err != nil {
		return nil, fmt.Errorf("audit: sign checkpoint: %w", err)
	}
	return msg, nil
}

// VerificationError says a checkpoint did not verify, and why.
type VerificationError struct {
	Problem string
	Err     error // the note package's error, if any
}

func (e *VerificationError) Error() string {
	if e.Err != nil {
		return "audit: checkpoint does not verify: " + e.Problem + ": " + e.Err.Error()
	}
	return "audit: checkpoint does not verify: " + e.Problem
}

func (e *VerificationError) Unwrap() error { return e.Err }

// VerifyCheckpoint opens a signed checkpoint with the Ed25519 registry keys
// of set (JWKs whose keyward_purpose is "registry"), named after the
// checkpoint's origin, or after origin if that is not empty, in which case
// the checkpoint's origin must equal it. It checks that the kid line names
// the key whose signature verified. It returns the checkpoint and that kid.
// Errors are *VerificationError.
func VerifyCheckpoint(msg []byte, set keys.JWKS, origin string) (Checkpoint, error) {
	text, _, ok := strings.Cut(string(msg), "\n\n")
	if !ok {
		return Checkpoint{}, &VerificationError{Problem: "not a signed note"}
	}
	unverified, err := ParseCheckpoint(text + "\n")
	if err != nil {
		return Checkpoint{}, &VerificationError{Problem: "malformed", Err: err}
	}
	if origin == "" {
		origin = unverified.Origin
	} else if unverified.Origin != origin {
		return Checkpoint{}, &VerificationError{Problem: fmt.Sprintf("origin %q, want %q", unverified.Origin, origin)}
	}
	var vs []note.Verifier
	kids := map[uint32]string{}
	for _, j := range set.Keys {
		if j.Purpose != "registry" || j.Crv != "Ed25519" {
			continue
		}
		pub, err := keys.PublicKeyFromJWK(j)
		if err != nil {
			continue // not a key we can check with; the others may do
		}
		v, err := verifier(origin, pub)
		if err != nil {
			return Checkpoint{}, &VerificationError{Problem: "origin", Err: err}
		}
		vs = append(vs, v)
		kids[v.KeyHash()] = pub.Thumbprint()
	}
	if len(vs) == 0 {
		return Checkpoint{}, &VerificationError{Problem: "the key set has no Ed25519 registry key"}
	}
	n, err := note.Open(msg, note.VerifierList(vs...))
	if err != nil {
		var unv *note.UnverifiedNoteError
		if errors.As(err, &unv) {
			return Checkpoint{}, &VerificationError{Problem: fmt.Sprintf("signed by no published registry key (checkpoint names %s)", unverified.KID), Err: err}
		}
		return Checkpoint{}, &VerificationError{Problem: "bad signature", Err: err}
	}
	c, err := ParseCheckpoint(n.Text)
	if err != nil {
		return Checkpoint{}, &VerificationError{Problem: "malformed", Err: err}
	}
	for _, s := range n.Sigs {
		if kids[s.Hash] == c.KID {
			return c, nil
		}
	}
	return Checkpoint{}, &VerificationError{Problem: fmt.Sprintf("names key %s, but another registry key signed it", c.KID)}
}
