package authority

import (
	"slices"

	"github.com/keyward/keyward"
)

// Permissions checked by transports, one per kind of action.
const (
	PermProductRead    = "product.read"
	PermProductCreate  = "product.create"
	PermKeyRead        = "key.read"
	PermKeyRotate      = "key.rotate"
	PermKeyActivate    = "key.activate"
	PermKeyRetire      = "key.retire"
	PermKeyRevoke      = "key.revoke"
	PermKeyDestroy     = "key.destroy"
	PermKeyRollback    = "key.rollback" // re-activate the previous key within the overlap window (docs/lifecycle.md)
	PermLicenseRead    = "license.read"
	PermLicenseIssue   = "license.issue"
	PermLicenseSuspend = "license.suspend"
	PermLicenseReinst  = "license.reinstate"
	PermLicenseRevoke  = "license.revoke"
	PermLicenseRetire  = "license.retire"
	PermLicenseReissue = "license.reissue"
	PermLicenseCheck   = "license.checkout"
	PermLicenseValid   = "license.validate"
	PermLicenseSignal  = "license.signal" // report abuse, a leak, a chargeback (docs/abuse.md)
	PermMachineRead    = "machine.read"
	PermMachineDeact   = "machine.deactivate"
	PermTokenAdmin     = "token.admin"
	PermPolicyRead     = "policy.read"   // show, history, diff of lifecycle policies
	PermPolicyApply    = "policy.apply"  // apply and roll back: admin only (docs/policy.md)
	PermWebhookAdmin   = "webhook.admin" // admin only (spec 6), and never a product-scoped admin: endpoints see every product's events
	PermAuditRead      = "audit.read"
	PermTokenRead      = "token.read"     // list API tokens (metadata only, never secrets or hashes)
	PermApprovalRead   = "approval.read"  // list and show approval requests
	PermApprovalGrant  = "approval.grant" // confirm another principal's request (four eyes)
	PermApprovalDeny   = "approval.deny"  // refuse a request; the target stays in its interim state
	PermMFAEnroll      = "mfa.enroll"     // enroll one's own TOTP authenticator
)

// rolePermissions is the one table of what each role may do (spec 6).
// admin may do everything.
var rolePermissions = map[string][]string{
	keyward.RoleIssuer:   {PermProductRead, PermLicenseRead, PermLicenseIssue, PermLicenseReissue, PermLicenseCheck, PermLicenseValid, PermMachineRead, PermKeyRead, PermPolicyRead, PermMFAEnroll},
	keyward.RoleRotator:  {PermProductRead, PermKeyRead, PermKeyRotate, PermKeyActivate, PermKeyRetire, PermKeyDestroy, PermKeyRollback, PermPolicyRead, PermApprovalRead, PermExceptionRequest, PermExceptionRead, PermMFAEnroll},
	keyward.RoleRevoker:  {PermProductRead, PermLicenseRead, PermLicenseSignal, PermLicenseSuspend, PermLicenseReinst, PermLicenseRevoke, PermLicenseRetire, PermKeyRead, PermKeyRevoke, PermMachineRead, PermMachineDeact, PermPolicyRead, PermApprovalRead, PermExceptionRequest, PermExceptionRead, PermMFAEnroll},
	keyward.RoleApprover: {PermProductRead, PermLicenseRead, PermKeyRead, PermPolicyRead, PermApprovalRead, PermExceptionRead, PermApprovalGrant, PermApprovalDeny, PermMFAEnroll},
	keyward.RoleAuditor:  {PermProductRead, PermLicenseRead, PermKeyRead, PermMachineRead, PermAuditRead, PermPolicyRead, PermApprovalRead, PermExceptionRead, PermTokenRead, PermMFAEnroll},
	keyward.RoleSupport:  {PermProductRead, PermLicenseRead, PermLicenseSignal, PermLicenseSuspend, PermMachineRead, PermMachineDeact, PermKeyRead, PermPolicyRead, PermMFAEnroll},
	keyward.RoleService:  {PermLicenseValid, PermLicenseCheck, PermLicenseSignal},
}

// Allowed reports whether p may use permission perm on productID ("" when
// the action is not about one product). Product-scoped principals only
// reach their own product.
func Allowed(p keyward.Principal, perm, productID string) bool {
	if p.ProductID != "" && productID != "" && p.ProductID != productID {
		return false
	}
	for _, r := range p.Roles {
		if r == keyward.RoleAdmin && p.ProductID == "" {
			return true
		}
		if r == keyward.RoleAdmin && perm != PermTokenAdmin && perm != PermProductCreate && perm != PermWebhookAdmin {
			return true
		}
		if slices.Contains(rolePermissions[r], perm) {
			return true
		}
	}
	return false
}
