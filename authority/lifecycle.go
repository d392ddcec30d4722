package authority

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/keyward/keyward"
	"github.com/keyward/keyward/policy"
	"github.com/keyward/keyward/store"
)

// Lifecycle automation (docs/lifecycle.md). The decision engine
// (policy.Compiled.Decide) says what is due; the functions here carry it
// out, each step in one transaction together with a record of the step's
// deterministic key (store.Step): a committed step never runs twice, a
// step whose transaction was rolled back (a crash, a lost database
// connection) leaves nothing and runs again at the next tick. Each step
// re-reads the state and re-decides inside its transaction, so a step
// decided on stale state does nothing. The scheduler (package scheduler)
// calls these functions on a timer; the manual commands call the same
// transitions (activate, retire, destroy, expire, retire).
//
// Step keys:
//
//	rotate:<ring>:<newest kid of the ring>     pre-publish a successor (or generate a key for an empty ring)
//	activate:<kid>                             activate a pending key, retiring the active one
//	destroy:<kid>                              erase a retired key's private material
//	destroy-request:<kid>:<n>                  file the n-th (from 0) approval request to destroy it
//	expire:<license id>                        an active license past its expiry
//	retire-license:<license id>                a licenses.retire rule matched
//	expiring-notice:<license id>:<expires_at>  the license.expiring event
//	resign:<kid>:<run>:<cursor>                one batch of a re-sign job (resign.go)

// schedulerPrincipal is who the scheduler acts as in audit entries.
var schedulerPrincipal = keyward.Principal{ID: "system:scheduler", Name: "keyward scheduler"}

// Ring is a signing-key ring the scheduler looks after.
type Ring struct {
	Name      string // keyward.RegistryRing or keyward.LicenseRing(product id)
	ProductID string // "" for the registry ring
	Product   string // product name; "" for the registry ring
}

// Rings returns the registry ring and every product's license ring.
func (a *Authority) Rings(ctx context.Context) ([]Ring, error) {
	out := []Ring{{Name: keyward.RegistryRing}}
	err := a.store.View(ctx, func(tx store.Tx) error {
		ps, err := tx.Products()
		for _, p := range ps {
			out = append(out, Ring{Name: keyward.LicenseRing(p.ID), ProductID: p.ID, Product: p.Name})
		}
		return err
	})
	return out, err
}

// StepResult is one lifecycle step carried out.
type StepResult struct {
	Key           string `json:"key"`
	Action        string `json:"action"`
	Target        string `json:"target"`
	Rule          string `json:"rule"`
	PolicyVersion int    `json:"policy_version"`
	Note          string `json:"note,omitempty"`
}

// compiledFor returns the compiled policy of a ring's product ("" = the
// built-in default the registry ring follows).
func (a *Authority) compiledFor(productID string) *policy.Compiled {
	if productID == "" {
		return a.stored.builtin
	}
	return a.stored.compiled(productID)
}

// engineKeys returns the decision engine's view of a ring's keys.
func engineKeys(ks []*keyward.SigningKey) []policy.Key {
	out := make([]policy.Key, len(ks))
	for i, k := range ks {
		out[i] = policy.KeyOf(k)
	}
	return out
}

// newestKID returns the kid of the ring's most recently created key ("" if none).
func newestKID(ks []*keyward.SigningKey) string {
	var n *keyward.SigningKey
	for _, k := range ks {
		if n == nil || k.CreatedAt.After(n.CreatedAt) || (k.CreatedAt.Equal(n.CreatedAt) && k.KID > n.KID) {
			n = k
		}
	}
	if n == nil {
		return ""
	}
	return n.KID
}

// errSkipStep means a decision cannot be carried out now (it waits for
// approvers, or was refused); it is left for a later tick.
type skipStep struct{ why string }

func (s skipStep) Error() string { return s.why }

