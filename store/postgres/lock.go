package postgres

import (
	"context"
	"fmt"
	"sync"
	"time"
)

// TryLock implements store.Locker with a session-level advisory lock
// (pg_try_advisory_lock) on a connection of its own, outside the pool: the
// lock lives exactly as long as that connection. When the process dies,
// its connections close and PostgreSQL releases the lock, so another
// process's next TryLock takes it over.
//
// While the lock is held a watcher pings its connection every
// Options.LockCheck; if a ping fails (the server went away, the backend was
// terminated, the network dropped), the watcher closes the connection,
// which releases the lock if the server still had it, and closes lost. So
// a holder learns of the loss within about LockCheck, and two processes
// never both hold the lock for longer than that. Jobs run under the lock
// SHOULD keep their steps idempotent and write through Update, whose own
// serialization makes a late step by a former holder harmless.
//
// unlock releases the lock and closes its connection; it also closes lost.
// It is safe to call more than once. Close releases every lock the DB
// holds.
func (db *DB) TryLock(ctx context.Context, name string) (lost <-chan struct{}, unlock func(), ok bool, err error) {
	conn, err := db.connect(ctx, "lock "+name)
	if err != nil {
		return nil, nil, false, fmt.Errorf("postgres: lock %s: %w", name, err)
	}
	if err := conn.QueryRow(ctx, `SELECT pg_try_advisory_lock($1)`, db.lockKey("lock:"+name)).Scan(&ok); err != nil || !ok {
		conn.Close(context.WithoutCancel(ctx))
		if err != nil {
			return nil, nil, false, fmt.Errorf("postgres: lock %s: %w", name, err)
		}
		return nil, nil, false, nil
	}
	if !db.background() {
		conn.Close(context.WithoutCancel(ctx))
		return nil, nil, false, fmt.Errorf("postgres: lock %s: store closed", name)
	}
	l := make(chan struct{})
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer db.bg.Done()
		defer close(done)
		defer close(l)
		defer conn.Close(context.Background())
		t := time.NewTicker(db.opts.LockCheck)
		defer t.Stop()
		for {
			select {
			case <-stop:
				uctx, cancel := context.WithTimeout(context.Background(), db.opts.LockCheck)
				_, err := conn.Exec(uctx, `SELECT pg_advisory_unlock($1)`, db.lockKey("lock:"+name))
				cancel()
				if err != nil {
					db.log.Warn("postgres: unlock failed; closing the connection releases the lock", "lock", name, "err", err)
				}
				return
			case <-db.closed:
				return
			case <-t.C:
				pctx, cancel := context.WithTimeout(context.Background(), db.opts.LockCheck)
				err := conn.Ping(pctx)
				cancel()
				if err != nil {
					db.log.Warn("postgres: lost lock: its connection failed", "lock", name, "err", err)
					return
				}
			}
		}
	}()
	var once sync.Once
	unlock = func() {
		once.Do(func() { close(stop) })
		<-done
	}
	return l, unlock, true, nil
}
