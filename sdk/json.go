package sdk

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
)

// maxJSONDepth bounds the nesting of arrays and objects checkJSON accepts.
const maxJSONDepth = 32

// checkJSON reports an error unless data is exactly one JSON value in which
// no object has two members of the same name, nested at most maxJSONDepth
// deep. encoding/json would silently keep the last of duplicate members;
// a token or trust bundle that different parsers read differently is refused.
func checkJSON(data []byte) error {
	type frame struct {
		names   map[string]bool // nil for an array
		wantKey bool            // in an object, the next token is a member name
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	var stack []*frame
	values := 0
	// complete notes that a value ended: a scalar, or a closed array or object.
	complete := func() error {
		if n := len(stack); n > 0 {
			stack[n-1].wantKey = stack[n-1].names != nil
			return nil
		}
		if values++; values > 1 {
			return errors.New("data after the JSON value")
		}
		return nil
	}
	for {
		t, err := dec.Token()
		if err == io.EOF {
			break
		}
		if err != nil {
			return fmt.Errorf("bad JSON: %w", err)
		}
		top := (*frame)(nil)
		if n := len(stack); n > 0 {
			top = stack[n-1]
		}
		switch {
		case top != nil && top.wantKey && t != json.Delim('}'):
			name, ok := t.(string)
			if !ok {
				return errors.New("bad JSON: member name is not a string")
			}
			if top.names[name] {
				return fmt.Errorf("duplicate member %q", name)
			}
			top.names[name] = true
			top.wantKey = false
			continue
		case t == json.Delim('{') || t == json.Delim('['):
			if top == nil && values > 0 {
				return errors.New("data after the JSON value")
			}
			if len(stack) >= maxJSONDepth {
				return fmt.Errorf("JSON nested deeper than %d", maxJSONDepth)
			}
			f := &frame{}
			if t == json.Delim('{') {
				f.names, f.wantKey = map[string]bool{}, true
			}
			stack = append(stack, f)
			continue
		case t == json.Delim('}') || t == json.Delim(']'):
			stack = stack[:len(stack)-1]
		}
		if err := complete(); err != nil {
			return err
		}
	}
	switch {
	case len(stack) != 0:
		return errors.New("bad JSON: truncated")
	case values != 1:
		return errors.New("bad JSON: no value")
	}
	return nil
}

// object decodes data, which checkJSON accepted, as a JSON object into a
// map whose keys are the exact member names (encoding/json would match
// struct fields case-insensitively).
func object(data []byte) (map[string]json.RawMessage, error) {
	var m map[string]json.RawMessage
	if err := json.Unmarshal(data, &m); err != nil || m == nil {
		return nil, errors.New("not a JSON object")
	}
	return m, nil
}

// fields reads typed members out of a JSON object by exact name and keeps
// the first error.
type fields struct {
	what string // "claim", "member", … for messages
	m    map[string]json.RawMessage
	err  error
}

func (f *fields) failf(format string, args ...any) {
	if f.err == nil {
		f.err = fmt.Errorf(format, args...)
	}
}

// decode unmarshals member name into dst. A missing member is an error if
// required; null is an error unless nullOK.
func (f *fields) decode(name string, dst any, required, nullOK bool) bool {
	raw, ok := f.m[name]
	switch {
	case !ok:
		if required {
			f.failf("missing %s %q", f.what, name)
		}
		return false
	case string(raw) == "null":
		if !nullOK {
			f.failf("%s %q is null", f.what, name)
		}
		return false
	}
	if err := json.Unmarshal(raw, dst); err != nil {
		f.failf("%s %q: wrong type", f.what, name)
		return false
	}
	return true
}

// str returns the string member name ("" if absent and optional).
func (f *fields) str(name string, required, nonEmpty bool) string {
	var s string
	if f.decode(name, &s, required, false) && nonEmpty && s == "" {
		f.failf("%s %q is empty", f.what, name)
	}
	return s
}

// maxUnix is 9999-12-31T23:59:59Z, the latest NumericDate accepted.
const maxUnix = 253402300799

// unix returns the required NumericDate member name: whole seconds in
// [0, maxUnix].
func (f *fields) unix(name string) int64 {
	var v int64
	if f.decode(name, &v, true, false) && (v < 0 || v > maxUnix) {
		f.failf("%s %q out of range", f.what, name)
	}
	return v
}

// count returns the optional non-negative integer member name.
func (f *fields) count(name string, required bool) int {
	var v int
	if f.decode(name, &v, required, false) && v < 0 {
		f.failf("%s %q is negative", f.what, name)
	}
	return v
}
