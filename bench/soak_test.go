package main

import (
	"context"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/keyward/keyward/cli"
)

// TestSoak runs validation at full speed against the real server on
// loopback while licenses are revoked and keys rotated: zero 5xx, zero
// wrong answers, heap flat. KEYWARD_SOAK=60s runs it for the full
// minute; the default keeps the suite fast.
func TestSoak(t *testing.T) {
	d := 3 * time.Second
	if v := os.Getenv("KEYWARD_SOAK"); v != "" {
		var err error
		if d, err = time.ParseDuration(v); err != nil {
			t.Fatal(err)
		}
	}
	dir := t.TempDir()
	rs, err := cli.StartServer(context.Background(), cli.ServerConfig{Dev: true, DataDir: dir, Listen: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	defer rs.Shutdown(context.Background())
	tok, _ := os.ReadFile(filepath.Join(dir, "admin.token"))
	c := &api{base: "http://" + rs.Addr, token: strings.TrimSpace(string(tok))}
	// Each key is validated thousands of times a minute: a burst, which
	// the built-in policy suspends (docs/abuse.md). The soak is about
	// revocation under load, so its product runs the dev built-in policy
	// without autoSuspend rules.
	const soakPolicy = "apiVersion: keyward.dev/v1\nkind: LifecyclePolicy\nmetadata: {name: soak, product: demo}\n" +
		"spec:\n  revocation: {approvals: 0, autoSuspend: []}\n  duties: {separate: []}\n  mfa: []\n"
	if err := c.post("/v1/products/demo/policies", map[string]any{"document": soakPolicy, "justification": "soak test"}, nil); err != nil {
		t.Fatal(err)
	}
	var out struct{ Licenses []struct{ ID, Key string } }
	if err := c.post("/v1/licenses:batch", map[string]any{"product": "demo", "holder": "soak", "count": 400, "max_machines": 0}, &out); err != nil {
		t.Fatal(err)
	}
	keys, ids := make([]string, len(out.Licenses)), make([]string, len(out.Licenses))
	for i, l := range out.Licenses {
		keys[i], ids[i] = l.Key, l.ID
	}
	heap := func() uint64 {
		runtime.GC()
		var m runtime.MemStats
		runtime.ReadMemStats(&m)
		return m.HeapInuse
	}
	// Warm up, then measure the heap before and after the run.
	if _, err := soak(c.base, c.token, "demo", keys[len(keys)/2:], ids[len(ids)/2:], 4, 500*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	before := heap()
	res, err := soak(c.base, c.token, "demo", keys[:len(keys)/2], ids[:len(ids)/2], 8, d)
	if err != nil {
		t.Fatal(err)
	}
	after := heap()
	t.Logf("%d validations, %d revocations, %d rotations in %v; heap %d → %d KiB", res.Validations, res.Revoked, res.Rotations, d, before>>10, after>>10)
	if res.ServerErrors != 0 || res.WrongAnswers != 0 {
		t.Fatalf("%d server errors, %d wrong answers (first: %s)", res.ServerErrors, res.WrongAnswers, res.FirstWrong)
	}
	if res.Validations < 100 || res.Revoked == 0 || res.Rotations == 0 {
		t.Fatalf("the soak did too little: %+v", res)
	}
	if after > before+32<<20 {
		t.Errorf("heap grew from %d to %d KiB", before>>10, after>>10)
	}
}
