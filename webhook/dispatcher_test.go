package webhook_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/keyward/keyward"
	"github.com/keyward/keyward/authority"
	"github.com/keyward/keyward/keys"
	"github.com/keyward/keyward/store"
	"github.com/keyward/keyward/store/sqlite"
	"github.com/keyward/keyward/webhook"
)

// clock is a test clock.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time          { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) Advance(d time.Duration) { c.mu.Lock(); c.t = c.t.Add(d); c.mu.Unlock() }

// lockedBuffer is a goroutine-safe log sink.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}
func (l *lockedBuffer) String() string { l.mu.Lock(); defer l.mu.Unlock(); return l.b.String() }

// directPolicy is the built-in policy without approvals, duties or MFA:
// these tests revoke in one step, as one principal; governance has its own.
type directPolicy struct{}

func (directPolicy) Policy(context.Context, string) (*keyward.Policy, error) {
	p := keyward.DefaultPolicy()
	p.RevocationApprovals, p.Duties, p.MFA = 0, nil, nil
	return p, nil
}

// topDraw makes Schedule's full jitter deterministic: every wait is its cap.
func topDraw(n int64) int64 { return n - 1 }

type fixture struct {
	t       *testing.T
	path    string
	st      store.Store
	ring    *keys.KEKRing
	clock   *clock
	auth    *authority.Authority
	ctx     context.Context
	logs    *lockedBuffer
	secrets []webhook.Secret // every secret revealed, checked against logs at the end
	product string
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	k, err := keys.GenerateKEK(nil)
	if err != nil {
		t.Fatal(err)
	}
	f := &fixture{
		t: t, path: filepath.Join(t.TempDir(), "k.db"), ring: keys.NewKEKRing(k),
		clock: &clock{t: time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)}, logs: &lockedBuffer{},
		ctx: keyward.NewContextWithPrincipal(context.Background(), keyward.Principal{ID: "tok_admin", Name: "admin", Roles: []string{keyward.RoleAdmin}}),
	}
	f.open(nil)
	t.Cleanup(func() {
		f.st.Close()
		f.checkNoSecretLeaked()
	})
	p, err := f.auth.CreateProduct(f.ctx, "acme")
	if err != nil {
		t.Fatal(err)
	}
	f.product = p.ID
	return f
}

