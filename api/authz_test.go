package api_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/keyward/keyward"
	"github.com/keyward/keyward/api"
	"github.com/keyward/keyward/authority"
	"github.com/keyward/keyward/keys"
	"github.com/keyward/keyward/store"
	"github.com/keyward/keyward/store/sqlite"
)

// testClock is a settable clock.
type testClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *testClock) Now() time.Time          { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *testClock) Advance(d time.Duration) { c.mu.Lock(); c.t = c.t.Add(d); c.mu.Unlock() }

// fixedPolicies serves one policy for every product.
type fixedPolicies struct{ p *keyward.Policy }

func (s fixedPolicies) Policy(context.Context, string) (*keyward.Policy, error) {
	p := *s.p
	return &p, nil
}

// newEnvWith is newEnv with the authority's configuration adjusted by fn.
func newEnvWith(t *testing.T, fn func(*authority.Config)) *env {
	t.Helper()
	ctx := context.Background()
	st, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "k.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	kek, _ := keys.GenerateKEK(nil)
	cfg := authority.Config{Store: st, KEKs: keys.NewKEKRing(kek)}
	fn(&cfg)
	a, err := authority.New(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	_, tok, err := a.CreateToken(sysCtx(), authority.TokenRequest{Name: "admin", Roles: []string{keyward.RoleAdmin}})
	if err != nil {
		t.Fatal(err)
	}
	s := api.New(api.Config{Authority: a})
	srv := httptest.NewServer(s)
	t.Cleanup(srv.Close)
	return &env{srv: srv, api: s, auth: a, st: st, token: tok}
}

// newDevEnv is newEnv on a --dev authority: no approvals, second factor
// or separation of duties under the built-in policy.
func newDevEnv(t *testing.T) *env {
	return newEnvWith(t, func(c *authority.Config) { c.Dev = true })
}

func sysCtx() context.Context {
	return keyward.NewContextWithPrincipal(context.Background(), keyward.Principal{ID: "system", Name: "test"})
}

// mint creates a token through the authority (as the server itself).
func (e *env) mint(t *testing.T, name, product string, roles ...string) string {
	t.Helper()
	_, tok, err := e.auth.CreateToken(sysCtx(), authority.TokenRequest{Name: name, Roles: roles, Product: product, TTL: 24 * time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// call sends a request with a bearer token and optional OTP.
func (e *env) call(t *testing.T, token, otp, method, path, body string) resp {
	t.Helper()
	req, err := http.NewRequest(method, e.srv.URL+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Authorization", "Bearer "+token)
	if otp != "" {
		req.Header.Set(api.OTPHeader, otp)
	}
	c := &http.Client{Timeout: 10 * time.Second}
	r, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer r.Body.Close()
	b, err := io.ReadAll(r.Body)
	if err != nil {
		t.Fatalf("%s %s: read: %v", method, path, err)
	}
	return resp{r.StatusCode, r.Header, b}
}

func code(t *testing.T, r resp) string {
	t.Helper()
	if r.status < 400 {
		return ""
	}
	var p api.Problem
	if err := json.Unmarshal(r.body, &p); err != nil {
		t.Fatalf("status %d, body %s: not a problem", r.status, r.body)
	}
	return p.Code
}

// publicPrefixes are where routes without a token may live (spec 4: the
// key itself is the credential for validation and check-out; JWKS,
// revocations and status are public). A new public route elsewhere fails
// TestRouteTableComplete: make it need a permission or add it here on
// purpose.
var publicPrefixes = []string{"/healthz", "/readyz", "/metrics", "/.well-known/", "/v1/openapi.json", "/v1/validate", "/v1/checkout", "/v1/revocations", "/v1/status/", "/v1/leases"}

// TestRouteTableComplete: every route has a permission the role table
// knows, or is public on purpose.
func TestRouteTableComplete(t *testing.T) {
	e := newEnv(t)
	scopes := e.api.RouteScopes()
	if len(scopes) != len(e.api.Routes()) {
		t.Fatalf("%d scopes for %d routes", len(scopes), len(e.api.Routes()))
	}
	for _, rt := range e.api.Routes() {
		sc, ok := scopes[rt]
		if !ok {
			t.Errorf("route %s has no entry in the scope table", rt)
			continue
		}
		perm := sc[1]
		path := strings.SplitN(rt, " ", 2)[1]
		switch {
		case perm == "":
			if !slices.ContainsFunc(publicPrefixes, func(p string) bool { return strings.HasPrefix(path, p) }) {
				t.Errorf("route %s is public (no permission) outside the public endpoints of spec 4", rt)
			}
		case !slices.Contains(authority.Permissions(), perm):
			t.Errorf("route %s needs %q, which no role table entry knows", rt, perm)
		}
	}
}

// fixture holds the objects the authorization test addresses.
type authzFixture struct {
	license, license2, kid, approval, token string // in product acme
	otherLicense, otherKID, otherApproval   string // in product other
	acmeID, otherID                         string
}

func setupAuthz(t *testing.T, e *env) authzFixture {
	t.Helper()
	var f authzFixture
	sys := sysCtx()
	revoker := keyward.NewContextWithPrincipal(context.Background(), keyward.Principal{ID: "tok_rev", Name: "rev", Roles: []string{keyward.RoleRevoker}})
	for _, name := range []string{"acme", "other"} {
		p, err := e.auth.CreateProduct(sys, name)
		if err != nil {
			t.Fatal(err)
		}
		l, err := e.auth.IssueLicense(sys, authority.IssueRequest{Product: name, Holder: "h"})
		if err != nil {
			t.Fatal(err)
		}
		l2, err := e.auth.IssueLicense(sys, authority.IssueRequest{Product: name, Holder: "h2"})
		if err != nil {
			t.Fatal(err)
		}
		_, ap, err := e.auth.RevokeLicense(revoker, l2.License.ID, "abuse")
		if err != nil || ap == nil {
			t.Fatalf("RevokeLicense = %v, %v", ap, err)
		}
		ks, err := e.auth.Keys(context.Background(), store.KeyFilter{ProductID: p.ID})
		if err != nil {
			t.Fatal(err)
		}
		if name == "acme" {
			f.acmeID, f.license, f.license2, f.kid, f.approval = p.ID, l.License.ID, l2.License.ID, ks[0].KID, ap.ID
		} else {
			f.otherID, f.otherLicense, f.otherKID, f.otherApproval = p.ID, l.License.ID, ks[0].KID, ap.ID
		}
	}
	tok, _, err := e.auth.CreateToken(sys, authority.TokenRequest{Name: "victim", Roles: []string{keyward.RoleSupport}, TTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	f.token = tok.ID
	return f
}

var pathParam = regexp.MustCompile(`\{[a-z]+\}`)

// fill makes a concrete request path and body for a route pattern,
// addressing the fixture's objects of product acme.
func (f authzFixture) fill(method, pattern string) (string, string) {
	path := pathParam.ReplaceAllStringFunc(pattern, func(p string) string {
		switch p {
		case "{product}":
			return "acme"
		case "{kid}":
			return f.kid
		case "{machine}":
			return "mch_missing"
		case "{version}":
			return "1"
		case "{principal}":
			return "nobody"
		case "{id}":
			switch {
			case strings.HasPrefix(pattern, "/v1/licenses/"):
				return f.license
			case strings.HasPrefix(pattern, "/v1/approvals/"):
				return f.approval
			case strings.HasPrefix(pattern, "/v1/tokens/"):
				return f.token
			}
		}
		return "missing"
	})
	body := ""
	switch {
	case method == "POST" && pattern == "/v1/licenses":
		body = `{"product":"acme","holder":"h"}`
	case method == "POST" && pattern == "/v1/licenses:batch":
		body = `{"product":"acme","holder":"h","count":1}`
	case method == "POST":
		body = `{}`
	}
	return path, body
}

// TestAuthorizationTable calls every authenticated route with a token of
// every role and checks allow/deny against the role table; then with a
// token limited to another product, which must neither see nor touch
// product acme.
func TestAuthorizationTable(t *testing.T) {
	// Approvals on (so approval routes have requests to address); no
	// second factor or duties, so an allowed call is never refused for them.
	pol := keyward.DefaultPolicy()
	pol.MFA, pol.Duties = nil, nil
	e := newEnvWith(t, func(c *authority.Config) { c.Policies = fixedPolicies{pol} })
	f := setupAuthz(t, e)
	scopes := e.api.RouteScopes()

	for _, role := range keyward.AllRoles() {
		tok := e.mint(t, "user-"+role, "", role)
		p := keyward.Principal{ID: "tok_x", Roles: []string{role}}
		for _, rt := range e.api.Routes() {
			perm := scopes[rt][1]
			if perm == "" {
				continue
			}
			method, pattern, _ := strings.Cut(rt, " ")
			path, body := f.fill(method, pattern)
			r := e.call(t, tok, "", method, path, body)
			denied := r.status == http.StatusForbidden && code(t, r) == keyward.EForbidden
			if allowed := authority.Allowed(p, perm, ""); allowed == denied || r.status == http.StatusUnauthorized {
				t.Errorf("%s %s as %s: %d %s; the table says allowed=%v", method, path, role, r.status, r.body, allowed)
			}
		}
	}

	// A token limited to product "other", with the admin role so that only
	// the scope can refuse: nothing of acme is reachable, nothing changes.
	scoped := e.mint(t, "scoped-admin", "other", keyward.RoleAdmin)
	before := changes(t, e.st)
	for _, rt := range e.api.Routes() {
		kind, perm := scopes[rt][0], scopes[rt][1]
		if perm == "" {
			continue
		}
		if kind == "self" { // about the caller only (its second factor): below
			continue
		}
		method, pattern, _ := strings.Cut(rt, " ")
		path, body := f.fill(method, pattern)
		r := e.call(t, scoped, "", method, path, body)
		c := code(t, r)
		switch kind {
		case "list":
			if r.status != http.StatusOK || strings.Contains(string(r.body), f.acmeID) || strings.Contains(string(r.body), f.license) {
				t.Errorf("%s as a token of another product: %d, body names acme's objects: %s", rt, r.status, r.body)
			}
		case "server-wide":
			if r.status != http.StatusForbidden || c != keyward.EForbidden {
				t.Errorf("server-wide %s as a scoped token: %d %s, want 403 FORBIDDEN", rt, r.status, r.body)
			}
		default: // product, license, key, approval, body: as if acme's object did not exist
			if r.status != http.StatusNotFound || c != keyward.ENotFound {
				t.Errorf("%s on acme as a token of product other: %d %s, want 404 NOT_FOUND", rt, r.status, r.body)
			}
		}
	}
	if after := changes(t, e.st); after != before {
		t.Errorf("a token of another product changed %d things", after-before)
	}
	// Its own product and its own second factor stay reachable.
	for _, c := range []struct{ method, path, body string }{
		{"POST", "/v1/mfa/enroll", ""},
		{"GET", "/v1/licenses/" + f.otherLicense, ""},
		{"GET", "/v1/keys/" + f.otherKID, ""},
		{"GET", "/v1/approvals/" + f.otherApproval, ""},
		{"GET", "/v1/products/other", ""},
		{"POST", "/v1/licenses", `{"product":"other","holder":"h"}`},
	} {
		if r := e.call(t, scoped, "", c.method, c.path, c.body); r.status >= 400 {
			t.Errorf("%s %s in scope: %d %s", c.method, c.path, r.status, r.body)
		}
	}
	var ls struct{ Licenses []api.License }
	if r := e.call(t, scoped, "", "GET", "/v1/licenses", ""); json.Unmarshal(r.body, &ls) != nil || len(ls.Licenses) != 3 {
		t.Errorf("scoped license list: %s", r.body)
	}
	if r := e.call(t, scoped, "", "GET", "/v1/licenses?product=acme", ""); r.status != http.StatusNotFound {
		t.Errorf("scoped list of acme: %d, want 404", r.status)
	}
}

// changes counts audit entries other than refusals: every change writes one.
func changes(t *testing.T, st store.Store) int {
	t.Helper()
	n := 0
	err := st.View(context.Background(), func(tx store.Tx) error {
		es, err := tx.AuditEntries(store.AuditFilter{})
		for _, e := range es {
			if e.Action != "access.deny" {
				n++
			}
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func TestRefusalsAudited(t *testing.T) {
	e := newEnv(t)
	sup := e.mint(t, "sam", "", keyward.RoleSupport)
	r := e.call(t, sup, "", "POST", "/v1/products", `{"name":"x"}`)
	if r.status != http.StatusForbidden {
		t.Fatalf("support creating a product: %d", r.status)
	}
	var found bool
	err := e.st.View(context.Background(), func(tx store.Tx) error {
		es, err := tx.AuditEntries(store.AuditFilter{Action: "access.deny"})
		for _, en := range es {
			if en.ActorName == "sam" && strings.Contains(en.Reason, "FORBIDDEN") && strings.Contains(string(en.Details), authority.PermProductCreate) {
				found = true
			}
		}
		return err
	})
	if err != nil || !found {
		t.Errorf("the refusal is not audited (%v)", err)
	}
}

func TestGovernanceOverHTTP(t *testing.T) {
	clk := &testClock{t: time.Date(2027, 1, 5, 10, 0, 0, 0, time.UTC)}
	e := newEnvWith(t, func(c *authority.Config) { c.Clock = clk })
	e.json(t, "POST", "/v1/products", `{"name":"acme"}`, nil)
	issuer := e.mint(t, "ivan", "", keyward.RoleIssuer)
	revoker := e.mint(t, "rita", "", keyward.RoleRevoker)
	approver := e.mint(t, "abe", "", keyward.RoleApprover)
	var l1, l2 api.IssuedLicense
	json.Unmarshal(e.call(t, issuer, "", "POST", "/v1/licenses", `{"product":"acme","holder":"a"}`).body, &l1)
	json.Unmarshal(e.call(t, issuer, "", "POST", "/v1/licenses", `{"product":"acme","holder":"b"}`).body, &l2)

	// The built-in policy lists license.revoke under mfa.
	r := e.call(t, revoker, "", "POST", "/v1/licenses/"+l1.ID+"/revoke", `{"reason":"abuse"}`)
	if r.status != 401 || code(t, r) != keyward.EMFARequired {
		t.Fatalf("revoke without enrollment: %d %s", r.status, r.body)
	}
	var m api.MFAEnrollment
	if r := e.call(t, revoker, "", "POST", "/v1/mfa/enroll", ""); r.status != 201 || json.Unmarshal(r.body, &m) != nil || m.Digits != 6 || m.Period != 30 {
		t.Fatalf("enroll: %d %s", r.status, r.body)
	}
	if cc := r.header.Get("Cache-Control"); cc != "no-store" {
		t.Errorf("enroll Cache-Control = %q", cc)
	}
	secret, _ := authority.DecodeTOTPSecret(m.Secret)
	otp := func() string { return authority.TOTP(secret, clk.Now(), 6) }
	r = e.call(t, revoker, "", "POST", "/v1/licenses/"+l1.ID+"/revoke", `{"reason":"abuse"}`)
	if r.status != 401 || code(t, r) != keyward.EMFARequired {
		t.Fatalf("revoke without a code: %d %s", r.status, r.body)
	}
	// With a code: 202, suspended, an approval request.
	var pending api.PendingLicense
	r = e.call(t, revoker, otp(), "POST", "/v1/licenses/"+l1.ID+"/revoke", `{"reason":"abuse"}`)
	if r.status != 202 || json.Unmarshal(r.body, &pending) != nil || pending.State != "suspended" || pending.Approval == nil ||
		pending.Approval.State != "pending" || pending.Approval.RequestedBy != "rita" {
		t.Fatalf("revoke: %d %s", r.status, r.body)
	}
	// The same code again is a replay.
	r = e.call(t, revoker, otp(), "POST", "/v1/licenses/"+l2.ID+"/revoke", `{"reason":"abuse"}`)
	if r.status != 401 || code(t, r) != keyward.EMFAInvalid {
		t.Fatalf("replayed code: %d %s", r.status, r.body)
	}

	// approval list -o json is an array of objects with id, action, target,
	// requested_by, state.
	var list struct{ Approvals []map[string]any }
	json.Unmarshal(e.call(t, approver, "", "GET", "/v1/approvals?state=pending", "").body, &list)
	if len(list.Approvals) != 1 {
		t.Fatalf("approvals: %+v", list)
	}
	for _, k := range []string{"id", "action", "target", "requested_by", "state"} {
		if _, ok := list.Approvals[0][k]; !ok {
			t.Errorf("approval lacks %q: %v", k, list.Approvals[0])
		}
	}
	id := pending.Approval.ID
	// The requester cannot grant (it lacks approval.grant anyway); an
	// admin who is the requester's principal neither.
	if r := e.call(t, revoker, "", "POST", "/v1/approvals/"+id+"/grant", `{}`); r.status != 403 {
		t.Errorf("revoker grants: %d", r.status)
	}
	ritaAdmin := e.mint(t, "rita", "", keyward.RoleAdmin)
	if r := e.call(t, ritaAdmin, "", "POST", "/v1/approvals/"+id+"/grant", `{}`); r.status != 403 || code(t, r) != keyward.EDutyConflict {
		t.Errorf("requester's other token grants: %d %s", r.status, r.body)
	}
	var granted api.Approval
	if r := e.call(t, approver, "", "POST", "/v1/approvals/"+id+"/grant", `{"comment":"ok"}`); r.status != 200 || json.Unmarshal(r.body, &granted) != nil || granted.State != "granted" {
		t.Fatalf("grant: %d %s", r.status, r.body)
	}
	var shown api.License
	json.Unmarshal(e.call(t, issuer, "", "GET", "/v1/licenses/"+l1.ID, "").body, &shown)
	if shown.State != "revoked" {
		t.Errorf("after the grant the license is %s", shown.State)
	}
	if r := e.call(t, approver, "", "POST", "/v1/approvals/"+id+"/deny", `{"reason":"late"}`); r.status != 409 || code(t, r) != keyward.EIllegalTransition {
		t.Errorf("deny after grant: %d %s", r.status, r.body)
	}
	if r := e.call(t, approver, "", "POST", "/v1/approvals/"+id+"/deny", `{"color":"red"}`); r.status != 400 {
		t.Errorf("deny with an unknown field: %d", r.status)
	}
	if r := e.call(t, approver, "", "GET", "/v1/approvals?state=soon", ""); r.status != 400 {
		t.Errorf("bad state filter: %d", r.status)
	}

	// Tokens: list never shows secrets; revocation is immediate.
	var created api.Token
	r = e.json(t, "POST", "/v1/tokens", `{"name":"temp","roles":["support"]}`, &created)
	if r.status != 201 || created.ExpiresAt == nil || !created.ExpiresAt.Equal(clk.Now().Add(8*time.Hour)) {
		t.Fatalf("create token without ttl: %d %+v", r.status, created)
	}
	if r := e.json(t, "POST", "/v1/tokens", `{"name":"forever","roles":["support"],"ttl":"0s"}`, nil); r.status != 400 {
		t.Errorf("a never-expiring support token: %d", r.status)
	}
	lr := e.json(t, "GET", "/v1/tokens", "", nil)
	if strings.Contains(string(lr.body), created.Token) || strings.Contains(string(lr.body), authority.TokenPrefix) || !strings.Contains(string(lr.body), created.ID) {
		t.Errorf("token list: %s", lr.body)
	}
	if r := e.call(t, created.Token, "", "GET", "/v1/licenses", ""); r.status != 200 {
		t.Fatalf("new token: %d", r.status)
	}
	if r := e.json(t, "POST", "/v1/tokens/"+created.ID+"/revoke", `{}`, nil); r.status != 200 {
		t.Fatalf("revoke token: %d %s", r.status, r.body)
	}
	if r := e.call(t, created.Token, "", "GET", "/v1/licenses", ""); r.status != 401 {
		t.Errorf("revoked token: %d, want 401", r.status)
	}
	// MFA reset by an admin.
	if r := e.call(t, e.token, "", "DELETE", "/v1/mfa/rita", ""); r.status != 204 {
		t.Errorf("mfa reset: %d %s", r.status, r.body)
	}
	if r := e.call(t, e.token, "", "DELETE", "/v1/mfa/rita", ""); r.status != 404 {
		t.Errorf("second mfa reset: %d", r.status)
	}
}

func TestAuthFailuresRateLimited(t *testing.T) {
	clk := &testClock{t: time.Date(2027, 1, 5, 10, 0, 0, 0, time.UTC)}
	e := newEnvWith(t, func(c *authority.Config) { c.Clock = clk })
	for i := range api.AuthFailureLimit {
		if r := e.call(t, "kwt_wrong", "", "GET", "/v1/products", ""); r.status != 401 {
			t.Fatalf("bad token #%d: %d", i, r.status)
		}
	}
	// Now even a good token from this address waits for the window.
	r := e.call(t, e.token, "", "GET", "/v1/products", "")
	if r.status != 429 || code(t, r) != keyward.ERateLimited {
		t.Fatalf("after %d failures: %d %s", api.AuthFailureLimit, r.status, r.body)
	}
	clk.Advance(api.AuthFailureWindow)
	if r := e.call(t, e.token, "", "GET", "/v1/products", ""); r.status != 200 {
		t.Errorf("after the window: %d", r.status)
	}
}

func TestKeyDestroyOverHTTP(t *testing.T) {
	e := newEnv(t)
	e.json(t, "POST", "/v1/products", `{"name":"acme"}`, nil)
	var ks struct{ Keys []api.Key }
	e.json(t, "GET", "/v1/keys?product=acme", "", &ks)
	rot := e.mint(t, "rob", "", keyward.RoleRotator)
	if r := e.call(t, rot, "", "POST", "/v1/products/acme/keys", `{}`); r.status != 201 {
		t.Fatalf("rotate: %d %s", r.status, r.body)
	}
	// key.destroy is under mfa in the built-in policy.
	if r := e.call(t, rot, "", "POST", "/v1/keys/"+ks.Keys[0].KID+"/destroy", `{}`); r.status != 401 || code(t, r) != keyward.EMFARequired {
		t.Fatalf("destroy without a code: %d %s", r.status, r.body)
	}
}
