package authority

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/keyward/keyward"
	"github.com/keyward/keyward/store"
)

// Four eyes (spec 2.2, 6): where the policy's revocation.approvals is N > 0,
// a permanent, irreversible action — revoking a license, destroying a
// signing key's private material — is a request first:
//
//   - The request puts the target in its safe interim state at once: an
//     active license is suspended (reversible: reinstating it cancels the
//     request); a key to destroy simply waits, still sealed.
//   - N distinct principals other than the requester grant it (approval.grant),
//     each subject to the policy's separation of duties. The final grant
//     runs the action in its own transaction, exactly once; the action's
//     audit entry carries the approval id.
//   - A denial (approval.deny, with a reason) leaves the target in its
//     interim state: a suspended license stays suspended until someone
//     reinstates it or requests revocation again.
//   - A request nobody decides within ApprovalTTL expires: nothing runs and
//     nothing is reverted (the license stays suspended).
//
// With approvals 0 (a --dev server's built-in policy, or a policy applied
// on one) the action runs at once.

// ApprovalTTL is how long an approval request waits for its approvers.
const ApprovalTTL = 72 * time.Hour

// MaxApprovalText bounds approval comments and denial reasons.
const MaxApprovalText = 1024

// RevokeLicense revokes a license, or — where the policy needs approvals —
// suspends it (if active) and returns the approval request that will
// revoke it. Errors: EInvalid for a reason not in
// keyward.RevocationReasons, EIllegalTransition for a license that cannot
// be revoked, EConflict if a revocation request is already pending,
// EDutyConflict under the policy's separation of duties.
func (a *Authority) RevokeLicense(ctx context.Context, id, reason string) (*keyward.License, *keyward.Approval, error) {
	if !keyward.ValidRevocationReason(reason) {
		return nil, nil, keyward.Errorf(keyward.EInvalid, "revocation reason %q: want one of %v", reason, keyward.RevocationReasons())
	}
	var out *keyward.License
	var ap *keyward.Approval
	err := a.store.Update(ctx, func(tx store.Tx) error {
		now := a.clock.Now()
		l, err := tx.License(id)
		if err != nil {
			return err
		}
		if _, err := keyward.LicenseTransition(l.State, keyward.LicenseRevoke); err != nil {
			return err
		}
		pol, err := a.policy(ctx, l.ProductID)
		if err != nil {
			return err
		}
		if err := checkDuties(ctx, tx, pol, PermLicenseRevoke, l.ID); err != nil {
			return err
		}
		out = l
		if pol.RevocationApprovals <= 0 {
			if err := a.cancelApprovals(ctx, tx, now, PermLicenseRevoke, l.ID, "revoked without approval (policy approvals 0)"); err != nil {
				return err
			}
			return a.applyLicense(ctx, tx, now, l, keyward.LicenseRevoke, reason, nil, map[string]any{"policy_version": pol.Version})
		}
		ap, err = a.requestApproval(ctx, tx, now, pol, PermLicenseRevoke, "license", l.ID, l.ProductID, reason)
		if err != nil {
			return err
		}
		if l.State == keyward.LicenseActive {
			return a.applyLicense(ctx, tx, now, l, keyward.LicenseSuspend, reason, nil,
				map[string]any{"approval_id": ap.ID, "awaiting": PermLicenseRevoke})
		}
		return nil
	})
	if err != nil {
		return nil, nil, a.refused(ctx, PermLicenseRevoke, "license", id, err)
	}
	return out, ap, nil
}

// DestroyKeyWithApproval erases a retired or pending key's private
// material, or — where the policy of its product (the built-in policy for
// the registry ring) needs approvals — returns the request that will. The
// key does not change until the final grant. Errors: EKeyIsActive,
// EIllegalTransition, EConflict for a request already pending,
// EDutyConflict.
func (a *Authority) DestroyKeyWithApproval(ctx context.Context, kid, reason string) (*keyward.SigningKey, *keyward.Approval, error) {
	if len(reason) > MaxApprovalText {
		return nil, nil, keyward.Errorf(keyward.EInvalid, "reason: at most %d characters", MaxApprovalText)
	}
	var out *keyward.SigningKey
	var ap *keyward.Approval
	err := a.store.Update(ctx, func(tx store.Tx) error {
		now := a.clock.Now()
		k, err := tx.Key(kid)
		if err != nil {
			return err
		}
		out = k
		ap, err = a.destroyOrRequest(ctx, tx, now, k, reason, decided{})
		return err
	})
	if err != nil {
		return nil, nil, a.refused(ctx, PermKeyDestroy, "key", kid, err)
	}
	if ap == nil {
		a.forget(kid)
	}
	return out, ap, nil
}

