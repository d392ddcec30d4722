package policy

import (
	"fmt"
	"slices"
	"strings"
	"time"

	"cel.dev/cel-go/cel"
	"cel.dev/cel-go/common/ast"
	"cel.dev/cel-go/common/operators"
	"cel.dev/cel-go/interpreter"

	"github.com/keyward/keyward"
)

// Automatic suspension on the validation path (docs/abuse.md).
//
// Decide evaluates every kind of rule for the scheduler; the validation
// path evaluates only the revocation.autoSuspend rules, on every
// validation of an active license, so it has its own entry point:
// MatchAutoSuspend binds the variables through a small activation instead
// of a map, and AutoSuspendReads tells the caller which costly inputs
// (license.machines, key) the rules read at all.

// Guardrail bounds of the automatic-suspension guards (docs/abuse.md says why).
const (
	// MinAutoSuspendCooldown and MaxAutoSuspendCooldown bound
	// revocation.autoSuspendCooldown: shorter, a license a person
	// reinstated flaps back to suspended while its counters are still
	// high; longer, a license reinstated by mistake is unguarded for more
	// than a month.
	MinAutoSuspendCooldown = 5 * time.Minute
	MaxAutoSuspendCooldown = 30 * 24 * time.Hour
	// MaxAutoSuspendCeiling bounds revocation.autoSuspendCeiling (per
	// product per hour): a wrong rule must not suspend more than this.
	MaxAutoSuspendCeiling = 1000
)

// AutoSuspendWindow is the window of the per-product ceiling.
const AutoSuspendWindow = time.Hour

// RuleSuspendOnSignal is the rule name audit entries carry for a
// suspension caused by a signal kind listed in revocation.suspendOnSignal.
const RuleSuspendOnSignal = "suspendOnSignal"

func signalKinds(ks []keyward.SignalKind) []string {
	out := make([]string, len(ks))
	for i, k := range ks {
		out[i] = string(k)
	}
	return out
}

// AutoSuspendInputs says which inputs a policy's autoSuspend rules read
// beyond usage, now and the license's own fields: the validation path
// fetches them only when a rule needs them.
type AutoSuspendInputs struct {
	Machines bool // license.machines (a store read)
	Key      bool // the key variable (the product's active signing key)
	// RateMonotone: every rule is provably non-decreasing in
	// usage.validations_per_minute (all else fixed), so rules false at a
	// rate are false at every lower rate (see RateMonotone).
	RateMonotone bool
}

// HasAutoSuspend reports whether the policy has autoSuspend rules.
func (c *Compiled) HasAutoSuspend() bool { return len(c.autoSuspend) > 0 }

// AutoSuspendGuards returns revocation.autoSuspendCooldown and
// revocation.autoSuspendCeiling.
func (c *Compiled) AutoSuspendGuards() (cooldown time.Duration, ceiling int) {
	return c.policy.AutoSuspendCooldown, c.policy.AutoSuspendCeiling
}

// SuspendsOnSignal reports whether revocation.suspendOnSignal lists k.
func (c *Compiled) SuspendsOnSignal(k keyward.SignalKind) bool {
	return slices.Contains(c.policy.SuspendOnSignal, k)
}

// AutoSuspendReads returns which costly inputs the autoSuspend rules read.
// It parses the rules again (once per call: call it once per compiled
// policy and keep the answer).
func (c *Compiled) AutoSuspendReads() AutoSuspendInputs {
	in := AutoSuspendInputs{RateMonotone: true}
	e, err := newEnv()
	if err != nil {
		return AutoSuspendInputs{Machines: true, Key: true} // cannot tell: fetch everything
	}
	for _, r := range c.autoSuspend {
		checked, iss := e.Compile(r.When)
		if iss.Err() != nil {
			return AutoSuspendInputs{Machines: true, Key: true}
		}
		m, k := reads(checked.NativeRep())
		in.Machines = in.Machines || m
		in.Key = in.Key || k
		in.RateMonotone = in.RateMonotone && RateMonotone(checked.NativeRep())
	}
	return in
}

// rateField is the usage counter RateMonotone reasons about.
const rateField = "validations_per_minute"

// RateMonotone reports whether a checked boolean expression is provably
// non-decreasing in usage.validations_per_minute when every other input
// is fixed (false < true): if it is false at some rate, it is false at
// every lower one. The proof is syntactic and conservative: the rate may
// appear only as usage.validations_per_minute, under &&, ||, !, the
// branches of ?:, the comparisons <, <=, >, >= and + and -, each on the
// side that keeps the direction; any other use (==, a function, a macro,
// the usage variable as a whole) answers false. The validation path uses
// it to skip re-evaluating rules while a growing rate stays below one
// they were found false at (authority/usage.go).
func RateMonotone(a *ast.AST) bool {
	return rateMonotone(ast.NavigateAST(a), true)
}

