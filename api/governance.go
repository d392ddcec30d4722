package api

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/keyward/keyward"
	"github.com/keyward/keyward/authority"
)

// Governance over HTTP (docs/governance.md): every route but the public ones
// needs a bearer token whose roles hold the route's permission; a
// product-scoped token reaches only its product; the permissions a
// product's policy lists under mfa need a TOTP code in the X-Keyward-OTP
// header. Refusals are audited. Failed authentications are rate-limited per
// client address.

// OTPHeader carries the TOTP code of a request.
const OTPHeader = "X-Keyward-OTP"

// governanceRoutes are the routes of the governance feature: tokens,
// approval requests and second factors.
func (s *Server) governanceRoutes() []route {
	return []route{
		{"GET", "/v1/tokens", authority.PermTokenRead, "List API tokens (metadata only: never a secret)", s.listTokens},
		{"POST", "/v1/tokens", authority.PermTokenAdmin, "Create an API token (shown once)", s.createToken},
		{"POST", "/v1/tokens/{id}/revoke", authority.PermTokenAdmin, "Revoke an API token, with immediate effect", s.revokeToken},
		{"GET", "/v1/approvals", authority.PermApprovalRead, "List approval requests (filters: state, product, target, action)", s.listApprovals},
		{"GET", "/v1/approvals/{id}", authority.PermApprovalRead, "Show an approval request", s.getApproval},
		{"POST", "/v1/approvals/{id}/grant", authority.PermApprovalGrant, "Grant an approval request; the final grant runs the action", s.grantApproval},
		{"POST", "/v1/approvals/{id}/deny", authority.PermApprovalDeny, "Deny an approval request (reason required); the target stays in its interim state", s.denyApproval},
		{"POST", "/v1/mfa/enroll", authority.PermMFAEnroll, "Enroll the caller's TOTP second factor (secret shown once)", s.enrollMFA},
		{"DELETE", "/v1/mfa/{principal}", authority.PermTokenAdmin, "Reset a principal's second factor (lost authenticator)", s.resetMFA},
	}
}

// scopeKind says how a route names a product, which decides what a
// product-scoped token may reach and which policy's mfa list applies.
type scopeKind int

const (
	scopePublic   scopeKind = iota // no token
	scopeServer                    // server-wide: product-scoped tokens are refused
	scopeSelf                      // about the caller only (its second factor)
	scopeProduct                   // {product} in the path (id or name)
	scopeLicense                   // {id} of a license
	scopeKey                       // {kid} of a signing key (the registry ring has no product)
	scopeApproval                  // {id} of an approval request
	scopeList                      // a listing filtered by ?product= (forced to a scoped token's product)
	scopeBody                      // the product is in the body: the authority checks scope and mfa
)

var scopeNames = map[scopeKind]string{
	scopePublic: "public", scopeServer: "server-wide", scopeSelf: "self", scopeProduct: "product",
	scopeLicense: "license", scopeKey: "key", scopeApproval: "approval", scopeList: "list", scopeBody: "body",
}

func (k scopeKind) String() string { return scopeNames[k] }

// routeScope classifies a route by its pattern. Anything it does not
// recognise is server-wide, which a product-scoped token cannot reach.
func routeScope(rt route) scopeKind {
	p := rt.path
	switch {
	case rt.perm == "":
		return scopePublic
	case rt.perm == authority.PermMFAEnroll:
		return scopeSelf
	case strings.Contains(p, "{product}"):
		return scopeProduct
	case strings.HasPrefix(p, "/v1/licenses/{id}"):
		return scopeLicense
	case strings.HasPrefix(p, "/v1/keys/{kid}"):
		return scopeKey
	case strings.HasPrefix(p, "/v1/approvals/{id}"):
		return scopeApproval
	case rt.method == "GET" && (p == "/v1/licenses" || p == "/v1/keys" || p == "/v1/products" || p == "/v1/approvals"):
		return scopeList
	case rt.method == "POST" && (p == "/v1/licenses" || p == "/v1/licenses:batch"):
		return scopeBody
	}
	return scopeServer
}

