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
	PermLicenseRead    = "license.read"
	PermLicenseIssue   = "license.issue"
	PermLicenseSuspend = "license.suspend"
	PermLicenseReinst  = "license.reinstate"
	PermLicenseRevoke  = "license.revoke"
	PermLicenseRetire  = "license.retire"
	PermLicenseReissue = "license.reissue"
	PermLicenseCheck   = "license.checkout"
	PermLicenseValid   = "license.validate"
	PermMachineRead    = "machine.read"
	PermMachineDeact   = "machine.deactivate"
	PermTokenAdmin     = "token.admin"
)

// rolePermissions is the one table of what each role may do (spec 6).
// admin may do everything.
var rolePermissions = map[string][]string{
	keyward.RoleIssuer:   {PermProductRead, PermLicenseRead, PermLicenseIssue, PermLicenseReissue, PermLicenseCheck, PermLicenseValid, PermMachineRead, PermKeyRead},
	keyward.RoleRotator:  {PermProductRead, PermKeyRead, PermKeyRotate, PermKeyActivate, PermKeyRetire, PermKeyDestroy},
	keyward.RoleRevoker:  {PermProductRead, PermLicenseRead, PermLicenseSuspend, PermLicenseReinst, PermLicenseRevoke, PermLicenseRetire, PermKeyRead, PermKeyRevoke, PermMachineRead, PermMachineDeact},
	keyward.RoleApprover: {PermProductRead, PermLicenseRead, PermKeyRead},
	keyward.RoleAuditor:  {PermProductRead, PermLicenseRead, PermKeyRead, PermMachineRead},
	keyward.RoleSupport:  {PermProductRead, PermLicenseRead, PermLicenseSuspend, PermMachineRead, PermMachineDeact, PermKeyRead},
	keyward.RoleService:  {PermLicenseValid, PermLicenseCheck},
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
		if r == keyward.RoleAdmin && perm != PermTokenAdmin && perm != PermProductCreate {
			return true
		}
		if slices.Contains(rolePermissions[r], perm) {
			return true
		}
	}
	return false
}
