package storetest

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/keyward/keyward"
	"github.com/keyward/keyward/store"
)

// runLifecycle tests the store's part in lifecycle automation: step
// records, current certificates, re-sign jobs, cursors and the expiry
// query.
func runLifecycle(t *testing.T, open func(t *testing.T) store.Store) {
	tests := []struct {
		name string
		fn   func(t *testing.T, s store.Store)
	}{
		{"Steps/RoundTrip", testStepsRoundTrip},
		{"Steps/ErrConflict", testStepsConflict},
		{"Steps/RolledBackStepIsNotRecorded", testStepsRollback},
		{"Certificates/RoundTrip", testCertificatesRoundTrip},
		{"Certificates/Filter", testCertificatesFilter},
		{"Certificates/ResignCandidates", testResignCandidates},
		{"Certificates/Resign", testResignCertificates},
		{"Certificates/ErrNotFound", testCertificatesNotFound},
		{"ResignJobs/RoundTrip", testResignJobsRoundTrip},
		{"Cursors", testCursors},
		{"Licenses/ExpiringBefore", testLicensesExpiringBefore},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) { tt.fn(t, open(t)) })
	}
}

func testStepsRoundTrip(t *testing.T, s store.Store) {
	a := &store.Step{Key: "activate:k2", Kind: "activate", Target: "k2", DoneAt: at(2 * time.Hour)}
	b := &store.Step{Key: "rotate:license:p1:k1", Kind: "rotate", Target: "license:p1", DoneAt: at(time.Hour)}
	c := &store.Step{Key: "expire:l1", Kind: "expire", Target: "l1", DoneAt: at(time.Hour)}
	update(t, s, func(tx store.Tx) error {
		for _, st := range []*store.Step{a, b, c} {
			if err := tx.RecordStep(st); err != nil {
				return err
			}
		}
		return nil
	})
	got := get(t, s, func(tx store.Tx) (*store.Step, error) { return tx.Step("activate:k2") })
	wantEqual(t, "Step(activate:k2)", got, a)
	wantList(t, "Steps(all)", get(t, s, func(tx store.Tx) ([]*store.Step, error) { return tx.Steps("", "", 0) }), []*store.Step{c, b, a})
	wantList(t, "Steps(rotate)", get(t, s, func(tx store.Tx) ([]*store.Step, error) { return tx.Steps("rotate", "", 0) }), []*store.Step{b})
	wantList(t, "Steps(target l1)", get(t, s, func(tx store.Tx) ([]*store.Step, error) { return tx.Steps("", "l1", 0) }), []*store.Step{c})
	wantList(t, "Steps(limit 1)", get(t, s, func(tx store.Tx) ([]*store.Step, error) { return tx.Steps("", "", 1) }), []*store.Step{c})
	err := viewErr(t, s, func(tx store.Tx) error { _, err := tx.Step("activate:missing"); return err })
	wantNotFound(t, "Step(missing)", err, "activate:missing")
}

func testStepsConflict(t *testing.T, s store.Store) {
	st := &store.Step{Key: "destroy:k1", Kind: "destroy", Target: "k1", DoneAt: at(0)}
	update(t, s, func(tx store.Tx) error { return tx.RecordStep(st) })
	err := updateErr(t, s, func(tx store.Tx) error {
		return tx.RecordStep(&store.Step{Key: "destroy:k1", Kind: "destroy", Target: "k1", DoneAt: at(time.Hour)})
	})
	wantCode(t, "RecordStep(twice)", err, keyward.EConflict)
	got := get(t, s, func(tx store.Tx) (*store.Step, error) { return tx.Step("destroy:k1") })
	wantEqual(t, "Step after conflict", got, st)
	err = updateErr(t, s, func(tx store.Tx) error { return tx.RecordStep(&store.Step{Kind: "x", DoneAt: at(0)}) })
	wantCode(t, "RecordStep(empty key)", err, keyward.EInvalid)
}

func testStepsRollback(t *testing.T, s store.Store) {
	err := updateErr(t, s, func(tx store.Tx) error {
		if err := tx.RecordStep(&store.Step{Key: "expire:l9", Kind: "expire", Target: "l9", DoneAt: at(0)}); err != nil {
			return err
		}
		return fmt.Errorf("crash before commit")
	})
	if err == nil {
		t.Fatal("Update returned nil, want the closure's error")
	}
	err = viewErr(t, s, func(tx store.Tx) error { _, err := tx.Step("expire:l9"); return err })
	wantNotFound(t, "Step of a rolled-back transaction", err)
}

