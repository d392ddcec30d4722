//go:build unix

package api_test

import (
	"syscall"
	"testing"
	"time"
)

// reportCPU runs fn and reports the process's CPU time (user + system)
// per operation as "cpu-ns/op": unlike ns/op it barely moves when other
// processes load the machine, so before/after comparisons on a shared
// machine stay readable.
func reportCPU(b *testing.B, fn func()) {
	b.Helper()
	cpu := func() time.Duration {
		var ru syscall.Rusage
		if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
			b.Fatal(err)
		}
		return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	}
	start := cpu()
	fn()
	b.ReportMetric(float64(cpu()-start)/float64(b.N), "cpu-ns/op")
}
