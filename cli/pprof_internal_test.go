package cli

import (
	"errors"
	"log/slog"
	"net/http"
	"strings"
	"testing"
)

// TestServePprofLoopbackOnly: the hidden --pprof flag serves the profiler
// on loopback IP addresses only (profiles show code paths and heap
// contents); names and other addresses are refused before listening.
func TestServePprofLoopbackOnly(t *testing.T) {
	log := slog.New(slog.DiscardHandler)
	for _, addr := range []string{"0.0.0.0:0", ":0", "localhost:0", "10.1.2.3:0", "[::]:0", "127.0.0.1", "example.com:6060"} {
		if _, stop, err := servePprof(addr, log); err == nil {
			stop()
			t.Errorf("servePprof(%q) = nil error, want a refusal", addr)
		} else if !strings.Contains(err.Error(), "--pprof") || !errors.As(err, new(usageErr)) {
			t.Errorf("servePprof(%q) = %v, want a usage error naming --pprof", addr, err)
		}
	}
	addr, stop, err := servePprof("127.0.0.1:0", log)
	if err != nil {
		t.Fatalf("servePprof(127.0.0.1:0) = %v, want nil", err)
	}
	defer stop()
	resp, err := http.Get("http://" + addr + "/debug/pprof/cmdline")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("GET /debug/pprof/cmdline = %s, want 200", resp.Status)
	}
}
