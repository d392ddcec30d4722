package webhook

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// The Standard Webhooks headers.
const (
	HeaderID        = "webhook-id"        // the event id; the same on every attempt
	HeaderTimestamp = "webhook-timestamp" // Unix seconds of the attempt
	HeaderSignature = "webhook-signature" // space-separated "v1,<base64>" signatures
)

// SecretPrefix starts every symmetric Standard Webhooks secret.
const SecretPrefix = "whsec_"

// Secret sizes: Standard Webhooks asks for at least 24 random bytes; Keyward
// generates SecretSize.
const (
	SecretSize    = 32
	minSecretSize = 24
	maxSecretSize = 64
)

// DefaultTolerance is how far a webhook-timestamp may be from the
// receiver's clock in Verify, the Standard Webhooks reference value.
const DefaultTolerance = 5 * time.Minute

// Secret is an endpoint's HMAC-SHA256 signing key. It never prints its key
// (String, Format, LogValue and MarshalText redact it) and is not comparable
// with == (it holds a func). Reveal returns the "whsec_…" form, which Keyward shows exactly
// once: when the secret is made.
type Secret struct {
	// Reached through a closure so that reflection-based printing (fmt on
	// an unexported field, %v of a containing struct) cannot see the bytes.
	key func() []byte
}

// NewSecret returns a secret of SecretSize bytes from r (nil = crypto/rand).
func NewSecret(r io.Reader) (Secret, error) {
	if r == nil {
		r = rand.Reader
	}
	b := make([]byte, SecretSize)
	if _, err := io.ReadFull(r, b); err != nil {
		return Secret{}, fmt.Errorf("webhook: generate secret: %w", err)
	}
	return secretOf(b), nil
}

// SecretFromBytes returns the secret whose key is b (a copy is kept). b
// must be 24 to 64 bytes.
func SecretFromBytes(b []byte) (Secret, error) {
	if len(b) < minSecretSize || len(b) > maxSecretSize {
		return Secret{}, fmt.Errorf("webhook: secret of %d bytes: want %d to %d", len(b), minSecretSize, maxSecretSize)
	}
	return secretOf(append([]byte(nil), b...)), nil
}

func secretOf(b []byte) Secret { return Secret{key: func() []byte { return b }} }

// ParseSecret parses "whsec_" + base64 (standard alphabet, padded), as the
// Standard Webhooks libraries do; the prefix may be left off. The error
// never contains s.
func ParseSecret(s string) (Secret, error) {
	raw, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(s, SecretPrefix))
	if err != nil {
		return Secret{}, errors.New("webhook: secret is not whsec_ followed by base64")
	}
	return SecretFromBytes(raw)
}

// Bytes returns a copy of the key, for sealing. The caller MUST NOT log it.
func (s Secret) Bytes() []byte {
	if s.key == nil {
		return nil
	}
	return append([]byte(nil), s.key()...)
}

// Reveal returns the secret as "whsec_" + base64, the form a receiver
// configures. It is the only method that shows the key.
func (s Secret) Reveal() string {
	return SecretPrefix + base64.StdEncoding.EncodeToString(s.Bytes())
}

// IsZero reports whether s holds no key.
func (s Secret) IsZero() bool { return s.key == nil }

func (s Secret) String() string { return SecretPrefix + "REDACTED" }

// GoString redacts too, for %#v.
func (s Secret) GoString() string { return "webhook.Secret{REDACTED}" }

// Format prints the redacted form for every verb.
func (s Secret) Format(f fmt.State, verb rune) { io.WriteString(f, s.String()) }

// LogValue logs the redacted form.
func (s Secret) LogValue() slog.Value { return slog.StringValue(s.String()) }

// MarshalText marshals the redacted form, so encoding a struct that holds a
// Secret cannot leak it.
func (s Secret) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

// Sign returns the Standard Webhooks v1 signature of one message:
// "v1," + base64(HMAC-SHA256(key, id + "." + unix seconds + "." + body)).
func Sign(s Secret, id string, ts time.Time, body []byte) string {
	return "v1," + base64.StdEncoding.EncodeToString(mac(s, id, ts.Unix(), body))
}

func mac(s Secret, id string, ts int64, body []byte) []byte {
	m := hmac.New(sha256.New, s.Bytes())
	m.Write([]byte(id))
	m.Write([]byte{'.'})
	m.Write([]byte(strconv.FormatInt(ts, 10)))
	m.Write([]byte{'.'})
	m.Write(body)
	return m.Sum(nil)
}

// SignatureHeader returns the webhook-signature value: one signature per
// secret, space-separated, in the order given (current secret first during
// a rotation).
func SignatureHeader(secrets []Secret, id string, ts time.Time, body []byte) string {
	sigs := make([]string, len(secrets))
	for i, s := range secrets {
		sigs[i] = Sign(s, id, ts, body)
	}
	return strings.Join(sigs, " ")
}

// SetHeaders sets the three Standard Webhooks headers and Content-Type on h
// for one attempt at ts.
func SetHeaders(h http.Header, secrets []Secret, id string, ts time.Time, body []byte) {
	h.Set(HeaderID, id)
	h.Set(HeaderTimestamp, strconv.FormatInt(ts.Unix(), 10))
	h.Set(HeaderSignature, SignatureHeader(secrets, id, ts, body))
	h.Set("Content-Type", "application/json")
}

// VerifyError says why Verify refused a message.
type VerifyError struct {
	Reason string
}

func (e *VerifyError) Error() string { return "webhook: " + e.Reason }

// Verify checks a received webhook as a Standard Webhooks consumer does: the
// three headers are present, webhook-timestamp is within tolerance of now
// (0 = DefaultTolerance), and at least one "v1," signature in
// webhook-signature is the HMAC of id.timestamp.body under one of secrets,
// compared in constant time. It returns a *VerifyError otherwise.
// Receivers MUST also dedupe by webhook-id: a message may arrive twice.
func Verify(secrets []Secret, h http.Header, body []byte, now time.Time, tolerance time.Duration) error {
	if tolerance <= 0 {
		tolerance = DefaultTolerance
	}
	id, tsText, sigs := h.Get(HeaderID), h.Get(HeaderTimestamp), h.Get(HeaderSignature)
	if id == "" || tsText == "" || sigs == "" {
		return &VerifyError{Reason: "missing webhook-id, webhook-timestamp or webhook-signature header"}
	}
	ts, err := strconv.ParseInt(tsText, 10, 64)
	if err != nil {
		return &VerifyError{Reason: "webhook-timestamp is not an integer"}
	}
	at := time.Unix(ts, 0)
	if at.Before(now.Add(-tolerance)) {
		return &VerifyError{Reason: "webhook-timestamp is too old"}
	}
	if at.After(now.Add(tolerance)) {
		return &VerifyError{Reason: "webhook-timestamp is in the future"}
	}
	for _, s := range secrets {
		want := mac(s, id, ts, body)
		for _, sig := range strings.Fields(sigs) {
			version, b64, ok := strings.Cut(sig, ",")
			if !ok || version != "v1" {
				continue
			}
			got, err := base64.StdEncoding.DecodeString(b64)
			if err == nil && hmac.Equal(got, want) {
				return nil
			}
		}
	}
	return &VerifyError{Reason: "no matching signature"}
}
