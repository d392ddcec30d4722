package audit_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"database/sql"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"

	"github.com/keyward/keyward"
	"github.com/keyward/keyward/audit"
	"github.com/keyward/keyward/keys"
	"github.com/keyward/keyward/store"
	"github.com/keyward/keyward/store/sqlite"
)

// RFC 8037 Appendix A (shared/testvectors.md).
const (
	rfcD   = "nWGxne_9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A"
	rfcX   = "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"
	rfcKid = "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k"
	origin = "keyward.example/audit"
)

var t0 = time.Date(2026, 3, 14, 15, 9, 26, 535897000, time.UTC)

func mustRFCKey(tb testing.TB) *keys.PrivateKey {
	tb.Helper()
	seed, err := base64.RawURLEncoding.DecodeString(rfcD)
	if err != nil {
		tb.Fatal(err)
	}
	k, err := keys.NewEd25519FromSeed(seed)
	if err != nil {
		tb.Fatal(err)
	}
	return k
}

func mustKey(tb testing.TB, alg keys.Algorithm, seed byte) *keys.PrivateKey {
	tb.Helper()
	k, err := keys.Generate(alg, bytes.NewReader(bytes.Repeat([]byte{seed}, 64)))
	if err != nil {
		tb.Fatal(err)
	}
	return k
}

func entry(i int) *keyward.AuditEntry {
	return &keyward.AuditEntry{
		Time: t0.Add(time.Duration(i) * time.Minute), Actor: "tok_admin", ActorName: "Admin", Roles: []string{"admin"},
		Action: "license.suspend", TargetType: "license", TargetID: fmt.Sprintf("lic_%d", i),
		Before: "active", After: "suspended", Reason: fmt.Sprintf("case %d", i), RequestID: fmt.Sprintf("req_%d", i),
		Details: json.RawMessage(fmt.Sprintf(`{"n":%d}`, i)),
	}
}

// logEnv is a SQLite store with a registry key, and the raw database for
// tampering.
type logEnv struct {
	t    *testing.T
	st   *sqlite.DB
	raw  *sql.DB
	key  *keys.PrivateKey
	last *audit.Checkpoint
}

func newLog(t *testing.T, key *keys.PrivateKey) *logEnv {
	t.Helper()
	path := filepath.Join(t.TempDir(), "k.db")
	st, err := sqlite.Open(t.Context(), path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	raw, err := sql.Open("sqlite", "file:"+path+"?_pragma=busy_timeout(10000)")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { raw.Close() })
	e := &logEnv{t: t, st: st, raw: raw, key: key}
	e.addKey(key)
	return e
}

func (e *logEnv) addKey(k *keys.PrivateKey) {
	e.t.Helper()
	der, err := keys.MarshalPublic(k.Public())
	if err != nil {
		e.t.Fatal(err)
	}
	e.update(func(tx store.Tx) error {
		return tx.CreateKey(&keyward.SigningKey{KID: k.KID(), Ring: keyward.RegistryRing, Purpose: keyward.PurposeRegistry,
			Algorithm: string(k.Algorithm()), State: keyward.KeyRetired, PublicKey: der, CreatedAt: t0})
	})
}

func (e *logEnv) update(fn func(tx store.Tx) error) {
	e.t.Helper()
	if err := e.st.Update(e.t.Context(), fn); err != nil {
		e.t.Fatalf("Update: %v", err)
	}
}

func (e *logEnv) exec(q string, args ...any) {
	e.t.Helper()
	if _, err := e.raw.Exec(q, args...); err != nil {
		e.t.Fatalf("%s: %v", q, err)
	}
}

// append adds entries first..last through audit.Append.
func (e *logEnv) append(first, last int) {
	e.t.Helper()
	e.update(func(tx store.Tx) error {
		for i := first; i <= last; i++ {
			if err := audit.Append(tx, entry(i)); err != nil {
				return err
			}
		}
		return nil
	})
}

