package policy

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/keyward/keyward"
)

// TestKind is the kind of a policy test-case file.
const TestKind = "LifecyclePolicyTest"

// Case is one policy test: a state at a time, and the decisions expected.
type Case struct {
	Name    string   `yaml:"name"`
	Now     string   `yaml:"now"` // RFC 3339
	Keys    []Key    `yaml:"keys"`
	License *License `yaml:"license"`
	Usage   Usage    `yaml:"usage"`
	// Expect lists the decisions expected, each "action", "action target"
	// or a mapping {action, target, rule}; "none" or [] for no decision.
	Expect Expectations `yaml:"expect"`

	now time.Time
}

// Expectation is one expected decision; empty Target and Rule match any.
type Expectation struct {
	Action Action `yaml:"action"`
	Target string `yaml:"target"`
	Rule   string `yaml:"rule"`
}

func (e Expectation) String() string {
	s := string(e.Action)
	if e.Target != "" {
		s += " " + e.Target
	}
	if e.Rule != "" {
		s += " (" + e.Rule + ")"
	}
	return s
}

func (e Expectation) matches(d Decision) bool {
	return e.Action == d.Action && (e.Target == "" || e.Target == d.Target) && (e.Rule == "" || e.Rule == d.Rule)
}

// Expectations is a case's expect field.
type Expectations struct {
	List []Expectation
	set  bool
}

// UnmarshalYAML reads "none", a list of "action [target]" strings, or a
// list of {action, target, rule} mappings.
func (es *Expectations) UnmarshalYAML(n *yaml.Node) error {
	es.set = true
	if n.Kind == yaml.ScalarNode && n.Value == "none" {
		return nil
	}
	if n.Kind != yaml.SequenceNode {
		return fmt.Errorf("line %d: expect: want none or a list of decisions", n.Line)
	}
	for _, c := range n.Content {
		var e Expectation
		switch c.Kind {
		case yaml.ScalarNode:
			action, target, _ := strings.Cut(strings.TrimSpace(c.Value), " ")
			e = Expectation{Action: Action(action), Target: strings.TrimSpace(target)}
		case yaml.MappingNode:
			dec := map[string]*string{"action": (*string)(&e.Action), "target": &e.Target, "rule": &e.Rule}
			for i := 0; i+1 < len(c.Content); i += 2 {
				k, v := c.Content[i], c.Content[i+1]
				dst, ok := dec[k.Value]
				if !ok {
					return fmt.Errorf("line %d: expect: unknown field %q (want action, target, rule)", k.Line, k.Value)
				}
				if v.Kind != yaml.ScalarNode {
					return fmt.Errorf("line %d: expect: %s: want a string", v.Line, k.Value)
				}
				*dst = v.Value
			}
		default:
			return fmt.Errorf("line %d: expect: want a decision such as rotate, \"activate k2\" or {action: destroy, target: k1}", c.Line)
		}
		if !slices.Contains(Actions(), e.Action) {
			return fmt.Errorf("line %d: expect: unknown action %q (want one of %v, or none)", c.Line, e.Action, Actions())
		}
		es.List = append(es.List, e)
	}
	return nil
}

type caseFile struct {
	APIVersion string `yaml:"apiVersion"`
	Kind       string `yaml:"kind"`
	Cases      []Case `yaml:"cases"`
}

