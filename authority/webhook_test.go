package authority_test

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/keyward/keyward"
	"github.com/keyward/keyward/authority"
	"github.com/keyward/keyward/keys"
	"github.com/keyward/keyward/store"
	"github.com/keyward/keyward/webhook"
)

func (f *fixture) webhook(t *testing.T, url string, events ...string) (*keyward.WebhookEndpoint, webhook.Secret) {
	t.Helper()
	ep, sec, err := f.auth.CreateWebhook(f.ctx, authority.WebhookRequest{URL: url, Events: events})
	if err != nil {
		t.Fatalf("CreateWebhook(%s, %v) = %v", url, events, err)
	}
	return ep, sec
}

func (f *fixture) endpointRow(t *testing.T, id string) *keyward.WebhookEndpoint {
	t.Helper()
	var ep *keyward.WebhookEndpoint
	if err := f.store.View(context.Background(), func(tx store.Tx) (err error) {
		ep, err = tx.WebhookEndpoint(id)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	return ep
}

func TestWebhookCreateBadInput(t *testing.T) {
	f := newFixture(t)
	audit0, events0 := f.counts(t)
	cases := []struct {
		name   string
		req    authority.WebhookRequest
		substr string
	}{
		{"NoURL", authority.WebhookRequest{Events: []string{"*"}}, "url is required"},
		{"Relative", authority.WebhookRequest{URL: "/hook", Events: []string{"*"}}, "absolute"},
		{"FTP", authority.WebhookRequest{URL: "ftp://hooks.example.com/", Events: []string{"*"}}, "http or https"},
		{"NoHost", authority.WebhookRequest{URL: "https://", Events: []string{"*"}}, "host"},
		{"Loopback", authority.WebhookRequest{URL: "http://127.0.0.1:8080/hook", Events: []string{"*"}}, "not a public address"},
		{"Metadata", authority.WebhookRequest{URL: "http://169.254.169.254/", Events: []string{"*"}}, "not a public address"},
		{"Localhost", authority.WebhookRequest{URL: "http://localhost/hook", Events: []string{"*"}}, "loopback"},
		{"NoEvents", authority.WebhookRequest{URL: "https://hooks.example.com/"}, "license.revoked"},
		{"UnknownEvent", authority.WebhookRequest{URL: "https://hooks.example.com/", Events: []string{"license.revoked", "license.exploded"}}, "license.exploded"},
		{"UnknownGroup", authority.WebhookRequest{URL: "https://hooks.example.com/", Events: []string{"billing.*"}}, "billing.*"},
		{"BareStarPrefix", authority.WebhookRequest{URL: "https://hooks.example.com/", Events: []string{".*"}}, "unknown event type"},
		{"Empty", authority.WebhookRequest{URL: "https://hooks.example.com/", Events: []string{""}}, "unknown event type"},
		{"LongDescription", authority.WebhookRequest{URL: "https://hooks.example.com/", Events: []string{"*"}, Description: strings.Repeat("x", 257)}, "description"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, _, err := f.auth.CreateWebhook(f.ctx, c.req)
			wantCode(t, err, keyward.EInvalid)
			if msg := keyward.ErrorMessage(err); !strings.Contains(msg, c.substr) {
				t.Fatalf("message %q does not mention %q", msg, c.substr)
			}
		})
	}
	// The refusal of an unknown type lists the valid ones.
	_, _, err := f.auth.CreateWebhook(f.ctx, authority.WebhookRequest{URL: "https://hooks.example.com/", Events: []string{"nope"}})
	for _, typ := range authority.EventTypes() {
		if !strings.Contains(keyward.ErrorMessage(err), typ) {
			t.Fatalf("message %q does not list %s", keyward.ErrorMessage(err), typ)
		}
	}
	if eps, err := f.auth.Webhooks(f.ctx, true); err != nil || len(eps) != 0 {
		t.Fatalf("Webhooks after refusals = %d, %v; want none", len(eps), err)
	}
	if a, e := f.counts(t); a != audit0 || e != events0 {
		t.Fatalf("refusals wrote %d audit entries and %d events", a-audit0, e-events0)
	}
}

func TestWebhookPatternsNormalized(t *testing.T) {
	f := newFixture(t)
	ep, _ := f.webhook(t, "https://hooks.example.com/", "license.revoked", "key.*", "license.revoked", "*")
	if got := strings.Join(ep.Events, ","); got != "license.revoked,key.*,*" {
		t.Fatalf("Events = %s, want duplicates dropped, order kept", got)
	}
}

func TestWebhookSecretSealed(t *testing.T) {
	f := newFixture(t)
	url := "https://user:hunter2@hooks.example.com/k?token=t0ken"
	ep, sec := f.webhook(t, url, "license.revoked")
	row := f.endpointRow(t, ep.ID)
	if row.Secret == nil || bytes.Contains(row.Secret, sec.Bytes()) || strings.Contains(string(row.Secret), sec.Reveal()) {
		t.Fatal("the stored secret is not sealed")
	}
	if row.URL != url || row.State != keyward.WebhookEnabled {
		t.Fatalf("stored endpoint = %+v", row)
	}
	got, err := f.auth.WebhookSecrets(row, f.clock.Now())
	if err != nil || len(got) != 1 || !bytes.Equal(got[0].Bytes(), sec.Bytes()) {
		t.Fatalf("WebhookSecrets = %v, %v; want the created secret", got, err)
	}
	// The sealed blob is bound to its endpoint: moved to another, it does not open.
	other, _ := f.webhook(t, "https://hooks.example.com/other", "*")
	otherRow := f.endpointRow(t, other.ID)
	otherRow.Secret = row.Secret
	if _, err := f.auth.WebhookSecrets(otherRow, f.clock.Now()); err == nil {
		t.Fatal("a secret sealed for one endpoint opened for another")
	}

	// Audit and event say what happened, with the URL redacted and no secret.
	var entries []*keyward.AuditEntry
	var events []*keyward.Event
	_ = f.store.View(context.Background(), func(tx store.Tx) (err error) {
		if entries, err = tx.AuditEntries(store.AuditFilter{TargetID: ep.ID}); err != nil {
			return err
		}
		events, err = tx.Events(0, 0)
		return err
	})
	if len(entries) != 1 || entries[0].Action != "webhook.create" || entries[0].Actor != "tok_admin" {
		t.Fatalf("audit of create = %+v", entries)
	}
	var evt *keyward.Event
	for _, e := range events {
		if e.Subject == ep.ID {
			evt = e
		}
	}
	if evt == nil || evt.Type != "webhook.created" {
		t.Fatalf("no webhook.created event for %s", ep.ID)
	}
	for _, doc := range []string{string(entries[0].Details), string(evt.Data), f.logs.String()} {
		if strings.Contains(doc, "hunter2") || strings.Contains(doc, "t0ken") || strings.Contains(doc, strings.TrimPrefix(sec.Reveal(), "whsec_")) {
			t.Fatalf("a credential or the secret leaked into %s", doc)
		}
	}
	if !strings.Contains(string(entries[0].Details), "hooks.example.com") {
		t.Fatalf("audit details %s do not name the host", entries[0].Details)
	}
}

func TestWebhookAllowPrivate(t *testing.T) {
	f := newFixture(t)
	a, err := authority.New(context.Background(), authority.Config{Store: f.store, KEKs: f.ring, Clock: f.clock, WebhookAllowPrivate: true})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := a.CreateWebhook(f.ctx, authority.WebhookRequest{URL: "http://127.0.0.1:9000/hook", Events: []string{"*"}}); err != nil {
		t.Fatalf("CreateWebhook(loopback) with WebhookAllowPrivate = %v", err)
	}
}

func TestWebhookLifecycleAudited(t *testing.T) {
	f := newFixture(t)
	ep, _ := f.webhook(t, "https://hooks.example.com/", "*")
	step := func(name string, fn func() error, action, event string) {
		t.Helper()
		a0, e0 := f.counts(t)
		if err := fn(); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		a1, e1 := f.counts(t)
		if a1 != a0+1 || e1 != e0+1 {
			t.Fatalf("%s wrote %d audit entries and %d events, want 1 and 1", name, a1-a0, e1-e0)
		}
		var last *keyward.AuditEntry
		var ev *keyward.Event
		_ = f.store.View(context.Background(), func(tx store.Tx) error {
			as, _ := tx.AuditEntries(store.AuditFilter{})
			es, _ := tx.Events(0, 0)
			last, ev = as[len(as)-1], es[len(es)-1]
			return nil
		})
		if last.Action != action || ev.Type != event {
			t.Fatalf("%s: audit %q, event %q; want %q, %q", name, last.Action, ev.Type, action, event)
		}
	}
	grace := 2 * time.Hour
	step("rotate", func() error { _, _, err := f.auth.RotateWebhookSecret(f.ctx, ep.ID, &grace); return err },
		"webhook.rotate-secret", "webhook.secret_rotated")
	row := f.endpointRow(t, ep.ID)
	if row.PreviousSecret == nil || row.PreviousExpiresAt == nil || !row.PreviousExpiresAt.Equal(f.clock.Now().Add(grace)) {
		t.Fatalf("after rotation: %+v, want the previous secret kept 2h", row)
	}
	if ss, err := f.auth.WebhookSecrets(row, f.clock.Now()); err != nil || len(ss) != 2 {
		t.Fatalf("WebhookSecrets during grace = %d, %v; want 2", len(ss), err)
	}
	if ss, err := f.auth.WebhookSecrets(row, f.clock.Now().Add(grace)); err != nil || len(ss) != 1 {
		t.Fatalf("WebhookSecrets after grace = %d, %v; want 1", len(ss), err)
	}
	step("disable", func() error { _, err := f.auth.DisableWebhook(f.ctx, ep.ID, "maintenance"); return err },
		"webhook.disable", "webhook.disabled")
	if _, err := f.auth.DisableWebhook(f.ctx, ep.ID, ""); keyward.ErrorCode(err) != keyward.EIllegalTransition {
		t.Fatalf("DisableWebhook twice = %v, want %s", err, keyward.EIllegalTransition)
	}
	step("enable", func() error { _, err := f.auth.EnableWebhook(f.ctx, ep.ID, ""); return err },
		"webhook.enable", "webhook.enabled")

	// A finished delivery to replay.
	now := f.clock.Now()
	if err := f.store.Update(context.Background(), func(tx store.Tx) error {
		return tx.CreateWebhookDelivery(&keyward.WebhookDelivery{
			ID: "dlv_1", EndpointID: ep.ID, EventID: "evt_x", EventSeq: 1, EventType: "license.revoked",
			Payload: []byte(`{}`), State: keyward.DeliveryFailed, Attempts: 10, LastStatus: 500, CreatedAt: now, UpdatedAt: now,
		})
	}); err != nil {
		t.Fatal(err)
	}
	step("replay", func() error { _, err := f.auth.ReplayWebhookDelivery(f.ctx, "dlv_1"); return err },
		"webhook.replay", "webhook.delivery_replayed")
	step("remove", func() error { _, err := f.auth.RemoveWebhook(f.ctx, ep.ID, "gone"); return err },
		"webhook.remove", "webhook.removed")
	row = f.endpointRow(t, ep.ID)
	if row.State != keyward.WebhookRemoved || row.Secret != nil || row.PreviousSecret != nil {
		t.Fatalf("after removal: %+v, want removed with secrets erased", row)
	}
	d, err := f.auth.WebhookDelivery(f.ctx, "dlv_1")
	if err != nil || d.State != keyward.DeliveryCancelled {
		t.Fatalf("the replayed delivery after removal = %+v, %v; want cancelled", d, err)
	}
	if eps, _ := f.auth.Webhooks(f.ctx, false); len(eps) != 0 {
		t.Fatalf("Webhooks(includeRemoved=false) = %d, want 0", len(eps))
	}
	if eps, _ := f.auth.Webhooks(f.ctx, true); len(eps) != 1 {
		t.Fatalf("Webhooks(includeRemoved=true) = %d, want 1", len(eps))
	}
}

func TestWebhookBadRequests(t *testing.T) {
	f := newFixture(t)
	ep, _ := f.webhook(t, "https://hooks.example.com/", "*")
	a0, e0 := f.counts(t)
	for _, g := range []time.Duration{-time.Second, 31 * 24 * time.Hour} {
		_, _, err := f.auth.RotateWebhookSecret(f.ctx, ep.ID, &g)
		wantCode(t, err, keyward.EInvalid)
	}
	_, _, err := f.auth.RotateWebhookSecret(f.ctx, "whk_missing", nil)
	wantCode(t, err, keyward.ENotFound)
	_, err = f.auth.RemoveWebhook(f.ctx, "whk_missing", "")
	wantCode(t, err, keyward.ENotFound)
	_, err = f.auth.Webhook(f.ctx, "whk_missing")
	wantCode(t, err, keyward.ENotFound)
	_, err = f.auth.WebhookDeliveries(f.ctx, authority.DeliveryQuery{Endpoint: "whk_missing"})
	wantCode(t, err, keyward.ENotFound)
	_, err = f.auth.WebhookDeliveries(f.ctx, authority.DeliveryQuery{State: "lost"})
	wantCode(t, err, keyward.EInvalid)
	_, err = f.auth.WebhookDeliveries(f.ctx, authority.DeliveryQuery{Limit: 1001})
	wantCode(t, err, keyward.EInvalid)
	_, err = f.auth.WebhookDelivery(f.ctx, "dlv_missing")
	wantCode(t, err, keyward.ENotFound)
	_, err = f.auth.ReplayWebhookDelivery(f.ctx, "dlv_missing")
	wantCode(t, err, keyward.ENotFound)
	if a, e := f.counts(t); a != a0 || e != e0 {
		t.Fatalf("refused requests wrote %d audit entries and %d events", a-a0, e-e0)
	}
}

func TestWebhookRewrap(t *testing.T) {
	f := newFixture(t)
	ep, first := f.webhook(t, "https://hooks.example.com/", "*")
	_, second, err := f.auth.RotateWebhookSecret(f.ctx, ep.ID, nil)
	if err != nil {
		t.Fatal(err)
	}
	k2, _ := keys.GenerateKEK(nil)
	both := keys.NewKEKRing(k2, f.ring.Primary())
	n, err := authority.RewrapAll(f.ctx, f.store, both, f.clock)
	if err != nil || n != 4 {
		t.Fatalf("RewrapAll = %d, %v; want 4 (registry key, pepper, current and previous webhook secret)", n, err)
	}
	f.ring = keys.NewKEKRing(k2)
	a := mustNew(t, f, f.store)
	ss, err := a.WebhookSecrets(f.endpointRow(t, ep.ID), f.clock.Now())
	if err != nil || len(ss) != 2 || !bytes.Equal(ss[0].Bytes(), second.Bytes()) || !bytes.Equal(ss[1].Bytes(), first.Bytes()) {
		t.Fatalf("WebhookSecrets with only the new KEK = %d, %v; want the current and previous secrets", len(ss), err)
	}
}

func TestWebhookPermission(t *testing.T) {
	admin := keyward.Principal{ID: "a", Roles: []string{keyward.RoleAdmin}}
	scoped := keyward.Principal{ID: "s", Roles: []string{keyward.RoleAdmin}, ProductID: "prd_1"}
	if !authority.Allowed(admin, authority.PermWebhookAdmin, "") {
		t.Fatal("admin may not manage webhooks")
	}
	if authority.Allowed(scoped, authority.PermWebhookAdmin, "") {
		t.Fatal("a product-scoped admin may manage webhooks, which see every product's events")
	}
	for _, r := range keyward.AllRoles() {
		if r == keyward.RoleAdmin {
			continue
		}
		if authority.Allowed(keyward.Principal{Roles: []string{r}}, authority.PermWebhookAdmin, "") {
			t.Fatalf("role %s may manage webhooks; spec section 6 gives it to admin only", r)
		}
	}
}

func TestWebhookSecretsNotInJSON(t *testing.T) {
	f := newFixture(t)
	ep, sec := f.webhook(t, "https://hooks.example.com/", "*")
	b, _ := json.Marshal(struct {
		E *keyward.WebhookEndpoint
		S webhook.Secret
	}{ep, sec})
	if strings.Contains(string(b), strings.TrimPrefix(sec.Reveal(), "whsec_")) {
		t.Fatal("the secret appears in JSON")
	}
}
