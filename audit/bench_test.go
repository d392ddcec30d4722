package audit_test

import (
	"encoding/json"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/keyward/keyward"
	"github.com/keyward/keyward/audit"
	"github.com/keyward/keyward/internal/cputime"
	"github.com/keyward/keyward/keys"
	"github.com/keyward/keyward/store"
	"github.com/keyward/keyward/store/sqlite"
)

// stateChange is an audited state change as the authority makes one:
// read the license, write it, its audit entry (through appendAudit) and
// its outbox event, commit.
func stateChange(b *testing.B, st *sqlite.DB, i int, appendAudit func(tx store.Tx, e *keyward.AuditEntry) error) {
	states := []keyward.LicenseState{keyward.LicenseSuspended, keyward.LicenseActive}
	err := st.Update(b.Context(), func(tx store.Tx) error {
		l, err := tx.License("lic_1")
		if err != nil {
			return err
		}
		before := l.State
		l.State, l.UpdatedAt = states[i%2], t0.Add(time.Duration(i)*time.Second)
		if err := tx.UpdateLicense(l); err != nil {
			return err
		}
		details := json.RawMessage(fmt.Sprintf(`{"product":"prd_1","n":%d}`, i))
		e := &keyward.AuditEntry{Time: l.UpdatedAt, Actor: "tok_1", ActorName: "ops", Roles: []string{"revoker"},
			Action: "license.suspend", TargetType: "license", TargetID: l.ID, Before: string(before), After: string(l.State),
			Reason: "abuse", RequestID: "0123456789abcdef", Details: details}
		if err := appendAudit(tx, e); err != nil {
			return err
		}
		return tx.AppendEvent(&keyward.Event{ID: fmt.Sprintf("evt_%d", i), Type: "license.suspended", Time: l.UpdatedAt,
			Subject: l.ID, Data: details})
	})
	if err != nil {
		b.Fatal(err)
	}
}

func plainAppend(tx store.Tx, e *keyward.AuditEntry) error { return tx.AppendAudit(e) }

func benchStore(b *testing.B) *sqlite.DB {
	st, err := sqlite.Open(b.Context(), filepath.Join(b.TempDir(), "k.db"))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { st.Close() })
	if err := st.Update(b.Context(), func(tx store.Tx) error {
		if err := tx.CreateProduct(&keyward.Product{ID: "prd_1", Name: "acme", CreatedAt: t0}); err != nil {
			return err
		}
		return tx.CreateLicense(&keyward.License{ID: "lic_1", ProductID: "prd_1", Holder: "cus_1", State: keyward.LicenseActive,
			KeyPrefix: "KW1-ABCDE", CreatedAt: t0, UpdatedAt: t0, IssuedBy: "tok_1"})
	}); err != nil {
		b.Fatal(err)
	}
	return st
}

// BenchmarkStateChange measures audited state changes on SQLite with the
// audit entry appended plainly (WithoutTree) and through audit.Append
// (WithTree), which also stores the Merkle tree hashes.
func BenchmarkStateChange(b *testing.B) {
	for _, tc := range []struct {
		name        string
		appendAudit func(tx store.Tx, e *keyward.AuditEntry) error
	}{
		{"WithoutTree", plainAppend},
		{"WithTree", audit.Append},
	} {
		b.Run(tc.name, func(b *testing.B) {
			st := benchStore(b)
			for i := 0; b.Loop(); i++ {
				stateChange(b, st, i, tc.appendAudit)
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "changes/s")
		})
	}
}

// BenchmarkTreeOverhead runs the two kinds of state change alternately on
// two stores, so that a busy machine slows both alike, and reports what
// the tree adds in percent of a plain state change: in wall-clock time
// (%overhead) and in the process's CPU time (%cpu-overhead), which a
// machine shared with other jobs disturbs much less.
func BenchmarkTreeOverhead(b *testing.B) {
	plain, tree := benchStore(b), benchStore(b)
	var tPlain, tTree, cPlain, cTree time.Duration
	for i := 0; b.Loop(); i++ {
		start, c0 := time.Now(), cputime.Process()
		stateChange(b, plain, i, plainAppend)
		mid, c1 := time.Now(), cputime.Process()
		stateChange(b, tree, i, audit.Append)
		tTree += time.Since(mid)
		tPlain += mid.Sub(start)
		c2 := cputime.Process()
		cPlain += c1 - c0
		cTree += c2 - c1
	}
	b.ReportMetric(float64(tPlain.Nanoseconds())/float64(b.N), "ns/plain-change")
	b.ReportMetric(float64(tTree.Nanoseconds())/float64(b.N), "ns/tree-change")
	b.ReportMetric(100*(float64(tTree)/float64(tPlain)-1), "%overhead")
	if cPlain > 0 {
		b.ReportMetric(float64(cPlain.Nanoseconds())/float64(b.N), "cpu-ns/plain-change")
		b.ReportMetric(float64(cTree.Nanoseconds())/float64(b.N), "cpu-ns/tree-change")
		b.ReportMetric(100*(float64(cTree)/float64(cPlain)-1), "%cpu-overhead")
	}
}

// BenchmarkSignCheckpoint measures a checkpoint over 100 new entries:
// recheck their leaves, a consistency proof, one Ed25519 signature.
func BenchmarkSignCheckpoint(b *testing.B) {
	k := mustRFCKey(b)
	st, err := sqlite.Open(b.Context(), filepath.Join(b.TempDir(), "k.db"))
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	der, err := keys.MarshalPublic(k.Public())
	if err != nil {
		b.Fatal(err)
	}
	if err := st.Update(b.Context(), func(tx store.Tx) error {
		return tx.CreateKey(&keyward.SigningKey{KID: k.KID(), Ring: keyward.RegistryRing, Purpose: keyward.PurposeRegistry,
			Algorithm: "Ed25519", State: keyward.KeyActive, PublicKey: der, CreatedAt: t0})
	}); err != nil {
		b.Fatal(err)
	}
	n := 0
	for b.Loop() {
		b.StopTimer()
		if err := st.Update(b.Context(), func(tx store.Tx) error {
			for range 100 {
				n++
				if err := audit.Append(tx, entry(n)); err != nil {
					return err
				}
			}
			return nil
		}); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		if err := st.Update(b.Context(), func(tx store.Tx) error {
			_, _, err := audit.SignCheckpoint(tx, audit.SignRequest{Origin: origin, Signer: k, Public: k.Public(), Now: t0})
			return err
		}); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkVerifyEntry measures what `keyward audit verify` does per
// downloaded entry: strict decode and adding the leaf to the in-memory tree.
func BenchmarkVerifyEntry(b *testing.B) {
	var datas [][]byte
	for i := 1; i <= 4096; i++ {
		e := entry(i)
		e.Seq = int64(i)
		d, err := audit.Encode(e)
		if err != nil {
			b.Fatal(err)
		}
		datas = append(datas, d)
	}
	var tr audit.Tree
	for i := 0; b.Loop(); i++ {
		if i%len(datas) == 0 {
			tr = audit.Tree{}
		}
		if _, err := tr.Append(datas[i%len(datas)]); err != nil {
			b.Fatal(err)
		}
	}
}
