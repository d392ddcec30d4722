package policy

import (
	"bytes"
	"strconv"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/keyward/keyward"
)

// Format writes p as a LifecyclePolicy document that Parse reads back to
// the same values, in the layout of spec section 5. It is how the built-in
// default is shown (`keyward policy show` with no product, or version 0).
func Format(p *keyward.Policy) []byte {
	str := func(s string) *yaml.Node { return &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: s} }
	num := func(n int) *yaml.Node { return &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!int", Value: strconv.Itoa(n)} }
	dur := func(d time.Duration) *yaml.Node { return str(formatDuration(d)) }
	flow := func(items ...string) *yaml.Node {
		n := &yaml.Node{Kind: yaml.SequenceNode, Style: yaml.FlowStyle}
		for _, s := range items {
			n.Content = append(n.Content, str(s))
		}
		return n
	}
	mapping := func(style yaml.Style, kv ...any) *yaml.Node {
		n := &yaml.Node{Kind: yaml.MappingNode, Style: style}
		for i := 0; i+1 < len(kv); i += 2 {
			k := str(kv[i].(string))
			v := kv[i+1].(*yaml.Node)
			n.Content = append(n.Content, k, v)
		}
		return n
	}
	rules := func(rs []keyward.PolicyRule) *yaml.Node {
		n := &yaml.Node{Kind: yaml.SequenceNode}
		for _, r := range rs {
			n.Content = append(n.Content, mapping(0, "name", str(r.Name), "when", str(r.When)))
		}
		return n
	}
	duties := &yaml.Node{Kind: yaml.SequenceNode, Style: yaml.FlowStyle}
	for _, pair := range p.Duties {
		duties.Content = append(duties.Content, flow(pair...))
	}
	name := p.Name
	if name == "" {
		name = "default"
	}
	licenses := []any{}
	if p.LicenseDuration > 0 {
		licenses = append(licenses, "duration", dur(p.LicenseDuration))
	}
	licenses = append(licenses,
		"certificateTTL", dur(p.CertificateTTL),
		"leaseTTL", dur(p.LeaseTTL),
		"offlineGrace", dur(p.OfflineGrace),
		"maxMachines", num(p.MaxMachines),
		"reissueGrace", dur(p.ReissueGrace),
		"expiringNotice", dur(p.ExpiringNotice),
		"retire", rules(p.Retire),
	)
	doc := mapping(0,
		"apiVersion", str(APIVersion),
		"kind", str(Kind),
		"metadata", mapping(yaml.FlowStyle, "name", str(name), "product", str(p.Product)),
		"spec", mapping(0,
			"signingKeys", mapping(0,
				"algorithm", str(p.Algorithm),
				"allowedAlgorithms", flow(p.AllowedAlgorithms...),
				"rotateEvery", dur(p.RotateEvery),
				"prepublish", dur(p.Prepublish),
				"verifyWindow", dur(p.VerifyWindow),
				"destroyAfter", dur(p.DestroyAfter),
			),
			"licenses", mapping(0, licenses...),
			"revocation", mapping(0,
				"approvals", num(p.RevocationApprovals),
				"autoSuspend", rules(p.AutoSuspend),
				"autoSuspendCooldown", dur(p.AutoSuspendCooldown),
				"autoSuspendCeiling", num(p.AutoSuspendCeiling),
				"suspendOnSignal", flow(signalKinds(p.SuspendOnSignal)...),
			),
			"duties", mapping(0, "separate", duties),
			"mfa", flow(p.MFA...),
		),
	)
	var b bytes.Buffer
	enc := yaml.NewEncoder(&b)
	enc.SetIndent(2)
	if err := enc.Encode(doc); err != nil {
		// Encoding a tree of scalars, sequences and mappings cannot fail.
		panic("policy: format: " + err.Error())
	}
	_ = enc.Close()
	return b.Bytes()
}

// formatDuration writes d in the largest unit that divides it, days only
// from a week up (as people write them): "90d", "72h", "15m", "30s";
// time.Duration's form otherwise.
func formatDuration(d time.Duration) string {
	const day = 24 * time.Hour
	if d >= 7*day && d%day == 0 {
		return strconv.FormatInt(int64(d/day), 10) + "d"
	}
	for _, u := range []struct {
		d    time.Duration
		name string
	}{{time.Hour, "h"}, {time.Minute, "m"}, {time.Second, "s"}} {
		if d != 0 && d%u.d == 0 {
			return strconv.FormatInt(int64(d/u.d), 10) + u.name
		}
	}
	if d == 0 {
		return "0s"
	}
	return d.String()
}
