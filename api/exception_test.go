package api_test

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/keyward/keyward"
	"github.com/keyward/keyward/api"
	"github.com/keyward/keyward/authority"
	"github.com/keyward/keyward/store"
)

const day = 24 * time.Hour

// exceptionFixture: product acme whose first key was retired at the
// clock's start (default policy: destroyAfter 400d, approvals 1).
type exceptionFixture struct {
	e   *env
	clk *testClock
	old string // the retired kid
}

// Fresh tokens at the clock's time (minted tokens last 24h).
func (f exceptionFixture) rot(t *testing.T) string {
	return f.e.mint(t, "rob", "", keyward.RoleRotator)
}
func (f exceptionFixture) appr(t *testing.T) string {
	return f.e.mint(t, "abe", "", keyward.RoleApprover)
}
func (f exceptionFixture) aud(t *testing.T) string {
	return f.e.mint(t, "ada", "", keyward.RoleAuditor)
}

func setupException(t *testing.T) exceptionFixture {
	t.Helper()
	clk := &testClock{t: time.Date(2027, 1, 5, 10, 0, 0, 0, time.UTC)}
	e := newEnvWith(t, func(c *authority.Config) { c.Clock = clk })
	e.json(t, "POST", "/v1/products", `{"name":"acme"}`, nil)
	var ks struct{ Keys []api.Key }
	e.json(t, "GET", "/v1/keys?product=acme", "", &ks)
	if r := e.json(t, "POST", "/v1/products/acme/keys", `{}`, nil); r.status != 201 {
		t.Fatalf("rotate: %d %s", r.status, r.body)
	}
	return exceptionFixture{e: e, clk: clk, old: ks.Keys[0].KID}
}

func (f exceptionFixture) runRing(t *testing.T) []authority.StepResult {
	t.Helper()
	p := f.product(t)
	res, err := f.e.auth.RunRing(context.Background(), authority.Ring{Name: keyward.LicenseRing(p), ProductID: p, Product: "acme"})
	if err != nil {
		t.Fatal(err)
	}
	return res
}

func (f exceptionFixture) product(t *testing.T) string {
	t.Helper()
	var p api.Product
	f.e.json(t, "GET", "/v1/products/acme", "", &p)
	return p.ID
}

