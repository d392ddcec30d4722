package postgres

import (
	"strconv"
	"strings"

	"github.com/keyward/keyward"
	"github.com/keyward/keyward/store"
)

// Batch inserts (batch issuance): multi-row INSERTs of up to batchRows
// rows each, one round trip per statement instead of per row.

// batchRows bounds the rows of one multi-row INSERT (16 columns × 500 is
// well under PostgreSQL's 65 535 parameters).
const batchRows = 500

// multiInsert returns an INSERT of rows rows of n parameters each, then
// suffix (a RETURNING clause or "").
func multiInsert(table, cols string, n, rows int, suffix string) string {
	var b strings.Builder
	b.WriteString(`INSERT INTO ` + table + ` (` + cols + `) VALUES `)
	p := 1
	for r := range rows {
		if r > 0 {
			b.WriteString(", ")
		}
		b.WriteByte('(')
		for c := range n {
			if c > 0 {
				b.WriteString(", ")
			}
			b.WriteByte('$')
			b.WriteString(strconv.Itoa(p))
			p++
		}
		b.WriteByte(')')
	}
	b.WriteString(suffix)
	return b.String()
}

// chunkSizes are the row counts of the multi-row statements: a few fixed
// sizes, so that pgx's statement cache holds four texts per table instead
// of one per remainder (1 to 499).
var chunkSizes = [...]int{batchRows, 64, 8, 1}

// chunkRanges yields [from, to) ranges covering n rows, each of one of
// chunkSizes rows, largest first.
func chunkRanges(n int, yield func(from, to int) error) error {
	for from := 0; from < n; {
		k := 0
		for chunkSizes[k] > n-from {
			k++
		}
		to := from + chunkSizes[k]
		if err := yield(from, to); err != nil {
			return err
		}
		from = to
	}
	return nil
}

// CreateLicenses inserts ls with multi-row INSERTs.
func (t *tx) CreateLicenses(ls []*keyward.License) error {
	return chunkRanges(len(ls), func(from, to int) error {
		args := make([]any, 0, 13*(to-from))
		for _, l := range ls[from:to] {
			var err error
			if args, err = licenseArgs(args, l); err != nil {
				return err
			}
		}
		_, err := t.exec(multiInsert("licenses", licenseCols, 13, to-from, ""), args...)
		if err != nil {
			if to-from > 1 {
				first, last := ls[from].ID, ls[to-1].ID
				switch code, _ := violation(err); {
				case code == uniqueViolation:
					return keyward.Errorf(keyward.EConflict, "one of licenses %s to %s already exists", first, last)
				case store.LicensesAlike(ls[from:to]):
				case code == fkViolation:
					return keyward.Errorf(keyward.ENotFound, "the product of one of licenses %s to %s not found", first, last)
				case code == checkViolation:
					return keyward.Errorf(keyward.EInvalid, "one of licenses %s to %s has an invalid state", first, last)
				}
			}
			return wrap(licenseErr(err, ls[from]), "create licenses %s to %s", ls[from].ID, ls[to-1].ID)
		}
		for _, l := range ls[from:to] {
			t.ch.createdLicense(l.ID)
		}
		return nil
	})
}

// CreateLicenseKeys inserts ks with multi-row INSERTs.
func (t *tx) CreateLicenseKeys(ks []*keyward.LicenseKey) error {
	return chunkRanges(len(ks), func(from, to int) error {
		args := make([]any, 0, 6*(to-from))
		for _, k := range ks[from:to] {
			args = append(args, k.Hash, k.LicenseID, k.Prefix, toNanos(k.CreatedAt), toNullNanos(k.SupersededAt), toNullNanos(k.GraceUntil))
		}
		_, err := t.exec(multiInsert("license_keys", licenseKeyCols, 6, to-from, ""), args...)
		switch code, _ := violation(err); code {
		case uniqueViolation:
			if to-from == 1 {
				return keyward.Errorf(keyward.EConflict, "license key %s already exists", ks[from].Prefix)
			}
			return keyward.Errorf(keyward.EConflict, "one of %d license keys already exists", to-from)
		case fkViolation:
			if to-from == 1 {
				return keyward.Errorf(keyward.ENotFound, "license %s not found", ks[from].LicenseID)
			}
			return keyward.Errorf(keyward.ENotFound, "the license of one of %d license keys was not found", to-from)
		}
		if err != nil {
			return wrap(err, "create %d license keys", to-from)
		}
		for _, k := range ks[from:to] {
			t.ch.license(k.LicenseID)
		}
		return nil
	})
}

// AppendAudits numbers es max(seq)+1, max(seq)+2, … (see AppendAudit) and
// inserts them with multi-row INSERTs.
func (t *tx) AppendAudits(es []*keyward.AuditEntry) error {
	if len(es) == 0 {
		return nil
	}
	last, err := t.AuditSize()
	if err != nil {
		return err
	}
	err = chunkRanges(len(es), func(from, to int) error {
		args := make([]any, 0, 16*(to-from))
		for i, e := range es[from:to] {
			var err error
			if args, err = auditArgs(append(args, last+1+int64(from+i)), e); err != nil {
				return err
			}
		}
		_, err := t.exec(multiInsert("audit", auditCols, 16, to-from, ""), args...)
		if code, _ := violation(err); code == checkViolation {
			return keyward.Errorf(keyward.EInvalid, "audit entries from %s: details are not valid JSON", es[from].Action)
		}
		return wrap(err, "append %d audit entries", to-from)
	})
	if err != nil {
		return err
	}
	for i, e := range es {
		e.Seq = last + 1 + int64(i)
	}
	return nil
}

// AppendEvents inserts es with multi-row INSERTs, reading each event's seq
// back by its id.
func (t *tx) AppendEvents(es []*keyward.Event) error {
	return chunkRanges(len(es), func(from, to int) error {
		args := make([]any, 0, 5*(to-from))
		for _, e := range es[from:to] {
			args = append(args, e.ID, e.Type, toNanos(e.Time), e.Subject, nullJSON(e.Data))
		}
		rows, err := t.tx.Query(t.ctx, multiInsert("outbox", "id, type, time, subject, data", 5, to-from, " RETURNING id, seq"), args...)
		if err != nil {
			return wrap(err, "append %d events", to-from)
		}
		seqs := make(map[string]int64, to-from)
		for rows.Next() {
			var id string
			var seq int64
			if err := rows.Scan(&id, &seq); err != nil {
				rows.Close()
				return wrap(err, "append %d events", to-from)
			}
			seqs[id] = seq
		}
		rows.Close()
		err = rows.Err()
		switch code, _ := violation(err); code {
		case uniqueViolation:
			if to-from == 1 {
				return keyward.Errorf(keyward.EConflict, "event %s already exists", es[from].ID)
			}
			return keyward.Errorf(keyward.EConflict, "one of events %s to %s already exists", es[from].ID, es[to-1].ID)
		case checkViolation:
			return keyward.Errorf(keyward.EInvalid, "events from %s: data is not valid JSON", es[from].ID)
		}
		if err != nil {
			return wrap(err, "append %d events", to-from)
		}
		for _, e := range es[from:to] {
			e.Seq = seqs[e.ID]
		}
		t.ch.event()
		return nil
	})
}
