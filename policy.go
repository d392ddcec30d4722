package keyward

import "time"

// Policy is the effective lifecycle policy of a product: the values the rules
// use. The policy/ package (YAML, CEL, lint) produces it; until a product has
// an applied policy, DefaultPolicy applies.
type Policy struct {
	Version int    // 0 = built-in default
	Name    string // metadata.name; "default" for the built-in
	Product string // metadata.product (the product's name); "" for the built-in
	Hash    string // hex SHA-256 of the document as applied; "" for the built-in

	Algorithm         string
	AllowedAlgorithms []string
	RotateEvery       time.Duration
	Prepublish        time.Duration
	VerifyWindow      time.Duration
	DestroyAfter      time.Duration

	LicenseDuration time.Duration // 0 = perpetual unless the issuer sets an expiry
	CertificateTTL  time.Duration
	LeaseTTL        time.Duration
	OfflineGrace    time.Duration
	MaxMachines     int
	ReissueGrace    time.Duration
	// ExpiringNotice is how long before a license's expiry the event
	// license.expiring announces it (docs/lifecycle.md).
	ExpiringNotice time.Duration

	RevocationApprovals int

	// Automatic suspension guards (docs/abuse.md): a license is not
	// suspended automatically again within AutoSuspendCooldown of its last
	// automatic suspension; a product gets at most AutoSuspendCeiling
	// automatic suspensions per hour (beyond that an alert is raised
	// instead; 0 = alerts only); SuspendOnSignal lists the signal kinds
	// that suspend a license at once.
	AutoSuspendCooldown time.Duration
	AutoSuspendCeiling  int
	SuspendOnSignal     []SignalKind

	// CEL rules, in document order (policy/ compiles and evaluates them).
	Retire      []PolicyRule // spec.licenses.retire: retire an active license
	AutoSuspend []PolicyRule // spec.revocation.autoSuspend: suspend an active license

	Duties [][]string // pairs of permissions no principal may hold both of
	MFA    []string   // permissions that need a TOTP code
}

// PolicyRule is a named CEL condition of a policy. Name appears in the audit
// entry of every action the rule causes.
type PolicyRule struct {
	Name string
	When string // CEL expression of type bool
}

// PolicyRecord is one stored version of a product's LifecyclePolicy
// document. Versions count 1, 2, 3, … per product; the highest is in force.
type PolicyRecord struct {
	ProductID     string
	Version       int
	Document      string // the YAML exactly as applied
	Hash          string // hex SHA-256 of Document
	Author        string // principal id
	AuthorName    string
	CreatedAt     time.Time
	Justification string
	RollbackOf    int // the version this one restores, or 0
}

const day = 24 * time.Hour

// DefaultPolicy returns the built-in policy: the example values of spec
// section 5, with two differences: licenses are perpetual unless the issuer
// gives an expiry (the example's duration is 365d), and fingerprint-spray
// ignores licenses without a machine limit (max_machines 0), which the
// example's rule would suspend at their first fingerprint. The spec's
// example does not set the automatic-suspension guards; their defaults
// (cooldown 24h, ceiling 10 per product per hour, suspend on a leak
// signal) are docs/abuse.md's. docs/policy.md lists it.
func DefaultPolicy() *Policy {
	return &Policy{
		Name:                "default",
		Algorithm:           "Ed25519",
		AllowedAlgorithms:   []string{"Ed25519", "ES256"},
		RotateEvery:         90 * day,
		Prepublish:          7 * day,
		VerifyWindow:        30 * day,
		DestroyAfter:        400 * day,
		CertificateTTL:      30 * day,
		LeaseTTL:            15 * time.Minute,
		OfflineGrace:        72 * time.Hour,
		MaxMachines:         3,
		ReissueGrace:        14 * day,
		ExpiringNotice:      14 * day,
		RevocationApprovals: 1,
		AutoSuspendCooldown: day,
		AutoSuspendCeiling:  10,
		SuspendOnSignal:     []SignalKind{SignalLeak},
		Retire: []PolicyRule{
			{Name: "inactive", When: `license.last_validated_at < now - duration("180d")`},
		},
		AutoSuspend: []PolicyRule{
			{Name: "burst", When: "usage.validations_per_minute > 600"},
			{Name: "fingerprint-spray", When: "license.max_machines > 0 && usage.distinct_fingerprints_24h > 5 * license.max_machines"},
		},
		Duties: [][]string{{"license.issue", "license.revoke"}, {"key.rotate", "approval.grant"}},
		MFA:    []string{"license.revoke", "key.revoke", "key.destroy", "policy.apply"},
	}
}
