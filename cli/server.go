package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/keyward/keyward"
	"github.com/keyward/keyward/api"
	"github.com/keyward/keyward/audit"
	"github.com/keyward/keyward/authority"
	"github.com/keyward/keyward/keys"
	"github.com/keyward/keyward/revocation"
	"github.com/keyward/keyward/scheduler"
	"github.com/keyward/keyward/store"
	"github.com/keyward/keyward/store/postgres"
	"github.com/keyward/keyward/store/sqlite"
	"github.com/keyward/keyward/webhook"
	"github.com/spf13/cobra"
)

// ServerConfig configures `keyward server`.
type ServerConfig struct {
	Dev      bool
	DataDir  string // holds the KEK file, the SQLite database and admin.token
	DB       string // "sqlite:PATH" or "" for DataDir/keyward.db
	Listen   string
	KEKFile  string // "" = DataDir/kek
	Keystore string // "local"
	Issuer   string
	Logger   *slog.Logger
	Stdout   io.Writer // where the first-start admin token is announced
	Clock    keyward.Clock
	// Revocations tunes the revocation registry (snapshot TTL, stream
	// heartbeat, poll interval); its Clock and Logger are the server's.
	Revocations revocation.Config
	// WebhookAllowPrivate lets webhook endpoints name loopback and private
	// addresses (always on with Dev); production leaves it off (SSRF).
	WebhookAllowPrivate bool
	// CheckpointInterval is how often new audit entries get a signed
	// checkpoint (0 = authority.DefaultCheckpointInterval).
	CheckpointInterval time.Duration
	// SchedulerInterval is the time between lifecycle scheduler ticks
	// (0 = scheduler.DefaultInterval); negative disables the scheduler
	// (tests that drive lifecycle steps themselves).
	SchedulerInterval time.Duration
	// TrustForwardedFor lists the reverse proxies (networks) whose
	// X-Forwarded-For header gives the client address the usage counters
	// count (--trust-forwarded-for; docs/abuse.md). Empty: the peer.
	TrustForwardedFor []netip.Prefix
}

// RunningServer is a started server.
type RunningServer struct {
	Addr      string // host:port actually listened on
	Authority *authority.Authority
	Metrics   *api.Metrics
	// Revocations serves the revocation registry and its push stream.
	Revocations *revocation.Registry
	// Checkpoints signs audit checkpoints; the server runs it in the
	// background until Shutdown.
	Checkpoints *authority.Checkpointer
	store       store.Store
	http        *http.Server
	done        chan error
	stopAudit   context.CancelFunc
	auditDone   chan struct{}
	stopTouches context.CancelFunc
	touchesDone chan struct{}
	// Webhooks delivers outbox events to webhook endpoints in the
	// background until Shutdown.
	Webhooks     *webhook.Dispatcher
	stopWebhooks context.CancelFunc
	webhooksDone chan struct{}
	// Scheduler runs the lifecycle steps in the background until Shutdown
	// (nil when disabled).
	Scheduler     *scheduler.Scheduler
	stopScheduler context.CancelFunc
	schedulerDone chan struct{}
	// The change feed of a store shared with other replicas (nil without).
	stopFeed context.CancelFunc
	feedDone chan struct{}
}

// Shutdown stops accepting requests, waits for in-flight ones (up to ctx)
// and closes the store.
func (s *RunningServer) Shutdown(ctx context.Context) error {
	// Close the revocation hub first: it ends the SSE streams, which
	// http.Server.Shutdown would otherwise wait for until ctx expires.
	s.Revocations.Close()
	err := s.http.Shutdown(ctx)
	if e := <-s.done; e != nil && !errors.Is(e, http.ErrServerClosed) && err == nil {
		err = e
	}
	s.stopTouches() // after HTTP: the last validations' last-seen times are flushed
	<-s.touchesDone
	s.stopAudit()
	<-s.auditDone
	s.stopWebhooks()
	<-s.webhooksDone
	if s.Scheduler != nil {
		s.stopScheduler()
		<-s.schedulerDone
	}
	if s.stopFeed != nil {
		s.stopFeed()
		<-s.feedDone
	}
	if e := s.store.Close(); e != nil && err == nil {
		err = e
	}
	return err
}