// destroyOrRequest destroys k, or files the approval request that will
// where k's policy needs approvals (returning it): the one path of manual
// and scheduled destruction (lifecycle.go passes the destroyAfter
// decision in dec, for the audit entry).
func (a *Authority) destroyOrRequest(ctx context.Context, tx store.Tx, now time.Time, k *keyward.SigningKey, reason string, dec decided) (*keyward.Approval, error) {
	if err := destroyable(k); err != nil {
		return nil, err
	}
	pol, err := a.policy(ctx, k.ProductID)
	if err != nil {
		return nil, err
	}
	if err := checkDuties(ctx, tx, pol, PermKeyDestroy, k.KID); err != nil {
		return nil, err
	}
	if pol.RevocationApprovals <= 0 {
		if err := a.cancelApprovals(ctx, tx, now, PermKeyDestroy, k.KID, "destroyed without approval (policy approvals 0)"); err != nil {
			return nil, err
		}
		return nil, a.transitionKeyDecided(ctx, tx, now, k, keyward.KeyDestroy, reason, dec)
	}
	return a.requestApproval(ctx, tx, now, pol, PermKeyDestroy, "key", k.KID, k.ProductID, reason)
}

// destroyable refuses to destroy an active key (the ring's signer).
func destroyable(k *keyward.SigningKey) error {
	if k.State == keyward.KeyActive {
		return keyward.Errorf(keyward.EKeyIsActive, "key %s is active: rotate, then retire, before destroying", k.KID)
	}
	_, err := keyward.KeyTransition(k.State, keyward.KeyDestroy)
	return err
}

func (a *Authority) keyDuties(ctx context.Context, tx store.Tx, k *keyward.SigningKey, perm string) error {
	pol, err := a.policy(ctx, k.ProductID)
	if err != nil {
		return err
	}
	return checkDuties(ctx, tx, pol, perm, k.KID)
}

// requestApproval files a pending request for action on the target, with
// its audit entry and an approval.requested event (webhooks notify the
// approvers).
func (a *Authority) requestApproval(ctx context.Context, tx store.Tx, now time.Time, pol *keyward.Policy, action, targetType, targetID, productID, reason string) (*keyward.Approval, error) {
	if cur, err := a.pendingApproval(ctx, tx, now, action, targetID); err != nil {
		return nil, err
	} else if cur != nil {
		return nil, keyward.Errorf(keyward.EConflict, "%s of %s already awaits approval %s (until %s)", action, targetID, cur.ID, cur.ExpiresAt.UTC().Format(time.RFC3339))
	}
	id, err := a.newID("apr")
	if err != nil {
		return nil, err
	}
	p := keyward.PrincipalFromContext(ctx)
	ap := &keyward.Approval{
		ID: id, Action: action, TargetType: targetType, TargetID: targetID, ProductID: productID, Reason: reason,
		RequestedBy: p.ID, RequestedByName: p.Name, Required: pol.RevocationApprovals, PolicyVersion: pol.Version,
		State: keyward.ApprovalPending, CreatedAt: now, ExpiresAt: now.Add(ApprovalTTL), UpdatedAt: now,
	}
	if err := tx.CreateApproval(ap); err != nil {
		return nil, err
	}
	return ap, a.record(ctx, tx, now, change{
		action: "approval.request", event: "approval.requested", targetType: "approval", targetID: ap.ID,
		after: string(keyward.ApprovalPending), reason: reason, policyVersion: pol.Version, rule: "revocation.approvals",
		details: approvalDetails(ap),
	})
}

func approvalDetails(ap *keyward.Approval) map[string]any {
	return map[string]any{
		"action": ap.Action, "target_type": ap.TargetType, "target_id": ap.TargetID, "product_id": ap.ProductID,
		"required": ap.Required, "granted": len(ap.Grants), "expires_at": ap.ExpiresAt, "requested_by": ap.RequestedByName,
	}
}

// pendingApproval returns the pending, unexpired request for action on
// target, or nil; requests found expired are marked so on the way.
func (a *Authority) pendingApproval(ctx context.Context, tx store.Tx, now time.Time, action, target string) (*keyward.Approval, error) {
	aps, err := tx.Approvals(store.ApprovalFilter{State: keyward.ApprovalPending, Action: action, TargetID: target})
	if err != nil {
		return nil, err
	}
	var out *keyward.Approval
	for _, ap := range aps {
		if ap.EffectiveState(now) == keyward.ApprovalExpired {
			if err := a.expireApproval(ctx, tx, now, ap); err != nil {
				return nil, err
			}
			continue
		}
		out = ap
	}
	return out, nil
}

