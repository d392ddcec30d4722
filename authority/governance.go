package authority

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/keyward/keyward"
	"github.com/keyward/keyward/store"
)

// Governance (spec 6, docs/governance.md): who may do what, and the checks
// that hold whoever calls the authority.
//
//   - Roles map to permissions through one table (rolePermissions); the API
//     checks the permission of every route (api.Server), and the product
//     scope of a product-scoped token on every route that names a product.
//   - Separation of duties (policy duties.separate) and four eyes (an
//     approval is never granted by its requester) are checked here, for
//     every caller, inside the transaction of the action.
//   - Permanent actions (license revocation, key destruction) become
//     approval requests when policy revocation.approvals > 0 (approvals.go).
//   - TOTP for the permissions of policy mfa is checked for requests that
//     come with a token (mfa.go); in-process callers are trusted.
//   - Every refusal of these checks is audited in its own transaction (the
//     refused action's own transaction is rolled back).
//
// Principals are compared by keyward.PrincipalIdentity: an API token's
// principal is its name, so every token minted for one person is one
// principal.

// RolePermissions returns the permissions of a role, sorted; admin holds
// every permission (a product-scoped admin all but ServerWidePermissions).
// An unknown role has none.
func RolePermissions(role string) []string {
	if role == keyward.RoleAdmin {
		return Permissions()
	}
	ps := slices.Clone(rolePermissions[role])
	slices.Sort(ps)
	return ps
}

// Permissions returns every permission a route or policy can name, sorted.
func Permissions() []string {
	set := map[string]bool{}
	for _, p := range allPermissions {
		set[p] = true
	}
	for _, ps := range rolePermissions {
		for _, p := range ps {
			set[p] = true
		}
	}
	return slices.Sorted(maps.Keys(set))
}

// allPermissions lists the permissions no role but admin holds.
var allPermissions = []string{PermProductCreate, PermTokenAdmin, PermWebhookAdmin, PermPolicyApply}

// ServerWidePermissions are the permissions a product-scoped principal
// never has, whatever its roles: they act on the whole server.
func ServerWidePermissions() []string {
	return []string{PermProductCreate, PermTokenAdmin, PermWebhookAdmin}
}

// isTokenPrincipal reports whether p came from an API token (as opposed to
// the server itself or an in-process caller).
func isTokenPrincipal(p keyward.Principal) bool {
	return strings.HasPrefix(p.ID, keyward.TokenIDPrefix+"_")
}

func identity(p keyward.Principal) string { return keyward.PrincipalIdentity(p.ID, p.Name) }

// errOutOfScope marks a refusal because a product-scoped principal named
// another product's object. Callers see ENotFound, exactly as for a
// missing object, so a scoped token learns nothing of other products.
var errOutOfScope = errors.New("out of the principal's product scope")

// outOfScope reports whether the principal in ctx is limited to a product
// other than productID ("" = the object belongs to no product, like the
// registry ring, which scoped principals do not reach either).
func outOfScope(ctx context.Context, productID string) bool {
	p := keyward.PrincipalFromContext(ctx)
	return p.ProductID != "" && p.ProductID != productID
}

// scopeNotFound is the error for an out-of-scope object: the message a
// missing one would have.
func scopeNotFound(what, id string) error {
	return &keyward.Error{Code: keyward.ENotFound, Message: fmt.Sprintf("%s %s not found", what, id), Err: errOutOfScope}
}

// OutOfScopeError returns the ENotFound error a transport answers when a
// product-scoped principal names an object of another product; AuditRefusal
// recognises it.
func OutOfScopeError(what, id string) error { return scopeNotFound(what, id) }

// Target kinds for TargetProduct.
const (
	TargetProduct  = "product"
	TargetLicense  = "license"
	TargetKey      = "key"
	TargetApproval = "approval"
)

// TargetProduct returns the id of the product an object belongs to: a
// product (by id or name), a license, a signing key ("" for the registry
// ring) or an approval. ENotFound for a missing object.
func (a *Authority) TargetProduct(ctx context.Context, kind, id string) (string, error) {
	var out string
	err := a.store.View(ctx, func(tx store.Tx) error {
		switch kind {
		case TargetProduct:
			p, err := tx.Product(id)
			if err != nil {
				return err
			}
			out = p.ID
		case TargetLicense:
			l, err := tx.License(id)
			if err != nil {
				return err
			}
			out = l.ProductID
		case TargetKey:
			k, err := tx.Key(id)
			if err != nil {
				return err
			}
			out = k.ProductID
		case TargetApproval:
			ap, err := tx.Approval(id)
			if err != nil {
				return err
			}
			out = ap.ProductID
		default:
			return fmt.Errorf("target product: unknown kind %q", kind)
		}
		return nil
	})
	return out, err
}

// dutyEvidence lists, per permission, the audit actions that show a
// principal used it on a target besides the action of the same name: a
// rotation creates (and usually activates) the ring's new key.
var dutyEvidence = map[string][]string{
	PermKeyRotate: {"key.create", "key.activate"},
}

