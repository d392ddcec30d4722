package postgres

import (
	"errors"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/keyward/keyward"
	"github.com/keyward/keyward/store"
)

// Lifecycle steps.

const stepCols = `key, kind, target, done_at`

func scanStep(s scanner) (*store.Step, error) {
	var st store.Step
	var done int64
	if err := s.Scan(&st.Key, &st.Kind, &st.Target, &done); err != nil {
		return nil, err
	}
	st.DoneAt = fromNanos(done)
	return &st, nil
}

func (t *tx) RecordStep(s *store.Step) error {
	_, err := t.exec(`INSERT INTO lifecycle_steps (`+stepCols+`) VALUES ($1, $2, $3, $4)`, s.Key, s.Kind, s.Target, toNanos(s.DoneAt))
	switch code, _ := violation(err); code {
	case uniqueViolation:
		return keyward.Errorf(keyward.EConflict, "step %s already ran", s.Key)
	case checkViolation:
		return keyward.Errorf(keyward.EInvalid, "step key %q: want 1 to 200 characters", s.Key)
	}
	return wrap(err, "record step %s", s.Key)
}

func (t *tx) Step(key string) (*store.Step, error) {
	s, err := queryOne(t, keyward.Errorf(keyward.ENotFound, "step %s not found", key), scanStep,
		`SELECT `+stepCols+` FROM lifecycle_steps WHERE key = $1`, key)
	return s, wrap(err, "step %s", key)
}

func (t *tx) Steps(kind, target string, n int) ([]*store.Step, error) {
	var w where
	w.add(kind != "", "kind = ?", kind)
	w.add(target != "", "target = ?", target)
	ss, err := queryAll(t, scanStep, `SELECT `+stepCols+` FROM lifecycle_steps`+w.String()+` ORDER BY done_at, key`+limit(n), w.args...)
	return ss, wrap(err, "steps")
}

// Current certificates: license_certificates holds each certificate as
// checked out, certificate_signatures its current kid and, once re-signed,
// the header and signature that replace the token's (migration 0010).

const certCols = `license_id, product_id, kid, jti, issued_at, expires_at, token`

// certSelect reads certificates as scanCertificate scans them.
const certSelect = `SELECT c.license_id, c.product_id, s.kid, c.jti, c.issued_at, c.expires_at, c.token, s.header_b64, s.signature_b64
	FROM certificate_signatures s JOIN license_certificates c ON c.license_id = s.license_id`

func scanCertificate(s scanner) (*store.Certificate, error) {
	var c store.Certificate
	var issued, expires int64
	var header, sig *string
	if err := s.Scan(&c.LicenseID, &c.ProductID, &c.KID, &c.JTI, &issued, &expires, &c.Token, &header, &sig); err != nil {
		return nil, err
	}
	c.IssuedAt, c.ExpiresAt = fromNanos(issued), fromNanos(expires)
	c.Token = resignedToken(c.Token, header, sig)
	return &c, nil
}

// resignedToken is token as re-signed, if it was (header and sig both
// non-NULL).
func resignedToken(token string, header, sig *string) string {
	if header == nil || sig == nil {
		return token
	}
	return store.ResignedToken(token, *header, *sig)
}

// PutCertificates upserts every certificate, and its signature row (the
// token is as signed), in one statement over arrays. A license named twice
// keeps the last certificate given for it, as upserting them one by one
// would.
func (t *tx) PutCertificates(cs []*store.Certificate) error {
	if len(cs) == 0 {
		return nil
	}
	var lic, prod, kid, jti, tok []string
	var issued, expires []int64
	for _, c := range lastPerLicense(cs) {
		lic, prod, kid, jti, tok = append(lic, c.LicenseID), append(prod, c.ProductID), append(kid, c.KID), append(jti, c.JTI), append(tok, c.Token)
		issued, expires = append(issued, toNanos(c.IssuedAt)), append(expires, toNanos(c.ExpiresAt))
	}
	_, err := t.exec(`WITH certs AS (
			INSERT INTO license_certificates (`+certCols+`)
			SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::bigint[], $6::bigint[], $7::text[])
			ON CONFLICT (license_id) DO UPDATE SET product_id = excluded.product_id, kid = excluded.kid,
				jti = excluded.jti, issued_at = excluded.issued_at, expires_at = excluded.expires_at, token = excluded.token
			RETURNING license_id, kid, expires_at)
		INSERT INTO certificate_signatures (license_id, kid, expires_at) SELECT * FROM certs
		ON CONFLICT (license_id) DO UPDATE SET kid = excluded.kid, expires_at = excluded.expires_at,
			header_b64 = NULL, signature_b64 = NULL`,
		lic, prod, kid, jti, issued, expires, tok)
	if code, _ := violation(err); code == fkViolation {
		return keyward.Errorf(keyward.ENotFound, "license of a certificate not found")
	}
	return wrap(err, "put certificates")
}

