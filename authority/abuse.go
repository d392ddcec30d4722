package authority

import (
	"context"
	"fmt"
	"math"
	"slices"
	"strings"
	"sync"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/keyward/keyward"
	"github.com/keyward/keyward/policy"
	"github.com/keyward/keyward/store"
)

// Abuse signals and automatic suspension (docs/abuse.md): the early-warning
// half of revocation.
//
// Every validation of a known license key counts into the license's usage
// counters (usage.go) and, while the license is active, runs the policy's
// revocation.autoSuspend rules over them. When one is true the license is
// suspended — reversibly — in a transaction that re-checks the rule with
// exact values and writes the suspension, its revocation-registry row, the
// audit entry (rule, policy version, the values that tripped it), the
// license.auto_suspended event and, where the policy needs approvals for
// revocation, a revocation request for people to confirm (or to reinstate
// the license, which cancels it). Explicit signals (RecordSignal) are
// recorded and audited; the kinds the policy lists under suspendOnSignal
// suspend the same way.
//
// Guards against a rule (or a caller) doing harm:
//   - Only the holder of a key moves its license's counters: validations
//     of unknown keys count nowhere, and a key counts only for its own
//     license (found from the key's hash).
//   - Cooldown: a license is not suspended automatically again within
//     autoSuspendCooldown of its last automatic suspension (a person who
//     reinstated it has decided).
//   - Ceiling: at most autoSuspendCeiling automatic suspensions per product
//     per rolling hour; beyond it the license stays active and an alert is
//     raised instead (license.auto_suspend_ceiling: audit entry and event,
//     once per product per hour; a log line; the metric).

// Limits on signals.
const (
	MaxSignalDetail = 2000 // bytes
	MaxSignalPage   = 1000
)

// abusePrincipal is who acts for an automatic suspension by rule.
var abusePrincipal = keyward.Principal{ID: "system:abuse", Name: "automatic suspension"}

// machinesRefresh is how stale license.machines may be on the validation
// path (the suspension transaction re-reads it exactly).
const machinesRefresh = 60 // seconds

// retryAfterMiss is how long a license whose match did not hold up in the
// transaction waits before the next attempt.
const retryAfterMiss = 1 // seconds

// abuse is the authority's abuse-detection state.
type abuse struct {
	usage *usageTracker

	mu       sync.Mutex
	products map[string]*productAbuse
	stats    map[AbuseStat]uint64 // Count is zero in the keys
}

// productAbuse is per-product state of the validation path.
type productAbuse struct {
	compiled     *policy.Compiled // the policy reads was computed for
	reads        policy.AutoSuspendInputs
	key          *policy.Key // the active key, when reads.Key
	keyAt        int64
	ceilingUntil int64 // unix second: matches before it are held without a transaction
	errLoggedAt  int64 // last rule evaluation error logged
}

func newAbuse(maxLicenses int) *abuse {
	return &abuse{usage: newUsageTracker(maxLicenses), products: map[string]*productAbuse{}, stats: map[AbuseStat]uint64{}}
}

// AbuseStat counts automatic suspension decisions of one product and
// rule since the process started: Outcome "suspended", "alerted" (the
// ceiling was reached: an alert instead), or "held" (a match while the
// ceiling was reached; the alert was already raised).
type AbuseStat struct {
	Product string // product name
	Rule    string
	Outcome string
	Count   uint64
}

// AbuseStats returns the counts, sorted, for /metrics.
func (a *Authority) AbuseStats() []AbuseStat {
	if a.abuse == nil {
		return nil
	}
	a.abuse.mu.Lock()
	out := make([]AbuseStat, 0, len(a.abuse.stats))
	for k, n := range a.abuse.stats {
		k.Count = n
		out = append(out, k)
	}
	a.abuse.mu.Unlock()
	slices.SortFunc(out, func(x, y AbuseStat) int {
		return strings.Compare(x.Product+"\x00"+x.Rule+"\x00"+x.Outcome, y.Product+"\x00"+y.Rule+"\x00"+y.Outcome)
	})
	return out
}

