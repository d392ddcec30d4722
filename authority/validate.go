package authority

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"time"

	"github.com/keyward/keyward"
	"github.com/keyward/keyward/keys"
	"github.com/keyward/keyward/licensekey"
	"github.com/keyward/keyward/store"
)

// ValidateRequest is POST /v1/validate.
type ValidateRequest struct {
	Key         string
	Fingerprint string // optional; required when the license has a machine limit
	Product     string // optional: the product the caller expects (id or name)
	// Source is the client's address, for the usage counters' distinct
	// networks (truncated to /24 or /48 and hashed at once; never
	// stored). The zero Addr counts no network.
	Source netip.Addr
}

// Lease is a signed lease token for one machine.
type Lease struct {
	Token     string
	ExpiresAt time.Time
}

// Validation is the answer to a validation request.
type Validation struct {
	Valid   bool
	Code    string
	License *keyward.License // nil when the key is unknown
	Product *keyward.Product
	Machine *keyward.Machine
	Lease   *Lease
}

// ParseLicenseKey parses a license key string, turning format errors into
// EInvalidLicenseKey. The key is never echoed back.
func ParseLicenseKey(s string) (licensekey.Key, error) {
	k, err := licensekey.Parse(s)
	if err != nil {
		if errors.Is(err, licensekey.ErrChecksum) {
			return "", keyward.Errorf(keyward.EInvalidLicenseKey, "license key has a wrong check symbol (typo?)")
		}
		return "", keyward.Errorf(keyward.EInvalidLicenseKey, "license key is malformed: want KW1-XXXXX-XXXXX-XXXXX-XXXXX-XXXXX")
	}
	return k, nil
}

// Validate checks a license key and, with a fingerprint, activates the
// machine (up to the license's max_machines) and signs a lease. An unknown
// key is not an error: it is a Validation with code NOT_FOUND.
//
// A known key counts into its license's usage counters, and the policy's
// autoSuspend rules run over them: a validation that trips one answers
// SUSPENDED (abuse.go). Unknown keys count nowhere.
func (a *Authority) Validate(ctx context.Context, r ValidateRequest) (*Validation, error) {
	v, e, now, err := a.validate(ctx, r)
	if err != nil || e == nil || a.abuse == nil {
		return v, err
	}
	return a.observe(ctx, r, e, v, now), nil
}

// validate is Validate without the usage counters; e is what the key was
// found to be (nil: unknown) at now.
func (a *Authority) validate(ctx context.Context, r ValidateRequest) (*Validation, *cacheEntry, time.Time, error) {
	key, err := ParseLicenseKey(r.Key)
	if err != nil {
		return nil, nil, time.Time{}, err
	}
	if len(r.Fingerprint) > MaxFingerprintLen {
		return nil, nil, time.Time{}, keyward.Errorf(keyward.EInvalid, "fingerprint: at most %d characters", MaxFingerprintLen)
	}
	hash := a.keyedHash("license-key", string(key))
	var h [32]byte
	copy(h[:], hash)
	v := &Validation{}
	e, epoch := a.vc.get(h)
	if e == nil {
		err = a.store.View(ctx, func(tx store.Tx) error {
			var err error
			e, err = loadEntry(tx, hash)
			return err
		})
		if err != nil {
			return nil, nil, time.Time{}, err
		}
		if e != nil {
			a.vc.put(h, e, epoch)
		}
	}
	now := a.clock.Now()
	if !judge(e, now, r, v) {
		return v, e, now, nil
	}
	// Valid. Last-seen times go to the in-memory touch buffer (written in
	// batches by FlushTouches), so a validation without a new machine never
	// takes the writer lock.
	if e.touch(now) {
		a.touches.license(e.license.ID, now)
	}
	v.License.LastValidatedAt = &now
	if r.Fingerprint == "" {
		return v, e, now, nil
	}
	var done bool
	err = a.store.View(ctx, func(tx store.Tx) error {
		m, err := tx.MachineByFingerprint(e.license.ID, r.Fingerprint)
		if keyward.ErrorCode(err) == keyward.ENotFound {
			return nil // a new machine: the write path below
		} else if err != nil {
			return err
		}
		a.touches.machine(m.ID, now)
		m.LastSeenAt = now
		v.Machine = m
		v.Lease, err = a.signLease(ctx, tx, now, v.Product, v.License, m)
		done = err == nil
		return err
	})
	if err != nil || done {
		return v, e, now, err
	}
	// Do it again in a write transaction, so machine counting is serialized.
	err = a.store.Update(ctx, func(tx store.Tx) error {
		*v = Validation{}
		now := a.clock.Now()
		e, err := loadEntry(tx, hash)
		if err != nil || !judge(e, now, r, v) {
			return err
		}
		return a.admit(keyward.NewContextWithPrincipal(ctx, keyward.Principal{ID: "license:" + v.License.ID, Name: v.License.KeyPrefix}), tx, now, r, v)
	})
	return v, e, now, err
}

