package store

import "github.com/keyward/keyward"

// ApprovalFilter selects approval requests, ordered by id (which sorts by
// creation time); zero fields match everything. State matches the stored
// state: a pending request past its expiry is still "pending" here (the
// authority computes keyward.Approval.EffectiveState).
type ApprovalFilter struct {
	State     keyward.ApprovalState
	ProductID string
	TargetID  string
	Action    string
	Limit     int // 0 = no limit
}

// GovernanceTx is the part of Tx for approvals, MFA enrollments and token
// lookups by id.
type GovernanceTx interface {
	// CreateApproval stores ap. EConflict if the id exists, or if another
	// approval of the same Action and TargetID is pending (at most one
	// pending request per action and target); EInvalid for an unknown
	// state.
	CreateApproval(ap *keyward.Approval) error
	// Approval returns one approval or ENotFound.
	Approval(id string) (*keyward.Approval, error)
	// Approvals returns the approvals matching f, ordered by id.
	Approvals(f ApprovalFilter) ([]*keyward.Approval, error)
	// UpdateApproval writes State, Grants, UpdatedAt, DecidedAt, DecidedBy,
	// DecidedByName and DecisionReason; ENotFound if it is missing.
	UpdateApproval(ap *keyward.Approval) error

	// MFAEnrollment returns the enrollment of a principal identity, or
	// ENotFound.
	MFAEnrollment(principal string) (*keyward.MFAEnrollment, error)
	// MFAEnrollments returns every enrollment ordered by principal.
	MFAEnrollments() ([]*keyward.MFAEnrollment, error)
	// PutMFAEnrollment stores e, replacing an enrollment of the same
	// principal.
	PutMFAEnrollment(e *keyward.MFAEnrollment) error
	// DeleteMFAEnrollment removes a principal's enrollment; ENotFound if
	// there is none.
	DeleteMFAEnrollment(principal string) error

	// Token returns a token by id, or ENotFound.
	Token(id string) (*keyward.Token, error)
}
