package sdk_test

import (
	"os/exec"
	"strings"
	"testing"
)

// TestDeps keeps the SDK free of server packages: relying parties embed it
// in shipped apps, which must not pull in storage, the authority, the HTTP
// server, the CLI or a SQL driver (tailscale's deptest). Test-only imports
// (golang-jwt for the interop test) are not dependencies of the package.
func TestDeps(t *testing.T) {
	gobin, err := exec.LookPath("go")
	if err != nil {
		t.Skipf("go command not found: %v", err)
	}
	const pkg = "github.com/keyward/keyward/sdk"
	out, err := exec.Command(gobin, "list", "-deps", pkg).Output()
	if err != nil {
		var stderr string
		if ee, ok := err.(*exec.ExitError); ok {
			stderr = string(ee.Stderr)
		}
		t.Fatalf("go list -deps %s: %v\n%s", pkg, err, stderr)
	}
	forbidden := []string{
		"github.com/keyward/keyward/store",
		"github.com/keyward/keyward/authority",
		"github.com/keyward/keyward/api",
		"github.com/keyward/keyward/cli",
		"github.com/keyward/keyward/cmd",
		"database/sql",
		"modernc.org/",
		"github.com/golang-jwt/",
	}
	deps := strings.Fields(string(out))
	if len(deps) == 0 {
		t.Fatalf("go list -deps %s printed nothing", pkg)
	}
	for _, dep := range deps {
		for _, bad := range forbidden {
			if isUnder(dep, bad) {
				t.Errorf("%s depends on %s (forbidden: %s)", pkg, dep, bad)
			}
		}
	}
}

// isUnder reports whether package path is prefix or below it. A prefix
// ending in "/" matches any path starting with it (a module host or owner).
func isUnder(path, prefix string) bool {
	if strings.HasSuffix(prefix, "/") {
		return strings.HasPrefix(path, prefix)
	}
	return path == prefix || strings.HasPrefix(path, prefix+"/")
}
