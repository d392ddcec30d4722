package authority

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"github.com/keyward/keyward"
	"github.com/keyward/keyward/keys"
	"github.com/keyward/keyward/store"
)

// The validation cache keeps what validation reads — a license key record,
// its license and product — by key hash, so a repeated validation needs no
// database transaction. It is never stale after a commit made through this
// authority: every Update goes through trackedStore, which invalidates the
// entries of every license (and the signers of every ring) the transaction
// touched before Update returns. A fill races with invalidation safely: an
// entry read from the database is stored only if no invalidation happened
// since before the read began (the epoch check).
//
// Changes made by another process sharing the store (another replica on
// PostgreSQL) reach the cache through ApplyRemote (remote.go), fed by the
// store's change feed; while the feed is disconnected the cache is bypassed.
// Without a feed (a CLI on the same SQLite file) they are not seen until
// the entry is evicted; see docs.

// DefaultCacheEntries bounds the validation cache (about 400 bytes each).
const DefaultCacheEntries = 200_000

type cacheEntry struct {
	rec     keyward.LicenseKey
	license keyward.License
	product keyward.Product
	touched atomic.Int64 // unix nanoseconds of the last last-seen time this entry buffered (touch.go)
}

type validationCache struct {
	mu        sync.RWMutex
	epoch     uint64
	bypass    bool // set while changes by other processes go unheard: nothing is served or stored
	max       int
	byHash    map[[32]byte]*cacheEntry
	byLicense map[string][][32]byte
	signers   map[string]keys.Signer // active signer by ring
}

func newValidationCache(max int) *validationCache {
	if max <= 0 {
		max = DefaultCacheEntries
	}
	return &validationCache{max: max, byHash: map[[32]byte]*cacheEntry{}, byLicense: map[string][][32]byte{}, signers: map[string]keys.Signer{}}
}

// get returns the entry for hash (nil on a miss) and the epoch to pass to put.
func (c *validationCache) get(h [32]byte) (*cacheEntry, uint64) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	if c.bypass {
		return nil, c.epoch
	}
	return c.byHash[h], c.epoch
}

// put stores e unless an invalidation happened since epoch was read.
func (c *validationCache) put(h [32]byte, e *cacheEntry, epoch uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.epoch != epoch || c.bypass {
		return
	}
	if len(c.byHash) >= c.max {
		c.evictLocked(c.max / 16)
	}
	if _, ok := c.byHash[h]; !ok {
		c.byLicense[e.license.ID] = append(c.byLicense[e.license.ID], h)
	}
	c.byHash[h] = e
}

// evictLocked drops about n entries (map order is random enough).
func (c *validationCache) evictLocked(n int) {
	for h, e := range c.byHash {
		if n <= 0 {
			return
		}
		c.dropLicenseLocked(e.license.ID)
		delete(c.byHash, h)
		n--
	}
}

func (c *validationCache) dropLicenseLocked(id string) {
	for _, h := range c.byLicense[id] {
		delete(c.byHash, h)
	}
	delete(c.byLicense, id)
}

// invalidate drops the entries of the given licenses and the signers of
// the given rings (products: all rings and entries of the product).
func (c *validationCache) invalidate(t *touched) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.epoch++
	for id := range t.licenses {
		c.dropLicenseLocked(id)
	}
	for ring := range t.rings {
		delete(c.signers, ring)
	}
	if t.all {
		clear(c.byHash)
		clear(c.byLicense)
		clear(c.signers)
	}
}

func (c *validationCache) signer(ring string) (keys.Signer, uint64) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	if c.bypass {
		return nil, c.epoch
	}
	return c.signers[ring], c.epoch
}

func (c *validationCache) putSigner(ring string, s keys.Signer, epoch uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.epoch == epoch && !c.bypass {
		c.signers[ring] = s
	}
}

// touched collects what a transaction changed.
type touched struct {
	licenses map[string]bool
	rings    map[string]bool
	all      bool
}

func (t *touched) license(id string) {
	if t.licenses == nil {
		t.licenses = map[string]bool{}
	}
	t.licenses[id] = true
}

func (t *touched) ring(r string) {
	if t.rings == nil {
		t.rings = map[string]bool{}
	}
	t.rings[r] = true
}

func (t *touched) empty() bool { return len(t.licenses) == 0 && len(t.rings) == 0 && !t.all }

// trackedStore wraps the authority's store: after every Update (committed
// or not) it invalidates what the transaction touched.
type trackedStore struct {
	store.Store
	cache *validationCache
}

func (s trackedStore) Update(ctx context.Context, fn func(tx store.Tx) error) error {
	t := &touched{}
	err := s.Store.Update(ctx, func(tx store.Tx) error { return fn(trackingTx{Tx: tx, t: t}) })
	if !t.empty() {
		s.cache.invalidate(t)
	}
	return err
}

// trackingTx records the licenses and rings a transaction writes.
type trackingTx struct {
	store.Tx
	t *touched
}

func (x trackingTx) UpdateLicense(l *keyward.License) error {
	x.t.license(l.ID)
	return x.Tx.UpdateLicense(l)
}

func (x trackingTx) CreateLicenseKey(k *keyward.LicenseKey) error {
	x.t.license(k.LicenseID)
	return x.Tx.CreateLicenseKey(k)
}

func (x trackingTx) CreateLicenseKeys(ks []*keyward.LicenseKey) error {
	for _, k := range ks {
		x.t.license(k.LicenseID)
	}
	return x.Tx.CreateLicenseKeys(ks)
}

func (x trackingTx) SupersedeLicenseKeys(licenseID string, at, graceUntil time.Time) error {
	x.t.license(licenseID)
	return x.Tx.SupersedeLicenseKeys(licenseID, at, graceUntil)
}

func (x trackingTx) CreateKey(k *keyward.SigningKey) error {
	x.t.ring(k.Ring)
	return x.Tx.CreateKey(k)
}

func (x trackingTx) UpdateKey(k *keyward.SigningKey) error {
	x.t.ring(k.Ring)
	return x.Tx.UpdateKey(k)
}

func (x trackingTx) CreateProduct(p *keyward.Product) error {
	x.t.all = true
	return x.Tx.CreateProduct(p)
}
