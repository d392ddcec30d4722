package authority

import (
	"cmp"
	"context"
	"slices"
	"sync"
	"time"

	"github.com/keyward/keyward"
	"github.com/keyward/keyward/store"
)

// Last-seen times (a license's last_validated_at, a machine's last_seen_at)
// are bookkeeping, not state: validation records them in memory and
// FlushTouches writes them in batches, so the hot path never waits for the
// single writer. They may lag the truth by 1.5 flush intervals (see
// RunTouchFlusher; and are lost for at most that long if the process dies);
// the retire rules that read them flush first (SweepLicenses).
//
// A license's last-seen time is recorded once per touchEvery at most
// (through its validation cache entry, see touch): the first validation
// after a minute without one is recorded, the ones following within the
// minute are not, so a stored last_validated_at is never more than
// touchEvery older than the last validation (plus the flush lag). With
// 20 000 licenses each validated every second this writes 20 000 rows a
// minute instead of 20 000 every flush interval; with licenses validated
// less often than once a minute it changes nothing.
const touchEvery = time.Minute

// touch reports whether a validation at now records the license's
// last-seen time: none recorded through this entry yet, or the last one
// touchEvery or more before now (or after it: a clock that went back).
func (e *cacheEntry) touch(now time.Time) bool {
	n := now.UnixNano()
	last := e.touched.Load()
	if last != 0 && n >= last && n-last < int64(touchEvery) {
		return false
	}
	return e.touched.CompareAndSwap(last, n) // lost: a concurrent validation records it
}

// touchBuffer holds the latest unflushed last-seen time per license and
// per machine.
type touchBuffer struct {
	mu       sync.Mutex
	licenses map[string]time.Time
	machines map[string]time.Time
	taken    time.Time // when take last ran (the machine's clock: it paces RunTouchFlusher)
}

func (b *touchBuffer) license(id string, t time.Time) { b.put(&b.licenses, id, t) }
func (b *touchBuffer) machine(id string, t time.Time) { b.put(&b.machines, id, t) }

func (b *touchBuffer) put(m *map[string]time.Time, id string, t time.Time) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if *m == nil {
		*m = map[string]time.Time{}
	}
	if cur, ok := (*m)[id]; !ok || t.After(cur) {
		(*m)[id] = t
	}
}

// take empties the buffer and returns what it held.
func (b *touchBuffer) take() (licenses, machines map[string]time.Time) {
	b.mu.Lock()
	defer b.mu.Unlock()
	licenses, machines = b.licenses, b.machines
	b.licenses, b.machines = nil, nil
	b.taken = time.Now()
	return licenses, machines
}

// sinceTake is how long ago take last ran (long if never).
func (b *touchBuffer) sinceTake() time.Duration {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.taken.IsZero() {
		return time.Duration(1<<63 - 1)
	}
	return time.Since(b.taken)
}

// touchBatch bounds the writes of one flush transaction.
const touchBatch = 5000

// FlushTouches writes the buffered last-seen times, touchBatch per
// transaction, and returns how many it wrote. Rows that no longer exist (a
// deactivated machine) are skipped.
func (a *Authority) FlushTouches(ctx context.Context) (int, error) {
	licenses, machines := a.touches.take()
	type touch struct {
		license bool
		id      string
		at      time.Time
	}
	all := make([]touch, 0, len(licenses)+len(machines))
	for id, t := range licenses {
		all = append(all, touch{true, id, t})
	}
	for id, t := range machines {
		all = append(all, touch{false, id, t})
	}
	// In key order, so a flush visits each table page once, in order: with
	// a million licenses, 20 000 hot ones are spread over most pages.
	slices.SortFunc(all, func(x, y touch) int {
		if x.license != y.license {
			return cmp.Compare(btoi(y.license), btoi(x.license))
		}
		return cmp.Compare(x.id, y.id)
	})
	n := 0
	for len(all) > 0 {
		batch := all[:min(touchBatch, len(all))]
		err := a.store.Update(ctx, func(tx store.Tx) error {
			for _, t := range batch {
				var err error
				if t.license {
					err = tx.TouchLicense(t.id, t.at)
				} else {
					err = tx.TouchMachine(t.id, t.at)
				}
				if err != nil && keyward.ErrorCode(err) != keyward.ENotFound {
					return err
				}
			}
			return nil
		})
		if err != nil {
			return n, err
		}
		n += len(batch)
		all = all[len(batch):]
	}
	return n, nil
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}

// RunTouchFlusher flushes last-seen times every interval until ctx is done,
// then once more. A tick skips the flush when another flush ran less than
// half an interval before: the scheduler's license sweep flushes first
// too, at its own tick (10 s by default, like this interval), and with
// both every hot license was written twice per interval (with 20 000
// licenses validated all the time, 40 000 row updates per 10 s). Times
// therefore lag by at most 1.5 intervals.
func (a *Authority) RunTouchFlusher(ctx context.Context, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			fctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			if _, err := a.FlushTouches(fctx); err != nil {
				a.log.Warn("flush last-seen times at shutdown", "err", err)
			}
			cancel()
			return
		case <-t.C:
			if a.touches.sinceTake() < every/2 {
				continue
			}
			if _, err := a.FlushTouches(ctx); err != nil && ctx.Err() == nil {
				a.log.Warn("flush last-seen times", "err", err)
			}
		}
	}
}
