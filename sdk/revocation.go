package sdk

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/keyward/keyward/keys"
	"github.com/keyward/keyward/revocation"
)

// Reasons of revocation checks and of refused registry documents.
const (
	ReasonRevoked   Reason = "revoked"           // the registry lists the license as revoked
	ReasonSuspended Reason = "suspended"         // the registry lists the license as suspended
	ReasonRollback  Reason = "rollback"          // a registry document with a lower seq than the state held
	ReasonFrozen    Reason = "frozen"            // a registry document past its next_update plus Tolerance
	ReasonGap       Reason = "gap"               // a delta that starts after the seq held (or no state yet)
	ReasonStale     Reason = "revocations_stale" // the state held is past next_update plus OfflineGrace: fail closed
)

// Sentinels for errors.Is.
var (
	ErrRevoked   = &Error{Reason: ReasonRevoked}
	ErrSuspended = &Error{Reason: ReasonSuspended}
	ErrRollback  = &Error{Reason: ReasonRollback}
	ErrFrozen    = &Error{Reason: ReasonFrozen}
	ErrGap       = &Error{Reason: ReasonGap}
	ErrStale     = &Error{Reason: ReasonStale}
)

// Defaults of RevocationOptions.
const (
	DefaultTolerance    = 5 * time.Minute
	DefaultOfflineGrace = 72 * time.Hour
)

// RevocationOptions configure a RevocationCache.
type RevocationOptions struct {
	// Product is the view followed: a product name (documents for another
	// product are refused), or "" for the whole registry.
	Product string
	// Issuer, if non-empty, is the only issuer accepted.
	Issuer string
	// Now returns the current time; nil means time.Now.
	Now func() time.Time
	// Tolerance is how long after its next_update a document received
	// from the network is still accepted (clock skew). Zero means
	// DefaultTolerance. Older ones are refused as frozen.
	Tolerance time.Duration
	// OfflineGrace is how long after the held state's next_update checks
	// keep answering from it when no newer document arrives (the server
	// is unreachable). After that they fail closed with ErrStale. Zero
	// means DefaultOfflineGrace (the default policy's offlineGrace).
	OfflineGrace time.Duration
	// MaxSize bounds a document, in bytes; zero means
	// revocation.MaxDocumentSize.
	MaxSize int
	// CacheFile, if set, keeps the verified documents on disk: loaded (and
	// verified again) by NewRevocationCache, rewritten on each snapshot,
	// appended on each delta. A file that does not verify is ignored.
	CacheFile string
}

// RevocationCache holds a verified copy of the revocation registry (one
// view) for a relying party and answers from it in O(1). It accepts only
// documents signed by a registry key of its trust bundle, never a lower
// seq than it holds (rollback) and never a document past next_update plus
// Tolerance (freeze), as TUF clients do. It is safe for concurrent use.
type RevocationCache struct {
	opts RevocationOptions

	mu         sync.RWMutex
	trust      map[string]keys.PublicKey // registry keys by kid
	distrusted map[string]string         // kid → why (compromised or destroyed in the bundle)
	has        bool
	seq        int64
	issuedAt   time.Time // of the newest document applied
	nextUpdate time.Time // the latest next_update seen at the held seq
	highest    time.Time // the highest signed time seen (a floor for the clock)
	licenses   map[string]revocation.LicenseEntry
	keys       map[string]revocation.KeyEntry
	file       *os.File // CacheFile, open for appending deltas
}

// NewRevocationCache returns an empty cache trusting the registry keys
// (keyward_purpose "registry") of jwks, loaded from opts.CacheFile if it
// holds a valid state. It fails if jwks has no usable registry key.
func NewRevocationCache(jwks keys.JWKS, opts RevocationOptions) (*RevocationCache, error) {
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Tolerance <= 0 {
		opts.Tolerance = DefaultTolerance
	}
	if opts.OfflineGrace <= 0 {
		opts.OfflineGrace = DefaultOfflineGrace
	}
	if opts.MaxSize <= 0 {
		opts.MaxSize = revocation.MaxDocumentSize
	}
	c := &RevocationCache{opts: opts, licenses: map[string]revocation.LicenseEntry{}, keys: map[string]revocation.KeyEntry{}}
	if err := c.SetTrust(jwks); err != nil {
		return nil, err
	}
	if opts.CacheFile != "" {
		c.load()
	}
	return c, nil
}

