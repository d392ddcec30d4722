package cli

import (
	"errors"
	"fmt"
	"io"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/keyward/keyward"
	"github.com/keyward/keyward/api"
	"github.com/keyward/keyward/authority"
	"github.com/keyward/keyward/policy"
)

// policyCmd is `keyward policy`: apply, show, history, diff and rollback
// talk to the server; lint and test work offline.
func policyCmd(e *env) *cobra.Command {
	c := &cobra.Command{Use: "policy", Short: "Apply, inspect, lint and test lifecycle policies (docs/policy.md)"}
	c.AddCommand(policyApplyCmd(e), policyShowCmd(e), policyHistoryCmd(e), policyDiffCmd(e),
		policyRollbackCmd(e), policyLintCmd(e), policyTestCmd(e))
	return c
}

func productPath(product string) string {
	return "/v1/products/" + url.PathEscape(product) + "/policies"
}

func policyApplyCmd(e *env) *cobra.Command {
	var file, justification, product string
	c := &cobra.Command{
		Use:   "apply -f FILE --justification TEXT",
		Short: "Apply a policy document as the next version of its product's policy",
		Long: "Apply validates and lints the document on the server and stores it as the next version of the\n" +
			"policy of the product named in metadata.product (or --product, which must agree). It prints the\n" +
			"new version and a diff against the previous one.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			data, err := readSmallFile(file)
			if err != nil {
				return err
			}
			if product == "" {
				if d, _ := policy.Parse(data); d != nil {
					product = d.Metadata.Product
				}
				if product == "" {
					return fmt.Errorf("%s: metadata.product is missing: name the product the policy governs", file)
				}
			}
			var out api.PolicyChange
			err = e.client().do(e.ctx, "POST", productPath(product), map[string]string{"document": string(data), "justification": justification}, &out)
			var ae *apiError
			if errors.As(err, &ae) && len(ae.Errors) > 0 {
				fmt.Fprintf(e.stderr, "keyward: %s: %s refused: %d problem(s)\n", ae.Code, file, len(ae.Errors))
				for _, f := range ae.Errors {
					fmt.Fprintln(e.stderr, problemLine(file, policy.Problem{Path: f.Path, Line: f.Line, Message: f.Message}))
				}
				return errSilent{code: 1}
			}
			if err != nil {
				return err
			}
			return e.print(out, func(w io.Writer) {
				fmt.Fprintf(w, "applied policy version %d of %s (previous: %s)\n", out.Version, product, versionLabel(out.PreviousVersion))
				io.WriteString(w, out.Diff)
			})
		},
	}
	c.Flags().StringVarP(&file, "file", "f", "", "the LifecyclePolicy YAML file")
	c.Flags().StringVar(&justification, "justification", "", "why the policy changes (kept with the version and audited)")
	c.Flags().StringVar(&product, "product", "", "product (default: the document's metadata.product)")
	_ = c.MarkFlagRequired("file")
	_ = c.MarkFlagRequired("justification")
	return c
}

func versionLabel(v int) string {
	if v == 0 {
		return "built-in default"
	}
	return "version " + strconv.Itoa(v)
}

func policyShowCmd(e *env) *cobra.Command {
	var product, version string
	c := &cobra.Command{
		Use:   "show [--product P] [--version N|latest]",
		Short: "Show a product's policy document (without --product: the built-in default)",
		Long: "Show prints the policy document in force for a product, or version N (0 is the built-in\n" +
			"default rendered for the product). Without --product it prints the built-in default offline.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if product == "" {
				if version != "latest" && version != "0" {
					return usageError(errors.New("--version needs --product"))
				}
				def := keyward.DefaultPolicy()
				def.Product = "my-product"
				doc := string(policy.Format(def))
				return e.print(api.PolicyVersion{Version: 0, Builtin: true, Document: doc, Author: "keyward", Justification: "built-in default"},
					func(w io.Writer) {
						fmt.Fprintln(w, "# The built-in default policy (docs/policy.md). To start your own, set")
						fmt.Fprintln(w, "# metadata.product to your product's name, edit, and `keyward policy apply -f`.")
						io.WriteString(w, doc)
					})
			}
			if version != "latest" {
				if n, err := strconv.Atoi(version); err != nil || n < 0 {
					return usageError(fmt.Errorf("--version %q: want latest, 0 (built-in default) or a version number", version))
				}
			}
			var out api.PolicyVersion
			if err := e.client().do(e.ctx, "GET", productPath(product)+"/"+url.PathEscape(version), nil, &out); err != nil {
				return err
			}
			return e.print(out, func(w io.Writer) {
				// The header is a YAML comment: the output is still a valid
				// document to edit and apply.
				if out.Builtin {
					fmt.Fprintf(w, "# %s: built-in default (no policy applied)\n", product)
				} else {
					fmt.Fprintf(w, "# %s: policy version %d, applied %s by %s: %s\n", product, out.Version,
						out.CreatedAt.Format(time.RFC3339), author(out), oneLine(out.Justification))
				}
				io.WriteString(w, out.Document)
			})
		},
	}
	c.Flags().StringVar(&product, "product", "", "product id or name")
	c.Flags().StringVar(&version, "version", "latest", "version: latest, 0 (built-in default) or N")
	return c
}