// performed reports whether the principal identity used permission perm on
// target, from the audit log and the approval requests: requesting an
// action counts as using its permission, and granting any approval of the
// target counts as approval.grant.
func performed(tx store.Tx, who, perm, target string) (bool, error) {
	actions := append([]string{perm}, dutyEvidence[perm]...)
	es, err := tx.AuditEntries(store.AuditFilter{TargetID: target})
	if err != nil {
		return false, err
	}
	for _, e := range es {
		if slices.Contains(actions, e.Action) && keyward.PrincipalIdentity(e.Actor, e.ActorName) == who {
			return true, nil
		}
	}
	aps, err := tx.Approvals(store.ApprovalFilter{TargetID: target})
	if err != nil {
		return false, err
	}
	for _, ap := range aps {
		if ap.Action == perm && keyward.PrincipalIdentity(ap.RequestedBy, ap.RequestedByName) == who {
			return true, nil
		}
		if perm == PermApprovalGrant {
			for _, g := range ap.Grants {
				if keyward.PrincipalIdentity(g.By, g.ByName) == who {
					return true, nil
				}
			}
		}
	}
	return false, nil
}

// checkDuties refuses, with EDutyConflict, a principal about to use perm on
// target after using the other permission of one of pol's duty pairs on
// the same target (spec 5 duties.separate).
func checkDuties(ctx context.Context, tx store.Tx, pol *keyward.Policy, perm, target string) error {
	p := keyward.PrincipalFromContext(ctx)
	who := identity(p)
	for _, pair := range pol.Duties {
		if len(pair) != 2 || pair[0] == pair[1] {
			continue
		}
		var other string
		switch perm {
		case pair[0]:
			other = pair[1]
		case pair[1]:
			other = pair[0]
		default:
			continue
		}
		did, err := performed(tx, who, other, target)
		if err != nil {
			return err
		}
		if did {
			return &keyward.Error{Code: keyward.EDutyConflict, Message: fmt.Sprintf(
				"separation of duties (policy %s duties.separate %v): %s used %s on %s, so another principal must %s it",
				policyName(pol), pair, principalName(p), other, target, perm), Err: dutyRefusal{pol: pol}}
		}
	}
	return nil
}

// dutyRefusal carries the policy behind a DUTY_CONFLICT into its audit entry.
type dutyRefusal struct{ pol *keyward.Policy }

func (dutyRefusal) Error() string { return "duty conflict" }

func policyName(pol *keyward.Policy) string {
	if pol.Version == 0 {
		return "built-in"
	}
	return fmt.Sprintf("v%d", pol.Version)
}

func principalName(p keyward.Principal) string {
	if p.Name != "" {
		return p.Name
	}
	return p.ID
}

// refusalCodes are the codes of governance refusals: each is audited.
var refusalCodes = []string{keyward.EForbidden, keyward.EDutyConflict, keyward.EMFARequired, keyward.EMFAInvalid}

// isRefusal reports whether err is a governance refusal.
func isRefusal(err error) bool {
	return slices.Contains(refusalCodes, keyward.ErrorCode(err)) || errors.Is(err, errOutOfScope)
}

// refused audits err, if it is a governance refusal, in its own
// transaction (the refused action's was rolled back), and returns err
// unchanged. perm is what the principal tried; targetType and targetID
// what on.
func (a *Authority) refused(ctx context.Context, perm, targetType, targetID string, err error) error {
	if err == nil || !isRefusal(err) {
		return err
	}
	if aerr := a.AuditRefusal(ctx, perm, targetType, targetID, err); aerr != nil {
		a.log.Error("audit refusal", "permission", perm, "target", targetID, "err", aerr)
	}
	return err
}

// AuditRefusal writes the audit entry of a refused request: the principal
// in ctx, the permission it tried, on what, and why (the error's code and
// caller-safe message). A wrong or replayed TOTP code also counts against
// the principal's enrollment (too many lock it for a while). Transports
// call it for the refusals they decide themselves (a role without the
// permission, an out-of-scope product, a missing code).
func (a *Authority) AuditRefusal(ctx context.Context, perm, targetType, targetID string, cause error) error {
	code := keyward.ErrorCode(cause)
	why := keyward.ErrorMessage(cause)
	if errors.Is(cause, errOutOfScope) {
		why = fmt.Sprintf("out of the token's product scope (answered %s)", code)
	}
	if len(targetID) > 256 {
		targetID = targetID[:256]
	}
	c := change{
		action: "access.deny", targetType: targetType, targetID: targetID, after: "refused",
		reason: code + ": " + why, details: map[string]any{"permission": perm, "code": code},
	}
	var dr dutyRefusal
	if errors.As(cause, &dr) {
		c.policyVersion, c.rule = dr.pol.Version, "duties.separate"
	}
	return a.store.Update(ctx, func(tx store.Tx) error {
		now := a.clock.Now()
		if code == keyward.EMFAInvalid && errors.Is(cause, errWrongCode) {
			if err := a.countMFAFailure(ctx, tx, now); err != nil {
				return err
			}
		}
		return a.record(ctx, tx, now, c)
	})
}
