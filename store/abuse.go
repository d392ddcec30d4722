package store

import (
	"time"

	"github.com/keyward/keyward"
)

// SignalFilter selects signals, ordered by creation time then id; zero
// fields match everything.
type SignalFilter struct {
	LicenseID string
	ProductID string
	Limit     int // 0 = no limit
}

// AutoSuspensionFilter selects auto-suspension records, ordered by At then
// id; zero fields match everything. Since is inclusive.
type AutoSuspensionFilter struct {
	LicenseID string
	ProductID string
	Outcome   string // keyward.AutoSuspended or keyward.AutoCeiling
	Since     time.Time
	Limit     int // 0 = no limit
}

// AbuseTx is the part of Tx for abuse signals and the bookkeeping of
// automatic suspensions (docs/abuse.md). Both are append-only: rows are
// never updated or deleted by Keyward.
//
// The authority reads auto-suspension records to apply the policy's
// cooldown (the latest AutoSuspended record of a license) and per-product
// ceiling (AutoSuspended records of a product in the last hour; at most
// the ceiling, 1000, plus one are read). Implementations SHOULD index
// (product_id, at) and (license_id, at).
type AbuseTx interface {
	// CreateSignal stores s. EConflict if the id exists; ENotFound if
	// s.LicenseID names no license; EInvalid for a kind outside
	// keyward.SignalKinds or an empty outcome.
	CreateSignal(s *keyward.Signal) error
	// Signals returns the signals matching f, ordered by CreatedAt then id.
	Signals(f SignalFilter) ([]*keyward.Signal, error)

	// CreateAutoSuspension stores one auto-suspension record. EConflict if
	// the id exists; ENotFound if the license or product is missing;
	// EInvalid for an outcome other than keyward.AutoSuspended and
	// keyward.AutoCeiling.
	CreateAutoSuspension(s *keyward.AutoSuspension) error
	// AutoSuspensions returns the records matching f, ordered by At then id.
	AutoSuspensions(f AutoSuspensionFilter) ([]*keyward.AutoSuspension, error)
}
