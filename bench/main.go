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
	"slices"
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
	keep := flag.String("dir", "", "work directory (default: a temporary one, removed after); kept, with the seeded database and the working keys (keys.txt), for -reuse")
	reuse := flag.Bool("reuse", false, "with -dir: reuse the database an earlier run seeded there instead of seeding -n licenses again (1M take minutes); the issuance rate is then measured on -issue-sample more licenses, which stay in the database")
	issueSample := flag.Int("issue-sample", 50_000, "with -reuse: licenses issued (10 000 per call) to measure the issuance rate; 0 measures none")
	kwBin := flag.String("keyward-bin", "", "run this keyward binary instead of building ./cmd/keyward (to compare two builds on the same database)")
	pprofAddr := flag.String("pprof", "", "start the keyward server with --pprof on this loopback address (e.g. 127.0.0.1:6060) to profile it during the run")
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
	if *reuse && *keep == "" {
		fmt.Fprintln(os.Stderr, "bench: -reuse needs -dir")
		os.Exit(2)
	}
	if err := run(runOptions{n: *n, conns: *conns, dur: *dur, working: *working, rounds: *rounds, dir: *keep,
		reuse: *reuse, issueSample: *issueSample, pprof: *pprofAddr, bin: *kwBin}); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "%s "+format+"\n", append([]any{time.Now().Format("15:04:05")}, args...)...)
}

type runOptions struct {
	n, conns, working, rounds int
	dur                       time.Duration
	dir                       string
	reuse                     bool
	issueSample               int
	pprof                     string
	bin                       string
}

