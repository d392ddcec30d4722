package cli

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/mod/sumdb/tlog"

	"github.com/keyward/keyward"
	"github.com/keyward/keyward/api"
	"github.com/keyward/keyward/audit"
	"github.com/keyward/keyward/keys"
)

func auditCmd(e *env) *cobra.Command {
	c := &cobra.Command{Use: "audit", Short: "Read, verify and export the tamper-evident audit log"}
	c.AddCommand(auditListCmd(e), auditVerifyCmd(e), auditExportCmd(e))
	return c
}

func auditListCmd(e *env) *cobra.Command {
	var target, action, since string
	var after int64
	var limit int
	c := &cobra.Command{
		Use: "list", Short: "List audit entries", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			q := url.Values{}
			if target != "" {
				q.Set("target", target)
			}
			if action != "" {
				q.Set("action", action)
			}
			if since != "" {
				t, err := parseTime(since)
				if err != nil {
					return usageError(err)
				}
				q.Set("since", t.Format(time.RFC3339Nano))
			}
			if after > 0 {
				q.Set("after", fmt.Sprint(after))
			}
			if limit != 0 {
				q.Set("limit", fmt.Sprint(limit))
			}
			var page api.AuditPage
			if err := e.client().do(e.ctx, "GET", "/v1/audit?"+q.Encode(), nil, &page); err != nil {
				return err
			}
			es := make([]*keyward.AuditEntry, 0, len(page.Entries))
			for _, raw := range page.Entries {
				a, err := audit.Decode(raw)
				if err != nil {
					return fmt.Errorf("server sent a malformed entry: %w", err)
				}
				es = append(es, a)
			}
			return e.print(page, func(w io.Writer) {
				fmt.Fprintln(w, "SEQ\tTIME\tACTOR\tACTION\tTARGET\tCHANGE\tREASON")
				for _, a := range es {
					change := a.After
					if a.Before != "" {
						change = a.Before + "→" + a.After
					}
					actor := a.ActorName
					if actor == "" {
						actor = a.Actor
					}
					fmt.Fprintf(w, "%d\t%s\t%s\t%s\t%s %s\t%s\t%s\n", a.Seq, a.Time.Format(time.RFC3339), actor, a.Action, a.TargetType, a.TargetID, change, a.Reason)
				}
				if page.Next != 0 {
					fmt.Fprintf(w, "\nmore: --after %d\n", page.Next)
				}
			})
		},
	}
	f := c.Flags()
	f.StringVar(&target, "target", "", "only entries about this target id")
	f.StringVar(&action, "action", "", "only this action (e.g. license.revoke)")
	f.StringVar(&since, "since", "", "only entries at or after this time (2027-01-01 or RFC 3339)")
	f.Int64Var(&after, "after", 0, "page: only entries after this seq")
	f.IntVar(&limit, "limit", 0, "page size (1-1000, default 100)")
	return c
}

// VerifyResult is what `keyward audit verify` reports.
type VerifyResult struct {
	Verified       bool   `json:"verified"`
	Origin         string `json:"origin,omitempty"`
	Size           int64  `json:"size,omitempty"` // entries the latest checkpoint covers
	Root           string `json:"root,omitempty"`
	KID            string `json:"kid,omitempty"`
	ConsistentWith int64  `json:"consistent_with,omitempty"` // size of the saved checkpoint checked
	Pending        int64  `json:"pending,omitempty"`         // entries after the checkpoint, not yet covered
	SavedTo        string `json:"saved_to,omitempty"`
	FirstBadSeq    int64  `json:"first_bad_seq,omitempty"`
	Error          string `json:"error,omitempty"`
}

