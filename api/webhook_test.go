package api_test

import (
	"bytes"
	"context"
	"encoding/json"
	"slices"
	"strings"
	"testing"

	"github.com/keyward/keyward"
	"github.com/keyward/keyward/api"
	"github.com/keyward/keyward/authority"
)

func TestWebhookAPI(t *testing.T) {
	e := newEnv(t)
	var created api.WebhookWithSecret
	r := e.json(t, "POST", "/v1/webhooks", `{"url":"https://hooks.example.com/keyward","events":["license.revoked","key.compromised"],"description":"billing"}`, &created)
	if r.status != 201 {
		t.Fatalf("create: %d %s", r.status, r.body)
	}
	if !strings.HasPrefix(created.Secret, "whsec_") || created.ID == "" || created.State != "enabled" ||
		!slices.Equal(created.Events, []string{"license.revoked", "key.compromised"}) {
		t.Fatalf("create = %+v", created)
	}
	if cc := r.header.Get("Cache-Control"); cc != "no-store" {
		t.Errorf("create: Cache-Control %q, want no-store (the answer holds a secret)", cc)
	}
	secret := strings.TrimPrefix(created.Secret, "whsec_")

	var later bytes.Buffer
	var one api.WebhookEndpoint
	if r := e.json(t, "GET", "/v1/webhooks/"+created.ID, "", &one); r.status != 200 || one.URL != "https://hooks.example.com/keyward" {
		t.Fatalf("get: %d %s", r.status, r.body)
	} else {
		later.Write(r.body)
	}
	var list struct{ Webhooks []api.WebhookEndpoint }
	r = e.json(t, "GET", "/v1/webhooks", "", &list)
	later.Write(r.body)
	if len(list.Webhooks) != 1 || list.Webhooks[0].ID != created.ID {
		t.Fatalf("list = %s", r.body)
	}
	var types struct {
		EventTypes []string `json:"event_types"`
	}
	e.json(t, "GET", "/v1/webhooks/event-types", "", &types)
	if !slices.Equal(types.EventTypes, authority.EventTypes()) {
		t.Fatalf("event-types = %v", types.EventTypes)
	}

	var rotated api.WebhookWithSecret
	if r := e.json(t, "POST", "/v1/webhooks/"+created.ID+"/rotate-secret", `{"grace":"2h"}`, &rotated); r.status != 200 {
		t.Fatalf("rotate: %d %s", r.status, r.body)
	}
	if !strings.HasPrefix(rotated.Secret, "whsec_") || rotated.Secret == created.Secret || rotated.PreviousSecretExpiresAt == nil {
		t.Fatalf("rotate = %+v, want a new secret and the old one's deadline", rotated)
	}
	r = e.json(t, "GET", "/v1/webhooks/"+created.ID, "", nil)
	later.Write(r.body)
	if bytes.Contains(later.Bytes(), []byte(secret)) || bytes.Contains(later.Bytes(), []byte(strings.TrimPrefix(rotated.Secret, "whsec_"))) ||
		bytes.Contains(later.Bytes(), []byte(`"secret"`)) {
		t.Fatalf("a later response carries a secret: %s", later.Bytes())
	}

	for _, step := range []struct{ path, state string }{{"/disable", "disabled"}, {"/enable", "enabled"}} {
		var ep api.WebhookEndpoint
		if r := e.json(t, "POST", "/v1/webhooks/"+created.ID+step.path, `{"reason":"maintenance"}`, &ep); r.status != 200 || ep.State != step.state {
			t.Fatalf("%s: %d %s", step.path, r.status, r.body)
		}
	}
	var ds struct {
		Deliveries []api.WebhookDelivery
	}
	if r := e.json(t, "GET", "/v1/webhooks/deliveries?endpoint="+created.ID+"&state=failed", "", &ds); r.status != 200 || len(ds.Deliveries) != 0 {
		t.Fatalf("deliveries: %d %s", r.status, r.body)
	}
	var removed api.WebhookEndpoint
	r = e.do(t, "DELETE", "/v1/webhooks/"+created.ID, "", "", true)
	if err := json.Unmarshal(r.body, &removed); r.status != 200 || err != nil || removed.State != "removed" {
		t.Fatalf("remove: %d %s", r.status, r.body)
	}
	e.json(t, "GET", "/v1/webhooks", "", &list)
	if len(list.Webhooks) != 0 {
		t.Fatalf("list after remove = %+v, want empty", list.Webhooks)
	}
	e.json(t, "GET", "/v1/webhooks?all=true", "", &list)
	if len(list.Webhooks) != 1 || list.Webhooks[0].State != "removed" {
		t.Fatalf("list ?all=true after remove = %+v", list.Webhooks)
	}
}

