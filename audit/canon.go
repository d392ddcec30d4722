package audit

import (
	"bytes"
	"encoding/json"
	"slices"
	"strconv"
	"unicode/utf8"

	"github.com/keyward/keyward"
)

// Fast paths for the canonical encoding. Every audited state change
// encodes its entry (and canonicalizes its details) once, and through
// encoding/json's reflection that was a large part of what the tree
// costs a change. Each fast path handles a common subset of inputs for which its
// output is plainly what encoding/json writes, and leaves everything else
// to encoding/json; the tests compare the two on generated inputs.

// plain reports whether encoding/json writes s as '"' + s + '"': printable
// ASCII without '"', '\\' and the HTML characters it escapes.
func plain(s []byte) bool {
	for _, c := range s {
		if c < 0x20 || c >= utf8.RuneSelf || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
			return false
		}
	}
	return true
}

// appendString appends s as encoding/json writes it.
func appendString(dst []byte, s string) []byte {
	if plain([]byte(s)) {
		dst = append(dst, '"')
		dst = append(dst, s...)
		return append(dst, '"')
	}
	b, _ := json.Marshal(s) // a string always marshals
	return append(dst, b...)
}

func appendStrings(dst []byte, list []string) []byte {
	dst = append(dst, '[')
	for i, s := range list {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = appendString(dst, s)
	}
	return append(dst, ']')
}

// appendEntry appends the canonical encoding of e with details already
// canonical (non-empty): what json.Marshal writes for its wireEntry.
func appendEntry(dst []byte, e *keyward.AuditEntry, details json.RawMessage) []byte {
	dst = append(dst, `{"seq":`...)
	dst = strconv.AppendInt(dst, e.Seq, 10)
	dst = append(dst, `,"time":"`...)
	dst = e.Time.UTC().AppendFormat(dst, TimeLayout)
	dst = append(dst, `","actor":`...)
	dst = appendString(dst, e.Actor)
	dst = append(dst, `,"actor_name":`...)
	dst = appendString(dst, e.ActorName)
	dst = append(dst, `,"roles":`...)
	dst = appendStrings(dst, e.Roles)
	dst = append(dst, `,"action":`...)
	dst = appendString(dst, e.Action)
	dst = append(dst, `,"target_type":`...)
	dst = appendString(dst, e.TargetType)
	dst = append(dst, `,"target_id":`...)
	dst = appendString(dst, e.TargetID)
	dst = append(dst, `,"before":`...)
	dst = appendString(dst, e.Before)
	dst = append(dst, `,"after":`...)
	dst = appendString(dst, e.After)
	dst = append(dst, `,"reason":`...)
	dst = appendString(dst, e.Reason)
	dst = append(dst, `,"request_id":`...)
	dst = appendString(dst, e.RequestID)
	dst = append(dst, `,"approval_ids":`...)
	dst = appendStrings(dst, e.ApprovalIDs)
	dst = append(dst, `,"policy_version":`...)
	dst = strconv.AppendInt(dst, int64(e.PolicyVersion), 10)
	dst = append(dst, `,"rule":`...)
	dst = appendString(dst, e.Rule)
	dst = append(dst, `,"details":`...)
	dst = append(dst, details...)
	return append(dst, '}')
}

// fastCanonical canonicalizes doc like canonicalJSON if it is made of
// plain strings (no escapes, no duplicate keys), numbers, literals,
// arrays and objects nested at most maxDepth deep; ok is false for
// anything else, including every document canonicalJSON rejects.
func fastCanonical(doc []byte) (out []byte, ok bool) {
	p := canonParser{in: doc}
	p.space()
	v, ok := p.value(0)
	if !ok {
		return nil, false
	}
	p.space()
	if p.i != len(p.in) {
		return nil, false
	}
	return v.append(make([]byte, 0, len(doc))), true
}

const maxDepth = 32

// canonValue is a parsed JSON value: raw for a string (with its quotes),
// number or literal; elems for an array; members for an object.
type canonValue struct {
	kind    byte // '"' for a raw token, '[', '{'
	raw     []byte
	elems   []canonValue
	members []canonMember
}

type canonMember struct {
	key   []byte // without quotes
	value canonValue
}

func (v *canonValue) append(dst []byte) []byte {
	switch v.kind {
	case '[':
		dst = append(dst, '[')
		for i := range v.elems {
			if i > 0 {
				dst = append(dst, ',')
			}
			dst = v.elems[i].append(dst)
		}
		return append(dst, ']')
	case '{':
		dst = append(dst, '{')
		for i := range v.members {
			if i > 0 {
				dst = append(dst, ',')
			}
			dst = append(dst, '"')
			dst = append(dst, v.members[i].key...)
			dst = append(dst, '"', ':')
			dst = v.members[i].value.append(dst)
		}
		return append(dst, '}')
	}
	return append(dst, v.raw...)
}

