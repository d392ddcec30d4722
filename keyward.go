// Package keyward holds Keyward's domain: products, signing keys, licenses,
// machines, audit entries and events, their states and the one table of
// legal transitions for each. It imports nothing else of Keyward's; every
// other package speaks in these types.
//
// Errors that reach a user are *Error values with a stable Code; transports
// map codes to their own status (see api/) and never show the wrapped cause.
package keyward

import (
	"context"
	"crypto/rand"
	"encoding/base32"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"time"
)

// Stable error codes. They appear in problem+json bodies and CLI messages and
// MUST NOT change meaning once published.
const (
	EInvalid           = "INVALID_ARGUMENT"    // a field is missing, malformed or out of range
	EMalformed         = "MALFORMED_REQUEST"   // the body is not the JSON document expected
	ETooLarge          = "PAYLOAD_TOO_LARGE"   // the body exceeds the endpoint's limit
	EUnsupportedMedia  = "UNSUPPORTED_MEDIA"   // wrong Content-Type
	EUnauthenticated   = "UNAUTHENTICATED"     // no or bad credentials
	EForbidden         = "FORBIDDEN"           // authenticated, not allowed
	ENotFound          = "NOT_FOUND"           // no such resource
	EConflict          = "CONFLICT"            // already exists / concurrent change
	EIllegalTransition = "ILLEGAL_TRANSITION"  // the state machine refuses the step
	EKeyIsActive       = "KEY_IS_ACTIVE"       // retiring/destroying the ring's only active key
	EInvalidLicenseKey = "INVALID_LICENSE_KEY" // license key of the wrong shape or with a bad check symbol
	ELicenseInactive   = "LICENSE_INACTIVE"    // the license is not active, so nothing new is signed for it
	ERateLimited       = "RATE_LIMITED"        // too many requests
	EMethodNotAllowed  = "METHOD_NOT_ALLOWED"  // route exists, method does not
	EUnavailable       = "UNAVAILABLE"         // not ready (store down, keys not loaded)
	EDutyConflict      = "DUTY_CONFLICT"       // separation of duties: the principal did the other side of a duty pair, or asks to approve its own request
	EMFARequired       = "MFA_REQUIRED"        // the action needs a TOTP code (policy mfa) and none was given, or the principal has not enrolled
	EMFAInvalid        = "MFA_INVALID"         // the TOTP code is wrong, already used, or the principal is locked out after wrong codes
	EApprovalExpired   = "APPROVAL_EXPIRED"    // the approval request is past its expiry: nothing was done and nothing was reverted
	EInternal          = "INTERNAL"            // a bug or an infrastructure failure; details are logged only
)

// ERollbackClosed refuses a key rollback outside the overlap window: the
// previous key is no longer published, or was destroyed or compromised.
const ERollbackClosed = "ROLLBACK_WINDOW_CLOSED"

// Error is a transport-neutral error with a stable code. Message is safe to
// show to the caller; Err is the cause, for logs only.
type Error struct {
	Code    string
	Message string
	Err     error
	// Fields lists the problems with individual fields of a document or
	// request (e.g. every lint problem of a policy), for clients to show
	// one by one; Message summarizes them.
	Fields []FieldError
}

// FieldError is one problem with one field: its path (e.g.
// "spec.licenses.leaseTTL"), its line in the document when known, and why.
type FieldError struct {
	Path    string `json:"path"`
	Line    int    `json:"line,omitempty"`
	Message string `json:"message"`
}

func (e *Error) Error() string {
	if e.Err != nil {
		return fmt.Sprintf("%s: %s: %v", e.Code, e.Message, e.Err)
	}
	return fmt.Sprintf("%s: %s", e.Code, e.Message)
}

func (e *Error) Unwrap() error { return e.Err }

// LogValue logs the code, message and cause.
func (e *Error) LogValue() slog.Value {
	attrs := []slog.Attr{slog.String("code", e.Code), slog.String("message", e.Message)}
	if e.Err != nil {
		attrs = append(attrs, slog.String("cause", e.Err.Error()))
	}
	return slog.GroupValue(attrs...)
}

// Errorf returns an *Error with the given code and formatted message.
func Errorf(code, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

// ErrorCode returns the code of the first *Error in err's chain, EInternal for
// any other non-nil error, and "" for nil.
func ErrorCode(err error) string {
	if err == nil {
		return ""
	}
	var e *Error
	if errors.As(err, &e) {
		return e.Code
	}
	return EInternal
}

// ErrorMessage returns the caller-safe message of err: the Message of the
// first *Error in the chain, or a generic text that reveals nothing.
func ErrorMessage(err error) string {
	var e *Error
	if errors.As(err, &e) {
		return e.Message
	}
	return "internal error"
}

// Clock tells the time. Services hold one; tests control it. Rules never call
// time.Now themselves.
type Clock interface{ Now() time.Time }

// SystemClock is the real clock, in UTC.
type SystemClock struct{}

func (SystemClock) Now() time.Time { return time.Now().UTC() }

var idEncoding = base32.NewEncoding("0123456789abcdefghjkmnpqrstvwxyz").WithPadding(base32.NoPadding)

// NewID returns prefix + "_" + a 26-character identifier: 48 bits of
// millisecond time (so ids sort by creation) and 80 random bits.
func NewID(prefix string, now time.Time, r io.Reader) (string, error) {
	if r == nil {
		r = rand.Reader
	}
	var b [16]byte
	binary.BigEndian.PutUint64(b[:8], uint64(now.UnixMilli())<<16)
	if _, err := io.ReadFull(r, b[6:]); err != nil {
		return "", fmt.Errorf("new id: %w", err)
	}
	return prefix + "_" + idEncoding.EncodeToString(b[:]), nil
}

// Principal is who performs an action: a token's owner, the scheduler, or an
// anonymous caller proving possession of a license key.
type Principal struct {
	ID        string   // token id, "system:scheduler", "license:<id>", …
	Name      string   // human-readable
	Roles     []string // see Role* constants
	ProductID string   // non-empty for product-scoped tokens
}

// Roles (spec section 6).
const (
	RoleAdmin    = "admin"
	RoleIssuer   = "issuer"
	RoleRotator  = "rotator"
	RoleRevoker  = "revoker"
	RoleApprover = "approver"
	RoleAuditor  = "auditor"
	RoleSupport  = "support"
	RoleService  = "service"
)

// AllRoles lists every role in a stable order.
func AllRoles() []string {
	return []string{RoleAdmin, RoleIssuer, RoleRotator, RoleRevoker, RoleApprover, RoleAuditor, RoleSupport, RoleService}
}

type principalKey struct{}
type requestIDKey struct{}

// NewContextWithPrincipal returns ctx carrying p.
func NewContextWithPrincipal(ctx context.Context, p Principal) context.Context {
	return context.WithValue(ctx, principalKey{}, p)
}

// PrincipalFromContext returns the principal in ctx, or the zero Principal.
func PrincipalFromContext(ctx context.Context) Principal {
	p, _ := ctx.Value(principalKey{}).(Principal)
	return p
}

// NewContextWithRequestID returns ctx carrying a request id for audit entries.
func NewContextWithRequestID(ctx context.Context, id string) context.Context {
	return context.WithValue(ctx, requestIDKey{}, id)
}

// RequestIDFromContext returns the request id in ctx, or "".
func RequestIDFromContext(ctx context.Context) string {
	s, _ := ctx.Value(requestIDKey{}).(string)
	return s
}
