package api_test

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/base64"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/keyward/keyward"
	"github.com/keyward/keyward/api"
	"github.com/keyward/keyward/authority"
	"github.com/keyward/keyward/keys"
	"github.com/keyward/keyward/revocation"
	"github.com/keyward/keyward/sdk"
	"github.com/keyward/keyward/store"
	"github.com/keyward/keyward/store/sqlite"
)

type revEnv struct {
	url  string
	auth *authority.Authority
	reg  *revocation.Registry
	ctx  context.Context // issues
	rctx context.Context // revokes (separation of duties)
	hs   *http.Server
}

// newRevEnv serves the API with a revocation registry on a loopback port,
// through api.NewHTTPServer with its timeouts shortened to timeout (so a
// stream must outlive them).
func newRevEnv(t *testing.T, cfg revocation.Config, timeout time.Duration) *revEnv {
	t.Helper()
	ctx := context.Background()
	st, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "k.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	kek, _ := keys.GenerateKEK(nil)
	reg := revocation.New(cfg)
	a, err := authority.New(ctx, authority.Config{Store: store.NotifyRevocations(st, reg.Notify), KEKs: keys.NewKEKRing(kek), Dev: true})
	if err != nil {
		t.Fatal(err)
	}
	if err := reg.Start(ctx, a); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hs := api.NewHTTPServer(ln.Addr().String(), api.New(api.Config{Authority: a, Revocations: reg}), slogDiscard())
	hs.RegisterOnShutdown(reg.Close)
	if timeout > 0 {
		hs.ReadTimeout, hs.WriteTimeout = timeout, timeout
	}
	go hs.Serve(ln)
	t.Cleanup(func() {
		// Generous: under -race on a loaded 2-core machine the streams
		// took over 5 s to notice the registry closing.
		sctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := hs.Shutdown(sctx); err != nil {
			t.Errorf("Shutdown with open streams: %v", err)
		}
	})
	admin := keyward.NewContextWithPrincipal(ctx, keyward.Principal{ID: "tok_admin", Name: "admin", Roles: []string{keyward.RoleAdmin}})
	revoker := keyward.NewContextWithPrincipal(ctx, keyward.Principal{ID: "tok_revoker", Name: "revoker", Roles: []string{keyward.RoleRevoker}})
	return &revEnv{url: "http://" + ln.Addr().String(), auth: a, reg: reg, ctx: admin, rctx: revoker, hs: hs}
}

func (e *revEnv) license(t *testing.T, product string) *keyward.License {
	t.Helper()
	is, err := e.auth.IssueLicense(e.ctx, authority.IssueRequest{Product: product, Holder: "c"})
	if err != nil {
		t.Fatal(err)
	}
	return is.License
}

func (e *revEnv) revoke(t *testing.T, id string) {
	t.Helper()
	if _, err := e.auth.TransitionLicense(e.rctx, id, keyward.LicenseRevoke, "abuse"); err != nil {
		t.Fatal(err)
	}
}

