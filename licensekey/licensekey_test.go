package licensekey_test

import (
	"bytes"
	"errors"
	"log/slog"
	"math/big"
	"regexp"
	"strings"
	"testing"
	"testing/iotest"

	"github.com/keyward/keyward/licensekey"
)

var canonical = regexp.MustCompile(`^KW1(-[0-9A-HJKMNP-TV-Z]{5}){5}$`)

// sample is a key with every kind of aliased symbol (0, 1) in it; its check
// symbol was also computed independently of this package.
const sample = "KW1-DDJQJ-XV1E9-J20V3-9CDJP-WWV5T"

func MustGenerate(tb testing.TB) licensekey.Key {
	tb.Helper()
	k, err := licensekey.Generate(nil)
	if err != nil {
		tb.Fatalf("Generate: %v", err)
	}
	return k
}

// symbolsOf returns the 25 symbols of a canonical key, without prefix or dashes.
func symbolsOf(k licensekey.Key) []byte {
	return []byte(strings.ReplaceAll(strings.TrimPrefix(string(k), licensekey.Version), "-", ""))
}

// render writes 25 symbols as a canonical key string.
func render(sym []byte) string {
	var b strings.Builder
	b.WriteString(licensekey.Version)
	for i, c := range sym {
		if i%5 == 0 {
			b.WriteByte('-')
		}
		b.WriteByte(c)
	}
	return b.String()
}

func TestQuasigroup(t *testing.T) {
	const n = 32
	for x := range byte(n) {
		var row, col [n]bool
		for y := range byte(n) {
			r, c := licensekey.Op(x, y), licensekey.Op(y, x)
			if r >= n || c >= n || row[r] || col[c] {
				t.Fatalf("row or column %d is not a permutation of 0..31", x)
			}
			row[r], col[c] = true, true
		}
	}
	// Totally anti-symmetric: (c∘x)∘y = (c∘y)∘x implies x = y.
	for c := range byte(n) {
		for x := range byte(n) {
			for y := range byte(n) {
				if x != y && licensekey.Op(licensekey.Op(c, x), y) == licensekey.Op(licensekey.Op(c, y), x) {
					t.Fatalf("(%d∘%d)∘%d == (%d∘%d)∘%d", c, x, y, c, y, x)
				}
			}
		}
	}
}

func TestCheckSymbol(t *testing.T) {
	for range 200 {
		k := MustGenerate(t)
		sym := symbolsOf(k)
		payload := make([]byte, 24)
		for i, c := range sym[:24] {
			payload[i] = byte(strings.IndexByte(licensekey.Alphabet, c))
		}
		if got, want := licensekey.Alphabet[licensekey.CheckSymbol(payload)], sym[24]; got != want {
			t.Fatalf("CheckSymbol(payload of %s) = %c, want %c", k.Prefix(), got, want)
		}
	}
}

func TestGenerate(t *testing.T) {
	vectors := []struct {
		rand []byte
		want licensekey.Key
	}{
		{make([]byte, 15), "KW1-00000-00000-00000-00000-00008"},
		{bytes.Repeat([]byte{0xff}, 15), "KW1-ZZZZZ-ZZZZZ-ZZZZZ-ZZZZZ-ZZZZM"},
		{[]byte{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14}, "KW1-000G4-0R40M-30E20-9185G-R38E5"},
		{[]byte("keyward license"), sample},
	}
	for _, v := range vectors {
		got, err := licensekey.Generate(bytes.NewReader(v.rand))
		if got != v.want || err != nil {
			t.Errorf("Generate(%x) = %q, %v, want %q", v.rand, got, err, v.want)
		}
		// The payload is the 120 random bits as a big-endian base-32 number.
		digits := new(big.Int).SetBytes(v.rand).Text(32)
		digits = strings.Repeat("0", 24-len(digits)) + digits
		var payload strings.Builder
		for _, d := range digits {
			payload.WriteByte(licensekey.Alphabet[strings.IndexRune("0123456789abcdefghijklmnopqrstuv", d)])
		}
		if sym := string(symbolsOf(got)[:24]); sym != payload.String() {
			t.Errorf("Generate(%x) payload = %s, want %s", v.rand, sym, payload.String())
		}
	}

	t.Run("ErrShortRead", func(t *testing.T) {
		if k, err := licensekey.Generate(bytes.NewReader(make([]byte, 14))); err == nil {
			t.Errorf("Generate(14 bytes) = %q, want error", k)
		}
		boom := errors.New("boom")
		if _, err := licensekey.Generate(iotest.ErrReader(boom)); !errors.Is(err, boom) {
			t.Errorf("Generate(failing reader) error = %v, want %v", err, boom)
		}
	})
}

