package cli

import (
	"fmt"
	"io"
	"net/url"
	"strings"
	"time"

	"github.com/keyward/keyward/api"
	"github.com/spf13/cobra"
)

// Governance commands (docs/governance.md): API tokens, approval requests
// (four eyes) and the caller's second factor. The server enforces every
// rule; these commands only ask.

func tokenCmd(e *env) *cobra.Command {
	c := &cobra.Command{Use: "token", Short: "Create, list and revoke API tokens (admin)"}
	var name, product, ttl string
	var roles []string
	create := &cobra.Command{
		Use:   "create --name N --role R [--role R2] [--product P] [--ttl 8h]",
		Short: "Create an API token; the token is printed once",
		Long: "Create an API token for the principal --name (a person or a service: every token\n" +
			"with the same name is the same principal for separation of duties, approvals and\n" +
			"MFA). Roles: admin, issuer, rotator, revoker, approver, auditor, support, service.\n" +
			"--product limits the token to one product. Tokens for people expire (--ttl,\n" +
			"default 8h, at most 366d); --ttl 0 (never) is for service tokens only.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(roles) == 0 {
				return usageError(fmt.Errorf("give at least one --role"))
			}
			var t api.Token
			req := map[string]any{"name": name, "roles": roles, "product": product, "ttl": ttl}
			if err := e.client().do(e.ctx, "POST", "/v1/tokens", req, &t); err != nil {
				return err
			}
			return e.print(t, func(w io.Writer) {
				exp := "never"
				if t.ExpiresAt != nil {
					exp = t.ExpiresAt.Format(time.RFC3339)
				}
				fmt.Fprintf(w, "id:\t%s\nname:\t%s\nroles:\t%s\n", t.ID, t.Name, strings.Join(t.Roles, ","))
				if t.ProductID != "" {
					fmt.Fprintf(w, "product:\t%s\n", t.ProductID)
				}
				fmt.Fprintf(w, "expires:\t%s\ntoken (shown once):\t%s\n", exp, t.Token)
			})
		},
	}
	create.Flags().StringVar(&name, "name", "", "the principal's name (required)")
	create.Flags().StringArrayVar(&roles, "role", nil, "role (repeatable, at least one)")
	create.Flags().StringVar(&product, "product", "", "limit the token to one product")
	create.Flags().StringVar(&ttl, "ttl", "8h", "lifetime, e.g. 8h, 30d; 0 = never (service tokens only)")
	_ = create.MarkFlagRequired("name")

	list := &cobra.Command{
		Use: "list", Short: "List API tokens (never their secrets)", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			var out struct {
				Tokens []api.TokenInfo `json:"tokens"`
			}
			if err := e.client().do(e.ctx, "GET", "/v1/tokens", nil, &out); err != nil {
				return err
			}
			return e.print(out.Tokens, func(w io.Writer) {
				fmt.Fprintln(w, "ID\tNAME\tROLES\tPRODUCT\tSTATE\tEXPIRES")
				for _, t := range out.Tokens {
					exp := "never"
					if t.ExpiresAt != nil {
						exp = t.ExpiresAt.Format(time.RFC3339)
					}
					fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\n", t.ID, t.Name, strings.Join(t.Roles, ","), orDash(t.ProductID), t.State, exp)
				}
			})
		},
	}

	revoke := &cobra.Command{
		Use: "revoke ID", Short: "Revoke an API token; it stops working at once", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var t api.TokenInfo
			if err := e.client().do(e.ctx, "POST", "/v1/tokens/"+url.PathEscape(args[0])+"/revoke", map[string]any{}, &t); err != nil {
				return err
			}
			return e.print(t, func(w io.Writer) { fmt.Fprintf(w, "token %s (%s) revoked\n", t.ID, t.Name) })
		},
	}
	c.AddCommand(create, list, revoke)
	return c
}

