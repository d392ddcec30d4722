package api

import (
	"context"
	_ "embed"
	"encoding/json"
	"net/http"
	"strconv"
	"time"

	"github.com/keyward/keyward"
	"github.com/keyward/keyward/authority"
	"github.com/keyward/keyward/store"
)

//go:embed openapi.json
var openapiDoc []byte

// OpenAPI returns the OpenAPI 3.1 document served at /v1/openapi.json.
func OpenAPI() []byte { return openapiDoc }

func (s *Server) routes() []route {
	rs := s.coreRoutes()
	rs = append(rs, s.policyRoutes()...)
	rs = append(rs, s.auditRoutes()...)
	rs = append(rs, s.revocationRoutes()...)
	rs = append(rs, s.webhookRoutes()...)
	rs = append(rs, s.governanceRoutes()...)
	rs = append(rs, s.lifecycleRoutes()...)
	rs = append(rs, s.abuseRoutes()...)
	rs = append(rs, s.exceptionRoutes()...)
	return rs
}

func (s *Server) coreRoutes() []route {
	return []route{
		{"GET", "/healthz", "", "Liveness", s.healthz},
		{"GET", "/readyz", "", "Readiness: store reachable, keys loaded", s.readyz},
		{"GET", "/metrics", "", "Prometheus metrics", s.metricsHandler()},
		{"GET", "/.well-known/jwks.json", "", "Published verifying keys (JWKS)", s.jwks},
		{"GET", "/v1/openapi.json", "", "This API's OpenAPI 3.1 document", s.openapi},
		{"POST", "/v1/validate", "", "Validate a license key (the key is the credential)", s.validate},
		{"POST", "/v1/checkout", "", "Check out a license certificate with the license key", s.checkoutByKey},

		{"GET", "/v1/products", authority.PermProductRead, "List products", s.listProducts},
		{"POST", "/v1/products", authority.PermProductCreate, "Create a product and its key ring", s.createProduct},
		{"GET", "/v1/products/{product}", authority.PermProductRead, "Show a product", s.getProduct},
		{"POST", "/v1/products/{product}/keys", authority.PermKeyRotate, "Rotate: add a key to the product's ring", s.rotateKey},

		{"GET", "/v1/keys", authority.PermKeyRead, "List signing keys", s.listKeys},
		{"POST", "/v1/keys/registry/rotate", authority.PermKeyRotate, "Rotate the server's registry ring", s.rotateRegistry},
		{"GET", "/v1/keys/{kid}", authority.PermKeyRead, "Show a signing key", s.getKey},
		{"POST", "/v1/keys/{kid}/activate", authority.PermKeyActivate, "Activate a pending key", s.keyAction(keyward.KeyActivate)},
		{"POST", "/v1/keys/{kid}/retire", authority.PermKeyRetire, "Retire a key (verify-only)", s.keyAction(keyward.KeyRetire)},
		{"POST", "/v1/keys/{kid}/revoke", authority.PermKeyRevoke, "Revoke a compromised key", s.keyAction(keyward.KeyCompromise)},
		{"POST", "/v1/keys/{kid}/destroy", authority.PermKeyDestroy, "Destroy a key's private material (202: an approval request where the policy needs one)", s.destroyKey},

		{"GET", "/v1/licenses", authority.PermLicenseRead, "List licenses", s.listLicenses},
		{"POST", "/v1/licenses", authority.PermLicenseIssue, "Issue a license", s.issueLicense},
		{"POST", "/v1/licenses:batch", authority.PermLicenseIssue, "Issue count identical licenses in one transaction", s.issueBatch},
		{"GET", "/v1/licenses/{id}", authority.PermLicenseRead, "Show a license", s.getLicense},
		{"POST", "/v1/licenses/{id}/suspend", authority.PermLicenseSuspend, "Suspend a license", s.licenseAction(keyward.LicenseSuspend)},
		{"POST", "/v1/licenses/{id}/reinstate", authority.PermLicenseReinst, "Reinstate a suspended license", s.licenseAction(keyward.LicenseReinstate)},
		{"POST", "/v1/licenses/{id}/revoke", authority.PermLicenseRevoke, "Revoke a license (202: suspended, with an approval request, where the policy needs one)", s.revokeLicense},
		{"POST", "/v1/licenses/{id}/retire", authority.PermLicenseRetire, "Retire a license", s.licenseAction(keyward.LicenseRetire)},
		{"POST", "/v1/licenses/{id}/reissue", authority.PermLicenseReissue, "Reissue a license's key", s.reissue},
		{"POST", "/v1/licenses/{id}/checkout", authority.PermLicenseCheck, "Check out a license certificate", s.checkout},
		{"GET", "/v1/licenses/{id}/certificate", authority.PermLicenseRead, "Show a license's current certificate (the last checked out, or its re-signed form)", s.currentCertificate},
		{"GET", "/v1/licenses/{id}/machines", authority.PermMachineRead, "List a license's machines", s.listMachines},
		{"DELETE", "/v1/licenses/{id}/machines/{machine}", authority.PermMachineDeact, "Deactivate a machine", s.deactivateMachine},
	}
}