func TestRoundTrip(t *testing.T) {
	seen := make(map[licensekey.Key]bool)
	for range 2000 {
		k := MustGenerate(t)
		if !canonical.MatchString(string(k)) {
			t.Fatalf("Generate() = %q, not canonical", k)
		}
		if seen[k] {
			t.Fatalf("Generate() repeated %q", k)
		}
		seen[k] = true
		if got, err := licensekey.Parse(string(k)); got != k || err != nil {
			t.Fatalf("Parse(%q) = %q, %v, want %q, nil", k, got, err, k)
		}
	}
}

func TestParseVariants(t *testing.T) {
	inputs := []string{
		sample,
		"kw1-ddjqj-xv1e9-j20v3-9cdjp-wwv5t",
		"KW1DDJQJXV1E9J20V39CDJPWWV5T",
		"KW1 DDJQJ XV1E9 J20V3 9CDJP WWV5T",
		"KW1-DDJQJ XV1E9-J20V39CDJP WWV5T",
		"  \tKW1-DDJQJ-XV1E9-J20V3-9CDJP-WWV5T\n",
		"KW1-DDJQJ-XVIE9-J2OV3-9CDJP-WWV5T",
		"KW1-DDJQJ-XVLE9-J2oV3-9CDJP-WWV5T",
		"kwl-ddjqj-xvie9-j2ov3-9cdjp-wwv5t",
		"KWI DDJQJ XVLE9 J2OV3 9CDJP WWV5T",
		"Kw1ddjQJ-xV1E9j20v3-9cDjPwwV5t",
	}
	for _, in := range inputs {
		if got, err := licensekey.Parse(in); got != sample || err != nil {
			t.Errorf("Parse(%q) = %q, %v, want %q", in, got, err, sample)
		}
	}
}