func approvalCmd(e *env) *cobra.Command {
	c := &cobra.Command{Use: "approval", Short: "List, grant and deny approval requests (four eyes)"}
	var state, product, target, action string
	var all bool
	list := &cobra.Command{
		Use:   "list [--state S | --all] [--product P] [--target ID] [--action A]",
		Short: "List approval requests (pending ones unless --state or --all)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			q := url.Values{}
			if !all {
				q.Set("state", state)
			}
			for k, v := range map[string]string{"product": product, "target": target, "action": action} {
				if v != "" {
					q.Set(k, v)
				}
			}
			var out struct {
				Approvals []api.Approval `json:"approvals"`
			}
			if err := e.client().do(e.ctx, "GET", "/v1/approvals?"+q.Encode(), nil, &out); err != nil {
				return err
			}
			return e.print(out.Approvals, func(w io.Writer) { approvalTable(w, out.Approvals) })
		},
	}
	list.Flags().StringVar(&state, "state", "pending", "pending, granted, denied, cancelled or expired")
	list.Flags().BoolVar(&all, "all", false, "every state")
	list.Flags().StringVar(&product, "product", "", "only this product's requests")
	list.Flags().StringVar(&target, "target", "", "only requests about this license id or kid")
	list.Flags().StringVar(&action, "action", "", "only license.revoke, key.destroy or exception.grant requests")
	list.MarkFlagsMutuallyExclusive("state", "all")

	show := &cobra.Command{
		Use: "show ID", Short: "Show an approval request", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var ap api.Approval
			if err := e.client().do(e.ctx, "GET", "/v1/approvals/"+url.PathEscape(args[0]), nil, &ap); err != nil {
				return err
			}
			return e.print(ap, func(w io.Writer) { approvalDetail(w, ap) })
		},
	}

	var comment string
	grant := &cobra.Command{
		Use:   "grant ID [--comment C]",
		Short: "Grant a request; the final grant runs the action (you cannot grant your own)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var ap api.Approval
			if err := e.client().do(e.ctx, "POST", "/v1/approvals/"+url.PathEscape(args[0])+"/grant", map[string]string{"comment": comment}, &ap); err != nil {
				return err
			}
			return e.print(ap, func(w io.Writer) { approvalDetail(w, ap) })
		},
	}
	grant.Flags().StringVar(&comment, "comment", "", "what you checked")

	var reason string
	deny := &cobra.Command{
		Use:   "deny ID --reason R",
		Short: "Deny a request; nothing runs and the target stays as it is (a license stays suspended)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var ap api.Approval
			if err := e.client().do(e.ctx, "POST", "/v1/approvals/"+url.PathEscape(args[0])+"/deny", map[string]string{"reason": reason}, &ap); err != nil {
				return err
			}
			return e.print(ap, func(w io.Writer) { approvalDetail(w, ap) })
		},
	}
	deny.Flags().StringVar(&reason, "reason", "", "why (required)")
	_ = deny.MarkFlagRequired("reason")

	c.AddCommand(list, show, grant, deny)
	return c
}

func approvalTable(w io.Writer, aps []api.Approval) {
	fmt.Fprintln(w, "ID\tACTION\tTARGET\tREQUESTED BY\tSTATE\tGRANTS\tEXPIRES")
	for _, ap := range aps {
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%d/%d\t%s\n", ap.ID, ap.Action, ap.Target, ap.RequestedBy, ap.State,
			len(ap.Grants), ap.Required, ap.ExpiresAt.Format(time.RFC3339))
	}
}

func approvalDetail(w io.Writer, ap api.Approval) {
	fmt.Fprintf(w, "id:\t%s\naction:\t%s\ntarget:\t%s %s\nreason:\t%s\nrequested by:\t%s\nstate:\t%s\napprovals:\t%d of %d\nexpires:\t%s\n",
		ap.ID, ap.Action, ap.TargetType, ap.Target, orDash(ap.Reason), ap.RequestedBy, ap.State, len(ap.Grants), ap.Required, ap.ExpiresAt.Format(time.RFC3339))
	for _, g := range ap.Grants {
		fmt.Fprintf(w, "granted by:\t%s at %s %s\n", g.By, g.At.Format(time.RFC3339), g.Comment)
	}
	if ap.DecisionReason != "" {
		fmt.Fprintf(w, "decision:\t%s (%s)\n", ap.DecisionReason, ap.DecidedBy)
	}
}

// pendingNote tells the user that an action became an approval request.
func pendingNote(w io.Writer, ap *api.Approval) {
	fmt.Fprintf(w, "\n%s of %s awaits %d approval(s) by another principal: approval %s (expires %s)\n"+
		"an approver runs: keyward approval grant %s\n",
		ap.Action, ap.Target, ap.Required, ap.ID, ap.ExpiresAt.Format(time.RFC3339), ap.ID)
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func mfaCmd(e *env) *cobra.Command {
	c := &cobra.Command{Use: "mfa", Short: "Enroll your TOTP second factor; reset another principal's (admin)"}
	enroll := &cobra.Command{
		Use:   "enroll",
		Short: "Enroll a TOTP authenticator for your token's principal; the secret is printed once",
		Long: "Enroll a TOTP authenticator (RFC 6238: SHA-1, 6 digits, 30 s) for the principal of\n" +
			"your token. Add the printed secret or otpauth:// URI to an authenticator app; pass its\n" +
			"current code with --otp (or KEYWARD_OTP) on actions the policy lists under mfa.\n" +
			"Replacing an enrollment needs a current code from the old authenticator (--otp).",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			var m api.MFAEnrollment
			if err := e.client().do(e.ctx, "POST", "/v1/mfa/enroll", map[string]any{}, &m); err != nil {
				return err
			}
			return e.print(m, func(w io.Writer) {
				fmt.Fprintf(w, "principal:\t%s\nsecret (shown once):\t%s\nuri:\t%s\n", m.Principal, m.Secret, m.URI)
			})
		},
	}
	reset := &cobra.Command{
		Use: "reset NAME", Short: "Remove a principal's second factor (a lost authenticator); it must enroll again", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := e.client().do(e.ctx, "DELETE", "/v1/mfa/"+url.PathEscape(args[0]), nil, nil); err != nil {
				return err
			}
			return e.print(map[string]string{"principal": args[0], "mfa": "none"}, func(w io.Writer) {
				fmt.Fprintf(w, "second factor of %s removed\n", args[0])
			})
		},
	}
	c.AddCommand(enroll, reset)
	return c
}
