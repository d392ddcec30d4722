// Package policy reads, checks and runs Keyward's LifecyclePolicy documents
// (spec section 5): YAML with CEL rules, one per product, versioned by the
// authority.
//
// The package guarantees:
//
//   - Parse is strict. Every problem is reported at once, each naming the
//     field path (spec.signingKeys.rotateEvery) and line: YAML errors, a
//     wrong apiVersion or kind, unknown or repeated fields, values of the
//     wrong type, bad durations. A field that is left out takes the built-in
//     default's value (keyward.DefaultPolicy); an explicit [] empties a list.
//   - Lint refuses risky documents with one Problem per guardrail broken
//     (see docs/policy.md for each rule and why). A document with no
//     problems is safe to apply.
//   - CEL rules are compiled once, by Compile; a rule that does not compile
//     or is not of type bool is a lint problem. Evaluating a compiled rule
//     allocates a few small values and costs microseconds.
//   - Decide is a pure function of (compiled policy, state, time): it
//     reads no clock and no store, and returns every action that is due
//     with the rule that made it due and a rationale. It is the one place
//     the rotation, activation, retirement, destruction, expiry,
//     license-retirement and auto-suspension timings live.
//
// It does not store, apply or enforce anything: the authority does, and
// records the policy version and rule of every decision in the audit log.
package policy