// open (re)opens the store file and a fresh authority on it, as a server
// start does. With wake, the authority's store wakes a dispatcher.
func (f *fixture) open(wake chan<- struct{}) {
	f.t.Helper()
	st, err := sqlite.Open(context.Background(), f.path)
	if err != nil {
		f.t.Fatal(err)
	}
	f.st = st
	var authStore store.Store = st
	if wake != nil {
		authStore = webhook.WakeOnEvents(st, wake)
	}
	f.auth, err = authority.New(context.Background(), authority.Config{
		Store: authStore, KEKs: f.ring, Clock: f.clock, WebhookAllowPrivate: true, Policies: directPolicy{},
		Logger: slog.New(slog.NewJSONHandler(f.logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
	})
	if err != nil {
		f.t.Fatal(err)
	}
}

// restart closes the store and opens everything again: a server restart.
func (f *fixture) restart() {
	f.t.Helper()
	if err := f.st.Close(); err != nil {
		f.t.Fatal(err)
	}
	f.open(nil)
}

func (f *fixture) dispatcher(cfg webhook.Config) *webhook.Dispatcher {
	f.t.Helper()
	cfg.Store, cfg.Endpoints, cfg.Clock = f.st, f.auth, f.clock
	if cfg.Backoff == nil {
		cfg.Backoff = webhook.Schedule{Caps: webhook.DefaultCaps(), Rand: topDraw}
	}
	if cfg.Client == nil && !cfg.AllowPrivate {
		cfg.AllowPrivate = true
	}
	cfg.Logger = slog.New(slog.NewJSONHandler(f.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	d, err := webhook.New(cfg)
	if err != nil {
		f.t.Fatal(err)
	}
	return d
}

func (f *fixture) addEndpoint(url string, events ...string) (*keyward.WebhookEndpoint, webhook.Secret) {
	f.t.Helper()
	ep, sec, err := f.auth.CreateWebhook(f.ctx, authority.WebhookRequest{URL: url, Events: events})
	if err != nil {
		f.t.Fatalf("CreateWebhook(%s, %v) = %v", url, events, err)
	}
	f.secrets = append(f.secrets, sec)
	return ep, sec
}

func (f *fixture) license() *keyward.License {
	f.t.Helper()
	is, err := f.auth.IssueLicense(f.ctx, authority.IssueRequest{Product: f.product, Holder: "cus_1"})
	if err != nil {
		f.t.Fatal(err)
	}
	return is.License
}

func (f *fixture) revoke(id string) {
	f.t.Helper()
	if _, err := f.auth.TransitionLicense(f.ctx, id, keyward.LicenseRevoke, "abuse"); err != nil {
		f.t.Fatalf("revoke %s: %v", id, err)
	}
}

func (f *fixture) suspend(id string) {
	f.t.Helper()
	if _, err := f.auth.TransitionLicense(f.ctx, id, keyward.LicenseSuspend, "suspected abuse"); err != nil {
		f.t.Fatalf("suspend %s: %v", id, err)
	}
}

func (f *fixture) tick(d *webhook.Dispatcher) webhook.Stats {
	f.t.Helper()
	st, err := d.Tick(context.Background())
	if err != nil {
		f.t.Fatalf("Tick = %v", err)
	}
	return st
}

func (f *fixture) deliveries(q authority.DeliveryQuery) []*keyward.WebhookDelivery {
	f.t.Helper()
	ds, err := f.auth.WebhookDeliveries(f.ctx, q)
	if err != nil {
		f.t.Fatal(err)
	}
	return ds
}

// only returns the one delivery of an endpoint.
func (f *fixture) only(endpointID string) *keyward.WebhookDelivery {
	f.t.Helper()
	ds := f.deliveries(authority.DeliveryQuery{Endpoint: endpointID})
	if len(ds) != 1 {
		f.t.Fatalf("endpoint %s has %d deliveries, want 1", endpointID, len(ds))
	}
	return ds[0]
}

func (f *fixture) events(typ string) []*keyward.Event {
	f.t.Helper()
	var out []*keyward.Event
	err := f.st.View(context.Background(), func(tx store.Tx) error {
		es, err := tx.Events(0, 0)
		for _, e := range es {
			if e.Type == typ {
				out = append(out, e)
			}
		}
		return err
	})
	if err != nil {
		f.t.Fatal(err)
	}
	return out
}

// checkNoSecretLeaked looks for every revealed secret in the logs, the
// audit log, the outbox and the delivery log.
func (f *fixture) checkNoSecretLeaked() {
	var hay strings.Builder
	hay.WriteString(f.logs.String())
	st, err := sqlite.Open(context.Background(), f.path)
	if err != nil {
		f.t.Errorf("reopen for the leak check: %v", err)
		return
	}
	defer st.Close()
	_ = st.View(context.Background(), func(tx store.Tx) error {
		as, _ := tx.AuditEntries(store.AuditFilter{})
		for _, a := range as {
			fmt.Fprintf(&hay, "%s %s %s\n", a.Details, a.Reason, a.TargetID)
		}
		es, _ := tx.Events(0, 0)
		for _, e := range es {
			fmt.Fprintf(&hay, "%s\n", e.Data)
		}
		ds, _ := tx.WebhookDeliveries(store.DeliveryFilter{})
		for _, d := range ds {
			fmt.Fprintf(&hay, "%s %s\n", d.LastError, d.Payload)
		}
		return nil
	})
	for _, s := range f.secrets {
		b64 := strings.TrimPrefix(s.Reveal(), "whsec_")
		if strings.Contains(hay.String(), b64) {
			f.t.Errorf("a webhook secret appears in logs, audit, outbox or delivery log")
		}
	}
}

// receiver is a webhook receiver on loopback that records every request and
// answers with status(n) for the n-th (0-based).
type receiver struct {
	*httptest.Server
	mu     sync.Mutex
	reqs   []received
	status func(n int) int
	header http.Header // extra answer headers
}

type received struct {
	header http.Header
	body   []byte
}

func newReceiver(t *testing.T, status func(n int) int) *receiver {
	t.Helper()
	r := &receiver{status: status, header: http.Header{}}
	r.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		body, _ := io.ReadAll(req.Body)
		r.mu.Lock()
		n := len(r.reqs)
		r.reqs = append(r.reqs, received{header: req.Header.Clone(), body: body})
		for k, v := range r.header {
			w.Header()[k] = v
		}
		r.mu.Unlock()
		if req.Method != http.MethodPost {
			w.WriteHeader(http.StatusMethodNotAllowed)
			return
		}
		w.WriteHeader(r.status(n))
	}))
	t.Cleanup(r.Close)
	return r
}

func always(code int) func(int) int { return func(int) int { return code } }

func (r *receiver) got() []received {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.reqs)
}

type payload struct {
	Type      string `json:"type"`
	Timestamp string `json:"timestamp"`
	Data      struct {
		TargetType string `json:"target_type"`
		TargetID   string `json:"target_id"`
		Before     string `json:"before"`
		After      string `json:"after"`
		Reason     string `json:"reason"`
	} `json:"data"`
}

func decodePayload(t *testing.T, b []byte) payload {
	t.Helper()
	var p payload
	dec := json.NewDecoder(bytes.NewReader(b))
	if err := dec.Decode(&p); err != nil {
		t.Fatalf("payload %s: %v", b, err)
	}
	return p
}