// RunRing carries out every key decision due for ring at the authority's
// clock: rotate (pre-publish), activate with retire, destroy (or its
// approval request). Each step is its own transaction. It returns the
// steps carried out; decisions that wait (for approvers) are skipped.
func (a *Authority) RunRing(ctx context.Context, r Ring) ([]StepResult, error) {
	ctx = keyward.NewContextWithPrincipal(ctx, schedulerPrincipal)
	c := a.compiledFor(r.ProductID)
	// Most ticks find nothing due: decide on a snapshot first, and open a
	// write transaction only when a step may run.
	var due bool
	err := a.store.View(ctx, func(tx store.Tx) error {
		ks, err := tx.Keys(store.KeyFilter{Ring: r.Name})
		if err != nil {
			return err
		}
		ds, err := c.Decide(policy.State{Keys: engineKeys(ks)}, a.clock.Now())
		due = len(ds) > 0
		return err
	})
	if err != nil || !due {
		return nil, err
	}
	var out []StepResult
	waiting := map[string]bool{}
	for range 16 { // a ring has at most a handful of due steps; bound the loop all the same
		var res *StepResult
		err := a.store.Update(ctx, func(tx store.Tx) error {
			res = nil
			now := a.clock.Now()
			ks, err := tx.Keys(store.KeyFilter{Ring: r.Name})
			if err != nil {
				return err
			}
			ds, err := c.Decide(policy.State{Keys: engineKeys(ks)}, now)
			if err != nil {
				return err
			}
			for _, d := range ds {
				if d.Action == policy.ActionRetire || waiting[d.String()] {
					continue // the retirement is part of the activation
				}
				sr, err := a.ringStep(ctx, tx, now, r, ks, d)
				var skip skipStep
				if errors.As(err, &skip) {
					waiting[d.String()] = true
					continue
				}
				if err != nil {
					return fmt.Errorf("%s: %s: %w", r.Name, d, err)
				}
				res = sr
				return tx.RecordStep(&store.Step{Key: sr.Key, Kind: sr.Action, Target: sr.Target, DoneAt: now})
			}
			return nil
		})
		if err != nil {
			return out, err
		}
		if res == nil {
			return out, nil
		}
		if res.Action == string(policy.ActionDestroy) {
			a.forget(res.Target)
		}
		out = append(out, *res)
	}
	return out, nil
}

// ringStep carries out one key decision inside tx; the caller records the
// returned step. A decision whose step already ran is refused with
// EConflict (the state does not show the step: a concurrent scheduler).
func (a *Authority) ringStep(ctx context.Context, tx store.Tx, now time.Time, r Ring, ks []*keyward.SigningKey, d policy.Decision) (*StepResult, error) {
	dec := decided{policyVersion: d.PolicyVersion, rule: d.Rule}
	res := &StepResult{Action: string(d.Action), Target: d.Target, Rule: d.Rule, PolicyVersion: d.PolicyVersion}
	done := func(key string) error {
		if _, err := tx.Step(key); err == nil {
			return keyward.Errorf(keyward.EConflict, "step %s already ran", key)
		} else if keyward.ErrorCode(err) != keyward.ENotFound {
			return err
		}
		res.Key = key
		return nil
	}
	pol := a.compiledFor(r.ProductID).Policy()
	switch d.Action {
	case policy.ActionRotate:
		if err := done("rotate:" + r.Name + ":" + newestKID(ks)); err != nil {
			return nil, err
		}
		alg, purpose := pol.Algorithm, keyward.PurposeLicense
		if r.ProductID == "" {
			alg, purpose = registryAlgorithm, keyward.PurposeRegistry
		}
		activate := d.Rule == policy.RuleNoActiveKey
		k, err := a.addKeyDecided(ctx, tx, now, alg, r.Name, purpose, r.ProductID, activate, d.Reason, dec)
		if err != nil {
			return nil, err
		}
		res.Target = k.KID
		if !activate {
			return res, a.announceRotation(ctx, tx, now, k, dec)
		}
		return res, nil
	case policy.ActionActivate:
		if err := done("activate:" + d.Target); err != nil {
			return nil, err
		}
		k, err := tx.Key(d.Target)
		if err != nil {
			return nil, err
		}
		return res, a.activateDecided(ctx, tx, now, k, d.Reason, dec)
	case policy.ActionDestroy:
		if e, err := heldBy(tx, now, d.Target, ExceptionRuleDestroy); err != nil || e != nil {
			if err != nil {
				return nil, err
			}
			return nil, skipStep{fmt.Sprintf("held by exception %s until %s", e.ID, e.Until.UTC().Format(time.RFC3339))}
		}
		k, err := tx.Key(d.Target)
		if err != nil {
			return nil, err
		}
		if pol.RevocationApprovals > 0 {
			return a.requestDestroy(ctx, tx, now, k, d, res)
		}
		if err := done("destroy:" + d.Target); err != nil {
			return nil, err
		}
		if _, err := a.destroyOrRequest(ctx, tx, now, k, d.Reason, dec); err != nil {
			return nil, err
		}
		return res, nil
	}
	return nil, skipStep{fmt.Sprintf("%s is not the scheduler's", d)}
}

