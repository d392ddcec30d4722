// Package storetest is the one test suite every store.Store implementation
// passes: store/sqlite runs it on a temporary file, store/postgres on a
// scratch database.
//
// The suite checks what package store promises and nothing about how an
// implementation keeps it: every field of every type survives a round trip,
// missing rows are keyward.ENotFound and uniqueness violations
// keyward.EConflict, Update is all-or-nothing (on error and on panic), at
// most one key per ring is active, and audit entries are numbered 1, 2, 3, …
// without gaps.
//
// It tolerates representation differences that carry no meaning: times may
// come back in another location (they are compared in UTC), empty and nil
// slices are equal, and JSON documents are compared after re-encoding. Times
// in the suite have microsecond precision, which every store keeps.
//
// Where package store is silent the suite pins one behaviour, so that all
// stores agree: Products, Machines and Tokens are ordered by creation time,
// then id, and Keys by creation time, then kid; Product(idOrName) prefers an
// id match; AuditFilter.Since is inclusive; Limit 0 means no limit; a second
// PutSecret replaces the first; a View cannot write.
//
// A failing statement ends the transaction it runs in (as in PostgreSQL), so
// the suite checks each expected error as the result of its own Update.
package storetest

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/keyward/keyward"
	"github.com/keyward/keyward/store"
)

// Run runs the suite. open MUST return a new, empty store each time it is
// called and arrange (with t.Cleanup) for it to be closed.
func Run(t *testing.T, open func(t *testing.T) store.Store) {
	tests := []struct {
		name string
		fn   func(t *testing.T, s store.Store)
	}{
		{"Products/RoundTrip", testProductsRoundTrip},
		{"Products/ErrNotFound", testProductsNotFound},
		{"Products/ErrConflict", testProductsConflict},
		{"Keys/RoundTrip", testKeysRoundTrip},
		{"Keys/ErrNotFound", testKeysNotFound},
		{"Keys/Update", testKeysUpdate},
		{"Keys/OneActivePerRing", testKeysOneActivePerRing},
		{"Keys/Filter", testKeysFilter},
		{"Licenses/RoundTrip", testLicensesRoundTrip},
		{"Licenses/ErrNotFound", testLicensesNotFound},
		{"Licenses/Update", testLicensesUpdate},
		{"Licenses/Touch", testLicensesTouch},
		{"Licenses/Filter", testLicensesFilter},
		{"LicenseKeys/RoundTrip", testLicenseKeysRoundTrip},
		{"LicenseKeys/ErrNotFound", testLicenseKeysNotFound},
		{"LicenseKeys/ErrConflict", testLicenseKeysConflict},
		{"LicenseKeys/Supersede", testLicenseKeysSupersede},
		{"Machines/RoundTrip", testMachinesRoundTrip},
		{"Machines/ErrNotFound", testMachinesNotFound},
		{"Machines/ErrConflict", testMachinesConflict},
		{"Machines/Delete", testMachinesDelete},
		{"Audit/RoundTrip", testAuditRoundTrip},
		{"Audit/SeqWithoutGaps", testAuditSeq},
		{"Audit/Filter", testAuditFilter},
		{"Events/RoundTrip", testEventsRoundTrip},
		{"Events/SeqIncreasing", testEventsSeq},
		{"Tokens/RoundTrip", testTokensRoundTrip},
		{"Tokens/ErrNotFound", testTokensNotFound},
		{"Tokens/ErrConflict", testTokensConflict},
		{"Tokens/Revoke", testTokensRevoke},
		{"Secrets", testSecrets},
		{"Tx/RollbackOnError", testRollbackOnError},
		{"Tx/RollbackOnPanic", testRollbackOnPanic},
		{"Tx/ViewIsReadOnly", testViewIsReadOnly},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) { tt.fn(t, open(t)) })
	}
	runPolicy(t, open)
	runAudit(t, open)
	runRevocation(t, open)
	runWebhook(t, open)
	runGovernance(t, open)
	runLifecycle(t, open)
	runAbuse(t, open)
	runException(t, open)
	runBatch(t, open)
}

// t0 is the suite's epoch: microsecond precision, UTC.
var t0 = time.Date(2025, 3, 14, 15, 9, 26, 535897000, time.UTC)

// at returns t0 + d.
func at(d time.Duration) time.Time { return t0.Add(d) }

// ptr returns a pointer to t0 + d.
func ptr(d time.Duration) *time.Time { t := at(d); return &t }

const day = 24 * time.Hour

// Fixtures.

func newProduct(id string) *keyward.Product {
	return &keyward.Product{ID: id, Name: "Product " + id, CreatedAt: at(0)}
}

func newKey(kid, productID string, state keyward.KeyState) *keyward.SigningKey {
	return &keyward.SigningKey{
		KID:       kid,
		Ring:      keyward.LicenseRing(productID),
		Purpose:   keyward.PurposeLicense,
		ProductID: productID,
		Algorithm: "Ed25519",
		State:     state,
		PublicKey: []byte("public " + kid),
		Sealed:    []byte("sealed " + kid),
		CreatedAt: at(0),
	}
}

func newLicense(id, productID string) *keyward.License {
	return &keyward.License{
		ID:        id,
		ProductID: productID,
		Holder:    "cus_" + id,
		State:     keyward.LicenseActive,
		KeyPrefix: "KW1-" + strings.ToUpper(id),
		CreatedAt: at(0),
		UpdatedAt: at(0),
		IssuedBy:  "tok_issuer",
	}
}

func newMachine(id, licenseID, fingerprint string) *keyward.Machine {
	return &keyward.Machine{ID: id, LicenseID: licenseID, Fingerprint: fingerprint, CreatedAt: at(0), LastSeenAt: at(0)}
}

func newAudit(action, targetID string) *keyward.AuditEntry {
	return &keyward.AuditEntry{Time: at(0), Actor: "tok_admin", Action: action, TargetType: "license", TargetID: targetID}
}

// withLicense creates product p1 and license l1.
func withLicense(t *testing.T, s store.Store) {
	t.Helper()
	update(t, s, func(tx store.Tx) error {
		if err := tx.CreateProduct(newProduct("p1")); err != nil {
			return err
		}
		return tx.CreateLicense(newLicense("l1", "p1"))
	})
}

// Helpers.

