package authority

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"sync"
	"time"

	"golang.org/x/mod/sumdb/tlog"

	"github.com/keyward/keyward"
	"github.com/keyward/keyward/audit"
	"github.com/keyward/keyward/keys"
	"github.com/keyward/keyward/store"
)

// registryAlgorithm is the only algorithm of the registry ring: it signs
// audit checkpoints as signed notes, which know only Ed25519.
const registryAlgorithm = string(keys.Ed25519)

// MaxAuditPage bounds the entries one audit read returns.
const MaxAuditPage = 1000

// AuditOrigin returns the origin line of the server's audit checkpoints,
// which is also the note key name of their signatures: the issuer.
func (a *Authority) AuditOrigin() string { return a.issuer }

// AuditEntries lists audit entries matching f, at most MaxAuditPage.
func (a *Authority) AuditEntries(ctx context.Context, f store.AuditFilter) ([]*keyward.AuditEntry, error) {
	if f.Limit <= 0 || f.Limit > MaxAuditPage {
		f.Limit = MaxAuditPage
	}
	// Stores keep times as int64 nanoseconds (years 1678 to 2262).
	switch {
	case f.Since.After(time.Unix(0, math.MaxInt64)):
		return nil, nil
	case f.Since.Before(time.Unix(0, math.MinInt64)):
		f.Since = time.Time{}
	}
	var out []*keyward.AuditEntry
	err := a.store.View(ctx, func(tx store.Tx) error {
		var err error
		out, err = tx.AuditEntries(f)
		return err
	})
	return out, err
}

// AuditRange returns the entries with from <= seq <= to and the log's
// size; to = 0 means the end of the log, and to is lowered to the log's
// size and to from+MaxAuditPage-1, and returned. Rows missing from the
// store are simply absent: verifiers detect the gap.
func (a *Authority) AuditRange(ctx context.Context, from, to int64) (es []*keyward.AuditEntry, last, size int64, err error) {
	if from < 1 {
		return nil, 0, 0, keyward.Errorf(keyward.EInvalid, "from must be at least 1")
	}
	if to != 0 && to < from {
		return nil, 0, 0, keyward.Errorf(keyward.EInvalid, "to (%d) must not be less than from (%d)", to, from)
	}
	err = a.store.View(ctx, func(tx store.Tx) error {
		var err error
		if size, err = tx.AuditSize(); err != nil {
			return err
		}
		last = to
		if last == 0 || last > size {
			last = size
		}
		last = min(last, from+MaxAuditPage-1)
		if last < from {
			return nil
		}
		all, err := tx.AuditEntries(store.AuditFilter{AfterSeq: from - 1, Limit: int(last - from + 1)})
		for _, e := range all {
			if e.Seq <= last {
				es = append(es, e)
			}
		}
		return err
	})
	return es, last, size, err
}

// Checkpoint returns the stored checkpoint of size entries, or the latest
// one for size 0. ENotFound if there is none.
func (a *Authority) Checkpoint(ctx context.Context, size int64) (*store.Checkpoint, error) {
	if size < 0 {
		return nil, keyward.Errorf(keyward.EInvalid, "size must not be negative")
	}
	var c *store.Checkpoint
	err := a.store.View(ctx, func(tx store.Tx) error {
		var err error
		if size == 0 {
			c, err = tx.LatestCheckpoint()
		} else {
			c, err = tx.CheckpointAt(size)
		}
		return err
	})
	return c, err
}

// InclusionProof returns the leaf hash of entry seq and the RFC 6962 proof
// that the tree of size entries contains it. size 0 means the latest
// checkpoint's size. EInvalid unless 1 <= seq <= size <= the tree's size.
func (a *Authority) InclusionProof(ctx context.Context, seq, size int64) (int64, tlog.Hash, tlog.RecordProof, error) {
	var leaf tlog.Hash
	var proof tlog.RecordProof
	err := a.store.View(ctx, func(tx store.Tx) error {
		var err error
		if size, err = proofSize(tx, size); err != nil {
			return err
		}
		if seq < 1 || seq > size {
			return keyward.Errorf(keyward.EInvalid, "seq %d: want 1 to %d (the tree size)", seq, size)
		}
		hr := audit.HashReader(tx)
		hs, err := hr.ReadHashes([]int64{tlog.StoredHashIndex(0, seq-1)})
		if err != nil {
			return fmt.Errorf("leaf hash %d: %w", seq, err)
		}
		leaf = hs[0]
		if proof, err = tlog.ProveRecord(size, seq-1, hr); err != nil {
			return fmt.Errorf("prove entry %d in %d: %w", seq, size, err)
		}
		return nil
	})
	return size, leaf, proof, err
}

// ConsistencyProof returns the RFC 6962 proof that the tree of newSize
// entries contains the tree of oldSize entries as a prefix. newSize 0
// means the latest checkpoint's size. EInvalid unless 1 <= oldSize <=
// newSize <= the tree's size.
func (a *Authority) ConsistencyProof(ctx context.Context, oldSize, newSize int64) (int64, tlog.TreeProof, error) {
	var proof tlog.TreeProof
	err := a.store.View(ctx, func(tx store.Tx) error {
		var err error
		if newSize, err = proofSize(tx, newSize); err != nil {
			return err
		}
		if oldSize < 1 || oldSize > newSize {
			return keyward.Errorf(keyward.EInvalid, "old size %d: want 1 to %d (the new size)", oldSize, newSize)
		}
		if proof, err = tlog.ProveTree(newSize, oldSize, audit.HashReader(tx)); err != nil {
			return fmt.Errorf("prove %d in %d: %w", oldSize, newSize, err)
		}
		return nil
	})
	return newSize, proof, err
}

