package api

import (
	"net"
	"net/http"
	"net/netip"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/keyward/keyward"
	"github.com/keyward/keyward/authority"
)

// Abuse signals over HTTP (docs/abuse.md): explicit signals about a
// license, its usage counters, and the metrics of automatic suspension.

func (s *Server) abuseRoutes() []route {
	return []route{
		{"POST", "/v1/licenses/{id}/signals", authority.PermLicenseSignal, "Record an abuse signal about a license (abuse, leak, chargeback, other); the policy may suspend it at once", s.createSignal},
		{"GET", "/v1/licenses/{id}/signals", authority.PermLicenseRead, "List a license's signals, oldest first", s.listSignals},
		{"GET", "/v1/licenses/{id}/usage", authority.PermLicenseRead, "A license's usage counters (this server's) and automatic suspensions", s.licenseUsage},
	}
}

// Signal is an abuse signal as the API shows it.
type Signal struct {
	ID        string    `json:"id"`
	LicenseID string    `json:"license_id"`
	ProductID string    `json:"product_id"`
	Kind      string    `json:"kind"`
	Detail    string    `json:"detail"`
	Actor     string    `json:"actor"`
	ActorID   string    `json:"actor_id"`
	CreatedAt time.Time `json:"created_at"`
	// Outcome: recorded, suspended, inactive, cooldown or ceiling.
	Outcome string `json:"outcome"`
}

// SignalRecorded answers POST /v1/licenses/{id}/signals.
type SignalRecorded struct {
	Signal  Signal  `json:"signal"`
	License License `json:"license"`
	// Approval is the revocation request opened when the signal suspended
	// the license under a policy that needs approvals.
	Approval *Approval `json:"approval,omitempty"`
}

// Usage is a license's usage counters.
type Usage struct {
	ValidationsPerMinute    int `json:"validations_per_minute"`
	DistinctFingerprints24h int `json:"distinct_fingerprints_24h"`
	FailedValidationsInRow  int `json:"failed_validations_in_row"`
	DistinctNetworks24h     int `json:"distinct_networks_24h"`
}

// AutoSuspension is one automatic suspension decision about a license.
type AutoSuspension struct {
	ID            string    `json:"id"`
	Rule          string    `json:"rule"`
	PolicyVersion int       `json:"policy_version"`
	Outcome       string    `json:"outcome"` // suspended, ceiling
	At            time.Time `json:"at"`
}

// LicenseUsage answers GET /v1/licenses/{id}/usage.
type LicenseUsage struct {
	LicenseID string `json:"license_id"`
	Usage     Usage  `json:"usage"`
	// Tracked is false when this server has no counters for the license:
	// each replica counts the validations it serves.
	Tracked         bool             `json:"tracked"`
	CooldownUntil   *time.Time       `json:"cooldown_until,omitempty"`
	AutoSuspensions []AutoSuspension `json:"auto_suspensions"`
}

func signalView(sg *keyward.Signal) Signal {
	return Signal{
		ID: sg.ID, LicenseID: sg.LicenseID, ProductID: sg.ProductID, Kind: string(sg.Kind), Detail: sg.Detail,
		Actor: sg.ActorName, ActorID: sg.Actor, CreatedAt: sg.CreatedAt, Outcome: sg.Outcome,
	}
}

func (s *Server) createSignal(w http.ResponseWriter, r *http.Request) error {
	var req struct {
		Kind   string `json:"kind"`
		Detail string `json:"detail"`
	}
	if err := decode(w, r, &req); err != nil {
		return err
	}
	res, err := s.auth.RecordSignal(r.Context(), authority.SignalRequest{LicenseID: r.PathValue("id"), Kind: keyward.SignalKind(req.Kind), Detail: req.Detail})
	if err != nil {
		return err
	}
	out := SignalRecorded{Signal: signalView(res.Signal), License: licenseView(res.License, s.productName(r.Context(), res.License.ProductID))}
	if res.Approval != nil {
		ap := approvalView(res.Approval, s.auth.Now())
		out.Approval = &ap
	}
	return writeJSON(w, http.StatusCreated, out)
}

