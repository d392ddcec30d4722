package cli_test

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/keyward/keyward/webhook"
)

// TestWebhookEndToEnd runs the dev server on loopback and drives webhooks
// through the CLI: add (secret shown once), a license revoke reaching a
// real receiver signed with that secret (a suspension: revocation over
// HTTP needs a second principal and a TOTP code under the default policy), the delivery log, rotation and
// removal, and refusals that exit non-zero and write nothing.
func TestWebhookEndToEnd(t *testing.T) {
	logs := &lockedBuffer{}
	h := start(t, t.TempDir(), logs)
	defer h.stop()

	type req struct {
		header http.Header
		body   []byte
	}
	var mu sync.Mutex
	var got []req
	rcv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		mu.Lock()
		got = append(got, req{r.Header.Clone(), b})
		mu.Unlock()
		w.WriteHeader(http.StatusNoContent)
	}))
	defer rcv.Close()
	received := func() []req { mu.Lock(); defer mu.Unlock(); return append([]req(nil), got...) }

	var added struct {
		ID     string   `json:"id"`
		Secret string   `json:"secret"`
		Events []string `json:"events"`
		State  string   `json:"state"`
	}
	h.ok(&added, "webhook", "add", rcv.URL+"/hook", "--events", "license.suspended,key.compromised")
	if !strings.HasPrefix(added.ID, "whk_") || !strings.HasPrefix(added.Secret, "whsec_") || len(added.Events) != 2 || added.State != "enabled" {
		t.Fatalf("webhook add = %+v", added)
	}
	secret, err := webhook.ParseSecret(added.Secret)
	if err != nil {
		t.Fatal(err)
	}

	// Refusals: non-zero exit, a precise message, nothing written.
	h.fails("INVALID_ARGUMENT", "webhook", "add", rcv.URL, "--events", "license.suspended,license.exploded")
	h.fails("INVALID_ARGUMENT", "webhook", "add", "ftp://hooks.example.com/", "--events", "*")
	h.fails("INVALID_ARGUMENT", "webhook", "add", "hooks.example.com/x", "--events", "*")
	h.fails("", "webhook", "add", rcv.URL) // --events is required
	h.fails("NOT_FOUND", "webhook", "remove", "whk_missing")
	h.fails("NOT_FOUND", "webhook", "deliveries", "whk_missing")
	h.fails("NOT_FOUND", "webhook", "replay", "dlv_missing")
	h.fails("INVALID_ARGUMENT", "webhook", "deliveries", "--status", "lost")
	var list []struct {
		ID     string `json:"id"`
		Secret string `json:"secret"`
	}
	h.ok(&list, "webhook", "list", "--all")
	if len(list) != 1 || list[0].ID != added.ID || list[0].Secret != "" {
		t.Fatalf("webhook list = %+v, want only the added endpoint, without its secret", list)
	}

	var issued struct {
		ID string `json:"id"`
	}
	h.ok(&issued, "license", "issue", "--product", "demo", "--holder", "cust-1")
	h.ok(nil, "license", "suspend", issued.ID, "--reason", "suspected key leak")

	deadline := time.Now().Add(10 * time.Second)
	for len(received()) == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("the receiver got nothing 10s after the suspend; server log:\n%s", logs.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
	r := received()[0]
	if err := webhook.Verify([]webhook.Secret{secret}, r.header, r.body, time.Now(), 0); err != nil {
		t.Fatalf("delivery does not verify with the secret from `webhook add`: %v", err)
	}
	if !strings.Contains(string(r.body), `"type":"license.suspended"`) || !strings.Contains(string(r.body), issued.ID) {
		t.Fatalf("delivery body = %s", r.body)
	}

	var ds []struct {
		ID         string `json:"id"`
		EventID    string `json:"event_id"`
		State      string `json:"state"`
		Attempts   int    `json:"attempts"`
		LastStatus int    `json:"last_status"`
	}
	deadline = time.Now().Add(5 * time.Second)
	for {
		h.ok(&ds, "webhook", "deliveries", added.ID)
		if len(ds) == 1 && ds[0].State == "succeeded" || time.Now().After(deadline) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if len(ds) != 1 || ds[0].State != "succeeded" || ds[0].Attempts != 1 || ds[0].LastStatus != 204 || ds[0].EventID != r.header.Get("webhook-id") {
		t.Fatalf("webhook deliveries = %+v", ds)
	}
	var replayed struct {
		State string `json:"state"`
	}
	h.ok(&replayed, "webhook", "replay", ds[0].ID)
	if replayed.State != "pending" {
		t.Fatalf("webhook replay = %+v", replayed)
	}

	var rotated struct {
		Secret          string     `json:"secret"`
		PreviousExpires *time.Time `json:"previous_secret_expires_at"`
	}
	h.ok(&rotated, "webhook", "rotate-secret", added.ID, "--grace", "1h")
	if !strings.HasPrefix(rotated.Secret, "whsec_") || rotated.Secret == added.Secret || rotated.PreviousExpires == nil {
		t.Fatalf("webhook rotate-secret = %+v", rotated)
	}
	var removed struct {
		State string `json:"state"`
	}
	h.ok(&removed, "webhook", "remove", added.ID)
	if removed.State != "removed" {
		t.Fatalf("webhook remove = %+v", removed)
	}
	for _, s := range []string{added.Secret, rotated.Secret} {
		if strings.Contains(logs.String(), strings.TrimPrefix(s, "whsec_")) {
			t.Fatal("a webhook secret appears in the server log")
		}
	}
}
