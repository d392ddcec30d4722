package cli

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/keyward/keyward"
	"github.com/keyward/keyward/authority"
	"github.com/keyward/keyward/keys"
	"github.com/keyward/keyward/sdk"
	"github.com/spf13/cobra"
)

// maxFile bounds files read by offline commands.
const maxFile = 4 << 20

func readSmallFile(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxFile+1))
	if err != nil {
		return nil, err
	}
	if len(b) > maxFile {
		return nil, fmt.Errorf("%s: larger than %d bytes", path, maxFile)
	}
	return b, nil
}

func verifyCmd(e *env) *cobra.Command {
	var certFile, leaseFile, jwksFile, issuer, audience, revocationsFile string
	var revocationsGrace time.Duration
	c := &cobra.Command{
		Use:   "verify (--cert FILE | --lease FILE) --jwks FILE [--revocations FILE]",
		Short: "Verify a license certificate or lease offline, with no server",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if (certFile == "") == (leaseFile == "") {
				return usageError(errors.New("give exactly one of --cert or --lease"))
			}
			data, err := readSmallFile(jwksFile)
			if err != nil {
				return fmt.Errorf("jwks: %w", err)
			}
			set, err := sdk.ParseJWKS(data)
			if err != nil {
				return fmt.Errorf("jwks %s: %w", jwksFile, err)
			}
			opts := sdk.Options{Issuer: issuer, Audience: audience}
			var checked map[string]any // what the revocation check used, if any
			if revocationsFile != "" {
				if opts.Revocations, checked, err = loadRevocations(set, revocationsFile, issuer, audience, revocationsGrace); err != nil {
					return err
				}
			}
			v, err := sdk.NewVerifier(set, opts)
			if err != nil {
				return err
			}
			file := certFile
			if file == "" {
				file = leaseFile
			}
			tok, err := readSmallFile(file)
			if err != nil {
				return err
			}
			token := strings.TrimSpace(string(tok))
			if certFile != "" {
				c, err := v.VerifyCertificate(token)
				if err != nil {
					return fmt.Errorf("certificate %s: %s", certFile, sdkDetail(err))
				}
				return e.print(map[string]any{"valid": true, "type": keyward.TypCertificate, "claims": c, "revocations": checked}, func(w io.Writer) {
					fmt.Fprintf(w, "valid:\ttrue\nlicense:\t%s\nproduct:\t%s\nholder:\t%s\nentitlements:\t%s\nexpires:\t%s\n",
						c.Subject, c.Audience, c.License.Holder, strings.Join(c.License.Entitlements, ","), time.Unix(c.Expiry, 0).UTC().Format(time.RFC3339))
					revocationsLine(w, checked)
				})
			}
			l, err := v.VerifyLease(token)
			if err != nil {
				return fmt.Errorf("lease %s: %s", leaseFile, sdkDetail(err))
			}
			return e.print(map[string]any{"valid": true, "type": keyward.TypLease, "claims": l, "revocations": checked}, func(w io.Writer) {
				fmt.Fprintf(w, "valid:\ttrue\nlicense:\t%s\nmachine:\t%s\nexpires:\t%s\n", l.Subject, l.Machine, time.Unix(l.Expiry, 0).UTC().Format(time.RFC3339))
				revocationsLine(w, checked)
			})
		},
	}
	c.Flags().StringVar(&certFile, "cert", "", "license certificate file (JWS)")
	c.Flags().StringVar(&leaseFile, "lease", "", "lease token file (JWS)")
	c.Flags().StringVar(&jwksFile, "jwks", "", "trust bundle: the server's /.well-known/jwks.json (required)")
	c.Flags().StringVar(&issuer, "issuer", "", "required issuer (iss)")
	c.Flags().StringVar(&audience, "product", "", "required product (aud)")
	c.Flags().StringVar(&revocationsFile, "revocations", "", "also check a saved revocation snapshot (`keyward revocations get --out FILE`)")
	c.Flags().DurationVar(&revocationsGrace, "revocations-grace", sdk.DefaultOfflineGrace, "how long after its next_update a saved snapshot is still used")
	_ = c.MarkFlagRequired("jwks")
	return c
}

// sdkDetail is an SDK verification error without the "keyward: " its
// message begins with, which the CLI prints once already.
func sdkDetail(err error) string {
	return strings.TrimPrefix(err.Error(), "keyward: ")
}

func kekCmd(e *env) *cobra.Command {
	c := &cobra.Command{Use: "kek", Short: "Manage the key-encryption key (offline)"}
	var out string
	gen := &cobra.Command{
		Use: "generate --out FILE", Short: "Write a new KEK file (mode 0600)", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if _, err := os.Stat(out); err == nil {
				return fmt.Errorf("%s exists: refusing to overwrite a KEK", out)
			}
			k, err := keys.GenerateKEK(nil)
			if err != nil {
				return err
			}
			if err := keys.WriteKEKFile(out, keys.NewKEKRing(k)); err != nil {
				return err
			}
			return e.print(map[string]string{"kek_id": k.ID(), "file": out}, func(w io.Writer) { fmt.Fprintf(w, "KEK %s written to %s\n", k.ID(), out) })
		},
	}
	gen.Flags().StringVar(&out, "out", "", "file to create (required)")
	_ = gen.MarkFlagRequired("out")

	var dataDir, db, kekFile string
	rotate := &cobra.Command{
		Use:   "rotate",
		Short: "Generate a new KEK and rewrap every private key and secret under it (stop the server first)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if kekFile == "" {
				kekFile = filepath.Join(dataDir, "kek")
			}
			if !isPostgresURL(db) {
				dbPath, err := sqlitePath(db, dataDir)
				if err != nil {
					return err
				}
				if _, err := os.Stat(dbPath); err != nil {
					return fmt.Errorf("database: %w", err)
				}
			}
			old, err := keys.LoadKEKFile(kekFile)
			if err != nil {
				return err
			}
			k, err := keys.GenerateKEK(nil)
			if err != nil {
				return err
			}
			// 1. The file first lists the new KEK as primary and keeps the old
			//    ones, so a crash at any point leaves every blob openable.
			both := keys.NewKEKRing(k, old.All()...)
			if err := keys.WriteKEKFile(kekFile, both); err != nil {
				return err
			}
			st, err := openServerStore(e.ctx, ServerConfig{DB: db, DataDir: dataDir})
			if err != nil {
				return err
			}
			defer st.Close()
			ctx := keyward.NewContextWithPrincipal(e.ctx, keyward.Principal{ID: "cli:kek-rotate", Name: "keyward kek rotate"})
			n, err := authority.RewrapAll(ctx, st, both, nil)
			if err != nil {
				return fmt.Errorf("rewrap (the KEK file keeps both KEKs; rerun to finish): %w", err)
			}
			// 2. Everything is under the new KEK: drop the old ones.
			if err := keys.WriteKEKFile(kekFile, keys.NewKEKRing(k)); err != nil {
				return err
			}
			return e.print(map[string]any{"kek_id": k.ID(), "rewrapped": n}, func(w io.Writer) {
				fmt.Fprintf(w, "new KEK %s; rewrapped %d blobs; old KEK removed from %s\n", k.ID(), n, kekFile)
			})
		},
	}
	rotate.Flags().StringVar(&dataDir, "data-dir", "keyward-data", "data directory")
	rotate.Flags().StringVar(&db, "db", "", "database sqlite:PATH (default DATA-DIR/keyward.db) or postgres://… (stop every replica first)")
	rotate.Flags().StringVar(&kekFile, "kek-file", "", "KEK file (default DATA-DIR/kek)")
	c.AddCommand(gen, rotate)
	return c
}