// SetTrust replaces the registry keys the cache trusts, e.g. after the
// server's registry ring rotated. It fails, keeping the old ones, if jwks
// has no usable registry key.
func (c *RevocationCache) SetTrust(jwks keys.JWKS) error {
	trust, distrusted := map[string]keys.PublicKey{}, map[string]string{}
	for _, j := range jwks.Keys {
		if j.Purpose != "registry" || j.Kid == "" {
			continue
		}
		switch j.State {
		case stateCompromised, stateDestroyed:
			distrusted[j.Kid] = "keyward_state " + j.State + " in the trust bundle"
			continue
		case "", statePending, stateActive, stateRetired:
		default:
			continue
		}
		pub, err := keys.PublicKeyFromJWK(j)
		if err != nil || pub.Thumbprint() != j.Kid {
			continue
		}
		trust[j.Kid] = pub
	}
	if len(trust) == 0 {
		return errors.New("keyward: revocations: no usable registry key (keyward_purpose \"registry\") in the trust bundle")
	}
	c.mu.Lock()
	c.trust, c.distrusted = trust, distrusted
	c.mu.Unlock()
	return nil
}

// RevocationState describes what a cache holds.
type RevocationState struct {
	Seq        int64
	IssuedAt   time.Time // of the newest document applied
	NextUpdate time.Time
	Licenses   int // revoked or suspended licenses
	Keys       int // compromised keys
}

// State returns what the cache holds; ok is false before the first
// snapshot.
func (c *RevocationCache) State() (s RevocationState, ok bool) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return RevocationState{Seq: c.seq, IssuedAt: c.issuedAt, NextUpdate: c.nextUpdate, Licenses: len(c.licenses), Keys: len(c.keys)}, c.has
}

// verify parses token, checks its typ and signature against the trusted
// registry keys and returns the payload.
func (c *RevocationCache) verify(token, typ string) ([]byte, error) {
	t, err := revocation.Parse(strings.TrimSpace(token), c.opts.MaxSize)
	if err != nil {
		return nil, rejectf(ReasonMalformed, "%v", err)
	}
	if t.Header.Typ != typ {
		return nil, rejectf(ReasonWrongType, "typ %q, want %q", t.Header.Typ, typ)
	}
	kid := t.Header.Kid
	c.mu.RLock()
	why, bad := c.distrusted[kid]
	if _, listed := c.keys[kid]; listed {
		why, bad = "compromised per the revocation registry", true
	}
	pub, ok := c.trust[kid]
	c.mu.RUnlock()
	switch {
	case bad:
		return nil, rejectf(ReasonKeyCompromised, "kid %s: %s", kid, why)
	case !ok:
		return nil, rejectf(ReasonUnknownKey, "kid %s is not a registry key of the trust bundle", kid)
	}
	if err := t.Verify(pub); err != nil {
		return nil, rejectf(ReasonBadSignature, "kid %s: %v", kid, err)
	}
	return t.Payload, nil
}

// checkDoc applies the issuer, product and freeze rules. held is true for
// documents loaded from the cache file, which were fresh when received:
// they are judged by OfflineGrace instead of Tolerance.
func (c *RevocationCache) checkDoc(issuer, product string, nextUpdate int64, held bool) error {
	if c.opts.Issuer != "" && issuer != c.opts.Issuer {
		return rejectf(ReasonWrongIssuer, "registry document issued by %q, want %q", issuer, c.opts.Issuer)
	}
	if product != c.opts.Product {
		return rejectf(ReasonWrongAudience, "registry document for product %q, want %q", product, c.opts.Product)
	}
	grace := c.opts.Tolerance
	if held {
		grace = c.opts.OfflineGrace
	}
	now := c.now()
	if nu := time.Unix(nextUpdate, 0); now.After(nu.Add(grace)) {
		return rejectf(ReasonFrozen, "registry document's next_update %s has passed (now %s, tolerance %s)", stamp(nu), stamp(now), grace)
	}
	return nil
}

