//go:build !unix

package api_test

import "testing"

// reportCPU runs fn (CPU time is reported on Unix only).
func reportCPU(b *testing.B, fn func()) { fn() }
