package keys_test

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/keyward/keyward/keys"
)

func mustKEK(tb testing.TB) *keys.KEK {
	tb.Helper()
	k, err := keys.GenerateKEK(nil)
	if err != nil {
		tb.Fatal(err)
	}
	return k
}

func mustSeal(tb testing.TB, s interface {
	Seal(plaintext, ad []byte) ([]byte, error)
}, plaintext, ad []byte) []byte {
	tb.Helper()
	blob, err := s.Seal(plaintext, ad)
	if err != nil {
		tb.Fatalf("Seal = %v", err)
	}
	return blob
}

func TestKEKID(t *testing.T) {
	seq := make([]byte, 32)
	for i := range seq {
		seq[i] = byte(i)
	}
	// hex(SHA-256("keyward-kek-id\x00" || key)[:8]), computed outside Go.
	for _, tt := range []struct {
		raw  []byte
		want string
	}{
		{make([]byte, 32), "5b69316edb194516"},
		{seq, "d724afaa270fec20"},
	} {
		k, err := keys.NewKEK(tt.raw)
		if err != nil {
			t.Fatal(err)
		}
		if got := k.ID(); got != tt.want {
			t.Errorf("NewKEK(%x).ID() = %s, want %s", tt.raw, got, tt.want)
		}
		if blob := mustSeal(t, k, nil, nil); string(blob[:4]) != "kwk1" || string(blob[4:12]) != string(mustHex(t, tt.want)) {
			t.Errorf("blob prefix = %x, want kwk1 || %s", blob[:12], tt.want)
		}
	}
	for _, n := range []int{0, 16, 31, 33, 64} {
		if _, err := keys.NewKEK(make([]byte, n)); err == nil {
			t.Errorf("NewKEK(%d bytes) = nil error", n)
		}
	}
	g, err := keys.GenerateKEK(bytes.NewReader(seq))
	if err != nil || g.ID() != "d724afaa270fec20" {
		t.Errorf("GenerateKEK(fixed rand) = %v, %v", g, err)
	}
	if _, err := keys.GenerateKEK(bytes.NewReader(seq[:31])); err == nil {
		t.Errorf("GenerateKEK(short rand) = nil error")
	}
}

func mustHex(tb testing.TB, s string) []byte {
	tb.Helper()
	var b []byte
	for i := 0; i+1 < len(s); i += 2 {
		var v byte
		for _, c := range s[i : i+2] {
			v = v<<4 | byte(strings.IndexRune("0123456789abcdef", c))
		}
		b = append(b, v)
	}
	return b
}

func TestKEKSealOpen(t *testing.T) {
	k := mustKEK(t)
	secret := []byte("PKCS#8 private key bytes")
	ad := []byte("kid-1")
	blob := mustSeal(t, k, secret, ad)
	if len(blob) != 4+8+12+len(secret)+16 {
		t.Errorf("len(blob) = %d", len(blob))
	}
	if bytes.Contains(blob, secret) {
		t.Errorf("blob contains the plaintext")
	}
	got, err := k.Open(blob, ad)
	if err != nil || !bytes.Equal(got, secret) {
		t.Fatalf("Open = %q, %v, want %q", got, err, secret)
	}
	if again := mustSeal(t, k, secret, ad); bytes.Equal(again, blob) {
		t.Errorf("two seals are equal: nonce not random")
	}
	if got, err := k.Open(mustSeal(t, k, nil, nil), nil); err != nil || len(got) != 0 {
		t.Errorf("Open(seal of empty) = %q, %v", got, err)
	}

	fails := map[string]func() ([]byte, error){
		"WrongAD":  func() ([]byte, error) { return k.Open(blob, []byte("kid-2")) },
		"NoAD":     func() ([]byte, error) { return k.Open(blob, nil) },
		"WrongKEK": func() ([]byte, error) { return mustKEK(t).Open(blob, ad) },
		"Empty":    func() ([]byte, error) { return k.Open(nil, ad) },
		"WrongKEKSameID": func() ([]byte, error) {
			// A blob whose id names k but that another KEK sealed.
			b := mustSeal(t, mustKEK(t), secret, ad)
			copy(b[4:12], blob[4:12])
			return k.Open(b, ad)
		},
	}
	for name, open := range fails {
		t.Run(name, func(t *testing.T) { checkDecryptFails(t, name, open, secret) })
	}

	// Every changed, cut or extended blob fails.
	for i := range blob {
		for _, mask := range []byte{0x01, 0x80, 0xff} {
			b := bytes.Clone(blob)
			b[i] ^= mask
			checkDecryptFails(t, "Open(byte flipped)", func() ([]byte, error) { return k.Open(b, ad) }, secret)
		}
		checkDecryptFails(t, "Open(truncated)", func() ([]byte, error) { return k.Open(blob[:i], ad) }, secret)
	}
	checkDecryptFails(t, "Open(extended)", func() ([]byte, error) { return k.Open(append(bytes.Clone(blob), 0), ad) }, secret)
}

