package authority

import (
	"context"
	"encoding/base64"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/keyward/keyward"
	"github.com/keyward/keyward/store"
)

// TokenPrefix starts every API token, so a leaked one is recognisable.
const TokenPrefix = "kwt_"

// TokenRequest describes a new API token.
type TokenRequest struct {
	Name    string // the principal: every token of one name is one principal (separation of duties, four eyes, MFA)
	Roles   []string
	Product string        // "" = every product
	TTL     time.Duration // 0 = no expiry (minted through the API: service tokens only)
}

// Token lifetimes.
const (
	DefaultTokenTTL = 8 * time.Hour        // what the API and CLI give a token without a ttl
	MaxTokenTTL     = 366 * 24 * time.Hour // the longest a token may live
)

// CreateToken makes a random API token. The secret is returned once; the
// store keeps only its keyed hash. A token principal (minting through the
// API) cannot mint more than it holds: every permission of every requested
// role must be its own, within its product scope (EForbidden); and a token
// for people (any role but service) must expire.
func (a *Authority) CreateToken(ctx context.Context, r TokenRequest) (*keyward.Token, string, error) {
	if err := checkTokenName(r.Name); err != nil {
		return nil, "", err
	}
	if len(r.Roles) == 0 {
		return nil, "", keyward.Errorf(keyward.EInvalid, "token needs at least one role (one of %v)", keyward.AllRoles())
	}
	for _, role := range r.Roles {
		if !slices.Contains(keyward.AllRoles(), role) {
			return nil, "", keyward.Errorf(keyward.EInvalid, "unknown role %q (want one of %v)", role, keyward.AllRoles())
		}
	}
	r.Roles = slices.Compact(slices.Sorted(slices.Values(r.Roles)))
	if r.TTL < 0 || r.TTL > MaxTokenTTL {
		return nil, "", keyward.Errorf(keyward.EInvalid, "ttl %s: want 0 to %s", r.TTL, keyward.FormatDuration(MaxTokenTTL))
	}
	creator := keyward.PrincipalFromContext(ctx)
	if isTokenPrincipal(creator) && r.TTL == 0 && slices.ContainsFunc(r.Roles, func(role string) bool { return role != keyward.RoleService }) {
		return nil, "", keyward.Errorf(keyward.EInvalid, "a token for people must expire: give a ttl (default %s, at most %s); only service tokens may live without one",
			keyward.FormatDuration(DefaultTokenTTL), keyward.FormatDuration(MaxTokenTTL))
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
			if outOfScope(ctx, p.ID) {
				return scopeNotFound("product", r.Product)
			}
			t.ProductID = p.ID
		}
		if err := checkMint(creator, t); err != nil {
			return err
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
		return nil, "", a.refused(ctx, PermTokenAdmin, "token", r.Name, err)
	}
	return out, secret, nil
}

// checkTokenName accepts a principal name: 1-128 printable characters
// without surrounding spaces.
func checkTokenName(name string) error {
	if name == "" || len(name) > 128 || strings.TrimSpace(name) != name || !utf8.ValidString(name) {
		return keyward.Errorf(keyward.EInvalid, "token name %q: want 1-128 characters naming the principal (a person or a service), without surrounding spaces", name)
	}
	for _, c := range name {
		if unicode.IsControl(c) {
			return keyward.Errorf(keyward.EInvalid, "token name: control characters are not allowed")
		}
	}
	return nil
}

// checkMint refuses a token principal minting t with a permission it does
// not hold itself, or outside its own product scope. Other principals (the
// server bootstrapping its first admin token) are trusted.
func checkMint(creator keyward.Principal, t *keyward.Token) error {
	if !isTokenPrincipal(creator) {
		return nil
	}
	if creator.ProductID != "" && t.ProductID != creator.ProductID {
		return keyward.Errorf(keyward.EForbidden, "%s is limited to one product and cannot mint a token for another product or for every product", principalName(creator))
	}
	for _, role := range t.Roles {
		for _, perm := range RolePermissions(role) {
			if !Allowed(creator, perm, t.ProductID) {
				return keyward.Errorf(keyward.EForbidden, "%s cannot mint a token with role %s: it does not hold %s itself", principalName(creator), role, perm)
			}
		}
	}
	return nil
}

// TokenState is a token's state at now: "active", "expired" or "revoked".
func TokenState(t *keyward.Token, now time.Time) string {
	switch {
	case t.RevokedAt != nil:
		return "revoked"
	case t.ExpiresAt != nil && !now.Before(*t.ExpiresAt):
		return "expired"
	}
	return "active"
}

// Tokens lists every API token (metadata only: the store has no secrets,
// and the hashes never leave the authority), oldest first.
func (a *Authority) Tokens(ctx context.Context) ([]*keyward.Token, error) {
	var out []*keyward.Token
	err := a.store.View(ctx, func(tx store.Tx) error {
		var err error
		out, err = tx.Tokens()
		return err
	})
	out = slices.DeleteFunc(out, func(t *keyward.Token) bool { return outOfScope(ctx, t.ProductID) })
	for _, t := range out {
		t.Hash = nil
	}
	return out, err
}

// RevokeToken revokes an API token with immediate effect: the next request
// with it is EUnauthenticated (Authenticate reads the store every time).
// The last unexpired, unrevoked token with the admin role for every
// product cannot be revoked (EConflict): nobody could mint tokens again.
func (a *Authority) RevokeToken(ctx context.Context, id string) (*keyward.Token, error) {
	var out *keyward.Token
	err := a.store.Update(ctx, func(tx store.Tx) error {
		now := a.clock.Now()
		t, err := tx.Token(id)
		if err != nil {
			return err
		}
		if outOfScope(ctx, t.ProductID) {
			return scopeNotFound("token", id)
		}
		before := TokenState(t, now)
		if before == "revoked" {
			return keyward.Errorf(keyward.EIllegalTransition, "token %s is already revoked", id)
		}
		if before == "active" && isAdminToken(t) {
			ts, err := tx.Tokens()
			if err != nil {
				return err
			}
			others := slices.ContainsFunc(ts, func(o *keyward.Token) bool {
				return o.ID != t.ID && isAdminToken(o) && TokenState(o, now) == "active"
			})
			if !others {
				return keyward.Errorf(keyward.EConflict, "token %s is the last active admin token: create another admin token before revoking it", id)
			}
		}
		if err := tx.RevokeToken(id, now); err != nil {
			return err
		}
		t.RevokedAt, t.Hash = &now, nil
		out = t
		return a.record(ctx, tx, now, change{
			action: "token.revoke", event: "token.revoked", targetType: "token", targetID: id, before: before, after: "revoked",
			details: map[string]any{"name": t.Name, "roles": t.Roles, "product_id": t.ProductID},
		})
	})
	if err != nil {
		return nil, a.refused(ctx, PermTokenAdmin, "token", id, err)
	}
	return out, nil
}

func isAdminToken(t *keyward.Token) bool {
	return t.ProductID == "" && slices.Contains(t.Roles, keyward.RoleAdmin)
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