// sign signs a checkpoint; it returns the stored checkpoint and the error.
func (e *logEnv) sign() (*store.Checkpoint, error) {
	var out *store.Checkpoint
	err := e.st.Update(e.t.Context(), func(tx store.Tx) error {
		var err error
		out, _, err = audit.SignCheckpoint(tx, audit.SignRequest{Origin: origin, Signer: e.key, Public: e.key.Public(), Now: t0, Last: e.last})
		return err
	})
	if err == nil && out != nil {
		e.last = &audit.Checkpoint{Origin: origin, Size: out.Size, Root: out.Root, KID: out.KID}
	}
	return out, err
}

func (e *logEnv) mustSign() *store.Checkpoint {
	e.t.Helper()
	c, err := e.sign()
	if err != nil {
		e.t.Fatalf("SignCheckpoint: %v", err)
	}
	return c
}

func (e *logEnv) jwks() keys.JWKS {
	j := e.key.Public().JWK()
	j.Purpose, j.State = "registry", "active"
	return keys.JWKS{Keys: []keys.JWK{j}}
}

// Entries and ConsistencyProof make the store an audit.Source, as the
// server's endpoints do.
func (e *logEnv) Entries(ctx context.Context, from, to int64) ([][]byte, error) {
	var out [][]byte
	err := e.st.View(ctx, func(tx store.Tx) error {
		es, err := tx.AuditEntries(store.AuditFilter{AfterSeq: from - 1, Limit: int(min(to-from+1, 7))})
		for _, a := range es {
			if a.Seq > to {
				break
			}
			b, err := audit.Encode(a)
			if err != nil {
				return err
			}
			out = append(out, b)
		}
		return err
	})
	return out, err
}

func (e *logEnv) ConsistencyProof(ctx context.Context, oldSize, newSize int64) (tlog.TreeProof, error) {
	var p tlog.TreeProof
	err := e.st.View(ctx, func(tx store.Tx) error {
		var err error
		p, err = tlog.ProveTree(newSize, oldSize, audit.HashReader(tx))
		return err
	})
	return p, err
}

func (e *logEnv) verify(cps ...*store.Checkpoint) error {
	e.t.Helper()
	var trusted []audit.Checkpoint
	for _, c := range cps {
		cp, err := audit.VerifyCheckpoint(c.Note, e.jwks(), origin)
		if err != nil {
			e.t.Fatalf("VerifyCheckpoint: %v", err)
		}
		trusted = append(trusted, cp)
	}
	_, err := audit.VerifyLog(e.t.Context(), e, trusted, nil)
	return err
}

// Known answers (shared/testvectors.md).

func TestEmptyTreeHash(t *testing.T) {
	var tr audit.Tree
	root, err := tr.Root(0)
	if err != nil {
		t.Fatal(err)
	}
	const want = "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU="
	if got := base64.StdEncoding.EncodeToString(root[:]); got != want {
		t.Fatalf("Root(0) = %s, want %s", got, want)
	}
}

func TestLeafAndNodeHashes(t *testing.T) {
	var tr audit.Tree
	var leaves [][32]byte
	for i := 1; i <= 3; i++ {
		e := entry(i)
		e.Seq = int64(i)
		b, err := audit.Encode(e)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := tr.Append(b); err != nil {
			t.Fatal(err)
		}
		leaves = append(leaves, sha256.Sum256(append([]byte{0}, b...)))
		h, err := audit.LeafHash(e)
		if err != nil || h != leaves[i-1] {
			t.Fatalf("LeafHash(entry %d) = %x, %v; want SHA-256(0x00 ‖ encoding) = %x", i, h, err, leaves[i-1])
		}
	}
	node := func(l, r [32]byte) [32]byte { return sha256.Sum256(append(append([]byte{1}, l[:]...), r[:]...)) }
	for _, tc := range []struct {
		n    int64
		want [32]byte
	}{
		{1, leaves[0]},
		{2, node(leaves[0], leaves[1])},
		{3, node(node(leaves[0], leaves[1]), leaves[2])}, // RFC 6962: split at the largest power of two below n
	} {
		got, err := tr.Root(tc.n)
		if err != nil || got != tc.want {
			t.Errorf("Root(%d) = %x, %v; want %x", tc.n, got, err, tc.want)
		}
	}
}