// requestDestroy files the approval request of a destroyAfter decision
// where the policy needs approvals, unless one is pending or was denied
// (then the step waits: skipStep). An expired or cancelled request is
// filed again. The destruction itself runs at the final grant.
func (a *Authority) requestDestroy(ctx context.Context, tx store.Tx, now time.Time, k *keyward.SigningKey, d policy.Decision, res *StepResult) (*StepResult, error) {
	aps, err := tx.Approvals(store.ApprovalFilter{Action: PermKeyDestroy, TargetID: k.KID})
	if err != nil {
		return nil, err
	}
	if n := len(aps); n > 0 {
		switch last := aps[n-1]; last.EffectiveState(now) {
		case keyward.ApprovalPending:
			return nil, skipStep{"destruction awaits approval " + last.ID}
		case keyward.ApprovalDenied:
			return nil, skipStep{"destruction was denied (" + last.ID + ")"}
		}
	}
	key := fmt.Sprintf("destroy-request:%s:%d", k.KID, len(aps))
	if _, err := tx.Step(key); err == nil {
		return nil, keyward.Errorf(keyward.EConflict, "step %s already ran", key)
	}
	ap, err := a.destroyOrRequest(ctx, tx, now, k, d.Reason, decided{policyVersion: d.PolicyVersion, rule: d.Rule})
	if err != nil {
		return nil, err
	}
	res.Key, res.Action = key, "destroy-request"
	if ap != nil {
		res.Note = "approval " + ap.ID
	}
	return res, nil
}

// announceRotation writes the key.rotation_scheduled event of a pending
// key: when it will take over (per the decision engine), and from which key.
func (a *Authority) announceRotation(ctx context.Context, tx store.Tx, now time.Time, k *keyward.SigningKey, dec decided) error {
	ks, err := tx.Keys(store.KeyFilter{Ring: k.Ring})
	if err != nil {
		return err
	}
	c := a.compiledFor(k.ProductID)
	details := map[string]any{"ring": k.Ring, "product_id": k.ProductID, "algorithm": k.Algorithm}
	for _, d := range c.Upcoming(engineKeys(ks), now) {
		switch {
		case d.Action == policy.ActionActivate && d.Target == k.KID:
			details["activate_at"] = d.Due
		case d.Action == policy.ActionRetire:
			details["replaces"] = d.Target
		}
	}
	return a.record(ctx, tx, now, change{
		action: "key.schedule_rotation", event: "key.rotation_scheduled", targetType: "key", targetID: k.KID,
		after: string(k.State), reason: "successor published ahead of its activation", details: details,
		policyVersion: dec.policyVersion, rule: dec.rule,
	})
}

// SweepReport counts what one license sweep did.
type SweepReport struct {
	Expired int `json:"expired"`
	Retired int `json:"retired"`
	Notices int `json:"notices"`
	Errors  int `json:"errors"` // licenses whose rules failed to evaluate (logged)
}