// lastPerLicense returns cs without the certificates of a license named
// again later: one statement over arrays cannot update a row twice, and
// one by one the last would win.
func lastPerLicense(cs []*store.Certificate) []*store.Certificate {
	last := make(map[string]int, len(cs))
	for i, c := range cs {
		last[c.LicenseID] = i
	}
	out := make([]*store.Certificate, 0, len(last))
	for i, c := range cs {
		if last[c.LicenseID] == i {
			out = append(out, c)
		}
	}
	return out
}

// ResignCertificates updates the signature rows of cs in one statement
// over arrays; the last of a license named twice wins.
func (t *tx) ResignCertificates(cs []*store.Certificate) error {
	if len(cs) == 0 {
		return nil
	}
	var lic, kid, header, sig []string
	for _, c := range lastPerLicense(cs) {
		h, g, ok := store.JWSEnds(c.Token)
		if !ok {
			return keyward.Errorf(keyward.EInvalid, "re-signed certificate %s: not a JWS", c.JTI)
		}
		lic, kid, header, sig = append(lic, c.LicenseID), append(kid, c.KID), append(header, h), append(sig, g)
	}
	tag, err := t.exec(`UPDATE certificate_signatures s SET kid = u.kid, header_b64 = u.header, signature_b64 = u.sig
		FROM unnest($1::text[], $2::text[], $3::text[], $4::text[]) AS u (license_id, kid, header, sig)
		WHERE s.license_id = u.license_id`, lic, kid, header, sig)
	if err != nil {
		return wrap(err, "re-sign certificates")
	}
	if n := tag.RowsAffected(); n != int64(len(lic)) {
		return keyward.Errorf(keyward.ENotFound, "re-sign certificates: %d of %d licenses have no certificate", int64(len(lic))-n, len(lic))
	}
	return nil
}

func (t *tx) Certificate(licenseID string) (*store.Certificate, error) {
	c, err := queryOne(t, keyward.Errorf(keyward.ENotFound, "license %s has no certificate", licenseID), scanCertificate,
		certSelect+` WHERE s.license_id = $1`, licenseID)
	return c, wrap(err, "certificate of %s", licenseID)
}

func certWhere(f store.CertificateFilter, cursor bool) where {
	var w where
	w.add(f.KID != "", "s.kid = ?", f.KID)
	w.add(!f.LiveAt.IsZero(), "s.expires_at > ?", toNanos(f.LiveAt))
	w.add(f.ActiveOnly, "EXISTS (SELECT 1 FROM licenses l WHERE l.id = s.license_id AND l.state = 'active')")
	w.add(cursor && f.AfterLicense != "", "s.license_id > ?", f.AfterLicense)
	return w
}

func (t *tx) Certificates(f store.CertificateFilter) ([]*store.Certificate, error) {
	w := certWhere(f, true)
	cs, err := queryAll(t, scanCertificate, certSelect+w.String()+` ORDER BY s.license_id`+limit(f.Limit), w.args...)
	return cs, wrap(err, "certificates")
}

func (t *tx) CountCertificates(f store.CertificateFilter) (int, error) {
	w := certWhere(f, false)
	n, err := t.queryInt64(`SELECT count(*) FROM certificate_signatures s`+w.String(), w.args...)
	return int(n), wrap(err, "count certificates")
}

func (t *tx) ResignCandidates(kid string, now time.Time, after string, n int) ([]*store.ResignCandidate, error) {
	if n <= 0 {
		return nil, keyward.Errorf(keyward.EInvalid, "re-sign candidates: limit %d, want > 0", n)
	}
	at := toNanos(now)
	cs, err := queryAll(t, func(s scanner) (*store.ResignCandidate, error) {
		var c store.ResignCandidate
		var issued, expires int64
		var header, sig *string
		if err := s.Scan(&c.LicenseID, &c.ProductID, &c.KID, &c.JTI, &issued, &expires, &c.Token, &header, &sig, &c.Eligible); err != nil {
			return nil, err
		}
		c.IssuedAt, c.ExpiresAt = fromNanos(issued), fromNanos(expires)
		c.Token = resignedToken(c.Token, header, sig)
		return &c, nil
	}, `SELECT c.license_id, c.product_id, s.kid, c.jti, c.issued_at, c.expires_at, c.token, s.header_b64, s.signature_b64,
			l.state = 'active' AND (l.expires_at IS NULL OR l.expires_at > $1)
		FROM certificate_signatures s JOIN license_certificates c ON c.license_id = s.license_id JOIN licenses l ON l.id = s.license_id
		WHERE s.kid = $2 AND s.expires_at > $1 AND s.license_id > $3 ORDER BY s.license_id LIMIT $4`, at, kid, after, n)
	return cs, wrap(err, "re-sign candidates of %s", kid)
}

