package authority

import (
	"context"
	"fmt"
	"time"

	"github.com/keyward/keyward"
	"github.com/keyward/keyward/keys"
	"github.com/keyward/keyward/store"
)

// generateKey makes a new key pair for ring, sealed under the primary KEK
// with the kid as additional data. The private key is kept open in the
// signer cache only once it is committed and used.
func (a *Authority) generateKey(alg string, ring string, purpose keyward.Purpose, productID string, now time.Time) (*keyward.SigningKey, error) {
	algo, err := keys.ParseAlgorithm(alg)
	if err != nil {
		return nil, keyward.Errorf(keyward.EInvalid, "unknown algorithm %q (want Ed25519 or ES256)", alg)
	}
	priv, err := keys.Generate(algo, a.rand)
	if err != nil {
		return nil, fmt.Errorf("generate %s key: %w", alg, err)
	}
	defer priv.Zero()
	der, err := keys.MarshalPrivate(priv)
	if err != nil {
		return nil, fmt.Errorf("marshal private key: %w", err)
	}
	kid := priv.KID()
	sealed, err := a.keks.Seal(der, []byte("kid:"+kid))
	clear(der)
	if err != nil {
		return nil, fmt.Errorf("seal private key: %w", err)
	}
	pub, err := keys.MarshalPublic(priv.Public())
	if err != nil {
		return nil, fmt.Errorf("marshal public key: %w", err)
	}
	return &keyward.SigningKey{
		KID: kid, Ring: ring, Purpose: purpose, ProductID: productID, Algorithm: string(algo),
		State: keyward.KeyPending, PublicKey: pub, Sealed: sealed, CreatedAt: now,
	}, nil
}

// openKey returns the private key of k, from the cache or by unsealing it.
func (a *Authority) openKey(k *keyward.SigningKey) (*keys.PrivateKey, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if p, ok := a.signers[k.KID]; ok {
		return p, nil
	}
	if k.Sealed == nil {
		return nil, keyward.Errorf(keyward.EIllegalTransition, "key %s has no private material", k.KID)
	}
	der, err := a.keks.Open(k.Sealed, []byte("kid:"+k.KID))
	if err != nil {
		return nil, fmt.Errorf("unseal key %s: %w", k.KID, err)
	}
	p, err := keys.ParsePrivate(der)
	clear(der)
	if err != nil {
		return nil, fmt.Errorf("parse key %s: %w", k.KID, err)
	}
	if p.KID() != k.KID {
		return nil, fmt.Errorf("key %s: sealed material has kid %s", k.KID, p.KID())
	}
	a.signers[k.KID] = p
	return p, nil
}

// forget drops an opened private key from memory.
func (a *Authority) forget(kid string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if p, ok := a.signers[kid]; ok {
		p.Zero()
		delete(a.signers, kid)
	}
}

// activeSigner returns the signer of ring's active key.
func (a *Authority) activeSigner(tx store.Tx, ring string) (keys.Signer, error) {
	// A transaction that changed the ring must read its own writes.
	tt, tracked := tx.(trackingTx)
	useCache := !tracked || !tt.t.rings[ring]
	var epoch uint64
	if useCache {
		var s keys.Signer
		if s, epoch = a.vc.signer(ring); s != nil {
			return s, nil
		}
	}
	ks, err := tx.Keys(store.KeyFilter{Ring: ring, States: []keyward.KeyState{keyward.KeyActive}})
	if err != nil {
		return nil, err
	}
	if len(ks) != 1 {
		return nil, keyward.Errorf(keyward.EUnavailable, "ring %s has %d active keys", ring, len(ks))
	}
	s, err := a.openKey(ks[0])
	if err == nil && useCache {
		a.vc.putSigner(ring, s, epoch)
	}
	return s, err
}

