package authority

import (
	"hash/maphash"
	"math"
	"math/bits"
	"net/netip"
	"slices"
	"sync"

	"github.com/keyward/keyward/policy"
)

// Usage counters (docs/abuse.md): per license, kept in this process's
// memory on the validation path and never written to the store.
//
//   - validations_per_minute: validations of the license's keys (every
//     outcome) in a sliding minute of 60 one-second buckets: exact, over
//     the current second and the 59 before it (a window between 59 and 60
//     seconds long). A bucket saturates at 65535 validations per second.
//   - distinct_fingerprints_24h, distinct_networks_24h: distinct machine
//     fingerprints, and distinct source networks (the client address
//     truncated to /24 for IPv4, /48 for IPv6), seen in the last 24 hours.
//     Exact (each value with its last-seen second) up to exactDistinct live
//     values; beyond that a HyperLogLog sketch of 64 registers per hour of
//     the last 24 (standard error about 13 %, window 23 to 24 hours), until
//     every hour of it has expired. Only a 64-bit keyed hash of each value
//     is kept (the key, a random maphash seed, never leaves the process):
//     no fingerprint and no address, not even truncated, is stored.
//   - failed_validations_in_row: validations that failed because of the
//     caller (wrong product, too many machines, superseded key) since the
//     last valid one.
//
// The counters are bounded: at most maxLicenses licenses are tracked
// (about 300 bytes each, plus 16 bytes per distinct value, at most 1 KiB
// per counter, or 1.7 KiB for one that overflowed into its sketch); when a
// shard is full an idle license (none in 24 hours) is forgotten first,
// else the least recently seen of a small sample. A forgotten license
// starts again from zero.

// DefaultUsageLicenses bounds the licenses whose usage is tracked.
const DefaultUsageLicenses = 100_000

const (
	usageShards   = 64 // power of two
	usageWindow   = 60 // seconds: validations_per_minute
	distinctTTL   = 24 * 60 * 60
	exactDistinct = 64
	hllRegisters  = 64 // 2^hllBits
	hllBits       = 6
)

// outcome is what a validation says about the caller.
type outcome uint8

const (
	outcomeNeutral outcome = iota // suspended, revoked, expired, retired, fingerprint required
	outcomeValid                  // ends a run of failures
	outcomeFailed                 // wrong product, too many machines, superseded key
)

// licenseUsage is one license's counters and the state of its automatic
// suspension (abuse.go). The shard's lock guards it.
type licenseUsage struct {
	sec     [usageWindow]uint16 // validations per second, sec[s%60] for second s
	head    int64               // the newest second counted (0: none yet)
	perMin  uint32              // the sum of sec
	failRun uint32
	last    int64 // unix second of the last validation (eviction)
	fps     distinct
	nets    distinct

	machines   int   // license.machines as last read from the store
	machinesAt int64 // when (unix second; 0 = never)
	quietUntil int64 // no automatic suspension is attempted before this unix second
	busy       bool  // a suspension transaction for the license is running

	// What the rules were last evaluated on (see due).
	evAt      int64 // unix second; 0 = never
	evVersion int64
	evUsage   policy.Usage
	evSeq     uint32 // counts evaluations: a bound set for an older one is dropped
	// rateQuiet: the rules were found false at this validations_per_minute
	// with the inputs of evaluation evSeq, and they cannot fire at a lower
	// rate (policy.RateMonotone): a rate that grows no further does not
	// reopen the gate. 0 = no such bound.
	rateQuiet int
}

type usageShard struct {
	mu sync.Mutex
	m  map[string]*licenseUsage
	_  [40]byte // keeps shards' locks on separate cache lines
}

// usageTracker holds the counters of every tracked license.
type usageTracker struct {
	seed     maphash.Seed
	perShard int
	shards   [usageShards]usageShard
}

func newUsageTracker(maxLicenses int) *usageTracker {
	if maxLicenses <= 0 {
		maxLicenses = DefaultUsageLicenses
	}
	t := &usageTracker{seed: maphash.MakeSeed(), perShard: max(1, maxLicenses/usageShards)}
	for i := range t.shards {
		t.shards[i].m = map[string]*licenseUsage{}
	}
	return t
}

