package sqlite

import (
	"database/sql"

	sqlite3 "modernc.org/sqlite/lib"

	"github.com/keyward/keyward"
	"github.com/keyward/keyward/store"
)

// Governance exceptions.

const exceptionCols = `id, target_type, target_id, product_id, rule, until_at, justification, requested_by,
	requested_by_name, approval_id, state, created_at, updated_at, decided_at`

func scanException(s scanner) (*keyward.Exception, error) {
	var e keyward.Exception
	var product sql.Null[string]
	var until, created, updated int64
	var decided sql.Null[int64]
	if err := s.Scan(&e.ID, &e.TargetType, &e.TargetID, &product, &e.Rule, &until, &e.Justification, &e.RequestedBy,
		&e.RequestedByName, &e.ApprovalID, &e.State, &created, &updated, &decided); err != nil {
		return nil, err
	}
	e.ProductID = product.V
	e.Until = fromNanos(until)
	e.CreatedAt = fromNanos(created)
	e.UpdatedAt = fromNanos(updated)
	e.DecidedAt = fromNullNanos(decided)
	return &e, nil
}

func (t *tx) CreateException(e *keyward.Exception) error {
	_, err := t.exec(`INSERT INTO exceptions (`+exceptionCols+`) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
		e.ID, e.TargetType, e.TargetID, nullString(e.ProductID), e.Rule, toNanos(e.Until), e.Justification, e.RequestedBy,
		e.RequestedByName, e.ApprovalID, e.State, toNanos(e.CreatedAt), toNanos(e.UpdatedAt), toNullNanos(e.DecidedAt))
	switch constraint(err) {
	case sqlite3.SQLITE_CONSTRAINT_PRIMARYKEY:
		return keyward.Errorf(keyward.EConflict, "exception %s already exists", e.ID)
	case sqlite3.SQLITE_CONSTRAINT_CHECK:
		return keyward.Errorf(keyward.EInvalid, "exception %s: invalid state %q, target type %q, rule or justification", e.ID, e.State, e.TargetType)
	}
	return wrap(err, "create exception %s", e.ID)
}

func (t *tx) Exception(id string) (*keyward.Exception, error) {
	e, err := queryOne(t, keyward.Errorf(keyward.ENotFound, "exception %s not found", id), scanException,
		`SELECT `+exceptionCols+` FROM exceptions WHERE id = ?`, id)
	return e, wrap(err, "exception %s", id)
}

// Exceptions returns the exceptions matching f ordered by id.
func (t *tx) Exceptions(f store.ExceptionFilter) ([]*keyward.Exception, error) {
	var w where
	w.add(f.State != "", "state = ?", f.State)
	w.add(f.ProductID != "", "product_id = ?", f.ProductID)
	w.add(f.TargetID != "", "target_id = ?", f.TargetID)
	w.add(f.Rule != "", "rule = ?", f.Rule)
	w.add(f.ApprovalID != "", "approval_id = ?", f.ApprovalID)
	es, err := queryAll(t, scanException, `SELECT `+exceptionCols+` FROM exceptions`+w.String()+` ORDER BY id`+limit(f.Limit), w.args...)
	return es, wrap(err, "exceptions")
}

func (t *tx) UpdateException(e *keyward.Exception) error {
	err := t.execOne(keyward.Errorf(keyward.ENotFound, "exception %s not found", e.ID),
		`UPDATE exceptions SET state = ?, updated_at = ?, decided_at = ? WHERE id = ?`,
		e.State, toNanos(e.UpdatedAt), toNullNanos(e.DecidedAt), e.ID)
	if constraint(err) == sqlite3.SQLITE_CONSTRAINT_CHECK {
		return keyward.Errorf(keyward.EInvalid, "exception %s: invalid state %q", e.ID, e.State)
	}
	return wrap(err, "update exception %s", e.ID)
}