// Routes lists "METHOD PATH" of every registered route, for tests and docs.
func (s *Server) Routes() []string {
	out := make([]string, 0, len(s.table))
	for _, rt := range s.table {
		out = append(out, rt.method+" "+rt.path)
	}
	return out
}

func (s *Server) healthz(w http.ResponseWriter, r *http.Request) error {
	return writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
}

func (s *Server) readyz(w http.ResponseWriter, r *http.Request) error {
	if s.ready != nil {
		ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
		defer cancel()
		if err := s.ready(ctx); err != nil {
			return &keyward.Error{Code: keyward.EUnavailable, Message: "not ready", Err: err}
		}
	}
	return writeJSON(w, http.StatusOK, map[string]string{"status": "ready"})
}

func (s *Server) jwks(w http.ResponseWriter, r *http.Request) error {
	set, err := s.auth.JWKS(r.Context(), r.URL.Query().Get("product"))
	if err != nil {
		return err
	}
	w.Header().Set("Cache-Control", "public, max-age=60")
	w.Header().Set("Content-Type", "application/jwk-set+json")
	w.WriteHeader(http.StatusOK)
	return json.NewEncoder(w).Encode(set)
}

func (s *Server) openapi(w http.ResponseWriter, r *http.Request) error {
	w.Header().Set("Content-Type", "application/json")
	_, err := w.Write(openapiDoc)
	return err
}

type validateReq struct {
	Key         string `json:"key"`
	Fingerprint string `json:"fingerprint,omitempty"`
	Product     string `json:"product,omitempty"`
}

func (s *Server) validate(w http.ResponseWriter, r *http.Request) error {
	var req validateReq
	if err := decodeValidateRequest(w, r, &req); err != nil {
		return err
	}
	if req.Key == "" {
		return keyward.Errorf(keyward.EInvalid, "key is required")
	}
	v, err := s.auth.Validate(r.Context(), authority.ValidateRequest{Key: req.Key, Fingerprint: req.Fingerprint, Product: req.Product, Source: s.sourceAddr(r)})
	if err != nil {
		s.metrics.validations.WithLabelValues(keyward.ErrorCode(err)).Inc()
		return err
	}
	s.metrics.validations.WithLabelValues(v.Code).Inc()
	view := validationView(v)
	return writeValidation(w, &view)
}

func (s *Server) checkoutByKey(w http.ResponseWriter, r *http.Request) error {
	var req struct {
		Key     string `json:"key"`
		Product string `json:"product,omitempty"`
	}
	if err := decode(w, r, &req); err != nil {
		return err
	}
	if req.Key == "" {
		return keyward.Errorf(keyward.EInvalid, "key is required")
	}
	c, err := s.auth.CheckoutByKey(r.Context(), req.Key, req.Product, s.sourceAddr(r))
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, Certificate{Certificate: c.Token, KID: c.KID, ExpiresAt: c.ExpiresAt})
}

func (s *Server) listProducts(w http.ResponseWriter, r *http.Request) error {
	ps, err := s.auth.Products(r.Context())
	if err != nil {
		return err
	}
	out := make([]Product, 0, len(ps))
	for _, p := range ps {
		out = append(out, productView(p))
	}
	return writeJSON(w, http.StatusOK, map[string]any{"products": out})
}

func (s *Server) createProduct(w http.ResponseWriter, r *http.Request) error {
	var req struct {
		Name string `json:"name"`
	}
	if err := decode(w, r, &req); err != nil {
		return err
	}
	p, err := s.auth.CreateProduct(r.Context(), req.Name)
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusCreated, productView(p))
}

func (s *Server) getProduct(w http.ResponseWriter, r *http.Request) error {
	p, err := s.auth.Product(r.Context(), r.PathValue("product"))
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, productView(p))
}

type rotateReq struct {
	Algorithm string `json:"algorithm,omitempty"`
	Pending   bool   `json:"pending,omitempty"`
	Reason    string `json:"reason,omitempty"`
}

func (s *Server) rotateKey(w http.ResponseWriter, r *http.Request) error {
	var req rotateReq
	if err := decode(w, r, &req); err != nil {
		return err
	}
	k, err := s.auth.RotateKey(r.Context(), authority.RotateRequest{Product: r.PathValue("product"), Algorithm: req.Algorithm, Pending: req.Pending, Reason: req.Reason})
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusCreated, keyView(k))
}

