//go:build !unix

package authority_test

import (
	"testing"
	"time"
)

// processCPU is not measured here: BenchmarkTreeCost then reports
// wall-clock time only.
func processCPU(testing.TB) time.Duration { return 0 }
