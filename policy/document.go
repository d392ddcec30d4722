package policy

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"regexp"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/keyward/keyward"
)

// Identifiers of a LifecyclePolicy document.
const (
	APIVersion = "keyward.dev/v1"
	Kind       = "LifecyclePolicy"
)

// MaxDocumentBytes bounds a policy document; a real one is a few hundred bytes.
const MaxDocumentBytes = 32 << 10

// Problem is one thing wrong with a document, at a field path such as
// "spec.licenses.retire[0].when" ("" for the document as a whole).
type Problem struct {
	Path    string `json:"path"`
	Line    int    `json:"line,omitempty"` // 1-based; 0 when the field is absent
	Message string `json:"message"`
}

// String returns "path: message".
func (p Problem) String() string {
	if p.Path == "" {
		return p.Message
	}
	return p.Path + ": " + p.Message
}

// Problems is a list of problems that is also an error.
type Problems []Problem

func (ps Problems) Error() string {
	s := make([]string, len(ps))
	for i, p := range ps {
		s[i] = p.String()
	}
	return strings.Join(s, "; ")
}

// Document is a parsed LifecyclePolicy. Fields left out of the YAML hold
// their zero value here; Has tells which were given, and Policy fills the
// rest from the built-in default.
type Document struct {
	APIVersion string
	Kind       string
	Metadata   Metadata
	Spec       Spec

	lines map[string]int // field path → line, for every field present
}

// Metadata names the policy and the product it governs.
type Metadata struct {
	Name    string
	Product string // the product's name
}

// Spec is the body of the policy.
type Spec struct {
	SigningKeys SigningKeys
	Licenses    Licenses
	Revocation  Revocation
	Duties      Duties
	MFA         []string
}

// SigningKeys is spec.signingKeys.
type SigningKeys struct {
	Algorithm         string
	AllowedAlgorithms []string
	RotateEvery       time.Duration
	Prepublish        time.Duration
	VerifyWindow      time.Duration
	DestroyAfter      time.Duration
}

// Licenses is spec.licenses.
type Licenses struct {
	Duration       time.Duration
	CertificateTTL time.Duration
	LeaseTTL       time.Duration
	OfflineGrace   time.Duration
	MaxMachines    int
	ReissueGrace   time.Duration
	ExpiringNotice time.Duration
	Retire         []keyward.PolicyRule
}

// Revocation is spec.revocation.
type Revocation struct {
	Approvals           int
	AutoSuspend         []keyward.PolicyRule
	AutoSuspendCooldown time.Duration
	AutoSuspendCeiling  int
	SuspendOnSignal     []string
}

// Duties is spec.duties.
type Duties struct {
	Separate [][]string
}

// Has reports whether the field at path (e.g. "spec.licenses.leaseTTL")
// was given in the document.
func (d *Document) Has(path string) bool {
	_, ok := d.lines[path]
	return ok
}

// Line returns the line of the field at path, or 0 if it was not given.
func (d *Document) Line(path string) int { return d.lines[path] }

