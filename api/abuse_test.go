package api_test

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"

	"github.com/keyward/keyward"
	"github.com/keyward/keyward/api"
	"github.com/keyward/keyward/authority"
	"github.com/keyward/keyward/keys"
	"github.com/keyward/keyward/store"
	"github.com/keyward/keyward/store/sqlite"
)

// signalEnv is an env with product acme and one license.
func signalEnv(t *testing.T) (*env, api.IssuedLicense) {
	e := newEnv(t)
	e.json(t, "POST", "/v1/products", `{"name":"acme"}`, nil)
	var l api.IssuedLicense
	if r := e.json(t, "POST", "/v1/licenses", `{"product":"acme","holder":"c"}`, &l); r.status != http.StatusCreated {
		t.Fatalf("issue: %d %s", r.status, r.body)
	}
	return e, l
}

func (e *env) auditActions(t *testing.T, action string) int {
	t.Helper()
	var n int
	err := e.st.View(context.Background(), func(tx store.Tx) error {
		es, err := tx.AuditEntries(store.AuditFilter{Action: action})
		n = len(es)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func TestSignalAPI(t *testing.T) {
	e, l := signalEnv(t)
	support := e.mint(t, "sam", "", keyward.RoleSupport)
	path := "/v1/licenses/" + l.ID + "/signals"

	// abuse: recorded; the license stays active.
	r := e.call(t, support, "", "POST", path, `{"kind":"abuse","detail":"shared in a team chat"}`)
	var rec api.SignalRecorded
	if r.status != http.StatusCreated || json.Unmarshal(r.body, &rec) != nil || rec.Signal.Outcome != "recorded" || rec.License.State != "active" ||
		rec.Signal.Actor != "sam" || rec.Signal.Kind != "abuse" || rec.Approval != nil {
		t.Fatalf("abuse signal: %d %s", r.status, r.body)
	}
	// leak (the built-in policy's suspendOnSignal): suspended, with a
	// revocation request (built-in approvals 1).
	svc := e.mint(t, "backend", "", keyward.RoleService)
	r = e.call(t, svc, "", "POST", path, `{"kind":"leak","detail":"key found in a public paste"}`)
	rec = api.SignalRecorded{}
	if r.status != http.StatusCreated || json.Unmarshal(r.body, &rec) != nil || rec.Signal.Outcome != "suspended" || rec.License.State != "suspended" ||
		rec.Approval == nil || rec.Approval.Action != "license.revoke" || rec.Approval.Reason != "key_compromise" {
		t.Fatalf("leak signal: %d %s", r.status, r.body)
	}
	var v api.Validation
	e.json(t, "POST", "/v1/validate", `{"key":"`+l.Key+`","fingerprint":"m1"}`, &v)
	if v.Code != keyward.CodeSuspended {
		t.Errorf("validate after the leak: %s", v.Code)
	}
	var list struct{ Signals []api.Signal }
	if r := e.json(t, "GET", path, "", &list); r.status != http.StatusOK || len(list.Signals) != 2 || list.Signals[1].Detail != "key found in a public paste" {
		t.Errorf("list: %d %s", r.status, r.body)
	}
}

// TestSignalAPIRefused: every bad request is a 4xx problem and writes
// nothing.
func TestSignalAPIRefused(t *testing.T) {
	e, l := signalEnv(t)
	path := "/v1/licenses/" + l.ID + "/signals"
	support := e.mint(t, "sam", "", keyward.RoleSupport)
	issuer := e.mint(t, "ivan", "", keyward.RoleIssuer)
	auditor := e.mint(t, "aud", "", keyward.RoleAuditor)
	approver := e.mint(t, "abe", "", keyward.RoleApprover)
	tests := []struct {
		name, token, path, body string
		status                  int
		code                    string
	}{
		{"UnknownKind", support, path, `{"kind":"fraud","detail":"x"}`, 400, keyward.EInvalid},
		{"MissingKind", support, path, `{"detail":"x"}`, 400, keyward.EInvalid},
		{"MissingDetail", support, path, `{"kind":"leak"}`, 400, keyward.EInvalid},
		{"OversizedDetail", support, path, `{"kind":"leak","detail":"` + strings.Repeat("a", authority.MaxSignalDetail+1) + `"}`, 400, keyward.EInvalid},
		{"ControlCharacter", support, path, `{"kind":"leak","detail":"a\u0007b"}`, 400, keyward.EInvalid},
		{"BodyTooLarge", support, path, `{"kind":"leak","detail":"` + strings.Repeat("a", api.MaxBodyBytes) + `"}`, 413, keyward.ETooLarge},
		{"UnknownField", support, path, `{"kind":"leak","detail":"x","severity":9}`, 400, keyward.EMalformed},
		{"NotJSON", support, path, `kind=leak`, 400, keyward.EMalformed},
		{"UnknownLicense", support, "/v1/licenses/lic_missing/signals", `{"kind":"leak","detail":"x"}`, 404, keyward.ENotFound},
		{"IssuerRole", issuer, path, `{"kind":"leak","detail":"x"}`, 403, keyward.EForbidden},
		{"AuditorRole", auditor, path, `{"kind":"leak","detail":"x"}`, 403, keyward.EForbidden},
		{"ApproverRole", approver, path, `{"kind":"leak","detail":"x"}`, 403, keyward.EForbidden},
		{"NoToken", "", path, `{"kind":"leak","detail":"x"}`, 401, keyward.EUnauthenticated},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := e.call(t, tt.token, "", "POST", tt.path, tt.body)
			if p := problem(t, r); r.status != tt.status || p.Code != tt.code {
				t.Errorf("%d %s, want %d %s", r.status, p.Code, tt.status, tt.code)
			}
		})
	}
	if n := e.auditActions(t, "license.signal"); n != 0 {
		t.Errorf("%d license.signal audit entries after refusals", n)
	}
	if ss, err := e.auth.Signals(sysCtx(), l.ID); err != nil || len(ss) != 0 {
		t.Errorf("signals after refusals: %d, %v", len(ss), err)
	}
	if got, _ := e.auth.License(context.Background(), l.ID); got.State != keyward.LicenseActive {
		t.Errorf("license %s after refusals", got.State)
	}
	// A product-scoped token of another product sees no such license.
	e.json(t, "POST", "/v1/products", `{"name":"other"}`, nil)
	p, _ := e.auth.Product(context.Background(), "other")
	scoped := e.mint(t, "svc-other", p.ID, keyward.RoleService)
	if r := e.call(t, scoped, "", "POST", path, `{"kind":"leak","detail":"x"}`); r.status != 404 {
		t.Errorf("another product's token: %d %s", r.status, r.body)
	}
}

// TestUsageAPI: validations count against the client address; /usage and
// /metrics show the counters and the decisions.
func TestUsageAPI(t *testing.T) {
	e, l := signalEnv(t)
	for _, fp := range []string{"m1", "m2", "m1"} {
		e.json(t, "POST", "/v1/validate", `{"key":"`+l.Key+`","fingerprint":"`+fp+`"}`, nil)
	}
	var u api.LicenseUsage
	if r := e.json(t, "GET", "/v1/licenses/"+l.ID+"/usage", "", &u); r.status != http.StatusOK {
		t.Fatalf("usage: %d %s", r.status, r.body)
	}
	// The test client connects from 127.0.0.1: one network.
	if !u.Tracked || u.Usage != (api.Usage{ValidationsPerMinute: 3, DistinctFingerprints24h: 2, DistinctNetworks24h: 1}) || u.CooldownUntil != nil || len(u.AutoSuspensions) != 0 {
		t.Errorf("usage = %+v", u)
	}
	if r := e.json(t, "GET", "/v1/licenses/lic_missing/usage", "", nil); r.status != 404 {
		t.Errorf("unknown license: %d", r.status)
	}
	if r := e.call(t, e.mint(t, "svc", "", keyward.RoleService), "", "GET", "/v1/licenses/"+l.ID+"/usage", ""); r.status != 403 {
		t.Errorf("service token reads usage: %d", r.status)
	}
	// A leak signal suspends: the metric counts it by rule.
	e.json(t, "POST", "/v1/licenses/"+l.ID+"/signals", `{"kind":"leak","detail":"pasted"}`, nil)
	e.json(t, "GET", "/v1/licenses/"+l.ID+"/usage", "", &u)
	if len(u.AutoSuspensions) != 1 || u.AutoSuspensions[0].Rule != "suspendOnSignal" || u.AutoSuspensions[0].Outcome != "suspended" || u.CooldownUntil == nil {
		t.Errorf("usage after the leak = %+v", u)
	}
	m := e.do(t, "GET", "/metrics", "", "", false)
	for _, want := range []string{
		`keyward_auto_suspensions_total{outcome="suspended",product="acme",rule="suspendOnSignal"} 1`,
		"keyward_usage_tracked_licenses 1",
	} {
		if !bytes.Contains(m.body, []byte(want)) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
}

// TestValidateSourceAddress: the client address counted is the peer, or
// with trusted proxies the nearest untrusted X-Forwarded-For entry.
func TestValidateSourceAddress(t *testing.T) {
	ctx := context.Background()
	st, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "k.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	kek, _ := keys.GenerateKEK(nil)
	a, err := authority.New(ctx, authority.Config{Store: st, KEKs: keys.NewKEKRing(kek)})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.CreateProduct(sysCtx(), "acme"); err != nil {
		t.Fatal(err)
	}
	plain := api.New(api.Config{Authority: a})
	proxied := api.New(api.Config{Authority: a, TrustedProxies: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("2001:db8:ffff::/48")}})
	tests := []struct {
		name   string
		srv    *api.Server
		remote string
		xff    []string
		want   string // the network that must be the only one counted
	}{
		{"Peer", plain, "198.51.100.7:4000", nil, "198.51.100.0"},
		{"UntrustedXFFIgnored", plain, "198.51.100.7:4000", []string{"203.0.113.1"}, "198.51.100.0"},
		{"ProxyNotTrusted", proxied, "198.51.100.7:4000", []string{"203.0.113.1"}, "198.51.100.0"},
		{"TrustedProxy", proxied, "10.1.2.3:4000", []string{"203.0.113.1"}, "203.0.113.0"},
		{"ChainOfTrustedProxies", proxied, "10.1.2.3:4000", []string{"192.0.2.55, 10.9.9.9", "10.8.8.8"}, "192.0.2.0"},
		{"SpoofedLeftmostIgnored", proxied, "10.1.2.3:4000", []string{"1.2.3.4, 203.0.113.9"}, "203.0.113.0"},
		{"IPv6Proxy", proxied, "[2001:db8:ffff::1]:4000", []string{"2001:db8:42::7"}, "2001:db8:42::"},
		{"GarbageStopsTheWalk", proxied, "10.1.2.3:4000", []string{"not-an-ip, 10.4.4.4"}, "10.4.4.0"},
		{"OnlyProxies", proxied, "10.1.2.3:4000", []string{"10.5.5.5"}, "10.5.5.0"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			is, err := a.IssueLicense(sysCtx(), authority.IssueRequest{Product: "acme", Holder: "c"})
			if err != nil {
				t.Fatal(err)
			}
			req := httptest.NewRequest("POST", "/v1/validate", strings.NewReader(`{"key":"`+string(is.Key)+`","fingerprint":"m"}`))
			req.Header.Set("Content-Type", "application/json")
			req.RemoteAddr = tt.remote
			for _, h := range tt.xff {
				req.Header.Add("X-Forwarded-For", h)
			}
			w := httptest.NewRecorder()
			tt.srv.ServeHTTP(w, req)
			if w.Code != 200 {
				t.Fatalf("validate: %d %s", w.Code, w.Body)
			}
			// Validate again from the expected network (another address
			// in it): still one network if it was the one counted.
			want := netip.MustParseAddr(tt.want)
			b := want.As16()
			b[15] = 99
			if want.Is4() {
				b4 := want.As4()
				b4[3] = 99
				want = netip.AddrFrom4(b4)
			} else {
				want = netip.AddrFrom16(b)
			}
			if _, err := a.Validate(ctx, authority.ValidateRequest{Key: string(is.Key), Fingerprint: "m", Source: want}); err != nil {
				t.Fatal(err)
			}
			u, err := a.LicenseUsage(sysCtx(), is.License.ID)
			if err != nil || u.Usage.DistinctNetworks24h != 1 {
				t.Errorf("distinct networks = %d (%v): the request was not counted in %s", u.Usage.DistinctNetworks24h, err, tt.want)
			}
		})
	}
}

