package authority

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"unicode/utf8"

	"github.com/keyward/keyward"
	"github.com/keyward/keyward/policy"
	"github.com/keyward/keyward/store"
)

// Versioned lifecycle policies (spec section 5).
//
// Every apply or rollback stores the whole document as a new version with
// its hash, author and justification, writes a policy.apply (or
// policy.rollback) audit entry and a policy.applied event in the same
// transaction. The highest version is in force; a product without one uses
// the built-in default (keyward.DefaultPolicy; with Config.Dev, approvals 0).
//
// The policies in force are kept compiled in memory (storedPolicies): loaded
// at New, replaced after each apply or rollback commits, so looking one up
// never reads the store (rules run inside other transactions and on the
// validation path). A policy applied by another process (another replica)
// is seen after ReloadPolicies.

// MaxJustification bounds the justification of a policy change.
const MaxJustification = 1000

// PolicyPermissions returns the names a policy's duties and mfa may use:
// every permission of the role table, the admin-only ones, and the approval
// actions of the governance feature (spec 6).
func PolicyPermissions() []string {
	set := map[string]bool{PermTokenAdmin: true, PermProductCreate: true, PermPolicyApply: true,
		"approval.grant": true, "approval.deny": true}
	for _, ps := range rolePermissions {
		for _, p := range ps {
			set[p] = true
		}
	}
	return slices.Sorted(maps.Keys(set))
}

// LintOptions returns the options this authority applies policies with.
func (a *Authority) LintOptions() policy.LintOptions {
	return policy.LintOptions{Dev: a.stored.dev, Permissions: PolicyPermissions()}
}

// storedPolicies is the PolicySource over the store: the compiled policy
// in force per product id, and the built-in default for the others.
type storedPolicies struct {
	dev     bool
	builtin *policy.Compiled

	mu        sync.RWMutex
	byProduct map[string]*policy.Compiled
}

var _ PolicySource = (*storedPolicies)(nil)

// Policy implements PolicySource.
func (s *storedPolicies) Policy(_ context.Context, productID string) (*keyward.Policy, error) {
	return s.compiled(productID).Policy(), nil
}

func (s *storedPolicies) compiled(productID string) *policy.Compiled {
	s.mu.RLock()
	c := s.byProduct[productID]
	s.mu.RUnlock()
	if c == nil {
		return s.builtin
	}
	return c
}

// set installs c unless a newer version is already installed.
func (s *storedPolicies) set(productID string, c *policy.Compiled) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if old := s.byProduct[productID]; old == nil || old.Version() < c.Version() {
		s.byProduct[productID] = c
	}
}

// builtinPolicy returns the built-in default as this server runs it.
func builtinPolicy(dev bool) *keyward.Policy {
	p := keyward.DefaultPolicy()
	if dev {
		p.RevocationApprovals = 0
		// Nor a second factor or separate principals (docs/governance.md):
		// apply a policy to try them on a dev server.
		p.MFA, p.Duties = nil, nil
	}
	return p
}

// loadPolicies compiles the built-in default and every product's policy in
// force.
func (a *Authority) loadPolicies(ctx context.Context, dev bool) error {
	b, err := policy.Compile(builtinPolicy(dev))
	if err != nil {
		return fmt.Errorf("built-in policy: %w", err)
	}
	a.stored = &storedPolicies{dev: dev, builtin: b, byProduct: map[string]*policy.Compiled{}}
	return a.ReloadPolicies(ctx)
}