func (t *usageTracker) shard(id string) *usageShard {
	return &t.shards[maphash.String(t.seed, id)&(usageShards-1)]
}

// observation is one validation of a license's key.
type observation struct {
	now         int64 // unix second
	fingerprint string
	source      netip.Addr // invalid when unknown
	outcome     outcome
	active      bool  // the license is active: its rules may run
	version     int64 // changes when the license does (its updated_at)
}

// observed is what observe found.
type observed struct {
	usage      policy.Usage // after the validation
	evaluate   bool         // run the autoSuspend rules now (see due)
	seq        uint32       // the evaluation's number, for setRateQuiet
	machines   int          // the cached license.machines
	machinesAt int64        // when it was read (0 = never)
}

// Evaluation gate: the rules run on a validation when the license is
// active, no attempt is running or waiting (quietUntil), and something
// they read moved since their last run: a distinct count or the failure
// run changed, validations_per_minute grew by 1/256 of its value at the
// last run (at least 1), the license changed, or evalEvery passed. A rule
// on validations_per_minute alone thus fires exactly at thresholds below
// 256 and at most 1/256 above larger ones (at 602 at the latest for
// "> 600"); rules that read now, a changed policy, or a falling counter are
// re-run within evalEvery. When the rules are provably monotone in the
// rate (policy.RateMonotone), the evaluation also finds the highest rate
// up to which they stay false with the same inputs (rateQuiet; abuse.go),
// and a rate growing no higher does not reopen the gate: the thresholds
// fire exactly, and a license validated steadily is evaluated about once
// per evalEvery instead of on most validations.
const (
	evalGrowthShift = 8  // grow by 1/256
	evalEvery       = 10 // seconds
)

func (lu *licenseUsage) due(u policy.Usage, o *observation) bool {
	ev := &lu.evUsage
	if lu.evAt == 0 || o.now-lu.evAt >= evalEvery || o.version != lu.evVersion ||
		u.DistinctFingerprints24h != ev.DistinctFingerprints24h || u.DistinctNetworks24h != ev.DistinctNetworks24h ||
		u.FailedValidationsInRow != ev.FailedValidationsInRow {
		return true
	}
	if lu.rateQuiet > 0 { // the rules are false up to it, and may fire right above it
		return u.ValidationsPerMinute > lu.rateQuiet
	}
	return u.ValidationsPerMinute >= ev.ValidationsPerMinute+max(1, ev.ValidationsPerMinute>>evalGrowthShift)
}

// observe counts one validation and returns the license's usage after it,
// and whether the autoSuspend rules are due (see due), which it records as
// their last run.
func (t *usageTracker) observe(id string, o observation) observed {
	var fp, net uint64
	hasFP, hasNet := o.fingerprint != "", o.source.IsValid()
	if hasFP {
		fp = maphash.String(t.seed, o.fingerprint)
	}
	if hasNet {
		net = t.networkHash(o.source)
	}
	sh := t.shard(id)
	sh.mu.Lock()
	lu := sh.m[id]
	if lu == nil {
		if len(sh.m) >= t.perShard {
			sh.evictLocked(o.now)
		}
		lu = &licenseUsage{}
		sh.m[id] = lu
	}
	lu.count(o.now)
	lu.last = max(lu.last, o.now)
	switch o.outcome {
	case outcomeValid:
		lu.failRun = 0
	case outcomeFailed:
		lu.failRun++
	}
	if hasFP {
		lu.fps.add(fp, o.now)
	}
	if hasNet {
		lu.nets.add(net, o.now)
	}
	res := observed{usage: lu.usage(o.now), machines: lu.machines, machinesAt: lu.machinesAt}
	if o.active && !lu.busy && o.now >= lu.quietUntil && lu.due(res.usage, &o) {
		lu.evSeq++
		res.evaluate, res.seq = true, lu.evSeq
		lu.evAt, lu.evVersion, lu.evUsage, lu.rateQuiet = o.now, o.version, res.usage, 0
	}
	sh.mu.Unlock()
	return res
}