func author(v api.PolicyVersion) string {
	if v.AuthorName != "" {
		return v.AuthorName
	}
	return v.Author
}

func oneLine(s string) string { return strings.Join(strings.Fields(s), " ") }

func policyHistoryCmd(e *env) *cobra.Command {
	var product string
	c := &cobra.Command{
		Use:   "history --product P",
		Short: "List the applied versions of a product's policy",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			var out struct {
				Versions []api.PolicyVersion `json:"versions"`
			}
			if err := e.client().do(e.ctx, "GET", productPath(product), nil, &out); err != nil {
				return err
			}
			return e.print(out.Versions, func(w io.Writer) {
				fmt.Fprintln(w, "VERSION\tAPPLIED\tAUTHOR\tHASH\tJUSTIFICATION")
				for _, v := range out.Versions {
					just := oneLine(v.Justification)
					if v.RollbackOf > 0 {
						just = fmt.Sprintf("(rollback to %d) %s", v.RollbackOf, just)
					}
					fmt.Fprintf(w, "%d\t%s\t%s\t%.12s\t%s\n", v.Version, v.CreatedAt.Format(time.RFC3339), author(v), v.Hash, just)
				}
			})
		},
	}
	c.Flags().StringVar(&product, "product", "", "product id or name")
	_ = c.MarkFlagRequired("product")
	return c
}

func policyDiffCmd(e *env) *cobra.Command {
	var product string
	c := &cobra.Command{
		Use:   "diff --product P A B",
		Short: "Show the diff between two versions of a product's policy (0 = built-in default)",
		Args:  cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			for _, a := range args {
				if n, err := strconv.Atoi(a); err != nil || n < 0 {
					return usageError(fmt.Errorf("version %q: want 0 (built-in default) or a version number", a))
				}
			}
			var out api.PolicyDiff
			q := url.Values{"from": {args[0]}, "to": {args[1]}}
			if err := e.client().do(e.ctx, "GET", productPath(product)+"/diff?"+q.Encode(), nil, &out); err != nil {
				return err
			}
			return e.print(out, func(w io.Writer) { io.WriteString(w, out.Diff) })
		},
	}
	c.Flags().StringVar(&product, "product", "", "product id or name")
	_ = c.MarkFlagRequired("product")
	return c
}

func policyRollbackCmd(e *env) *cobra.Command {
	var product, justification string
	c := &cobra.Command{
		Use:   "rollback --product P N --justification TEXT",
		Short: "Make a new version of a product's policy equal to version N",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			n, err := strconv.Atoi(args[0])
			if err != nil || n < 1 {
				return usageError(fmt.Errorf("version %q: want a version number (1 or more)", args[0]))
			}
			var out api.PolicyChange
			if err := e.client().do(e.ctx, "POST", productPath(product)+"/"+strconv.Itoa(n)+"/rollback",
				map[string]string{"justification": justification}, &out); err != nil {
				return err
			}
			return e.print(out, func(w io.Writer) {
				fmt.Fprintf(w, "policy version %d of %s restores version %d (previous: %s)\n", out.Version, product, n, versionLabel(out.PreviousVersion))
				io.WriteString(w, out.Diff)
			})
		},
	}
	c.Flags().StringVar(&product, "product", "", "product id or name")
	c.Flags().StringVar(&justification, "justification", "", "why (kept with the version and audited)")
	_ = c.MarkFlagRequired("product")
	_ = c.MarkFlagRequired("justification")
	return c
}

// problemLine formats a problem as FILE:LINE: path: message.
func problemLine(file string, p policy.Problem) string {
	if p.Line > 0 {
		return fmt.Sprintf("%s:%d: %s", file, p.Line, p)
	}
	return fmt.Sprintf("%s: %s", file, p)
}

// lintFile reads, parses and lints a policy file offline.
func lintFile(file string, dev bool) (*policy.Document, policy.Problems, error) {
	data, err := readSmallFile(file)
	if err != nil {
		return nil, nil, err
	}
	d, ps := policy.Check(data, policy.LintOptions{Dev: dev, Permissions: authority.PolicyPermissions()})
	return d, ps, nil
}

