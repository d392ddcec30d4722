package sdk_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/keyward/keyward"
	"github.com/keyward/keyward/keys"
	"github.com/keyward/keyward/licensekey"
	"github.com/keyward/keyward/sdk"
)

const (
	testKey  = "KW1-DDJQJ-XV1E9-J20V3-9CDJP-WWV5T" // a well-formed key
	typedKey = "kw1 ddjqj xvle9 j2ov3 9cdjp wwv5t" // the same key as a person might type it
	typoKey  = "KW1-DDJQJ-XV1E9-J20V3-9CDJP-VWV5T" // one symbol mistyped
)

// fakeServer serves canned answers and counts the requests it gets.
type fakeServer struct {
	*httptest.Server
	requests atomic.Int64
}

func newFakeServer(t *testing.T, h http.HandlerFunc) *fakeServer {
	t.Helper()
	s := &fakeServer{}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.requests.Add(1)
		h(w, r)
	}))
	t.Cleanup(s.Close)
	return s
}

func respond(w http.ResponseWriter, status int, contentType, body string) {
	w.Header().Set("Content-Type", contentType)
	w.WriteHeader(status)
	io.WriteString(w, body)
}

const validationJSON = `{
  "valid": true,
  "code": "VALID",
  "license": {
    "id": "lic_1", "product_id": "prd_1", "product": "acme-pro", "holder": "hld_1",
    "state": "active", "key_prefix": "KW1-DDJQJ", "entitlements": ["pro"],
    "max_machines": 3, "expires_at": null,
    "created_at": "2030-01-01T00:00:00Z", "updated_at": "2030-01-01T00:00:00Z",
    "future_field": {"ignored": true}
  },
  "machine": {"id": "mch_1", "license_id": "lic_1", "fingerprint": "fp-1",
    "created_at": "2030-01-01T00:00:00Z", "last_seen_at": "2030-01-02T00:00:00Z"},
  "lease": {"token": "a.b.c", "expires_at": "2030-01-02T00:15:00Z"}
}`

func TestClientValidate(t *testing.T) {
	var got struct {
		Key, Fingerprint, Product string
	}
	srv := newFakeServer(t, func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost || r.URL.Path != "/v1/validate" {
			t.Errorf("request %s %s, want POST /v1/validate", r.Method, r.URL.Path)
		}
		if ct := r.Header.Get("Content-Type"); ct != "application/json" {
			t.Errorf("Content-Type %q, want application/json", ct)
		}
		if ua := r.Header.Get("User-Agent"); ua != "acme-app/1.0" {
			t.Errorf("User-Agent %q, want acme-app/1.0", ua)
		}
		if a := r.Header.Get("Authorization"); a != "" {
			t.Errorf("Authorization %q sent; the key is the credential", a)
		}
		dec := json.NewDecoder(r.Body)
		dec.DisallowUnknownFields()
		if err := dec.Decode(&got); err != nil {
			t.Errorf("request body: %v", err)
		}
		respond(w, http.StatusOK, "application/json", validationJSON)
	})
	c := sdk.NewClient(srv.URL + "/")
	c.UserAgent = "acme-app/1.0"
	v, err := c.Validate(context.Background(), typedKey, "fp-1", "acme-pro")
	if err != nil {
		t.Fatalf("Validate = %v", err)
	}
	if got.Key != testKey || got.Fingerprint != "fp-1" || got.Product != "acme-pro" {
		t.Errorf("server got %+v, want the canonical key, fp-1, acme-pro", got)
	}
	if !v.Valid || v.Code != keyward.CodeValid || v.License == nil || v.License.ID != "lic_1" ||
		v.License.ExpiresAt != nil || len(v.License.Entitlements) != 1 || v.License.MaxMachines != 3 {
		t.Errorf("Validate = %+v, license %+v", v, v.License)
	}
	if v.Machine == nil || v.Machine.Fingerprint != "fp-1" || !v.Machine.LastSeenAt.Equal(time.Date(2030, 1, 2, 0, 0, 0, 0, time.UTC)) {
		t.Errorf("Validate machine = %+v", v.Machine)
	}
	if v.Lease == nil || v.Lease.Token != "a.b.c" {
		t.Errorf("Validate lease = %+v", v.Lease)
	}
	if n := srv.requests.Load(); n != 1 {
		t.Errorf("server got %d requests, want 1", n)
	}
}

