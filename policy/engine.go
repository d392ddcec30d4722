package policy

import (
	"fmt"
	"slices"
	"time"

	"github.com/keyward/keyward"
)

// Compiled is a policy ready to decide: its values and its CEL programs,
// compiled once. It is immutable and safe for concurrent use.
type Compiled struct {
	policy      keyward.Policy
	retire      []rule
	autoSuspend []rule
}

// Compile compiles p's rules. It fails with Problems naming each rule that
// does not compile or is not of type bool; Lint reports the same problems
// with lines, and more.
func Compile(p *keyward.Policy) (*Compiled, error) {
	e, err := newEnv()
	if err != nil {
		return nil, fmt.Errorf("policy: CEL environment: %w", err)
	}
	c := &Compiled{policy: *p}
	var ps, ps2 Problems
	c.retire, ps = compileRules(e, "spec.licenses.retire", p.Retire)
	c.autoSuspend, ps2 = compileRules(e, "spec.revocation.autoSuspend", p.AutoSuspend)
	if ps = append(ps, ps2...); len(ps) > 0 {
		return nil, ps
	}
	return c, nil
}

// Policy returns a copy of the compiled policy's values. Its slices are
// shared with the compiled policy and MUST NOT be modified.
func (c *Compiled) Policy() *keyward.Policy {
	p := c.policy
	return &p
}

// Version returns the policy version (0 for the built-in default).
func (c *Compiled) Version() int { return c.policy.Version }

// Action is what a decision asks for.
type Action string

// Actions. Key actions target a signing key (rotate: the ring, since the
// key does not exist yet); license actions target a license.
const (
	ActionRotate        Action = "rotate"         // generate a pending successor of the ring's active key
	ActionActivate      Action = "activate"       // make a pending key active
	ActionRetire        Action = "retire"         // make the active key verify-only (with an activation)
	ActionDestroy       Action = "destroy"        // erase a retired key's private material
	ActionExpire        Action = "expire"         // a license past its expiry
	ActionRetireLicense Action = "retire-license" // a licenses.retire rule matched
	ActionAutoSuspend   Action = "auto-suspend"   // a revocation.autoSuspend rule matched
)

// Actions lists every action in a stable order.
func Actions() []Action {
	return []Action{ActionRotate, ActionActivate, ActionRetire, ActionDestroy, ActionExpire, ActionRetireLicense, ActionAutoSuspend}
}

// Names of the built-in timing rules, as they appear in Decision.Rule and
// audit entries next to the names of CEL rules.
const (
	RuleRotateEvery  = "rotateEvery"  // rotation and activation cadence
	RuleNoActiveKey  = "noActiveKey"  // a ring without an active key is repaired at once
	RuleDestroyAfter = "destroyAfter" // destruction of retired keys
	RuleExpiry       = "expiry"       // a license's expires_at
	// RuleExpiringNotice is the lead time of license.expiring notices
	// (licenses.expiringNotice; see ExpiringNotice).
	RuleExpiringNotice = "expiringNotice"
)

// ActionNotifyExpiring announces a license's coming expiry. ExpiringNotice
// returns it; Decide never does (it is a notice, not a state change), so it
// is not among Actions and policy test cases cannot expect it.
const ActionNotifyExpiring Action = "notify-expiring"

// Decision is one action that is due. The authority (scheduler, validation
// path) carries it out and records PolicyVersion and Rule in the audit
// entry.
type Decision struct {
	Action        Action    `json:"action"`
	Target        string    `json:"target,omitempty"` // kid or license id; "" for rotate
	Rule          string    `json:"rule"`             // RuleRotateEvery, … or a CEL rule's name
	Reason        string    `json:"reason"`           // human-readable rationale
	Due           time.Time `json:"due"`              // when it became due (now for CEL rules)
	PolicyVersion int       `json:"policy_version"`
}

// String returns e.g. "activate k2 (rotateEvery)".
func (d Decision) String() string {
	s := string(d.Action)
	if d.Target != "" {
		s += " " + d.Target
	}
	return s + " (" + d.Rule + ")"
}

// State is what Decide looks at: one ring's signing keys, and/or one
// license with its usage. Give only what the decision is about: with no
// keys no key decisions are taken, with no license no license decisions.
type State struct {
	Keys    []Key
	License *License
	Usage   Usage
}

