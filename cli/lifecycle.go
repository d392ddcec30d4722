package cli

import (
	"errors"
	"fmt"
	"io"
	"net/url"
	"strings"
	"time"

	"github.com/keyward/keyward/api"
	"github.com/spf13/cobra"
)

// lifecycleCmds are the `keyward key` subcommands of lifecycle automation
// (docs/lifecycle.md): schedule, rollback and resign.
func lifecycleCmds(e *env) []*cobra.Command {
	var product string
	schedule := &cobra.Command{
		Use: "schedule [--product P]", Short: "Show what the lifecycle scheduler will do next, and when", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			path := "/v1/schedule"
			if product != "" {
				path = "/v1/products/" + url.PathEscape(product) + "/schedule"
			}
			var s api.Schedule
			if err := e.client().do(e.ctx, "GET", path, nil, &s); err != nil {
				return err
			}
			return e.print(s, func(w io.Writer) { scheduleTable(w, s) })
		},
	}
	schedule.Flags().StringVar(&product, "product", "", "only this product's ring (default: every ring, the registry's included)")

	var rbProduct, justification string
	rollback := &cobra.Command{
		Use:   "rollback --product P --justification TEXT",
		Short: "Undo the last rotation within the overlap window: the previous key signs again, the new one is retired",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			var res api.Rollback
			if err := e.client().do(e.ctx, "POST", "/v1/products/"+url.PathEscape(rbProduct)+"/keys/rollback",
				map[string]string{"justification": justification}, &res); err != nil {
				return err
			}
			return e.print(res, func(w io.Writer) {
				keyTable(w, []api.Key{res.Activated, res.Retired})
				fmt.Fprintf(w, "\n%s signs again; %s is retired (verify-only) and its certificates are re-signed in the background\n", res.Activated.KID, res.Retired.KID)
			})
		},
	}
	rollback.Flags().StringVar(&rbProduct, "product", "", "product whose last rotation to roll back (required)")
	rollback.Flags().StringVar(&justification, "justification", "", "why (required; kept in the audit log)")
	_ = rollback.MarkFlagRequired("product")
	_ = rollback.MarkFlagRequired("justification")

	var watch bool
	resign := &cobra.Command{
		Use: "resign KID [--watch]", Short: "Show the progress of re-signing the certificates a key signed", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if watch {
				return e.followResign(args[0])
			}
			var j api.ResignJob
			if err := e.client().do(e.ctx, "GET", "/v1/keys/"+url.PathEscape(args[0])+"/resign", nil, &j); err != nil {
				return err
			}
			return e.print(j, func(w io.Writer) { resignTable(w, j) })
		},
	}
	resign.Flags().BoolVar(&watch, "watch", false, "follow the job until it ends, with a progress bar on a terminal")
	return []*cobra.Command{schedule, rollback, resign}
}

func scheduleTable(w io.Writer, s api.Schedule) {
	fmt.Fprintf(w, "now: %s\n", s.Now.Format(time.RFC3339))
	for _, r := range s.Rings {
		name := r.Ring
		if r.Product != "" {
			name = r.Product + " (" + r.Ring + ")"
		}
		pol := "built-in policy"
		if r.PolicyVersion > 0 {
			pol = fmt.Sprintf("policy v%d", r.PolicyVersion)
		}
		fmt.Fprintf(w, "\n%s — %s\nactive:\t%s\n", name, pol, r.Active)
		if len(r.Pending) > 0 {
			fmt.Fprintf(w, "pending:\t%s\n", strings.Join(r.Pending, ", "))
		}
		fmt.Fprintln(w, "WHEN\tIN\tSTEP\tKEY\tSTATUS\tRULE")
		for _, st := range r.Steps {
			target := st.Target
			if target == "" {
				target = "(successor)"
			}
			status := st.Status
			if st.ApprovalID != "" {
				status += " " + st.ApprovalID
			}
			if st.ExceptionID != "" && st.HeldUntil != nil {
				status += " " + st.ExceptionID + " until " + st.HeldUntil.Format(time.RFC3339)
			}
			fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\n", st.Due.Format(time.RFC3339), until(s.Now, st.Due), st.Action, target, status, st.Rule)
		}
		for _, j := range r.Resign {
			fmt.Fprintf(w, "re-signing certificates of %s (%s): %d/%d done, %d skipped\n", j.KID, j.Reason, j.Done, j.Total, j.Skipped)
		}
		if l := r.Licenses; l != nil && (l.Expiring > 0 || l.Overdue > 0) {
			fmt.Fprintf(w, "licenses: %d expire within %s (license.expiring sent), %d past expiry (expired at the next sweep)\n", l.Expiring, l.ExpiringNotice, l.Overdue)
		}
		for _, st := range r.Steps {
			if st.Status == "awaiting approval" || st.Status == "denied" {
				fmt.Fprintf(w, "note: destroy %s: %s\n", st.Target, st.Reason)
			}
		}
	}
}

