package store

import "github.com/keyward/keyward"

// PolicyTx is the part of Tx for versioned lifecycle policies. A product's
// policy versions are numbered 1, 2, 3, … without gaps; the highest version
// is the one in force. Versions are never changed or deleted: a rollback is
// a new version.
type PolicyTx interface {
	// CreatePolicy stores r as the next version of r.ProductID's policy and
	// sets r.Version to it (the latest version + 1, or 1 for the first),
	// within the transaction. It returns ENotFound if the product does not
	// exist.
	CreatePolicy(r *keyward.PolicyRecord) error
	// LatestPolicy returns the version in force, or ENotFound if the
	// product has none.
	LatestPolicy(productID string) (*keyward.PolicyRecord, error)
	// LatestPolicyVersion returns the number of the version in force, or 0
	// if the product has none (whether or not the product exists).
	LatestPolicyVersion(productID string) (int, error)
	// PolicyVersion returns one version, or ENotFound.
	PolicyVersion(productID string, version int) (*keyward.PolicyRecord, error)
	// PolicyHistory returns every version of the product's policy ordered
	// by version; an empty list if there are none.
	PolicyHistory(productID string) ([]*keyward.PolicyRecord, error)
}
