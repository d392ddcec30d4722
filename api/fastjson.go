package api

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"strconv"
	"sync"
	"time"
)

// POST /v1/validate is the hot path (docs/benchmarks.md): its request and
// answer skip encoding/json's reflection when they can. Each fast path
// covers a plain subset and produces exactly what encoding/json does —
// TestValidationJSONMatches and TestValidateRequestMatches compare them on
// generated and fuzzed inputs; anything outside the subset takes
// encoding/json.

// appendValidationJSON appends v as json.NewEncoder(w).Encode(v) writes it
// (a trailing newline included); ok is false, and b unchanged, when v
// holds something only encoding/json should write (a string that needs
// escaping is handled; a time plainTime refuses is not).
func appendValidationJSON(b []byte, v *Validation) (_ []byte, ok bool) {
	if !plainTimes(v) {
		return b, false
	}
	b = append(b, `{"valid":`...)
	b = strconv.AppendBool(b, v.Valid)
	b = append(b, `,"code":`...)
	b = appendJSONString(b, v.Code)
	b = append(b, `,"license":`...)
	if l := v.License; l == nil {
		b = append(b, "null"...)
	} else {
		b = append(b, `{"id":`...)
		b = appendJSONString(b, l.ID)
		b = append(b, `,"product_id":`...)
		b = appendJSONString(b, l.ProductID)
		if l.Product != "" {
			b = append(b, `,"product":`...)
			b = appendJSONString(b, l.Product)
		}
		b = append(b, `,"holder":`...)
		b = appendJSONString(b, l.Holder)
		b = append(b, `,"state":`...)
		b = appendJSONString(b, l.State)
		b = append(b, `,"key_prefix":`...)
		b = appendJSONString(b, l.KeyPrefix)
		b = append(b, `,"entitlements":`...)
		if l.Entitlements == nil {
			b = append(b, "null"...)
		} else {
			b = append(b, '[')
			for i, e := range l.Entitlements {
				if i > 0 {
					b = append(b, ',')
				}
				b = appendJSONString(b, e)
			}
			b = append(b, ']')
		}
		b = append(b, `,"max_machines":`...)
		b = strconv.AppendInt(b, int64(l.MaxMachines), 10)
		b = append(b, `,"expires_at":`...)
		b = appendJSONTimePtr(b, l.ExpiresAt)
		b = append(b, `,"created_at":`...)
		b = appendJSONTime(b, l.CreatedAt)
		b = append(b, `,"updated_at":`...)
		b = appendJSONTime(b, l.UpdatedAt)
		if l.Reason != "" {
			b = append(b, `,"reason":`...)
			b = appendJSONString(b, l.Reason)
		}
		if l.LastValidatedAt != nil {
			b = append(b, `,"last_validated_at":`...)
			b = appendJSONTime(b, *l.LastValidatedAt)
		}
		b = append(b, '}')
	}
	if m := v.Machine; m != nil {
		b = append(b, `,"machine":{"id":`...)
		b = appendJSONString(b, m.ID)
		b = append(b, `,"license_id":`...)
		b = appendJSONString(b, m.LicenseID)
		b = append(b, `,"fingerprint":`...)
		b = appendJSONString(b, m.Fingerprint)
		b = append(b, `,"created_at":`...)
		b = appendJSONTime(b, m.CreatedAt)
		b = append(b, `,"last_seen_at":`...)
		b = appendJSONTime(b, m.LastSeenAt)
		b = append(b, '}')
	}
	if ls := v.Lease; ls != nil {
		b = append(b, `,"lease":{"token":`...)
		b = appendJSONString(b, ls.Token)
		b = append(b, `,"expires_at":`...)
		b = appendJSONTime(b, ls.ExpiresAt)
		b = append(b, '}')
	}
	return append(b, "}\n"...), true
}

// appendJSONString appends s as encoding/json does (HTML escaping on):
// as is when every byte is printable ASCII that needs no escape, else
// through encoding/json.
func appendJSONString(b []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c > 0x7e || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
			q, _ := json.Marshal(s) // a string always encodes
			return append(b, q...)
		}
	}
	b = append(b, '"')
	b = append(b, s...)
	return append(b, '"')
}

