// Package cli is Keyward's command tree: the server command and the client
// commands that call the HTTP API, plus the offline ones (verify, kek).
// cmd/keyward only calls Run.
package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"regexp"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"
)

// env holds what every command shares.
type env struct {
	ctx    context.Context
	stdout io.Writer
	stderr io.Writer
	server string
	token  string
	output string
	otp    string // TOTP code sent with every request (--otp, KEYWARD_OTP)
}

func (e *env) client() *client {
	c := newClient(e.server, e.token)
	c.otp = e.otp
	return c
}

// print writes v as JSON with -o json, or through table otherwise.
func (e *env) print(v any, table func(w io.Writer)) error {
	switch e.output {
	case "json":
		enc := json.NewEncoder(e.stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(v)
	case "table", "":
		tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
		table(tw)
		return tw.Flush()
	default:
		return usageError(fmt.Errorf("unknown output format %q (want table or json)", e.output))
	}
}

// usageErr marks errors that deserve exit status 2.
type usageErr struct{ error }

func usageError(err error) error { return usageErr{err} }

// Run runs the command line args (args[0] is the program name) and returns
// the process exit status: 0 success, 1 failure, 2 usage error.
func Run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	e := &env{ctx: ctx, stdout: stdout, stderr: stderr}
	root := newRoot(e)
	root.SetArgs(args[1:])
	root.SetOut(stdout)
	root.SetErr(stderr)
	err := root.ExecuteContext(ctx)
	if err == nil {
		return 0
	}
	var ae *apiError
	var silent errSilent
	switch {
	case errors.As(err, &silent):
		return silent.code
	case errors.As(err, &ae):
		fmt.Fprintf(stderr, "keyward: %s: %s\n", ae.Code, ae.Detail)
		return 1
	case errors.As(err, new(usageErr)) || isCobraUsage(err):
		fmt.Fprintf(stderr, "keyward: %v\n", err)
		// Not only on "unknown flag": a key id beginning "-o" reads as
		// --output with a value, and the error is a missing argument.
		if kid := dashedKID(args[1:]); kid != "" {
			fmt.Fprintf(stderr, "keyward: the key id %s begins with \"-\", which reads as flags: put \"--\" before it, after the flags (e.g. keyward key show -- %s)\n", kid, kid)
		}
		if f := flagAfterDashes(args[1:]); f != "" {
			fmt.Fprintf(stderr, "keyward: %s comes after \"--\", so it reads as an argument: put flags before \"--\" (e.g. keyward key revoke --reason key_compromise -- KID)\n", f)
		}
		return 2
	default:
		fmt.Fprintf(stderr, "keyward: %v\n", err)
		return 1
	}
}

// kidLike matches a key id (a base64url SHA-256 JWK thumbprint, 43
// characters) that begins with "-", as one in 64 do.
var kidLike = regexp.MustCompile(`^-[A-Za-z0-9_-]{42}$`)

// dashedKID returns the first argument that is a key id beginning with "-".
func dashedKID(args []string) string {
	for _, a := range args {
		if a == "--" {
			return ""
		}
		if kidLike.MatchString(a) {
			return a
		}
	}
	return ""
}

// flagAfterDashes returns the first argument after "--" that looks like a
// flag ("--reason"): after "--" it is read as an argument.
func flagAfterDashes(args []string) string {
	for i, a := range args {
		if a == "--" {
			for _, b := range args[i+1:] {
				if strings.HasPrefix(b, "--") && len(b) > 2 {
					return b
				}
			}
			return ""
		}
	}
	return ""
}

func isCobraUsage(err error) bool {
	s := err.Error()
	for _, p := range []string{"unknown command", "unknown flag", "unknown shorthand flag", "accepts ", "requires at least", "required flag", "invalid argument", "flag needs an argument", "if any flags in the group"} {
		if strings.Contains(s, p) {
			return true
		}
	}
	return false
}

func newRoot(e *env) *cobra.Command {
	root := &cobra.Command{
		Use:           "keyward",
		Short:         "Keyward manages license keys and the signing keys behind them",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	pf := root.PersistentFlags()
	pf.StringVar(&e.server, "server", envOr("KEYWARD_ADDR", "http://127.0.0.1:8080"), "server address (KEYWARD_ADDR)")
	pf.StringVar(&e.token, "token", os.Getenv("KEYWARD_TOKEN"), "API token (KEYWARD_TOKEN)")
	pf.StringVarP(&e.output, "output", "o", "table", "output format: table or json")
	pf.StringVar(&e.otp, "otp", os.Getenv("KEYWARD_OTP"), "TOTP code for actions the policy lists under mfa (KEYWARD_OTP)")
	root.AddCommand(
		serverCmd(e), productCmd(e), keyCmd(e), licenseCmd(e), verifyCmd(e), kekCmd(e), tokenCmd(e),
		webhookCmd(e), auditCmd(e), policyCmd(e), revocationsCmd(e), drillCmd(e),
		approvalCmd(e), exceptionCmd(e), mfaCmd(e), migrateCmd(e),
	)
	return root
}

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}
