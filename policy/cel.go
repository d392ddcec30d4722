package policy

import (
	"fmt"
	"reflect"
	"time"

	"cel.dev/cel-go/cel"
	"cel.dev/cel-go/common/ast"
	"cel.dev/cel-go/common/env"
	"cel.dev/cel-go/common/types"
	"cel.dev/cel-go/common/types/ref"
	"cel.dev/cel-go/ext"

	"github.com/keyward/keyward"
)

// The CEL environment of rules. Variables:
//
//	license  License  the license the rule is about
//	key      Key      the product's active signing key (zero if none)
//	usage    Usage    the license's recent usage counters
//	now      timestamp
//
// Functions: CEL's standard library, where duration(string) also accepts
// days ("180d", "1d12h"), as policy durations do.

// License is a license as rules see it (CEL variable license) and as test
// cases give it. Times that are not known are the zero time, for which
// CEL's has() is false.
type License struct {
	ID           string    `cel:"id" yaml:"id"`
	State        string    `cel:"state" yaml:"state"`
	Holder       string    `cel:"holder" yaml:"holder"`
	Entitlements []string  `cel:"entitlements" yaml:"entitlements"`
	MaxMachines  int       `cel:"max_machines" yaml:"max_machines"` // 0 = no limit
	Machines     int       `cel:"machines" yaml:"machines"`         // machines activated now
	CreatedAt    time.Time `cel:"created_at" yaml:"created_at"`
	// ExpiresAt is zero for a perpetual license: test with has(license.expires_at).
	ExpiresAt time.Time `cel:"expires_at" yaml:"expires_at"`
	// LastValidatedAt is the last successful validation, or CreatedAt for a
	// license never validated (so "inactive since" rules count from issue).
	LastValidatedAt time.Time `cel:"last_validated_at" yaml:"last_validated_at"`
}

// Key is a signing key as rules see it (CEL variable key) and as Decide
// and test cases take it.
type Key struct {
	KID         string    `cel:"kid" yaml:"kid"`
	State       string    `cel:"state" yaml:"state"`
	Algorithm   string    `cel:"algorithm" yaml:"algorithm"`
	CreatedAt   time.Time `cel:"created_at" yaml:"created_at"`
	ActivatedAt time.Time `cel:"activated_at" yaml:"activated_at"`
	RetiredAt   time.Time `cel:"retired_at" yaml:"retired_at"`
}

// Usage is a license's recent usage (CEL variable usage). The counters are
// kept by the server on the validation path; missing counters are 0.
type Usage struct {
	ValidationsPerMinute    int `cel:"validations_per_minute" yaml:"validations_per_minute"`       // successful and failed, sliding minute
	DistinctFingerprints24h int `cel:"distinct_fingerprints_24h" yaml:"distinct_fingerprints_24h"` // machine fingerprints seen in 24 h
	FailedValidationsInRow  int `cel:"failed_validations_in_row" yaml:"failed_validations_in_row"` // failures since the last success
	DistinctNetworks24h     int `cel:"distinct_networks_24h" yaml:"distinct_networks_24h"`         // source /24 (IPv4) or /48 (IPv6) networks in 24 h
}

// KeyOf returns the engine's view of a signing key.
func KeyOf(k *keyward.SigningKey) Key {
	out := Key{KID: k.KID, State: string(k.State), Algorithm: k.Algorithm, CreatedAt: k.CreatedAt}
	if k.ActivatedAt != nil {
		out.ActivatedAt = *k.ActivatedAt
	}
	if k.RetiredAt != nil {
		out.RetiredAt = *k.RetiredAt
	}
	return out
}

// LicenseOf returns the engine's view of a license with machines activated
// machines.
func LicenseOf(l *keyward.License, machines int) License {
	out := License{
		ID: l.ID, State: string(l.State), Holder: l.Holder, Entitlements: l.Entitlements,
		MaxMachines: l.MaxMachines, Machines: machines, CreatedAt: l.CreatedAt, LastValidatedAt: l.CreatedAt,
	}
	if out.Entitlements == nil {
		out.Entitlements = []string{}
	}
	if l.ExpiresAt != nil {
		out.ExpiresAt = *l.ExpiresAt
	}
	if l.LastValidatedAt != nil {
		out.LastValidatedAt = *l.LastValidatedAt
	}
	return out
}

