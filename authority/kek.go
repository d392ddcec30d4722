package authority

import (
	"context"
	"fmt"

	"github.com/keyward/keyward"
	"github.com/keyward/keyward/audit"
	"github.com/keyward/keyward/keys"
	"github.com/keyward/keyward/store"
)

// RewrapAll re-seals every private key and server secret under ring's
// primary KEK, in one transaction with one audit entry. Blobs already
// sealed with the primary are left alone, so a rerun after a crash is a
// no-op. It returns how many blobs were rewrapped. The server MUST NOT run
// on the store meanwhile with a KEK file lacking the new primary.
func RewrapAll(ctx context.Context, st store.Store, ring *keys.KEKRing, clock keyward.Clock) (int, error) {
	if clock == nil {
		clock = keyward.SystemClock{}
	}
	n := 0
	err := st.Update(ctx, func(tx store.Tx) error {
		n = 0
		ks, err := tx.Keys(store.KeyFilter{})
		if err != nil {
			return err
		}
		for _, k := range ks {
			if k.Sealed == nil || ring.SealedWithPrimary(k.Sealed) {
				continue
			}
			ad := []byte("kid:" + k.KID)
			plain, err := ring.Open(k.Sealed, ad)
			if err != nil {
				return fmt.Errorf("open key %s: %w", k.KID, err)
			}
			k.Sealed, err = ring.Seal(plain, ad)
			clear(plain)
			if err != nil {
				return err
			}
			if err := tx.UpdateKey(k); err != nil {
				return err
			}
			n++
		}
		sealed, err := tx.Secret(pepperSecret)
		if err != nil {
			return err
		}
		if !ring.SealedWithPrimary(sealed) {
			ad := []byte("secret:" + pepperSecret)
			plain, err := ring.Open(sealed, ad)
			if err != nil {
				return fmt.Errorf("open pepper: %w", err)
			}
			sealed, err = ring.Seal(plain, ad)
			clear(plain)
			if err != nil {
				return err
			}
			if err := tx.PutSecret(pepperSecret, sealed); err != nil {
				return err
			}
			n++
		}
		m, err := rewrapWebhookSecrets(tx, ring)
		if err != nil {
			return err
		}
		n += m
		if m, err = rewrapMFASecrets(tx, ring); err != nil {
			return err
		}
		n += m
		p := keyward.PrincipalFromContext(ctx)
		return audit.Append(tx, &keyward.AuditEntry{
			Time: clock.Now(), Actor: p.ID, ActorName: p.Name, Roles: p.Roles, Action: "kek.rotate", TargetType: "kek",
			TargetID: ring.Primary().ID(), After: "primary", Reason: fmt.Sprintf("rewrapped %d blobs", n),
		})
	})
	return n, err
}