// TrackedLicenses returns how many licenses have usage counters in memory.
func (a *Authority) TrackedLicenses() int {
	if a.abuse == nil {
		return 0
	}
	return a.abuse.usage.tracked()
}

func (ab *abuse) count(product, rule, outcome string) {
	ab.mu.Lock()
	ab.stats[AbuseStat{Product: product, Rule: rule, Outcome: outcome}]++
	ab.mu.Unlock()
}

// product returns the state of a product under compiled policy c.
func (ab *abuse) product(id string, c *policy.Compiled) *productAbuse {
	ab.mu.Lock()
	defer ab.mu.Unlock()
	p := ab.products[id]
	if p == nil || p.compiled != c {
		p = &productAbuse{compiled: c, reads: c.AutoSuspendReads()}
		if old := ab.products[id]; old != nil {
			p.ceilingUntil = old.ceilingUntil
		}
		ab.products[id] = p
	}
	return p
}

func validationOutcome(e *cacheEntry, v *Validation) outcome {
	switch {
	case v.Valid:
		return outcomeValid
	case v.Code == keyward.CodeTooManyMachines || v.Code == keyward.CodeSuperseded:
		return outcomeFailed
	case v.Code == keyward.CodeNotFound && e != nil:
		return outcomeFailed // a known key presented for another product
	}
	return outcomeNeutral
}

// observe is the validation path's part: count the validation of e's
// license and, when due, run the autoSuspend rules. It returns v, changed
// to SUSPENDED if this validation suspended the license.
func (a *Authority) observe(ctx context.Context, r ValidateRequest, e *cacheEntry, v *Validation, now time.Time) *Validation {
	sec := now.Unix()
	id := e.license.ID
	ob := a.abuse.usage.observe(id, observation{
		now: sec, fingerprint: r.Fingerprint, source: r.Source, outcome: validationOutcome(e, v),
		active: e.license.State == keyward.LicenseActive && !e.license.Expired(now), version: e.license.UpdatedAt.UnixNano(),
	})
	if !ob.evaluate {
		return v
	}
	c := a.stored.compiled(e.product.ID)
	if !c.HasAutoSuspend() {
		return v
	}
	pa := a.abuse.product(e.product.ID, c)
	lic := policy.LicenseOf(&e.license, ob.machines)
	if pa.reads.Machines && sec-ob.machinesAt >= machinesRefresh {
		if n, err := a.countMachines(ctx, id); err == nil {
			lic.Machines = n
			a.abuse.usage.setMachines(id, n, sec)
		}
	}
	var key *policy.Key
	if pa.reads.Key {
		key = a.activeKeyOf(ctx, pa, e.product.ID, sec)
	}
	u := ob.usage
	rule, ok, err := c.MatchAutoSuspend(&lic, key, &u, now)
	if err != nil {
		a.logRuleError(pa, e.product.Name, sec, err)
	} else if !ok && pa.reads.RateMonotone {
		if r := quietRate(c, &lic, key, u, now); r > u.ValidationsPerMinute {
			a.abuse.usage.setRateQuiet(id, ob.seq, r)
		}
	}
	if !ok || !a.abuse.usage.begin(id, sec) {
		return v
	}
	quiet := sec + retryAfterMiss
	defer func() { a.abuse.usage.end(id, quiet) }()
	if until := a.ceilingUntil(pa); sec < until {
		a.abuse.count(e.product.Name, rule.Name, "held")
		a.log.Info("automatic suspension held back: the product is at its ceiling", "license", id, "product", e.product.Name, "rule", rule.Name)
		quiet = until
		return v
	}
	// Not cancelled with the request: a client hanging up at once must not
	// be a way to escape its suspension.
	res, err := a.autoSuspend(context.WithoutCancel(ctx), trip{licenseID: id, rule: rule, usage: u, via: viaRule})
	if err != nil {
		a.log.Error("automatic suspension failed", "license", id, "rule", rule.Name, "err", err)
		return v
	}
	quiet = a.afterTrip(pa, e.product.Name, id, res, sec)
	// Without a license in v the key was presented for another product:
	// that answer stays NOT_FOUND.
	if res.outcome != keyward.AutoSuspended || v.License == nil {
		return v
	}
	out := *v
	l := *v.License
	l.State = keyward.LicenseSuspended
	out.Valid, out.Code, out.Lease, out.License = false, keyward.CodeSuspended, nil, &l
	return &out
}

