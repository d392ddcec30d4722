package webhook

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/keyward/keyward"
	"github.com/keyward/keyward/store"
)

// Endpoints is what the dispatcher needs from the authority, which holds
// the KEK that seals endpoint secrets.
type Endpoints interface {
	// WebhookSecrets opens ep's signing secrets for an attempt at now: the
	// current one first, then the previous one while its rotation grace
	// lasts.
	WebhookSecrets(ep *keyward.WebhookEndpoint, now time.Time) ([]Secret, error)
	// DisableWebhook disables an endpoint, recording who and why; the
	// dispatcher calls it when a receiver answers 410 Gone.
	DisableWebhook(ctx context.Context, id, reason string) (*keyward.WebhookEndpoint, error)
}

// Defaults of Config.
const (
	DefaultTimeout      = 15 * time.Second
	DefaultPollInterval = 5 * time.Second
	DefaultBatch        = 100
	DefaultConcurrency  = 8
	// DefaultEndpointConcurrency bounds the attempts in flight to one
	// endpoint in Run, so a receiver that hangs cannot take every slot.
	DefaultEndpointConcurrency = 2
	// leaseMargin is added to the attempt timeout to make a claim's lease:
	// a delivery claimed by a dispatcher that then died is retried when
	// the lease runs out.
	leaseMargin = 30 * time.Second
	// maxRetryAfter bounds how far a receiver's Retry-After can push the
	// next attempt.
	maxRetryAfter = 24 * time.Hour
	// maxResponseBytes is how much of an answer's body is read (and thrown
	// away) so that the connection can be reused.
	maxResponseBytes = 64 << 10
)

// Config wires a Dispatcher.
type Config struct {
	// Store is read for the outbox and written for deliveries. It SHOULD
	// be the unwrapped store, not the one WakeOnEvents returns, or the
	// dispatcher's own commits would wake it.
	Store     store.Store
	Endpoints Endpoints
	Clock     keyward.Clock // nil = keyward.SystemClock
	Backoff   Backoff       // nil = DefaultSchedule()
	// Client sends the attempts; nil = NewClient(AllowPrivate).
	Client *http.Client
	// AllowPrivate lets deliveries reach loopback and private addresses
	// (dev mode and tests); production servers leave it false.
	AllowPrivate bool
	Timeout      time.Duration // per attempt; 0 = DefaultTimeout
	// PollInterval is the safety-net poll: Run looks at the outbox at least
	// this often even if no wake-up arrives; 0 = DefaultPollInterval.
	PollInterval time.Duration
	Batch        int // events fanned out or deliveries claimed per transaction; 0 = DefaultBatch
	Concurrency  int // attempts in flight at once; 0 = DefaultConcurrency
	// EndpointConcurrency bounds Run's attempts in flight to one endpoint;
	// 0 = DefaultEndpointConcurrency. Keep it below Concurrency, or one
	// hung receiver can occupy every slot until its attempts time out.
	EndpointConcurrency int
	// Wake, when set, makes Run look at once (see WakeOnEvents).
	Wake   <-chan struct{}
	Logger *slog.Logger // nil = discard
}

// Dispatcher delivers outbox events to webhook endpoints. It is safe for
// concurrent use; Run is called once.
type Dispatcher struct {
	st          store.Store
	endpoints   Endpoints
	clock       keyward.Clock
	backoff     Backoff
	client      *http.Client
	timeout     time.Duration
	poll        time.Duration
	batch       int
	concurrency int
	perEndpoint int

	mu       sync.Mutex
	inflight map[string]int // Run's attempts in flight, by endpoint id
	wake     <-chan struct{}
	log      *slog.Logger
}

