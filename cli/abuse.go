package cli

import (
	"fmt"
	"io"
	"net/netip"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/keyward/keyward"
	"github.com/keyward/keyward/api"
	"github.com/keyward/keyward/authority"
)

// Abuse signals (docs/abuse.md): `license signal`, `license signals` and
// `license usage`, registered under the license command.

func signalKindNames() []string {
	var out []string
	for _, k := range keyward.SignalKinds() {
		out = append(out, string(k))
	}
	return out
}

func licenseSignalCmd(e *env) *cobra.Command {
	var kind, detail string
	c := &cobra.Command{
		Use:   `signal ID --kind abuse|leak|chargeback|other --detail "…"`,
		Short: "Report abuse, a leaked key or a chargeback; the policy may suspend the license at once",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if !slices.Contains(signalKindNames(), kind) {
				return usageError(fmt.Errorf("--kind %q: want one of %s", kind, strings.Join(signalKindNames(), ", ")))
			}
			if strings.TrimSpace(detail) == "" {
				return usageError(fmt.Errorf("--detail is required: say what was seen"))
			}
			if len(detail) > authority.MaxSignalDetail {
				return usageError(fmt.Errorf("--detail: at most %d bytes", authority.MaxSignalDetail))
			}
			var out api.SignalRecorded
			if err := e.client().do(e.ctx, "POST", "/v1/licenses/"+url.PathEscape(args[0])+"/signals", map[string]string{"kind": kind, "detail": detail}, &out); err != nil {
				return err
			}
			return e.print(out, func(w io.Writer) {
				signalTable(w, []api.Signal{out.Signal})
				fmt.Fprintln(w)
				switch out.Signal.Outcome {
				case keyward.SignalSuspended:
					fmt.Fprintf(w, "license %s suspended (policy suspendOnSignal: %s)\n", out.License.ID, out.Signal.Kind)
				case keyward.SignalCooldown:
					fmt.Fprintf(w, "not suspended: license %s is in its auto-suspension cooldown (a person reinstated it)\n", out.License.ID)
				case keyward.SignalCeiling:
					fmt.Fprintf(w, "not suspended: product reached its auto-suspension ceiling; an alert was raised\n")
				case keyward.SignalInactive:
					fmt.Fprintf(w, "license %s is %s: nothing to suspend\n", out.License.ID, out.License.State)
				default:
					fmt.Fprintf(w, "recorded; license %s stays %s\n", out.License.ID, out.License.State)
				}
				if out.Approval != nil {
					pendingNote(w, out.Approval)
				}
			})
		},
	}
	c.Flags().StringVar(&kind, "kind", "", "abuse, leak, chargeback or other (required)")
	c.Flags().StringVar(&detail, "detail", "", "what was seen (required; kept in the audit log: no secrets)")
	_ = c.MarkFlagRequired("kind")
	_ = c.MarkFlagRequired("detail")
	return c
}

func licenseSignalsCmd(e *env) *cobra.Command {
	return &cobra.Command{
		Use: "signals ID", Short: "List a license's abuse signals", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var out struct {
				Signals []api.Signal `json:"signals"`
			}
			if err := e.client().do(e.ctx, "GET", "/v1/licenses/"+url.PathEscape(args[0])+"/signals", nil, &out); err != nil {
				return err
			}
			return e.print(out.Signals, func(w io.Writer) { signalTable(w, out.Signals) })
		},
	}
}

func signalTable(w io.Writer, ss []api.Signal) {
	fmt.Fprintln(w, "ID\tKIND\tOUTCOME\tBY\tAT\tDETAIL")
	for _, s := range ss {
		detail := strings.ReplaceAll(s.Detail, "\n", " ")
		if len(detail) > 60 {
			detail = detail[:57] + "..."
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\n", s.ID, s.Kind, s.Outcome, orDash(s.Actor), s.CreatedAt.Format(time.RFC3339), detail)
	}
}

func licenseUsageCmd(e *env) *cobra.Command {
	return &cobra.Command{
		Use: "usage ID", Short: "Show a license's usage counters (as the server you ask sees them) and automatic suspensions", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var out api.LicenseUsage
			if err := e.client().do(e.ctx, "GET", "/v1/licenses/"+url.PathEscape(args[0])+"/usage", nil, &out); err != nil {
				return err
			}
			return e.print(out, func(w io.Writer) {
				u := out.Usage
				fmt.Fprintf(w, "license:\t%s\n", out.LicenseID)
				if !out.Tracked {
					fmt.Fprintf(w, "counters:\tnone on this server (no validation since it started)\n")
				}
				fmt.Fprintf(w, "usage.validations_per_minute:\t%d\n", u.ValidationsPerMinute)
				fmt.Fprintf(w, "usage.distinct_fingerprints_24h:\t%d\n", u.DistinctFingerprints24h)
				fmt.Fprintf(w, "usage.failed_validations_in_row:\t%d\n", u.FailedValidationsInRow)
				fmt.Fprintf(w, "usage.distinct_networks_24h:\t%d\n", u.DistinctNetworks24h)
				if out.CooldownUntil != nil {
					fmt.Fprintf(w, "cooldown until:\t%s\n", out.CooldownUntil.Format(time.RFC3339))
				}
				if len(out.AutoSuspensions) > 0 {
					fmt.Fprintln(w, "\nAUTOMATIC\tRULE\tPOLICY\tAT")
					for _, a := range out.AutoSuspensions {
						fmt.Fprintf(w, "%s\t%s\tv%d\t%s\n", a.Outcome, a.Rule, a.PolicyVersion, a.At.Format(time.RFC3339))
					}
				}
			})
		},
	}
}

// parseProxies reads --trust-forwarded-for: addresses (a /32 or /128) or
// CIDR networks.
func parseProxies(in []string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, s := range in {
		s = strings.TrimSpace(s)
		if p, err := netip.ParsePrefix(s); err == nil {
			out = append(out, p.Masked())
			continue
		}
		a, err := netip.ParseAddr(s)
		if err != nil {
			return nil, fmt.Errorf("--trust-forwarded-for %q: want an IP address or a CIDR network (10.0.0.0/8)", s)
		}
		a = a.Unmap()
		out = append(out, netip.PrefixFrom(a, a.BitLen()))
	}
	return out, nil
}
