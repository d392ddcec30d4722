package api_test

import (
	"testing"

	"github.com/keyward/keyward"
	"github.com/keyward/keyward/api"
)

func TestLifecycleRoutes(t *testing.T) {
	e := newEnv(t)
	if r := e.json(t, "POST", "/v1/products", `{"name":"acme"}`, nil); r.status != 201 {
		t.Fatalf("create product: %d %s", r.status, r.body)
	}
	var keysOut struct {
		Keys []api.Key `json:"keys"`
	}
	e.json(t, "GET", "/v1/keys?product=acme", "", &keysOut)
	old := keysOut.Keys[0]
	var lic api.IssuedLicense
	if r := e.json(t, "POST", "/v1/licenses", `{"product":"acme","holder":"h1","max_machines":0}`, &lic); r.status != 201 {
		t.Fatalf("issue: %d %s", r.status, r.body)
	}
	if r := e.json(t, "POST", "/v1/licenses/"+lic.ID+"/checkout", "", nil); r.status != 200 {
		t.Fatalf("checkout: %d %s", r.status, r.body)
	}
	var k api.Key
	e.json(t, "GET", "/v1/keys/"+old.KID, "", &k)
	if k.Exposure == nil || k.Exposure.LiveCertificates != 1 || k.Exposure.LeasesCounted || k.Exposure.Resign != nil {
		t.Fatalf("GET /v1/keys/%s exposure = %+v, want 1 live certificate, no job", old.KID, k.Exposure)
	}
	r := e.json(t, "GET", "/v1/keys/"+old.KID+"/resign", "", nil)
	if p := problem(t, r); r.status != 404 || p.Code != keyward.ENotFound {
		t.Fatalf("resign of an active key: %d %+v", r.status, p)
	}
	r = e.json(t, "POST", "/v1/products/acme/keys/rollback", `{"justification":"nothing to undo"}`, nil)
	if p := problem(t, r); r.status != 409 || p.Code != keyward.EIllegalTransition {
		t.Fatalf("rollback without a rotation: %d %+v", r.status, p)
	}
	if r := e.json(t, "POST", "/v1/products/acme/keys", `{}`, nil); r.status != 201 {
		t.Fatalf("rotate: %d %s", r.status, r.body)
	}
	var j api.ResignJob
	if r := e.json(t, "GET", "/v1/keys/"+old.KID+"/resign", "", &j); r.status != 200 || j.State != "running" || j.Total != 1 || j.Reason != "retired" {
		t.Fatalf("resign job after rotation: %d %+v", r.status, j)
	}
	r = e.json(t, "POST", "/v1/products/acme/keys/rollback", `{"justification":""}`, nil)
	if p := problem(t, r); r.status != 400 || p.Code != keyward.EInvalid {
		t.Fatalf("rollback without justification: %d %+v", r.status, p)
	}
	var rb api.Rollback
	if r := e.json(t, "POST", "/v1/products/acme/keys/rollback", `{"justification":"client 4.2 pins the old key"}`, &rb); r.status != 200 ||
		rb.Activated.KID != old.KID || rb.Activated.State != "active" || rb.Retired.State != "retired" {
		t.Fatalf("rollback: %d %s", r.status, r.body)
	}
	e.json(t, "GET", "/v1/keys/"+old.KID+"/resign", "", &j)
	if j.State != "cancelled" {
		t.Errorf("the re-activated key's job is %s, want cancelled", j.State)
	}
	var all, one api.Schedule
	if r := e.json(t, "GET", "/v1/schedule", "", &all); r.status != 200 || len(all.Rings) != 2 || all.Rings[0].Ring != keyward.RegistryRing {
		t.Fatalf("GET /v1/schedule: %d %s", r.status, r.body)
	}
	if r := e.json(t, "GET", "/v1/products/acme/schedule", "", &one); r.status != 200 || len(one.Rings) != 1 || one.Rings[0].Active != old.KID || len(one.Rings[0].Steps) == 0 {
		t.Fatalf("GET /v1/products/acme/schedule: %d %s", r.status, r.body)
	}
	if len(one.Rings[0].Resign) != 1 || one.Rings[0].Resign[0].KID != rb.Retired.KID {
		t.Errorf("schedule re-sign jobs = %+v, want the rolled-back key's", one.Rings[0].Resign)
	}
	r = e.json(t, "GET", "/v1/products/nope/schedule", "", nil)
	if p := problem(t, r); r.status != 404 {
		t.Fatalf("schedule of an unknown product: %d %+v", r.status, p)
	}
}
