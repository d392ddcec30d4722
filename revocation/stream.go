package revocation

import (
	"context"
	"sort"

	"github.com/keyward/keyward"
)

// Subscription follows one view of the registry from a starting seq. Its
// events are signed deltas that chain: the first has from_seq = the
// starting seq, each next one from_seq = the previous to_seq, and together
// they list every view row after the start, in order. A Subscription is
// used by one goroutine.
type Subscription struct {
	r       *Registry
	view    View
	last    int64 // from_seq of the next event: rows of the view <= last were sent (or precede the start)
	scanned int64 // rows <= scanned have been looked at
	closed  bool
}

// Event is one push event: a signed delta (ID = its to_seq).
type Event struct {
	ID      int64
	FromSeq int64
	Token   string
}

// Subscribe starts a subscription to v after seq `after`: every view row
// with a greater seq will be delivered. after < 0 means "from now": the
// view's current seq. An after ahead of every committed row is
// keyward.EInvalid; more than Config.MaxSubscribers subscriptions is
// keyward.EUnavailable. Close the subscription when done.
func (r *Registry) Subscribe(ctx context.Context, v View, after int64) (*Subscription, error) {
	if !r.running() {
		return nil, notStarted()
	}
	r.mu.RLock()
	cursor, head := r.cursor, r.viewHead(v.ProductID)
	r.mu.RUnlock()
	switch {
	case after < 0:
		after = head
	case after > cursor:
		storeHead, err := r.src.RevocationHead(ctx)
		if err != nil {
			return nil, err
		}
		if after > storeHead {
			return nil, keyward.Errorf(keyward.EInvalid, "resume point %d is ahead of the registry (newest seq %d)", after, storeHead)
		}
	}
	if n := r.subs.Add(1); n > int64(r.cfg.MaxSubscribers) {
		r.subs.Add(-1)
		return nil, keyward.Errorf(keyward.EUnavailable, "too many revocation subscribers (%d); retry later or poll deltas", r.cfg.MaxSubscribers)
	}
	return &Subscription{r: r, view: v, last: after, scanned: after}, nil
}

// Subscribers returns the number of open subscriptions.
func (r *Registry) Subscribers() int { return int(r.subs.Load()) }

// Close ends the subscription.
func (s *Subscription) Close() {
	if !s.closed {
		s.closed = true
		s.r.subs.Add(-1)
	}
}

// Seq returns the seq the subscriber is known to be current to: the last
// event's to_seq, or the starting point.
func (s *Subscription) Seq() int64 { return s.last }

// Ready returns a channel closed when new rows may have arrived. Take it
// before calling Next, so no arrival between the two is missed.
func (s *Subscription) Ready() <-chan struct{} {
	s.r.mu.RLock()
	defer s.r.mu.RUnlock()
	return s.r.changed
}

// Done returns a channel closed when the registry shuts down.
func (s *Subscription) Done() <-chan struct{} { return s.r.stop }

// Next returns the next event: a signed delta of up to MaxEventRows view
// rows after the subscription's position. ok is false when there is none
// yet (wait on Ready).
func (s *Subscription) Next(ctx context.Context) (ev Event, ok bool, err error) {
	rows, scanned, err := s.r.rowsAfter(ctx, s.view.ProductID, s.scanned, MaxEventRows)
	if err != nil {
		return Event{}, false, err
	}
	s.scanned = scanned
	if len(rows) == 0 {
		return Event{}, false, nil
	}
	to := rows[len(rows)-1].Seq
	tok, err := s.r.eventToken(ctx, s.view, s.last, to, rows)
	if err != nil {
		return Event{}, false, err
	}
	ev = Event{ID: to, FromSeq: s.last, Token: tok}
	s.last = to
	return ev, true, nil
}

// rowsAfter returns up to limit rows of view with seq > after, and the seq
// up to which rows have been looked at. Recent rows come from the window,
// older ones from the store.
func (r *Registry) rowsAfter(ctx context.Context, view string, after int64, limit int) ([]*keyward.Revocation, int64, error) {
	r.mu.RLock()
	if after >= r.base {
		i := sort.Search(len(r.window), func(i int) bool { return r.window[i].Seq > after })
		var out []*keyward.Revocation
		for ; i < len(r.window); i++ {
			if inView(view, r.window[i]) {
				out = append(out, r.window[i])
				if len(out) == limit {
					r.mu.RUnlock()
					return out, out[len(out)-1].Seq, nil
				}
			}
		}
		scanned := max(after, r.cursor)
		r.mu.RUnlock()
		return out, scanned, nil
	}
	cursor := r.cursor
	r.mu.RUnlock()
	rows, err := r.src.RevocationRows(ctx, view, after, limit)
	if err != nil {
		return nil, after, err
	}
	if len(rows) == limit {
		return rows, rows[len(rows)-1].Seq, nil
	}
	scanned := max(after, cursor)
	if len(rows) > 0 {
		scanned = max(scanned, rows[len(rows)-1].Seq)
	}
	return rows, scanned, nil
}

// sigKey names one push event: every subscriber of a view at the same
// position gets the same signed delta, signed once.
type sigKey struct {
	view     string
	from, to int64
}

type sigEntry struct {
	done chan struct{}
	doc  *Document
	err  error
}

const maxSigs = 8192

func (r *Registry) eventToken(ctx context.Context, v View, from, to int64, rows []*keyward.Revocation) (string, error) {
	k := sigKey{v.ProductID, from, to}
	now := r.cfg.Clock.Now()
	r.sigMu.Lock()
	e, ok := r.sigs[k]
	if ok {
		select {
		case <-e.done:
			if e.err != nil || !r.fresh(e.doc, now) {
				ok = false // failed, or too old to extend anyone's freshness: sign anew
			}
		default:
		}
	}
	if !ok {
		if len(r.sigs) >= maxSigs {
			r.mu.RLock()
			base := r.base
			r.mu.RUnlock()
			for kk := range r.sigs {
				if kk.to <= base {
					delete(r.sigs, kk)
				}
			}
			if len(r.sigs) >= maxSigs {
				clear(r.sigs)
			}
		}
		e = &sigEntry{done: make(chan struct{})}
		r.sigs[k] = e
	}
	r.sigMu.Unlock()
	if ok {
		select {
		case <-e.done:
		case <-ctx.Done():
			return "", ctx.Err()
		}
		if e.err == nil {
			return e.doc.Token, nil
		}
		// The first signer failed: try ourselves.
		d, err := r.signDelta(ctx, v, from, to, rows, now)
		if err != nil {
			return "", err
		}
		return d.Token, nil
	}
	d, err := r.signDelta(ctx, v, from, to, rows, now)
	e.doc, e.err = d, err
	close(e.done)
	if err != nil {
		return "", err
	}
	return d.Token, nil
}
