package webhook_test

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/keyward/keyward/webhook"
)

// The published Standard Webhooks test vector: the reference libraries'
// TestWebhookSign (standard-webhooks/standard-webhooks,
// libraries/go/webhook_test.go; the same values in the JavaScript, Python,
// PHP, Ruby, Java, C# and Rust tests).
const (
	vectorSecret    = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
	vectorID        = "msg_p5jXN8AQM9LWM0D4loKWxJek"
	vectorTimestamp = 1614265330
	vectorPayload   = `{"test": 2432232314}`
	vectorSignature = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
)

func mustParseSecret(t testing.TB, s string) webhook.Secret {
	t.Helper()
	sec, err := webhook.ParseSecret(s)
	if err != nil {
		t.Fatalf("ParseSecret: %v", err)
	}
	return sec
}

// standardSign is the Standard Webhooks algorithm written out from the
// specification, independently of package webhook: the key is the base64
// after "whsec_", the signed content is id "." timestamp "." body, the
// signature is "v1," + base64(HMAC-SHA256).
func standardSign(t testing.TB, whsec, id string, ts int64, body []byte) string {
	t.Helper()
	key, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(whsec, "whsec_"))
	if err != nil {
		t.Fatalf("decode secret: %v", err)
	}
	m := hmac.New(sha256.New, key)
	fmt.Fprintf(m, "%s.%d.%s", id, ts, body)
	return "v1," + base64.StdEncoding.EncodeToString(m.Sum(nil))
}

// standardVerify checks a webhook-signature header the way a Standard
// Webhooks receiver does: some space-separated "v1," entry must match.
func standardVerify(t testing.TB, whsec string, h http.Header, body []byte) bool {
	t.Helper()
	ts, err := strconv.ParseInt(h.Get("webhook-timestamp"), 10, 64)
	if err != nil {
		t.Fatalf("webhook-timestamp %q: %v", h.Get("webhook-timestamp"), err)
	}
	want := standardSign(t, whsec, h.Get("webhook-id"), ts, body)
	for _, sig := range strings.Split(h.Get("webhook-signature"), " ") {
		if hmac.Equal([]byte(sig), []byte(want)) {
			return true
		}
	}
	return false
}

func TestSignKnownAnswer(t *testing.T) {
	// Our independent transcription of the algorithm agrees with the vector…
	if got := standardSign(t, vectorSecret, vectorID, vectorTimestamp, []byte(vectorPayload)); got != vectorSignature {
		t.Fatalf("standardSign(vector) = %s, want %s", got, vectorSignature)
	}
	// …and so does the package.
	got := webhook.Sign(mustParseSecret(t, vectorSecret), vectorID, time.Unix(vectorTimestamp, 0), []byte(vectorPayload))
	if got != vectorSignature {
		t.Fatalf("Sign(vector) = %s, want %s", got, vectorSignature)
	}
	h := http.Header{}
	h.Set(webhook.HeaderID, vectorID)
	h.Set(webhook.HeaderTimestamp, strconv.Itoa(vectorTimestamp))
	h.Set(webhook.HeaderSignature, vectorSignature)
	if err := webhook.Verify([]webhook.Secret{mustParseSecret(t, vectorSecret)}, h, []byte(vectorPayload), time.Unix(vectorTimestamp, 0), 0); err != nil {
		t.Fatalf("Verify(vector) = %v", err)
	}
}

func TestSignMatchesStandardAlgorithm(t *testing.T) {
	for i := range 20 {
		sec, err := webhook.NewSecret(nil)
		if err != nil {
			t.Fatal(err)
		}
		id := fmt.Sprintf("evt_%d", i)
		ts := time.Unix(1700000000+int64(i)*7919, 0)
		body := []byte(fmt.Sprintf(`{"type":"license.revoked","timestamp":"x","data":{"n":%d}}`, i))
		want := standardSign(t, sec.Reveal(), id, ts.Unix(), body)
		if got := webhook.Sign(sec, id, ts, body); got != want {
			t.Fatalf("Sign = %s, want %s", got, want)
		}
		h := http.Header{}
		webhook.SetHeaders(h, []webhook.Secret{sec}, id, ts, body)
		if !standardVerify(t, sec.Reveal(), h, body) {
			t.Fatalf("SetHeaders: %v does not verify with the standard algorithm", h)
		}
		if h.Get("Content-Type") != "application/json" || h.Get(webhook.HeaderID) != id ||
			h.Get(webhook.HeaderTimestamp) != strconv.FormatInt(ts.Unix(), 10) {
			t.Fatalf("SetHeaders = %v", h)
		}
	}
}