func update(t *testing.T, s store.Store, fn func(tx store.Tx) error) {
	t.Helper()
	if err := s.Update(t.Context(), fn); err != nil {
		t.Fatalf("Update: %v", err)
	}
}

func view(t *testing.T, s store.Store, fn func(tx store.Tx) error) {
	t.Helper()
	if err := s.View(t.Context(), fn); err != nil {
		t.Fatalf("View: %v", err)
	}
}

// get runs fn in a View and returns its result.
func get[T any](t *testing.T, s store.Store, fn func(tx store.Tx) (T, error)) T {
	t.Helper()
	var v T
	view(t, s, func(tx store.Tx) (err error) {
		v, err = fn(tx)
		return err
	})
	return v
}

// wantCode fails t unless err carries code.
func wantCode(t *testing.T, what string, err error, code string) {
	t.Helper()
	if got := keyward.ErrorCode(err); got != code {
		t.Fatalf("%s: error %v (code %q), want code %s", what, err, got, code)
	}
}

// wantNotFound checks err is ENotFound with a message containing each of words.
func wantNotFound(t *testing.T, what string, err error, words ...string) {
	t.Helper()
	wantCode(t, what, err, keyward.ENotFound)
	msg := keyward.ErrorMessage(err)
	for _, w := range words {
		if !strings.Contains(msg, w) {
			t.Errorf("%s: message %q does not name %q", what, msg, w)
		}
	}
}

// updateErr runs fn in an Update and returns the error.
func updateErr(t *testing.T, s store.Store, fn func(tx store.Tx) error) error {
	t.Helper()
	return s.Update(t.Context(), fn)
}

// viewErr runs fn in a View and returns the error.
func viewErr(t *testing.T, s store.Store, fn func(tx store.Tx) error) error {
	t.Helper()
	return s.View(t.Context(), fn)
}

// wantEqual fails t unless got and want are equal up to representation.
func wantEqual[T any](t *testing.T, what string, got, want *T) {
	t.Helper()
	if got == nil || want == nil {
		if got != want {
			t.Fatalf("%s = %+v, want %+v", what, got, want)
		}
		return
	}
	g, w := norm(*got), norm(*want)
	if !reflect.DeepEqual(g, w) {
		t.Fatalf("%s:\n got %+v\nwant %+v", what, g, w)
	}
}

// wantList fails t unless got and want have equal elements in the same order.
func wantList[T any](t *testing.T, what string, got, want []*T) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: got %d items, want %d:\n got %s\nwant %s", what, len(got), len(want), show(got), show(want))
	}
	for i := range got {
		wantEqual(t, fmt.Sprintf("%s[%d]", what, i), got[i], want[i])
	}
}

// show lists the ID (or KID, or Seq) of each element, for messages.
func show[T any](vs []*T) string {
	var b strings.Builder
	for i, v := range vs {
		if i > 0 {
			b.WriteString(", ")
		}
		rv := reflect.ValueOf(v).Elem()
		for _, f := range []string{"ID", "KID", "Seq"} {
			if fv := rv.FieldByName(f); fv.IsValid() {
				fmt.Fprint(&b, fv.Interface())
				break
			}
		}
	}
	return "[" + b.String() + "]"
}

// norm returns v with meaningless representation differences removed: times
// in UTC, empty slices nil, JSON canonically re-encoded.
func norm[T any](v T) T {
	rv := reflect.ValueOf(&v).Elem()
	for i := range rv.NumField() {
		f := rv.Field(i)
		switch x := f.Interface().(type) {
		case time.Time:
			f.Set(reflect.ValueOf(x.UTC()))
		case *time.Time:
			if x != nil {
				u := x.UTC()
				f.Set(reflect.ValueOf(&u))
			}
		case json.RawMessage:
			f.Set(reflect.ValueOf(canonicalJSON(x)))
		case []byte:
			if len(x) == 0 {
				f.SetZero()
			}
		case []string:
			if len(x) == 0 {
				f.SetZero()
			}
		}
	}
	return v
}

func canonicalJSON(m json.RawMessage) json.RawMessage {
	if len(m) == 0 {
		return nil
	}
	var v any
	if err := json.Unmarshal(m, &v); err != nil {
		return m
	}
	b, _ := json.Marshal(v)
	return b
}

// Products.

func testProductsRoundTrip(t *testing.T, s store.Store) {
	b := &keyward.Product{ID: "prd_b", Name: "Beta", CreatedAt: at(time.Second)}
	a := &keyward.Product{ID: "prd_a", Name: "Alpha", CreatedAt: at(time.Second)}
	c := &keyward.Product{ID: "prd_c", Name: "Gamma", CreatedAt: at(0)}
	update(t, s, func(tx store.Tx) error {
		return errors.Join(tx.CreateProduct(b), tx.CreateProduct(a), tx.CreateProduct(c))
	})
	wantEqual(t, "Product(id)", get(t, s, func(tx store.Tx) (*keyward.Product, error) { return tx.Product("prd_a") }), a)
	wantEqual(t, "Product(name)", get(t, s, func(tx store.Tx) (*keyward.Product, error) { return tx.Product("Beta") }), b)
	// Ordered by creation time, then id.
	wantList(t, "Products()", get(t, s, func(tx store.Tx) ([]*keyward.Product, error) { return tx.Products() }),
		[]*keyward.Product{c, a, b})

	// A product named like another's id: the id wins.
	d := &keyward.Product{ID: "prd_d", Name: "prd_a", CreatedAt: at(time.Minute)}
	update(t, s, func(tx store.Tx) error { return tx.CreateProduct(d) })
	wantEqual(t, "Product(id that is also a name)", get(t, s, func(tx store.Tx) (*keyward.Product, error) { return tx.Product("prd_a") }), a)
}

func testProductsNotFound(t *testing.T, s store.Store) {
	err := viewErr(t, s, func(tx store.Tx) error { _, err := tx.Product("prd_missing"); return err })
	wantNotFound(t, "Product(missing)", err, "prd_missing")
	ps := get(t, s, func(tx store.Tx) ([]*keyward.Product, error) { return tx.Products() })
	if len(ps) != 0 {
		t.Fatalf("Products() on an empty store = %s, want none", show(ps))
	}
}

