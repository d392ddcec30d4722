package store

import "context"

// Change describes what transactions committed by another process changed,
// as far as the state a server keeps in memory is concerned: its
// validation cache and opened signing keys, its compiled policies, the
// revocation registry it serves and the webhook dispatcher it runs.
type Change struct {
	// All means anything may have changed: the feed (re)started listening
	// and may have missed notifications, or a change was too large to
	// describe. Drop every cache and reload from the store.
	All bool
	// Disconnected means the feed lost its connection: until the next
	// Change with All set, changes committed by others go unheard, so a
	// consumer MUST NOT serve from caches it cannot invalidate.
	Disconnected bool

	Licenses    []string // licenses whose row or license keys changed
	Rings       []string // signing-key rings whose keys changed
	Policies    []string // products whose policy in force changed
	Products    bool     // products were created
	Revocations bool     // revocation registry rows were appended
	Events      bool     // outbox events were appended
	ResignJobs  bool     // certificate re-sign jobs were started or changed
}

// ChangeFeed is implemented by stores several server processes share
// (PostgreSQL): it tells each process what the others commit, so that
// in-memory state built from the store stays correct. Stores used by a
// single process (SQLite) need not implement it.
type ChangeFeed interface {
	// Listen calls fn with the changes other processes commit, each once,
	// in commit order, until ctx is done; it then returns ctx's error.
	// Changes committed through this store value are not reported (the
	// caller saw them commit). Once it listens, and again after every
	// reconnection, Listen calls fn with All set, so whatever committed
	// before or while it was not listening is covered; when it loses its
	// connection it calls fn with Disconnected set. fn runs on Listen's
	// goroutine, one call at a time, and SHOULD return quickly.
	Listen(ctx context.Context, fn func(Change)) error
}