func TestClientValidateNotValid(t *testing.T) {
	srv := newFakeServer(t, func(w http.ResponseWriter, r *http.Request) {
		respond(w, http.StatusOK, "application/json", `{"valid":false,"code":"REVOKED","license":null}`)
	})
	v, err := sdk.NewClient(srv.URL).Validate(context.Background(), testKey, "", "")
	if err != nil || v.Valid || v.Code != keyward.CodeRevoked || v.License != nil {
		t.Errorf("Validate = %+v, %v; want a REVOKED result and no error", v, err)
	}
}

func TestClientTypoRefusedOffline(t *testing.T) {
	srv := newFakeServer(t, func(w http.ResponseWriter, r *http.Request) {
		respond(w, http.StatusOK, "application/json", validationJSON)
	})
	c := sdk.NewClient(srv.URL)
	for _, tt := range []struct {
		key  string
		want error
	}{
		{typoKey, licensekey.ErrChecksum},
		{"", licensekey.ErrFormat},
		{"KW1-DDJQJ", licensekey.ErrFormat},
		{"KW1-DDJQU-XV1E9-J20V3-9CDJP-WWV5T", licensekey.ErrFormat},
	} {
		if _, err := c.Validate(context.Background(), tt.key, "fp", ""); !errors.Is(err, tt.want) {
			t.Errorf("Validate(%q) = %v, want %v", tt.key, err, tt.want)
		} else if tt.key != "" && strings.Contains(err.Error(), tt.key) {
			t.Errorf("Validate(%q) error %q repeats the key", tt.key, err)
		}
		if _, err := c.Checkout(context.Background(), tt.key, ""); !errors.Is(err, tt.want) {
			t.Errorf("Checkout(%q) = %v, want %v", tt.key, err, tt.want)
		}
	}
	if n := srv.requests.Load(); n != 0 {
		t.Errorf("server got %d requests for malformed keys, want 0", n)
	}
}

func TestClientProblem(t *testing.T) {
	srv := newFakeServer(t, func(w http.ResponseWriter, r *http.Request) {
		respond(w, http.StatusConflict, "application/problem+json", `{
			"type": "https://keyward.dev/problems/LICENSE_INACTIVE", "title": "Conflict", "status": 409,
			"detail": "license is not valid: REVOKED", "code": "LICENSE_INACTIVE",
			"instance": "/v1/checkout", "request_id": "req_1"}`)
	})
	_, err := sdk.NewClient(srv.URL).Checkout(context.Background(), testKey, "acme-pro")
	var ae *sdk.APIError
	if !errors.As(err, &ae) {
		t.Fatalf("Checkout = %v (%T), want *sdk.APIError", err, err)
	}
	want := sdk.APIError{Status: 409, Code: "LICENSE_INACTIVE", Detail: "license is not valid: REVOKED", RequestID: "req_1"}
	if *ae != want {
		t.Errorf("Checkout error = %+v, want %+v", *ae, want)
	}
	if got, want := err.Error(), "keyward: LICENSE_INACTIVE: license is not valid: REVOKED"; got != want {
		t.Errorf("Error() = %q, want %q", got, want)
	}
}

func TestClientErrors(t *testing.T) {
	for _, tt := range []struct {
		name        string
		status      int
		contentType string
		body        string
		wantAPI     *sdk.APIError // nil: another error
		wantText    string
	}{
		{"NotProblem", http.StatusBadGateway, "text/html", "<html>bad gateway</html>", &sdk.APIError{Status: 502}, "keyward: HTTP 502: Bad Gateway"},
		{"ProblemWithoutCode", http.StatusTooManyRequests, "application/problem+json", `{"status":429}`, &sdk.APIError{Status: 429}, "keyward: HTTP 429: Too Many Requests"},
		{"BadJSON", http.StatusOK, "application/json", `{"valid":`, nil, "keyward: validate: decode response"},
		{"TrailingData", http.StatusOK, "application/json", `{"valid":true}{}`, nil, "keyward: validate: decode response"},
		{"TooLarge", http.StatusOK, "application/json", `{"code":"` + strings.Repeat("x", sdk.MaxResponseSize) + `"}`, nil, "keyward: validate: response larger"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			srv := newFakeServer(t, func(w http.ResponseWriter, r *http.Request) {
				respond(w, tt.status, tt.contentType, tt.body)
			})
			_, err := sdk.NewClient(srv.URL).Validate(context.Background(), testKey, "", "")
			if err == nil {
				t.Fatalf("Validate = nil error")
			}
			var ae *sdk.APIError
			if tt.wantAPI != nil && (!errors.As(err, &ae) || *ae != *tt.wantAPI) {
				t.Errorf("Validate = %#v, want %+v", err, tt.wantAPI)
			}
			if tt.wantAPI == nil && errors.As(err, &ae) {
				t.Errorf("Validate = %v, an *APIError; want another error", err)
			}
			if !strings.HasPrefix(err.Error(), tt.wantText) {
				t.Errorf("Validate error %q, want prefix %q", err, tt.wantText)
			}
		})
	}

	t.Run("Unreachable", func(t *testing.T) {
		srv := newFakeServer(t, nil)
		srv.Close()
		if _, err := sdk.NewClient(srv.URL).Validate(context.Background(), testKey, "", ""); err == nil {
			t.Errorf("Validate against a closed server succeeded")
		}
	})
	t.Run("NoBaseURL", func(t *testing.T) {
		if _, err := (&sdk.Client{}).Validate(context.Background(), testKey, "", ""); err == nil {
			t.Errorf("Validate without BaseURL succeeded")
		}
	})
	t.Run("Canceled", func(t *testing.T) {
		srv := newFakeServer(t, func(w http.ResponseWriter, r *http.Request) {
			respond(w, http.StatusOK, "application/json", validationJSON)
		})
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		if _, err := sdk.NewClient(srv.URL).Validate(ctx, testKey, "", ""); !errors.Is(err, context.Canceled) {
			t.Errorf("Validate(canceled ctx) = %v, want context.Canceled", err)
		}
	})
}