// TestDeliverAfterRevoke is the main path: a license revoke reaches a real
// HTTP receiver on loopback, signed so that the Standard Webhooks algorithm
// (written out independently in this test) verifies it.
func TestDeliverAfterRevoke(t *testing.T) {
	f := newFixture(t)
	rcv := newReceiver(t, always(http.StatusNoContent))
	ep, sec := f.addEndpoint(rcv.URL+"/hooks/keyward", "license.revoked")
	d := f.dispatcher(webhook.Config{})
	lic := f.license()
	f.revoke(lic.ID)

	st := f.tick(d)
	if st.Created != 1 || st.Attempted != 1 || st.Succeeded != 1 {
		t.Fatalf("Tick = %+v, want one delivery (license.revoked only) attempted and succeeded", st)
	}
	got := rcv.got()
	if len(got) != 1 {
		t.Fatalf("receiver got %d requests, want 1", len(got))
	}
	r := got[0]
	if !standardVerify(t, sec.Reveal(), r.header, r.body) {
		t.Fatalf("signature %q does not verify with the Standard Webhooks algorithm", r.header.Get("webhook-signature"))
	}
	if err := webhook.Verify([]webhook.Secret{sec}, r.header, r.body, f.clock.Now(), 0); err != nil {
		t.Fatalf("Verify = %v", err)
	}
	if ct := r.header.Get("Content-Type"); ct != "application/json" {
		t.Fatalf("Content-Type = %q", ct)
	}
	if ts := r.header.Get("webhook-timestamp"); ts != strconv.FormatInt(f.clock.Now().Unix(), 10) {
		t.Fatalf("webhook-timestamp = %s, want the attempt time %d", ts, f.clock.Now().Unix())
	}
	revoked := f.events("license.revoked")
	if len(revoked) != 1 || r.header.Get("webhook-id") != revoked[0].ID {
		t.Fatalf("webhook-id = %q, want the outbox event id %v", r.header.Get("webhook-id"), revoked)
	}
	p := decodePayload(t, r.body)
	if p.Type != "license.revoked" || p.Data.TargetID != lic.ID || p.Data.After != "revoked" || p.Data.Reason != "abuse" {
		t.Fatalf("payload = %+v, want license.revoked of %s", p, lic.ID)
	}
	if ts, err := time.Parse(time.RFC3339Nano, p.Timestamp); err != nil || !ts.Equal(revoked[0].Time) {
		t.Fatalf("payload timestamp %q, want the event time %s", p.Timestamp, revoked[0].Time)
	}

	dl := f.only(ep.ID)
	if dl.State != keyward.DeliverySucceeded || dl.Attempts != 1 || dl.LastStatus != 204 || dl.NextAttemptAt != nil || dl.LastError != "" {
		t.Fatalf("delivery log = %+v, want succeeded after 1 attempt with 204", dl)
	}
	if st := f.tick(d); st.Attempted != 0 || st.Created != 0 {
		t.Fatalf("second Tick = %+v, want nothing (no duplicate)", st)
	}
}

// TestRetryWithBackoff: a receiver that fails twice is retried after the
// schedule's waits (controlled clock, jitter drawn at the cap), then
// succeeds; every attempt has the same webhook-id and body and a fresh,
// valid signature.
func TestRetryWithBackoff(t *testing.T) {
	f := newFixture(t)
	rcv := newReceiver(t, func(n int) int { return []int{500, 503, 200}[min(n, 2)] })
	ep, sec := f.addEndpoint(rcv.URL, "license.suspended")
	d := f.dispatcher(webhook.Config{})
	f.suspend(f.license().ID)

	start := f.clock.Now()
	if st := f.tick(d); st.Attempted != 1 || st.Succeeded != 0 {
		t.Fatalf("Tick 1 = %+v", st)
	}
	dl := f.only(ep.ID)
	if dl.State != keyward.DeliveryPending || dl.Attempts != 1 || dl.LastStatus != 500 ||
		!strings.Contains(dl.LastError, "500") || dl.NextAttemptAt == nil || !dl.NextAttemptAt.Equal(start.Add(5*time.Second)) {
		t.Fatalf("after attempt 1: %+v; want pending, next attempt at +5s", dl)
	}

	f.clock.Advance(4 * time.Second)
	if st := f.tick(d); st.Attempted != 0 {
		t.Fatalf("Tick before the retry is due = %+v, want no attempt", st)
	}
	f.clock.Advance(time.Second)
	if st := f.tick(d); st.Attempted != 1 {
		t.Fatalf("Tick at +5s = %+v, want the retry", st)
	}
	dl = f.only(ep.ID)
	if dl.Attempts != 2 || dl.LastStatus != 503 || !dl.NextAttemptAt.Equal(start.Add(35*time.Second)) {
		t.Fatalf("after attempt 2: %+v; want next attempt 30s later", dl)
	}
	f.clock.Advance(30 * time.Second)
	if st := f.tick(d); st.Succeeded != 1 {
		t.Fatalf("Tick at +35s = %+v, want success", st)
	}
	dl = f.only(ep.ID)
	if dl.State != keyward.DeliverySucceeded || dl.Attempts != 3 || dl.LastStatus != 200 || dl.LastError != "" {
		t.Fatalf("after attempt 3: %+v", dl)
	}

	got := rcv.got()
	if len(got) != 3 {
		t.Fatalf("receiver got %d requests, want 3", len(got))
	}
	for i, r := range got {
		if r.header.Get("webhook-id") != got[0].header.Get("webhook-id") || !bytes.Equal(r.body, got[0].body) {
			t.Fatalf("attempt %d: webhook-id %q, body %s; want the first attempt's", i, r.header.Get("webhook-id"), r.body)
		}
		want := strconv.FormatInt(start.Add([]time.Duration{0, 5 * time.Second, 35 * time.Second}[i]).Unix(), 10)
		if r.header.Get("webhook-timestamp") != want {
			t.Fatalf("attempt %d: webhook-timestamp %s, want %s (the attempt's time)", i, r.header.Get("webhook-timestamp"), want)
		}
		if !standardVerify(t, sec.Reveal(), r.header, r.body) {
			t.Fatalf("attempt %d: signature does not verify", i)
		}
	}
}