// expireApproval writes the expiry of a pending request past its time.
// The server records it: nobody acted.
func (a *Authority) expireApproval(ctx context.Context, tx store.Tx, now time.Time, ap *keyward.Approval) error {
	at := ap.ExpiresAt
	ap.State, ap.UpdatedAt, ap.DecidedAt = keyward.ApprovalExpired, now, &at
	ap.DecidedBy, ap.DecidedByName = systemPrincipal.ID, systemPrincipal.Name
	ap.DecisionReason = fmt.Sprintf("nobody decided within %s; nothing was done and nothing reverted", ApprovalTTL)
	if err := tx.UpdateApproval(ap); err != nil {
		return err
	}
	sys := keyward.NewContextWithPrincipal(ctx, systemPrincipal)
	return a.record(sys, tx, now, change{
		action: "approval.expire", event: "approval.expired", targetType: "approval", targetID: ap.ID,
		before: string(keyward.ApprovalPending), after: string(keyward.ApprovalExpired), reason: ap.DecisionReason,
		details: approvalDetails(ap),
	})
}

// cancelApprovals cancels the pending requests for action on target (the
// target left its interim state, or the action ran without approval).
func (a *Authority) cancelApprovals(ctx context.Context, tx store.Tx, now time.Time, action, target, why string) error {
	ap, err := a.pendingApproval(ctx, tx, now, action, target)
	if err != nil || ap == nil {
		return err
	}
	p := keyward.PrincipalFromContext(ctx)
	ap.State, ap.UpdatedAt, ap.DecidedAt = keyward.ApprovalCancelled, now, &now
	ap.DecidedBy, ap.DecidedByName, ap.DecisionReason = p.ID, p.Name, why
	if err := tx.UpdateApproval(ap); err != nil {
		return err
	}
	return a.record(ctx, tx, now, change{
		action: "approval.cancel", event: "approval.cancelled", targetType: "approval", targetID: ap.ID,
		before: string(keyward.ApprovalPending), after: string(keyward.ApprovalCancelled), reason: why,
		details: approvalDetails(ap),
	})
}

// decidable loads an approval a principal may decide: in its scope,
// pending and not expired.
func (a *Authority) decidable(ctx context.Context, tx store.Tx, now time.Time, id string) (*keyward.Approval, error) {
	ap, err := tx.Approval(id)
	if err != nil {
		return nil, err
	}
	if outOfScope(ctx, ap.ProductID) {
		return nil, scopeNotFound("approval", id)
	}
	switch st := ap.EffectiveState(now); st {
	case keyward.ApprovalPending:
		return ap, nil
	case keyward.ApprovalExpired:
		return nil, keyward.Errorf(keyward.EApprovalExpired, "approval %s expired at %s: nothing was done and nothing was reverted (%s %s stays as it is); request it again if it is still needed",
			id, ap.ExpiresAt.UTC().Format(time.RFC3339), ap.TargetType, ap.TargetID)
	default:
		return nil, keyward.Errorf(keyward.EIllegalTransition, "approval %s is already %s", id, st)
	}
}