// Decide returns every action due at now for s under the policy, in a
// stable order: key decisions first, then at most one license decision.
// It reads nothing but its arguments.
//
// Signing keys of one ring (T = the active key's activation time):
//   - no pending successor and now >= T + rotateEvery - prepublish:
//     rotate (the new key is published prepublish before it signs);
//   - a pending key P and now >= max(T + rotateEvery, P.created_at +
//     prepublish): activate P and retire the active key (one step: the
//     ring never has zero or two active keys). The newest pending key is
//     the successor;
//   - no active key: activate the newest pending key, or rotate if there
//     is none, at once (rule noActiveKey);
//   - a retired key R with now >= R.retired_at + destroyAfter: destroy R.
//
// A license (only from active, as the license state table allows):
//   - expires_at set and now >= expires_at: expire (rule expiry);
//   - else the first licenses.retire rule that is true: retire-license;
//   - else the first revocation.autoSuspend rule that is true: auto-suspend.
//
// If a rule fails to evaluate, Decide returns the decisions taken so far
// and an error naming the rule.
func (c *Compiled) Decide(s State, now time.Time) ([]Decision, error) {
	var out []Decision
	add := func(a Action, target, rule string, due time.Time, format string, args ...any) {
		out = append(out, Decision{Action: a, Target: target, Rule: rule, Due: due, Reason: fmt.Sprintf(format, args...), PolicyVersion: c.policy.Version})
	}
	p := &c.policy
	active := c.decideKeys(s.Keys, now, add)
	if s.License == nil {
		return out, nil
	}
	l := s.License
	if _, err := keyward.LicenseTransition(keyward.LicenseState(l.State), keyward.LicenseExpire); err == nil &&
		!l.ExpiresAt.IsZero() && !now.Before(l.ExpiresAt) {
		add(ActionExpire, l.ID, RuleExpiry, l.ExpiresAt, "license %s expired at %s", l.ID, l.ExpiresAt.UTC().Format(time.RFC3339))
		return out, nil
	}
	if keyward.LicenseState(l.State) != keyward.LicenseActive {
		return out, nil
	}
	vars := map[string]any{"license": l, "key": &active, "usage": &s.Usage, "now": now}
	for _, set := range []struct {
		action Action
		rules  []rule
		path   string
	}{{ActionRetireLicense, c.retire, "spec.licenses.retire"}, {ActionAutoSuspend, c.autoSuspend, "spec.revocation.autoSuspend"}} {
		for _, r := range set.rules {
			v, _, err := r.prg.Eval(vars)
			if err != nil {
				return out, fmt.Errorf("policy v%d: rule %s (%s): %w", p.Version, r.Name, set.path, err)
			}
			if b, ok := v.Value().(bool); ok && b {
				add(set.action, l.ID, r.Name, now, "%s rule %s matched: %s", set.path, r.Name, r.When)
				return out, nil
			}
		}
	}
	return out, nil
}

// decideKeys adds the key decisions due at now and returns the active key
// (zero if none).
func (c *Compiled) decideKeys(keys []Key, now time.Time, add func(Action, string, string, time.Time, string, ...any)) Key {
	cands, active := c.keyCandidates(keys, now, false)
	for _, d := range cands {
		if !now.Before(d.Due) {
			add(d.Action, d.Target, d.Rule, d.Due, "%s", d.Reason)
		}
	}
	if active == nil {
		return Key{}
	}
	return *active
}

// Upcoming returns the key decisions of one ring that are due at now or
// will fall due later if nothing else changes, ordered by due time (stable):
// what Decide will return, and when. It adds what follows from decisions
// not taken yet: after a rotate, the activation of the successor (Target
// "", not generated yet) and the retirement of the active key at rotateEvery,
// and the destruction of the key being retired destroyAfter later. It
// reads nothing but its arguments.
func (c *Compiled) Upcoming(keys []Key, now time.Time) []Decision {
	cands, _ := c.keyCandidates(keys, now, true)
	slices.SortStableFunc(cands, func(a, b Decision) int { return a.Due.Compare(b.Due) })
	return cands
}