// until renders the time from now to t, e.g. "in 6d 23h", "now", "3h ago".
func until(now, t time.Time) string {
	d := t.Sub(now)
	switch {
	case d <= 0 && d > -time.Minute:
		return "now"
	case d < 0:
		return roughDuration(-d) + " ago"
	}
	return "in " + roughDuration(d)
}

func roughDuration(d time.Duration) string {
	const day = 24 * time.Hour
	switch {
	case d >= day:
		return fmt.Sprintf("%dd %dh", d/day, (d%day)/time.Hour)
	case d >= time.Hour:
		return fmt.Sprintf("%dh %dm", d/time.Hour, (d%time.Hour)/time.Minute)
	}
	return fmt.Sprintf("%dm", d/time.Minute)
}

func resignTable(w io.Writer, j api.ResignJob) {
	fmt.Fprintf(w, "kid:\t%s\nreason:\t%s\nstate:\t%s (run %d)\nprogress:\t%d/%d re-signed, %d skipped (%.0f%%)\nstarted:\t%s\n",
		j.KID, j.Reason, j.State, j.Run, j.Done, j.Total, j.Skipped, j.Percent, j.StartedAt.Format(time.RFC3339))
	if j.FinishedAt != nil {
		fmt.Fprintf(w, "finished:\t%s\n", j.FinishedAt.Format(time.RFC3339))
	}
}

// keyExposureNote writes what still depends on a key (key show).
func keyExposureNote(w io.Writer, k api.Key) {
	x := k.Exposure
	if x == nil {
		return
	}
	fmt.Fprintf(w, "\nlive certificates:\t%d (of active licenses; leases are short-lived and not counted)\n", x.LiveCertificates)
	if x.InactiveCertificates > 0 {
		fmt.Fprintf(w, "inactive certificates:\t%d (licenses not active: not re-signed)\n", x.InactiveCertificates)
	}
	if j := x.Resign; j != nil {
		fmt.Fprintf(w, "re-sign job:\t%s, %d/%d re-signed, %d skipped\n", j.State, j.Done, j.Total, j.Skipped)
	}
}

// resignPoll is how often followResign asks for progress.
const resignPoll = 500 * time.Millisecond

// followResign polls a key's re-sign job until it ends, drawing a progress
// bar on stderr when it is a terminal (a line per 10 % otherwise). A key
// without a job (a registry key, a key that signed nothing) ends at once.
func (e *env) followResign(kid string) error {
	tty := isTerminal(e.stderr)
	lastTenth := -1
	for {
		var j api.ResignJob
		err := e.client().do(e.ctx, "GET", "/v1/keys/"+url.PathEscape(kid)+"/resign", nil, &j)
		var ae *apiError
		if errors.As(err, &ae) && ae.Code == "NOT_FOUND" {
			fmt.Fprintf(e.stderr, "no certificate to re-sign for %s\n", kid)
			return nil
		}
		if err != nil {
			return err
		}
		handled := j.Done + j.Skipped
		switch {
		case tty:
			fmt.Fprintf(e.stderr, "\rre-signing %s %s %d/%d", shortKID(kid), progressBar(handled, j.Total, 30), handled, j.Total)
		case j.Total > 0 && handled*10/j.Total > lastTenth:
			lastTenth = handled * 10 / j.Total
			fmt.Fprintf(e.stderr, "re-signing %s: %d/%d\n", kid, handled, j.Total)
		}
		if j.State != "running" {
			if tty {
				fmt.Fprintln(e.stderr)
			}
			fmt.Fprintf(e.stderr, "re-sign job %s: %s, %d re-signed with the active key, %d skipped (license not active)\n", kid, j.State, j.Done, j.Skipped)
			return nil
		}
		select {
		case <-e.ctx.Done():
			if tty {
				fmt.Fprintln(e.stderr)
			}
			return e.ctx.Err()
		case <-time.After(resignPoll):
		}
	}
}

func shortKID(kid string) string {
	if len(kid) > 12 {
		return kid[:12] + "…"
	}
	return kid
}

// progressBar renders done/total as [#####.....] NN%.
func progressBar(done, total, width int) string {
	frac := 1.0
	if total > 0 {
		frac = min(1, float64(done)/float64(total))
	}
	n := int(frac * float64(width))
	return "[" + strings.Repeat("#", n) + strings.Repeat(".", width-n) + fmt.Sprintf("] %3.0f%%", frac*100)
}