func TestNoteKeyIDAndSignature(t *testing.T) {
	k := mustRFCKey(t)
	if k.KID() != rfcKid {
		t.Fatalf("kid = %s, want %s", k.KID(), rfcKid)
	}
	pub, _ := base64.RawURLEncoding.DecodeString(rfcX)
	// Key id = first 4 bytes of SHA-256(name ‖ 0x0A ‖ 0x01 ‖ public key).
	sum := sha256.Sum256(append([]byte(origin+"\n\x01"), pub...))
	wantID := binary.BigEndian.Uint32(sum[:4])

	s, err := audit.NoteSigner(origin, k, k.Public())
	if err != nil {
		t.Fatal(err)
	}
	if s.Name() != origin || s.KeyHash() != wantID {
		t.Fatalf("NoteSigner = %s+%08x, want %s+%08x", s.Name(), s.KeyHash(), origin, wantID)
	}
	vkey, err := audit.VerifierKey(origin, k.Public())
	if err != nil {
		t.Fatal(err)
	}
	if want := fmt.Sprintf("%s+%08x+%s", origin, wantID, base64.StdEncoding.EncodeToString(append([]byte{1}, pub...))); vkey != want {
		t.Fatalf("VerifierKey = %s, want %s", vkey, want)
	}

	c := audit.Checkpoint{Origin: origin, Size: 3, Root: tlog.Hash(sha256.Sum256([]byte("root"))), KID: k.KID()}
	msg, err := audit.SignNote(c, s)
	if err != nil {
		t.Fatal(err)
	}
	text := c.Text()
	wantText := origin + "\n3\n" + base64.StdEncoding.EncodeToString(c.Root[:]) + "\nkid " + rfcKid + "\n"
	if text != wantText {
		t.Fatalf("Text = %q, want %q", text, wantText)
	}
	// The signature line is "— <name> <base64(key id ‖ Ed25519(text))>",
	// Ed25519 being deterministic.
	seed, _ := base64.RawURLEncoding.DecodeString(rfcD)
	sig := ed25519.Sign(ed25519.NewKeyFromSeed(seed), []byte(text))
	var id [4]byte
	binary.BigEndian.PutUint32(id[:], wantID)
	want := text + "\n— " + origin + " " + base64.StdEncoding.EncodeToString(append(id[:], sig...)) + "\n"
	if string(msg) != want {
		t.Fatalf("signed note =\n%s\nwant\n%s", msg, want)
	}

	// Any signed-note implementation verifies it with the verifier key.
	v, err := note.NewVerifier(vkey)
	if err != nil {
		t.Fatal(err)
	}
	n, err := note.Open(msg, note.VerifierList(v))
	if err != nil || n.Text != text {
		t.Fatalf("note.Open = %+v, %v", n, err)
	}
}

func TestNoteSignerRefusesES256(t *testing.T) {
	k := mustKey(t, keys.ES256, 3)
	if _, err := audit.NoteSigner(origin, k, k.Public()); err == nil || !strings.Contains(err.Error(), "Ed25519") {
		t.Fatalf("NoteSigner(ES256) = %v, want an error naming Ed25519", err)
	}
	ed, other := mustKey(t, keys.Ed25519, 4), mustKey(t, keys.Ed25519, 5)
	if _, err := audit.NoteSigner(origin, ed, other.Public()); err == nil {
		t.Fatalf("NoteSigner(key, another public key) = nil error")
	}
	if _, err := audit.NoteSigner("bad origin", ed, ed.Public()); err == nil {
		t.Fatalf("NoteSigner(origin with a space) = nil error")
	}
}

