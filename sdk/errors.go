package sdk

import (
	"fmt"
	"net/http"
)

// Reason says why a token was rejected. The values are stable strings,
// suitable for logs and metrics.
type Reason string

// Reasons for rejecting a token, in the order the checks run.
const (
	ReasonMalformed      Reason = "malformed"       // not a strict JWS, or claims missing, duplicated or of the wrong type
	ReasonWrongType      Reason = "wrong_type"      // typ is not the one asked for (a lease given as a certificate, …)
	ReasonUnknownKey     Reason = "unknown_key"     // no kid, or a kid the trust bundle does not hold for license tokens
	ReasonKeyCompromised Reason = "key_compromised" // the kid is compromised or destroyed
	ReasonBadSignature   Reason = "bad_signature"   // alg does not fit the key, or the signature does not verify
	ReasonNotYetValid    Reason = "not_yet_valid"   // nbf is later than now plus leeway
	ReasonExpired        Reason = "expired"         // exp is not later than now minus leeway
	ReasonWrongIssuer    Reason = "wrong_issuer"    // iss is not Options.Issuer
	ReasonWrongAudience  Reason = "wrong_audience"  // aud is not Options.Audience, or not the signing key's product
)

// Error is a rejected token: why (Reason) and what exactly failed (Detail,
// safe to log; it never holds the token). Test the reason with errors.Is
// against the Err* sentinels, or read Reason after errors.As.
type Error struct {
	Reason Reason
	Detail string
}

// Error returns "keyward: REASON: DETAIL".
func (e *Error) Error() string {
	if e.Detail == "" {
		return "keyward: " + string(e.Reason)
	}
	return "keyward: " + string(e.Reason) + ": " + e.Detail
}

// Is reports whether target is an *Error with the same Reason and no
// Detail, such as the Err* sentinels: errors.Is(err, sdk.ErrExpired).
func (e *Error) Is(target error) bool {
	t, ok := target.(*Error)
	return ok && t.Reason != "" && t.Reason == e.Reason && t.Detail == ""
}

// Sentinels for errors.Is, one per Reason. Do not modify them.
var (
	ErrMalformed      = &Error{Reason: ReasonMalformed}
	ErrWrongType      = &Error{Reason: ReasonWrongType}
	ErrUnknownKey     = &Error{Reason: ReasonUnknownKey}
	ErrKeyCompromised = &Error{Reason: ReasonKeyCompromised}
	ErrBadSignature   = &Error{Reason: ReasonBadSignature}
	ErrNotYetValid    = &Error{Reason: ReasonNotYetValid}
	ErrExpired        = &Error{Reason: ReasonExpired}
	ErrWrongIssuer    = &Error{Reason: ReasonWrongIssuer}
	ErrWrongAudience  = &Error{Reason: ReasonWrongAudience}
)

func rejectf(r Reason, format string, args ...any) *Error {
	return &Error{Reason: r, Detail: fmt.Sprintf(format, args...)}
}

// APIError is an error answer of the Keyward API: an RFC 9457 problem
// details document, or a non-2xx answer without one (then Code is "" and
// Detail is the HTTP status text).
type APIError struct {
	Status    int    // HTTP status code
	Code      string // Keyward's stable error code, e.g. "LICENSE_INACTIVE", "RATE_LIMITED"
	Detail    string // human-readable explanation from the server
	RequestID string // the server's request id, for support, if it sent one
}

// Error returns "keyward: CODE: DETAIL", or "keyward: HTTP STATUS: DETAIL"
// when the server sent no code.
func (e *APIError) Error() string {
	code := e.Code
	if code == "" {
		code = fmt.Sprintf("HTTP %d", e.Status)
	}
	detail := e.Detail
	if detail == "" {
		detail = http.StatusText(e.Status)
	}
	return "keyward: " + code + ": " + detail
}