// TestFailedThenReplay: attempts run out, the delivery fails and stays
// failed; a replay sends it again with the same webhook-id once the
// receiver is back.
func TestFailedThenReplay(t *testing.T) {
	f := newFixture(t)
	var mu sync.Mutex
	down := true
	rcv := newReceiver(t, func(int) int {
		mu.Lock()
		defer mu.Unlock()
		if down {
			return http.StatusBadGateway
		}
		return http.StatusOK
	})
	ep, _ := f.addEndpoint(rcv.URL, "license.*")
	d := f.dispatcher(webhook.Config{Backoff: webhook.Schedule{Caps: []time.Duration{time.Second, time.Minute}, Rand: topDraw}})
	f.suspend(f.license().ID) // license.issued and license.suspended

	f.tick(d)
	f.clock.Advance(time.Second)
	f.tick(d)
	f.clock.Advance(time.Minute)
	f.tick(d)
	f.clock.Advance(time.Hour)
	if st := f.tick(d); st.Attempted != 0 {
		t.Fatalf("Tick after the last attempt = %+v, want nothing", st)
	}
	failed := f.deliveries(authority.DeliveryQuery{Endpoint: ep.ID, State: "failed"})
	if len(failed) != 2 {
		t.Fatalf("failed deliveries = %d, want 2", len(failed))
	}
	for _, dl := range failed {
		if dl.Attempts != 3 || dl.LastStatus != 502 || dl.NextAttemptAt != nil {
			t.Fatalf("failed delivery %+v, want 3 attempts, last 502, nothing scheduled", dl)
		}
	}
	if n := len(rcv.got()); n != 6 {
		t.Fatalf("receiver got %d requests, want 6 (2 deliveries × 3 attempts)", n)
	}

	mu.Lock()
	down = false
	mu.Unlock()
	dl := failed[0]
	replayed, err := f.auth.ReplayWebhookDelivery(f.ctx, dl.ID)
	if err != nil {
		t.Fatalf("ReplayWebhookDelivery = %v", err)
	}
	if replayed.State != keyward.DeliveryPending || replayed.Attempts != 0 {
		t.Fatalf("replayed = %+v, want pending with fresh attempts", replayed)
	}
	if _, err := f.auth.ReplayWebhookDelivery(f.ctx, dl.ID); keyward.ErrorCode(err) != keyward.EConflict {
		t.Fatalf("ReplayWebhookDelivery(pending) = %v, want %s", err, keyward.EConflict)
	}
	if _, err := f.auth.ReplayWebhookDelivery(f.ctx, "dlv_missing"); keyward.ErrorCode(err) != keyward.ENotFound {
		t.Fatalf("ReplayWebhookDelivery(missing) = %v, want %s", err, keyward.ENotFound)
	}
	if st := f.tick(d); st.Succeeded != 1 {
		t.Fatalf("Tick after replay = %+v, want the replayed delivery to succeed", st)
	}
	got := rcv.got()
	last := got[len(got)-1]
	if last.header.Get("webhook-id") != dl.EventID || !bytes.Equal(last.body, dl.Payload) {
		t.Fatalf("replay sent webhook-id %q, want %q with the same body", last.header.Get("webhook-id"), dl.EventID)
	}
	if len(f.deliveries(authority.DeliveryQuery{State: "failed"})) != 1 {
		t.Fatalf("the other delivery should still be failed")
	}
}

