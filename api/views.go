package api

import (
	"time"

	"github.com/keyward/keyward"
	"github.com/keyward/keyward/authority"
)

// Wire types: what the API sends. Field names are the contract.

// Product is a product as the API shows it.
type Product struct {
	ID        string    `json:"id"`
	Name      string    `json:"name"`
	CreatedAt time.Time `json:"created_at"`
}

// Key is a signing key as the API shows it (never its private part).
type Key struct {
	KID           string     `json:"kid"`
	Ring          string     `json:"ring"`
	Purpose       string     `json:"purpose"`
	ProductID     string     `json:"product_id,omitempty"`
	Algorithm     string     `json:"algorithm"`
	State         string     `json:"state"`
	HasPrivate    bool       `json:"has_private_key"`
	CreatedAt     time.Time  `json:"created_at"`
	ActivatedAt   *time.Time `json:"activated_at,omitempty"`
	RetiredAt     *time.Time `json:"retired_at,omitempty"`
	DestroyedAt   *time.Time `json:"destroyed_at,omitempty"`
	CompromisedAt *time.Time `json:"compromised_at,omitempty"`
	Reason        string     `json:"reason,omitempty"`
	// Exposure is set by GET /v1/keys/{kid} only (api/lifecycle.go).
	Exposure *Exposure `json:"exposure,omitempty"`
}

// License is a license as the API shows it (never its key, only the prefix).
type License struct {
	ID              string     `json:"id"`
	ProductID       string     `json:"product_id"`
	Product         string     `json:"product,omitempty"`
	Holder          string     `json:"holder"`
	State           string     `json:"state"`
	KeyPrefix       string     `json:"key_prefix"`
	Entitlements    []string   `json:"entitlements"`
	MaxMachines     int        `json:"max_machines"`
	ExpiresAt       *time.Time `json:"expires_at"`
	CreatedAt       time.Time  `json:"created_at"`
	UpdatedAt       time.Time  `json:"updated_at"`
	Reason          string     `json:"reason,omitempty"`
	LastValidatedAt *time.Time `json:"last_validated_at,omitempty"`
}

// IssuedLicense is a license with its key, returned once at issue/reissue.
type IssuedLicense struct {
	License
	Key string `json:"key"`
}

// Machine is an activated machine.
type Machine struct {
	ID          string    `json:"id"`
	LicenseID   string    `json:"license_id"`
	Fingerprint string    `json:"fingerprint"`
	CreatedAt   time.Time `json:"created_at"`
	LastSeenAt  time.Time `json:"last_seen_at"`
}

// Lease is a signed lease token.
type Lease struct {
	Token     string    `json:"token"`
	ExpiresAt time.Time `json:"expires_at"`
}

// Validation is the body of a POST /v1/validate answer.
type Validation struct {
	Valid   bool     `json:"valid"`
	Code    string   `json:"code"`
	License *License `json:"license"`
	Machine *Machine `json:"machine,omitempty"`
	Lease   *Lease   `json:"lease,omitempty"`
}

// Certificate is a checked-out license certificate.
type Certificate struct {
	Certificate string    `json:"certificate"`
	KID         string    `json:"kid"`
	ExpiresAt   time.Time `json:"expires_at"`
}

// Token is an API token's metadata; Secret is set only at creation.
type Token struct {
	ID        string     `json:"id"`
	Name      string     `json:"name"`
	Roles     []string   `json:"roles"`
	ProductID string     `json:"product_id,omitempty"`
	CreatedAt time.Time  `json:"created_at"`
	ExpiresAt *time.Time `json:"expires_at,omitempty"`
	Token     string     `json:"token,omitempty"`
}

func productView(p *keyward.Product) Product {
	return Product{ID: p.ID, Name: p.Name, CreatedAt: p.CreatedAt}
}

func keyView(k *keyward.SigningKey) Key {
	return Key{
		KID: k.KID, Ring: k.Ring, Purpose: string(k.Purpose), ProductID: k.ProductID, Algorithm: k.Algorithm,
		State: string(k.State), HasPrivate: k.Sealed != nil, CreatedAt: k.CreatedAt, ActivatedAt: k.ActivatedAt,
		RetiredAt: k.RetiredAt, DestroyedAt: k.DestroyedAt, CompromisedAt: k.CompromisedAt, Reason: k.Reason,
	}
}

func licenseView(l *keyward.License, productName string) License {
	ents := l.Entitlements
	if ents == nil {
		ents = []string{}
	}
	return License{
		ID: l.ID, ProductID: l.ProductID, Product: productName, Holder: l.Holder, State: string(l.State),
		KeyPrefix: l.KeyPrefix, Entitlements: ents, MaxMachines: l.MaxMachines, ExpiresAt: l.ExpiresAt,
		CreatedAt: l.CreatedAt, UpdatedAt: l.UpdatedAt, Reason: l.Reason, LastValidatedAt: l.LastValidatedAt,
	}
}

func machineView(m *keyward.Machine) Machine {
	return Machine{ID: m.ID, LicenseID: m.LicenseID, Fingerprint: m.Fingerprint, CreatedAt: m.CreatedAt, LastSeenAt: m.LastSeenAt}
}

func validationView(v *authority.Validation) Validation {
	out := Validation{Valid: v.Valid, Code: v.Code}
	if v.License != nil {
		name := ""
		if v.Product != nil {
			name = v.Product.Name
		}
		l := licenseView(v.License, name)
		out.License = &l
	}
	if v.Machine != nil {
		m := machineView(v.Machine)
		out.Machine = &m
	}
	if v.Lease != nil {
		out.Lease = &Lease{Token: v.Lease.Token, ExpiresAt: v.Lease.ExpiresAt}
	}
	return out
}
