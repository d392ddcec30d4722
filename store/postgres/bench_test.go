package postgres_test

import (
	"context"
	"fmt"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/keyward/keyward"
	"github.com/keyward/keyward/audit"
	"github.com/keyward/keyward/store"
	"github.com/keyward/keyward/store/postgres"
	"github.com/keyward/keyward/store/postgres/pgtest"
)

// transition is the shape of a typical state change: read a license,
// write it, append its audit entry (with tree hashes) and outbox event.
func transition(s store.Store, id string, n int64) error {
	return s.Update(context.Background(), func(tx store.Tx) error {
		l, err := tx.License(id)
		if err != nil {
			return err
		}
		l.Reason = fmt.Sprint(n)
		if err := tx.UpdateLicense(l); err != nil {
			return err
		}
		if err := audit.Append(tx, &keyward.AuditEntry{Time: t0, Actor: "bench", Action: "license.touch", TargetType: "license", TargetID: id}); err != nil {
			return err
		}
		return tx.AppendEvent(&keyward.Event{ID: fmt.Sprintf("evt_%d", n), Type: "license.touched", Time: t0, Subject: id})
	})
}

func benchStores(b *testing.B, n int) []*postgres.DB {
	url := pgtest.URL(b)
	var dbs []*postgres.DB
	for range n {
		db, err := postgres.Open(b.Context(), url, postgres.Options{})
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { db.Close() })
		dbs = append(dbs, db)
	}
	return dbs
}

// BenchmarkTransition: one writer.
func BenchmarkTransition(b *testing.B) {
	dbs := benchStores(b, 1)
	var seq atomic.Int64
	if err := dbs[0].Update(b.Context(), func(tx store.Tx) error {
		if err := tx.CreateProduct(&keyward.Product{ID: "prd_1", Name: "one", CreatedAt: t0}); err != nil {
			return err
		}
		return tx.CreateLicense(&keyward.License{ID: "lic_b", ProductID: "prd_1", State: keyward.LicenseActive, CreatedAt: t0, UpdatedAt: t0})
	}); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for b.Loop() {
		if err := transition(dbs[0], "lic_b", seq.Add(1)); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkTransitionTwoStores: writers on two store values (two
// replicas), each on its own license: the write lock serializes them.
func BenchmarkTransitionTwoStores(b *testing.B) {
	dbs := benchStores(b, 2)
	if err := dbs[0].Update(b.Context(), func(tx store.Tx) error {
		if err := tx.CreateProduct(&keyward.Product{ID: "prd_1", Name: "one", CreatedAt: t0}); err != nil {
			return err
		}
		for i := range 64 {
			if err := tx.CreateLicense(&keyward.License{ID: fmt.Sprintf("lic_%d", i), ProductID: "prd_1", State: keyward.LicenseActive, CreatedAt: t0, UpdatedAt: t0}); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		b.Fatal(err)
	}
	var seq, worker atomic.Int64
	b.SetParallelism(4)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		w := worker.Add(1)
		db, id := dbs[w%2], fmt.Sprintf("lic_%d", w%64)
		for pb.Next() {
			if err := transition(db, id, seq.Add(1)); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// BenchmarkChangeFeedLatency measures commit-to-notification time from
// one store value to another's Listen: the staleness bound of a replica.
func BenchmarkChangeFeedLatency(b *testing.B) {
	dbs := benchStores(b, 2)
	ch := make(chan store.Change, 16)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go dbs[1].Listen(ctx, func(c store.Change) { ch <- c })
	<-ch // All
	if err := dbs[0].Update(b.Context(), func(tx store.Tx) error {
		if err := tx.CreateProduct(&keyward.Product{ID: "prd_1", Name: "one", CreatedAt: t0}); err != nil {
			return err
		}
		return tx.CreateLicense(&keyward.License{ID: "lic_b", ProductID: "prd_1", State: keyward.LicenseActive, CreatedAt: t0, UpdatedAt: t0})
	}); err != nil {
		b.Fatal(err)
	}
	<-ch // the product
	var lat []time.Duration
	b.ResetTimer()
	for b.Loop() {
		err := dbs[0].Update(b.Context(), func(tx store.Tx) error { return changeLicense(tx, "lic_b") })
		committed := time.Now()
		if err != nil {
			b.Fatal(err)
		}
		<-ch
		lat = append(lat, time.Since(committed))
	}
	slices.Sort(lat)
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "p50-µs")
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99-µs")
}
