package webhook_test

import (
	"testing"
	"time"

	"github.com/keyward/keyward/webhook"
)

func TestDefaultScheduleGrows(t *testing.T) {
	caps := webhook.DefaultCaps()
	if caps[0] != 5*time.Second || len(caps) < 8 {
		t.Fatalf("DefaultCaps() = %v, want to start at 5s with at least 8 retries", caps)
	}
	var sum time.Duration
	for i := 1; i < len(caps); i++ {
		if caps[i] <= caps[i-1] && caps[i] != caps[len(caps)-1] {
			t.Fatalf("DefaultCaps() = %v: not increasing at %d", caps, i)
		}
		sum += caps[i]
	}
	if sum < 24*time.Hour {
		t.Fatalf("DefaultCaps() spans %s, want retries over more than a day", sum)
	}
	if n := webhook.DefaultSchedule().MaxAttempts(); n != len(caps)+1 {
		t.Fatalf("MaxAttempts() = %d, want %d", n, len(caps)+1)
	}
}

func TestScheduleFullJitter(t *testing.T) {
	s := webhook.DefaultSchedule()
	for attempt := 1; attempt <= len(s.Caps); attempt++ {
		limit := s.Caps[attempt-1]
		var lo, hi time.Duration = limit, 0
		for range 2000 {
			d, ok := s.Retry(attempt)
			if !ok || d < 0 || d > limit {
				t.Fatalf("Retry(%d) = %s, %v; want within [0, %s]", attempt, d, ok, limit)
			}
			lo, hi = min(lo, d), max(hi, d)
		}
		// Full jitter: the draws cover the whole range, not a band near the cap.
		if lo > limit/10 || hi < limit*9/10 {
			t.Fatalf("Retry(%d) over 2000 draws ranged %s..%s, want close to 0..%s", attempt, lo, hi, limit)
		}
	}
	if d, ok := s.Retry(len(s.Caps) + 1); ok {
		t.Fatalf("Retry(after the last cap) = %s, true; want no more attempts", d)
	}
	if _, ok := s.Retry(0); ok {
		t.Fatalf("Retry(0) = true, want false")
	}
}

func TestScheduleInjectedRand(t *testing.T) {
	top := webhook.Schedule{Caps: []time.Duration{time.Second, time.Minute}, Rand: func(n int64) int64 { return n - 1 }}
	if d, _ := top.Retry(2); d != time.Minute {
		t.Fatalf("Retry(2) with the top draw = %s, want the cap 1m", d)
	}
	bottom := webhook.Schedule{Caps: []time.Duration{time.Second}, Rand: func(n int64) int64 { return 0 }}
	if d, _ := bottom.Retry(1); d != 0 {
		t.Fatalf("Retry(1) with the bottom draw = %s, want 0", d)
	}
}
