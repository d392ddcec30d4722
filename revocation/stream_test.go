package revocation_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/keyward/keyward"
	"github.com/keyward/keyward/revocation"
	"github.com/keyward/keyward/sdk"
	"github.com/keyward/keyward/store"
)

// next waits for the subscription's next event.
func next(t *testing.T, sub *revocation.Subscription) revocation.Event {
	t.Helper()
	deadline := time.After(5 * time.Second)
	for {
		ready := sub.Ready()
		ev, ok, err := sub.Next(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if ok {
			return ev
		}
		select {
		case <-ready:
		case <-deadline:
			t.Fatal("no event within 5s")
		}
	}
}

// none checks that the subscription has nothing to say once the registry
// has caught up.
func none(t *testing.T, e *env, sub *revocation.Subscription) {
	t.Helper()
	e.sync(t)
	if ev, ok, err := sub.Next(context.Background()); ok || err != nil {
		t.Fatalf("unexpected event %+v, %v", ev, err)
	}
}

func TestSubscriptionChainsAndFilters(t *testing.T) {
	e := newEnv(t, revocation.Config{})
	e.product(t, "acme")
	e.product(t, "other")
	a, b := e.license(t, "acme"), e.license(t, "other")
	v := e.view(t, "acme")
	snap, err := e.reg.Snapshot(context.Background(), v)
	if err != nil {
		t.Fatal(err)
	}
	cache := e.cache(t, "acme")
	if err := cache.ApplySnapshot(snap.Token); err != nil {
		t.Fatal(err)
	}
	sub, err := e.reg.Subscribe(context.Background(), v, -1)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	if sub.Seq() != snap.Seq {
		t.Fatalf("subscription from now starts at %d, want the view's seq %d", sub.Seq(), snap.Seq)
	}
	e.transition(t, b.ID, keyward.LicenseRevoke, "abuse") // other product: not for acme
	e.transition(t, a.ID, keyward.LicenseSuspend, "")
	ev := next(t, sub)
	d, err := revocation.DecodeDelta(payload(t, ev.Token))
	if err != nil {
		t.Fatal(err)
	}
	if d.FromSeq != snap.Seq || d.ToSeq != ev.ID || len(d.Licenses) != 1 || d.Licenses[0].ID != a.ID || d.Product != "acme" {
		t.Fatalf("event %+v: delta %+v; want acme's suspension, from %d", ev, d, snap.Seq)
	}
	if err := cache.ApplyDelta(ev.Token); err != nil {
		t.Fatal(err)
	}
	none(t, e, sub)

	// A compromise of the active registry key concerns every view; the
	// event is signed by its replacement.
	ks, err := e.auth.Keys(context.Background(), store.KeyFilter{Ring: keyward.RegistryRing, States: []keyward.KeyState{keyward.KeyActive}})
	if err != nil {
		t.Fatal(err)
	}
	reg := ks[0]
	if _, err := e.auth.RevokeKey(e.rctx, reg.KID, "key_compromise"); err != nil {
		t.Fatal(err)
	}
	ev2 := next(t, sub)
	d2, _ := revocation.DecodeDelta(payload(t, ev2.Token))
	if d2.FromSeq != ev.ID || len(d2.Keys) != 1 || d2.Keys[0].KID != reg.KID {
		t.Fatalf("after the registry key compromise: %+v, want key %s from %d", d2, reg.KID, ev.ID)
	}
	if err := cache.ApplyDelta(ev2.Token); !errors.Is(err, sdk.ErrUnknownKey) {
		t.Fatalf("event signed by the new registry key, before the cache trusts it: %v, want ErrUnknownKey", err)
	}
	if err := cache.SetTrust(e.jwks(t)); err != nil {
		t.Fatal(err)
	}
	if err := cache.ApplyDelta(ev2.Token); err != nil {
		t.Fatal(err)
	}
	// The compromised registry key can no longer sign for the cache.
	if _, ok := tokenKID(t, snap.Token); ok != reg.KID {
		t.Fatalf("the first snapshot was signed by %s, want %s", ok, reg.KID)
	}
	if err := cache.ApplySnapshot(snap.Token); !errors.Is(err, sdk.ErrKeyCompromised) {
		t.Errorf("snapshot signed by the compromised registry key: %v, want ErrKeyCompromised", err)
	}
	if err := cache.Check(a.ID, reg.KID); err == nil {
		t.Errorf("Check with the compromised registry kid passed")
	}
}

// TestSubscriptionReplaysFromStore: a subscriber far behind the in-memory
// window is served from the store, without gaps, then live.
func TestSubscriptionReplaysFromStore(t *testing.T) {
	e := newEnv(t, revocation.Config{Window: 2})
	e.product(t, "acme")
	var ids []string
	for i := 0; i < 7; i++ {
		l := e.license(t, "acme")
		ids = append(ids, l.ID)
		e.transition(t, l.ID, keyward.LicenseSuspend, "")
	}
	e.sync(t)
	sub, err := e.reg.Subscribe(context.Background(), e.view(t, "acme"), 0)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	var got []string
	from := int64(0)
	for len(got) < len(ids) {
		ev := next(t, sub)
		d, err := revocation.DecodeDelta(payload(t, ev.Token))
		if err != nil {
			t.Fatal(err)
		}
		if d.FromSeq != from {
			t.Fatalf("event from %d, want %d (chained)", d.FromSeq, from)
		}
		from = d.ToSeq
		for _, l := range d.Licenses {
			got = append(got, l.ID)
		}
	}
	for i := range ids {
		if got[i] != ids[i] {
			t.Fatalf("replayed %v, want %v", got, ids)
		}
	}
	none(t, e, sub)
	l := e.license(t, "acme")
	e.transition(t, l.ID, keyward.LicenseRevoke, "abuse")
	if d, _ := revocation.DecodeDelta(payload(t, next(t, sub).Token)); d.FromSeq != from || d.Licenses[0].ID != l.ID {
		t.Fatalf("live event after replay: %+v", d)
	}
}

func TestSubscribeRefuses(t *testing.T) {
	e := newEnv(t, revocation.Config{MaxSubscribers: 1})
	e.product(t, "acme")
	v := e.view(t, "acme")
	sub, err := e.reg.Subscribe(context.Background(), v, -1)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.reg.Subscribe(context.Background(), v, -1); keyward.ErrorCode(err) != keyward.EUnavailable {
		t.Errorf("second subscriber over the limit: %v, want UNAVAILABLE", err)
	}
	sub.Close()
	sub.Close() // idempotent
	if e.reg.Subscribers() != 0 {
		t.Errorf("Subscribers() = %d after Close, want 0", e.reg.Subscribers())
	}
	if _, err := e.reg.Subscribe(context.Background(), v, 99); keyward.ErrorCode(err) != keyward.EInvalid {
		t.Errorf("resume point ahead of the registry: %v, want INVALID_ARGUMENT", err)
	}
	if _, err := e.reg.ResolveView(context.Background(), "nope"); keyward.ErrorCode(err) != keyward.ENotFound {
		t.Errorf("unknown product: %v, want NOT_FOUND", err)
	}
}

func tokenKID(t *testing.T, token string) (*revocation.Token, string) {
	t.Helper()
	tok, err := revocation.Parse(token, 0)
	if err != nil {
		t.Fatal(err)
	}
	return tok, tok.Header.Kid
}