// StartServer opens (and on first start creates) everything the server
// needs and starts serving. In dev mode it creates the data directory, a
// KEK file and a demo product; in every mode the first start writes an
// admin token to DataDir/admin.token.
func StartServer(ctx context.Context, cfg ServerConfig) (*RunningServer, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Stdout == nil {
		cfg.Stdout = io.Discard
	}
	if cfg.Keystore != "" && cfg.Keystore != "local" {
		return nil, fmt.Errorf("keystore %q is not supported yet: only \"local\" (KEK-sealed keys) is implemented; PKCS#11 is planned (spec section 9)", cfg.Keystore)
	}
	if cfg.DataDir == "" {
		return nil, errors.New("no data directory (use --data-dir, or --dev for ./keyward-data)")
	}
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("data directory: %w", err)
	}
	kekFile := cfg.KEKFile
	if kekFile == "" {
		kekFile = filepath.Join(cfg.DataDir, "kek")
	}
	ring, err := keys.LoadKEKFile(kekFile)
	if errors.Is(err, os.ErrNotExist) && cfg.Dev {
		k, gerr := keys.GenerateKEK(nil)
		if gerr != nil {
			return nil, gerr
		}
		ring = keys.NewKEKRing(k)
		if err = keys.WriteKEKFile(kekFile, ring); err == nil {
			cfg.Logger.Info("generated KEK file", "path", kekFile)
		}
	}
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("KEK file %s does not exist: create one with `keyward kek generate --out %s` (or use --dev)", kekFile, kekFile)
		}
		return nil, fmt.Errorf("KEK file: %w", err)
	}
	st, err := openServerStore(ctx, cfg)
	if err != nil {
		return nil, err
	}
	rs, err := startWithStore(ctx, cfg, st, ring)
	if err != nil {
		st.Close()
		return nil, err
	}
	return rs, nil
}

// openServerStore opens the database cfg.DB names: PostgreSQL for a
// postgres:// URL (several replicas may share it; docs/postgres.md), else
// the SQLite file (created owner-only on first start).
func openServerStore(ctx context.Context, cfg ServerConfig) (store.Store, error) {
	if isPostgresURL(cfg.DB) {
		st, err := postgres.Open(ctx, cfg.DB, postgres.Options{Logger: cfg.Logger})
		if err != nil {
			return nil, err
		}
		return st, nil
	}
	dbPath, err := sqlitePath(cfg.DB, cfg.DataDir)
	if err != nil {
		return nil, err
	}
	// The database holds sealed keys and hashes: owner-only, like the KEK.
	// SQLite gives its -wal and -shm files the database file's mode.
	if f, err := os.OpenFile(dbPath, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600); err == nil {
		f.Close()
	}
	st, err := sqlite.Open(ctx, dbPath)
	if err != nil {
		return nil, err
	}
	return st, nil
}

// isPostgresURL reports whether db names a PostgreSQL database.
func isPostgresURL(db string) bool {
	return strings.HasPrefix(db, "postgres://") || strings.HasPrefix(db, "postgresql://")
}

// sqlitePath returns the SQLite file db names ("" = DATA-DIR/keyward.db).
func sqlitePath(db, dataDir string) (string, error) {
	switch {
	case db == "":
		return filepath.Join(dataDir, "keyward.db"), nil
	case strings.HasPrefix(db, "sqlite:") && len(db) > len("sqlite:"):
		return strings.TrimPrefix(db, "sqlite:"), nil
	default:
		return "", fmt.Errorf("database %q: want sqlite:PATH or postgres://…", db)
	}
}

