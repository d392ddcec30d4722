package keyward

import "time"

// Kinds of revocation registry rows.
const (
	RevocationLicense = "license" // Subject is a license id
	RevocationKey     = "key"     // Subject is a signing key's kid
)

// Revocation is one row of the revocation registry: a revocation-relevant
// change (a license revoked, suspended or reinstated; a signing key
// compromised), written in the same transaction as the change. Seq is
// assigned by the store: increasing in commit order, never reused. The
// registry is append-only; a subject's current state is its row with the
// highest Seq.
type Revocation struct {
	Seq       int64
	ProductID string // the license's product or the key's ring product; "" for a registry key
	Kind      string // RevocationLicense or RevocationKey
	Subject   string // license id or kid
	State     string // a LicenseState (revoked, suspended, active = reinstated) or KeyCompromised
	Reason    string // a reason from RevocationReasons, or "" when none was given as a code
	Time      time.Time
}