func (s *Server) rotateRegistry(w http.ResponseWriter, r *http.Request) error {
	var req rotateReq
	if err := decode(w, r, &req); err != nil {
		return err
	}
	k, err := s.auth.RotateKey(r.Context(), authority.RotateRequest{Registry: true, Algorithm: req.Algorithm, Pending: req.Pending, Reason: req.Reason})
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusCreated, keyView(k))
}

func (s *Server) listKeys(w http.ResponseWriter, r *http.Request) error {
	q := r.URL.Query()
	f := store.KeyFilter{ProductID: q.Get("product")}
	if st := q.Get("state"); st != "" {
		f.States = []keyward.KeyState{keyward.KeyState(st)}
		if !validKeyState(f.States[0]) {
			return keyward.Errorf(keyward.EInvalid, "unknown key state %q", st)
		}
	}
	if q.Get("purpose") == "registry" {
		f.Ring = keyward.RegistryRing
	}
	ks, err := s.auth.Keys(r.Context(), f)
	if err != nil {
		return err
	}
	out := make([]Key, 0, len(ks))
	for _, k := range ks {
		out = append(out, keyView(k))
	}
	return writeJSON(w, http.StatusOK, map[string]any{"keys": out})
}

func validKeyState(s keyward.KeyState) bool {
	for _, x := range keyward.KeyStates() {
		if x == s {
			return true
		}
	}
	return false
}

func (s *Server) getKey(w http.ResponseWriter, r *http.Request) error {
	k, err := s.auth.Key(r.Context(), r.PathValue("kid"))
	if err != nil {
		return err
	}
	return s.keyDetail(w, r, k) // with what depends on it (lifecycle.go)
}

type reasonReq struct {
	Reason string `json:"reason,omitempty"`
}

// decodeOptional decodes a body if there is one; an empty body is {}.
func decodeOptional(w http.ResponseWriter, r *http.Request, v any) error {
	if r.ContentLength == 0 && r.Header.Get("Content-Type") == "" {
		return nil
	}
	return decode(w, r, v)
}

func (s *Server) keyAction(action keyward.KeyAction) func(http.ResponseWriter, *http.Request) error {
	return func(w http.ResponseWriter, r *http.Request) error {
		var req reasonReq
		if err := decodeOptional(w, r, &req); err != nil {
			return err
		}
		kid := r.PathValue("kid")
		var k *keyward.SigningKey
		var err error
		switch action {
		case keyward.KeyActivate:
			k, err = s.auth.ActivateKey(r.Context(), kid, req.Reason)
		case keyward.KeyRetire:
			k, err = s.auth.RetireKey(r.Context(), kid, req.Reason)
		case keyward.KeyCompromise:
			k, err = s.auth.RevokeKey(r.Context(), kid, req.Reason)
		case keyward.KeyDestroy:
			k, err = s.auth.DestroyKey(r.Context(), kid, req.Reason)
		}
		if err != nil {
			return err
		}
		return writeJSON(w, http.StatusOK, keyView(k))
	}
}

func (s *Server) productName(ctx context.Context, id string) string {
	p, err := s.auth.Product(ctx, id)
	if err != nil {
		return ""
	}
	return p.Name
}

func (s *Server) listLicenses(w http.ResponseWriter, r *http.Request) error {
	q := r.URL.Query()
	f := store.LicenseFilter{ProductID: q.Get("product"), State: keyward.LicenseState(q.Get("state")), Holder: q.Get("holder"), After: q.Get("after"), Limit: 100}
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 1000 {
			return keyward.Errorf(keyward.EInvalid, "limit %q: want 1 to 1000", v)
		}
		f.Limit = n
	}
	ls, err := s.auth.Licenses(r.Context(), f)
	if err != nil {
		return err
	}
	out := make([]License, 0, len(ls))
	names := map[string]string{}
	for _, l := range ls {
		if _, ok := names[l.ProductID]; !ok {
			names[l.ProductID] = s.productName(r.Context(), l.ProductID)
		}
		out = append(out, licenseView(l, names[l.ProductID]))
	}
	resp := map[string]any{"licenses": out}
	if len(ls) == f.Limit {
		resp["next"] = ls[len(ls)-1].ID
	}
	return writeJSON(w, http.StatusOK, resp)
}

type issueReq struct {
	Product      string     `json:"product"`
	Holder       string     `json:"holder"`
	ExpiresAt    *time.Time `json:"expires_at,omitempty"`
	Entitlements []string   `json:"entitlements,omitempty"`
	MaxMachines  *int       `json:"max_machines,omitempty"`
}

