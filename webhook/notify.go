package webhook

import (
	"context"

	"github.com/keyward/keyward"
	"github.com/keyward/keyward/store"
)

// WakeOnEvents returns s wrapped so that every Update that appended an
// outbox event sends on wake after it commits, without blocking (give wake
// a buffer of one: wake-ups coalesce). Views, and Updates that wrote no
// event (a validation touching last_validated_at), wake nothing. Hand the
// wrapped store to the authority and the plain one to the Dispatcher.
func WakeOnEvents(s store.Store, wake chan<- struct{}) store.Store {
	return wakingStore{Store: s, wake: wake}
}

type wakingStore struct {
	store.Store
	wake chan<- struct{}
}

func (w wakingStore) Update(ctx context.Context, fn func(tx store.Tx) error) error {
	var appended bool
	err := w.Store.Update(ctx, func(tx store.Tx) error {
		appended = false // a store may run fn again after a serialization failure
		return fn(eventTx{Tx: tx, appended: &appended})
	})
	if err == nil && appended {
		select {
		case w.wake <- struct{}{}:
		default:
		}
	}
	return err
}

// eventTx notes whether an event was appended.
type eventTx struct {
	store.Tx
	appended *bool
}

func (t eventTx) AppendEvent(e *keyward.Event) error {
	err := t.Tx.AppendEvent(e)
	if err == nil {
		*t.appended = true
	}
	return err
}

func (t eventTx) AppendEvents(es []*keyward.Event) error {
	err := t.Tx.AppendEvents(es)
	if err == nil && len(es) > 0 {
		*t.appended = true
	}
	return err
}
