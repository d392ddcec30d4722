package api_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/keyward/keyward"
	"github.com/keyward/keyward/api"
	"github.com/keyward/keyward/authority"
	"github.com/keyward/keyward/keys"
	"github.com/keyward/keyward/store"
	"github.com/keyward/keyward/store/sqlite"
)

type env struct {
	srv   *httptest.Server
	api   *api.Server
	auth  *authority.Authority
	st    store.Store
	token string
	ring  *keys.KEKRing
}

func newEnv(t *testing.T) *env { return newEnvTB(t) }

func newEnvTB(t testing.TB) *env {
	t.Helper()
	ctx := context.Background()
	st, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "k.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	kek, _ := keys.GenerateKEK(nil)
	ring := keys.NewKEKRing(kek)
	a, err := authority.New(ctx, authority.Config{Store: st, KEKs: ring})
	if err != nil {
		t.Fatal(err)
	}
	sys := keyward.NewContextWithPrincipal(ctx, keyward.Principal{ID: "system"})
	_, tok, err := a.CreateToken(sys, authority.TokenRequest{Name: "admin", Roles: []string{keyward.RoleAdmin}})
	if err != nil {
		t.Fatal(err)
	}
	s := api.New(api.Config{Authority: a})
	srv := httptest.NewServer(s)
	t.Cleanup(srv.Close)
	return &env{srv: srv, api: s, auth: a, st: st, token: tok, ring: ring}
}

type resp struct {
	status int
	header http.Header
	body   []byte
}

func (e *env) do(t *testing.T, method, path, ctype, body string, auth bool) resp {
	return e.doTB(t, method, path, ctype, body, auth)
}

