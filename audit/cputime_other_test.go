//go:build !unix

package audit_test

import (
	"testing"
	"time"
)

// processCPU is not measured here: BenchmarkTreeOverhead then reports
// wall-clock time only.
func processCPU(testing.TB) time.Duration { return 0 }