// now is the caller's clock, but never earlier than the highest signed
// time seen: turning the clock back does not make old state fresh again.
func (c *RevocationCache) now() time.Time {
	now := c.opts.Now()
	c.mu.RLock()
	h := c.highest
	c.mu.RUnlock()
	if now.Before(h) {
		return h
	}
	return now
}

// VerifySnapshot verifies a snapshot document as ApplySnapshot does
// (signature, typ, issuer, product, freeze) and returns its content,
// without applying it or comparing its seq with the state held.
func (c *RevocationCache) VerifySnapshot(token string) (*revocation.Snapshot, error) {
	payload, err := c.verify(token, revocation.TypSnapshot)
	if err != nil {
		return nil, err
	}
	s, err := revocation.DecodeSnapshot(payload)
	if err != nil {
		return nil, rejectf(ReasonMalformed, "%v", err)
	}
	if err := c.checkDoc(s.Issuer, s.Product, s.NextUpdate, false); err != nil {
		return nil, err
	}
	return s, nil
}

// VerifyDelta verifies a delta document as ApplyDelta does and returns its
// content, without applying it.
func (c *RevocationCache) VerifyDelta(token string) (*revocation.Delta, error) {
	payload, err := c.verify(token, revocation.TypDelta)
	if err != nil {
		return nil, err
	}
	d, err := revocation.DecodeDelta(payload)
	if err != nil {
		return nil, rejectf(ReasonMalformed, "%v", err)
	}
	if err := c.checkDoc(d.Issuer, d.Product, d.NextUpdate, false); err != nil {
		return nil, err
	}
	return d, nil
}

// ApplySnapshot verifies a snapshot document (the body of GET
// /v1/revocations) and makes it the state held. It refuses, with an
// *Error, a document that does not verify, is for another product or
// issuer, has a lower seq than the state held (ErrRollback), or is past
// next_update plus Tolerance (ErrFrozen).
func (c *RevocationCache) ApplySnapshot(token string) error {
	_, err := c.applySnapshot(token, false)
	return err
}

