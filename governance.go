package keyward

import (
	"strings"
	"time"
)

// ApprovalState is where an approval request stands (four eyes, spec 6).
type ApprovalState string

const (
	ApprovalPending   ApprovalState = "pending"   // waiting for approvers
	ApprovalGranted   ApprovalState = "granted"   // enough approvers: the action ran in the final grant's transaction
	ApprovalDenied    ApprovalState = "denied"    // an approver refused: nothing ran
	ApprovalCancelled ApprovalState = "cancelled" // the target left its interim state (e.g. a suspended license was reinstated)
	ApprovalExpired   ApprovalState = "expired"   // nobody decided before ExpiresAt: nothing ran, nothing was reverted
)

// ApprovalStates lists every approval state.
func ApprovalStates() []ApprovalState {
	return []ApprovalState{ApprovalPending, ApprovalGranted, ApprovalDenied, ApprovalCancelled, ApprovalExpired}
}

// Approval is a request that a second principal confirm a permanent action
// (a license revocation, a key destruction). The action runs exactly once,
// in the transaction of the final grant.
type Approval struct {
	ID         string
	Action     string // the permission of the action it authorizes: "license.revoke", "key.destroy"
	TargetType string // "license" or "key"
	TargetID   string // license id or kid
	ProductID  string // the target's product; "" for registry keys
	Reason     string // the action's reason (a revocation reason code, or free text for keys)

	RequestedBy     string // principal id (token id) of the requester
	RequestedByName string // principal name: four eyes compares principals by name
	Required        int    // distinct approvers needed (policy revocation.approvals at request time)
	PolicyVersion   int    // the policy version that required the approval

	State     ApprovalState // as stored; see EffectiveState
	Grants    []ApprovalGrant
	CreatedAt time.Time
	ExpiresAt time.Time
	UpdatedAt time.Time

	// Set when the request leaves pending.
	DecidedAt      *time.Time
	DecidedBy      string // principal id of the final granter, the denier or the canceller
	DecidedByName  string
	DecisionReason string // why it was denied or cancelled
}

// EffectiveState is State, except that a pending request at or past
// ExpiresAt is expired (expiry needs no write to take effect).
func (a *Approval) EffectiveState(now time.Time) ApprovalState {
	if a.State == ApprovalPending && !now.Before(a.ExpiresAt) {
		return ApprovalExpired
	}
	return a.State
}

// ApprovalGrant is one approver's confirmation.
type ApprovalGrant struct {
	By      string    // principal id
	ByName  string    // principal name
	At      time.Time //
	Comment string
}

// MFAEnrollment is a principal's TOTP secret (RFC 6238), sealed under the
// KEK, and what makes codes one-time.
type MFAEnrollment struct {
	Principal   string // the principal's identity (PrincipalIdentity)
	Name        string // the principal's name as enrolled, for listings
	Sealed      []byte // the TOTP secret, sealed under the KEK; never leaves the authority
	CreatedAt   time.Time
	LastStep    int64      // the highest 30-second time step whose code was accepted: older or equal steps are replays
	Failures    int        // wrong codes since the last accepted one
	LockedUntil *time.Time // set after too many wrong codes
}

// PrincipalIdentity is who a principal is, for separation of duties, four
// eyes and MFA: an API token's principal is its name, case-folded (every
// token minted with the same name is the same principal, so a person cannot
// approve their own request with a second token); any other principal
// (the server itself, a license key holder) is its id.
func PrincipalIdentity(id, name string) string {
	if strings.HasPrefix(id, TokenIDPrefix+"_") {
		return TokenPrincipal(name)
	}
	return "id:" + id
}

// TokenPrincipal is the identity of the principal of API tokens named name.
func TokenPrincipal(name string) string {
	return "name:" + strings.ToLower(strings.TrimSpace(name))
}

// TokenIDPrefix starts the id of every API token ("tok_…"), so a principal
// id says whether it came from a token.
const TokenIDPrefix = "tok"