// networkHash is the keyed hash of addr's network: /24 for IPv4 (and
// IPv4-mapped IPv6), /48 for IPv6.
func (t *usageTracker) networkHash(addr netip.Addr) uint64 {
	var b [7]byte
	addr = addr.Unmap()
	if addr.Is4() {
		a := addr.As4()
		b[0] = 4
		copy(b[1:], a[:3])
		return maphash.Bytes(t.seed, b[:4])
	}
	a := addr.As16()
	b[0] = 6
	copy(b[1:], a[:6])
	return maphash.Bytes(t.seed, b[:])
}

// snapshot returns a license's usage at now without counting anything;
// ok is false when the license is not tracked.
func (t *usageTracker) snapshot(id string, now int64) (u policy.Usage, ok bool) {
	sh := t.shard(id)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	lu := sh.m[id]
	if lu == nil {
		return policy.Usage{}, false
	}
	lu.advance(now)
	return lu.usage(now), true
}

// begin marks an automatic suspension attempt for license id as running;
// false if one is already running or the license is quiet until later.
func (t *usageTracker) begin(id string, now int64) bool {
	sh := t.shard(id)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	lu := sh.m[id]
	if lu == nil || lu.busy || now < lu.quietUntil {
		return false
	}
	lu.busy = true
	return true
}

// end ends an attempt: no new one before quietUntil.
func (t *usageTracker) end(id string, quietUntil int64) {
	sh := t.shard(id)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if lu := sh.m[id]; lu != nil {
		lu.busy = false
		lu.quietUntil = max(lu.quietUntil, quietUntil)
	}
}

// quiet sets a tracked license's quietUntil without an attempt (a
// suspension by signal).
func (t *usageTracker) quiet(id string, until int64) {
	sh := t.shard(id)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if lu := sh.m[id]; lu != nil {
		lu.quietUntil = max(lu.quietUntil, until)
	}
}

// setRateQuiet records that evaluation seq of license id found the rules
// false up to validations_per_minute rate (see due); a newer evaluation's
// finding is kept.
func (t *usageTracker) setRateQuiet(id string, seq uint32, rate int) {
	sh := t.shard(id)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if lu := sh.m[id]; lu != nil && lu.evSeq == seq {
		lu.rateQuiet = rate
	}
}

// setMachines caches the license's machine count read at `at`.
func (t *usageTracker) setMachines(id string, n int, at int64) {
	sh := t.shard(id)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if lu := sh.m[id]; lu != nil {
		lu.machines, lu.machinesAt = n, at
	}
}

// tracked returns how many licenses are tracked.
func (t *usageTracker) tracked() int {
	n := 0
	for i := range t.shards {
		sh := &t.shards[i]
		sh.mu.Lock()
		n += len(sh.m)
		sh.mu.Unlock()
	}
	return n
}

// evictLocked makes room for one license: idle ones (nothing in 24 hours)
// among the first few the map yields (Go's map order is random), else the
// least recently seen of a sample. A license with an attempt running is
// kept.
func (sh *usageShard) evictLocked(now int64) {
	const scan, sample = 32, 8
	var victim string
	oldest := int64(math.MaxInt64)
	n := 0
	for id, lu := range sh.m {
		if lu.busy {
			continue
		}
		if now-lu.last >= distinctTTL {
			delete(sh.m, id)
			return
		}
		if n < sample && lu.last < oldest {
			victim, oldest = id, lu.last
		}
		if n++; n >= scan {
			break
		}
	}
	if victim != "" {
		delete(sh.m, victim)
	}
}

// advance moves the minute window to end at second now, dropping the
// buckets of seconds that left it. A clock that steps back leaves the
// window where it is.
func (lu *licenseUsage) advance(now int64) {
	switch {
	case lu.head == 0 || now-lu.head >= usageWindow:
		if lu.perMin != 0 {
			clear(lu.sec[:])
			lu.perMin = 0
		}
		lu.head = now
	case now > lu.head:
		for s := lu.head + 1; s <= now; s++ {
			i := s % usageWindow
			lu.perMin -= uint32(lu.sec[i])
			lu.sec[i] = 0
		}
		lu.head = now
	}
}

