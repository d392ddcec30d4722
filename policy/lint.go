package policy

import (
	"fmt"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/keyward/keyward"
)

// LintOptions say where a document will be used.
type LintOptions struct {
	// Dev allows what only a development server may run: approvals 0.
	Dev bool
	// Permissions are the names duties and mfa may use (the authority's
	// permission table). Nil skips that check.
	Permissions []string
}

// Guardrail bounds (docs/policy.md says why).
const (
	// MinRotateEvery and MaxRotateEvery bound the cryptoperiod of a
	// signing key: NIST SP 800-57 Part 1 suggests 1-3 years for the
	// originator-usage period of a private signature key; below an hour
	// rotation is churn that clients' JWKS caches cannot follow.
	MinRotateEvery = time.Hour
	MaxRotateEvery = 3 * 365 * 24 * time.Hour
	// MaxMachines is the largest machine limit (authority.MaxMachinesLimit).
	MaxMachines = 100000
	// MaxApprovals bounds revocation.approvals.
	MaxApprovals = 10
	// MaxExpiringNotice bounds licenses.expiringNotice.
	MaxExpiringNotice = 365 * 24 * time.Hour
)

// Algorithms lists the signing algorithms Keyward implements.
func Algorithms() []string { return []string{"Ed25519", "ES256"} }

