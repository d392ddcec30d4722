package cli

import (
	"fmt"
	"io"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/keyward/keyward/api"
	"github.com/spf13/cobra"
)

func productCmd(e *env) *cobra.Command {
	c := &cobra.Command{Use: "product", Short: "Create and list products"}
	c.AddCommand(&cobra.Command{
		Use: "create NAME", Short: "Create a product and its license-key ring", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var p api.Product
			if err := e.client().do(e.ctx, "POST", "/v1/products", map[string]string{"name": args[0]}, &p); err != nil {
				return err
			}
			return e.print(p, func(w io.Writer) { productTable(w, []api.Product{p}) })
		},
	}, &cobra.Command{
		Use: "list", Short: "List products", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			var out struct {
				Products []api.Product `json:"products"`
			}
			if err := e.client().do(e.ctx, "GET", "/v1/products", nil, &out); err != nil {
				return err
			}
			return e.print(out.Products, func(w io.Writer) { productTable(w, out.Products) })
		},
	})
	return c
}

func productTable(w io.Writer, ps []api.Product) {
	fmt.Fprintln(w, "ID\tNAME\tCREATED")
	for _, p := range ps {
		fmt.Fprintf(w, "%s\t%s\t%s\n", p.ID, p.Name, p.CreatedAt.Format(time.RFC3339))
	}
}

func keyCmd(e *env) *cobra.Command {
	c := &cobra.Command{Use: "key", Short: "Manage signing keys"}
	var product, state string
	var registry bool
	list := &cobra.Command{
		Use: "list", Short: "List signing keys", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			q := url.Values{}
			if product != "" {
				q.Set("product", product)
			}
			if state != "" {
				q.Set("state", state)
			}
			if registry {
				q.Set("purpose", "registry")
			}
			var out struct {
				Keys []api.Key `json:"keys"`
			}
			if err := e.client().do(e.ctx, "GET", "/v1/keys?"+q.Encode(), nil, &out); err != nil {
				return err
			}
			return e.print(out.Keys, func(w io.Writer) { keyTable(w, out.Keys) })
		},
	}
	list.Flags().StringVar(&product, "product", "", "only this product's keys")
	list.Flags().StringVar(&state, "state", "", "only keys in this state")
	list.Flags().BoolVar(&registry, "registry", false, "only the server's registry keys")

	show := &cobra.Command{
		Use: "show KID", Short: "Show a signing key", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var k api.Key
			if err := e.client().do(e.ctx, "GET", "/v1/keys/"+url.PathEscape(args[0]), nil, &k); err != nil {
				return err
			}
			return e.print(k, func(w io.Writer) { keyTable(w, []api.Key{k}); keyExposureNote(w, k) })
		},
	}

	var rotProduct, alg, reason string
	var rotRegistry, pending bool
	rotate := &cobra.Command{
		Use: "rotate (--product P | --registry)", Short: "Add a new key to a ring; it becomes active unless --pending", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if rotRegistry == (rotProduct != "") {
				return usageError(fmt.Errorf("give exactly one of --product or --registry"))
			}
			path := "/v1/keys/registry/rotate"
			if rotProduct != "" {
				path = "/v1/products/" + url.PathEscape(rotProduct) + "/keys"
			}
			var k api.Key
			if err := e.client().do(e.ctx, "POST", path, map[string]any{"algorithm": alg, "pending": pending, "reason": reason}, &k); err != nil {
				return err
			}
			return e.print(k, func(w io.Writer) { keyTable(w, []api.Key{k}) })
		},
	}
	rotate.Flags().StringVar(&rotProduct, "product", "", "product whose ring to rotate")
	rotate.Flags().BoolVar(&rotRegistry, "registry", false, "rotate the server's registry ring")
	rotate.Flags().StringVar(&alg, "algorithm", "", "Ed25519 or ES256 (default: policy)")
	rotate.Flags().BoolVar(&pending, "pending", false, "only pre-publish the new key")
	rotate.Flags().StringVar(&reason, "reason", "", "why")

	c.AddCommand(list, show, rotate)
	c.AddCommand(lifecycleCmds(e)...) // schedule, rollback, resign (lifecycle.go)
	for _, a := range []struct{ name, short string }{
		{"activate", "Activate a pending key (the current active key is retired)"},
		{"retire", "Retire a key: verify-only from now on"},
		{"revoke", "Mark a key compromised; an active key is replaced at once"},
		{"destroy", "Erase a retired or pending key's private material"},
	} {
		var reason string
		var noWait bool
		cmd := &cobra.Command{
			Use: a.name + " KID", Short: a.short, Args: cobra.ExactArgs(1),
			RunE: func(cmd *cobra.Command, args []string) error {
				var k api.PendingKey
				if err := e.client().do(e.ctx, "POST", "/v1/keys/"+url.PathEscape(args[0])+"/"+a.name, map[string]string{"reason": reason}, &k); err != nil {
					return err
				}
				if k.Approval != nil { // destroy where the policy needs a second principal
					return e.print(k, func(w io.Writer) { keyTable(w, []api.Key{k.Key}); pendingNote(w, k.Approval) })
				}
				if err := e.print(k.Key, func(w io.Writer) { keyTable(w, []api.Key{k.Key}) }); err != nil {
					return err
				}
				if (a.name == "revoke" || a.name == "retire") && !noWait && k.Key.Purpose == "license" {
					return e.followResign(k.Key.KID) // lifecycle.go: what it signed is re-signed by the active key
				}
				return nil
			},
		}
		cmd.Flags().StringVar(&reason, "reason", "", "why (revoke: key_compromise, superseded, …)")
		if a.name == "revoke" || a.name == "retire" {
			cmd.Flags().BoolVar(&noWait, "no-wait", false, "return at once instead of following the re-signing of what the key signed")
		}
		c.AddCommand(cmd)
	}
	return c
}

