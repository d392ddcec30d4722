package api

import (
	"encoding/json"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"golang.org/x/mod/sumdb/tlog"

	"github.com/keyward/keyward"
	"github.com/keyward/keyward/audit"
	"github.com/keyward/keyward/authority"
	"github.com/keyward/keyward/store"
)

// auditRoutes are the routes of the audit feature: the tamper-evident log
// (docs/audit.md).
func (s *Server) auditRoutes() []route {
	p := authority.PermAuditRead
	return []route{
		{"GET", "/v1/audit", p, "List audit entries (filters: target, action, since)", s.serverWide(s.listAudit)},
		{"GET", "/v1/audit/entries", p, "Audit entries from..to in canonical form, to recompute the Merkle tree", s.serverWide(s.auditEntries)},
		{"GET", "/v1/audit/checkpoint", p, "The latest signed audit checkpoint (C2SP tlog-checkpoint note)", s.serverWide(s.auditCheckpoint)},
		{"GET", "/v1/audit/proof/inclusion", p, "RFC 6962 inclusion proof of an audit entry", s.serverWide(s.inclusionProof)},
		{"GET", "/v1/audit/proof/consistency", p, "RFC 6962 consistency proof between two tree sizes", s.serverWide(s.consistencyProof)},
	}
}

// AuditPage is a page of audit entries, each in its canonical encoding
// (docs/audit.md): hashing an entry's bytes as they appear here gives its
// Merkle leaf.
type AuditPage struct {
	Entries []json.RawMessage `json:"entries"`
	// Next is the seq to pass as after for the next page, if there may be one.
	Next int64 `json:"next,omitempty"`
}

// AuditRange is the answer of GET /v1/audit/entries.
type AuditRange struct {
	From     int64             `json:"from"`
	To       int64             `json:"to"`        // the last seq answered for (bounded by the log and the page size); less than from when past the end
	LogSize  int64             `json:"log_size"`  // entries in the log now (the largest seq)
	Entries  []json.RawMessage `json:"entries"`   // canonical encodings, seq order
	PageSize int               `json:"page_size"` // the most entries one answer holds
}

// InclusionProof is the answer of GET /v1/audit/proof/inclusion.
type InclusionProof struct {
	Seq      int64       `json:"seq"`
	Size     int64       `json:"size"`
	LeafHash tlog.Hash   `json:"leaf_hash"` // base64 SHA-256(0x00 ‖ canonical entry)
	Proof    []tlog.Hash `json:"proof"`     // RFC 6962 audit path, base64 hashes
}

// ConsistencyProof is the answer of GET /v1/audit/proof/consistency.
type ConsistencyProof struct {
	Old   int64       `json:"old"`
	New   int64       `json:"new"`
	Proof []tlog.Hash `json:"proof"` // RFC 6962 consistency proof, base64 hashes
}

// serverWide refuses product-scoped principals: the audit log is one for
// the whole server and would show them other products.
func (s *Server) serverWide(h func(http.ResponseWriter, *http.Request) error) func(http.ResponseWriter, *http.Request) error {
	return func(w http.ResponseWriter, r *http.Request) error {
		if p := keyward.PrincipalFromContext(r.Context()); p.ProductID != "" {
			return keyward.Errorf(keyward.EForbidden, "the audit log covers every product: a token limited to one product cannot read it")
		}
		return h(w, r)
	}
}