// DefaultSweepBatch bounds each part of one license sweep.
const DefaultSweepBatch = 500

// Cursor names of the license sweeps.
const (
	cursorExpire  = "sweep:expire"
	cursorNotice  = "sweep:expiring-notice"
	cursorRetire  = "sweep:retire"
	maxStepKeyLen = 200
)

// SweepLicenses runs one bounded pass of the license decisions: up to
// limit (0 = DefaultSweepBatch) active licenses past their expiry are
// expired, up to limit licenses within their expiringNotice lead get the
// license.expiring event, and the next limit active licenses (a cursor
// that wraps) are checked against the licenses.retire rules. Each part is
// one transaction that also advances its cursor. more reports that a part
// had a full batch (call again soon). Auto-suspension rules are left to
// the validation path, which has the usage counters they need.
func (a *Authority) SweepLicenses(ctx context.Context, limit int) (rep SweepReport, more bool, err error) {
	if limit <= 0 {
		limit = DefaultSweepBatch
	}
	ctx = keyward.NewContextWithPrincipal(ctx, schedulerPrincipal)
	// Retire rules read last_validated_at: write the buffered last-seen
	// times first, so a license validated a moment ago is not "inactive".
	if _, err := a.FlushTouches(ctx); err != nil {
		return rep, false, err
	}
	for _, part := range []func(context.Context, int, *SweepReport) (bool, error){a.sweepExpiry, a.sweepNotices} {
		m, err := part(ctx, limit, &rep)
		if err != nil {
			return rep, more, err
		}
		more = more || m
	}
	// The retire rules walk every active license with a wrapping cursor, one
	// batch per tick: it never asks for another tick at once, or with a
	// million licenses it would run without pause (rules like "inactive for
	// 180 days" need no faster pass; docs/lifecycle.md).
	if _, err := a.sweepRetire(ctx, limit, &rep); err != nil {
		return rep, more, err
	}
	return rep, more, nil
}

// sweepBatch runs fn over a page of licenses read by page(after) from the
// named cursor, in one transaction, and advances (or wraps) the cursor.
func (a *Authority) sweepBatch(ctx context.Context, cursor string, limit int, page func(tx store.Tx, now time.Time, after string) ([]*keyward.License, error),
	fn func(tx store.Tx, now time.Time, l *keyward.License) error) (bool, error) {
	full := false
	err := a.store.Update(ctx, func(tx store.Tx) error {
		now := a.clock.Now()
		after, err := tx.Cursor(cursor)
		if err != nil {
			return err
		}
		ls, err := page(tx, now, after)
		if err != nil {
			return err
		}
		for _, l := range ls {
			if err := fn(tx, now, l); err != nil {
				return err
			}
		}
		full = len(ls) == limit
		next := ""
		if full {
			next = ls[len(ls)-1].ID
		}
		return tx.SetCursor(cursor, next)
	})
	return full, err
}

// licenseStep records step key in tx unless it already ran; it reports
// whether the caller should carry the step out.
func licenseStep(tx store.Tx, now time.Time, key, kind, target string) (bool, error) {
	if len(key) > maxStepKeyLen {
		key = key[:maxStepKeyLen]
	}
	if _, err := tx.Step(key); err == nil {
		return false, nil
	} else if keyward.ErrorCode(err) != keyward.ENotFound {
		return false, err
	}
	return true, tx.RecordStep(&store.Step{Key: key, Kind: kind, Target: target, DoneAt: now})
}