// maxRate is the highest validations_per_minute the counters reach.
const maxRate = usageWindow * math.MaxUint16

// quietRate returns the highest validations_per_minute up to which the
// rules c, monotone in it (policy.RateMonotone) and false at u, stay false
// with every other input as given: one more evaluation at twice the rate
// (at least 64 more) when they are false there too, else a bisection to
// the exact threshold (at most 22 evaluations, run only while a license
// is heading for one). A rule that fails to evaluate gives no bound
// (u's own rate).
func quietRate(c *policy.Compiled, l *policy.License, k *policy.Key, u policy.Usage, now time.Time) int {
	lo := u.ValidationsPerMinute // false here
	hi := min(maxRate, lo+max(64, lo))
	if hi <= lo {
		return lo
	}
	probe := func(rate int) (fires, ok bool) {
		p := u
		p.ValidationsPerMinute = rate
		_, fires, err := c.MatchAutoSuspend(l, k, &p, now)
		return fires, err == nil
	}
	fires, ok := probe(hi)
	if !ok {
		return lo
	}
	if !fires {
		return hi
	}
	for hi-lo > 1 { // false at lo, true at hi
		mid := lo + (hi-lo)/2
		if fires, ok = probe(mid); !ok {
			return u.ValidationsPerMinute
		}
		if fires {
			hi = mid
		} else {
			lo = mid
		}
	}
	return lo
}

// afterTrip updates the in-memory gates after a suspension transaction and
// returns until when the license waits before another attempt.
func (a *Authority) afterTrip(pa *productAbuse, product, licenseID string, res *tripResult, sec int64) int64 {
	switch res.outcome {
	case keyward.AutoSuspended:
		a.abuse.count(product, res.rule, "suspended")
		a.log.Warn("license suspended automatically", "license", licenseID, "product", product, "rule", res.rule, "policy_version", res.policyVersion)
		return ceilUnix(res.quietUntil)
	case keyward.AutoCeiling:
		a.abuse.mu.Lock()
		pa.ceilingUntil = max(pa.ceilingUntil, ceilUnix(res.ceilingUntil))
		a.abuse.mu.Unlock()
		if res.alerted {
			a.abuse.count(product, res.rule, "alerted")
			a.log.Warn("automatic suspension ceiling reached: alerting instead of suspending", "license", licenseID, "product", product,
				"rule", res.rule, "ceiling", res.ceiling, "until", res.ceilingUntil)
		} else {
			a.abuse.count(product, res.rule, "held")
			a.log.Info("automatic suspension held back: the product is at its ceiling", "license", licenseID, "product", product, "rule", res.rule)
		}
		return ceilUnix(res.ceilingUntil)
	default:
		if !res.quietUntil.IsZero() {
			return ceilUnix(res.quietUntil)
		}
		return sec + retryAfterMiss
	}
}

func (a *Authority) ceilingUntil(pa *productAbuse) int64 {
	a.abuse.mu.Lock()
	defer a.abuse.mu.Unlock()
	return pa.ceilingUntil
}

// logRuleError logs a rule that fails to evaluate, at most once a minute
// per product.
func (a *Authority) logRuleError(pa *productAbuse, product string, sec int64, err error) {
	a.abuse.mu.Lock()
	log := sec-pa.errLoggedAt >= 60
	if log {
		pa.errLoggedAt = sec
	}
	a.abuse.mu.Unlock()
	if log {
		a.log.Warn("autoSuspend rule failed to evaluate (it does not fire)", "product", product, "err", err)
	}
}

