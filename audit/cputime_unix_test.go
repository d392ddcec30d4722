//go:build unix

package audit_test

import (
	"syscall"
	"testing"
	"time"
)

// processCPU returns the process's CPU time so far (user + system): unlike
// wall-clock time it barely moves when other processes load the machine.
func processCPU(tb testing.TB) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		tb.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