// decideLicense runs the engine on one license (with the product's active
// key for the CEL key variable) and carries out an expiry or retirement.
func (a *Authority) decideLicense(ctx context.Context, tx store.Tx, now time.Time, l *keyward.License, rep *SweepReport) error {
	c := a.compiledFor(l.ProductID)
	ms, err := tx.Machines(l.ID)
	if err != nil {
		return err
	}
	ks, err := tx.Keys(store.KeyFilter{Ring: keyward.LicenseRing(l.ProductID), States: []keyward.KeyState{keyward.KeyActive}})
	if err != nil {
		return err
	}
	lic := policy.LicenseOf(l, len(ms))
	ds, err := c.Decide(policy.State{Keys: engineKeys(ks), License: &lic}, now)
	if err != nil {
		rep.Errors++
		a.log.Warn("license rule failed to evaluate", "license", l.ID, "err", err)
	}
	for _, d := range ds {
		var action keyward.LicenseAction
		var kind, rule string
		switch d.Action {
		case policy.ActionExpire:
			action, kind, rule = keyward.LicenseExpire, "expire", ExceptionRuleExpire
		case policy.ActionRetireLicense:
			action, kind, rule = keyward.LicenseRetire, "retire-license", d.Rule
		default:
			continue
		}
		if e, err := heldBy(tx, now, l.ID, rule); err != nil {
			return err
		} else if e != nil {
			continue // held by an exception: not recorded, so it runs once the exception ends
		}
		run, err := licenseStep(tx, now, kind+":"+l.ID, kind, l.ID)
		if err != nil || !run {
			return err
		}
		if err := a.applyLicenseDecided(ctx, tx, now, l, action, d.Reason, decided{policyVersion: d.PolicyVersion, rule: d.Rule},
			map[string]any{"rule": d.Rule, "policy_version": d.PolicyVersion}); err != nil {
			return err
		}
		if action == keyward.LicenseExpire {
			rep.Expired++
		} else {
			rep.Retired++
		}
		return nil
	}
	return nil
}

func (a *Authority) sweepExpiry(ctx context.Context, limit int, rep *SweepReport) (bool, error) {
	return a.sweepBatch(ctx, cursorExpire, limit,
		func(tx store.Tx, now time.Time, after string) ([]*keyward.License, error) {
			return tx.LicensesExpiringBefore(now.Add(time.Nanosecond), after, limit)
		},
		func(tx store.Tx, now time.Time, l *keyward.License) error {
			return a.decideLicense(ctx, tx, now, l, rep)
		})
}

func (a *Authority) sweepRetire(ctx context.Context, limit int, rep *SweepReport) (bool, error) {
	return a.sweepBatch(ctx, cursorRetire, limit,
		func(tx store.Tx, now time.Time, after string) ([]*keyward.License, error) {
			return tx.Licenses(store.LicenseFilter{State: keyward.LicenseActive, After: after, Limit: limit})
		},
		func(tx store.Tx, now time.Time, l *keyward.License) error {
			return a.decideLicense(ctx, tx, now, l, rep)
		})
}

// maxExpiringNotice is the longest expiringNotice of the policies in force.
func (a *Authority) maxExpiringNotice() time.Duration {
	a.stored.mu.RLock()
	defer a.stored.mu.RUnlock()
	m := a.stored.builtin.Policy().ExpiringNotice
	for _, c := range a.stored.byProduct {
		m = max(m, c.Policy().ExpiringNotice)
	}
	return m
}

func (a *Authority) sweepNotices(ctx context.Context, limit int, rep *SweepReport) (bool, error) {
	lead := a.maxExpiringNotice()
	if lead <= 0 {
		return false, nil
	}
	return a.sweepBatch(ctx, cursorNotice, limit,
		func(tx store.Tx, now time.Time, after string) ([]*keyward.License, error) {
			return tx.LicensesExpiringBefore(now.Add(lead), after, limit)
		},
		func(tx store.Tx, now time.Time, l *keyward.License) error {
			c := a.compiledFor(l.ProductID)
			d, ok := c.ExpiringNotice(policy.LicenseOf(l, 0), now)
			if !ok {
				return nil
			}
			run, err := licenseStep(tx, now, fmt.Sprintf("expiring-notice:%s:%d", l.ID, l.ExpiresAt.Unix()), "expiring-notice", l.ID)
			if err != nil || !run {
				return err
			}
			rep.Notices++
			return a.record(ctx, tx, now, change{
				action: "license.notify_expiring", event: "license.expiring", targetType: "license", targetID: l.ID,
				before: string(l.State), after: string(l.State), reason: d.Reason,
				details:       map[string]any{"product_id": l.ProductID, "holder": l.Holder, "expires_at": l.ExpiresAt, "key_prefix": l.KeyPrefix},
				policyVersion: d.PolicyVersion, rule: d.Rule,
			})
		})
}

