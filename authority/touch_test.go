package authority_test

import (
	"testing"
	"time"

	"github.com/keyward/keyward/authority"
)

// TestTouchesAreBuffered: validations record last-seen times in memory
// (no write on the hot path); FlushTouches writes them.
func TestTouchesAreBuffered(t *testing.T) {
	f := newFixture(t)
	f.product(t, "acme")
	is := f.issue(t, authority.IssueRequest{Product: "acme", Holder: "c", MaxMachines: intp(1)})
	a0, _ := f.counts(t)
	v := f.validate(t, string(is.Key), "m1") // activates m1: one audited write
	if !v.Valid {
		t.Fatal(v.Code)
	}
	f.clock.Advance(time.Hour)
	for range 5 {
		f.validate(t, string(is.Key), "m1")
	}
	if a1, _ := f.counts(t); a1 != a0+1 {
		t.Errorf("validations wrote %d audit entries, want 1 (the machine activation)", a1-a0)
	}
	l, err := f.auth.License(f.ctx, is.License.ID)
	if err != nil {
		t.Fatal(err)
	}
	if l.LastValidatedAt != nil && l.LastValidatedAt.Equal(f.clock.Now()) {
		t.Fatal("last_validated_at written on the hot path")
	}
	n, err := f.auth.FlushTouches(f.ctx)
	if err != nil || n != 2 {
		t.Fatalf("FlushTouches = %d, %v; want 2 (license and machine)", n, err)
	}
	l, _ = f.auth.License(f.ctx, is.License.ID)
	if l.LastValidatedAt == nil || !l.LastValidatedAt.Equal(f.clock.Now()) {
		t.Errorf("after flush, last_validated_at = %v, want %v", l.LastValidatedAt, f.clock.Now())
	}
	ms, _ := f.auth.Machines(f.ctx, is.License.ID)
	if len(ms) != 1 || !ms[0].LastSeenAt.Equal(f.clock.Now()) {
		t.Errorf("after flush, machine last_seen_at = %v", ms[0].LastSeenAt)
	}
	if n, _ := f.auth.FlushTouches(f.ctx); n != 0 {
		t.Errorf("second flush wrote %d", n)
	}
}

// TestTouchOncePerMinute: a license validated many times a minute has its
// last-seen time recorded once a minute (the first validation after a
// minute without one), never more than a minute behind.
func TestTouchOncePerMinute(t *testing.T) {
	f := newFixture(t)
	f.product(t, "acme")
	is := f.issue(t, authority.IssueRequest{Product: "acme", Holder: "c", MaxMachines: intp(0)})
	stored := func() time.Time {
		t.Helper()
		if _, err := f.auth.FlushTouches(f.ctx); err != nil {
			t.Fatal(err)
		}
		l, err := f.auth.License(f.ctx, is.License.ID)
		if err != nil || l.LastValidatedAt == nil {
			t.Fatalf("license: %v, last_validated_at %v", err, l)
		}
		return *l.LastValidatedAt
	}
	f.validate(t, string(is.Key), "")
	first := f.clock.Now()
	f.validate(t, string(is.Key), "") // fills the cache
	for range 5 {
		f.clock.Advance(10 * time.Second)
		if v := f.validate(t, string(is.Key), ""); !v.Valid || !v.License.LastValidatedAt.Equal(f.clock.Now()) {
			t.Fatalf("validation answers last_validated_at %v, want now", v.License.LastValidatedAt)
		}
	}
	if got := stored(); !got.Equal(first) {
		t.Errorf("50 s later: stored %v, want the first validation's %v", got, first)
	}
	f.clock.Advance(10 * time.Second)
	f.validate(t, string(is.Key), "")
	if got := stored(); !got.Equal(f.clock.Now()) {
		t.Errorf("a minute later: stored %v, want %v", got, f.clock.Now())
	}
}
