package sqlite

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"

	"github.com/keyward/keyward"
	"github.com/keyward/keyward/store"
)

// tx implements store.Tx on one *sql.Tx. Every statement runs with the
// context given to Update or View.
type tx struct {
	ctx   context.Context
	tx    *sql.Tx
	audit *auditStmts // prepared statements of the pool tx runs on
	hot   *hotStmts   // likewise
	tree  treeTx      // the audit tree's right edge, in an Update
	bound map[*sql.Stmt]*sql.Stmt
}

var _ store.Tx = (*tx)(nil)

func (t *tx) exec(query string, args ...any) (sql.Result, error) {
	return t.tx.ExecContext(t.ctx, query, args...)
}

// execOne runs an UPDATE or DELETE that must hit a row, returning notFound
// if it hit none.
func (t *tx) execOne(notFound *keyward.Error, query string, args ...any) error {
	res, err := t.exec(query, args...)
	return hitOne(res, err, notFound)
}

// hitOne returns notFound if the UPDATE or DELETE that gave res hit no row.
func hitOne(res sql.Result, err error, notFound *keyward.Error) error {
	if err != nil {
		return err
	}
	n, err := res.RowsAffected()
	if err != nil {
		return err
	}
	if n == 0 {
		return notFound
	}
	return nil
}

// scanner is a *sql.Row or *sql.Rows.
type scanner interface{ Scan(dest ...any) error }

// queryAll runs query and scans every row with scan.
func queryAll[T any](t *tx, scan func(scanner) (*T, error), query string, args ...any) ([]*T, error) {
	rows, err := t.tx.QueryContext(t.ctx, query, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []*T
	for rows.Next() {
		v, err := scan(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, v)
	}
	return out, rows.Err()
}

// queryOne runs query and scans its one row, returning notFound if there is none.
func queryOne[T any](t *tx, notFound *keyward.Error, scan func(scanner) (*T, error), query string, args ...any) (*T, error) {
	return rowOne(notFound, scan, t.tx.QueryRowContext(t.ctx, query, args...))
}

// rowOne scans row with scan, returning notFound if there is no row.
func rowOne[T any](notFound *keyward.Error, scan func(scanner) (*T, error), row *sql.Row) (*T, error) {
	v, err := scan(row)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, notFound
	}
	return v, err
}

// Products.

const productCols = `id, name, created_at`

func scanProduct(s scanner) (*keyward.Product, error) {
	var p keyward.Product
	var created int64
	if err := s.Scan(&p.ID, &p.Name, &created); err != nil {
		return nil, err
	}
	p.CreatedAt = fromNanos(created)
	return &p, nil
}

func (t *tx) CreateProduct(p *keyward.Product) error {
	_, err := t.exec(`INSERT INTO products (`+productCols+`) VALUES (?, ?, ?)`, p.ID, p.Name, toNanos(p.CreatedAt))
	switch constraint(err) {
	case 0:
	case sqlite3.SQLITE_CONSTRAINT_PRIMARYKEY:
		return keyward.Errorf(keyward.EConflict, "product %s already exists", p.ID)
	case sqlite3.SQLITE_CONSTRAINT_UNIQUE:
		return keyward.Errorf(keyward.EConflict, "product %q already exists", p.Name)
	}
	return wrap(err, "create product %s", p.ID)
}

// Product returns the product whose id or name is idOrName; an id match
// wins over another product's name.
func (t *tx) Product(idOrName string) (*keyward.Product, error) {
	p, err := rowOne(keyward.Errorf(keyward.ENotFound, "product %s not found", idOrName), scanProduct,
		t.queryRowHot(t.hot.product, idOrName))
	return p, wrap(err, "product %s", idOrName)
}

// Products returns every product ordered by creation time, then id.
func (t *tx) Products() ([]*keyward.Product, error) {
	ps, err := queryAll(t, scanProduct, `SELECT `+productCols+` FROM products ORDER BY created_at, id`)
	return ps, wrap(err, "products")
}

// Signing keys.

const keyCols = `kid, ring, purpose, product_id, algorithm, state, public_key, sealed,
	created_at, activated_at, retired_at, destroyed_at, compromised_at, reason`

