package keyward

import "time"

// LicenseState is a license's place in its life (spec 2.2).
type LicenseState string

const (
	LicenseActive    LicenseState = "active"
	LicenseSuspended LicenseState = "suspended" // temporary, reversible
	LicenseRevoked   LicenseState = "revoked"   // permanent
	LicenseExpired   LicenseState = "expired"   // validity ended
	LicenseRetired   LicenseState = "retired"   // no longer needed
)

// LicenseAction names a license transition.
type LicenseAction string

const (
	LicenseSuspend   LicenseAction = "suspend"
	LicenseReinstate LicenseAction = "reinstate"
	LicenseRevoke    LicenseAction = "revoke"
	LicenseExpire    LicenseAction = "expire"
	LicenseRetire    LicenseAction = "retire"
	LicenseReissue   LicenseAction = "reissue" // new key string; state unchanged
)

// licenseTransitions is the one table of legal license transitions.
var licenseTransitions = map[LicenseAction]map[LicenseState]LicenseState{
	LicenseSuspend:   {LicenseActive: LicenseSuspended},
	LicenseReinstate: {LicenseSuspended: LicenseActive},
	LicenseRevoke:    {LicenseActive: LicenseRevoked, LicenseSuspended: LicenseRevoked},
	LicenseExpire:    {LicenseActive: LicenseExpired},
	LicenseRetire:    {LicenseActive: LicenseRetired},
	LicenseReissue:   {LicenseActive: LicenseActive},
}

// LicenseTransition returns the state a license in state from reaches by
// action, or an EIllegalTransition error.
func LicenseTransition(from LicenseState, action LicenseAction) (LicenseState, error) {
	if to, ok := licenseTransitions[action][from]; ok {
		return to, nil
	}
	return "", Errorf(EIllegalTransition, "cannot %s a %s license", action, from)
}

// LicenseStates lists every license state; LicenseActions every action.
func LicenseStates() []LicenseState {
	return []LicenseState{LicenseActive, LicenseSuspended, LicenseRevoked, LicenseExpired, LicenseRetired}
}
func LicenseActions() []LicenseAction {
	return []LicenseAction{LicenseSuspend, LicenseReinstate, LicenseRevoke, LicenseExpire, LicenseRetire, LicenseReissue}
}

// Revocation reasons (RFC 5280 style).
var revocationReasons = []string{"key_compromise", "abuse", "non_payment", "superseded", "cessation_of_use", "policy_violation", "unspecified"}

// RevocationReasons lists the accepted revocation reasons.
func RevocationReasons() []string { return append([]string(nil), revocationReasons...) }

// ValidRevocationReason reports whether r is an accepted reason.
func ValidRevocationReason(r string) bool {
	for _, x := range revocationReasons {
		if x == r {
			return true
		}
	}
	return false
}

// License is a customer's right to use a product. The license key itself is
// never stored: see LicenseKey.
type License struct {
	ID              string
	ProductID       string
	Holder          string // pseudonymous customer id, chosen by the issuer
	State           LicenseState
	KeyPrefix       string // display prefix of the current key, e.g. "KW1-7Q2MZ"
	Entitlements    []string
	MaxMachines     int        // 0 = no machine limit
	ExpiresAt       *time.Time // nil = perpetual
	CreatedAt       time.Time
	UpdatedAt       time.Time
	Reason          string // reason of the last transition, if given
	LastValidatedAt *time.Time
	IssuedBy        string // principal id, for separation of duties
}

// Expired reports whether the license's validity has ended at now.
func (l *License) Expired(now time.Time) bool {
	return l.ExpiresAt != nil && !now.Before(*l.ExpiresAt)
}

// LicenseKey is the stored form of a license key string: its keyed hash
// (HMAC-SHA-256 under the server pepper) and display prefix. A reissued
// license keeps its old key records, superseded, until GraceUntil.
type LicenseKey struct {
	Hash         []byte
	LicenseID    string
	Prefix       string
	CreatedAt    time.Time
	SupersededAt *time.Time
	GraceUntil   *time.Time // superseded key validates until then
}

// Validation codes of POST /v1/validate.
const (
	CodeValid               = "VALID"
	CodeNotFound            = "NOT_FOUND"
	CodeSuspended           = "SUSPENDED"
	CodeRevoked             = "REVOKED"
	CodeExpired             = "EXPIRED"
	CodeRetired             = "RETIRED"
	CodeSuperseded          = "SUPERSEDED"
	CodeTooManyMachines     = "TOO_MANY_MACHINES"
	CodeFingerprintRequired = "FINGERPRINT_REQUIRED"
)

// Machine is a fingerprint activated on a license.
type Machine struct {
	ID          string
	LicenseID   string
	Fingerprint string
	CreatedAt   time.Time
	LastSeenAt  time.Time
}

// Product is a thing a vendor licenses; it owns one license-key ring.
type Product struct {
	ID        string
	Name      string
	CreatedAt time.Time
}