func policyLintCmd(e *env) *cobra.Command {
	var dev bool
	c := &cobra.Command{
		Use:   "lint FILE",
		Short: "Check a policy document offline; exit status 1 lists every problem",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			file := args[0]
			_, ps, err := lintFile(file, dev)
			if err != nil {
				return err
			}
			if ps == nil {
				ps = policy.Problems{}
			}
			if err := e.print(map[string]any{"file": file, "problems": ps}, func(w io.Writer) {
				if len(ps) == 0 {
					fmt.Fprintf(w, "%s: ok\n", file)
				}
				for _, p := range ps {
					fmt.Fprintln(w, problemLine(file, p))
				}
			}); err != nil {
				return err
			}
			if len(ps) > 0 {
				fmt.Fprintf(e.stderr, "keyward: %s: %d problem(s)\n", file, len(ps))
				return errSilent{code: 1}
			}
			return nil
		},
	}
	c.Flags().BoolVar(&dev, "dev", false, "lint for a --dev server (allows approvals: 0)")
	return c
}

// caseJSON is one case result in `policy test -o json`.
type caseJSON struct {
	Name  string            `json:"name"`
	Pass  bool              `json:"pass"`
	Want  []string          `json:"want"`
	Got   []policy.Decision `json:"got"`
	Error string            `json:"error,omitempty"`
}

func policyTestCmd(e *env) *cobra.Command {
	var dev bool
	c := &cobra.Command{
		Use:   "test POLICY CASES",
		Short: "Run test cases against a policy offline, like opa test; exit status 1 if any fails",
		Long: "Test lints POLICY, then runs each case of CASES (kind LifecyclePolicyTest: a state of signing\n" +
			"keys and/or a license with usage at a time `now`, and the decisions expected) and prints PASS or\n" +
			"FAIL per case. See examples/policy-cases.yaml and docs/policy.md.",
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			d, ps, err := lintFile(args[0], dev)
			if err != nil {
				return err
			}
			if len(ps) > 0 {
				for _, p := range ps {
					fmt.Fprintln(e.stderr, problemLine(args[0], p))
				}
				return fmt.Errorf("%s: %d problem(s): fix them (keyward policy lint) before testing", args[0], len(ps))
			}
			compiled, err := policy.Compile(d.Policy())
			if err != nil {
				return fmt.Errorf("%s: %w", args[0], err)
			}
			data, err := readSmallFile(args[1])
			if err != nil {
				return err
			}
			cases, err := policy.ParseCases(data)
			if err != nil {
				return fmt.Errorf("%s: %w", args[1], err)
			}
			results := policy.RunCases(compiled, cases)
			failed := 0
			js := make([]caseJSON, 0, len(results))
			for _, r := range results {
				if !r.Pass {
					failed++
				}
				j := caseJSON{Name: r.Name, Pass: r.Pass, Want: expectStrings(r.Want), Got: r.Got}
				if j.Got == nil {
					j.Got = []policy.Decision{}
				}
				if r.Err != nil {
					j.Error = r.Err.Error()
				}
				js = append(js, j)
			}
			err = e.print(map[string]any{"passed": len(results) - failed, "failed": failed, "cases": js}, func(w io.Writer) {
				for _, r := range results {
					if r.Pass {
						fmt.Fprintf(w, "PASS  %s\n", r.Name)
						continue
					}
					fmt.Fprintf(w, "FAIL  %s\n", r.Name)
					fmt.Fprintf(w, "      want: %s\n", orNone(expectStrings(r.Want)))
					got := make([]string, len(r.Got))
					for i, d := range r.Got {
						got[i] = d.String()
					}
					fmt.Fprintf(w, "      got:  %s\n", orNone(got))
					if r.Err != nil {
						fmt.Fprintf(w, "      error: %v\n", r.Err)
					}
				}
				fmt.Fprintln(w, strings.Repeat("-", 72))
				fmt.Fprintf(w, "PASS: %d/%d\n", len(results)-failed, len(results))
				if failed > 0 {
					fmt.Fprintf(w, "FAIL: %d/%d\n", failed, len(results))
				}
			})
			if err != nil {
				return err
			}
			if failed > 0 {
				return errSilent{code: 1}
			}
			return nil
		},
	}
	c.Flags().BoolVar(&dev, "dev", false, "lint the policy for a --dev server (allows approvals: 0)")
	return c
}

func expectStrings(es []policy.Expectation) []string {
	out := make([]string, len(es))
	for i, e := range es {
		out[i] = e.String()
	}
	return out
}

func orNone(s []string) string {
	if len(s) == 0 {
		return "none"
	}
	return strings.Join(s, ", ")
}
