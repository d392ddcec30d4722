package postgres

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/keyward/keyward/store"
)

// Reconnection backoff of Listen.
const (
	minReconnect = 100 * time.Millisecond
	maxReconnect = 5 * time.Second
)

// Listen implements store.ChangeFeed with LISTEN on the store's channel
// (Channel), on a dedicated connection. Every Update that changed
// something others keep in memory sends, before it commits, one or more
// notifications on that channel; PostgreSQL delivers them after the commit,
// in commit order, and drops them if the transaction rolls back.
//
// Listen calls fn with All set once it listens, and again after every
// reconnection (notifications sent while it was not listening are lost, so
// the consumer reloads); it calls fn with Disconnected set as soon as it
// notices the connection is gone: at once when the server closes it, within
// Options.ListenCheck (it pings when idle) when the network silently drops
// it. It reconnects with a backoff of 100ms doubling to 5s, and returns
// ctx's error when ctx is done or nil when the DB is closed.
func (db *DB) Listen(ctx context.Context, fn func(store.Change)) error {
	if !db.background() {
		return nil
	}
	defer db.bg.Done()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		select {
		case <-db.closed:
			cancel()
		case <-ctx.Done():
		}
	}()
	wait := minReconnect
	for {
		heard, err := db.listenOnce(ctx, fn)
		if ctx.Err() != nil {
			select {
			case <-db.closed:
				return nil
			default:
				return ctx.Err()
			}
		}
		if heard {
			wait = minReconnect
		}
		db.log.Warn("postgres: change feed lost its connection; reconnecting", "err", err, "retry_in", wait)
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			continue
		case <-t.C:
		}
		wait = min(2*wait, maxReconnect)
	}
}

// listenOnce connects, listens and delivers notifications until the
// connection fails or ctx ends. heard reports that it got as far as
// listening (so the next failure starts a fresh backoff).
func (db *DB) listenOnce(ctx context.Context, fn func(store.Change)) (heard bool, err error) {
	conn, err := db.connect(ctx, "listen")
	if err != nil {
		return false, fmt.Errorf("connect: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	db.listenPID.Store(conn.PgConn().PID())
	defer db.listenPID.Store(0)
	if _, err := conn.Exec(ctx, "LISTEN "+pgx.Identifier{db.channel}.Sanitize()); err != nil {
		return false, fmt.Errorf("listen: %w", err)
	}
	// Listening from here on: whatever committed before is covered by a
	// reload.
	fn(store.Change{All: true})
	defer func() {
		if ctx.Err() == nil {
			fn(store.Change{Disconnected: true})
		}
	}()
	for {
		wctx, cancel := context.WithTimeout(ctx, db.opts.ListenCheck)
		n, err := conn.WaitForNotification(wctx)
		cancel()
		if err != nil {
			if ctx.Err() != nil {
				return true, ctx.Err()
			}
			if !pgconn.Timeout(err) && !errors.Is(err, context.DeadlineExceeded) {
				return true, err
			}
			// Idle: make sure the connection is still there.
			pctx, cancel := context.WithTimeout(ctx, db.opts.ListenCheck)
			err = conn.Ping(pctx)
			cancel()
			if err != nil {
				return true, fmt.Errorf("ping: %w", err)
			}
			continue
		}
		c, origin, err := decode(n.Payload)
		if err != nil {
			// Not ours to understand (someone else NOTIFYing on the
			// channel): reload rather than guess.
			db.log.Warn("postgres: change feed: unreadable notification", "err", err)
			fn(store.Change{All: true})
			continue
		}
		if origin == db.origin {
			continue
		}
		fn(c)
	}
}
