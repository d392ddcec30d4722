package store

import "github.com/keyward/keyward"

// ExceptionFilter selects exceptions, ordered by id (which sorts by
// creation time); zero fields match everything. State matches the stored
// state (pending, active, denied): the authority computes expiry
// (keyward.Exception.EffectiveState).
type ExceptionFilter struct {
	State      keyward.ExceptionState
	ProductID  string
	TargetID   string
	Rule       string
	ApprovalID string
	Limit      int // 0 = no limit
}

// ExceptionTx is the part of Tx for governance exceptions.
type ExceptionTx interface {
	// CreateException stores e. EConflict if the id exists; EInvalid for an
	// unknown stored state (expired is never stored).
	CreateException(e *keyward.Exception) error
	// Exception returns one exception or ENotFound.
	Exception(id string) (*keyward.Exception, error)
	// Exceptions returns the exceptions matching f, ordered by id.
	Exceptions(f ExceptionFilter) ([]*keyward.Exception, error)
	// UpdateException writes State, UpdatedAt and DecidedAt; ENotFound if
	// it is missing, EInvalid for an unknown state.
	UpdateException(e *keyward.Exception) error
}