// rateMonotone reports whether e moves with the rate (up) or against it
// (!up), or does not read it at all.
func rateMonotone(e ast.NavigableExpr, up bool) bool {
	if !readsRate(e) {
		return true
	}
	arg := func(x ast.Expr, up bool) bool {
		n, ok := x.(ast.NavigableExpr)
		return ok && rateMonotone(n, up)
	}
	switch e.Kind() {
	case ast.SelectKind:
		s := e.AsSelect()
		return up && !s.IsTestOnly() && s.FieldName() == rateField &&
			s.Operand().Kind() == ast.IdentKind && s.Operand().AsIdent() == "usage"
	case ast.CallKind:
		c := e.AsCall()
		if c.IsMemberFunction() {
			return false
		}
		args := c.Args()
		switch c.FunctionName() {
		case operators.LogicalAnd, operators.LogicalOr:
			for _, x := range args {
				if !arg(x, up) {
					return false
				}
			}
			return true
		case operators.LogicalNot:
			return len(args) == 1 && arg(args[0], !up)
		case operators.Greater, operators.GreaterEquals, operators.Subtract:
			return len(args) == 2 && arg(args[0], up) && arg(args[1], !up)
		case operators.Less, operators.LessEquals:
			return len(args) == 2 && arg(args[0], !up) && arg(args[1], up)
		case operators.Add:
			return len(args) == 2 && arg(args[0], up) && arg(args[1], up)
		case operators.Conditional:
			n, ok := args[0].(ast.NavigableExpr)
			return len(args) == 3 && ok && !readsRate(n) && arg(args[1], up) && arg(args[2], up)
		}
	}
	return false
}

// readsRate reports whether e may read usage.validations_per_minute: any
// use of the usage variable but a selection of another of its fields.
func readsRate(e ast.NavigableExpr) bool {
	uses := func(x ast.NavigableExpr) bool {
		if x.Kind() != ast.IdentKind || x.AsIdent() != "usage" {
			return false
		}
		p, ok := x.Parent()
		return !ok || p.Kind() != ast.SelectKind || p.AsSelect().FieldName() == rateField
	}
	return uses(e) || len(ast.MatchDescendants(e, uses)) > 0
}

// reads reports whether a checked expression reads license.machines (or
// the license as a whole) and the key variable.
func reads(a *ast.AST) (machines, key bool) {
	root := ast.NavigateAST(a)
	for _, e := range ast.MatchDescendants(root, ast.KindMatcher(ast.IdentKind)) {
		switch e.AsIdent() {
		case "key":
			key = true
		case "license":
			p, ok := e.Parent()
			if !ok || p.Kind() != ast.SelectKind || p.AsSelect().FieldName() == "machines" {
				machines = true
			}
		}
	}
	return machines, key
}

// readsVariable reports whether a checked expression names variable v.
func readsVariable(a *ast.AST, v string) bool {
	root := ast.NavigateAST(a)
	return len(ast.MatchDescendants(root, func(e ast.NavigableExpr) bool {
		return e.Kind() == ast.IdentKind && e.AsIdent() == v
	})) > 0
}

// activation binds the rule variables without building a map.
type activation struct {
	license *License
	key     *Key
	usage   *Usage
	now     time.Time
}

func (a *activation) ResolveName(name string) (any, bool) {
	switch name {
	case "license":
		return a.license, true
	case "usage":
		return a.usage, true
	case "now":
		return a.now, true
	case "key":
		return a.key, true
	}
	return nil, false
}

func (a *activation) Parent() interpreter.Activation { return nil }

// MatchAutoSuspend evaluates the autoSuspend rules, in document order, for
// license l (which MUST be active; the caller checks) with usage u at now;
// k is the product's active key (nil = unknown, the zero Key). It returns
// the first rule that is true. A rule that fails to evaluate does not
// fire: the others are still evaluated and the first such error is
// returned next to the result (for the caller to log).
func (c *Compiled) MatchAutoSuspend(l *License, k *Key, u *Usage, now time.Time) (keyward.PolicyRule, bool, error) {
	if k == nil {
		k = &Key{}
	}
	act := &activation{license: l, key: k, usage: u, now: now}
	var first error
	for i := range c.autoSuspend {
		r := &c.autoSuspend[i]
		v, _, err := r.prg.Eval(act)
		if err != nil {
			if first == nil {
				first = fmt.Errorf("policy v%d: rule %s (spec.revocation.autoSuspend): %w", c.policy.Version, r.Name, err)
			}
			continue
		}
		if b, ok := v.Value().(bool); ok && b {
			return r.PolicyRule, true, first
		}
	}
	return keyward.PolicyRule{}, false, first
}

