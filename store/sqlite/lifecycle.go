package sqlite

import (
	"database/sql"
	"slices"
	"strings"
	"time"

	sqlite3 "modernc.org/sqlite/lib"

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
	_, err := t.exec(`INSERT INTO lifecycle_steps (`+stepCols+`) VALUES (?, ?, ?, ?)`, s.Key, s.Kind, s.Target, toNanos(s.DoneAt))
	switch constraint(err) {
	case 0:
	case sqlite3.SQLITE_CONSTRAINT_PRIMARYKEY:
		return keyward.Errorf(keyward.EConflict, "step %s already ran", s.Key)
	case sqlite3.SQLITE_CONSTRAINT_CHECK:
		return keyward.Errorf(keyward.EInvalid, "step key %q: want 1 to 200 characters", s.Key)
	}
	return wrap(err, "record step %s", s.Key)
}

func (t *tx) Step(key string) (*store.Step, error) {
	s, err := queryOne(t, keyward.Errorf(keyward.ENotFound, "step %s not found", key), scanStep,
		`SELECT `+stepCols+` FROM lifecycle_steps WHERE key = ?`, key)
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
	var header, sig sql.Null[string]
	if err := s.Scan(&c.LicenseID, &c.ProductID, &c.KID, &c.JTI, &issued, &expires, &c.Token, &header, &sig); err != nil {
		return nil, err
	}
	c.IssuedAt, c.ExpiresAt = fromNanos(issued), fromNanos(expires)
	c.Token = resignedToken(c.Token, header, sig)
	return &c, nil
}

// resignedToken is token as re-signed, if it was (header and sig both
// non-NULL).
func resignedToken(token string, header, sig sql.Null[string]) string {
	if !header.Valid || !sig.Valid {
		return token
	}
	return store.ResignedToken(token, header.V, sig.V)
}

// certChunk bounds the rows of one multi-row upsert (7 parameters each,
// far below SQLite's parameter limit).
const certChunk = 128

// PutCertificates upserts in chunks, one statement per chunk and table
// instead of one per certificate: the certificates as signed, and their
// signature rows (the current kid; not re-signed).
func (t *tx) PutCertificates(cs []*store.Certificate) error {
	for len(cs) > 0 {
		n := min(len(cs), certChunk)
		chunk := cs[:n]
		cs = cs[n:]
		args := make([]any, 0, 7*n)
		for _, c := range chunk {
			args = append(args, c.LicenseID, c.ProductID, c.KID, c.JTI, toNanos(c.IssuedAt), toNanos(c.ExpiresAt), c.Token)
		}
		_, err := t.exec(putCertsQuery(n), args...)
		if err == nil {
			args = args[:0]
			for _, c := range chunk {
				args = append(args, c.LicenseID, c.KID, toNanos(c.ExpiresAt))
			}
			_, err = t.exec(putSignaturesQuery(n), args...)
		}
		if constraint(err) == sqlite3.SQLITE_CONSTRAINT_FOREIGNKEY {
			return keyward.Errorf(keyward.ENotFound, "license of certificate %s not found", chunk[0].JTI)
		}
		if err != nil {
			return wrap(err, "put certificates")
		}
	}
	return nil
}

// putCertsQuery is the upsert of n certificates.
func putCertsQuery(n int) string {
	return `INSERT INTO license_certificates (` + certCols + `) VALUES (?, ?, ?, ?, ?, ?, ?)` +
		strings.Repeat(", (?, ?, ?, ?, ?, ?, ?)", n-1) +
		` ON CONFLICT (license_id) DO UPDATE SET product_id = excluded.product_id, kid = excluded.kid,
		jti = excluded.jti, issued_at = excluded.issued_at, expires_at = excluded.expires_at, token = excluded.token`
}

// putSignaturesQuery is the upsert of the signature rows of n certificates
// just put: their token is as signed.
func putSignaturesQuery(n int) string {
	return `INSERT INTO certificate_signatures (license_id, kid, expires_at) VALUES (?, ?, ?)` + strings.Repeat(", (?, ?, ?)", n-1) +
		` ON CONFLICT (license_id) DO UPDATE SET kid = excluded.kid, expires_at = excluded.expires_at, header_b64 = NULL, signature_b64 = NULL`
}

// resignChunks are the sizes of the prepared upserts ResignCertificates
// splits its certificates into, largest first (stmts.go): 1 000, a full
// batch, = 7×128 + 3×32 + 1×8 (… + 7×1 at worst for a remainder).
var resignChunks = [...]int{128, 32, 8, 1}

// resignQuery is the update of the signature rows of n re-signed
// certificates: an upsert, so that a license without a certificate fails
// its foreign key instead of being skipped.
func resignQuery(n int) string {
	return `INSERT INTO certificate_signatures (license_id, kid, expires_at, header_b64, signature_b64) VALUES (?, ?, ?, ?, ?)` +
		strings.Repeat(", (?, ?, ?, ?, ?)", n-1) +
		` ON CONFLICT (license_id) DO UPDATE SET kid = excluded.kid, header_b64 = excluded.header_b64, signature_b64 = excluded.signature_b64`
}

