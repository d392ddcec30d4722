package authority

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/keyward/keyward"
	"github.com/keyward/keyward/policy"
	"github.com/keyward/keyward/store"
)

// Exceptions (docs/governance.md, "Exceptions"): a principal asks that one
// scheduled lifecycle step on one target be held until a time — keep a
// retired key beyond destroyAfter, keep a license from being retired by a
// licenses.retire rule. The request files an approval request
// (ExceptionGrantAction) through the four-eyes machinery; the exception is
// active from the final grant (at once where the policy needs no
// approvals) until Until, when it expires on its own: nothing runs at
// expiry, the scheduler simply stops finding it. While active, the
// scheduler skips the step without recording it as done, so the step runs
// at the first tick after the exception ends.

// ExceptionGrantAction is the approval action that activates an exception.
const ExceptionGrantAction = "exception.grant"

// MaxExceptionSpan bounds how far ahead an exception may run.
const MaxExceptionSpan = 365 * 24 * time.Hour

// ExceptionRuleDestroy is the rule an exception on a key holds (the
// destroyAfter step); ExceptionRuleExpire holds a license's expiry.
const (
	ExceptionRuleDestroy = string(policy.ActionDestroy)
	ExceptionRuleExpire  = string(policy.ActionExpire)
)

// ExceptionRequest asks for an exception.
type ExceptionRequest struct {
	Target        string    // kid or license id
	Rule          string    // "destroy" (a key); "expire" or a licenses.retire rule name (a license)
	Until         time.Time // after now, at most MaxExceptionSpan ahead
	Justification string    // required, at most MaxApprovalText characters
}

// RequestException files an exception and the approval request that
// activates it, or — where the target's policy needs no approvals —
// activates it at once (the approval is then nil). Errors: EInvalid for a
// missing justification, an unknown rule for the target, an until not in
// (now, now+1 year]; ENotFound for an unknown target (or one outside a
// scoped principal's product); EIllegalTransition for a target the rule
// can no longer apply to (a destroyed key, a license no longer active or
// suspended).
func (a *Authority) RequestException(ctx context.Context, req ExceptionRequest) (*keyward.Exception, *keyward.Approval, error) {
	just := strings.TrimSpace(req.Justification)
	switch {
	case just == "":
		return nil, nil, keyward.Errorf(keyward.EInvalid, "justification is required: say why the step must wait (it is kept with the exception and in the audit log)")
	case !utf8.ValidString(just):
		return nil, nil, keyward.Errorf(keyward.EInvalid, "justification: not valid UTF-8")
	case utf8.RuneCountInString(just) > MaxApprovalText:
		return nil, nil, keyward.Errorf(keyward.EInvalid, "justification: at most %d characters", MaxApprovalText)
	case strings.TrimSpace(req.Target) == "":
		return nil, nil, keyward.Errorf(keyward.EInvalid, "target is required: a kid or a license id")
	case strings.TrimSpace(req.Rule) == "":
		return nil, nil, keyward.Errorf(keyward.EInvalid, "rule is required: %q for a key, %q or a licenses.retire rule name for a license", ExceptionRuleDestroy, ExceptionRuleExpire)
	}
	var out *keyward.Exception
	var ap *keyward.Approval
	err := a.store.Update(ctx, func(tx store.Tx) error {
		now := a.clock.Now()
		if !req.Until.After(now) {
			return keyward.Errorf(keyward.EInvalid, "until %s is not in the future", req.Until.UTC().Format(time.RFC3339))
		}
		if req.Until.After(now.Add(MaxExceptionSpan)) {
			return keyward.Errorf(keyward.EInvalid, "until %s: an exception lasts at most one year (until %s); request a new one when it ends",
				req.Until.UTC().Format(time.RFC3339), now.Add(MaxExceptionSpan).UTC().Format(time.RFC3339))
		}
		e, err := a.exceptionTarget(ctx, tx, req.Target, req.Rule)
		if err != nil {
			return err
		}
		pol, err := a.policy(ctx, e.ProductID)
		if err != nil {
			return err
		}
		if err := checkDuties(ctx, tx, pol, PermExceptionRequest, e.TargetID); err != nil {
			return err
		}
		if e.ID, err = a.newID("exc"); err != nil {
			return err
		}
		p := keyward.PrincipalFromContext(ctx)
		e.Until, e.Justification = req.Until, just
		e.RequestedBy, e.RequestedByName = p.ID, p.Name
		e.State, e.CreatedAt, e.UpdatedAt = keyward.ExceptionPending, now, now
		if pol.RevocationApprovals > 0 {
			if ap, err = a.requestApproval(ctx, tx, now, pol, ExceptionGrantAction, "exception", e.ID, e.ProductID, just); err != nil {
				return err
			}
			e.ApprovalID = ap.ID
		}
		if err := tx.CreateException(e); err != nil {
			return err
		}
		if err := a.record(ctx, tx, now, change{
			action: "exception.request", event: "exception.requested", targetType: "exception", targetID: e.ID,
			after: string(keyward.ExceptionPending), reason: just, policyVersion: pol.Version, rule: "revocation.approvals",
			details: exceptionDetails(e),
		}); err != nil {
			return err
		}
		out = e
		if ap == nil {
			return a.activateException(ctx, tx, now, e, nil, "activated without approval (policy approvals 0)")
		}
		return nil
	})
	if err != nil {
		return nil, nil, a.refused(ctx, PermExceptionRequest, "exception", req.Target, err)
	}
	return out, ap, nil
}

