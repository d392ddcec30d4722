// Command bench measures Keyward against anchors on the same machine, in
// one run, and prints the ratios (docs/benchmarks.md records them):
//
//   - POST /v1/validate (no fingerprint) vs a bare net/http handler that
//     decodes the same JSON request and encodes a same-sized JSON response,
//     both in their own process, driven by the same load generator;
//   - validation with a fingerprint (lease signing) vs raw Ed25519 signing;
//   - batch issuance through the API (licenses/s) vs raw Ed25519 signing;
//   - offline certificate verification (sdk) vs one raw Ed25519 verify;
//   - server RSS with N licenses under load, database bytes per license.
//
// Usage: go run ./bench [-n 1000000] [-conns 64] [-duration 10s]
//
// With -db postgres://… it measures replicas instead (bench/replicas.go,
// docs/deploy.md): validation with 1 … -replicas servers sharing one
// PostgreSQL schema, and revocation propagation from one replica to another.
package main

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/keyward/keyward/keys"
	"github.com/keyward/keyward/sdk"
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == "baseline" {
		runBaseline(os.Args[2])
		return
	}
	n := flag.Int("n", 1_000_000, "licenses to seed")
	conns := flag.Int("conns", 64, "load generator connections")
	dur := flag.Duration("duration", 10*time.Second, "length of each load run")
	working := flag.Int("working-set", 100_000, "distinct keys the load cycles through")
	rounds := flag.Int("rounds", 2, "alternating baseline/keyward rounds (best of each is reported)")
	keep := flag.String("dir", "", "work directory (default: a temporary one, removed after)")
	db := flag.String("db", "", "postgres://… : measure replicas on this database (in a scratch schema, dropped after) instead of the SQLite anchors")
	replicas := flag.Int("replicas", 2, "with -db: measure validation with 1 up to this many replicas")
	watchers := flag.Int("watchers", 10, "with -db: revocation watchers on the second replica")
	changes := flag.Int("changes", 50, "with -db: suspensions through the first replica, each awaited by every watcher")
	flag.Parse()
	if *db != "" {
		if err := runReplicas(replicaOptions{db: *db, replicas: *replicas, n: *n, conns: *conns, dur: *dur, working: *working, rounds: *rounds,
			dir: *keep, watchers: *watchers, changes: *changes}); err != nil {
			fmt.Fprintln(os.Stderr, "bench:", err)
			os.Exit(1)
		}
		return
	}
	if err := run(*n, *conns, *dur, *working, *rounds, *keep); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "%s "+format+"\n", append([]any{time.Now().Format("15:04:05")}, args...)...)
}

