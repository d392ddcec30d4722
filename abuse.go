package keyward

import "time"

// SignalKind is what an explicit abuse signal reports about a license
// (docs/abuse.md).
type SignalKind string

const (
	SignalAbuse      SignalKind = "abuse"      // the license is being misused (sharing, reselling, automation)
	SignalLeak       SignalKind = "leak"       // the license key was published or found outside the customer
	SignalChargeback SignalKind = "chargeback" // the payment behind the license was reversed
	SignalOther      SignalKind = "other"      // anything else a person should look at
)

// SignalKinds lists every signal kind in a stable order.
func SignalKinds() []SignalKind {
	return []SignalKind{SignalAbuse, SignalLeak, SignalChargeback, SignalOther}
}

// ValidSignalKind reports whether k is a known signal kind.
func ValidSignalKind(k SignalKind) bool {
	for _, x := range SignalKinds() {
		if x == k {
			return true
		}
	}
	return false
}

// Signal outcomes: what the policy made of a signal when it was recorded.
const (
	SignalRecorded  = "recorded"  // the policy does not suspend on this kind
	SignalSuspended = "suspended" // the license was suspended at once (spec.revocation.suspendOnSignal)
	SignalInactive  = "inactive"  // the policy would suspend, but the license is not active
	SignalCooldown  = "cooldown"  // the policy would suspend, but the license is in its auto-suspension cooldown
	SignalCeiling   = "ceiling"   // the policy would suspend, but the product reached its auto-suspension ceiling: alert raised instead
)

// Signal is an explicit report about a license by a principal (support
// staff, a vendor's backend): recorded, audited, and possibly a reason for
// the policy to suspend the license at once.
type Signal struct {
	ID        string
	LicenseID string
	ProductID string
	Kind      SignalKind
	Detail    string // free text from the reporter; never a secret
	Actor     string // principal id
	ActorName string
	CreatedAt time.Time
	Outcome   string // Signal* outcome
}

// Auto-suspension outcomes.
const (
	AutoSuspended = "suspended" // the license was suspended
	AutoCeiling   = "ceiling"   // the product's ceiling was reached: an alert was raised instead
)

// AutoSuspension is the bookkeeping of one automatic suspension decision
// (a revocation.autoSuspend rule or a suspendOnSignal kind): what the
// cooldown and the per-product ceiling are computed from.
type AutoSuspension struct {
	ID            string
	LicenseID     string
	ProductID     string
	Rule          string // the autoSuspend rule's name, or "suspendOnSignal"
	PolicyVersion int
	Outcome       string // AutoSuspended or AutoCeiling
	At            time.Time
}
