package revocation

import (
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/keyward/keyward"
	"github.com/keyward/keyward/keys"
)

// Source is what the registry reads and signs through; *authority.Authority
// implements it.
type Source interface {
	// RevocationRows returns up to limit (0 = no limit) rows with seq >
	// after, in seq order: those of product productID (an id) and those
	// without a product, or all rows when productID is "".
	RevocationRows(ctx context.Context, productID string, after int64, limit int) ([]*keyward.Revocation, error)
	// RevocationHead returns the highest committed seq.
	RevocationHead(ctx context.Context) (int64, error)
	// RevocationSigner returns the registry ring's active signer.
	RevocationSigner(ctx context.Context) (keys.Signer, error)
	// Product returns a product by id or name (keyward.ENotFound if none).
	Product(ctx context.Context, idOrName string) (*keyward.Product, error)
	// Issuer is the issuer named in every document.
	Issuer() string
}

// Defaults of Config.
const (
	DefaultTTL            = time.Hour
	DefaultPollInterval   = time.Second
	DefaultWindow         = 4096
	DefaultMaxSubscribers = 10000
	DefaultHeartbeat      = 15 * time.Second
	// MaxEventRows bounds the rows one push event carries; a subscriber
	// further behind gets several events.
	MaxEventRows = 1000
	loadBatch    = 10000
)

// Config configures a Registry. Zero fields take the defaults.
type Config struct {
	Clock  keyward.Clock
	Logger *slog.Logger
	// TTL is next_update - issued_at of every document. Cached snapshots
	// are re-signed when half of it has passed.
	TTL time.Duration
	// PollInterval is how often the registry looks for rows nobody told it
	// about (another process, a lost notification): the safety net behind
	// Notify.
	PollInterval time.Duration
	// Window is how many recent rows are kept in memory for subscribers;
	// one further behind reads from the store.
	Window int
	// MaxSubscribers bounds concurrent subscriptions; Subscribe refuses
	// more with keyward.EUnavailable.
	MaxSubscribers int
	// Heartbeat is how often a push stream with nothing to say sends a
	// comment line, so clients and proxies see it is alive.
	Heartbeat time.Duration
}

// Registry keeps the current registry state in memory, serves signed
// snapshots and deltas, and feeds subscriptions. Create it with New, wire
// Notify to commits (store.NotifyRevocations), then Start it. It is safe
// for concurrent use.
type Registry struct {
	cfg  Config
	src  Source
	log  *slog.Logger
	wake chan struct{}
	stop chan struct{} // closed by Close
	done chan struct{} // closed when run returns
	subs atomic.Int64

	mu       sync.RWMutex
	started  bool
	cursor   int64                      // every row <= cursor is applied
	state    map[string]*productState   // by product id; "" = rows without product
	window   []*keyward.Revocation      // recent rows, seq ascending
	base     int64                      // window holds every row with seq > base
	changed  chan struct{}              // closed and replaced when rows arrive
	products map[string]keyward.Product // resolved views, by id and by name

	snapMu sync.Mutex
	snaps  map[string]*viewCache // by view (product id, "" = all)

	sigMu sync.Mutex
	sigs  map[sigKey]*sigEntry
}

// productState is the current state of one product's subjects.
type productState struct {
	licenses map[string]*keyward.Revocation // revoked or suspended, by license id
	keys     map[string]*keyward.Revocation // compromised, by kid
	head     int64                          // seq of the product's newest row
}

type viewCache struct {
	mu    sync.Mutex // held while building
	snap  *Document
	delta map[int64]*Document // freshness-only deltas (from == to), by seq
}

