package postgres

import (
	"encoding/json"
	"fmt"

	"github.com/keyward/keyward"
	"github.com/keyward/keyward/store"
)

// Approvals.

const approvalCols = `id, action, target_type, target_id, product_id, reason, requested_by, requested_by_name,
	required, policy_version, state, grants, created_at, expires_at, updated_at, decided_at, decided_by,
	decided_by_name, decision_reason`

// grantRow is the JSON form of one grant in the grants column (the same as
// the SQLite store's; at in nanoseconds).
type grantRow struct {
	By      string `json:"by"`
	ByName  string `json:"by_name"`
	At      int64  `json:"at"`
	Comment string `json:"comment"`
}

func encodeGrants(gs []keyward.ApprovalGrant) (string, error) {
	rows := make([]grantRow, len(gs))
	for i, g := range gs {
		rows[i] = grantRow{By: g.By, ByName: g.ByName, At: toNanos(g.At), Comment: g.Comment}
	}
	b, err := json.Marshal(rows)
	return string(b), err
}

func scanApproval(s scanner) (*keyward.Approval, error) {
	var ap keyward.Approval
	var product *string
	var state, grants string
	var created, expires, updated int64
	var decided *int64
	if err := s.Scan(&ap.ID, &ap.Action, &ap.TargetType, &ap.TargetID, &product, &ap.Reason, &ap.RequestedBy, &ap.RequestedByName,
		&ap.Required, &ap.PolicyVersion, &state, &grants, &created, &expires, &updated, &decided, &ap.DecidedBy,
		&ap.DecidedByName, &ap.DecisionReason); err != nil {
		return nil, err
	}
	ap.State = keyward.ApprovalState(state)
	var rows []grantRow
	if err := json.Unmarshal([]byte(grants), &rows); err != nil {
		return nil, fmt.Errorf("approval %s: grants: %w", ap.ID, err)
	}
	for _, g := range rows {
		ap.Grants = append(ap.Grants, keyward.ApprovalGrant{By: g.By, ByName: g.ByName, At: fromNanos(g.At), Comment: g.Comment})
	}
	if product != nil {
		ap.ProductID = *product
	}
	ap.CreatedAt = fromNanos(created)
	ap.ExpiresAt = fromNanos(expires)
	ap.UpdatedAt = fromNanos(updated)
	ap.DecidedAt = fromNullNanos(decided)
	return &ap, nil
}

func (t *tx) CreateApproval(ap *keyward.Approval) error {
	grants, err := encodeGrants(ap.Grants)
	if err != nil {
		return wrap(err, "create approval %s", ap.ID)
	}
	_, err = t.exec(`INSERT INTO approvals (`+approvalCols+`)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19)`,
		ap.ID, ap.Action, ap.TargetType, ap.TargetID, nullString(ap.ProductID), ap.Reason, ap.RequestedBy, ap.RequestedByName,
		ap.Required, ap.PolicyVersion, string(ap.State), grants, toNanos(ap.CreatedAt), toNanos(ap.ExpiresAt), toNanos(ap.UpdatedAt),
		toNullNanos(ap.DecidedAt), ap.DecidedBy, ap.DecidedByName, ap.DecisionReason)
	switch code, name := violation(err); {
	case code == uniqueViolation && name == "approvals_pkey":
		return keyward.Errorf(keyward.EConflict, "approval %s already exists", ap.ID)
	case code == uniqueViolation:
		return keyward.Errorf(keyward.EConflict, "%s of %s already awaits approval", ap.Action, ap.TargetID)
	case code == checkViolation:
		return keyward.Errorf(keyward.EInvalid, "approval %s: invalid state %q", ap.ID, ap.State)
	}
	return wrap(err, "create approval %s", ap.ID)
}

func (t *tx) Approval(id string) (*keyward.Approval, error) {
	ap, err := queryOne(t, keyward.Errorf(keyward.ENotFound, "approval %s not found", id), scanApproval,
		`SELECT `+approvalCols+` FROM approvals WHERE id = $1`, id)
	return ap, wrap(err, "approval %s", id)
}