// New returns a Dispatcher. Store and Endpoints are required.
func New(cfg Config) (*Dispatcher, error) {
	if cfg.Store == nil || cfg.Endpoints == nil {
		return nil, errors.New("webhook: store and endpoints are required")
	}
	d := &Dispatcher{
		st: cfg.Store, endpoints: cfg.Endpoints, clock: cfg.Clock, backoff: cfg.Backoff, client: cfg.Client,
		timeout: cfg.Timeout, poll: cfg.PollInterval, batch: cfg.Batch, concurrency: cfg.Concurrency,
		wake: cfg.Wake, log: cfg.Logger,
	}
	if d.clock == nil {
		d.clock = keyward.SystemClock{}
	}
	if d.backoff == nil {
		d.backoff = DefaultSchedule()
	}
	if d.client == nil {
		d.client = NewClient(cfg.AllowPrivate)
	}
	if d.timeout <= 0 {
		d.timeout = DefaultTimeout
	}
	if d.poll <= 0 {
		d.poll = DefaultPollInterval
	}
	if d.batch <= 0 {
		d.batch = DefaultBatch
	}
	if d.concurrency <= 0 {
		d.concurrency = DefaultConcurrency
	}
	d.perEndpoint = cfg.EndpointConcurrency
	if d.perEndpoint <= 0 {
		d.perEndpoint = DefaultEndpointConcurrency
	}
	d.inflight = map[string]int{}
	if d.log == nil {
		d.log = slog.New(slog.DiscardHandler)
	}
	return d, nil
}

// Run delivers until ctx is done, then waits for the attempts in flight
// (cancelled by ctx) and returns nil. It looks at the outbox and the due
// deliveries when woken, when an attempt finishes, when the earliest
// pending retry falls due, and at least every PollInterval. Up to
// Concurrency attempts run at once, at most EndpointConcurrency of them to
// one endpoint, so a receiver that hangs holds up only its own deliveries.
// An attempt cut short by ctx is not recorded; its claim's lease runs out
// and it is made again (at least once).
func (d *Dispatcher) Run(ctx context.Context) error {
	slots := make(chan struct{}, d.concurrency)
	freed := make(chan struct{}, 1)
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		wait := d.poll
		err := d.fanOutAll(ctx)
		var claims []claimed
		held := false
		if free := cap(slots) - len(slots); err == nil && free > 0 {
			claims, held, err = d.claim(ctx, free, d.perEndpoint)
		}
		for _, c := range claims {
			slots <- struct{}{} // never blocks: at most free claims
			wg.Add(1)
			go func() {
				defer func() {
					d.mu.Lock()
					if d.inflight[c.ep.ID]--; d.inflight[c.ep.ID] <= 0 {
						delete(d.inflight, c.ep.ID)
					}
					d.mu.Unlock()
					<-slots
					wg.Done()
					select {
					case freed <- struct{}{}:
					default:
					}
				}()
				if _, err := d.deliver(ctx, c); err != nil && ctx.Err() == nil {
					d.log.Warn("webhook delivery not recorded; it is retried when its lease runs out", "delivery", c.d.ID, "err", err)
				}
			}()
		}
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			d.log.Warn("webhook dispatch failed; retrying at the next poll", "err", err)
		} else if len(slots) < cap(slots) {
			if next, err := d.nextAttempt(ctx); err == nil && next != nil {
				if w := next.Sub(d.clock.Now()); w > 0 {
					wait = min(wait, w)
				} else if !held {
					wait = 0
				}
				// Due deliveries held back for a busy endpoint wait for a
				// freed slot (or the poll) instead of spinning.
			}
		}
		timer := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			timer.Stop()
			return nil
		case <-d.wake:
		case <-freed:
		case <-timer.C:
		}
		timer.Stop()
	}
}

// Stats counts what one Tick did.
type Stats struct {
	Events    int // outbox events fanned out
	Created   int // deliveries created
	Attempted int // attempts made
	Succeeded int // attempts answered 2xx
}

// Tick fans out every outbox event after the cursor, then makes one attempt
// for each delivery due now (up to Batch, Concurrency at a time), and
// returns when those attempts are recorded. Tests drive the dispatcher
// with Tick and a controlled clock.
func (d *Dispatcher) Tick(ctx context.Context) (Stats, error) {
	var st Stats
	for {
		events, created, err := d.fanOut(ctx)
		st.Events += events
		st.Created += created
		if err != nil {
			return st, err
		}
		if events < d.batch {
			break
		}
	}
	claims, _, err := d.claim(ctx, d.batch, 0)
	if err != nil {
		return st, err
	}
	st.Attempted = len(claims)
	oks := make([]bool, len(claims))
	errs := make([]error, len(claims))
	var wg sync.WaitGroup
	slots := make(chan struct{}, d.concurrency)
	for i, c := range claims {
		wg.Add(1)
		slots <- struct{}{}
		go func() {
			defer func() { <-slots; wg.Done() }()
			oks[i], errs[i] = d.deliver(ctx, c)
		}()
	}
	wg.Wait()
	if ctx.Err() != nil {
		return st, ctx.Err()
	}
	for _, ok := range oks {
		if ok {
			st.Succeeded++
		}
	}
	return st, errors.Join(errs...)
}