// loadEntry reads what validation needs for a key hash; nil if the key is
// unknown.
func loadEntry(tx store.Tx, hash []byte) (*cacheEntry, error) {
	rec, err := tx.LicenseKeyByHash(hash)
	if keyward.ErrorCode(err) == keyward.ENotFound {
		return nil, nil
	} else if err != nil {
		return nil, err
	}
	l, err := tx.License(rec.LicenseID)
	if err != nil {
		return nil, err
	}
	p, err := tx.Product(l.ProductID)
	if err != nil {
		return nil, err
	}
	return &cacheEntry{rec: *rec, license: *l, product: *p}, nil
}

// judge decides the validation code from e (nil: unknown key) at now and
// fills v with copies of the license and product. It reports whether the
// license is valid.
func judge(e *cacheEntry, now time.Time, r ValidateRequest, v *Validation) bool {
	if e == nil {
		v.Code = keyward.CodeNotFound
		return false
	}
	l, p := e.license, e.product
	if r.Product != "" && r.Product != p.ID && r.Product != p.Name {
		v.Code = keyward.CodeNotFound // the key is not a key of the product asked about
		return false
	}
	v.License, v.Product = &l, &p
	switch {
	case l.State == keyward.LicenseRevoked:
		v.Code = keyward.CodeRevoked
	case l.State == keyward.LicenseSuspended:
		v.Code = keyward.CodeSuspended
	case l.State == keyward.LicenseRetired:
		v.Code = keyward.CodeRetired
	case l.State == keyward.LicenseExpired || l.Expired(now):
		v.Code = keyward.CodeExpired
	case e.rec.GraceUntil != nil && !now.Before(*e.rec.GraceUntil):
		v.Code = keyward.CodeSuperseded
	case l.MaxMachines > 0 && r.Fingerprint == "":
		v.Code = keyward.CodeFingerprintRequired
	default:
		v.Valid, v.Code = true, keyward.CodeValid
	}
	return v.Valid
}

// admit records the validation: activates the machine if it is new and
// there is room, and signs a lease. Last-seen times go to the touch buffer.
func (a *Authority) admit(ctx context.Context, tx store.Tx, now time.Time, r ValidateRequest, v *Validation) error {
	l := v.License
	a.touches.license(l.ID, now)
	l.LastValidatedAt = &now
	if r.Fingerprint == "" {
		return nil
	}
	m, err := tx.MachineByFingerprint(l.ID, r.Fingerprint)
	switch {
	case err == nil:
		a.touches.machine(m.ID, now)
		m.LastSeenAt = now
	case keyward.ErrorCode(err) == keyward.ENotFound:
		if l.MaxMachines > 0 {
			ms, err := tx.Machines(l.ID)
			if err != nil {
				return err
			}
			if len(ms) >= l.MaxMachines {
				v.Valid, v.Code = false, keyward.CodeTooManyMachines
				return nil
			}
		}
		id, err := a.newID("mch")
		if err != nil {
			return err
		}
		m = &keyward.Machine{ID: id, LicenseID: l.ID, Fingerprint: r.Fingerprint, CreatedAt: now, LastSeenAt: now}
		if err := tx.CreateMachine(m); err != nil {
			return err
		}
		if err := a.record(ctx, tx, now, change{
			action: "machine.activate", event: "machine.activated", targetType: "machine", targetID: id,
			after: "active", details: map[string]any{"license_id": l.ID},
		}); err != nil {
			return err
		}
	default:
		return err
	}
	v.Machine = m
	lease, err := a.signLease(ctx, tx, now, v.Product, l, m)
	if err != nil {
		return err
	}
	v.Lease = lease
	return nil
}

func (a *Authority) signLease(ctx context.Context, tx store.Tx, now time.Time, p *keyward.Product, l *keyward.License, m *keyward.Machine) (*Lease, error) {
	pol, err := a.policy(ctx, p.ID)
	if err != nil {
		return nil, err
	}
	exp := now.Add(pol.LeaseTTL)
	if l.ExpiresAt != nil && l.ExpiresAt.Before(exp) {
		exp = *l.ExpiresAt
	}
	jti, err := a.newID("lse")
	if err != nil {
		return nil, err
	}
	signer, err := a.activeSigner(tx, keyward.LicenseRing(p.ID))
	if err != nil {
		return nil, err
	}
	tok, err := keys.SignJWSClaims(signer, keyward.TypLease, keyward.LeaseClaims{
		Issuer: a.issuer, Subject: l.ID, Audience: p.Name, IssuedAt: now.Unix(), NotBefore: now.Unix(),
		Expiry: exp.Unix(), ID: jti, Machine: m.ID, Fingerprint: m.Fingerprint,
	})
	if err != nil {
		return nil, fmt.Errorf("sign lease: %w", err)
	}
	return &Lease{Token: tok, ExpiresAt: time.Unix(exp.Unix(), 0).UTC()}, nil
}

