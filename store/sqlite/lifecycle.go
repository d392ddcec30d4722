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

// Current certificates.

const certCols = `license_id, product_id, kid, jti, issued_at, expires_at, token`

func scanCertificate(s scanner) (*store.Certificate, error) {
	var c store.Certificate
	var issued, expires int64
	if err := s.Scan(&c.LicenseID, &c.ProductID, &c.KID, &c.JTI, &issued, &expires, &c.Token); err != nil {
		return nil, err
	}
	c.IssuedAt, c.ExpiresAt = fromNanos(issued), fromNanos(expires)
	return &c, nil
}

// certChunk bounds the rows of one multi-row upsert (7 parameters each,
// far below SQLite's parameter limit).
const certChunk = 128

// PutCertificates upserts in chunks: one statement per chunk instead of
// one per certificate, which is what makes bulk re-signing cheap. The
// statement of a full chunk is prepared once per call.
func (t *tx) PutCertificates(cs []*store.Certificate) error {
	var full *sql.Stmt
	defer func() {
		if full != nil {
			full.Close()
		}
	}()
	for len(cs) > 0 {
		n := min(len(cs), certChunk)
		chunk := cs[:n]
		cs = cs[n:]
		args := make([]any, 0, 7*n)
		for _, c := range chunk {
			args = append(args, c.LicenseID, c.ProductID, c.KID, c.JTI, toNanos(c.IssuedAt), toNanos(c.ExpiresAt), c.Token)
		}
		var err error
		switch {
		case n == certChunk && full == nil:
			if full, err = t.tx.PrepareContext(t.ctx, putCertsQuery(n)); err != nil {
				return wrap(err, "put certificates")
			}
			fallthrough
		case n == certChunk:
			_, err = full.ExecContext(t.ctx, args...)
		default:
			_, err = t.exec(putCertsQuery(n), args...)
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
	var q strings.Builder
	q.WriteString(`INSERT INTO license_certificates (` + certCols + `) VALUES (?, ?, ?, ?, ?, ?, ?)`)
	q.WriteString(strings.Repeat(", (?, ?, ?, ?, ?, ?, ?)", n-1))
	q.WriteString(` ON CONFLICT (license_id) DO UPDATE SET product_id = excluded.product_id, kid = excluded.kid,
		jti = excluded.jti, issued_at = excluded.issued_at, expires_at = excluded.expires_at, token = excluded.token`)
	return q.String()
}

func (t *tx) Certificate(licenseID string) (*store.Certificate, error) {
	c, err := queryOne(t, keyward.Errorf(keyward.ENotFound, "license %s has no certificate", licenseID), scanCertificate,
		`SELECT `+certCols+` FROM license_certificates WHERE license_id = ?`, licenseID)
	return c, wrap(err, "certificate of %s", licenseID)
}

func certWhere(f store.CertificateFilter, cursor bool) where {
	var w where
	w.add(f.KID != "", "c.kid = ?", f.KID)
	w.add(!f.LiveAt.IsZero(), "c.expires_at > ?", toNanos(f.LiveAt))
	w.add(f.ActiveOnly, "EXISTS (SELECT 1 FROM licenses l WHERE l.id = c.license_id AND l.state = 'active')")
	w.add(cursor && f.AfterLicense != "", "c.license_id > ?", f.AfterLicense)
	return w
}

func (t *tx) Certificates(f store.CertificateFilter) ([]*store.Certificate, error) {
	w := certWhere(f, true)
	cs, err := queryAll(t, scanCertificate, `SELECT `+prefixCols("c.", certCols)+` FROM license_certificates c`+w.String()+
		` ORDER BY c.license_id`+limit(f.Limit), w.args...)
	return cs, wrap(err, "certificates")
}

func (t *tx) CountCertificates(f store.CertificateFilter) (int, error) {
	w := certWhere(f, false)
	var n int
	err := t.tx.QueryRowContext(t.ctx, `SELECT count(*) FROM license_certificates c`+w.String(), w.args...).Scan(&n)
	return n, wrap(err, "count certificates")
}

func (t *tx) ResignCandidates(kid string, now time.Time, after string, n int) ([]*store.ResignCandidate, error) {
	if n <= 0 {
		return nil, keyward.Errorf(keyward.EInvalid, "re-sign candidates: limit %d, want > 0", n)
	}
	at := toNanos(now)
	cs, err := queryAll(t, func(s scanner) (*store.ResignCandidate, error) {
		var c store.ResignCandidate
		var issued, expires int64
		if err := s.Scan(&c.LicenseID, &c.ProductID, &c.KID, &c.JTI, &issued, &expires, &c.Token, &c.Eligible); err != nil {
			return nil, err
		}
		c.IssuedAt, c.ExpiresAt = fromNanos(issued), fromNanos(expires)
		return &c, nil
	}, `SELECT `+prefixCols("c.", certCols)+`, l.state = 'active' AND (l.expires_at IS NULL OR l.expires_at > ?)
		FROM license_certificates c JOIN licenses l ON l.id = c.license_id
		WHERE c.kid = ? AND c.expires_at > ? AND c.license_id > ? ORDER BY c.license_id LIMIT ?`, at, kid, at, after, n)
	return cs, wrap(err, "re-sign candidates of %s", kid)
}

// prefixCols qualifies each column of a column list with prefix.
func prefixCols(prefix, cols string) string {
	parts := strings.Split(cols, ",")
	for i, p := range parts {
		parts[i] = prefix + strings.TrimSpace(p)
	}
	return strings.Join(parts, ", ")
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
// with 1M licenses and none expiring that is a full scan (about 1 s of CPU),
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
