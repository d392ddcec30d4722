package postgres

import (
	"github.com/keyward/keyward"
	"github.com/keyward/keyward/store"
)

// Governance exceptions.

const exceptionCols = `id, target_type, target_id, product_id, rule, until_at, justification, requested_by,
	requested_by_name, approval_id, state, created_at, updated_at, decided_at`

func scanException(s scanner) (*keyward.Exception, error) {
	var e keyward.Exception
	var product *string
	var state string
	var until, created, updated int64
	var decided *int64
	if err := s.Scan(&e.ID, &e.TargetType, &e.TargetID, &product, &e.Rule, &until, &e.Justification, &e.RequestedBy,
		&e.RequestedByName, &e.ApprovalID, &state, &created, &updated, &decided); err != nil {
		return nil, err
	}
	e.State = keyward.ExceptionState(state)
	if product != nil {
		e.ProductID = *product
	}
	e.Until = fromNanos(until)
	e.CreatedAt = fromNanos(created)
	e.UpdatedAt = fromNanos(updated)
	e.DecidedAt = fromNullNanos(decided)
	return &e, nil
}

func (t *tx) CreateException(e *keyward.Exception) error {
	_, err := t.exec(`INSERT INTO exceptions (`+exceptionCols+`)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)`,
		e.ID, e.TargetType, e.TargetID, nullString(e.ProductID), e.Rule, toNanos(e.Until), e.Justification, e.RequestedBy,
		e.RequestedByName, e.ApprovalID, string(e.State), toNanos(e.CreatedAt), toNanos(e.UpdatedAt), toNullNanos(e.DecidedAt))
	switch code, _ := violation(err); code {
	case uniqueViolation:
		return keyward.Errorf(keyward.EConflict, "exception %s already exists", e.ID)
	case checkViolation:
		return keyward.Errorf(keyward.EInvalid, "exception %s: invalid state %q, target type %q, rule or justification", e.ID, e.State, e.TargetType)
	}
	return wrap(err, "create exception %s", e.ID)
}

func (t *tx) Exception(id string) (*keyward.Exception, error) {
	e, err := queryOne(t, keyward.Errorf(keyward.ENotFound, "exception %s not found", id), scanException,
		`SELECT `+exceptionCols+` FROM exceptions WHERE id = $1`, id)
	return e, wrap(err, "exception %s", id)
}

// Exceptions returns the exceptions matching f ordered by id.
func (t *tx) Exceptions(f store.ExceptionFilter) ([]*keyward.Exception, error) {
	var w where
	w.add(f.State != "", "state = ?", string(f.State))
	w.add(f.ProductID != "", "product_id = ?", f.ProductID)
	w.add(f.TargetID != "", "target_id = ?", f.TargetID)
	w.add(f.Rule != "", "rule = ?", f.Rule)
	w.add(f.ApprovalID != "", "approval_id = ?", f.ApprovalID)
	es, err := queryAll(t, scanException, `SELECT `+exceptionCols+` FROM exceptions`+w.String()+` ORDER BY id`+limit(f.Limit), w.args...)
	return es, wrap(err, "exceptions")
}

func (t *tx) UpdateException(e *keyward.Exception) error {
	err := t.execOne(keyward.Errorf(keyward.ENotFound, "exception %s not found", e.ID),
		`UPDATE exceptions SET state = $1, updated_at = $2, decided_at = $3 WHERE id = $4`,
		string(e.State), toNanos(e.UpdatedAt), toNullNanos(e.DecidedAt), e.ID)
	if code, _ := violation(err); code == checkViolation {
		return keyward.Errorf(keyward.EInvalid, "exception %s: invalid state %q", e.ID, e.State)
	}
	return wrap(err, "update exception %s", e.ID)
}