// exceptionTarget resolves a target (kid first, then license id) and
// checks the rule against it; it returns the exception's target fields.
func (a *Authority) exceptionTarget(ctx context.Context, tx store.Tx, target, rule string) (*keyward.Exception, error) {
	k, err := tx.Key(target)
	switch {
	case err == nil:
		if outOfScope(ctx, k.ProductID) {
			return nil, scopeNotFound("target", target)
		}
		if rule != ExceptionRuleDestroy {
			return nil, keyward.Errorf(keyward.EInvalid, "rule %q: an exception on a key holds %q (its destroyAfter step)", rule, ExceptionRuleDestroy)
		}
		if k.State == keyward.KeyDestroyed {
			return nil, keyward.Errorf(keyward.EIllegalTransition, "key %s is already destroyed: there is nothing to hold", k.KID)
		}
		return &keyward.Exception{TargetType: "key", TargetID: k.KID, ProductID: k.ProductID, Rule: rule}, nil
	case keyward.ErrorCode(err) != keyward.ENotFound:
		return nil, err
	}
	l, err := tx.License(target)
	if keyward.ErrorCode(err) == keyward.ENotFound || (err == nil && outOfScope(ctx, l.ProductID)) {
		return nil, keyward.Errorf(keyward.ENotFound, "target %s: no key or license with this id", target)
	} else if err != nil {
		return nil, err
	}
	rules := []string{ExceptionRuleExpire}
	for _, r := range a.compiledFor(l.ProductID).Policy().Retire {
		rules = append(rules, r.Name)
	}
	if !slices.Contains(rules, rule) {
		return nil, keyward.Errorf(keyward.EInvalid, "rule %q: an exception on license %s holds one of %v (%q, or a licenses.retire rule of its product's policy)",
			rule, l.ID, rules, ExceptionRuleExpire)
	}
	if l.State != keyward.LicenseActive && l.State != keyward.LicenseSuspended {
		return nil, keyward.Errorf(keyward.EIllegalTransition, "license %s is %s: there is nothing to hold", l.ID, l.State)
	}
	return &keyward.Exception{TargetType: "license", TargetID: l.ID, ProductID: l.ProductID, Rule: rule}, nil
}

func exceptionDetails(e *keyward.Exception) map[string]any {
	return map[string]any{
		"target_type": e.TargetType, "target_id": e.TargetID, "product_id": e.ProductID, "rule": e.Rule,
		"until": e.Until, "approval_id": e.ApprovalID, "requested_by": e.RequestedByName,
	}
}