type canonParser struct {
	in []byte
	i  int
}

func (p *canonParser) space() {
	for p.i < len(p.in) {
		switch p.in[p.i] {
		case ' ', '\t', '\n', '\r':
			p.i++
		default:
			return
		}
	}
}

func (p *canonParser) value(depth int) (canonValue, bool) {
	if p.i >= len(p.in) || depth > maxDepth {
		return canonValue{}, false
	}
	switch c := p.in[p.i]; {
	case c == '"':
		start := p.i
		if _, ok := p.str(); !ok {
			return canonValue{}, false
		}
		return canonValue{kind: '"', raw: p.in[start:p.i]}, true
	case c == '[':
		return p.array(depth)
	case c == '{':
		return p.object(depth)
	case c == '-' || '0' <= c && c <= '9':
		start := p.i
		if !p.number() {
			return canonValue{}, false
		}
		return canonValue{kind: '"', raw: p.in[start:p.i]}, true
	default:
		for _, lit := range [...]string{"true", "false", "null"} {
			if len(p.in)-p.i >= len(lit) && string(p.in[p.i:p.i+len(lit)]) == lit {
				p.i += len(lit)
				return canonValue{kind: '"', raw: p.in[p.i-len(lit) : p.i]}, true
			}
		}
		return canonValue{}, false
	}
}

// str reads a plain string and returns its content.
func (p *canonParser) str() ([]byte, bool) {
	p.i++ // the opening quote
	start := p.i
	for p.i < len(p.in) && p.in[p.i] != '"' {
		p.i++
	}
	if p.i >= len(p.in) || !plain(p.in[start:p.i]) {
		return nil, false
	}
	p.i++ // the closing quote
	return p.in[start : p.i-1], true
}

// number reads a number of RFC 8259's grammar.
func (p *canonParser) number() bool {
	digits := func() int {
		n := 0
		for p.i < len(p.in) && '0' <= p.in[p.i] && p.in[p.i] <= '9' {
			p.i++
			n++
		}
		return n
	}
	if p.in[p.i] == '-' {
		p.i++
	}
	switch {
	case p.i < len(p.in) && p.in[p.i] == '0':
		p.i++
	case digits() == 0:
		return false
	}
	if p.i < len(p.in) && p.in[p.i] == '.' {
		p.i++
		if digits() == 0 {
			return false
		}
	}
	if p.i < len(p.in) && (p.in[p.i] == 'e' || p.in[p.i] == 'E') {
		p.i++
		if p.i < len(p.in) && (p.in[p.i] == '+' || p.in[p.i] == '-') {
			p.i++
		}
		if digits() == 0 {
			return false
		}
	}
	return true
}

func (p *canonParser) array(depth int) (canonValue, bool) {
	p.i++
	v := canonValue{kind: '[', elems: []canonValue{}}
	p.space()
	if p.i < len(p.in) && p.in[p.i] == ']' {
		p.i++
		return v, true
	}
	for {
		p.space()
		e, ok := p.value(depth + 1)
		if !ok {
			return canonValue{}, false
		}
		v.elems = append(v.elems, e)
		more, ok := p.next(']')
		if !ok {
			return canonValue{}, false
		}
		if !more {
			return v, true
		}
	}
}

func (p *canonParser) object(depth int) (canonValue, bool) {
	p.i++
	v := canonValue{kind: '{'}
	p.space()
	if p.i < len(p.in) && p.in[p.i] == '}' {
		p.i++
		return v, true
	}
	for {
		p.space()
		if p.i >= len(p.in) || p.in[p.i] != '"' {
			return canonValue{}, false
		}
		key, ok := p.str()
		if !ok {
			return canonValue{}, false
		}
		p.space()
		if p.i >= len(p.in) || p.in[p.i] != ':' {
			return canonValue{}, false
		}
		p.i++
		p.space()
		val, ok := p.value(depth + 1)
		if !ok {
			return canonValue{}, false
		}
		v.members = append(v.members, canonMember{key, val})
		more, ok := p.next('}')
		if !ok {
			return canonValue{}, false
		}
		if more {
			continue
		}
		// encoding/json sorts a map's keys; a duplicate key keeps the
		// last value, which is left to it.
		slices.SortStableFunc(v.members, func(a, b canonMember) int { return bytes.Compare(a.key, b.key) })
		for i := 1; i < len(v.members); i++ {
			if string(v.members[i-1].key) == string(v.members[i].key) {
				return canonValue{}, false
			}
		}
		return v, true
	}
}

// next reads what follows an element of an array or a member of an
// object: white space, then ',' (more is true) or end (more is false); ok
// is false for anything else.
func (p *canonParser) next(end byte) (more, ok bool) {
	p.space()
	if p.i >= len(p.in) {
		return false, false
	}
	switch p.in[p.i] {
	case ',':
		p.i++
		return true, true
	case end:
		p.i++
		return false, true
	}
	return false, false
}