// Approvals returns the approvals matching f ordered by id.
func (t *tx) Approvals(f store.ApprovalFilter) ([]*keyward.Approval, error) {
	var w where
	w.add(f.State != "", "state = ?", string(f.State))
	w.add(f.ProductID != "", "product_id = ?", f.ProductID)
	w.add(f.TargetID != "", "target_id = ?", f.TargetID)
	w.add(f.Action != "", "action = ?", f.Action)
	as, err := queryAll(t, scanApproval, `SELECT `+approvalCols+` FROM approvals`+w.String()+` ORDER BY id`+limit(f.Limit), w.args...)
	return as, wrap(err, "approvals")
}

func (t *tx) UpdateApproval(ap *keyward.Approval) error {
	grants, err := encodeGrants(ap.Grants)
	if err != nil {
		return wrap(err, "update approval %s", ap.ID)
	}
	err = t.execOne(keyward.Errorf(keyward.ENotFound, "approval %s not found", ap.ID),
		`UPDATE approvals SET state = $1, grants = $2, updated_at = $3, decided_at = $4, decided_by = $5, decided_by_name = $6,
		decision_reason = $7 WHERE id = $8`,
		string(ap.State), grants, toNanos(ap.UpdatedAt), toNullNanos(ap.DecidedAt), ap.DecidedBy, ap.DecidedByName, ap.DecisionReason, ap.ID)
	switch code, _ := violation(err); code {
	case checkViolation:
		return keyward.Errorf(keyward.EInvalid, "approval %s: invalid state %q", ap.ID, ap.State)
	case uniqueViolation:
		return keyward.Errorf(keyward.EConflict, "%s of %s already awaits approval", ap.Action, ap.TargetID)
	}
	return wrap(err, "update approval %s", ap.ID)
}

// MFA enrollments. Sealed secrets never appear in messages.

const mfaCols = `principal, name, sealed, created_at, last_step, failures, locked_until`

func scanMFA(s scanner) (*keyward.MFAEnrollment, error) {
	var e keyward.MFAEnrollment
	var created int64
	var locked *int64
	if err := s.Scan(&e.Principal, &e.Name, &e.Sealed, &created, &e.LastStep, &e.Failures, &locked); err != nil {
		return nil, err
	}
	e.CreatedAt = fromNanos(created)
	e.LockedUntil = fromNullNanos(locked)
	return &e, nil
}

func (t *tx) MFAEnrollment(principal string) (*keyward.MFAEnrollment, error) {
	e, err := queryOne(t, keyward.Errorf(keyward.ENotFound, "principal %s has no MFA enrollment", principal), scanMFA,
		`SELECT `+mfaCols+` FROM mfa_enrollments WHERE principal = $1`, principal)
	return e, wrap(err, "mfa enrollment")
}

// MFAEnrollments returns every enrollment ordered by principal.
func (t *tx) MFAEnrollments() ([]*keyward.MFAEnrollment, error) {
	es, err := queryAll(t, scanMFA, `SELECT `+mfaCols+` FROM mfa_enrollments ORDER BY principal`)
	return es, wrap(err, "mfa enrollments")
}

// PutMFAEnrollment inserts e or replaces the principal's enrollment.
func (t *tx) PutMFAEnrollment(e *keyward.MFAEnrollment) error {
	sealed := e.Sealed
	if sealed == nil {
		sealed = []byte{}
	}
	_, err := t.exec(`INSERT INTO mfa_enrollments (`+mfaCols+`) VALUES ($1, $2, $3, $4, $5, $6, $7)
		ON CONFLICT (principal) DO UPDATE SET name = excluded.name, sealed = excluded.sealed, created_at = excluded.created_at,
		last_step = excluded.last_step, failures = excluded.failures, locked_until = excluded.locked_until`,
		e.Principal, e.Name, sealed, toNanos(e.CreatedAt), e.LastStep, e.Failures, toNullNanos(e.LockedUntil))
	return wrap(err, "put mfa enrollment")
}

func (t *tx) DeleteMFAEnrollment(principal string) error {
	err := t.execOne(keyward.Errorf(keyward.ENotFound, "principal %s has no MFA enrollment", principal),
		`DELETE FROM mfa_enrollments WHERE principal = $1`, principal)
	return wrap(err, "delete mfa enrollment")
}

// Tokens by id.

func (t *tx) Token(id string) (*keyward.Token, error) {
	tok, err := queryOne(t, keyward.Errorf(keyward.ENotFound, "token %s not found", id), scanToken,
		`SELECT `+tokenCols+` FROM tokens WHERE id = $1`, id)
	return tok, wrap(err, "token %s", id)
}
