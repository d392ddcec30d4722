package api

import (
	"bufio"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/keyward/keyward"
	"github.com/keyward/keyward/revocation"
)

// streamWriteTimeout bounds one write to a revocation stream: a subscriber
// that does not read for this long is dropped (it resumes with
// Last-Event-ID, replayed from the registry).
const streamWriteTimeout = 10 * time.Second

// revocationRoutes are the routes of the revocation registry. Both are
// public (spec section 4): what they serve is signed by the registry key.
func (s *Server) revocationRoutes() []route {
	return []route{
		{"GET", "/v1/revocations", "", "Signed revocation snapshot (?product=), or a signed delta with ?since=SEQ", s.revocations},
		{"GET", "/v1/revocations/stream", "", "Revocation changes as Server-Sent Events, each a signed delta; resumes from Last-Event-ID", s.revocationStream},
	}
}

func (s *Server) registry() (*revocation.Registry, error) {
	if s.revoc == nil {
		return nil, keyward.Errorf(keyward.EUnavailable, "the revocation registry is not running on this server")
	}
	return s.revoc, nil
}

// parseSeq reads a registry seq: decimal digits only, at most 18 of them.
func parseSeq(what, v string) (int64, error) {
	if v == "" || len(v) > 18 || strings.TrimLeft(v, "0123456789") != "" {
		return 0, keyward.Errorf(keyward.EInvalid, "%s %q: want a registry seq (a non-negative integer)", what, v)
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil {
		return 0, keyward.Errorf(keyward.EInvalid, "%s %q: want a registry seq (a non-negative integer)", what, v)
	}
	return n, nil
}

// revocationQuery checks the query string: only product and since, once each.
func revocationQuery(r *http.Request, allowed ...string) error {
	for name, vs := range r.URL.Query() {
		ok := false
		for _, a := range allowed {
			ok = ok || name == a
		}
		if !ok {
			return keyward.Errorf(keyward.EInvalid, "unknown query parameter %q (allowed: %s)", name, strings.Join(allowed, ", "))
		}
		if len(vs) != 1 {
			return keyward.Errorf(keyward.EInvalid, "query parameter %q given %d times", name, len(vs))
		}
	}
	return nil
}

func (s *Server) revocations(w http.ResponseWriter, r *http.Request) error {
	reg, err := s.registry()
	if err != nil {
		return err
	}
	if err := revocationQuery(r, "product", "since"); err != nil {
		return err
	}
	q := r.URL.Query()
	v, err := reg.ResolveView(r.Context(), q.Get("product"))
	if err != nil {
		return err
	}
	var doc *revocation.Document
	if q.Has("since") {
		since, err := parseSeq("since", q.Get("since"))
		if err != nil {
			return err
		}
		doc, err = reg.Delta(r.Context(), v, since)
		if err != nil {
			return err
		}
	} else if doc, err = reg.Snapshot(r.Context(), v); err != nil {
		return err
	}
	h := w.Header()
	h.Set("ETag", doc.ETag)
	h.Set("Cache-Control", "no-cache")
	h.Set("Vary", "Accept-Encoding")
	h.Set("Last-Modified", doc.IssuedAt.Format(http.TimeFormat))
	if etagMatches(r.Header.Get("If-None-Match"), doc.ETag) {
		w.WriteHeader(http.StatusNotModified)
		return nil
	}
	body := []byte(doc.Token)
	if len(body) > 1024 && acceptsGzip(r.Header.Get("Accept-Encoding")) {
		body = doc.Gzip()
		h.Set("Content-Encoding", "gzip")
	}
	h.Set("Content-Type", revocation.MediaType)
	h.Set("Content-Length", strconv.Itoa(len(body)))
	// A large snapshot to a slow client may need longer than the server's
	// write timeout: allow 30s plus one second per 512 KiB.
	_ = http.NewResponseController(w).SetWriteDeadline(time.Now().Add(30*time.Second + time.Duration(len(body)>>19)*time.Second))
	w.WriteHeader(http.StatusOK)
	if r.Method == http.MethodHead {
		return nil
	}
	// A write error means the client went away after the status was sent:
	// there is nothing more to tell it.
	_, _ = w.Write(body)
	return nil
}

// etagMatches implements If-None-Match's weak comparison (RFC 9110 13.1.2).
func etagMatches(header, etag string) bool {
	if header == "" {
		return false
	}
	want := strings.TrimPrefix(etag, "W/")
	for _, t := range strings.Split(header, ",") {
		t = strings.TrimSpace(t)
		if t == "*" || strings.TrimPrefix(t, "W/") == want {
			return true
		}
	}
	return false
}

// acceptsGzip reports whether an Accept-Encoding header allows gzip.
func acceptsGzip(header string) bool {
	for _, part := range strings.Split(header, ",") {
		name, params, _ := strings.Cut(strings.TrimSpace(part), ";")
		if !strings.EqualFold(strings.TrimSpace(name), "gzip") {
			continue
		}
		q := strings.ReplaceAll(strings.TrimSpace(params), " ", "")
		return q != "q=0" && q != "q=0.0" && q != "q=0.00" && q != "q=0.000"
	}
	return false
}

// revocationStream serves GET /v1/revocations/stream: Server-Sent Events,
// one event per registry change (a burst may share one event), each
//
//	id: <to_seq>
//	event: revocation
//	data: <a signed delta, JWS compact>
//
// and a comment line every heartbeat interval. The stream starts after
// Last-Event-ID, else ?since=, else at the view's current seq.
func (s *Server) revocationStream(w http.ResponseWriter, r *http.Request) error {
	reg, err := s.registry()
	if err != nil {
		return err
	}
	if err := revocationQuery(r, "product", "since"); err != nil {
		return err
	}
	q := r.URL.Query()
	v, err := reg.ResolveView(r.Context(), q.Get("product"))
	if err != nil {
		return err
	}
	after := int64(-1)
	if id := r.Header.Get("Last-Event-ID"); id != "" {
		if after, err = parseSeq("Last-Event-ID", id); err != nil {
			return err
		}
	} else if q.Has("since") {
		if after, err = parseSeq("since", q.Get("since")); err != nil {
			return err
		}
	}
	sub, err := reg.Subscribe(r.Context(), v, after)
	if err != nil {
		return err
	}
	defer sub.Close()

	// The server's read and write timeouts would end the stream: clear
	// them, and bound each write instead.
	rc := http.NewResponseController(w)
	if err := rc.SetReadDeadline(time.Time{}); err != nil {
		s.log.Warn("revocation stream: cannot clear the read deadline", "err", err)
	}
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	bw := bufio.NewWriterSize(w, 16<<10)
	send := func() error {
		if err := rc.SetWriteDeadline(time.Now().Add(streamWriteTimeout)); err != nil && !errors.Is(err, http.ErrNotSupported) {
			return err
		}
		if err := bw.Flush(); err != nil {
			return err
		}
		return rc.Flush()
	}
	bw.WriteString("retry: 2000\n: keyward revocations from seq " + strconv.FormatInt(sub.Seq(), 10) + "\n\n")
	if err := send(); err != nil {
		return nil
	}
	hb := time.NewTicker(reg.Heartbeat())
	defer hb.Stop()
	ctx := r.Context()
	for {
		ready := sub.Ready()
		for n := 0; ; n++ {
			ev, ok, err := sub.Next(ctx)
			if err != nil {
				if ctx.Err() == nil {
					s.log.Warn("revocation stream: next event", "err", err)
				}
				return nil // the client resumes from its Last-Event-ID
			}
			if !ok {
				break
			}
			bw.WriteString("id: " + strconv.FormatInt(ev.ID, 10) + "\nevent: revocation\ndata: " + ev.Token + "\n\n")
			if n%16 == 15 {
				if err := send(); err != nil {
					return nil
				}
			}
		}
		if bw.Buffered() > 0 {
			if err := send(); err != nil {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-sub.Done():
			return nil
		case <-ready:
		case <-hb.C:
			bw.WriteString(": heartbeat\n\n")
			if err := send(); err != nil {
				return nil
			}
		}
	}
}