func auditVerifyCmd(e *env) *cobra.Command {
	var checkpointFile, saveFile, jwksFile, origin string
	c := &cobra.Command{
		Use:   "verify [--checkpoint FILE] [--save FILE]",
		Short: "Recompute the audit log's Merkle tree and check it against the signed checkpoints",
		Long: `Downloads every entry the server's latest checkpoint covers, recomputes the
RFC 6962 tree, and checks the checkpoint's signature against the registry keys
of the JWKS (the server's /.well-known/jwks.json, or --jwks FILE to pin them).
With --checkpoint FILE (a checkpoint saved earlier, e.g. with --save), it also
checks that the log still contains what that checkpoint signed, so a rewrite
of history since the save is caught. On a mismatch it names the first bad
entry and exits 1. --save FILE writes the verified latest checkpoint.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			res, err := verifyAudit(e, checkpointFile, saveFile, jwksFile, origin)
			if err == nil {
				return e.print(res, func(w io.Writer) {
					fmt.Fprintf(w, "verified:\t%d entries match the checkpoint of %s\n", res.Size, res.Origin)
					fmt.Fprintf(w, "root:\t%s\nsigned by:\t%s\n", res.Root, res.KID)
					if res.ConsistentWith > 0 {
						fmt.Fprintf(w, "consistent with:\tthe saved checkpoint of %d entries\n", res.ConsistentWith)
					}
					if res.Pending > 0 {
						fmt.Fprintf(w, "pending:\t%d newer entries are not checkpointed yet\n", res.Pending)
					}
					if res.SavedTo != "" {
						fmt.Fprintf(w, "saved:\t%s\n", res.SavedTo)
					}
				})
			}
			var bad *audit.BadEntryError
			var ae *apiError
			if e.output != "json" || errors.As(err, &ae) || errors.As(err, new(usageErr)) {
				return err
			}
			res.Error = err.Error()
			if errors.As(err, &bad) {
				res.FirstBadSeq = bad.Seq
			}
			if perr := e.print(res, nil); perr != nil {
				return perr
			}
			fmt.Fprintf(e.stderr, "keyward: %v\n", err)
			return errSilent{code: 1}
		},
	}
	f := c.Flags()
	f.StringVar(&checkpointFile, "checkpoint", "", "a checkpoint saved earlier: the log must still contain what it signed")
	f.StringVar(&saveFile, "save", "", "write the verified latest checkpoint to FILE (may be the --checkpoint file)")
	f.StringVar(&jwksFile, "jwks", "", "trust the registry keys of this JWKS file instead of the server's")
	f.StringVar(&origin, "origin", "", "require this checkpoint origin (default: the server's)")
	return c
}

func verifyAudit(e *env, checkpointFile, saveFile, jwksFile, origin string) (VerifyResult, error) {
	var res VerifyResult
	var saved []byte
	if checkpointFile != "" {
		b, err := readSmallFile(checkpointFile)
		if err != nil {
			return res, fmt.Errorf("saved checkpoint: %w", err)
		}
		saved = b
	}
	cl := e.client()
	set, err := loadJWKS(e.ctx, cl, jwksFile)
	if err != nil {
		return res, err
	}
	msg, err := cl.getRaw(e.ctx, "/v1/audit/checkpoint")
	if err != nil {
		return res, err
	}
	latest, err := audit.VerifyCheckpoint(msg, set, origin)
	if err != nil {
		return res, fmt.Errorf("the server's latest checkpoint: %w", err)
	}
	res.Origin, res.Size, res.Root, res.KID = latest.Origin, latest.Size, base64.StdEncoding.EncodeToString(latest.Root[:]), latest.KID
	trusted := []audit.Checkpoint{latest}
	var old audit.Checkpoint
	if saved != nil {
		if old, err = audit.VerifyCheckpoint(saved, set, latest.Origin); err != nil {
			return res, fmt.Errorf("saved checkpoint %s: %w", checkpointFile, err)
		}
		if old.Size > 0 {
			trusted = append(trusted, old)
		}
	}
	src := &httpSource{c: cl}
	if _, err := audit.VerifyLog(e.ctx, src, trusted, e.progress("verified")); err != nil {
		return res, err
	}
	if saved != nil {
		if old.Size > latest.Size {
			return res, fmt.Errorf("the server's latest checkpoint covers %d entries, fewer than the %d of the saved checkpoint: the server's checkpoints were rolled back", latest.Size, old.Size)
		}
		// The entries already prove both roots; the server's own proof
		// must agree, so that its proofs can be trusted by others.
		if old.Size > 0 && old.Size < latest.Size {
			p, err := src.ConsistencyProof(e.ctx, old.Size, latest.Size)
			if err == nil {
				err = tlog.CheckTree(p, latest.Size, latest.Root, old.Size, old.Root)
			}
			if err != nil {
				return res, fmt.Errorf("the server cannot prove checkpoint %d consistent with checkpoint %d (its tree hashes are damaged): %w", latest.Size, old.Size, err)
			}
		}
		res.ConsistentWith = old.Size
	}
	var head api.AuditRange
	if err := cl.do(e.ctx, "GET", fmt.Sprintf("/v1/audit/entries?from=%d&to=%d", latest.Size+1, latest.Size+1), nil, &head); err == nil && head.LogSize > latest.Size {
		res.Pending = head.LogSize - latest.Size
	}
	if saveFile != "" {
		if err := os.WriteFile(saveFile, msg, 0o644); err != nil {
			return res, fmt.Errorf("save checkpoint: %w", err)
		}
		res.SavedTo = saveFile
	}
	res.Verified = true
	return res, nil
}

// loadJWKS reads a JWKS file, or fetches the server's.
func loadJWKS(ctx context.Context, cl *client, file string) (keys.JWKS, error) {
	var set keys.JWKS
	var data []byte
	var err error
	if file != "" {
		data, err = readSmallFile(file)
	} else {
		data, err = cl.getRaw(ctx, "/.well-known/jwks.json")
	}
	if err != nil {
		return set, fmt.Errorf("jwks: %w", err)
	}
	if err := json.Unmarshal(data, &set); err != nil {
		return set, fmt.Errorf("jwks: %w", err)
	}
	return set, nil
}

// httpSource reads the audit log from the server (audit.Source).
type httpSource struct{ c *client }

func (s *httpSource) Entries(ctx context.Context, from, to int64) ([][]byte, error) {
	var page api.AuditRange
	if err := s.c.do(ctx, "GET", fmt.Sprintf("/v1/audit/entries?from=%d&to=%d", from, to), nil, &page); err != nil {
		return nil, err
	}
	out := make([][]byte, len(page.Entries))
	for i, raw := range page.Entries {
		out[i] = raw
	}
	return out, nil
}

func (s *httpSource) ConsistencyProof(ctx context.Context, oldSize, newSize int64) (tlog.TreeProof, error) {
	var p api.ConsistencyProof
	if err := s.c.do(ctx, "GET", fmt.Sprintf("/v1/audit/proof/consistency?old=%d&new=%d", oldSize, newSize), nil, &p); err != nil {
		return nil, err
	}
	if p.Old != oldSize || p.New != newSize {
		return nil, fmt.Errorf("server answered a proof for %d..%d, asked %d..%d", p.Old, p.New, oldSize, newSize)
	}
	return p.Proof, nil
}

func auditExportCmd(e *env) *cobra.Command {
	var format, out, checkpointOut string
	var from int64
	c := &cobra.Command{
		Use:   "export --format jsonl [--out FILE]",
		Short: "Export audit entries as JSON lines (one canonical entry per line), e.g. for a SIEM",
		Long: `Writes every audit entry (from --from on) as one line of JSON in its canonical
encoding, so SHA-256(0x00 ‖ line) is the entry's Merkle leaf hash and the file
can be verified offline against a checkpoint (docs/audit.md). Entries appended
during the export are left for the next one. Progress goes to stderr.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if format != "jsonl" {
				return usageError(fmt.Errorf("format %q: only jsonl is supported", format))
			}
			if from < 1 {
				return usageError(fmt.Errorf("--from %d: want 1 or more", from))
			}
			cl := e.client()
			var note []byte
			if checkpointOut != "" {
				var err error
				if note, err = cl.getRaw(e.ctx, "/v1/audit/checkpoint"); err != nil {
					return err
				}
			}
			w := e.stdout
			var f *os.File
			if out != "" {
				var err error
				if f, err = os.OpenFile(out, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600); err != nil {
					return err
				}
				defer f.Close()
				w = f
			}
			n, last, err := exportAudit(e.ctx, cl, w, from, e.progress("exported"))
			if err != nil {
				return err
			}
			if f != nil {
				if err := f.Close(); err != nil {
					return err
				}
			}
			if checkpointOut != "" {
				if err := os.WriteFile(checkpointOut, note, 0o644); err != nil {
					return err
				}
			}
			if out == "" {
				return nil // stdout holds the data
			}
			return e.print(map[string]any{"file": out, "entries": n, "last_seq": last, "checkpoint": checkpointOut}, func(w io.Writer) {
				fmt.Fprintf(w, "exported %d entries (to seq %d) to %s\n", n, last, out)
				if checkpointOut != "" {
					fmt.Fprintf(w, "checkpoint written to %s\n", checkpointOut)
				}
			})
		},
	}
	f := c.Flags()
	f.StringVar(&format, "format", "jsonl", "output format: jsonl")
	f.StringVar(&out, "out", "", "write to FILE (mode 0600) instead of stdout")
	f.Int64Var(&from, "from", 1, "first seq to export")
	f.StringVar(&checkpointOut, "checkpoint", "", "also write the latest checkpoint to FILE (fetched first, so the export covers it)")
	return c
}

