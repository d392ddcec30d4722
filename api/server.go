// Package api serves Keyward's HTTP API: JSON over HTTP, bearer tokens,
// RFC 9457 problem details with stable codes, and the OpenAPI 3.1 document
// at /v1/openapi.json, which a test keeps equal to the routes registered.
//
// Every route is declared once in routes(), with the permission it needs;
// handlers decode strictly (unknown fields, trailing data, wrong
// Content-Type and oversized bodies are refused before any work) and call
// the authority.
package api

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/keyward/keyward"
	"github.com/keyward/keyward/authority"
	"github.com/keyward/keyward/revocation"
)

// MaxBodyBytes bounds every request body.
const MaxBodyBytes = 64 << 10

// Server is the HTTP API over an Authority.
type Server struct {
	auth    *authority.Authority
	log     *slog.Logger
	ready   func(context.Context) error
	mux     *http.ServeMux
	table   []route
	metrics *Metrics
	revoc   *revocation.Registry

	ridPrefix string
	reqSeq    atomic.Uint64

	authFailures *failureLimiter // failed authentications per client address (governance.go)

	trustedProxies []netip.Prefix // peers whose X-Forwarded-For is believed (abuse.go)
}

// Config wires a Server.
type Config struct {
	Authority *authority.Authority
	Logger    *slog.Logger
	// Ready reports readiness for /readyz (store reachable, keys loaded).
	Ready func(context.Context) error
	// Metrics is the registry served at /metrics (nil = a new one).
	Metrics *Metrics
	// Revocations serves /v1/revocations and its stream; nil answers them
	// with UNAVAILABLE.
	Revocations *revocation.Registry
	// TrustedProxies are the reverse proxies in front of the server: when
	// a request comes from one, the client address counted by the usage
	// counters is taken from X-Forwarded-For (docs/abuse.md). Empty: the
	// connection's peer, and X-Forwarded-For is ignored.
	TrustedProxies []netip.Prefix
}

// route is one entry of the route table.
type route struct {
	method, path string
	perm         string // "" = public
	summary      string
	handle       func(w http.ResponseWriter, r *http.Request) error
}

// New returns a Server with every route registered.
func New(cfg Config) *Server {
	s := &Server{auth: cfg.Authority, log: cfg.Logger, ready: cfg.Ready, mux: http.NewServeMux(), metrics: cfg.Metrics, revoc: cfg.Revocations, authFailures: newFailureLimiter(),
		trustedProxies: cfg.TrustedProxies}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	if s.metrics == nil {
		s.metrics = NewMetrics()
	}
	s.metrics.Registry.MustRegister(newKeyCollector(s.auth))
	s.metrics.Registry.MustRegister(newAbuseCollector(s.auth))
	s.table = s.routes()
	for _, rt := range s.table {
		s.mux.Handle(rt.method+" "+rt.path, s.metrics.instrument(rt.path, s.wrap(rt)))
	}
	s.mux.HandleFunc("/", s.notFound)
	var b [6]byte
	_, _ = rand.Read(b[:])
	s.ridPrefix = hex.EncodeToString(b[:]) + "-"
	return s
}

// ServeHTTP implements http.Handler.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	rid := r.Header.Get("X-Request-Id")
	if !validRequestID(rid) {
		rid = s.nextRequestID()
	}
	w.Header().Set("X-Request-Id", rid)
	w.Header().Set("X-Content-Type-Options", "nosniff")
	ctx := keyward.NewContextWithRequestID(r.Context(), rid)
	r = r.WithContext(ctx)
	defer func() {
		if v := recover(); v != nil {
			if v == http.ErrAbortHandler {
				panic(v)
			}
			s.writeError(w, r, fmt.Errorf("panic: %v", v))
		}
	}()
	s.mux.ServeHTTP(w, r)
}

// validRequestID accepts a caller's X-Request-Id only if it is short and
// plain, so it cannot inject anything into logs or audit entries.
func validRequestID(id string) bool {
	if id == "" || len(id) > 64 {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_' || c == '.') {
			return false
		}
	}
	return true
}

// nextRequestID returns a process-unique id: a random per-process prefix and
// a counter (no system call per request).
func (s *Server) nextRequestID() string {
	n := s.reqSeq.Add(1)
	return s.ridPrefix + strconv.FormatUint(n, 36)
}

// notFound answers requests no route matched: 405 when the path exists
// with another method, 404 otherwise.
func (s *Server) notFound(w http.ResponseWriter, r *http.Request) {
	if s.pathKnown(r) {
		s.writeError(w, r, keyward.Errorf(keyward.EMethodNotAllowed, "method %s not allowed on %s", r.Method, r.URL.Path))
		return
	}
	s.writeError(w, r, keyward.Errorf(keyward.ENotFound, "no route %s %s", r.Method, r.URL.Path))
}