func (c *RevocationCache) applySnapshot(token string, held bool) (*revocation.Snapshot, error) {
	payload, err := c.verify(token, revocation.TypSnapshot)
	if err != nil {
		return nil, err
	}
	s, err := revocation.DecodeSnapshot(payload)
	if err != nil {
		return nil, rejectf(ReasonMalformed, "%v", err)
	}
	if err := c.checkDoc(s.Issuer, s.Product, s.NextUpdate, held); err != nil {
		return nil, err
	}
	ls := make(map[string]revocation.LicenseEntry, len(s.Licenses))
	for _, e := range s.Licenses {
		ls[e.ID] = e
	}
	ks := make(map[string]revocation.KeyEntry, len(s.Keys))
	for _, e := range s.Keys {
		ks[e.KID] = e
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.has && s.Seq < c.seq {
		return nil, rejectf(ReasonRollback, "snapshot seq %d is lower than the seq held, %d", s.Seq, c.seq)
	}
	if c.has && s.Seq == c.seq && c.nextUpdate.Unix() >= s.NextUpdate {
		return s, nil // the same state, no fresher: nothing to do
	}
	c.has, c.seq, c.licenses, c.keys = true, s.Seq, ls, ks
	c.stamp(s.IssuedAt, s.NextUpdate, true)
	if !held {
		c.saveLocked(token, true)
	}
	return s, nil
}

// stamp records the times of an applied document. c.mu is held.
func (c *RevocationCache) stamp(issuedAt, nextUpdate int64, reset bool) {
	ia, nu := time.Unix(issuedAt, 0), time.Unix(nextUpdate, 0)
	if reset || ia.After(c.issuedAt) {
		c.issuedAt = ia
	}
	if reset || nu.After(c.nextUpdate) {
		c.nextUpdate = nu
	}
	if ia.After(c.highest) {
		c.highest = ia
	}
}

// ApplyDelta verifies a delta document (GET /v1/revocations?since=, or a
// stream event) and applies it to the state held. It refuses, with an
// *Error, what ApplySnapshot refuses, a delta whose to_seq is lower than
// the seq held (ErrRollback), and one that starts after it or comes
// before any snapshot (ErrGap: fetch a delta from the seq held, or a
// snapshot). A delta ending at the seq held only refreshes next_update.
func (c *RevocationCache) ApplyDelta(token string) error {
	_, err := c.applyDelta(token, false)
	return err
}

func (c *RevocationCache) applyDelta(token string, held bool) (*revocation.Delta, error) {
	payload, err := c.verify(token, revocation.TypDelta)
	if err != nil {
		return nil, err
	}
	d, err := revocation.DecodeDelta(payload)
	if err != nil {
		return nil, rejectf(ReasonMalformed, "%v", err)
	}
	if err := c.checkDoc(d.Issuer, d.Product, d.NextUpdate, held); err != nil {
		return nil, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	switch {
	case !c.has:
		return nil, rejectf(ReasonGap, "no snapshot held: apply a snapshot before deltas")
	case d.ToSeq < c.seq:
		return nil, rejectf(ReasonRollback, "delta to seq %d is lower than the seq held, %d", d.ToSeq, c.seq)
	case d.FromSeq > c.seq:
		return nil, rejectf(ReasonGap, "delta from seq %d starts after the seq held, %d", d.FromSeq, c.seq)
	}
	for _, e := range d.Licenses {
		if e.Seq <= c.seq {
			continue // already reflected in the state held
		}
		if e.State == revocation.StateActive {
			delete(c.licenses, e.ID)
		} else {
			c.licenses[e.ID] = e
		}
	}
	for _, e := range d.Keys {
		if e.Seq > c.seq {
			c.keys[e.KID] = e
		}
	}
	moved := d.ToSeq > c.seq
	c.seq = d.ToSeq
	c.stamp(d.IssuedAt, d.NextUpdate, false)
	if !held && (moved || len(d.Licenses)+len(d.Keys) == 0) {
		c.saveLocked(token, false)
	}
	return d, nil
}

// Status returns the registry entry of a license (revoked or suspended),
// without checking freshness.
func (c *RevocationCache) Status(licenseID string) (revocation.LicenseEntry, bool) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	e, ok := c.licenses[licenseID]
	return e, ok
}

// fresh fails with ErrStale when no state is held or the held state is past
// next_update plus OfflineGrace.
func (c *RevocationCache) fresh() error {
	now := c.now()
	c.mu.RLock()
	has, nu := c.has, c.nextUpdate
	c.mu.RUnlock()
	if !has {
		return rejectf(ReasonStale, "no revocation snapshot held yet")
	}
	if limit := nu.Add(c.opts.OfflineGrace); now.After(limit) {
		return rejectf(ReasonStale, "revocation state expired at %s (next_update %s plus offline grace %s); reach the server to refresh it", stamp(limit), stamp(nu), c.opts.OfflineGrace)
	}
	return nil
}

// IsRevoked reports whether the registry lists the license as revoked or
// suspended (both mean: do not honour it). It fails with ErrStale when the
// state held is too old to answer (fail closed).
func (c *RevocationCache) IsRevoked(licenseID string) (bool, error) {
	if err := c.fresh(); err != nil {
		return false, err
	}
	_, ok := c.Status(licenseID)
	return ok, nil
}

// Check returns nil if neither the license nor the key that signed its
// token (kid; "" to skip) is listed: ErrRevoked, ErrSuspended or
// ErrKeyCompromised otherwise, and ErrStale when the state held is too old
// to answer. Verifier calls it when Options.Revocations is set.
func (c *RevocationCache) Check(licenseID, kid string) error {
	if err := c.fresh(); err != nil {
		return err
	}
	c.mu.RLock()
	k, badKey := c.keys[kid]
	l, listed := c.licenses[licenseID]
	c.mu.RUnlock()
	switch {
	case kid != "" && badKey:
		return rejectf(ReasonKeyCompromised, "kid %s compromised since %s per the revocation registry (seq %d)", kid, stamp(time.Unix(k.Time, 0)), k.Seq)
	case listed && l.State == revocation.StateRevoked:
		return rejectf(ReasonRevoked, "license %s revoked at %s%s (registry seq %d)", licenseID, stamp(time.Unix(l.Time, 0)), because(l.Reason), l.Seq)
	case listed:
		return rejectf(ReasonSuspended, "license %s suspended at %s%s (registry seq %d)", licenseID, stamp(time.Unix(l.Time, 0)), because(l.Reason), l.Seq)
	}
	return nil
}

func because(reason string) string {
	if reason == "" {
		return ""
	}
	return " (" + reason + ")"
}

// Disk cache: a header line, the snapshot token, then delta tokens, one per
// line. Every line is verified again when loaded.

const cacheHeader = "keyward-revocations v1"

// saveLocked writes the cache file: rewritten for a snapshot, appended for
// a delta. Errors are ignored: the file is only a cache. c.mu is held.
func (c *RevocationCache) saveLocked(token string, snapshot bool) {
	if c.opts.CacheFile == "" {
		return
	}
	if snapshot || c.file == nil {
		if c.file != nil {
			c.file.Close()
			c.file = nil
		}
		if !snapshot {
			return // no snapshot line to append to
		}
		tmp := c.opts.CacheFile + ".tmp"
		if err := os.WriteFile(tmp, []byte(cacheHeader+"\n"+token+"\n"), 0o600); err != nil {
			return
		}
		if err := os.Rename(tmp, c.opts.CacheFile); err != nil {
			os.Remove(tmp)
			return
		}
		f, err := os.OpenFile(c.opts.CacheFile, os.O_WRONLY|os.O_APPEND, 0)
		if err != nil {
			return
		}
		c.file = f
		return
	}
	_, _ = c.file.WriteString(token + "\n")
}

// load applies the cache file, stopping at the first line that does not
// verify. A file without a valid snapshot leaves the cache empty.
func (c *RevocationCache) load() {
	f, err := os.Open(c.opts.CacheFile)
	if err != nil {
		return
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, c.opts.MaxSize+1)
	if !sc.Scan() || sc.Text() != cacheHeader || !sc.Scan() {
		return
	}
	if _, err := c.applySnapshot(sc.Text(), true); err != nil {
		return
	}
	for sc.Scan() {
		if _, err := c.applyDelta(sc.Text(), true); err != nil {
			break
		}
	}
	if fa, err := os.OpenFile(c.opts.CacheFile, os.O_WRONLY|os.O_APPEND, 0); err == nil {
		c.mu.Lock()
		c.file = fa
		c.mu.Unlock()
	}
}

// Close releases the cache file, if any.
func (c *RevocationCache) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.file == nil {
		return nil
	}
	err := c.file.Close()
	c.file = nil
	return err
}

