package authority

import (
	"fmt"
	"math"
	"net/netip"
	"testing"
	"time"

	"github.com/keyward/keyward"
	"github.com/keyward/keyward/policy"
)

// t0 is an arbitrary unix second (not on a minute or hour boundary).
const t0 = int64(1_790_000_017)

func observeN(tr *usageTracker, id string, n int, o observation) observed {
	var ob observed
	for range n {
		ob = tr.observe(id, o)
	}
	return ob
}

func TestUsageValidationsPerMinute(t *testing.T) {
	tr := newUsageTracker(0)
	at := func(sec int64) observation { return observation{now: t0 + sec} }
	steps := []struct {
		sec  int64
		n    int
		want int // validations_per_minute after
	}{
		{0, 10, 10},
		{30, 5, 15},
		{59, 1, 16},      // the window is the current second and the 59 before
		{60, 1, 7},       // second 0 left the window: 5 + 1 + 1
		{89, 0, 0},       // nothing counted: see snapshot below
		{90, 1, 3},       // second 30 left too: 1 (59) + 1 (60) + 1
		{200, 1, 1},      // everything older than a minute is gone
		{199, 1, 2},      // a clock stepping back counts into the newest second
		{10_000, 3, 3},   // long idle
		{10_059, 1, 4},   // still in
		{10_060, 65, 66}, // the 3 of second 10 000 left
	}
	for _, s := range steps {
		if s.n == 0 {
			continue
		}
		ob := observeN(tr, "l1", s.n, at(s.sec))
		if got := ob.usage.ValidationsPerMinute; got != s.want {
			t.Errorf("after %d validations at +%ds: validations_per_minute = %d, want %d", s.n, s.sec, got, s.want)
		}
	}
	// A snapshot moves the window without counting.
	if u, ok := tr.snapshot("l1", t0+10_119); !ok || u.ValidationsPerMinute != 65 {
		t.Errorf("snapshot at +10119s = %+v, %v; want 65 (the second 10 059 left)", u, ok)
	}
	if u, _ := tr.snapshot("l1", t0+10_120); u.ValidationsPerMinute != 0 {
		t.Errorf("snapshot at +10120s = %d, want 0", u.ValidationsPerMinute)
	}
	if _, ok := tr.snapshot("l2", t0); ok {
		t.Error("snapshot of an untracked license: ok = true")
	}
}

func TestUsageSecondBucketSaturates(t *testing.T) {
	tr := newUsageTracker(0)
	ob := observeN(tr, "l1", math.MaxUint16+10, observation{now: t0})
	if got := ob.usage.ValidationsPerMinute; got != math.MaxUint16 {
		t.Errorf("validations_per_minute after %d in one second = %d, want %d (saturated)", math.MaxUint16+10, got, math.MaxUint16)
	}
	if ob = tr.observe("l1", observation{now: t0 + 1}); ob.usage.ValidationsPerMinute != math.MaxUint16+1 {
		t.Errorf("next second: %d, want %d", ob.usage.ValidationsPerMinute, math.MaxUint16+1)
	}
}

func TestUsageFailedInRow(t *testing.T) {
	tr := newUsageTracker(0)
	seq := []struct {
		o    outcome
		want int
	}{
		{outcomeFailed, 1}, {outcomeFailed, 2}, {outcomeNeutral, 2}, {outcomeFailed, 3}, {outcomeValid, 0}, {outcomeFailed, 1},
	}
	for i, s := range seq {
		ob := tr.observe("l1", observation{now: t0 + int64(i), outcome: s.o})
		if got := ob.usage.FailedValidationsInRow; got != s.want {
			t.Errorf("step %d: failed_validations_in_row = %d, want %d", i, got, s.want)
		}
	}
}

func TestUsageDistinctFingerprints(t *testing.T) {
	tr := newUsageTracker(0)
	fp := func(sec int64, f string) int {
		return tr.observe("l1", observation{now: t0 + sec, fingerprint: f}).usage.DistinctFingerprints24h
	}
	const h = 3600
	steps := []struct {
		sec  int64
		fp   string
		want int
	}{
		{0, "a", 1},
		{1, "a", 1},
		{2, "b", 2},
		{3, "", 2}, // no fingerprint given
		{12 * h, "c", 3},
		{24*h - 1, "d", 4}, // "a" seen at +1s is still in
		{24*h + 1, "e", 4}, // "a" (last at +1s) left; "b" (+2s) is 24 h - 1 s old: b, c, d, e
		{24*h + 2, "f", 4}, // "b" left: c, d, e, f
		{24*h + 3, "a", 5}, // "a" again
		{36*h + 1, "g", 5}, // "c" left: d, e, f, a, g
	}
	for _, s := range steps {
		if got := fp(s.sec, s.fp); got != s.want {
			t.Errorf("fingerprint %q at +%ds: distinct_fingerprints_24h = %d, want %d", s.fp, s.sec, got, s.want)
		}
	}
}

