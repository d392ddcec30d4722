package webhook

import (
	"math/rand/v2"
	"time"
)

// Backoff decides when a failed delivery is tried again.
type Backoff interface {
	// Retry returns how long to wait after the attempt-th failed attempt
	// (1-based), or false when that was the last attempt.
	Retry(attempt int) (time.Duration, bool)
}

// Schedule is exponential backoff with full jitter: after the n-th failed
// attempt the wait is uniform in [0, Caps[n-1]]; after len(Caps) retries
// (len(Caps)+1 attempts) the delivery fails. Full jitter spreads the
// retries of many deliveries that failed together (a receiver outage)
// instead of sending them back in one burst.
type Schedule struct {
	Caps []time.Duration
	// Rand returns a uniform integer in [0, n); nil = math/rand/v2.Int64N.
	// Tests inject a fixed one.
	Rand func(n int64) int64
}

var _ Backoff = Schedule{}

// DefaultCaps is the default retry schedule: caps growing roughly ×5 from
// 5s to 1h, then doubling to a day. The sum is about 53 hours; with full
// jitter the expected span of all ten attempts is half of that.
func DefaultCaps() []time.Duration {
	return []time.Duration{
		5 * time.Second, 30 * time.Second, 2 * time.Minute, 10 * time.Minute,
		time.Hour, 4 * time.Hour, 8 * time.Hour, 16 * time.Hour, 24 * time.Hour,
	}
}

// DefaultSchedule is Schedule{Caps: DefaultCaps()}.
func DefaultSchedule() Schedule { return Schedule{Caps: DefaultCaps()} }

// Retry implements Backoff.
func (s Schedule) Retry(attempt int) (time.Duration, bool) {
	if attempt < 1 || attempt > len(s.Caps) {
		return 0, false
	}
	limit := int64(s.Caps[attempt-1])
	if limit <= 0 {
		return 0, true
	}
	r := s.Rand
	if r == nil {
		r = rand.Int64N
	}
	return time.Duration(r(limit + 1)), true
}

// MaxAttempts returns how many attempts the schedule allows in all.
func (s Schedule) MaxAttempts() int { return len(s.Caps) + 1 }