// Fetching documents.

// RevocationSnapshot fetches the signed snapshot of product ("" = the
// whole registry), not verified: apply it to a RevocationCache. With etag
// set (an earlier answer's), an unchanged snapshot returns notModified.
// maxSize bounds the body (0 = revocation.MaxDocumentSize). The Client's
// HTTP timeout applies: give a large registry's clients a longer one.
func (c *Client) RevocationSnapshot(ctx context.Context, product, etag string, maxSize int) (token, newETag string, notModified bool, err error) {
	q := url.Values{}
	if product != "" {
		q.Set("product", product)
	}
	return c.getDocument(ctx, "/v1/revocations", q, etag, maxSize)
}

// RevocationDelta fetches the signed delta of product from seq since, not
// verified: apply it to a RevocationCache.
func (c *Client) RevocationDelta(ctx context.Context, product string, since int64, maxSize int) (string, error) {
	q := url.Values{"since": {strconv.FormatInt(since, 10)}}
	if product != "" {
		q.Set("product", product)
	}
	tok, _, _, err := c.getDocument(ctx, "/v1/revocations", q, "", maxSize)
	return tok, err
}

func (c *Client) getDocument(ctx context.Context, path string, q url.Values, etag string, maxSize int) (string, string, bool, error) {
	if maxSize <= 0 {
		maxSize = revocation.MaxDocumentSize
	}
	base := strings.TrimRight(c.BaseURL, "/")
	if base == "" {
		return "", "", false, errors.New("keyward: revocations: no BaseURL")
	}
	u := base + path
	if len(q) > 0 {
		u += "?" + q.Encode()
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return "", "", false, wrap("revocations", err)
	}
	req.Header.Set("Accept", revocation.MediaType+", application/problem+json")
	if etag != "" {
		req.Header.Set("If-None-Match", etag)
	}
	if c.UserAgent != "" {
		req.Header.Set("User-Agent", c.UserAgent)
	}
	resp, err := c.httpClient(false).Do(req)
	if err != nil {
		return "", "", false, wrap("revocations", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusNotModified {
		return "", resp.Header.Get("ETag"), true, nil
	}
	data, err := io.ReadAll(io.LimitReader(resp.Body, int64(maxSize)+1))
	if err != nil {
		return "", "", false, wrap("revocations", fmt.Errorf("read response: %w", err))
	}
	if resp.StatusCode != http.StatusOK {
		return "", "", false, apiError(resp, data)
	}
	if len(data) > maxSize {
		return "", "", false, wrap("revocations", fmt.Errorf("document larger than %d bytes", maxSize))
	}
	return string(data), resp.Header.Get("ETag"), false, nil
}

// httpClient returns the client's HTTP client; for a stream, one without
// an overall timeout (the stream is meant to last).
func (c *Client) httpClient(stream bool) *http.Client {
	hc := c.HTTP
	if hc == nil {
		hc = &http.Client{Timeout: DefaultTimeout}
	}
	if stream && hc.Timeout != 0 {
		cp := *hc
		cp.Timeout = 0
		return &cp
	}
	return hc
}

// Watching.

// RevocationUpdate describes a document a RevocationWatcher applied.
type RevocationUpdate struct {
	Snapshot bool                      `json:"snapshot,omitempty"` // a full snapshot (Licenses and Keys are then nil)
	FromSeq  int64                     `json:"from_seq"`           // deltas
	Seq      int64                     `json:"seq"`                // the seq now held
	Licenses []revocation.LicenseEntry `json:"licenses,omitempty"`
	Keys     []revocation.KeyEntry     `json:"compromised_keys,omitempty"`
	Received time.Time                 `json:"received"` // when the document was read
}

// RevocationWatcher keeps a RevocationCache current: it loads a snapshot
// (unless the cache holds one), then follows the push stream and applies
// each signed event, polls a delta when the stream is down, when an event
// does not chain (ErrGap) and before the state's next_update, and
// reconnects with backoff. A forged or replayed event is refused by the
// cache and the stream reconnected. It never trusts the channel: every
// document is verified against the cache's registry keys.
type RevocationWatcher struct {
	Client *Client
	Cache  *RevocationCache
	// Product is the view: it MUST equal the cache's Options.Product.
	Product string
	// NoStream polls deltas instead of following the push stream.
	NoStream bool
	// PollInterval is the delta polling period without a stream, and the
	// longest wait before reconnecting. Zero means 30s.
	PollInterval time.Duration
	// IdleTimeout drops a stream that sent nothing (not even a heartbeat)
	// for this long. Zero means 45s (three default heartbeats).
	IdleTimeout time.Duration
	// RefreshKeys refetches the trust bundle from Client when a document
	// names an unknown registry kid (the registry ring rotated).
	RefreshKeys bool
	// OnUpdate, if set, is called after each applied document that moved
	// the seq, and after the first snapshot.
	OnUpdate func(RevocationUpdate)
	// OnError, if set, is told every failure (network, refused document);
	// the watcher carries on.
	OnError func(error)
	// OnConnect, if set, is called when a stream is established.
	OnConnect func()
}

// Run keeps the cache current until ctx ends, and returns ctx's error.
func (w *RevocationWatcher) Run(ctx context.Context) error {
	poll := w.PollInterval
	if poll <= 0 {
		poll = 30 * time.Second
	}
	failures := 0
	for ctx.Err() == nil {
		err := w.Sync(ctx)
		if err == nil && !w.NoStream {
			err = w.stream(ctx)
		}
		if ctx.Err() != nil {
			break
		}
		wait := poll
		if err != nil {
			w.report(err)
			failures++
			wait = min(poll, time.Duration(250<<min(failures, 8))*time.Millisecond)
			wait = wait/2 + rand.N(wait) // jitter: 0.5 to 1.5 times
		} else {
			failures = 0
			if !w.NoStream {
				wait = 0 // the stream ended cleanly (refresh due): go on at once
			}
		}
		if wait > 0 {
			t := time.NewTimer(wait)
			select {
			case <-ctx.Done():
				t.Stop()
			case <-t.C:
			}
		}
	}
	return ctx.Err()
}

func (w *RevocationWatcher) report(err error) {
	if w.OnError != nil && err != nil {
		w.OnError(err)
	}
}

// Sync brings the cache up to date once: a snapshot if it holds none (or a
// delta is refused as a gap), else a delta from the seq held.
func (w *RevocationWatcher) Sync(ctx context.Context) error {
	if _, ok := w.Cache.State(); ok {
		tok, err := w.Client.RevocationDelta(ctx, w.Product, w.seq(), w.Cache.opts.MaxSize)
		if err != nil {
			return err
		}
		err = w.applyDelta(ctx, tok)
		if !errors.Is(err, ErrGap) {
			return err
		}
	}
	tok, _, _, err := w.Client.RevocationSnapshot(ctx, w.Product, "", w.Cache.opts.MaxSize)
	if err != nil {
		return err
	}
	return w.applySnapshot(ctx, tok)
}

func (w *RevocationWatcher) seq() int64 {
	s, _ := w.Cache.State()
	return s.Seq
}

// retryKeys refetches the trust bundle after ErrUnknownKey, if allowed.
func (w *RevocationWatcher) retryKeys(ctx context.Context, err error) bool {
	if !w.RefreshKeys || !errors.Is(err, ErrUnknownKey) {
		return false
	}
	set, ferr := w.Client.JWKS(ctx)
	return ferr == nil && w.Cache.SetTrust(set) == nil
}

func (w *RevocationWatcher) applySnapshot(ctx context.Context, tok string) error {
	before, had := w.Cache.State()
	s, err := w.Cache.applySnapshot(tok, false)
	if err != nil && w.retryKeys(ctx, err) {
		s, err = w.Cache.applySnapshot(tok, false)
	}
	if err != nil {
		return err
	}
	if w.OnUpdate != nil && (!had || s.Seq > before.Seq) {
		w.OnUpdate(RevocationUpdate{Snapshot: true, Seq: s.Seq, Received: time.Now()})
	}
	return nil
}

func (w *RevocationWatcher) applyDelta(ctx context.Context, tok string) error {
	received := time.Now()
	before, _ := w.Cache.State()
	d, err := w.Cache.applyDelta(tok, false)
	if err != nil && w.retryKeys(ctx, err) {
		d, err = w.Cache.applyDelta(tok, false)
	}
	if err != nil {
		return err
	}
	if w.OnUpdate != nil && d.ToSeq > before.Seq {
		w.OnUpdate(RevocationUpdate{FromSeq: d.FromSeq, Seq: d.ToSeq, Licenses: d.Licenses, Keys: d.Keys, Received: received})
	}
	return nil
}

// maxEventLine bounds one line of the event stream.
const maxEventLine = 4 << 20

// stream follows the push stream until it fails, goes idle, or a freshness
// refresh is due (then it returns nil so Run polls a delta at once).
func (w *RevocationWatcher) stream(ctx context.Context) error {
	idle := w.IdleTimeout
	if idle <= 0 {
		idle = 45 * time.Second
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	q := url.Values{"since": {strconv.FormatInt(w.seq(), 10)}}
	if w.Product != "" {
		q.Set("product", w.Product)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimRight(w.Client.BaseURL, "/")+"/v1/revocations/stream?"+q.Encode(), nil)
	if err != nil {
		return wrap("revocation stream", err)
	}
	req.Header.Set("Accept", "text/event-stream")
	req.Header.Set("Last-Event-ID", strconv.FormatInt(w.seq(), 10))
	if w.Client.UserAgent != "" {
		req.Header.Set("User-Agent", w.Client.UserAgent)
	}
	resp, err := w.Client.httpClient(true).Do(req)
	if err != nil {
		return wrap("revocation stream", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		data, _ := io.ReadAll(io.LimitReader(resp.Body, MaxResponseSize))
		return apiError(resp, data)
	}
	if w.OnConnect != nil {
		w.OnConnect()
	}
	type line struct {
		text []byte
		err  error
	}
	lines := make(chan line, 64)
	go func() {
		defer close(lines)
		br := bufio.NewReaderSize(resp.Body, 64<<10)
		for {
			b, err := readLine(br)
			select {
			case lines <- line{b, err}:
			case <-ctx.Done():
				return
			}
			if err != nil {
				return
			}
		}
	}()
	idleT := time.NewTimer(idle)
	defer idleT.Stop()
	var data, event []byte
	for {
		refresh := w.refreshIn()
		refreshT := time.NewTimer(refresh)
		select {
		case <-ctx.Done():
			refreshT.Stop()
			return ctx.Err()
		case <-idleT.C:
			refreshT.Stop()
			return errors.New("keyward: revocation stream: idle for " + idle.String())
		case <-refreshT.C:
			return nil // Run polls a delta for freshness, then reconnects
		case l, ok := <-lines:
			refreshT.Stop()
			if !ok {
				return errors.New("keyward: revocation stream ended")
			}
			if l.err != nil {
				return wrap("revocation stream", l.err)
			}
			idleT.Reset(idle)
			switch {
			case len(l.text) == 0: // dispatch
				if len(data) > 0 && (len(event) == 0 || string(event) == "revocation") {
					if err := w.applyDelta(ctx, string(data)); err != nil {
						if errors.Is(err, ErrGap) {
							return nil // Run polls the missing delta, then reconnects
						}
						return err
					}
				}
				data, event = data[:0], event[:0]
			case l.text[0] == ':': // comment: heartbeat
			default:
				field, value, _ := bytes.Cut(l.text, []byte(":"))
				value = bytes.TrimPrefix(value, []byte(" "))
				switch string(field) {
				case "data":
					if len(data) > 0 {
						data = append(data, '\n')
					}
					data = append(data, value...)
				case "event":
					event = append(event[:0], value...)
				}
			}
		}
	}
}

// refreshIn is how long until the held state should be refreshed: half way
// to its next_update, at least a second.
func (w *RevocationWatcher) refreshIn() time.Duration {
	s, _ := w.Cache.State()
	half := s.IssuedAt.Add(s.NextUpdate.Sub(s.IssuedAt) / 2)
	return max(half.Sub(w.Cache.opts.Now()), time.Second)
}

// readLine reads one event-stream line of at most maxEventLine bytes and
// returns it without its LF (or CRLF) ending.
func readLine(br *bufio.Reader) ([]byte, error) {
	var out []byte
	for {
		b, err := br.ReadSlice('\n')
		out = append(out, b...)
		if len(out) > maxEventLine {
			return nil, fmt.Errorf("event line longer than %d bytes", maxEventLine)
		}
		if err == bufio.ErrBufferFull {
			continue
		}
		if err != nil {
			return nil, err
		}
		out = bytes.TrimSuffix(out[:len(out)-1], []byte("\r"))
		return out, nil
	}
}