func run(n, conns int, dur time.Duration, working, rounds int, dir string) error {
	if dir == "" {
		d, err := os.MkdirTemp("", "keyward-bench-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(d)
		dir = d
	}
	bin := filepath.Join(dir, "keyward")
	logf("building keyward")
	if out, err := exec.Command("go", "build", "-o", bin, "./cmd/keyward").CombinedOutput(); err != nil {
		return fmt.Errorf("go build: %v\n%s", err, out)
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}

	kwAddr, baseAddr := freeAddr(), freeAddr()
	server := exec.Command(bin, "server", "--dev", "--data-dir", filepath.Join(dir, "data"), "--listen", kwAddr, "--log-level", "warn")
	server.Stdout, server.Stderr = io.Discard, os.Stderr
	if err := server.Start(); err != nil {
		return err
	}
	defer server.Process.Kill()
	if err := waitUp("http://" + kwAddr + "/readyz"); err != nil {
		return err
	}
	tok, err := os.ReadFile(filepath.Join(dir, "data", "admin.token"))
	if err != nil {
		return err
	}
	c := &api{base: "http://" + kwAddr, token: strings.TrimSpace(string(tok))}

	keysSeen, issueRate, err := seed(c, n, working)
	if err != nil {
		return err
	}

	// Baseline process.
	base := exec.Command(self, "baseline", baseAddr)
	base.Stderr = os.Stderr
	if err := base.Start(); err != nil {
		return err
	}
	defer base.Process.Kill()
	if err := waitUp("http://" + baseAddr + "/healthz"); err != nil {
		return err
	}

	plain := make([][]byte, len(keysSeen))
	// The lease load uses a smaller set (machines already activated is the
	// steady state; activating 100 000 machines would measure the writer).
	withFP := make([][]byte, min(len(keysSeen), 2000))
	basereqs := make([][]byte, len(keysSeen))
	for i, k := range keysSeen {
		plain[i] = buildRequest(kwAddr, "/v1/validate", []byte(`{"key":"`+k+`"}`))
		if i < len(withFP) {
			withFP[i] = buildRequest(kwAddr, "/v1/validate", []byte(`{"key":"`+k+`","fingerprint":"bench-machine-`+strconv.Itoa(i%7)+`"}`))
		}
		basereqs[i] = buildRequest(baseAddr, "/v1/validate", []byte(`{"key":"`+k+`"}`))
	}

	// Warm both: fills keyward's validation cache and creates the machines.
	logf("warming up")
	if _, err := runLoad(kwAddr, conns, 3*time.Second, plain); err != nil {
		return err
	}
	if _, err := runLoad(kwAddr, conns, 8*time.Second, withFP); err != nil {
		return err
	}
	if _, err := runLoad(baseAddr, conns, time.Second, basereqs); err != nil {
		return err
	}

	var bestBase, bestKW, bestFP loadResult
	for r := range rounds {
		logf("round %d: baseline", r+1)
		b, err := runLoad(baseAddr, conns, dur, basereqs)
		if err != nil {
			return err
		}
		logf("  %.0f req/s p99 %v", b.RPS(), b.P99)
		logf("round %d: keyward validate", r+1)
		k, err := runLoad(kwAddr, conns, dur, plain)
		if err != nil {
			return err
		}
		logf("  %.0f req/s p99 %v errors %d", k.RPS(), k.P99, k.Errors)
		logf("round %d: keyward validate with fingerprint + lease", r+1)
		f, err := runLoad(kwAddr, conns, dur, withFP)
		if err != nil {
			return err
		}
		logf("  %.0f req/s p99 %v errors %d", f.RPS(), f.P99, f.Errors)
		if bestBase.Requests == 0 || b.RPS() > bestBase.RPS() {
			bestBase = b
		}
		if bestKW.Requests == 0 || k.RPS() > bestKW.RPS() {
			bestKW = k
		}
		if bestFP.Requests == 0 || f.RPS() > bestFP.RPS() {
			bestFP = f
		}
	}
	rss := rssOf(server.Process.Pid)

	signRate := parallelRate(func() func() {
		_, priv, _ := ed25519.GenerateKey(nil)
		msg := make([]byte, 300)
		return func() { ed25519.Sign(priv, msg) }
	})
	verifyRatio, err := verifyOverhead(c)
	if err != nil {
		return err
	}
	dbBytes := dbSize(filepath.Join(dir, "data"))

	fmt.Printf("\n## Keyward benchmark — %s, %s, GOMAXPROCS=%d, %d licenses\n\n", time.Now().UTC().Format("2006-01-02"), cpuModel(), runtime.GOMAXPROCS(0), n)
	fmt.Printf("| measure | result | anchor | ratio |\n|---|---|---|---|\n")
	fmt.Printf("| POST /v1/validate, no fingerprint, %d conns | %.0f req/s, p50 %v, p99 %v, %d errors | bare net/http JSON handler: %.0f req/s, p99 %v | **%.2f** |\n",
		conns, bestKW.RPS(), bestKW.P50, bestKW.P99, bestKW.Errors, bestBase.RPS(), bestBase.P99, bestKW.RPS()/bestBase.RPS())
	fmt.Printf("| POST /v1/validate with fingerprint (lease signed) | %.0f req/s, p50 %v, p99 %v, %d errors | raw Ed25519 sign, all cores: %.0f/s | **%.2f** |\n",
		bestFP.RPS(), bestFP.P50, bestFP.P99, bestFP.Errors, signRate, bestFP.RPS()/signRate)
	fmt.Printf("| batch issuance through the API | %.0f licenses/s | raw Ed25519 sign: %.0f/s | **%.2f** |\n", issueRate, signRate, issueRate/signRate)
	fmt.Printf("| offline certificate verification (sdk) | %.2f × one Ed25519 verify | raw ed25519.Verify of the same bytes | **%.2f** |\n", verifyRatio, verifyRatio)
	fmt.Printf("| server RSS after load | %.0f MiB | target 300 MiB | |\n", float64(rss)/(1<<20))
	fmt.Printf("| database size | %.0f bytes/license (%.0f MiB total) | | |\n", float64(dbBytes)/float64(n), float64(dbBytes)/(1<<20))
	return nil
}

// seed issues n licenses of product "bench" through the batch API and
// returns the first working keys and the issuance rate (licenses/s).
func seed(c *api, n, working int) ([]string, float64, error) {
	if err := c.post("/v1/products", map[string]any{"name": "bench"}, nil); err != nil {
		return nil, 0, err
	}
	keysSeen := make([]string, 0, working)
	logf("seeding %d licenses through POST /v1/licenses:batch", n)
	t0 := time.Now()
	for done := 0; done < n; {
		count := min(10000, n-done)
		var out struct {
			Licenses []struct{ ID, Key string }
		}
		if err := c.post("/v1/licenses:batch", map[string]any{"product": "bench", "holder": "bench", "count": count, "max_machines": 0}, &out); err != nil {
			return nil, 0, err
		}
		for _, l := range out.Licenses {
			if len(keysSeen) < working {
				keysSeen = append(keysSeen, l.Key)
			}
		}
		done += count
		if done%100000 == 0 || done == n {
			logf("  %d/%d (%.0f licenses/s)", done, n, float64(done)/time.Since(t0).Seconds())
		}
	}
	return keysSeen, float64(n) / time.Since(t0).Seconds(), nil
}

// runBaseline serves the anchor: decode the same request JSON, encode a
// response of the same size and shape as keyward's answer.
func runBaseline(addr string) {
	type req struct {
		Key         string `json:"key"`
		Fingerprint string `json:"fingerprint,omitempty"`
		Product     string `json:"product,omitempty"`
	}
	type license struct {
		ID, ProductID, Product, Holder, State, KeyPrefix string
		Entitlements                                     []string
		MaxMachines                                      int
		ExpiresAt                                        *time.Time
		CreatedAt, UpdatedAt                             time.Time
		LastValidatedAt                                  *time.Time
	}
	now := time.Now().UTC()
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("ok")) })
	mux.HandleFunc("POST /v1/validate", func(w http.ResponseWriter, r *http.Request) {
		var q req
		dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, 64<<10))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&q); err != nil {
			http.Error(w, err.Error(), 400)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(map[string]any{"valid": true, "code": "VALID", "license": license{
			ID: "lic_06h18a2a1b33snq2xev2c66ssw", ProductID: "prd_06h18a29xz7bqh901hm1q36z70", Product: "bench", Holder: "bench",
			State: "active", KeyPrefix: q.Key[:min(9, len(q.Key))], Entitlements: []string{}, CreatedAt: now, UpdatedAt: now, LastValidatedAt: &now,
		}})
	})
	srv := &http.Server{Addr: addr, Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	if err := srv.ListenAndServe(); err != nil {
		fmt.Fprintln(os.Stderr, "baseline:", err)
		os.Exit(1)
	}
}