// activateException makes a pending exception active, with its audit entry
// (carrying the approval, if any) and exception.activated event.
func (a *Authority) activateException(ctx context.Context, tx store.Tx, now time.Time, e *keyward.Exception, approvalIDs []string, why string) error {
	if e.State != keyward.ExceptionPending {
		return keyward.Errorf(keyward.EIllegalTransition, "exception %s is %s, not pending", e.ID, e.State)
	}
	e.State, e.UpdatedAt, e.DecidedAt = keyward.ExceptionActive, now, &now
	if err := tx.UpdateException(e); err != nil {
		return err
	}
	return a.record(ctx, tx, now, change{
		action: "exception.activate", event: "exception.activated", targetType: "exception", targetID: e.ID,
		before: string(keyward.ExceptionPending), after: string(keyward.ExceptionActive), reason: why,
		details: exceptionDetails(e), approvalIDs: approvalIDs,
	})
}

// executeException runs a granted ExceptionGrantAction approval.
func (a *Authority) executeException(ctx context.Context, tx store.Tx, now time.Time, ap *keyward.Approval) error {
	e, err := tx.Exception(ap.TargetID)
	if err != nil {
		return err
	}
	return a.activateException(ctx, tx, now, e, []string{ap.ID}, ap.Reason)
}

// denyException marks the exception of a denied approval denied.
func (a *Authority) denyException(ctx context.Context, tx store.Tx, now time.Time, ap *keyward.Approval, reason string) error {
	e, err := tx.Exception(ap.TargetID)
	if err != nil {
		return err
	}
	before := e.State
	e.State, e.UpdatedAt, e.DecidedAt = keyward.ExceptionDenied, now, &now
	if err := tx.UpdateException(e); err != nil {
		return err
	}
	return a.record(ctx, tx, now, change{
		action: "exception.deny", event: "exception.denied", targetType: "exception", targetID: e.ID,
		before: string(before), after: string(keyward.ExceptionDenied), reason: reason,
		details: exceptionDetails(e), approvalIDs: []string{ap.ID},
	})
}

// heldBy returns the active exception holding rule on target at now (the
// one lasting longest), or nil. The scheduler's step functions ask it
// before carrying out a step.
func heldBy(tx store.Tx, now time.Time, target, rule string) (*keyward.Exception, error) {
	es, err := tx.Exceptions(store.ExceptionFilter{TargetID: target, Rule: rule, State: keyward.ExceptionActive})
	if err != nil {
		return nil, err
	}
	var out *keyward.Exception
	for _, e := range es {
		if e.Holds(target, rule, now) && (out == nil || e.Until.After(out.Until)) {
			out = e
		}
	}
	return out, nil
}

// effectiveException sets e.State to its state in effect: expired past
// Until, and expired too while pending if its approval request expired
// undecided or was cancelled (it can never become active).
func effectiveException(tx store.Tx, now time.Time, e *keyward.Exception) error {
	e.State = e.EffectiveState(now)
	if e.State != keyward.ExceptionPending || e.ApprovalID == "" {
		return nil
	}
	ap, err := tx.Approval(e.ApprovalID)
	if err != nil {
		return err
	}
	switch ap.EffectiveState(now) {
	case keyward.ApprovalExpired, keyward.ApprovalCancelled:
		e.State = keyward.ExceptionExpired
	case keyward.ApprovalDenied:
		e.State = keyward.ExceptionDenied
	}
	return nil
}

// ExceptionQuery selects exceptions; zero fields match everything.
type ExceptionQuery struct {
	State  keyward.ExceptionState // effective state
	Target string                 // kid or license id
	Rule   string
	Limit  int // 0 = MaxApprovalPage
}