func (a *Authority) countMachines(ctx context.Context, licenseID string) (int, error) {
	var n int
	err := a.store.View(ctx, func(tx store.Tx) error {
		ms, err := tx.Machines(licenseID)
		n = len(ms)
		return err
	})
	return n, err
}

// activeKeyOf returns the product's active key for rules reading key,
// read at most once a minute.
func (a *Authority) activeKeyOf(ctx context.Context, pa *productAbuse, productID string, sec int64) *policy.Key {
	a.abuse.mu.Lock()
	k, at := pa.key, pa.keyAt
	a.abuse.mu.Unlock()
	if k != nil && sec-at < machinesRefresh {
		return k
	}
	var key *policy.Key
	_ = a.store.View(ctx, func(tx store.Tx) error {
		var err error
		key, err = activeKey(tx, productID)
		return err
	})
	if key == nil {
		return k
	}
	a.abuse.mu.Lock()
	pa.key, pa.keyAt = key, sec
	a.abuse.mu.Unlock()
	return key
}

func activeKey(tx store.Tx, productID string) (*policy.Key, error) {
	ks, err := tx.Keys(store.KeyFilter{Ring: keyward.LicenseRing(productID), States: []keyward.KeyState{keyward.KeyActive}})
	if err != nil || len(ks) == 0 {
		return nil, err
	}
	k := policy.KeyOf(ks[0])
	return &k, nil
}

// How an automatic suspension came about.
type tripVia int

const (
	viaRule   tripVia = iota // a revocation.autoSuspend rule on the validation path
	viaSignal                // a signal kind in revocation.suspendOnSignal
)

// trip is a match to carry out.
type trip struct {
	licenseID string
	rule      keyward.PolicyRule // the matching rule (viaRule)
	usage     policy.Usage       // the counters that tripped it
	via       tripVia
	signal    *keyward.Signal // viaSignal: the signal (its Outcome is set here)
}

// tripResult is what the transaction did.
type tripResult struct {
	outcome       string // keyward.AutoSuspended, keyward.AutoCeiling, or "" (nothing: see quietUntil)
	rule          string
	policyVersion int
	quietUntil    time.Time // cooldown end (suspended, or a cooldown found)
	ceilingUntil  time.Time // when the product may suspend again (AutoCeiling)
	ceiling       int
	alerted       bool // AutoCeiling: this transaction raised the product's alert
	license       *keyward.License
	approval      *keyward.Approval
}

// autoSuspend carries out a match in its own transaction.
func (a *Authority) autoSuspend(ctx context.Context, t trip) (*tripResult, error) {
	var res *tripResult
	ctx = keyward.NewContextWithPrincipal(ctx, abusePrincipal)
	err := a.store.Update(ctx, func(tx store.Tx) error {
		now := a.clock.Now()
		plan, err := a.planTrip(ctx, tx, now, t)
		if err != nil {
			return err
		}
		res = plan.res
		return a.applyTrip(ctx, tx, now, plan)
	})
	return res, err
}

// tripPlan is what planTrip decided and applyTrip writes.
type tripPlan struct {
	res       *tripResult
	reason    string // the revocation reason of the suspension
	details   map[string]any
	suspended int // automatic suspensions of the product in the window (AutoCeiling)
}

