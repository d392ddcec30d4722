//go:build !unix

package cputime

import "time"

// Process is not measured here: it returns 0, and benchmarks report their
// CPU metrics as zero (their wall-clock ones still count).
func Process() time.Duration { return 0 }