// ParseCases reads a test-case file (apiVersion keyward.dev/v1, kind
// LifecyclePolicyTest, cases: [...]) strictly: unknown fields, bad times,
// unknown states or actions, and repeated case names are errors.
func ParseCases(data []byte) ([]Case, error) {
	if len(data) > 4<<20 {
		return nil, fmt.Errorf("cases file is larger than 4 MiB")
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	var f caseFile
	if err := dec.Decode(&f); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, errors.New("empty cases file")
		}
		return nil, fmt.Errorf("cases: %w", err)
	}
	if f.APIVersion != APIVersion || f.Kind != TestKind {
		return nil, fmt.Errorf("cases: want apiVersion %s and kind %s, got %q and %q", APIVersion, TestKind, f.APIVersion, f.Kind)
	}
	if len(f.Cases) == 0 {
		return nil, errors.New("cases: no cases")
	}
	names := map[string]bool{}
	for i := range f.Cases {
		c := &f.Cases[i]
		where := fmt.Sprintf("cases[%d]", i)
		if c.Name == "" {
			return nil, fmt.Errorf("%s: name is required", where)
		}
		where = fmt.Sprintf("case %q", c.Name)
		if names[c.Name] {
			return nil, fmt.Errorf("%s: name used twice", where)
		}
		names[c.Name] = true
		t, err := time.Parse(time.RFC3339, c.Now)
		if err != nil {
			return nil, fmt.Errorf("%s: now %q: want an RFC 3339 time such as 2026-01-31T00:00:00Z", where, c.Now)
		}
		c.now = t
		if !c.Expect.set {
			return nil, fmt.Errorf("%s: expect is required (none, or a list of decisions)", where)
		}
		kids := map[string]bool{}
		for j, k := range c.Keys {
			if k.KID == "" || kids[k.KID] {
				return nil, fmt.Errorf("%s: keys[%d]: want a unique kid", where, j)
			}
			kids[k.KID] = true
			if !slices.Contains(keyward.KeyStates(), keyward.KeyState(k.State)) {
				return nil, fmt.Errorf("%s: key %s: unknown state %q (want one of %v)", where, k.KID, k.State, keyward.KeyStates())
			}
		}
		if l := c.License; l != nil {
			if l.ID == "" {
				l.ID = "license"
			}
			if !slices.Contains(keyward.LicenseStates(), keyward.LicenseState(l.State)) {
				return nil, fmt.Errorf("%s: license: unknown state %q (want one of %v)", where, l.State, keyward.LicenseStates())
			}
			if l.LastValidatedAt.IsZero() {
				l.LastValidatedAt = l.CreatedAt
			}
			if l.Entitlements == nil {
				l.Entitlements = []string{}
			}
		}
		if c.Keys == nil && c.License == nil {
			return nil, fmt.Errorf("%s: give keys, a license, or both", where)
		}
	}
	return f.Cases, nil
}

// CaseResult is the outcome of one case.
type CaseResult struct {
	Name string
	Pass bool
	Want []Expectation
	Got  []Decision
	Err  error // a rule failed to evaluate
}

// RunCases decides every case under c and compares with its expectations:
// a case passes when each expected decision matches a distinct decision
// and no decision is left over.
func RunCases(c *Compiled, cases []Case) []CaseResult {
	out := make([]CaseResult, 0, len(cases))
	for _, tc := range cases {
		st := State{Keys: tc.Keys, Usage: tc.Usage}
		if tc.License != nil {
			l := *tc.License
			st.License = &l
		}
		got, err := c.Decide(st, tc.now)
		r := CaseResult{Name: tc.Name, Want: tc.Expect.List, Got: got, Err: err}
		r.Pass = err == nil && match(tc.Expect.List, got)
		out = append(out, r)
	}
	return out
}

// match reports whether want and got pair up one to one. More specific
// expectations pick first, so "retire k1" is not starved by "retire".
func match(want []Expectation, got []Decision) bool {
	if len(want) != len(got) {
		return false
	}
	w := slices.Clone(want)
	spec := func(e Expectation) int {
		n := 0
		if e.Target != "" {
			n++
		}
		if e.Rule != "" {
			n++
		}
		return n
	}
	slices.SortStableFunc(w, func(a, b Expectation) int { return spec(b) - spec(a) })
	used := make([]bool, len(got))
	for _, e := range w {
		found := false
		for i, d := range got {
			if !used[i] && e.matches(d) {
				used[i], found = true, true
				break
			}
		}
		if !found {
			return false
		}
	}
	return true
}