func TestUsageDistinctNetworks(t *testing.T) {
	tr := newUsageTracker(0)
	steps := []struct {
		addr string
		want int
	}{
		{"", 0},
		{"192.0.2.1", 1},
		{"192.0.2.254", 1},        // same /24
		{"::ffff:192.0.2.77", 1},  // IPv4-mapped: the same /24
		{"192.0.3.1", 2},          // another /24
		{"2001:db8:1:2::1", 3},    // an IPv6 /48
		{"2001:db8:1:ffff::9", 3}, // same /48
		{"2001:db8:2::1", 4},      // another /48
		{"0.0.2.0", 5},            // a /24 that shares its 3 bytes with no IPv6 /48
		{"::2:0:0:0:0:0", 6},      // an IPv6 /48 starting with zero bytes: not confused with 0.0.2.0/24
	}
	for i, s := range steps {
		var a netip.Addr
		if s.addr != "" {
			a = netip.MustParseAddr(s.addr)
		}
		if got := tr.observe("l1", observation{now: t0 + int64(i), source: a}).usage.DistinctNetworks24h; got != s.want {
			t.Errorf("source %q: distinct_networks_24h = %d, want %d", s.addr, got, s.want)
		}
	}
}

// TestUsageDistinctSketch checks the switch from exact counting to the
// hourly HyperLogLog and back, and the sketch's accuracy.
func TestUsageDistinctSketch(t *testing.T) {
	tr := newUsageTracker(0)
	var got int
	for i := range exactDistinct {
		got = tr.observe("l1", observation{now: t0, fingerprint: fmt.Sprint("m", i)}).usage.DistinctFingerprints24h
	}
	if got != exactDistinct {
		t.Fatalf("%d distinct fingerprints counted %d, want exactly %d", exactDistinct, got, exactDistinct)
	}
	// The sketch's hash seed is random, so one estimate is off by more
	// than 3 standard errors about once in 400: the bound is on the mean
	// of five trackers (tr and four more), standard error 13 %/√5 ≈ 6 %,
	// allowed 5 of them (±30 %), which a wrong sketch (off by a factor)
	// cannot meet and a right one misses about once in a million.
	more := make([]*usageTracker, 4)
	for k := range more {
		more[k] = newUsageTracker(0)
		for i := range exactDistinct {
			more[k].observe("l1", observation{now: t0, fingerprint: fmt.Sprint("m", i)})
		}
	}
	for _, n := range []int{100, 1000, 20000} {
		sum := 0
		for k, x := range append([]*usageTracker{tr}, more...) {
			var est int
			for i := exactDistinct; i < n; i++ {
				est = x.observe("l1", observation{now: t0 + 60, fingerprint: fmt.Sprint("m", i)}).usage.DistinctFingerprints24h
			}
			if k == 0 {
				got = est
			}
			sum += est
		}
		mean := float64(sum) / 5
		if lo, hi := float64(n)*0.70, float64(n)*1.30; mean < lo || mean > hi {
			t.Errorf("%d distinct fingerprints estimated %.0f on average, want within ±30 %%", n, mean)
		}
		t.Logf("%d distinct: mean estimate %.0f (%+.1f %%)", n, mean, 100*(mean-float64(n))/float64(n))
	}
	// Repeats do not count.
	before := got
	for i := range 5000 {
		got = tr.observe("l1", observation{now: t0 + 120, fingerprint: fmt.Sprint("m", i)}).usage.DistinctFingerprints24h
	}
	if got != before {
		t.Errorf("repeated fingerprints moved the estimate from %d to %d", before, got)
	}
	// 25 hours later everything has expired: exact counting again.
	if got = tr.observe("l1", observation{now: t0 + 25*3600, fingerprint: "new"}).usage.DistinctFingerprints24h; got != 1 {
		t.Errorf("after 25 idle hours: distinct_fingerprints_24h = %d, want 1", got)
	}
}

