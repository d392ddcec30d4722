package authority_test

import (
	"context"
	"log/slog"
	"slices"
	"strings"
	"testing"

	"github.com/keyward/keyward"
	"github.com/keyward/keyward/authority"
	"github.com/keyward/keyward/store"
)

// Two authorities on one store stand for two replicas: b's commits leave
// a's in-memory state stale until a hears of them through ApplyRemote.

func replicaPair(t *testing.T) (f *fixture, b *authority.Authority) {
	t.Helper()
	f = newFixtureWith(t, func(c *authority.Config) { c.Dev, c.NoUsageCounters = true, true })
	b, err := authority.New(context.Background(), authority.Config{
		Store: f.store, KEKs: f.ring, Clock: f.clock, Dev: true, NoUsageCounters: true, Logger: slog.New(slog.DiscardHandler),
	})
	if err != nil {
		t.Fatal(err)
	}
	return f, b
}

func TestApplyRemoteLicenses(t *testing.T) {
	f, b := replicaPair(t)
	f.product(t, "acme")
	is := f.issue(t, authority.IssueRequest{Product: "acme", Holder: "c", MaxMachines: intp(0)})
	key, id := string(is.Key), is.License.ID
	want := func(step, code string) {
		t.Helper()
		if v := f.validate(t, key, ""); v.Code != code {
			t.Fatalf("%s: validation = %s, want %s", step, v.Code, code)
		}
	}
	transition := func(action keyward.LicenseAction) {
		t.Helper()
		if _, err := b.TransitionLicense(f.ctx, id, action, ""); err != nil {
			t.Fatal(err)
		}
	}
	// The first validation touches last_validated_at (which empties the
	// entry), the second fills the cache.
	want("issued", keyward.CodeValid)
	want("issued", keyward.CodeValid)
	transition(keyward.LicenseSuspend)
	want("suspended by b, unheard", keyward.CodeValid) // the cache at work
	if err := f.auth.ApplyRemote(f.ctx, store.Change{Licenses: []string{id}}); err != nil {
		t.Fatal(err)
	}
	want("suspended by b, heard", keyward.CodeSuspended)

	// While the feed is down the cache is bypassed.
	if err := f.auth.ApplyRemote(f.ctx, store.Change{Disconnected: true}); err != nil {
		t.Fatal(err)
	}
	transition(keyward.LicenseReinstate)
	want("reinstated by b, feed down", keyward.CodeValid)
	transition(keyward.LicenseSuspend)
	want("suspended by b, feed down", keyward.CodeSuspended)
	// All ends it: the cache works again.
	if err := f.auth.ApplyRemote(f.ctx, store.Change{All: true}); err != nil {
		t.Fatal(err)
	}
	want("after reconnect", keyward.CodeSuspended)
	want("after reconnect", keyward.CodeSuspended)
	transition(keyward.LicenseReinstate)
	want("reinstated by b, unheard", keyward.CodeSuspended)
	if err := f.auth.ApplyRemote(f.ctx, store.Change{All: true}); err != nil {
		t.Fatal(err)
	}
	want("reinstated by b, reloaded", keyward.CodeValid)
}

func TestApplyRemotePolicies(t *testing.T) {
	f, b := replicaPair(t)
	p := f.product(t, "acme-pro")
	if _, err := b.ApplyPolicy(f.ctx, p.ID, examplePolicy(t), "applied on b"); err != nil {
		t.Fatal(err)
	}
	if pol, _ := f.auth.Policy(f.ctx, p.ID); pol.Version != 0 {
		t.Fatalf("before the change is heard: v%d, want the built-in v0", pol.Version)
	}
	if err := f.auth.ApplyRemote(f.ctx, store.Change{Policies: []string{p.ID}}); err != nil {
		t.Fatal(err)
	}
	if pol, _ := f.auth.Policy(f.ctx, p.ID); pol.Version != 1 {
		t.Fatalf("after the change is heard: v%d, want 1", pol.Version)
	}
}

// A key compromised on b stops signing on a once a hears of its ring.
func TestApplyRemoteRings(t *testing.T) {
	f, b := replicaPair(t)
	p := f.product(t, "acme")
	is := f.issue(t, authority.IssueRequest{Product: "acme", Holder: "c", MaxMachines: intp(2)})
	key := string(is.Key)
	lease := func(fp string) string {
		t.Helper()
		v := f.validate(t, key, fp)
		if v.Lease == nil {
			t.Fatalf("validation %s: no lease", v.Code)
		}
		return v.Lease.Token
	}
	ring := keyward.LicenseRing(p.ID)
	old := activeKeys(t, f, p.ID)[0].KID
	if tok := lease("m1"); !containsKID(tok, old) {
		t.Fatalf("lease not signed by %s", old)
	}
	if !slices.Contains(f.auth.OpenedKeys(), old) {
		t.Fatalf("opened keys %v: want %s after signing with it", f.auth.OpenedKeys(), old)
	}
	if _, err := b.RevokeKey(f.ctx, old, "key_compromise"); err != nil {
		t.Fatal(err)
	}
	if err := f.auth.ApplyRemote(f.ctx, store.Change{Rings: []string{ring}}); err != nil {
		t.Fatal(err)
	}
	if slices.Contains(f.auth.OpenedKeys(), old) {
		t.Fatalf("compromised key %s still opened in memory after the change was heard", old)
	}
	tok := lease("m2")
	if containsKID(tok, old) || !strings.Contains(tok, ".") {
		t.Fatalf("lease after the compromise was heard is still signed by %s", old)
	}
}