// plainTimes reports whether every time in v is plainTime.
func plainTimes(v *Validation) bool {
	if l := v.License; l != nil {
		if !plainTime(l.CreatedAt) || !plainTime(l.UpdatedAt) ||
			l.ExpiresAt != nil && !plainTime(*l.ExpiresAt) ||
			l.LastValidatedAt != nil && !plainTime(*l.LastValidatedAt) {
			return false
		}
	}
	if m := v.Machine; m != nil && (!plainTime(m.CreatedAt) || !plainTime(m.LastSeenAt)) {
		return false
	}
	if ls := v.Lease; ls != nil && !plainTime(ls.ExpiresAt) {
		return false
	}
	return true
}

// plainTime reports whether appendJSONTime writes t as
// time.Time.MarshalJSON does: false for the times MarshalJSON refuses or
// writes with an offset (left to encoding/json).
func plainTime(t time.Time) bool {
	_, off := t.Zone()
	return off == 0 && t.Year() >= 0 && t.Year() <= 9999
}

// appendJSONTime appends a plainTime t as time.Time.MarshalJSON does.
func appendJSONTime(b []byte, t time.Time) []byte {
	b = append(b, '"')
	b = t.AppendFormat(b, time.RFC3339Nano)
	return append(b, '"')
}

func appendJSONTimePtr(b []byte, t *time.Time) []byte {
	if t == nil {
		return append(b, "null"...)
	}
	return appendJSONTime(b, *t)
}

var jsonBufs = sync.Pool{New: func() any { b := make([]byte, 0, 1024); return &b }}

// jsonContentType is the Content-Type header value of JSON answers,
// shared: net/http never modifies header values.
var jsonContentType = []string{"application/json"}

// writeValidation writes a 200 answer with v, as writeJSON would.
func writeValidation(w http.ResponseWriter, v *Validation) error {
	bp := jsonBufs.Get().(*[]byte)
	defer jsonBufs.Put(bp)
	b, ok := appendValidationJSON((*bp)[:0], v)
	if !ok {
		return writeJSON(w, http.StatusOK, v)
	}
	*bp = b
	w.Header()["Content-Type"] = jsonContentType
	w.WriteHeader(http.StatusOK)
	_, err := w.Write(b)
	return err
}

// decodeValidateRequest decodes a POST /v1/validate body as decode does.
// A body of the plain form {"key":"…"} (with "fingerprint" and "product"
// in any order, each once, values of printable ASCII without escapes,
// whitespace around the object) is parsed directly; anything else goes
// through encoding/json, with the same errors.
func decodeValidateRequest(w http.ResponseWriter, r *http.Request, req *validateReq) error {
	if err := checkJSONContentType(r); err != nil {
		return err
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, MaxBodyBytes))
	if err != nil {
		return decodeError(err)
	}
	if parseValidateRequest(body, req) {
		return nil
	}
	*req = validateReq{}
	return decodeBody(bytes.NewReader(body), req)
}

// parseValidateRequest parses the plain form of a validate request; false
// if body is not of that form.
func parseValidateRequest(body []byte, req *validateReq) bool {
	b := bytes.Trim(body, " \t\r\n") // JSON's whitespace
	if len(b) < 2 || b[0] != '{' || b[len(b)-1] != '}' {
		return false
	}
	b = b[1 : len(b)-1]
	var seen [3]bool
	var out validateReq
	for len(b) > 0 {
		name, rest, ok := plainString(b)
		if !ok || len(rest) == 0 || rest[0] != ':' {
			return false
		}
		value, rest, ok := plainString(rest[1:])
		if !ok {
			return false
		}
		var f int
		switch name {
		case "key":
			f, out.Key = 0, value
		case "fingerprint":
			f, out.Fingerprint = 1, value
		case "product":
			f, out.Product = 2, value
		default:
			return false
		}
		if seen[f] {
			return false
		}
		seen[f] = true
		switch {
		case len(rest) == 0:
			b = rest
		case rest[0] == ',' && len(rest) > 1:
			b = rest[1:]
		default:
			return false
		}
	}
	if !seen[0] {
		return false
	}
	*req = out
	return true
}

// plainString reads a JSON string of printable ASCII without escapes at
// the start of b.
func plainString(b []byte) (s string, rest []byte, ok bool) {
	if len(b) < 2 || b[0] != '"' {
		return "", nil, false
	}
	for i := 1; i < len(b); i++ {
		switch c := b[i]; {
		case c == '"':
			return string(b[1:i]), b[i+1:], true
		case c < 0x20 || c > 0x7e || c == '\\':
			return "", nil, false
		}
	}
	return "", nil, false
}