func keyTable(w io.Writer, ks []api.Key) {
	fmt.Fprintln(w, "KID\tRING\tALG\tSTATE\tCREATED")
	for _, k := range ks {
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\n", k.KID, k.Ring, k.Algorithm, k.State, k.CreatedAt.Format(time.RFC3339))
	}
}

func licenseCmd(e *env) *cobra.Command {
	c := &cobra.Command{Use: "license", Short: "Issue, inspect and change licenses"}

	var product, holder, expires string
	var ents []string
	var maxMachines, count int
	issue := &cobra.Command{
		Use: "issue --product P --holder H", Short: "Issue a license; prints its key once", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			req := map[string]any{"product": product, "holder": holder}
			if expires != "" {
				t, err := parseTime(expires)
				if err != nil {
					return usageError(err)
				}
				req["expires_at"] = t
			}
			if len(ents) > 0 {
				req["entitlements"] = ents
			}
			if cmd.Flags().Changed("max-machines") {
				req["max_machines"] = maxMachines
			}
			if cmd.Flags().Changed("count") {
				req["count"] = count
				var out struct {
					Licenses []api.IssuedLicense `json:"licenses"`
				}
				if err := e.client().do(e.ctx, "POST", "/v1/licenses:batch", req, &out); err != nil {
					return err
				}
				return e.print(out.Licenses, func(w io.Writer) {
					fmt.Fprintln(w, "ID\tKEY (shown once)")
					for _, l := range out.Licenses {
						fmt.Fprintf(w, "%s\t%s\n", l.ID, l.Key)
					}
				})
			}
			var l api.IssuedLicense
			if err := e.client().do(e.ctx, "POST", "/v1/licenses", req, &l); err != nil {
				return err
			}
			return e.print(l, func(w io.Writer) {
				licenseTable(w, []api.License{l.License})
				fmt.Fprintf(w, "\nlicense key (shown once): %s\n", l.Key)
			})
		},
	}
	issue.Flags().StringVar(&product, "product", "", "product id or name (required)")
	issue.Flags().StringVar(&holder, "holder", "", "pseudonymous customer id (required)")
	issue.Flags().StringVar(&expires, "expires", "", "expiry: 2027-01-01 or RFC 3339 time (default: policy)")
	issue.Flags().StringArrayVar(&ents, "entitlement", nil, "entitlement (repeatable)")
	issue.Flags().IntVar(&maxMachines, "max-machines", 0, "machine limit, 0 = none (default: policy)")
	issue.Flags().IntVar(&count, "count", 1, "issue this many identical licenses in one transaction (prints a list)")
	_ = issue.MarkFlagRequired("product")
	_ = issue.MarkFlagRequired("holder")

	show := &cobra.Command{
		Use: "show ID", Short: "Show a license", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var l api.License
			if err := e.client().do(e.ctx, "GET", "/v1/licenses/"+url.PathEscape(args[0]), nil, &l); err != nil {
				return err
			}
			return e.print(l, func(w io.Writer) { licenseTable(w, []api.License{l}) })
		},
	}

	var lProduct, lState, lHolder, lAfter string
	var lLimit int
	list := &cobra.Command{
		Use: "list", Short: "List licenses", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			q := url.Values{}
			for k, v := range map[string]string{"product": lProduct, "state": lState, "holder": lHolder, "after": lAfter} {
				if v != "" {
					q.Set(k, v)
				}
			}
			if lLimit > 0 {
				q.Set("limit", fmt.Sprint(lLimit))
			}
			var out struct {
				Licenses []api.License `json:"licenses"`
				Next     string        `json:"next"`
			}
			if err := e.client().do(e.ctx, "GET", "/v1/licenses?"+q.Encode(), nil, &out); err != nil {
				return err
			}
			return e.print(out.Licenses, func(w io.Writer) {
				licenseTable(w, out.Licenses)
				if out.Next != "" {
					fmt.Fprintf(w, "\nmore: --after %s\n", out.Next)
				}
			})
		},
	}
	list.Flags().StringVar(&lProduct, "product", "", "only this product")
	list.Flags().StringVar(&lState, "state", "", "only this state")
	list.Flags().StringVar(&lHolder, "holder", "", "only this holder")
	list.Flags().StringVar(&lAfter, "after", "", "page after this license id")
	list.Flags().IntVar(&lLimit, "limit", 0, "page size (1-1000, default 100)")

	var vFingerprint, vProduct string
	validate := &cobra.Command{
		Use: "validate KEY", Short: "Validate a license key as a relying party would", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var v api.Validation
			req := map[string]string{"key": args[0], "fingerprint": vFingerprint, "product": vProduct}
			if err := newClient(e.server, "").do(e.ctx, "POST", "/v1/validate", req, &v); err != nil {
				return err
			}
			if err := e.print(v, func(w io.Writer) {
				fmt.Fprintf(w, "valid:\t%v\ncode:\t%s\n", v.Valid, v.Code)
				if v.License != nil {
					fmt.Fprintf(w, "license:\t%s (%s)\n", v.License.ID, v.License.State)
				}
				if v.Lease != nil {
					fmt.Fprintf(w, "lease expires:\t%s\n", v.Lease.ExpiresAt.Format(time.RFC3339))
				}
			}); err != nil {
				return err
			}
			if !v.Valid {
				return errSilent{code: 1}
			}
			return nil
		},
	}
	validate.Flags().StringVar(&vFingerprint, "fingerprint", "", "machine fingerprint (activates the machine, returns a lease)")
	validate.Flags().StringVar(&vProduct, "product", "", "expected product")

	var outFile string
	checkout := &cobra.Command{
		Use: "checkout ID --out FILE", Short: "Check out a signed license certificate", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var cert api.Certificate
			if err := e.client().do(e.ctx, "POST", "/v1/licenses/"+url.PathEscape(args[0])+"/checkout", nil, &cert); err != nil {
				return err
			}
			return e.writeCertificate(cert, outFile)
		},
	}
	checkout.Flags().StringVar(&outFile, "out", "", "write the certificate to FILE")

	var certOut string
	certificate := &cobra.Command{
		Use:   "certificate ID [--out FILE]",
		Short: "Show a license's current certificate: the last checked out, or its re-signed form after a rotation or compromise",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var cert api.Certificate
			if err := e.client().do(e.ctx, "GET", "/v1/licenses/"+url.PathEscape(args[0])+"/certificate", nil, &cert); err != nil {
				return err
			}
			return e.writeCertificate(cert, certOut)
		},
	}
	certificate.Flags().StringVar(&certOut, "out", "", "write the certificate to FILE")

	var grace string
	reissue := &cobra.Command{
		Use: "reissue ID", Short: "Give a license a new key; the old one works until the grace ends", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			req := map[string]string{}
			if grace != "" {
				req["grace"] = grace
			}
			var l api.IssuedLicense
			if err := e.client().do(e.ctx, "POST", "/v1/licenses/"+url.PathEscape(args[0])+"/reissue", req, &l); err != nil {
				return err
			}
			return e.print(l, func(w io.Writer) {
				licenseTable(w, []api.License{l.License})
				fmt.Fprintf(w, "\nnew license key (shown once): %s\n", l.Key)
			})
		},
	}
	reissue.Flags().StringVar(&grace, "grace", "", "how long the old key keeps working (default: policy reissueGrace)")

	machines := &cobra.Command{
		Use: "machines ID", Short: "List a license's machines", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var out struct {
				Machines []api.Machine `json:"machines"`
			}
			if err := e.client().do(e.ctx, "GET", "/v1/licenses/"+url.PathEscape(args[0])+"/machines", nil, &out); err != nil {
				return err
			}
			return e.print(out.Machines, func(w io.Writer) {
				fmt.Fprintln(w, "ID\tFINGERPRINT\tACTIVATED\tLAST SEEN")
				for _, m := range out.Machines {
					fmt.Fprintf(w, "%s\t%s\t%s\t%s\n", m.ID, m.Fingerprint, m.CreatedAt.Format(time.RFC3339), m.LastSeenAt.Format(time.RFC3339))
				}
			})
		},
	}
	deactivate := &cobra.Command{
		Use: "deactivate ID MACHINE", Short: "Deactivate a machine, freeing its slot", Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := e.client().do(e.ctx, "DELETE", "/v1/licenses/"+url.PathEscape(args[0])+"/machines/"+url.PathEscape(args[1]), nil, nil); err != nil {
				return err
			}
			return e.print(map[string]string{"license_id": args[0], "machine_id": args[1], "state": "deactivated"}, func(w io.Writer) {
				fmt.Fprintf(w, "machine %s deactivated\n", args[1])
			})
		},
	}

	c.AddCommand(issue, show, list, validate, checkout, certificate, reissue, machines, deactivate, licenseSignalCmd(e), licenseSignalsCmd(e), licenseUsageCmd(e))
	for _, a := range []struct{ name, short string }{
		{"suspend", "Suspend a license (reversible)"},
		{"reinstate", "Reinstate a suspended license"},
		{"revoke", "Revoke a license (permanent; --reason required)"},
		{"retire", "Retire a license that is no longer needed"},
	} {
		var reason string
		cmd := &cobra.Command{
			Use: a.name + " ID", Short: a.short, Args: cobra.ExactArgs(1),
			RunE: func(cmd *cobra.Command, args []string) error {
				var l api.PendingLicense
				if err := e.client().do(e.ctx, "POST", "/v1/licenses/"+url.PathEscape(args[0])+"/"+a.name, map[string]string{"reason": reason}, &l); err != nil {
					return err
				}
				if l.Approval != nil { // revoke where the policy needs a second principal
					return e.print(l, func(w io.Writer) { licenseTable(w, []api.License{l.License}); pendingNote(w, l.Approval) })
				}
				return e.print(l.License, func(w io.Writer) { licenseTable(w, []api.License{l.License}) })
			},
		}
		cmd.Flags().StringVar(&reason, "reason", "", "why (revoke: key_compromise, abuse, non_payment, superseded, cessation_of_use, policy_violation, unspecified)")
		if a.name == "revoke" {
			_ = cmd.MarkFlagRequired("reason")
		}
		c.AddCommand(cmd)
	}
	return c
}

