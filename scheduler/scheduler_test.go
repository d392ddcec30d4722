package scheduler_test

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/keyward/keyward"
	"github.com/keyward/keyward/authority"
	"github.com/keyward/keyward/keys"
	"github.com/keyward/keyward/scheduler"
	"github.com/keyward/keyward/sdk"
	"github.com/keyward/keyward/store"
	"github.com/keyward/keyward/store/sqlite"
)

const day = 24 * time.Hour

// clock is a test clock.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time          { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) Set(t time.Time)         { c.mu.Lock(); c.t = t; c.mu.Unlock() }
func (c *clock) Advance(d time.Duration) { c.mu.Lock(); c.t = c.t.Add(d); c.mu.Unlock() }

// env is a server's lifecycle machinery on a temporary SQLite file.
type env struct {
	st    store.Store
	ring  *keys.KEKRing
	clock *clock
	auth  *authority.Authority
	sched *scheduler.Scheduler
	ctx   context.Context // an admin
	dev   bool
}

func newEnv(t testing.TB, dev bool) *env {
	t.Helper()
	st, err := sqlite.Open(context.Background(), filepath.Join(t.TempDir(), "k.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return newEnvOn(t, dev, st)
}

// newEnvOn is newEnv over st, which the caller closes.
func newEnvOn(t testing.TB, dev bool, st store.Store) *env {
	t.Helper()
	k, err := keys.GenerateKEK(nil)
	if err != nil {
		t.Fatal(err)
	}
	e := &env{st: st, ring: keys.NewKEKRing(k), clock: &clock{t: time.Date(2027, 1, 1, 0, 0, 0, 0, time.UTC)}, dev: dev}
	e.ctx = keyward.NewContextWithPrincipal(context.Background(), keyward.Principal{ID: "tok_admin", Name: "admin", Roles: []string{keyward.RoleAdmin}})
	e.auth, e.sched = e.open(t, st)
	return e
}

// open returns an authority and scheduler over st (st may wrap e.st).
func (e *env) open(t testing.TB, st store.Store) (*authority.Authority, *scheduler.Scheduler) {
	t.Helper()
	a, err := authority.New(context.Background(), authority.Config{Store: st, KEKs: e.ring, Clock: e.clock, Dev: e.dev})
	if err != nil {
		t.Fatal(err)
	}
	s, err := scheduler.New(scheduler.Config{Authority: a, Store: st, ResignBatch: 7, SweepBatch: 5})
	if err != nil {
		t.Fatal(err)
	}
	return a, s
}

func (e *env) idle(t testing.TB) {
	t.Helper()
	if err := e.sched.RunUntilIdle(context.Background(), 0); err != nil {
		t.Fatalf("at %s: RunUntilIdle: %v", e.clock.Now().Format(time.RFC3339), err)
	}
}

func (e *env) issue(t testing.TB, product string, n int) []string {
	t.Helper()
	ids, _ := e.issueKeys(t, product, n)
	return ids
}

func (e *env) issueKeys(t testing.TB, product string, n int) (ids, keys []string) {
	t.Helper()
	out, err := e.auth.IssueLicenses(e.ctx, authority.IssueRequest{Product: product, Holder: "cus-1", MaxMachines: new(int)}, n)
	if err != nil {
		t.Fatal(err)
	}
	for _, is := range out {
		ids, keys = append(ids, is.License.ID), append(keys, string(is.Key))
	}
	return ids, keys
}

func (e *env) checkoutAll(t testing.TB, ids []string) {
	t.Helper()
	for _, id := range ids {
		if _, err := e.auth.Checkout(e.ctx, id); err != nil {
			t.Fatalf("Checkout(%s) = %v", id, err)
		}
	}
}

// state is what the invariants look at.
type state struct {
	now   time.Time
	keys  []*keyward.SigningKey
	jwks  keys.JWKS
	certs []*store.Certificate // live current certificates of active licenses
}

func (e *env) state(t testing.TB) state {
	t.Helper()
	s := state{now: e.clock.Now()}
	var err error
	if s.keys, err = e.auth.Keys(e.ctx, store.KeyFilter{}); err != nil {
		t.Fatal(err)
	}
	if s.jwks, err = e.auth.JWKS(e.ctx, ""); err != nil {
		t.Fatal(err)
	}
	err = e.st.View(context.Background(), func(tx store.Tx) error {
		s.certs, err = tx.Certificates(store.CertificateFilter{LiveAt: s.now, ActiveOnly: true})
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// invariants checks what must hold at every instant: exactly one active
// key per ring; the JWKS publishes exactly the pending, active and
// in-window retired keys; destroyed keys have no private material; every
// live certificate verifies against the JWKS.
func (e *env) invariants(t testing.TB, label string) state {
	t.Helper()
	s := e.state(t)
	active := map[string]int{}
	rings := map[string]bool{}
	for _, k := range s.keys {
		rings[k.Ring] = true
		if k.State == keyward.KeyActive {
			active[k.Ring]++
		}
		_, published := s.jwks.Find(k.KID)
		want := false
		switch k.State {
		case keyward.KeyPending, keyward.KeyActive:
			want = true
		case keyward.KeyRetired:
			want = s.now.Before(k.RetiredAt.Add(30 * day))
		case keyward.KeyDestroyed:
			if k.Sealed != nil {
				t.Errorf("%s: destroyed key %s still has sealed private material", label, k.KID)
			}
		}
		if published != want {
			t.Errorf("%s: key %s (%s, retired %v) published = %v, want %v", label, k.KID, k.State, k.RetiredAt, published, want)
		}
	}
	for ring := range rings {
		if active[ring] != 1 {
			t.Errorf("%s: ring %s has %d active keys, want exactly 1", label, ring, active[ring])
		}
	}
	v, err := sdk.NewVerifier(s.jwks, sdk.Options{Now: e.clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range s.certs {
		if _, err := v.VerifyCertificate(c.Token); err != nil {
			t.Errorf("%s: live certificate of %s (kid %s) does not verify against the JWKS: %v", label, c.LicenseID, c.KID, err)
		}
	}
	return s
}

func activeOf(s state, ring string) *keyward.SigningKey {
	for _, k := range s.keys {
		if k.Ring == ring && k.State == keyward.KeyActive {
			return k
		}
	}
	return nil
}

func keyByKID(s state, kid string) *keyward.SigningKey {
	for _, k := range s.keys {
		if k.KID == kid {
			return k
		}
	}
	return nil
}

// nextInstant returns the earliest due time after now among the plans.
func (e *env) nextInstant(t testing.TB) (time.Time, string) {
	t.Helper()
	plans, err := e.auth.Schedule(e.ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	now := e.clock.Now()
	var next time.Time
	var what string
	for _, p := range plans {
		for _, st := range p.Steps {
			if st.Due.After(now) && (next.IsZero() || st.Due.Before(next)) {
				next, what = st.Due, fmt.Sprintf("%s %s %s", p.Ring, st.Action, st.Target)
			}
		}
	}
	return next, what
}

// TestTwoYearsOfRotations drives two years of 90-day rotations (prepublish
// 7d, verify window 30d, destroyAfter 400d) in policy time, checking the
// JWKS, the active key and every live certificate just before and at
// every instant the schedule names, with checkouts along the way.
func TestTwoYearsOfRotations(t *testing.T) {
	e := newEnv(t, true) // approvals 0: destruction runs at once (TestScheduledDestructionNeedsApproval covers the production default)
	if _, err := e.auth.CreateProduct(e.ctx, "acme"); err != nil {
		t.Fatal(err)
	}
	p, _ := e.auth.Product(e.ctx, "acme")
	ids, lkeys := e.issueKeys(t, "acme", 12)
	e.checkoutAll(t, ids)
	e.idle(t)
	e.invariants(t, "start")
	ring := keyward.LicenseRing(p.ID)
	start := e.clock.Now()
	end := start.Add(2 * 365 * day)
	seen := map[string]int{}
	for n := 0; ; n++ {
		next, what := e.nextInstant(t)
		if next.IsZero() || next.After(end) {
			break
		}
		if n > 200 {
			t.Fatal("more than 200 instants: the schedule does not settle")
		}
		// Just before: nothing of the step has happened yet.
		e.clock.Set(next.Add(-time.Second))
		e.idle(t)
		before := e.invariants(t, "before "+what)
		e.clock.Set(next)
		e.idle(t)
		after := e.invariants(t, "at "+what)
		a0, a1 := activeOf(before, ring), activeOf(after, ring)
		switch {
		case a0.KID != a1.KID:
			seen["activate"]++
			// The successor was published prepublish before it signs, and
			// the previous key retired in the same step.
			if a1.CreatedAt.Add(7*day).After(next) || !a1.ActivatedAt.Equal(next) {
				t.Errorf("%s: new active key %s created %s activated %s, want created ≥7d before %s", what, a1.KID, a1.CreatedAt, a1.ActivatedAt, next)
			}
			if old := keyByKID(after, a0.KID); old.State != keyward.KeyRetired || !old.RetiredAt.Equal(next) {
				t.Errorf("%s: previous key %s is %s retired %v, want retired at %s", what, a0.KID, old.State, old.RetiredAt, next)
			}
			if next.Sub(*a0.ActivatedAt) != 90*day {
				t.Errorf("%s: key %s was active %s, want 90d", what, a0.KID, next.Sub(*a0.ActivatedAt))
			}
		case len(after.keys) > len(before.keys):
			seen["prepublish"]++
			if a1.ActivatedAt.Add(83*day) != next {
				t.Errorf("%s: successor generated at %s, want activation+83d", what, next)
			}
		}
		for _, k := range after.keys {
			if k.State == keyward.KeyDestroyed && keyByKID(before, k.KID).State != keyward.KeyDestroyed {
				seen["destroy"]++
				if !k.DestroyedAt.Equal(k.RetiredAt.Add(400 * day)) {
					t.Errorf("key %s destroyed at %s, want retired_at+400d = %s", k.KID, k.DestroyedAt, k.RetiredAt.Add(400*day))
				}
			}
			if k.State == keyward.KeyRetired {
				if _, ok := before.jwks.Find(k.KID); ok {
					if _, ok := after.jwks.Find(k.KID); !ok {
						seen["unpublish"]++
					}
				}
			}
		}
		// Four clients keep validating and checking out; the other eight
		// sit on their certificates and retire under the built-in
		// "inactive" rule after 180 days.
		for _, k := range lkeys[:4] {
			if v, err := e.auth.Validate(e.ctx, authority.ValidateRequest{Key: k}); err != nil || !v.Valid {
				t.Fatalf("%s: Validate = %+v, %v", what, v, err)
			}
		}
		e.checkoutAll(t, ids[:4])
	}
	// Two years of 90-day rotations of the product ring (counted) and the
	// registry ring (checked by the invariants).
	if seen["activate"] != 8 || seen["prepublish"] != 8 || seen["unpublish"] < 12 || seen["destroy"] != 6 {
		t.Errorf("over two years saw %v, want 8 activations and pre-publications of the product ring, ≥12 unpublications and 6 destructions (both rings)", seen)
	}
	ls, err := e.auth.Licenses(e.ctx, store.LicenseFilter{State: keyward.LicenseRetired})
	if err != nil || len(ls) != 8 {
		t.Errorf("retired licenses: %d, %v; want the 8 inactive ones", len(ls), err)
	}
	// Every retired key's re-sign job ran to its end.
	s := e.state(t)
	for _, c := range s.certs {
		if a := activeOf(s, ring); c.KID != a.KID {
			t.Errorf("certificate of %s is still signed by %s, not the active key %s", c.LicenseID, c.KID, a.KID)
		}
	}
}

// TestTickIsIdempotent: a second tick at the same instant changes nothing.
func TestTickIsIdempotent(t *testing.T) {
	e := newEnv(t, true)
	if _, err := e.auth.CreateProduct(e.ctx, "acme"); err != nil {
		t.Fatal(err)
	}
	ids := e.issue(t, "acme", 20)
	e.checkoutAll(t, ids)
	e.clock.Advance(90 * day)
	e.idle(t)
	n0 := auditCount(t, e.st)
	for range 3 {
		rep, err := e.sched.Tick(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if rep.Changed() {
			t.Fatalf("a second tick at the same instant changed something: %+v", rep)
		}
	}
	if n1 := auditCount(t, e.st); n1 != n0 {
		t.Errorf("audit entries %d → %d after idle ticks", n0, n1)
	}
}

func auditCount(t testing.TB, st store.Store) int {
	t.Helper()
	var n int
	err := st.View(context.Background(), func(tx store.Tx) error {
		es, err := tx.AuditEntries(store.AuditFilter{})
		n = len(es)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// fakeLocker is a store.Locker whose lock the test hands out and takes away.
type fakeLocker struct {
	store.Store
	mu    sync.Mutex
	free  bool
	lost  chan struct{}
	tries int
}

func (l *fakeLocker) TryLock(ctx context.Context, name string) (<-chan struct{}, func(), bool, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.tries++
	if name != scheduler.LockName {
		return nil, nil, false, errors.New("unexpected lock name " + name)
	}
	if !l.free {
		return nil, nil, false, nil
	}
	l.free = false
	l.lost = make(chan struct{})
	return l.lost, func() {}, true, nil
}

var _ store.Locker = (*fakeLocker)(nil)

// TestRunsOnlyWhileHoldingTheLock: with a store.Locker, nothing runs until
// the lock is taken, and ticking stops when it is lost.
func TestRunsOnlyWhileHoldingTheLock(t *testing.T) {
	e := newEnv(t, true)
	if _, err := e.auth.CreateProduct(e.ctx, "acme"); err != nil {
		t.Fatal(err)
	}
	lk := &fakeLocker{Store: e.st}
	ticks := make(chan time.Time)
	s, err := scheduler.New(scheduler.Config{Authority: e.auth, Store: lk, After: func(time.Duration) <-chan time.Time { return ticks }})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	e.clock.Advance(84 * day) // a successor is due
	pending := func() int {
		ks, err := e.auth.Keys(e.ctx, store.KeyFilter{States: []keyward.KeyState{keyward.KeyPending}})
		if err != nil {
			t.Fatal(err)
		}
		return len(ks)
	}
	ticks <- time.Time{} // a retry of TryLock, which fails
	ticks <- time.Time{}
	if n := pending(); n != 0 {
		t.Fatalf("without the lock the scheduler generated %d keys", n)
	}
	lk.mu.Lock()
	lk.free = true
	lk.mu.Unlock()
	ticks <- time.Time{} // TryLock succeeds; the loop ticks
	waitFor(t, func() bool { return pending() == 2 }, "the successors of both rings")
	lk.mu.Lock()
	close(lk.lost)
	lk.mu.Unlock()
	e.clock.Advance(7 * day) // activation due, but the lock is gone
	ticks <- time.Time{}     // wakes the lost-lock path: retry TryLock (fails)
	ticks <- time.Time{}
	if n := pending(); n != 2 {
		t.Fatalf("after losing the lock the scheduler still ran steps: %d pending keys, want 2", n)
	}
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("Run = %v, want context.Canceled", err)
	}
}

func waitFor(t *testing.T, ok func() bool, what string) {
	t.Helper()
	for range 500 {
		if ok() {
			return
		}
		time.Sleep(2 * time.Millisecond)
	}
	t.Fatalf("timed out waiting for %s", what)
}