// TestUsageEvictionBounded: the tracker never holds more than its bound,
// forgets idle licenses first, and keeps the one it just counted.
func TestUsageEvictionBounded(t *testing.T) {
	tr := newUsageTracker(usageShards * 4) // 4 per shard
	for i := range 1000 {
		tr.observe(fmt.Sprint("old", i), observation{now: t0})
	}
	if n := tr.tracked(); n > usageShards*4 {
		t.Fatalf("tracked %d licenses, bound %d", n, usageShards*4)
	}
	// A day later, new licenses push out idle ones, never themselves.
	for i := range 1000 {
		id := fmt.Sprint("new", i)
		tr.observe(id, observation{now: t0 + 2*distinctTTL})
		if _, ok := tr.snapshot(id, t0+2*distinctTTL); !ok {
			t.Fatalf("%s was evicted as it was counted", id)
		}
	}
	if n := tr.tracked(); n > usageShards*4 {
		t.Fatalf("tracked %d licenses, bound %d", n, usageShards*4)
	}
	old := 0
	for i := range 1000 {
		if _, ok := tr.snapshot(fmt.Sprint("old", i), t0+2*distinctTTL); ok {
			old++
		}
	}
	if old > usageShards*4/2 {
		t.Errorf("%d idle licenses kept while new ones came in", old)
	}
}

// TestUsageEvaluationGate checks when the rules are due (usage.go, due).
func TestUsageEvaluationGate(t *testing.T) {
	tr := newUsageTracker(0)
	o := observation{now: t0, active: true, version: 1}
	var evals []int // validations_per_minute at each evaluation
	for range 700 {
		if ob := tr.observe("l1", o); ob.evaluate {
			evals = append(evals, ob.usage.ValidationsPerMinute)
		}
	}
	// Exact below 256, then every 1/256.
	for i := 1; i <= 256; i++ {
		if evals[i-1] != i {
			t.Fatalf("evaluations = %v…: want every value up to 256", evals[:min(len(evals), 300)])
		}
	}
	for i := 1; i < len(evals); i++ {
		if step := evals[i] - evals[i-1]; step > max(1, evals[i-1]>>evalGrowthShift) {
			t.Errorf("evaluated at %d then %d: a step of %d", evals[i-1], evals[i], step)
		}
	}
	if last := evals[len(evals)-1]; last < 698 {
		t.Errorf("last evaluation at %d of 700", last)
	}
	// Something a rule reads changes: due at once.
	if ob := tr.observe("l1", observation{now: t0, active: true, version: 1, fingerprint: "m1"}); !ob.evaluate {
		t.Error("a new fingerprint: not due")
	}
	if ob := tr.observe("l1", observation{now: t0, active: true, version: 2}); !ob.evaluate {
		t.Error("a changed license: not due")
	}
	if ob := tr.observe("l1", observation{now: t0, active: true, version: 2, outcome: outcomeFailed}); !ob.evaluate {
		t.Error("a failure: not due")
	}
	if ob := tr.observe("l1", observation{now: t0 + evalEvery, active: true, version: 2, outcome: outcomeFailed}); !ob.evaluate {
		t.Error("after evalEvery: not due")
	}
	// Not active, running or quiet: never due.
	if ob := tr.observe("l1", observation{now: t0 + 100, active: false, version: 3}); ob.evaluate {
		t.Error("an inactive license: due")
	}
	if !tr.begin("l1", t0+100) {
		t.Fatal("begin = false")
	}
	if tr.begin("l1", t0+100) {
		t.Error("a second begin while one runs = true")
	}
	if ob := tr.observe("l1", observation{now: t0 + 100, active: true, version: 4}); ob.evaluate {
		t.Error("an attempt running: due")
	}
	tr.end("l1", t0+200)
	if ob := tr.observe("l1", observation{now: t0 + 150, active: true, version: 5}); ob.evaluate {
		t.Error("quiet until +200s: due at +150s")
	}
	if ob := tr.observe("l1", observation{now: t0 + 200, active: true, version: 5}); !ob.evaluate {
		t.Error("quiet until +200s: not due at +200s")
	}
}

// BenchmarkUsageObserve measures the counters' part of a validation.
func BenchmarkUsageObserve(b *testing.B) {
	tr := newUsageTracker(0)
	src := netip.MustParseAddr("192.0.2.7")
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		i := int64(0)
		for pb.Next() {
			i++
			tr.observe("lic_0123456789abcdefghjkmnpqrs", observation{now: t0 + i/100000, source: src, active: true, outcome: outcomeValid})
		}
	})
}