// RouteScopes returns, for docs and tests, "METHOD PATH" → how the route is
// scoped ("public", "server-wide", "self", "product", "license", "key",
// "approval", "list", "body") and the permission it needs.
func (s *Server) RouteScopes() map[string][2]string {
	out := make(map[string][2]string, len(s.table))
	for _, rt := range s.table {
		out[rt.method+" "+rt.path] = [2]string{routeScope(rt).String(), rt.perm}
	}
	return out
}

// target names what a request is about, for the audit entry of a refusal.
func target(r *http.Request, rt route, kind scopeKind) (typ, id string) {
	switch kind {
	case scopeProduct:
		return "product", r.PathValue("product")
	case scopeLicense:
		return "license", r.PathValue("id")
	case scopeKey:
		return "key", r.PathValue("kid")
	case scopeApproval:
		return "approval", r.PathValue("id")
	}
	return "route", rt.method + " " + rt.path
}

// authorize authenticates the request of an authenticated route and
// applies the governance checks before its handler runs. It returns the
// request with the principal and the TOTP code in its context.
func (s *Server) authorize(r *http.Request, rt route) (*http.Request, error) {
	src := clientAddr(r)
	now := s.auth.Now()
	if wait := s.authFailures.blocked(src, now); wait > 0 {
		return r, keyward.Errorf(keyward.ERateLimited, "too many failed authentications from this address: retry in %d s", int(wait.Seconds())+1)
	}
	p, err := s.authenticate(r)
	if err != nil {
		if keyward.ErrorCode(err) == keyward.EUnauthenticated {
			s.authFailures.fail(src, now)
		}
		return r, err
	}
	ctx := keyward.NewContextWithPrincipal(r.Context(), p)
	ctx = authority.WithOTP(ctx, strings.TrimSpace(r.Header.Get(OTPHeader)))
	r = r.WithContext(ctx)
	kind := routeScope(rt)
	ttype, tid := target(r, rt, kind)
	refuse := func(err error) (*http.Request, error) {
		if aerr := s.auth.AuditRefusal(r.Context(), rt.perm, ttype, tid, err); aerr != nil {
			s.log.Error("audit refusal", "route", rt.path, "err", aerr)
		}
		return r, err
	}
	if !authority.Allowed(p, rt.perm, "") {
		return refuse(keyward.Errorf(keyward.EForbidden, "%s (roles %s) does not hold %s", p.Name, strings.Join(p.Roles, ", "), rt.perm))
	}
	if kind == scopeServer && p.ProductID != "" {
		return refuse(keyward.Errorf(keyward.EForbidden, "%s is limited to one product; %s %s is server-wide", p.Name, rt.method, rt.path))
	}
	if kind == scopeBody || kind == scopeSelf {
		return r, nil // the authority checks scope and mfa once it knows the product
	}
	if p.ProductID == "" && !s.auth.MFAMayApply(rt.perm) {
		return r, nil
	}
	productID, r, err := s.productOf(r, kind, p)
	if err != nil {
		if errors.Is(err, errScope) {
			return refuse(authority.OutOfScopeError(ttype, tid))
		}
		return r, err
	}
	return r, s.auth.RequireMFA(r.Context(), rt.perm, productID, ttype, tid)
}

// errScope marks a product-scoped principal naming another product.
var errScope = errors.New("out of scope")

// productOf resolves the product a request is about and checks a
// product-scoped principal may reach it. A listing without ?product= gets
// the scoped principal's product as its filter.
func (s *Server) productOf(r *http.Request, kind scopeKind, p keyward.Principal) (string, *http.Request, error) {
	var productID string
	var err error
	switch kind {
	case scopeServer:
		return "", r, nil
	case scopeProduct:
		productID, err = s.auth.TargetProduct(r.Context(), authority.TargetProduct, r.PathValue("product"))
	case scopeLicense:
		productID, err = s.auth.TargetProduct(r.Context(), authority.TargetLicense, r.PathValue("id"))
	case scopeKey:
		productID, err = s.auth.TargetProduct(r.Context(), authority.TargetKey, r.PathValue("kid"))
	case scopeApproval:
		productID, err = s.auth.TargetProduct(r.Context(), authority.TargetApproval, r.PathValue("id"))
	case scopeList:
		q := r.URL.Query()
		name := q.Get("product")
		if name != "" {
			if productID, err = s.auth.TargetProduct(r.Context(), authority.TargetProduct, name); err != nil {
				if p.ProductID != "" && keyward.ErrorCode(err) == keyward.ENotFound {
					return "", r, errScope // the same answer as another product's
				}
				return "", r, err
			}
		}
		if p.ProductID != "" && name == "" {
			q.Set("product", p.ProductID)
			r2 := r.Clone(r.Context())
			r2.URL.RawQuery = q.Encode()
			return p.ProductID, r2, nil
		}
	default:
		return "", r, fmt.Errorf("productOf: unexpected scope %s", kind)
	}
	if err != nil {
		if p.ProductID != "" && keyward.ErrorCode(err) == keyward.ENotFound {
			return "", r, errScope // the same answer as another product's
		}
		return "", r, err
	}
	if p.ProductID != "" && productID != p.ProductID {
		return "", r, errScope
	}
	return productID, r, nil
}