// Re-sign jobs.

const resignCols = `kid, product_id, reason, state, runs, total, done, skipped, cursor, created_at, updated_at, finished_at`

func scanResignJob(s scanner) (*store.ResignJob, error) {
	var j store.ResignJob
	var created, updated int64
	var finished *int64
	if err := s.Scan(&j.KID, &j.ProductID, &j.Reason, &j.State, &j.Runs, &j.Total, &j.Done, &j.Skipped, &j.Cursor,
		&created, &updated, &finished); err != nil {
		return nil, err
	}
	j.CreatedAt, j.UpdatedAt, j.FinishedAt = fromNanos(created), fromNanos(updated), fromNullNanos(finished)
	return &j, nil
}

func (t *tx) PutResignJob(j *store.ResignJob) error {
	_, err := t.exec(`INSERT INTO resign_jobs (`+resignCols+`) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
		ON CONFLICT (kid) DO UPDATE SET product_id = excluded.product_id, reason = excluded.reason, state = excluded.state,
		runs = excluded.runs, total = excluded.total, done = excluded.done, skipped = excluded.skipped, cursor = excluded.cursor,
		created_at = excluded.created_at, updated_at = excluded.updated_at, finished_at = excluded.finished_at`,
		j.KID, j.ProductID, j.Reason, j.State, j.Runs, j.Total, j.Done, j.Skipped, j.Cursor,
		toNanos(j.CreatedAt), toNanos(j.UpdatedAt), toNullNanos(j.FinishedAt))
	if code, _ := violation(err); code == checkViolation {
		return keyward.Errorf(keyward.EInvalid, "re-sign job %s: invalid state %q", j.KID, j.State)
	}
	if err == nil {
		t.ch.resignJob()
	}
	return wrap(err, "put re-sign job %s", j.KID)
}

func (t *tx) ResignJob(kid string) (*store.ResignJob, error) {
	j, err := queryOne(t, keyward.Errorf(keyward.ENotFound, "key %s has no re-sign job", kid), scanResignJob,
		`SELECT `+resignCols+` FROM resign_jobs WHERE kid = $1`, kid)
	return j, wrap(err, "re-sign job %s", kid)
}

func (t *tx) ResignJobs(state string) ([]*store.ResignJob, error) {
	var w where
	w.add(state != "", "state = ?", state)
	js, err := queryAll(t, scanResignJob, `SELECT `+resignCols+` FROM resign_jobs`+w.String()+` ORDER BY created_at, kid`, w.args...)
	return js, wrap(err, "re-sign jobs")
}

// Cursors.

func (t *tx) Cursor(name string) (string, error) {
	var v string
	err := t.tx.QueryRow(t.ctx, `SELECT value FROM lifecycle_cursors WHERE name = $1`, name).Scan(&v)
	if errors.Is(err, pgx.ErrNoRows) {
		return "", nil
	}
	return v, wrap(err, "cursor %s", name)
}

func (t *tx) SetCursor(name, value string) error {
	_, err := t.exec(`INSERT INTO lifecycle_cursors (name, value) VALUES ($1, $2)
		ON CONFLICT (name) DO UPDATE SET value = excluded.value`, name, value)
	return wrap(err, "set cursor %s", name)
}

// LicensesByID reads the licenses with the given ids, ordered by id.
func (t *tx) LicensesByID(ids []string) ([]*keyward.License, error) {
	if len(ids) == 0 {
		return nil, nil
	}
	ls, err := queryAll(t, scanLicense, `SELECT `+licenseCols+` FROM licenses WHERE id = ANY($1) ORDER BY id`, ids)
	return ls, wrap(err, "licenses by id")
}

// LicensesExpiringBefore returns active licenses with an expiry before at.
func (t *tx) LicensesExpiringBefore(at time.Time, after string, n int) ([]*keyward.License, error) {
	ls, err := queryAll(t, scanLicense, `SELECT `+licenseCols+` FROM licenses
		WHERE state = 'active' AND expires_at IS NOT NULL AND expires_at < $1 AND id > $2 ORDER BY id`+limit(n), toNanos(at), after)
	return ls, wrap(err, "licenses expiring before %s", at.Format(time.RFC3339))
}