// TestWebhookAPIBadInput: every refusal is a precise 4xx problem and
// writes nothing.
func TestWebhookAPIBadInput(t *testing.T) {
	e := newEnv(t)
	before := auditCount(t, e.st)
	cases := []struct {
		name, method, path, ctype, body string
		status                          int
		code                            string
	}{
		{"RelativeURL", "POST", "/v1/webhooks", "application/json", `{"url":"/hook","events":["*"]}`, 400, keyward.EInvalid},
		{"FTPURL", "POST", "/v1/webhooks", "application/json", `{"url":"ftp://hooks.example.com/","events":["*"]}`, 400, keyward.EInvalid},
		{"NotAURL", "POST", "/v1/webhooks", "application/json", `{"url":"hooks example","events":["*"]}`, 400, keyward.EInvalid},
		{"LoopbackURL", "POST", "/v1/webhooks", "application/json", `{"url":"http://127.0.0.1/hook","events":["*"]}`, 400, keyward.EInvalid},
		{"NoURL", "POST", "/v1/webhooks", "application/json", `{"events":["*"]}`, 400, keyward.EInvalid},
		{"UnknownEvent", "POST", "/v1/webhooks", "application/json", `{"url":"https://hooks.example.com/","events":["license.exploded"]}`, 400, keyward.EInvalid},
		{"NoEvents", "POST", "/v1/webhooks", "application/json", `{"url":"https://hooks.example.com/","events":[]}`, 400, keyward.EInvalid},
		{"EventsNotList", "POST", "/v1/webhooks", "application/json", `{"url":"https://hooks.example.com/","events":"*"}`, 400, keyward.EMalformed},
		{"UnknownField", "POST", "/v1/webhooks", "application/json", `{"url":"https://hooks.example.com/","events":["*"],"secret":"whsec_x"}`, 400, keyward.EMalformed},
		{"WrongMedia", "POST", "/v1/webhooks", "text/plain", `{"url":"https://hooks.example.com/","events":["*"]}`, 415, keyward.EUnsupportedMedia},
		{"GetUnknown", "GET", "/v1/webhooks/whk_missing", "", "", 404, keyward.ENotFound},
		{"RemoveUnknown", "DELETE", "/v1/webhooks/whk_missing", "", "", 404, keyward.ENotFound},
		{"RotateUnknown", "POST", "/v1/webhooks/whk_missing/rotate-secret", "", "", 404, keyward.ENotFound},
		{"EnableUnknown", "POST", "/v1/webhooks/whk_missing/enable", "", "", 404, keyward.ENotFound},
		{"BadAll", "GET", "/v1/webhooks?all=maybe", "", "", 400, keyward.EInvalid},
		{"DeliveriesUnknownEndpoint", "GET", "/v1/webhooks/deliveries?endpoint=whk_missing", "", "", 404, keyward.ENotFound},
		{"DeliveriesBadState", "GET", "/v1/webhooks/deliveries?state=lost", "", "", 400, keyward.EInvalid},
		{"DeliveriesBadLimit", "GET", "/v1/webhooks/deliveries?limit=0", "", "", 400, keyward.EInvalid},
		{"DeliveriesHugeLimit", "GET", "/v1/webhooks/deliveries?limit=5000", "", "", 400, keyward.EInvalid},
		{"DeliveryUnknown", "GET", "/v1/webhooks/deliveries/dlv_missing", "", "", 404, keyward.ENotFound},
		{"ReplayUnknown", "POST", "/v1/webhooks/deliveries/dlv_missing/replay", "", "", 404, keyward.ENotFound},
		{"PutNotAllowed", "PUT", "/v1/webhooks", "application/json", `{}`, 405, keyward.EMethodNotAllowed},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := e.do(t, c.method, c.path, c.ctype, c.body, true)
			p := problem(t, r)
			if r.status != c.status || p.Code != c.code {
				t.Fatalf("%s %s = %d %s (%s), want %d %s", c.method, c.path, r.status, p.Code, p.Detail, c.status, c.code)
			}
		})
	}
	if after := auditCount(t, e.st); after != before {
		t.Errorf("refused requests wrote %d audit entries", after-before)
	}
	eps, err := e.auth.Webhooks(context.Background(), true)
	if err != nil || len(eps) != 0 {
		t.Errorf("refused requests created %d endpoints (%v)", len(eps), err)
	}
}

func TestWebhookAPIAdminOnly(t *testing.T) {
	e := newEnv(t)
	e.json(t, "POST", "/v1/products", `{"name":"acme"}`, nil)
	sys := keyward.NewContextWithPrincipal(context.Background(), keyward.Principal{ID: "system"})
	tokens := map[string]authority.TokenRequest{
		"issuer":        {Name: "i", Roles: []string{keyward.RoleIssuer}},
		"auditor":       {Name: "a", Roles: []string{keyward.RoleAuditor}},
		"scoped admin":  {Name: "s", Roles: []string{keyward.RoleAdmin}, Product: "acme"},
		"every non-adm": {Name: "n", Roles: []string{keyward.RoleIssuer, keyward.RoleRotator, keyward.RoleRevoker, keyward.RoleApprover, keyward.RoleSupport, keyward.RoleService}},
	}
	for name, req := range tokens {
		_, tok, err := e.auth.CreateToken(sys, req)
		if err != nil {
			t.Fatal(err)
		}
		saved := e.token
		e.token = tok
		for _, rt := range []struct{ method, path, body string }{
			{"GET", "/v1/webhooks", ""},
			{"POST", "/v1/webhooks", `{"url":"https://hooks.example.com/","events":["*"]}`},
			{"GET", "/v1/webhooks/deliveries", ""},
		} {
			r := e.json(t, rt.method, rt.path, rt.body, nil)
			if p := problem(t, r); r.status != 403 || p.Code != keyward.EForbidden {
				t.Errorf("%s: %s %s = %d %s, want 403", name, rt.method, rt.path, r.status, p.Code)
			}
		}
		e.token = saved
	}
	if r := e.do(t, "GET", "/v1/webhooks", "", "", false); r.status != 401 {
		t.Errorf("GET /v1/webhooks without a token = %d, want 401", r.status)
	}
}
