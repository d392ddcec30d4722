package sqlite

import (
	sqlite3 "modernc.org/sqlite/lib"

	"github.com/keyward/keyward"
	"github.com/keyward/keyward/store"
)

// Abuse signals and auto-suspension records (migration 0008).

const signalCols = `id, license_id, product_id, kind, detail, actor, actor_name, created_at, outcome`

func scanSignal(s scanner) (*keyward.Signal, error) {
	var sg keyward.Signal
	var created int64
	if err := s.Scan(&sg.ID, &sg.LicenseID, &sg.ProductID, &sg.Kind, &sg.Detail, &sg.Actor, &sg.ActorName, &created, &sg.Outcome); err != nil {
		return nil, err
	}
	sg.CreatedAt = fromNanos(created)
	return &sg, nil
}

func (t *tx) CreateSignal(s *keyward.Signal) error {
	if s.Outcome == "" {
		return keyward.Errorf(keyward.EInvalid, "signal %s: no outcome", s.ID)
	}
	_, err := t.exec(`INSERT INTO signals (`+signalCols+`) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`,
		s.ID, s.LicenseID, s.ProductID, s.Kind, s.Detail, s.Actor, s.ActorName, toNanos(s.CreatedAt), s.Outcome)
	switch constraint(err) {
	case sqlite3.SQLITE_CONSTRAINT_PRIMARYKEY:
		return keyward.Errorf(keyward.EConflict, "signal %s already exists", s.ID)
	case sqlite3.SQLITE_CONSTRAINT_FOREIGNKEY:
		return keyward.Errorf(keyward.ENotFound, "license %s not found", s.LicenseID)
	case sqlite3.SQLITE_CONSTRAINT_CHECK:
		return keyward.Errorf(keyward.EInvalid, "signal %s: invalid kind %q or outcome %q", s.ID, s.Kind, s.Outcome)
	}
	return wrap(err, "create signal %s", s.ID)
}

func (t *tx) Signals(f store.SignalFilter) ([]*keyward.Signal, error) {
	var w where
	w.add(f.LicenseID != "", "license_id = ?", f.LicenseID)
	w.add(f.ProductID != "", "product_id = ?", f.ProductID)
	ss, err := queryAll(t, scanSignal, `SELECT `+signalCols+` FROM signals`+w.String()+` ORDER BY created_at, id`+limit(f.Limit), w.args...)
	return ss, wrap(err, "signals")
}

const autoSuspensionCols = `id, license_id, product_id, rule, policy_version, outcome, at`

func scanAutoSuspension(s scanner) (*keyward.AutoSuspension, error) {
	var a keyward.AutoSuspension
	var at int64
	if err := s.Scan(&a.ID, &a.LicenseID, &a.ProductID, &a.Rule, &a.PolicyVersion, &a.Outcome, &at); err != nil {
		return nil, err
	}
	a.At = fromNanos(at)
	return &a, nil
}

func (t *tx) CreateAutoSuspension(s *keyward.AutoSuspension) error {
	_, err := t.exec(`INSERT INTO auto_suspensions (`+autoSuspensionCols+`) VALUES (?, ?, ?, ?, ?, ?, ?)`,
		s.ID, s.LicenseID, s.ProductID, s.Rule, s.PolicyVersion, s.Outcome, toNanos(s.At))
	switch constraint(err) {
	case sqlite3.SQLITE_CONSTRAINT_PRIMARYKEY:
		return keyward.Errorf(keyward.EConflict, "auto-suspension %s already exists", s.ID)
	case sqlite3.SQLITE_CONSTRAINT_FOREIGNKEY:
		return keyward.Errorf(keyward.ENotFound, "license %s or product %s not found", s.LicenseID, s.ProductID)
	case sqlite3.SQLITE_CONSTRAINT_CHECK:
		return keyward.Errorf(keyward.EInvalid, "auto-suspension %s: invalid outcome %q", s.ID, s.Outcome)
	}
	return wrap(err, "create auto-suspension %s", s.ID)
}

func (t *tx) AutoSuspensions(f store.AutoSuspensionFilter) ([]*keyward.AutoSuspension, error) {
	var w where
	w.add(f.LicenseID != "", "license_id = ?", f.LicenseID)
	w.add(f.ProductID != "", "product_id = ?", f.ProductID)
	w.add(f.Outcome != "", "outcome = ?", f.Outcome)
	w.add(!f.Since.IsZero(), "at >= ?", toNanos(f.Since))
	as, err := queryAll(t, scanAutoSuspension, `SELECT `+autoSuspensionCols+` FROM auto_suspensions`+w.String()+` ORDER BY at, id`+limit(f.Limit), w.args...)
	return as, wrap(err, "auto-suspensions")
}