func scanKey(s scanner) (*keyward.SigningKey, error) {
	var k keyward.SigningKey
	var product sql.Null[string]
	var created int64
	var activated, retired, destroyed, compromised sql.Null[int64]
	if err := s.Scan(&k.KID, &k.Ring, &k.Purpose, &product, &k.Algorithm, &k.State, &k.PublicKey, &k.Sealed,
		&created, &activated, &retired, &destroyed, &compromised, &k.Reason); err != nil {
		return nil, err
	}
	k.ProductID = product.V
	k.CreatedAt = fromNanos(created)
	k.ActivatedAt = fromNullNanos(activated)
	k.RetiredAt = fromNullNanos(retired)
	k.DestroyedAt = fromNullNanos(destroyed)
	k.CompromisedAt = fromNullNanos(compromised)
	return &k, nil
}

// keyErr translates a constraint violation on signing_keys.
func keyErr(err error, k *keyward.SigningKey) error {
	switch constraint(err) {
	case sqlite3.SQLITE_CONSTRAINT_PRIMARYKEY:
		return keyward.Errorf(keyward.EConflict, "key %s already exists", k.KID)
	case sqlite3.SQLITE_CONSTRAINT_UNIQUE: // signing_keys_one_active
		return keyward.Errorf(keyward.EConflict, "ring %s already has an active key", k.Ring)
	case sqlite3.SQLITE_CONSTRAINT_FOREIGNKEY:
		return keyward.Errorf(keyward.ENotFound, "product %s not found", k.ProductID)
	case sqlite3.SQLITE_CONSTRAINT_CHECK:
		return keyward.Errorf(keyward.EInvalid, "key %s: invalid state %q or purpose %q", k.KID, k.State, k.Purpose)
	}
	return err
}

