package api_test

import (
	"bytes"
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/keyward/keyward"
	"github.com/keyward/keyward/api"
	"github.com/keyward/keyward/internal/cputime"
)

// BenchmarkValidate measures the handler path of POST /v1/validate without
// the network: routing, decoding, the cached validation and encoding.
func BenchmarkValidate(b *testing.B) {
	e := newEnvTB(b)
	e.jsonTB(b, "POST", "/v1/products", `{"name":"acme"}`, nil)
	// The benchmark validates one key as fast as it can: a burst, which
	// the built-in policy suspends (docs/abuse.md). Its policy keeps the
	// built-in rules, evaluated on every validation, with the burst
	// threshold out of reach, so every validation stays VALID.
	sys := keyward.NewContextWithPrincipal(context.Background(), keyward.Principal{ID: "system", Name: "bench"})
	if _, err := e.auth.ApplyPolicy(sys, "acme", benchPolicy, "benchmark"); err != nil {
		b.Fatal(err)
	}
	var l api.IssuedLicense
	e.jsonTB(b, "POST", "/v1/licenses", `{"product":"acme","holder":"c","max_machines":0}`, &l)
	body := `{"key":"` + l.Key + `"}`
	b.ReportAllocs()
	reportCPU(b, func() {
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				req := httptest.NewRequest("POST", "/v1/validate", strings.NewReader(body))
				req.Header.Set("Content-Type", "application/json")
				w := httptest.NewRecorder()
				e.api.ServeHTTP(w, req)
				if w.Code != http.StatusOK || !bytes.Contains(w.Body.Bytes(), []byte(`"code":"VALID"`)) {
					b.Fatalf("status %d: %s", w.Code, w.Body)
				}
			}
		})
	})
}

// benchPolicy is the built-in default's autoSuspend rules with a burst
// threshold no benchmark reaches.
const benchPolicy = `apiVersion: keyward.dev/v1
kind: LifecyclePolicy
metadata: {name: bench, product: acme}
spec:
  revocation:
    autoSuspend:
      - name: burst
        when: usage.validations_per_minute > 1000000000
      - name: fingerprint-spray
        when: license.max_machines > 0 && usage.distinct_fingerprints_24h > 5 * license.max_machines
`

// reportCPU runs fn and reports the process's CPU time per operation as
// "cpu-ns/op" (zero where it cannot be read): unlike ns/op it barely moves
// when other processes load the machine.
func reportCPU(b *testing.B, fn func()) {
	b.Helper()
	start := cputime.Process()
	fn()
	b.ReportMetric(float64(cputime.Process()-start)/float64(b.N), "cpu-ns/op")
}
