package authority

import (
	"context"
	"encoding/base64"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	"github.com/keyward/keyward"
	"github.com/keyward/keyward/store"
)

// TokenPrefix starts every API token, so a leaked one is recognisable.
const TokenPrefix = "kwt_"

// TokenRequest describes a new API token.
type TokenRequest struct {
	Name    string
	Roles   []string
	Product string        // "" = every product
	TTL     time.Duration // 0 = no expiry
}

// CreateToken makes a random API token. The secret is returned once; the
// store keeps only its keyed hash.
func (a *Authority) CreateToken(ctx context.Context, r TokenRequest) (*keyward.Token, string, error) {
	if r.Name == "" || len(r.Name) > 128 {
		return nil, "", keyward.Errorf(keyward.EInvalid, "token name: want 1-128 characters")
	}
	if len(r.Roles) == 0 {
		return nil, "", keyward.Errorf(keyward.EInvalid, "token needs at least one role (one of %v)", keyward.AllRoles())
	}
	for _, role := range r.Roles {
		if !slices.Contains(keyward.AllRoles(), role) {
			return nil, "", keyward.Errorf(keyward.EInvalid, "unknown role %q (want one of %v)", role, keyward.AllRoles())
		}
	}
	if r.TTL < 0 {
		return nil, "", keyward.Errorf(keyward.EInvalid, "ttl must not be negative")
	}
	raw := make([]byte, 32)
	if _, err := io.ReadFull(a.rand, raw); err != nil {
		return nil, "", fmt.Errorf("generate token: %w", err)
	}
	secret := TokenPrefix + base64.RawURLEncoding.EncodeToString(raw)
	var out *keyward.Token
	err := a.store.Update(ctx, func(tx store.Tx) error {
		now := a.clock.Now()
		id, err := a.newID("tok")
		if err != nil {
			return err
		}
		t := &keyward.Token{ID: id, Name: r.Name, Hash: a.keyedHash("api-token", secret), Roles: slices.Clone(r.Roles), CreatedAt: now}
		if r.Product != "" {
			p, err := tx.Product(r.Product)
			if err != nil {
				return err
			}
			t.ProductID = p.ID
		}
		if r.TTL > 0 {
			exp := now.Add(r.TTL)
			t.ExpiresAt = &exp
		}
		if err := tx.CreateToken(t); err != nil {
			return err
		}
		out = t
		return a.record(ctx, tx, now, change{
			action: "token.create", event: "token.created", targetType: "token", targetID: id, after: "active",
			details: map[string]any{"name": t.Name, "roles": t.Roles, "product_id": t.ProductID},
		})
	})
	if err != nil {
		return nil, "", err
	}
	return out, secret, nil
}

// Authenticate returns the principal of an API token, or EUnauthenticated
// for an unknown, expired or revoked one. The lookup is by keyed hash, so
// timing reveals nothing about the secret.
func (a *Authority) Authenticate(ctx context.Context, secret string) (keyward.Principal, error) {
	if !strings.HasPrefix(secret, TokenPrefix) || len(secret) > 128 {
		return keyward.Principal{}, keyward.Errorf(keyward.EUnauthenticated, "invalid token")
	}
	var t *keyward.Token
	err := a.store.View(ctx, func(tx store.Tx) error {
		var err error
		t, err = tx.TokenByHash(a.keyedHash("api-token", secret))
		return err
	})
	if keyward.ErrorCode(err) == keyward.ENotFound {
		return keyward.Principal{}, keyward.Errorf(keyward.EUnauthenticated, "invalid token")
	} else if err != nil {
		return keyward.Principal{}, err
	}
	now := a.clock.Now()
	if t.RevokedAt != nil || (t.ExpiresAt != nil && !now.Before(*t.ExpiresAt)) {
		return keyward.Principal{}, keyward.Errorf(keyward.EUnauthenticated, "token expired or revoked")
	}
	return keyward.Principal{ID: t.ID, Name: t.Name, Roles: t.Roles, ProductID: t.ProductID}, nil
}

// HasTokens reports whether any API token exists (first start creates the
// admin token).
func (a *Authority) HasTokens(ctx context.Context) (bool, error) {
	var n int
	err := a.store.View(ctx, func(tx store.Tx) error {
		ts, err := tx.Tokens()
		n = len(ts)
		return err
	})
	return n > 0, err
}