// Certificate is a checked-out license certificate.
type Certificate struct {
	Token     string
	KID       string
	JTI       string
	IssuedAt  time.Time
	ExpiresAt time.Time
}

// Checkout signs a fresh license certificate for an active license with
// the product's active key, and records it as the license's current
// certificate (what bulk re-signing and key exposure count, resign.go).
func (a *Authority) Checkout(ctx context.Context, licenseID string) (*Certificate, error) {
	var out *Certificate
	err := a.store.Update(ctx, func(tx store.Tx) error {
		l, err := tx.License(licenseID)
		if err != nil {
			return err
		}
		now := a.clock.Now()
		if out, err = a.certify(ctx, tx, now, l); err != nil {
			return err
		}
		return tx.PutCertificates([]*store.Certificate{{
			LicenseID: l.ID, ProductID: l.ProductID, KID: out.KID, JTI: out.JTI,
			IssuedAt: out.IssuedAt, ExpiresAt: out.ExpiresAt, Token: out.Token,
		}})
	})
	return out, err
}

// CheckoutByKey is Checkout for a caller proving possession of the license
// key (shipped apps hold no vendor token); source is the client's address
// (see ValidateRequest.Source): the check-out counts as a validation.
func (a *Authority) CheckoutByKey(ctx context.Context, key, product string, source netip.Addr) (*Certificate, error) {
	v, err := a.Validate(ctx, ValidateRequest{Key: key, Product: product, Source: source})
	if err != nil {
		return nil, err
	}
	if v.License == nil {
		return nil, keyward.Errorf(keyward.ENotFound, "license key not found")
	}
	if !v.Valid && v.Code != keyward.CodeFingerprintRequired {
		return nil, keyward.Errorf(keyward.ELicenseInactive, "license is not valid: %s", v.Code)
	}
	return a.Checkout(ctx, v.License.ID)
}

func (a *Authority) certify(ctx context.Context, tx store.Tx, now time.Time, l *keyward.License) (*Certificate, error) {
	if l.State != keyward.LicenseActive {
		return nil, keyward.Errorf(keyward.ELicenseInactive, "license %s is %s: no certificate is issued for it", l.ID, l.State)
	}
	if l.Expired(now) {
		return nil, keyward.Errorf(keyward.ELicenseInactive, "license %s expired at %s", l.ID, l.ExpiresAt.Format(time.RFC3339))
	}
	p, err := tx.Product(l.ProductID)
	if err != nil {
		return nil, err
	}
	pol, err := a.policy(ctx, p.ID)
	if err != nil {
		return nil, err
	}
	jti, err := a.newID("crt")
	if err != nil {
		return nil, err
	}
	signer, err := a.activeSigner(tx, keyward.LicenseRing(p.ID))
	if err != nil {
		return nil, err
	}
	return a.signCertificate(signer, p, pol, l, now, now.Add(pol.CertificateTTL), jti)
}

// signCertificate signs l's certificate issued at now, expiring at exp or
// at the license's own expiry if that is earlier. Checkout and bulk
// re-signing (resign.go) both sign through it.
func (a *Authority) signCertificate(signer keys.Signer, p *keyward.Product, pol *keyward.Policy, l *keyward.License, now, exp time.Time, jti string) (*Certificate, error) {
	var licExp *int64
	if l.ExpiresAt != nil {
		e := l.ExpiresAt.Unix()
		licExp = &e
		if l.ExpiresAt.Before(exp) {
			exp = *l.ExpiresAt
		}
	}
	ents := l.Entitlements
	if ents == nil {
		ents = []string{}
	}
	tok, err := keys.SignJWSClaims(signer, keyward.TypCertificate, keyward.CertificateClaims{
		Issuer: a.issuer, Subject: l.ID, Audience: p.Name, IssuedAt: now.Unix(), NotBefore: now.Unix(),
		Expiry: exp.Unix(), ID: jti,
		License: keyward.LicenseInfo{Policy: pol.Version, Entitlements: ents, ExpiresAt: licExp, MaxMachines: l.MaxMachines, Holder: l.Holder},
	})
	if err != nil {
		return nil, fmt.Errorf("sign certificate: %w", err)
	}
	return &Certificate{Token: tok, KID: signer.KID(), JTI: jti, IssuedAt: time.Unix(now.Unix(), 0).UTC(), ExpiresAt: time.Unix(exp.Unix(), 0).UTC()}, nil
}
