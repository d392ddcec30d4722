package sdk

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/keyward/keyward"
	"github.com/keyward/keyward/licensekey"
)

// LeaseRefusedError is returned by LeaseKeeper when the server refuses to
// renew the lease: the license is no longer valid for this machine.
type LeaseRefusedError struct {
	Code string // the validation code, e.g. "REVOKED", "SUSPENDED", "TOO_MANY_MACHINES"
}

func (e *LeaseRefusedError) Error() string { return "keyward: lease refused: " + e.Code }

// ErrNoLease is returned by LeaseKeeper.Lease before the first lease and
// after the last one expired.
var ErrNoLease = errors.New("keyward: no valid lease")

// LeaseKeeper holds a lease token for one machine and renews it before it
// expires (spec 3: a revoked license gets no new lease, so revocation
// reaches a client that renews leases within one lease TTL even without the
// push channel). It stops, and drops the lease at once, when the server
// refuses a renewal.
type LeaseKeeper struct {
	Client      *Client
	Verifier    *Verifier // verifies every lease; required
	Key         string    // the license key (the credential)
	Fingerprint string    // this machine's fingerprint
	Product     string    // optional: the product the key must belong to
	// RenewAfter is the fraction of a lease's lifetime after which it is
	// renewed; zero means 2/3.
	RenewAfter float64
	// Now returns the current time; nil means time.Now.
	Now func() time.Time
	// OnRenew, if set, is called with each new verified lease.
	OnRenew func(token string, claims *keyward.LeaseClaims)
	// OnError, if set, is told each failed attempt; the keeper retries
	// with backoff while the current lease lasts and after.
	OnError func(error)

	mu      sync.Mutex
	token   string
	claims  *keyward.LeaseClaims
	refused error
}

// Lease returns the current lease if it has not expired; ErrNoLease, or
// the *LeaseRefusedError that stopped the keeper, otherwise.
func (k *LeaseKeeper) Lease() (string, *keyward.LeaseClaims, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.refused != nil {
		return "", nil, k.refused
	}
	if k.claims == nil || !k.now().Before(time.Unix(k.claims.Expiry, 0)) {
		return "", nil, ErrNoLease
	}
	return k.token, k.claims, nil
}

func (k *LeaseKeeper) now() time.Time {
	if k.Now != nil {
		return k.Now()
	}
	return time.Now()
}

// Run obtains a lease and renews it until ctx ends (returning ctx's error)
// or the server refuses (returning a *LeaseRefusedError). A malformed
// key fails at once with licensekey's error; network failures and leases
// that do not verify are retried with backoff.
func (k *LeaseKeeper) Run(ctx context.Context) error {
	if k.Verifier == nil || k.Client == nil {
		return errors.New("keyward: lease keeper: Client and Verifier are required")
	}
	after := k.RenewAfter
	if after <= 0 || after >= 1 {
		after = 2.0 / 3
	}
	failures := 0
	for {
		wait, err := k.renew(ctx, after)
		var refused *LeaseRefusedError
		switch {
		case errors.As(err, &refused):
			return err
		case errors.Is(err, licensekey.ErrFormat), errors.Is(err, licensekey.ErrChecksum):
			return err // no retry fixes a mistyped key
		case err != nil && ctx.Err() == nil:
			if k.OnError != nil {
				k.OnError(err)
			}
			failures++
			wait = min(30*time.Second, time.Duration(250<<min(failures, 7))*time.Millisecond)
			wait = wait/2 + rand.N(wait)
		default:
			failures = 0
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
	}
}

// renew validates once and returns how long to wait before the next renewal.
func (k *LeaseKeeper) renew(ctx context.Context, after float64) (time.Duration, error) {
	v, err := k.Client.Validate(ctx, k.Key, k.Fingerprint, k.Product)
	var ae *APIError
	if errors.As(err, &ae) && ae.Status >= 400 && ae.Status < 500 && ae.Status != 429 {
		e := &LeaseRefusedError{Code: ae.Code}
		k.refuse(e)
		return 0, e
	}
	if err != nil {
		return 0, err
	}
	if !v.Valid {
		e := &LeaseRefusedError{Code: v.Code}
		k.refuse(e)
		return 0, e
	}
	if v.Lease == nil {
		return 0, fmt.Errorf("keyward: lease keeper: the server validated the key but issued no lease (no fingerprint?)")
	}
	claims, err := k.Verifier.VerifyLease(v.Lease.Token)
	if err != nil {
		return 0, err
	}
	if claims.Fingerprint != k.Fingerprint {
		return 0, fmt.Errorf("keyward: lease keeper: lease is for fingerprint %q, not this machine's", claims.Fingerprint)
	}
	k.mu.Lock()
	k.token, k.claims = v.Lease.Token, claims
	k.mu.Unlock()
	if k.OnRenew != nil {
		k.OnRenew(v.Lease.Token, claims)
	}
	life := time.Unix(claims.Expiry, 0).Sub(time.Unix(claims.IssuedAt, 0))
	next := time.Unix(claims.IssuedAt, 0).Add(time.Duration(float64(life) * after))
	return max(next.Sub(k.now()), 100*time.Millisecond), nil
}

func (k *LeaseKeeper) refuse(err error) {
	k.mu.Lock()
	k.token, k.claims, k.refused = "", nil, err
	k.mu.Unlock()
}