// GrantApproval records the grant of the principal in ctx. The requester
// can never grant its own request, nor can a principal grant twice
// (EDutyConflict, EConflict); the policy's separation of duties applies
// both to approval.grant and to the action granted (a license's issuer
// cannot confirm its revocation under [license.issue, license.revoke]). On
// the final grant the action runs in the same transaction, exactly once.
// EApprovalExpired for a request past its expiry.
func (a *Authority) GrantApproval(ctx context.Context, id, comment string) (*keyward.Approval, error) {
	if len(comment) > MaxApprovalText {
		return nil, keyward.Errorf(keyward.EInvalid, "comment: at most %d characters", MaxApprovalText)
	}
	var out *keyward.Approval
	var destroyed string
	err := a.store.Update(ctx, func(tx store.Tx) error {
		now := a.clock.Now()
		ap, err := a.decidable(ctx, tx, now, id)
		if err != nil {
			return err
		}
		p := keyward.PrincipalFromContext(ctx)
		who := identity(p)
		if who == keyward.PrincipalIdentity(ap.RequestedBy, ap.RequestedByName) {
			return keyward.Errorf(keyward.EDutyConflict, "four eyes: %s requested %s of %s, so another principal must approve it", principalName(p), ap.Action, ap.TargetID)
		}
		if slices.ContainsFunc(ap.Grants, func(g keyward.ApprovalGrant) bool { return keyward.PrincipalIdentity(g.By, g.ByName) == who }) {
			return keyward.Errorf(keyward.EConflict, "%s already approved %s: it needs %d more approval(s) from other principals", principalName(p), id, ap.Required-len(ap.Grants))
		}
		pol, err := a.policy(ctx, ap.ProductID)
		if err != nil {
			return err
		}
		if err := checkDuties(ctx, tx, pol, PermApprovalGrant, ap.TargetID); err != nil {
			return err
		}
		if err := checkDuties(ctx, tx, pol, ap.Action, ap.TargetID); err != nil {
			return err
		}
		before := ap.State
		ap.Grants = append(ap.Grants, keyward.ApprovalGrant{By: p.ID, ByName: p.Name, At: now, Comment: comment})
		ap.UpdatedAt = now
		final := len(ap.Grants) >= ap.Required
		event := ""
		if final {
			ap.State, ap.DecidedAt, ap.DecidedBy, ap.DecidedByName = keyward.ApprovalGranted, &now, p.ID, p.Name
			event = "approval.granted"
		}
		if err := tx.UpdateApproval(ap); err != nil {
			return err
		}
		if err := a.record(ctx, tx, now, change{
			action: "approval.grant", event: event, targetType: "approval", targetID: ap.ID,
			before: string(before), after: string(ap.State), reason: comment, details: approvalDetails(ap),
		}); err != nil {
			return err
		}
		if final {
			if err := a.execute(ctx, tx, now, ap); err != nil {
				return err
			}
			if ap.Action == PermKeyDestroy {
				destroyed = ap.TargetID
			}
		}
		out = ap
		return nil
	})
	if err != nil {
		return nil, a.refused(ctx, PermApprovalGrant, "approval", id, err)
	}
	if destroyed != "" {
		a.forget(destroyed)
	}
	return out, nil
}

// execute runs an approved action; its audit entry carries the approval.
func (a *Authority) execute(ctx context.Context, tx store.Tx, now time.Time, ap *keyward.Approval) error {
	ids := []string{ap.ID}
	switch ap.Action {
	case PermLicenseRevoke:
		l, err := tx.License(ap.TargetID)
		if err != nil {
			return err
		}
		return a.applyLicense(ctx, tx, now, l, keyward.LicenseRevoke, ap.Reason, ids,
			map[string]any{"requested_by": ap.RequestedByName, "policy_version": ap.PolicyVersion})
	case PermKeyDestroy:
		k, err := tx.Key(ap.TargetID)
		if err != nil {
			return err
		}
		if err := destroyable(k); err != nil {
			return err
		}
		return a.transitionKeyApproved(ctx, tx, now, k, keyward.KeyDestroy, ap.Reason, ids)
	case ExceptionGrantAction:
		return a.executeException(ctx, tx, now, ap)
	default:
		return fmt.Errorf("approval %s: no executor for action %q", ap.ID, ap.Action)
	}
}

// DenyApproval refuses a pending request (reason required). Nothing runs;
// the target stays in its interim state: a suspended license stays
// suspended until someone reinstates it (or requests revocation again).
// Anyone holding approval.deny may deny, the requester included (which
// withdraws the request).
func (a *Authority) DenyApproval(ctx context.Context, id, reason string) (*keyward.Approval, error) {
	if reason == "" || len(reason) > MaxApprovalText {
		return nil, keyward.Errorf(keyward.EInvalid, "reason: say why the request is denied (1 to %d characters)", MaxApprovalText)
	}
	var out *keyward.Approval
	err := a.store.Update(ctx, func(tx store.Tx) error {
		now := a.clock.Now()
		ap, err := a.decidable(ctx, tx, now, id)
		if err != nil {
			return err
		}
		p := keyward.PrincipalFromContext(ctx)
		ap.State, ap.UpdatedAt, ap.DecidedAt = keyward.ApprovalDenied, now, &now
		ap.DecidedBy, ap.DecidedByName, ap.DecisionReason = p.ID, p.Name, reason
		if err := tx.UpdateApproval(ap); err != nil {
			return err
		}
		out = ap
		if ap.Action == ExceptionGrantAction {
			if err := a.denyException(ctx, tx, now, ap, reason); err != nil {
				return err
			}
		}
		return a.record(ctx, tx, now, change{
			action: "approval.deny", event: "approval.denied", targetType: "approval", targetID: ap.ID,
			before: string(keyward.ApprovalPending), after: string(keyward.ApprovalDenied), reason: reason, details: approvalDetails(ap),
		})
	})
	if err != nil {
		return nil, a.refused(ctx, PermApprovalDeny, "approval", id, err)
	}
	return out, nil
}