// keyCandidates returns the key decisions of one ring with their due
// times, due or not, in Decide's order, and the active key. With project,
// it adds the decisions that follow from those not taken yet.
func (c *Compiled) keyCandidates(keys []Key, now time.Time, project bool) ([]Decision, *Key) {
	p := &c.policy
	var out []Decision
	add := func(a Action, target, rule string, due time.Time, format string, args ...any) {
		out = append(out, Decision{Action: a, Target: target, Rule: rule, Due: due, Reason: fmt.Sprintf(format, args...), PolicyVersion: p.Version})
	}
	var active, pending *Key
	for i := range keys {
		k := &keys[i]
		switch keyward.KeyState(k.State) {
		case keyward.KeyActive:
			if active == nil || k.ActivatedAt.After(active.ActivatedAt) {
				active = k
			}
		case keyward.KeyPending:
			if pending == nil || k.CreatedAt.After(pending.CreatedAt) || (k.CreatedAt.Equal(pending.CreatedAt) && k.KID > pending.KID) {
				pending = k
			}
		}
	}
	switch {
	case len(keys) == 0:
	case active == nil && pending != nil:
		add(ActionActivate, pending.KID, RuleNoActiveKey, now, "the ring has no active key: activate pending key %s at once", pending.KID)
	case active == nil:
		add(ActionRotate, "", RuleNoActiveKey, now, "the ring has no active or pending key: generate one at once")
	default:
		since := active.ActivatedAt
		if since.IsZero() {
			since = active.CreatedAt
		}
		due := since.Add(p.RotateEvery)
		if pending == nil {
			add(ActionRotate, "", RuleRotateEvery, due.Add(-p.Prepublish), "active key %s reaches rotateEvery %s at %s: pre-publish its successor %s ahead",
				active.KID, formatDuration(p.RotateEvery), due.UTC().Format(time.RFC3339), formatDuration(p.Prepublish))
			if project {
				add(ActionActivate, "", RuleRotateEvery, due, "the successor generated at rotation takes over from %s (projected)", active.KID)
				add(ActionRetire, active.KID, RuleRotateEvery, due, "active key %s is superseded and becomes verify-only (projected)", active.KID)
				add(ActionDestroy, active.KID, RuleDestroyAfter, due.Add(p.DestroyAfter), "key %s passes destroyAfter %s after its retirement (projected)",
					active.KID, formatDuration(p.DestroyAfter))
			}
			break
		}
		at := due
		if pub := pending.CreatedAt.Add(p.Prepublish); pub.After(at) {
			at = pub
		}
		add(ActionActivate, pending.KID, RuleRotateEvery, at, "pending key %s takes over from %s: rotateEvery %s elapsed and it was published %s ahead",
			pending.KID, active.KID, formatDuration(p.RotateEvery), formatDuration(p.Prepublish))
		add(ActionRetire, active.KID, RuleRotateEvery, at, "active key %s is superseded by %s and becomes verify-only", active.KID, pending.KID)
		if project {
			add(ActionDestroy, active.KID, RuleDestroyAfter, at.Add(p.DestroyAfter), "key %s passes destroyAfter %s after its retirement (projected)",
				active.KID, formatDuration(p.DestroyAfter))
		}
	}
	var retired []*Key
	for i := range keys {
		if keyward.KeyState(keys[i].State) == keyward.KeyRetired && !keys[i].RetiredAt.IsZero() {
			retired = append(retired, &keys[i])
		}
	}
	slices.SortFunc(retired, func(a, b *Key) int { return a.RetiredAt.Compare(b.RetiredAt) })
	for _, k := range retired {
		add(ActionDestroy, k.KID, RuleDestroyAfter, k.RetiredAt.Add(p.DestroyAfter), "retired key %s passed destroyAfter %s (retired %s): erase its private material",
			k.KID, formatDuration(p.DestroyAfter), k.RetiredAt.UTC().Format(time.RFC3339))
	}
	return out, active
}

// ExpiringNotice returns the license.expiring notice due for l at now: l
// is active, has an expiry, and now is within licenses.expiringNotice
// before it (not after it: an expired license gets ActionExpire from
// Decide instead). Due is expires_at - expiringNotice. It reads nothing but
// its arguments.
func (c *Compiled) ExpiringNotice(l License, now time.Time) (Decision, bool) {
	p := &c.policy
	if keyward.LicenseState(l.State) != keyward.LicenseActive || l.ExpiresAt.IsZero() || p.ExpiringNotice <= 0 || !now.Before(l.ExpiresAt) {
		return Decision{}, false
	}
	due := l.ExpiresAt.Add(-p.ExpiringNotice)
	if now.Before(due) {
		return Decision{}, false
	}
	return Decision{
		Action: ActionNotifyExpiring, Target: l.ID, Rule: RuleExpiringNotice, Due: due, PolicyVersion: p.Version,
		Reason: fmt.Sprintf("license %s expires at %s, within expiringNotice %s", l.ID, l.ExpiresAt.UTC().Format(time.RFC3339), formatDuration(p.ExpiringNotice)),
	}, true
}
