package store

import (
	"context"

	"github.com/keyward/keyward"
)

// RevocationFilter selects revocation registry rows, ordered by seq.
type RevocationFilter struct {
	// ProductID, if non-empty, keeps the rows of that product and the rows
	// without a product (registry keys), which concern every product.
	ProductID string
	AfterSeq  int64 // only rows with a greater seq
	Limit     int   // 0 = no limit
}

// RevocationTx is the part of Tx for the revocation registry: an
// append-only table that is also the outbox of the revocation push
// channel.
type RevocationTx interface {
	// AppendRevocation assigns r.Seq and stores r. Seqs increase in commit
	// order and a committed seq is never reused: a reader that has seen seq
	// n never later sees a new row with a seq <= n (SQLite serialises
	// writers; a store with concurrent writers MUST assign seq under a lock
	// held until commit). Kind must be keyward.RevocationLicense or
	// keyward.RevocationKey, Subject and State non-empty (else EInvalid).
	AppendRevocation(r *keyward.Revocation) error
	// Revocations returns the rows matching f ordered by seq.
	Revocations(f RevocationFilter) ([]*keyward.Revocation, error)
	// RevocationHead returns the highest seq stored, 0 when there is none.
	RevocationHead() (int64, error)
}

// NotifyRevocations returns s with one change: after an Update whose
// transaction appended a revocation row commits, it calls notify. notify
// MUST NOT block; it runs on the caller's goroutine. The revocation hub
// uses it to push a change as soon as it commits instead of at its next
// poll.
func NotifyRevocations(s Store, notify func()) Store {
	return notifyingStore{Store: s, notify: notify}
}

type notifyingStore struct {
	Store
	notify func()
}

func (s notifyingStore) Update(ctx context.Context, fn func(tx Tx) error) error {
	var wrote bool
	err := s.Store.Update(ctx, func(tx Tx) error { return fn(notifyingTx{Tx: tx, wrote: &wrote}) })
	if err == nil && wrote {
		s.notify()
	}
	return err
}

type notifyingTx struct {
	Tx
	wrote *bool
}

func (t notifyingTx) AppendRevocation(r *keyward.Revocation) error {
	err := t.Tx.AppendRevocation(r)
	if err == nil {
		*t.wrote = true
	}
	return err
}