// clientAddr is the address failed authentications are counted against:
// the connection's peer (a proxy in front of the server is one address;
// X-Forwarded-For is not trusted).
func clientAddr(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

// Failed authentication limits.
const (
	AuthFailureLimit  = 20          // failed authentications per address per window
	AuthFailureWindow = time.Minute // then the address waits for the window's end
	authFailureAddrs  = 10000       // addresses tracked at most
)

// failureLimiter counts failed authentications per address in fixed
// windows. It is bounded: when full it forgets expired windows, then
// everything (failing open rather than growing without bound).
type failureLimiter struct {
	mu    sync.Mutex
	addrs map[string]*failureWindow
}

type failureWindow struct {
	start time.Time
	n     int
}

func newFailureLimiter() *failureLimiter {
	return &failureLimiter{addrs: map[string]*failureWindow{}}
}

// blocked returns how long addr must still wait, or 0.
func (l *failureLimiter) blocked(addr string, now time.Time) time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	w := l.addrs[addr]
	if w == nil || w.n < AuthFailureLimit {
		return 0
	}
	end := w.start.Add(AuthFailureWindow)
	if !now.Before(end) {
		delete(l.addrs, addr)
		return 0
	}
	return end.Sub(now)
}

// fail counts a failed authentication from addr.
func (l *failureLimiter) fail(addr string, now time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	w := l.addrs[addr]
	if w == nil || !now.Before(w.start.Add(AuthFailureWindow)) {
		if w == nil && len(l.addrs) >= authFailureAddrs {
			for a, x := range l.addrs {
				if !now.Before(x.start.Add(AuthFailureWindow)) {
					delete(l.addrs, a)
				}
			}
			if len(l.addrs) >= authFailureAddrs {
				clear(l.addrs)
			}
		}
		w = &failureWindow{start: now}
		l.addrs[addr] = w
	}
	w.n++
}

// Wire types.

// TokenInfo is an API token as listings show it: never its secret.
type TokenInfo struct {
	ID        string     `json:"id"`
	Name      string     `json:"name"`
	Roles     []string   `json:"roles"`
	ProductID string     `json:"product_id,omitempty"`
	State     string     `json:"state"` // active, expired or revoked
	CreatedAt time.Time  `json:"created_at"`
	ExpiresAt *time.Time `json:"expires_at,omitempty"`
	RevokedAt *time.Time `json:"revoked_at,omitempty"`
}

func tokenInfo(t *keyward.Token, now time.Time) TokenInfo {
	roles := t.Roles
	if roles == nil {
		roles = []string{}
	}
	return TokenInfo{ID: t.ID, Name: t.Name, Roles: roles, ProductID: t.ProductID, State: authority.TokenState(t, now),
		CreatedAt: t.CreatedAt, ExpiresAt: t.ExpiresAt, RevokedAt: t.RevokedAt}
}