// The canonical encoding, pinned byte for byte (docs/audit.md shows it).
func TestEncodeGolden(t *testing.T) {
	e := &keyward.AuditEntry{
		Seq: 42, Time: t0, Actor: "tok_01jq", ActorName: "Ops <team>", Roles: []string{"revoker"},
		Action: "license.revoke", TargetType: "license", TargetID: "lic_01jq", Before: "suspended", After: "revoked",
		Reason: "abuse", RequestID: "9f86d081884c7d65", ApprovalIDs: []string{"apr_01jq"}, PolicyVersion: 3, Rule: "burst",
		Details: json.RawMessage(`{"z": 1, "a": {"y": [true, null], "b": "é"}}`),
	}
	got, err := audit.Encode(e)
	if err != nil {
		t.Fatal(err)
	}
	const want = `{"seq":42,"time":"2026-03-14T15:09:26.535897000Z","actor":"tok_01jq","actor_name":"Ops \u003cteam\u003e",` +
		`"roles":["revoker"],"action":"license.revoke","target_type":"license","target_id":"lic_01jq",` +
		`"before":"suspended","after":"revoked","reason":"abuse","request_id":"9f86d081884c7d65",` +
		`"approval_ids":["apr_01jq"],"policy_version":3,"rule":"burst","details":{"a":{"b":"é","y":[true,null]},"z":1}}`
	if string(got) != want {
		t.Fatalf("Encode =\n%s\nwant\n%s", got, want)
	}
	back, err := audit.Decode(got)
	if err != nil {
		t.Fatal(err)
	}
	again, _ := audit.Encode(back)
	if !bytes.Equal(again, got) {
		t.Fatalf("Encode(Decode(x)) =\n%s\nwant\n%s", again, got)
	}

	bare, err := audit.Encode(&keyward.AuditEntry{Seq: 1, Time: t0, Action: "x"})
	if err != nil {
		t.Fatal(err)
	}
	const wantBare = `{"seq":1,"time":"2026-03-14T15:09:26.535897000Z","actor":"","actor_name":"","roles":[],"action":"x",` +
		`"target_type":"","target_id":"","before":"","after":"","reason":"","request_id":"","approval_ids":[],` +
		`"policy_version":0,"rule":"","details":null}`
	if string(bare) != wantBare {
		t.Fatalf("Encode(bare) =\n%s\nwant\n%s", bare, wantBare)
	}
}

func TestEncodeRefuses(t *testing.T) {
	for name, e := range map[string]*keyward.AuditEntry{
		"InvalidUTF8":    {Seq: 1, Time: t0, Reason: "bad \xff"},
		"InvalidRole":    {Seq: 1, Time: t0, Roles: []string{"\xc3"}},
		"DetailsNotJSON": {Seq: 1, Time: t0, Details: json.RawMessage(`{"a":`)},
		"DetailsTwoDocs": {Seq: 1, Time: t0, Details: json.RawMessage(`{} {}`)},
	} {
		t.Run(name, func(t *testing.T) {
			if b, err := audit.Encode(e); err == nil {
				t.Fatalf("Encode = %s, want an error", b)
			}
		})
	}
}

func TestDecodeRejectsMangled(t *testing.T) {
	e := entry(1)
	e.Seq = 1
	good, err := audit.Encode(e)
	if err != nil {
		t.Fatal(err)
	}
	inString, escaped := false, false
	for i := range len(good) {
		if _, err := audit.Decode(good[:i]); err == nil {
			t.Errorf("Decode(first %d bytes) = nil error", i)
		}
		// White space between tokens (outside strings) is not canonical.
		if !inString {
			spaced := append(append(append([]byte(nil), good[:i]...), ' '), good[i:]...)
			if _, err := audit.Decode(spaced); err == nil {
				t.Errorf("Decode(with a space at %d) = nil error", i)
			}
		}
		switch c := good[i]; {
		case escaped:
			escaped = false
		case c == '\\':
			escaped = true
		case c == '"':
			inString = !inString
		}
	}
	s := string(good)
	ts := e.Time.Format(audit.TimeLayout)
	for name, bad := range map[string]string{
		"Reordered":       strings.Replace(s, `"actor":"tok_admin","actor_name":"Admin"`, `"actor_name":"Admin","actor":"tok_admin"`, 1),
		"Unknown":         strings.Replace(s, `"seq":1,`, `"seq":1,"extra":1,`, 1),
		"Duplicate":       strings.Replace(s, `"seq":1,`, `"seq":1,"seq":1,`, 1),
		"ShortTime":       strings.Replace(s, `26.535897000Z`, `26.535897Z`, 1),
		"OtherZone":       strings.Replace(s, ts, e.Time.In(time.FixedZone("", 3600)).Format("2006-01-02T15:04:05.000000000Z07:00"), 1),
		"UnsortedDetails": strings.Replace(s, `"details":{"n":1}`, `"details":{"n":1,"a":2}`, 1),
		"UnescapedHTML":   strings.Replace(s, `"reason":"case 1"`, `"reason":"<b>"`, 1),
		"MissingMember":   strings.Replace(s, `"rule":"",`, ``, 1),
		"CaseFolded":      strings.Replace(s, `"seq"`, `"SEQ"`, 1),
		"Trailing":        s + "\n",
	} {
		if bad == s && name != "Trailing" {
			t.Fatalf("%s: replacement did not apply", name)
		}
		if _, err := audit.Decode([]byte(bad)); err == nil {
			t.Errorf("Decode(%s) = nil error for %s", name, bad)
		}
	}
}