// Policy returns the effective policy the document describes: the
// built-in default with every given field replacing the default's value.
// Version and Hash are left for the caller (the store assigns them).
func (d *Document) Policy() *keyward.Policy {
	p := keyward.DefaultPolicy()
	p.Name, p.Product = d.Metadata.Name, d.Metadata.Product
	s := d.Spec
	set := func(path string, apply func()) {
		if d.Has(path) {
			apply()
		}
	}
	set("spec.signingKeys.algorithm", func() { p.Algorithm = s.SigningKeys.Algorithm })
	set("spec.signingKeys.allowedAlgorithms", func() { p.AllowedAlgorithms = s.SigningKeys.AllowedAlgorithms })
	set("spec.signingKeys.rotateEvery", func() { p.RotateEvery = s.SigningKeys.RotateEvery })
	set("spec.signingKeys.prepublish", func() { p.Prepublish = s.SigningKeys.Prepublish })
	set("spec.signingKeys.verifyWindow", func() { p.VerifyWindow = s.SigningKeys.VerifyWindow })
	set("spec.signingKeys.destroyAfter", func() { p.DestroyAfter = s.SigningKeys.DestroyAfter })
	set("spec.licenses.duration", func() { p.LicenseDuration = s.Licenses.Duration })
	set("spec.licenses.certificateTTL", func() { p.CertificateTTL = s.Licenses.CertificateTTL })
	set("spec.licenses.leaseTTL", func() { p.LeaseTTL = s.Licenses.LeaseTTL })
	set("spec.licenses.offlineGrace", func() { p.OfflineGrace = s.Licenses.OfflineGrace })
	set("spec.licenses.maxMachines", func() { p.MaxMachines = s.Licenses.MaxMachines })
	set("spec.licenses.reissueGrace", func() { p.ReissueGrace = s.Licenses.ReissueGrace })
	set("spec.licenses.expiringNotice", func() { p.ExpiringNotice = s.Licenses.ExpiringNotice })
	set("spec.licenses.retire", func() { p.Retire = s.Licenses.Retire })
	set("spec.revocation.approvals", func() { p.RevocationApprovals = s.Revocation.Approvals })
	set("spec.revocation.autoSuspend", func() { p.AutoSuspend = s.Revocation.AutoSuspend })
	set("spec.revocation.autoSuspendCooldown", func() { p.AutoSuspendCooldown = s.Revocation.AutoSuspendCooldown })
	set("spec.revocation.autoSuspendCeiling", func() { p.AutoSuspendCeiling = s.Revocation.AutoSuspendCeiling })
	set("spec.revocation.suspendOnSignal", func() {
		p.SuspendOnSignal = make([]keyward.SignalKind, len(s.Revocation.SuspendOnSignal))
		for i, k := range s.Revocation.SuspendOnSignal {
			p.SuspendOnSignal[i] = keyward.SignalKind(k)
		}
	})
	set("spec.duties.separate", func() { p.Duties = s.Duties.Separate })
	set("spec.mfa", func() { p.MFA = s.MFA })
	return p
}

// Parse reads a LifecyclePolicy document. It returns the document and
// every structural problem found (YAML syntax, apiVersion and kind,
// unknown, repeated or missing fields, wrong types, bad durations). The
// document is nil only when the text is not a YAML mapping at all; when
// problems are returned the document holds what could be read, so that
// Lint can report more.
func Parse(data []byte) (*Document, Problems) {
	if len(data) > MaxDocumentBytes {
		return nil, Problems{{Message: fmt.Sprintf("document is %d bytes, more than the %d allowed", len(data), MaxDocumentBytes)}}
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var root yaml.Node
	if err := dec.Decode(&root); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, Problems{{Message: "empty document: want a LifecyclePolicy"}}
		}
		return nil, Problems{yamlProblem(err)}
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		if err != nil {
			return nil, Problems{yamlProblem(err)}
		}
		return nil, Problems{{Line: extra.Line, Message: "more than one YAML document: want exactly one LifecyclePolicy"}}
	}
	n := &root
	if n.Kind == yaml.DocumentNode && len(n.Content) == 1 {
		n = n.Content[0]
	}
	if n.Kind != yaml.MappingNode {
		return nil, Problems{{Line: n.Line, Message: "want a YAML mapping with apiVersion, kind, metadata and spec"}}
	}
	p := &parser{doc: &Document{lines: map[string]int{}}}
	p.document(n)
	return p.doc, p.problems
}

var yamlLine = regexp.MustCompile(`^yaml: line (\d+): `)

// yamlProblem turns a YAML syntax error into a Problem with its line.
func yamlProblem(err error) Problem {
	msg := err.Error()
	if m := yamlLine.FindStringSubmatch(msg); m != nil {
		line, _ := strconv.Atoi(m[1])
		return Problem{Line: line, Message: "invalid YAML: " + strings.TrimPrefix(msg, m[0])}
	}
	return Problem{Message: "invalid YAML: " + strings.TrimPrefix(msg, "yaml: ")}
}

// parser walks the YAML tree, filling doc and collecting problems.
type parser struct {
	doc      *Document
	problems Problems
}

// fail records a problem at path. A field whose value could not be read
// counts as not given, so that Lint does not report it again.
func (p *parser) fail(path string, n *yaml.Node, format string, args ...any) {
	delete(p.doc.lines, path)
	line := 0
	if n != nil {
		line = n.Line
	}
	p.problems = append(p.problems, Problem{Path: path, Line: line, Message: fmt.Sprintf(format, args...)})
}

