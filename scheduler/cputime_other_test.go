//go:build !unix

package scheduler_test

import (
	"testing"
	"time"
)

// processCPU is not measured here: BenchmarkBulkResign's CPU metrics then
// read zero and only its wall-clock ratios count.
func processCPU(testing.TB) time.Duration { return 0 }