// planTrip re-checks a match inside tx: the license still active, the rule
// still true with exact values (license.machines, key) under the policy in
// force, then the cooldown and the ceiling. It writes nothing.
func (a *Authority) planTrip(ctx context.Context, tx store.Tx, now time.Time, t trip) (*tripPlan, error) {
	l, err := tx.License(t.licenseID)
	if err != nil {
		return nil, err
	}
	plan := &tripPlan{res: &tripResult{license: l}}
	res := plan.res
	if l.State != keyward.LicenseActive || l.Expired(now) {
		return plan, nil
	}
	c := a.stored.compiled(l.ProductID)
	res.policyVersion = c.Version()
	cooldown, ceiling := c.AutoSuspendGuards()
	res.ceiling = ceiling
	plan.details = map[string]any{"product_id": l.ProductID, "automatic": true}
	switch t.via {
	case viaRule:
		ms, err := tx.Machines(l.ID)
		if err != nil {
			return nil, err
		}
		lic := policy.LicenseOf(l, len(ms))
		key, err := activeKey(tx, l.ProductID)
		if err != nil {
			return nil, err
		}
		rule, ok, _ := c.MatchAutoSuspend(&lic, key, &t.usage, now)
		if !ok {
			return plan, nil // no longer true (the policy or the license changed)
		}
		res.rule, plan.reason = rule.Name, "abuse"
		plan.details["rule"], plan.details["when"] = rule.Name, rule.When
		plan.details["usage"] = usageView(t.usage)
		plan.details["license"] = map[string]any{"max_machines": lic.MaxMachines, "machines": lic.Machines}
	case viaSignal:
		res.rule, plan.reason = policy.RuleSuspendOnSignal, signalReason(t.signal.Kind)
		plan.details["rule"] = policy.RuleSuspendOnSignal
		plan.details["signal_id"], plan.details["kind"] = t.signal.ID, string(t.signal.Kind)
	}
	plan.details["policy_version"] = res.policyVersion

	last, err := tx.AutoSuspensions(store.AutoSuspensionFilter{LicenseID: l.ID, Outcome: keyward.AutoSuspended, Since: windowStart(now, cooldown)})
	if err != nil {
		return nil, err
	}
	if len(last) > 0 {
		res.quietUntil = last[len(last)-1].At.Add(cooldown)
		return plan, nil
	}
	var inWindow []*keyward.AutoSuspension
	if ceiling > 0 {
		inWindow, err = tx.AutoSuspensions(store.AutoSuspensionFilter{
			ProductID: l.ProductID, Outcome: keyward.AutoSuspended, Since: windowStart(now, policy.AutoSuspendWindow), Limit: ceiling,
		})
		if err != nil {
			return nil, err
		}
	}
	if len(inWindow) >= ceiling {
		res.outcome, plan.suspended = keyward.AutoCeiling, len(inWindow)
		res.ceilingUntil = now.Add(policy.AutoSuspendWindow)
		if len(inWindow) > 0 {
			res.ceilingUntil = inWindow[0].At.Add(policy.AutoSuspendWindow)
		}
		return plan, nil
	}
	res.outcome, res.quietUntil = keyward.AutoSuspended, now.Add(cooldown)
	return plan, nil
}

// windowStart is the first instant of the window of length d ending at
// now: records at or after it are in. A record made at T leaves the
// window at T + d exactly (the store keeps microseconds).
func windowStart(now time.Time, d time.Duration) time.Time {
	return now.Add(-d + time.Microsecond)
}

// ceilUnix is t in unix seconds, rounded up: the in-memory gates count in
// seconds and must not open before t.
func ceilUnix(t time.Time) int64 {
	if t.Nanosecond() > 0 {
		return t.Unix() + 1
	}
	return t.Unix()
}

// signalOutcome is the outcome of a signal whose kind suspends, once
// planned.
func (p *tripPlan) signalOutcome() string {
	switch {
	case p.res.outcome == keyward.AutoSuspended:
		return keyward.SignalSuspended
	case p.res.outcome == keyward.AutoCeiling:
		return keyward.SignalCeiling
	case !p.res.quietUntil.IsZero():
		return keyward.SignalCooldown
	}
	return keyward.SignalInactive
}