func testProductsConflict(t *testing.T, s store.Store) {
	update(t, s, func(tx store.Tx) error { return tx.CreateProduct(newProduct("p1")) })
	t.Run("SameName", func(t *testing.T) {
		p := newProduct("p2")
		p.Name = "Product p1"
		wantCode(t, "CreateProduct(same name)", updateErr(t, s, func(tx store.Tx) error { return tx.CreateProduct(p) }), keyward.EConflict)
	})
	t.Run("SameID", func(t *testing.T) {
		p := newProduct("p1")
		p.Name = "Other"
		wantCode(t, "CreateProduct(same id)", updateErr(t, s, func(tx store.Tx) error { return tx.CreateProduct(p) }), keyward.EConflict)
	})
}

// Signing keys.

func testKeysRoundTrip(t *testing.T, s store.Store) {
	full := newKey("kid_full", "p1", keyward.KeyCompromised)
	full.ActivatedAt, full.RetiredAt, full.CompromisedAt = ptr(time.Hour), ptr(2*time.Hour), ptr(3*time.Hour)
	full.DestroyedAt = ptr(4 * time.Hour)
	full.Reason = "key_compromise"
	full.Algorithm = "ES256"

	// Registry key: no product, no private key material, no transition times.
	bare := &keyward.SigningKey{
		KID: "kid_bare", Ring: keyward.RegistryRing, Purpose: keyward.PurposeRegistry,
		Algorithm: "Ed25519", State: keyward.KeyPending, PublicKey: []byte{0, 1, 2, 255}, CreatedAt: at(time.Minute),
	}
	update(t, s, func(tx store.Tx) error {
		return errors.Join(tx.CreateProduct(newProduct("p1")), tx.CreateKey(full), tx.CreateKey(bare))
	})
	for _, want := range []*keyward.SigningKey{full, bare} {
		got := get(t, s, func(tx store.Tx) (*keyward.SigningKey, error) { return tx.Key(want.KID) })
		wantEqual(t, fmt.Sprintf("Key(%s)", want.KID), got, want)
	}
}

func testKeysNotFound(t *testing.T, s store.Store) {
	err := viewErr(t, s, func(tx store.Tx) error { _, err := tx.Key("kid_missing"); return err })
	wantNotFound(t, "Key(missing)", err, "kid_missing")
	err = updateErr(t, s, func(tx store.Tx) error { return tx.UpdateKey(newKey("kid_missing", "p1", keyward.KeyRetired)) })
	wantNotFound(t, "UpdateKey(missing)", err, "kid_missing")
}

func testKeysUpdate(t *testing.T, s store.Store) {
	k := newKey("kid_1", "p1", keyward.KeyPending)
	update(t, s, func(tx store.Tx) error {
		return errors.Join(tx.CreateProduct(newProduct("p1")), tx.CreateKey(k))
	})

	// UpdateKey writes state, times, sealed and reason, and nothing else.
	u := *k
	u.State = keyward.KeyDestroyed
	u.ActivatedAt, u.RetiredAt, u.DestroyedAt = ptr(day), ptr(2*day), ptr(3*day)
	u.Sealed = nil
	u.Reason = "scheduled"
	u.Algorithm, u.PublicKey, u.CreatedAt = "ES256", []byte("other"), at(time.Hour)
	update(t, s, func(tx store.Tx) error { return tx.UpdateKey(&u) })

	want := *k
	want.State, want.ActivatedAt, want.RetiredAt, want.DestroyedAt = u.State, u.ActivatedAt, u.RetiredAt, u.DestroyedAt
	want.Sealed, want.Reason = nil, u.Reason
	wantEqual(t, "Key after UpdateKey", get(t, s, func(tx store.Tx) (*keyward.SigningKey, error) { return tx.Key("kid_1") }), &want)

	// Time fields can be cleared again.
	want.ActivatedAt, want.RetiredAt, want.DestroyedAt = nil, nil, nil
	update(t, s, func(tx store.Tx) error { return tx.UpdateKey(&want) })
	wantEqual(t, "Key after clearing times", get(t, s, func(tx store.Tx) (*keyward.SigningKey, error) { return tx.Key("kid_1") }), &want)
}

func testKeysOneActivePerRing(t *testing.T, s store.Store) {
	active := newKey("kid_active", "p1", keyward.KeyActive)
	pending := newKey("kid_pending", "p1", keyward.KeyPending)
	retired := newKey("kid_retired", "p1", keyward.KeyRetired)
	other := newKey("kid_other", "p2", keyward.KeyActive) // another ring
	update(t, s, func(tx store.Tx) error {
		return errors.Join(tx.CreateProduct(newProduct("p1")), tx.CreateProduct(newProduct("p2")),
			tx.CreateKey(active), tx.CreateKey(pending), tx.CreateKey(retired), tx.CreateKey(other))
	})

	t.Run("CreateSecondActive", func(t *testing.T) {
		err := updateErr(t, s, func(tx store.Tx) error { return tx.CreateKey(newKey("kid_2", "p1", keyward.KeyActive)) })
		wantCode(t, "CreateKey(second active)", err, keyward.EConflict)
		if msg := keyward.ErrorMessage(err); !strings.Contains(msg, active.Ring) {
			t.Errorf("CreateKey(second active): message %q does not name ring %s", msg, active.Ring)
		}
	})
	t.Run("ActivateSecond", func(t *testing.T) {
		p := *pending
		p.State, p.ActivatedAt = keyward.KeyActive, ptr(day)
		err := updateErr(t, s, func(tx store.Tx) error { return tx.UpdateKey(&p) })
		wantCode(t, "UpdateKey(activate second)", err, keyward.EConflict)
		got := get(t, s, func(tx store.Tx) (*keyward.SigningKey, error) { return tx.Key(p.KID) })
		wantEqual(t, "pending key after refused activation", got, pending)
	})
	t.Run("RetireThenActivate", func(t *testing.T) {
		a, p := *active, *pending
		a.State, a.RetiredAt = keyward.KeyRetired, ptr(day)
		p.State, p.ActivatedAt = keyward.KeyActive, ptr(day)
		update(t, s, func(tx store.Tx) error {
			if err := tx.UpdateKey(&a); err != nil {
				return err
			}
			return tx.UpdateKey(&p)
		})
		got := get(t, s, func(tx store.Tx) ([]*keyward.SigningKey, error) {
			return tx.Keys(store.KeyFilter{Ring: active.Ring, States: []keyward.KeyState{keyward.KeyActive}})
		})
		wantList(t, "active keys after rotation", got, []*keyward.SigningKey{&p})
	})
}