func (e *env) doTB(t testing.TB, method, path, ctype, body string, auth bool) resp {
	t.Helper()
	req, err := http.NewRequest(method, e.srv.URL+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if ctype != "" {
		req.Header.Set("Content-Type", ctype)
	}
	if auth {
		req.Header.Set("Authorization", "Bearer "+e.token)
	}
	r, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Body.Close()
	b, _ := io.ReadAll(r.Body)
	return resp{r.StatusCode, r.Header, b}
}

func (e *env) json(t *testing.T, method, path, body string, out any) resp {
	return e.jsonTB(t, method, path, body, out)
}

func (e *env) jsonTB(t testing.TB, method, path, body string, out any) resp {
	t.Helper()
	r := e.doTB(t, method, path, "application/json", body, true)
	if out != nil && r.status < 300 {
		if err := json.Unmarshal(r.body, out); err != nil {
			t.Fatalf("%s %s: decode %s: %v", method, path, r.body, err)
		}
	}
	return r
}

func problem(t *testing.T, r resp) api.Problem {
	t.Helper()
	if ct := r.header.Get("Content-Type"); ct != "application/problem+json" {
		t.Fatalf("Content-Type = %q, want application/problem+json (status %d, body %s)", ct, r.status, r.body)
	}
	var p api.Problem
	if err := json.Unmarshal(r.body, &p); err != nil {
		t.Fatal(err)
	}
	if p.Status != r.status || p.Code == "" || p.Detail == "" {
		t.Fatalf("problem %+v does not match status %d", p, r.status)
	}
	return p
}

// TestOpenAPIMatchesRoutes keeps /v1/openapi.json true: every registered
// route is documented and every documented operation is registered.
func TestOpenAPIMatchesRoutes(t *testing.T) {
	e := newEnv(t)
	r := e.do(t, "GET", "/v1/openapi.json", "", "", false)
	var doc struct {
		OpenAPI string                                `json:"openapi"`
		Paths   map[string]map[string]json.RawMessage `json:"paths"`
	}
	if err := json.Unmarshal(r.body, &doc); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(doc.OpenAPI, "3.1") {
		t.Errorf("openapi = %q, want 3.1.x", doc.OpenAPI)
	}
	var documented []string
	for path, ops := range doc.Paths {
		for m := range ops {
			documented = append(documented, strings.ToUpper(m)+" "+path)
		}
	}
	registered := e.api.Routes()
	sort.Strings(documented)
	sort.Strings(registered)
	for _, r := range registered {
		if !slices.Contains(documented, r) {
			t.Errorf("route %s is not in openapi.json", r)
		}
	}
	for _, d := range documented {
		if !slices.Contains(registered, d) {
			t.Errorf("openapi.json documents %s, which the server does not register", d)
		}
	}
}

func TestBadInput(t *testing.T) {
	e := newEnv(t)
	var p api.Product
	if r := e.json(t, "POST", "/v1/products", `{"name":"acme"}`, &p); r.status != 201 {
		t.Fatalf("create product: %d %s", r.status, r.body)
	}
	cases := []struct {
		name, method, path, ctype, body string
		auth                            bool
		status                          int
		code                            string
	}{
		{"MalformedJSON", "POST", "/v1/licenses", "application/json", `{"product":`, true, 400, keyward.EMalformed},
		{"SyntaxError", "POST", "/v1/licenses", "application/json", `{product:1}`, true, 400, keyward.EMalformed},
		{"UnknownField", "POST", "/v1/licenses", "application/json", `{"product":"acme","holder":"c","color":"red"}`, true, 400, keyward.EMalformed},
		{"WrongType", "POST", "/v1/licenses", "application/json", `{"product":"acme","holder":7}`, true, 400, keyward.EMalformed},
		{"TrailingData", "POST", "/v1/licenses", "application/json", `{"product":"acme","holder":"c"} {}`, true, 400, keyward.EMalformed},
		{"EmptyBody", "POST", "/v1/licenses", "application/json", ``, true, 400, keyward.EMalformed},
		{"Oversized", "POST", "/v1/licenses", "application/json", `{"product":"acme","holder":"` + strings.Repeat("x", api.MaxBodyBytes) + `"}`, true, 413, keyward.ETooLarge},
		{"WrongContentType", "POST", "/v1/licenses", "text/plain", `{"product":"acme","holder":"c"}`, true, 415, keyward.EUnsupportedMedia},
		{"UnknownProduct", "POST", "/v1/licenses", "application/json", `{"product":"nope","holder":"c"}`, true, 404, keyward.ENotFound},
		{"BadHolder", "POST", "/v1/licenses", "application/json", `{"product":"acme","holder":""}`, true, 400, keyward.EInvalid},
		{"BadExpiry", "POST", "/v1/licenses", "application/json", `{"product":"acme","holder":"c","expires_at":"tomorrow"}`, true, 400, keyward.EMalformed},
		{"NoToken", "POST", "/v1/licenses", "application/json", `{"product":"acme","holder":"c"}`, false, 401, keyward.EUnauthenticated},
		// POST /v1/validate decodes its body by hand (api/fastjson.go) and
		// must refuse what decode refuses, with the same codes.
		{"ValidateMalformed", "POST", "/v1/validate", "application/json", `{"key":`, false, 400, keyward.EMalformed},
		{"ValidateUnknownField", "POST", "/v1/validate", "application/json", `{"key":"k","color":"red"}`, false, 400, keyward.EMalformed},
		{"ValidateWrongType", "POST", "/v1/validate", "application/json", `{"key":7}`, false, 400, keyward.EMalformed},
		{"ValidateTrailingData", "POST", "/v1/validate", "application/json", `{"key":"k"} {}`, false, 400, keyward.EMalformed},
		{"ValidateEmptyBody", "POST", "/v1/validate", "application/json", ``, false, 400, keyward.EMalformed},
		{"ValidateOversized", "POST", "/v1/validate", "application/json", `{"key":"` + strings.Repeat("x", api.MaxBodyBytes) + `"}`, false, 413, keyward.ETooLarge},
		{"ValidateWrongContentType", "POST", "/v1/validate", "text/plain", `{"key":"k"}`, false, 415, keyward.EUnsupportedMedia},
		{"KeyWrongShape", "POST", "/v1/validate", "application/json", `{"key":"KW1-ABC"}`, false, 400, keyward.EInvalidLicenseKey},
		{"KeyTypo", "POST", "/v1/validate", "application/json", `{"key":"KW1-00000-00000-00000-00000-00009"}`, false, 400, keyward.EInvalidLicenseKey},
		{"KeyMissing", "POST", "/v1/validate", "application/json", `{}`, false, 400, keyward.EInvalid},
		{"DuplicateProduct", "POST", "/v1/products", "application/json", `{"name":"acme"}`, true, 409, keyward.EConflict},
		{"BadProductName", "POST", "/v1/products", "application/json", `{"name":"Acme Pro"}`, true, 400, keyward.EInvalid},
		{"UnknownKey", "POST", "/v1/keys/nope/activate", "", ``, true, 404, keyward.ENotFound},
		{"UnknownRoute", "GET", "/v1/nothing", "", ``, true, 404, keyward.ENotFound},
		{"WrongMethod", "DELETE", "/v1/licenses", "", ``, true, 405, keyward.EMethodNotAllowed},
		{"BadLimit", "GET", "/v1/licenses?limit=0", "", ``, true, 400, keyward.EInvalid},
		{"BadGrace", "POST", "/v1/licenses/lic_x/reissue", "application/json", `{"grace":"soon"}`, true, 400, keyward.EInvalid},
		{"BadState", "GET", "/v1/licenses?state=zombie", "", ``, true, 400, keyward.EInvalid},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			before := auditCount(t, e.st)
			r := e.do(t, c.method, c.path, c.ctype, c.body, c.auth)
			if r.status != c.status {
				t.Fatalf("status = %d, want %d (%s)", r.status, c.status, r.body)
			}
			if p := problem(t, r); p.Code != c.code {
				t.Errorf("code = %s, want %s (%s)", p.Code, c.code, p.Detail)
			}
			if after := auditCount(t, e.st); after != before {
				t.Errorf("refused request wrote %d audit entries", after-before)
			}
		})
	}
}