// New returns a Registry that is not yet started.
func New(cfg Config) *Registry {
	if cfg.Clock == nil {
		cfg.Clock = keyward.SystemClock{}
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.TTL <= 0 {
		cfg.TTL = DefaultTTL
	}
	if cfg.PollInterval <= 0 {
		cfg.PollInterval = DefaultPollInterval
	}
	if cfg.Window <= 0 {
		cfg.Window = DefaultWindow
	}
	if cfg.MaxSubscribers <= 0 {
		cfg.MaxSubscribers = DefaultMaxSubscribers
	}
	if cfg.Heartbeat <= 0 {
		cfg.Heartbeat = DefaultHeartbeat
	}
	return &Registry{
		cfg: cfg, log: cfg.Logger,
		wake: make(chan struct{}, 1), stop: make(chan struct{}), done: make(chan struct{}),
		state: map[string]*productState{}, changed: make(chan struct{}),
		products: map[string]keyward.Product{}, snaps: map[string]*viewCache{}, sigs: map[sigKey]*sigEntry{},
	}
}

// Heartbeat returns the configured heartbeat interval of push streams.
func (r *Registry) Heartbeat() time.Duration { return r.cfg.Heartbeat }

// Notify tells the registry that rows were committed. It never blocks.
func (r *Registry) Notify() {
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

// Start loads the registry from src (every row, once) and starts following
// it. It returns when the state is loaded.
func (r *Registry) Start(ctx context.Context, src Source) error {
	r.mu.Lock()
	if r.started {
		r.mu.Unlock()
		return errors.New("revocation: registry already started")
	}
	r.started, r.src = true, src
	r.mu.Unlock()
	for {
		n, err := r.catchUp(ctx, loadBatch, false)
		if err != nil {
			return fmt.Errorf("revocation: load registry: %w", err)
		}
		if n < loadBatch {
			break
		}
	}
	r.mu.Lock()
	r.base = r.cursor
	r.mu.Unlock()
	go r.run()
	return nil
}

// Close stops following the store and ends every subscription (their
// Done channels close). It waits for the follower to stop.
func (r *Registry) Close() {
	r.mu.Lock()
	started := r.started
	select {
	case <-r.stop:
		started = false
	default:
		close(r.stop)
	}
	r.mu.Unlock()
	if started {
		<-r.done
	}
}

func (r *Registry) run() {
	defer close(r.done)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		select {
		case <-r.stop:
			cancel()
		case <-ctx.Done():
		}
	}()
	poll := time.NewTicker(r.cfg.PollInterval)
	defer poll.Stop()
	refresh := time.NewTicker(max(r.cfg.TTL/8, 10*time.Millisecond))
	defer refresh.Stop()
	for {
		select {
		case <-r.stop:
			return
		case <-r.wake:
		case <-poll.C:
		case <-refresh.C:
			r.refreshSnapshots(ctx)
			continue
		}
		for {
			n, err := r.catchUp(ctx, MaxEventRows, true)
			if err != nil {
				if ctx.Err() == nil {
					r.log.Warn("revocation registry: read rows", "err", err)
				}
				break
			}
			if n < MaxEventRows {
				break
			}
		}
	}
}

// catchUp reads up to limit rows after the cursor and applies them.
func (r *Registry) catchUp(ctx context.Context, limit int, keep bool) (int, error) {
	r.mu.RLock()
	after := r.cursor
	r.mu.RUnlock()
	rows, err := r.src.RevocationRows(ctx, "", after, limit)
	if err != nil || len(rows) == 0 {
		return 0, err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, row := range rows {
		if row.Seq <= r.cursor {
			continue // only one goroutine catches up, but be safe
		}
		r.apply(row)
		r.cursor = row.Seq
		if keep {
			r.window = append(r.window, row)
		}
	}
	if over := len(r.window) - r.cfg.Window; over > 0 && len(r.window) >= 2*r.cfg.Window {
		r.base = r.window[over-1].Seq
		r.window = slices.Clone(r.window[over:])
	}
	if !keep {
		r.base = r.cursor
	}
	close(r.changed)
	r.changed = make(chan struct{})
	return len(rows), nil
}

// catchUpToStore applies every row committed so far (one cheap head query
// when there is nothing new).
func (r *Registry) catchUpToStore(ctx context.Context) error {
	head, err := r.src.RevocationHead(ctx)
	if err != nil {
		return err
	}
	for {
		r.mu.RLock()
		cursor := r.cursor
		r.mu.RUnlock()
		if cursor >= head {
			return nil
		}
		if n, err := r.catchUp(ctx, MaxEventRows, true); err != nil || n == 0 {
			return err
		}
	}
}

// apply folds one row into the state. r.mu is held.
func (r *Registry) apply(row *keyward.Revocation) {
	ps := r.state[row.ProductID]
	if ps == nil {
		ps = &productState{licenses: map[string]*keyward.Revocation{}, keys: map[string]*keyward.Revocation{}}
		r.state[row.ProductID] = ps
	}
	ps.head = row.Seq
	switch row.Kind {
	case keyward.RevocationLicense:
		if row.State == StateRevoked || row.State == StateSuspended {
			ps.licenses[row.Subject] = row
		} else {
			delete(ps.licenses, row.Subject)
		}
	case keyward.RevocationKey:
		ps.keys[row.Subject] = row
	}
}

// inView reports whether row belongs to view (a product id, "" = all).
func inView(view string, row *keyward.Revocation) bool {
	return view == "" || row.ProductID == "" || row.ProductID == view
}

// viewHead returns the seq of the newest row of view. r.mu is held.
func (r *Registry) viewHead(view string) int64 {
	if view == "" {
		return r.cursor
	}
	var h int64
	if ps := r.state[view]; ps != nil {
		h = ps.head
	}
	if ps := r.state[""]; ps != nil {
		h = max(h, ps.head)
	}
	return h
}

// View is a resolved view: one product, or the whole registry.
type View struct {
	ProductID string // "" = every product
	Product   string // product name, "" = every product
}

// ResolveView resolves a product id or name ("" = the whole registry).
// An unknown product is keyward.ENotFound.
func (r *Registry) ResolveView(ctx context.Context, product string) (View, error) {
	if product == "" {
		return View{}, nil
	}
	r.mu.RLock()
	p, ok := r.products[product]
	src := r.src
	r.mu.RUnlock()
	if ok {
		return View{ProductID: p.ID, Product: p.Name}, nil
	}
	if src == nil {
		return View{}, notStarted()
	}
	pp, err := src.Product(ctx, product)
	if err != nil {
		return View{}, err
	}
	r.mu.Lock()
	if len(r.products) > 100000 {
		clear(r.products)
	}
	r.products[pp.ID], r.products[pp.Name] = *pp, *pp
	r.mu.Unlock()
	return View{ProductID: pp.ID, Product: pp.Name}, nil
}

func notStarted() error {
	return keyward.Errorf(keyward.EUnavailable, "the revocation registry is not running")
}

// Document is a signed registry document.
type Document struct {
	Token      string // the JWS compact serialization
	ETag       string // strong entity tag, quoted
	Typ        string // TypSnapshot or TypDelta
	FromSeq    int64  // deltas: from_seq
	Seq        int64  // snapshot: seq; delta: to_seq
	Entries    int    // license and key entries
	IssuedAt   time.Time
	NextUpdate time.Time

	gzOnce sync.Once
	gz     []byte
}

// Gzip returns the token compressed with gzip, computed once.
func (d *Document) Gzip() []byte {
	d.gzOnce.Do(func() {
		var buf bytes.Buffer
		zw, _ := gzip.NewWriterLevel(&buf, gzip.BestSpeed)
		_, _ = zw.Write([]byte(d.Token))
		_ = zw.Close()
		d.gz = buf.Bytes()
	})
	return d.gz
}

func viewTag(view string) string {
	if view == "" {
		return "all"
	}
	return view
}

// Snapshot returns the view's current signed snapshot: it reflects every
// row committed before the call. It is built when the view's seq has moved
// or the cached one is past half its lifetime, otherwise served from
// memory.
func (r *Registry) Snapshot(ctx context.Context, v View) (*Document, error) {
	if !r.running() {
		return nil, notStarted()
	}
	// Read your writes: a change committed before this request is in the
	// snapshot even if the follower has not applied it yet.
	if err := r.catchUpToStore(ctx); err != nil {
		return nil, err
	}
	vc := r.viewCache(v.ProductID)
	vc.mu.Lock()
	defer vc.mu.Unlock()
	now := r.cfg.Clock.Now()
	r.mu.RLock()
	head := r.viewHead(v.ProductID)
	r.mu.RUnlock()
	if d := vc.snap; d != nil && d.Seq == head && r.fresh(d, now) {
		return d, nil
	}
	d, err := r.buildSnapshot(ctx, v, now)
	if err != nil {
		return nil, err
	}
	vc.snap = d
	return d, nil
}

func (r *Registry) running() bool {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.started
}

// fresh reports whether d is younger than half its lifetime.
func (r *Registry) fresh(d *Document, now time.Time) bool {
	return now.Before(d.IssuedAt.Add(d.NextUpdate.Sub(d.IssuedAt) / 2))
}

func (r *Registry) viewCache(view string) *viewCache {
	r.snapMu.Lock()
	defer r.snapMu.Unlock()
	vc := r.snaps[view]
	if vc == nil {
		vc = &viewCache{delta: map[int64]*Document{}}
		r.snaps[view] = vc
	}
	return vc
}

// buildSnapshot copies the view's state under the read lock, then sorts,
// encodes and signs outside it.
func (r *Registry) buildSnapshot(ctx context.Context, v View, now time.Time) (*Document, error) {
	s := &Snapshot{Product: v.Product}
	r.mu.RLock()
	s.Seq = r.viewHead(v.ProductID)
	n := 0
	for id, ps := range r.state {
		if inView(v.ProductID, &keyward.Revocation{ProductID: id}) {
			n += len(ps.licenses)
		}
	}
	s.Licenses = make([]LicenseEntry, 0, n)
	s.Keys = []KeyEntry{}
	for id, ps := range r.state {
		if !inView(v.ProductID, &keyward.Revocation{ProductID: id}) {
			continue
		}
		for _, row := range ps.licenses {
			s.Licenses = append(s.Licenses, licenseEntry(row))
		}
		for _, row := range ps.keys {
			s.Keys = append(s.Keys, keyEntry(row))
		}
	}
	r.mu.RUnlock()
	slices.SortFunc(s.Licenses, func(a, b LicenseEntry) int { return strings.Compare(a.ID, b.ID) })
	slices.SortFunc(s.Keys, func(a, b KeyEntry) int { return strings.Compare(a.KID, b.KID) })
	return r.signSnapshot(ctx, v, s, now)
}

func (r *Registry) signSnapshot(ctx context.Context, v View, s *Snapshot, now time.Time) (*Document, error) {
	s.Issuer = r.src.Issuer()
	s.IssuedAt, s.NextUpdate = now.Unix(), now.Add(r.cfg.TTL).Unix()
	signer, err := r.src.RevocationSigner(ctx)
	if err != nil {
		return nil, fmt.Errorf("revocation: snapshot: %w", err)
	}
	payload := EncodeSnapshot(s)
	tok, err := Sign(signer, TypSnapshot, payload)
	if err != nil {
		return nil, err
	}
	return &Document{
		Token: tok, Typ: TypSnapshot, Seq: s.Seq, Entries: len(s.Licenses) + len(s.Keys),
		IssuedAt: time.Unix(s.IssuedAt, 0).UTC(), NextUpdate: time.Unix(s.NextUpdate, 0).UTC(),
		ETag: `"s-` + viewTag(v.ProductID) + "-" + strconv.FormatInt(s.Seq, 10) + "-" + strconv.FormatInt(s.IssuedAt, 10) + `"`,
	}, nil
}

// BuildSnapshot signs a snapshot of the given entries as of seq, outside
// any registry state: for benchmarks and tests of large registries.
func BuildSnapshot(ctx context.Context, src Source, v View, seq int64, licenses []LicenseEntry, ks []KeyEntry, now time.Time, ttl time.Duration) (*Document, error) {
	r := New(Config{TTL: ttl})
	r.src = src
	s := &Snapshot{Product: v.Product, Seq: seq, Licenses: slices.Clone(licenses), Keys: slices.Clone(ks)}
	if s.Keys == nil {
		s.Keys = []KeyEntry{}
	}
	slices.SortFunc(s.Licenses, func(a, b LicenseEntry) int { return strings.Compare(a.ID, b.ID) })
	return r.signSnapshot(ctx, v, s, now)
}

// refreshSnapshots re-signs cached snapshots past half their lifetime, so
// a request rarely waits for a build.
func (r *Registry) refreshSnapshots(ctx context.Context) {
	r.snapMu.Lock()
	views := make([]string, 0, len(r.snaps))
	for v := range r.snaps {
		views = append(views, v)
	}
	r.snapMu.Unlock()
	now := r.cfg.Clock.Now()
	for _, view := range views {
		vc := r.viewCache(view)
		vc.mu.Lock()
		for seq, d := range vc.delta {
			if !r.fresh(d, now) {
				delete(vc.delta, seq)
			}
		}
		if d := vc.snap; d != nil && !r.fresh(d, now) {
			v := View{ProductID: view}
			if view != "" {
				if vv, err := r.ResolveView(ctx, view); err == nil {
					v = vv
				}
			}
			if nd, err := r.buildSnapshot(ctx, v, now); err == nil {
				vc.snap = nd
			} else if ctx.Err() == nil {
				r.log.Warn("revocation registry: re-sign snapshot", "view", viewTag(view), "err", err)
			}
		}
		vc.mu.Unlock()
	}
}

func licenseEntry(row *keyward.Revocation) LicenseEntry {
	return LicenseEntry{ID: row.Subject, State: row.State, Reason: row.Reason, Time: row.Time.Unix(), Seq: row.Seq}
}

func keyEntry(row *keyward.Revocation) KeyEntry {
	return KeyEntry{KID: row.Subject, Reason: row.Reason, Time: row.Time.Unix(), Seq: row.Seq}
}

// Delta returns a signed delta of the view from since to its newest row,
// read from the store. A since ahead of every committed row is
// keyward.EInvalid. A delta with nothing after since (it only refreshes
// next_update) is cached like a snapshot.
func (r *Registry) Delta(ctx context.Context, v View, since int64) (*Document, error) {
	if !r.running() {
		return nil, notStarted()
	}
	if since < 0 {
		return nil, keyward.Errorf(keyward.EInvalid, "since %d: want a seq >= 0", since)
	}
	now := r.cfg.Clock.Now()
	r.mu.RLock()
	cursor := r.cursor
	r.mu.RUnlock()
	if since > cursor {
		storeHead, err := r.src.RevocationHead(ctx)
		if err != nil {
			return nil, err
		}
		if since > storeHead {
			return nil, keyward.Errorf(keyward.EInvalid, "since %d is ahead of the registry (newest seq %d)", since, storeHead)
		}
	}
	var rows []*keyward.Revocation
	for after := since; ; {
		batch, err := r.src.RevocationRows(ctx, v.ProductID, after, loadBatch)
		if err != nil {
			return nil, err
		}
		rows = append(rows, batch...)
		if len(batch) < loadBatch {
			break
		}
		after = batch[len(batch)-1].Seq
	}
	if len(rows) == 0 {
		// Nothing changed since: the answer only refreshes next_update,
		// and is the same for every client at this seq.
		vc := r.viewCache(v.ProductID)
		vc.mu.Lock()
		defer vc.mu.Unlock()
		if d := vc.delta[since]; d != nil && r.fresh(d, now) {
			return d, nil
		}
		d, err := r.signDelta(ctx, v, since, since, nil, now)
		if err != nil {
			return nil, err
		}
		if len(vc.delta) >= 1024 {
			clear(vc.delta)
		}
		vc.delta[since] = d
		return d, nil
	}
	to := rows[len(rows)-1].Seq
	return r.signDelta(ctx, v, since, to, rows, now)
}

// signDelta signs the delta (from, to] of rows (the view's rows in that
// range, seq ascending), keeping the latest row of each subject.
func (r *Registry) signDelta(ctx context.Context, v View, from, to int64, rows []*keyward.Revocation, now time.Time) (*Document, error) {
	d := &Delta{Issuer: r.src.Issuer(), Product: v.Product, FromSeq: from, ToSeq: to,
		IssuedAt: now.Unix(), NextUpdate: now.Add(r.cfg.TTL).Unix(), Licenses: []LicenseEntry{}, Keys: []KeyEntry{}}
	latest := make(map[string]int, len(rows))
	for i, row := range rows {
		latest[row.Kind+"\x00"+row.Subject] = i
	}
	for i, row := range rows {
		if latest[row.Kind+"\x00"+row.Subject] != i {
			continue
		}
		switch row.Kind {
		case keyward.RevocationLicense:
			d.Licenses = append(d.Licenses, licenseEntry(row))
		case keyward.RevocationKey:
			d.Keys = append(d.Keys, keyEntry(row))
		}
	}
	signer, err := r.src.RevocationSigner(ctx)
	if err != nil {
		return nil, fmt.Errorf("revocation: delta: %w", err)
	}
	tok, err := Sign(signer, TypDelta, EncodeDelta(d))
	if err != nil {
		return nil, err
	}
	return &Document{
		Token: tok, Typ: TypDelta, FromSeq: from, Seq: to, Entries: len(d.Licenses) + len(d.Keys),
		IssuedAt: time.Unix(d.IssuedAt, 0).UTC(), NextUpdate: time.Unix(d.NextUpdate, 0).UTC(),
		ETag: `"d-` + viewTag(v.ProductID) + "-" + strconv.FormatInt(from, 10) + "-" + strconv.FormatInt(to, 10) + "-" + strconv.FormatInt(d.IssuedAt, 10) + `"`,
	}, nil
}
