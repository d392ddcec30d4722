package api

import (
	"net/http"
	"strconv"
	"time"

	"github.com/keyward/keyward"
	"github.com/keyward/keyward/authority"
)

// policyRoutes are the routes of the policy feature: versioned
// LifecyclePolicy documents per product (docs/policy.md).
func (s *Server) policyRoutes() []route {
	return []route{
		{"GET", "/v1/products/{product}/policies", authority.PermPolicyRead, "Policy history: every applied version, oldest first", s.policyHistory},
		{"POST", "/v1/products/{product}/policies", authority.PermPolicyApply, "Apply a LifecyclePolicy document as the product's next version", s.applyPolicy},
		{"GET", "/v1/products/{product}/policies/diff", authority.PermPolicyRead, "Unified diff between two policy versions", s.policyDiff},
		{"GET", "/v1/products/{product}/policies/{version}", authority.PermPolicyRead, "Show a policy version (latest, 0 = built-in default, or N)", s.getPolicy},
		{"POST", "/v1/products/{product}/policies/{version}/rollback", authority.PermPolicyApply, "Roll back: a new version equal to version N", s.rollbackPolicy},
	}
}

// PolicyVersion is one version of a product's policy as the API shows it.
// Version 0 is the built-in default, rendered for the product.
type PolicyVersion struct {
	ProductID     string    `json:"product_id"`
	Version       int       `json:"version"`
	Builtin       bool      `json:"builtin,omitempty"`
	Document      string    `json:"document,omitempty"` // left out of history listings
	Hash          string    `json:"hash"`               // hex SHA-256 of document
	Author        string    `json:"author"`
	AuthorName    string    `json:"author_name,omitempty"`
	CreatedAt     time.Time `json:"created_at"`
	Justification string    `json:"justification"`
	RollbackOf    int       `json:"rollback_of,omitempty"`
}

// PolicyChange is the answer to apply and rollback.
type PolicyChange struct {
	PolicyVersion
	PreviousVersion int    `json:"previous_version"` // 0 = the built-in default
	Diff            string `json:"diff"`             // unified diff from the previous version
}

// PolicyDiff is the answer to a diff.
type PolicyDiff struct {
	From int    `json:"from"`
	To   int    `json:"to"`
	Diff string `json:"diff"` // "" when equal
}

func policyView(r *keyward.PolicyRecord, withDocument bool) PolicyVersion {
	v := PolicyVersion{
		ProductID: r.ProductID, Version: r.Version, Builtin: r.Version == 0, Hash: r.Hash,
		Author: r.Author, AuthorName: r.AuthorName, CreatedAt: r.CreatedAt,
		Justification: r.Justification, RollbackOf: r.RollbackOf,
	}
	if withDocument {
		v.Document = r.Document
	}
	return v
}

type applyPolicyReq struct {
	Document      string `json:"document"`
	Justification string `json:"justification"`
}

func (s *Server) applyPolicy(w http.ResponseWriter, r *http.Request) error {
	var req applyPolicyReq
	if err := decode(w, r, &req); err != nil {
		return err
	}
	if req.Document == "" {
		return keyward.Errorf(keyward.EInvalid, "document is required: the LifecyclePolicy YAML")
	}
	c, err := s.auth.ApplyPolicy(r.Context(), r.PathValue("product"), req.Document, req.Justification)
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusCreated, PolicyChange{PolicyVersion: policyView(c.Record, true), PreviousVersion: c.Previous, Diff: c.Diff})
}

func (s *Server) rollbackPolicy(w http.ResponseWriter, r *http.Request) error {
	var req struct {
		Justification string `json:"justification"`
	}
	if err := decode(w, r, &req); err != nil {
		return err
	}
	v, err := parseVersion(r.PathValue("version"), "version", false)
	if err != nil {
		return err
	}
	c, err := s.auth.RollbackPolicy(r.Context(), r.PathValue("product"), v, req.Justification)
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusCreated, PolicyChange{PolicyVersion: policyView(c.Record, true), PreviousVersion: c.Previous, Diff: c.Diff})
}

func (s *Server) getPolicy(w http.ResponseWriter, r *http.Request) error {
	v, err := parseVersion(r.PathValue("version"), "version", true)
	if err != nil {
		return err
	}
	rec, err := s.auth.PolicyVersion(r.Context(), r.PathValue("product"), v)
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, policyView(rec, true))
}

func (s *Server) policyHistory(w http.ResponseWriter, r *http.Request) error {
	rs, err := s.auth.PolicyHistory(r.Context(), r.PathValue("product"))
	if err != nil {
		return err
	}
	out := make([]PolicyVersion, 0, len(rs))
	for _, rec := range rs {
		out = append(out, policyView(rec, false))
	}
	return writeJSON(w, http.StatusOK, map[string]any{"versions": out})
}

func (s *Server) policyDiff(w http.ResponseWriter, r *http.Request) error {
	q := r.URL.Query()
	from, err := parseVersion(q.Get("from"), "from", false)
	if err != nil {
		return err
	}
	to, err := parseVersion(q.Get("to"), "to", false)
	if err != nil {
		return err
	}
	d, err := s.auth.PolicyDiff(r.Context(), r.PathValue("product"), from, to)
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, PolicyDiff{From: from, To: to, Diff: d})
}

// parseVersion reads a policy version: a number >= 0 (0 = built-in
// default) or, where latest is allowed, "latest" (returned as -1).
func parseVersion(s, what string, latest bool) (int, error) {
	if latest && s == "latest" {
		return -1, nil
	}
	v, err := strconv.Atoi(s)
	if err != nil || v < 0 || len(s) > 9 {
		want := "a version number (0 = built-in default)"
		if latest {
			want += " or latest"
		}
		if s == "" {
			return 0, keyward.Errorf(keyward.EInvalid, "%s is required: want %s", what, want)
		}
		return 0, keyward.Errorf(keyward.EInvalid, "%s %q: want %s", what, s, want)
	}
	return v, nil
}
