package api

import (
	"encoding/json"
	"net/http"
	"strconv"
	"time"

	"github.com/keyward/keyward"
	"github.com/keyward/keyward/authority"
)

// WebhookEndpoint is a webhook endpoint as the API shows it: never its
// secret (see WebhookWithSecret). URL is shown whole: it is admin-only.
type WebhookEndpoint struct {
	ID          string    `json:"id"`
	URL         string    `json:"url"`
	Events      []string  `json:"events"`
	Description string    `json:"description,omitempty"`
	State       string    `json:"state"`
	CreatedAt   time.Time `json:"created_at"`
	UpdatedAt   time.Time `json:"updated_at"`
	// PreviousSecretExpiresAt is set while deliveries also carry a
	// signature by the secret a rotation replaced.
	PreviousSecretExpiresAt *time.Time `json:"previous_secret_expires_at,omitempty"`
}

// WebhookWithSecret is an endpoint with its signing secret ("whsec_…"),
// returned once: at creation and at rotation.
type WebhookWithSecret struct {
	WebhookEndpoint
	Secret string `json:"secret"`
}

// WebhookDelivery is one entry of the delivery log.
type WebhookDelivery struct {
	ID            string     `json:"id"`
	EndpointID    string     `json:"endpoint_id"`
	EventID       string     `json:"event_id"`
	EventSeq      int64      `json:"event_seq"`
	EventType     string     `json:"event_type"`
	State         string     `json:"state"`
	Attempts      int        `json:"attempts"`
	NextAttemptAt *time.Time `json:"next_attempt_at,omitempty"`
	LastAttemptAt *time.Time `json:"last_attempt_at,omitempty"`
	LastStatus    int        `json:"last_status,omitempty"` // HTTP status of the last answer
	LastError     string     `json:"last_error,omitempty"`
	CreatedAt     time.Time  `json:"created_at"`
	UpdatedAt     time.Time  `json:"updated_at"`
	// Payload is the exact body sent; only in GET of one delivery.
	Payload json.RawMessage `json:"payload,omitempty"`
}

func webhookView(ep *keyward.WebhookEndpoint) WebhookEndpoint {
	v := WebhookEndpoint{
		ID: ep.ID, URL: ep.URL, Events: ep.Events, Description: ep.Description, State: string(ep.State),
		CreatedAt: ep.CreatedAt, UpdatedAt: ep.UpdatedAt,
	}
	if ep.PreviousSecret != nil {
		v.PreviousSecretExpiresAt = ep.PreviousExpiresAt
	}
	if v.Events == nil {
		v.Events = []string{}
	}
	return v
}

func deliveryView(d *keyward.WebhookDelivery) WebhookDelivery {
	return WebhookDelivery{
		ID: d.ID, EndpointID: d.EndpointID, EventID: d.EventID, EventSeq: d.EventSeq, EventType: d.EventType,
		State: string(d.State), Attempts: d.Attempts, NextAttemptAt: d.NextAttemptAt, LastAttemptAt: d.LastAttemptAt,
		LastStatus: d.LastStatus, LastError: d.LastError, CreatedAt: d.CreatedAt, UpdatedAt: d.UpdatedAt,
	}
}

// webhookRoutes are the routes of the webhook feature: admin only.
func (s *Server) webhookRoutes() []route {
	p := authority.PermWebhookAdmin
	return []route{
		{"GET", "/v1/webhooks", p, "List webhook endpoints", s.listWebhooks},
		{"POST", "/v1/webhooks", p, "Add a webhook endpoint; its signing secret is shown once", s.createWebhook},
		{"GET", "/v1/webhooks/event-types", p, "List the event types endpoints can subscribe to", s.webhookEventTypes},
		{"GET", "/v1/webhooks/deliveries", p, "List webhook deliveries (the delivery log), newest first", s.listDeliveries},
		{"GET", "/v1/webhooks/deliveries/{delivery}", p, "Show a webhook delivery with its payload", s.getDelivery},
		{"POST", "/v1/webhooks/deliveries/{delivery}/replay", p, "Send a finished delivery again", s.replayDelivery},
		{"GET", "/v1/webhooks/{id}", p, "Show a webhook endpoint", s.getWebhook},
		{"DELETE", "/v1/webhooks/{id}", p, "Remove a webhook endpoint (secrets erased, log kept)", s.removeWebhook},
		{"POST", "/v1/webhooks/{id}/enable", p, "Enable a disabled webhook endpoint", s.webhookAction(keyward.WebhookEnable)},
		{"POST", "/v1/webhooks/{id}/disable", p, "Disable a webhook endpoint; pending deliveries are cancelled", s.webhookAction(keyward.WebhookDisable)},
		{"POST", "/v1/webhooks/{id}/rotate-secret", p, "Rotate an endpoint's signing secret; the new one is shown once", s.rotateWebhookSecret},
	}
}

