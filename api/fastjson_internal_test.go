package api

import (
	"bytes"
	"encoding/json"
	"math/rand/v2"
	"strings"
	"testing"
	"time"
)

// encodingJSON is what writeJSON writes for v.
func encodingJSON(t testing.TB, v *Validation) []byte {
	var buf bytes.Buffer
	if err := json.NewEncoder(&buf).Encode(v); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// randomString draws from plain ASCII, then from everything encoding/json
// escapes or replaces (HTML characters, controls, quotes, non-ASCII,
// U+2028, invalid UTF-8).
func randomString(r *rand.Rand) string {
	const plain = "abcXYZ019_-.:@+ "
	specials := []string{"<", ">", "&", `"`, `\`, "\n", "\t", "\x00", "\x1f", "\x7f", "é", "€", "\u2028", "\u2029", "\xff", "\xc3", "😀"}
	var b strings.Builder
	for range r.IntN(12) {
		if r.IntN(8) == 0 {
			b.WriteString(specials[r.IntN(len(specials))])
		} else {
			b.WriteByte(plain[r.IntN(len(plain))])
		}
	}
	return b.String()
}

func randomTime(r *rand.Rand) time.Time {
	t := time.Unix(r.Int64N(1<<34)-1<<33, 0).UTC()
	switch r.IntN(4) {
	case 0:
		return t
	case 1:
		return t.Add(time.Duration(r.IntN(1e9)))
	case 2:
		return t.Add(time.Duration(r.IntN(1000)) * time.Millisecond)
	default:
		return t.Add(time.Duration(r.IntN(1e6)) * time.Microsecond)
	}
}

// TestValidationJSONMatches: the hand-written encoding of a validation
// answer is byte for byte encoding/json's, on generated answers.
func TestValidationJSONMatches(t *testing.T) {
	r := rand.New(rand.NewPCG(9, 26))
	for i := range 20000 {
		v := &Validation{Valid: r.IntN(2) == 0, Code: randomString(r)}
		if r.IntN(6) > 0 {
			l := &License{
				ID: randomString(r), ProductID: randomString(r), Holder: randomString(r), State: randomString(r),
				KeyPrefix: randomString(r), MaxMachines: r.IntN(2000) - 1000, CreatedAt: randomTime(r), UpdatedAt: randomTime(r),
			}
			if r.IntN(2) == 0 {
				l.Product = randomString(r)
			}
			if r.IntN(2) == 0 {
				l.Reason = randomString(r)
			}
			if r.IntN(4) > 0 {
				l.Entitlements = []string{}
				for range r.IntN(4) {
					l.Entitlements = append(l.Entitlements, randomString(r))
				}
			}
			if r.IntN(2) == 0 {
				e := randomTime(r)
				l.ExpiresAt = &e
			}
			if r.IntN(2) == 0 {
				lv := randomTime(r)
				l.LastValidatedAt = &lv
			}
			v.License = l
		}
		if r.IntN(3) == 0 {
			v.Machine = &Machine{ID: randomString(r), LicenseID: randomString(r), Fingerprint: randomString(r), CreatedAt: randomTime(r), LastSeenAt: randomTime(r)}
		}
		if r.IntN(3) == 0 {
			v.Lease = &Lease{Token: randomString(r), ExpiresAt: randomTime(r)}
		}
		got, ok := appendValidationJSON([]byte("prefix"), v)
		if !ok {
			t.Fatalf("case %d: refused %+v", i, v)
		}
		if want := append([]byte("prefix"), encodingJSON(t, v)...); !bytes.Equal(got, want) {
			t.Fatalf("case %d:\n got %s\nwant %s", i, got, want)
		}
	}
}

// TestValidationJSONDeclines: times encoding/json writes with an offset or
// refuses are left to it, and the buffer is left as it was.
func TestValidationJSONDeclines(t *testing.T) {
	at := time.Date(2026, 11, 26, 1, 2, 3, 4, time.UTC)
	for _, bad := range []time.Time{
		at.In(time.FixedZone("X", 3600)),
		time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC),
		time.Date(-1, 1, 1, 0, 0, 0, 0, time.UTC),
	} {
		for _, v := range []*Validation{
			{License: &License{CreatedAt: bad, UpdatedAt: at}},
			{License: &License{CreatedAt: at, UpdatedAt: at, LastValidatedAt: &bad}},
			{Lease: &Lease{ExpiresAt: bad}},
			{Machine: &Machine{CreatedAt: at, LastSeenAt: bad}},
		} {
			if got, ok := appendValidationJSON([]byte("x"), v); ok || string(got) != "x" {
				t.Errorf("%v: ok = %v, buffer %q", bad, ok, got)
			}
		}
	}
}

// validateBodies are request bodies at and around the plain form.
var validateBodies = []string{
	`{"key":"KW1-ABCDE-FGHJK-MNPQR-STVWX-YZ012"}`,
	`{"key":"k","fingerprint":"f","product":"p"}`,
	`{"product":"p","key":"k"}`,
	` {"key":"k"} `,
	"\n\t{\"key\":\"k\"}\r\n",
	`{"key":""}`,
	`{"fingerprint":"f"}`,
	`{"key":"a<b>&c"}`,
	`{}`,
	`{"key":"k",}`,
	`{"key":"k","key":"j"}`,
	`{"KEY":"k"}`,
	`{"key":"k\u0041"}`,
	`{"key":"k\"x"}`,
	`{"key":"é"}`,
	`{"key":null}`,
	`{"key":1}`,
	`{"key":"k"}{"key":"j"}`,
	`{"key":"k"} x`,
	`{"key" : "k"}`,
	`{"key":"k" }`,
	`{"key":"k","other":"x"}`,
	`{"key":"k",,"product":"p"}`,
	"\u00a0{\"key\":\"k\"}",
	`[{"key":"k"}]`,
	`{"key":"k`,
	`{"key":"k"`,
	`"key"`,
	``,
	`{`,
	`}`,
	`{"":"k"}`,
	`{"key":"k","fingerprint":"","product":""}`,
}

// TestValidateRequestMatches: wherever the plain parser answers, it
// answers what encoding/json does; elsewhere encoding/json decides.
func TestValidateRequestMatches(t *testing.T) {
	plain := 0
	for _, body := range validateBodies {
		if checkPlainMatches(t, []byte(body)) {
			plain++
		}
	}
	if plain < 8 {
		t.Errorf("the plain parser took %d of the sample bodies, want the plain ones", plain)
	}
}

func checkPlainMatches(t testing.TB, body []byte) bool {
	var fast, slow validateReq
	if !parseValidateRequest(body, &fast) {
		return false
	}
	if err := decodeBody(bytes.NewReader(body), &slow); err != nil {
		t.Fatalf("%q: the plain parser accepted what encoding/json refuses: %v", body, err)
	}
	if fast != slow {
		t.Fatalf("%q: plain parser %+v, encoding/json %+v", body, fast, slow)
	}
	return true
}

func FuzzValidateRequest(f *testing.F) {
	for _, b := range validateBodies {
		f.Add([]byte(b))
	}
	f.Fuzz(func(t *testing.T, body []byte) { checkPlainMatches(t, body) })
}

func FuzzValidationJSON(f *testing.F) {
	f.Add("VALID", "lic_1", "acme", "KW1-ABCDE", int64(0), int64(1))
	f.Add("<&>", "\u2028", "\xff", "\"", int64(-62135596800), int64(999))
	f.Fuzz(func(t *testing.T, code, id, product, prefix string, sec, nsec int64) {
		at := time.Unix(sec, nsec).UTC()
		v := &Validation{Code: code, License: &License{ID: id, Product: product, KeyPrefix: prefix, Entitlements: []string{id, prefix},
			CreatedAt: at, UpdatedAt: at, LastValidatedAt: &at, ExpiresAt: &at}, Lease: &Lease{Token: code, ExpiresAt: at}}
		got, ok := appendValidationJSON(nil, v)
		var buf bytes.Buffer
		err := json.NewEncoder(&buf).Encode(v)
		if !ok {
			return // left to encoding/json
		}
		if err != nil || !bytes.Equal(got, buf.Bytes()) {
			t.Fatalf("got %s\nwant %s (%v)", got, buf.Bytes(), err)
		}
	})
}