func newCert(licenseID, kid string, expires time.Duration) *store.Certificate {
	return &store.Certificate{
		LicenseID: licenseID, ProductID: "p1", KID: kid, JTI: "crt_" + licenseID + "_" + kid,
		IssuedAt: at(0), ExpiresAt: at(expires), Token: "eyJ." + licenseID + "." + kid,
	}
}

// withLicenses creates product p1 and licenses l1..ln (l3 suspended).
func withLicenses(t *testing.T, s store.Store, n int) {
	t.Helper()
	update(t, s, func(tx store.Tx) error {
		if err := tx.CreateProduct(newProduct("p1")); err != nil {
			return err
		}
		for i := 1; i <= n; i++ {
			l := newLicense(fmt.Sprintf("l%d", i), "p1")
			if i == 3 {
				l.State = keyward.LicenseSuspended
			}
			if err := tx.CreateLicense(l); err != nil {
				return err
			}
		}
		return nil
	})
}

func testCertificatesRoundTrip(t *testing.T, s store.Store) {
	withLicenses(t, s, 2)
	c1, c2 := newCert("l1", "k1", 30*day), newCert("l2", "k1", 30*day)
	update(t, s, func(tx store.Tx) error { return tx.PutCertificates([]*store.Certificate{c1, c2}) })
	wantEqual(t, "Certificate(l1)", get(t, s, func(tx store.Tx) (*store.Certificate, error) { return tx.Certificate("l1") }), c1)
	// A second put replaces the license's current certificate.
	c1b := newCert("l1", "k2", 40*day)
	c1b.IssuedAt = at(day)
	update(t, s, func(tx store.Tx) error { return tx.PutCertificates([]*store.Certificate{c1b}) })
	wantEqual(t, "Certificate(l1) replaced", get(t, s, func(tx store.Tx) (*store.Certificate, error) { return tx.Certificate("l1") }), c1b)
	wantList(t, "Certificates({})", get(t, s, func(tx store.Tx) ([]*store.Certificate, error) {
		return tx.Certificates(store.CertificateFilter{})
	}), []*store.Certificate{c1b, c2})
	// More than one statement's worth in one call.
	putManyCertificates(t, s, 300, "k3")
	if n := get(t, s, func(tx store.Tx) (int, error) { return tx.CountCertificates(store.CertificateFilter{KID: "k3"}) }); n != 300 {
		t.Errorf("CountCertificates(k3) = %d, want 300", n)
	}
}

func testCertificatesFilter(t *testing.T, s store.Store) {
	withLicenses(t, s, 5)
	cs := []*store.Certificate{
		newCert("l1", "k1", 30*day),
		newCert("l2", "k1", time.Hour), // expires early
		newCert("l3", "k1", 30*day),    // suspended license
		newCert("l4", "k2", 30*day),
		newCert("l5", "k1", 30*day),
	}
	update(t, s, func(tx store.Tx) error { return tx.PutCertificates(cs) })
	for _, tc := range []struct {
		name string
		f    store.CertificateFilter
		want []*store.Certificate
	}{
		{"KID", store.CertificateFilter{KID: "k1"}, []*store.Certificate{cs[0], cs[1], cs[2], cs[4]}},
		{"LiveAt", store.CertificateFilter{KID: "k1", LiveAt: at(time.Hour)}, []*store.Certificate{cs[0], cs[2], cs[4]}},
		{"ActiveOnly", store.CertificateFilter{KID: "k1", ActiveOnly: true}, []*store.Certificate{cs[0], cs[1], cs[4]}},
		{"All", store.CertificateFilter{KID: "k1", LiveAt: at(time.Hour), ActiveOnly: true}, []*store.Certificate{cs[0], cs[4]}},
		{"After", store.CertificateFilter{KID: "k1", AfterLicense: "l2"}, []*store.Certificate{cs[2], cs[4]}},
		{"Limit", store.CertificateFilter{KID: "k1", Limit: 2}, []*store.Certificate{cs[0], cs[1]}},
	} {
		got := get(t, s, func(tx store.Tx) ([]*store.Certificate, error) { return tx.Certificates(tc.f) })
		wantList(t, "Certificates("+tc.name+")", got, tc.want)
		n := get(t, s, func(tx store.Tx) (int, error) { return tx.CountCertificates(tc.f) })
		want := len(tc.want)
		if tc.name == "After" || tc.name == "Limit" {
			want = 4 // cursor and limit do not count
		}
		if n != want {
			t.Errorf("CountCertificates(%s) = %d, want %d", tc.name, n, want)
		}
	}
}