// count adds one validation at second now (into the newest bucket if the
// clock stepped back).
func (lu *licenseUsage) count(now int64) {
	lu.advance(now)
	if i := lu.head % usageWindow; lu.sec[i] < math.MaxUint16 {
		lu.sec[i]++
		lu.perMin++
	}
}

func (lu *licenseUsage) usage(now int64) policy.Usage {
	return policy.Usage{
		ValidationsPerMinute:    int(lu.perMin),
		DistinctFingerprints24h: lu.fps.count(now),
		FailedValidationsInRow:  int(min(lu.failRun, math.MaxInt32)),
		DistinctNetworks24h:     lu.nets.count(now),
	}
}

// distinct counts distinct 64-bit hashes seen in the last 24 hours: exactly
// while at most exactDistinct are live, then with an hourly HyperLogLog.
type distinct struct {
	exact []seenHash
	hll   *hourlyHLL
}

type seenHash struct {
	h  uint64
	at int64 // unix second last seen
}

func (d *distinct) add(h uint64, now int64) {
	if d.hll != nil {
		if !d.hll.expired(now) {
			d.hll.add(h, now)
			return
		}
		d.hll = nil // everything it counted is older than 24 hours
	}
	for i := range d.exact {
		if d.exact[i].h == h {
			d.exact[i].at = max(d.exact[i].at, now)
			return
		}
	}
	d.exact = slices.DeleteFunc(d.exact, func(s seenHash) bool { return now-s.at >= distinctTTL })
	if len(d.exact) < exactDistinct {
		d.exact = append(d.exact, seenHash{h, now})
		return
	}
	d.hll = &hourlyHLL{}
	for _, s := range d.exact {
		d.hll.add(s.h, s.at)
	}
	d.hll.add(h, now)
	d.exact = nil
}

func (d *distinct) count(now int64) int {
	if d.hll != nil {
		if !d.hll.expired(now) {
			return d.hll.count(now)
		}
		d.hll = nil
	}
	n := 0
	for _, s := range d.exact {
		if now-s.at < distinctTTL {
			n++
		}
	}
	return n
}

// hourlyHLL is a HyperLogLog sketch (Flajolet et al., 2007) per hour for
// the last 24 hours; the estimate merges the hours still in the window.
type hourlyHLL struct {
	hours [24]int64 // the hour (unix hour + 1; 0 = empty) each slot holds
	regs  [24][hllRegisters]uint8

	cached     int
	cachedHour int64
	dirty      bool
}

func (x *hourlyHLL) add(h uint64, now int64) {
	hour := now/3600 + 1
	i := hour % 24
	if x.hours[i] < hour {
		clear(x.regs[i][:])
		x.hours[i] = hour
		x.dirty = true
	}
	reg := h >> (64 - hllBits)
	rho := uint8(bits.LeadingZeros64(h<<hllBits|1<<(hllBits-1))) + 1
	if rho > x.regs[i][reg] {
		x.regs[i][reg] = rho
		x.dirty = true
	}
}

// expired reports whether every hour it holds left the 24-hour window.
func (x *hourlyHLL) expired(now int64) bool {
	hour := now/3600 + 1
	for _, h := range x.hours {
		if h > hour-24 {
			return false
		}
	}
	return true
}

func (x *hourlyHLL) count(now int64) int {
	hour := now/3600 + 1
	if !x.dirty && x.cachedHour == hour {
		return x.cached
	}
	var m [hllRegisters]uint8
	for i, h := range x.hours {
		if h > hour-24 {
			for r, v := range x.regs[i] {
				m[r] = max(m[r], v)
			}
		}
	}
	sum, zeros := 0.0, 0
	for _, v := range m {
		sum += math.Ldexp(1, -int(v))
		if v == 0 {
			zeros++
		}
	}
	const regs = float64(hllRegisters)
	est := 0.709 * regs * regs / sum // alpha for 64 registers
	if est <= 2.5*regs && zeros > 0 {
		est = regs * math.Log(regs/float64(zeros)) // linear counting for small sets
	}
	x.cached, x.cachedHour, x.dirty = int(est+0.5), hour, false
	return x.cached
}