func (s *Server) issueLicense(w http.ResponseWriter, r *http.Request) error {
	var req issueReq
	if err := decode(w, r, &req); err != nil {
		return err
	}
	if req.Product == "" {
		return keyward.Errorf(keyward.EInvalid, "product is required")
	}
	is, err := s.auth.IssueLicense(r.Context(), authority.IssueRequest{
		Product: req.Product, Holder: req.Holder, ExpiresAt: req.ExpiresAt, Entitlements: req.Entitlements, MaxMachines: req.MaxMachines,
	})
	if err != nil {
		return err
	}
	w.Header().Set("Cache-Control", "no-store")
	return writeJSON(w, http.StatusCreated, IssuedLicense{License: licenseView(is.License, s.productName(r.Context(), is.License.ProductID)), Key: string(is.Key)})
}

func (s *Server) issueBatch(w http.ResponseWriter, r *http.Request) error {
	var req struct {
		issueReq
		Count int `json:"count"`
	}
	if err := decode(w, r, &req); err != nil {
		return err
	}
	if req.Product == "" {
		return keyward.Errorf(keyward.EInvalid, "product is required")
	}
	out, err := s.auth.IssueLicenses(r.Context(), authority.IssueRequest{
		Product: req.Product, Holder: req.Holder, ExpiresAt: req.ExpiresAt, Entitlements: req.Entitlements, MaxMachines: req.MaxMachines,
	}, req.Count)
	if err != nil {
		return err
	}
	name := s.productName(r.Context(), out[0].License.ProductID)
	views := make([]IssuedLicense, len(out))
	for i, is := range out {
		views[i] = IssuedLicense{License: licenseView(is.License, name), Key: string(is.Key)}
	}
	w.Header().Set("Cache-Control", "no-store")
	return writeJSON(w, http.StatusCreated, map[string]any{"licenses": views})
}

func (s *Server) getLicense(w http.ResponseWriter, r *http.Request) error {
	l, err := s.auth.License(r.Context(), r.PathValue("id"))
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, licenseView(l, s.productName(r.Context(), l.ProductID)))
}

func (s *Server) licenseAction(action keyward.LicenseAction) func(http.ResponseWriter, *http.Request) error {
	return func(w http.ResponseWriter, r *http.Request) error {
		var req reasonReq
		if err := decodeOptional(w, r, &req); err != nil {
			return err
		}
		l, err := s.auth.TransitionLicense(r.Context(), r.PathValue("id"), action, req.Reason)
		if err != nil {
			return err
		}
		return writeJSON(w, http.StatusOK, licenseView(l, s.productName(r.Context(), l.ProductID)))
	}
}

func (s *Server) reissue(w http.ResponseWriter, r *http.Request) error {
	grace, err := decodeGrace(w, r)
	if err != nil {
		return err
	}
	is, err := s.auth.ReissueLicense(r.Context(), r.PathValue("id"), grace)
	if err != nil {
		return err
	}
	w.Header().Set("Cache-Control", "no-store")
	return writeJSON(w, http.StatusOK, IssuedLicense{License: licenseView(is.License, s.productName(r.Context(), is.License.ProductID)), Key: string(is.Key)})
}

func (s *Server) currentCertificate(w http.ResponseWriter, r *http.Request) error {
	c, err := s.auth.CurrentCertificate(r.Context(), r.PathValue("id"))
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, Certificate{Certificate: c.Token, KID: c.KID, ExpiresAt: c.ExpiresAt})
}

func (s *Server) checkout(w http.ResponseWriter, r *http.Request) error {
	c, err := s.auth.Checkout(r.Context(), r.PathValue("id"))
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, Certificate{Certificate: c.Token, KID: c.KID, ExpiresAt: c.ExpiresAt})
}

func (s *Server) listMachines(w http.ResponseWriter, r *http.Request) error {
	ms, err := s.auth.Machines(r.Context(), r.PathValue("id"))
	if err != nil {
		return err
	}
	out := make([]Machine, 0, len(ms))
	for _, m := range ms {
		out = append(out, machineView(m))
	}
	return writeJSON(w, http.StatusOK, map[string]any{"machines": out})
}

func (s *Server) deactivateMachine(w http.ResponseWriter, r *http.Request) error {
	if err := s.auth.DeactivateMachine(r.Context(), r.PathValue("id"), r.PathValue("machine")); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// decodeGrace reads an optional body {"grace": "14d"}; nil means "not given".
func decodeGrace(w http.ResponseWriter, r *http.Request) (*time.Duration, error) {
	var req struct {
		Grace string `json:"grace,omitempty"`
	}
	if err := decodeOptional(w, r, &req); err != nil || req.Grace == "" {
		return nil, err
	}
	d, err := keyward.ParseDuration(req.Grace)
	if err != nil {
		return nil, keyward.Errorf(keyward.EInvalid, "grace: %v", err)
	}
	return &d, nil
}