func (s *Server) listWebhooks(w http.ResponseWriter, r *http.Request) error {
	all := false
	if v := r.URL.Query().Get("all"); v != "" {
		b, err := strconv.ParseBool(v)
		if err != nil {
			return keyward.Errorf(keyward.EInvalid, "all %q: want true or false", v)
		}
		all = b
	}
	eps, err := s.auth.Webhooks(r.Context(), all)
	if err != nil {
		return err
	}
	out := make([]WebhookEndpoint, 0, len(eps))
	for _, ep := range eps {
		out = append(out, webhookView(ep))
	}
	return writeJSON(w, http.StatusOK, map[string]any{"webhooks": out})
}

func (s *Server) createWebhook(w http.ResponseWriter, r *http.Request) error {
	var req struct {
		URL         string   `json:"url"`
		Events      []string `json:"events"`
		Description string   `json:"description,omitempty"`
	}
	if err := decode(w, r, &req); err != nil {
		return err
	}
	ep, secret, err := s.auth.CreateWebhook(r.Context(), authority.WebhookRequest{URL: req.URL, Events: req.Events, Description: req.Description})
	if err != nil {
		return err
	}
	w.Header().Set("Cache-Control", "no-store")
	return writeJSON(w, http.StatusCreated, WebhookWithSecret{WebhookEndpoint: webhookView(ep), Secret: secret.Reveal()})
}

func (s *Server) webhookEventTypes(w http.ResponseWriter, r *http.Request) error {
	return writeJSON(w, http.StatusOK, map[string]any{"event_types": authority.EventTypes()})
}

func (s *Server) getWebhook(w http.ResponseWriter, r *http.Request) error {
	ep, err := s.auth.Webhook(r.Context(), r.PathValue("id"))
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, webhookView(ep))
}

func (s *Server) removeWebhook(w http.ResponseWriter, r *http.Request) error {
	var req reasonReq
	if err := decodeOptional(w, r, &req); err != nil {
		return err
	}
	ep, err := s.auth.RemoveWebhook(r.Context(), r.PathValue("id"), req.Reason)
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, webhookView(ep))
}

func (s *Server) webhookAction(action keyward.WebhookAction) func(http.ResponseWriter, *http.Request) error {
	return func(w http.ResponseWriter, r *http.Request) error {
		var req reasonReq
		if err := decodeOptional(w, r, &req); err != nil {
			return err
		}
		var ep *keyward.WebhookEndpoint
		var err error
		switch action {
		case keyward.WebhookEnable:
			ep, err = s.auth.EnableWebhook(r.Context(), r.PathValue("id"), req.Reason)
		case keyward.WebhookDisable:
			ep, err = s.auth.DisableWebhook(r.Context(), r.PathValue("id"), req.Reason)
		}
		if err != nil {
			return err
		}
		return writeJSON(w, http.StatusOK, webhookView(ep))
	}
}

func (s *Server) rotateWebhookSecret(w http.ResponseWriter, r *http.Request) error {
	grace, err := decodeGrace(w, r)
	if err != nil {
		return err
	}
	ep, secret, err := s.auth.RotateWebhookSecret(r.Context(), r.PathValue("id"), grace)
	if err != nil {
		return err
	}
	w.Header().Set("Cache-Control", "no-store")
	return writeJSON(w, http.StatusOK, WebhookWithSecret{WebhookEndpoint: webhookView(ep), Secret: secret.Reveal()})
}

func (s *Server) listDeliveries(w http.ResponseWriter, r *http.Request) error {
	q := r.URL.Query()
	dq := authority.DeliveryQuery{Endpoint: q.Get("endpoint"), State: q.Get("state"), Before: q.Get("before")}
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			return keyward.Errorf(keyward.EInvalid, "limit %q: want 1 to 1000", v)
		}
		dq.Limit = n
	}
	ds, err := s.auth.WebhookDeliveries(r.Context(), dq)
	if err != nil {
		return err
	}
	out := make([]WebhookDelivery, 0, len(ds))
	for _, d := range ds {
		out = append(out, deliveryView(d))
	}
	resp := map[string]any{"deliveries": out}
	limit := dq.Limit
	if limit == 0 {
		limit = authority.DefaultDeliveryPage
	}
	if len(ds) == limit {
		resp["next"] = ds[len(ds)-1].ID
	}
	return writeJSON(w, http.StatusOK, resp)
}

func (s *Server) getDelivery(w http.ResponseWriter, r *http.Request) error {
	d, err := s.auth.WebhookDelivery(r.Context(), r.PathValue("delivery"))
	if err != nil {
		return err
	}
	v := deliveryView(d)
	if json.Valid(d.Payload) {
		v.Payload = d.Payload
	}
	return writeJSON(w, http.StatusOK, v)
}

func (s *Server) replayDelivery(w http.ResponseWriter, r *http.Request) error {
	d, err := s.auth.ReplayWebhookDelivery(r.Context(), r.PathValue("delivery"))
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, deliveryView(d))
}
