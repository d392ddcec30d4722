package audit

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"time"
	"unicode/utf8"

	"golang.org/x/mod/sumdb/tlog"

	"github.com/keyward/keyward"
)

// TimeLayout is how an entry's time appears in its canonical encoding:
// RFC 3339 in UTC with exactly nine fractional digits. Append truncates
// times to microseconds (what every store keeps), so the last three digits
// are 000.
const TimeLayout = "2006-01-02T15:04:05.000000000Z"

// wireEntry is the canonical encoding's JSON object. The member order is
// the declaration order and MUST NOT change: it is part of every leaf hash.
type wireEntry struct {
	Seq           int64           `json:"seq"`
	Time          string          `json:"time"`
	Actor         string          `json:"actor"`
	ActorName     string          `json:"actor_name"`
	Roles         []string        `json:"roles"`
	Action        string          `json:"action"`
	TargetType    string          `json:"target_type"`
	TargetID      string          `json:"target_id"`
	Before        string          `json:"before"`
	After         string          `json:"after"`
	Reason        string          `json:"reason"`
	RequestID     string          `json:"request_id"`
	ApprovalIDs   []string        `json:"approval_ids"`
	PolicyVersion int             `json:"policy_version"`
	Rule          string          `json:"rule"`
	Details       json.RawMessage `json:"details"`
}

// Encode returns the canonical encoding of e: a JSON object with the
// members seq, time, actor, actor_name, roles, action, target_type,
// target_id, before, after, reason, request_id, approval_ids,
// policy_version, rule and details, in that order, without white space;
// strings and arrays as Go's encoding/json writes them (so <, > and & are
// \u003c, \u003e and \u0026); roles and approval_ids always arrays; time
// in TimeLayout; details the entry's JSON document with object members
// sorted by key and no white space, or null.
//
// Encode fails if a string is not valid UTF-8 (it would not survive the
// round trip) or if details is not a JSON document.
func Encode(e *keyward.AuditEntry) ([]byte, error) {
	details, err := canonicalJSON(e.Details)
	if err != nil {
		return nil, fmt.Errorf("audit entry %d: details: %w", e.Seq, err)
	}
	return encode(e, details)
}

// encode is Encode with the details already canonical.
func encode(e *keyward.AuditEntry, details json.RawMessage) ([]byte, error) {
	if len(details) == 0 {
		details = json.RawMessage("null")
	}
	if !validText(e) {
		return nil, fmt.Errorf("audit entry %d: a text field is not valid UTF-8", e.Seq)
	}
	// What json.Marshal writes for the wireEntry of e (canon.go).
	return appendEntry(make([]byte, 0, 320+len(details)), e, details), nil
}

// encodeReflect is encode through encoding/json, the reference for
// appendEntry.
func encodeReflect(e *keyward.AuditEntry, details json.RawMessage) ([]byte, error) {
	if len(details) == 0 {
		details = json.RawMessage("null")
	}
	w := wireEntry{
		Seq: e.Seq, Time: e.Time.UTC().Format(TimeLayout), Actor: e.Actor, ActorName: e.ActorName,
		Roles: nonNil(e.Roles), Action: e.Action, TargetType: e.TargetType, TargetID: e.TargetID,
		Before: e.Before, After: e.After, Reason: e.Reason, RequestID: e.RequestID,
		ApprovalIDs: nonNil(e.ApprovalIDs), PolicyVersion: e.PolicyVersion, Rule: e.Rule, Details: details,
	}
	if !validText(e) {
		return nil, fmt.Errorf("audit entry %d: a text field is not valid UTF-8", e.Seq)
	}
	return json.Marshal(w)
}

// validText reports whether every text field of e is valid UTF-8, which
// the encoding needs to be one-to-one.
func validText(e *keyward.AuditEntry) bool {
	for _, s := range [...]string{e.Actor, e.ActorName, e.Action, e.TargetType, e.TargetID, e.Before, e.After, e.Reason, e.RequestID, e.Rule} {
		if !utf8.ValidString(s) {
			return false
		}
	}
	for _, list := range [...][]string{e.Roles, e.ApprovalIDs} {
		for _, s := range list {
			if !utf8.ValidString(s) {
				return false
			}
		}
	}
	return true
}

// Decode parses a canonical encoding. It rejects anything Encode would not
// have written byte for byte: unknown or missing members, another member
// order, white space, a non-canonical time or details document.
func Decode(data []byte) (*keyward.AuditEntry, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	var w wireEntry
	if err := dec.Decode(&w); err != nil {
		return nil, fmt.Errorf("audit: decode entry: %w", err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return nil, errors.New("audit: decode entry: data after the object")
	}
	t, err := time.Parse(TimeLayout, w.Time)
	if err != nil {
		return nil, fmt.Errorf("audit: decode entry %d: time: %w", w.Seq, err)
	}
	e := &keyward.AuditEntry{
		Seq: w.Seq, Time: t, Actor: w.Actor, ActorName: w.ActorName, Roles: w.Roles, Action: w.Action,
		TargetType: w.TargetType, TargetID: w.TargetID, Before: w.Before, After: w.After, Reason: w.Reason,
		RequestID: w.RequestID, ApprovalIDs: w.ApprovalIDs, PolicyVersion: w.PolicyVersion, Rule: w.Rule,
	}
	if string(w.Details) != "null" {
		e.Details = w.Details
	}
	again, err := Encode(e)
	if err != nil {
		return nil, fmt.Errorf("audit: decode entry %d: %w", w.Seq, err)
	}
	if !bytes.Equal(again, data) {
		return nil, fmt.Errorf("audit: decode entry %d: not in canonical form", w.Seq)
	}
	return e, nil
}

// LeafHash returns the RFC 6962 leaf hash of e: SHA-256(0x00 ‖ Encode(e)).
func LeafHash(e *keyward.AuditEntry) (tlog.Hash, error) {
	b, err := Encode(e)
	if err != nil {
		return tlog.Hash{}, err
	}
	return tlog.RecordHash(b), nil
}

// normalize brings e to the form every store returns unchanged: time in
// UTC truncated to microseconds, details canonical. It is what Append
// stores, so the stored row encodes to the hashed leaf.
func normalize(e *keyward.AuditEntry) error {
	if !validText(e) {
		return keyward.Errorf(keyward.EInvalid, "audit entry %s: a text field is not valid UTF-8", e.Action)
	}
	e.Time = e.Time.UTC().Truncate(time.Microsecond)
	if len(e.Details) > 0 {
		d, err := canonicalJSON(e.Details)
		if err != nil {
			return keyward.Errorf(keyward.EInvalid, "audit entry %s: details are not a JSON document", e.Action)
		}
		e.Details = d
		if string(d) == "null" {
			e.Details = nil
		}
	}
	return nil
}

// canonicalJSON re-encodes a JSON document with object members sorted by
// key, no white space and numbers as written. Empty input is null.
func canonicalJSON(doc json.RawMessage) (json.RawMessage, error) {
	if len(doc) == 0 {
		return json.RawMessage("null"), nil
	}
	if out, ok := fastCanonical(doc); ok {
		return out, nil
	}
	return canonicalReflect(doc)
}

// canonicalReflect is canonicalJSON through encoding/json, the reference
// for fastCanonical.
func canonicalReflect(doc json.RawMessage) (json.RawMessage, error) {
	dec := json.NewDecoder(bytes.NewReader(doc))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, err
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return nil, errors.New("data after the document")
	}
	return json.Marshal(v)
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}