func TestParseCheckpoint(t *testing.T) {
	c := audit.Checkpoint{Origin: origin, Size: 20852163, Root: tlog.Hash(sha256.Sum256([]byte("r"))), KID: rfcKid}
	text := c.Text()
	got, err := audit.ParseCheckpoint(text)
	if err != nil || got != c {
		t.Fatalf("ParseCheckpoint(Text()) = %+v, %v; want %+v", got, err, c)
	}
	for i := range len(text) {
		if _, err := audit.ParseCheckpoint(text[:i]); err == nil {
			t.Errorf("ParseCheckpoint(first %d bytes) = nil error", i)
		}
	}
	root := base64.StdEncoding.EncodeToString(c.Root[:])
	for name, bad := range map[string]string{
		"LeadingZero": origin + "\n020852163\n" + root + "\nkid " + rfcKid + "\n",
		"Negative":    origin + "\n-1\n" + root + "\nkid " + rfcKid + "\n",
		"NoKid":       origin + "\n1\n" + root + "\n",
		"ExtraLine":   origin + "\n1\n" + root + "\nkid " + rfcKid + "\nmore\n",
		"ShortRoot":   origin + "\n1\n" + root[:40] + "\nkid " + rfcKid + "\n",
		"URLRoot":     origin + "\n1\n" + strings.NewReplacer("+", "-", "/", "_").Replace(root) + "x\nkid " + rfcKid + "\n",
		"BadKid":      origin + "\n1\n" + root + "\nkid short\n",
		"SpaceOrigin": "a b\n1\n" + root + "\nkid " + rfcKid + "\n",
		"PlusOrigin":  "a+b\n1\n" + root + "\nkid " + rfcKid + "\n",
		"NoNewline":   strings.TrimSuffix(text, "\n"),
	} {
		if _, err := audit.ParseCheckpoint(bad); err == nil {
			t.Errorf("ParseCheckpoint(%s) = nil error for %q", name, bad)
		}
	}
}

func FuzzParseCheckpoint(f *testing.F) {
	f.Add(audit.Checkpoint{Origin: origin, Size: 7, KID: rfcKid}.Text())
	f.Fuzz(func(t *testing.T, text string) {
		c, err := audit.ParseCheckpoint(text)
		if err == nil && c.Text() != text {
			t.Fatalf("ParseCheckpoint(%q) accepted a text that re-encodes as %q", text, c.Text())
		}
	})
}

func FuzzDecode(f *testing.F) {
	e := entry(1)
	e.Seq = 1
	b, _ := audit.Encode(e)
	f.Add(b)
	f.Fuzz(func(t *testing.T, data []byte) {
		e, err := audit.Decode(data)
		if err != nil {
			return
		}
		again, err := audit.Encode(e)
		if err != nil || !bytes.Equal(again, data) {
			t.Fatalf("Decode(%q) accepted data that re-encodes as %q, %v", data, again, err)
		}
	})
}

// Signing and verification on a real store.

