package api

import (
	"net/http"
	"time"

	"github.com/keyward/keyward"
	"github.com/keyward/keyward/authority"
	"github.com/keyward/keyward/store"
)

// Lifecycle automation over HTTP (docs/lifecycle.md): the plan of each
// ring (what the scheduler will do next and when), the progress of bulk
// re-signing, and the rollback of a rotation.
func (s *Server) lifecycleRoutes() []route {
	return []route{
		{"GET", "/v1/schedule", authority.PermKeyRead, "Lifecycle plan of every ring (registry and products): upcoming steps and re-sign jobs", s.schedule},
		{"GET", "/v1/products/{product}/schedule", authority.PermKeyRead, "Lifecycle plan of a product's ring", s.productSchedule},
		{"GET", "/v1/keys/{kid}/resign", authority.PermKeyRead, "Progress of the key's bulk re-sign job", s.resignJob},
		{"POST", "/v1/products/{product}/keys/rollback", authority.PermKeyRollback, "Roll back the last rotation within the overlap window (justification required)", s.rollbackKey},
	}
}

// ResignJob is the progress of a key's bulk re-sign job.
type ResignJob struct {
	KID        string     `json:"kid"`
	ProductID  string     `json:"product_id"`
	Reason     string     `json:"reason"` // retired or compromised
	State      string     `json:"state"`  // running, done, cancelled
	Run        int        `json:"run"`
	Total      int        `json:"total"`
	Done       int        `json:"done"`
	Skipped    int        `json:"skipped"`
	Percent    float64    `json:"percent"`
	StartedAt  time.Time  `json:"started_at"`
	UpdatedAt  time.Time  `json:"updated_at"`
	FinishedAt *time.Time `json:"finished_at,omitempty"`
}

func resignView(j *store.ResignJob) *ResignJob {
	if j == nil {
		return nil
	}
	pct := 100.0
	if j.Total > 0 && j.State == store.ResignRunning {
		pct = min(100, float64(j.Done+j.Skipped)*100/float64(j.Total))
	}
	return &ResignJob{
		KID: j.KID, ProductID: j.ProductID, Reason: j.Reason, State: j.State, Run: j.Runs, Total: j.Total, Done: j.Done,
		Skipped: j.Skipped, Percent: pct, StartedAt: j.CreatedAt, UpdatedAt: j.UpdatedAt, FinishedAt: j.FinishedAt,
	}
}

// Exposure says what still depends on a key (GET /v1/keys/{kid}).
type Exposure struct {
	// LiveCertificates: unexpired current certificates of active
	// licenses signed by the key.
	LiveCertificates int `json:"live_certificates"`
	// InactiveCertificates: unexpired current certificates of licenses
	// that are not active (not re-signed).
	InactiveCertificates int `json:"inactive_certificates"`
	// Leases are short-lived (policy leaseTTL) and not stored: never
	// counted.
	LeasesCounted bool       `json:"leases_counted"`
	Resign        *ResignJob `json:"resign,omitempty"`
}

// keyDetail answers GET /v1/keys/{kid}: the key and what depends on it.
func (s *Server) keyDetail(w http.ResponseWriter, r *http.Request, k *keyward.SigningKey) error {
	e, err := s.auth.KeyExposure(r.Context(), k.KID)
	if err != nil {
		return err
	}
	v := keyView(k)
	v.Exposure = &Exposure{LiveCertificates: e.LiveCertificates, InactiveCertificates: e.InactiveCertificates, Resign: resignView(e.Job)}
	return writeJSON(w, http.StatusOK, v)
}

func (s *Server) resignJob(w http.ResponseWriter, r *http.Request) error {
	j, err := s.auth.ResignJob(r.Context(), r.PathValue("kid"))
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, resignView(j))
}

// RingPlan is the plan of one ring.
type RingPlan struct {
	Ring          string                  `json:"ring"`
	ProductID     string                  `json:"product_id,omitempty"`
	Product       string                  `json:"product,omitempty"`
	PolicyVersion int                     `json:"policy_version"`
	Active        string                  `json:"active,omitempty"`
	Pending       []string                `json:"pending"`
	Steps         []authority.PlannedStep `json:"steps"`
	Resign        []*ResignJob            `json:"resign"`
	Licenses      *LicenseOutlook         `json:"licenses,omitempty"`
}

// LicenseOutlook counts a product's active licenses by coming expiry.
type LicenseOutlook struct {
	ExpiringNotice string `json:"expiring_notice"` // the policy's lead time, e.g. "14d"
	Expiring       int    `json:"expiring"`        // expire within the lead time
	Overdue        int    `json:"overdue"`         // past their expiry: the next sweep expires them
}

// Schedule is the body of the schedule routes.
type Schedule struct {
	Now   time.Time  `json:"now"`
	Rings []RingPlan `json:"rings"`
}

func (s *Server) scheduleOf(w http.ResponseWriter, r *http.Request, product string) error {
	plans, err := s.auth.Schedule(r.Context(), product)
	if err != nil {
		return err
	}
	out := Schedule{Now: s.auth.Now(), Rings: make([]RingPlan, 0, len(plans))}
	for _, p := range plans {
		rp := RingPlan{Ring: p.Ring, ProductID: p.ProductID, Product: p.Product, PolicyVersion: p.PolicyVersion,
			Active: p.Active, Pending: p.Pending, Steps: p.Steps, Resign: []*ResignJob{}}
		for _, j := range p.Jobs {
			rp.Resign = append(rp.Resign, resignView(j))
		}
		if p.Notices != nil {
			rp.Licenses = &LicenseOutlook{ExpiringNotice: keyward.FormatDuration(p.Notices.ExpiringNotice), Expiring: p.Notices.Expiring, Overdue: p.Notices.Overdue}
		}
		out.Rings = append(out.Rings, rp)
	}
	return writeJSON(w, http.StatusOK, out)
}

func (s *Server) schedule(w http.ResponseWriter, r *http.Request) error {
	return s.scheduleOf(w, r, "")
}

func (s *Server) productSchedule(w http.ResponseWriter, r *http.Request) error {
	return s.scheduleOf(w, r, r.PathValue("product"))
}

// Rollback is the answer to a rollback.
type Rollback struct {
	Activated Key `json:"activated"`
	Retired   Key `json:"retired"`
}

func (s *Server) rollbackKey(w http.ResponseWriter, r *http.Request) error {
	var req struct {
		Justification string `json:"justification"`
	}
	if err := decode(w, r, &req); err != nil {
		return err
	}
	res, err := s.auth.RollbackKey(r.Context(), r.PathValue("product"), req.Justification)
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, Rollback{Activated: keyView(res.Activated), Retired: keyView(res.Retired)})
}
