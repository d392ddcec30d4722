// Package store declares the narrow storage interfaces Keyward's authority
// uses. Implementations (store/sqlite, store/postgres) are thin: they
// persist and look up, and hold no lifecycle rules. storetest is the one test
// suite every implementation passes.
//
// Errors: lookups of a missing row, and inserts naming a missing referenced
// row, return a *keyward.Error with code keyward.ENotFound; inserts that
// violate uniqueness (product name, license key hash, a second active key in
// a ring) return keyward.EConflict; a value a constraint refuses returns
// keyward.EInvalid.
//
// Orderings the suite pins: Products, Machines and Tokens by creation time
// then id; Keys by creation time then kid; Licenses by id; audit entries and
// events by seq. Product(idOrName) prefers an id match. AuditFilter.Since is
// inclusive; a Limit of 0 means no limit. PutSecret overwrites.
//
// Isolation: Update transactions MUST behave as if serialized (SQLite
// serializes writers; PostgreSQL needs SERIALIZABLE with retry or explicit
// locks), because the authority reads, checks a rule and writes in one
// transaction. fn MUST NOT call Update or View on the same store.
package store

import (
	"context"
	"time"

	"github.com/keyward/keyward"
)

// Store opens transactions. Update runs fn in a read-write transaction and
// commits only if fn returns nil; View runs fn read-only. fn MUST NOT keep tx
// after it returns. A change, its audit entry and its outbox event are
// written through the same tx so they commit together or not at all.
type Store interface {
	Update(ctx context.Context, fn func(tx Tx) error) error
	View(ctx context.Context, fn func(tx Tx) error) error
	Ping(ctx context.Context) error
	Close() error
}

// KeyFilter selects signing keys; zero fields match everything.
type KeyFilter struct {
	Ring      string
	ProductID string
	Purpose   keyward.Purpose
	States    []keyward.KeyState
}

// LicenseFilter selects licenses, ordered by id; zero fields match everything.
type LicenseFilter struct {
	ProductID string
	State     keyward.LicenseState
	Holder    string
	After     string // id cursor: only ids greater than this
	Limit     int    // 0 = no limit
}

// AuditFilter selects audit entries, ordered by seq.
type AuditFilter struct {
	TargetID string
	Action   string
	Since    time.Time
	AfterSeq int64
	Limit    int
}

// Tx is one transaction.
type Tx interface {
	PolicyTx
	AuditTx
	RevocationTx
	WebhookTx
	GovernanceTx
	AbuseTx
	LifecycleTx
	ExceptionTx

	CreateProduct(p *keyward.Product) error
	Product(idOrName string) (*keyward.Product, error)
	Products() ([]*keyward.Product, error)

	CreateKey(k *keyward.SigningKey) error
	Key(kid string) (*keyward.SigningKey, error)
	Keys(f KeyFilter) ([]*keyward.SigningKey, error)
	// UpdateKey writes State, the time fields, Sealed and Reason.
	UpdateKey(k *keyward.SigningKey) error

	CreateLicense(l *keyward.License) error
	// CreateLicenses creates ls as CreateLicense creates each, with few
	// statements (batch issuance). On an error the caller MUST abandon
	// the transaction: some of ls may have been written.
	CreateLicenses(ls []*keyward.License) error
	License(id string) (*keyward.License, error)
	Licenses(f LicenseFilter) ([]*keyward.License, error)
	// UpdateLicense writes every mutable field (state, key prefix,
	// entitlements, max machines, expiry, reason, last validated, updated).
	UpdateLicense(l *keyward.License) error
	// TouchLicense sets LastValidatedAt only.
	TouchLicense(id string, at time.Time) error

	CreateLicenseKey(k *keyward.LicenseKey) error
	// CreateLicenseKeys creates ks as CreateLicenseKey creates each, in
	// any order; on an error the caller MUST abandon the transaction.
	CreateLicenseKeys(ks []*keyward.LicenseKey) error
	LicenseKeyByHash(hash []byte) (*keyward.LicenseKey, error)
	// SupersedeLicenseKeys marks every not yet superseded key of the
	// license superseded at `at`, valid until graceUntil.
	SupersedeLicenseKeys(licenseID string, at, graceUntil time.Time) error

	Machines(licenseID string) ([]*keyward.Machine, error)
	MachineByFingerprint(licenseID, fingerprint string) (*keyward.Machine, error)
	CreateMachine(m *keyward.Machine) error
	TouchMachine(id string, at time.Time) error
	DeleteMachine(licenseID, id string) error

	// AppendAudit assigns e.Seq (1, 2, 3, … without gaps) and stores e.
	// Writers MUST call audit.Append instead, which also stores the
	// entry's Merkle tree hashes (see AuditTx).
	AppendAudit(e *keyward.AuditEntry) error
	// AppendAudits appends es in order as AppendAudit appends each: they
	// get consecutive seqs. Writers MUST call audit.AppendAll instead. On
	// an error the caller MUST abandon the transaction.
	AppendAudits(es []*keyward.AuditEntry) error
	AuditEntries(f AuditFilter) ([]*keyward.AuditEntry, error)
	// AppendEvent assigns e.Seq and stores e in the outbox.
	AppendEvent(e *keyward.Event) error
	// AppendEvents appends es in order as AppendEvent appends each; on an
	// error the caller MUST abandon the transaction.
	AppendEvents(es []*keyward.Event) error
	Events(afterSeq int64, limit int) ([]*keyward.Event, error)

	CreateToken(t *keyward.Token) error
	TokenByHash(hash []byte) (*keyward.Token, error)
	Tokens() ([]*keyward.Token, error)
	// RevokeToken sets RevokedAt.
	RevokeToken(id string, at time.Time) error

	// Secret returns a KEK-sealed server secret (e.g. the license-key
	// pepper), or ENotFound.
	Secret(name string) ([]byte, error)
	PutSecret(name string, sealed []byte) error
}

// Locker is implemented by stores that several server processes share
// (PostgreSQL): it elects one process to run a singleton job such as the
// scheduler. Stores used by a single process (SQLite) need not implement
// it; callers then behave as the only holder.
type Locker interface {
	// TryLock takes the named lock without waiting. ok is false when another
	// process holds it. lost is closed if the lock is lost (for example the
	// connection holding it dropped), after which another process may take
	// it; unlock releases it. Locks MUST be released when the process dies.
	TryLock(ctx context.Context, name string) (lost <-chan struct{}, unlock func(), ok bool, err error)
}

// LicensesAlike reports whether ls all have the same product and state:
// a foreign-key or CHECK violation by a multi-row insert of them is then
// each one's, and an error may name the first (the stores' batch inserts).
func LicensesAlike(ls []*keyward.License) bool {
	for _, l := range ls {
		if l.ProductID != ls[0].ProductID || l.State != ls[0].State {
			return false
		}
	}
	return true
}
