package postgres_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/keyward/keyward"
	"github.com/keyward/keyward/store"
	"github.com/keyward/keyward/store/postgres"
	"github.com/keyward/keyward/store/postgres/pgtest"
)

// Tests of what several processes sharing one database rely on: two DB
// values on one schema stand for two replicas.

var t0 = time.Date(2025, 3, 14, 15, 9, 26, 535897000, time.UTC)

func openWith(t *testing.T, url string, o postgres.Options) *postgres.DB {
	t.Helper()
	db, err := postgres.Open(t.Context(), url, o)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

func update(t *testing.T, s store.Store, fn func(tx store.Tx) error) {
	t.Helper()
	if err := s.Update(t.Context(), fn); err != nil {
		t.Fatalf("Update: %v", err)
	}
}

func seedLicenses(t *testing.T, s store.Store, n int) []string {
	t.Helper()
	var ids []string
	update(t, s, func(tx store.Tx) error {
		if err := tx.CreateProduct(&keyward.Product{ID: "prd_1", Name: "one", CreatedAt: t0}); err != nil {
			return err
		}
		for i := range n {
			id := fmt.Sprintf("lic_%05d", i)
			ids = append(ids, id)
			if err := tx.CreateLicense(&keyward.License{ID: id, ProductID: "prd_1", Holder: "h", State: keyward.LicenseActive,
				KeyPrefix: "KW1-X", CreatedAt: t0, UpdatedAt: t0, IssuedBy: "tok"}); err != nil {
				return err
			}
		}
		return nil
	})
	return ids
}

// Read-check-write transactions on two stores never lose an update, and
// audit entries stay numbered without gaps.
func TestUpdatesSerializeAcrossStores(t *testing.T) {
	url := pgtest.URL(t)
	a, b := mustOpen(t, url), mustOpen(t, url)
	const workers, each = 8, 15
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := range workers {
		s := a
		if w%2 == 1 {
			s = b
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range each {
				err := s.Update(context.Background(), func(tx store.Tx) error {
					n := 0
					v, err := tx.Secret("counter")
					if err == nil {
						n, _ = strconv.Atoi(string(v))
					} else if keyward.ErrorCode(err) != keyward.ENotFound {
						return err
					}
					time.Sleep(time.Millisecond) // widen the read-write window
					if err := tx.PutSecret("counter", []byte(strconv.Itoa(n+1))); err != nil {
						return err
					}
					return tx.AppendAudit(&keyward.AuditEntry{Time: t0, Actor: "w", Action: "test.count", TargetType: "x", TargetID: "x"})
				})
				if err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	err := a.View(t.Context(), func(tx store.Tx) error {
		v, err := tx.Secret("counter")
		if err != nil {
			return err
		}
		if string(v) != strconv.Itoa(workers*each) {
			t.Errorf("counter = %s, want %d (lost updates)", v, workers*each)
		}
		es, err := tx.AuditEntries(store.AuditFilter{})
		if err != nil {
			return err
		}
		for i, e := range es {
			if e.Seq != int64(i+1) {
				t.Fatalf("audit seq %d at position %d: want 1..%d without gaps", e.Seq, i, len(es))
			}
		}
		if len(es) != workers*each {
			t.Errorf("%d audit entries, want %d", len(es), workers*each)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// A reader following the outbox and the revocation registry by cursor
// never misses a row: no row with a seq at or below one already seen
// commits later.
func TestSeqsVisibleInOrder(t *testing.T) {
	url := pgtest.URL(t)
	a, b, r := mustOpen(t, url), mustOpen(t, url), mustOpen(t, url)
	const writers, each = 4, 20
	done := make(chan struct{})
	var wg sync.WaitGroup
	for w := range writers {
		s := a
		if w%2 == 1 {
			s = b
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				err := s.Update(context.Background(), func(tx store.Tx) error {
					if err := tx.AppendEvent(&keyward.Event{ID: fmt.Sprintf("evt_%d_%d", w, i), Type: "t", Time: t0, Subject: "s"}); err != nil {
						return err
					}
					time.Sleep(time.Duration(i%3) * time.Millisecond) // commit late sometimes
					return tx.AppendRevocation(&keyward.Revocation{ProductID: "p", Kind: keyward.RevocationLicense, Subject: "l", State: "revoked", Time: t0})
				})
				if err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	go func() { wg.Wait(); close(done) }()
	var seenEvents, seenRevs []int64
	var evCursor, revCursor int64
	for finished := false; !finished; {
		select {
		case <-done:
			finished = true // one more pass after the last commit
		default:
		}
		err := r.View(t.Context(), func(tx store.Tx) error {
			es, err := tx.Events(evCursor, 0)
			if err != nil {
				return err
			}
			for _, e := range es {
				seenEvents = append(seenEvents, e.Seq)
				evCursor = e.Seq
			}
			rs, err := tx.Revocations(store.RevocationFilter{AfterSeq: revCursor})
			for _, x := range rs {
				seenRevs = append(seenRevs, x.Seq)
				revCursor = x.Seq
			}
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	for name, seen := range map[string][]int64{"events": seenEvents, "revocations": seenRevs} {
		if len(seen) != writers*each {
			t.Errorf("a cursor reader saw %d %s, want %d (a row committed below the cursor)", len(seen), name, writers*each)
		}
		if !slices.IsSorted(seen) {
			t.Errorf("%s seen out of order: %v", name, seen)
		}
	}
}

func TestLockerExclusive(t *testing.T) {
	url := pgtest.URL(t)
	a, b := mustOpen(t, url), mustOpen(t, url)
	ctx := t.Context()
	lost, unlock, ok, err := a.TryLock(ctx, "scheduler")
	if err != nil || !ok {
		t.Fatalf("a.TryLock = %v, %v; want the lock", ok, err)
	}
	if _, _, ok, err := b.TryLock(ctx, "scheduler"); err != nil || ok {
		t.Fatalf("b.TryLock while a holds it = %v, %v; want false", ok, err)
	}
	if _, _, ok, err := a.TryLock(ctx, "scheduler"); err != nil || ok {
		t.Fatalf("a.TryLock again = %v, %v; want false (one holder, even in one process)", ok, err)
	}
	_, unlockOther, ok, err := b.TryLock(ctx, "other")
	if err != nil || !ok {
		t.Fatalf("b.TryLock(other) = %v, %v; want the lock", ok, err)
	}
	defer unlockOther()
	// Another schema is another installation: same name, another lock.
	c := mustOpen(t, pgtest.URL(t))
	_, unlockC, ok, err := c.TryLock(ctx, "scheduler")
	if err != nil || !ok {
		t.Fatalf("TryLock in another schema = %v, %v; want the lock", ok, err)
	}
	defer unlockC()

	unlock()
	unlock() // idempotent
	select {
	case <-lost:
	default:
		t.Fatal("lost not closed by unlock")
	}
	_, unlockB, ok, err := b.TryLock(ctx, "scheduler")
	if err != nil || !ok {
		t.Fatalf("b.TryLock after unlock = %v, %v; want the lock", ok, err)
	}
	unlockB()
}

// A holder whose connection dies learns it through lost, and another
// process takes the lock over at once.
func TestLockerTakeover(t *testing.T) {
	url := pgtest.URL(t)
	o := postgres.Options{LockCheck: 20 * time.Millisecond}
	a, b := openWith(t, url, o), openWith(t, url, o)
	ctx := t.Context()
	lost, unlock, ok, err := a.TryLock(ctx, "scheduler")
	if err != nil || !ok {
		t.Fatalf("a.TryLock = %v, %v", ok, err)
	}
	defer unlock()
	terminate(t, url, `SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted
		AND ((classid::bigint << 32) | objid::bigint) = ($1::bigint & x'ffffffffffffffff'::bigint)`, a.LockKey("scheduler"))
	select {
	case <-lost:
	case <-time.After(5 * time.Second):
		t.Fatal("lost not closed after the holder's connection was terminated")
	}
	// The server releases a dead session's locks as it notices the death:
	// poll briefly.
	tryLock := func(name string) (func(), bool, error) {
		deadline := time.Now().Add(5 * time.Second)
		for {
			_, unlock, ok, err := b.TryLock(ctx, name)
			if err != nil || ok || time.Now().After(deadline) {
				return unlock, ok, err
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	unlockB, ok, err := tryLock("scheduler")
	if err != nil || !ok {
		t.Fatalf("b.TryLock after a's connection died = %v, %v; want the lock", ok, err)
	}
	unlockB()

	// Closing the store releases its locks too.
	_, _, ok, err = a.TryLock(ctx, "closing")
	if err != nil || !ok {
		t.Fatalf("a.TryLock(closing) = %v, %v", ok, err)
	}
	a.Close()
	unlockB, ok, err = tryLock("closing")
	if err != nil || !ok {
		t.Fatalf("b.TryLock after a closed = %v, %v; want the lock", ok, err)
	}
	unlockB()
}

// terminate kills the backends the query (returning pids) names, from a
// connection of its own, and fails unless it killed exactly one.
func terminate(t *testing.T, url, query string, args ...any) {
	t.Helper()
	conn, err := pgx.Connect(t.Context(), url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	var n int
	err = conn.QueryRow(t.Context(), `SELECT count(pg_terminate_backend(pid)) FROM (`+query+`) AS p (pid)`, args...).Scan(&n)
	if err != nil || n != 1 {
		t.Fatalf("terminate: %d backends, %v; want 1", n, err)
	}
}

// feed listens on db and returns the changes it reports.
func feed(t *testing.T, db *postgres.DB) <-chan store.Change {
	t.Helper()
	ch := make(chan store.Change, 1000)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- db.Listen(ctx, func(c store.Change) { ch <- c }) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; !errors.Is(err, context.Canceled) {
			t.Errorf("Listen = %v, want context.Canceled", err)
		}
	})
	return ch
}

func next(t *testing.T, ch <-chan store.Change) store.Change {
	t.Helper()
	select {
	case c := <-ch:
		return c
	case <-time.After(10 * time.Second):
		t.Fatal("no change reported")
		return store.Change{}
	}
}

func none(t *testing.T, ch <-chan store.Change) {
	t.Helper()
	select {
	case c := <-ch:
		t.Fatalf("unexpected change %+v", c)
	case <-time.After(100 * time.Millisecond):
	}
}

func TestListen(t *testing.T) {
	url := pgtest.URL(t)
	a := mustOpen(t, url)
	b := openWith(t, url, postgres.Options{ListenCheck: 50 * time.Millisecond})
	ids := seedLicenses(t, a, 3)
	ch := feed(t, b)
	if c := next(t, ch); !c.All {
		t.Fatalf("first change = %+v, want All", c)
	}

	// A license transition with its revocation row and event.
	update(t, a, func(tx store.Tx) error {
		l, err := tx.License(ids[1])
		if err != nil {
			return err
		}
		l.State = keyward.LicenseRevoked
		if err := tx.UpdateLicense(l); err != nil {
			return err
		}
		if err := tx.AppendRevocation(&keyward.Revocation{ProductID: "prd_1", Kind: keyward.RevocationLicense, Subject: l.ID, State: "revoked", Time: t0}); err != nil {
			return err
		}
		return tx.AppendEvent(&keyward.Event{ID: "evt_1", Type: "license.revoked", Time: t0, Subject: l.ID})
	})
	want := store.Change{Licenses: []string{ids[1]}, Revocations: true, Events: true}
	if c := next(t, ch); !equalChange(c, want) {
		t.Fatalf("change = %+v, want %+v", c, want)
	}

	// Keys, policies, products; licenses created in the transaction are
	// nobody's cache entry and are not announced.
	update(t, a, func(tx store.Tx) error {
		if err := tx.CreateProduct(&keyward.Product{ID: "prd_2", Name: "two", CreatedAt: t0}); err != nil {
			return err
		}
		if err := tx.CreateKey(&keyward.SigningKey{KID: "k1", Ring: "license:prd_2", Purpose: keyward.PurposeLicense, ProductID: "prd_2",
			Algorithm: "Ed25519", State: keyward.KeyActive, PublicKey: []byte("p"), CreatedAt: t0}); err != nil {
			return err
		}
		if err := tx.CreatePolicy(&keyward.PolicyRecord{ProductID: "prd_2", Document: "d", Hash: "h", Author: "a", AuthorName: "a", CreatedAt: t0}); err != nil {
			return err
		}
		if err := tx.CreateLicense(&keyward.License{ID: "lic_new", ProductID: "prd_2", State: keyward.LicenseActive, CreatedAt: t0, UpdatedAt: t0}); err != nil {
			return err
		}
		return tx.CreateLicenseKey(&keyward.LicenseKey{Hash: []byte("h1"), LicenseID: "lic_new", Prefix: "KW1-N", CreatedAt: t0})
	})
	want = store.Change{Rings: []string{"license:prd_2"}, Policies: []string{"prd_2"}, Products: true}
	if c := next(t, ch); !equalChange(c, want) {
		t.Fatalf("change = %+v, want %+v", c, want)
	}

	// Nothing for a rollback, a view, a write nobody caches (a secret, a
	// last-seen time), or b's own commits.
	_ = a.Update(t.Context(), func(tx store.Tx) error {
		if err := changeLicense(tx, ids[0]); err != nil {
			return err
		}
		return errors.New("roll back")
	})
	update(t, a, func(tx store.Tx) error { return tx.PutSecret("s", []byte("x")) })
	update(t, a, func(tx store.Tx) error { return tx.TouchLicense(ids[1], t0) })
	update(t, b, func(tx store.Tx) error { return changeLicense(tx, ids[0]) })
	none(t, ch)

	// Changes arrive in commit order.
	for _, id := range ids {
		update(t, a, func(tx store.Tx) error { return changeLicense(tx, id) })
	}
	for _, id := range ids {
		if c := next(t, ch); !equalChange(c, store.Change{Licenses: []string{id}}) {
			t.Fatalf("change = %+v, want license %s", c, id)
		}
	}

	// A lost connection is reported, and after reconnecting a reload.
	deadline := time.Now().Add(5 * time.Second)
	for b.ListenerPID() == 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	terminate(t, url, `SELECT $1::int`, int(b.ListenerPID()))
	if c := next(t, ch); !c.Disconnected {
		t.Fatalf("change after the listener's connection died = %+v, want Disconnected", c)
	}
	if c := next(t, ch); !c.All {
		t.Fatalf("change after reconnecting = %+v, want All", c)
	}
	update(t, a, func(tx store.Tx) error { return changeLicense(tx, ids[2]) })
	if c := next(t, ch); !equalChange(c, store.Change{Licenses: []string{ids[2]}}) {
		t.Fatalf("change after reconnecting = %+v, want license %s", c, ids[2])
	}
}

// A transaction touching thousands of licenses is announced in several
// notifications, each under PostgreSQL's payload limit.
func TestListenLargeChange(t *testing.T) {
	url := pgtest.URL(t)
	a, b := mustOpen(t, url), mustOpen(t, url)
	ids := seedLicenses(t, a, 2000)
	ch := feed(t, b)
	next(t, ch) // All
	update(t, a, func(tx store.Tx) error {
		for _, id := range ids {
			if err := changeLicense(tx, id); err != nil {
				return err
			}
		}
		return nil
	})
	var got []string
	for n := 0; len(got) < len(ids); n++ {
		c := next(t, ch)
		if c.All {
			t.Fatalf("notification %d = All, want license ids", n)
		}
		got = append(got, c.Licenses...)
	}
	slices.Sort(got)
	if !slices.Equal(got, ids) {
		t.Fatalf("announced %d licenses, want the %d touched", len(got), len(ids))
	}
}

func equalChange(a, b store.Change) bool {
	return a.All == b.All && a.Disconnected == b.Disconnected && slices.Equal(a.Licenses, b.Licenses) &&
		slices.Equal(a.Rings, b.Rings) && slices.Equal(a.Policies, b.Policies) && a.Products == b.Products &&
		a.Revocations == b.Revocations && a.Events == b.Events && a.ResignJobs == b.ResignJobs
}

// changeLicense makes a change other replicas must hear of (TouchLicense,
// bookkeeping only, is not announced).
func changeLicense(tx store.Tx, id string) error {
	l, err := tx.License(id)
	if err != nil {
		return err
	}
	l.UpdatedAt = l.UpdatedAt.Add(time.Microsecond)
	return tx.UpdateLicense(l)
}
