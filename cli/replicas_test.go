package cli_test

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/keyward/keyward"
	"github.com/keyward/keyward/cli"
	"github.com/keyward/keyward/revocation"
	"github.com/keyward/keyward/sdk"
	"github.com/keyward/keyward/store"
	"github.com/keyward/keyward/store/postgres/pgtest"
)

// Several `keyward server` replicas on one PostgreSQL database (spec
// section 8, docs/postgres.md), started in-process from one data
// directory, each on its own address.

// testClock is a clock the replicas share and the test moves.
type testClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *testClock) Now() time.Time          { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *testClock) Advance(d time.Duration) { c.mu.Lock(); c.t = c.t.Add(d); c.mu.Unlock() }

type cluster struct {
	t     *testing.T
	dir   string
	db    string
	clock *testClock
}

// startReplica starts a dev server on the cluster's database and data
// directory. Its revocation registry polls hourly, so a revocation
// committed elsewhere can only reach it in time through the change feed.
// Its connections carry application_name "replica-NAME", so the test can
// cut them as a crash would.
func (c *cluster) startReplica(name string) *harness {
	c.t.Helper()
	logs := &lockedBuffer{}
	rs, err := cli.StartServer(context.Background(), cli.ServerConfig{
		Dev: true, DataDir: c.dir, DB: c.db + "&application_name=replica-" + name, Listen: "127.0.0.1:0", Clock: c.clock,
		SchedulerInterval: 50 * time.Millisecond, CheckpointInterval: time.Hour,
		Revocations: revocation.Config{PollInterval: time.Hour},
		Logger:      slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
	})
	if err != nil {
		c.t.Fatalf("StartServer: %v", err)
	}
	tok, err := os.ReadFile(filepath.Join(c.dir, "admin.token"))
	if err != nil {
		c.t.Fatal(err)
	}
	h := &harness{t: c.t, dir: c.dir, url: "http://" + rs.Addr, token: strings.TrimSpace(string(tok)), server: rs, logs: logs}
	c.t.Cleanup(func() {
		if h.server != nil {
			h.stop()
		}
	})
	return h
}

