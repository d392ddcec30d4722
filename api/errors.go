package api

import (
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"

	"github.com/keyward/keyward"
)

// statusOf is the one table from error code to HTTP status.
var statusOf = map[string]int{
	keyward.EInvalid:           http.StatusBadRequest,
	keyward.EMalformed:         http.StatusBadRequest,
	keyward.EInvalidLicenseKey: http.StatusBadRequest,
	keyward.EUnauthenticated:   http.StatusUnauthorized,
	keyward.EForbidden:         http.StatusForbidden,
	keyward.ENotFound:          http.StatusNotFound,
	keyward.EMethodNotAllowed:  http.StatusMethodNotAllowed,
	keyward.EConflict:          http.StatusConflict,
	keyward.EIllegalTransition: http.StatusConflict,
	keyward.EKeyIsActive:       http.StatusConflict,
	keyward.ELicenseInactive:   http.StatusConflict,
	keyward.ETooLarge:          http.StatusRequestEntityTooLarge,
	keyward.EUnsupportedMedia:  http.StatusUnsupportedMediaType,
	keyward.ERateLimited:       http.StatusTooManyRequests,
	keyward.EInternal:          http.StatusInternalServerError,
	keyward.EUnavailable:       http.StatusServiceUnavailable,
	keyward.EDutyConflict:      http.StatusForbidden,
	keyward.EMFARequired:       http.StatusUnauthorized,
	keyward.EMFAInvalid:        http.StatusUnauthorized,
	keyward.EApprovalExpired:   http.StatusConflict,
	keyward.ERollbackClosed:    http.StatusConflict,
}

// Problem is an RFC 9457 problem details document with Keyward's stable code.
type Problem struct {
	Type      string `json:"type"`
	Title     string `json:"title"`
	Status    int    `json:"status"`
	Detail    string `json:"detail"`
	Code      string `json:"code"`
	Instance  string `json:"instance,omitempty"`
	RequestID string `json:"request_id,omitempty"`
	// Errors lists problems with individual fields (e.g. every lint
	// problem of a policy document), each with its path.
	Errors []keyward.FieldError `json:"errors,omitempty"`
}

// writeError renders err as problem+json. The caller sees only the code and
// the caller-safe message; internal causes go to the log.
func (s *Server) writeError(w http.ResponseWriter, r *http.Request, err error) {
	code := keyward.ErrorCode(err)
	status, ok := statusOf[code]
	if !ok {
		status = http.StatusInternalServerError
	}
	msg := keyward.ErrorMessage(err)
	rid := keyward.RequestIDFromContext(r.Context())
	if status >= 500 {
		s.log.Error("request failed", "method", r.Method, "path", r.URL.Path, "request_id", rid, "err", err)
	} else {
		s.log.Debug("request refused", "method", r.Method, "path", r.URL.Path, "request_id", rid, "code", code)
	}
	p := Problem{
		Type:   "https://keyward.dev/problems/" + code,
		Title:  http.StatusText(status),
		Status: status, Detail: msg, Code: code, Instance: r.URL.Path, RequestID: rid,
	}
	var ke *keyward.Error
	if errors.As(err, &ke) && status < 500 {
		p.Errors = ke.Fields
	}
	w.Header().Set("Content-Type", "application/problem+json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(p)
}

var _ slog.LogValuer = (*keyward.Error)(nil)