func startWithStore(ctx context.Context, cfg ServerConfig, st store.Store, ring *keys.KEKRing) (*RunningServer, error) {
	// The authority's commits that append an outbox event wake the webhook
	// dispatcher; the dispatcher itself uses the plain store.
	wake := make(chan struct{}, 1)
	allowPrivate := cfg.WebhookAllowPrivate || cfg.Dev
	// Commits that append a revocation row wake the revocation registry.
	rcfg := cfg.Revocations
	rcfg.Clock, rcfg.Logger = cfg.Clock, cfg.Logger
	reg := revocation.New(rcfg)
	// Commits that start a re-sign job wake the lifecycle scheduler.
	schedWake := make(chan struct{}, 1)
	auth, err := authority.New(ctx, authority.Config{Store: scheduler.WakeOnResign(webhook.WakeOnEvents(store.NotifyRevocations(st, reg.Notify), wake), schedWake), KEKs: ring, Logger: cfg.Logger, Issuer: cfg.Issuer, Clock: cfg.Clock, WebhookAllowPrivate: allowPrivate, Dev: cfg.Dev})
	if err != nil {
		return nil, err
	}
	if !audit.ValidOrigin(auth.AuditOrigin()) {
		return nil, fmt.Errorf("issuer %q cannot name audit checkpoints (their origin and note key name): use one without spaces or '+'", auth.AuditOrigin())
	}
	sys := keyward.NewContextWithPrincipal(ctx, keyward.Principal{ID: "system", Name: "keyward server"})
	if err := bootstrap(sys, cfg, auth); err != nil {
		return nil, err
	}
	disp, err := webhook.New(webhook.Config{Store: st, Endpoints: auth, Clock: cfg.Clock, AllowPrivate: allowPrivate, Wake: wake, Logger: cfg.Logger})
	if err != nil {
		return nil, err
	}
	if err := reg.Start(ctx, auth); err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		reg.Close()
		return nil, fmt.Errorf("listen: %w", err)
	}
	metrics := api.NewMetrics()
	h := api.New(api.Config{Authority: auth, Logger: cfg.Logger, Metrics: metrics, Revocations: reg, TrustedProxies: cfg.TrustForwardedFor, Ready: func(ctx context.Context) error {
		if err := st.Ping(ctx); err != nil {
			return err
		}
		_, err := auth.JWKS(ctx, "")
		return err
	}})
	hs := api.NewHTTPServer(ln.Addr().String(), h, cfg.Logger)
	hs.RegisterOnShutdown(reg.Close) // ends the revocation streams, which never go idle
	rs := &RunningServer{Addr: ln.Addr().String(), Authority: auth, Metrics: metrics, Revocations: reg, store: st, http: hs, done: make(chan error, 1)}
	rs.Checkpoints = authority.NewCheckpointer(auth, cfg.Logger)
	actx, stop := context.WithCancel(context.WithoutCancel(ctx))
	rs.stopAudit, rs.auditDone = stop, make(chan struct{})
	go func() { defer close(rs.auditDone); rs.Checkpoints.Run(actx, cfg.CheckpointInterval) }()
	tctx, tstop := context.WithCancel(context.Background())
	rs.stopTouches, rs.touchesDone = tstop, make(chan struct{})
	go func() { defer close(rs.touchesDone); auth.RunTouchFlusher(tctx, 10*time.Second) }()
	wctx, stopWebhooks := context.WithCancel(context.WithoutCancel(ctx))
	rs.Webhooks, rs.stopWebhooks, rs.webhooksDone = disp, stopWebhooks, make(chan struct{})
	go func() { defer close(rs.webhooksDone); _ = disp.Run(wctx) }()
	if cfg.SchedulerInterval >= 0 {
		sched, err := scheduler.New(scheduler.Config{Authority: auth, Store: st, Interval: cfg.SchedulerInterval, Logger: cfg.Logger, Wake: schedWake})
		if err != nil {
			return nil, err
		}
		sctx, stopScheduler := context.WithCancel(context.WithoutCancel(ctx))
		rs.Scheduler, rs.stopScheduler, rs.schedulerDone = sched, stopScheduler, make(chan struct{})
		go func() { defer close(rs.schedulerDone); _ = sched.Run(sctx) }()
	}
	if feed, ok := st.(store.ChangeFeed); ok {
		rs.stopFeed, rs.feedDone = followReplicas(ctx, feed, cfg.Logger, auth, reg, wake, schedWake)
	}
	go func() { rs.done <- hs.Serve(ln) }()
	cfg.Logger.Info("keyward listening", "addr", rs.Addr, "dev", cfg.Dev)
	return rs, nil
}

