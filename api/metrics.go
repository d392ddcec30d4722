package api

import (
	"context"
	"net/http"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/keyward/keyward"
	"github.com/keyward/keyward/authority"
	"github.com/keyward/keyward/store"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Metrics holds the server's Prometheus registry and the collectors the
// API updates. Other parts of the server (revocation hub, webhooks,
// scheduler) register their own collectors in Registry.
type Metrics struct {
	Registry    *prometheus.Registry
	requests    *prometheus.CounterVec
	latency     *prometheus.HistogramVec
	validations *prometheus.CounterVec
}

// NewMetrics returns a registry with Go runtime and process collectors and
// the API's own metrics.
func NewMetrics() *Metrics {
	reg := prometheus.NewRegistry()
	m := &Metrics{
		Registry: reg,
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "keyward_http_requests_total", Help: "HTTP requests by route pattern, method and status code.",
		}, []string{"route", "code"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "keyward_http_request_duration_seconds", Help: "HTTP request latency by route pattern.",
			Buckets: []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5},
		}, []string{"route"}),
		validations: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "keyward_validations_total", Help: "License validations by result code.",
		}, []string{"code"}),
	}
	reg.MustRegister(m.requests, m.latency, m.validations,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// statusRecorder captures the status code a handler writes.
type statusRecorder struct {
	http.ResponseWriter
	status int
}

func (r *statusRecorder) WriteHeader(code int) {
	if r.status == 0 {
		r.status = code
	}
	r.ResponseWriter.WriteHeader(code)
}

func (r *statusRecorder) Write(b []byte) (int, error) {
	if r.status == 0 {
		r.status = http.StatusOK
	}
	return r.ResponseWriter.Write(b)
}

// Unwrap lets http.ResponseController reach the real writer (flush, deadlines).
func (r *statusRecorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }

// instrument counts and times a route.
func (m *Metrics) instrument(route string, h http.Handler) http.Handler {
	reqs := m.requests.MustCurryWith(prometheus.Labels{"route": route})
	lat := m.latency.WithLabelValues(route)
	var byStatus [600]atomic.Pointer[prometheus.Counter] // resolved label values, per status
	counter := func(status int) prometheus.Counter {
		if status < 0 || status >= len(byStatus) {
			return reqs.WithLabelValues(strconv.Itoa(status))
		}
		if c := byStatus[status].Load(); c != nil {
			return *c
		}
		c := reqs.WithLabelValues(strconv.Itoa(status))
		byStatus[status].Store(&c)
		return c
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		rec := &statusRecorder{ResponseWriter: w}
		h.ServeHTTP(rec, r)
		if rec.status == 0 {
			rec.status = http.StatusOK
		}
		lat.Observe(time.Since(start).Seconds())
		counter(rec.status).Inc()
	})
}

func (s *Server) metricsHandler() func(http.ResponseWriter, *http.Request) error {
	h := promhttp.HandlerFor(s.metrics.Registry, promhttp.HandlerOpts{})
	return func(w http.ResponseWriter, r *http.Request) error {
		h.ServeHTTP(w, r)
		return nil
	}
}

// keyCollector reports, per ring, the age of the active key and the time
// left until its rotation is due under the product's policy (negative when
// overdue), computed at scrape time from the store.
type keyCollector struct {
	auth     *authority.Authority
	age, due *prometheus.Desc
}

func newKeyCollector(a *authority.Authority) *keyCollector {
	return &keyCollector{
		auth: a,
		age:  prometheus.NewDesc("keyward_active_key_age_seconds", "Age of each ring's active signing key.", []string{"ring"}, nil),
		due:  prometheus.NewDesc("keyward_key_rotation_due_seconds", "Seconds until each ring's active key is due for rotation (negative: overdue).", []string{"ring"}, nil),
	}
}

func (c *keyCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.age; ch <- c.due }

func (c *keyCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	ks, err := c.auth.Keys(ctx, store.KeyFilter{States: []keyward.KeyState{keyward.KeyActive}})
	if err != nil {
		return
	}
	now := c.auth.Now()
	for _, k := range ks {
		since := k.CreatedAt
		if k.ActivatedAt != nil {
			since = *k.ActivatedAt
		}
		ch <- prometheus.MustNewConstMetric(c.age, prometheus.GaugeValue, now.Sub(since).Seconds(), k.Ring)
		pol, err := c.auth.Policy(ctx, k.ProductID)
		if err != nil {
			continue
		}
		ch <- prometheus.MustNewConstMetric(c.due, prometheus.GaugeValue, since.Add(pol.RotateEvery).Sub(now).Seconds(), k.Ring)
	}
}
