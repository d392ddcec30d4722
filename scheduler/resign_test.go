package scheduler_test

import (
	"context"
	"errors"
	"slices"
	"testing"

	"github.com/keyward/keyward"
	"github.com/keyward/keyward/authority"
	"github.com/keyward/keyward/store"
)

// resignFailStore fails the failAt-th ResignCertificates call of its
// transactions (counted across them).
type resignFailStore struct {
	store.Store
	calls, failAt int
}

type resignFailTx struct {
	store.Tx
	s *resignFailStore
}

var errResignWrite = errors.New("injected re-sign write failure")

func (s *resignFailStore) Update(ctx context.Context, fn func(store.Tx) error) error {
	return s.Store.Update(ctx, func(tx store.Tx) error { return fn(resignFailTx{Tx: tx, s: s}) })
}

func (x resignFailTx) ResignCertificates(cs []*store.Certificate) error {
	if x.s.calls++; x.s.calls == x.s.failAt {
		return errResignWrite
	}
	return x.Tx.ResignCertificates(cs)
}

// TestResignBatchPipeline: a batch larger than a read chunk (the batch is
// read 32, then 128 at a time, signed while the next chunk is read, and
// written chunk by chunk) re-signs every eligible certificate once, skips
// suspended licenses, moves the cursor to the last candidate read; a write
// failing in the middle of a batch leaves nothing of it behind.
func TestResignBatchPipeline(t *testing.T) {
	const n, batch = 450, 300
	e := newEnv(t, true)
	if _, err := e.auth.CreateProduct(e.ctx, "acme"); err != nil {
		t.Fatal(err)
	}
	ids := e.issue(t, "acme", n)
	e.checkoutAll(t, ids)
	suspended := 0
	for i := 5; i < n; i += 37 {
		if _, err := e.auth.TransitionLicense(e.ctx, ids[i], keyward.LicenseSuspend, "test"); err != nil {
			t.Fatal(err)
		}
		suspended++
	}
	c0, err := e.auth.CurrentCertificate(e.ctx, ids[0])
	if err != nil {
		t.Fatal(err)
	}
	old := c0.KID
	if _, err := e.auth.RotateKey(e.ctx, authority.RotateRequest{Product: "acme", Reason: "test"}); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()

	// The second chunk's write fails: the batch rolls back whole.
	fs := &resignFailStore{Store: e.st, failAt: 2}
	a2, _ := e.open(t, fs)
	if _, err := a2.ResignBatch(ctx, batch); !errors.Is(err, errResignWrite) {
		t.Fatalf("ResignBatch with a failing write = %v, want %v", err, errResignWrite)
	}
	j, err := e.auth.ResignJob(e.ctx, old)
	if err != nil {
		t.Fatal(err)
	}
	if j.Done != 0 || j.Cursor != "" || j.State != store.ResignRunning {
		t.Fatalf("after a failed batch: job done %d, cursor %q, state %s; want 0, \"\", running", j.Done, j.Cursor, j.State)
	}
	if x, err := e.auth.KeyExposure(e.ctx, old); err != nil || x.LiveCertificates != n-suspended {
		t.Fatalf("after a failed batch: KeyExposure(%s) = %+v, %v; want %d live certificates", old, x, err, n-suspended)
	}

	resigned, batches := 0, 0
	for {
		p, err := e.auth.ResignBatch(ctx, batch)
		if err != nil {
			t.Fatalf("ResignBatch = %v", err)
		}
		if p == nil {
			break
		}
		batches++
		resigned += p.Resigned
		if p.Finished {
			j = p.Job
		}
	}
	if resigned != n-suspended || j.Done != n-suspended || j.Skipped != suspended || j.State != store.ResignDone {
		t.Errorf("re-signed %d, job done %d, skipped %d, state %s; want %d, %d, %d, done", resigned, j.Done, j.Skipped, j.State, n-suspended, n-suspended, suspended)
	}
	if last := slices.Max(ids); batches != 2 || j.Cursor != last {
		t.Errorf("%d batches, cursor %s; want 2, %s (the last license)", batches, j.Cursor, last)
	}
	if x, err := e.auth.KeyExposure(e.ctx, old); err != nil || x.LiveCertificates != 0 {
		t.Errorf("KeyExposure(%s) = %+v, %v; want no live certificate", old, x, err)
	}
	s := e.invariants(t, "after re-sign")
	if len(s.certs) != n-suspended {
		t.Errorf("%d live certificates of active licenses, want %d", len(s.certs), n-suspended)
	}
	for _, c := range s.certs {
		if c.KID == old {
			t.Errorf("certificate of %s still signed by %s", c.LicenseID, old)
		}
	}
}