func testKeysFilter(t *testing.T, s store.Store) {
	k := func(kid, product string, state keyward.KeyState, created time.Duration) *keyward.SigningKey {
		key := newKey(kid, product, state)
		key.CreatedAt = at(created)
		return key
	}
	// Created out of order; kid_b and kid_a share a creation time.
	c := k("kid_c", "p1", keyward.KeyPending, 2*time.Hour)
	b := k("kid_b", "p1", keyward.KeyActive, time.Hour)
	a := k("kid_a", "p1", keyward.KeyRetired, time.Hour)
	d := k("kid_d", "p1", keyward.KeyDestroyed, 0)
	e := k("kid_e", "p2", keyward.KeyActive, 0)
	r := &keyward.SigningKey{KID: "kid_r", Ring: keyward.RegistryRing, Purpose: keyward.PurposeRegistry,
		Algorithm: "Ed25519", State: keyward.KeyActive, PublicKey: []byte("r"), CreatedAt: at(3 * time.Hour)}
	update(t, s, func(tx store.Tx) error {
		err := errors.Join(tx.CreateProduct(newProduct("p1")), tx.CreateProduct(newProduct("p2")))
		for _, key := range []*keyward.SigningKey{c, b, a, d, e, r} {
			err = errors.Join(err, tx.CreateKey(key))
		}
		return err
	})
	for _, tc := range []struct {
		name string
		f    store.KeyFilter
		want []*keyward.SigningKey
	}{
		{"All", store.KeyFilter{}, []*keyward.SigningKey{d, e, a, b, c, r}},
		{"Ring", store.KeyFilter{Ring: keyward.LicenseRing("p1")}, []*keyward.SigningKey{d, a, b, c}},
		{"Product", store.KeyFilter{ProductID: "p2"}, []*keyward.SigningKey{e}},
		{"Purpose", store.KeyFilter{Purpose: keyward.PurposeRegistry}, []*keyward.SigningKey{r}},
		{"OneState", store.KeyFilter{States: []keyward.KeyState{keyward.KeyActive}}, []*keyward.SigningKey{e, b, r}},
		{"States", store.KeyFilter{Ring: keyward.LicenseRing("p1"), States: []keyward.KeyState{keyward.KeyPending, keyward.KeyRetired}},
			[]*keyward.SigningKey{a, c}},
		{"NoMatch", store.KeyFilter{Ring: "license:p3"}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := get(t, s, func(tx store.Tx) ([]*keyward.SigningKey, error) { return tx.Keys(tc.f) })
			wantList(t, fmt.Sprintf("Keys(%+v)", tc.f), got, tc.want)
		})
	}
}

// Licenses.

func testLicensesRoundTrip(t *testing.T, s store.Store) {
	full := newLicense("lic_full", "p1")
	full.State = keyward.LicenseSuspended
	full.Entitlements = []string{"pro", "export", "sso"}
	full.MaxMachines = 3
	full.ExpiresAt = ptr(365 * day)
	full.UpdatedAt = at(time.Hour)
	full.Reason = "non_payment"
	full.LastValidatedAt = ptr(2 * time.Hour)

	bare := newLicense("lic_bare", "p1") // no entitlements, perpetual, never validated
	update(t, s, func(tx store.Tx) error {
		return errors.Join(tx.CreateProduct(newProduct("p1")), tx.CreateLicense(full), tx.CreateLicense(bare))
	})
	for _, want := range []*keyward.License{full, bare} {
		got := get(t, s, func(tx store.Tx) (*keyward.License, error) { return tx.License(want.ID) })
		wantEqual(t, fmt.Sprintf("License(%s)", want.ID), got, want)
	}
}

func testLicensesNotFound(t *testing.T, s store.Store) {
	err := viewErr(t, s, func(tx store.Tx) error { _, err := tx.License("lic_missing"); return err })
	wantNotFound(t, "License(missing)", err, "lic_missing")
	err = updateErr(t, s, func(tx store.Tx) error { return tx.UpdateLicense(newLicense("lic_missing", "p1")) })
	wantNotFound(t, "UpdateLicense(missing)", err, "lic_missing")
	err = updateErr(t, s, func(tx store.Tx) error { return tx.TouchLicense("lic_missing", at(0)) })
	wantNotFound(t, "TouchLicense(missing)", err, "lic_missing")
}

func testLicensesUpdate(t *testing.T, s store.Store) {
	l := newLicense("l1", "p1")
	l.Entitlements = []string{"basic"}
	update(t, s, func(tx store.Tx) error {
		return errors.Join(tx.CreateProduct(newProduct("p1")), tx.CreateLicense(l))
	})

	u := *l
	u.State = keyward.LicenseRevoked
	u.KeyPrefix = "KW1-NEW00"
	u.Entitlements = []string{"pro", "sso"}
	u.MaxMachines = 5
	u.ExpiresAt = ptr(30 * day)
	u.UpdatedAt = at(day)
	u.Reason = "abuse"
	u.LastValidatedAt = ptr(time.Hour)
	update(t, s, func(tx store.Tx) error { return tx.UpdateLicense(&u) })
	wantEqual(t, "License after UpdateLicense", get(t, s, func(tx store.Tx) (*keyward.License, error) { return tx.License("l1") }), &u)

	// Pointers and lists can be cleared again.
	u.Entitlements, u.ExpiresAt, u.LastValidatedAt = nil, nil, nil
	update(t, s, func(tx store.Tx) error { return tx.UpdateLicense(&u) })
	wantEqual(t, "License after clearing", get(t, s, func(tx store.Tx) (*keyward.License, error) { return tx.License("l1") }), &u)
}

func testLicensesTouch(t *testing.T, s store.Store) {
	withLicense(t, s)
	want := get(t, s, func(tx store.Tx) (*keyward.License, error) { return tx.License("l1") })
	update(t, s, func(tx store.Tx) error { return tx.TouchLicense("l1", at(5*time.Minute)) })
	want.LastValidatedAt = ptr(5 * time.Minute) // and nothing else, not even UpdatedAt
	wantEqual(t, "License after TouchLicense", get(t, s, func(tx store.Tx) (*keyward.License, error) { return tx.License("l1") }), want)
}