// ReloadPolicies reads every product's policy in force from the store and
// compiles the ones not compiled yet: what a replica calls when another
// replica applied a policy (a policy.applied event).
func (a *Authority) ReloadPolicies(ctx context.Context) error {
	var recs []*keyward.PolicyRecord
	err := a.store.View(ctx, func(tx store.Tx) error {
		ps, err := tx.Products()
		if err != nil {
			return err
		}
		for _, p := range ps {
			r, err := tx.LatestPolicy(p.ID)
			if keyward.ErrorCode(err) == keyward.ENotFound {
				continue
			} else if err != nil {
				return err
			}
			recs = append(recs, r)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("load policies: %w", err)
	}
	for _, r := range recs {
		if cur := a.stored.compiled(r.ProductID); cur.Version() == r.Version && cur.Policy().Hash == r.Hash {
			continue
		}
		c, err := compileRecord(r)
		if err != nil {
			// A stored policy that no longer parses (a stricter binary)
			// must not silently fall back to the default: refuse to start.
			return fmt.Errorf("policy v%d of product %s: %w", r.Version, r.ProductID, err)
		}
		a.stored.set(r.ProductID, c)
	}
	return nil
}

// compileRecord parses and compiles a stored document. It does not lint:
// the document passed lint when it was applied.
func compileRecord(r *keyward.PolicyRecord) (*policy.Compiled, error) {
	d, problems := policy.Parse([]byte(r.Document))
	if len(problems) > 0 {
		return nil, problems
	}
	p := d.Policy()
	p.Version, p.Hash = r.Version, r.Hash
	return policy.Compile(p)
}

// CompiledPolicy returns the policy in force for a product (id or name;
// "" for the registry ring, which follows the built-in default), compiled,
// for the decision engine (policy.Compiled.Decide).
func (a *Authority) CompiledPolicy(ctx context.Context, product string) (*policy.Compiled, error) {
	if product == "" {
		return a.stored.builtin, nil
	}
	var id string
	err := a.store.View(ctx, func(tx store.Tx) error {
		p, err := a.policyProduct(ctx, tx, product)
		if err == nil {
			id = p.ID
		}
		return err
	})
	if err != nil {
		return nil, err
	}
	return a.stored.compiled(id), nil
}

// policyProduct looks up a product and checks a product-scoped principal
// may reach it.
func (a *Authority) policyProduct(ctx context.Context, tx store.Tx, product string) (*keyward.Product, error) {
	if product == "" {
		return nil, keyward.Errorf(keyward.EInvalid, "product is required")
	}
	p, err := tx.Product(product)
	if err != nil {
		return nil, err
	}
	if pr := keyward.PrincipalFromContext(ctx); pr.ProductID != "" && pr.ProductID != p.ID {
		return nil, keyward.Errorf(keyward.EForbidden, "%s is limited to another product", pr.Name)
	}
	return p, nil
}

func checkJustification(j string) (string, error) {
	j = strings.TrimSpace(j)
	switch {
	case j == "":
		return "", keyward.Errorf(keyward.EInvalid, "justification is required: say why the policy changes (it is kept with the version and in the audit log)")
	case utf8.RuneCountInString(j) > MaxJustification:
		return "", keyward.Errorf(keyward.EInvalid, "justification: at most %d characters", MaxJustification)
	case !utf8.ValidString(j):
		return "", keyward.Errorf(keyward.EInvalid, "justification: not valid UTF-8")
	}
	return j, nil
}

// problemsError turns lint problems into an EInvalid error listing them all.
func problemsError(what string, ps policy.Problems) error {
	fields := make([]keyward.FieldError, len(ps))
	msgs := make([]string, len(ps))
	for i, p := range ps {
		fields[i] = keyward.FieldError{Path: p.Path, Line: p.Line, Message: p.Message}
		msgs[i] = p.String()
	}
	noun := "problems"
	if len(ps) == 1 {
		noun = "problem"
	}
	return &keyward.Error{
		Code:    keyward.EInvalid,
		Message: fmt.Sprintf("%s: %d %s: %s", what, len(ps), noun, strings.Join(msgs, "; ")),
		Fields:  fields,
	}
}

func hashDocument(doc string) string {
	h := sha256.Sum256([]byte(doc))
	return hex.EncodeToString(h[:])
}

// builtinRecord is version 0 of a product's policy: the built-in default,
// rendered as a document naming the product.
func (a *Authority) builtinRecord(p *keyward.Product) *keyward.PolicyRecord {
	pol := a.stored.builtin.Policy()
	pol.Product = p.Name
	doc := string(policy.Format(pol))
	return &keyward.PolicyRecord{
		ProductID: p.ID, Version: 0, Document: doc, Hash: hashDocument(doc),
		Author: "keyward", AuthorName: "built-in default", CreatedAt: p.CreatedAt,
		Justification: "built-in default (no policy applied)",
	}
}

// versionName labels a version in diffs.
func versionName(v int) string {
	if v == 0 {
		return "builtin"
	}
	return fmt.Sprintf("v%d", v)
}

// PolicyChange is what ApplyPolicy and RollbackPolicy did.
type PolicyChange struct {
	Record   *keyward.PolicyRecord // the new version, now in force
	Previous int                   // the version in force before (0 = built-in)
	Diff     string                // unified diff from the previous document
}

// ApplyPolicy validates and lints a LifecyclePolicy document and stores it
// as the next version of the policy of product (id or name), which must be
// the product metadata.product names. Errors: EInvalid listing every
// problem (in Error.Fields) for a document that does not parse or lint, a
// product mismatch or a missing justification; ENotFound for an unknown
// product; EConflict for a document identical to the one in force.
// Nothing is stored on error.
func (a *Authority) ApplyPolicy(ctx context.Context, product, document, justification string) (*PolicyChange, error) {
	just, err := checkJustification(justification)
	if err != nil {
		return nil, err
	}
	doc, problems := policy.Check([]byte(document), a.LintOptions())
	if len(problems) > 0 {
		return nil, problemsError("policy refused", problems)
	}
	return a.storePolicy(ctx, product, just, 0, func(tx store.Tx, p *keyward.Product) (string, error) {
		if m := doc.Metadata.Product; m != p.Name && m != p.ID {
			return "", &keyward.Error{
				Code:    keyward.EInvalid,
				Message: fmt.Sprintf("metadata.product is %q but the policy is applied to product %q", m, p.Name),
				Fields:  []keyward.FieldError{{Path: "metadata.product", Line: doc.Line("metadata.product"), Message: fmt.Sprintf("%q is not the product %q", m, p.Name)}},
			}
		}
		return document, nil
	})
}

// RollbackPolicy makes a new version of product's policy equal to version
// (>= 1). The old document is linted again with today's rules; a rollback
// to the document already in force is EConflict; an unknown version is
// ENotFound. Nothing is stored on error.
func (a *Authority) RollbackPolicy(ctx context.Context, product string, version int, justification string) (*PolicyChange, error) {
	just, err := checkJustification(justification)
	if err != nil {
		return nil, err
	}
	if version < 1 {
		return nil, keyward.Errorf(keyward.EInvalid, "version %d: want an applied version (1 or more); to return to the built-in default apply the document `policy show --version 0` prints", version)
	}
	return a.storePolicy(ctx, product, just, version, func(tx store.Tx, p *keyward.Product) (string, error) {
		r, err := tx.PolicyVersion(p.ID, version)
		if err != nil {
			return "", err
		}
		if _, problems := policy.Check([]byte(r.Document), a.LintOptions()); len(problems) > 0 {
			return "", problemsError(fmt.Sprintf("version %d no longer passes lint", version), problems)
		}
		return r.Document, nil
	})
}

// storePolicy stores the document chosen by pick as product's next version,
// with its audit entry and event, and installs it once committed.
func (a *Authority) storePolicy(ctx context.Context, product, just string, rollbackOf int,
	pick func(tx store.Tx, p *keyward.Product) (string, error)) (*PolicyChange, error) {
	var out *PolicyChange
	var compiled *policy.Compiled
	err := a.store.Update(ctx, func(tx store.Tx) error {
		now := a.clock.Now()
		p, err := a.policyProduct(ctx, tx, product)
		if err != nil {
			return err
		}
		document, err := pick(tx, p)
		if err != nil {
			return err
		}
		prev, err := tx.LatestPolicy(p.ID)
		if keyward.ErrorCode(err) == keyward.ENotFound {
			prev = a.builtinRecord(p)
		} else if err != nil {
			return err
		}
		hash := hashDocument(document)
		if prev.Version > 0 && prev.Hash == hash {
			return keyward.Errorf(keyward.EConflict, "the document is identical to version %d, which is in force: nothing to change", prev.Version)
		}
		pr := keyward.PrincipalFromContext(ctx)
		rec := &keyward.PolicyRecord{
			ProductID: p.ID, Document: document, Hash: hash, Author: pr.ID, AuthorName: pr.Name,
			CreatedAt: now, Justification: just, RollbackOf: rollbackOf,
		}
		if err := tx.CreatePolicy(rec); err != nil {
			return err
		}
		if compiled, err = compileRecord(rec); err != nil {
			return fmt.Errorf("compile policy v%d: %w", rec.Version, err)
		}
		action := "policy.apply"
		details := map[string]any{"product": p.Name, "version": rec.Version, "previous_version": prev.Version, "hash": hash, "name": compiled.Policy().Name}
		if rollbackOf > 0 {
			action = "policy.rollback"
			details["rollback_of"] = rollbackOf
		}
		if err := a.record(ctx, tx, now, change{
			action: action, event: "policy.applied", targetType: "policy", targetID: p.ID,
			before: versionName(prev.Version), after: versionName(rec.Version), reason: just, details: details,
		}); err != nil {
			return err
		}
		out = &PolicyChange{
			Record: rec, Previous: prev.Version,
			Diff: policy.Diff(p.Name+"@"+versionName(prev.Version), p.Name+"@"+versionName(rec.Version), prev.Document, document),
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	a.stored.set(out.Record.ProductID, compiled)
	return out, nil
}

// PolicyVersion returns version of product's policy: 0 is the built-in
// default (rendered for the product), -1 the version in force (the
// built-in default when none was applied). ENotFound for an unknown
// product or version.
func (a *Authority) PolicyVersion(ctx context.Context, product string, version int) (*keyward.PolicyRecord, error) {
	var out *keyward.PolicyRecord
	err := a.store.View(ctx, func(tx store.Tx) error {
		p, err := a.policyProduct(ctx, tx, product)
		if err != nil {
			return err
		}
		out, err = a.policyVersion(tx, p, version)
		return err
	})
	return out, err
}

func (a *Authority) policyVersion(tx store.Tx, p *keyward.Product, version int) (*keyward.PolicyRecord, error) {
	switch {
	case version == 0:
		return a.builtinRecord(p), nil
	case version < 0:
		r, err := tx.LatestPolicy(p.ID)
		if keyward.ErrorCode(err) == keyward.ENotFound {
			return a.builtinRecord(p), nil
		}
		return r, err
	default:
		r, err := tx.PolicyVersion(p.ID, version)
		if keyward.ErrorCode(err) == keyward.ENotFound {
			return nil, keyward.Errorf(keyward.ENotFound, "product %s has no policy version %d", p.Name, version)
		}
		return r, err
	}
}

// PolicyHistory lists every applied version of product's policy, oldest
// first (empty when only the built-in default ever applied).
func (a *Authority) PolicyHistory(ctx context.Context, product string) ([]*keyward.PolicyRecord, error) {
	var out []*keyward.PolicyRecord
	err := a.store.View(ctx, func(tx store.Tx) error {
		p, err := a.policyProduct(ctx, tx, product)
		if err != nil {
			return err
		}
		out, err = tx.PolicyHistory(p.ID)
		return err
	})
	return out, err
}

// PolicyDiff returns the unified diff of product's policy from version
// from to version to (0 = built-in default); "" when they are equal.
func (a *Authority) PolicyDiff(ctx context.Context, product string, from, to int) (string, error) {
	if from < 0 || to < 0 {
		return "", keyward.Errorf(keyward.EInvalid, "versions must be 0 (built-in) or more")
	}
	var out string
	err := a.store.View(ctx, func(tx store.Tx) error {
		p, err := a.policyProduct(ctx, tx, product)
		if err != nil {
			return err
		}
		x, err := a.policyVersion(tx, p, from)
		if err != nil {
			return err
		}
		y, err := a.policyVersion(tx, p, to)
		if err != nil {
			return err
		}
		out = policy.Diff(p.Name+"@"+versionName(from), p.Name+"@"+versionName(to), x.Document, y.Document)
		return nil
	})
	return out, err
}