func licenseTable(w io.Writer, ls []api.License) {
	fmt.Fprintln(w, "ID\tPRODUCT\tHOLDER\tSTATE\tKEY\tEXPIRES\tMACHINES\tENTITLEMENTS")
	for _, l := range ls {
		exp := "never"
		if l.ExpiresAt != nil {
			exp = l.ExpiresAt.Format(time.RFC3339)
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s…\t%s\t%d\t%s\n", l.ID, l.Product, l.Holder, l.State, l.KeyPrefix, exp, l.MaxMachines, strings.Join(l.Entitlements, ","))
	}
}

// parseTime reads a date (2027-01-01, midnight UTC) or an RFC 3339 time.
func parseTime(s string) (time.Time, error) {
	if t, err := time.Parse("2006-01-02", s); err == nil {
		return t.UTC(), nil
	}
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		return time.Time{}, fmt.Errorf("time %q: want 2027-01-01 or 2027-01-01T00:00:00Z", s)
	}
	return t.UTC(), nil
}

// errSilent ends a command with an exit status and no message (the
// output already said why, e.g. an invalid license).
type errSilent struct{ code int }

func (e errSilent) Error() string { return fmt.Sprintf("exit status %d", e.code) }

// writeCertificate writes cert to out (if not "") and prints it: its kid
// and expiry, and the token itself when it was not written to a file.
func (e *env) writeCertificate(cert api.Certificate, out string) error {
	if out != "" {
		if err := os.WriteFile(out, []byte(cert.Certificate+"\n"), 0o644); err != nil {
			return err
		}
	}
	return e.print(cert, func(w io.Writer) {
		fmt.Fprintf(w, "kid:\t%s\nexpires:\t%s\n", cert.KID, cert.ExpiresAt.Format(time.RFC3339))
		if out != "" {
			fmt.Fprintf(w, "written:\t%s\n", out)
		} else {
			fmt.Fprintf(w, "certificate:\t%s\n", cert.Certificate)
		}
	})
}
