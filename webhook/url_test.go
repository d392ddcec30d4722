package webhook_test

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/keyward/keyward"
	"github.com/keyward/keyward/webhook"
)

func TestCheckURL(t *testing.T) {
	cases := []struct {
		url          string
		allowPrivate bool
		ok           bool
	}{
		{"https://hooks.example.com/keyward", false, true},
		{"http://hooks.example.com:8080/x?token=abc", false, true},
		{"https://93.184.215.14/hook", false, true},
		{"https://[2606:2800:21f:cb07:6820:80da:af6b:8b2c]/hook", false, true},
		{"http://127.0.0.1:9000/hook", true, true},
		{"http://localhost:9000/hook", true, true},
		{"", false, false},
		{"hooks.example.com/keyward", false, false},
		{"/relative", false, false},
		{"ftp://hooks.example.com/", false, false},
		{"javascript:alert(1)", false, false},
		{"mailto:ops@example.com", false, false},
		{"https:///nohost", false, false},
		{"https://hooks.example.com/#frag", false, false},
		{"https://hooks.example.com:99999/", false, false},
		{"https://hooks.example.com/a b", false, false},
		{"https://" + strings.Repeat("a", 2050) + ".com/", false, false},
		{"http://127.0.0.1:9000/hook", false, false},
		{"http://localhost/hook", false, false},
		{"http://api.localhost/hook", false, false},
		{"http://10.1.2.3/hook", false, false},
		{"http://192.168.1.1/hook", false, false},
		{"http://169.254.169.254/latest/meta-data", false, false},
		{"http://[::1]/hook", false, false},
		{"http://[::ffff:127.0.0.1]/hook", false, false},
		{"http://[fd00::1]/hook", false, false},
		{"http://0.0.0.0/hook", false, false},
		{"http://100.64.0.1/hook", false, false},
	}
	for _, c := range cases {
		_, err := webhook.CheckURL(c.url, c.allowPrivate)
		if c.ok && err != nil {
			t.Errorf("CheckURL(%q, %v) = %v, want nil", c.url, c.allowPrivate, err)
		}
		if !c.ok {
			if code := keyward.ErrorCode(err); code != keyward.EInvalid {
				t.Errorf("CheckURL(%q, %v) = %v, want %s", c.url, c.allowPrivate, err, keyward.EInvalid)
			}
		}
	}
}

func TestCheckURLMessageRedacts(t *testing.T) {
	_, err := webhook.CheckURL("http://user:hunter2@10.0.0.1/hook?token=s3cr3t", false)
	if err == nil {
		t.Fatal("CheckURL(private) = nil")
	}
	if msg := keyward.ErrorMessage(err); strings.Contains(msg, "hunter2") || strings.Contains(msg, "s3cr3t") {
		t.Fatalf("CheckURL message %q repeats a credential", msg)
	}
	if got := webhook.RedactURL("https://user:pw@h.example/p/q?token=x"); got != "https://REDACTED@h.example/p/q?REDACTED" {
		t.Fatalf("RedactURL = %q", got)
	}
	if got := webhook.RedactURL("https://h.example/p"); got != "https://h.example/p" {
		t.Fatalf("RedactURL(plain) = %q", got)
	}
}

func TestPublicAddr(t *testing.T) {
	for addr, want := range map[string]bool{
		"93.184.215.14": true, "8.8.8.8": true, "2606:4700::1111": true,
		"127.0.0.1": false, "10.0.0.1": false, "172.16.5.4": false, "192.168.0.1": false, "169.254.169.254": false,
		"0.0.0.0": false, "100.100.100.200": false, "224.0.0.1": false, "255.255.255.255": false, "198.18.0.1": false,
		"::1": false, "::": false, "fe80::1": false, "fc00::1": false, "::ffff:10.0.0.1": false, "64:ff9b::a00:1": false,
		"ff02::1": false, "2001:db8::1": false,
	} {
		if got := webhook.PublicAddr(netip.MustParseAddr(addr)); got != want {
			t.Errorf("PublicAddr(%s) = %v, want %v", addr, got, want)
		}
	}
}

// TestClientRefusesPrivateAfterResolution checks the connect-time guard: a
// name (not an IP literal) that resolves to loopback is refused, and no
// request reaches the server.
func TestClientRefusesPrivateAfterResolution(t *testing.T) {
	var hits atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { hits.Add(1) }))
	defer srv.Close()
	url := strings.Replace(srv.URL, "127.0.0.1", "localhost", 1)

	_, err := webhook.NewClient(false).Post(url, "application/json", strings.NewReader("{}"))
	var blocked *webhook.BlockedAddressError
	if !errors.As(err, &blocked) || !blocked.Addr.IsLoopback() {
		t.Fatalf("Post(localhost) without allowPrivate = %v, want a *BlockedAddressError for a loopback address", err)
	}
	if n := hits.Load(); n != 0 {
		t.Fatalf("the blocked request reached the server %d times", n)
	}
	resp, err := webhook.NewClient(true).Post(url, "application/json", strings.NewReader("{}"))
	if err != nil {
		t.Fatalf("Post(localhost) with allowPrivate = %v", err)
	}
	resp.Body.Close()
	if n := hits.Load(); n != 1 {
		t.Fatalf("server saw %d requests, want 1", n)
	}
}

func TestClientDoesNotFollowRedirects(t *testing.T) {
	var target atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/elsewhere" {
			target.Add(1)
			return
		}
		http.Redirect(w, r, "/elsewhere", http.StatusTemporaryRedirect)
	}))
	defer srv.Close()
	resp, err := webhook.NewClient(true).Post(srv.URL+"/hook", "application/json", strings.NewReader("{}"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusTemporaryRedirect || target.Load() != 0 {
		t.Fatalf("Post(redirecting) = %d, target hit %d times; want 307 and no follow", resp.StatusCode, target.Load())
	}
}