// field is one known key of a mapping and what to do with its value.
type field struct {
	name     string
	required bool
	parse    func(path string, n *yaml.Node)
}

func join(path, name string) string {
	if path == "" {
		return name
	}
	return path + "." + name
}

// resolve follows an alias to the node it names.
func resolve(n *yaml.Node) *yaml.Node {
	for n != nil && n.Kind == yaml.AliasNode {
		n = n.Alias
	}
	return n
}

func kindName(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.ScalarNode:
		if n.Tag == "!!null" {
			return "nothing"
		}
		return fmt.Sprintf("%q", n.Value)
	}
	return "something else"
}

// mapping checks n is a mapping with only known, unrepeated keys, records
// each key's line and parses each value.
func (p *parser) mapping(path string, n *yaml.Node, fields ...field) {
	n = resolve(n)
	if n.Kind != yaml.MappingNode {
		p.fail(path, n, "want a mapping, got %s", kindName(n))
		return
	}
	seen := map[string]bool{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := resolve(n.Content[i]), n.Content[i+1]
		name := k.Value
		fp := join(path, name)
		if k.Kind != yaml.ScalarNode {
			p.fail(path, k, "keys must be plain names")
			continue
		}
		if seen[name] {
			p.fail(fp, k, "field given twice")
			continue
		}
		seen[name] = true
		var f *field
		for j := range fields {
			if fields[j].name == name {
				f = &fields[j]
			}
		}
		if f == nil {
			p.fail(fp, k, "unknown field%s", suggest(name, fields))
			continue
		}
		p.doc.lines[fp] = k.Line
		if v := resolve(v); v.Kind == yaml.ScalarNode && v.Tag == "!!null" {
			p.fail(fp, k, "no value given")
			continue
		}
		f.parse(fp, v)
	}
	for _, f := range fields {
		if f.required && !seen[f.name] {
			p.fail(join(path, f.name), n, "required field missing")
		}
	}
}

// suggest names a known field that differs from name only in case, or
// lists the known fields.
func suggest(name string, fields []field) string {
	names := make([]string, len(fields))
	for i, f := range fields {
		if strings.EqualFold(f.name, name) {
			return fmt.Sprintf(" (did you mean %s?)", f.name)
		}
		names[i] = f.name
	}
	return " (known: " + strings.Join(names, ", ") + ")"
}

func (p *parser) scalar(path string, n *yaml.Node) (string, bool) {
	n = resolve(n)
	if n.Kind != yaml.ScalarNode || n.Tag == "!!null" {
		p.fail(path, n, "want a value, got %s", kindName(n))
		return "", false
	}
	return n.Value, true
}

func (p *parser) str(dst *string) func(string, *yaml.Node) {
	return func(path string, n *yaml.Node) {
		if s, ok := p.scalar(path, n); ok {
			*dst = s
		}
	}
}

func (p *parser) integer(dst *int) func(string, *yaml.Node) {
	return func(path string, n *yaml.Node) {
		s, ok := p.scalar(path, n)
		if !ok {
			return
		}
		v, err := strconv.Atoi(s)
		if err != nil || resolve(n).Tag != "!!int" {
			p.fail(path, n, "want a whole number, got %q", s)
			return
		}
		*dst = v
	}
}

func (p *parser) duration(dst *time.Duration) func(string, *yaml.Node) {
	return func(path string, n *yaml.Node) {
		s, ok := p.scalar(path, n)
		if !ok {
			return
		}
		d, err := keyward.ParseDuration(s)
		if err != nil {
			p.fail(path, n, "bad duration %q: want a number and a unit: d (days), h, m or s, e.g. 90d, 36h, 15m", s)
			return
		}
		*dst = d
	}
}

func (p *parser) list(dst *[]string) func(string, *yaml.Node) {
	return func(path string, n *yaml.Node) {
		n = resolve(n)
		if n.Kind != yaml.SequenceNode {
			p.fail(path, n, "want a list, got %s", kindName(n))
			return
		}
		out := []string{}
		for i, c := range n.Content {
			if s, ok := p.scalar(fmt.Sprintf("%s[%d]", path, i), c); ok {
				out = append(out, s)
			}
		}
		*dst = out
	}
}

