// Package authority holds Keyward's rules: which transitions are allowed,
// how licenses are issued and validated, how keys are generated, sealed,
// rotated and used to sign. Transports (api/, cli/) and the scheduler call
// it; it reaches storage only through store.Store.
//
// Every state change writes its audit entry and its outbox event in the same
// transaction as the change. Time comes from the configured Clock, read once
// per transaction.
package authority

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/keyward/keyward"
	"github.com/keyward/keyward/audit"
	"github.com/keyward/keyward/keys"
	"github.com/keyward/keyward/store"
)

// PolicySource returns the effective policy of a product. The policy/
// package provides the versioned one; DefaultPolicies is the built-in.
type PolicySource interface {
	Policy(ctx context.Context, productID string) (*keyward.Policy, error)
}

// DefaultPolicies serves keyward.DefaultPolicy for every product, ignoring
// applied policies (for tests that pin the built-in values).
type DefaultPolicies struct{}

// Policy implements PolicySource.
func (DefaultPolicies) Policy(context.Context, string) (*keyward.Policy, error) {
	return keyward.DefaultPolicy(), nil
}

// Config wires an Authority.
type Config struct {
	Store    store.Store
	KEKs     *keys.KEKRing // seals and opens private keys and server secrets
	Clock    keyward.Clock // nil = keyward.SystemClock
	Rand     io.Reader     // nil = crypto/rand
	Logger   *slog.Logger  // nil = discard
	Issuer   string        // "iss" of certificates and leases
	Policies PolicySource  // nil = the versioned policies in Store (see ApplyPolicy)
	// Dev relaxes, for a development server only, what the policy
	// guardrails refuse: the built-in policy needs no second approval for
	// permanent revocation, and applied policies may say approvals: 0.
	Dev bool
	// CacheEntries bounds the validation cache (0 = DefaultCacheEntries).
	CacheEntries int
	// WebhookAllowPrivate accepts webhook URLs naming loopback and private
	// addresses (dev mode, tests); production leaves it false (SSRF).
	WebhookAllowPrivate bool
	// UsageLicenses bounds the licenses whose usage counters are kept in
	// memory for automatic suspension (0 = DefaultUsageLicenses; abuse.go).
	UsageLicenses int
	// NoUsageCounters turns the usage counters, and so automatic
	// suspension by rule, off (for benchmarks comparing with and
	// without; explicit signals still work).
	NoUsageCounters bool
}

// Authority applies Keyward's rules. It is safe for concurrent use.
type Authority struct {
	// appendAudit appends audit entries: audit.AppendAll, which also
	// stores their Merkle tree hashes (a benchmark swaps it to price the
	// tree).
	appendAudit func(store.Tx, []*keyward.AuditEntry) error

	store    store.Store
	keks     *keys.KEKRing
	clock    keyward.Clock
	rand     io.Reader
	log      *slog.Logger
	issuer   string
	policies PolicySource
	stored   *storedPolicies // versioned policies, compiled (policy.go)
	pepper   []byte          // HMAC key for license keys and tokens; MUST NOT leave the process

	webhookAllowPrivate bool
	abuse               *abuse // nil with Config.NoUsageCounters (abuse.go)

	mu      sync.Mutex
	signers map[string]*keys.PrivateKey // opened private keys by kid
	vc      *validationCache
	touches touchBuffer // last-seen times waiting for FlushTouches
	macs    sync.Pool   // of hash.Hash: HMAC-SHA-256 keyed with pepper
}

const pepperSecret = "pepper"

// New returns an Authority over cfg.Store. It loads the server pepper (or
// creates it on first start) and makes sure the registry ring has an active
// key.
func New(ctx context.Context, cfg Config) (*Authority, error) {
	if cfg.Store == nil || cfg.KEKs == nil {
		return nil, errors.New("authority: store and KEKs are required")
	}
	vc := newValidationCache(cfg.CacheEntries)
	a := &Authority{
		vc: vc, store: trackedStore{Store: cfg.Store, cache: vc}, keks: cfg.KEKs, clock: cfg.Clock, rand: cfg.Rand, log: cfg.Logger,
		issuer: cfg.Issuer, policies: cfg.Policies, signers: map[string]*keys.PrivateKey{},
		appendAudit: audit.AppendAll,
	}
	if a.clock == nil {
		a.clock = keyward.SystemClock{}
	}
	if a.rand == nil {
		a.rand = rand.Reader
	}
	if a.log == nil {
		a.log = slog.New(slog.DiscardHandler)
	}
	if a.issuer == "" {
		a.issuer = "keyward"
	}
	if err := a.loadPolicies(ctx, cfg.Dev); err != nil {
		return nil, err
	}
	if a.policies == nil {
		a.policies = a.stored
	}
	a.webhookAllowPrivate = cfg.WebhookAllowPrivate
	if !cfg.NoUsageCounters {
		a.abuse = newAbuse(cfg.UsageLicenses)
	}
	if err := a.loadPepper(ctx); err != nil {
		return nil, err
	}
	if err := a.ensureRegistryKey(ctx); err != nil {
		return nil, err
	}
	return a, nil
}

// Issuer returns the "iss" the authority signs with.
func (a *Authority) Issuer() string { return a.issuer }

// Now returns the authority's clock reading.
func (a *Authority) Now() time.Time { return a.clock.Now() }

