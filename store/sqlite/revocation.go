package sqlite

import (
	"github.com/keyward/keyward"
	"github.com/keyward/keyward/store"

	sqlite3 "modernc.org/sqlite/lib"
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

// AppendRevocation stores r and sets r.Seq. The one writer connection
// serialises transactions, so seqs increase in commit order.
func (t *tx) AppendRevocation(r *keyward.Revocation) error {
	err := t.tx.QueryRowContext(t.ctx, `INSERT INTO revocations (product_id, kind, subject, state, reason, time)
		VALUES (?, ?, ?, ?, ?, ?) RETURNING seq`,
		r.ProductID, r.Kind, r.Subject, r.State, r.Reason, toNanos(r.Time)).Scan(&r.Seq)
	if constraint(err) == sqlite3.SQLITE_CONSTRAINT_CHECK {
		return keyward.Errorf(keyward.EInvalid, "revocation of %s: invalid kind %q, empty subject or empty state", r.Subject, r.Kind)
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
	var n int64
	err := t.tx.QueryRowContext(t.ctx, `SELECT COALESCE(MAX(seq), 0) FROM revocations`).Scan(&n)
	return n, wrap(err, "revocation head")
}
