package cli_test

import (
	"bytes"
	"context"
	"strings"
	"testing"

	"github.com/keyward/keyward/cli"
)

// TestSignalsThroughCLI: license signal, signals and usage against a dev
// server (built-in policy: suspendOnSignal [leak], approvals 0).
func TestSignalsThroughCLI(t *testing.T) {
	dir := t.TempDir()
	h := start(t, dir, &lockedBuffer{})
	defer h.stop()

	var lic struct{ ID, Key string }
	h.ok(&lic, "license", "issue", "--product", "demo", "--holder", "cust-1")
	h.validate(lic.Key, "m1")
	h.validate(lic.Key, "m2")

	var usage struct {
		Tracked bool
		Usage   map[string]int
	}
	h.ok(&usage, "license", "usage", lic.ID)
	if !usage.Tracked || usage.Usage["validations_per_minute"] != 2 || usage.Usage["distinct_fingerprints_24h"] != 2 || usage.Usage["distinct_networks_24h"] != 1 {
		t.Errorf("license usage = %+v", usage)
	}

	// Refused locally (exit 2) or by the server (exit 1), nothing recorded.
	for _, bad := range []struct {
		status int
		want   string
		args   []string
	}{
		{2, "--kind \"fraud\": want one of abuse, leak, chargeback, other", []string{"--kind", "fraud", "--detail", "x"}},
		{2, "required flag(s) \"detail\"", []string{"--kind", "leak"}},
		{2, "--detail is required", []string{"--kind", "leak", "--detail", "  "}},
		{2, "--detail: at most 2000 bytes", []string{"--kind", "leak", "--detail", strings.Repeat("x", 2001)}},
		{1, "INVALID_ARGUMENT: detail: control characters", []string{"--kind", "leak", "--detail", "a\x1bb"}},
	} {
		_, errs, status := h.run(append([]string{"license", "signal", lic.ID}, bad.args...)...)
		if status != bad.status || !strings.Contains(errs, bad.want) {
			t.Errorf("license signal %q: exit %d, %q; want exit %d naming %q", bad.args, status, errs, bad.status, bad.want)
		}
	}
	h.fails("NOT_FOUND", "license", "signal", "lic_missing", "--kind", "leak", "--detail", "x")

	var rec struct {
		Signal  struct{ ID, Kind, Outcome string }
		License struct{ State string }
	}
	h.ok(&rec, "license", "signal", lic.ID, "--kind", "abuse", "--detail", "seen on a forum")
	if rec.Signal.Outcome != "recorded" || rec.License.State != "active" {
		t.Errorf("abuse signal = %+v", rec)
	}
	// The table form says what happened.
	var out, errb bytes.Buffer
	code := cli.Run(context.Background(), []string{"keyward", "--server", h.url, "--token", h.token, "license", "signal", lic.ID, "--kind", "leak", "--detail", "key in a paste"}, &out, &errb)
	if code != 0 || !strings.Contains(out.String(), "leak") || !strings.Contains(out.String(), "license "+lic.ID+" suspended (policy suspendOnSignal: leak)") {
		t.Errorf("license signal (table): exit %d\n%s%s", code, out.String(), errb.String())
	}
	if v := h.validate(lic.Key, "m1"); v.Code != "SUSPENDED" {
		t.Errorf("validate after the leak: %s", v.Code)
	}
	var list []struct{ Kind, Outcome, Detail string }
	h.ok(&list, "license", "signals", lic.ID)
	if len(list) != 2 || list[0].Kind != "abuse" || list[1].Outcome != "suspended" || list[1].Detail != "key in a paste" {
		t.Errorf("license signals = %+v", list)
	}
	h.ok(&usage, "license", "usage", lic.ID)
	out.Reset()
	code = cli.Run(context.Background(), []string{"keyward", "--server", h.url, "--token", h.token, "license", "usage", lic.ID}, &out, &errb)
	if code != 0 || !strings.Contains(out.String(), "usage.validations_per_minute:") || !strings.Contains(out.String(), "suspendOnSignal") {
		t.Errorf("license usage (table): exit %d\n%s", code, out.String())
	}
}

func TestServerTrustForwardedForFlag(t *testing.T) {
	var out, errb bytes.Buffer
	code := cli.Run(context.Background(), []string{"keyward", "server", "--data-dir", t.TempDir(), "--trust-forwarded-for", "10.0.0.0/8,proxy.example"}, &out, &errb)
	if code != 2 || !strings.Contains(errb.String(), `--trust-forwarded-for "proxy.example": want an IP address or a CIDR network`) {
		t.Errorf("exit %d: %s", code, errb.String())
	}
}
