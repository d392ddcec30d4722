package sqlite

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/keyward/keyward/store"
)

// BenchmarkResignStore measures the store's share of bulk re-signing on
// SQLite, per certificate: reading candidates (ResignCandidates, 128 at a
// time), writing their new signatures (ResignCertificates) and committing,
// with no signing at all. Each iteration moves 2 048 certificates of 600
// bytes from one kid to the other in one transaction, as a re-sign batch
// does. docs/benchmarks.md ("Bulk re-sign") sets these against the CPU of
// one Ed25519 signature.
func BenchmarkResignStore(b *testing.B) {
	const n, chunk = 2048, 128
	ctx := context.Background()
	db, err := Open(ctx, filepath.Join(b.TempDir(), "k.db"))
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	now := time.Now()
	exp := now.Add(time.Hour).UnixNano()
	header := "eyJhbGciOiJFZERTQSIsImtpZCI6ImtpZF9hIiwidHlwIjoia2V5d2FyZC1jZXJ0K2p3dCJ9"
	payload := strings.Repeat("x", 420)
	err = db.Update(ctx, func(t store.Tx) error {
		tx := t.(*tx)
		if _, err := tx.exec(`INSERT INTO products (id, name, created_at) VALUES ('prd_1', 'acme', 1)`); err != nil {
			return err
		}
		for i := range n {
			id := fmt.Sprintf("lic_06hcx2ym00m6twgsrrq%08d", i)
			if _, err := tx.exec(`INSERT INTO licenses (`+licenseCols+`) VALUES (?, 'prd_1', 'cus-1', 'active', 'KW1-AAAA', '[]', 0, NULL, 1, 1, '', NULL, '')`, id); err != nil {
				return err
			}
			tok := header + "." + payload + "." + strings.Repeat("s", 86)
			if _, err := tx.exec(`INSERT INTO license_certificates (`+certCols+`) VALUES (?, 'prd_1', 'kid_a', ?, 1, ?, ?)`, id, "crt_"+id, exp, tok); err != nil {
				return err
			}
			if _, err := tx.exec(`INSERT INTO certificate_signatures (license_id, kid, expires_at) VALUES (?, 'kid_a', ?)`, id, exp); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		b.Fatal(err)
	}
	kids := [2]string{"kid_a", "kid_b"}
	sigs := [2]string{strings.Repeat("t", 86), strings.Repeat("u", 86)}
	var readT, writeT, allT time.Duration
	it := 0
	for b.Loop() {
		from, to, sig := kids[it%2], kids[(it+1)%2], sigs[it%2]
		it++
		t0 := time.Now()
		moved := 0
		err := db.Update(ctx, func(tx store.Tx) error {
			after := ""
			for {
				t1 := time.Now()
				cs, err := tx.ResignCandidates(from, now, after, chunk)
				readT += time.Since(t1)
				if err != nil || len(cs) == 0 {
					return err
				}
				out := make([]*store.Certificate, len(cs))
				for i, c := range cs {
					cc := c.Certificate
					h, _, _ := store.JWSEnds(cc.Token)
					cc.KID, cc.Token = to, h+cc.Token[len(h):len(cc.Token)-len(sig)]+sig
					out[i] = &cc
				}
				t2 := time.Now()
				if err := tx.ResignCertificates(out); err != nil {
					return err
				}
				writeT += time.Since(t2)
				moved += len(out)
				after = cs[len(cs)-1].LicenseID
			}
		})
		allT += time.Since(t0)
		if err != nil {
			b.Fatal(err)
		}
		if moved != n {
			b.Fatalf("re-signed %d certificates, want %d", moved, n)
		}
	}
	per := func(d time.Duration) float64 { return float64(d.Nanoseconds()) / float64(b.N*n) }
	b.ReportMetric(per(readT), "read-ns/cert")
	b.ReportMetric(per(writeT), "write-ns/cert")
	b.ReportMetric(per(allT-readT-writeT), "rest-ns/cert") // begin, commit, Go-side copies
	b.ReportMetric(per(allT), "store-ns/cert")
	b.ReportMetric(0, "ns/op")
}
