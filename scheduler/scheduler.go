// Package scheduler runs Keyward's lifecycle automation inside the server:
// on every tick it asks the authority to carry out what the policies say
// is due — rotate, pre-publish and activate signing keys, destroy retired
// keys (or file the approval request), re-sign certificates after a
// rotation or a compromise, expire and retire licenses, announce coming
// expiries, expire approval requests.
//
// Guarantees:
//
//   - The scheduler holds no rule and no state of its own: every step is
//     an authority function (the same transitions the manual commands use)
//     that re-decides from the store inside its transaction and records the
//     step's deterministic key with its effect. Running two ticks at the
//     same instant changes nothing the second time; a crash at any point
//     leaves either a committed step or none, and the next tick resumes
//     from what the store says.
//   - A tick is bounded: re-sign jobs and license sweeps advance by one
//     batch per tick. When a tick leaves work (a full batch), the next tick
//     follows at once instead of after the interval.
//   - With a store that implements store.Locker (PostgreSQL, several
//     replicas), steps run only while this process holds the lock
//     "scheduler", and stop when it is lost. Without one (SQLite) the
//     process is the only scheduler.
//
// It does not: evaluate auto-suspension rules (the validation path has
// the usage counters they need), or guarantee a step's exact time: a step
// runs at the first tick at or after its due time.
package scheduler

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/keyward/keyward"
	"github.com/keyward/keyward/authority"
	"github.com/keyward/keyward/store"
)

// DefaultInterval is the time between ticks when no work is left.
const DefaultInterval = 10 * time.Second

// LockName is the store.Locker lock the scheduler holds while it runs.
const LockName = "scheduler"

// Config wires a Scheduler.
type Config struct {
	Authority *authority.Authority
	// Store is checked for store.Locker: the raw store the server opened
	// (the authority's wrappers hide it). nil = no locking.
	Store    store.Store
	Interval time.Duration // 0 = DefaultInterval
	Logger   *slog.Logger  // nil = discard
	// Wake, when it receives, starts a tick before the interval ends (e.g.
	// a re-sign job was started by a request). Optional.
	Wake <-chan struct{}
	// ResignBatch and SweepBatch bound one batch (0 = the authority's
	// defaults).
	ResignBatch int
	SweepBatch  int
	// After waits for the interval; nil = time.After. Tests inject a
	// function to drive the loop without real time passing.
	After func(time.Duration) <-chan time.Time
}

// Scheduler runs lifecycle steps. Tick may be called directly (tests, a
// one-shot command); Run loops until its context ends.
type Scheduler struct {
	cfg Config
	log *slog.Logger

	mu   sync.Mutex // serializes ticks
	last Report
}