// Approval is an approval request as the API shows it.
type Approval struct {
	ID             string          `json:"id"`
	Action         string          `json:"action"` // license.revoke, key.destroy
	TargetType     string          `json:"target_type"`
	Target         string          `json:"target"` // license id or kid
	ProductID      string          `json:"product_id,omitempty"`
	Reason         string          `json:"reason,omitempty"`
	RequestedBy    string          `json:"requested_by"` // the principal's name
	RequestedByID  string          `json:"requested_by_id"`
	State          string          `json:"state"` // pending, granted, denied, cancelled, expired
	Required       int             `json:"required"`
	Grants         []ApprovalGrant `json:"grants"`
	PolicyVersion  int             `json:"policy_version"`
	CreatedAt      time.Time       `json:"created_at"`
	ExpiresAt      time.Time       `json:"expires_at"`
	DecidedAt      *time.Time      `json:"decided_at,omitempty"`
	DecidedBy      string          `json:"decided_by,omitempty"`
	DecisionReason string          `json:"decision_reason,omitempty"`
}

// ApprovalGrant is one approver's confirmation.
type ApprovalGrant struct {
	By      string    `json:"by"` // the principal's name
	ByID    string    `json:"by_id"`
	At      time.Time `json:"at"`
	Comment string    `json:"comment,omitempty"`
}

func approvalView(ap *keyward.Approval, now time.Time) Approval {
	gs := make([]ApprovalGrant, 0, len(ap.Grants))
	for _, g := range ap.Grants {
		gs = append(gs, ApprovalGrant{By: g.ByName, ByID: g.By, At: g.At, Comment: g.Comment})
	}
	return Approval{
		ID: ap.ID, Action: ap.Action, TargetType: ap.TargetType, Target: ap.TargetID, ProductID: ap.ProductID, Reason: ap.Reason,
		RequestedBy: ap.RequestedByName, RequestedByID: ap.RequestedBy, State: string(ap.EffectiveState(now)), Required: ap.Required,
		Grants: gs, PolicyVersion: ap.PolicyVersion, CreatedAt: ap.CreatedAt, ExpiresAt: ap.ExpiresAt, DecidedAt: ap.DecidedAt,
		DecidedBy: ap.DecidedByName, DecisionReason: ap.DecisionReason,
	}
}

// PendingLicense answers a revocation that became an approval request:
// the license (now suspended) and the request (HTTP 202).
type PendingLicense struct {
	License
	Approval *Approval `json:"approval"`
}

// PendingKey answers a destruction that became an approval request: the
// key (unchanged) and the request (HTTP 202).
type PendingKey struct {
	Key
	Approval *Approval `json:"approval"`
}

// MFAEnrollment is the answer of POST /v1/mfa/enroll, shown once.
type MFAEnrollment struct {
	Principal string `json:"principal"`
	Secret    string `json:"secret"` // base32
	URI       string `json:"uri"`    // otpauth://totp/…
	Digits    int    `json:"digits"`
	Period    int    `json:"period"` // seconds
}

// Handlers.

func (s *Server) listTokens(w http.ResponseWriter, r *http.Request) error {
	ts, err := s.auth.Tokens(r.Context())
	if err != nil {
		return err
	}
	now := s.auth.Now()
	out := make([]TokenInfo, 0, len(ts))
	for _, t := range ts {
		out = append(out, tokenInfo(t, now))
	}
	return writeJSON(w, http.StatusOK, map[string]any{"tokens": out})
}

func (s *Server) createToken(w http.ResponseWriter, r *http.Request) error {
	var req struct {
		Name    string   `json:"name"`
		Roles   []string `json:"roles"`
		Product string   `json:"product,omitempty"`
		TTL     string   `json:"ttl,omitempty"`
	}
	if err := decode(w, r, &req); err != nil {
		return err
	}
	ttl := authority.DefaultTokenTTL
	if req.TTL != "" {
		d, err := keyward.ParseDuration(req.TTL)
		if err != nil {
			return keyward.Errorf(keyward.EInvalid, "ttl: %v", err)
		}
		ttl = d
	}
	t, secret, err := s.auth.CreateToken(r.Context(), authority.TokenRequest{Name: req.Name, Roles: req.Roles, Product: req.Product, TTL: ttl})
	if err != nil {
		return err
	}
	w.Header().Set("Cache-Control", "no-store")
	return writeJSON(w, http.StatusCreated, Token{ID: t.ID, Name: t.Name, Roles: t.Roles, ProductID: t.ProductID, CreatedAt: t.CreatedAt, ExpiresAt: t.ExpiresAt, Token: secret})
}