func (s *Server) pathKnown(r *http.Request) bool {
	for _, m := range []string{"GET", "POST", "DELETE"} {
		if m == r.Method {
			continue
		}
		r2 := r.Clone(r.Context())
		r2.Method = m
		if _, p := s.mux.Handler(r2); p != "" && p != "/" {
			return true
		}
	}
	return false
}

// wrap applies authentication and authorization to a route's handler:
// the route's permission, the token's product scope and the policy's
// second factor (authorize, governance.go).
func (s *Server) wrap(rt route) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if rt.perm != "" {
			var err error
			if r, err = s.authorize(r, rt); err != nil {
				if keyward.ErrorCode(err) == keyward.EUnauthenticated {
					w.Header().Set("WWW-Authenticate", `Bearer realm="keyward"`)
				}
				s.writeError(w, r, err)
				return
			}
		}
		if err := rt.handle(w, r); err != nil {
			s.writeError(w, r, err)
		}
		if s.log.Enabled(r.Context(), slog.LevelDebug) {
			s.log.LogAttrs(r.Context(), slog.LevelDebug, "request", slog.String("method", r.Method), slog.String("route", rt.path),
				slog.String("request_id", keyward.RequestIDFromContext(r.Context())), slog.String("principal", keyward.PrincipalFromContext(r.Context()).ID))
		}
	})
}

func (s *Server) authenticate(r *http.Request) (keyward.Principal, error) {
	h := r.Header.Get("Authorization")
	tok, ok := strings.CutPrefix(h, "Bearer ")
	if !ok || tok == "" {
		return keyward.Principal{}, keyward.Errorf(keyward.EUnauthenticated, "missing bearer token")
	}
	return s.auth.Authenticate(r.Context(), strings.TrimSpace(tok))
}

// decode reads a JSON body into v strictly: application/json only, at most
// MaxBodyBytes, no unknown fields, exactly one value.
func decode(w http.ResponseWriter, r *http.Request, v any) error {
	if err := checkJSONContentType(r); err != nil {
		return err
	}
	r.Body = http.MaxBytesReader(w, r.Body, MaxBodyBytes)
	return decodeBody(r.Body, v)
}

// checkJSONContentType refuses a request body that is not application/json.
func checkJSONContentType(r *http.Request) error {
	ct := r.Header.Get("Content-Type")
	if ct != "application/json" {
		mt, _, err := mime.ParseMediaType(ct)
		if err != nil || mt != "application/json" {
			return keyward.Errorf(keyward.EUnsupportedMedia, "Content-Type must be application/json, got %q", ct)
		}
	}
	return nil
}

// decodeBody decodes exactly one JSON object from body into v, refusing
// unknown fields.
func decodeBody(body io.Reader, v any) error {
	dec := json.NewDecoder(body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return decodeError(err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		if err != nil {
			return decodeError(err)
		}
		return keyward.Errorf(keyward.EMalformed, "body must hold exactly one JSON object")
	}
	return nil
}

func decodeError(err error) error {
	var mbe *http.MaxBytesError
	var se *json.SyntaxError
	var te *json.UnmarshalTypeError
	switch {
	case errors.As(err, &mbe):
		return keyward.Errorf(keyward.ETooLarge, "body exceeds %d bytes", mbe.Limit)
	case errors.As(err, &se):
		return keyward.Errorf(keyward.EMalformed, "malformed JSON at byte %d", se.Offset)
	case errors.As(err, &te):
		return keyward.Errorf(keyward.EMalformed, "field %q: want %s, got JSON %s", te.Field, te.Type, te.Value)
	case errors.Is(err, io.EOF):
		return keyward.Errorf(keyward.EMalformed, "empty body: want a JSON object")
	case errors.Is(err, io.ErrUnexpectedEOF):
		return keyward.Errorf(keyward.EMalformed, "truncated JSON")
	case strings.HasPrefix(err.Error(), "json: unknown field "):
		return keyward.Errorf(keyward.EMalformed, "unknown field %s", strings.TrimPrefix(err.Error(), "json: unknown field "))
	default:
		return keyward.Errorf(keyward.EMalformed, "malformed JSON")
	}
}

// writeJSON writes v with status.
func writeJSON(w http.ResponseWriter, status int, v any) error {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	return json.NewEncoder(w).Encode(v)
}

// NewHTTPServer returns an http.Server for h with Keyward's timeouts.
func NewHTTPServer(addr string, h http.Handler, log *slog.Logger) *http.Server {
	return &http.Server{
		Addr:              addr,
		Handler:           h,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       15 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       120 * time.Second,
		MaxHeaderBytes:    32 << 10,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
}