func TestSignAndVerify(t *testing.T) {
	e := newLog(t, mustRFCKey(t))
	if c, err := e.sign(); c != nil || err != nil {
		t.Fatalf("SignCheckpoint(empty log) = %v, %v; want nothing", c, err)
	}
	e.append(1, 5)
	c5 := e.mustSign()
	if c5.Size != 5 || c5.KID != rfcKid {
		t.Fatalf("checkpoint = size %d kid %s, want 5, %s", c5.Size, c5.KID, rfcKid)
	}
	again := e.mustSign()
	if !bytes.Equal(again.Note, c5.Note) {
		t.Fatalf("SignCheckpoint with nothing new signed again")
	}
	e.append(6, 13)
	c13 := e.mustSign()
	if err := e.verify(c13); err != nil {
		t.Fatalf("VerifyLog(untouched log) = %v", err)
	}
	if err := e.verify(c13, c5); err != nil {
		t.Fatalf("VerifyLog(untouched log, old checkpoint) = %v", err)
	}
	cp, err := audit.VerifyCheckpoint(c13.Note, e.jwks(), "")
	if err != nil || cp.Size != 13 || cp.Root != c13.Root || cp.Origin != origin {
		t.Fatalf("VerifyCheckpoint = %+v, %v", cp, err)
	}
	if _, err := audit.VerifyCheckpoint(c13.Note, e.jwks(), "other.example/log"); err == nil {
		t.Fatalf("VerifyCheckpoint(wrong origin) = nil error")
	}
	lic := e.jwks()
	lic.Keys[0].Purpose = "license"
	if _, err := audit.VerifyCheckpoint(c13.Note, lic, ""); err == nil {
		t.Fatalf("VerifyCheckpoint(key set with a license key only) = nil error")
	}
	other := mustKey(t, keys.Ed25519, 9).Public().JWK()
	other.Purpose = "registry"
	if _, err := audit.VerifyCheckpoint(c13.Note, keys.JWKS{Keys: []keys.JWK{other}}, ""); err == nil {
		t.Fatalf("VerifyCheckpoint(another registry key) = nil error")
	}
	forged := bytes.Replace(c13.Note, []byte("\n13\n"), []byte("\n14\n"), 1)
	if _, err := audit.VerifyCheckpoint(forged, e.jwks(), ""); err == nil {
		t.Fatalf("VerifyCheckpoint(edited size) = nil error")
	}
}

// TestVerifyLogNamesFirstBadEntry tampers with entry rows directly in the
// database, as someone holding the file could.
func TestVerifyLogNamesFirstBadEntry(t *testing.T) {
	for _, tc := range []struct {
		name    string
		tamper  func(e *logEnv)
		wantSeq int64
	}{
		{"Edit", func(e *logEnv) { e.exec(`UPDATE audit SET reason = 'nothing to see' WHERE seq = 7`) }, 7},
		{"EditFirst", func(e *logEnv) { e.exec(`UPDATE audit SET actor = 'someone else' WHERE seq = 1`) }, 1},
		{"EditLast", func(e *logEnv) { e.exec(`UPDATE audit SET "after" = 'active' WHERE seq = 13`) }, 13},
		{"Delete", func(e *logEnv) { e.exec(`DELETE FROM audit WHERE seq = 4`) }, 4},
		{"Reorder", func(e *logEnv) {
			e.exec(`UPDATE audit SET seq = -1 WHERE seq = 9`)
			e.exec(`UPDATE audit SET seq = 9 WHERE seq = 10`)
			e.exec(`UPDATE audit SET seq = 10 WHERE seq = -1`)
		}, 9},
		{"Truncate", func(e *logEnv) { e.exec(`DELETE FROM audit WHERE seq > 10`) }, 11},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newLog(t, mustRFCKey(t))
			e.append(1, 13)
			c := e.mustSign()
			tc.tamper(e)
			err := e.verify(c)
			var bad *audit.BadEntryError
			if !errors.As(err, &bad) || bad.Seq != tc.wantSeq {
				t.Fatalf("VerifyLog = %v, want a BadEntryError naming entry %d", err, tc.wantSeq)
			}
			if !strings.Contains(err.Error(), fmt.Sprintf("entry %d", tc.wantSeq)) {
				t.Fatalf("error %q does not name entry %d", err, tc.wantSeq)
			}
		})
	}
}

