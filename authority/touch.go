package authority

import (
	"context"
	"sync"
	"time"

	"github.com/keyward/keyward"
	"github.com/keyward/keyward/store"
)

// Last-seen times (a license's last_validated_at, a machine's last_seen_at)
// are bookkeeping, not state: validation records them in memory and
// FlushTouches writes them in batches, so the hot path never waits for the
// single writer. They may lag the truth by the flush interval (and are lost
// for at most that long if the process dies); the retire rule that reads
// them ("inactive for 180 days") does not care.

// touchBuffer holds the latest unflushed last-seen time per license and
// per machine.
type touchBuffer struct {
	mu       sync.Mutex
	licenses map[string]time.Time
	machines map[string]time.Time
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
	return licenses, machines
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

// RunTouchFlusher flushes last-seen times every interval until ctx is done,
// then once more.
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
			if _, err := a.FlushTouches(ctx); err != nil && ctx.Err() == nil {
				a.log.Warn("flush last-seen times", "err", err)
			}
		}
	}
}