// intParam reads query parameter name as an integer >= minimum; absent is def.
func intParam(q url.Values, name string, def, minimum int64) (int64, error) {
	v := q.Get(name)
	if v == "" {
		return def, nil
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n < minimum {
		return 0, keyward.Errorf(keyward.EInvalid, "query parameter %s: want an integer >= %d, got %q", name, minimum, v)
	}
	return n, nil
}

// encodeEntries returns the canonical encodings of es.
func encodeEntries(es []*keyward.AuditEntry) ([]json.RawMessage, error) {
	out := make([]json.RawMessage, 0, len(es))
	for _, e := range es {
		b, err := audit.Encode(e)
		if err != nil {
			return nil, err
		}
		out = append(out, b)
	}
	return out, nil
}

func (s *Server) listAudit(w http.ResponseWriter, r *http.Request) error {
	q := r.URL.Query()
	f := store.AuditFilter{TargetID: q.Get("target"), Action: q.Get("action"), Limit: 100}
	if v := q.Get("since"); v != "" {
		t, err := time.Parse(time.RFC3339Nano, v)
		if err != nil {
			return keyward.Errorf(keyward.EInvalid, "query parameter since: want an RFC 3339 time, got %q", v)
		}
		f.Since = t
	}
	after, err := intParam(q, "after", 0, 0)
	if err != nil {
		return err
	}
	f.AfterSeq = after
	limit, err := intParam(q, "limit", 100, 1)
	if err != nil {
		return err
	}
	if limit > authority.MaxAuditPage {
		return keyward.Errorf(keyward.EInvalid, "query parameter limit: want 1 to %d, got %d", authority.MaxAuditPage, limit)
	}
	f.Limit = int(limit)
	es, err := s.auth.AuditEntries(r.Context(), f)
	if err != nil {
		return err
	}
	page := AuditPage{}
	if page.Entries, err = encodeEntries(es); err != nil {
		return err
	}
	if len(es) == f.Limit {
		page.Next = es[len(es)-1].Seq
	}
	return writeJSON(w, http.StatusOK, page)
}

func (s *Server) auditEntries(w http.ResponseWriter, r *http.Request) error {
	q := r.URL.Query()
	from, err := intParam(q, "from", 1, 1)
	if err != nil {
		return err
	}
	to, err := intParam(q, "to", 0, 1)
	if err != nil {
		return err
	}
	if to != 0 && to < from {
		return keyward.Errorf(keyward.EInvalid, "query parameter to (%d) must not be less than from (%d)", to, from)
	}
	es, last, size, err := s.auth.AuditRange(r.Context(), from, to)
	if err != nil {
		return err
	}
	out := AuditRange{From: from, To: last, LogSize: size, PageSize: authority.MaxAuditPage}
	if out.Entries, err = encodeEntries(es); err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, out)
}

func (s *Server) auditCheckpoint(w http.ResponseWriter, r *http.Request) error {
	size, err := intParam(r.URL.Query(), "size", 0, 1)
	if err != nil {
		return err
	}
	c, err := s.auth.Checkpoint(r.Context(), size)
	if err != nil {
		return err
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-cache")
	w.Header().Set("Keyward-Checkpoint-Kid", c.KID)
	w.WriteHeader(http.StatusOK)
	_, err = w.Write(c.Note)
	return err
}

func (s *Server) inclusionProof(w http.ResponseWriter, r *http.Request) error {
	q := r.URL.Query()
	if q.Get("seq") == "" {
		return keyward.Errorf(keyward.EInvalid, "query parameter seq is required")
	}
	seq, err := intParam(q, "seq", 0, 1)
	if err != nil {
		return err
	}
	size, err := intParam(q, "size", 0, 1)
	if err != nil {
		return err
	}
	size, leaf, proof, err := s.auth.InclusionProof(r.Context(), seq, size)
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, InclusionProof{Seq: seq, Size: size, LeafHash: leaf, Proof: nonNilHashes(proof)})
}

func (s *Server) consistencyProof(w http.ResponseWriter, r *http.Request) error {
	q := r.URL.Query()
	if q.Get("old") == "" {
		return keyward.Errorf(keyward.EInvalid, "query parameter old is required")
	}
	old, err := intParam(q, "old", 0, 1)
	if err != nil {
		return err
	}
	newSize, err := intParam(q, "new", 0, 1)
	if err != nil {
		return err
	}
	newSize, proof, err := s.auth.ConsistencyProof(r.Context(), old, newSize)
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, ConsistencyProof{Old: old, New: newSize, Proof: nonNilHashes(proof)})
}

// nonNilHashes makes an empty proof encode as [], not null.
func nonNilHashes(p []tlog.Hash) []tlog.Hash {
	if p == nil {
		return []tlog.Hash{}
	}
	return p
}