// TestRestartResumes: events committed while no dispatcher ran are
// delivered after a restart, exactly those, and an attempt cut short by a
// shutdown is made again once its lease runs out.
func TestRestartResumes(t *testing.T) {
	f := newFixture(t)
	release := make(chan struct{})
	var block sync.Once
	arrived := make(chan struct{}, 16)
	var blocking bool
	var mu sync.Mutex
	rcv := newReceiver(t, func(int) int {
		arrived <- struct{}{}
		mu.Lock()
		b := blocking
		mu.Unlock()
		if b {
			<-release
		}
		return http.StatusOK
	})
	t.Cleanup(func() { block.Do(func() { close(release) }) })
	ep, _ := f.addEndpoint(rcv.URL, "license.revoked")
	d := f.dispatcher(webhook.Config{Timeout: 5 * time.Second})
	l1, l2, l3 := f.license(), f.license(), f.license()
	f.revoke(l1.ID)
	f.tick(d)

	// Two revocations commit, then the server stops before fanning them out.
	f.revoke(l2.ID)
	f.revoke(l3.ID)
	f.restart()
	d = f.dispatcher(webhook.Config{Timeout: 5 * time.Second})
	if st := f.tick(d); st.Created != 2 || st.Succeeded != 2 {
		t.Fatalf("Tick after restart = %+v, want the 2 events committed meanwhile", st)
	}
	var ids []string
	for _, r := range rcv.got() {
		ids = append(ids, r.header.Get("webhook-id"))
	}
	var want []string
	for _, e := range f.events("license.revoked") {
		want = append(want, e.ID)
	}
	slices.Sort(ids)
	slices.Sort(want)
	if !slices.Equal(ids, want) {
		t.Fatalf("receiver got webhook-ids %v, want each revocation once: %v", ids, want)
	}
	for range 3 {
		<-arrived
	}

	// A shutdown in the middle of an attempt: the result is never recorded.
	mu.Lock()
	blocking = true
	mu.Unlock()
	l4 := f.license()
	f.revoke(l4.ID)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { _, err := d.Tick(ctx); done <- err }()
	<-arrived
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("Tick cancelled mid-attempt = %v, want context.Canceled", err)
	}
	mu.Lock()
	blocking = false
	mu.Unlock()
	block.Do(func() { close(release) })

	f.restart()
	d = f.dispatcher(webhook.Config{Timeout: 5 * time.Second})
	if st := f.tick(d); st.Attempted != 0 {
		t.Fatalf("Tick while the claim's lease holds = %+v, want nothing", st)
	}
	f.clock.Advance(5*time.Second + 30*time.Second)
	if st := f.tick(d); st.Succeeded != 1 {
		t.Fatalf("Tick after the lease = %+v, want the interrupted delivery made again", st)
	}
	ds := f.deliveries(authority.DeliveryQuery{Endpoint: ep.ID})
	last := slices.MaxFunc(ds, func(a, b *keyward.WebhookDelivery) int { return int(a.EventSeq - b.EventSeq) })
	if len(ds) != 4 || last.State != keyward.DeliverySucceeded || last.Attempts != 2 {
		t.Fatalf("delivery log = %d entries, last event's %+v; want 4, the last succeeded on attempt 2", len(ds), last)
	}
}

// TestRotationSendsBothSignatures: during the grace period each delivery is
// signed with the new and the old secret; afterwards with the new one only.
func TestRotationSendsBothSignatures(t *testing.T) {
	f := newFixture(t)
	rcv := newReceiver(t, always(http.StatusOK))
	ep, old := f.addEndpoint(rcv.URL, "license.suspended")
	d := f.dispatcher(webhook.Config{})
	grace := time.Hour
	rotated, cur, err := f.auth.RotateWebhookSecret(f.ctx, ep.ID, &grace)
	if err != nil {
		t.Fatalf("RotateWebhookSecret = %v", err)
	}
	f.secrets = append(f.secrets, cur)
	if rotated.PreviousExpiresAt == nil || !rotated.PreviousExpiresAt.Equal(f.clock.Now().Add(time.Hour)) {
		t.Fatalf("rotated endpoint = %+v, want the old secret kept 1h", rotated)
	}
	if bytes.Equal(cur.Bytes(), old.Bytes()) {
		t.Fatal("rotation kept the same secret")
	}

	f.suspend(f.license().ID)
	f.tick(d)
	r := rcv.got()[0]
	sigs := strings.Split(r.header.Get("webhook-signature"), " ")
	if len(sigs) != 2 {
		t.Fatalf("webhook-signature = %q, want two signatures during the grace period", r.header.Get("webhook-signature"))
	}
	ts, _ := strconv.ParseInt(r.header.Get("webhook-timestamp"), 10, 64)
	if sigs[0] != standardSign(t, cur.Reveal(), r.header.Get("webhook-id"), ts, r.body) ||
		sigs[1] != standardSign(t, old.Reveal(), r.header.Get("webhook-id"), ts, r.body) {
		t.Fatalf("signatures %v: want the new secret's, then the old one's", sigs)
	}
	if !standardVerify(t, old.Reveal(), r.header, r.body) || !standardVerify(t, cur.Reveal(), r.header, r.body) {
		t.Fatal("a receiver with either secret must verify the delivery")
	}

	f.clock.Advance(time.Hour)
	f.suspend(f.license().ID)
	f.tick(d)
	r = rcv.got()[1]
	if sigs := strings.Split(r.header.Get("webhook-signature"), " "); len(sigs) != 1 {
		t.Fatalf("webhook-signature after the grace period = %v, want one", sigs)
	}
	if !standardVerify(t, cur.Reveal(), r.header, r.body) || standardVerify(t, old.Reveal(), r.header, r.body) {
		t.Fatal("after the grace period only the new secret may verify")
	}

	// Without grace the old secret stops at once (a leaked secret).
	zero := time.Duration(0)
	_, newest, err := f.auth.RotateWebhookSecret(f.ctx, ep.ID, &zero)
	if err != nil {
		t.Fatal(err)
	}
	f.secrets = append(f.secrets, newest)
	f.suspend(f.license().ID)
	f.tick(d)
	r = rcv.got()[2]
	if !standardVerify(t, newest.Reveal(), r.header, r.body) || standardVerify(t, cur.Reveal(), r.header, r.body) ||
		len(strings.Split(r.header.Get("webhook-signature"), " ")) != 1 {
		t.Fatalf("after a rotation without grace: signatures %q", r.header.Get("webhook-signature"))
	}
}