// New returns a Scheduler.
func New(cfg Config) (*Scheduler, error) {
	if cfg.Authority == nil {
		return nil, errors.New("scheduler: an authority is required")
	}
	if cfg.Interval <= 0 {
		cfg.Interval = DefaultInterval
	}
	if cfg.After == nil {
		cfg.After = time.After
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Scheduler{cfg: cfg, log: log}, nil
}

// Report is what one tick did.
type Report struct {
	At                time.Time                 `json:"at"`
	Steps             []authority.StepResult    `json:"steps"`
	Resigned          int                       `json:"resigned"`
	ResignJobsStarted int                       `json:"resign_jobs_started"`
	ResignFinished    []string                  `json:"resign_finished,omitempty"` // kids whose job ended
	Licenses          authority.SweepReport     `json:"licenses"`
	ApprovalsExpired  int                       `json:"approvals_expired"`
	More              bool                      `json:"more"` // work remains: tick again at once
	Errors            []string                  `json:"errors,omitempty"`
	progress          *authority.ResignProgress // last batch, for logs
}

// Changed reports whether the tick changed anything.
func (r *Report) Changed() bool {
	l := r.Licenses
	return len(r.Steps) > 0 || r.Resigned > 0 || r.ResignJobsStarted > 0 || len(r.ResignFinished) > 0 ||
		l.Expired+l.Retired+l.Notices > 0 || r.ApprovalsExpired > 0
}

// Last returns the report of the last tick.
func (s *Scheduler) Last() Report {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.last
}

// Tick runs one bounded pass of every lifecycle step at the authority's
// clock. Errors of one part are logged, reported in Report.Errors and
// returned joined; the other parts still run.
func (s *Scheduler) Tick(ctx context.Context) (Report, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	a := s.cfg.Authority
	rep := Report{At: a.Now()}
	var errs []error
	fail := func(part string, err error) {
		if err == nil {
			return
		}
		err = fmt.Errorf("%s: %w", part, err)
		errs = append(errs, err)
		rep.Errors = append(rep.Errors, keyward.ErrorMessage(err))
		if ctx.Err() == nil {
			s.log.Error("scheduler step failed", "part", part, "err", err)
		}
	}
	n, err := a.ExpireApprovals(ctx)
	rep.ApprovalsExpired = n
	fail("expire approvals", err)

	rings, err := a.Rings(ctx)
	fail("rings", err)
	for _, r := range rings {
		if ctx.Err() != nil {
			break
		}
		steps, err := a.RunRing(ctx, r)
		rep.Steps = append(rep.Steps, steps...)
		fail("ring "+r.Name, err)
	}

	started, err := a.ReconcileResign(ctx)
	rep.ResignJobsStarted = started
	fail("re-sign reconcile", err)
	if ctx.Err() == nil {
		p, err := a.ResignBatch(ctx, s.cfg.ResignBatch)
		fail("re-sign", err)
		if p != nil {
			rep.Resigned, rep.progress = p.Resigned, p
			if p.Finished {
				rep.ResignFinished = append(rep.ResignFinished, p.Job.KID)
			}
			rep.More = true // the next job, or the next batch of this one
		}
	}

	if ctx.Err() == nil {
		sw, more, err := a.SweepLicenses(ctx, s.cfg.SweepBatch)
		rep.Licenses = sw
		rep.More = rep.More || more
		fail("licenses", err)
	}
	for _, st := range rep.Steps {
		s.log.Info("lifecycle step", "step", st.Key, "action", st.Action, "target", st.Target, "rule", st.Rule, "policy_version", st.PolicyVersion)
	}
	if p := rep.progress; p != nil {
		s.log.Info("re-sign batch", "kid", p.Job.KID, "resigned", p.Resigned, "done", p.Job.Done, "total", p.Job.Total, "state", p.Job.State)
	}
	if l := rep.Licenses; l.Expired+l.Retired+l.Notices > 0 {
		s.log.Info("license sweep", "expired", l.Expired, "retired", l.Retired, "notices", l.Notices)
	}
	s.last = rep
	return rep, errors.Join(errs...)
}

// RunUntilIdle ticks until a tick leaves no work (at most max ticks, 0 =
// 10000), for tests and one-shot runs. It returns the last error.
func (s *Scheduler) RunUntilIdle(ctx context.Context, max int) error {
	if max <= 0 {
		max = 10000
	}
	var last error
	for range max {
		rep, err := s.Tick(ctx)
		if err != nil {
			last = err
		}
		if !rep.More || ctx.Err() != nil {
			return last
		}
	}
	return fmt.Errorf("scheduler: still busy after %d ticks", max)
}

// Run ticks until ctx ends: at once, then after each interval (or Wake),
// or at once again while a tick leaves work. With a store.Locker it first
// takes the lock, retrying every interval, and stops ticking when the
// lock is lost. It returns ctx's error.
func (s *Scheduler) Run(ctx context.Context) error {
	locker, _ := s.cfg.Store.(store.Locker)
	for {
		if locker == nil {
			s.loop(ctx, nil)
			return ctx.Err()
		}
		lost, unlock, ok, err := locker.TryLock(ctx, LockName)
		switch {
		case err != nil:
			if ctx.Err() == nil {
				s.log.Error("scheduler lock", "err", err)
			}
		case ok:
			s.log.Info("scheduler lock taken: this process runs the lifecycle steps")
			s.loop(ctx, lost)
			unlock()
			if ctx.Err() == nil {
				s.log.Warn("scheduler lock lost: another process may run the lifecycle steps now")
			}
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-s.cfg.After(s.cfg.Interval):
		}
	}
}

// loop ticks until ctx ends or lost closes (nil: never).
func (s *Scheduler) loop(ctx context.Context, lost <-chan struct{}) {
	tctx, cancel := context.WithCancel(ctx)
	defer cancel()
	if lost != nil {
		go func() {
			select {
			case <-lost:
				cancel()
			case <-tctx.Done():
			}
		}()
	}
	for {
		select {
		case <-lost: // also seen here: the goroutine may not have cancelled yet
			return
		default:
		}
		rep, _ := s.Tick(tctx)
		if tctx.Err() != nil {
			return
		}
		if rep.More && len(rep.Errors) == 0 {
			continue
		}
		select {
		case <-tctx.Done():
			return
		case <-s.cfg.Wake:
		case <-s.cfg.After(s.cfg.Interval):
		}
	}
}

// WakeOnResign wraps st so that a committed transaction that started or
// changed a re-sign job sends on wake (without blocking): a compromise
// revoked over the API starts re-signing at once, not at the next tick.
func WakeOnResign(st store.Store, wake chan<- struct{}) store.Store {
	return wakingStore{Store: st, wake: wake}
}

type wakingStore struct {
	store.Store
	wake chan<- struct{}
}

func (w wakingStore) Update(ctx context.Context, fn func(tx store.Tx) error) error {
	var started bool
	err := w.Store.Update(ctx, func(tx store.Tx) error {
		started = false
		return fn(jobTx{Tx: tx, started: &started})
	})
	if err == nil && started {
		select {
		case w.wake <- struct{}{}:
		default:
		}
	}
	return err
}

type jobTx struct {
	store.Tx
	started *bool
}

func (t jobTx) PutResignJob(j *store.ResignJob) error {
	err := t.Tx.PutResignJob(j)
	if err == nil && j.State == store.ResignRunning && j.Done == 0 {
		*t.started = true
	}
	return err
}