// proofSize resolves a requested tree size: 0 is the latest checkpoint's,
// anything else must be within the tree.
func proofSize(tx store.Tx, size int64) (int64, error) {
	n, err := audit.TreeSize(tx)
	if err != nil {
		return 0, err
	}
	switch {
	case size < 0:
		return 0, keyward.Errorf(keyward.EInvalid, "size must not be negative")
	case size == 0:
		c, err := tx.LatestCheckpoint()
		if err != nil {
			return 0, err
		}
		size = c.Size
	}
	if size > n {
		return 0, keyward.Errorf(keyward.EInvalid, "size %d exceeds the tree (%d entries)", size, n)
	}
	return size, nil
}

// Checkpointer signs audit checkpoints with the active registry key: on
// demand (Sign) and in the background (Run). It remembers the last
// checkpoint it signed and never signs one inconsistent with it or with
// the latest stored one (see audit.SignCheckpoint).
type Checkpointer struct {
	a   *Authority
	log *slog.Logger

	mu   sync.Mutex // serializes Sign and guards last
	last *audit.Checkpoint
}

// NewCheckpointer returns a Checkpointer for a; log nil = a's logger.
func NewCheckpointer(a *Authority, log *slog.Logger) *Checkpointer {
	if log == nil {
		log = a.log
	}
	return &Checkpointer{a: a, log: log}
}

// Sign signs a checkpoint of the whole log if it grew since the latest
// one, and returns the latest checkpoint and whether it is new. An empty
// log has none: nil, false, nil. A refusal because the stored log
// contradicts itself is an *audit.TamperError.
func (c *Checkpointer) Sign(ctx context.Context) (*store.Checkpoint, bool, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out *store.Checkpoint
	var signed bool
	err := c.a.store.Update(ctx, func(tx store.Tx) error {
		s, err := c.a.activeSigner(tx, keyward.RegistryRing)
		if err != nil {
			return err
		}
		k, err := tx.Key(s.KID())
		if err != nil {
			return err
		}
		pub, err := keys.ParsePublic(k.PublicKey)
		if err != nil {
			return fmt.Errorf("registry key %s: %w", k.KID, err)
		}
		out, signed, err = audit.SignCheckpoint(tx, audit.SignRequest{
			Origin: c.a.AuditOrigin(), Signer: s, Public: pub, Now: c.a.clock.Now(), Last: c.last,
		})
		return err
	})
	if err != nil {
		return nil, false, fmt.Errorf("sign audit checkpoint: %w", err)
	}
	if out != nil {
		c.last = &audit.Checkpoint{Origin: c.a.AuditOrigin(), Size: out.Size, Root: out.Root, KID: out.KID}
	}
	return out, signed, nil
}

// DefaultCheckpointInterval is how often the background signer looks for
// new entries. Entries wait at most this long for a checkpoint.
const DefaultCheckpointInterval = 10 * time.Second

// Run signs a checkpoint at once and then every interval (0 = the
// default) while the log grows, until ctx is done. A failure is logged,
// at error level, and retried at the next tick; a tamper refusal stays
// until someone repairs the store.
func (c *Checkpointer) Run(ctx context.Context, interval time.Duration) {
	if interval <= 0 {
		interval = DefaultCheckpointInterval
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	var lastErr string
	for {
		// Without new entries (and no failure to retry), no write
		// transaction.
		if lastErr != "" || c.grew(ctx) {
			lastErr = c.tick(ctx, lastErr)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// tick signs once, logging a failure when it differs from the previous
// one (lastErr) and a recovery; it returns the failure or "".
func (c *Checkpointer) tick(ctx context.Context, lastErr string) string {
	cp, signed, err := c.Sign(ctx)
	if err != nil {
		if ctx.Err() != nil {
			return lastErr
		}
		if msg := err.Error(); msg != lastErr {
			var te *audit.TamperError
			c.log.Error("audit checkpoint refused", "err", err, "tampered", errors.As(err, &te))
			return msg
		}
		return lastErr
	}
	if lastErr != "" {
		c.log.Info("audit checkpoints resumed")
	}
	if signed {
		c.log.Debug("audit checkpoint signed", "size", cp.Size, "kid", cp.KID)
	}
	return ""
}

// grew reports whether the log has entries the last checkpoint this
// Checkpointer signed does not cover (true if it cannot tell).
func (c *Checkpointer) grew(ctx context.Context) bool {
	c.mu.Lock()
	last := c.last
	c.mu.Unlock()
	if last == nil {
		return true
	}
	var size int64
	err := c.a.store.View(ctx, func(tx store.Tx) error {
		var err error
		size, err = tx.AuditSize()
		return err
	})
	return err != nil || size != last.Size
}