func (s *Server) listSignals(w http.ResponseWriter, r *http.Request) error {
	ss, err := s.auth.Signals(r.Context(), r.PathValue("id"))
	if err != nil {
		return err
	}
	out := make([]Signal, 0, len(ss))
	for _, sg := range ss {
		out = append(out, signalView(sg))
	}
	return writeJSON(w, http.StatusOK, map[string]any{"signals": out})
}

func (s *Server) licenseUsage(w http.ResponseWriter, r *http.Request) error {
	rep, err := s.auth.LicenseUsage(r.Context(), r.PathValue("id"))
	if err != nil {
		return err
	}
	u := rep.Usage
	out := LicenseUsage{
		LicenseID: rep.LicenseID, Tracked: rep.Tracked, CooldownUntil: rep.CooldownUntil, AutoSuspensions: []AutoSuspension{},
		Usage: Usage{ValidationsPerMinute: u.ValidationsPerMinute, DistinctFingerprints24h: u.DistinctFingerprints24h,
			FailedValidationsInRow: u.FailedValidationsInRow, DistinctNetworks24h: u.DistinctNetworks24h},
	}
	for _, a := range rep.AutoSuspensions {
		out.AutoSuspensions = append(out.AutoSuspensions, AutoSuspension{ID: a.ID, Rule: a.Rule, PolicyVersion: a.PolicyVersion, Outcome: a.Outcome, At: a.At})
	}
	return writeJSON(w, http.StatusOK, out)
}

// sourceAddr is the client address a validation is counted against: the
// connection's peer, or — when the peer is one of Config.TrustedProxies —
// the nearest X-Forwarded-For entry that is not a trusted proxy (read
// right to left, as each proxy appends its peer). Anything unparsable
// ends the walk at the last address known good. The zero Addr when even
// the peer is unknown.
func (s *Server) sourceAddr(r *http.Request) netip.Addr {
	peer := remoteAddr(r.RemoteAddr)
	if len(s.trustedProxies) == 0 || !s.trusted(peer) {
		return peer
	}
	hops := r.Header.Values("X-Forwarded-For")
	addr := peer
	for i := len(hops) - 1; i >= 0; i-- {
		parts := strings.Split(hops[i], ",")
		for j := len(parts) - 1; j >= 0; j-- {
			a, err := netip.ParseAddr(strings.TrimSpace(parts[j]))
			if err != nil {
				return addr
			}
			addr = a.Unmap()
			if !s.trusted(addr) {
				return addr
			}
		}
	}
	return addr
}

func (s *Server) trusted(a netip.Addr) bool {
	for _, p := range s.trustedProxies {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

func remoteAddr(hostport string) netip.Addr {
	if ap, err := netip.ParseAddrPort(hostport); err == nil {
		return ap.Addr().Unmap()
	}
	host, _, err := net.SplitHostPort(hostport)
	if err != nil {
		host = hostport
	}
	a, err := netip.ParseAddr(host)
	if err != nil {
		return netip.Addr{}
	}
	return a.Unmap()
}

// abuseCollector reports automatic suspension decisions by product, rule
// and outcome, and the number of licenses with usage counters.
type abuseCollector struct {
	auth            *authority.Authority
	decisions, size *prometheus.Desc
}

func newAbuseCollector(a *authority.Authority) *abuseCollector {
	return &abuseCollector{
		auth: a,
		decisions: prometheus.NewDesc("keyward_auto_suspensions_total",
			"Automatic suspension decisions by product, rule (an autoSuspend rule or suspendOnSignal) and outcome: suspended; alerted (the per-product ceiling was reached: an alert instead of a suspension); held (a match while the ceiling held, after the alert).",
			[]string{"product", "rule", "outcome"}, nil),
		size: prometheus.NewDesc("keyward_usage_tracked_licenses", "Licenses whose usage counters this server keeps in memory.", nil, nil),
	}
}

func (c *abuseCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.decisions; ch <- c.size }

func (c *abuseCollector) Collect(ch chan<- prometheus.Metric) {
	for _, st := range c.auth.AbuseStats() {
		ch <- prometheus.MustNewConstMetric(c.decisions, prometheus.CounterValue, float64(st.Count), st.Product, st.Rule, st.Outcome)
	}
	ch <- prometheus.MustNewConstMetric(c.size, prometheus.GaugeValue, float64(c.auth.TrackedLicenses()))
}