func TestClientCheckoutAndJWKS(t *testing.T) {
	k := mustKey(t, keys.Ed25519, 40)
	set := keys.JWKS{Keys: []keys.JWK{jwk(k, "active")}}
	cert := mustSign(t, k, keyward.TypCertificate, certClaims())
	var checkout struct{ Key, Product string }
	srv := newFakeServer(t, func(w http.ResponseWriter, r *http.Request) {
		switch r.Method + " " + r.URL.Path {
		case "POST /v1/checkout":
			if err := json.NewDecoder(r.Body).Decode(&checkout); err != nil {
				t.Errorf("checkout body: %v", err)
			}
			respond(w, http.StatusOK, "application/json",
				`{"certificate":"`+cert+`","kid":"`+k.KID()+`","expires_at":"2030-02-01T03:04:05Z"}`)
		case "GET /.well-known/jwks.json":
			respond(w, http.StatusOK, "application/jwk-set+json", string(mustJSON(t, set)))
		default:
			http.NotFound(w, r)
		}
	})
	c := sdk.NewClient(srv.URL)
	ctx := context.Background()
	got, err := c.Checkout(ctx, testKey, "acme-pro")
	if err != nil {
		t.Fatalf("Checkout = %v", err)
	}
	if checkout.Key != testKey || checkout.Product != "acme-pro" {
		t.Errorf("server got %+v", checkout)
	}
	if got.Certificate != cert || got.KID != k.KID() || !got.ExpiresAt.Equal(time.Date(2030, 2, 1, 3, 4, 5, 0, time.UTC)) {
		t.Errorf("Checkout = %+v", got)
	}
	bundle, err := c.JWKS(ctx)
	if err != nil {
		t.Fatalf("JWKS = %v", err)
	}
	// The fetched bundle verifies the checked-out certificate.
	v := mustVerifier(t, sdk.Options{Audience: testProduct}, bundle.Keys...)
	if _, err := v.VerifyCertificate(got.Certificate); err != nil {
		t.Errorf("VerifyCertificate(checked out) = %v", err)
	}
}

func TestClientJWKSRefusesBadBundle(t *testing.T) {
	srv := newFakeServer(t, func(w http.ResponseWriter, r *http.Request) {
		respond(w, http.StatusOK, "application/json", `{"keys":[{"kty":"OKP","crv":"Ed25519","x":"AAAA","d":"AAAA"}]}`)
	})
	if _, err := sdk.NewClient(srv.URL).JWKS(context.Background()); err == nil || !strings.HasPrefix(err.Error(), "keyward: jwks: ") {
		t.Errorf("JWKS(bundle with a private member) = %v, want a keyward: jwks: error", err)
	}
}

func TestNewClient(t *testing.T) {
	c := sdk.NewClient("https://licenses.example.com")
	if c.BaseURL != "https://licenses.example.com" || c.HTTP == nil || c.HTTP.Timeout != sdk.DefaultTimeout || c.UserAgent == "" {
		t.Errorf("NewClient = %+v", c)
	}
}