func (a *Authority) ensureRegistryKey(ctx context.Context) error {
	return a.store.Update(ctx, func(tx store.Tx) error {
		ks, err := tx.Keys(store.KeyFilter{Ring: keyward.RegistryRing, States: []keyward.KeyState{keyward.KeyActive}})
		if err != nil || len(ks) > 0 {
			return err
		}
		now := a.clock.Now()
		ctx := keyward.NewContextWithPrincipal(ctx, systemPrincipal)
		_, err = a.addKey(ctx, tx, now, registryAlgorithm, keyward.RegistryRing, keyward.PurposeRegistry, "", true, "bootstrap")
		return err
	})
}

var systemPrincipal = keyward.Principal{ID: "system", Name: "keyward server"}

// decided says who or what authorized a change, for its audit entry: the
// approvals by other principals, and the policy version and rule of a
// decision the policy engine took (lifecycle.go).
type decided struct {
	approvalIDs   []string
	policyVersion int
	rule          string
}

// addKey generates a key in ring and, if activate, makes it the active key,
// retiring the previous active key in the same transaction.
func (a *Authority) addKey(ctx context.Context, tx store.Tx, now time.Time, alg, ring string, purpose keyward.Purpose, productID string, activate bool, reason string) (*keyward.SigningKey, error) {
	return a.addKeyDecided(ctx, tx, now, alg, ring, purpose, productID, activate, reason, decided{})
}

// addKeyDecided is addKey recording what decided it.
func (a *Authority) addKeyDecided(ctx context.Context, tx store.Tx, now time.Time, alg, ring string, purpose keyward.Purpose, productID string, activate bool, reason string, dec decided) (*keyward.SigningKey, error) {
	k, err := a.generateKey(alg, ring, purpose, productID, now)
	if err != nil {
		return nil, err
	}
	if err := tx.CreateKey(k); err != nil {
		return nil, err
	}
	if err := a.record(ctx, tx, now, change{
		action: "key.create", event: "key.created", targetType: "key", targetID: k.KID,
		after: string(keyward.KeyPending), reason: reason,
		details:       map[string]any{"ring": ring, "algorithm": k.Algorithm, "purpose": purpose},
		policyVersion: dec.policyVersion, rule: dec.rule,
	}); err != nil {
		return nil, err
	}
	if activate {
		if err := a.activateDecided(ctx, tx, now, k, reason, dec); err != nil {
			return nil, err
		}
	}
	return k, nil
}

// activate makes k (pending) the active key of its ring, retiring the
// current active key first so the ring never has two.
func (a *Authority) activate(ctx context.Context, tx store.Tx, now time.Time, k *keyward.SigningKey, reason string) error {
	return a.activateDecided(ctx, tx, now, k, reason, decided{})
}

// activateDecided is activate recording what decided it.
func (a *Authority) activateDecided(ctx context.Context, tx store.Tx, now time.Time, k *keyward.SigningKey, reason string, dec decided) error {
	to, err := keyward.KeyTransition(k.State, keyward.KeyActivate)
	if err != nil {
		return err
	}
	cur, err := tx.Keys(store.KeyFilter{Ring: k.Ring, States: []keyward.KeyState{keyward.KeyActive}})
	if err != nil {
		return err
	}
	for _, old := range cur {
		if err := a.transitionKeyDecided(ctx, tx, now, old, keyward.KeyRetire, "superseded by "+k.KID, decided{policyVersion: dec.policyVersion, rule: dec.rule}); err != nil {
			return err
		}
	}
	before := k.State
	k.State, k.ActivatedAt, k.Reason = to, &now, reason
	if err := tx.UpdateKey(k); err != nil {
		return err
	}
	return a.record(ctx, tx, now, change{
		action: "key.activate", event: "key.activated", targetType: "key", targetID: k.KID,
		before: string(before), after: string(to), reason: reason, details: map[string]any{"ring": k.Ring},
		policyVersion: dec.policyVersion, rule: dec.rule,
	})
}