func testResignCandidates(t *testing.T, s store.Store) {
	withLicenses(t, s, 6)
	update(t, s, func(tx store.Tx) error { // l5 expires after a minute
		l, err := tx.License("l5")
		if err != nil {
			return err
		}
		exp := at(time.Minute)
		l.ExpiresAt = &exp
		return tx.UpdateLicense(l)
	})
	cs := []*store.Certificate{
		newCert("l1", "k1", 30*day),
		newCert("l2", "k1", time.Hour), // expires early
		newCert("l3", "k1", 30*day),    // suspended license
		newCert("l4", "k2", 30*day),    // another key
		newCert("l5", "k1", 30*day),    // license expires after a minute
		newCert("l6", "k1", 30*day),
	}
	update(t, s, func(tx store.Tx) error { return tx.PutCertificates(cs) })
	type cand struct {
		id       string
		eligible bool
	}
	for _, tc := range []struct {
		name  string
		now   time.Time
		after string
		limit int
		want  []cand
	}{
		{"all", at(0), "", 10, []cand{{"l1", true}, {"l2", true}, {"l3", false}, {"l5", true}, {"l6", true}}},
		{"later", at(time.Hour), "", 10, []cand{{"l1", true}, {"l3", false}, {"l5", false}, {"l6", true}}},
		{"after", at(0), "l2", 10, []cand{{"l3", false}, {"l5", true}, {"l6", true}}},
		{"limit", at(0), "l1", 2, []cand{{"l2", true}, {"l3", false}}},
	} {
		got := get(t, s, func(tx store.Tx) ([]*store.ResignCandidate, error) {
			return tx.ResignCandidates("k1", tc.now, tc.after, tc.limit)
		})
		var gotc []cand
		for _, c := range got {
			gotc = append(gotc, cand{c.LicenseID, c.Eligible})
			for _, w := range cs {
				if w.LicenseID == c.LicenseID {
					wantEqual(t, "ResignCandidates("+tc.name+") certificate", &c.Certificate, w)
				}
			}
		}
		if fmt.Sprint(gotc) != fmt.Sprint(tc.want) {
			t.Errorf("ResignCandidates(%s) = %v, want %v", tc.name, gotc, tc.want)
		}
	}
	err := viewErr(t, s, func(tx store.Tx) error { _, err := tx.ResignCandidates("k1", at(0), "", 0); return err })
	wantCode(t, "ResignCandidates(limit 0)", err, keyward.EInvalid)
}

func testCertificatesNotFound(t *testing.T, s store.Store) {
	withLicenses(t, s, 1)
	err := viewErr(t, s, func(tx store.Tx) error { _, err := tx.Certificate("l1"); return err })
	wantNotFound(t, "Certificate(l1) before any checkout", err, "l1")
	err = updateErr(t, s, func(tx store.Tx) error {
		return tx.PutCertificates([]*store.Certificate{newCert("l1", "k1", day), newCert("l-missing", "k1", day)})
	})
	wantCode(t, "PutCertificates(missing license)", err, keyward.ENotFound)
	err = viewErr(t, s, func(tx store.Tx) error { _, err := tx.Certificate("l1"); return err })
	wantNotFound(t, "Certificate(l1) after a failed put", err)
}

func testResignJobsRoundTrip(t *testing.T, s store.Store) {
	j1 := &store.ResignJob{KID: "k1", ProductID: "p1", Reason: "retired", State: store.ResignRunning, Runs: 1, Total: 10,
		Done: 4, Skipped: 1, Cursor: "l5", CreatedAt: at(0), UpdatedAt: at(time.Minute)}
	j2 := &store.ResignJob{KID: "k0", ProductID: "p1", Reason: "compromised", State: store.ResignDone, Runs: 2, Total: 3,
		Done: 3, Cursor: "l9", CreatedAt: at(time.Second), UpdatedAt: at(time.Hour), FinishedAt: ptr(time.Hour)}
	update(t, s, func(tx store.Tx) error { return errorsJoin(tx.PutResignJob(j1), tx.PutResignJob(j2)) })
	wantEqual(t, "ResignJob(k1)", get(t, s, func(tx store.Tx) (*store.ResignJob, error) { return tx.ResignJob("k1") }), j1)
	wantList(t, "ResignJobs()", get(t, s, func(tx store.Tx) ([]*store.ResignJob, error) { return tx.ResignJobs("") }), []*store.ResignJob{j1, j2})
	wantList(t, "ResignJobs(running)", get(t, s, func(tx store.Tx) ([]*store.ResignJob, error) { return tx.ResignJobs(store.ResignRunning) }), []*store.ResignJob{j1})
	j1.Done, j1.Cursor, j1.State, j1.FinishedAt = 9, "l10", store.ResignDone, ptr(2*time.Hour)
	update(t, s, func(tx store.Tx) error { return tx.PutResignJob(j1) })
	wantEqual(t, "ResignJob(k1) updated", get(t, s, func(tx store.Tx) (*store.ResignJob, error) { return tx.ResignJob("k1") }), j1)
	bad := *j1
	bad.State = "paused"
	wantCode(t, "PutResignJob(bad state)", updateErr(t, s, func(tx store.Tx) error { return tx.PutResignJob(&bad) }), keyward.EInvalid)
	err := viewErr(t, s, func(tx store.Tx) error { _, err := tx.ResignJob("k-missing"); return err })
	wantNotFound(t, "ResignJob(missing)", err, "k-missing")
}