// TestVerifyLogCatchesRewrite rewrites history completely, hashes and
// checkpoints included, and has the server sign the rewritten log: only a
// saved checkpoint catches it.
func TestVerifyLogCatchesRewrite(t *testing.T) {
	e := newLog(t, mustRFCKey(t))
	e.append(1, 8)
	saved := e.mustSign()
	e.append(9, 12)
	e.mustSign()

	e.exec(`UPDATE audit SET reason = 'rewritten' WHERE seq = 6`)
	e.exec(`DELETE FROM audit_hashes`)
	e.exec(`DELETE FROM audit_checkpoints`)
	e.last = nil // a restarted server remembers nothing
	rewritten := e.mustSign()

	if err := e.verify(rewritten); err != nil {
		t.Fatalf("VerifyLog(rewritten log, its own checkpoint) = %v; a rewrite before any save is not detectable", err)
	}
	err := e.verify(rewritten, saved)
	var bad *audit.BadEntryError
	if !errors.As(err, &bad) || bad.Checkpoint != saved.Size {
		t.Fatalf("VerifyLog(rewritten log, saved checkpoint) = %v, want a BadEntryError against checkpoint %d", err, saved.Size)
	}
	if bad.Seq < 1 || bad.Seq > 6 {
		t.Fatalf("VerifyLog names entry %d, want one at or before the rewritten entry 6", bad.Seq)
	}
}

// TestSignerRefusesInconsistency tampers with the stored log in every way
// the signer can see and checks it then signs nothing.
func TestSignerRefusesInconsistency(t *testing.T) {
	for _, tc := range []struct {
		name   string
		tamper func(e *logEnv)
	}{
		// The hash of entries 1-8 (what the checkpoint of 8 signed, and what
		// every later root builds on).
		{"EditedHash", func(e *logEnv) {
			e.exec(`UPDATE audit_hashes SET hash = zeroblob(32) WHERE idx = ?`, tlog.StoredHashIndex(3, 0))
		}},
		{"EditedNewEntry", func(e *logEnv) { e.exec(`UPDATE audit SET reason = 'x' WHERE seq = 9`) }},
		{"DeletedHashes", func(e *logEnv) { e.exec(`DELETE FROM audit_hashes WHERE idx > 3`) }},
		{"TruncatedEntries", func(e *logEnv) { e.exec(`DELETE FROM audit WHERE seq > 6`) }},
		{"DeletedNewEntry", func(e *logEnv) { e.exec(`DELETE FROM audit WHERE seq = 10`) }},
		{"EditedCheckpointRoot", func(e *logEnv) { e.exec(`UPDATE audit_checkpoints SET root = zeroblob(32)`) }},
		{"EditedCheckpointNote", func(e *logEnv) {
			e.exec(`UPDATE audit_checkpoints SET note = replace(note, char(10) || '8' || char(10), char(10) || '7' || char(10)), size = 7`)
		}},
		{"RolledBackCheckpoints", func(e *logEnv) {
			// Rewrite entry 2 and its tree, forget the checkpoint: only
			// the signer's memory of what it signed is left.
			e.exec(`UPDATE audit SET reason = 'x' WHERE seq = 2`)
			e.exec(`DELETE FROM audit_hashes`)
			e.exec(`DELETE FROM audit_checkpoints`)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newLog(t, mustRFCKey(t))
			e.append(1, 8)
			before := e.mustSign()
			e.append(9, 11)
			tc.tamper(e)
			c, err := e.sign()
			var te *audit.TamperError
			if !errors.As(err, &te) {
				t.Fatalf("SignCheckpoint after tampering = %v, %v; want a TamperError", c, err)
			}
			var n int
			if err := e.raw.QueryRow(`SELECT count(*) FROM audit_checkpoints WHERE size > ?`, before.Size).Scan(&n); err != nil || n != 0 {
				t.Fatalf("checkpoints after the refusal: %d, %v; want none new", n, err)
			}
		})
	}
}

