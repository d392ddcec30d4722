package cli

import (
	"fmt"
	"io"
	"net/http"
	"net/url"
	"time"

	"github.com/spf13/cobra"

	"github.com/keyward/keyward/api"
)

// exceptionCmd is `keyward exception` (docs/governance.md, "Exceptions").
func exceptionCmd(e *env) *cobra.Command {
	c := &cobra.Command{Use: "exception", Short: "Request, list and show exceptions: one scheduled step held on a key or license until a time"}

	var target, rule, until, justification string
	request := &cobra.Command{
		Use:   "request --target KID|LICENSE --rule R --until DATE --justification J",
		Short: "Request an exception (activated by an approver: keyward approval grant)",
		Long: "Hold one scheduled lifecycle step on a key or license until a time: --rule destroy keeps a retired key\n" +
			"beyond destroyAfter; --rule expire, or the name of a licenses.retire rule, holds a license's step.\n" +
			"--until is a date (2027-01-01, midnight UTC) or an RFC 3339 time, at most one year ahead.\n" +
			"The exception is active once its approval request is granted by another principal, and expires on its own.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			body := map[string]string{"target": target, "rule": rule, "until": until, "justification": justification}
			var out api.Exception
			if err := e.client().do(e.ctx, http.MethodPost, "/v1/exceptions", body, &out); err != nil {
				return err
			}
			return e.print(out, func(w io.Writer) {
				exceptionDetail(w, out)
				if out.Approval != nil {
					pendingNote(w, out.Approval)
				}
			})
		},
	}
	request.Flags().StringVar(&target, "target", "", "kid or license id (required)")
	request.Flags().StringVar(&rule, "rule", "", "the step to hold: destroy (a key); expire or a licenses.retire rule name (a license) (required)")
	request.Flags().StringVar(&until, "until", "", "when the exception ends: 2027-01-01 or an RFC 3339 time (required)")
	request.Flags().StringVar(&justification, "justification", "", "why the step must wait (required)")
	for _, f := range []string{"target", "rule", "until", "justification"} {
		_ = request.MarkFlagRequired(f)
	}

	var state, ltarget, lrule string
	list := &cobra.Command{
		Use:   "list [--state S] [--target ID] [--rule R]",
		Short: "List exceptions in their effective state",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			q := url.Values{}
			for k, v := range map[string]string{"state": state, "target": ltarget, "rule": lrule} {
				if v != "" {
					q.Set(k, v)
				}
			}
			var out struct {
				Exceptions []api.Exception `json:"exceptions"`
			}
			if err := e.client().do(e.ctx, http.MethodGet, "/v1/exceptions?"+q.Encode(), nil, &out); err != nil {
				return err
			}
			return e.print(out.Exceptions, func(w io.Writer) { exceptionTable(w, out.Exceptions) })
		},
	}
	list.Flags().StringVar(&state, "state", "", "pending, active, denied or expired (default: every state)")
	list.Flags().StringVar(&ltarget, "target", "", "only exceptions on this kid or license id")
	list.Flags().StringVar(&lrule, "rule", "", "only exceptions holding this rule")

	show := &cobra.Command{
		Use: "show ID", Short: "Show an exception", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var out api.Exception
			if err := e.client().do(e.ctx, http.MethodGet, "/v1/exceptions/"+url.PathEscape(args[0]), nil, &out); err != nil {
				return err
			}
			return e.print(out, func(w io.Writer) { exceptionDetail(w, out) })
		},
	}
	c.AddCommand(request, list, show)
	return c
}

func exceptionTable(w io.Writer, es []api.Exception) {
	fmt.Fprintln(w, "ID\tTARGET\tRULE\tUNTIL\tSTATE\tAPPROVAL\tREQUESTED BY")
	for _, x := range es {
		fmt.Fprintf(w, "%s\t%s %s\t%s\t%s\t%s\t%s\t%s\n", x.ID, x.TargetType, x.Target, x.Rule, x.Until.Format(time.RFC3339), x.State,
			orDash(x.ApprovalID), x.RequestedBy)
	}
}

func exceptionDetail(w io.Writer, x api.Exception) {
	fmt.Fprintf(w, "id:\t%s\ntarget:\t%s %s\nrule:\t%s\nuntil:\t%s\nstate:\t%s\njustification:\t%s\nrequested by:\t%s\napproval:\t%s\n",
		x.ID, x.TargetType, x.Target, x.Rule, x.Until.Format(time.RFC3339), x.State, x.Justification, x.RequestedBy, orDash(x.ApprovalID))
}
