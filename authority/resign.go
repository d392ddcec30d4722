package authority

import (
	"context"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/keyward/keyward"
	"github.com/keyward/keyward/keys"
	"github.com/keyward/keyward/store"
)

// Bulk re-signing (docs/lifecycle.md): every license's current
// certificate (the last one checked out, stored by Checkout) says which key
// signed it. When a license key stops signing — retired by a rotation or a
// rollback, or compromised — a re-sign job for it starts in the same
// transaction. The job re-signs, with the ring's active key, the current
// certificates that key signed which are still live, for active licenses,
// in batches: each batch is one transaction that writes the new
// certificates, advances the job's cursor (the last license id handled),
// records the batch's step and its audit entry, so an interrupted batch
// runs again from the last committed cursor and a committed one never
// runs twice.
//
// A re-signed certificate is the same certificate under the active key:
// the payload is kept byte for byte (jti, iat, exp, entitlements, policy
// version) and only the header (alg, kid) and the signature change
// (keys.ResignJWS). Re-signing vouches again for exactly what was issued:
// it never extends or changes what a holder may do offline, and it needs
// nothing but the stored certificate, which keeps a batch to one read and
// one write per certificate. Certificates of licenses that are not active,
// or past their expiry, are skipped (nothing is signed for them). Leases
// are not tracked: they live leaseTTL (minutes) and the next renewal is
// signed by the active key.

// DefaultResignBatch is how many certificates one re-sign batch handles.
// A batch holds the store's single writer while it signs (about 50 ms for
// 1 000 on two cores); 1 000 rather than 500 spreads each batch's serial
// start and commit over twice the certificates (docs/benchmarks.md, "Bulk
// re-sign").
const DefaultResignBatch = 1000

// Re-sign reasons.
const (
	ResignRetired     = "retired"
	ResignCompromised = "compromised"
)

// startResign starts (or, for a key compromised during its job, upgrades)
// the re-sign job of k, which just stopped signing. Registry keys sign no
// certificates and get none.
func (a *Authority) startResign(ctx context.Context, tx store.Tx, now time.Time, k *keyward.SigningKey) error {
	if k.Purpose != keyward.PurposeLicense {
		return nil
	}
	reason := ResignRetired
	if k.State == keyward.KeyCompromised {
		reason = ResignCompromised
	}
	j, err := tx.ResignJob(k.KID)
	switch {
	case err == nil && j.State == store.ResignRunning:
		if j.Reason == reason {
			return nil
		}
		j.Reason, j.UpdatedAt = reason, now // retired, then compromised: the job goes on, now for a compromise
		if err := tx.PutResignJob(j); err != nil {
			return err
		}
		return a.record(ctx, tx, now, change{
			action: "key.resign_start", event: "key.resign_started", targetType: "key", targetID: k.KID,
			before: store.ResignRunning, after: store.ResignRunning, reason: "key compromised while its certificates were being re-signed",
			details: resignDetails(j),
		})
	case err == nil:
	case keyward.ErrorCode(err) == keyward.ENotFound:
		j = &store.ResignJob{KID: k.KID, ProductID: k.ProductID, CreatedAt: now}
	default:
		return err
	}
	total, err := tx.CountCertificates(store.CertificateFilter{KID: k.KID, LiveAt: now, ActiveOnly: true})
	if err != nil {
		return err
	}
	before := j.State
	j.Reason, j.State, j.Runs, j.Total, j.Done, j.Skipped, j.Cursor = reason, store.ResignRunning, j.Runs+1, total, 0, 0, ""
	j.UpdatedAt, j.FinishedAt = now, nil
	if err := tx.PutResignJob(j); err != nil {
		return err
	}
	return a.record(ctx, tx, now, change{
		action: "key.resign_start", event: "key.resign_started", targetType: "key", targetID: k.KID,
		before: before, after: store.ResignRunning,
		reason: fmt.Sprintf("key %s: re-sign %d live certificates with the active key", reason, total), details: resignDetails(j),
	})
}

func resignDetails(j *store.ResignJob) map[string]any {
	return map[string]any{
		"product_id": j.ProductID, "reason": j.Reason, "run": j.Runs, "total": j.Total, "done": j.Done,
		"skipped": j.Skipped, "cursor": j.Cursor,
	}
}

// ResignProgress is one batch's outcome.
type ResignProgress struct {
	Job      *store.ResignJob
	Resigned int  // certificates re-signed by this batch
	Finished bool // the job ended with this batch
}