func run(o runOptions) error {
	n, conns, dur, working, rounds, dir := o.n, o.conns, o.dur, o.working, o.rounds, o.dir
	if dir == "" {
		d, err := os.MkdirTemp("", "keyward-bench-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(d)
		dir = d
	}
	bin := o.bin
	if bin == "" {
		bin = filepath.Join(dir, "keyward")
		logf("building keyward")
		if out, err := exec.Command("go", "build", "-o", bin, "./cmd/keyward").CombinedOutput(); err != nil {
			return fmt.Errorf("go build: %v\n%s", err, out)
		}
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}

	kwAddr, baseAddr := freeAddr(), freeAddr()
	args := []string{"server", "--dev", "--data-dir", filepath.Join(dir, "data"), "--listen", kwAddr, "--log-level", "warn"}
	if o.pprof != "" {
		args = append(args, "--pprof", o.pprof)
	}
	server := exec.Command(bin, args...)
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

	var keysSeen []string
	var issueRate float64
	keysFile := filepath.Join(dir, "keys.txt")
	issued, cpu0 := n, cpuOf(server.Process.Pid)
	if o.reuse {
		issued = o.issueSample
		if keysSeen, err = readKeys(keysFile, n, working); err != nil {
			return err
		}
		logf("reusing %d seeded licenses; issuing %d more to measure issuance", n, o.issueSample)
		if o.issueSample > 0 {
			if issueRate, err = issue(c, o.issueSample, nil); err != nil {
				return err
			}
		}
	} else {
		if keysSeen, issueRate, err = seed(c, n, working); err != nil {
			return err
		}
		if o.dir != "" {
			if err := writeKeys(keysFile, n, keysSeen); err != nil {
				return err
			}
		}
	}
	if issued > 0 {
		logf("  issuance: %.0f licenses/s, server CPU %.0f µs per license", issueRate,
			float64(cpuOf(server.Process.Pid)-cpu0)/float64(time.Microsecond)/float64(issued))
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
	w, err := warmLoad(kwAddr, conns, 3*time.Second, time.Minute, plain)
	if err != nil {
		return err
	}
	// The first pass over the working set misses the validation cache
	// (about half of the warm-up's requests): a rough rate of validations
	// that read the database.
	logf("  warm-up: %.0f req/s over %d requests, p99 %v", w.RPS(), w.Requests, w.P99)
	if _, err := runLoad(kwAddr, conns, 8*time.Second, withFP); err != nil {
		return err
	}
	if _, err := runLoad(baseAddr, conns, time.Second, basereqs); err != nil {
		return err
	}

	// Each load also reports the CPU time its server process spent per
	// answer (/proc): on a machine shared with other work, throughput moves
	// with the neighbours, CPU per request much less.
	load := func(pid int, addr string, reqs [][]byte) (loadResult, float64, error) {
		c0 := cpuOf(pid)
		res, err := runLoad(addr, conns, dur, reqs)
		return res, float64(cpuOf(pid)-c0) / float64(time.Microsecond) / float64(max(res.Requests, 1)), err
	}
	var bestBase, bestKW, bestFP loadResult
	var ratios []string
	for r := range rounds {
		logf("round %d: baseline", r+1)
		b, bcpu, err := load(base.Process.Pid, baseAddr, basereqs)
		if err != nil {
			return err
		}
		logf("  %.0f req/s p99 %v, %.1f µs CPU/req", b.RPS(), b.P99, bcpu)
		logf("round %d: keyward validate", r+1)
		k, kcpu, err := load(server.Process.Pid, kwAddr, plain)
		if err != nil {
			return err
		}
		logf("  %.0f req/s p99 %v errors %d, %.1f µs CPU/req", k.RPS(), k.P99, k.Errors, kcpu)
		logf("round %d: ratio %.2f (throughput), CPU per request keyward/baseline %.2f", r+1, k.RPS()/b.RPS(), kcpu/bcpu)
		ratios = append(ratios, fmt.Sprintf("%.2f", k.RPS()/b.RPS()))
		logf("round %d: keyward validate with fingerprint + lease", r+1)
		f, fcpu, err := load(server.Process.Pid, kwAddr, withFP)
		if err != nil {
			return err
		}
		logf("  %.0f req/s p99 %v errors %d, %.1f µs CPU/req", f.RPS(), f.P99, f.Errors, fcpu)
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
	fmt.Printf("| POST /v1/validate, no fingerprint, %d conns | %.0f req/s, p50 %v, p99 %v, %d errors | bare net/http JSON handler: %.0f req/s, p99 %v | **%.2f** (rounds: %s) |\n",
		conns, bestKW.RPS(), bestKW.P50, bestKW.P99, bestKW.Errors, bestBase.RPS(), bestBase.P99, bestKW.RPS()/bestBase.RPS(), strings.Join(ratios, ", "))
	fmt.Printf("| POST /v1/validate with fingerprint (lease signed) | %.0f req/s, p50 %v, p99 %v, %d errors | raw Ed25519 sign, all cores: %.0f/s | **%.2f** |\n",
		bestFP.RPS(), bestFP.P50, bestFP.P99, bestFP.Errors, signRate, bestFP.RPS()/signRate)
	fmt.Printf("| batch issuance through the API | %.0f licenses/s | raw Ed25519 sign: %.0f/s | **%.2f** |\n", issueRate, signRate, issueRate/signRate)
	fmt.Printf("| offline certificate verification (sdk) | %.2f × one Ed25519 verify | raw ed25519.Verify of the same bytes | **%.2f** |\n", verifyRatio, verifyRatio)
	fmt.Printf("| server RSS after load | %.0f MiB | target 300 MiB | |\n", float64(rss)/(1<<20))
	fmt.Printf("| database size | %.0f bytes/license (%.0f MiB total) | | |\n", float64(dbBytes)/float64(n), float64(dbBytes)/(1<<20))
	return nil
}

// seed creates product "bench", issues n licenses of it through the batch
// API and returns the first working keys and the issuance rate
// (licenses/s).
func seed(c *api, n, working int) ([]string, float64, error) {
	if err := c.post("/v1/products", map[string]any{"name": "bench"}, nil); err != nil {
		return nil, 0, err
	}
	keysSeen := make([]string, 0, working)
	logf("seeding %d licenses through POST /v1/licenses:batch", n)
	rate, err := issue(c, n, func(key string) {
		if len(keysSeen) < working {
			keysSeen = append(keysSeen, key)
		}
	})
	return keysSeen, rate, err
}

// issue issues n licenses of product "bench" through the batch API
// (10 000 per call), passes each new key to seen (if not nil) and returns
// the issuance rate (licenses/s).
func issue(c *api, n int, seen func(key string)) (float64, error) {
	t0 := time.Now()
	for done := 0; done < n; {
		count := min(10000, n-done)
		var out struct {
			Licenses []struct{ ID, Key string }
		}
		if err := c.post("/v1/licenses:batch", map[string]any{"product": "bench", "holder": "bench", "count": count, "max_machines": 0}, &out); err != nil {
			return 0, err
		}
		if seen != nil {
			for _, l := range out.Licenses {
				seen(l.Key)
			}
		}
		done += count
		if done%100000 == 0 || done == n {
			logf("  %d/%d (%.0f licenses/s)", done, n, float64(done)/time.Since(t0).Seconds())
		}
	}
	return float64(n) / time.Since(t0).Seconds(), nil
}

// writeKeys records, for -reuse, how many licenses the database was seeded
// with and the working keys (the server keeps only their hashes).
func writeKeys(path string, n int, keys []string) error {
	var b strings.Builder
	fmt.Fprintf(&b, "licenses %d\n", n)
	for _, k := range keys {
		b.WriteString(k + "\n")
	}
	return os.WriteFile(path, []byte(b.String()), 0o600)
}

// readKeys reads what writeKeys wrote, checking it matches -n and holds at
// least working keys.
func readKeys(path string, n, working int) ([]string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("-reuse: %w (run once with the same -dir and without -reuse to seed)", err)
	}
	lines := strings.Fields(string(b))
	if len(lines) < 2 || lines[0] != "licenses" || lines[1] != strconv.Itoa(n) {
		return nil, fmt.Errorf("-reuse: %s was not seeded with -n %d", path, n)
	}
	keys := lines[2:]
	if len(keys) < working {
		return nil, fmt.Errorf("-reuse: %s holds %d working keys, -working-set asks for %d", path, len(keys), working)
	}
	return keys[:working], nil
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
	// 100 alternating rounds of 1 000 each; the median of the per-round
	// ratios, so a round that the machine's neighbours slowed down does not
	// sway the result the way summed times would.
	const rounds, iters = 100, 1000
	ratios := make([]float64, 0, rounds)
	for range rounds {
		t0 := time.Now()
		for range iters {
			if _, err := v.VerifyCertificate(cert.Certificate); err != nil {
				return 0, err
			}
		}
		tSDK := time.Since(t0)
		t0 = time.Now()
		for range iters {
			if !ed25519.Verify(raw, j.SigningInput, j.Signature) {
				return 0, errors.New("raw verify failed")
			}
		}
		ratios = append(ratios, float64(tSDK)/float64(time.Since(t0)))
	}
	slices.Sort(ratios)
	return ratios[len(ratios)/2], nil
}

// cpuOf returns the CPU time (user and system) process pid has used so
// far, from /proc (0 where there is none), in 10 ms steps.
func cpuOf(pid int) time.Duration {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	// Fields after the parenthesised command name; utime and stime are
	// the 14th and 15th fields, in clock ticks (USER_HZ, 100 on Linux).
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return 0
	}
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(ut+st) * 10 * time.Millisecond
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