func (t *tx) CreateKey(k *keyward.SigningKey) error {
	_, err := t.exec(`INSERT INTO signing_keys (`+keyCols+`) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
		k.KID, k.Ring, k.Purpose, nullString(k.ProductID), k.Algorithm, k.State, k.PublicKey, k.Sealed,
		toNanos(k.CreatedAt), toNullNanos(k.ActivatedAt), toNullNanos(k.RetiredAt), toNullNanos(k.DestroyedAt),
		toNullNanos(k.CompromisedAt), k.Reason)
	return wrap(keyErr(err, k), "create key %s", k.KID)
}

func (t *tx) Key(kid string) (*keyward.SigningKey, error) {
	k, err := queryOne(t, keyward.Errorf(keyward.ENotFound, "key %s not found", kid), scanKey,
		`SELECT `+keyCols+` FROM signing_keys WHERE kid = ?`, kid)
	return k, wrap(err, "key %s", kid)
}

// Keys returns the keys matching f ordered by creation time, then kid.
func (t *tx) Keys(f store.KeyFilter) ([]*keyward.SigningKey, error) {
	var w where
	w.add(f.Ring != "", "ring = ?", f.Ring)
	w.add(f.ProductID != "", "product_id = ?", f.ProductID)
	w.add(f.Purpose != "", "purpose = ?", f.Purpose)
	if len(f.States) > 0 {
		args := make([]any, len(f.States))
		for i, s := range f.States {
			args[i] = s
		}
		w.add(true, "state IN ("+strings.Repeat("?, ", len(args)-1)+"?)", args...)
	}
	ks, err := queryAll(t, scanKey, `SELECT `+keyCols+` FROM signing_keys`+w.String()+` ORDER BY created_at, kid`, w.args...)
	return ks, wrap(err, "keys")
}

// UpdateKey writes k's State, time fields, Sealed and Reason.
func (t *tx) UpdateKey(k *keyward.SigningKey) error {
	err := t.execOne(keyward.Errorf(keyward.ENotFound, "key %s not found", k.KID),
		`UPDATE signing_keys SET state = ?, activated_at = ?, retired_at = ?, destroyed_at = ?, compromised_at = ?,
			sealed = ?, reason = ? WHERE kid = ?`,
		k.State, toNullNanos(k.ActivatedAt), toNullNanos(k.RetiredAt), toNullNanos(k.DestroyedAt),
		toNullNanos(k.CompromisedAt), k.Sealed, k.Reason, k.KID)
	return wrap(keyErr(err, k), "update key %s", k.KID)
}

// Licenses.

const licenseCols = `id, product_id, holder, state, key_prefix, entitlements, max_machines,
	expires_at, created_at, updated_at, reason, last_validated_at, issued_by`

func scanLicense(s scanner) (*keyward.License, error) {
	var l keyward.License
	var ents string
	var expires, validated sql.Null[int64]
	var created, updated int64
	if err := s.Scan(&l.ID, &l.ProductID, &l.Holder, &l.State, &l.KeyPrefix, &ents, &l.MaxMachines,
		&expires, &created, &updated, &l.Reason, &validated, &l.IssuedBy); err != nil {
		return nil, err
	}
	if err := json.Unmarshal([]byte(ents), &l.Entitlements); err != nil {
		return nil, fmt.Errorf("license %s: entitlements: %w", l.ID, err)
	}
	l.ExpiresAt = fromNullNanos(expires)
	l.CreatedAt = fromNanos(created)
	l.UpdatedAt = fromNanos(updated)
	l.LastValidatedAt = fromNullNanos(validated)
	return &l, nil
}

// licenseErr translates a constraint violation on licenses.
func licenseErr(err error, l *keyward.License) error {
	switch constraint(err) {
	case sqlite3.SQLITE_CONSTRAINT_PRIMARYKEY:
		return keyward.Errorf(keyward.EConflict, "license %s already exists", l.ID)
	case sqlite3.SQLITE_CONSTRAINT_FOREIGNKEY:
		return keyward.Errorf(keyward.ENotFound, "product %s not found", l.ProductID)
	case sqlite3.SQLITE_CONSTRAINT_CHECK:
		return keyward.Errorf(keyward.EInvalid, "license %s: invalid state %q", l.ID, l.State)
	}
	return err
}

func (t *tx) CreateLicense(l *keyward.License) error {
	args, err := licenseArgs(nil, l)
	if err != nil {
		return err
	}
	_, err = t.execHot(t.hot.insertLicense, args...)
	return wrap(licenseErr(err, l), "create license %s", l.ID)
}

// licenseArgs appends the licenseCols values of l to args.
func licenseArgs(args []any, l *keyward.License) ([]any, error) {
	ents, err := jsonStrings(l.Entitlements)
	if err != nil {
		return nil, wrap(err, "create license %s", l.ID)
	}
	return append(args, l.ID, l.ProductID, l.Holder, string(l.State), l.KeyPrefix, ents, l.MaxMachines,
		toNullNanos(l.ExpiresAt), toNanos(l.CreatedAt), toNanos(l.UpdatedAt), l.Reason,
		toNullNanos(l.LastValidatedAt), l.IssuedBy), nil
}

func (t *tx) License(id string) (*keyward.License, error) {
	l, err := rowOne(keyward.Errorf(keyward.ENotFound, "license %s not found", id), scanLicense,
		t.queryRowHot(t.hot.license, id))
	return l, wrap(err, "license %s", id)
}

// Licenses returns the licenses matching f ordered by id.
func (t *tx) Licenses(f store.LicenseFilter) ([]*keyward.License, error) {
	var w where
	w.add(f.ProductID != "", "product_id = ?", f.ProductID)
	w.add(f.State != "", "state = ?", f.State)
	w.add(f.Holder != "", "holder = ?", f.Holder)
	w.add(f.After != "", "id > ?", f.After)
	ls, err := queryAll(t, scanLicense, `SELECT `+licenseCols+` FROM licenses`+w.String()+` ORDER BY id`+limit(f.Limit), w.args...)
	return ls, wrap(err, "licenses")
}

// UpdateLicense writes every mutable field of l.
func (t *tx) UpdateLicense(l *keyward.License) error {
	ents, err := jsonStrings(l.Entitlements)
	if err != nil {
		return wrap(err, "update license %s", l.ID)
	}
	err = t.execOne(keyward.Errorf(keyward.ENotFound, "license %s not found", l.ID),
		`UPDATE licenses SET state = ?, key_prefix = ?, entitlements = ?, max_machines = ?, expires_at = ?,
			reason = ?, last_validated_at = ?, updated_at = ? WHERE id = ?`,
		l.State, l.KeyPrefix, ents, l.MaxMachines, toNullNanos(l.ExpiresAt),
		l.Reason, toNullNanos(l.LastValidatedAt), toNanos(l.UpdatedAt), l.ID)
	return wrap(licenseErr(err, l), "update license %s", l.ID)
}

func (t *tx) TouchLicense(id string, at time.Time) error {
	res, err := t.execHot(t.hot.touchLicense, toNanos(at), id)
	err = hitOne(res, err, keyward.Errorf(keyward.ENotFound, "license %s not found", id))
	return wrap(err, "touch license %s", id)
}

// License keys. Hashes are secret-derived: they never appear in messages.

const licenseKeyCols = `hash, license_id, prefix, created_at, superseded_at, grace_until`

func scanLicenseKey(s scanner) (*keyward.LicenseKey, error) {
	var k keyward.LicenseKey
	var created int64
	var superseded, grace sql.Null[int64]
	if err := s.Scan(&k.Hash, &k.LicenseID, &k.Prefix, &created, &superseded, &grace); err != nil {
		return nil, err
	}
	k.CreatedAt = fromNanos(created)
	k.SupersededAt = fromNullNanos(superseded)
	k.GraceUntil = fromNullNanos(grace)
	return &k, nil
}

func (t *tx) CreateLicenseKey(k *keyward.LicenseKey) error {
	_, err := t.execHot(t.hot.insertLicenseKey,
		k.Hash, k.LicenseID, k.Prefix, toNanos(k.CreatedAt), toNullNanos(k.SupersededAt), toNullNanos(k.GraceUntil))
	switch constraint(err) {
	case sqlite3.SQLITE_CONSTRAINT_PRIMARYKEY:
		return keyward.Errorf(keyward.EConflict, "license key %s already exists", k.Prefix)
	case sqlite3.SQLITE_CONSTRAINT_FOREIGNKEY:
		return keyward.Errorf(keyward.ENotFound, "license %s not found", k.LicenseID)
	}
	return wrap(err, "create license key for %s", k.LicenseID)
}

func (t *tx) LicenseKeyByHash(hash []byte) (*keyward.LicenseKey, error) {
	k, err := rowOne(keyward.Errorf(keyward.ENotFound, "license key not found"), scanLicenseKey,
		t.queryRowHot(t.hot.licenseKeyByHash, hash))
	return k, wrap(err, "license key by hash")
}

// SupersedeLicenseKeys marks the license's keys that are not yet superseded
// as superseded at `at`, valid until graceUntil. A license without such keys
// is not an error.
func (t *tx) SupersedeLicenseKeys(licenseID string, at, graceUntil time.Time) error {
	_, err := t.exec(`UPDATE license_keys SET superseded_at = ?, grace_until = ?
		WHERE license_id = ? AND superseded_at IS NULL`, toNanos(at), toNanos(graceUntil), licenseID)
	return wrap(err, "supersede license keys of %s", licenseID)
}

// Machines.

const machineCols = `id, license_id, fingerprint, created_at, last_seen_at`

func scanMachine(s scanner) (*keyward.Machine, error) {
	var m keyward.Machine
	var created, seen int64
	if err := s.Scan(&m.ID, &m.LicenseID, &m.Fingerprint, &created, &seen); err != nil {
		return nil, err
	}
	m.CreatedAt = fromNanos(created)
	m.LastSeenAt = fromNanos(seen)
	return &m, nil
}

// Machines returns the license's machines ordered by creation time, then id.
func (t *tx) Machines(licenseID string) ([]*keyward.Machine, error) {
	ms, err := queryAll(t, scanMachine,
		`SELECT `+machineCols+` FROM machines WHERE license_id = ? ORDER BY created_at, id`, licenseID)
	return ms, wrap(err, "machines of %s", licenseID)
}

func (t *tx) MachineByFingerprint(licenseID, fingerprint string) (*keyward.Machine, error) {
	m, err := rowOne(keyward.Errorf(keyward.ENotFound, "machine %q of license %s not found", fingerprint, licenseID),
		scanMachine, t.queryRowHot(t.hot.machineByFingerprint, licenseID, fingerprint))
	return m, wrap(err, "machine %q of %s", fingerprint, licenseID)
}

func (t *tx) CreateMachine(m *keyward.Machine) error {
	_, err := t.exec(`INSERT INTO machines (`+machineCols+`) VALUES (?, ?, ?, ?, ?)`,
		m.ID, m.LicenseID, m.Fingerprint, toNanos(m.CreatedAt), toNanos(m.LastSeenAt))
	switch constraint(err) {
	case sqlite3.SQLITE_CONSTRAINT_PRIMARYKEY:
		return keyward.Errorf(keyward.EConflict, "machine %s already exists", m.ID)
	case sqlite3.SQLITE_CONSTRAINT_UNIQUE:
		return keyward.Errorf(keyward.EConflict, "machine %q is already activated on license %s", m.Fingerprint, m.LicenseID)
	case sqlite3.SQLITE_CONSTRAINT_FOREIGNKEY:
		return keyward.Errorf(keyward.ENotFound, "license %s not found", m.LicenseID)
	}
	return wrap(err, "create machine %s", m.ID)
}

func (t *tx) TouchMachine(id string, at time.Time) error {
	res, err := t.execHot(t.hot.touchMachine, toNanos(at), id)
	err = hitOne(res, err, keyward.Errorf(keyward.ENotFound, "machine %s not found", id))
	return wrap(err, "touch machine %s", id)
}

// DeleteMachine deletes machine id of the license, or returns ENotFound if
// the license has no such machine.
func (t *tx) DeleteMachine(licenseID, id string) error {
	err := t.execOne(keyward.Errorf(keyward.ENotFound, "machine %s of license %s not found", id, licenseID),
		`DELETE FROM machines WHERE license_id = ? AND id = ?`, licenseID, id)
	return wrap(err, "delete machine %s", id)
}

// Audit log and outbox.

const auditCols = `seq, time, actor, actor_name, action, target_type, target_id, "before", "after", reason, request_id, details,
	roles, approval_ids, policy_version, rule`

func scanAudit(s scanner) (*keyward.AuditEntry, error) {
	var e keyward.AuditEntry
	var at int64
	var details sql.Null[string]
	var roles, approvals string
	if err := s.Scan(&e.Seq, &at, &e.Actor, &e.ActorName, &e.Action, &e.TargetType, &e.TargetID,
		&e.Before, &e.After, &e.Reason, &e.RequestID, &details,
		&roles, &approvals, &e.PolicyVersion, &e.Rule); err != nil {
		return nil, err
	}
	e.Time = fromNanos(at)
	if details.Valid {
		e.Details = json.RawMessage(details.V)
	}
	if err := json.Unmarshal([]byte(roles), &e.Roles); err != nil {
		return nil, fmt.Errorf("audit %d: roles: %w", e.Seq, err)
	}
	if err := json.Unmarshal([]byte(approvals), &e.ApprovalIDs); err != nil {
		return nil, fmt.Errorf("audit %d: approval ids: %w", e.Seq, err)
	}
	return &e, nil
}

// AppendAudit numbers e max(seq)+1: the write lock held by the transaction
// makes that gap-free, and a rolled-back entry frees its number.
func (t *tx) AppendAudit(e *keyward.AuditEntry) error {
	args, err := auditArgs(nil, e)
	if err != nil {
		return err
	}
	// seq is the table's rowid, so the new row's rowid is its seq.
	res, err := t.execHot(t.hot.insertAudit, args...)
	if err == nil {
		e.Seq, err = res.LastInsertId()
	}
	if constraint(err) == sqlite3.SQLITE_CONSTRAINT_CHECK {
		return keyward.Errorf(keyward.EInvalid, "audit entry %s: details are not valid JSON", e.Action)
	}
	return wrap(err, "append audit %s", e.Action)
}

// auditArgs appends the auditCols values of e after seq to args.
func auditArgs(args []any, e *keyward.AuditEntry) ([]any, error) {
	roles, err := jsonStrings(e.Roles)
	if err != nil {
		return nil, wrap(err, "append audit %s", e.Action)
	}
	approvals, err := jsonStrings(e.ApprovalIDs)
	if err != nil {
		return nil, wrap(err, "append audit %s", e.Action)
	}
	return append(args, toNanos(e.Time), e.Actor, e.ActorName, e.Action, e.TargetType, e.TargetID,
		e.Before, e.After, e.Reason, e.RequestID, nullJSON(e.Details),
		roles, approvals, e.PolicyVersion, e.Rule), nil
}

// AuditEntries returns the entries matching f ordered by seq.
func (t *tx) AuditEntries(f store.AuditFilter) ([]*keyward.AuditEntry, error) {
	var w where
	w.add(f.TargetID != "", "target_id = ?", f.TargetID)
	w.add(f.Action != "", "action = ?", f.Action)
	w.add(!f.Since.IsZero(), "time >= ?", toNanos(f.Since))
	w.add(f.AfterSeq > 0, "seq > ?", f.AfterSeq)
	es, err := queryAll(t, scanAudit, `SELECT `+auditCols+` FROM audit`+w.String()+` ORDER BY seq`+limit(f.Limit), w.args...)
	return es, wrap(err, "audit entries")
}

const eventCols = `seq, id, type, time, subject, data`

func scanEvent(s scanner) (*keyward.Event, error) {
	var e keyward.Event
	var at int64
	var data sql.Null[string]
	if err := s.Scan(&e.Seq, &e.ID, &e.Type, &at, &e.Subject, &data); err != nil {
		return nil, err
	}
	e.Time = fromNanos(at)
	if data.Valid {
		e.Data = json.RawMessage(data.V)
	}
	return &e, nil
}

// AppendEvent stores e in the outbox and sets e.Seq.
func (t *tx) AppendEvent(e *keyward.Event) error {
	// seq is the table's rowid (see AppendAudit).
	res, err := t.execHot(t.hot.insertEvent, e.ID, e.Type, toNanos(e.Time), e.Subject, nullJSON(e.Data))
	if err == nil {
		e.Seq, err = res.LastInsertId()
	}
	switch constraint(err) {
	case sqlite3.SQLITE_CONSTRAINT_UNIQUE:
		return keyward.Errorf(keyward.EConflict, "event %s already exists", e.ID)
	case sqlite3.SQLITE_CONSTRAINT_CHECK:
		return keyward.Errorf(keyward.EInvalid, "event %s: data is not valid JSON", e.ID)
	}
	return wrap(err, "append event %s", e.ID)
}

// Events returns up to limit outbox events with seq > afterSeq, ordered by
// seq; limit 0 means no limit.
func (t *tx) Events(afterSeq int64, n int) ([]*keyward.Event, error) {
	es, err := queryAll(t, scanEvent, `SELECT `+eventCols+` FROM outbox WHERE seq > ? ORDER BY seq`+limit(n), afterSeq)
	return es, wrap(err, "events")
}

// Tokens. Hashes are secret-derived: they never appear in messages.

const tokenCols = `id, name, hash, roles, product_id, created_at, expires_at, revoked_at`

func scanToken(s scanner) (*keyward.Token, error) {
	var tok keyward.Token
	var roles string
	var product sql.Null[string]
	var created int64
	var expires, revoked sql.Null[int64]
	if err := s.Scan(&tok.ID, &tok.Name, &tok.Hash, &roles, &product, &created, &expires, &revoked); err != nil {
		return nil, err
	}
	if err := json.Unmarshal([]byte(roles), &tok.Roles); err != nil {
		return nil, fmt.Errorf("token %s: roles: %w", tok.ID, err)
	}
	tok.ProductID = product.V
	tok.CreatedAt = fromNanos(created)
	tok.ExpiresAt = fromNullNanos(expires)
	tok.RevokedAt = fromNullNanos(revoked)
	return &tok, nil
}

func (t *tx) CreateToken(tok *keyward.Token) error {
	roles, err := jsonStrings(tok.Roles)
	if err != nil {
		return wrap(err, "create token %s", tok.ID)
	}
	_, err = t.exec(`INSERT INTO tokens (`+tokenCols+`) VALUES (?, ?, ?, ?, ?, ?, ?, ?)`,
		tok.ID, tok.Name, tok.Hash, roles, nullString(tok.ProductID),
		toNanos(tok.CreatedAt), toNullNanos(tok.ExpiresAt), toNullNanos(tok.RevokedAt))
	switch constraint(err) {
	case sqlite3.SQLITE_CONSTRAINT_PRIMARYKEY:
		return keyward.Errorf(keyward.EConflict, "token %s already exists", tok.ID)
	case sqlite3.SQLITE_CONSTRAINT_UNIQUE:
		return keyward.Errorf(keyward.EConflict, "token %s: hash already in use", tok.ID)
	}
	return wrap(err, "create token %s", tok.ID)
}

func (t *tx) TokenByHash(hash []byte) (*keyward.Token, error) {
	tok, err := queryOne(t, keyward.Errorf(keyward.ENotFound, "token not found"), scanToken,
		`SELECT `+tokenCols+` FROM tokens WHERE hash = ?`, hash)
	return tok, wrap(err, "token by hash")
}

// Tokens returns every token ordered by creation time, then id.
func (t *tx) Tokens() ([]*keyward.Token, error) {
	ts, err := queryAll(t, scanToken, `SELECT `+tokenCols+` FROM tokens ORDER BY created_at, id`)
	return ts, wrap(err, "tokens")
}

// RevokeToken sets the token's RevokedAt to at.
func (t *tx) RevokeToken(id string, at time.Time) error {
	err := t.execOne(keyward.Errorf(keyward.ENotFound, "token %s not found", id),
		`UPDATE tokens SET revoked_at = ? WHERE id = ?`, toNanos(at), id)
	return wrap(err, "revoke token %s", id)
}

// Secrets.

func (t *tx) Secret(name string) ([]byte, error) {
	var sealed []byte
	err := t.tx.QueryRowContext(t.ctx, `SELECT sealed FROM secrets WHERE name = ?`, name).Scan(&sealed)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, keyward.Errorf(keyward.ENotFound, "secret %s not found", name)
	}
	return sealed, wrap(err, "secret %s", name)
}

// PutSecret stores sealed under name, replacing any previous value.
func (t *tx) PutSecret(name string, sealed []byte) error {
	_, err := t.exec(`INSERT INTO secrets (name, sealed) VALUES (?, ?)
		ON CONFLICT (name) DO UPDATE SET sealed = excluded.sealed`, name, sealed)
	return wrap(err, "put secret %s", name)
}

// Helpers.

// where builds a WHERE clause from optional conditions.
type where struct {
	conds []string
	args  []any
}

func (w *where) add(ok bool, cond string, args ...any) {
	if ok {
		w.conds = append(w.conds, cond)
		w.args = append(w.args, args...)
	}
}

func (w *where) String() string {
	if len(w.conds) == 0 {
		return ""
	}
	return " WHERE " + strings.Join(w.conds, " AND ")
}

// limit returns a LIMIT clause for n > 0, else "".
func limit(n int) string {
	if n <= 0 {
		return ""
	}
	return fmt.Sprintf(" LIMIT %d", n)
}

// constraint returns the extended result code of the SQLite constraint
// violation in err's chain (e.g. sqlite3.SQLITE_CONSTRAINT_UNIQUE), or 0.
func constraint(err error) int {
	var e *sqlite.Error
	if errors.As(err, &e) && e.Code()&0xff == sqlite3.SQLITE_CONSTRAINT {
		return e.Code()
	}
	return 0
}

// wrap returns nil for nil, err itself for a *keyward.Error, and otherwise
// err wrapped with "sqlite: " and the formatted context.
func wrap(err error, format string, args ...any) error {
	var ke *keyward.Error
	if err == nil || errors.As(err, &ke) {
		return err
	}
	return fmt.Errorf("sqlite: %s: %w", fmt.Sprintf(format, args...), err)
}

// toNanos encodes t as Unix nanoseconds; the zero time is 0.
func toNanos(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixNano()
}

// fromNanos decodes toNanos: a UTC time, or the zero time for 0.
func fromNanos(n int64) time.Time {
	if n == 0 {
		return time.Time{}
	}
	return time.Unix(0, n).UTC()
}

func toNullNanos(t *time.Time) any {
	if t == nil {
		return nil
	}
	return toNanos(*t)
}

func fromNullNanos(n sql.Null[int64]) *time.Time {
	if !n.Valid {
		return nil
	}
	t := fromNanos(n.V)
	return &t
}

// nullString maps "" to NULL, for optional foreign keys.
func nullString(s string) any {
	if s == "" {
		return nil
	}
	return s
}

// nullJSON maps an empty document to NULL and stores the rest as TEXT.
func nullJSON(m json.RawMessage) any {
	if len(m) == 0 {
		return nil
	}
	return string(m)
}

// jsonStrings encodes a string list as a JSON array; nil is "[]".
func jsonStrings(s []string) (string, error) {
	if s == nil {
		return "[]", nil
	}
	b, err := json.Marshal(s)
	return string(b), err
}
