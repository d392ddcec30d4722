package authority_test

import (
	"context"
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/keyward/keyward"
	"github.com/keyward/keyward/authority"
	"github.com/keyward/keyward/store"
)

// emittedEventTypes reads the authority's source for the outbox event types
// it can emit: `event: "…"` in a change, `event = "…"` assignments, the
// values of maps named …Events, and `Type: "…"` in a keyward.Event literal.
// An event type built by concatenation cannot be checked and is reported.
func emittedEventTypes(t *testing.T) map[string]string {
	t.Helper()
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	fset := token.NewFileSet()
	found := map[string]string{} // type → position
	add := func(e ast.Expr) {
		switch e := e.(type) {
		case *ast.BasicLit:
			if s, err := strconv.Unquote(e.Value); err == nil && s != "" {
				found[s] = fset.Position(e.Pos()).String()
			}
		case *ast.BinaryExpr:
			t.Errorf("%s: an event type built by concatenation cannot be checked against EventTypes; use literals",
				fset.Position(e.Pos()))
		}
	}
	for _, name := range files {
		if strings.HasSuffix(name, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, name, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		ast.Inspect(f, func(n ast.Node) bool {
			switch n := n.(type) {
			case *ast.KeyValueExpr:
				if id, ok := n.Key.(*ast.Ident); ok && id.Name == "event" {
					add(n.Value)
				}
			case *ast.AssignStmt:
				if len(n.Lhs) == len(n.Rhs) {
					for i, l := range n.Lhs {
						if id, ok := l.(*ast.Ident); ok && id.Name == "event" {
							add(n.Rhs[i])
						}
					}
				}
			case *ast.ValueSpec:
				for i, id := range n.Names {
					if !strings.HasSuffix(id.Name, "Events") || i >= len(n.Values) {
						continue
					}
					if lit, ok := n.Values[i].(*ast.CompositeLit); ok {
						for _, el := range lit.Elts {
							if kv, ok := el.(*ast.KeyValueExpr); ok {
								add(kv.Value)
							}
						}
					}
				}
			case *ast.CompositeLit:
				if sel, ok := n.Type.(*ast.SelectorExpr); ok && sel.Sel.Name == "Event" {
					for _, el := range n.Elts {
						if kv, ok := el.(*ast.KeyValueExpr); ok {
							if id, ok := kv.Key.(*ast.Ident); ok && id.Name == "Type" {
								add(kv.Value)
							}
						}
					}
				}
			}
			return true
		})
	}
	return found
}

// TestEventTypesComplete keeps authority.EventTypes, the list webhook
// endpoints subscribe from, equal to what the authority emits.
func TestEventTypesComplete(t *testing.T) {
	if _, err := os.Stat("authority.go"); err != nil {
		t.Skip("source not available:", err)
	}
	list := authority.EventTypes()
	if !slices.IsSorted(list) || len(slices.Compact(slices.Clone(list))) != len(list) {
		t.Errorf("EventTypes() = %v, want sorted without duplicates", list)
	}
	emitted := emittedEventTypes(t)
	if len(emitted) < 10 {
		t.Fatalf("found only %d event types in the source: the scanner is broken", len(emitted))
	}
	for typ, pos := range emitted {
		if !slices.Contains(list, typ) {
			t.Errorf("%s: event type %q is emitted but missing from EventTypes() (authority/events.go)", pos, typ)
		}
	}
	for _, typ := range list {
		if _, ok := emitted[typ]; !ok {
			t.Errorf("EventTypes() lists %q, which the authority never emits", typ)
		}
	}
}

// TestEventTypesObserved drives many kinds of change and checks that every
// event type that reached the outbox is listed, and was found by the
// source scan (so the scan sees what it must).
func TestEventTypesObserved(t *testing.T) {
	f := newFixture(t)
	p := f.product(t, "acme")
	is := f.issue(t, authority.IssueRequest{Product: "acme", Holder: "c", MaxMachines: intp(2)})
	id := is.License.ID
	steps := []func() error{
		func() error { _, err := f.auth.TransitionLicense(f.ctx, id, keyward.LicenseSuspend, ""); return err },
		func() error { _, err := f.auth.TransitionLicense(f.ctx, id, keyward.LicenseReinstate, ""); return err },
		func() error { _, err := f.auth.ReissueLicense(f.ctx, id, nil); return err },
		func() error {
			_, err := f.auth.Validate(context.Background(), authority.ValidateRequest{Key: string(is.Key), Fingerprint: "m1"})
			return err
		},
		func() error {
			ms, err := f.auth.Machines(f.ctx, id)
			if err != nil || len(ms) == 0 {
				return err
			}
			return f.auth.DeactivateMachine(f.ctx, id, ms[0].ID)
		},
		func() error {
			// Another principal revokes (separation of duties); where the
			// policy wants an approval, a third one grants it.
			as := func(id, role string) context.Context {
				return keyward.NewContextWithPrincipal(context.Background(), keyward.Principal{ID: id, Name: id, Roles: []string{role}})
			}
			_, ap, err := f.auth.RevokeLicense(as("tok_revoker", keyward.RoleRevoker), id, "abuse")
			if err == nil && ap != nil {
				_, err = f.auth.GrantApproval(as("tok_approver", keyward.RoleApprover), ap.ID, "confirmed")
			}
			return err
		},
		func() error {
			is2 := f.issue(t, authority.IssueRequest{Product: "acme", Holder: "d"})
			_, err := f.auth.TransitionLicense(f.ctx, is2.License.ID, keyward.LicenseRetire, "")
			return err
		},
		func() error {
			k, err := f.auth.RotateKey(f.ctx, authority.RotateRequest{Product: p.ID, Pending: true})
			if err != nil {
				return err
			}
			if _, err := f.auth.ActivateKey(f.ctx, k.KID, ""); err != nil {
				return err
			}
			k2, err := f.auth.RotateKey(f.ctx, authority.RotateRequest{Product: p.ID})
			if err != nil {
				return err
			}
			_ = k2
			if _, err := f.auth.RevokeKey(f.ctx, k.KID, "key_compromise"); err != nil {
				return err
			}
			return nil
		},
		func() error {
			_, _, err := f.auth.CreateToken(f.ctx, authority.TokenRequest{Name: "ci", Roles: []string{keyward.RoleIssuer}, TTL: time.Hour})
			return err
		},
		func() error {
			ep, _, err := f.auth.CreateWebhook(f.ctx, authority.WebhookRequest{URL: "https://hooks.example.com/k", Events: []string{"*"}})
			if err != nil {
				return err
			}
			if _, _, err := f.auth.RotateWebhookSecret(f.ctx, ep.ID, nil); err != nil {
				return err
			}
			if _, err := f.auth.DisableWebhook(f.ctx, ep.ID, ""); err != nil {
				return err
			}
			if _, err := f.auth.EnableWebhook(f.ctx, ep.ID, ""); err != nil {
				return err
			}
			_, err = f.auth.RemoveWebhook(f.ctx, ep.ID, "")
			return err
		},
	}
	for i, step := range steps {
		if err := step(); err != nil {
			t.Fatalf("step %d: %v", i, err)
		}
		f.clock.Advance(time.Minute)
	}
	emitted := emittedEventTypes(t)
	var events []*keyward.Event
	if err := f.store.View(context.Background(), func(tx store.Tx) (err error) {
		events, err = tx.Events(0, 0)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, e := range events {
		seen[e.Type] = true
		if !slices.Contains(authority.EventTypes(), e.Type) {
			t.Errorf("outbox event type %q is not in EventTypes()", e.Type)
		}
		if _, ok := emitted[e.Type]; !ok {
			t.Errorf("outbox event type %q was not found by the source scan", e.Type)
		}
	}
	if len(seen) < 15 {
		t.Errorf("the scenario produced only %d event types: %v", len(seen), seen)
	}
}