func errorsJoin(errs ...error) error {
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

func testCursors(t *testing.T, s store.Store) {
	if v := get(t, s, func(tx store.Tx) (string, error) { return tx.Cursor("sweep") }); v != "" {
		t.Errorf("Cursor(never set) = %q, want \"\"", v)
	}
	update(t, s, func(tx store.Tx) error { return tx.SetCursor("sweep", "l5") })
	update(t, s, func(tx store.Tx) error { return tx.SetCursor("sweep", "l7") })
	update(t, s, func(tx store.Tx) error { return tx.SetCursor("other", "x") })
	if v := get(t, s, func(tx store.Tx) (string, error) { return tx.Cursor("sweep") }); v != "l7" {
		t.Errorf("Cursor(sweep) = %q, want l7", v)
	}
}

func testLicensesExpiringBefore(t *testing.T, s store.Store) {
	withLicenses(t, s, 5)
	var ls []*keyward.License
	update(t, s, func(tx store.Tx) error {
		for i, d := range []time.Duration{day, 3 * day, day, 0, 10 * day} {
			l, err := tx.License(fmt.Sprintf("l%d", i+1))
			if err != nil {
				return err
			}
			if d > 0 {
				l.ExpiresAt = ptr(d)
			}
			if err := tx.UpdateLicense(l); err != nil {
				return err
			}
			ls = append(ls, l)
		}
		return nil
	})
	byID := get(t, s, func(tx store.Tx) ([]*keyward.License, error) {
		return tx.LicensesByID([]string{"l5", "l1", "l-missing", "l2"})
	})
	wantList(t, "LicensesByID(l5, l1, missing, l2)", byID, []*keyward.License{ls[0], ls[1], ls[4]})
	// l3 is suspended and l4 perpetual: never listed.
	got := get(t, s, func(tx store.Tx) ([]*keyward.License, error) { return tx.LicensesExpiringBefore(at(5*day), "", 0) })
	wantList(t, "LicensesExpiringBefore(5d)", got, []*keyward.License{ls[0], ls[1]})
	got = get(t, s, func(tx store.Tx) ([]*keyward.License, error) { return tx.LicensesExpiringBefore(at(day), "", 0) })
	wantList(t, "LicensesExpiringBefore(1d), strictly before", got, nil)
	got = get(t, s, func(tx store.Tx) ([]*keyward.License, error) { return tx.LicensesExpiringBefore(at(30*day), "l1", 1) })
	wantList(t, "LicensesExpiringBefore(30d, after l1, limit 1)", got, []*keyward.License{ls[1]})
}

// testResignCertificates: a re-signed certificate is read back with the new
// kid, header and signature around the stored payload, counts and filters
// under the new kid, is re-signed again from there, and is reset by a put.
func testResignCertificates(t *testing.T, s store.Store) {
	withLicenses(t, s, 3)
	c1, c2 := newCert("l1", "k1", 30*day), newCert("l2", "k1", 30*day)
	update(t, s, func(tx store.Tx) error { return tx.PutCertificates([]*store.Certificate{c1, c2}) })
	// resigned is c signed again by kid, as ResignCertificates requires:
	// the same payload segment under a new header and signature.
	resigned := func(c *store.Certificate, kid string) *store.Certificate {
		r := *c
		payload := c.Token[strings.IndexByte(c.Token, '.')+1 : strings.LastIndexByte(c.Token, '.')]
		r.KID, r.Token = kid, "h"+kid+"."+payload+".s"+kid
		return &r
	}
	put := &store.Certificate{
		LicenseID: "l1", ProductID: "p1", KID: "k1", JTI: c1.JTI, IssuedAt: c1.IssuedAt, ExpiresAt: c1.ExpiresAt, Token: "h.pl1.s",
	}
	update(t, s, func(tx store.Tx) error { return tx.PutCertificates([]*store.Certificate{put}) })
	r1 := resigned(put, "k2")
	update(t, s, func(tx store.Tx) error { return tx.ResignCertificates([]*store.Certificate{r1}) })
	if r1.Token != "hk2.pl1.sk2" {
		t.Fatalf("resigned token %q", r1.Token)
	}
	wantEqual(t, "Certificate(l1) re-signed", get(t, s, func(tx store.Tx) (*store.Certificate, error) { return tx.Certificate("l1") }), r1)
	if n := get(t, s, func(tx store.Tx) (int, error) { return tx.CountCertificates(store.CertificateFilter{KID: "k1"}) }); n != 1 {
		t.Errorf("CountCertificates(k1) = %d, want 1", n)
	}
	wantList(t, "Certificates(k2)", get(t, s, func(tx store.Tx) ([]*store.Certificate, error) {
		return tx.Certificates(store.CertificateFilter{KID: "k2"})
	}), []*store.Certificate{r1})
	cands := get(t, s, func(tx store.Tx) ([]*store.ResignCandidate, error) { return tx.ResignCandidates("k2", at(0), "", 10) })
	if len(cands) != 1 {
		t.Fatalf("ResignCandidates(k2) = %d candidates, want 1", len(cands))
	}
	wantEqual(t, "ResignCandidates(k2)", &cands[0].Certificate, r1)
	// Re-signed again: the payload is still the checked-out one.
	r1b := resigned(r1, "k3")
	update(t, s, func(tx store.Tx) error { return tx.ResignCertificates([]*store.Certificate{r1b}) })
	wantEqual(t, "Certificate(l1) re-signed twice", get(t, s, func(tx store.Tx) (*store.Certificate, error) { return tx.Certificate("l1") }), r1b)
	// A checkout replaces the re-signed certificate.
	c1c := newCert("l1", "k4", 40*day)
	update(t, s, func(tx store.Tx) error { return tx.PutCertificates([]*store.Certificate{c1c}) })
	wantEqual(t, "Certificate(l1) put after re-sign", get(t, s, func(tx store.Tx) (*store.Certificate, error) { return tx.Certificate("l1") }), c1c)
	wantEqual(t, "Certificate(l2) untouched", get(t, s, func(tx store.Tx) (*store.Certificate, error) { return tx.Certificate("l2") }), c2)
	// More than one statement's worth, and a remainder.
	var again []*store.Certificate
	for _, c := range putManyCertificates(t, s, 300, "k5") {
		again = append(again, resigned(c, "k6"))
	}
	update(t, s, func(tx store.Tx) error { return tx.ResignCertificates(again[:299]) })
	if n := get(t, s, func(tx store.Tx) (int, error) { return tx.CountCertificates(store.CertificateFilter{KID: "k6"}) }); n != 299 {
		t.Errorf("CountCertificates(k6) = %d, want 299", n)
	}
	got := get(t, s, func(tx store.Tx) (*store.Certificate, error) { return tx.Certificate("m298") })
	if want := "hk6.m298.sk6"; got.Token != want || got.KID != "k6" {
		t.Errorf("Certificate(m298) = %s %q, want k6 %q", got.KID, got.Token, want)
	}
	wantCode(t, "ResignCertificates(no certificate)", updateErr(t, s, func(tx store.Tx) error {
		return tx.ResignCertificates([]*store.Certificate{resigned(newCert("l3", "k1", day), "k2")})
	}), keyward.ENotFound)
	// A token that is not a JWS is refused before anything is written,
	// even the certificates before it.
	update(t, s, func(tx store.Tx) error {
		bad := resigned(c2, "k2")
		bad.Token = "nodots"
		err := tx.ResignCertificates([]*store.Certificate{resigned(c2, "k2"), bad})
		wantCode(t, "ResignCertificates(not a JWS)", err, keyward.EInvalid)
		got, err := tx.Certificate("l2")
		if err != nil {
			return err
		}
		wantEqual(t, "Certificate(l2) after a refused re-sign", got, c2)
		return nil
	})
}

// putManyCertificates creates licenses m000, m001, … (product p1, made by
// withLicenses) and puts a certificate by kid for each, in one call.
func putManyCertificates(t *testing.T, s store.Store, n int, kid string) []*store.Certificate {
	t.Helper()
	var cs []*store.Certificate
	update(t, s, func(tx store.Tx) error {
		for i := range n {
			l := newLicense(fmt.Sprintf("m%03d", i), "p1")
			if err := tx.CreateLicense(l); err != nil {
				return err
			}
			cs = append(cs, newCert(l.ID, kid, day))
		}
		return tx.PutCertificates(cs)
	})
	return cs
}
