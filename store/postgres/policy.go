package postgres

import (
	"github.com/keyward/keyward"
)

// Policies: versioned LifecyclePolicy documents, append-only.

const policyCols = `product_id, version, document, hash, author, author_name, created_at, justification, rollback_of`

func scanPolicy(s scanner) (*keyward.PolicyRecord, error) {
	var r keyward.PolicyRecord
	var created int64
	if err := s.Scan(&r.ProductID, &r.Version, &r.Document, &r.Hash, &r.Author, &r.AuthorName,
		&created, &r.Justification, &r.RollbackOf); err != nil {
		return nil, err
	}
	r.CreatedAt = fromNanos(created)
	return &r, nil
}

// CreatePolicy numbers r max(version)+1 for its product: the write lock held
// by every Update makes that race-free.
func (t *tx) CreatePolicy(r *keyward.PolicyRecord) error {
	v, err := t.LatestPolicyVersion(r.ProductID)
	if err != nil {
		return err
	}
	_, err = t.exec(`INSERT INTO policies (`+policyCols+`) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)`,
		r.ProductID, v+1, r.Document, r.Hash, r.Author, r.AuthorName, toNanos(r.CreatedAt), r.Justification, r.RollbackOf)
	switch code, _ := violation(err); code {
	case fkViolation:
		return keyward.Errorf(keyward.ENotFound, "product %s not found", r.ProductID)
	case uniqueViolation:
		return keyward.Errorf(keyward.EConflict, "policy version %d of product %s already exists", v+1, r.ProductID)
	case checkViolation:
		return keyward.Errorf(keyward.EInvalid, "policy of product %s: rollback_of %d must name an earlier version", r.ProductID, r.RollbackOf)
	}
	if err != nil {
		return wrap(err, "create policy of %s", r.ProductID)
	}
	r.Version = v + 1
	t.ch.policy(r.ProductID)
	return nil
}

func (t *tx) LatestPolicy(productID string) (*keyward.PolicyRecord, error) {
	r, err := queryOne(t, keyward.Errorf(keyward.ENotFound, "product %s has no applied policy", productID), scanPolicy,
		`SELECT `+policyCols+` FROM policies WHERE product_id = $1 ORDER BY version DESC LIMIT 1`, productID)
	return r, wrap(err, "latest policy of %s", productID)
}

func (t *tx) LatestPolicyVersion(productID string) (int, error) {
	v, err := t.queryInt64(`SELECT COALESCE(MAX(version), 0) FROM policies WHERE product_id = $1`, productID)
	return int(v), wrap(err, "latest policy version of %s", productID)
}

func (t *tx) PolicyVersion(productID string, version int) (*keyward.PolicyRecord, error) {
	r, err := queryOne(t, keyward.Errorf(keyward.ENotFound, "product %s has no policy version %d", productID, version), scanPolicy,
		`SELECT `+policyCols+` FROM policies WHERE product_id = $1 AND version = $2`, productID, version)
	return r, wrap(err, "policy %s v%d", productID, version)
}

func (t *tx) PolicyHistory(productID string) ([]*keyward.PolicyRecord, error) {
	rs, err := queryAll(t, scanPolicy, `SELECT `+policyCols+` FROM policies WHERE product_id = $1 ORDER BY version`, productID)
	return rs, wrap(err, "policy history of %s", productID)
}
