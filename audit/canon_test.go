package audit

import (
	"bytes"
	"encoding/json"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/keyward/keyward"
)

// Internal tests: the fast paths of canon.go against encoding/json.

// tricky are strings encoding/json writes in every way it has: escapes,
// HTML characters, control characters, multi-byte and line separators.
var tricky = []string{"", "plain text", `"quoted"`, `back\slash`, "<a href='x'>&amp;</a>", "\x00\x01\x1f\x7f",
	"tab\there\nnew\rline\b\f", "é", "日本語", "\u2028\u2029", "emoji 🔑", "~!@#$%^*()_+`-={}|[]:;'?,./"}

// randomString draws from a pool that mixes plain and escaped characters.
func randomString(r *rand.Rand) string {
	pool := []string{"a", "Z", "0", " ", "_", "-", ".", ":", "/", `"`, `\`, "<", ">", "&", "\n", "\x00", "\x1f", "\x7f", "é", "\u2028", "🔑", "{", "}", "[", "]", ","}
	var b strings.Builder
	for range r.IntN(12) {
		b.WriteString(pool[r.IntN(len(pool))])
	}
	return b.String()
}

func TestAppendEntryMatchesReflect(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	pick := func() string {
		if r.IntN(2) == 0 {
			return tricky[r.IntN(len(tricky))]
		}
		return randomString(r)
	}
	list := func() []string {
		switch r.IntN(3) {
		case 0:
			return nil
		case 1:
			return []string{}
		}
		out := make([]string, 1+r.IntN(3))
		for i := range out {
			out[i] = pick()
		}
		return out
	}
	zones := []*time.Location{time.UTC, time.FixedZone("x", -7*3600), time.FixedZone("y", 5*3600+1800)}
	details := []string{"null", "{}", "[]", `{"a":1}`, `{"n":12,"product":"prd_1"}`, `"\u003ctag\u003e"`, `[1,-2.5e+3,true,null]`}
	for i := range 3000 {
		e := &keyward.AuditEntry{
			Seq:   r.Int64N(1 << 40),
			Time:  time.Unix(r.Int64N(1<<35)-1<<34, r.Int64N(1e9)).In(zones[r.IntN(len(zones))]),
			Actor: pick(), ActorName: pick(), Roles: list(), Action: pick(), TargetType: pick(), TargetID: pick(),
			Before: pick(), After: pick(), Reason: pick(), RequestID: pick(), ApprovalIDs: list(),
			PolicyVersion: r.IntN(1<<20) - 1<<19, Rule: pick(),
		}
		d := json.RawMessage(details[r.IntN(len(details))])
		want, err := encodeReflect(e, d)
		if err != nil {
			t.Fatalf("encodeReflect(entry %d) = %v", i, err)
		}
		got, err := encode(e, d)
		if err != nil || !bytes.Equal(got, want) {
			t.Fatalf("encode(entry %d) =\n%s, %v\nencoding/json writes\n%s", i, got, err, want)
		}
	}
}

func TestAppendEntryInvalidUTF8(t *testing.T) {
	e := &keyward.AuditEntry{Seq: 1, Reason: "bad \xff"}
	if _, err := encode(e, nil); err == nil {
		t.Fatalf("encode(invalid UTF-8) = nil error")
	}
}

// randomDoc writes a JSON-ish document: mostly valid, with white space,
// escapes, duplicate keys, numbers of every form and some damage.
func randomDoc(r *rand.Rand, b *strings.Builder, depth int) {
	ws := func() {
		if r.IntN(4) == 0 {
			b.WriteString([]string{" ", "\n", "\t", "\r\n  "}[r.IntN(4)])
		}
	}
	str := func() {
		if r.IntN(3) == 0 {
			s, _ := json.Marshal(randomString(r))
			b.Write(s)
			return
		}
		b.WriteString(`"` + []string{"a", "b", "n", "product", "z", "a", `x\u0041`, `\"`, "é", ""}[r.IntN(10)] + `"`)
	}
	ws()
	switch k := r.IntN(10); {
	case depth > 4 || k < 3:
		switch r.IntN(6) {
		case 0:
			str()
		case 1:
			b.WriteString([]string{"true", "false", "null", "nul", "tru"}[r.IntN(5)])
		default:
			b.WriteString([]string{"0", "-0", "12", "-3.25", "1e5", "1E+05", "2.5e-3", "01", "1.", "-", ".5", "1e", "123456789012345678901234567890", "-0.0e0"}[r.IntN(14)])
		}
	case k < 6:
		b.WriteByte('[')
		for i := range r.IntN(4) {
			if i > 0 {
				b.WriteByte(',')
			}
			randomDoc(r, b, depth+1)
		}
		if r.IntN(20) == 0 {
			b.WriteByte(',')
		}
		b.WriteByte(']')
	default:
		b.WriteByte('{')
		for i := range r.IntN(5) {
			if i > 0 {
				b.WriteByte(',')
			}
			ws()
			str()
			ws()
			b.WriteByte(':')
			randomDoc(r, b, depth+1)
		}
		b.WriteByte('}')
	}
	ws()
	if r.IntN(30) == 0 {
		b.WriteString([]string{"x", "}", "{}", "\x00"}[r.IntN(4)])
	}
}

func TestFastCanonicalMatchesReflect(t *testing.T) {
	docs := []string{`{"product":"prd_1","n":12}`, `{"b":{"d":[1,{"z":null,"a":true}],"c":"x"},"a":[]}`, ` [ 1 , 2 ] `,
		`{"a":1,"a":2}`, `{"a":"\u0041"}`, `"<"`, `{"a":1}x`, `{"a":1`, `[1,]`, `{,}`, `-01`, `1.5E-7`, `"unterminated`,
		`{"a" 1}`, strings.Repeat("[", 40) + strings.Repeat("]", 40), `null`, `  `, "\ufeff{}"}
	r := rand.New(rand.NewPCG(3, 4))
	for range 20000 {
		var b strings.Builder
		randomDoc(r, &b, 0)
		docs = append(docs, b.String())
	}
	fast := 0
	for _, doc := range docs {
		got, ok := fastCanonical([]byte(doc))
		if !ok {
			continue
		}
		fast++
		want, err := canonicalReflect(json.RawMessage(doc))
		if err != nil || !bytes.Equal(got, want) {
			t.Fatalf("fastCanonical(%q) = %s; encoding/json gives %s, %v", doc, got, want, err)
		}
	}
	// The fast path must take the common documents, or it is no use.
	for _, doc := range docs[:3] {
		if _, ok := fastCanonical([]byte(doc)); !ok {
			t.Errorf("fastCanonical(%q) left to encoding/json", doc)
		}
	}
	if fast < len(docs)/4 {
		t.Errorf("fastCanonical took %d of %d documents; the test compares too little", fast, len(docs))
	}
}

func FuzzFastCanonical(f *testing.F) {
	for _, s := range []string{`{"product":"prd_1","n":12}`, `[1,"a",{"b":null}]`, `{"a":1,"a":2}`, `-0.5e+7`} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, doc string) {
		got, ok := fastCanonical([]byte(doc))
		if !ok {
			return
		}
		want, err := canonicalReflect(json.RawMessage(doc))
		if err != nil || !bytes.Equal(got, want) {
			t.Fatalf("fastCanonical(%q) = %s; encoding/json gives %s, %v", doc, got, want, err)
		}
	})
}
