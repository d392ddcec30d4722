package cputime_test

import (
	"runtime"
	"testing"
	"time"

	"github.com/keyward/keyward/internal/cputime"
)

// TestProcessMoves: spinning for 50 ms of wall-clock time shows as CPU time.
func TestProcessMoves(t *testing.T) {
	if runtime.GOOS == "windows" || runtime.GOOS == "plan9" || runtime.GOOS == "js" || runtime.GOOS == "wasip1" {
		t.Skip("not measured on", runtime.GOOS)
	}
	c0 := cputime.Process()
	for end := time.Now().Add(50 * time.Millisecond); time.Now().Before(end); {
	}
	c1 := cputime.Process()
	if d := c1 - c0; d < 10*time.Millisecond {
		t.Errorf("50 ms of spinning took %v of CPU", d)
	}
}
