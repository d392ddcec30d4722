package store

import (
	"strings"
	"time"

	"github.com/keyward/keyward"
)

// Step is one lifecycle step that ran: its deterministic key (for example
// "activate:<kid>" or "expire:<license id>"), what kind of step it was,
// what it acted on, and when. The authority records a step in the same
// transaction as the step's effect, so a step that committed is never run
// again and one that was rolled back runs again.
type Step struct {
	Key    string // unique; at most 200 characters
	Kind   string // "rotate", "activate", "destroy", "destroy-request", "expire", …
	Target string // kid, license id or ring
	DoneAt time.Time
}

// Certificate is the current license certificate of a license: the last
// one checked out or re-signed for it. Token is the JWS exactly as issued.
type Certificate struct {
	LicenseID string
	ProductID string
	KID       string // key that signed Token
	JTI       string
	IssuedAt  time.Time
	ExpiresAt time.Time
	Token     string
}

// CertificateFilter selects current certificates, ordered by license id.
// Zero fields match everything.
type CertificateFilter struct {
	KID          string
	LiveAt       time.Time // only certificates with ExpiresAt after this time
	ActiveOnly   bool      // only certificates of licenses in state active
	AfterLicense string    // id cursor: only licenses with a greater id
	Limit        int       // 0 = no limit
}

// ResignCandidate is a current certificate a re-sign batch looks at, with
// whether it may be re-signed: its license is active and not past its
// expiry.
type ResignCandidate struct {
	Certificate
	Eligible bool
}

// ResignJob states.
const (
	ResignRunning   = "running"   // batches remain
	ResignDone      = "done"      // every live certificate of an active license was re-signed or skipped
	ResignCancelled = "cancelled" // the key became active again (rollback)
)

// ResignJob re-signs, in batches, the current certificates signed by one
// key that no longer signs (retired or compromised) with its ring's active
// key. There is at most one job per key; a job that ended can be started
// again (Runs counts how often) when certificates still depend on the key.
type ResignJob struct {
	KID        string
	ProductID  string
	Reason     string // "retired" or "compromised"
	State      string // ResignRunning, ResignDone, ResignCancelled
	Runs       int    // 1 for the first run
	Total      int    // live certificates of active licenses when the run started
	Done       int    // re-signed in this run
	Skipped    int    // found but not re-signed in this run (license no longer active)
	Cursor     string // the last license id handled in this run
	CreatedAt  time.Time
	UpdatedAt  time.Time
	FinishedAt *time.Time
}

// LifecycleTx is the part of Tx for lifecycle automation: the record of
// steps that ran, the current certificate of each license, re-sign jobs
// and the scheduler's named cursors.
type LifecycleTx interface {
	// RecordStep stores s; EConflict if a step with its key exists.
	RecordStep(s *Step) error
	// Step returns the step with key, or ENotFound.
	Step(key string) (*Step, error)
	// Steps returns up to limit (0 = all) steps of kind ("" = every
	// kind) whose target is target ("" = any), ordered by DoneAt then key.
	Steps(kind, target string, limit int) ([]*Step, error)

	// PutCertificates stores each certificate as its license's current
	// one, replacing the previous. ENotFound if a license is missing.
	PutCertificates(cs []*Certificate) error
	// ResignCertificates stores re-signed certificates as their licenses'
	// current ones, writing only the new kid and the token's header and
	// signature segments (Token's first and last): each c MUST be its
	// license's current certificate with the same payload segment, jti and
	// times, signed again (keys.ResignJWS). ENotFound if a license has no
	// certificate; EInvalid, writing nothing, if a Token is not a JWS. On
	// an error the caller MUST abandon the transaction.
	ResignCertificates(cs []*Certificate) error
	// Certificate returns a license's current certificate, or ENotFound.
	Certificate(licenseID string) (*Certificate, error)
	// Certificates returns the current certificates matching f.
	Certificates(f CertificateFilter) ([]*Certificate, error)
	// CountCertificates returns how many current certificates match f
	// (AfterLicense and Limit are ignored).
	CountCertificates(f CertificateFilter) (int, error)
	// ResignCandidates returns up to limit (> 0) current certificates
	// signed by kid that expire after now, of licenses whose id is
	// greater than after, ordered by license id; each is Eligible if its
	// license is active and not expired at now. One query: what a re-sign
	// batch reads.
	ResignCandidates(kid string, now time.Time, after string, limit int) ([]*ResignCandidate, error)

	// PutResignJob creates or replaces the job of j.KID. EInvalid for an
	// unknown state.
	PutResignJob(j *ResignJob) error
	// ResignJob returns the job of kid, or ENotFound.
	ResignJob(kid string) (*ResignJob, error)
	// ResignJobs returns the jobs in state ("" = every state), ordered by
	// creation time then kid.
	ResignJobs(state string) ([]*ResignJob, error)

	// Cursor returns the value of a named cursor, "" if it was never set.
	Cursor(name string) (string, error)
	// SetCursor stores a named cursor's value.
	SetCursor(name, value string) error

	// LicensesByID returns the licenses with the given ids that exist,
	// ordered by id.
	LicensesByID(ids []string) ([]*keyward.License, error)
	// LicensesExpiringBefore returns up to limit licenses in state active
	// with an expiry before t, ordered by id, after the id cursor after.
	LicensesExpiringBefore(t time.Time, after string, limit int) ([]*keyward.License, error)
}

// JWSEnds returns the header and signature segments of a compact JWS
// token: what a re-sign changes (ResignCertificates stores them apart
// from the checked-out token, whose payload segment it keeps).
func JWSEnds(token string) (header, signature string, ok bool) {
	i, j, ok := jwsDots(token)
	if !ok {
		return "", "", false
	}
	return token[:i], token[j+1:], true
}

// ResignedToken is the checked-out token with its header and signature
// segments replaced by a re-sign's; token itself if it is not a JWS.
func ResignedToken(token, header, signature string) string {
	i, j, ok := jwsDots(token)
	if !ok {
		return token
	}
	return header + token[i:j+1] + signature
}

// jwsDots returns the indexes of the first and last dots of a compact JWS.
func jwsDots(token string) (first, last int, ok bool) {
	first, last = strings.IndexByte(token, '.'), strings.LastIndexByte(token, '.')
	return first, last, first >= 0 && last > first
}
