package postgres

import (
	"github.com/keyward/keyward"
	"github.com/keyward/keyward/store"
)

// Revocation registry.

const revocationCols = `seq, product_id, kind, subject, state, reason, time`

func scanRevocation(s scanner) (*keyward.Revocation, error) {
	var r keyward.Revocation
	var at int64
	if err := s.Scan(&r.Seq, &r.ProductID, &r.Kind, &r.Subject, &r.State, &r.Reason, &at); err != nil {
		return nil, err
	}
	r.Time = fromNanos(at)
	return &r, nil
}

// AppendRevocation stores r and sets r.Seq from the registry's identity
// sequence. Seqs increase in commit order because the write lock is taken
// before the sequence is read and held until commit.
func (t *tx) AppendRevocation(r *keyward.Revocation) error {
	err := t.tx.QueryRow(t.ctx, `INSERT INTO revocations (product_id, kind, subject, state, reason, time)
		VALUES ($1, $2, $3, $4, $5, $6) RETURNING seq`,
		r.ProductID, r.Kind, r.Subject, r.State, r.Reason, toNanos(r.Time)).Scan(&r.Seq)
	if code, _ := violation(err); code == checkViolation {
		return keyward.Errorf(keyward.EInvalid, "revocation of %s: invalid kind %q, empty subject or empty state", r.Subject, r.Kind)
	}
	if err == nil {
		t.ch.revocation()
	}
	return wrap(err, "append revocation of %s", r.Subject)
}

// Revocations returns the rows matching f ordered by seq.
func (t *tx) Revocations(f store.RevocationFilter) ([]*keyward.Revocation, error) {
	var w where
	w.add(f.ProductID != "", "product_id IN (?, '')", f.ProductID)
	w.add(f.AfterSeq > 0, "seq > ?", f.AfterSeq)
	rs, err := queryAll(t, scanRevocation, `SELECT `+revocationCols+` FROM revocations`+w.String()+` ORDER BY seq`+limit(f.Limit), w.args...)
	return rs, wrap(err, "revocations")
}

// RevocationHead returns the highest seq, 0 for an empty registry.
func (t *tx) RevocationHead() (int64, error) {
	n, err := t.queryInt64(`SELECT COALESCE(MAX(seq), 0) FROM revocations`)
	return n, wrap(err, "revocation head")
}