func testLicensesFilter(t *testing.T, s store.Store) {
	l := func(id, product, holder string, state keyward.LicenseState) *keyward.License {
		lic := newLicense(id, product)
		lic.Holder, lic.State = holder, state
		return lic
	}
	l3 := l("lic_3", "p1", "alice", keyward.LicenseActive)
	l1 := l("lic_1", "p1", "bob", keyward.LicenseRevoked)
	l5 := l("lic_5", "p2", "alice", keyward.LicenseActive)
	l2 := l("lic_2", "p1", "alice", keyward.LicenseActive)
	l4 := l("lic_4", "p2", "carol", keyward.LicenseSuspended)
	update(t, s, func(tx store.Tx) error {
		err := errors.Join(tx.CreateProduct(newProduct("p1")), tx.CreateProduct(newProduct("p2")))
		for _, lic := range []*keyward.License{l3, l1, l5, l2, l4} {
			err = errors.Join(err, tx.CreateLicense(lic))
		}
		return err
	})
	for _, tc := range []struct {
		name string
		f    store.LicenseFilter
		want []*keyward.License
	}{
		{"All", store.LicenseFilter{}, []*keyward.License{l1, l2, l3, l4, l5}},
		{"Product", store.LicenseFilter{ProductID: "p2"}, []*keyward.License{l4, l5}},
		{"State", store.LicenseFilter{State: keyward.LicenseActive}, []*keyward.License{l2, l3, l5}},
		{"Holder", store.LicenseFilter{Holder: "alice"}, []*keyward.License{l2, l3, l5}},
		{"After", store.LicenseFilter{After: "lic_2"}, []*keyward.License{l3, l4, l5}},
		{"Limit", store.LicenseFilter{Limit: 2}, []*keyward.License{l1, l2}},
		{"AfterLimit", store.LicenseFilter{After: "lic_1", Limit: 2}, []*keyward.License{l2, l3}},
		{"Combined", store.LicenseFilter{ProductID: "p1", State: keyward.LicenseActive, Holder: "alice", After: "lic_2"},
			[]*keyward.License{l3}},
		{"AfterLast", store.LicenseFilter{After: "lic_5"}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := get(t, s, func(tx store.Tx) ([]*keyward.License, error) { return tx.Licenses(tc.f) })
			wantList(t, fmt.Sprintf("Licenses(%+v)", tc.f), got, tc.want)
		})
	}
}

// License keys.

func testLicenseKeysRoundTrip(t *testing.T, s store.Store) {
	withLicense(t, s)
	current := &keyward.LicenseKey{Hash: bytes.Repeat([]byte{0xab}, 32), LicenseID: "l1", Prefix: "KW1-AAAAA", CreatedAt: at(day)}
	old := &keyward.LicenseKey{Hash: bytes.Repeat([]byte{0x01}, 32), LicenseID: "l1", Prefix: "KW1-BBBBB", CreatedAt: at(0),
		SupersededAt: ptr(day), GraceUntil: ptr(15 * day)}
	update(t, s, func(tx store.Tx) error { return errors.Join(tx.CreateLicenseKey(current), tx.CreateLicenseKey(old)) })
	for _, want := range []*keyward.LicenseKey{current, old} {
		got := get(t, s, func(tx store.Tx) (*keyward.LicenseKey, error) { return tx.LicenseKeyByHash(want.Hash) })
		wantEqual(t, "LicenseKeyByHash("+want.Prefix+")", got, want)
	}
}

func testLicenseKeysNotFound(t *testing.T, s store.Store) {
	hash := bytes.Repeat([]byte{0xcd}, 32)
	err := viewErr(t, s, func(tx store.Tx) error { _, err := tx.LicenseKeyByHash(hash); return err })
	wantNotFound(t, "LicenseKeyByHash(missing)", err)
	if strings.Contains(strings.ToLower(err.Error()), hex.EncodeToString(hash)[:8]) {
		t.Errorf("LicenseKeyByHash(missing) = %v: error reveals the hash", err)
	}
}

func testLicenseKeysConflict(t *testing.T, s store.Store) {
	withLicense(t, s)
	k := &keyward.LicenseKey{Hash: []byte("hash"), LicenseID: "l1", Prefix: "KW1-AAAAA", CreatedAt: at(0)}
	update(t, s, func(tx store.Tx) error { return tx.CreateLicenseKey(k) })
	dup := *k
	dup.Prefix = "KW1-BBBBB"
	wantCode(t, "CreateLicenseKey(same hash)", updateErr(t, s, func(tx store.Tx) error { return tx.CreateLicenseKey(&dup) }), keyward.EConflict)
}

func testLicenseKeysSupersede(t *testing.T, s store.Store) {
	withLicense(t, s)
	older := &keyward.LicenseKey{Hash: []byte("older"), LicenseID: "l1", Prefix: "KW1-OLDER", CreatedAt: at(0),
		SupersededAt: ptr(day), GraceUntil: ptr(2 * day)}
	current := &keyward.LicenseKey{Hash: []byte("current"), LicenseID: "l1", Prefix: "KW1-CURNT", CreatedAt: at(day)}
	other := &keyward.LicenseKey{Hash: []byte("other"), LicenseID: "l2", Prefix: "KW1-OTHER", CreatedAt: at(day)}
	update(t, s, func(tx store.Tx) error {
		return errors.Join(tx.CreateLicense(newLicense("l2", "p1")),
			tx.CreateLicenseKey(older), tx.CreateLicenseKey(current), tx.CreateLicenseKey(other))
	})
	update(t, s, func(tx store.Tx) error { return tx.SupersedeLicenseKeys("l1", at(10*day), at(24*day)) })

	wantCurrent := *current
	wantCurrent.SupersededAt, wantCurrent.GraceUntil = ptr(10*day), ptr(24*day)
	for _, want := range []*keyward.LicenseKey{older, &wantCurrent, other} {
		got := get(t, s, func(tx store.Tx) (*keyward.LicenseKey, error) { return tx.LicenseKeyByHash(want.Hash) })
		wantEqual(t, "after SupersedeLicenseKeys: "+want.Prefix, got, want)
	}
}