// BenchmarkValidateCounters compares the validation handler without usage
// counters ("off", authority.Config.NoUsageCounters) and with them and
// the built-in rules ("on", burst threshold out of reach). go test -count N
// runs all "off" rounds before the "on" ones: to compare on a shared
// machine, loop over -count 1 so the two alternate (docs/benchmarks.md),
// and compare cpu-ns/op.
func BenchmarkValidateCounters(b *testing.B) {
	for _, mode := range []string{"off", "on"} {
		b.Run(mode, func(b *testing.B) {
			ctx := context.Background()
			st, err := sqlite.Open(ctx, filepath.Join(b.TempDir(), "k.db"))
			if err != nil {
				b.Fatal(err)
			}
			defer st.Close()
			kek, _ := keys.GenerateKEK(nil)
			a, err := authority.New(ctx, authority.Config{Store: st, KEKs: keys.NewKEKRing(kek), NoUsageCounters: mode == "off"})
			if err != nil {
				b.Fatal(err)
			}
			if _, err := a.CreateProduct(sysCtx(), "acme"); err != nil {
				b.Fatal(err)
			}
			if _, err := a.ApplyPolicy(sysCtx(), "acme", benchPolicy, "benchmark"); err != nil {
				b.Fatal(err)
			}
			is, err := a.IssueLicense(sysCtx(), authority.IssueRequest{Product: "acme", Holder: "c", MaxMachines: new(int)})
			if err != nil {
				b.Fatal(err)
			}
			s := api.New(api.Config{Authority: a})
			body := `{"key":"` + string(is.Key) + `"}`
			b.ReportAllocs()
			reportCPU(b, func() {
				b.RunParallel(func(pb *testing.PB) {
					for pb.Next() {
						req := httptest.NewRequest("POST", "/v1/validate", strings.NewReader(body))
						req.Header.Set("Content-Type", "application/json")
						w := httptest.NewRecorder()
						s.ServeHTTP(w, req)
						if w.Code != http.StatusOK || !bytes.Contains(w.Body.Bytes(), []byte(`"code":"VALID"`)) {
							b.Fatalf("status %d: %s", w.Code, w.Body)
						}
					}
				})
			})
		})
	}
}