// applyTrip writes a plan: the suspension (bookkeeping row, license,
// registry row, revocation request where approvals are configured, audit
// entry and license.auto_suspended event), or the ceiling alert.
func (a *Authority) applyTrip(ctx context.Context, tx store.Tx, now time.Time, plan *tripPlan) error {
	res, l := plan.res, plan.res.license
	switch res.outcome {
	case keyward.AutoCeiling:
		return a.alertCeiling(ctx, tx, now, l, res, plan.details, plan.suspended)
	case keyward.AutoSuspended:
	default:
		return nil
	}
	id, err := a.newID("aus")
	if err != nil {
		return err
	}
	if err := tx.CreateAutoSuspension(&keyward.AutoSuspension{
		ID: id, LicenseID: l.ID, ProductID: l.ProductID, Rule: res.rule, PolicyVersion: res.policyVersion, Outcome: keyward.AutoSuspended, At: now,
	}); err != nil {
		return err
	}
	before := l.State
	l.State, l.Reason, l.UpdatedAt = keyward.LicenseSuspended, plan.reason, now
	if err := tx.UpdateLicense(l); err != nil {
		return err
	}
	if err := a.registerLicenseChange(tx, now, l, keyward.LicenseSuspend); err != nil {
		return err
	}
	pol, err := a.policy(ctx, l.ProductID)
	if err != nil {
		return err
	}
	if pol.RevocationApprovals > 0 {
		cur, err := a.pendingApproval(ctx, tx, now, PermLicenseRevoke, l.ID)
		if err != nil {
			return err
		}
		if cur == nil {
			if res.approval, err = a.requestApproval(ctx, tx, now, pol, PermLicenseRevoke, "license", l.ID, l.ProductID, plan.reason); err != nil {
				return err
			}
			plan.details["approval_id"], plan.details["awaiting"] = res.approval.ID, PermLicenseRevoke
		}
	}
	plan.details["cooldown_until"] = res.quietUntil
	return a.record(ctx, tx, now, change{
		action: "license.suspend", event: "license.auto_suspended", targetType: "license", targetID: l.ID,
		before: string(before), after: string(l.State), reason: plan.reason, details: plan.details,
		policyVersion: res.policyVersion, rule: res.rule,
	})
}

// alertCeiling raises the product's ceiling alert — a record, an audit
// entry and the license.auto_suspend_ceiling event — unless one was
// already raised in the current window.
func (a *Authority) alertCeiling(ctx context.Context, tx store.Tx, now time.Time, l *keyward.License, res *tripResult, details map[string]any, suspended int) error {
	prev, err := tx.AutoSuspensions(store.AutoSuspensionFilter{ProductID: l.ProductID, Outcome: keyward.AutoCeiling, Since: windowStart(now, policy.AutoSuspendWindow), Limit: 1})
	if err != nil || len(prev) > 0 {
		return err
	}
	id, err := a.newID("aus")
	if err != nil {
		return err
	}
	if err := tx.CreateAutoSuspension(&keyward.AutoSuspension{
		ID: id, LicenseID: l.ID, ProductID: l.ProductID, Rule: res.rule, PolicyVersion: res.policyVersion, Outcome: keyward.AutoCeiling, At: now,
	}); err != nil {
		return err
	}
	details["ceiling"], details["window"], details["suspended_in_window"] = res.ceiling, policy.AutoSuspendWindow.String(), suspended
	details["ceiling_until"] = res.ceilingUntil
	res.alerted = true
	return a.record(ctx, tx, now, change{
		action: "license.auto_suspend_ceiling", event: "license.auto_suspend_ceiling", targetType: "license", targetID: l.ID,
		before: string(l.State), after: string(l.State),
		reason:  fmt.Sprintf("automatic suspension ceiling reached (%d per %s): the license stays active; a person should look", res.ceiling, policy.AutoSuspendWindow),
		details: details, policyVersion: res.policyVersion, rule: res.rule,
	})
}

// signalReason is the revocation reason a signal kind suspends (and asks
// to revoke) with.
func signalReason(k keyward.SignalKind) string {
	switch k {
	case keyward.SignalLeak:
		return "key_compromise"
	case keyward.SignalChargeback:
		return "non_payment"
	case keyward.SignalAbuse:
		return "abuse"
	}
	return "unspecified"
}