// TestFanOutMatching: each endpoint gets the types it subscribed to, from
// its creation on; disabled endpoints get nothing.
func TestFanOutMatching(t *testing.T) {
	f := newFixture(t)
	rcv := newReceiver(t, always(http.StatusOK))
	exact, _ := f.addEndpoint(rcv.URL+"/exact", "license.revoked")
	group, _ := f.addEndpoint(rcv.URL+"/group", "license.*")
	all, _ := f.addEndpoint(rcv.URL+"/all", "*")
	keysOnly, _ := f.addEndpoint(rcv.URL+"/keys", "key.compromised")
	off, _ := f.addEndpoint(rcv.URL+"/off", "*")
	if _, err := f.auth.DisableWebhook(f.ctx, off.ID, "maintenance"); err != nil {
		t.Fatal(err)
	}
	back, _ := f.addEndpoint(rcv.URL+"/back", "license.*")
	if _, err := f.auth.DisableWebhook(f.ctx, back.ID, "maintenance"); err != nil {
		t.Fatal(err)
	}
	lic := f.license()
	f.revoke(lic.ID)
	// Re-enabled before the dispatcher saw those events: it still misses them.
	if _, err := f.auth.EnableWebhook(f.ctx, back.ID, ""); err != nil {
		t.Fatal(err)
	}
	late, _ := f.addEndpoint(rcv.URL+"/late", "*") // before the dispatcher ever ran
	d := f.dispatcher(webhook.Config{})
	f.tick(d)

	types := func(ep *keyward.WebhookEndpoint) []string {
		var out []string
		for _, dl := range f.deliveries(authority.DeliveryQuery{Endpoint: ep.ID}) {
			out = append(out, dl.EventType)
		}
		slices.Sort(out)
		return out
	}
	check := func(name string, got, want []string) {
		t.Helper()
		if !slices.Equal(got, want) {
			t.Errorf("%s received %v, want %v", name, got, want)
		}
	}
	check("license.revoked", types(exact), []string{"license.revoked"})
	check("license.*", types(group), []string{"license.issued", "license.revoked"})
	check("*", types(all), []string{"license.issued", "license.revoked", "webhook.created", "webhook.created", "webhook.created", "webhook.created",
		"webhook.disabled", "webhook.disabled", "webhook.enabled"}) // keys, off, back, late; off and back disabled; back enabled
	check("key.compromised", types(keysOnly), nil)
	check("disabled", types(off), nil)
	check("created later", types(late), nil)
	check("disabled meanwhile", types(back), nil)
	f.suspend(f.license().ID)
	f.tick(d)
	check("re-enabled", types(back), []string{"license.issued", "license.suspended"})
}

// TestGoneDisablesEndpoint: a 410 fails the delivery at once and disables
// the endpoint, audited as the dispatcher's doing.
func TestGoneDisablesEndpoint(t *testing.T) {
	f := newFixture(t)
	rcv := newReceiver(t, always(http.StatusGone))
	ep, _ := f.addEndpoint(rcv.URL, "license.suspended")
	d := f.dispatcher(webhook.Config{})
	f.suspend(f.license().ID)
	f.suspend(f.license().ID)
	f.tick(d)
	got, err := f.auth.Webhook(f.ctx, ep.ID)
	if err != nil || got.State != keyward.WebhookDisabled {
		t.Fatalf("endpoint after 410 = %+v, %v; want disabled", got, err)
	}
	ds := f.deliveries(authority.DeliveryQuery{Endpoint: ep.ID})
	for _, dl := range ds {
		if dl.State == keyward.DeliveryPending {
			t.Fatalf("delivery %+v still pending after the endpoint went", dl)
		}
	}
	var entries []*keyward.AuditEntry
	_ = f.st.View(context.Background(), func(tx store.Tx) error {
		entries, err = tx.AuditEntries(store.AuditFilter{TargetID: ep.ID, Action: "webhook.disable"})
		return err
	})
	if len(entries) != 1 || entries[0].Actor != "system:webhooks" || !strings.Contains(entries[0].Reason, "410") {
		t.Fatalf("audit of the disable = %+v, want one entry by system:webhooks naming 410", entries)
	}
	f.suspend(f.license().ID)
	if st := f.tick(d); st.Created != 0 || st.Attempted != 0 {
		t.Fatalf("Tick after disable = %+v, want nothing for a disabled endpoint", st)
	}
}