var namePattern = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,62}$`)

// Check parses and lints data: every problem of both, in document order.
func Check(data []byte, opts LintOptions) (*Document, Problems) {
	d, ps := Parse(data)
	if d == nil {
		return nil, ps
	}
	ps = append(ps, Lint(d, opts)...)
	slices.SortStableFunc(ps, func(a, b Problem) int { return a.Line - b.Line })
	return d, ps
}

// Lint returns the guardrails d breaks, each with the path and line of the
// field at fault. Fields left out are checked with their default values
// (the message then says "default"). It assumes Parse accepted the
// structure; problems Parse already reported are not repeated.
func Lint(d *Document, opts LintOptions) Problems {
	l := &linter{d: d, p: d.Policy()}
	l.metadata()
	l.signingKeys()
	l.licenses()
	l.revocation(opts)
	l.autoSuspendGuards()
	l.rules()
	l.permissions(opts)
	return l.problems
}

type linter struct {
	d        *Document
	p        *keyward.Policy
	problems Problems
}

func (l *linter) fail(path string, format string, args ...any) {
	line := l.d.Line(path)
	for p := path; line == 0 && p != ""; {
		i := strings.LastIndexAny(p, ".[")
		if i < 0 {
			break
		}
		p = p[:i]
		line = l.d.Line(p)
	}
	l.problems = append(l.problems, Problem{Path: path, Line: line, Message: fmt.Sprintf(format, args...)})
}

// dur formats the duration at path, marking a default value.
func (l *linter) dur(path string, d time.Duration) string {
	if l.d.Has(path) {
		return formatDuration(d)
	}
	return formatDuration(d) + " (default)"
}

func (l *linter) metadata() {
	for _, f := range []struct{ path, v, what string }{
		{"metadata.name", l.d.Metadata.Name, "the policy's name"},
		{"metadata.product", l.d.Metadata.Product, "the name of the product it governs"},
	} {
		if !l.d.Has(f.path) {
			continue // Parse reported it missing
		}
		if !namePattern.MatchString(f.v) {
			l.fail(f.path, "%q: want %s, 1-63 characters of a-z, 0-9 and '-', starting with a letter or digit", f.v, f.what)
		}
	}
}

func (l *linter) signingKeys() {
	p := l.p
	const sk = "spec.signingKeys."
	algs := Algorithms()
	if !slices.Contains(algs, p.Algorithm) {
		l.fail(sk+"algorithm", "%q is not a supported algorithm: want one of %s", p.Algorithm, strings.Join(algs, ", "))
	}
	if len(p.AllowedAlgorithms) == 0 {
		l.fail(sk+"allowedAlgorithms", "empty: allow at least the signing algorithm")
	}
	seen := map[string]bool{}
	for i, a := range p.AllowedAlgorithms {
		path := fmt.Sprintf("%sallowedAlgorithms[%d]", sk, i)
		switch {
		case !slices.Contains(algs, a):
			l.fail(path, "%q is not a supported algorithm: want one of %s", a, strings.Join(algs, ", "))
		case seen[a]:
			l.fail(path, "%s is listed twice", a)
		}
		seen[a] = true
	}
	if slices.Contains(algs, p.Algorithm) && len(p.AllowedAlgorithms) > 0 && !slices.Contains(p.AllowedAlgorithms, p.Algorithm) {
		l.fail(sk+"algorithm", "%s is off the allowlist spec.signingKeys.allowedAlgorithms [%s]", p.Algorithm, strings.Join(p.AllowedAlgorithms, ", "))
	}

	l.positive(sk+"rotateEvery", p.RotateEvery)
	l.positive(sk+"prepublish", p.Prepublish)
	l.positive(sk+"verifyWindow", p.VerifyWindow)
	l.positive(sk+"destroyAfter", p.DestroyAfter)
	switch {
	case p.RotateEvery <= 0:
	case p.RotateEvery < MinRotateEvery:
		l.fail(sk+"rotateEvery", "%s is shorter than 1h: clients' key caches could not follow rotation", l.dur(sk+"rotateEvery", p.RotateEvery))
	case p.RotateEvery > MaxRotateEvery:
		l.fail(sk+"rotateEvery", "%s is longer than 3 years, the longest cryptoperiod NIST SP 800-57 suggests for a signature key", l.dur(sk+"rotateEvery", p.RotateEvery))
	}
	if p.Prepublish > 0 && p.RotateEvery > 0 && p.Prepublish >= p.RotateEvery {
		l.fail(sk+"prepublish", "%s is not shorter than spec.signingKeys.rotateEvery %s: a successor would be published before its predecessor became active",
			l.dur(sk+"prepublish", p.Prepublish), l.dur(sk+"rotateEvery", p.RotateEvery))
	}
	// A retired key verifies until it is destroyed (retired_at +
	// destroyAfter); that must cover its verify window and everything it
	// may have signed while active.
	if p.DestroyAfter > 0 {
		bounds := []struct {
			path string
			d    time.Duration
			why  string
		}{
			{"spec.licenses.duration", p.LicenseDuration, "licenses signed by a key would outlive its verification"},
			{"spec.licenses.certificateTTL", p.CertificateTTL, "certificates signed by a key would outlive its verification"},
			{sk + "verifyWindow", p.VerifyWindow, "a retired key would be destroyed while its verify window is open"},
		}
		for _, b := range bounds {
			if p.DestroyAfter < b.d {
				l.fail(sk+"destroyAfter", "%s is shorter than %s %s: %s", l.dur(sk+"destroyAfter", p.DestroyAfter), b.path, l.dur(b.path, b.d), b.why)
				break
			}
		}
	}
}

func (l *linter) positive(path string, d time.Duration) {
	if d <= 0 {
		l.fail(path, "%s: want a positive duration", l.dur(path, d))
	}
}

func (l *linter) licenses() {
	p := l.p
	const lp = "spec.licenses."
	if l.d.Has(lp+"duration") && p.LicenseDuration <= 0 {
		l.fail(lp+"duration", "%s: want a positive duration; leave the field out for perpetual licenses", formatDuration(p.LicenseDuration))
	}
	l.positive(lp+"certificateTTL", p.CertificateTTL)
	l.positive(lp+"leaseTTL", p.LeaseTTL)
	if p.LeaseTTL > 0 && p.CertificateTTL > 0 && p.LeaseTTL > p.CertificateTTL {
		l.fail(lp+"leaseTTL", "%s is longer than spec.licenses.certificateTTL %s: a lease must not outlive the certificate it extends, or revocation would reach clients later than the certificate says",
			l.dur(lp+"leaseTTL", p.LeaseTTL), l.dur(lp+"certificateTTL", p.CertificateTTL))
	}
	if p.LicenseDuration > 0 && p.CertificateTTL > p.LicenseDuration {
		l.fail(lp+"certificateTTL", "%s is longer than spec.licenses.duration %s: a certificate would outlive its license",
			l.dur(lp+"certificateTTL", p.CertificateTTL), l.dur(lp+"duration", p.LicenseDuration))
	}
	if p.MaxMachines < 0 || p.MaxMachines > MaxMachines {
		l.fail(lp+"maxMachines", "%d: want 0 (no limit) to %d", p.MaxMachines, MaxMachines)
	}
	// The expiring notice is a lead time: a license must not be
	// "expiring" from the moment it is issued.
	l.positive(lp+"expiringNotice", p.ExpiringNotice)
	switch {
	case p.ExpiringNotice > MaxExpiringNotice:
		l.fail(lp+"expiringNotice", "%s is longer than 365d: notices that early are not upcoming changes", l.dur(lp+"expiringNotice", p.ExpiringNotice))
	case p.ExpiringNotice > 0 && p.LicenseDuration > 0 && p.ExpiringNotice >= p.LicenseDuration:
		l.fail(lp+"expiringNotice", "%s is not shorter than spec.licenses.duration %s: every new license would be announced as expiring when it is issued",
			l.dur(lp+"expiringNotice", p.ExpiringNotice), l.dur(lp+"duration", p.LicenseDuration))
	}
}

func (l *linter) revocation(opts LintOptions) {
	const path = "spec.revocation.approvals"
	switch a := l.p.RevocationApprovals; {
	case a < 0 || a > MaxApprovals:
		l.fail(path, "%d: want 1 to %d (0 only on a --dev server)", a, MaxApprovals)
	case a == 0 && !opts.Dev:
		l.fail(path, "0 turns off the second principal's confirmation of permanent revocation: allowed only on a --dev server")
	}
}

// rules checks names and compiles every CEL expression.
func (l *linter) rules() {
	names := map[string]string{} // rule name → path of its first use
	sets := []struct {
		path  string
		rules []keyward.PolicyRule
	}{{"spec.licenses.retire", l.p.Retire}, {"spec.revocation.autoSuspend", l.p.AutoSuspend}}
	for _, set := range sets {
		if !l.d.Has(set.path) {
			continue // the built-in rules are checked by the package's tests
		}
		for i, r := range set.rules {
			at := fmt.Sprintf("%s[%d]", set.path, i)
			switch {
			case !l.d.Has(at + ".name"):
			case !namePattern.MatchString(r.Name):
				l.fail(at+".name", "%q: want 1-63 characters of a-z, 0-9 and '-', starting with a letter or digit", r.Name)
			case names[r.Name] != "":
				l.fail(at+".name", "%q is already the name of %s: rule names must be unique, audit entries name the rule", r.Name, names[r.Name])
			default:
				names[r.Name] = at
			}
		}
	}
	e, err := newEnv()
	if err != nil {
		l.fail("", "CEL environment: %v", err)
		return
	}
	for _, set := range sets {
		if !l.d.Has(set.path) {
			continue
		}
		_, ps := compileRules(e, set.path, set.rules)
		for _, p := range ps {
			l.fail(p.Path, "%s", p.Message)
		}
	}
}

func (l *linter) permissions(opts LintOptions) {
	known := func(path, perm string) bool {
		if opts.Permissions == nil || slices.Contains(opts.Permissions, perm) {
			return true
		}
		l.fail(path, "%q is not a permission (known: %s)", perm, strings.Join(opts.Permissions, ", "))
		return false
	}
	if l.d.Has("spec.duties.separate") {
		seen := map[[2]string]string{}
		for i, pair := range l.p.Duties {
			path := fmt.Sprintf("spec.duties.separate[%d]", i)
			if len(pair) != 2 {
				l.fail(path, "want a pair of two permissions, got %d", len(pair))
				continue
			}
			ok0, ok1 := known(path+"[0]", pair[0]), known(path+"[1]", pair[1])
			if !ok0 || !ok1 {
				continue
			}
			if pair[0] == pair[1] {
				l.fail(path, "%s is paired with itself", pair[0])
				continue
			}
			key := [2]string{min(pair[0], pair[1]), max(pair[0], pair[1])}
			if prev, dup := seen[key]; dup {
				l.fail(path, "the pair %s, %s is already %s", pair[0], pair[1], prev)
				continue
			}
			seen[key] = path
		}
	}
	if l.d.Has("spec.mfa") {
		seen := map[string]bool{}
		for i, perm := range l.p.MFA {
			path := fmt.Sprintf("spec.mfa[%d]", i)
			if !known(path, perm) {
				continue
			}
			if seen[perm] {
				l.fail(path, "%s is listed twice", perm)
			}
			seen[perm] = true
		}
	}
}