func TestParseErrors(t *testing.T) {
	tests := []struct {
		name, in string
		want     error
	}{
		{"Empty", "", licensekey.ErrFormat},
		{"Spaces", "     ", licensekey.ErrFormat},
		{"PrefixOnly", "KW1", licensekey.ErrFormat},
		{"NoPrefix", "DDJQJ-XV1E9-J20V3-9CDJP-WWV5T", licensekey.ErrFormat},
		{"OtherVersion", "KW2-DDJQJ-XV1E9-J20V3-9CDJP-WWV5T", licensekey.ErrFormat},
		{"PrefixAlias", "KVV1-DDJQJ-XV1E9-J20V3-9CDJP-WWV5T", licensekey.ErrFormat},
		{"U", "KW1-DDJQU-XV1E9-J20V3-9CDJP-WWV5T", licensekey.ErrFormat},
		{"Punctuation", "KW1-DDJQJ.XV1E9-J20V3-9CDJP-WWV5T", licensekey.ErrFormat},
		{"Underscore", "KW1_DDJQJ-XV1E9-J20V3-9CDJP-WWV5T", licensekey.ErrFormat},
		{"NonASCII", "KW1-DDJQJ-XV1É9-J20V3-9CDJP-WWV5T", licensekey.ErrFormat},
		{"InvalidUTF8", "KW1-DDJQJ-XV1\xff9-J20V3-9CDJP-WWV5T", licensekey.ErrFormat},
		{"Short", "KW1-DDJQJ-XV1E9-J20V3-9CDJP-WWV5", licensekey.ErrFormat},
		{"Long", "KW1-DDJQJ-XV1E9-J20V3-9CDJP-WWV5T0", licensekey.ErrFormat},
		{"SixGroups", "KW1-DDJQJ-XV1E9-J20V3-9CDJP-WWV5T-00000", licensekey.ErrFormat},
		{"DoubleDash", "KW1--DDJQJ-XV1E9-J20V3-9CDJP-WWV5T", licensekey.ErrFormat},
		{"DashAndSpace", "KW1- DDJQJ-XV1E9-J20V3-9CDJP-WWV5T", licensekey.ErrFormat},
		{"DashInGroup", "KW1-DDJ-QJXV1E9-J20V3-9CDJP-WWV5T", licensekey.ErrFormat},
		{"LeadingDash", "-KW1-DDJQJ-XV1E9-J20V3-9CDJP-WWV5T", licensekey.ErrFormat},
		{"TrailingDash", "KW1-DDJQJ-XV1E9-J20V3-9CDJP-WWV5T-", licensekey.ErrFormat},
		{"Tab", "KW1\tDDJQJ-XV1E9-J20V3-9CDJP-WWV5T", licensekey.ErrFormat},
		{"TooLong", strings.Repeat(" ", 32) + sample, licensekey.ErrFormat},
		{"Huge", strings.Repeat("K", 1<<20), licensekey.ErrFormat},
		{"Substitution", "KW1-DDJQJ-XV1E9-J20V3-9CDJP-WWV5V", licensekey.ErrChecksum},
		{"Transposition", "KW1-DDJQJ-XV1E9-J20V3-9CDJP-WV5WT", licensekey.ErrChecksum},
		{"AcrossGroups", "KW1-DDJQX-JV1E9-J20V3-9CDJP-WWV5T", licensekey.ErrChecksum},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			k, err := licensekey.Parse(tt.in)
			if !errors.Is(err, tt.want) || k != "" {
				t.Errorf("Parse(%q) = %q, %v, want %v", tt.in, k, err, tt.want)
			}
		})
	}
	t.Run("Message", func(t *testing.T) {
		_, err := licensekey.Parse(" KW1-DDJQJ-XV1E9-J20V3-9CDJP-WWU5T")
		want := "licensekey: malformed key: invalid character 'U' at position 32"
		if err == nil || err.Error() != want {
			t.Errorf("Parse error = %v, want %s", err, want)
		}
	})
}

// TestTypos checks that every single-symbol substitution and every adjacent
// transposition of a generated key is rejected.
func TestTypos(t *testing.T) {
	for range 300 {
		k := MustGenerate(t)
		sym := symbolsOf(k)
		for i := range sym {
			orig := sym[i]
			for _, c := range []byte(licensekey.Alphabet) {
				if c == orig {
					continue
				}
				sym[i] = c
				if _, err := licensekey.Parse(render(sym)); !errors.Is(err, licensekey.ErrChecksum) {
					t.Fatalf("Parse(%s with symbol %d %c→%c) error = %v, want %v", k.Prefix(), i, orig, c, err, licensekey.ErrChecksum)
				}
			}
			sym[i] = orig
		}
		for i := range len(sym) - 1 {
			if sym[i] == sym[i+1] {
				continue
			}
			sym[i], sym[i+1] = sym[i+1], sym[i]
			if _, err := licensekey.Parse(render(sym)); !errors.Is(err, licensekey.ErrChecksum) {
				t.Fatalf("Parse(%s with symbols %d,%d swapped) error = %v, want %v", k.Prefix(), i, i+1, err, licensekey.ErrChecksum)
			}
			sym[i], sym[i+1] = sym[i+1], sym[i]
		}
		// The version's last symbol swapped with the first payload symbol.
		if sym[0] != '1' {
			swapped := "KW" + string(sym[0]) + "-1" + string(k[5:])
			if _, err := licensekey.Parse(swapped); err == nil {
				t.Fatalf("Parse(%s with prefix and payload swapped) succeeded", k.Prefix())
			}
		}
	}
}

// normal maps a byte to what Parse reads it as: upper case, aliases resolved,
// space read as dash.
func normal(c byte) byte {
	if 'a' <= c && c <= 'z' {
		c -= 'a' - 'A'
	}
	switch c {
	case 'I', 'L':
		return '1'
	case 'O':
		return '0'
	case ' ':
		return '-'
	}
	return c
}