func (p *parser) rules(dst *[]keyward.PolicyRule) func(string, *yaml.Node) {
	return func(path string, n *yaml.Node) {
		n = resolve(n)
		if n.Kind != yaml.SequenceNode {
			p.fail(path, n, "want a list of rules (name, when), got %s", kindName(n))
			return
		}
		out := make([]keyward.PolicyRule, len(n.Content))
		for i, c := range n.Content {
			r := &out[i]
			p.mapping(fmt.Sprintf("%s[%d]", path, i), c,
				field{"name", true, p.str(&r.Name)},
				field{"when", true, p.str(&r.When)},
			)
		}
		*dst = out
	}
}

func (p *parser) pairs(dst *[][]string) func(string, *yaml.Node) {
	return func(path string, n *yaml.Node) {
		n = resolve(n)
		if n.Kind != yaml.SequenceNode {
			p.fail(path, n, "want a list of permission pairs, got %s", kindName(n))
			return
		}
		out := [][]string{}
		for i, c := range n.Content {
			var pair []string
			p.list(&pair)(fmt.Sprintf("%s[%d]", path, i), c)
			out = append(out, pair)
		}
		*dst = out
	}
}

func (p *parser) document(n *yaml.Node) {
	d := p.doc
	p.mapping("", n,
		field{"apiVersion", true, func(path string, n *yaml.Node) {
			if s, ok := p.scalar(path, n); ok {
				d.APIVersion = s
				if s != APIVersion {
					p.fail(path, n, "%q is not supported: want %s", s, APIVersion)
				}
			}
		}},
		field{"kind", true, func(path string, n *yaml.Node) {
			if s, ok := p.scalar(path, n); ok {
				d.Kind = s
				if s != Kind {
					p.fail(path, n, "%q is not a policy: want %s", s, Kind)
				}
			}
		}},
		field{"metadata", true, func(path string, n *yaml.Node) {
			p.mapping(path, n,
				field{"name", true, p.str(&d.Metadata.Name)},
				field{"product", true, p.str(&d.Metadata.Product)},
			)
		}},
		field{"spec", true, func(path string, n *yaml.Node) {
			s := &d.Spec
			p.mapping(path, n,
				field{"signingKeys", false, func(path string, n *yaml.Node) {
					k := &s.SigningKeys
					p.mapping(path, n,
						field{"algorithm", false, p.str(&k.Algorithm)},
						field{"allowedAlgorithms", false, p.list(&k.AllowedAlgorithms)},
						field{"rotateEvery", false, p.duration(&k.RotateEvery)},
						field{"prepublish", false, p.duration(&k.Prepublish)},
						field{"verifyWindow", false, p.duration(&k.VerifyWindow)},
						field{"destroyAfter", false, p.duration(&k.DestroyAfter)},
					)
				}},
				field{"licenses", false, func(path string, n *yaml.Node) {
					l := &s.Licenses
					p.mapping(path, n,
						field{"duration", false, p.duration(&l.Duration)},
						field{"certificateTTL", false, p.duration(&l.CertificateTTL)},
						field{"leaseTTL", false, p.duration(&l.LeaseTTL)},
						field{"offlineGrace", false, p.duration(&l.OfflineGrace)},
						field{"maxMachines", false, p.integer(&l.MaxMachines)},
						field{"reissueGrace", false, p.duration(&l.ReissueGrace)},
						field{"expiringNotice", false, p.duration(&l.ExpiringNotice)},
						field{"retire", false, p.rules(&l.Retire)},
					)
				}},
				field{"revocation", false, func(path string, n *yaml.Node) {
					r := &s.Revocation
					p.mapping(path, n,
						field{"approvals", false, p.integer(&r.Approvals)},
						field{"autoSuspend", false, p.rules(&r.AutoSuspend)},
						field{"autoSuspendCooldown", false, p.duration(&r.AutoSuspendCooldown)},
						field{"autoSuspendCeiling", false, p.integer(&r.AutoSuspendCeiling)},
						field{"suspendOnSignal", false, p.list(&r.SuspendOnSignal)},
					)
				}},
				field{"duties", false, func(path string, n *yaml.Node) {
					p.mapping(path, n, field{"separate", false, p.pairs(&s.Duties.Separate)})
				}},
				field{"mfa", false, p.list(&s.MFA)},
			)
		}},
	)
}