// TestRemoveCancelsPending: removing an endpoint cancels what was pending,
// erases its secrets and refuses replays to it.
func TestRemoveCancelsPending(t *testing.T) {
	f := newFixture(t)
	rcv := newReceiver(t, always(http.StatusInternalServerError))
	ep, _ := f.addEndpoint(rcv.URL, "license.suspended")
	d := f.dispatcher(webhook.Config{})
	f.suspend(f.license().ID)
	f.tick(d)
	removed, err := f.auth.RemoveWebhook(f.ctx, ep.ID, "receiver retired")
	if err != nil {
		t.Fatal(err)
	}
	if removed.State != keyward.WebhookRemoved || removed.Secret != nil || removed.PreviousSecret != nil {
		t.Fatalf("removed endpoint = %+v, want state removed and no secrets", removed)
	}
	dl := f.only(ep.ID)
	if dl.State != keyward.DeliveryCancelled || dl.NextAttemptAt != nil {
		t.Fatalf("delivery after removal = %+v, want cancelled", dl)
	}
	f.clock.Advance(time.Hour)
	if st := f.tick(d); st.Attempted != 0 {
		t.Fatalf("Tick after removal = %+v", st)
	}
	if _, err := f.auth.ReplayWebhookDelivery(f.ctx, dl.ID); keyward.ErrorCode(err) != keyward.EIllegalTransition {
		t.Fatalf("ReplayWebhookDelivery(to a removed endpoint) = %v, want %s", err, keyward.EIllegalTransition)
	}
	if _, err := f.auth.RemoveWebhook(f.ctx, ep.ID, ""); keyward.ErrorCode(err) != keyward.EIllegalTransition {
		t.Fatalf("RemoveWebhook twice = %v, want %s", err, keyward.EIllegalTransition)
	}
	if _, _, err := f.auth.RotateWebhookSecret(f.ctx, ep.ID, nil); keyward.ErrorCode(err) != keyward.EIllegalTransition {
		t.Fatalf("RotateWebhookSecret(removed) = %v, want %s", err, keyward.EIllegalTransition)
	}
}

// TestAttemptFailures: what the delivery log says for a timeout, a
// redirect, a Retry-After and a refused private address.
func TestAttemptFailures(t *testing.T) {
	t.Run("Timeout", func(t *testing.T) {
		f := newFixture(t)
		release := make(chan struct{})
		slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			select {
			case <-release:
			case <-r.Context().Done():
			}
		}))
		defer slow.Close()
		defer close(release)
		ep, _ := f.addEndpoint(slow.URL, "license.suspended")
		d := f.dispatcher(webhook.Config{Timeout: 50 * time.Millisecond})
		f.suspend(f.license().ID)
		f.tick(d)
		dl := f.only(ep.ID)
		if dl.State != keyward.DeliveryPending || dl.LastStatus != 0 || !strings.Contains(dl.LastError, "no answer within 50ms") {
			t.Fatalf("after a timeout: %+v", dl)
		}
	})
	t.Run("Redirect", func(t *testing.T) {
		f := newFixture(t)
		rcv := newReceiver(t, always(http.StatusMovedPermanently))
		ep, _ := f.addEndpoint(rcv.URL, "license.suspended")
		d := f.dispatcher(webhook.Config{})
		f.suspend(f.license().ID)
		f.tick(d)
		if dl := f.only(ep.ID); dl.State != keyward.DeliveryPending || dl.LastStatus != 301 || !strings.Contains(dl.LastError, "redirect") {
			t.Fatalf("after a redirect: %+v", dl)
		}
	})
	t.Run("RetryAfter", func(t *testing.T) {
		f := newFixture(t)
		rcv := newReceiver(t, always(http.StatusTooManyRequests))
		rcv.header.Set("Retry-After", "120")
		ep, _ := f.addEndpoint(rcv.URL, "license.suspended")
		d := f.dispatcher(webhook.Config{Backoff: webhook.Schedule{Caps: []time.Duration{5 * time.Second}, Rand: topDraw}})
		f.suspend(f.license().ID)
		f.tick(d)
		dl := f.only(ep.ID)
		if dl.NextAttemptAt == nil || !dl.NextAttemptAt.Equal(f.clock.Now().Add(2*time.Minute)) {
			t.Fatalf("after 429 with Retry-After 120: %+v, want the next attempt in 2m", dl)
		}
	})
	t.Run("PrivateAddressRefused", func(t *testing.T) {
		f := newFixture(t)
		rcv := newReceiver(t, always(http.StatusOK))
		// Accepted at creation (the authority allows private addresses
		// here), refused at connect time by a production dispatcher.
		ep, _ := f.addEndpoint(strings.Replace(rcv.URL, "127.0.0.1", "localhost", 1), "license.suspended")
		d := f.dispatcher(webhook.Config{Client: webhook.NewClient(false)})
		f.suspend(f.license().ID)
		f.tick(d)
		dl := f.only(ep.ID)
		if dl.LastStatus != 0 || !strings.Contains(dl.LastError, "not a public address") || len(rcv.got()) != 0 {
			t.Fatalf("delivery to localhost without AllowPrivate: %+v, receiver got %d", dl, len(rcv.got()))
		}
	})
	t.Run("URLNotInError", func(t *testing.T) {
		f := newFixture(t)
		// Nothing listens on this port; the error must not repeat the token.
		ep, _ := f.addEndpoint("http://127.0.0.1:1/hook?token=s3cr3t-token", "license.suspended")
		d := f.dispatcher(webhook.Config{})
		f.suspend(f.license().ID)
		f.tick(d)
		dl := f.only(ep.ID)
		if dl.LastError == "" || strings.Contains(dl.LastError, "s3cr3t-token") || strings.Contains(f.logs.String(), "s3cr3t-token") {
			t.Fatalf("last error %q (or the log) repeats the URL's token", dl.LastError)
		}
	})
}

