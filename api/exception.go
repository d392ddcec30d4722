package api

import (
	"net/http"
	"strconv"
	"time"

	"github.com/keyward/keyward"
	"github.com/keyward/keyward/authority"
)

// Exceptions over HTTP (docs/governance.md, "Exceptions").

func (s *Server) exceptionRoutes() []route {
	return []route{
		{"POST", "/v1/exceptions", authority.PermExceptionRequest, "Request an exception: hold one scheduled step on a key or license until a time (202 with the approval request that activates it; 201 active at once where the policy needs no approvals)", s.requestException},
		{"GET", "/v1/exceptions", authority.PermExceptionRead, "List exceptions in their effective state (filters: state, target, rule)", s.listExceptions},
		{"GET", "/v1/exceptions/{id}", authority.PermExceptionRead, "Show an exception", s.getException},
	}
}

// Exception is the JSON form of a governance exception.
type Exception struct {
	ID            string     `json:"id"`
	TargetType    string     `json:"target_type"` // key or license
	Target        string     `json:"target"`      // kid or license id
	ProductID     string     `json:"product_id,omitempty"`
	Rule          string     `json:"rule"`
	Until         time.Time  `json:"until"`
	Justification string     `json:"justification"`
	RequestedBy   string     `json:"requested_by"`
	ApprovalID    string     `json:"approval_id,omitempty"`
	State         string     `json:"state"` // effective: pending, active, denied, expired
	CreatedAt     time.Time  `json:"created_at"`
	UpdatedAt     time.Time  `json:"updated_at"`
	DecidedAt     *time.Time `json:"decided_at,omitempty"`
	// Approval is the request filed with a new exception (POST only).
	Approval *Approval `json:"approval,omitempty"`
}

func exceptionView(e *keyward.Exception) Exception {
	return Exception{
		ID: e.ID, TargetType: e.TargetType, Target: e.TargetID, ProductID: e.ProductID, Rule: e.Rule, Until: e.Until.UTC(),
		Justification: e.Justification, RequestedBy: e.RequestedByName, ApprovalID: e.ApprovalID, State: string(e.State),
		CreatedAt: e.CreatedAt.UTC(), UpdatedAt: e.UpdatedAt.UTC(), DecidedAt: e.DecidedAt,
	}
}

func (s *Server) requestException(w http.ResponseWriter, r *http.Request) error {
	var req struct {
		Target        string `json:"target"`
		Rule          string `json:"rule"`
		Until         string `json:"until"`
		Justification string `json:"justification"`
	}
	if err := decode(w, r, &req); err != nil {
		return err
	}
	until, err := authority.ParseExceptionUntil(req.Until)
	if err != nil {
		return err
	}
	e, ap, err := s.auth.RequestException(r.Context(), authority.ExceptionRequest{
		Target: req.Target, Rule: req.Rule, Until: until, Justification: req.Justification,
	})
	if err != nil {
		return err
	}
	out := exceptionView(e)
	if ap == nil {
		return writeJSON(w, http.StatusCreated, out)
	}
	av := approvalView(ap, s.auth.Now())
	out.Approval = &av
	return writeJSON(w, http.StatusAccepted, out)
}

func (s *Server) listExceptions(w http.ResponseWriter, r *http.Request) error {
	q := r.URL.Query()
	eq := authority.ExceptionQuery{State: keyward.ExceptionState(q.Get("state")), Target: q.Get("target"), Rule: q.Get("rule")}
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			return keyward.Errorf(keyward.EInvalid, "limit %q: want 1 to %d", v, authority.MaxApprovalPage)
		}
		eq.Limit = n
	}
	es, err := s.auth.Exceptions(r.Context(), eq)
	if err != nil {
		return err
	}
	out := make([]Exception, 0, len(es))
	for _, e := range es {
		out = append(out, exceptionView(e))
	}
	return writeJSON(w, http.StatusOK, map[string]any{"exceptions": out})
}

func (s *Server) getException(w http.ResponseWriter, r *http.Request) error {
	e, err := s.auth.Exception(r.Context(), r.PathValue("id"))
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, exceptionView(e))
}