// bootstrap creates the admin token on first start and, in dev mode, the
// demo product. Both are skipped when they already exist.
func bootstrap(ctx context.Context, cfg ServerConfig, auth *authority.Authority) error {
	has, err := auth.HasTokens(ctx)
	if err != nil {
		return err
	}
	tokenFile := filepath.Join(cfg.DataDir, "admin.token")
	if !has {
		_, secret, err := auth.CreateToken(ctx, authority.TokenRequest{Name: "bootstrap admin", Roles: []string{keyward.RoleAdmin}})
		if err != nil {
			return err
		}
		if err := os.WriteFile(tokenFile, []byte(secret+"\n"), 0o600); err != nil {
			return fmt.Errorf("write admin token: %w", err)
		}
		fmt.Fprintf(cfg.Stdout, "admin token (also in %s):\n  %s\n", tokenFile, secret)
		if cfg.Dev {
			// A second principal, so the four-eyes flow can be tried at
			// once (docs/governance.md): it grants what the admin requests.
			approverFile := filepath.Join(cfg.DataDir, "approver.token")
			_, secret, err := auth.CreateToken(ctx, authority.TokenRequest{Name: "dev approver", Roles: []string{keyward.RoleApprover}})
			if err != nil {
				return err
			}
			if err := os.WriteFile(approverFile, []byte(secret+"\n"), 0o600); err != nil {
				return fmt.Errorf("write approver token: %w", err)
			}
			fmt.Fprintf(cfg.Stdout, "approver token (a second principal, also in %s):\n  %s\n", approverFile, secret)
		}
	} else if cfg.Dev {
		fmt.Fprintf(cfg.Stdout, "admin token: see %s\n", tokenFile)
	}
	if cfg.Dev {
		if _, err := auth.Product(ctx, "demo"); keyward.ErrorCode(err) == keyward.ENotFound {
			// EConflict: a replica starting at the same time made it.
			if _, err := auth.CreateProduct(ctx, "demo"); err != nil && keyward.ErrorCode(err) != keyward.EConflict {
				return fmt.Errorf("create demo product: %w", err)
			}
		} else if err != nil {
			return err
		}
	}
	return nil
}