// exportAudit writes the entries from seq from up to the log's size when
// the export started, one per line, and returns how many and the last seq.
func exportAudit(ctx context.Context, cl *client, w io.Writer, from int64, progress audit.Progress) (int64, int64, error) {
	var n, last, end int64
	for first := true; first || from <= end; first = false {
		var page api.AuditRange
		path := fmt.Sprintf("/v1/audit/entries?from=%d", from)
		if !first {
			path += fmt.Sprintf("&to=%d", end)
		}
		if err := cl.do(ctx, "GET", path, nil, &page); err != nil {
			return n, last, err
		}
		if first {
			end = page.LogSize
		}
		for _, raw := range page.Entries {
			if _, err := w.Write(append(raw, '\n')); err != nil {
				return n, last, fmt.Errorf("write: %w", err)
			}
			n++
		}
		if page.To < from {
			break // past the end
		}
		last, from = page.To, page.To+1
		if progress != nil {
			progress(last, end)
		}
	}
	return n, last, nil
}

// progress returns a Progress that reports on stderr: updated in place on
// a terminal, else a line every 10000 entries and at the end.
func (e *env) progress(verb string) audit.Progress {
	tty := isTerminal(e.stderr)
	var lastLine int64
	return func(done, total int64) {
		switch {
		case tty:
			fmt.Fprintf(e.stderr, "\r%s %d/%d entries", verb, done, total)
			if done >= total {
				fmt.Fprintln(e.stderr)
			}
		case done-lastLine >= 10000 || (done >= total && lastLine > 0):
			fmt.Fprintf(e.stderr, "%s %d/%d entries\n", verb, done, total)
			lastLine = done
		}
	}
}

// isTerminal reports whether w is a character device (a terminal).
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

// getRaw GETs path and returns the body; a problem answer is an *apiError.
func (c *client) getRaw(ctx context.Context, path string) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, "GET", c.base+path, nil)
	if err != nil {
		return nil, fmt.Errorf("bad server address %q: %w", c.base, err)
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, fmt.Errorf("cannot reach keyward server at %s (set --server or KEYWARD_ADDR): %w", c.base, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxFile))
	if err != nil {
		return nil, fmt.Errorf("read response: %w", err)
	}
	if resp.StatusCode >= 300 {
		var p apiError
		if json.Unmarshal(data, &p) != nil || p.Code == "" {
			return nil, fmt.Errorf("server answered %s", resp.Status)
		}
		return nil, &p
	}
	if strings.HasPrefix(resp.Header.Get("Content-Type"), "application/problem+json") {
		return nil, fmt.Errorf("server answered a problem with status %s", resp.Status)
	}
	return data, nil
}