// ResignBatch runs one batch of the oldest running re-sign job: at most
// limit certificates (0 = DefaultResignBatch). It returns nil when no job
// is running. A job whose key is active again (rollback) is cancelled.
func (a *Authority) ResignBatch(ctx context.Context, limit int) (*ResignProgress, error) {
	if limit <= 0 {
		limit = DefaultResignBatch
	}
	ctx = keyward.NewContextWithPrincipal(ctx, schedulerPrincipal)
	var out *ResignProgress
	err := a.store.Update(ctx, func(tx store.Tx) error {
		out = nil
		jobs, err := tx.ResignJobs(store.ResignRunning)
		if err != nil || len(jobs) == 0 {
			return err
		}
		out, err = a.resignBatch(ctx, tx, a.clock.Now(), jobs[0], limit)
		return err
	})
	return out, err
}

// resignBatch re-signs the next batch of job j.
func (a *Authority) resignBatch(ctx context.Context, tx store.Tx, now time.Time, j *store.ResignJob, limit int) (*ResignProgress, error) {
	stepKey := fmt.Sprintf("resign:%s:%d:%s", j.KID, j.Runs, j.Cursor)
	if _, err := tx.Step(stepKey); err == nil {
		return nil, fmt.Errorf("re-sign job %s: batch %s already ran but the job did not move", j.KID, stepKey)
	} else if keyward.ErrorCode(err) != keyward.ENotFound {
		return nil, err
	}
	k, err := tx.Key(j.KID)
	if err != nil {
		return nil, err
	}
	if k.State == keyward.KeyActive {
		return a.finishResign(ctx, tx, now, j, store.ResignCancelled, "the key is active again", 0)
	}
	signer, err := a.activeSigner(tx, keyward.LicenseRing(j.ProductID))
	if err != nil {
		return nil, err
	}
	// The batch's records are written as soon as its candidates are read,
	// while the last chunks are still being signed: a certificate that
	// fails to sign or write fails the whole transaction, records included.
	var out *ResignProgress
	err = a.resignPipeline(tx, signer, j.KID, now, j.Cursor, limit, func(r *resignResult) error {
		var err error
		out, err = a.recordResignBatch(ctx, tx, now, j, stepKey, signer.KID(), limit, r)
		return err
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// recordResignBatch advances job j past the candidates r read, records the
// batch's step, its audit entry and event, and ends the job if r read
// fewer than limit.
func (a *Authority) recordResignBatch(ctx context.Context, tx store.Tx, now time.Time, j *store.ResignJob, stepKey, signedBy string, limit int, r *resignResult) (*ResignProgress, error) {
	if r.last != "" {
		j.Cursor = r.last
	}
	j.Done += len(r.licenses)
	j.Skipped += r.skipped
	j.UpdatedAt = now
	if err := tx.RecordStep(&store.Step{Key: stepKey, Kind: "resign", Target: j.KID, DoneAt: now}); err != nil {
		return nil, err
	}
	if len(r.licenses) > 0 || r.skipped > 0 {
		d := resignDetails(j)
		d["licenses"], d["signed_by"], d["batch_skipped"] = r.licenses, signedBy, r.skipped
		if err := a.record(ctx, tx, now, change{
			action: "key.resign_batch", event: "key.resign_progress", targetType: "key", targetID: j.KID,
			before: store.ResignRunning, after: store.ResignRunning,
			reason: fmt.Sprintf("re-signed %d certificates with %s (%d of %d)", len(r.licenses), signedBy, j.Done, j.Total), details: d,
		}); err != nil {
			return nil, err
		}
	}
	if r.read < limit {
		return a.finishResign(ctx, tx, now, j, store.ResignDone, fmt.Sprintf("no live certificate of an active license depends on %s any more", j.KID), len(r.licenses))
	}
	if err := tx.PutResignJob(j); err != nil {
		return nil, err
	}
	return &ResignProgress{Job: j, Resigned: len(r.licenses)}, nil
}

func (a *Authority) finishResign(ctx context.Context, tx store.Tx, now time.Time, j *store.ResignJob, state, why string, resigned int) (*ResignProgress, error) {
	j.State, j.UpdatedAt, j.FinishedAt = state, now, &now
	if err := tx.PutResignJob(j); err != nil {
		return nil, err
	}
	if err := a.record(ctx, tx, now, change{
		action: "key.resign_complete", event: "key.resign_completed", targetType: "key", targetID: j.KID,
		before: store.ResignRunning, after: state, reason: why, details: resignDetails(j),
	}); err != nil {
		return nil, err
	}
	return &ResignProgress{Job: j, Resigned: resigned, Finished: true}, nil
}

// signChunk is how many candidates resignPipeline reads, and then writes,
// at a time; the batch's first read is firstChunk, so that signing starts
// early.
const (
	signChunk  = 128
	firstChunk = 32
)

// resignResult is what resignPipeline read.
type resignResult struct {
	licenses []string // of the eligible candidates, re-signed once resignPipeline returns nil, in order
	read     int      // candidates read
	skipped  int      // candidates not eligible
	last     string   // license id of the last candidate read, "" if none
}

// signedChunk is the eligible candidates of one read, signed by the
// pipeline's goroutines: done closes when left reaches 0.
type signedChunk struct {
	cs   []*store.Certificate
	out  []*store.Certificate
	errs []error
	left atomic.Int32
	done chan struct{}
}

func (c *signedChunk) signed() bool {
	select {
	case <-c.done:
		return true
	default:
		return false
	}
}

// resignPipeline re-signs the next certificates of kid after the license
// id after, at most limit, through tx: it reads them in chunks (keyset
// pagination on the license id, all in tx) and hands each chunk to the
// signers as soon as it is read; GOMAXPROCS-1 goroutines sign
// (keys.Resigner: the same payload under signer's header) while this one
// reads the next chunk and writes, in order, the chunks already signed.
// Once everything is read it calls onRead with what it read, then writes
// the remaining chunks in order, signing along until the next is complete.
// tx is used by this goroutine only, and no goroutine is left running when
// it returns.
func (a *Authority) resignPipeline(tx store.Tx, signer keys.Signer, kid string, now time.Time, after string, limit int, onRead func(*resignResult) error) error {
	type item struct {
		c *signedChunk
		i int
	}
	work := make(chan item, limit)
	resigner := keys.NewResigner(signer)
	var stop atomic.Bool
	sign := func(it item) {
		c := it.c
		if !stop.Load() {
			cert := c.cs[it.i]
			tok, err := resigner.Resign(cert.Token)
			if err != nil {
				c.errs[it.i] = fmt.Errorf("re-sign certificate %s of license %s: %w", cert.JTI, cert.LicenseID, err)
			} else {
				out := *cert
				out.KID, out.Token = signer.KID(), tok
				c.out[it.i] = &out
			}
		}
		if c.left.Add(-1) == 0 {
			close(c.done)
		}
	}
	var wg sync.WaitGroup
	for range runtime.GOMAXPROCS(0) - 1 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for it := range work {
				sign(it)
			}
		}()
	}
	defer func() {
		stop.Store(true) // what is left is skipped
		close(work)
		wg.Wait()
	}()

	r := &resignResult{}
	write := func(c *signedChunk) error {
		for _, err := range c.errs {
			if err != nil {
				return err
			}
		}
		if len(c.out) > 0 {
			return tx.ResignCertificates(c.out)
		}
		return nil
	}
	var pending []*signedChunk // read, not yet written
	more := true
	for more || len(pending) > 0 {
		if more {
			n := min(signChunk, limit-r.read)
			if r.read == 0 {
				n = min(firstChunk, limit)
			}
			cands, err := tx.ResignCandidates(kid, now, after, n)
			if err != nil {
				return err
			}
			r.read += len(cands)
			more = len(cands) == n && r.read < limit
			c := &signedChunk{done: make(chan struct{})}
			for _, cand := range cands {
				if cand.Eligible {
					c.cs = append(c.cs, &cand.Certificate)
					r.licenses = append(r.licenses, cand.LicenseID)
				} else {
					r.skipped++
				}
			}
			if len(cands) > 0 {
				after = cands[len(cands)-1].LicenseID
				r.last = after
			}
			c.out, c.errs = make([]*store.Certificate, len(c.cs)), make([]error, len(c.cs))
			c.left.Store(int32(len(c.cs)))
			if len(c.cs) == 0 {
				close(c.done)
			}
			for i := range c.cs {
				work <- item{c, i}
			}
			pending = append(pending, c)
			if !more {
				if err := onRead(r); err != nil {
					return err
				}
			}
			for len(pending) > 0 && pending[0].signed() {
				if err := write(pending[0]); err != nil {
					return err
				}
				pending = pending[1:]
			}
			continue
		}
		// Everything is read: sign along until the oldest chunk is complete.
		c := pending[0]
		for !c.signed() {
			select {
			case it := <-work:
				sign(it)
			case <-c.done:
			}
		}
		if err := write(c); err != nil {
			return err
		}
		pending = pending[1:]
	}
	return nil
}

// ReconcileResign starts a new run of the job of every license key that
// no longer signs but still has live certificates of active licenses and
// no running job (a license reinstated after its key's job ended). It
// returns how many runs it started.
func (a *Authority) ReconcileResign(ctx context.Context) (int, error) {
	ctx = keyward.NewContextWithPrincipal(ctx, schedulerPrincipal)
	var stale []string
	err := a.store.View(ctx, func(tx store.Tx) error {
		now := a.clock.Now()
		ks, err := tx.Keys(store.KeyFilter{Purpose: keyward.PurposeLicense, States: []keyward.KeyState{keyward.KeyRetired, keyward.KeyCompromised}})
		if err != nil {
			return err
		}
		for _, k := range ks {
			if j, err := tx.ResignJob(k.KID); err == nil && j.State == store.ResignRunning {
				continue
			} else if err != nil && keyward.ErrorCode(err) != keyward.ENotFound {
				return err
			}
			n, err := tx.CountCertificates(store.CertificateFilter{KID: k.KID, LiveAt: now, ActiveOnly: true})
			if err != nil {
				return err
			}
			if n > 0 {
				stale = append(stale, k.KID)
			}
		}
		return nil
	})
	if err != nil {
		return 0, err
	}
	started := 0
	for _, kid := range stale {
		err := a.store.Update(ctx, func(tx store.Tx) error {
			k, err := tx.Key(kid)
			if err != nil {
				return err
			}
			if k.State != keyward.KeyRetired && k.State != keyward.KeyCompromised {
				return nil
			}
			if j, err := tx.ResignJob(kid); err == nil && j.State == store.ResignRunning {
				return nil
			}
			started++
			return a.startResign(ctx, tx, a.clock.Now(), k)
		})
		if err != nil {
			return started, err
		}
	}
	return started, nil
}

// CurrentCertificate returns a license's current certificate: the last
// one checked out for it, or its re-signed form after the key that signed
// it stopped signing. ENotFound if the license is unknown or never had
// one. This is how a vendor, told by a key.resign_progress event that a
// license was re-signed, fetches the certificate to hand to its holder.
func (a *Authority) CurrentCertificate(ctx context.Context, licenseID string) (*store.Certificate, error) {
	var out *store.Certificate
	err := a.store.View(ctx, func(tx store.Tx) error {
		l, err := tx.License(licenseID)
		if err != nil {
			return err
		}
		if outOfScope(ctx, l.ProductID) {
			return scopeNotFound("license", licenseID)
		}
		out, err = tx.Certificate(l.ID)
		return err
	})
	return out, err
}

// Exposure is what still depends on a signing key.
type Exposure struct {
	// LiveCertificates counts current certificates of active licenses
	// signed by the key that have not expired: they stop verifying when
	// the key leaves JWKS, is destroyed or compromised.
	LiveCertificates int
	// InactiveCertificates counts unexpired current certificates signed
	// by the key whose license is not active (suspended, revoked, …): not
	// re-signed; relying parties refuse them through the revocation
	// registry.
	InactiveCertificates int
	// Job is the key's re-sign job, nil if it never had one.
	Job *store.ResignJob
}

// KeyExposure reports the live artifacts that depend on a key. Leases are
// not counted: they are short-lived (policy leaseTTL) and not stored.
func (a *Authority) KeyExposure(ctx context.Context, kid string) (*Exposure, error) {
	out := &Exposure{}
	err := a.store.View(ctx, func(tx store.Tx) error {
		k, err := tx.Key(kid)
		if err != nil {
			return err
		}
		if outOfScope(ctx, k.ProductID) {
			return scopeNotFound("key", kid)
		}
		now := a.clock.Now()
		all, err := tx.CountCertificates(store.CertificateFilter{KID: kid, LiveAt: now})
		if err != nil {
			return err
		}
		if out.LiveCertificates, err = tx.CountCertificates(store.CertificateFilter{KID: kid, LiveAt: now, ActiveOnly: true}); err != nil {
			return err
		}
		out.InactiveCertificates = all - out.LiveCertificates
		j, err := tx.ResignJob(kid)
		switch {
		case err == nil:
			out.Job = j
		case keyward.ErrorCode(err) != keyward.ENotFound:
			return err
		}
		return nil
	})
	return out, err
}

// ResignJob returns the re-sign job of a key: ENotFound for an unknown key
// or a key that never had one.
func (a *Authority) ResignJob(ctx context.Context, kid string) (*store.ResignJob, error) {
	e, err := a.KeyExposure(ctx, kid)
	if err != nil {
		return nil, err
	}
	if e.Job == nil {
		return nil, keyward.Errorf(keyward.ENotFound, "key %s has no re-sign job: it never stopped signing, or is not a license key", kid)
	}
	return e.Job, nil
}