// transitionKey applies a retire, destroy or compromise step to k.
func (a *Authority) transitionKey(ctx context.Context, tx store.Tx, now time.Time, k *keyward.SigningKey, action keyward.KeyAction, reason string) error {
	return a.transitionKeyApproved(ctx, tx, now, k, action, reason, nil)
}

// transitionKeyApproved is transitionKey recording the approvals that
// authorized the step (a destruction confirmed by a second principal).
func (a *Authority) transitionKeyApproved(ctx context.Context, tx store.Tx, now time.Time, k *keyward.SigningKey, action keyward.KeyAction, reason string, approvalIDs []string) error {
	return a.transitionKeyDecided(ctx, tx, now, k, action, reason, decided{approvalIDs: approvalIDs})
}

// transitionKeyDecided is transitionKey recording what decided it. A
// license key that stops signing (retired or compromised) gets a re-sign
// job for the certificates it signed, in the same transaction (resign.go).
func (a *Authority) transitionKeyDecided(ctx context.Context, tx store.Tx, now time.Time, k *keyward.SigningKey, action keyward.KeyAction, reason string, dec decided) error {
	to, err := keyward.KeyTransition(k.State, action)
	if err != nil {
		return err
	}
	before := k.State
	k.State, k.Reason = to, reason
	var event string
	switch action {
	case keyward.KeyRetire:
		k.RetiredAt, event = &now, "key.retired"
	case keyward.KeyDestroy:
		k.DestroyedAt, k.Sealed, event = &now, nil, "key.destroyed"
	case keyward.KeyCompromise:
		k.CompromisedAt, event = &now, "key.compromised"
	default:
		return fmt.Errorf("transitionKey: unexpected action %s", action)
	}
	if err := tx.UpdateKey(k); err != nil {
		return err
	}
	if action == keyward.KeyCompromise {
		if err := a.registerKeyCompromise(tx, now, k); err != nil {
			return err
		}
	}
	if err := a.record(ctx, tx, now, change{
		action: "key." + string(action), event: event, targetType: "key", targetID: k.KID,
		before: string(before), after: string(to), reason: reason, details: map[string]any{"ring": k.Ring},
		approvalIDs: dec.approvalIDs, policyVersion: dec.policyVersion, rule: dec.rule,
	}); err != nil {
		return err
	}
	if action == keyward.KeyRetire || action == keyward.KeyCompromise {
		return a.startResign(ctx, tx, now, k)
	}
	return nil
}

// Keys lists signing keys matching f.
func (a *Authority) Keys(ctx context.Context, f store.KeyFilter) ([]*keyward.SigningKey, error) {
	var out []*keyward.SigningKey
	err := a.store.View(ctx, func(tx store.Tx) error {
		if f.ProductID != "" {
			p, err := tx.Product(f.ProductID)
			if err != nil {
				return err
			}
			f.ProductID = p.ID
		}
		var err error
		out, err = tx.Keys(f)
		return err
	})
	return out, err
}

// Key returns one signing key.
func (a *Authority) Key(ctx context.Context, kid string) (*keyward.SigningKey, error) {
	var k *keyward.SigningKey
	err := a.store.View(ctx, func(tx store.Tx) error {
		var err error
		k, err = tx.Key(kid)
		return err
	})
	return k, err
}

// RotateRequest asks for a new key in a ring.
type RotateRequest struct {
	Product   string // product id or name; "" with Registry
	Registry  bool   // rotate the server's registry ring instead
	Algorithm string // "" = policy default
	Pending   bool   // only pre-publish the new key; activate it later
	Reason    string
}

