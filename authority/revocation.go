package authority

import (
	"context"
	"time"

	"github.com/keyward/keyward"
	"github.com/keyward/keyward/keys"
	"github.com/keyward/keyward/store"
)

// The revocation registry (docs/revocation.md): every revocation-relevant
// change — a license suspended, reinstated or revoked, a signing key
// compromised — appends a row to the registry in the same transaction as
// the change, its audit entry and its outbox event. The revocation package
// builds signed snapshots, deltas and push events from those rows.

// registryReason is the reason a registry row publishes: only the stable
// reason codes, never free text (a suspension's note may say more than the
// public should read).
func registryReason(reason string) string {
	if keyward.ValidRevocationReason(reason) {
		return reason
	}
	return ""
}

// registerLicenseChange appends the registry row of a license transition
// if the transition is revocation-relevant (suspend, reinstate, revoke).
func (a *Authority) registerLicenseChange(tx store.Tx, now time.Time, l *keyward.License, action keyward.LicenseAction) error {
	switch action {
	case keyward.LicenseSuspend, keyward.LicenseReinstate, keyward.LicenseRevoke:
	default:
		return nil
	}
	return tx.AppendRevocation(&keyward.Revocation{
		ProductID: l.ProductID, Kind: keyward.RevocationLicense, Subject: l.ID,
		State: string(l.State), Reason: registryReason(l.Reason), Time: now,
	})
}

// registerKeyCompromise appends the registry row of a compromised key.
func (a *Authority) registerKeyCompromise(tx store.Tx, now time.Time, k *keyward.SigningKey) error {
	return tx.AppendRevocation(&keyward.Revocation{
		ProductID: k.ProductID, Kind: keyward.RevocationKey, Subject: k.KID,
		State: string(keyward.KeyCompromised), Reason: registryReason(k.Reason), Time: now,
	})
}

// RevocationRows returns up to limit (0 = no limit) registry rows with a
// seq greater than after, ordered by seq: those of product productID (an
// id) and those without a product, or every row when productID is "".
func (a *Authority) RevocationRows(ctx context.Context, productID string, after int64, limit int) ([]*keyward.Revocation, error) {
	if after < 0 || limit < 0 {
		return nil, keyward.Errorf(keyward.EInvalid, "after %d, limit %d: want non-negative numbers", after, limit)
	}
	var out []*keyward.Revocation
	err := a.store.View(ctx, func(tx store.Tx) error {
		var err error
		out, err = tx.Revocations(store.RevocationFilter{ProductID: productID, AfterSeq: after, Limit: limit})
		return err
	})
	return out, err
}

// RevocationHead returns the registry's highest seq (0 when empty).
func (a *Authority) RevocationHead(ctx context.Context) (int64, error) {
	var head int64
	err := a.store.View(ctx, func(tx store.Tx) error {
		var err error
		head, err = tx.RevocationHead()
		return err
	})
	return head, err
}

// RevocationSigner returns the signer of the registry ring's active key,
// read from the store at each call so a rotated or compromised registry
// key never signs again. The revocation package signs snapshots, deltas
// and push events with it; nothing else of the key leaves the authority.
func (a *Authority) RevocationSigner(ctx context.Context) (keys.Signer, error) {
	var s keys.Signer
	err := a.store.View(ctx, func(tx store.Tx) error {
		var err error
		s, err = a.activeSigner(tx, keyward.RegistryRing)
		return err
	})
	return s, err
}
