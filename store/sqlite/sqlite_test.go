package sqlite_test

import (
	"database/sql"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/keyward/keyward"
	"github.com/keyward/keyward/store"
	"github.com/keyward/keyward/store/sqlite"
	"github.com/keyward/keyward/store/storetest"
)

// mustOpen opens the database at path and closes it when t ends.
func mustOpen(t *testing.T, path string) *sqlite.DB {
	t.Helper()
	db, err := sqlite.Open(t.Context(), path)
	if err != nil {
		t.Fatalf("Open(%s): %v", path, err)
	}
	t.Cleanup(func() {
		if err := db.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return db
}

// rawOpen opens path with the bare driver, bypassing migrations.
func rawOpen(t *testing.T, path string) *sql.DB {
	t.Helper()
	raw, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { raw.Close() })
	return raw
}

func TestStore(t *testing.T) {
	storetest.Run(t, func(t *testing.T) store.Store {
		return mustOpen(t, filepath.Join(t.TempDir(), "k.db"))
	})
}

func TestReopen(t *testing.T) {
	path := filepath.Join(t.TempDir(), "k.db")
	p := &keyward.Product{ID: "p1", Name: "One", CreatedAt: time.Unix(0, 1234567890123456789).UTC()}

	db, err := sqlite.Open(t.Context(), path)
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Update(t.Context(), func(tx store.Tx) error { return tx.CreateProduct(p) }); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}

	db = mustOpen(t, path) // applies nothing
	err = db.View(t.Context(), func(tx store.Tx) error {
		got, err := tx.Product("p1")
		if err == nil && *got != *p {
			t.Errorf("Product(p1) after reopen = %+v, want %+v (nanoseconds kept)", got, p)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}

	var n, max int
	if err := rawOpen(t, path).QueryRow(`SELECT COUNT(*), MAX(version) FROM schema_migrations`).Scan(&n, &max); err != nil {
		t.Fatal(err)
	}
	if n != max {
		t.Errorf("schema_migrations: %d rows up to version %d, want one row per version", n, max)
	}
}

func TestNewerSchemaRefused(t *testing.T) {
	path := filepath.Join(t.TempDir(), "k.db")
	db, err := sqlite.Open(t.Context(), path)
	if err != nil {
		t.Fatal(err)
	}
	db.Close()
	if _, err := rawOpen(t, path).Exec(`INSERT INTO schema_migrations (version, applied_at) VALUES (9999, 0)`); err != nil {
		t.Fatal(err)
	}
	db, err = sqlite.Open(t.Context(), path)
	if err == nil {
		db.Close()
		t.Fatal("Open(newer schema) = nil error, want refusal")
	}
	if !strings.Contains(err.Error(), "9999") || !strings.Contains(err.Error(), "newer") {
		t.Errorf("Open(newer schema) = %v, want an error naming version 9999 as newer", err)
	}
}

func TestOpenOddPath(t *testing.T) {
	dir := t.TempDir()
	name := "a b?c#d%20e.db"
	mustOpen(t, filepath.Join(dir, name))
	if _, err := os.Stat(filepath.Join(dir, name)); err != nil {
		t.Fatalf("database file not created under its literal name: %v", err)
	}
}

// TestConcurrent runs Updates from many goroutines, on two DBs sharing one
// file (as two processes would), while Views read: none may fail with
// SQLITE_BUSY, and audit seqs stay gap-free.
func TestConcurrent(t *testing.T) {
	path := filepath.Join(t.TempDir(), "k.db")
	dbs := []*sqlite.DB{mustOpen(t, path), mustOpen(t, path)}
	const writers, perWriter = 8, 25

	var wg sync.WaitGroup
	errc := make(chan error, writers+4)
	for w := range writers {
		db := dbs[w%len(dbs)]
		wg.Go(func() {
			for i := range perWriter {
				err := db.Update(t.Context(), func(tx store.Tx) error {
					id := fmt.Sprintf("p_%d_%d", w, i)
					if err := tx.CreateProduct(&keyward.Product{ID: id, Name: id, CreatedAt: time.Now()}); err != nil {
						return err
					}
					return tx.AppendAudit(&keyward.AuditEntry{Time: time.Now(), Action: "product.create", TargetID: id})
				})
				if err != nil {
					errc <- fmt.Errorf("writer %d: Update %d: %w", w, i, err)
					return
				}
			}
		})
	}
	stop := make(chan struct{})
	var readers sync.WaitGroup
	for r := range 4 {
		db := dbs[r%len(dbs)]
		readers.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				err := db.View(t.Context(), func(tx store.Tx) error {
					ps, err := tx.Products()
					if err != nil {
						return err
					}
					es, err := tx.AuditEntries(store.AuditFilter{})
					if err != nil {
						return err
					}
					if len(ps) != len(es) { // one snapshot: both or neither
						return fmt.Errorf("View saw %d products but %d audit entries", len(ps), len(es))
					}
					return nil
				})
				if err != nil {
					errc <- fmt.Errorf("reader %d: %w", r, err)
					return
				}
			}
		})
	}
	wg.Wait()
	close(stop)
	readers.Wait()
	close(errc)
	for err := range errc {
		t.Error(err)
	}

	err := dbs[0].View(t.Context(), func(tx store.Tx) error {
		es, err := tx.AuditEntries(store.AuditFilter{})
		if err != nil {
			return err
		}
		if len(es) != writers*perWriter {
			return fmt.Errorf("%d audit entries, want %d", len(es), writers*perWriter)
		}
		for i, e := range es {
			if e.Seq != int64(i+1) {
				return fmt.Errorf("audit entry %d has seq %d, want gap-free seqs", i, e.Seq)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestConstraintCodes checks the codes of violations storetest does not
// cover: a missing referenced row and a value a CHECK constraint refuses.
func TestConstraintCodes(t *testing.T) {
	db := mustOpen(t, filepath.Join(t.TempDir(), "k.db"))
	update := func(fn func(tx store.Tx) error) error { return db.Update(t.Context(), fn) }
	now := time.Now()

	err := update(func(tx store.Tx) error {
		return tx.CreateLicense(&keyward.License{ID: "l1", ProductID: "p_missing", State: keyward.LicenseActive, CreatedAt: now})
	})
	if keyward.ErrorCode(err) != keyward.ENotFound || !strings.Contains(keyward.ErrorMessage(err), "p_missing") {
		t.Errorf("CreateLicense(missing product) = %v, want ENotFound naming p_missing", err)
	}
	err = update(func(tx store.Tx) error {
		return tx.CreateMachine(&keyward.Machine{ID: "m1", LicenseID: "l_missing", Fingerprint: "fp", CreatedAt: now})
	})
	if keyward.ErrorCode(err) != keyward.ENotFound {
		t.Errorf("CreateMachine(missing license) = %v, want ENotFound", err)
	}
	err = update(func(tx store.Tx) error {
		return tx.CreateKey(&keyward.SigningKey{KID: "k1", Ring: "registry", Purpose: keyward.PurposeRegistry,
			State: "bogus", PublicKey: []byte("pk"), CreatedAt: now})
	})
	if keyward.ErrorCode(err) != keyward.EInvalid {
		t.Errorf("CreateKey(bogus state) = %v, want EInvalid", err)
	}
	err = update(func(tx store.Tx) error {
		return tx.AppendAudit(&keyward.AuditEntry{Time: now, Action: "x", Details: []byte("{not json")})
	})
	if keyward.ErrorCode(err) != keyward.EInvalid {
		t.Errorf("AppendAudit(bad details) = %v, want EInvalid", err)
	}
	var ke *keyward.Error
	if err := db.Update(t.Context(), func(tx store.Tx) error { return errors.New("plain") }); errors.As(err, &ke) {
		t.Errorf("Update(plain error) = %v, want it returned unchanged", err)
	}
}

// TestLicensesExpiringBeforeMany covers the id walk that
// LicensesExpiringBefore takes when more than 10 000 licenses expire
// (fewer are read through the expiry index, which the shared suite
// covers): the same answers, in id order, page by page.
func TestLicensesExpiringBeforeMany(t *testing.T) {
	db := mustOpen(t, filepath.Join(t.TempDir(), "k.db"))
	base := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	cut := base.Add(24 * time.Hour)
	const expiring, others = 10_050, 300
	var want []string
	err := db.Update(t.Context(), func(tx store.Tx) error {
		if err := tx.CreateProduct(&keyward.Product{ID: "p1", Name: "p1", CreatedAt: base}); err != nil {
			return err
		}
		for i := range expiring + others {
			// Interleave ids so the expiring ones are not one id range.
			id := fmt.Sprintf("l%06d", (i*7919)%(expiring+others))
			exp := base.Add(time.Duration(i%24) * time.Hour) // before cut
			state := keyward.LicenseActive
			expires := &exp
			switch {
			case i >= expiring && i%3 == 0:
				expires = nil // perpetual
			case i >= expiring && i%3 == 1:
				later := cut.Add(time.Hour)
				expires = &later
			case i >= expiring:
				state = keyward.LicenseSuspended
			default:
				want = append(want, id)
			}
			if err := tx.CreateLicense(&keyward.License{ID: id, ProductID: "p1", Holder: "h", State: state, KeyPrefix: "KW1-AAAAA",
				ExpiresAt: expires, CreatedAt: base, UpdatedAt: base}); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(want)
	ids := func(ls []*keyward.License) []string {
		out := make([]string, len(ls))
		for i, l := range ls {
			out[i] = l.ID
		}
		return out
	}
	err = db.View(t.Context(), func(tx store.Tx) error {
		all, err := tx.LicensesExpiringBefore(cut, "", 0)
		if err != nil {
			return err
		}
		if got := ids(all); !slices.Equal(got, want) {
			t.Errorf("LicensesExpiringBefore(cut, \"\", 0) = %d licenses, want %d (first %v, want %v)", len(got), len(want), got[:min(3, len(got))], want[:3])
		}
		var paged []string
		for after := ""; ; {
			page, err := tx.LicensesExpiringBefore(cut, after, 4000)
			if err != nil {
				return err
			}
			paged = append(paged, ids(page)...)
			if len(page) < 4000 {
				break
			}
			after = page[len(page)-1].ID
		}
		if !slices.Equal(paged, want) {
			t.Errorf("LicensesExpiringBefore in pages of 4000 = %d licenses, want %d", len(paged), len(want))
		}
		none, err := tx.LicensesExpiringBefore(base, "", 0)
		if err != nil {
			return err
		}
		if len(none) != 0 {
			t.Errorf("LicensesExpiringBefore(base) = %d licenses, want none (strictly before)", len(none))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