// quietNow is the decision time of the quiet licenses lint tries rules on.
var quietNow = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

// quietStates are licenses in ordinary use: validated about once a minute
// from one machine (or without a fingerprint) and one network, no
// failures, with and without a machine limit. An autoSuspend rule true for
// any of them would suspend ordinary customers.
func quietStates() []activation {
	key := &Key{KID: "quiet-key", State: "active", Algorithm: "Ed25519", CreatedAt: quietNow.Add(-30 * 24 * time.Hour), ActivatedAt: quietNow.Add(-30 * 24 * time.Hour)}
	var out []activation
	for _, maxMachines := range []int{0, 1, 3} {
		for _, fps := range []int{0, 1} {
			l := &License{ID: "quiet", State: "active", Holder: "quiet", Entitlements: []string{}, MaxMachines: maxMachines, Machines: fps,
				CreatedAt: quietNow.Add(-30 * 24 * time.Hour), LastValidatedAt: quietNow}
			u := &Usage{ValidationsPerMinute: 1, DistinctFingerprints24h: fps, DistinctNetworks24h: 1}
			out = append(out, activation{license: l, key: key, usage: u, now: quietNow})
		}
	}
	return out
}

// autoSuspendGuards lints the automatic-suspension guards and rules.
func (l *linter) autoSuspendGuards() {
	p := l.p
	const rp = "spec.revocation."
	if c := p.AutoSuspendCooldown; c < MinAutoSuspendCooldown || c > MaxAutoSuspendCooldown {
		l.fail(rp+"autoSuspendCooldown", "%s: want %s to %s: a shorter cooldown lets a license a person reinstated flap back to suspended, a longer one leaves it unguarded for too long",
			l.dur(rp+"autoSuspendCooldown", c), formatDuration(MinAutoSuspendCooldown), formatDuration(MaxAutoSuspendCooldown))
	}
	if n := p.AutoSuspendCeiling; n < 0 || n > MaxAutoSuspendCeiling {
		l.fail(rp+"autoSuspendCeiling", "%d: want 0 (alerts only) to %d automatic suspensions per product per hour: beyond the ceiling a wrong rule would suspend customers faster than people can look", n, MaxAutoSuspendCeiling)
	}
	known := signalKinds(keyward.SignalKinds())
	seen := map[keyward.SignalKind]bool{}
	for i, k := range p.SuspendOnSignal {
		path := fmt.Sprintf("%ssuspendOnSignal[%d]", rp, i)
		switch {
		case !keyward.ValidSignalKind(k):
			l.fail(path, "%q is not a signal kind (known: %s)", k, strings.Join(known, ", "))
		case seen[k]:
			l.fail(path, "%s is listed twice", k)
		}
		seen[k] = true
	}
	if !l.d.Has(rp + "autoSuspend") {
		return // the built-in rules are checked by the package's tests
	}
	e, err := newEnv()
	if err != nil {
		return // rules() reports it
	}
	quiet := quietStates()
	for i, r := range p.AutoSuspend {
		at := fmt.Sprintf("%sautoSuspend[%d].when", rp, i)
		if r.When == "" {
			continue
		}
		checked, iss := e.Compile(r.When)
		if iss.Err() != nil || !checked.OutputType().IsExactType(cel.BoolType) {
			continue // rules() reports it
		}
		if !readsVariable(checked.NativeRep(), "usage") {
			l.fail(at, "reads no usage counter: an automatic suspension must be about what a license does, not what it is (use spec.licenses.retire, or suspend by hand)")
			continue
		}
		prg, err := e.Program(checked, cel.CostLimit(maxRuleCost))
		if err != nil {
			continue
		}
		for _, q := range quiet {
			v, _, err := prg.Eval(&q)
			if err != nil {
				continue
			}
			if b, ok := v.Value().(bool); ok && b {
				l.fail(at, "is true for a license in quiet, ordinary use (1 validation a minute, %d machine(s) of max_machines %d, 1 network, no failures): it would suspend every customer",
					q.usage.DistinctFingerprints24h, q.license.MaxMachines)
				break
			}
		}
	}
}