func serverCmd(e *env) *cobra.Command {
	var cfg ServerConfig
	var logLevel, logFormat string
	var trustXFF []string
	var pprofAddr string
	c := &cobra.Command{
		Use:   "server",
		Short: "Run the Keyward server",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			var lvl slog.Level
			if err := lvl.UnmarshalText([]byte(logLevel)); err != nil {
				return usageError(fmt.Errorf("log level %q: want debug, info, warn or error", logLevel))
			}
			opts := &slog.HandlerOptions{Level: lvl}
			switch logFormat {
			case "text":
				cfg.Logger = slog.New(slog.NewTextHandler(e.stderr, opts))
			case "json":
				cfg.Logger = slog.New(slog.NewJSONHandler(e.stderr, opts))
			default:
				return usageError(fmt.Errorf("log format %q: want text or json", logFormat))
			}
			cfg.Stdout = e.stdout
			proxies, err := parseProxies(trustXFF)
			if err != nil {
				return usageError(err)
			}
			cfg.TrustForwardedFor = proxies
			if cfg.Dev && cfg.DataDir == "" {
				cfg.DataDir = "keyward-data"
			}
			if cfg.DB == "" {
				cfg.DB = os.Getenv("KEYWARD_DB")
			}
			var stopPprof func()
			if pprofAddr != "" {
				if _, stopPprof, err = servePprof(pprofAddr, cfg.Logger); err != nil {
					return err
				}
				defer stopPprof()
			}
			rs, err := StartServer(e.ctx, cfg)
			if err != nil {
				return err
			}
			fmt.Fprintf(e.stdout, "keyward listening on http://%s\n", rs.Addr)
			<-e.ctx.Done()
			sctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
			defer cancel()
			cfg.Logger.Info("shutting down")
			return rs.Shutdown(sctx)
		},
	}
	f := c.Flags()
	f.BoolVar(&cfg.Dev, "dev", false, "development mode: ./keyward-data with a generated KEK and a demo product")
	f.StringVar(&cfg.DataDir, "data-dir", "", "data directory (default with --dev: ./keyward-data)")
	f.StringVar(&cfg.DB, "db", "", "database: sqlite:PATH (default DATA-DIR/keyward.db) or postgres://… for several replicas (KEYWARD_DB)")
	f.StringVar(&cfg.Listen, "listen", "127.0.0.1:8080", "listen address")
	f.StringVar(&cfg.KEKFile, "kek-file", "", "KEK file (default DATA-DIR/kek)")
	f.StringVar(&cfg.Keystore, "keystore", "local", "keystore: local (pkcs11 is not implemented yet)")
	f.StringVar(&cfg.Issuer, "issuer", "keyward", "issuer (iss) of certificates and leases; also the origin of audit checkpoints")
	f.DurationVar(&cfg.CheckpointInterval, "checkpoint-interval", authority.DefaultCheckpointInterval, "how often new audit entries get a signed checkpoint")
	f.DurationVar(&cfg.SchedulerInterval, "scheduler-interval", scheduler.DefaultInterval, "time between lifecycle scheduler ticks (rotation, re-signing, expiry, destruction)")
	f.BoolVar(&cfg.WebhookAllowPrivate, "webhook-allow-private", false, "let webhook endpoints name loopback and private addresses (implied by --dev; unsafe in production: SSRF)")
	f.StringSliceVar(&trustXFF, "trust-forwarded-for", nil, "reverse proxies (addresses or CIDR networks, comma-separated) whose X-Forwarded-For gives the client address for abuse counters; default: trust none")
	f.StringVar(&logLevel, "log-level", "info", "debug, info, warn or error")
	f.StringVar(&logFormat, "log-format", "text", "text or json (structured logs on stderr)")
	f.StringVar(&pprofAddr, "pprof", "", "serve Go's profiler (/debug/pprof/) on this loopback address, e.g. 127.0.0.1:6060; off by default (docs/benchmarks.md)")
	// A diagnostic for measuring the server, not an operating option: it
	// stays out of --help.
	_ = f.MarkHidden("pprof")
	return c
}

// servePprof serves net/http/pprof's handlers on addr, which must be a
// loopback address: profiles show the server's code paths and heap
// contents (which can hold secrets) and CPU profiling costs time, so they
// are never exposed beyond the machine. The handlers are on their own mux,
// apart from the API. It returns the address listened on and a func that
// stops the listener; an address it refuses is a usage error (exit 2), a
// port it cannot listen on is not.
func servePprof(addr string, log *slog.Logger) (string, func(), error) {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return "", nil, usageError(fmt.Errorf("--pprof %q: %w", addr, err))
	}
	// An IP literal only: a name could resolve to anything.
	if ip, err := netip.ParseAddr(host); err != nil || !ip.IsLoopback() {
		return "", nil, usageError(fmt.Errorf("--pprof %q: want a loopback IP address and port (127.0.0.1:PORT or [::1]:PORT)", addr))
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return "", nil, fmt.Errorf("--pprof: %w", err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	log.Warn("profiler listening (diagnostics only)", "addr", ln.Addr().String())
	return ln.Addr().String(), func() { srv.Close() }, nil
}
