package keyward

import "time"

// ExceptionState is where a governance exception stands (docs/governance.md,
// "Exceptions").
type ExceptionState string

// Exception states. Expired is never stored: an exception whose Until has
// passed is expired in effect (EffectiveState), whatever its stored state.
const (
	ExceptionPending ExceptionState = "pending" // its approval request waits for approvers
	ExceptionActive  ExceptionState = "active"  // granted: the scheduler holds the step until Until
	ExceptionDenied  ExceptionState = "denied"  // its approval request was denied, or expired undecided: it holds nothing
	ExceptionExpired ExceptionState = "expired" // Until passed: it holds nothing
)

// ExceptionStates lists every exception state.
func ExceptionStates() []ExceptionState {
	return []ExceptionState{ExceptionPending, ExceptionActive, ExceptionDenied, ExceptionExpired}
}

// Exception suspends one scheduled lifecycle step (Rule) on one target (a
// kid or a license id) until a time, e.g. keeps a retired key beyond
// destroyAfter. It needs approval (ApprovalID) and expires on its own.
type Exception struct {
	ID            string
	TargetType    string // "key" or "license"
	TargetID      string // kid or license id
	ProductID     string // the target's product; "" for registry keys
	Rule          string // the step it holds: "destroy" (keys); "expire" or a licenses.retire rule name (licenses)
	Until         time.Time
	Justification string

	RequestedBy     string // principal id
	RequestedByName string
	ApprovalID      string // the approval request that activates it; "" when the policy needs none

	State     ExceptionState // as stored: pending, active or denied; see EffectiveState
	CreatedAt time.Time
	UpdatedAt time.Time
	DecidedAt *time.Time // when it became active or denied
}

// EffectiveState is State, except that an exception at or past Until is
// expired (expiry needs no write to take effect).
func (e *Exception) EffectiveState(now time.Time) ExceptionState {
	if e.State != ExceptionDenied && !now.Before(e.Until) {
		return ExceptionExpired
	}
	return e.State
}

// Holds reports whether e holds rule on target at now.
func (e *Exception) Holds(target, rule string, now time.Time) bool {
	return e.TargetID == target && e.Rule == rule && e.EffectiveState(now) == ExceptionActive
}