func TestSignerKeyRotation(t *testing.T) {
	old := mustRFCKey(t)
	e := newLog(t, old)
	e.append(1, 4)
	c4 := e.mustSign()
	// Rotate: a new key signs; the old one stays published (retired).
	next := mustKey(t, keys.Ed25519, 11)
	e.addKey(next)
	e.key = next
	e.append(5, 6)
	c6 := e.mustSign()
	if c6.KID != next.KID() {
		t.Fatalf("checkpoint after rotation signed by %s, want %s", c6.KID, next.KID())
	}
	both := keys.JWKS{Keys: []keys.JWK{old.Public().JWK(), next.Public().JWK()}}
	for i := range both.Keys {
		both.Keys[i].Purpose = "registry"
	}
	for _, c := range []*store.Checkpoint{c4, c6} {
		cp, err := audit.VerifyCheckpoint(c.Note, both, origin)
		if err != nil || cp.KID != c.KID {
			t.Fatalf("VerifyCheckpoint(checkpoint %d) = %+v, %v; want kid %s", c.Size, cp, err, c.KID)
		}
	}
	onlyNew := keys.JWKS{Keys: both.Keys[1:]}
	if _, err := audit.VerifyCheckpoint(c4.Note, onlyNew, origin); err == nil {
		t.Fatalf("VerifyCheckpoint(old checkpoint, old key unpublished) = nil error")
	}
}

// TestAppendHashesStragglers covers entries written with tx.AppendAudit
// alone (a writer that bypassed Append): they are hashed before anything
// else, as long as no checkpoint covers them.
func TestAppendHashesStragglers(t *testing.T) {
	e := newLog(t, mustRFCKey(t))
	e.append(1, 2)
	e.update(func(tx store.Tx) error { return errors.Join(tx.AppendAudit(entry(3)), tx.AppendAudit(entry(4))) })
	e.append(5, 5)
	e.update(func(tx store.Tx) error { return tx.AppendAudit(entry(6)) })
	c := e.mustSign()
	if c.Size != 6 {
		t.Fatalf("checkpoint size %d, want 6", c.Size)
	}
	if err := e.verify(c); err != nil {
		t.Fatalf("VerifyLog = %v", err)
	}
}

func TestAppendRefusesAfterTampering(t *testing.T) {
	e := newLog(t, mustRFCKey(t))
	e.append(1, 6)
	e.mustSign()
	e.exec(`DELETE FROM audit WHERE seq > 3`)
	err := e.st.Update(t.Context(), func(tx store.Tx) error { return audit.Append(tx, entry(7)) })
	var te *audit.TamperError
	if !errors.As(err, &te) {
		t.Fatalf("Append after truncation = %v, want a TamperError", err)
	}
	e.exec(`DELETE FROM audit_hashes WHERE idx > 2`)
	err = e.st.Update(t.Context(), func(tx store.Tx) error { return audit.Append(tx, entry(7)) })
	if !errors.As(err, &te) {
		t.Fatalf("Append after losing checkpointed hashes = %v, want a TamperError", err)
	}
}

// TestAppendAll checks that batches appended with AppendAll, after entries
// appended without hashes (the slow path) and between single appends,
// make a log that verifies, and that AppendAll refuses a tampered tree.
func TestAppendAll(t *testing.T) {
	e := newLog(t, mustRFCKey(t))
	batch := func(first, last int) []*keyward.AuditEntry {
		var es []*keyward.AuditEntry
		for i := first; i <= last; i++ {
			es = append(es, entry(i))
		}
		return es
	}
	e.append(1, 2)
	e.update(func(tx store.Tx) error { return audit.AppendAll(tx, batch(3, 70)) })
	e.update(func(tx store.Tx) error { return tx.AppendAudits(batch(71, 75)) }) // stragglers
	e.update(func(tx store.Tx) error { return audit.AppendAll(tx, batch(76, 200)) })
	e.append(201, 201)
	c := e.mustSign()
	if c.Size != 201 {
		t.Fatalf("checkpoint size %d, want 201", c.Size)
	}
	if err := e.verify(c); err != nil {
		t.Fatalf("VerifyLog = %v", err)
	}

	e.exec(`DELETE FROM audit WHERE seq > 150`)
	err := e.st.Update(t.Context(), func(tx store.Tx) error { return audit.AppendAll(tx, batch(202, 210)) })
	var te *audit.TamperError
	if !errors.As(err, &te) {
		t.Fatalf("AppendAll after truncation = %v, want a TamperError", err)
	}
}