// Bounds on rules: the expression's size when parsed and the cost of one
// evaluation (CEL's cost units, about one per operation), so that no rule
// can make validation or the scheduler slow.
const (
	maxRuleChars = 2048
	maxRuleCost  = 10000
)

// newEnv returns the CEL environment rules compile in.
func newEnv() (*cel.Env, error) {
	noStdDuration := env.NewLibrarySubset().AddExcludedFunctions(
		env.NewFunction("duration", &env.Overload{ID: "string_to_duration"}))
	return cel.NewCustomEnv(
		cel.StdLib(cel.StdLibSubset(noStdDuration)),
		ext.NativeTypes(reflect.TypeFor[License](), reflect.TypeFor[Key](), reflect.TypeFor[Usage](), ext.ParseStructTags(true)),
		cel.Variable("license", cel.ObjectType("policy.License")),
		cel.Variable("key", cel.ObjectType("policy.Key")),
		cel.Variable("usage", cel.ObjectType("policy.Usage")),
		cel.Variable("now", cel.TimestampType),
		cel.Function("duration", cel.Overload("string_to_duration_with_days", []*cel.Type{cel.StringType}, cel.DurationType,
			cel.UnaryBinding(func(v ref.Val) ref.Val {
				s, ok := v.(types.String)
				if !ok {
					return types.MaybeNoSuchOverloadErr(v)
				}
				d, err := keyward.ParseDuration(string(s))
				if err != nil {
					return types.NewErr("duration(%q): want e.g. \"180d\", \"36h\", \"15m\"", string(s))
				}
				return types.Duration{Duration: d}
			}))),
		cel.ParserExpressionSizeLimit(maxRuleChars),
	)
}

// rule is a compiled rule.
type rule struct {
	keyward.PolicyRule
	prg cel.Program
}

// compileRules compiles rules found at path (e.g. "spec.licenses.retire"),
// returning the programs and a problem for each rule that does not compile,
// is not of type bool, or calls duration or timestamp with a literal that
// cannot be read.
func compileRules(e *cel.Env, path string, rules []keyward.PolicyRule) ([]rule, Problems) {
	var out []rule
	var problems Problems
	for i, r := range rules {
		at := fmt.Sprintf("%s[%d].when", path, i)
		if r.When == "" {
			continue // Lint reports the missing expression
		}
		checked, iss := e.Compile(r.When)
		if iss.Err() != nil {
			problems = append(problems, Problem{Path: at, Message: "CEL does not compile: " + iss.Err().Error()})
			continue
		}
		if !checked.OutputType().IsExactType(cel.BoolType) {
			problems = append(problems, Problem{Path: at, Message: fmt.Sprintf("CEL expression is of type %s: want bool", checked.OutputType())})
			continue
		}
		if ps := checkLiterals(checked.NativeRep(), at); len(ps) > 0 {
			problems = append(problems, ps...)
			continue
		}
		prg, err := e.Program(checked, cel.CostLimit(maxRuleCost), cel.EvalOptions(cel.OptOptimize))
		if err != nil {
			problems = append(problems, Problem{Path: at, Message: "CEL does not compile: " + err.Error()})
			continue
		}
		out = append(out, rule{PolicyRule: r, prg: prg})
	}
	return out, problems
}

// checkLiterals reports duration("…") and timestamp("…") calls whose
// literal argument would fail at evaluation time.
func checkLiterals(a *ast.AST, path string) Problems {
	var problems Problems
	root := ast.NavigateAST(a)
	for _, fn := range []string{"duration", "timestamp"} {
		for _, call := range ast.MatchDescendants(root, ast.FunctionMatcher(fn)) {
			args := call.AsCall().Args()
			if len(args) != 1 || args[0].Kind() != ast.LiteralKind {
				continue
			}
			s, ok := args[0].AsLiteral().(types.String)
			if !ok {
				continue
			}
			switch fn {
			case "duration":
				if _, err := keyward.ParseDuration(string(s)); err != nil {
					problems = append(problems, Problem{Path: path, Message: fmt.Sprintf("duration(%q): want a number and a unit: d, h, m or s, e.g. \"180d\"", string(s))})
				}
			case "timestamp":
				if _, err := time.Parse(time.RFC3339, string(s)); err != nil {
					problems = append(problems, Problem{Path: path, Message: fmt.Sprintf("timestamp(%q): want RFC 3339, e.g. \"2026-01-31T00:00:00Z\"", string(s))})
				}
			}
		}
	}
	return problems
}