type api struct{ base, token string }

func (a *api) post(path string, in, out any) error {
	b, _ := json.Marshal(in)
	req, _ := http.NewRequest("POST", a.base+path, bytes.NewReader(b))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+a.token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	if resp.StatusCode >= 300 {
		return fmt.Errorf("POST %s: %s: %s", path, resp.Status, data)
	}
	if out != nil {
		return json.Unmarshal(data, out)
	}
	return nil
}

func freeAddr() string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	defer l.Close()
	return l.Addr().String()
}

func waitUp(url string) error {
	for range 200 {
		if resp, err := http.Get(url); err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return nil
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	return errors.New("server did not come up: " + url)
}

// parallelRate runs one op per core for a second and returns ops/s.
func parallelRate(mk func() func()) float64 {
	var ops atomic.Int64
	var wg sync.WaitGroup
	deadline := time.Now().Add(2 * time.Second)
	for range runtime.GOMAXPROCS(0) {
		wg.Add(1)
		op := mk()
		go func() {
			defer wg.Done()
			for time.Now().Before(deadline) {
				for range 100 {
					op()
				}
				ops.Add(100)
			}
		}()
	}
	wg.Wait()
	return float64(ops.Load()) / 2
}

// verifyOverhead checks out a real certificate and times sdk verification
// against a raw Ed25519 verify of the same signing input, single-threaded,
// interleaved to share the machine's noise.
func verifyOverhead(c *api) (float64, error) {
	var issued struct{ ID string }
	if err := c.post("/v1/licenses", map[string]any{"product": "bench", "holder": "verify", "max_machines": 0}, &issued); err != nil {
		return 0, err
	}
	var cert struct{ Certificate string }
	if err := c.post("/v1/licenses/"+issued.ID+"/checkout", nil, &cert); err != nil {
		return 0, err
	}
	cl := sdk.NewClient(c.base)
	set, err := cl.JWKS(context.Background())
	if err != nil {
		return 0, err
	}
	v, err := sdk.NewVerifier(set, sdk.Options{})
	if err != nil {
		return 0, err
	}
	j, err := keys.ParseJWS(cert.Certificate)
	if err != nil {
		return 0, err
	}
	jwk, _ := set.Find(j.Header.Kid)
	pub, err := keys.PublicKeyFromJWK(jwk)
	if err != nil {
		return 0, err
	}
	raw := pub.CryptoPublicKey().(ed25519.PublicKey)
	const iters = 20000
	var tSDK, tRaw time.Duration
	for range 5 {
		t0 := time.Now()
		for range iters {
			if _, err := v.VerifyCertificate(cert.Certificate); err != nil {
				return 0, err
			}
		}
		tSDK += time.Since(t0)
		t0 = time.Now()
		for range iters {
			if !ed25519.Verify(raw, j.SigningInput, j.Signature) {
				return 0, errors.New("raw verify failed")
			}
		}
		tRaw += time.Since(t0)
	}
	return float64(tSDK) / float64(tRaw), nil
}

func rssOf(pid int) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, "VmRSS:") {
			f := strings.Fields(line)
			kb, _ := strconv.ParseInt(f[1], 10, 64)
			return kb << 10
		}
	}
	return 0
}

func dbSize(dir string) int64 {
	var total int64
	for _, name := range []string{"keyward.db", "keyward.db-wal"} {
		if st, err := os.Stat(filepath.Join(dir, name)); err == nil {
			total += st.Size()
		}
	}
	return total
}

func cpuModel() string {
	b, _ := os.ReadFile("/proc/cpuinfo")
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, "model name") {
			return strings.TrimSpace(strings.SplitN(line, ":", 2)[1])
		}
	}
	return runtime.GOARCH
}
