package storetest

import (
	"crypto/sha512"
	"encoding/base64"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/keyward/keyward/store"
)

// Upgrades: a store's own test builds a database at an old schema version,
// fills it with the statements here (plain SQL, without parameters, that
// SQLite and PostgreSQL both run), opens it with the store, which migrates
// it to the latest version, and checks it with the function here.

// v9Cert is one license of the schema-9 fixture and its certificate.
type v9Cert struct {
	state        string         // the license's
	expires      *time.Duration // the license's, from t0; nil = never
	kid          string
	issued, life time.Duration // the certificate's, from t0
}

// v9Certs are the licenses of Schema9Certificates, by id: ResignCandidates
// of kid_old at t0 finds l-a eligible, l-b not (suspended) and l-c not
// (active, but its license expired and the scheduler has not yet run);
// l-c's certificate expires after 1 day, and l-d was signed by kid_new.
var v9Certs = []struct {
	id string
	v9Cert
}{
	{"l-a", v9Cert{"active", nil, "kid_old", -day, 30 * day}},
	{"l-b", v9Cert{"suspended", nil, "kid_old", -day, 30 * day}},
	{"l-c", v9Cert{"active", durPtr(-time.Hour), "kid_old", -2 * day, 3 * day}},
	{"l-d", v9Cert{"active", nil, "kid_new", -time.Hour, 30 * day}},
}

func durPtr(d time.Duration) *time.Duration { return &d }

// fakeJWS returns a compact JWS-shaped token: a header naming kid, a
// claims payload, and a 64-byte (Ed25519-sized) signature derived from
// both and salt.
func fakeJWS(kid string, claims, salt string) string {
	enc := base64.RawURLEncoding
	h := enc.EncodeToString([]byte(`{"alg":"EdDSA","kid":"` + kid + `","typ":"keyward-cert+jwt"}`))
	p := enc.EncodeToString([]byte(claims))
	sig := sha512.Sum512([]byte(h + "." + p + "." + salt))
	return h + "." + p + "." + enc.EncodeToString(sig[:])
}

// schema9Certificates are the certificates Schema9Certificates inserts, as
// the store must return them.
func schema9Certificates() []*store.Certificate {
	cs := make([]*store.Certificate, len(v9Certs))
	for i, l := range v9Certs {
		c := &store.Certificate{
			LicenseID: l.id, ProductID: "p-up", KID: l.kid, JTI: "crt_" + l.id,
			IssuedAt: at(l.issued), ExpiresAt: at(l.issued + l.life),
		}
		claims := fmt.Sprintf(`{"jti":%q,"lic":%q,"prd":%q,"iat":%d,"exp":%d,"ent":["pro"]}`,
			c.JTI, c.LicenseID, c.ProductID, c.IssuedAt.Unix(), c.ExpiresAt.Unix())
		c.Token = fakeJWS(l.kid, claims, "v9")
		cs[i] = c
	}
	return cs
}

// Schema9Certificates returns statements that insert, into a database at
// schema version 9 (before migration 0010 moved each certificate's kid and
// expiry to certificate_signatures), a product, four licenses and their
// current certificates in license_certificates. CheckUpgradedFrom9 checks
// the store they were inserted into after it was migrated.
func Schema9Certificates() []string {
	lit := func(s string) string { return "'" + strings.ReplaceAll(s, "'", "''") + "'" }
	stmts := []string{fmt.Sprintf(`INSERT INTO products (id, name, created_at) VALUES ('p-up', 'upgrade', %d)`, at(-10*day).UnixNano())}
	for i, c := range schema9Certificates() {
		l := v9Certs[i]
		expires := "NULL"
		if l.expires != nil {
			expires = fmt.Sprint(at(*l.expires).UnixNano())
		}
		created := at(-10 * day).UnixNano()
		stmts = append(stmts,
			fmt.Sprintf(`INSERT INTO licenses (id, product_id, holder, state, key_prefix, entitlements, max_machines,
				expires_at, created_at, updated_at, reason, last_validated_at, issued_by)
				VALUES (%s, 'p-up', 'holder-%s', %s, 'KW1-%s', '["pro"]', 3, %s, %d, %d, '', NULL, 'admin')`,
				lit(c.LicenseID), c.LicenseID, lit(l.state), strings.ToUpper(c.LicenseID[2:]), expires, created, created),
			fmt.Sprintf(`INSERT INTO license_certificates (license_id, product_id, kid, jti, issued_at, expires_at, token)
				VALUES (%s, %s, %s, %s, %d, %d, %s)`,
				lit(c.LicenseID), lit(c.ProductID), lit(c.KID), lit(c.JTI), c.IssuedAt.UnixNano(), c.ExpiresAt.UnixNano(), lit(c.Token)))
	}
	return stmts
}

