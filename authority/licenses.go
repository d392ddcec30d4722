package authority

import (
	"context"
	"fmt"
	"maps"
	"regexp"
	"slices"
	"time"

	"github.com/keyward/keyward"
	"github.com/keyward/keyward/licensekey"
	"github.com/keyward/keyward/store"
)

var (
	productName = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,62}$`)
	holderID    = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._:@+-]{0,127}$`)
	entitlement = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$`)
)

// Limits on license fields.
const (
	MaxEntitlements   = 64
	MaxMachinesLimit  = 100000
	MaxFingerprintLen = 256
)

// CreateProduct creates a product and its license-key ring with one active
// key of the policy's algorithm.
func (a *Authority) CreateProduct(ctx context.Context, name string) (*keyward.Product, error) {
	if !productName.MatchString(name) {
		return nil, keyward.Errorf(keyward.EInvalid, "product name %q: want 1-63 characters of a-z, 0-9 and '-', starting with a letter or digit", name)
	}
	var out *keyward.Product
	err := a.store.Update(ctx, func(tx store.Tx) error {
		now := a.clock.Now()
		id, err := a.newID("prd")
		if err != nil {
			return err
		}
		p := &keyward.Product{ID: id, Name: name, CreatedAt: now}
		if err := tx.CreateProduct(p); err != nil {
			return err
		}
		if err := a.record(ctx, tx, now, change{action: "product.create", event: "product.created", targetType: "product", targetID: id, after: "created", details: map[string]any{"name": name}}); err != nil {
			return err
		}
		pol, err := a.policy(ctx, id)
		if err != nil {
			return err
		}
		if _, err := a.addKey(ctx, tx, now, pol.Algorithm, keyward.LicenseRing(id), keyward.PurposeLicense, id, true, "product created"); err != nil {
			return err
		}
		out = p
		return nil
	})
	return out, err
}

// Product returns a product by id or name.
func (a *Authority) Product(ctx context.Context, idOrName string) (*keyward.Product, error) {
	var out *keyward.Product
	err := a.store.View(ctx, func(tx store.Tx) error {
		var err error
		out, err = tx.Product(idOrName)
		return err
	})
	return out, err
}

// Products lists every product (a product-scoped principal's only).
func (a *Authority) Products(ctx context.Context) ([]*keyward.Product, error) {
	var out []*keyward.Product
	err := a.store.View(ctx, func(tx store.Tx) error {
		var err error
		out, err = tx.Products()
		return err
	})
	out = slices.DeleteFunc(out, func(p *keyward.Product) bool { return outOfScope(ctx, p.ID) })
	return out, err
}

// IssueRequest describes a new license.
type IssueRequest struct {
	Product      string // id or name
	Holder       string // pseudonymous customer id
	ExpiresAt    *time.Time
	Entitlements []string
	MaxMachines  *int // nil = policy default; 0 = no machine limit
}

// Issued is a new license and its key. Key is shown exactly once: the
// server keeps only its keyed hash.
type Issued struct {
	License *keyward.License
	Key     licensekey.Key
}

// IssueLicense creates an active license with a fresh license key.
func (a *Authority) IssueLicense(ctx context.Context, r IssueRequest) (*Issued, error) {
	out, err := a.IssueLicenses(ctx, r, 1)
	if err != nil {
		return nil, err
	}
	return out[0], nil
}

// MaxBatch bounds one batch issuance.
const MaxBatch = 10000

// IssueLicenses creates count identical licenses (each with its own key)
// in one transaction, with one audit entry and one event per license.
func (a *Authority) IssueLicenses(ctx context.Context, r IssueRequest, count int) ([]*Issued, error) {
	if count < 1 || count > MaxBatch {
		return nil, keyward.Errorf(keyward.EInvalid, "count %d: want 1 to %d", count, MaxBatch)
	}
	if !holderID.MatchString(r.Holder) {
		return nil, keyward.Errorf(keyward.EInvalid, "holder %q: want a pseudonymous id of 1-128 characters (letters, digits, . _ : @ + -)", r.Holder)
	}
	ents, err := normalizeEntitlements(r.Entitlements)
	if err != nil {
		return nil, err
	}
	if r.MaxMachines != nil && (*r.MaxMachines < 0 || *r.MaxMachines > MaxMachinesLimit) {
		return nil, keyward.Errorf(keyward.EInvalid, "max_machines %d: want 0 (no limit) to %d", *r.MaxMachines, MaxMachinesLimit)
	}
	// Keys, their keyed hashes and the license ids are made before the
	// transaction; the ids sorted, so that the licenses, their audit
	// entries and events go into the indexes on id in order.
	out := make([]*Issued, count)
	hashes := make([][]byte, count)
	ids := make([]string, count)
	for i := range out {
		key, err := licensekey.Generate(a.rand)
		if err != nil {
			return nil, fmt.Errorf("generate license key: %w", err)
		}
		out[i] = &Issued{Key: key}
		hashes[i] = a.keyedHash("license-key", string(key))
		if ids[i], err = a.newID("lic"); err != nil {
			return nil, err
		}
	}
	slices.Sort(ids)
	err = a.store.Update(ctx, func(tx store.Tx) error {
		now := a.clock.Now()
		p, err := tx.Product(r.Product)
		if err != nil {
			return err
		}
		if outOfScope(ctx, p.ID) {
			return scopeNotFound("product", r.Product)
		}
		if err := a.admitMFA(ctx, tx, now, p.ID, PermLicenseIssue); err != nil {
			return err
		}
		pol, err := a.policy(ctx, p.ID)
		if err != nil {
			return err
		}
		var expires *time.Time
		switch {
		case r.ExpiresAt != nil:
			if !r.ExpiresAt.After(now) {
				return keyward.Errorf(keyward.EInvalid, "expires_at %s is not in the future", r.ExpiresAt.UTC().Format(time.RFC3339))
			}
			t := r.ExpiresAt.UTC()
			expires = &t
		case pol.LicenseDuration > 0:
			t := now.Add(pol.LicenseDuration)
			expires = &t
		}
		maxMachines := pol.MaxMachines
		if r.MaxMachines != nil {
			maxMachines = *r.MaxMachines
		}
		issuedBy := keyward.PrincipalFromContext(ctx).ID
		ls := make([]*keyward.License, count)
		lks := make([]*keyward.LicenseKey, count)
		cs := make([]change, count)
		for i, is := range out {
			l := &keyward.License{
				ID: ids[i], ProductID: p.ID, Holder: r.Holder, State: keyward.LicenseActive, KeyPrefix: is.Key.Prefix(),
				Entitlements: ents, MaxMachines: maxMachines, ExpiresAt: expires, CreatedAt: now, UpdatedAt: now,
				IssuedBy: issuedBy,
			}
			ls[i] = l
			lks[i] = &keyward.LicenseKey{Hash: hashes[i], LicenseID: l.ID, Prefix: l.KeyPrefix, CreatedAt: now}
			cs[i] = change{
				action: "license.issue", event: "license.issued", targetType: "license", targetID: l.ID,
				after: string(l.State), details: issueDetails{Product: p.Name, Holder: l.Holder, KeyPrefix: l.KeyPrefix, PolicyVersion: pol.Version},
			}
		}
		if count == 1 {
			if err := tx.CreateLicense(ls[0]); err != nil {
				return err
			}
			if err := tx.CreateLicenseKey(lks[0]); err != nil {
				return err
			}
		} else {
			if err := tx.CreateLicenses(ls); err != nil {
				return err
			}
			if err := tx.CreateLicenseKeys(lks); err != nil {
				return err
			}
		}
		if err := a.recordAll(ctx, tx, now, cs); err != nil {
			return err
		}
		for i, is := range out {
			is.License = ls[i]
		}
		return nil
	})
	if err != nil {
		return nil, a.refused(ctx, PermLicenseIssue, "product", r.Product, err)
	}
	return out, nil
}

// issueDetails are the audit details (and event data details) of an
// issued license. A struct rather than a map: a batch encodes one per
// license, and the fields, in key order, encode to the same JSON as the map
// they replace.
type issueDetails struct {
	Holder        string `json:"holder"`
	KeyPrefix     string `json:"key_prefix"`
	PolicyVersion int    `json:"policy_version"`
	Product       string `json:"product"`
}

func normalizeEntitlements(in []string) ([]string, error) {
	if len(in) > MaxEntitlements {
		return nil, keyward.Errorf(keyward.EInvalid, "%d entitlements: at most %d", len(in), MaxEntitlements)
	}
	out := make([]string, 0, len(in))
	for _, e := range in {
		if !entitlement.MatchString(e) {
			return nil, keyward.Errorf(keyward.EInvalid, "entitlement %q: want 1-64 characters of letters, digits, . _ : -", e)
		}
		out = append(out, e)
	}
	slices.Sort(out)
	return slices.Compact(out), nil
}

// License returns one license.
func (a *Authority) License(ctx context.Context, id string) (*keyward.License, error) {
	var out *keyward.License
	err := a.store.View(ctx, func(tx store.Tx) error {
		var err error
		out, err = tx.License(id)
		return err
	})
	return out, err
}

// Licenses lists licenses; f.ProductID may be a product name.
func (a *Authority) Licenses(ctx context.Context, f store.LicenseFilter) ([]*keyward.License, error) {
	if f.State != "" && !slices.Contains(keyward.LicenseStates(), f.State) {
		return nil, keyward.Errorf(keyward.EInvalid, "unknown license state %q", f.State)
	}
	var out []*keyward.License
	err := a.store.View(ctx, func(tx store.Tx) error {
		if f.ProductID != "" {
			p, err := tx.Product(f.ProductID)
			if err != nil {
				return err
			}
			f.ProductID = p.ID
		}
		var err error
		out, err = tx.Licenses(f)
		return err
	})
	return out, err
}

// TransitionLicense applies suspend, reinstate, revoke, retire or expire.
// Revocation needs a reason from keyward.RevocationReasons and goes
// through RevokeLicense: where the policy needs approvals it suspends the
// license and files an approval request instead of revoking. Reinstating
// a license cancels its pending revocation request. Every transition is
// subject to the policy's separation of duties (EDutyConflict).
func (a *Authority) TransitionLicense(ctx context.Context, id string, action keyward.LicenseAction, reason string) (*keyward.License, error) {
	switch action {
	case keyward.LicenseRevoke:
		l, _, err := a.RevokeLicense(ctx, id, reason)
		return l, err
	case keyward.LicenseSuspend, keyward.LicenseReinstate, keyward.LicenseRetire, keyward.LicenseExpire:
	default:
		return nil, keyward.Errorf(keyward.EInvalid, "unknown license action %q", action)
	}
	if len(reason) > 1024 {
		return nil, keyward.Errorf(keyward.EInvalid, "reason: at most 1024 characters")
	}
	perm := "license." + string(action)
	var out *keyward.License
	err := a.store.Update(ctx, func(tx store.Tx) error {
		now := a.clock.Now()
		l, err := tx.License(id)
		if err != nil {
			return err
		}
		if _, err := keyward.LicenseTransition(l.State, action); err != nil {
			return err
		}
		pol, err := a.policy(ctx, l.ProductID)
		if err != nil {
			return err
		}
		if err := checkDuties(ctx, tx, pol, perm, l.ID); err != nil {
			return err
		}
		if err := a.applyLicense(ctx, tx, now, l, action, reason, nil, nil); err != nil {
			return err
		}
		if action == keyward.LicenseReinstate {
			if err := a.cancelApprovals(ctx, tx, now, PermLicenseRevoke, l.ID, "the license was reinstated"); err != nil {
				return err
			}
		}
		out = l
		return nil
	})
	return out, a.refused(ctx, perm, "license", id, err)
}

// applyLicense moves l by action and writes the change, its registry row,
// audit entry (with the approvals that authorized it) and event.
func (a *Authority) applyLicense(ctx context.Context, tx store.Tx, now time.Time, l *keyward.License, action keyward.LicenseAction, reason string, approvalIDs []string, details map[string]any) error {
	return a.applyLicenseDecided(ctx, tx, now, l, action, reason, decided{approvalIDs: approvalIDs}, details)
}

// applyLicenseDecided is applyLicense recording what decided it (the
// policy version and rule of a scheduled expiry or retirement).
func (a *Authority) applyLicenseDecided(ctx context.Context, tx store.Tx, now time.Time, l *keyward.License, action keyward.LicenseAction, reason string, dec decided, details map[string]any) error {
	to, err := keyward.LicenseTransition(l.State, action)
	if err != nil {
		return err
	}
	before := l.State
	l.State, l.Reason, l.UpdatedAt = to, reason, now
	if err := tx.UpdateLicense(l); err != nil {
		return err
	}
	if err := a.registerLicenseChange(tx, now, l, action); err != nil {
		return err
	}
	d := map[string]any{"product_id": l.ProductID}
	maps.Copy(d, details)
	return a.record(ctx, tx, now, change{
		action: "license." + string(action), event: licenseEvents[action], targetType: "license", targetID: l.ID,
		before: string(before), after: string(to), reason: reason, details: d,
		approvalIDs: dec.approvalIDs, policyVersion: dec.policyVersion, rule: dec.rule,
	})
}

var licenseEvents = map[keyward.LicenseAction]string{
	keyward.LicenseSuspend:   "license.suspended",
	keyward.LicenseReinstate: "license.reinstated",
	keyward.LicenseRevoke:    "license.revoked",
	keyward.LicenseRetire:    "license.retired",
	keyward.LicenseExpire:    "license.expired",
	keyward.LicenseReissue:   "license.reissued",
}

// ReissueLicense gives an active license a new key. The old key keeps
// validating for grace (nil = the policy's reissueGrace), then gets
// SUPERSEDED.
func (a *Authority) ReissueLicense(ctx context.Context, id string, grace *time.Duration) (*Issued, error) {
	if grace != nil && (*grace < 0 || *grace > 365*24*time.Hour) {
		return nil, keyward.Errorf(keyward.EInvalid, "grace %s: want 0 to 365d", grace)
	}
	key, err := licensekey.Generate(a.rand)
	if err != nil {
		return nil, fmt.Errorf("generate license key: %w", err)
	}
	var out *keyward.License
	err = a.store.Update(ctx, func(tx store.Tx) error {
		now := a.clock.Now()
		l, err := tx.License(id)
		if err != nil {
			return err
		}
		if _, err := keyward.LicenseTransition(l.State, keyward.LicenseReissue); err != nil {
			return err
		}
		g := grace
		if g == nil {
			pol, err := a.policy(ctx, l.ProductID)
			if err != nil {
				return err
			}
			g = &pol.ReissueGrace
		}
		if err := tx.SupersedeLicenseKeys(l.ID, now, now.Add(*g)); err != nil {
			return err
		}
		if err := tx.CreateLicenseKey(&keyward.LicenseKey{Hash: a.keyedHash("license-key", string(key)), LicenseID: l.ID, Prefix: key.Prefix(), CreatedAt: now}); err != nil {
			return err
		}
		oldPrefix := l.KeyPrefix
		l.KeyPrefix, l.UpdatedAt = key.Prefix(), now
		if err := tx.UpdateLicense(l); err != nil {
			return err
		}
		out = l
		return a.record(ctx, tx, now, change{
			action: "license.reissue", event: "license.reissued", targetType: "license", targetID: l.ID,
			before: string(l.State), after: string(l.State),
			details: map[string]any{"old_key_prefix": oldPrefix, "key_prefix": l.KeyPrefix, "grace_until": now.Add(*g)},
		})
	})
	if err != nil {
		return nil, err
	}
	return &Issued{License: out, Key: key}, nil
}

// Machines lists the machines activated on a license.
func (a *Authority) Machines(ctx context.Context, licenseID string) ([]*keyward.Machine, error) {
	var out []*keyward.Machine
	err := a.store.View(ctx, func(tx store.Tx) error {
		if _, err := tx.License(licenseID); err != nil {
			return err
		}
		var err error
		out, err = tx.Machines(licenseID)
		return err
	})
	return out, err
}

// DeactivateMachine removes a machine from a license, freeing its slot.
func (a *Authority) DeactivateMachine(ctx context.Context, licenseID, machineID string) error {
	return a.store.Update(ctx, func(tx store.Tx) error {
		now := a.clock.Now()
		if _, err := tx.License(licenseID); err != nil {
			return err
		}
		if err := tx.DeleteMachine(licenseID, machineID); err != nil {
			return err
		}
		return a.record(ctx, tx, now, change{
			action: "machine.deactivate", event: "machine.deactivated", targetType: "machine", targetID: machineID,
			before: "active", after: "deactivated", details: map[string]any{"license_id": licenseID},
		})
	})
}
