package keys_test

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"log/slog"
	"strings"
	"testing"

	"github.com/keyward/keyward/keys"
)

// secretForms returns the spellings of secret a leak would most likely use.
func secretForms(secret []byte) []string {
	dec := fmt.Sprint(secret[:8]) // "[1 2 3 …]"
	return []string{
		dec[1 : len(dec)-1],                // "1 2 3 …"
		fmt.Sprintf("%#v", secret[:8])[7:], // "0x1, 0x2, …"
		string(secret),
		hex.EncodeToString(secret),
		strings.ToUpper(hex.EncodeToString(secret)),
		base64.StdEncoding.EncodeToString(secret),
		base64.RawStdEncoding.EncodeToString(secret),
		base64.URLEncoding.EncodeToString(secret),
		base64.RawURLEncoding.EncodeToString(secret),
		fmt.Sprint(secret),         // [1 2 3 …]
		fmt.Sprintf("%#v", secret), // []byte{0x1, …}
		// a prefix is enough to leak much of a key
		hex.EncodeToString(secret[:8]),
		base64.RawURLEncoding.EncodeToString(secret[:9]),
		base64.StdEncoding.EncodeToString(secret[:9]),
	}
}

// printings returns v as the fmt verbs and slog handlers print it, alone
// and inside structs.
func printings(t *testing.T, v any) map[string]string {
	t.Helper()
	out := map[string]string{}
	type exported struct{ K any }
	type unexported struct{ k any }
	for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%q", "%x", "%X", "%d"} {
		out[verb] = fmt.Sprintf(verb, v)
		out["exported "+verb] = fmt.Sprintf(verb, exported{v})
		out["unexported "+verb] = fmt.Sprintf(verb, unexported{v})
		out["slice "+verb] = fmt.Sprintf(verb, []any{v})
	}
	out["Sprint"] = fmt.Sprint(v)
	out["Sprintln"] = fmt.Sprintln(v)
	var buf bytes.Buffer
	for name, h := range map[string]slog.Handler{
		"json": slog.NewJSONHandler(&buf, nil),
		"text": slog.NewTextHandler(&buf, nil),
	} {
		buf.Reset()
		slog.New(h).Info("msg", "key", v, slog.Group("g", "key", v), "struct", exported{v})
		out["slog "+name] = buf.String()
	}
	return out
}

func checkRedacted(t *testing.T, v any, secret []byte, want string) {
	t.Helper()
	for how, s := range printings(t, v) {
		for _, form := range secretForms(secret) {
			if strings.Contains(s, form) {
				t.Errorf("%s of %T contains secret %q: %s", how, v, form, s)
			}
		}
		if how == "%v" && s != want {
			t.Errorf("%%v of %T = %q, want %q", v, s, want)
		}
	}
}

func TestPrivateKeyRedacted(t *testing.T) {
	ed := mustRFCKey(t)
	seed := mustB64(t, rfcD)
	want := "keys.PrivateKey{Ed25519, " + rfcKid + ", REDACTED}"
	checkRedacted(t, ed, seed, want)
	checkRedacted(t, *ed, seed, want)
	if s := fmt.Sprintf("%q", ed); s != `"`+want+`"` {
		t.Errorf("%%q = %s", s)
	}

	ec := mustGenerate(t, keys.ES256)
	der, err := keys.MarshalPrivate(ec)
	if err != nil {
		t.Fatal(err)
	}
	priv, err := x509.ParsePKCS8PrivateKey(der)
	if err != nil {
		t.Fatal(err)
	}
	scalar, err := priv.(*ecdsa.PrivateKey).Bytes()
	if err != nil {
		t.Fatal(err)
	}
	want = "keys.PrivateKey{ES256, " + ec.KID() + ", REDACTED}"
	checkRedacted(t, ec, scalar, want)
	checkRedacted(t, *ec, scalar, want)
}

func TestKEKRedacted(t *testing.T) {
	raw := bytes.Repeat([]byte{0xa5, 0x17, 0x3c}, 11)[:32]
	k, err := keys.NewKEK(raw)
	if err != nil {
		t.Fatal(err)
	}
	want := "keys.KEK{" + k.ID() + ", REDACTED}"
	checkRedacted(t, k, raw, want)
	checkRedacted(t, *k, raw, want)
	checkRedacted(t, keys.NewKEKRing(k), raw, fmt.Sprintf("%v", keys.NewKEKRing(k)))
}