func TestSignatureHeaderRotation(t *testing.T) {
	cur, _ := webhook.NewSecret(nil)
	prev, _ := webhook.NewSecret(nil)
	ts := time.Unix(1700000000, 0)
	body := []byte(`{}`)
	hdr := webhook.SignatureHeader([]webhook.Secret{cur, prev}, "evt_1", ts, body)
	sigs := strings.Split(hdr, " ")
	if len(sigs) != 2 {
		t.Fatalf("SignatureHeader(two secrets) = %q, want two space-separated signatures", hdr)
	}
	if sigs[0] != standardSign(t, cur.Reveal(), "evt_1", ts.Unix(), body) || sigs[1] != standardSign(t, prev.Reveal(), "evt_1", ts.Unix(), body) {
		t.Fatalf("SignatureHeader = %q, want the current secret's signature, then the previous one's", hdr)
	}
}

func TestVerify(t *testing.T) {
	sec := mustParseSecret(t, vectorSecret)
	other, _ := webhook.NewSecret(nil)
	now := time.Unix(1700000000, 0)
	body := []byte(`{"type":"license.revoked"}`)
	signed := func(ts time.Time, mutate func(h http.Header)) http.Header {
		h := http.Header{}
		webhook.SetHeaders(h, []webhook.Secret{sec}, "evt_1", ts, body)
		if mutate != nil {
			mutate(h)
		}
		return h
	}
	cases := []struct {
		name    string
		secrets []webhook.Secret
		h       http.Header
		body    []byte
		ok      bool
	}{
		{"OK", []webhook.Secret{sec}, signed(now, nil), body, true},
		{"OKWithinTolerance", []webhook.Secret{sec}, signed(now.Add(-4*time.Minute), nil), body, true},
		{"OKSecondSecret", []webhook.Secret{other, sec}, signed(now, nil), body, true},
		{"OKAmongOthers", []webhook.Secret{sec}, signed(now, func(h http.Header) {
			h.Set("webhook-signature", "v1,Ceo5qEr07ixe2NLpvHk3FH9bwy/WavXrAFQ/9tdO6mc= v1a,xx "+h.Get("webhook-signature"))
		}), body, true},
		{"ErrTamperedBody", []webhook.Secret{sec}, signed(now, nil), []byte(`{"type":"license.issued"}`), false},
		{"ErrWrongSecret", []webhook.Secret{other}, signed(now, nil), body, false},
		{"ErrOtherID", []webhook.Secret{sec}, signed(now, func(h http.Header) { h.Set("webhook-id", "evt_2") }), body, false},
		{"ErrOtherTimestamp", []webhook.Secret{sec}, signed(now, func(h http.Header) {
			h.Set("webhook-timestamp", strconv.FormatInt(now.Unix()+1, 10))
		}), body, false},
		{"ErrTooOld", []webhook.Secret{sec}, signed(now.Add(-6*time.Minute), nil), body, false},
		{"ErrFuture", []webhook.Secret{sec}, signed(now.Add(6*time.Minute), nil), body, false},
		{"ErrNoID", []webhook.Secret{sec}, signed(now, func(h http.Header) { h.Del("webhook-id") }), body, false},
		{"ErrNoTimestamp", []webhook.Secret{sec}, signed(now, func(h http.Header) { h.Del("webhook-timestamp") }), body, false},
		{"ErrNoSignature", []webhook.Secret{sec}, signed(now, func(h http.Header) { h.Del("webhook-signature") }), body, false},
		{"ErrBadTimestamp", []webhook.Secret{sec}, signed(now, func(h http.Header) { h.Set("webhook-timestamp", "1.7e9") }), body, false},
		{"ErrOtherVersion", []webhook.Secret{sec}, signed(now, func(h http.Header) {
			h.Set("webhook-signature", "v2,"+strings.TrimPrefix(h.Get("webhook-signature"), "v1,"))
		}), body, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			err := webhook.Verify(c.secrets, c.h, c.body, now, 0)
			if c.ok && err != nil {
				t.Fatalf("Verify = %v, want nil", err)
			}
			if !c.ok {
				var ve *webhook.VerifyError
				if !errors.As(err, &ve) {
					t.Fatalf("Verify = %v, want a *VerifyError", err)
				}
			}
		})
	}
}

