package authority_test

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/keyward/keyward"
	"github.com/keyward/keyward/authority"
)

// TestNoStaleValidation interleaves suspensions, reinstatements and a
// revocation with validations of the same key from several goroutines
// (which keep refilling the cache): the validation right after each change
// commits must see it.
func TestNoStaleValidation(t *testing.T) {
	// The lifecycle itself: no approvals, second factor or duties
	// (governance_test.go); and no usage counters: validating one key at
	// full speed is a burst, which the built-in policy suspends (abuse.go).
	f := newFixtureWith(t, func(c *authority.Config) { c.Dev, c.NoUsageCounters = true, true })
	f.product(t, "acme")
	is := f.issue(t, authority.IssueRequest{Product: "acme", Holder: "c", MaxMachines: intp(0)})
	key := string(is.Key)
	ctx := context.Background()

	var stop atomic.Bool
	var wg sync.WaitGroup
	var background atomic.Int64
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for !stop.Load() {
				if _, err := f.auth.Validate(ctx, authority.ValidateRequest{Key: key}); err != nil {
					t.Error(err)
					return
				}
				background.Add(1)
			}
		}()
	}
	check := func(step int, want string) {
		t.Helper()
		v, err := f.auth.Validate(ctx, authority.ValidateRequest{Key: key})
		if err != nil || v.Code != want {
			t.Fatalf("step %d: validation after commit = %v, %v; want %s", step, v.Code, err, want)
		}
	}
	for i := range 100 {
		if _, err := f.auth.TransitionLicense(f.ctx, is.License.ID, keyward.LicenseSuspend, ""); err != nil {
			t.Fatal(err)
		}
		check(i, keyward.CodeSuspended)
		if _, err := f.auth.TransitionLicense(f.ctx, is.License.ID, keyward.LicenseReinstate, ""); err != nil {
			t.Fatal(err)
		}
		check(i, keyward.CodeValid)
	}
	if _, err := f.auth.TransitionLicense(f.ctx, is.License.ID, keyward.LicenseRevoke, "abuse"); err != nil {
		t.Fatal(err)
	}
	check(-1, keyward.CodeRevoked)
	stop.Store(true)
	wg.Wait()
	if background.Load() == 0 {
		t.Fatal("background validators never ran")
	}
	t.Logf("%d background validations interleaved", background.Load())
}

// TestCacheSeesRotation: leases are signed by the new key right after a
// rotation commits, though the old signer was cached.
func TestCacheSeesRotation(t *testing.T) {
	f := newFixture(t)
	f.product(t, "acme")
	is := f.issue(t, authority.IssueRequest{Product: "acme", Holder: "c", MaxMachines: intp(1)})
	v := f.validate(t, string(is.Key), "m1")
	if v.Lease == nil {
		t.Fatal("no lease")
	}
	k, err := f.auth.RotateKey(f.ctx, authority.RotateRequest{Product: "acme"})
	if err != nil {
		t.Fatal(err)
	}
	v = f.validate(t, string(is.Key), "m1")
	if v.Lease == nil || !containsKID(v.Lease.Token, k.KID) {
		t.Fatalf("lease after rotation not signed by %s", k.KID)
	}
}