// TestRunWakesOnCommit: Run delivers right after a commit that appended an
// event, long before its (hour-long) safety-net poll.
func TestRunWakesOnCommit(t *testing.T) {
	f := newFixture(t)
	wake := make(chan struct{}, 1)
	f.st.Close()
	f.open(wake)
	rcv := newReceiver(t, always(http.StatusOK))
	f.addEndpoint(rcv.URL, "license.revoked")
	d := f.dispatcher(webhook.Config{Wake: wake, PollInterval: time.Hour})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx) }()

	lic := f.license()
	f.revoke(lic.ID)
	deadline := time.Now().Add(10 * time.Second)
	for len(rcv.got()) == 0 {
		if time.Now().After(deadline) {
			t.Fatal("no delivery 10s after the commit: the dispatcher was not woken")
		}
		time.Sleep(5 * time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run = %v, want nil after cancel", err)
	}
	if p := decodePayload(t, rcv.got()[0].body); p.Data.TargetID != lic.ID {
		t.Fatalf("delivered %+v", p)
	}
}

// TestWakeOnEventsOnlyForEvents: commits without an outbox event and
// failed transactions do not wake the dispatcher.
func TestWakeOnEventsOnlyForEvents(t *testing.T) {
	f := newFixture(t)
	wake := make(chan struct{}, 1)
	st := webhook.WakeOnEvents(f.st, wake)
	woken := func() bool {
		select {
		case <-wake:
			return true
		default:
			return false
		}
	}
	ctx := context.Background()
	_ = st.Update(ctx, func(tx store.Tx) error { return tx.SetWebhookCursor(0) })
	if woken() {
		t.Fatal("a commit without an event woke the dispatcher")
	}
	_ = st.Update(ctx, func(tx store.Tx) error {
		if err := tx.AppendEvent(&keyward.Event{ID: "evt_rolled_back", Type: "test", Time: f.clock.Now(), Subject: "x"}); err != nil {
			return err
		}
		return errors.New("abort")
	})
	if woken() {
		t.Fatal("a rolled-back event woke the dispatcher")
	}
	if err := st.Update(ctx, func(tx store.Tx) error {
		return tx.AppendEvent(&keyward.Event{ID: "evt_1", Type: "test", Time: f.clock.Now(), Subject: "x"})
	}); err != nil {
		t.Fatal(err)
	}
	if !woken() {
		t.Fatal("a committed event did not wake the dispatcher")
	}
}

// TestRunSlowReceiverDoesNotBlockOthers: while one receiver hangs, Run
// keeps delivering to the others, and a shutdown does not wait for the hung
// attempt's timeout.
func TestRunSlowReceiverDoesNotBlockOthers(t *testing.T) {
	f := newFixture(t)
	wake := make(chan struct{}, 1)
	f.st.Close()
	f.open(wake)
	hung := make(chan struct{})
	slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-hung:
		case <-r.Context().Done():
		}
	}))
	defer slow.Close()
	defer close(hung)
	fast := newReceiver(t, always(http.StatusOK))
	f.addEndpoint(slow.URL, "license.suspended")
	f.addEndpoint(fast.URL, "license.suspended")
	d := f.dispatcher(webhook.Config{Wake: wake, PollInterval: time.Hour, Timeout: time.Minute, Concurrency: 2, EndpointConcurrency: 1})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx) }()

	for i := range 3 {
		f.suspend(f.license().ID)
		deadline := time.Now().Add(10 * time.Second)
		for len(fast.got()) < i+1 {
			if time.Now().After(deadline) {
				t.Fatalf("event %d did not reach the fast receiver while the slow one hangs", i)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	start := time.Now()
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run = %v", err)
	}
	if el := time.Since(start); el > 5*time.Second {
		t.Fatalf("Run took %s to stop with a hung attempt in flight", el)
	}
}