func (f exceptionFixture) destroyApprovals(t *testing.T) int {
	t.Helper()
	n := 0
	err := f.e.st.View(context.Background(), func(tx store.Tx) error {
		aps, err := tx.Approvals(store.ApprovalFilter{Action: authority.PermKeyDestroy, TargetID: f.old})
		n = len(aps)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func (f exceptionFixture) destroyStep(t *testing.T) authority.PlannedStep {
	t.Helper()
	var s api.Schedule
	if r := f.e.json(t, "GET", "/v1/products/acme/schedule", "", &s); r.status != 200 {
		t.Fatalf("schedule: %d %s", r.status, r.body)
	}
	for _, st := range s.Rings[0].Steps {
		if st.Action == "destroy" && st.Target == f.old {
			return st
		}
	}
	t.Fatalf("schedule has no destroy step of %s: %+v", f.old, s.Rings[0].Steps)
	return authority.PlannedStep{}
}

func TestExceptionHoldsDestroy(t *testing.T) {
	f := setupException(t)
	e := f.e
	f.clk.Advance(395 * day) // destroyAfter (400d) is 5 days away
	until := f.clk.Now().Add(30 * day).UTC().Format(time.RFC3339)
	body := fmt.Sprintf(`{"target":%q,"rule":"destroy","until":%q,"justification":"legal hold on 2026 signatures"}`, f.old, until)

	if r := e.call(t, e.mint(t, "ivan", "", keyward.RoleIssuer), "", "POST", "/v1/exceptions", body); r.status != 403 {
		t.Fatalf("an issuer requests an exception: %d %s", r.status, r.body)
	}
	var x api.Exception
	r := e.call(t, f.rot(t), "", "POST", "/v1/exceptions", body)
	if r.status != 202 || json.Unmarshal(r.body, &x) != nil || x.State != "pending" || x.Approval == nil ||
		x.Approval.Action != authority.ExceptionGrantAction || x.Approval.Target != x.ID || x.ApprovalID != x.Approval.ID || x.RequestedBy != "rob" {
		t.Fatalf("request: %d %s", r.status, r.body)
	}
	// Four eyes: the requester cannot grant it.
	if r := e.call(t, e.mint(t, "rob2", "", keyward.RoleAdmin), "", "GET", "/v1/exceptions/"+x.ID, ""); r.status != 200 {
		t.Fatalf("show: %d %s", r.status, r.body)
	}
	if r := e.call(t, f.rot(t), "", "POST", "/v1/approvals/"+x.ApprovalID+"/grant", `{}`); r.status != 403 {
		t.Fatalf("the requester grants: %d %s", r.status, r.body)
	}
	if r := e.call(t, f.appr(t), "", "POST", "/v1/approvals/"+x.ApprovalID+"/grant", `{"comment":"legal confirmed"}`); r.status != 200 {
		t.Fatalf("grant: %d %s", r.status, r.body)
	}
	var got api.Exception
	if r := e.call(t, f.aud(t), "", "GET", "/v1/exceptions/"+x.ID, ""); r.status != 200 || json.Unmarshal(r.body, &got) != nil || got.State != "active" || got.DecidedAt == nil {
		t.Fatalf("after the grant: %d %s", r.status, r.body)
	}
	var list struct{ Exceptions []api.Exception }
	if r := e.call(t, f.appr(t), "", "GET", "/v1/exceptions?state=active&target="+f.old, ""); r.status != 200 || json.Unmarshal(r.body, &list) != nil ||
		len(list.Exceptions) != 1 || list.Exceptions[0].ID != x.ID {
		t.Fatalf("list active: %d %s", r.status, r.body)
	}

	// Past destroyAfter: the scheduler holds the step (no destruction, no
	// approval request) and the schedule says so.
	f.clk.Advance(10 * day)
	for _, s := range f.runRing(t) {
		if s.Target == f.old {
			t.Fatalf("the scheduler ran %+v on a held key", s)
		}
	}
	if n := f.destroyApprovals(t); n != 0 {
		t.Fatalf("%d destroy requests filed while held", n)
	}
	st := f.destroyStep(t)
	if st.Status != "held by exception" || st.ExceptionID != x.ID || st.HeldUntil == nil || st.HeldUntil.Format(time.RFC3339) != until {
		t.Fatalf("schedule step while held = %+v", st)
	}
	// After until the exception is expired and the step runs.
	f.clk.Advance(21 * day)
	if r := e.call(t, f.aud(t), "", "GET", "/v1/exceptions/"+x.ID, ""); json.Unmarshal(r.body, &got) != nil || got.State != "expired" {
		t.Fatalf("after until: %d %s", r.status, r.body)
	}
	ran := false
	for _, s := range f.runRing(t) {
		ran = ran || (s.Target == f.old && s.Action == "destroy-request")
	}
	if !ran || f.destroyApprovals(t) != 1 {
		t.Fatalf("after the exception ended the destroy step did not run (requests %d)", f.destroyApprovals(t))
	}
	if st := f.destroyStep(t); st.ExceptionID != "" || st.Status != "awaiting approval" {
		t.Fatalf("schedule step after the exception = %+v", st)
	}
	// Audited with events.
	for _, ev := range []string{"exception.requested", "exception.activated"} {
		found := false
		err := e.st.View(context.Background(), func(tx store.Tx) error {
			evs, err := tx.Events(0, 0)
			for _, v := range evs {
				found = found || v.Type == ev
			}
			return err
		})
		if err != nil || !found {
			t.Errorf("no %s event (%v)", ev, err)
		}
	}
}

func TestExceptionDeniedHoldsNothing(t *testing.T) {
	f := setupException(t)
	e := f.e
	f.clk.Advance(399 * day)
	body := fmt.Sprintf(`{"target":%q,"rule":"destroy","until":"%s","justification":"keep it"}`, f.old, f.clk.Now().Add(60*day).Format(time.DateOnly))
	var x api.Exception
	if r := e.call(t, f.rot(t), "", "POST", "/v1/exceptions", body); r.status != 202 || json.Unmarshal(r.body, &x) != nil {
		t.Fatalf("request: %d %s", r.status, r.body)
	}
	// Pending holds nothing (destroyAfter passes while the request waits).
	f.clk.Advance(2 * day)
	f.runRing(t)
	if n := f.destroyApprovals(t); n != 1 {
		t.Fatalf("a pending exception held the step: %d destroy requests", n)
	}
	if r := e.call(t, f.appr(t), "", "POST", "/v1/approvals/"+x.ApprovalID+"/deny", `{"reason":"no legal hold on file"}`); r.status != 200 {
		t.Fatalf("deny: %d %s", r.status, r.body)
	}
	var got api.Exception
	if r := e.call(t, f.rot(t), "", "GET", "/v1/exceptions/"+x.ID, ""); json.Unmarshal(r.body, &got) != nil || got.State != "denied" {
		t.Fatalf("after the denial: %d %s", r.status, r.body)
	}
	if st := f.destroyStep(t); st.ExceptionID != "" {
		t.Fatalf("a denied exception shows in the schedule: %+v", st)
	}
}

func TestExceptionBadInput(t *testing.T) {
	f := setupException(t)
	e := f.e
	now := f.clk.Now()
	var l api.IssuedLicense
	if r := e.json(t, "POST", "/v1/licenses", `{"product":"acme","holder":"h"}`, &l); r.status != 201 {
		t.Fatalf("issue: %d %s", r.status, r.body)
	}
	ok := now.Add(30 * day).Format(time.RFC3339)
	rot := f.rot(t)
	before := changes(t, e.st)
	for _, tt := range []struct {
		name, body string
		status     int
		code       string
	}{
		{"unknown target", fmt.Sprintf(`{"target":"nope","rule":"destroy","until":%q,"justification":"j"}`, ok), 404, keyward.ENotFound},
		{"key rule", fmt.Sprintf(`{"target":%q,"rule":"expire","until":%q,"justification":"j"}`, f.old, ok), 400, keyward.EInvalid},
		{"license rule", fmt.Sprintf(`{"target":%q,"rule":"destroy","until":%q,"justification":"j"}`, l.ID, ok), 400, keyward.EInvalid},
		{"past", fmt.Sprintf(`{"target":%q,"rule":"destroy","until":%q,"justification":"j"}`, f.old, now.Add(-time.Hour).Format(time.RFC3339)), 400, keyward.EInvalid},
		{"over a year", fmt.Sprintf(`{"target":%q,"rule":"destroy","until":%q,"justification":"j"}`, f.old, now.Add(366*day).Format(time.RFC3339)), 400, keyward.EInvalid},
		{"no justification", fmt.Sprintf(`{"target":%q,"rule":"destroy","until":%q,"justification":"  "}`, f.old, ok), 400, keyward.EInvalid},
		{"bad date", fmt.Sprintf(`{"target":%q,"rule":"destroy","until":"next year","justification":"j"}`, f.old), 400, keyward.EInvalid},
		{"no rule", fmt.Sprintf(`{"target":%q,"until":%q,"justification":"j"}`, f.old, ok), 400, keyward.EInvalid},
	} {
		r := e.call(t, rot, "", "POST", "/v1/exceptions", tt.body)
		if r.status != tt.status || code(t, r) != tt.code {
			t.Errorf("%s: %d %s, want %d %s", tt.name, r.status, r.body, tt.status, tt.code)
		}
	}
	if n := changes(t, e.st); n != before {
		t.Fatalf("refused requests wrote %d audit entries", n-before)
	}
	var list struct{ Exceptions []api.Exception }
	if e.call(t, rot, "", "GET", "/v1/exceptions", "").status != 200 {
		t.Fatal("list failed")
	}
	if r := e.json(t, "GET", "/v1/exceptions", "", &list); r.status != 200 || len(list.Exceptions) != 0 {
		t.Fatalf("exceptions after refusals: %s", r.body)
	}
	if r := e.json(t, "GET", "/v1/exceptions?state=held", "", nil); r.status != 400 {
		t.Fatalf("unknown state filter: %d", r.status)
	}
	if r := e.json(t, "GET", "/v1/exceptions/exc_missing", "", nil); r.status != 404 {
		t.Fatalf("missing exception: %d", r.status)
	}
}

// TestExceptionHoldsLicense: on a --dev server (approvals 0) the exception
// is active at once; it holds a license's expiry until it ends.
func TestExceptionHoldsLicense(t *testing.T) {
	clk := &testClock{t: time.Date(2027, 1, 5, 10, 0, 0, 0, time.UTC)}
	e := newEnvWith(t, func(c *authority.Config) { c.Clock = clk; c.Dev = true })
	e.json(t, "POST", "/v1/products", `{"name":"acme"}`, nil)
	var l api.IssuedLicense
	if r := e.json(t, "POST", "/v1/licenses", fmt.Sprintf(`{"product":"acme","holder":"h","expires_at":%q}`, clk.Now().Add(day).Format(time.RFC3339)), &l); r.status != 201 {
		t.Fatalf("issue: %d %s", r.status, r.body)
	}
	var x api.Exception
	body := fmt.Sprintf(`{"target":%q,"rule":"expire","until":%q,"justification":"renewal in procurement"}`, l.ID, clk.Now().Add(10*day).Format(time.RFC3339))
	if r := e.json(t, "POST", "/v1/exceptions", body, &x); r.status != 201 || x.State != "active" || x.Approval != nil || x.ApprovalID != "" {
		t.Fatalf("request on a dev server: %d %s", r.status, r.body)
	}
	state := func() string {
		var got api.License
		e.json(t, "GET", "/v1/licenses/"+l.ID, "", &got)
		return got.State
	}
	clk.Advance(2 * day)
	if rep, _, err := e.auth.SweepLicenses(context.Background(), 0); err != nil || rep.Expired != 0 || state() != "active" {
		t.Fatalf("sweep while held: %+v %v, state %s", rep, err, state())
	}
	var s api.Schedule
	e.json(t, "GET", "/v1/products/acme/schedule", "", &s)
	held := false
	for _, st := range s.Rings[0].Steps {
		held = held || (st.Action == "expire" && st.Target == l.ID && st.ExceptionID == x.ID && st.Status == "held by exception")
	}
	if !held {
		t.Fatalf("schedule does not show the held expiry: %+v", s.Rings[0].Steps)
	}
	clk.Advance(9 * day)
	if rep, _, err := e.auth.SweepLicenses(context.Background(), 0); err != nil || rep.Expired != 1 || state() != "expired" {
		t.Fatalf("sweep after the exception: %+v %v, state %s", rep, err, state())
	}
}