// PlannedStep is one upcoming lifecycle step of a ring.
type PlannedStep struct {
	Action string    `json:"action"` // rotate, activate, retire, destroy, unpublish
	Target string    `json:"target,omitempty"`
	Due    time.Time `json:"due"`
	Rule   string    `json:"rule"`
	Reason string    `json:"reason"`
	// Status: "due" (the next tick carries it out), "scheduled",
	// "projected" (follows from a step not taken yet), "awaiting
	// approval", "denied".
	Status     string `json:"status"`
	ApprovalID string `json:"approval_id,omitempty"`
	// ExceptionID and HeldUntil name the active exception holding the
	// step (Status "held by exception"); it runs after HeldUntil.
	ExceptionID string     `json:"exception_id,omitempty"`
	HeldUntil   *time.Time `json:"held_until,omitempty"`
}

// RingPlan is what will happen to one ring, and when.
type RingPlan struct {
	Ring          string             `json:"ring"`
	ProductID     string             `json:"product_id,omitempty"`
	Product       string             `json:"product,omitempty"`
	PolicyVersion int                `json:"policy_version"`
	Active        string             `json:"active,omitempty"`
	Pending       []string           `json:"pending"`
	Steps         []PlannedStep      `json:"steps"`
	Jobs          []*store.ResignJob `json:"-"`
	Notices       *ExpiryOutlook     `json:"licenses,omitempty"`
}

// ExpiryOutlook counts a product's active licenses by coming expiry.
type ExpiryOutlook struct {
	ExpiringNotice time.Duration `json:"-"`
	// Expiring counts active licenses expiring within expiringNotice.
	Expiring int `json:"expiring"`
	// Overdue counts active licenses past their expiry (the next sweep
	// expires them).
	Overdue int `json:"overdue"`
}

// Schedule returns the plan of every ring (product "" : the registry ring
// and every product's, or only the product's ring): the decision engine's
// upcoming decisions with their due times and status, the times retired
// keys leave JWKS, and re-sign jobs in progress.
func (a *Authority) Schedule(ctx context.Context, product string) ([]*RingPlan, error) {
	var out []*RingPlan
	err := a.store.View(ctx, func(tx store.Tx) error {
		now := a.clock.Now()
		var rings []Ring
		if product != "" {
			p, err := a.policyProduct(ctx, tx, product)
			if err != nil {
				return err
			}
			rings = []Ring{{Name: keyward.LicenseRing(p.ID), ProductID: p.ID, Product: p.Name}}
		} else {
			if keyward.PrincipalFromContext(ctx).ProductID != "" {
				return keyward.Errorf(keyward.EForbidden, "a product-scoped token sees only its product's schedule: name the product")
			}
			rings = append(rings, Ring{Name: keyward.RegistryRing})
			ps, err := tx.Products()
			if err != nil {
				return err
			}
			for _, p := range ps {
				rings = append(rings, Ring{Name: keyward.LicenseRing(p.ID), ProductID: p.ID, Product: p.Name})
			}
		}
		for _, r := range rings {
			rp, err := a.planRing(tx, now, r)
			if err != nil {
				return err
			}
			out = append(out, rp)
		}
		return nil
	})
	return out, err
}