// TestUsageRateQuiet: a bound found by an evaluation keeps a growing rate
// from reopening the gate up to it, and nothing else.
func TestUsageRateQuiet(t *testing.T) {
	tr := newUsageTracker(0)
	o := observation{now: t0, active: true, version: 1}
	ob := tr.observe("l1", o)
	if !ob.evaluate {
		t.Fatal("first validation: not due")
	}
	tr.setRateQuiet("l1", ob.seq, 100)
	for i := 2; i <= 100; i++ {
		if ob := tr.observe("l1", o); ob.evaluate {
			t.Fatalf("evaluated at rate %d below the bound 100", ob.usage.ValidationsPerMinute)
		}
	}
	ob = tr.observe("l1", o)
	if !ob.evaluate || ob.usage.ValidationsPerMinute != 101 {
		t.Fatalf("rate %d above the bound: evaluate = %v", ob.usage.ValidationsPerMinute, ob.evaluate)
	}
	// A bound from an evaluation that is no longer the last is dropped.
	tr.setRateQuiet("l1", ob.seq-1, 1000)
	if ob := tr.observe("l1", o); !ob.evaluate {
		t.Error("a stale bound was applied")
	}
	ob = tr.observe("l1", o)
	tr.setRateQuiet("l1", ob.seq, 1000)
	// Below the bound, every other trigger still opens the gate.
	if ob := tr.observe("l1", observation{now: t0, active: true, version: 1, fingerprint: "m1"}); !ob.evaluate {
		t.Error("a new fingerprint under the bound: not due")
	}
	ob = tr.observe("l1", o)
	tr.setRateQuiet("l1", ob.seq, 1000)
	if ob := tr.observe("l1", observation{now: t0, active: true, version: 2}); !ob.evaluate {
		t.Error("a changed license under the bound: not due")
	}
	ob = tr.observe("l1", observation{now: t0, active: true, version: 2})
	tr.setRateQuiet("l1", ob.seq, 1000)
	if ob := tr.observe("l1", observation{now: t0 + evalEvery, active: true, version: 2}); !ob.evaluate {
		t.Error("after evalEvery under the bound: not due")
	}
}

// TestUsageRateQuietExact: a bound just above the rate of the last
// evaluation reopens the gate right above it, closer than the 1/256 growth
// step: a threshold of 1000 found at a rate of 999 fires at 1001.
func TestUsageRateQuietExact(t *testing.T) {
	tr := newUsageTracker(0)
	o := observation{now: t0, active: true, version: 1}
	for range 998 {
		tr.observe("l1", o)
	}
	o.now += evalEvery // due again by time, at a rate of 999
	ob := tr.observe("l1", o)
	if !ob.evaluate || ob.usage.ValidationsPerMinute != 999 {
		t.Fatalf("rate %d after evalEvery: evaluate = %v, want 999, true", ob.usage.ValidationsPerMinute, ob.evaluate)
	}
	tr.setRateQuiet("l1", ob.seq, 1000)
	if ob := tr.observe("l1", o); ob.evaluate {
		t.Fatalf("evaluated at rate %d, the bound", ob.usage.ValidationsPerMinute)
	}
	if ob := tr.observe("l1", o); !ob.evaluate || ob.usage.ValidationsPerMinute != 1001 {
		t.Fatalf("rate %d above the bound 1000: evaluate = %v", ob.usage.ValidationsPerMinute, ob.evaluate)
	}
}

// TestQuietRate: the bound is the exact threshold of a rule on the rate,
// twice the rate (at least 64 more) far from it, and no bound where a rule
// fails to evaluate.
func TestQuietRate(t *testing.T) {
	p := keyward.DefaultPolicy()
	p.Version = 1
	p.AutoSuspend = []keyward.PolicyRule{
		{Name: "burst", When: "usage.validations_per_minute > 600"},
		{Name: "overflow", When: "usage.validations_per_minute + 9223372036854775000 > 9223372036854775806"}, // errors above 807
	}
	c, err := policy.Compile(p)
	if err != nil {
		t.Fatal(err)
	}
	if !c.AutoSuspendReads().RateMonotone {
		t.Fatal("rules not monotone in the rate")
	}
	l := &policy.License{ID: "l1", State: "active"}
	now := time.Unix(t0, 0)
	for _, tt := range []struct{ rate, want int }{
		{0, 64}, {1, 65}, {100, 200}, {300, 600}, {400, 600}, {599, 600}, {600, 600},
		{700, 700}, // the probe at 1400 fails to evaluate: no bound
	} {
		if got := quietRate(c, l, nil, policy.Usage{ValidationsPerMinute: tt.rate}, now); got != tt.want {
			t.Errorf("quietRate at %d = %d, want %d", tt.rate, got, tt.want)
		}
	}
	// Near the counters' ceiling: the probe stops at maxRate.
	for _, tt := range []struct {
		when       string
		rate, want int
	}{
		{"usage.validations_per_minute > 3932000", 3000000, 3932000},
		{"usage.validations_per_minute > 5000000", 3000000, maxRate},
		{"usage.validations_per_minute > 5000000", maxRate, maxRate},
	} {
		p.AutoSuspend = []keyward.PolicyRule{{Name: "r", When: tt.when}}
		if c, err = policy.Compile(p); err != nil {
			t.Fatal(err)
		}
		if got := quietRate(c, l, nil, policy.Usage{ValidationsPerMinute: tt.rate}, now); got != tt.want {
			t.Errorf("%s: quietRate at %d = %d, want %d", tt.when, tt.rate, got, tt.want)
		}
	}
}