// RotateKey generates a new key in the ring. Unless Pending, the new key
// becomes active and the previous active key is retired in the same
// transaction.
func (a *Authority) RotateKey(ctx context.Context, r RotateRequest) (*keyward.SigningKey, error) {
	if r.Registry == (r.Product != "") {
		return nil, keyward.Errorf(keyward.EInvalid, "name exactly one of a product or the registry ring")
	}
	var out *keyward.SigningKey
	err := a.store.Update(ctx, func(tx store.Tx) error {
		now := a.clock.Now()
		ring, purpose, productID := keyward.RegistryRing, keyward.PurposeRegistry, ""
		pol := keyward.DefaultPolicy()
		if !r.Registry {
			p, err := tx.Product(r.Product)
			if err != nil {
				return err
			}
			ring, purpose, productID = keyward.LicenseRing(p.ID), keyward.PurposeLicense, p.ID
			if pol, err = a.policy(ctx, p.ID); err != nil {
				return err
			}
		}
		alg := r.Algorithm
		if alg == "" {
			alg = pol.Algorithm
			if r.Registry {
				alg = registryAlgorithm
			}
		}
		if r.Registry && alg != registryAlgorithm {
			return keyward.Errorf(keyward.EInvalid, "the registry ring must be %s: it signs audit checkpoints as C2SP signed notes, which support only %s (algorithm %q refused)", registryAlgorithm, registryAlgorithm, alg)
		}
		if !contains(pol.AllowedAlgorithms, alg) {
			return keyward.Errorf(keyward.EInvalid, "algorithm %q is not allowed by policy (allowed: %v)", alg, pol.AllowedAlgorithms)
		}
		reason := r.Reason
		if reason == "" {
			reason = "manual rotation"
		}
		var err error
		if out, err = a.addKey(ctx, tx, now, alg, ring, purpose, productID, !r.Pending, reason); err != nil || !r.Pending {
			return err
		}
		return a.announceRotation(ctx, tx, now, out, decided{})
	})
	return out, err
}

// ActivateKey makes a pending key active, retiring the ring's current one.
func (a *Authority) ActivateKey(ctx context.Context, kid, reason string) (*keyward.SigningKey, error) {
	return a.updateKey(ctx, kid, func(tx store.Tx, now time.Time, k *keyward.SigningKey) error {
		return a.activate(ctx, tx, now, k, reason)
	})
}

// RetireKey makes a key verify-only. Retiring the active key hands over to
// the ring's newest pending key in the same transaction; with none, it
// fails with EKeyIsActive (rotate instead), so a ring never has no signer.
func (a *Authority) RetireKey(ctx context.Context, kid, reason string) (*keyward.SigningKey, error) {
	return a.updateKey(ctx, kid, func(tx store.Tx, now time.Time, k *keyward.SigningKey) error {
		if k.State != keyward.KeyActive {
			_, err := keyward.KeyTransition(k.State, keyward.KeyRetire)
			return err
		}
		pending, err := tx.Keys(store.KeyFilter{Ring: k.Ring, States: []keyward.KeyState{keyward.KeyPending}})
		if err != nil {
			return err
		}
		if len(pending) == 0 {
			return keyward.Errorf(keyward.EKeyIsActive, "key %s is the active key of %s and no pending key can take over: rotate instead", kid, k.Ring)
		}
		next := pending[len(pending)-1]
		if err := a.activate(ctx, tx, now, next, "retire "+kid); err != nil {
			return err
		}
		retired, err := tx.Key(kid) // activate retired it through its own copy
		if err != nil {
			return err
		}
		*k = *retired
		return nil
	})
}

// RevokeKey marks a key compromised. If it was the active key, a
// replacement is generated and activated in the same transaction.
func (a *Authority) RevokeKey(ctx context.Context, kid, reason string) (*keyward.SigningKey, error) {
	if reason == "" {
		reason = "key_compromise"
	}
	if !keyward.ValidRevocationReason(reason) {
		return nil, keyward.Errorf(keyward.EInvalid, "unknown reason %q (want one of %v)", reason, keyward.RevocationReasons())
	}
	k, err := a.updateKey(ctx, kid, func(tx store.Tx, now time.Time, k *keyward.SigningKey) error {
		wasActive := k.State == keyward.KeyActive
		if err := a.keyDuties(ctx, tx, k, PermKeyRevoke); err != nil {
			return err
		}
		if err := a.transitionKey(ctx, tx, now, k, keyward.KeyCompromise, reason); err != nil {
			return err
		}
		if !wasActive {
			return nil
		}
		pol := keyward.DefaultPolicy()
		if k.ProductID != "" {
			var err error
			if pol, err = a.policy(ctx, k.ProductID); err != nil {
				return err
			}
		}
		alg := pol.Algorithm
		if k.Purpose == keyward.PurposeRegistry {
			alg = registryAlgorithm
		}
		_, err := a.addKey(ctx, tx, now, alg, k.Ring, k.Purpose, k.ProductID, true, "replaces compromised "+kid)
		return err
	})
	if err == nil {
		a.forget(kid)
	}
	return k, a.refused(ctx, PermKeyRevoke, "key", kid, err)
}