// Machines.

func testMachinesRoundTrip(t *testing.T, s store.Store) {
	withLicense(t, s)
	m2 := newMachine("mch_2", "l1", "fp-2")
	m1 := newMachine("mch_1", "l1", "fp-1")
	m1.LastSeenAt = at(time.Hour)
	m3 := newMachine("mch_3", "l1", "fp-3")
	m3.CreatedAt, m3.LastSeenAt = at(-time.Hour), at(-time.Hour)
	update(t, s, func(tx store.Tx) error {
		return errors.Join(tx.CreateMachine(m2), tx.CreateMachine(m1), tx.CreateMachine(m3))
	})
	got := get(t, s, func(tx store.Tx) (*keyward.Machine, error) { return tx.MachineByFingerprint("l1", "fp-1") })
	wantEqual(t, "MachineByFingerprint(l1, fp-1)", got, m1)
	// Ordered by creation time, then id.
	wantList(t, "Machines(l1)", get(t, s, func(tx store.Tx) ([]*keyward.Machine, error) { return tx.Machines("l1") }),
		[]*keyward.Machine{m3, m1, m2})

	update(t, s, func(tx store.Tx) error { return tx.TouchMachine("mch_2", at(day)) })
	want := *m2
	want.LastSeenAt = at(day)
	got = get(t, s, func(tx store.Tx) (*keyward.Machine, error) { return tx.MachineByFingerprint("l1", "fp-2") })
	wantEqual(t, "machine after TouchMachine", got, &want)
}

func testMachinesNotFound(t *testing.T, s store.Store) {
	withLicense(t, s)
	update(t, s, func(tx store.Tx) error { return tx.CreateMachine(newMachine("mch_1", "l1", "fp-1")) })
	err := viewErr(t, s, func(tx store.Tx) error { _, err := tx.MachineByFingerprint("l1", "fp-missing"); return err })
	wantNotFound(t, "MachineByFingerprint(missing)", err)
	err = viewErr(t, s, func(tx store.Tx) error { _, err := tx.MachineByFingerprint("l2", "fp-1"); return err })
	wantNotFound(t, "MachineByFingerprint(other license)", err)
	err = updateErr(t, s, func(tx store.Tx) error { return tx.TouchMachine("mch_missing", at(0)) })
	wantNotFound(t, "TouchMachine(missing)", err, "mch_missing")
	ms := get(t, s, func(tx store.Tx) ([]*keyward.Machine, error) { return tx.Machines("l_missing") })
	if len(ms) != 0 {
		t.Fatalf("Machines(missing license) = %s, want none", show(ms))
	}
}

func testMachinesConflict(t *testing.T, s store.Store) {
	withLicense(t, s)
	update(t, s, func(tx store.Tx) error {
		return errors.Join(tx.CreateLicense(newLicense("l2", "p1")), tx.CreateMachine(newMachine("mch_1", "l1", "fp")))
	})
	err := updateErr(t, s, func(tx store.Tx) error { return tx.CreateMachine(newMachine("mch_2", "l1", "fp")) })
	wantCode(t, "CreateMachine(same license and fingerprint)", err, keyward.EConflict)
	// The same fingerprint on another license is another machine.
	update(t, s, func(tx store.Tx) error { return tx.CreateMachine(newMachine("mch_3", "l2", "fp")) })
}

func testMachinesDelete(t *testing.T, s store.Store) {
	withLicense(t, s)
	m1, m2 := newMachine("mch_1", "l1", "fp-1"), newMachine("mch_2", "l1", "fp-2")
	update(t, s, func(tx store.Tx) error { return errors.Join(tx.CreateMachine(m1), tx.CreateMachine(m2)) })

	err := updateErr(t, s, func(tx store.Tx) error { return tx.DeleteMachine("l2", "mch_1") })
	wantNotFound(t, "DeleteMachine(other license)", err, "mch_1")
	err = updateErr(t, s, func(tx store.Tx) error { return tx.DeleteMachine("l1", "mch_missing") })
	wantNotFound(t, "DeleteMachine(missing)", err, "mch_missing")

	update(t, s, func(tx store.Tx) error { return tx.DeleteMachine("l1", "mch_1") })
	wantList(t, "Machines after delete", get(t, s, func(tx store.Tx) ([]*keyward.Machine, error) { return tx.Machines("l1") }),
		[]*keyward.Machine{m2})
	err = updateErr(t, s, func(tx store.Tx) error { return tx.DeleteMachine("l1", "mch_1") })
	wantNotFound(t, "DeleteMachine(deleted)", err, "mch_1")
}

// Audit log.

func testAuditRoundTrip(t *testing.T, s store.Store) {
	full := &keyward.AuditEntry{
		Time: at(time.Second), Actor: "tok_1", ActorName: "Ops team", Action: "license.revoke",
		TargetType: "license", TargetID: "lic_1", Before: "active", After: "revoked", Reason: "abuse",
		RequestID: "req_1", Details: json.RawMessage(`{"approvals": ["tok_2", "tok_3"], "n": 2, "nested": {"b": true, "a": null}}`),
		Roles: []string{"revoker", "support"}, ApprovalIDs: []string{"apr_1", "apr_2"}, PolicyVersion: 3, Rule: "fingerprint-spray",
	}
	bare := &keyward.AuditEntry{Time: at(2 * time.Second), Actor: "system:scheduler", Action: "key.activate", TargetType: "key", TargetID: "kid_1"}
	update(t, s, func(tx store.Tx) error { return errors.Join(tx.AppendAudit(full), tx.AppendAudit(bare)) })
	if full.Seq != 1 || bare.Seq != 2 {
		t.Fatalf("AppendAudit assigned seq %d, %d; want 1, 2", full.Seq, bare.Seq)
	}
	got := get(t, s, func(tx store.Tx) ([]*keyward.AuditEntry, error) { return tx.AuditEntries(store.AuditFilter{}) })
	wantList(t, "AuditEntries", got, []*keyward.AuditEntry{full, bare})
}