func (a *Authority) planRing(tx store.Tx, now time.Time, r Ring) (*RingPlan, error) {
	c := a.compiledFor(r.ProductID)
	pol := c.Policy()
	ks, err := tx.Keys(store.KeyFilter{Ring: r.Name})
	if err != nil {
		return nil, err
	}
	rp := &RingPlan{Ring: r.Name, ProductID: r.ProductID, Product: r.Product, PolicyVersion: c.Version(), Pending: []string{}, Steps: []PlannedStep{}}
	byKID := map[string]*keyward.SigningKey{}
	for _, k := range ks {
		byKID[k.KID] = k
		switch k.State {
		case keyward.KeyActive:
			rp.Active = k.KID
		case keyward.KeyPending:
			rp.Pending = append(rp.Pending, k.KID)
		case keyward.KeyRetired:
			if k.RetiredAt != nil && now.Before(publishedUntil(k, pol)) {
				rp.Steps = append(rp.Steps, PlannedStep{Action: "unpublish", Target: k.KID, Due: publishedUntil(k, pol), Rule: "verifyWindow",
					Reason: fmt.Sprintf("retired key %s leaves JWKS max(verifyWindow %s, certificateTTL %s) after its retirement", k.KID,
						keyward.FormatDuration(pol.VerifyWindow), keyward.FormatDuration(pol.CertificateTTL)),
					Status: "scheduled"})
			}
		}
	}
	for _, d := range c.Upcoming(engineKeys(ks), now) {
		st := PlannedStep{Action: string(d.Action), Target: d.Target, Due: d.Due, Rule: d.Rule, Reason: d.Reason, Status: "scheduled"}
		switch {
		case strings.HasSuffix(d.Reason, "(projected)"):
			st.Status = "projected"
		case !now.Before(d.Due):
			st.Status = "due"
		}
		if d.Action == policy.ActionDestroy && pol.RevocationApprovals > 0 && byKID[d.Target] != nil && byKID[d.Target].State == keyward.KeyRetired {
			aps, err := tx.Approvals(store.ApprovalFilter{Action: PermKeyDestroy, TargetID: d.Target})
			if err != nil {
				return nil, err
			}
			st.Reason += fmt.Sprintf("; needs %d approval(s): the scheduler files the request when due, and the key is destroyed at the final grant", pol.RevocationApprovals)
			if n := len(aps); n > 0 {
				last := aps[n-1]
				switch last.EffectiveState(now) {
				case keyward.ApprovalPending:
					st.Status, st.ApprovalID = "awaiting approval", last.ID
				case keyward.ApprovalDenied:
					st.Status, st.ApprovalID = "denied", last.ID
					st.Reason += fmt.Sprintf("; denied by %s: %s (destroy it by hand with `keyward key destroy %s`)", last.DecidedByName, last.DecisionReason, d.Target)
				}
			}
		}
		if d.Action == policy.ActionDestroy {
			if err := holdPlanned(tx, now, &st); err != nil {
				return nil, err
			}
		}
		rp.Steps = append(rp.Steps, st)
	}
	if r.ProductID != "" {
		held, err := heldLicenseSteps(tx, now, r.ProductID)
		if err != nil {
			return nil, err
		}
		rp.Steps = append(rp.Steps, held...)
	}
	slices.SortStableFunc(rp.Steps, func(x, y PlannedStep) int { return x.Due.Compare(y.Due) })
	for _, k := range ks {
		j, err := tx.ResignJob(k.KID)
		if err == nil {
			if j.State == store.ResignRunning {
				rp.Jobs = append(rp.Jobs, j)
			}
		} else if keyward.ErrorCode(err) != keyward.ENotFound {
			return nil, err
		}
	}
	if r.ProductID != "" && pol.ExpiringNotice > 0 {
		o := &ExpiryOutlook{ExpiringNotice: pol.ExpiringNotice}
		ls, err := tx.LicensesExpiringBefore(now.Add(pol.ExpiringNotice), "", 0)
		if err != nil {
			return nil, err
		}
		for _, l := range ls {
			if l.ProductID != r.ProductID {
				continue
			}
			if l.Expired(now) {
				o.Overdue++
			} else {
				o.Expiring++
			}
		}
		rp.Notices = o
	}
	return rp, nil
}