// fanOutAll fans out until the outbox has nothing after the cursor.
func (d *Dispatcher) fanOutAll(ctx context.Context) error {
	for {
		events, _, err := d.fanOut(ctx)
		if err != nil || events < d.batch {
			return err
		}
	}
}

// deliver makes one attempt and records it, unless ctx ended meanwhile.
func (d *Dispatcher) deliver(ctx context.Context, c claimed) (bool, error) {
	r := d.attempt(ctx, c)
	if ctx.Err() != nil {
		return false, ctx.Err()
	}
	return r.ok, d.record(ctx, c, r)
}

// Payload is the body of every delivery of an event: Standard Webhooks'
// recommended {type, timestamp, data}, where timestamp is when the event
// happened (RFC 3339, UTC) and data is the event's data.
func Payload(ev *keyward.Event) ([]byte, error) {
	data := ev.Data
	if len(data) == 0 {
		data = json.RawMessage(`{}`)
	}
	b, err := json.Marshal(struct {
		Type      string          `json:"type"`
		Timestamp string          `json:"timestamp"`
		Data      json.RawMessage `json:"data"`
	}{ev.Type, ev.Time.UTC().Format(time.RFC3339Nano), data})
	if err != nil {
		return nil, fmt.Errorf("webhook payload of %s: %w", ev.ID, err)
	}
	return b, nil
}

// Matches reports whether an endpoint subscribed to patterns receives
// events of type typ: a pattern is "*" (every type), "prefix.*" (every type
// starting with "prefix.") or an exact type.
func Matches(patterns []string, typ string) bool {
	for _, p := range patterns {
		if p == "*" || p == typ {
			return true
		}
		if prefix, ok := strings.CutSuffix(p, "*"); ok && strings.HasSuffix(prefix, ".") && strings.HasPrefix(typ, prefix) {
			return true
		}
	}
	return false
}

// fanOut turns up to Batch outbox events after the cursor into deliveries,
// one per matching enabled endpoint, and moves the cursor past them, all in
// one transaction: a crash either keeps all of it or none.
func (d *Dispatcher) fanOut(ctx context.Context) (events, created int, err error) {
	// Look first without the write lock: most ticks find nothing new.
	var cursor, last int64
	err = d.st.View(ctx, func(tx store.Tx) error {
		var err error
		if cursor, err = tx.WebhookCursor(); err != nil {
			return err
		}
		last, err = tx.LastEventSeq()
		return err
	})
	if err != nil || last <= cursor {
		return 0, 0, err
	}
	err = d.st.Update(ctx, func(tx store.Tx) error {
		events, created = 0, 0
		cursor, err := tx.WebhookCursor()
		if err != nil {
			return err
		}
		all, err := tx.WebhookEndpoints()
		if err != nil {
			return err
		}
		// No enabled endpoint wants an event at or below the smallest
		// StartSeq: skip those at once (a long outbox and no endpoints, or
		// endpoints added long after the first event, cost one step).
		var eps []*keyward.WebhookEndpoint
		skipTo := last
		for _, ep := range all {
			if ep.State == keyward.WebhookEnabled {
				eps = append(eps, ep)
				skipTo = min(skipTo, ep.StartSeq)
			}
		}
		if skipTo > cursor {
			cursor = skipTo
			if err := tx.SetWebhookCursor(cursor); err != nil {
				return err
			}
		}
		evs, err := tx.Events(cursor, d.batch)
		if err != nil || len(evs) == 0 {
			return err
		}
		now := d.clock.Now()
		for _, ev := range evs {
			var payload []byte
			for _, ep := range eps {
				if ev.Seq <= ep.StartSeq || !Matches(ep.Events, ev.Type) {
					continue
				}
				if payload == nil {
					if payload, err = Payload(ev); err != nil {
						return err
					}
				}
				id, err := keyward.NewID("dlv", now, nil)
				if err != nil {
					return err
				}
				next := now
				if err := tx.CreateWebhookDelivery(&keyward.WebhookDelivery{
					ID: id, EndpointID: ep.ID, EventID: ev.ID, EventSeq: ev.Seq, EventType: ev.Type, Payload: payload,
					State: keyward.DeliveryPending, NextAttemptAt: &next, CreatedAt: now, UpdatedAt: now,
				}); err != nil {
					return err
				}
				created++
			}
		}
		events = len(evs)
		return tx.SetWebhookCursor(evs[len(evs)-1].Seq)
	})
	if err != nil {
		return 0, 0, fmt.Errorf("webhook fan-out: %w", err)
	}
	return events, created, nil
}