func testAuditSeq(t *testing.T, s store.Store) {
	appendN := func(tx store.Tx, n int) error {
		for range n {
			if err := tx.AppendAudit(newAudit("test.append", "x")); err != nil {
				return err
			}
		}
		return nil
	}
	update(t, s, func(tx store.Tx) error { return appendN(tx, 3) })
	update(t, s, func(tx store.Tx) error { return appendN(tx, 1) })
	errRollback := errors.New("roll back")
	if err := updateErr(t, s, func(tx store.Tx) error {
		if err := appendN(tx, 2); err != nil {
			return err
		}
		return errRollback
	}); !errors.Is(err, errRollback) {
		t.Fatalf("Update = %v, want %v", err, errRollback)
	}
	update(t, s, func(tx store.Tx) error { return appendN(tx, 2) })

	es := get(t, s, func(tx store.Tx) ([]*keyward.AuditEntry, error) { return tx.AuditEntries(store.AuditFilter{}) })
	if len(es) != 6 {
		t.Fatalf("AuditEntries: got %d entries, want 6", len(es))
	}
	for i, e := range es {
		if e.Seq != int64(i+1) {
			t.Fatalf("AuditEntries: seqs %s, want 1..6 without gaps", show(es))
		}
	}
}

func testAuditFilter(t *testing.T, s store.Store) {
	e := func(d time.Duration, action, target string) *keyward.AuditEntry {
		a := newAudit(action, target)
		a.Time = at(d)
		return a
	}
	e1 := e(0, "license.issue", "lic_1")
	e2 := e(time.Minute, "license.suspend", "lic_1")
	e3 := e(2*time.Minute, "license.issue", "lic_2")
	e4 := e(3*time.Minute, "license.revoke", "lic_1")
	e5 := e(4*time.Minute, "license.issue", "lic_3")
	update(t, s, func(tx store.Tx) error {
		return errors.Join(tx.AppendAudit(e1), tx.AppendAudit(e2), tx.AppendAudit(e3), tx.AppendAudit(e4), tx.AppendAudit(e5))
	})
	for _, tc := range []struct {
		name string
		f    store.AuditFilter
		want []*keyward.AuditEntry
	}{
		{"All", store.AuditFilter{}, []*keyward.AuditEntry{e1, e2, e3, e4, e5}},
		{"Target", store.AuditFilter{TargetID: "lic_1"}, []*keyward.AuditEntry{e1, e2, e4}},
		{"Action", store.AuditFilter{Action: "license.issue"}, []*keyward.AuditEntry{e1, e3, e5}},
		{"Since", store.AuditFilter{Since: at(2 * time.Minute)}, []*keyward.AuditEntry{e3, e4, e5}},
		{"AfterSeq", store.AuditFilter{AfterSeq: 3}, []*keyward.AuditEntry{e4, e5}},
		{"Limit", store.AuditFilter{Limit: 2}, []*keyward.AuditEntry{e1, e2}},
		{"Combined", store.AuditFilter{TargetID: "lic_1", AfterSeq: 1, Limit: 1}, []*keyward.AuditEntry{e2}},
		{"NoMatch", store.AuditFilter{Action: "key.destroy"}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := get(t, s, func(tx store.Tx) ([]*keyward.AuditEntry, error) { return tx.AuditEntries(tc.f) })
			wantList(t, fmt.Sprintf("AuditEntries(%+v)", tc.f), got, tc.want)
		})
	}
}

// Outbox.

func testEventsRoundTrip(t *testing.T, s store.Store) {
	full := &keyward.Event{ID: "evt_1", Type: "license.revoked", Time: at(time.Second), Subject: "lic_1",
		Data: json.RawMessage(`{"reason": "abuse", "at": "2025-03-14T15:09:27Z"}`)}
	bare := &keyward.Event{ID: "evt_2", Type: "key.activated", Time: at(2 * time.Second), Subject: "kid_1"}
	update(t, s, func(tx store.Tx) error { return errors.Join(tx.AppendEvent(full), tx.AppendEvent(bare)) })
	if full.Seq <= 0 || bare.Seq <= full.Seq {
		t.Fatalf("AppendEvent assigned seq %d, %d; want positive and increasing", full.Seq, bare.Seq)
	}
	got := get(t, s, func(tx store.Tx) ([]*keyward.Event, error) { return tx.Events(0, 0) })
	wantList(t, "Events(0, 0)", got, []*keyward.Event{full, bare})
}

func testEventsSeq(t *testing.T, s store.Store) {
	var all []*keyward.Event
	for i := range 5 {
		update(t, s, func(tx store.Tx) error {
			e := &keyward.Event{ID: fmt.Sprintf("evt_%d", i), Type: "test", Time: at(0), Subject: "x"}
			all = append(all, e)
			return tx.AppendEvent(e)
		})
	}
	for i := 1; i < len(all); i++ {
		if all[i].Seq <= all[i-1].Seq {
			t.Fatalf("AppendEvent seqs %s, want increasing", show(all))
		}
	}
	got := get(t, s, func(tx store.Tx) ([]*keyward.Event, error) { return tx.Events(all[1].Seq, 2) })
	wantList(t, "Events(second seq, 2)", got, all[2:4])
	got = get(t, s, func(tx store.Tx) ([]*keyward.Event, error) { return tx.Events(all[4].Seq, 0) })
	wantList(t, "Events(last seq, 0)", got, nil)
}

// Tokens.

func testTokensRoundTrip(t *testing.T, s store.Store) {
	full := &keyward.Token{ID: "tok_full", Name: "CI issuer", Hash: []byte("hash-full"),
		Roles: []string{keyward.RoleIssuer, keyward.RoleSupport}, ProductID: "p1",
		CreatedAt: at(time.Second), ExpiresAt: ptr(90 * day), RevokedAt: ptr(day)}
	bare := &keyward.Token{ID: "tok_bare", Name: "nothing yet", Hash: []byte("hash-bare"), CreatedAt: at(0)}
	update(t, s, func(tx store.Tx) error {
		return errors.Join(tx.CreateProduct(newProduct("p1")), tx.CreateToken(full), tx.CreateToken(bare))
	})
	for _, want := range []*keyward.Token{full, bare} {
		got := get(t, s, func(tx store.Tx) (*keyward.Token, error) { return tx.TokenByHash(want.Hash) })
		wantEqual(t, "TokenByHash("+want.ID+")", got, want)
	}
	// Ordered by creation time, then id.
	wantList(t, "Tokens()", get(t, s, func(tx store.Tx) ([]*keyward.Token, error) { return tx.Tokens() }),
		[]*keyward.Token{bare, full})
}

