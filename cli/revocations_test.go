package cli_test

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/keyward/keyward"
	"github.com/keyward/keyward/cli"
	"github.com/keyward/keyward/sdk"
)

type issuedLicense struct {
	ID  string `json:"id"`
	Key string `json:"key"`
}

// TestRevocationsSurviveRestart: a revocation committed while nobody
// listens, then a restart, is delivered to a subscriber that resumes from
// its Last-Event-ID, exactly once and in order.
func TestRevocationsSurviveRestart(t *testing.T) {
	dir := t.TempDir()
	h := start(t, dir, &lockedBuffer{})
	var a, b issuedLicense
	h.ok(&a, "license", "issue", "--product", "demo", "--holder", "cus_a")
	h.ok(&b, "license", "issue", "--product", "demo", "--holder", "cus_b")
	h.ok(nil, "license", "suspend", a.ID, "--reason", "looking into it")

	// A subscriber that saw the first change, then went away.
	s := openSSE(t, h.url+"/v1/revocations/stream?product=demo&since=0")
	first := s.next(t)
	s.close()
	h.ok(nil, "license", "suspend", b.ID) // while nobody listens
	h.stop()

	h = start(t, dir, &lockedBuffer{})
	defer h.stop()
	h.ok(nil, "license", "reinstate", a.ID) // after the restart
	s2 := openSSE(t, h.url+"/v1/revocations/stream?product=demo", "Last-Event-ID", first.id)
	set, err := sdk.NewClient(h.url).JWKS(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	cache, err := sdk.NewRevocationCache(set, sdk.RevocationOptions{Product: "demo"})
	if err != nil {
		t.Fatal(err)
	}
	// The whole history from 0, signed, still there after the restart.
	tok, err := sdk.NewClient(h.url).RevocationDelta(context.Background(), "demo", 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	d, err := cache.VerifyDelta(tok)
	if err != nil {
		t.Fatal(err)
	}
	var seen []string
	for len(seen) < 2 {
		ev := s2.next(t)
		dd, err := cache.VerifyDelta(ev.data)
		if err != nil {
			t.Fatalf("event after restart: %v", err)
		}
		if fmt.Sprint(dd.ToSeq) != ev.id {
			t.Errorf("event id %s, to_seq %d", ev.id, dd.ToSeq)
		}
		for _, l := range dd.Licenses {
			seen = append(seen, l.ID+":"+l.State)
		}
	}
	want := []string{b.ID + ":suspended", a.ID + ":active"}
	if strings.Join(seen, " ") != strings.Join(want, " ") {
		t.Errorf("after restart the subscriber got %v, want %v (no gap, no duplicate)", seen, want)
	}
	if len(d.Licenses) != 2 || d.FromSeq != 0 {
		t.Errorf("delta from 0 after restart: %+v", d)
	}
}

type sseEv struct{ id, data string }

type sse struct {
	resp *http.Response
	sc   *bufio.Scanner
}

func openSSE(t *testing.T, u string, hdr ...string) *sse {
	t.Helper()
	req, _ := http.NewRequest("GET", u, nil)
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 200 {
		t.Fatalf("stream: %s", resp.Status)
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(nil, 1<<20)
	return &sse{resp: resp, sc: sc}
}

func (s *sse) next(t *testing.T) sseEv {
	t.Helper()
	done := make(chan sseEv, 1)
	go func() {
		var ev sseEv
		for s.sc.Scan() {
			line := s.sc.Text()
			switch {
			case line == "" && ev.data != "":
				done <- ev
				return
			case strings.HasPrefix(line, "id: "):
				ev.id = strings.TrimPrefix(line, "id: ")
			case strings.HasPrefix(line, "data: "):
				ev.data = strings.TrimPrefix(line, "data: ")
			}
		}
		close(done)
	}()
	select {
	case ev, ok := <-done:
		if !ok {
			t.Fatal("stream ended")
		}
		return ev
	case <-time.After(5 * time.Second):
		t.Fatal("no event within 5s")
	}
	return sseEv{}
}

func (s *sse) close() { s.resp.Body.Close() }

// TestRevocationsCLI drives `revocations get`, `verify --revocations` and
// `drill revocation` against the real server.
func TestRevocationsCLI(t *testing.T) {
	dir := t.TempDir()
	h := start(t, dir, &lockedBuffer{})
	defer h.stop()
	var l issuedLicense
	h.ok(&l, "license", "issue", "--product", "demo", "--holder", "cus_a", "--max-machines", "0")
	var cert struct {
		Certificate string `json:"certificate"`
	}
	h.ok(&cert, "license", "checkout", l.ID)
	certFile := filepath.Join(dir, "cert.jwt")
	if err := os.WriteFile(certFile, []byte(cert.Certificate), 0o600); err != nil {
		t.Fatal(err)
	}
	jwks := h.jwksFile("jwks.json")

	snapFile := filepath.Join(dir, "revocations.jwt")
	var snap struct {
		Issuer   string `json:"issuer"`
		Product  string `json:"product"`
		Seq      int64  `json:"seq"`
		Licenses []struct {
			ID    string `json:"id"`
			State string `json:"state"`
		} `json:"licenses"`
	}
	h.ok(&snap, "revocations", "get", "--product", "demo", "--out", snapFile)
	if snap.Product != "demo" || len(snap.Licenses) != 0 {
		t.Fatalf("snapshot before: %+v", snap)
	}
	h.ok(nil, "verify", "--cert", certFile, "--jwks", jwks, "--revocations", snapFile, "--product", "demo")

	h.ok(nil, "license", "suspend", l.ID, "--reason", "chargeback")
	h.ok(&snap, "revocations", "get", "--product", "demo", "--out", snapFile)
	if len(snap.Licenses) != 1 || snap.Licenses[0].ID != l.ID || snap.Licenses[0].State != "suspended" {
		t.Fatalf("snapshot after suspending: %+v", snap)
	}
	_, errs, code := h.run("verify", "--cert", certFile, "--jwks", jwks, "--revocations", snapFile)
	if code == 0 || !strings.Contains(errs, "suspended") {
		t.Errorf("verify with the license suspended in the snapshot: exit %d, %s", code, errs)
	}
	// A tampered snapshot file is refused.
	data, _ := os.ReadFile(snapFile)
	parts := strings.Split(strings.TrimSpace(string(data)), ".")
	parts[2] = strings.Repeat("A", len(parts[2])-1) + "A"
	bad := filepath.Join(dir, "bad.jwt")
	os.WriteFile(bad, []byte(strings.Join(parts, ".")), 0o600)
	if _, errs, code := h.run("verify", "--cert", certFile, "--jwks", jwks, "--revocations", bad); code == 0 || !strings.Contains(errs, "bad_signature") {
		t.Errorf("verify with a tampered snapshot: exit %d, %s", code, errs)
	}

	var delta struct {
		FromSeq  int64 `json:"from_seq"`
		ToSeq    int64 `json:"to_seq"`
		Licenses []struct {
			ID string `json:"id"`
		} `json:"licenses"`
	}
	h.ok(&delta, "revocations", "get", "--product", "demo", "--since", "0")
	if delta.FromSeq != 0 || delta.ToSeq != snap.Seq || len(delta.Licenses) != 1 {
		t.Errorf("delta from 0: %+v", delta)
	}
	h.fails(keyward.EInvalid, "revocations", "get", "--since", "999999")
	h.fails(keyward.ENotFound, "revocations", "get", "--product", "nope")

	var res struct {
		Subscribers int     `json:"subscribers"`
		Revocations int     `json:"revocations"`
		Expected    int     `json:"expected"`
		Delivered   int     `json:"delivered"`
		P50         float64 `json:"p50_ms"`
		P99         float64 `json:"p99_ms"`
		Max         float64 `json:"max_ms"`
		Product     string  `json:"product"`
	}
	h.ok(&res, "drill", "revocation", "--subscribers", "5", "--count", "3")
	if res.Expected != 15 || res.Delivered != 15 || res.Max <= 0 || res.P50 > res.P99 || res.P99 > res.Max {
		t.Errorf("drill: %+v", res)
	}
	// The drill cleaned up: its test licenses are retired, the drill
	// product's registry view holds nothing.
	h.ok(&snap, "revocations", "get", "--product", res.Product)
	if len(snap.Licenses) != 0 {
		t.Errorf("after the drill, its product's snapshot lists %d licenses", len(snap.Licenses))
	}
	var ls []struct {
		State string `json:"state"`
	}
	h.ok(&ls, "license", "list", "--product", res.Product)
	for _, x := range ls {
		if x.State != "retired" {
			t.Errorf("drill license left %s", x.State)
		}
	}
	if len(ls) != 3 {
		t.Errorf("drill product has %d licenses, want 3", len(ls))
	}
}

// TestRevocationsWatch runs `keyward revocations watch` until it prints a
// change made after it started.
func TestRevocationsWatch(t *testing.T) {
	dir := t.TempDir()
	h := start(t, dir, &lockedBuffer{})
	defer h.stop()
	var l issuedLicense
	h.ok(&l, "license", "issue", "--product", "demo", "--holder", "cus_a")
	ctx, cancel := context.WithCancel(context.Background())
	out, errs := &lockedBuffer{}, &lockedBuffer{}
	done := make(chan int)
	go func() {
		done <- cli.Run(ctx, []string{"keyward", "--server", h.url, "revocations", "watch", "--product", "demo"}, out, errs)
	}()
	deadline := time.Now().Add(5 * time.Second)
	for !strings.Contains(out.String(), "snapshot seq") && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	h.ok(nil, "license", "suspend", l.ID)
	for !strings.Contains(out.String(), l.ID) && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	cancel()
	if code := <-done; code != 0 {
		t.Errorf("watch exited %d: %s", code, errs.String())
	}
	if got := out.String(); !strings.Contains(got, "license "+l.ID+"\tsuspended") {
		t.Errorf("watch printed %q, want the suspension of %s", got, l.ID)
	}
}