// claimed is a delivery this dispatcher holds a lease on.
type claimed struct {
	d  *keyward.WebhookDelivery
	ep *keyward.WebhookEndpoint
}

// claim takes up to limit due deliveries, at most perEndpoint (0 = no
// bound) per endpoint, counting Run's attempts in flight; held reports that
// due deliveries were left for later because of those bounds. Each claimed
// delivery gets its attempt counted and its next attempt moved past the
// lease, so another dispatcher (or this one after a crash) leaves it alone
// until the lease runs out. Deliveries of an endpoint that is no longer
// enabled are cancelled instead.
func (d *Dispatcher) claim(ctx context.Context, limit, perEndpoint int) (out []claimed, held bool, err error) {
	now := d.clock.Now()
	next, err := d.nextAttempt(ctx)
	if err != nil || next == nil || next.After(now) {
		return nil, false, err
	}
	err = d.st.Update(ctx, func(tx store.Tx) error {
		out, held = nil, false
		now := d.clock.Now()
		// Look past limit, so that deliveries to other endpoints are found
		// behind a busy endpoint's.
		due, err := tx.DueWebhookDeliveries(now, max(limit, d.batch))
		if err != nil {
			return err
		}
		d.mu.Lock()
		busy := maps.Clone(d.inflight)
		d.mu.Unlock()
		eps := map[string]*keyward.WebhookEndpoint{}
		for _, dl := range due {
			if len(out) == limit {
				held = true
				break
			}
			ep, ok := eps[dl.EndpointID]
			if !ok {
				if ep, err = tx.WebhookEndpoint(dl.EndpointID); err != nil {
					return err
				}
				eps[ep.ID] = ep
			}
			dl.UpdatedAt = now
			if ep.State != keyward.WebhookEnabled {
				dl.State, dl.NextAttemptAt = keyward.DeliveryCancelled, nil
				dl.LastError = fmt.Sprintf("cancelled: endpoint %s", ep.State)
				if err := tx.UpdateWebhookDelivery(dl); err != nil {
					return err
				}
				continue
			}
			if perEndpoint > 0 && busy[ep.ID] >= perEndpoint {
				held = true
				continue
			}
			busy[ep.ID]++
			lease := now.Add(d.timeout + leaseMargin)
			at := now
			dl.Attempts++
			dl.LastAttemptAt, dl.NextAttemptAt = &at, &lease
			if err := tx.UpdateWebhookDelivery(dl); err != nil {
				return err
			}
			out = append(out, claimed{d: dl, ep: ep})
		}
		return nil
	})
	if err != nil {
		return nil, false, fmt.Errorf("webhook claim: %w", err)
	}
	if perEndpoint > 0 {
		d.mu.Lock()
		for _, c := range out {
			d.inflight[c.ep.ID]++
		}
		d.mu.Unlock()
	}
	return out, held, nil
}

func (d *Dispatcher) nextAttempt(ctx context.Context) (*time.Time, error) {
	var next *time.Time
	err := d.st.View(ctx, func(tx store.Tx) error {
		var err error
		next, err = tx.NextWebhookAttempt()
		return err
	})
	return next, err
}

// result is the outcome of one attempt.
type result struct {
	ok         bool
	status     int           // 0 = no answer
	err        string        // why it failed; never secret, never the URL
	retryAfter time.Duration // the receiver's Retry-After, on 429 and 503
}