func (e *revEnv) cache(t *testing.T, product string) *sdk.RevocationCache {
	t.Helper()
	set, err := sdk.NewClient(e.url).JWKS(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	c, err := sdk.NewRevocationCache(set, sdk.RevocationOptions{Product: product})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func get(t *testing.T, u string, h map[string]string) (*http.Response, []byte) {
	t.Helper()
	req, _ := http.NewRequest("GET", u, nil)
	for k, v := range h {
		req.Header.Set(k, v)
	}
	tr := &http.Transport{DisableCompression: true}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, b
}

func TestRevocationsEndpoint(t *testing.T) {
	e := newRevEnv(t, revocation.Config{}, 0)
	if _, err := e.auth.CreateProduct(e.ctx, "acme"); err != nil {
		t.Fatal(err)
	}
	l := e.license(t, "acme")
	e.revoke(t, l.ID)
	cache := e.cache(t, "acme")

	resp, body := get(t, e.url+"/v1/revocations?product=acme", nil)
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != revocation.MediaType {
		t.Fatalf("GET snapshot: %d %s %s", resp.StatusCode, resp.Header.Get("Content-Type"), body)
	}
	etag := resp.Header.Get("ETag")
	if err := cache.ApplySnapshot(string(body)); err != nil {
		t.Fatalf("snapshot from the API does not verify with the JWKS registry key: %v", err)
	}
	if err := cache.Check(l.ID, ""); !errors.Is(err, sdk.ErrRevoked) {
		t.Errorf("Check(revoked license) = %v", err)
	}
	// Conditional GET.
	resp, body = get(t, e.url+"/v1/revocations?product=acme", map[string]string{"If-None-Match": `"other", ` + etag})
	if resp.StatusCode != http.StatusNotModified || len(body) != 0 || resp.Header.Get("ETag") != etag {
		t.Errorf("If-None-Match with the current ETag: %d, %d bytes, etag %q", resp.StatusCode, len(body), resp.Header.Get("ETag"))
	}
	if resp, _ = get(t, e.url+"/v1/revocations?product=acme", map[string]string{"If-None-Match": `"s-stale"`}); resp.StatusCode != 200 {
		t.Errorf("If-None-Match with a stale ETag: %d, want 200", resp.StatusCode)
	}
	// Gzip when asked for (large enough to be worth it).
	for i := 0; i < 20; i++ {
		e.revoke(t, e.license(t, "acme").ID)
	}
	waitSeq(t, e, "acme")
	resp, body = get(t, e.url+"/v1/revocations?product=acme", map[string]string{"Accept-Encoding": "gzip"})
	if resp.Header.Get("Content-Encoding") != "gzip" {
		t.Fatalf("Accept-Encoding gzip: Content-Encoding %q", resp.Header.Get("Content-Encoding"))
	}
	zr, err := gzip.NewReader(bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	plain, _ := io.ReadAll(zr)
	if err := cache.ApplySnapshot(string(plain)); err != nil {
		t.Fatalf("gzipped snapshot: %v", err)
	}
	// A delta.
	st, _ := cache.State()
	e.revoke(t, e.license(t, "acme").ID)
	resp, body = get(t, e.url+"/v1/revocations?product=acme&since="+strconv.FormatInt(st.Seq, 10), nil)
	if resp.StatusCode != 200 {
		t.Fatalf("GET delta: %d %s", resp.StatusCode, body)
	}
	if err := cache.ApplyDelta(string(body)); err != nil {
		t.Fatal(err)
	}
	if st2, _ := cache.State(); st2.Seq <= st.Seq || st2.Licenses != st.Licenses+1 {
		t.Errorf("after the delta: %+v (before %+v)", st2, st)
	}

	// Bad input: precise problems.
	for _, c := range []struct {
		query  string
		status int
		code   string
	}{
		{"?since=-1", 400, keyward.EInvalid},
		{"?since=abc", 400, keyward.EInvalid},
		{"?since=99999", 400, keyward.EInvalid},
		{"?product=nope", 404, keyward.ENotFound},
		{"?seq=1", 400, keyward.EInvalid},
		{"?product=acme&product=acme", 400, keyward.EInvalid},
	} {
		for _, path := range []string{"/v1/revocations", "/v1/revocations/stream"} {
			resp, body := get(t, e.url+path+c.query, nil)
			if resp.StatusCode != c.status || !strings.Contains(string(body), c.code) || resp.Header.Get("Content-Type") != "application/problem+json" {
				t.Errorf("GET %s%s = %d %s, want %d %s", path, c.query, resp.StatusCode, body, c.status, c.code)
			}
		}
	}
	if resp, body := get(t, e.url+"/v1/revocations/stream", map[string]string{"Last-Event-ID": "x"}); resp.StatusCode != 400 {
		t.Errorf("stream with a bad Last-Event-ID: %d %s", resp.StatusCode, body)
	}
}

func waitSeq(t *testing.T, e *revEnv, product string) {
	t.Helper()
	head, _ := e.auth.RevocationHead(context.Background())
	v, _ := e.reg.ResolveView(context.Background(), product)
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(2 * time.Millisecond) {
		if d, err := e.reg.Snapshot(context.Background(), v); err == nil && d.Seq >= head {
			return
		}
	}
	t.Fatalf("registry did not reach seq %d", head)
}

func TestRevocationsUnavailableWithoutRegistry(t *testing.T) {
	e := newEnv(t)
	r := e.do(t, "GET", "/v1/revocations", "", "", false)
	if p := problem(t, r); r.status != 503 || p.Code != keyward.EUnavailable {
		t.Errorf("no registry: %d %+v", r.status, p)
	}
}

// sseEvent is one event read from a stream.
type sseEvent struct {
	id, event, data string
}

type sseReader struct {
	resp     *http.Response
	br       *bufio.Reader
	comments int
}

func openStream(t *testing.T, u string, h map[string]string) *sseReader {
	t.Helper()
	req, _ := http.NewRequest("GET", u, nil)
	for k, v := range h {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "text/event-stream" {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("stream: %d %s", resp.StatusCode, b)
	}
	t.Cleanup(func() { resp.Body.Close() })
	return &sseReader{resp: resp, br: bufio.NewReader(resp.Body)}
}

// next reads the next event, counting comment lines (heartbeats) on the way.
func (s *sseReader) next(t *testing.T, timeout time.Duration) sseEvent {
	t.Helper()
	type res struct {
		ev  sseEvent
		err error
	}
	ch := make(chan res, 1)
	go func() {
		var ev sseEvent
		for {
			line, err := s.br.ReadString('\n')
			if err != nil {
				ch <- res{err: err}
				return
			}
			line = strings.TrimSuffix(line, "\n")
			switch {
			case line == "":
				if ev.data != "" {
					ch <- res{ev: ev}
					return
				}
			case strings.HasPrefix(line, ":"):
				s.comments++
			default:
				k, v, _ := strings.Cut(line, ": ")
				switch k {
				case "id":
					ev.id = v
				case "event":
					ev.event = v
				case "data":
					ev.data = v
				}
			}
		}
	}()
	select {
	case r := <-ch:
		if r.err != nil {
			t.Fatalf("stream: %v", r.err)
		}
		return r.ev
	case <-time.After(timeout):
		t.Fatalf("no event within %s", timeout)
		return sseEvent{}
	}
}

func (s *sseReader) close() { s.resp.Body.Close() }

// TestRevocationStream: a subscriber sees a revocation as a signed event
// with id = seq, outliving the server's read and write timeouts thanks to
// heartbeats; after a disconnect it resumes from Last-Event-ID with every
// change it missed, in order.
func TestRevocationStream(t *testing.T) {
	e := newRevEnv(t, revocation.Config{Heartbeat: 50 * time.Millisecond}, 300*time.Millisecond)
	if _, err := e.auth.CreateProduct(e.ctx, "acme"); err != nil {
		t.Fatal(err)
	}
	ls := []*keyward.License{e.license(t, "acme"), e.license(t, "acme"), e.license(t, "acme")}
	cache := e.cache(t, "acme")
	_, body := get(t, e.url+"/v1/revocations?product=acme", nil)
	if err := cache.ApplySnapshot(string(body)); err != nil {
		t.Fatal(err)
	}
	s := openStream(t, e.url+"/v1/revocations/stream?product=acme", nil)
	time.Sleep(700 * time.Millisecond) // past the server's 300ms timeouts
	e.revoke(t, ls[0].ID)
	ev := s.next(t, 5*time.Second)
	if s.comments < 3 {
		t.Errorf("%d comment lines in 700ms, want heartbeats every 50ms", s.comments)
	}
	if ev.event != "revocation" {
		t.Errorf("event type %q", ev.event)
	}
	if err := cache.ApplyDelta(ev.data); err != nil {
		t.Fatalf("event does not verify or chain: %v", err)
	}
	if st, _ := cache.State(); strconv.FormatInt(st.Seq, 10) != ev.id {
		t.Errorf("event id %s, want its to_seq %d", ev.id, st.Seq)
	}
	if err := cache.Check(ls[0].ID, ""); !errors.Is(err, sdk.ErrRevoked) {
		t.Errorf("Check after the event = %v", err)
	}
	s.close()

	// Missed while disconnected.
	e.revoke(t, ls[1].ID)
	e.revoke(t, ls[2].ID)
	s2 := openStream(t, e.url+"/v1/revocations/stream?product=acme", map[string]string{"Last-Event-ID": ev.id})
	got := map[string]bool{}
	for len(got) < 2 {
		ev := s2.next(t, 5*time.Second)
		if err := cache.ApplyDelta(ev.data); err != nil {
			t.Fatalf("replayed event: %v", err)
		}
		d, _ := revocation.DecodeDelta(mustPayload(t, ev.data))
		for _, l := range d.Licenses {
			got[l.ID] = true
		}
	}
	for _, l := range ls[1:] {
		if !got[l.ID] {
			t.Errorf("replay missed %s", l.ID)
		}
		if err := cache.Check(l.ID, ""); !errors.Is(err, sdk.ErrRevoked) {
			t.Errorf("Check(%s) after replay = %v", l.ID, err)
		}
	}
}

func mustPayload(t *testing.T, tok string) []byte {
	t.Helper()
	p, err := revocation.Parse(tok, 0)
	if err != nil {
		t.Fatal(err)
	}
	return p.Payload
}

// TestWatcherThroughForgingProxy: the SDK watcher follows the stream
// through a proxy that rewrites events; every forged event is refused and
// the genuine state is never changed by one.
func TestWatcherThroughForgingProxy(t *testing.T) {
	e := newRevEnv(t, revocation.Config{Heartbeat: 50 * time.Millisecond}, 0)
	if _, err := e.auth.CreateProduct(e.ctx, "acme"); err != nil {
		t.Fatal(err)
	}
	victim, other := e.license(t, "acme"), e.license(t, "acme")
	e.revoke(t, victim.ID)
	target, _ := url.Parse(e.url)
	var forge sync.Mutex
	forging := true
	proxy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		req, _ := http.NewRequestWithContext(r.Context(), r.Method, target.String()+r.URL.RequestURI(), nil)
		req.Header = r.Header.Clone()
		resp, err := http.DefaultTransport.RoundTrip(req)
		if err != nil {
			http.Error(w, err.Error(), 502)
			return
		}
		defer resp.Body.Close()
		for k, v := range resp.Header {
			w.Header()[k] = v
		}
		w.WriteHeader(resp.StatusCode)
		br := bufio.NewReader(resp.Body)
		for {
			line, err := br.ReadString('\n')
			if err != nil {
				io.WriteString(w, line) // the last bytes of a plain body
				return
			}
			forge.Lock()
			f := forging
			forge.Unlock()
			if f && strings.HasPrefix(line, "data: ") {
				// Flip the payload of the event: "revoked" becomes "active".
				tok := strings.TrimSpace(strings.TrimPrefix(line, "data: "))
				parts := strings.Split(tok, ".")
				p, _ := revocation.Parse(tok, 0)
				parts[1] = b64url(strings.ReplaceAll(string(p.Payload), `"revoked"`, `"active"`))
				line = "data: " + strings.Join(parts, ".") + "\n"
			}
			io.WriteString(w, line)
			w.(http.Flusher).Flush()
		}
	}))
	defer proxy.Close()

	cache := e.cache(t, "acme")
	updates := make(chan sdk.RevocationUpdate, 16)
	refused := make(chan error, 16)
	w := &sdk.RevocationWatcher{
		Client: sdk.NewClient(proxy.URL), Cache: cache, Product: "acme", PollInterval: 50 * time.Millisecond,
		OnUpdate: func(u sdk.RevocationUpdate) { updates <- u },
		OnError: func(err error) {
			select {
			case refused <- err:
			default:
			}
		},
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- w.Run(ctx) }()
	defer func() { cancel(); <-done }()
	select {
	case <-updates: // the snapshot (not forged: the proxy only rewrites events)
	case err := <-refused:
		t.Fatalf("before the first snapshot: %v", err)
	case <-time.After(5 * time.Second):
		t.Fatal("no snapshot")
	}
	e.revoke(t, other.ID)
	select {
	case err := <-refused:
		if !errors.Is(err, sdk.ErrBadSignature) {
			t.Fatalf("forged event refused with %v, want ErrBadSignature", err)
		}
	case u := <-updates:
		t.Fatalf("forged event applied: %+v", u)
	case <-time.After(5 * time.Second):
		t.Fatal("forged event neither applied nor refused")
	}
	if err := cache.Check(victim.ID, ""); !errors.Is(err, sdk.ErrRevoked) {
		t.Errorf("victim after forgery: %v", err)
	}
	// The watcher's delta poll (not forged) still brings the truth.
	deadline := time.After(5 * time.Second)
	for {
		if err := cache.Check(other.ID, ""); errors.Is(err, sdk.ErrRevoked) {
			break
		}
		select {
		case <-deadline:
			t.Fatal("the genuine revocation never arrived")
		case <-updates:
		case <-refused:
		}
	}
	forge.Lock()
	forging = false
	forge.Unlock()
}

func b64url(s string) string {
	return strings.TrimRight(strings.NewReplacer("+", "-", "/", "_").Replace(base64Std(s)), "=")
}

func base64Std(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }

func slogDiscard() *slog.Logger { return slog.New(slog.DiscardHandler) }
