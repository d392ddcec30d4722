package scheduler_test

import (
	"context"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/keyward/keyward"
	"github.com/keyward/keyward/authority"
	"github.com/keyward/keyward/internal/cputime"
	"github.com/keyward/keyward/keys"
	"github.com/keyward/keyward/store/postgres"
	"github.com/keyward/keyward/store/postgres/pgtest"
)

// BenchmarkBulkResign measures bulk re-signing after a rotation —
// licenses re-signed per second through the authority on SQLite
// (authority.ResignBatch's pipelined batches: read in chunks, signed on
// GOMAXPROCS-1 goroutines and the writer, signature rows, cursor, step,
// audit entry and event, commit) — and, in the same run, raw Ed25519
// signing of the same certificate claims with the same number of
// goroutines. It reports both rates and their ratio (target ≥ 0.7).
func BenchmarkBulkResign(b *testing.B) { benchBulkResign(b, newEnv(b, true), true) }

// BenchmarkBulkResignPostgres is BenchmarkBulkResign on PostgreSQL (a
// scratch schema in KEYWARD_TEST_POSTGRES's database; skipped without
// it). The server runs on the same machine, so its CPU competes with the
// signers; the CPU metrics are left out, as the process's CPU would not
// count the server's.
func BenchmarkBulkResignPostgres(b *testing.B) {
	st, err := postgres.Open(context.Background(), pgtest.URL(b), postgres.Options{})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { st.Close() })
	benchBulkResign(b, newEnvOn(b, true, st), false)
}

func benchBulkResign(b *testing.B, e *env, processCPU bool) {
	const n = 2000
	if _, err := e.auth.CreateProduct(e.ctx, "acme"); err != nil {
		b.Fatal(err)
	}
	ids := e.issue(b, "acme", n)
	e.checkoutAll(b, ids)
	ctx := context.Background()

	// The raw baseline: the same claims, signed and encoded as JWS.
	signer, err := keys.Generate(keys.Ed25519, nil)
	if err != nil {
		b.Fatal(err)
	}
	payload := []byte(`{"iss":"keyward","sub":"` + ids[0] + `","aud":"acme","iat":1,"nbf":1,"exp":2,"jti":"crt_06hcx2ym00m6twgsrrqy6213nc","lic":{"policy":0,"entitlements":[],"expires_at":null,"max_machines":0,"holder":"cus-1"}}`)
	raw := func() {
		workers := runtime.GOMAXPROCS(0)
		var wg sync.WaitGroup
		for w := range workers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := w; i < n; i += workers {
					if _, err := keys.SignJWS(signer, keyward.TypCertificate, payload); err != nil {
						b.Error(err)
						return
					}
				}
			}()
		}
		wg.Wait()
	}

	raw1 := func() { // one goroutine: the anchor of a single signer
		for range n {
			if _, err := keys.SignJWS(signer, keyward.TypCertificate, payload); err != nil {
				b.Fatal(err)
			}
		}
	}

	var resignTime, rawTime, raw1Time, resignCPU, rawCPU time.Duration
	for b.Loop() {
		// A manual rotation retires the key that signed every certificate.
		if _, err := e.auth.RotateKey(e.ctx, authority.RotateRequest{Product: "acme", Reason: "benchmark"}); err != nil {
			b.Fatal(err)
		}
		t0, c0 := time.Now(), cputime.Process()
		done := 0
		for {
			p, err := e.auth.ResignBatch(ctx, 0)
			if err != nil {
				b.Fatal(err)
			}
			if p == nil {
				break
			}
			done += p.Resigned
		}
		resignTime += time.Since(t0)
		resignCPU += cputime.Process() - c0
		if done != n {
			b.Fatalf("re-signed %d certificates, want %d", done, n)
		}
		t1, c1 := time.Now(), cputime.Process()
		raw()
		rawTime += time.Since(t1)
		rawCPU += cputime.Process() - c1
		t2 := time.Now()
		raw1()
		raw1Time += time.Since(t2)
	}
	resignRate := float64(n*b.N) / resignTime.Seconds()
	rawRate := float64(n*b.N) / rawTime.Seconds()
	b.ReportMetric(resignRate, "resigned/s")
	b.ReportMetric(rawRate, "raw-signatures/s")
	b.ReportMetric(resignRate/rawRate, "ratio")
	raw1Rate := float64(n*b.N) / raw1Time.Seconds()
	b.ReportMetric(resignRate/raw1Rate, "ratio-1core")
	// CPU per certificate against CPU per raw signature: the ratio the
	// wall-clock one would reach if the cores never idled, and the one a
	// busy machine disturbs least.
	if processCPU && resignCPU > 0 {
		b.ReportMetric(float64(rawCPU)/float64(resignCPU), "cpu-ratio")
		b.ReportMetric(float64(resignCPU.Nanoseconds())/float64(n*b.N), "cpu-ns/cert")
	}
	b.ReportMetric(0, "ns/op")
}