func usageView(u policy.Usage) map[string]int {
	return map[string]int{
		"validations_per_minute": u.ValidationsPerMinute, "distinct_fingerprints_24h": u.DistinctFingerprints24h,
		"failed_validations_in_row": u.FailedValidationsInRow, "distinct_networks_24h": u.DistinctNetworks24h,
	}
}

// SignalRequest is an explicit signal about a license.
type SignalRequest struct {
	LicenseID string
	Kind      keyward.SignalKind
	Detail    string
}

// SignalResult is what recording a signal did.
type SignalResult struct {
	Signal   *keyward.Signal
	License  *keyward.License
	Approval *keyward.Approval // the revocation request opened by a suspension, if any
}

func checkSignal(r SignalRequest) error {
	if !keyward.ValidSignalKind(r.Kind) {
		kinds := make([]string, 0, 4)
		for _, k := range keyward.SignalKinds() {
			kinds = append(kinds, string(k))
		}
		return keyward.Errorf(keyward.EInvalid, "signal kind %q: want one of %s", r.Kind, strings.Join(kinds, ", "))
	}
	switch {
	case strings.TrimSpace(r.Detail) == "":
		return keyward.Errorf(keyward.EInvalid, "detail is required: say what was seen (it is kept with the signal and in the audit log)")
	case len(r.Detail) > MaxSignalDetail:
		return keyward.Errorf(keyward.EInvalid, "detail: at most %d bytes", MaxSignalDetail)
	case !utf8.ValidString(r.Detail):
		return keyward.Errorf(keyward.EInvalid, "detail: not valid UTF-8")
	case strings.ContainsFunc(r.Detail, func(c rune) bool { return unicode.IsControl(c) && c != '\n' && c != '\t' }):
		return keyward.Errorf(keyward.EInvalid, "detail: control characters other than newline and tab are not allowed")
	}
	return nil
}

// RecordSignal records an explicit signal about a license, with its audit
// entry and license.signal_recorded event; where the product's policy
// lists the kind under suspendOnSignal, the license is suspended in the
// same transaction, subject to the cooldown and the ceiling (see
// Signal.Outcome). Errors: EInvalid for an unknown kind or a missing,
// oversized or non-text detail; ENotFound for an unknown license (or one
// of another product than a scoped principal's). Nothing is written on
// error.
func (a *Authority) RecordSignal(ctx context.Context, r SignalRequest) (*SignalResult, error) {
	if err := checkSignal(r); err != nil {
		return nil, err
	}
	var out *SignalResult
	var res *tripResult
	var product string
	err := a.store.Update(ctx, func(tx store.Tx) error {
		out, res = nil, nil
		now := a.clock.Now()
		l, err := tx.License(r.LicenseID)
		if err != nil {
			return err
		}
		if outOfScope(ctx, l.ProductID) {
			return scopeNotFound("license", r.LicenseID)
		}
		p, err := tx.Product(l.ProductID)
		if err != nil {
			return err
		}
		product = p.Name
		id, err := a.newID("sig")
		if err != nil {
			return err
		}
		pr := keyward.PrincipalFromContext(ctx)
		sg := &keyward.Signal{
			ID: id, LicenseID: l.ID, ProductID: l.ProductID, Kind: r.Kind, Detail: r.Detail,
			Actor: pr.ID, ActorName: pr.Name, CreatedAt: now, Outcome: keyward.SignalRecorded,
		}
		out = &SignalResult{Signal: sg, License: l}
		c := a.stored.compiled(l.ProductID)
		var plan *tripPlan
		if c.SuspendsOnSignal(r.Kind) {
			if plan, err = a.planTrip(ctx, tx, now, trip{licenseID: l.ID, via: viaSignal, signal: sg}); err != nil {
				return err
			}
			sg.Outcome, res = plan.signalOutcome(), plan.res
		}
		if err := tx.CreateSignal(sg); err != nil {
			return err
		}
		before := l.State
		if err := a.record(ctx, tx, now, change{
			action: "license.signal", event: "license.signal_recorded", targetType: "license", targetID: l.ID,
			before: string(before), after: string(before), reason: string(r.Kind),
			details:       map[string]any{"signal_id": sg.ID, "kind": string(sg.Kind), "detail": sg.Detail, "outcome": sg.Outcome, "product_id": l.ProductID},
			policyVersion: c.Version(), rule: signalRule(c, r.Kind),
		}); err != nil {
			return err
		}
		if plan != nil {
			if err := a.applyTrip(ctx, tx, now, plan); err != nil {
				return err
			}
			out.License, out.Approval = plan.res.license, plan.res.approval
		}
		return nil
	})
	if err != nil {
		return nil, a.refused(ctx, PermLicenseSignal, "license", r.LicenseID, err)
	}
	if res != nil && a.abuse != nil {
		now := a.clock.Now().Unix()
		pa := a.abuse.product(out.License.ProductID, a.stored.compiled(out.License.ProductID))
		a.abuse.usage.quiet(out.License.ID, a.afterTrip(pa, product, out.License.ID, res, now))
	}
	return out, nil
}