// resignQueries returns the queries of the re-sign statements, for hotStmts.
func (s *hotStmts) resignQueries() []struct {
	dst **sql.Stmt
	q   string
} {
	qs := make([]struct {
		dst **sql.Stmt
		q   string
	}, len(resignChunks))
	for k, n := range resignChunks {
		qs[k].dst, qs[k].q = &s.resign[k], resignQuery(n)
	}
	return append(qs, struct {
		dst **sql.Stmt
		q   string
	}{&s.resignCandidates, resignCandidatesQuery})
}

// ResignCertificates writes the narrow signature rows only, in chunks of
// statements prepared once per connection pool instead of parsed per
// chunk (docs/benchmarks.md, "Narrow signature rows"). Every token is
// checked before the first chunk is written.
func (t *tx) ResignCertificates(cs []*store.Certificate) error {
	for _, c := range cs {
		if _, _, ok := store.JWSEnds(c.Token); !ok {
			return keyward.Errorf(keyward.EInvalid, "re-signed certificate %s: not a JWS", c.JTI)
		}
	}
	args := make([]any, 0, 5*resignChunks[0])
	for len(cs) > 0 {
		k := 0
		for resignChunks[k] > len(cs) {
			k++
		}
		n := resignChunks[k]
		args = args[:0]
		for _, c := range cs[:n] {
			header, sig, _ := store.JWSEnds(c.Token)
			args = append(args, c.LicenseID, c.KID, toNanos(c.ExpiresAt), header, sig)
		}
		_, err := t.execHot(t.hot.resign[k], args...)
		if constraint(err) == sqlite3.SQLITE_CONSTRAINT_FOREIGNKEY {
			if n == 1 {
				return keyward.Errorf(keyward.ENotFound, "license %s has no certificate to re-sign", cs[0].LicenseID)
			}
			return keyward.Errorf(keyward.ENotFound, "one of licenses %s to %s has no certificate to re-sign", cs[0].LicenseID, cs[n-1].LicenseID)
		}
		if err != nil {
			return wrap(err, "re-sign certificates")
		}
		cs = cs[n:]
	}
	return nil
}

func (t *tx) Certificate(licenseID string) (*store.Certificate, error) {
	c, err := queryOne(t, keyward.Errorf(keyward.ENotFound, "license %s has no certificate", licenseID), scanCertificate,
		certSelect+` WHERE s.license_id = ?`, licenseID)
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
	var n int
	err := t.tx.QueryRowContext(t.ctx, `SELECT count(*) FROM certificate_signatures s`+w.String(), w.args...).Scan(&n)
	return n, wrap(err, "count certificates")
}

// resignCandidatesQuery reads re-sign candidates; a re-sign batch runs it
// once per chunk it reads, so it is prepared once per pool (stmts.go):
// parsing and planning the three-table join per chunk cost ≈ 4 µs per
// certificate (docs/benchmarks.md, "Pipelined batches").
const resignCandidatesQuery = `SELECT c.license_id, c.product_id, s.kid, c.jti, c.issued_at, c.expires_at, c.token, s.header_b64, s.signature_b64,
		l.state = 'active' AND (l.expires_at IS NULL OR l.expires_at > ?1)
	FROM certificate_signatures s JOIN license_certificates c ON c.license_id = s.license_id JOIN licenses l ON l.id = s.license_id
	WHERE s.kid = ?2 AND s.expires_at > ?1 AND s.license_id > ?3 ORDER BY s.license_id LIMIT ?4`

func (t *tx) ResignCandidates(kid string, now time.Time, after string, n int) ([]*store.ResignCandidate, error) {
	if n <= 0 {
		return nil, keyward.Errorf(keyward.EInvalid, "re-sign candidates: limit %d, want > 0", n)
	}
	rows, err := t.stmt(t.hot.resignCandidates).QueryContext(quick(t.ctx), toNanos(now), kid, after, n)
	if err != nil {
		return nil, wrap(err, "re-sign candidates of %s", kid)
	}
	defer rows.Close()
	cs := make([]*store.ResignCandidate, 0, n)
	for rows.Next() {
		var c store.ResignCandidate
		var issued, expires int64
		var header, sig sql.Null[string]
		if err := rows.Scan(&c.LicenseID, &c.ProductID, &c.KID, &c.JTI, &issued, &expires, &c.Token, &header, &sig, &c.Eligible); err != nil {
			return nil, wrap(err, "re-sign candidates of %s", kid)
		}
		c.IssuedAt, c.ExpiresAt = fromNanos(issued), fromNanos(expires)
		c.Token = resignedToken(c.Token, header, sig)
		cs = append(cs, &c)
	}
	return cs, wrap(rows.Err(), "re-sign candidates of %s", kid)
}

// Re-sign jobs.

const resignCols = `kid, product_id, reason, state, runs, total, done, skipped, cursor, created_at, updated_at, finished_at`