// eventually polls cond every 10ms for up to 10s.
func eventually(t *testing.T, what string, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	for time.Since(start) < 10*time.Second {
		if cond() {
			return time.Since(start)
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("%s: not within 10s", what)
	return 0
}

func (h *harness) validationCode(key string) string {
	h.t.Helper()
	out, errs, _ := h.run("license", "validate", key)
	var v validation
	if err := json.Unmarshal([]byte(out), &v); err != nil {
		h.t.Fatalf("validate: %q %q: %v", out, errs, err)
	}
	return v.Code
}

func TestReplicas(t *testing.T) {
	c := &cluster{t: t, dir: t.TempDir(), db: pgtest.URL(t), clock: &testClock{t: time.Now().UTC().Truncate(time.Second)}}
	a := c.startReplica("a")
	b := c.startReplica("b")
	r3 := c.startReplica("c")
	all := []*harness{a, b, r3}
	names := []string{"a", "b", "c"}

	t.Run("JoinFromOneDataDirectory", func(t *testing.T) {
		// One KEK file, one admin token, one pepper: a license issued
		// through one replica validates on every other, and they publish
		// the same keys.
		var l issuedLicense
		a.ok(&l, "license", "issue", "--product", "demo", "--holder", "cus_join", "--max-machines", "0")
		var jwks []string
		for i, h := range all {
			if code := h.validationCode(l.Key); code != keyward.CodeValid {
				t.Errorf("replica %d: validation = %s, want VALID", i, code)
			}
			set, err := sdk.NewClient(h.url).JWKS(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			jwks = append(jwks, fmt.Sprint(len(set.Keys)))
		}
		if jwks[0] != jwks[1] || jwks[1] != jwks[2] {
			t.Errorf("replicas publish different key counts: %v", jwks)
		}
	})

	t.Run("RevocationReachesAnotherReplicasStream", func(t *testing.T) {
		var l issuedLicense
		a.ok(&l, "license", "issue", "--product", "demo", "--holder", "cus_sse")
		s := openSSE(t, r3.url+"/v1/revocations/stream?product=demo")
		defer s.close()
		set, err := sdk.NewClient(r3.url).JWKS(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		cache, err := sdk.NewRevocationCache(set, sdk.RevocationOptions{Product: "demo"})
		if err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		a.ok(nil, "license", "revoke", l.ID, "--reason", "abuse")
		for {
			ev := s.next(t)
			d, err := cache.VerifyDelta(ev.data)
			if err != nil {
				t.Fatalf("event on the third replica: %v", err)
			}
			if len(d.Licenses) == 1 && d.Licenses[0].ID == l.ID && d.Licenses[0].State == "revoked" {
				t.Logf("revoked via replica A, seen on replica C's stream after %v", time.Since(start))
				return
			}
		}
	})

	t.Run("DrillAcrossReplicas", func(t *testing.T) {
		// `drill revocation --watch-server`: changes through A, SDK
		// watchers on B (docs/deploy.md measures it this way).
		var res struct {
			Expected  int     `json:"expected"`
			Delivered int     `json:"delivered"`
			P99       float64 `json:"p99_ms"`
		}
		a.ok(&res, "drill", "revocation", "--watch-server", b.url, "--subscribers", "2", "--count", "2")
		if res.Expected != 4 || res.Delivered != 4 || res.P99 <= 0 {
			t.Errorf("drill across replicas: %+v", res)
		}
		// The watchers really go to --watch-server: nobody listens there.
		a.fails("", "drill", "revocation", "--watch-server", "http://127.0.0.1:1", "--subscribers", "1", "--count", "1", "--timeout", "200ms")
	})

	t.Run("ValidationCacheFollowsOtherReplicas", func(t *testing.T) {
		var l issuedLicense
		a.ok(&l, "license", "issue", "--product", "demo", "--holder", "cus_cache", "--max-machines", "0")
		for range 3 { // the first touches last_validated_at, the next ones fill B's cache
			if code := b.validationCode(l.Key); code != keyward.CodeValid {
				t.Fatalf("validation on B = %s", code)
			}
		}
		a.ok(nil, "license", "suspend", l.ID, "--reason", "chargeback")
		d := eventually(t, "B sees the suspension made on A", func() bool { return b.validationCode(l.Key) == keyward.CodeSuspended })
		t.Logf("suspended via A, refused on B after %v", d)
		r3.ok(nil, "license", "reinstate", l.ID)
		eventually(t, "B sees the reinstatement made on C", func() bool { return b.validationCode(l.Key) == keyward.CodeValid })
	})

	t.Run("ConflictingTransitions", func(t *testing.T) {
		// Reinstate on A races revoke on B: both orders are legal, but the
		// outcome must be one of them, with its audit entries. Retire on A
		// races revoke on B: exactly one may win.
		const n = 6
		type race struct {
			id         string
			suspended  bool
			codeA      int
			codeB      int
			finalState string
		}
		races := make([]*race, 2*n)
		for i := range races {
			var l issuedLicense
			a.ok(&l, "license", "issue", "--product", "demo", "--holder", fmt.Sprintf("cus_race_%d", i))
			races[i] = &race{id: l.ID, suspended: i < n}
			if races[i].suspended {
				a.ok(nil, "license", "suspend", l.ID, "--reason", "check")
			}
		}
		var wg sync.WaitGroup
		for _, r := range races {
			wg.Add(2)
			go func() {
				defer wg.Done()
				if r.suspended {
					_, _, r.codeA = a.run("license", "reinstate", r.id)
				} else {
					_, _, r.codeA = a.run("license", "retire", r.id, "--reason", "not needed")
				}
			}()
			go func() {
				defer wg.Done()
				_, _, r.codeB = b.run("license", "revoke", r.id, "--reason", "abuse")
			}()
		}
		wg.Wait()
		ctx := context.Background()
		outcomes := map[string]int{}
		for _, r := range races {
			var l struct {
				State string `json:"state"`
			}
			r3.ok(&l, "license", "show", r.id)
			es, err := r3.server.Authority.AuditEntries(ctx, store.AuditFilter{TargetID: r.id})
			if err != nil {
				t.Fatal(err)
			}
			// The entries after issue (and suspend) must chain, end in the
			// final state, and be one per successful command.
			skip := 1
			if r.suspended {
				skip = 2
			}
			es = es[skip:]
			var transitions []string
			prev := "active"
			if r.suspended {
				prev = "suspended"
			}
			for _, e := range es {
				if e.Before != prev {
					t.Errorf("%s: audit %s %s→%s does not follow %s", r.id, e.Action, e.Before, e.After, prev)
				}
				prev = e.After
				transitions = append(transitions, e.Action)
			}
			if prev != l.State {
				t.Errorf("%s: state %s, but the audit log ends in %s", r.id, l.State, prev)
			}
			outcomes[strings.Join(transitions, "+")]++
			wins := 0
			for _, code := range []int{r.codeA, r.codeB} {
				if code == 0 {
					wins++
				}
			}
			if wins != len(es) {
				t.Errorf("%s: %d commands succeeded (A exit %d, B exit %d) but %d audit entries %v", r.id, wins, r.codeA, r.codeB, len(es), transitions)
			}
			if r.suspended {
				if l.State != "revoked" || r.codeB != 0 {
					t.Errorf("%s: reinstate vs revoke ended %s (revoke exit %d), want revoked", r.id, l.State, r.codeB)
				}
			} else if wins != 1 {
				t.Errorf("%s: retire vs revoke: %d winners (state %s), want exactly 1", r.id, wins, l.State)
			}
		}
		t.Logf("outcomes: %v", outcomes)
	})

	t.Run("SchedulerLeaderDiesMidRotation", func(t *testing.T) {
		ctx := context.Background()
		leader := -1
		eventually(t, "one replica runs the scheduler", func() bool {
			for i, h := range all {
				if !h.server.Scheduler.Last().At.IsZero() {
					leader = i
					return true
				}
			}
			return false
		})
		for i, h := range all {
			if i != leader && !h.server.Scheduler.Last().At.IsZero() {
				t.Fatalf("replicas %d and %d both ran the scheduler", leader, i)
			}
		}
		demo, err := a.server.Authority.Product(ctx, "demo")
		if err != nil {
			t.Fatal(err)
		}
		ring := keyward.LicenseRing(demo.ID)
		keysIn := func(h *harness, st keyward.KeyState) []*keyward.SigningKey {
			ks, err := h.server.Authority.Keys(ctx, store.KeyFilter{Ring: ring, States: []keyward.KeyState{st}})
			if err != nil {
				t.Fatal(err)
			}
			return ks
		}
		old := keysIn(a, keyward.KeyActive)[0].KID
		// The built-in policy rotates every 90 days with 7 days of
		// pre-publication: at day 84 the leader pre-publishes a successor.
		c.clock.Advance(84 * 24 * time.Hour)
		var next string
		eventually(t, "the leader pre-publishes a successor", func() bool {
			ks := keysIn(a, keyward.KeyPending)
			if len(ks) == 1 {
				next = ks[0].KID
			}
			return next != ""
		})
		// The leader dies with the rotation half done: the database sees
		// its connections drop (which releases the scheduler lock), then
		// the process is gone.
		conn, err := pgx.Connect(ctx, c.db)
		if err != nil {
			t.Fatal(err)
		}
		var cut int
		err = conn.QueryRow(ctx, `SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name LIKE $1`,
			"replica-"+names[leader]+"%").Scan(&cut)
		conn.Close(ctx)
		if err != nil || cut == 0 {
			t.Fatalf("cut the leader's connections: %d, %v", cut, err)
		}
		all[leader].server.Shutdown(ctx) // errors expected: its connections are gone
		all[leader].server = nil
		survivors := []*harness{}
		for i, h := range all {
			if i != leader {
				survivors = append(survivors, h)
			}
		}
		if ks := keysIn(survivors[0], keyward.KeyActive); len(ks) != 1 || ks[0].KID != old {
			t.Fatalf("active keys after the leader died: %v, want still %s", ks, old)
		}
		c.clock.Advance(7 * 24 * time.Hour)
		eventually(t, "another replica activates the successor", func() bool {
			ks := keysIn(survivors[0], keyward.KeyActive)
			return len(ks) == 1 && ks[0].KID == next
		})
		es, err := survivors[0].server.Authority.AuditEntries(ctx, store.AuditFilter{TargetID: next, Action: "key.activate"})
		if err != nil || len(es) != 1 {
			t.Fatalf("key.activate entries of %s: %d, %v; want exactly 1", next, len(es), err)
		}
		took := 0
		for _, h := range survivors {
			if !h.server.Scheduler.Last().At.IsZero() {
				took++
			}
		}
		if took != 1 {
			t.Errorf("%d surviving replicas ran the scheduler, want 1", took)
		}
	})

	// Whatever raced above, the audit log is whole: every entry is in the
	// tree and a signed checkpoint over all of them verifies.
	var live *harness
	for _, h := range all {
		if h.server != nil {
			live = h
		}
	}
	live.sign()
	var res struct {
		Size int64 `json:"size"`
	}
	live.ok(&res, "audit", "verify")
	if res.Size < 20 {
		t.Fatalf("audit verify covered %d entries", res.Size)
	}
}