// signalRule is the rule an audit entry of a signal names: suspendOnSignal
// when the policy decides on the kind.
func signalRule(c *policy.Compiled, k keyward.SignalKind) string {
	if c.SuspendsOnSignal(k) {
		return policy.RuleSuspendOnSignal
	}
	return ""
}

// Signals returns a license's signals, oldest first (at most MaxSignalPage).
func (a *Authority) Signals(ctx context.Context, licenseID string) ([]*keyward.Signal, error) {
	var out []*keyward.Signal
	err := a.store.View(ctx, func(tx store.Tx) error {
		l, err := tx.License(licenseID)
		if err != nil {
			return err
		}
		if outOfScope(ctx, l.ProductID) {
			return scopeNotFound("license", licenseID)
		}
		out, err = tx.Signals(store.SignalFilter{LicenseID: licenseID, Limit: MaxSignalPage})
		return err
	})
	return out, err
}

// UsageReport is a license's usage as this server process sees it.
type UsageReport struct {
	LicenseID string
	Usage     policy.Usage
	// Tracked is false when this process has no counters for the license
	// (not validated since it started, or forgotten): Usage is zero.
	Tracked bool
	// CooldownUntil is the end of the cooldown after the last automatic
	// suspension (nil when none is running).
	CooldownUntil *time.Time
	// AutoSuspensions are the license's automatic suspension records,
	// oldest first.
	AutoSuspensions []*keyward.AutoSuspension
}

// LicenseUsage returns a license's usage counters (this process's: each
// replica counts the validations it serves) and its automatic suspension
// history. ENotFound for an unknown license.
func (a *Authority) LicenseUsage(ctx context.Context, licenseID string) (*UsageReport, error) {
	out := &UsageReport{LicenseID: licenseID}
	err := a.store.View(ctx, func(tx store.Tx) error {
		l, err := tx.License(licenseID)
		if err != nil {
			return err
		}
		if outOfScope(ctx, l.ProductID) {
			return scopeNotFound("license", licenseID)
		}
		if out.AutoSuspensions, err = tx.AutoSuspensions(store.AutoSuspensionFilter{LicenseID: licenseID, Limit: MaxSignalPage}); err != nil {
			return err
		}
		cooldown, _ := a.stored.compiled(l.ProductID).AutoSuspendGuards()
		now := a.clock.Now()
		for _, s := range slices.Backward(out.AutoSuspensions) {
			if s.Outcome == keyward.AutoSuspended {
				if end := s.At.Add(cooldown); end.After(now) {
					out.CooldownUntil = &end
				}
				break
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if a.abuse != nil {
		out.Usage, out.Tracked = a.abuse.usage.snapshot(licenseID, a.clock.Now().Unix())
	}
	return out, nil
}