// Exceptions lists exceptions, oldest first, in their effective state; a
// product-scoped principal sees only its product's.
func (a *Authority) Exceptions(ctx context.Context, q ExceptionQuery) ([]*keyward.Exception, error) {
	if q.State != "" && !slices.Contains(keyward.ExceptionStates(), q.State) {
		return nil, keyward.Errorf(keyward.EInvalid, "unknown exception state %q (want one of %v)", q.State, keyward.ExceptionStates())
	}
	if q.Limit < 0 || q.Limit > MaxApprovalPage {
		return nil, keyward.Errorf(keyward.EInvalid, "limit %d: want 1 to %d", q.Limit, MaxApprovalPage)
	}
	if q.Limit == 0 {
		q.Limit = MaxApprovalPage
	}
	var out []*keyward.Exception
	err := a.store.View(ctx, func(tx store.Tx) error {
		now := a.clock.Now()
		es, err := tx.Exceptions(store.ExceptionFilter{TargetID: q.Target, Rule: q.Rule, ProductID: keyward.PrincipalFromContext(ctx).ProductID})
		if err != nil {
			return err
		}
		for _, e := range es {
			if err := effectiveException(tx, now, e); err != nil {
				return err
			}
			if q.State != "" && e.State != q.State {
				continue
			}
			out = append(out, e)
			if len(out) == q.Limit {
				break
			}
		}
		return nil
	})
	if err != nil {
		return nil, a.refused(ctx, PermExceptionRead, "exception", q.Target, err)
	}
	return out, nil
}

// Exception returns one exception in its effective state.
func (a *Authority) Exception(ctx context.Context, id string) (*keyward.Exception, error) {
	var out *keyward.Exception
	err := a.store.View(ctx, func(tx store.Tx) error {
		e, err := tx.Exception(id)
		if err != nil {
			return err
		}
		if outOfScope(ctx, e.ProductID) {
			return scopeNotFound("exception", id)
		}
		out = e
		return effectiveException(tx, a.clock.Now(), e)
	})
	if err != nil {
		return nil, a.refused(ctx, PermExceptionRead, "exception", id, err)
	}
	return out, nil
}

// Permissions of exceptions (mapped to roles in permissions.go).
const (
	PermExceptionRequest = "exception.request" // ask that a scheduled step be held until a time
	PermExceptionRead    = "exception.read"    // list and show exceptions
)

// holdPlanned marks a planned key step held by an active exception.
func holdPlanned(tx store.Tx, now time.Time, st *PlannedStep) error {
	e, err := heldBy(tx, now, st.Target, st.Action)
	if err != nil || e == nil {
		return err
	}
	until := e.Until
	st.Status, st.ExceptionID, st.HeldUntil = "held by exception", e.ID, &until
	st.Reason += fmt.Sprintf("; held by exception %s until %s (%s), then it runs", e.ID, until.UTC().Format(time.RFC3339), e.Justification)
	return nil
}

// heldLicenseSteps returns, as planned steps of a product's ring, the
// license steps its active exceptions hold (the license sweep would
// otherwise carry them out when due).
func heldLicenseSteps(tx store.Tx, now time.Time, productID string) ([]PlannedStep, error) {
	es, err := tx.Exceptions(store.ExceptionFilter{ProductID: productID, State: keyward.ExceptionActive})
	if err != nil {
		return nil, err
	}
	var out []PlannedStep
	for _, e := range es {
		if e.TargetType != "license" || e.EffectiveState(now) != keyward.ExceptionActive {
			continue
		}
		action := string(policy.ActionRetireLicense)
		if e.Rule == ExceptionRuleExpire {
			action = string(policy.ActionExpire)
		}
		until := e.Until
		out = append(out, PlannedStep{
			Action: action, Target: e.TargetID, Due: until, Rule: e.Rule, Status: "held by exception", ExceptionID: e.ID, HeldUntil: &until,
			Reason: fmt.Sprintf("license %s: %s held by exception %s until %s (%s); the sweep decides again after it", e.TargetID, e.Rule, e.ID,
				until.UTC().Format(time.RFC3339), e.Justification),
		})
	}
	return out, nil
}

// ParseExceptionUntil reads an exception's end: an RFC 3339 time, or a
// date (YYYY-MM-DD), which means its midnight UTC.
func ParseExceptionUntil(s string) (time.Time, error) {
	s = strings.TrimSpace(s)
	if t, err := time.Parse(time.RFC3339, s); err == nil {
		return t, nil
	}
	if t, err := time.Parse(time.DateOnly, s); err == nil {
		return t, nil
	}
	return time.Time{}, keyward.Errorf(keyward.EInvalid, "until %q: want a date (2027-01-01) or an RFC 3339 time (2027-01-01T00:00:00Z)", s)
}