func (a *Authority) loadPepper(ctx context.Context) error {
	return a.store.Update(ctx, func(tx store.Tx) error {
		sealed, err := tx.Secret(pepperSecret)
		if keyward.ErrorCode(err) == keyward.ENotFound {
			p := make([]byte, 32)
			if _, err := io.ReadFull(a.rand, p); err != nil {
				return fmt.Errorf("generate pepper: %w", err)
			}
			if sealed, err = a.keks.Seal(p, []byte("secret:"+pepperSecret)); err != nil {
				return fmt.Errorf("seal pepper: %w", err)
			}
			if err := tx.PutSecret(pepperSecret, sealed); err != nil {
				return err
			}
			a.pepper = p
			return nil
		} else if err != nil {
			return err
		}
		p, err := a.keks.Open(sealed, []byte("secret:"+pepperSecret))
		if err != nil {
			return fmt.Errorf("open pepper (wrong KEK file?): %w", err)
		}
		a.pepper = p
		return nil
	})
}

// keyedHash is HMAC-SHA-256 under the pepper, domain-separated by kind.
// HMAC states are pooled: validation hashes on every request.
func (a *Authority) keyedHash(kind, secret string) []byte {
	m, _ := a.macs.Get().(hash.Hash)
	if m == nil {
		m = hmac.New(sha256.New, a.pepper)
	}
	m.Reset()
	m.Write([]byte(kind))
	m.Write([]byte{0})
	m.Write([]byte(secret))
	sum := m.Sum(nil)
	a.macs.Put(m)
	return sum
}

// Policy returns the effective policy of a product ("" = the registry
// ring's, the built-in default).
func (a *Authority) Policy(ctx context.Context, productID string) (*keyward.Policy, error) {
	if productID == "" {
		return keyward.DefaultPolicy(), nil
	}
	return a.policy(ctx, productID)
}

func (a *Authority) policy(ctx context.Context, productID string) (*keyward.Policy, error) {
	p, err := a.policies.Policy(ctx, productID)
	if err != nil {
		return nil, fmt.Errorf("policy of %s: %w", productID, err)
	}
	return p, nil
}

func (a *Authority) newID(prefix string) (string, error) {
	return keyward.NewID(prefix, a.clock.Now(), a.rand)
}

// change describes one audited state change.
type change struct {
	action     string // audit action, e.g. "license.revoke"
	event      string // outbox event type, e.g. "license.revoked"; "" = none
	targetType string
	targetID   string
	before     string
	after      string
	reason     string
	details    any // JSON-encoded into the audit entry and the event data
	// Who and what authorized the change, recorded in the audit entry:
	// approvals by other principals, and the policy version and rule of a
	// decision the policy engine took (0 and "" when no policy decided).
	approvalIDs   []string
	policyVersion int
	rule          string
}

// record writes c's audit entry and outbox event through tx.
func (a *Authority) record(ctx context.Context, tx store.Tx, now time.Time, c change) error {
	return a.recordAll(ctx, tx, now, []change{c})
}

// recordAll writes the audit entries of cs, in order, and their outbox
// events through tx, each kind with as few statements as the store can.
func (a *Authority) recordAll(ctx context.Context, tx store.Tx, now time.Time, cs []change) error {
	p := keyward.PrincipalFromContext(ctx)
	requestID := keyward.RequestIDFromContext(ctx)
	es := make([]*keyward.AuditEntry, len(cs))
	details := make([]json.RawMessage, len(cs))
	events := 0
	for i, c := range cs {
		if c.details != nil {
			b, err := json.Marshal(c.details)
			if err != nil {
				return fmt.Errorf("audit details: %w", err)
			}
			details[i] = b
		}
		es[i] = &keyward.AuditEntry{
			Time: now, Actor: p.ID, ActorName: p.Name, Roles: p.Roles, Action: c.action,
			TargetType: c.targetType, TargetID: c.targetID, Before: c.before, After: c.after,
			Reason: c.reason, RequestID: requestID, Details: details[i],
			// Filled by the policy engine and governance features for the
			// decisions they take: c.approvalIDs, c.policyVersion, c.rule.
			ApprovalIDs: c.approvalIDs, PolicyVersion: c.policyVersion, Rule: c.rule,
		}
		if c.event != "" {
			events++
		}
	}
	if err := a.appendAudit(tx, es); err != nil {
		return fmt.Errorf("append audit: %w", err)
	}
	if events == 0 {
		return nil
	}
	// Ids made together and sorted, so that they are inserted in order.
	ids := make([]string, events)
	for i := range ids {
		id, err := a.newID("evt")
		if err != nil {
			return err
		}
		ids[i] = id
	}
	slices.Sort(ids)
	evs := make([]*keyward.Event, 0, events)
	for i, c := range cs {
		if c.event == "" {
			continue
		}
		data, err := json.Marshal(eventData{
			TargetType: c.targetType, TargetID: c.targetID, Before: c.before, After: c.after,
			Reason: c.reason, Actor: p.ID, AuditSeq: es[i].Seq, Details: details[i],
		})
		if err != nil {
			return fmt.Errorf("event data: %w", err)
		}
		evs = append(evs, &keyward.Event{ID: ids[len(evs)], Type: c.event, Time: now, Subject: c.targetID, Data: data})
	}
	var err error
	if len(evs) == 1 {
		err = tx.AppendEvent(evs[0])
	} else {
		err = tx.AppendEvents(evs)
	}
	if err != nil {
		return fmt.Errorf("append event: %w", err)
	}
	return nil
}

// eventData is the data of a change's outbox event. Its fields are in
// key order, so it encodes as the map it replaces did; Details holds the
// change's details as json.Marshal encoded them (null for none).
type eventData struct {
	Actor      string          `json:"actor"`
	After      string          `json:"after"`
	AuditSeq   int64           `json:"audit_seq"`
	Before     string          `json:"before"`
	Details    json.RawMessage `json:"details"`
	Reason     string          `json:"reason"`
	TargetID   string          `json:"target_id"`
	TargetType string          `json:"target_type"`
}
