package api_test

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/keyward/keyward/api"
)

// BenchmarkValidate measures the handler path of POST /v1/validate without
// the network: routing, decoding, the cached validation and encoding.
func BenchmarkValidate(b *testing.B) {
	e := newEnvTB(b)
	e.jsonTB(b, "POST", "/v1/products", `{"name":"acme"}`, nil)
	var l api.IssuedLicense
	e.jsonTB(b, "POST", "/v1/licenses", `{"product":"acme","holder":"c","max_machines":0}`, &l)
	body := `{"key":"` + l.Key + `"}`
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			req := httptest.NewRequest("POST", "/v1/validate", strings.NewReader(body))
			req.Header.Set("Content-Type", "application/json")
			w := httptest.NewRecorder()
			e.api.ServeHTTP(w, req)
			if w.Code != http.StatusOK {
				b.Fatalf("status %d: %s", w.Code, w.Body)
			}
		}
	})
}
