package keyward

import "time"

// Policy is the effective lifecycle policy of a product: the values the rules
// use. The policy/ package (YAML, CEL, lint) produces it; until a product has
// an applied policy, DefaultPolicy applies.
type Policy struct {
	Version int // 0 = built-in default

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

	RevocationApprovals int
}

const day = 24 * time.Hour

// DefaultPolicy returns the built-in policy: the example values of spec
// section 5. Licenses are perpetual unless the issuer gives an expiry.
func DefaultPolicy() *Policy {
	return &Policy{
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
		RevocationApprovals: 1,
	}
}
