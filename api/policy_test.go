package api_test

import (
	"context"
	"encoding/json"
	"net/http"
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/keyward/keyward"
	"github.com/keyward/keyward/api"
	"github.com/keyward/keyward/authority"
)

func applyBody(t *testing.T, doc, justification string) string {
	t.Helper()
	b, err := json.Marshal(map[string]string{"document": doc, "justification": justification})
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// noMFAPolicy is the example policy without policy.apply under mfa, and
// bootstrap applies it in-process (trusted: no second factor) to the
// products, so that the HTTP tests below can apply and roll back with an
// admin token that has no TOTP enrollment. The mfa gate itself is checked
// at the end of TestPolicyRoutes.
func noMFAPolicy(t *testing.T, product string) string {
	t.Helper()
	raw, err := os.ReadFile("../examples/policy.yaml")
	if err != nil {
		t.Fatal(err)
	}
	doc := strings.Replace(string(raw), "key.destroy, policy.apply]", "key.destroy]", 1)
	return strings.Replace(doc, "product: acme-pro", "product: "+product, 1)
}

func bootstrap(t *testing.T, e *env, products ...string) {
	t.Helper()
	ctx := keyward.NewContextWithPrincipal(context.Background(), keyward.Principal{ID: "system", Name: "test bootstrap"})
	for _, p := range products {
		if r := e.json(t, "POST", "/v1/products", `{"name":"`+p+`"}`, nil); r.status != 201 {
			t.Fatalf("create product: %d %s", r.status, r.body)
		}
		if _, err := e.auth.ApplyPolicy(ctx, p, noMFAPolicy(t, p), "test bootstrap"); err != nil {
			t.Fatal(err)
		}
	}
}

func TestPolicyRoutes(t *testing.T) {
	e := newEnv(t)
	if r := e.json(t, "POST", "/v1/products", `{"name":"fresh"}`, nil); r.status != 201 {
		t.Fatalf("create product: %d %s", r.status, r.body)
	}
	// Before any apply, latest is the built-in default.
	var v api.PolicyVersion
	if r := e.json(t, "GET", "/v1/products/fresh/policies/latest", "", &v); r.status != 200 || !v.Builtin || v.Version != 0 || !strings.Contains(v.Document, "product: fresh") {
		t.Fatalf("latest before apply: %d %+v", r.status, v)
	}

	bootstrap(t, e, "acme-pro")
	doc := noMFAPolicy(t, "acme-pro")
	var c api.PolicyChange
	doc2 := strings.Replace(doc, "maxMachines: 3", "maxMachines: 5", 1)
	if r := e.json(t, "POST", "/v1/products/acme-pro/policies", applyBody(t, doc2, "more machines"), &c); r.status != 201 {
		t.Fatalf("apply: %d %s", r.status, r.body)
	}
	if c.Version != 2 || c.PreviousVersion != 1 || c.Document != doc2 || c.Justification != "more machines" || c.Author == "" ||
		!strings.HasPrefix(c.Diff, "--- acme-pro@v1\n+++ acme-pro@v2\n") || !strings.Contains(c.Diff, "+    maxMachines: 5\n") {
		t.Errorf("apply answer = %+v", c)
	}
	if r := e.json(t, "GET", "/v1/products/acme-pro/policies/latest", "", &v); r.status != 200 || v.Version != 2 || v.Document != doc2 {
		t.Errorf("latest: %d %+v", r.status, v)
	}
	if r := e.json(t, "GET", "/v1/products/acme-pro/policies/1", "", &v); r.status != 200 || v.Version != 1 || v.Document != doc {
		t.Errorf("version 1: %d %+v", r.status, v)
	}
	var h struct {
		Versions []api.PolicyVersion `json:"versions"`
	}
	if r := e.json(t, "GET", "/v1/products/acme-pro/policies", "", &h); r.status != 200 || len(h.Versions) != 2 || h.Versions[1].Justification != "more machines" || h.Versions[0].Document != "" {
		t.Errorf("history: %d %s", r.status, r.body)
	}
	var d api.PolicyDiff
	if r := e.json(t, "GET", "/v1/products/acme-pro/policies/diff?from=1&to=2", "", &d); r.status != 200 || !strings.Contains(d.Diff, "-    maxMachines: 3\n+    maxMachines: 5\n") {
		t.Errorf("diff: %d %s", r.status, r.body)
	}
	if r := e.json(t, "POST", "/v1/products/acme-pro/policies/1/rollback", `{"justification":"back"}`, &c); r.status != 201 || c.Version != 3 || c.RollbackOf != 1 || c.Document != doc {
		t.Errorf("rollback: %d %s", r.status, r.body)
	}

	// A policy that lists policy.apply under mfa gates the next apply.
	raw, _ := os.ReadFile("../examples/policy.yaml")
	if r := e.json(t, "POST", "/v1/products/acme-pro/policies", applyBody(t, string(raw), "the example, with mfa"), &c); r.status != 201 || c.Version != 4 {
		t.Fatalf("apply example: %d %s", r.status, r.body)
	}
	r := e.json(t, "POST", "/v1/products/acme-pro/policies", applyBody(t, doc, "no second factor"), nil)
	if p := problem(t, r); p.Code != keyward.EMFARequired {
		t.Errorf("apply under a policy with mfa [policy.apply] = %+v, want MFA_REQUIRED", p)
	}
}

func TestPolicyBadRequests(t *testing.T) {
	e := newEnv(t)
	bootstrap(t, e, "acme-pro", "other")
	doc := noMFAPolicy(t, "acme-pro")
	sys := keyward.NewContextWithPrincipal(context.Background(), keyward.Principal{ID: "system"})
	_, auditor, err := e.auth.CreateToken(sys, authority.TokenRequest{Name: "auditor", Roles: []string{keyward.RoleAuditor}})
	if err != nil {
		t.Fatal(err)
	}
	const base = "/v1/products/acme-pro/policies"
	bad := strings.NewReplacer("leaseTTL: 15m", "leaseTTL: 45d", "maxMachines: 3", "maxMachines: 3\n    maxMachine: 4").Replace(doc)
	tests := []struct {
		name, method, path, ctype, body string
		token                           string // "" = admin, "-" = none
		status                          int
		code, detail                    string
		fields                          []string
	}{
		{"NoToken", "POST", base, "application/json", applyBody(t, doc, "x"), "-", 401, keyward.EUnauthenticated, "", nil},
		{"AuditorCannotApply", "POST", base, "application/json", applyBody(t, doc, "x"), auditor, 403, keyward.EForbidden, "policy.apply", nil},
		{"AuditorCannotRollback", "POST", base + "/1/rollback", "application/json", `{"justification":"x"}`, auditor, 403, keyward.EForbidden, "policy.apply", nil},
		{"WrongContentType", "POST", base, "application/yaml", doc, "", 415, keyward.EUnsupportedMedia, "application/json", nil},
		{"MalformedJSON", "POST", base, "application/json", `{"document":`, "", 400, keyward.EMalformed, "", nil},
		{"UnknownField", "POST", base, "application/json", `{"document":"x","justification":"y","force":true}`, "", 400, keyward.EMalformed, "force", nil},
		{"NoDocument", "POST", base, "application/json", `{"justification":"y"}`, "", 400, keyward.EInvalid, "document is required", nil},
		{"NoJustification", "POST", base, "application/json", applyBody(t, doc, ""), "", 400, keyward.EInvalid, "justification is required", nil},
		{"YAMLError", "POST", base, "application/json", applyBody(t, "spec: [", "x"), "", 400, keyward.EInvalid, "invalid YAML", []string{""}},
		{"LintProblems", "POST", base, "application/json", applyBody(t, bad, "x"), "", 400, keyward.EInvalid, "2 problems",
			[]string{"spec.licenses.leaseTTL", "spec.licenses.maxMachine"}},
		{"UnknownProduct", "POST", "/v1/products/nope/policies", "application/json", applyBody(t, doc, "x"), "", 404, keyward.ENotFound, "nope", nil},
		{"ProductMismatch", "POST", "/v1/products/other/policies", "application/json", applyBody(t, doc, "x"), "", 400, keyward.EInvalid, "metadata.product", []string{"metadata.product"}},
		{"Identical", "POST", base, "application/json", applyBody(t, doc, "x"), "", 409, keyward.EConflict, "identical to version 1", nil},
		{"UnknownVersion", "GET", base + "/7", "", "", "", 404, keyward.ENotFound, "no policy version 7", nil},
		{"BadVersion", "GET", base + "/seven", "", "", "", 400, keyward.EInvalid, `version "seven"`, nil},
		{"NegativeVersion", "GET", base + "/-1", "", "", "", 400, keyward.EInvalid, `version "-1"`, nil},
		{"DiffWithoutFrom", "GET", base + "/diff?to=1", "", "", "", 400, keyward.EInvalid, "from is required", nil},
		{"DiffUnknownVersion", "GET", base + "/diff?from=1&to=4", "", "", "", 404, keyward.ENotFound, "no policy version 4", nil},
		{"RollbackLatestWord", "POST", base + "/latest/rollback", "application/json", `{"justification":"x"}`, "", 400, keyward.EInvalid, `version "latest"`, nil},
		{"RollbackZero", "POST", base + "/0/rollback", "application/json", `{"justification":"x"}`, "", 400, keyward.EInvalid, "version 0", nil},
		{"RollbackUnknown", "POST", base + "/9/rollback", "application/json", `{"justification":"x"}`, "", 404, keyward.ENotFound, "no policy version 9", nil},
		{"RollbackToCurrent", "POST", base + "/1/rollback", "application/json", `{"justification":"x"}`, "", 409, keyward.EConflict, "identical", nil},
		{"RollbackNoJustification", "POST", base + "/1/rollback", "application/json", `{}`, "", 400, keyward.EInvalid, "justification is required", nil},
		{"RollbackNoBody", "POST", base + "/1/rollback", "", "", "", 415, keyward.EUnsupportedMedia, "", nil},
		{"HistoryUnknownProduct", "GET", "/v1/products/nope/policies", "", "", "", 404, keyward.ENotFound, "nope", nil},
		{"WrongMethod", "DELETE", base + "/1", "", "", "", 405, keyward.EMethodNotAllowed, "", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req, err := http.NewRequest(tt.method, e.srv.URL+tt.path, strings.NewReader(tt.body))
			if err != nil {
				t.Fatal(err)
			}
			if tt.ctype != "" {
				req.Header.Set("Content-Type", tt.ctype)
			}
			switch tt.token {
			case "":
				req.Header.Set("Authorization", "Bearer "+e.token)
			case "-":
			default:
				req.Header.Set("Authorization", "Bearer "+tt.token)
			}
			res, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer res.Body.Close()
			var p api.Problem
			if err := json.NewDecoder(res.Body).Decode(&p); err != nil {
				t.Fatal(err)
			}
			if res.StatusCode != tt.status || p.Code != tt.code || !strings.Contains(p.Detail, tt.detail) {
				t.Fatalf("%s %s = %d %+v, want %d %s containing %q", tt.method, tt.path, res.StatusCode, p, tt.status, tt.code, tt.detail)
			}
			var paths []string
			for _, f := range p.Errors {
				paths = append(paths, f.Path)
				if f.Message == "" {
					t.Errorf("field error %+v has no message", f)
				}
			}
			for _, want := range tt.fields {
				if !slices.Contains(paths, want) {
					t.Errorf("errors %v do not name %q", paths, want)
				}
			}
		})
	}
	// Nothing was written by the refused requests.
	var h struct {
		Versions []api.PolicyVersion `json:"versions"`
	}
	if r := e.json(t, "GET", base, "", &h); r.status != 200 || len(h.Versions) != 1 {
		t.Errorf("history after refusals: %s", r.body)
	}
	var ot struct {
		Versions []api.PolicyVersion `json:"versions"`
	}
	if r := e.json(t, "GET", "/v1/products/other/policies", "", &ot); r.status != 200 || len(ot.Versions) != 1 {
		t.Errorf("other product history: %s", r.body)
	}
}