func checkDecryptFails(t *testing.T, what string, open func() ([]byte, error), secret []byte) {
	t.Helper()
	got, err := open()
	if err == nil {
		t.Fatalf("%s = %q, nil, want ErrDecrypt", what, got)
	}
	if !errors.Is(err, keys.ErrDecrypt) {
		t.Errorf("%s = %v, want ErrDecrypt", what, err)
	}
	if got != nil || len(secret) > 0 && strings.Contains(err.Error(), string(secret)) {
		t.Errorf("%s leaks: %q, %v", what, got, err)
	}
}

func TestKEKRing(t *testing.T) {
	old, cur := mustKEK(t), mustKEK(t)
	oldBlob := mustSeal(t, old, []byte("old secret"), []byte("a"))

	r := keys.NewKEKRing(cur, old, cur, old) // duplicates are dropped
	if r.Primary() != cur {
		t.Errorf("Primary() = %v, want %v", r.Primary(), cur)
	}
	if all := r.All(); len(all) != 2 || all[0] != cur || all[1] != old {
		t.Errorf("All() = %v, want [%v %v]", all, cur, old)
	}
	if got, err := r.Open(oldBlob, []byte("a")); err != nil || string(got) != "old secret" {
		t.Errorf("Open(old blob) = %q, %v", got, err)
	}
	if r.SealedWithPrimary(oldBlob) {
		t.Errorf("SealedWithPrimary(old blob) = true")
	}
	newBlob := mustSeal(t, r, []byte("new secret"), []byte("b"))
	if !r.SealedWithPrimary(newBlob) {
		t.Errorf("SealedWithPrimary(new blob) = false")
	}
	if got, err := cur.Open(newBlob, []byte("b")); err != nil || string(got) != "new secret" {
		t.Errorf("primary Open(ring blob) = %q, %v", got, err)
	}
	if r.SealedWithPrimary(nil) || r.SealedWithPrimary([]byte("kwk1")) {
		t.Errorf("SealedWithPrimary(short) = true")
	}
	checkDecryptFails(t, "Open(blob of KEK not in ring)", func() ([]byte, error) {
		return keys.NewKEKRing(cur).Open(oldBlob, []byte("a"))
	}, []byte("old secret"))
	checkDecryptFails(t, "Open(wrong ad)", func() ([]byte, error) { return r.Open(oldBlob, []byte("b")) }, []byte("old secret"))
	checkDecryptFails(t, "Open(garbage)", func() ([]byte, error) { return r.Open([]byte("not a sealed blob at all, really"), nil) }, nil)
}

func TestKEKFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "kek")
	old, cur := mustKEK(t), mustKEK(t)
	blob := mustSeal(t, old, []byte("s"), nil)

	if err := keys.WriteKEKFile(path, keys.NewKEKRing(cur, old)); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if runtime.GOOS != "windows" && fi.Mode().Perm() != 0o600 {
		t.Errorf("mode = %v, want 0600", fi.Mode())
	}
	data, _ := os.ReadFile(path)
	want := "keyward-kek-v1\n" + cur.ID() + " "
	if !strings.HasPrefix(string(data), want) || strings.Count(string(data), "\n") != 3 {
		t.Errorf("file = %q, want prefix %q and 3 lines", data, want)
	}

	r, err := keys.LoadKEKFile(path)
	if err != nil {
		t.Fatalf("LoadKEKFile = %v", err)
	}
	if r.Primary().ID() != cur.ID() {
		t.Errorf("Primary().ID() = %s, want %s", r.Primary().ID(), cur.ID())
	}
	if got, err := r.Open(blob, nil); err != nil || string(got) != "s" {
		t.Errorf("loaded ring Open(old blob) = %q, %v", got, err)
	}

	// Rewriting replaces the file, keeping it private, and leaves no temp files.
	if err := os.Chmod(path, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := keys.WriteKEKFile(path, keys.NewKEKRing(old)); err != nil {
		t.Fatal(err)
	}
	if r, err := keys.LoadKEKFile(path); err != nil || r.Primary().ID() != old.ID() {
		t.Errorf("LoadKEKFile after rewrite = %v, %v", r, err)
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 1 {
		t.Errorf("dir has %d entries, want 1", len(ents))
	}
	if err := keys.WriteKEKFile(filepath.Join(dir, "missing", "kek"), r); err == nil {
		t.Errorf("WriteKEKFile(missing dir) = nil error")
	}
}

func TestLoadKEKFileRefuses(t *testing.T) {
	if runtime.GOOS == "windows" {
		t.Skip("no Unix modes")
	}
	dir := t.TempDir()
	path := filepath.Join(dir, "kek")
	k := mustKEK(t)
	if err := keys.WriteKEKFile(path, keys.NewKEKRing(k)); err != nil {
		t.Fatal(err)
	}
	good, _ := os.ReadFile(path)
	for _, mode := range []os.FileMode{0o644, 0o640, 0o604, 0o660, 0o602} {
		if err := os.Chmod(path, mode); err != nil {
			t.Fatal(err)
		}
		_, err := keys.LoadKEKFile(path)
		if err == nil || !strings.Contains(err.Error(), "chmod 600") {
			t.Errorf("LoadKEKFile(mode %#o) = %v, want refusal", mode, err)
		}
	}
	if _, err := keys.LoadKEKFile(filepath.Join(dir, "missing")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("LoadKEKFile(missing) = %v, want ErrNotExist", err)
	}
	if _, err := keys.LoadKEKFile(dir); err == nil {
		t.Errorf("LoadKEKFile(dir) = nil error")
	}

	other := mustKEK(t)
	otherLine := strings.SplitN(string(mustKEKFile(t, dir, other)), "\n", 3)[1]
	goodLine := strings.SplitN(string(good), "\n", 3)[1]
	id, key, _ := strings.Cut(goodLine, " ")
	tests := map[string]string{
		"Empty":          "",
		"HeaderOnly":     "keyward-kek-v1\n",
		"NoHeader":       goodLine + "\n",
		"WrongHeader":    "keyward-kek-v2\n" + goodLine + "\n",
		"NoFinalNewline": "keyward-kek-v1\n" + goodLine,
		"CRLF":           "keyward-kek-v1\r\n" + goodLine + "\r\n",
		"BlankLine":      "keyward-kek-v1\n\n" + goodLine + "\n",
		"WrongID":        "keyward-kek-v1\n" + other.ID() + " " + key + "\n",
		"Swapped":        "keyward-kek-v1\n" + key + " " + id + "\n",
		"TwoSpaces":      "keyward-kek-v1\n" + id + "  " + key + "\n",
		"ShortKey":       "keyward-kek-v1\n" + id + " " + key[:40] + "\n",
		"URLAlphabet":    "keyward-kek-v1\n" + id + " " + strings.NewReplacer("+", "-", "/", "_").Replace(key) + strings.Repeat("-", 0) + "\n",
		"NoPadding":      "keyward-kek-v1\n" + id + " " + strings.TrimRight(key, "=") + "\n",
		"Repeated":       "keyward-kek-v1\n" + goodLine + "\n" + otherLine + "\n" + goodLine + "\n",
		"Trailing":       string(good) + "junk\n",
	}
	for name, content := range tests {
		t.Run(name, func(t *testing.T) {
			if name == "URLAlphabet" && !strings.ContainsAny(key, "+/") {
				t.Skip("key has no + or /")
			}
			p := filepath.Join(t.TempDir(), "kek")
			if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
				t.Fatal(err)
			}
			r, err := keys.LoadKEKFile(p)
			if err == nil {
				t.Fatalf("LoadKEKFile(%q) = %v, nil, want error", content, r)
			}
			if strings.Contains(err.Error(), strings.TrimRight(key, "=")[:20]) {
				t.Errorf("error %q contains key material", err)
			}
		})
	}
}

// mustKEKFile returns the file WriteKEKFile writes for a ring of k.
func mustKEKFile(tb testing.TB, dir string, k *keys.KEK) []byte {
	tb.Helper()
	p := filepath.Join(dir, "kek-"+k.ID())
	if err := keys.WriteKEKFile(p, keys.NewKEKRing(k)); err != nil {
		tb.Fatal(err)
	}
	b, err := os.ReadFile(p)
	if err != nil {
		tb.Fatal(err)
	}
	return b
}