// DestroyKey erases a retired or pending key's private material, or,
// where the policy needs approvals, files a request and leaves the key as
// it is until a second principal grants it (DestroyKeyWithApproval).
func (a *Authority) DestroyKey(ctx context.Context, kid, reason string) (*keyward.SigningKey, error) {
	k, _, err := a.DestroyKeyWithApproval(ctx, kid, reason)
	return k, err
}

func (a *Authority) updateKey(ctx context.Context, kid string, fn func(tx store.Tx, now time.Time, k *keyward.SigningKey) error) (*keyward.SigningKey, error) {
	var out *keyward.SigningKey
	err := a.store.Update(ctx, func(tx store.Tx) error {
		k, err := tx.Key(kid)
		if err != nil {
			return err
		}
		if err := fn(tx, a.clock.Now(), k); err != nil {
			return err
		}
		out = k
		return nil
	})
	return out, err
}

// JWKS returns the published keys: pending, active, and retired keys whose
// verify window (the longer of the policy's verifyWindow and
// certificateTTL, counted from retirement) is still open. With product set,
// only that product's license keys, plus the registry keys.
func (a *Authority) JWKS(ctx context.Context, product string) (keys.JWKS, error) {
	set := keys.JWKS{Keys: []keys.JWK{}}
	err := a.store.View(ctx, func(tx store.Tx) error {
		now := a.clock.Now()
		names := map[string]string{}
		ps, err := tx.Products()
		if err != nil {
			return err
		}
		var only string
		for _, p := range ps {
			names[p.ID] = p.Name
			if product != "" && (p.ID == product || p.Name == product) {
				only = p.ID
			}
		}
		if product != "" && only == "" {
			return keyward.Errorf(keyward.ENotFound, "product %q not found", product)
		}
		ks, err := tx.Keys(store.KeyFilter{States: []keyward.KeyState{keyward.KeyPending, keyward.KeyActive, keyward.KeyRetired}})
		if err != nil {
			return err
		}
		for _, k := range ks {
			if only != "" && k.ProductID != "" && k.ProductID != only {
				continue
			}
			if k.State == keyward.KeyRetired {
				pol := keyward.DefaultPolicy()
				if k.ProductID != "" {
					if pol, err = a.policy(ctx, k.ProductID); err != nil {
						return err
					}
				}
				if k.RetiredAt != nil && !now.Before(publishedUntil(k, pol)) {
					continue
				}
			}
			pub, err := keys.ParsePublic(k.PublicKey)
			if err != nil {
				return fmt.Errorf("key %s: %w", k.KID, err)
			}
			j := pub.JWK()
			j.State, j.Purpose, j.Product = string(k.State), string(k.Purpose), names[k.ProductID]
			set.Keys = append(set.Keys, j)
		}
		return nil
	})
	return set, err
}

// publishedUntil is when retired key k leaves the JWKS under pol: the
// longer of the verify window and the certificate TTL after retirement,
// so every certificate k signed expires while k is still published.
func publishedUntil(k *keyward.SigningKey, pol *keyward.Policy) time.Time {
	return k.RetiredAt.Add(max(pol.VerifyWindow, pol.CertificateTTL))
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