// ApprovalQuery selects approval requests; zero fields match everything.
type ApprovalQuery struct {
	State   keyward.ApprovalState // effective state: "pending" excludes expired requests
	Product string                // id or name
	Target  string                // license id or kid
	Action  string                // "license.revoke", "key.destroy"
	Limit   int                   // 0 = MaxApprovalPage
}

// MaxApprovalPage bounds one listing.
const MaxApprovalPage = 1000

// Approvals lists approval requests, oldest first, in their effective
// state; a product-scoped principal sees only its product's.
func (a *Authority) Approvals(ctx context.Context, q ApprovalQuery) ([]*keyward.Approval, error) {
	if q.State != "" && !slices.Contains(keyward.ApprovalStates(), q.State) {
		return nil, keyward.Errorf(keyward.EInvalid, "unknown approval state %q (want one of %v)", q.State, keyward.ApprovalStates())
	}
	if q.Limit < 0 || q.Limit > MaxApprovalPage {
		return nil, keyward.Errorf(keyward.EInvalid, "limit %d: want 1 to %d", q.Limit, MaxApprovalPage)
	}
	if q.Limit == 0 {
		q.Limit = MaxApprovalPage
	}
	var out []*keyward.Approval
	err := a.store.View(ctx, func(tx store.Tx) error {
		now := a.clock.Now()
		f := store.ApprovalFilter{TargetID: q.Target, Action: q.Action}
		if q.Product != "" {
			p, err := tx.Product(q.Product)
			if err != nil {
				return err
			}
			f.ProductID = p.ID
		}
		if scope := keyward.PrincipalFromContext(ctx).ProductID; scope != "" {
			if f.ProductID != "" && f.ProductID != scope {
				return scopeNotFound("product", q.Product)
			}
			f.ProductID = scope
		}
		var states []keyward.ApprovalState
		switch q.State {
		case "":
		case keyward.ApprovalPending:
			states = []keyward.ApprovalState{keyward.ApprovalPending}
		case keyward.ApprovalExpired:
			states = []keyward.ApprovalState{keyward.ApprovalPending, keyward.ApprovalExpired}
		default:
			states = []keyward.ApprovalState{q.State}
		}
		var all []*keyward.Approval
		if states == nil {
			var err error
			if all, err = tx.Approvals(f); err != nil {
				return err
			}
		}
		for _, st := range states {
			f.State = st
			aps, err := tx.Approvals(f)
			if err != nil {
				return err
			}
			all = append(all, aps...)
		}
		slices.SortFunc(all, func(x, y *keyward.Approval) int { return cmp.Compare(x.ID, y.ID) })
		for _, ap := range all {
			if q.State != "" && ap.EffectiveState(now) != q.State {
				continue
			}
			if ap.State == keyward.ApprovalPending && ap.EffectiveState(now) == keyward.ApprovalExpired {
				ap.State = keyward.ApprovalExpired // shown as it is in effect
			}
			out = append(out, ap)
			if len(out) == q.Limit {
				break
			}
		}
		return nil
	})
	if err != nil {
		return nil, a.refused(ctx, PermApprovalRead, "product", q.Product, err)
	}
	return out, nil
}

// Approval returns one approval request in its effective state.
func (a *Authority) Approval(ctx context.Context, id string) (*keyward.Approval, error) {
	var out *keyward.Approval
	err := a.store.View(ctx, func(tx store.Tx) error {
		ap, err := tx.Approval(id)
		if err != nil {
			return err
		}
		if outOfScope(ctx, ap.ProductID) {
			return scopeNotFound("approval", id)
		}
		ap.State = ap.EffectiveState(a.clock.Now())
		out = ap
		return nil
	})
	if err != nil {
		return nil, a.refused(ctx, PermApprovalRead, "approval", id, err)
	}
	return out, nil
}

// ExpireApprovals marks every pending request past its expiry expired, with
// its audit entry and approval.expired event, and returns how many. Expiry
// takes effect without it (EffectiveState); the scheduler runs it so the
// record and the notification exist.
func (a *Authority) ExpireApprovals(ctx context.Context) (int, error) {
	n := 0
	err := a.store.Update(ctx, func(tx store.Tx) error {
		n = 0
		now := a.clock.Now()
		aps, err := tx.Approvals(store.ApprovalFilter{State: keyward.ApprovalPending})
		if err != nil {
			return err
		}
		for _, ap := range aps {
			if ap.EffectiveState(now) != keyward.ApprovalExpired {
				continue
			}
			if err := a.expireApproval(ctx, tx, now, ap); err != nil {
				return err
			}
			n++
		}
		return nil
	})
	return n, err
}