// TestMangle flips every byte and cuts at every position: the result must be
// rejected unless the alias rules make it the same key, and errors must not
// repeat the key.
func TestMangle(t *testing.T) {
	keys := []licensekey.Key{sample, MustGenerate(t), MustGenerate(t)}
	repl := []string{"0", "1", "Z", "z", "U", "I", "l", "O", "o", "-", " ", "\t", "\x00", "\xff", "é", "𝟙"}
	check := func(k licensekey.Key, in string, ok bool) {
		t.Helper()
		got, err := licensekey.Parse(in)
		switch {
		case ok && (got != k || err != nil):
			t.Errorf("Parse(%q) = %q, %v, want %q", in, got, err, k)
		case !ok && err == nil:
			t.Errorf("Parse(%q) = %q, want error", in, got)
		case err != nil:
			msg := err.Error()
			if len(in) >= 8 && strings.Contains(msg, in) || strings.Contains(msg, string(k)) {
				t.Errorf("Parse(%q) error %q repeats the input", in, msg)
			}
			for _, group := range strings.Split(string(k), "-")[1:] {
				if strings.Contains(msg, group) {
					t.Errorf("Parse(%q) error %q contains group %s", in, msg, group)
				}
			}
		}
	}
	for _, k := range keys {
		for _, s := range []string{string(k), strings.ReplaceAll(strings.ToLower(string(k)), "-", "")} {
			for i := range len(s) {
				for _, r := range repl {
					ok := len(r) == 1 && normal(r[0]) == normal(s[i])
					check(k, s[:i]+r+s[i+1:], ok)
				}
				// Deleting a byte is harmless only for a separator.
				check(k, s[:i]+s[i+1:], s[i] == '-')
				check(k, s[:i], false)
				if i > 0 {
					check(k, s[i:], false)
				}
			}
		}
	}
}

func TestPrefixAndLogValue(t *testing.T) {
	k := licensekey.Key(sample)
	if got, want := k.Prefix(), "KW1-DDJQJ"; got != want {
		t.Errorf("Prefix() = %q, want %q", got, want)
	}
	if got := licensekey.Key("").Prefix(); got != "" {
		t.Errorf("Key(\"\").Prefix() = %q, want \"\"", got)
	}
	if got := k.String(); got != sample {
		t.Errorf("String() = %q, want %q", got, sample)
	}
	var buf bytes.Buffer
	slog.New(slog.NewTextHandler(&buf, nil)).Info("issued", "key", k)
	out := buf.String()
	if !strings.Contains(out, "key=KW1-DDJQJ…") || strings.Contains(out, "XV1E9") {
		t.Errorf("log output %q, want only the key's prefix", out)
	}
}

func FuzzParse(f *testing.F) {
	for _, s := range []string{
		sample, "kw1ddjqjxv1e9j20v39cdjpwwv5t", " KWI DDJQJ XVLE9 J2OV3 9CDJP WWV5T ",
		"KW1-DDJQJ-XV1E9-J20V3-9CDJP-WWV5V", "KW1-", "", "KW1-DDJQU", "\xffKW1",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		k, err := licensekey.Parse(s)
		if err != nil {
			if k != "" || !(errors.Is(err, licensekey.ErrFormat) || errors.Is(err, licensekey.ErrChecksum)) {
				t.Fatalf("Parse(%q) = %q, %v", s, k, err)
			}
			return
		}
		if !canonical.MatchString(string(k)) {
			t.Fatalf("Parse(%q) = %q, not canonical", s, k)
		}
		if k2, err := licensekey.Parse(string(k)); k2 != k || err != nil {
			t.Fatalf("Parse(%q) = %q, %v, want %q", k, k2, err, k)
		}
	})
}

func BenchmarkParse(b *testing.B) {
	for b.Loop() {
		if _, err := licensekey.Parse(sample); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkGenerate(b *testing.B) {
	for b.Loop() {
		if _, err := licensekey.Generate(nil); err != nil {
			b.Fatal(err)
		}
	}
}