// attempt POSTs c's payload once, signed with every secret the endpoint has
// now.
func (d *Dispatcher) attempt(ctx context.Context, c claimed) result {
	now := d.clock.Now()
	secrets, err := d.endpoints.WebhookSecrets(c.ep, now)
	if err != nil {
		d.log.Error("cannot open webhook secret", "endpoint", c.ep.ID, "err", err)
		return result{err: "signing secret unavailable on the server (see server log)"}
	}
	ctx, cancel := context.WithTimeout(ctx, d.timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.ep.URL, bytes.NewReader(c.d.Payload))
	if err != nil {
		return result{err: "cannot build request: endpoint URL is invalid"}
	}
	SetHeaders(req.Header, secrets, c.d.EventID, now, c.d.Payload)
	req.Header.Set("User-Agent", "Keyward-Webhooks/1")
	resp, err := d.client.Do(req)
	if err != nil {
		return result{err: describe(err, d.timeout)}
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, maxResponseBytes))
	resp.Body.Close()
	if resp.StatusCode >= 200 && resp.StatusCode <= 299 {
		return result{ok: true, status: resp.StatusCode}
	}
	r := result{status: resp.StatusCode, err: "receiver answered " + resp.Status}
	if resp.StatusCode >= 300 && resp.StatusCode <= 399 {
		r.err += " (redirects are not followed: update the endpoint URL)"
	}
	if resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode == http.StatusServiceUnavailable {
		r.retryAfter = parseRetryAfter(resp.Header.Get("Retry-After"), now)
	}
	return r
}

// describe turns a client error into a delivery-log message. *url.Error
// is unwrapped because its text repeats the URL, which may hold a token.
func describe(err error, timeout time.Duration) string {
	var ue *url.Error
	if errors.As(err, &ue) {
		if ue.Timeout() {
			return fmt.Sprintf("no answer within %s", timeout)
		}
		err = ue.Err
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return fmt.Sprintf("no answer within %s", timeout)
	}
	msg := err.Error()
	if len(msg) > 512 {
		msg = msg[:512]
	}
	return msg
}

// parseRetryAfter reads delay-seconds or an HTTP date; 0 when absent or bad.
func parseRetryAfter(v string, now time.Time) time.Duration {
	if v == "" {
		return 0
	}
	if n, err := strconv.Atoi(v); err == nil && n > 0 {
		return min(time.Duration(n)*time.Second, maxRetryAfter)
	}
	if t, err := http.ParseTime(v); err == nil && t.After(now) {
		return min(t.Sub(now), maxRetryAfter)
	}
	return 0
}

// record writes an attempt's outcome, unless the delivery changed since it
// was claimed (an operator replayed or the endpoint was removed). A failed
// attempt is retried per Backoff, or the delivery fails; a 410 Gone fails
// it at once and disables the endpoint, as Standard Webhooks asks.
func (d *Dispatcher) record(ctx context.Context, c claimed, r result) error {
	gone := r.status == http.StatusGone
	err := d.st.Update(ctx, func(tx store.Tx) error {
		dl, err := tx.WebhookDelivery(c.d.ID)
		if err != nil {
			return err
		}
		if dl.State != keyward.DeliveryPending || dl.Attempts != c.d.Attempts {
			return nil
		}
		now := d.clock.Now()
		dl.LastStatus, dl.LastError, dl.UpdatedAt = r.status, r.err, now
		switch wait, retry := d.backoff.Retry(dl.Attempts); {
		case r.ok:
			dl.State, dl.NextAttemptAt = keyward.DeliverySucceeded, nil
		case gone:
			dl.State, dl.NextAttemptAt = keyward.DeliveryFailed, nil
			dl.LastError += "; endpoint disabled"
		case retry:
			next := now.Add(max(wait, r.retryAfter))
			dl.State, dl.NextAttemptAt = keyward.DeliveryPending, &next
		default:
			dl.State, dl.NextAttemptAt = keyward.DeliveryFailed, nil
		}
		return tx.UpdateWebhookDelivery(dl)
	})
	if err != nil {
		return fmt.Errorf("webhook record %s: %w", c.d.ID, err)
	}
	switch {
	case r.ok:
		d.log.Debug("webhook delivered", "delivery", c.d.ID, "endpoint", c.ep.ID, "event", c.d.EventID, "status", r.status)
	default:
		d.log.Info("webhook attempt failed", "delivery", c.d.ID, "endpoint", c.ep.ID, "event", c.d.EventID,
			"attempt", c.d.Attempts, "status", r.status, "error", r.err)
	}
	if gone {
		sys := keyward.NewContextWithPrincipal(ctx, keyward.Principal{ID: "system:webhooks", Name: "webhook dispatcher"})
		if _, err := d.endpoints.DisableWebhook(sys, c.ep.ID, "receiver answered 410 Gone"); err != nil &&
			keyward.ErrorCode(err) != keyward.EIllegalTransition {
			return fmt.Errorf("disable gone endpoint %s: %w", c.ep.ID, err)
		}
	}
	return nil
}