func auditCount(t *testing.T, st store.Store) int {
	t.Helper()
	var n int
	err := st.View(context.Background(), func(tx store.Tx) error {
		es, err := tx.AuditEntries(store.AuditFilter{})
		n = len(es)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func TestIllegalTransitionsOverHTTP(t *testing.T) {
	e := newDevEnv(t) // one admin revokes and destroys directly: no approvals, second factor or duties
	e.json(t, "POST", "/v1/products", `{"name":"acme"}`, nil)
	var l api.IssuedLicense
	if r := e.json(t, "POST", "/v1/licenses", `{"product":"acme","holder":"c"}`, &l); r.status != 201 {
		t.Fatalf("issue: %d %s", r.status, r.body)
	}
	if r := e.json(t, "POST", "/v1/licenses/"+l.ID+"/revoke", `{"reason":"abuse"}`, nil); r.status != 200 {
		t.Fatalf("revoke: %d %s", r.status, r.body)
	}
	r := e.json(t, "POST", "/v1/licenses/"+l.ID+"/reinstate", `{}`, nil)
	if p := problem(t, r); r.status != 409 || p.Code != keyward.EIllegalTransition {
		t.Errorf("reinstate revoked: %d %s", r.status, p.Code)
	}
	var keysResp struct{ Keys []api.Key }
	e.json(t, "GET", "/v1/keys?product=acme&state=active", "", &keysResp)
	if len(keysResp.Keys) != 1 {
		t.Fatalf("active keys: %d", len(keysResp.Keys))
	}
	kid := keysResp.Keys[0].KID
	e.json(t, "POST", "/v1/products/acme/keys", `{}`, nil) // rotate: kid is now retired
	e.json(t, "POST", "/v1/keys/"+kid+"/destroy", `{}`, nil)
	r = e.json(t, "POST", "/v1/keys/"+kid+"/activate", `{}`, nil)
	if p := problem(t, r); r.status != 409 || p.Code != keyward.EIllegalTransition {
		t.Errorf("activate destroyed key: %d %s", r.status, p.Code)
	}
}

// TestResponsesNeverCarrySecrets issues and checks out, then looks for the
// sealed key material and the license key in later responses.
func TestResponsesNeverCarrySecrets(t *testing.T) {
	e := newEnv(t)
	e.json(t, "POST", "/v1/products", `{"name":"acme"}`, nil)
	var l api.IssuedLicense
	e.json(t, "POST", "/v1/licenses", `{"product":"acme","holder":"c","max_machines":0}`, &l)
	var all bytes.Buffer
	all.Write(e.do(t, "POST", "/v1/licenses/"+l.ID+"/checkout", "", "", true).body)
	all.Write(e.do(t, "POST", "/v1/validate", "application/json", `{"key":"`+l.Key+`","fingerprint":"m"}`, false).body)
	for _, p := range []string{"/v1/licenses/" + l.ID, "/v1/licenses", "/v1/keys", "/.well-known/jwks.json", "/v1/audit", "/v1/openapi.json", "/metrics"} {
		all.Write(e.do(t, "GET", p, "", "", true).body)
	}
	// Every private key's bytes, in every usual encoding, appear nowhere.
	err := e.st.View(context.Background(), func(tx store.Tx) error {
		ks, err := tx.Keys(store.KeyFilter{})
		if err != nil {
			return err
		}
		for _, k := range ks {
			der, err := e.ring.Open(k.Sealed, []byte("kid:"+k.KID))
			if err != nil {
				return err
			}
			seed := der[len(der)-32:] // Ed25519 PKCS#8 ends with the seed
			for _, enc := range []string{string(seed), base64.RawURLEncoding.EncodeToString(seed), base64.StdEncoding.EncodeToString(seed), hex.EncodeToString(seed), base64.StdEncoding.EncodeToString(der)} {
				if bytes.Contains(all.Bytes(), []byte(enc)) {
					t.Errorf("a response carries private key %s", k.KID)
				}
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(all.Bytes(), []byte(l.Key)) || bytes.Contains(all.Bytes(), []byte(strings.ReplaceAll(l.Key, "-", ""))) {
		t.Errorf("a response after issue carries the license key")
	}
	for _, bad := range []string{`"d"`, "sealed", "PRIVATE"} {
		if bytes.Contains(all.Bytes(), []byte(bad)) {
			t.Errorf("responses mention %s", bad)
		}
	}
}

func TestMetrics(t *testing.T) {
	e := newEnv(t)
	e.json(t, "POST", "/v1/products", `{"name":"acme"}`, nil)
	var l api.IssuedLicense
	e.json(t, "POST", "/v1/licenses", `{"product":"acme","holder":"c","max_machines":0}`, &l)
	e.do(t, "POST", "/v1/validate", "application/json", `{"key":"`+l.Key+`"}`, false)
	e.do(t, "POST", "/v1/validate", "application/json", `{"key":"KW1-00000-00000-00000-00000-00008"}`, false)
	r := e.do(t, "GET", "/metrics", "", "", false)
	for _, want := range []string{
		`keyward_validations_total{code="VALID"} 1`,
		`keyward_validations_total{code="NOT_FOUND"} 1`,
		`keyward_http_requests_total{code="201",route="/v1/licenses"} 1`,
		`keyward_http_request_duration_seconds_count{route="/v1/validate"} 2`,
		`keyward_key_rotation_due_seconds{ring="registry"}`,
		`keyward_active_key_age_seconds{ring="license:`,
		`process_resident_memory_bytes`,
	} {
		if !bytes.Contains(r.body, []byte(want)) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
}
