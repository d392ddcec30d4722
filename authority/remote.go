package authority

import (
	"context"
	"errors"
	"fmt"

	"github.com/keyward/keyward"
	"github.com/keyward/keyward/store"
)

// Several servers on one shared store (PostgreSQL replicas): each keeps in
// memory what it read from the store — the validation cache, the active
// signer of each ring, opened private keys, compiled policies — and another
// server's commits make that stale. The server wiring feeds what the others
// commit (store.ChangeFeed) to ApplyRemote; commits made through this
// authority are handled as they commit (trackedStore).

// ApplyRemote brings the authority's in-memory state up to date with a
// change another process committed to the shared store:
//
//   - Licenses: their validation-cache entries are dropped.
//   - Rings: their cached active signers are dropped, and private keys that
//     are now destroyed or compromised are erased from memory, as the
//     process that destroyed them erased its own copy.
//   - Policies (and Products): the policies in force are reloaded.
//   - All: everything above, for every license, ring and product; it also
//     ends a Disconnected period.
//   - Disconnected: until the next All, changes by others go unheard, so
//     the validation cache is bypassed (every validation reads the store)
//     and fills nothing.
//
// Revocation and Events changes concern the revocation registry and the
// webhook dispatcher, which the server wakes itself. ApplyRemote is safe
// for concurrent use; errors are from reading the store (policies, key
// states), after the caches were dropped.
func (a *Authority) ApplyRemote(ctx context.Context, c store.Change) error {
	if c.Disconnected {
		a.vc.setBypass(true)
		return nil
	}
	t := &touched{all: c.All || c.Products}
	for _, id := range c.Licenses {
		t.license(id)
	}
	for _, r := range c.Rings {
		t.ring(r)
	}
	if !t.empty() {
		a.vc.invalidate(t)
	}
	if c.All {
		a.vc.setBypass(false)
	}
	var errs []error
	if c.All || len(c.Rings) > 0 {
		errs = append(errs, a.forgetUnusable(ctx))
	}
	if c.All || c.Products || len(c.Policies) > 0 {
		errs = append(errs, a.ReloadPolicies(ctx))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("apply remote change: %w", err)
	}
	return nil
}

// setBypass turns the bypass on or off; either way the cache is emptied
// and its epoch moves, so no fill that began before is stored.
func (c *validationCache) setBypass(on bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.bypass = on
	c.epoch++
	clear(c.byHash)
	clear(c.byLicense)
	clear(c.signers)
}

// forgetUnusable erases the opened private keys whose key is now destroyed
// or compromised (or gone) in the store.
func (a *Authority) forgetUnusable(ctx context.Context) error {
	a.mu.Lock()
	kids := make([]string, 0, len(a.signers))
	for kid := range a.signers {
		kids = append(kids, kid)
	}
	a.mu.Unlock()
	if len(kids) == 0 {
		return nil
	}
	var gone []string
	err := a.store.View(ctx, func(tx store.Tx) error {
		gone = gone[:0]
		for _, kid := range kids {
			k, err := tx.Key(kid)
			switch {
			case keyward.ErrorCode(err) == keyward.ENotFound:
				gone = append(gone, kid)
			case err != nil:
				return err
			case k.State == keyward.KeyDestroyed || k.State == keyward.KeyCompromised:
				gone = append(gone, kid)
			}
		}
		return nil
	})
	for _, kid := range gone {
		a.forget(kid)
	}
	return err
}
