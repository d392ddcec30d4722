package scheduler_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/keyward/keyward"
	"github.com/keyward/keyward/authority"
	"github.com/keyward/keyward/store"
)

// failingStore aborts its failAt-th Update after the closure ran (every
// write of the step happened in the transaction), as a crash before
// commit would; after that every Update fails: the process is gone.
type failingStore struct {
	store.Store
	n, failAt *atomic.Int64 // failAt 0: never
	dead      *atomic.Bool
}

func newFailing(st store.Store) failingStore {
	return failingStore{Store: st, n: new(atomic.Int64), failAt: new(atomic.Int64), dead: new(atomic.Bool)}
}

var errInjected = errors.New("injected failure before commit")

func (s failingStore) Update(ctx context.Context, fn func(store.Tx) error) error {
	if s.dead.Load() {
		return errInjected
	}
	if i := s.n.Add(1); i != s.failAt.Load() {
		return s.Store.Update(ctx, fn)
	}
	s.dead.Store(true)
	return s.Store.Update(ctx, func(tx store.Tx) error {
		if err := fn(tx); err != nil {
			return err
		}
		return errInjected
	})
}

// outcome summarizes an end state so that runs with different random keys
// compare: key states per ring, audit and event counts by action and type,
// re-sign jobs, license states, and which key signs each live certificate.
func outcome(t *testing.T, e *env) string {
	t.Helper()
	s := e.invariants(t, "end state")
	var b strings.Builder
	byRing := map[string][]string{}
	for _, k := range s.keys {
		byRing[k.Ring[:min(len(k.Ring), 8)]] = append(byRing[k.Ring[:min(len(k.Ring), 8)]], string(k.State))
	}
	for _, r := range []string{"registry", "license:"} {
		fmt.Fprintf(&b, "keys %s: %v\n", r, byRing[r])
	}
	counts := map[string]int{}
	err := e.st.View(context.Background(), func(tx store.Tx) error {
		es, err := tx.AuditEntries(store.AuditFilter{})
		if err != nil {
			return err
		}
		for i, a := range es {
			if a.Seq != int64(i+1) {
				return fmt.Errorf("audit seq %d at position %d: a gap", a.Seq, i)
			}
			counts["audit "+a.Action]++
		}
		evs, err := tx.Events(0, 0)
		for _, ev := range evs {
			counts["event "+ev.Type]++
		}
		if err != nil {
			return err
		}
		js, err := tx.ResignJobs("")
		for _, j := range js {
			counts[fmt.Sprintf("job %s %s run %d done %d skipped %d", j.Reason, j.State, j.Runs, j.Done, j.Skipped)]++
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	keysOf := slices.Sorted(func(yield func(string) bool) {
		for k := range counts {
			if !yield(k) {
				return
			}
		}
	})
	for _, k := range keysOf {
		fmt.Fprintf(&b, "%s: %d\n", k, counts[k])
	}
	for _, c := range s.certs {
		if active := activeOf(s, keyByKID(s, c.KID).Ring); c.KID != active.KID {
			fmt.Fprintf(&b, "certificate %s signed by a non-active key\n", c.LicenseID)
		}
	}
	fmt.Fprintf(&b, "live certificates: %d\n", len(s.certs))
	return b.String()
}

// scenario sets up a product with certificates and drives a rotation and
// its bulk re-sign through run, from activation-7d to activation.
func scenario(t *testing.T, e *env, run func(at time.Time)) {
	t.Helper()
	if _, err := e.auth.CreateProduct(e.ctx, "acme"); err != nil {
		t.Fatal(err)
	}
	ids := e.issue(t, "acme", 30)
	start := e.clock.Now()
	run(start.Add(83 * day)) // pre-publish the successors (both rings)
	e.checkoutAll(t, ids)    // live certificates signed by the key about to retire
	if _, err := e.auth.TransitionLicense(e.ctx, ids[3], keyward.LicenseSuspend, "checking"); err != nil {
		t.Fatal(err)
	}
	run(start.Add(90 * day)) // activate, retire, re-sign 29 certificates in batches of 7
}

// TestCrashAtEveryStepResumes aborts the transaction of each step of a
// rotation and its bulk re-sign in turn (the N-th write transaction of
// the run), restarts (a new authority and scheduler on the same store)
// and checks the end state equals an uninterrupted run's: exactly one
// active key per ring, JWKS consistent, every live certificate verifying
// and signed by the active key, no audit entry lost or duplicated.
func TestCrashAtEveryStepResumes(t *testing.T) {
	activation := time.Date(2027, 1, 1, 0, 0, 0, 0, time.UTC).Add(90 * day)
	ref := newEnv(t, true)
	var total int64 // write transactions of the activation run
	scenario(t, ref, func(at time.Time) {
		ref.clock.Set(at)
		counting := newFailing(ref.st)
		_, s := ref.open(t, counting)
		counting.n.Store(0)
		if err := s.RunUntilIdle(context.Background(), 0); err != nil {
			t.Fatal(err)
		}
		if at.Equal(activation) {
			total = counting.n.Load()
		}
	})
	want := outcome(t, ref)
	if !strings.Contains(want, "audit key.resign_batch: 5") || !strings.Contains(want, "job retired done run 1 done 29 skipped 1") {
		t.Fatalf("reference run:\n%s\nwant 5 re-sign batches and 29 certificates re-signed, 1 skipped", want)
	}
	if total < 10 {
		t.Fatalf("the activation run made only %d write transactions", total)
	}
	for n := int64(1); n <= total; n++ {
		e := newEnv(t, true)
		scenario(t, e, func(at time.Time) {
			e.clock.Set(at)
			failing := newFailing(e.st)
			_, s := e.open(t, failing)
			if at.Equal(activation) {
				failing.n.Store(0)
				failing.failAt.Store(n)
			}
			// The crash: the N-th write transaction is rolled back and the
			// process stops writing.
			_ = s.RunUntilIdle(context.Background(), 0)
			if at.Equal(activation) && !failing.dead.Load() {
				t.Fatalf("crash at write %d: the run made fewer writes than the reference's %d", n, total)
			}
			// The restart: a new process resumes from what the store says.
			_, s2 := e.open(t, e.st)
			if err := s2.RunUntilIdle(context.Background(), 0); err != nil {
				t.Fatalf("crash at write %d: restart: %v", n, err)
			}
		})
		if got := outcome(t, e); got != want {
			t.Fatalf("crash at write %d of %d: end state differs from an uninterrupted run:\n got:\n%s\nwant:\n%s", n, total, got, want)
		}
	}
	t.Logf("crashed and resumed at each of %d write transactions", total)
}

// TestCompromiseResignsEverything: revoking the active key with reason
// key_compromise activates a replacement at once and re-signs every live
// certificate it signed, holders' licenses named in key.resign_progress.
func TestCompromiseResignsEverything(t *testing.T) {
	e := newEnv(t, false) // production defaults: the compromise needs no approval
	if _, err := e.auth.CreateProduct(e.ctx, "acme"); err != nil {
		t.Fatal(err)
	}
	ids := e.issue(t, "acme", 25)
	e.checkoutAll(t, ids)
	before := e.state(t).certs
	old := activeOf(e.state(t), keyByKID(e.state(t), before[0].KID).Ring)
	if x, err := e.auth.KeyExposure(e.ctx, old.KID); err != nil || x.LiveCertificates != 25 {
		t.Fatalf("KeyExposure before = %+v, %v; want 25 live certificates", x, err)
	}
	k, err := e.auth.RevokeKey(e.ctx, old.KID, "key_compromise")
	if err != nil || k.State != keyward.KeyCompromised {
		t.Fatalf("RevokeKey = %+v, %v", k, err)
	}
	s := e.state(t)
	repl := activeOf(s, old.Ring)
	if repl == nil || repl.KID == old.KID {
		t.Fatalf("no replacement activated: %+v", repl)
	}
	if _, ok := s.jwks.Find(old.KID); ok {
		t.Error("compromised key still in JWKS")
	}
	j, err := e.auth.ResignJob(e.ctx, old.KID)
	if err != nil || j.Reason != authority.ResignCompromised || j.Total != 25 || j.State != store.ResignRunning {
		t.Fatalf("ResignJob = %+v, %v; want a running compromise job of 25", j, err)
	}
	e.idle(t)
	e.invariants(t, "after re-signing")
	x, err := e.auth.KeyExposure(e.ctx, old.KID)
	if err != nil || x.LiveCertificates != 0 || x.Job.State != store.ResignDone || x.Job.Done != 25 {
		t.Fatalf("KeyExposure after = %+v (job %+v), %v; want nothing left, 25 re-signed", x, x.Job, err)
	}
	// A re-signed certificate is the same certificate under the new key:
	// same claims byte for byte (jti, iat, exp, entitlements), new header.
	after := map[string]*store.Certificate{}
	for _, c := range e.state(t).certs {
		after[c.LicenseID] = c
	}
	for _, b := range before {
		a := after[b.LicenseID]
		if a == nil || a.KID != repl.KID || a.JTI != b.JTI || !a.IssuedAt.Equal(b.IssuedAt) || !a.ExpiresAt.Equal(b.ExpiresAt) ||
			strings.Split(a.Token, ".")[1] != strings.Split(b.Token, ".")[1] {
			t.Errorf("certificate of %s re-signed as %+v, was %+v: want the same claims signed by %s", b.LicenseID, a, b, repl.KID)
		}
	}
	// Every license is named once in the progress events.
	named := map[string]int{}
	err = e.st.View(context.Background(), func(tx store.Tx) error {
		evs, err := tx.Events(0, 0)
		for _, ev := range evs {
			if ev.Type != "key.resign_progress" {
				continue
			}
			var d struct {
				Details struct {
					Licenses []string `json:"licenses"`
				} `json:"details"`
			}
			if err := json.Unmarshal(ev.Data, &d); err != nil {
				return err
			}
			for _, id := range d.Details.Licenses {
				named[id]++
			}
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range ids {
		if named[id] != 1 {
			t.Errorf("license %s named %d times in key.resign_progress events, want once", id, named[id])
		}
	}
}

// TestRollback: within the overlap window the previous key signs again
// and the new one is retired (its certificates re-signed back); outside
// it ROLLBACK_WINDOW_CLOSED.
func TestRollback(t *testing.T) {
	e := newEnv(t, true)
	p, err := e.auth.CreateProduct(e.ctx, "acme")
	if err != nil {
		t.Fatal(err)
	}
	_, err = e.auth.RollbackKey(e.ctx, "acme", "nothing rotated yet")
	wantCode(t, "RollbackKey(no rotation)", err, keyward.EIllegalTransition)
	ids := e.issue(t, "acme", 10)
	first := activeOf(e.state(t), keyward.LicenseRing(p.ID))
	e.clock.Advance(90 * day)
	e.idle(t) // the scheduled rotation (the successor was not pre-published: activated 7d after its creation)
	e.clock.Advance(7 * day)
	e.idle(t)
	second := activeOf(e.state(t), keyward.LicenseRing(p.ID))
	if second.KID == first.KID {
		t.Fatal("no rotation happened")
	}
	e.checkoutAll(t, ids) // clients got certificates from the new key, which they cannot verify
	_, err = e.auth.RollbackKey(e.ctx, "acme", " ")
	wantCode(t, "RollbackKey(no justification)", err, keyward.EInvalid)
	res, err := e.auth.RollbackKey(e.ctx, "acme", "release 4.2 pins the old kid")
	if err != nil || res.Activated.KID != first.KID || res.Retired.KID != second.KID {
		t.Fatalf("RollbackKey = %+v, %v", res, err)
	}
	e.idle(t)
	s := e.invariants(t, "after rollback")
	if a := activeOf(s, keyward.LicenseRing(p.ID)); a.KID != first.KID {
		t.Fatalf("active after rollback = %s, want %s", a.KID, first.KID)
	}
	for _, c := range s.certs {
		if c.KID != first.KID {
			t.Errorf("certificate of %s still signed by %s after the rollback's re-sign", c.LicenseID, c.KID)
		}
	}
	es := audited(t, e, "key.rollback")
	if len(es) != 1 || es[0].Reason != "release 4.2 pins the old kid" || es[0].TargetID != first.KID {
		t.Fatalf("key.rollback audit = %+v", es)
	}
	// The rolled-back key's window closes 30 days after its retirement.
	e.clock.Advance(31 * day)
	_, err = e.auth.RollbackKey(e.ctx, "acme", "again")
	wantCode(t, "RollbackKey(after the window)", err, keyward.ERollbackClosed)
}

func wantCode(t *testing.T, what string, err error, code string) {
	t.Helper()
	if got := keyward.ErrorCode(err); got != code {
		t.Fatalf("%s: error %v, want code %s", what, err, code)
	}
}

func audited(t *testing.T, e *env, action string) []*keyward.AuditEntry {
	t.Helper()
	var out []*keyward.AuditEntry
	err := e.st.View(context.Background(), func(tx store.Tx) error {
		var err error
		out, err = tx.AuditEntries(store.AuditFilter{Action: action})
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// TestScheduledDestructionNeedsApproval: under the production default
// (approvals 1) the scheduler files one approval request when destroyAfter
// passes, waits (say so in the schedule), and the grant destroys the key.
func TestScheduledDestructionNeedsApproval(t *testing.T) {
	e := newEnv(t, false)
	p, err := e.auth.CreateProduct(e.ctx, "acme")
	if err != nil {
		t.Fatal(err)
	}
	first := activeOf(e.state(t), keyward.LicenseRing(p.ID))
	e.clock.Advance(83 * day)
	e.idle(t)
	e.clock.Advance(7 * day)
	e.idle(t) // first retired now
	e.clock.Advance(400 * day)
	e.idle(t)
	e.idle(t) // a second pass files nothing new
	aps, err := e.auth.Approvals(e.ctx, authority.ApprovalQuery{Target: first.KID})
	if err != nil || len(aps) != 1 || aps[0].State != keyward.ApprovalPending || aps[0].RequestedBy != "system:scheduler" {
		t.Fatalf("approvals for %s = %+v, %v; want one pending request by the scheduler", first.KID, aps, err)
	}
	if k, _ := e.auth.Key(e.ctx, first.KID); k.State != keyward.KeyRetired || k.Sealed == nil {
		t.Fatalf("key %s is %s before the grant, want retired with its private material", first.KID, k.State)
	}
	plans, err := e.auth.Schedule(e.ctx, "acme")
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, st := range plans[0].Steps {
		if st.Action == "destroy" && st.Target == first.KID {
			found = st.Status == "awaiting approval" && st.ApprovalID == aps[0].ID
		}
	}
	if !found {
		t.Errorf("schedule does not say the destruction of %s awaits %s: %+v", first.KID, aps[0].ID, plans[0].Steps)
	}
	approver := keyward.NewContextWithPrincipal(context.Background(), keyward.Principal{ID: "tok_appr", Name: "april", Roles: []string{keyward.RoleApprover}})
	if _, err := e.auth.GrantApproval(approver, aps[0].ID, "exposure report checked"); err != nil {
		t.Fatal(err)
	}
	if k, _ := e.auth.Key(e.ctx, first.KID); k.State != keyward.KeyDestroyed || k.Sealed != nil {
		t.Fatalf("key %s is %s after the grant, want destroyed", first.KID, k.State)
	}
	e.idle(t)
	e.invariants(t, "after destruction")
}

// TestLicenseExpiryRetirementNotices: a license past its expiry becomes
// expired and one matching a retire rule retired, each audited with the
// rule and policy version; license.expiring is sent once, at the lead time.
func TestLicenseExpiryRetirementNotices(t *testing.T) {
	e := newEnv(t, true)
	if _, err := e.auth.CreateProduct(e.ctx, "acme"); err != nil {
		t.Fatal(err)
	}
	doc := `apiVersion: keyward.dev/v1
kind: LifecyclePolicy
metadata: {name: short, product: acme}
spec:
  licenses:
    expiringNotice: 10d
    retire:
      - name: trial-over
        when: '"trial" in license.entitlements && license.created_at + duration("20d") <= now'
`
	if _, err := e.auth.ApplyPolicy(e.ctx, "acme", doc, "test"); err != nil {
		t.Fatal(err)
	}
	exp := e.clock.Now().Add(30 * day)
	var lics []*keyward.License
	for i, r := range []authority.IssueRequest{
		{Product: "acme", Holder: "a", ExpiresAt: &exp},
		{Product: "acme", Holder: "b", Entitlements: []string{"trial"}},
		{Product: "acme", Holder: "c"},
	} {
		r.MaxMachines = new(int)
		is, err := e.auth.IssueLicense(e.ctx, r)
		if err != nil {
			t.Fatalf("issue %d: %v", i, err)
		}
		lics = append(lics, is.License)
	}
	state := func(id string) keyward.LicenseState {
		l, err := e.auth.License(e.ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		return l.State
	}
	notices := func() int { return len(audited(t, e, "license.notify_expiring")) }
	e.clock.Advance(19 * day)
	e.idle(t)
	if notices() != 0 || state(lics[1].ID) != keyward.LicenseActive {
		t.Fatalf("at +19d: %d notices, trial %s; want none yet", notices(), state(lics[1].ID))
	}
	e.clock.Advance(day) // +20d: the notice lead time of the 30d license, the trial rule
	e.idle(t)
	e.idle(t)
	if n := notices(); n != 1 {
		t.Fatalf("at +20d: %d license.expiring notices, want 1", n)
	}
	if st := state(lics[1].ID); st != keyward.LicenseRetired {
		t.Fatalf("trial license at +20d is %s, want retired", st)
	}
	r := audited(t, e, "license.retire")
	if len(r) != 1 || r[0].Rule != "trial-over" || r[0].PolicyVersion != 1 || r[0].Actor != "system:scheduler" {
		t.Fatalf("license.retire audit = %+v; want rule trial-over, policy v1, by the scheduler", r)
	}
	e.clock.Advance(10*day - time.Second)
	e.idle(t)
	if st := state(lics[0].ID); st != keyward.LicenseActive {
		t.Fatalf("a second before its expiry the license is %s", st)
	}
	e.clock.Advance(time.Second)
	e.idle(t)
	if st := state(lics[0].ID); st != keyward.LicenseExpired {
		t.Fatalf("at its expiry the license is %s, want expired", st)
	}
	x := audited(t, e, "license.expire")
	if len(x) != 1 || x[0].Rule != "expiry" || x[0].PolicyVersion != 1 {
		t.Fatalf("license.expire audit = %+v", x)
	}
	if n := notices(); n != 1 || state(lics[2].ID) != keyward.LicenseActive {
		t.Fatalf("end: %d notices, perpetual license %s; want 1 notice, perpetual active", n, state(lics[2].ID))
	}
}