// CheckUpgradedFrom9 checks, through s, the certificates that
// Schema9Certificates inserted before s was migrated to the latest schema:
// each comes back byte for byte, the filters count them by kid, expiry and
// license state, ResignCandidates says which may be re-signed, and a
// re-sign replaces a certificate's header and signature but keeps its
// payload. It writes to s.
func CheckUpgradedFrom9(t *testing.T, s store.Store) {
	cs := schema9Certificates()
	for _, c := range cs {
		wantEqual(t, "Certificate("+c.LicenseID+")", get(t, s, func(tx store.Tx) (*store.Certificate, error) {
			return tx.Certificate(c.LicenseID)
		}), c)
	}
	wantList(t, "Certificates({})", get(t, s, func(tx store.Tx) ([]*store.Certificate, error) {
		return tx.Certificates(store.CertificateFilter{})
	}), cs)

	counts := []struct {
		name string
		f    store.CertificateFilter
		want int
	}{
		{"All", store.CertificateFilter{}, 4},
		{"KID=kid_old", store.CertificateFilter{KID: "kid_old"}, 3},
		{"KID=kid_new", store.CertificateFilter{KID: "kid_new"}, 1},
		{"KID=kid_gone", store.CertificateFilter{KID: "kid_gone"}, 0},
		{"LiveAt", store.CertificateFilter{KID: "kid_old", LiveAt: at(0)}, 3},
		// The backfilled expiry, to the nanosecond: l-c's is live until it.
		{"LiveAt=exp(l-c)-1ns", store.CertificateFilter{KID: "kid_old", LiveAt: cs[2].ExpiresAt.Add(-1)}, 3},
		{"LiveAt=exp(l-c)", store.CertificateFilter{KID: "kid_old", LiveAt: cs[2].ExpiresAt}, 2},
		{"LiveAt+2d", store.CertificateFilter{KID: "kid_old", LiveAt: at(2 * day)}, 2},
		{"ActiveOnly", store.CertificateFilter{KID: "kid_old", ActiveOnly: true}, 2},
		{"LiveAt+2d,ActiveOnly", store.CertificateFilter{KID: "kid_old", LiveAt: at(2 * day), ActiveOnly: true}, 1},
	}
	for _, tc := range counts {
		n := get(t, s, func(tx store.Tx) (int, error) { return tx.CountCertificates(tc.f) })
		if n != tc.want {
			t.Errorf("CountCertificates(%s) = %d, want %d", tc.name, n, tc.want)
		}
	}

	type candidate struct {
		c        *store.Certificate
		eligible bool
	}
	candidates := []struct {
		name  string
		now   time.Time
		after string
		limit int
		want  []candidate
	}{
		{"t0", at(0), "", 10, []candidate{{cs[0], true}, {cs[1], false}, {cs[2], false}}},
		{"t0+2d", at(2 * day), "", 10, []candidate{{cs[0], true}, {cs[1], false}}},
		{"After", at(0), "l-a", 1, []candidate{{cs[1], false}}},
	}
	for _, tc := range candidates {
		got := get(t, s, func(tx store.Tx) ([]*store.ResignCandidate, error) {
			return tx.ResignCandidates("kid_old", tc.now, tc.after, tc.limit)
		})
		if len(got) != len(tc.want) {
			t.Fatalf("ResignCandidates(kid_old, %s) = %d candidates, want %d: %s", tc.name, len(got), len(tc.want), show(got))
		}
		for i, w := range tc.want {
			wantEqual(t, fmt.Sprintf("ResignCandidates(kid_old, %s)[%d]", tc.name, i), &got[i].Certificate, w.c)
			if got[i].Eligible != w.eligible {
				t.Errorf("ResignCandidates(kid_old, %s)[%d] %s: Eligible = %v, want %v", tc.name, i, got[i].LicenseID, got[i].Eligible, w.eligible)
			}
		}
	}

	// Re-sign l-a with kid_new: a new header and signature around the
	// payload it was checked out with.
	re := *cs[0]
	re.KID = "kid_new"
	payload := strings.Split(cs[0].Token, ".")[1]
	claims, err := base64.RawURLEncoding.DecodeString(payload)
	if err != nil {
		t.Fatalf("payload of %s: %v", re.LicenseID, err)
	}
	re.Token = fakeJWS("kid_new", string(claims), "re-signed")
	if seg := strings.Split(re.Token, "."); len(seg) != 3 || seg[1] != payload || re.Token == cs[0].Token {
		t.Fatalf("re-signed token %s: want %s with another header and signature", re.Token, cs[0].Token)
	}
	update(t, s, func(tx store.Tx) error { return tx.ResignCertificates([]*store.Certificate{&re}) })
	wantEqual(t, "Certificate(l-a) re-signed", get(t, s, func(tx store.Tx) (*store.Certificate, error) {
		return tx.Certificate("l-a")
	}), &re)
	wantEqual(t, "Certificate(l-b) after re-signing l-a", get(t, s, func(tx store.Tx) (*store.Certificate, error) {
		return tx.Certificate("l-b")
	}), cs[1])
	for kid, want := range map[string]int{"kid_old": 2, "kid_new": 2} {
		n := get(t, s, func(tx store.Tx) (int, error) { return tx.CountCertificates(store.CertificateFilter{KID: kid}) })
		if n != want {
			t.Errorf("CountCertificates(KID=%s) after re-signing l-a = %d, want %d", kid, n, want)
		}
	}
	got := get(t, s, func(tx store.Tx) ([]*store.ResignCandidate, error) {
		return tx.ResignCandidates("kid_old", at(0), "", 10)
	})
	if len(got) != 2 || got[0].LicenseID != "l-b" || got[1].LicenseID != "l-c" {
		t.Errorf("ResignCandidates(kid_old) after re-signing l-a = %s, want l-b and l-c", show(got))
	}
}