func testTokensNotFound(t *testing.T, s store.Store) {
	hash := []byte("secret-token-hash")
	err := viewErr(t, s, func(tx store.Tx) error { _, err := tx.TokenByHash(hash); return err })
	wantNotFound(t, "TokenByHash(missing)", err)
	if msg := err.Error(); strings.Contains(msg, string(hash)) || strings.Contains(msg, hex.EncodeToString(hash)[:8]) {
		t.Errorf("TokenByHash(missing) = %v: error reveals the hash", err)
	}
	err = updateErr(t, s, func(tx store.Tx) error { return tx.RevokeToken("tok_missing", at(0)) })
	wantNotFound(t, "RevokeToken(missing)", err, "tok_missing")
}

func testTokensConflict(t *testing.T, s store.Store) {
	tok := &keyward.Token{ID: "tok_1", Name: "one", Hash: []byte("hash"), CreatedAt: at(0)}
	update(t, s, func(tx store.Tx) error { return tx.CreateToken(tok) })
	dup := *tok
	dup.ID = "tok_2"
	wantCode(t, "CreateToken(same hash)", updateErr(t, s, func(tx store.Tx) error { return tx.CreateToken(&dup) }), keyward.EConflict)
}

func testTokensRevoke(t *testing.T, s store.Store) {
	tok := &keyward.Token{ID: "tok_1", Name: "one", Hash: []byte("hash"), Roles: []string{keyward.RoleAdmin}, CreatedAt: at(0)}
	update(t, s, func(tx store.Tx) error { return tx.CreateToken(tok) })
	update(t, s, func(tx store.Tx) error { return tx.RevokeToken("tok_1", at(time.Hour)) })
	want := *tok
	want.RevokedAt = ptr(time.Hour)
	wantEqual(t, "token after RevokeToken", get(t, s, func(tx store.Tx) (*keyward.Token, error) { return tx.TokenByHash(tok.Hash) }), &want)
}

// Secrets.

func testSecrets(t *testing.T, s store.Store) {
	err := viewErr(t, s, func(tx store.Tx) error { _, err := tx.Secret("pepper"); return err })
	wantNotFound(t, "Secret(missing)", err, "pepper")

	secret := func(name string) []byte {
		return get(t, s, func(tx store.Tx) ([]byte, error) { return tx.Secret(name) })
	}
	update(t, s, func(tx store.Tx) error {
		return errors.Join(tx.PutSecret("pepper", []byte{0, 1, 2, 0xff}), tx.PutSecret("other", []byte("o")))
	})
	if got := secret("pepper"); !bytes.Equal(got, []byte{0, 1, 2, 0xff}) {
		t.Fatalf("Secret(pepper) = %x, want 000102ff", got)
	}
	update(t, s, func(tx store.Tx) error { return tx.PutSecret("pepper", []byte("resealed")) })
	if got := secret("pepper"); string(got) != "resealed" {
		t.Fatalf("Secret(pepper) after PutSecret again = %q, want %q", got, "resealed")
	}
	if got := secret("other"); string(got) != "o" {
		t.Fatalf("Secret(other) = %q, want %q", got, "o")
	}
}

// Transactions.

// writeAll writes a product, an audit entry and an event, as one change does.
func writeAll(tx store.Tx) error {
	return errors.Join(
		tx.CreateProduct(newProduct("p1")),
		tx.AppendAudit(newAudit("product.create", "p1")),
		tx.AppendEvent(&keyward.Event{ID: "evt_1", Type: "product.created", Time: at(0), Subject: "p1"}),
	)
}

// wantNothingWritten checks that writeAll left no trace.
func wantNothingWritten(t *testing.T, s store.Store) {
	t.Helper()
	view(t, s, func(tx store.Tx) error {
		_, err := tx.Product("p1")
		wantCode(t, "Product(p1) after rollback", err, keyward.ENotFound)
		if es, err := tx.AuditEntries(store.AuditFilter{}); err != nil || len(es) != 0 {
			t.Errorf("AuditEntries after rollback = %s, %v; want none", show(es), err)
		}
		if es, err := tx.Events(0, 0); err != nil || len(es) != 0 {
			t.Errorf("Events after rollback = %s, %v; want none", show(es), err)
		}
		return nil
	})
}

// wantUsable checks that s still commits after a failed transaction.
func wantUsable(t *testing.T, s store.Store) {
	t.Helper()
	update(t, s, writeAll)
	es := get(t, s, func(tx store.Tx) ([]*keyward.AuditEntry, error) { return tx.AuditEntries(store.AuditFilter{}) })
	if len(es) != 1 || es[0].Seq != 1 {
		t.Fatalf("AuditEntries after rollback and commit = %s, want [1]", show(es))
	}
}

func testRollbackOnError(t *testing.T, s store.Store) {
	errFn := keyward.Errorf(keyward.EIllegalTransition, "nope")
	err := s.Update(t.Context(), func(tx store.Tx) error {
		if err := writeAll(tx); err != nil {
			return err
		}
		return errFn
	})
	if !errors.Is(err, errFn) {
		t.Fatalf("Update = %v, want fn's error %v", err, errFn)
	}
	wantCode(t, "Update", err, keyward.EIllegalTransition)
	wantNothingWritten(t, s)
	wantUsable(t, s)
}

func testRollbackOnPanic(t *testing.T, s store.Store) {
	type boom struct{}
	var recovered any
	func() {
		defer func() { recovered = recover() }()
		err := s.Update(t.Context(), func(tx store.Tx) error {
			if err := writeAll(tx); err != nil {
				return err
			}
			panic(boom{})
		})
		t.Errorf("Update returned %v, want it to panic", err)
	}()
	if recovered != (boom{}) {
		t.Fatalf("Update: recovered %v, want the panic of fn", recovered)
	}
	wantNothingWritten(t, s)
	wantUsable(t, s)
}

func testViewIsReadOnly(t *testing.T, s store.Store) {
	if err := s.View(t.Context(), writeAll); err == nil {
		t.Fatalf("View(write) = nil, want an error")
	}
	wantNothingWritten(t, s)
	if err := s.Ping(t.Context()); err != nil {
		t.Fatalf("Ping = %v", err)
	}
}