func (s *Server) revokeToken(w http.ResponseWriter, r *http.Request) error {
	if err := decodeOptional(w, r, &struct{}{}); err != nil {
		return err
	}
	t, err := s.auth.RevokeToken(r.Context(), r.PathValue("id"))
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, tokenInfo(t, s.auth.Now()))
}

func (s *Server) listApprovals(w http.ResponseWriter, r *http.Request) error {
	q := r.URL.Query()
	aq := authority.ApprovalQuery{State: keyward.ApprovalState(q.Get("state")), Product: q.Get("product"), Target: q.Get("target"), Action: q.Get("action")}
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			return keyward.Errorf(keyward.EInvalid, "limit %q: want 1 to %d", v, authority.MaxApprovalPage)
		}
		aq.Limit = n
	}
	aps, err := s.auth.Approvals(r.Context(), aq)
	if err != nil {
		return err
	}
	now := s.auth.Now()
	out := make([]Approval, 0, len(aps))
	for _, ap := range aps {
		out = append(out, approvalView(ap, now))
	}
	return writeJSON(w, http.StatusOK, map[string]any{"approvals": out})
}

func (s *Server) getApproval(w http.ResponseWriter, r *http.Request) error {
	ap, err := s.auth.Approval(r.Context(), r.PathValue("id"))
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, approvalView(ap, s.auth.Now()))
}

func (s *Server) grantApproval(w http.ResponseWriter, r *http.Request) error {
	var req struct {
		Comment string `json:"comment,omitempty"`
	}
	if err := decodeOptional(w, r, &req); err != nil {
		return err
	}
	ap, err := s.auth.GrantApproval(r.Context(), r.PathValue("id"), req.Comment)
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, approvalView(ap, s.auth.Now()))
}

func (s *Server) denyApproval(w http.ResponseWriter, r *http.Request) error {
	var req reasonReq
	if err := decodeOptional(w, r, &req); err != nil {
		return err
	}
	ap, err := s.auth.DenyApproval(r.Context(), r.PathValue("id"), req.Reason)
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, approvalView(ap, s.auth.Now()))
}

func (s *Server) enrollMFA(w http.ResponseWriter, r *http.Request) error {
	if err := decodeOptional(w, r, &struct{}{}); err != nil {
		return err
	}
	m, err := s.auth.EnrollMFA(r.Context())
	if err != nil {
		return err
	}
	w.Header().Set("Cache-Control", "no-store")
	return writeJSON(w, http.StatusCreated, MFAEnrollment{Principal: m.Principal, Secret: m.Secret, URI: m.URI,
		Digits: authority.TOTPDigits, Period: int(authority.TOTPPeriod / time.Second)})
}

func (s *Server) resetMFA(w http.ResponseWriter, r *http.Request) error {
	if err := s.auth.ResetMFA(r.Context(), r.PathValue("principal")); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// revokeLicense revokes at once (200) or, where the policy needs
// approvals, answers 202 with the suspended license and the request.
func (s *Server) revokeLicense(w http.ResponseWriter, r *http.Request) error {
	var req reasonReq
	if err := decodeOptional(w, r, &req); err != nil {
		return err
	}
	l, ap, err := s.auth.RevokeLicense(r.Context(), r.PathValue("id"), req.Reason)
	if err != nil {
		return err
	}
	lv := licenseView(l, s.productName(r.Context(), l.ProductID))
	if ap == nil {
		return writeJSON(w, http.StatusOK, lv)
	}
	av := approvalView(ap, s.auth.Now())
	return writeJSON(w, http.StatusAccepted, PendingLicense{License: lv, Approval: &av})
}

// destroyKey destroys at once (200) or, where the policy needs approvals,
// answers 202 with the key (unchanged) and the request.
func (s *Server) destroyKey(w http.ResponseWriter, r *http.Request) error {
	var req reasonReq
	if err := decodeOptional(w, r, &req); err != nil {
		return err
	}
	k, ap, err := s.auth.DestroyKeyWithApproval(r.Context(), r.PathValue("kid"), req.Reason)
	if err != nil {
		return err
	}
	if ap == nil {
		return writeJSON(w, http.StatusOK, keyView(k))
	}
	av := approvalView(ap, s.auth.Now())
	return writeJSON(w, http.StatusAccepted, PendingKey{Key: keyView(k), Approval: &av})
}
