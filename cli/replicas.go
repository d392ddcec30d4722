package cli

import (
	"context"
	"log/slog"

	"github.com/keyward/keyward/authority"
	"github.com/keyward/keyward/revocation"
	"github.com/keyward/keyward/store"
)

// followReplicas makes what other servers sharing the store commit reach
// this one (docs/postgres.md): the authority's caches and compiled
// policies (ApplyRemote), the revocation registry and its push streams,
// the webhook dispatcher and the lifecycle scheduler (their wake
// channels). Until the feed first listens the validation cache is
// bypassed, since changes committed meanwhile go unheard. It returns the
// function that stops following and a channel closed when it stopped.
func followReplicas(ctx context.Context, feed store.ChangeFeed, log *slog.Logger, auth *authority.Authority, reg *revocation.Registry,
	webhooks, scheduler chan<- struct{}) (stop context.CancelFunc, done chan struct{}) {
	fctx, stop := context.WithCancel(context.WithoutCancel(ctx))
	done = make(chan struct{})
	_ = auth.ApplyRemote(fctx, store.Change{Disconnected: true})
	wake := func(ch chan<- struct{}) {
		select {
		case ch <- struct{}{}:
		default:
		}
	}
	go func() {
		defer close(done)
		_ = feed.Listen(fctx, func(c store.Change) {
			if c.Disconnected {
				log.Warn("not hearing other replicas' changes: validations bypass the cache until the change feed reconnects")
			}
			if err := auth.ApplyRemote(fctx, c); err != nil && fctx.Err() == nil {
				log.Error("applying another replica's change", "err", err)
			}
			if c.All || c.Revocations {
				reg.Notify()
			}
			if c.All || c.Events {
				wake(webhooks)
			}
			if c.All || c.ResignJobs {
				wake(scheduler)
			}
		})
	}()
	return stop, done
}