// RollbackResult is what a rollback did.
type RollbackResult struct {
	Activated *keyward.SigningKey // the previous key, active again
	Retired   *keyward.SigningKey // the key it replaced, now retired
}

// RollbackKey undoes the last rotation of product's ring within the
// overlap window: the key the active key replaced becomes active again and
// the active key is retired, in one transaction, audited (key.rollback)
// with the justification. The re-activated key's cryptoperiod restarts at
// the rollback. Errors: EInvalid without a justification; ENotFound for
// an unknown product; EIllegalTransition when the active key replaced no
// key; ERollbackClosed when the previous key left JWKS, was destroyed or
// was compromised.
func (a *Authority) RollbackKey(ctx context.Context, product, justification string) (*RollbackResult, error) {
	just, err := checkJustification(justification)
	if err != nil {
		return nil, err
	}
	var out *RollbackResult
	err = a.store.Update(ctx, func(tx store.Tx) error {
		now := a.clock.Now()
		p, err := a.policyProduct(ctx, tx, product)
		if err != nil {
			return err
		}
		pol, err := a.policy(ctx, p.ID)
		if err != nil {
			return err
		}
		ks, err := tx.Keys(store.KeyFilter{Ring: keyward.LicenseRing(p.ID)})
		if err != nil {
			return err
		}
		var cur, prev *keyward.SigningKey
		for _, k := range ks {
			switch {
			case k.State == keyward.KeyActive:
				cur = k
			case k.RetiredAt != nil && (prev == nil || k.RetiredAt.After(*prev.RetiredAt)):
				prev = k
			}
		}
		if cur == nil || cur.ActivatedAt == nil || prev == nil || !prev.RetiredAt.Equal(*cur.ActivatedAt) {
			return keyward.Errorf(keyward.EIllegalTransition, "product %s: the active key did not replace a retired key, so there is no rotation to roll back", p.Name)
		}
		switch {
		case prev.State != keyward.KeyRetired:
			return keyward.Errorf(keyward.ERollbackClosed, "product %s: the previous key %s is %s: it can never sign again (rotate instead)", p.Name, prev.KID, prev.State)
		case !now.Before(publishedUntil(prev, pol)):
			return keyward.Errorf(keyward.ERollbackClosed, "product %s: the overlap window of %s closed at %s (it left JWKS): rotate instead",
				p.Name, prev.KID, publishedUntil(prev, pol).UTC().Format(time.RFC3339))
		}
		if err := checkDuties(ctx, tx, pol, PermKeyRollback, prev.KID); err != nil {
			return err
		}
		if err := a.transitionKey(ctx, tx, now, cur, keyward.KeyRetire, "rolled back: "+just); err != nil {
			return err
		}
		to, err := keyward.KeyTransition(prev.State, keyward.KeyRollback)
		if err != nil {
			return err
		}
		prev.State, prev.ActivatedAt, prev.RetiredAt, prev.Reason = to, &now, nil, "rollback: "+just
		if err := tx.UpdateKey(prev); err != nil {
			return err
		}
		if j, err := tx.ResignJob(prev.KID); err == nil && j.State == store.ResignRunning {
			if _, err := a.finishResign(ctx, tx, now, j, store.ResignCancelled, "the key is active again (rollback)", 0); err != nil {
				return err
			}
		} else if err != nil && keyward.ErrorCode(err) != keyward.ENotFound {
			return err
		}
		if err := a.record(ctx, tx, now, change{
			action: "key.rollback", event: "key.rolled_back", targetType: "key", targetID: prev.KID,
			before: string(keyward.KeyRetired), after: string(to), reason: just,
			details: map[string]any{"ring": prev.Ring, "product_id": p.ID, "retired": cur.KID},
		}); err != nil {
			return err
		}
		out = &RollbackResult{Activated: prev, Retired: cur}
		return nil
	})
	if err != nil {
		return nil, a.refused(ctx, PermKeyRollback, "product", product, err)
	}
	return out, nil
}