func scanResignJob(s scanner) (*store.ResignJob, error) {
	var j store.ResignJob
	var created, updated int64
	var finished sql.Null[int64]
	if err := s.Scan(&j.KID, &j.ProductID, &j.Reason, &j.State, &j.Runs, &j.Total, &j.Done, &j.Skipped, &j.Cursor,
		&created, &updated, &finished); err != nil {
		return nil, err
	}
	j.CreatedAt, j.UpdatedAt, j.FinishedAt = fromNanos(created), fromNanos(updated), fromNullNanos(finished)
	return &j, nil
}

func (t *tx) PutResignJob(j *store.ResignJob) error {
	_, err := t.exec(`INSERT INTO resign_jobs (`+resignCols+`) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
		ON CONFLICT (kid) DO UPDATE SET product_id = excluded.product_id, reason = excluded.reason, state = excluded.state,
		runs = excluded.runs, total = excluded.total, done = excluded.done, skipped = excluded.skipped, cursor = excluded.cursor,
		created_at = excluded.created_at, updated_at = excluded.updated_at, finished_at = excluded.finished_at`,
		j.KID, j.ProductID, j.Reason, j.State, j.Runs, j.Total, j.Done, j.Skipped, j.Cursor,
		toNanos(j.CreatedAt), toNanos(j.UpdatedAt), toNullNanos(j.FinishedAt))
	if constraint(err) == sqlite3.SQLITE_CONSTRAINT_CHECK {
		return keyward.Errorf(keyward.EInvalid, "re-sign job %s: invalid state %q", j.KID, j.State)
	}
	return wrap(err, "put re-sign job %s", j.KID)
}

func (t *tx) ResignJob(kid string) (*store.ResignJob, error) {
	j, err := queryOne(t, keyward.Errorf(keyward.ENotFound, "key %s has no re-sign job", kid), scanResignJob,
		`SELECT `+resignCols+` FROM resign_jobs WHERE kid = ?`, kid)
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
	err := t.tx.QueryRowContext(t.ctx, `SELECT value FROM lifecycle_cursors WHERE name = ?`, name).Scan(&v)
	if err == sql.ErrNoRows {
		return "", nil
	}
	return v, wrap(err, "cursor %s", name)
}

func (t *tx) SetCursor(name, value string) error {
	_, err := t.exec(`INSERT INTO lifecycle_cursors (name, value) VALUES (?, ?) ON CONFLICT (name) DO UPDATE SET value = excluded.value`, name, value)
	return wrap(err, "set cursor %s", name)
}

// LicensesByID reads licenses by id, in chunks of at most 500 ids.
func (t *tx) LicensesByID(ids []string) ([]*keyward.License, error) {
	var out []*keyward.License
	for len(ids) > 0 {
		n := min(len(ids), 500)
		args := make([]any, n)
		for i, id := range ids[:n] {
			args[i] = id
		}
		ids = ids[n:]
		ls, err := queryAll(t, scanLicense, `SELECT `+licenseCols+` FROM licenses WHERE id IN (?`+strings.Repeat(", ?", n-1)+`) ORDER BY id`, args...)
		if err != nil {
			return nil, wrap(err, "licenses by id")
		}
		out = append(out, ls...)
	}
	slices.SortFunc(out, func(a, b *keyward.License) int { return strings.Compare(a.ID, b.ID) })
	return out, nil
}

// expiryIndexMax is how many licenses expiring before a time
// LicensesExpiringBefore still reads through the expiry index and sorts;
// from there on it walks the licenses in id order.
const expiryIndexMax = 10_000

// LicensesExpiringBefore returns active licenses with an expiry before at.
//
// SQLite keeps no statistics here (no ANALYZE), so for "expiring before at,
// in id order, first n" it walks every license in id order and tests each:
// with 1M licenses and none expiring that is a full scan (0.5–1 s of CPU),
// and the expiry and notice sweeps ran it twice per scheduler tick, under
// validation load (docs/benchmarks.md, issue 9). So the candidates are
// first counted in the partial expiry index (index only, stopping at
// expiryIndexMax): few are read through that index and sorted; many are
// dense enough for the id walk to find n of them soon.
func (t *tx) LicensesExpiringBefore(at time.Time, after string, n int) ([]*keyward.License, error) {
	var window int
	err := t.tx.QueryRowContext(quick(t.ctx), `SELECT count(*) FROM (SELECT 1 FROM licenses INDEXED BY licenses_expiry
		WHERE state = 'active' AND expires_at IS NOT NULL AND expires_at < ? LIMIT ?)`, toNanos(at), expiryIndexMax).Scan(&window)
	if err != nil {
		return nil, wrap(err, "licenses expiring before %s", at.Format(time.RFC3339))
	}
	if window == 0 {
		return nil, nil
	}
	index := ""
	if window < expiryIndexMax {
		index = ` INDEXED BY licenses_expiry`
	}
	ls, err := queryAll(t, scanLicense, `SELECT `+licenseCols+` FROM licenses`+index+`
		WHERE state = 'active' AND expires_at IS NOT NULL AND expires_at < ? AND id > ? ORDER BY id`+limit(n), toNanos(at), after)
	return ls, wrap(err, "licenses expiring before %s", at.Format(time.RFC3339))
}