func TestSecretFormat(t *testing.T) {
	sec, err := webhook.NewSecret(nil)
	if err != nil {
		t.Fatal(err)
	}
	s := sec.Reveal()
	raw, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(s, "whsec_"))
	if !strings.HasPrefix(s, "whsec_") || err != nil || len(raw) != webhook.SecretSize {
		t.Fatalf("Reveal() = %q: want whsec_ + base64 of %d bytes (%v)", s, webhook.SecretSize, err)
	}
	back := mustParseSecret(t, s)
	if !bytes.Equal(back.Bytes(), sec.Bytes()) {
		t.Fatalf("ParseSecret(Reveal()) does not round-trip")
	}
	// The prefix is optional on input, as in the reference libraries.
	if bare := mustParseSecret(t, strings.TrimPrefix(s, "whsec_")); !bytes.Equal(bare.Bytes(), sec.Bytes()) {
		t.Fatalf("ParseSecret(without prefix) differs")
	}
	for _, bad := range []string{"", "whsec_", "whsec_!!!!", "whsec_" + base64.StdEncoding.EncodeToString(make([]byte, 23)),
		"whsec_" + base64.StdEncoding.EncodeToString(make([]byte, 65)), "whsec_" + base64.RawURLEncoding.EncodeToString(raw) + "-_"} {
		if _, err := webhook.ParseSecret(bad); err == nil {
			t.Errorf("ParseSecret(%q) = nil error, want refusal", bad)
		} else if len(bad) > 10 && strings.Contains(err.Error(), bad[6:]) {
			t.Errorf("ParseSecret error %q repeats the input", err)
		}
	}
	a, _ := webhook.NewSecret(nil)
	if bytes.Equal(a.Bytes(), sec.Bytes()) {
		t.Fatalf("two NewSecret calls returned the same key")
	}
}

func TestSecretNeverPrints(t *testing.T) {
	sec, _ := webhook.NewSecret(nil)
	whsec := sec.Reveal()
	b64 := strings.TrimPrefix(whsec, "whsec_")
	type holder struct {
		Name   string
		Secret webhook.Secret
		hidden webhook.Secret
	}
	h := holder{Name: "x", Secret: sec, hidden: sec}
	var logs bytes.Buffer
	slog.New(slog.NewJSONHandler(&logs, nil)).Info("secret", "s", sec, "h", h)
	js, _ := json.Marshal(h)
	outputs := []string{
		fmt.Sprint(sec), fmt.Sprintf("%v %s %q %x %#v %+v", sec, sec, sec, sec, sec, sec),
		fmt.Sprintf("%v %+v %#v", h, h, h), fmt.Sprintf("%v", &h), sec.String(), logs.String(), string(js),
	}
	for _, out := range outputs {
		if strings.Contains(out, b64) || strings.Contains(out, fmt.Sprintf("%x", sec.Bytes())) {
			t.Fatalf("secret leaked in %q", out)
		}
	}
}

func FuzzParseSecret(f *testing.F) {
	f.Add(vectorSecret)
	f.Add("whsec_")
	f.Add("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
	f.Fuzz(func(t *testing.T, s string) {
		sec, err := webhook.ParseSecret(s)
		if err != nil {
			return
		}
		if n := len(sec.Bytes()); n < 24 || n > 64 {
			t.Fatalf("ParseSecret(%q) accepted %d bytes", s, n)
		}
		if back := mustParseSecret(t, sec.Reveal()); !bytes.Equal(back.Bytes(), sec.Bytes()) {
			t.Fatalf("ParseSecret(%q): Reveal does not round-trip", s)
		}
	})
}
