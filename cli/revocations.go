package cli

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/keyward/keyward/api"
	"github.com/keyward/keyward/keys"
	"github.com/keyward/keyward/revocation"
	"github.com/keyward/keyward/sdk"
	"github.com/spf13/cobra"
)

// revocationsCmd is `keyward revocations get|watch`: the public revocation
// registry, every document verified against the registry keys.
func revocationsCmd(e *env) *cobra.Command {
	c := &cobra.Command{Use: "revocations", Short: "Read the signed revocation registry (verified)"}
	var product, jwksFile, out string
	var since int64
	get := &cobra.Command{
		Use:   "get [--product P] [--since SEQ] [--out FILE]",
		Short: "Fetch and verify the snapshot, or a delta with --since; -o json prints the verified content",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if cmd.Flags().Changed("since") && since < 0 {
				return usageError(fmt.Errorf("--since %d: want a seq >= 0", since))
			}
			cl := sdk.NewClient(e.server)
			cache, err := e.revocationCache(cl, product, jwksFile, sdk.RevocationOptions{})
			if err != nil {
				return err
			}
			var tok string
			if cmd.Flags().Changed("since") {
				tok, err = cl.RevocationDelta(e.ctx, product, since, 0)
			} else {
				tok, _, _, err = cl.RevocationSnapshot(e.ctx, product, "", 0)
			}
			if err != nil {
				return apiErr(err)
			}
			var v any
			var table func(io.Writer)
			if cmd.Flags().Changed("since") {
				d, err := cache.VerifyDelta(tok)
				if err != nil {
					return fmt.Errorf("delta refused: %w", err)
				}
				v, table = d, func(w io.Writer) { deltaTable(w, d) }
			} else {
				s, err := cache.VerifySnapshot(tok)
				if err != nil {
					return fmt.Errorf("snapshot refused: %w", err)
				}
				v, table = s, func(w io.Writer) { snapshotTable(w, s) }
			}
			if out != "" {
				if err := os.WriteFile(out, []byte(tok+"\n"), 0o644); err != nil {
					return err
				}
			}
			return e.print(v, table)
		},
	}
	get.Flags().StringVar(&product, "product", "", "only this product's view (name or id)")
	get.Flags().Int64Var(&since, "since", 0, "a delta from this seq instead of the snapshot")
	get.Flags().StringVar(&out, "out", "", "also save the signed document to FILE (for `keyward verify --revocations`)")
	get.Flags().StringVar(&jwksFile, "jwks", "", "trust bundle file (default: fetched from the server)")

	var wProduct, wJWKS string
	watch := &cobra.Command{
		Use:   "watch [--product P]",
		Short: "Follow the revocation stream and print each verified change as it arrives (Ctrl-C to stop)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			cl := sdk.NewClient(e.server)
			cache, err := e.revocationCache(cl, wProduct, wJWKS, sdk.RevocationOptions{})
			if err != nil {
				return err
			}
			var mu sync.Mutex
			enc := json.NewEncoder(e.stdout)
			w := &sdk.RevocationWatcher{
				Client: cl, Cache: cache, Product: wProduct, RefreshKeys: wJWKS == "",
				OnUpdate: func(u sdk.RevocationUpdate) {
					mu.Lock()
					defer mu.Unlock()
					if e.output == "json" {
						_ = enc.Encode(u)
						return
					}
					if u.Snapshot {
						s, _ := cache.State()
						fmt.Fprintf(e.stdout, "snapshot seq %d: %d licenses revoked or suspended, %d keys compromised\n", u.Seq, s.Licenses, s.Keys)
						return
					}
					for _, l := range u.Licenses {
						fmt.Fprintf(e.stdout, "seq %d\tlicense %s\t%s%s\t%s\n", l.Seq, l.ID, l.State, because(l.Reason), unix(l.Time))
					}
					for _, k := range u.Keys {
						fmt.Fprintf(e.stdout, "seq %d\tkey %s\tcompromised%s\t%s\n", k.Seq, k.KID, because(k.Reason), unix(k.Time))
					}
				},
				OnError: func(err error) { fmt.Fprintf(e.stderr, "keyward: revocations watch: %v (retrying)\n", err) },
			}
			if err := w.Run(e.ctx); err != nil && !errors.Is(err, context.Canceled) {
				return err
			}
			return nil
		},
	}
	watch.Flags().StringVar(&wProduct, "product", "", "only this product's view (name)")
	watch.Flags().StringVar(&wJWKS, "jwks", "", "trust bundle file (default: fetched from the server)")
	c.AddCommand(get, watch)
	return c
}

func because(reason string) string {
	if reason == "" {
		return ""
	}
	return " (" + reason + ")"
}

func unix(t int64) string { return time.Unix(t, 0).UTC().Format(time.RFC3339) }

// apiErr turns the SDK's *APIError into the CLI's, so Run prints the code.
func apiErr(err error) error {
	var ae *sdk.APIError
	if errors.As(err, &ae) && ae.Code != "" {
		return &apiError{Status: ae.Status, Code: ae.Code, Detail: ae.Detail}
	}
	return err
}

// revocationCache returns a cache trusting the registry keys of jwksFile, or
// of the server's JWKS (trusted as the channel to the server is).
func (e *env) revocationCache(cl *sdk.Client, product, jwksFile string, opts sdk.RevocationOptions) (*sdk.RevocationCache, error) {
	var set keys.JWKS
	if jwksFile != "" {
		data, err := readSmallFile(jwksFile)
		if err != nil {
			return nil, fmt.Errorf("jwks: %w", err)
		}
		if set, err = sdk.ParseJWKS(data); err != nil {
			return nil, fmt.Errorf("jwks %s: %w", jwksFile, err)
		}
	} else {
		var err error
		if set, err = cl.JWKS(e.ctx); err != nil {
			return nil, apiErr(err)
		}
	}
	if product != "" {
		// Documents name the product by name: resolve an id.
		name, err := productName(e, product)
		if err != nil {
			return nil, err
		}
		opts.Product = name
	}
	return sdk.NewRevocationCache(set, opts)
}

// productName returns the name of a product given by name or id, from the
// public JWKS labels (no token needed); a name is returned as is.
func productName(e *env, product string) (string, error) {
	if !strings.HasPrefix(product, "prd_") {
		return product, nil
	}
	var p api.Product
	if err := e.client().do(e.ctx, "GET", "/v1/products/"+url.PathEscape(product), nil, &p); err != nil {
		return "", err
	}
	return p.Name, nil
}

func snapshotTable(w io.Writer, s *revocation.Snapshot) {
	view := s.Product
	if view == "" {
		view = "(all products)"
	}
	fmt.Fprintf(w, "issuer:\t%s\nproduct:\t%s\nseq:\t%d\nissued at:\t%s\nnext update:\t%s\nlicenses:\t%d\ncompromised keys:\t%d\n",
		s.Issuer, view, s.Seq, unix(s.IssuedAt), unix(s.NextUpdate), len(s.Licenses), len(s.Keys))
	entriesTable(w, s.Licenses, s.Keys)
}

func deltaTable(w io.Writer, d *revocation.Delta) {
	fmt.Fprintf(w, "issuer:\t%s\nproduct:\t%s\nfrom seq:\t%d\nto seq:\t%d\nissued at:\t%s\nnext update:\t%s\n",
		d.Issuer, d.Product, d.FromSeq, d.ToSeq, unix(d.IssuedAt), unix(d.NextUpdate))
	entriesTable(w, d.Licenses, d.Keys)
}

func entriesTable(w io.Writer, ls []revocation.LicenseEntry, ks []revocation.KeyEntry) {
	if len(ls)+len(ks) == 0 {
		return
	}
	fmt.Fprintln(w, "\nSEQ\tKIND\tSUBJECT\tSTATE\tREASON\tTIME")
	for _, l := range ls {
		fmt.Fprintf(w, "%d\tlicense\t%s\t%s\t%s\t%s\n", l.Seq, l.ID, l.State, l.Reason, unix(l.Time))
	}
	for _, k := range ks {
		fmt.Fprintf(w, "%d\tkey\t%s\tcompromised\t%s\t%s\n", k.Seq, k.KID, k.Reason, unix(k.Time))
	}
}

// drillCmd is `keyward drill revocation`: it measures how fast a
// revocation reaches subscribers.
func drillCmd(e *env) *cobra.Command {
	c := &cobra.Command{Use: "drill", Short: "Exercise the running system and measure it"}
	var subscribers, count int
	var product, action, revokerToken, watch string
	var raw bool
	var timeout time.Duration
	rev := &cobra.Command{
		Use:   "revocation [--subscribers N] [--count M] [--action suspend|revoke]",
		Short: "Start N SDK watchers, suspend (or revoke) M test licenses, report commit-to-receipt latency",
		Long: `Starts N revocation watchers (the SDK's, each verifying every event) on the
push stream of a drill product, issues M test licenses (holder "drill-<run>"),
then suspends them one by one (request id "drill-<run>-<i>" in the audit
entries) and measures, for each watcher and change, the time from just
before the request was sent to the verified event being applied: an upper
bound on commit-to-receipt. It waits for every watcher before the next
change, so measurements do not overlap.

With --watch-server the watchers subscribe to another replica than the one
the changes go through: the figure is then propagation between replicas
(docs/deploy.md).

Suspension travels exactly the path of a revocation (registry row, push,
SDK check) but needs no second approval or MFA code and can be undone: at
the end the test licenses are reinstated and retired, so the registry's
current state keeps nothing of the drill. --action revoke revokes instead
(reason cessation_of_use), where the policy allows it without approval;
revoked is final, so those entries stay in the drill product's view.

Needs a token that may create products and issue, suspend, reinstate and
retire (or revoke) licenses.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if subscribers < 1 || subscribers > 100000 || count < 1 || count > 10000 {
				return usageError(fmt.Errorf("--subscribers %d, --count %d: want 1-100000 and 1-10000", subscribers, count))
			}
			if action != "suspend" && action != "revoke" {
				return usageError(fmt.Errorf("--action %q: want suspend or revoke", action))
			}
			res, err := runDrill(e, drillOptions{product: product, action: action, revokerToken: revokerToken, watch: watch, raw: raw, n: subscribers, m: count, timeout: timeout})
			if err != nil {
				return err
			}
			return e.print(res, func(w io.Writer) {
				fmt.Fprintf(w, "action:\t%s\nsubscribers:\t%d\nrevocations:\t%d\ndelivered:\t%d of %d\np50:\t%.1f ms\np95:\t%.1f ms\np99:\t%.1f ms\nmax:\t%.1f ms\n",
					res.Action, res.Subscribers, res.Revocations, res.Delivered, res.Expected, res.P50, res.P95, res.P99, res.Max)
				if res.Delivered != res.Expected {
					fmt.Fprintf(w, "MISSING:\t%d deliveries did not arrive within %s\n", res.Expected-res.Delivered, timeout)
				}
			})
		},
	}
	rev.Flags().IntVar(&subscribers, "subscribers", 100, "concurrent watchers")
	rev.Flags().IntVar(&count, "count", 10, "test licenses to suspend or revoke")
	rev.Flags().StringVar(&action, "action", "suspend", "suspend (then reinstate and retire) or revoke")
	rev.Flags().StringVar(&revokerToken, "revoker-token", "", "with --action revoke: a second principal's token for the revocations (separation of duties keeps the issuer from revoking)")
	rev.Flags().BoolVar(&raw, "raw", false, "subscribers read the event stream without the SDK and do not verify signatures: the server's push latency alone (diagnostic)")
	rev.Flags().StringVar(&watch, "watch-server", "", "watchers subscribe to this server instead of --server (another replica: measures propagation between replicas)")
	rev.Flags().StringVar(&product, "product", "keyward-drill", "drill product (created if missing)")
	rev.Flags().DurationVar(&timeout, "timeout", 30*time.Second, "how long to wait for each revocation to reach every watcher")
	c.AddCommand(rev)
	return c
}

// drillResult is the -o json form of a drill.
type drillResult struct {
	Subscribers int     `json:"subscribers"`
	Revocations int     `json:"revocations"`
	Expected    int     `json:"expected"`
	Delivered   int     `json:"delivered"`
	P50         float64 `json:"p50_ms"`
	P95         float64 `json:"p95_ms"`
	P99         float64 `json:"p99_ms"`
	Max         float64 `json:"max_ms"`
	Product     string  `json:"product"`
	Action      string  `json:"action"`
	Raw         bool    `json:"raw,omitempty"` // subscribers did not verify signatures
	Run         string  `json:"run"`
}

type drillOptions struct {
	product, action, revokerToken string
	watch                         string // subscribers' server ("" = e.server)
	raw                           bool
	n, m                          int
	timeout                       time.Duration
}

func runDrill(e *env, o drillOptions) (*drillResult, error) {
	product, action, raw, n, m, timeout := o.product, o.action, o.raw, o.n, o.m, o.timeout
	want := revocation.StateSuspended
	if action == "revoke" {
		want = revocation.StateRevoked
	}
	ctx, cancel := context.WithCancel(e.ctx)
	defer cancel()
	progress := func(format string, args ...any) { fmt.Fprintf(e.stderr, "drill: "+format+"\n", args...) }
	run := fmt.Sprintf("%x", time.Now().UnixNano())
	cl := e.client()
	var p api.Product
	err := cl.do(ctx, "POST", "/v1/products", map[string]string{"name": product}, &p)
	var ae *apiError
	if errors.As(err, &ae) && ae.Code == "CONFLICT" {
		err = cl.do(ctx, "GET", "/v1/products/"+url.PathEscape(product), nil, &p)
	}
	if err != nil {
		return nil, err
	}
	var issued struct {
		Licenses []api.IssuedLicense `json:"licenses"`
	}
	if err := cl.do(ctx, "POST", "/v1/licenses:batch", map[string]any{"product": p.ID, "holder": "drill-" + run, "count": m}, &issued); err != nil {
		return nil, err
	}
	index := map[string]int{}
	for i, l := range issued.Licenses {
		index[l.ID] = i
	}
	progress("issued %d test licenses in product %s (run %s)", len(index), p.Name, run)

	watchServer := e.server
	if o.watch != "" {
		watchServer = o.watch
	}
	sc := sdk.NewClient(watchServer)
	set, err := sc.JWKS(ctx)
	if err != nil {
		return nil, apiErr(err)
	}
	// One transport for every watcher, with no per-host connection limit.
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxIdleConnsPerHost = n
	sc.HTTP = &http.Client{Transport: tr, Timeout: 60 * time.Second}
	seen := make([][]atomic.Int64, n) // watcher → license → receipt (Unix ns)
	var connected atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, 1)
	for i := range n {
		seen[i] = make([]atomic.Int64, m)
		record := func(ls []revocation.LicenseEntry) {
			now := time.Now().UnixNano()
			for _, l := range ls {
				if j, ok := index[l.ID]; ok && l.State == want {
					seen[i][j].CompareAndSwap(0, now)
				}
			}
		}
		if raw {
			wg.Add(1)
			go func() {
				defer wg.Done()
				err := rawSubscriber(ctx, sc.HTTP, watchServer, p.Name, func() { connected.Add(1) }, record)
				if err != nil && ctx.Err() == nil {
					select {
					case errs <- err:
					default:
					}
				}
			}()
			continue
		}
		cache, err := sdk.NewRevocationCache(set, sdk.RevocationOptions{Product: p.Name})
		if err != nil {
			return nil, err
		}
		var once sync.Once
		w := &sdk.RevocationWatcher{
			Client: sc, Cache: cache, Product: p.Name, PollInterval: 5 * time.Second,
			OnConnect: func() { once.Do(func() { connected.Add(1) }) },
			OnUpdate:  func(u sdk.RevocationUpdate) { record(u.Licenses) },
			OnError: func(err error) {
				select {
				case errs <- err:
				default:
				}
			},
		}
		wg.Add(1)
		go func() { defer wg.Done(); _ = w.Run(ctx) }()
	}
	defer wg.Wait()
	defer cancel()
	deadline := time.Now().Add(timeout + time.Duration(n)*10*time.Millisecond)
	for connected.Load() < int64(n) {
		if time.Now().After(deadline) {
			msg := fmt.Sprintf("only %d of %d watchers connected", connected.Load(), n)
			select {
			case err := <-errs:
				msg += "; last error: " + err.Error()
			default:
			}
			return nil, errors.New(msg)
		}
		time.Sleep(20 * time.Millisecond)
	}
	progress("%d watchers connected", n)

	sent := make([]int64, m)
	for j, l := range issued.Licenses {
		sent[j] = time.Now().UnixNano()
		req := map[string]string{"reason": "drill " + run}
		if action == "revoke" {
			req["reason"] = "cessation_of_use"
		}
		actor := cl
		if action == "revoke" && o.revokerToken != "" {
			actor = newClient(e.server, o.revokerToken)
		}
		if err := actor.doWithRequestID(ctx, "POST", "/v1/licenses/"+url.PathEscape(l.ID)+"/"+action, fmt.Sprintf("drill-%s-%d", run, j), req, nil); err != nil {
			return nil, fmt.Errorf("%s test license %s: %w", action, l.ID, err)
		}
		// Wait for every watcher before the next one, so measurements do
		// not overlap.
		wait := time.Now().Add(timeout)
		for !allSeen(seen, j) && time.Now().Before(wait) {
			time.Sleep(time.Millisecond)
		}
		progress("change %d/%d delivered", j+1, m)
	}
	if action == "suspend" {
		for j, l := range issued.Licenses {
			for _, step := range []string{"reinstate", "retire"} {
				if err := cl.doWithRequestID(ctx, "POST", "/v1/licenses/"+url.PathEscape(l.ID)+"/"+step, fmt.Sprintf("drill-%s-%d-%s", run, j, step), map[string]string{"reason": "drill " + run + " cleanup"}, nil); err != nil {
					return nil, fmt.Errorf("clean up test license %s (%s): %w", l.ID, step, err)
				}
			}
		}
		progress("test licenses reinstated and retired")
	}
	var lat []float64
	for i := range seen {
		for j := range seen[i] {
			if t := seen[i][j].Load(); t != 0 {
				lat = append(lat, float64(t-sent[j])/1e6)
			}
		}
	}
	slices.Sort(lat)
	res := &drillResult{Subscribers: n, Revocations: m, Expected: n * m, Delivered: len(lat), Product: p.Name, Action: action, Raw: raw, Run: run}
	if len(lat) > 0 {
		res.P50, res.P95, res.P99, res.Max = pct(lat, 50), pct(lat, 95), pct(lat, 99), lat[len(lat)-1]
	}
	return res, nil
}

func allSeen(seen [][]atomic.Int64, j int) bool {
	for i := range seen {
		if seen[i][j].Load() == 0 {
			return false
		}
	}
	return true
}

// pct returns the p-th percentile of sorted (nearest rank).
func pct(sorted []float64, p float64) float64 {
	i := int(float64(len(sorted))*p/100+0.999999) - 1
	return sorted[max(0, min(i, len(sorted)-1))]
}

// doWithRequestID is client.do with an X-Request-Id, which the server
// records in the audit entries of the change (the drill's marker).
func (c *client) doWithRequestID(ctx context.Context, method, path, requestID string, in, out any) error {
	b, err := json.Marshal(in)
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, bytes.NewReader(b))
	if err != nil {
		return fmt.Errorf("bad server address %q: %w", c.base, err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-Request-Id", requestID)
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return fmt.Errorf("cannot reach keyward server at %s: %w", c.base, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return fmt.Errorf("read response: %w", err)
	}
	if resp.StatusCode >= 300 {
		var p apiError
		if json.Unmarshal(data, &p) != nil || p.Code == "" {
			return fmt.Errorf("server answered %s", resp.Status)
		}
		return &p
	}
	if out != nil {
		return json.Unmarshal(data, out)
	}
	return nil
}

// loadRevocations reads a saved snapshot for `keyward verify
// --revocations`: verified against the registry keys of set, for the
// product it names (which must be audience when both are set), usable
// until its next_update plus grace. It returns the cache and what to
// report.
func loadRevocations(set keys.JWKS, file, issuer, audience string, grace time.Duration) (*sdk.RevocationCache, map[string]any, error) {
	data, err := readFileLimit(file, revocation.MaxDocumentSize)
	if err != nil {
		return nil, nil, fmt.Errorf("revocations: %w", err)
	}
	tok := strings.TrimSpace(string(data))
	t, err := revocation.Parse(tok, 0)
	if err != nil {
		return nil, nil, fmt.Errorf("revocations %s: not a signed snapshot: %w", file, err)
	}
	var head struct {
		Product string `json:"product"`
	}
	if err := json.Unmarshal(t.Payload, &head); err != nil {
		return nil, nil, fmt.Errorf("revocations %s: %w", file, err)
	}
	if head.Product != "" && audience != "" && head.Product != audience {
		return nil, nil, fmt.Errorf("revocations %s: snapshot of product %q, but --product is %q", file, head.Product, audience)
	}
	if grace <= 0 {
		return nil, nil, usageError(fmt.Errorf("--revocations-grace %s: want a positive duration", grace))
	}
	cache, err := sdk.NewRevocationCache(set, sdk.RevocationOptions{Product: head.Product, Issuer: issuer, Tolerance: grace, OfflineGrace: grace})
	if err != nil {
		return nil, nil, err
	}
	if err := cache.ApplySnapshot(tok); err != nil {
		return nil, nil, fmt.Errorf("revocations %s refused: %w", file, err)
	}
	st, _ := cache.State()
	return cache, map[string]any{"file": file, "seq": st.Seq, "issued_at": st.IssuedAt.UTC(), "next_update": st.NextUpdate.UTC(), "licenses": st.Licenses, "compromised_keys": st.Keys}, nil
}

func revocationsLine(w io.Writer, checked map[string]any) {
	if checked != nil {
		fmt.Fprintf(w, "revocations:\tnot listed in %s (seq %d, issued %s)\n", checked["file"], checked["seq"], checked["issued_at"].(time.Time).Format(time.RFC3339))
	}
}

func readFileLimit(path string, limit int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, err
	}
	if int64(len(b)) > limit {
		return nil, fmt.Errorf("%s: larger than %d bytes", path, limit)
	}
	return b, nil
}

// rawSubscriber follows the stream with no SDK: it reads events and decodes
// their payload without verifying the signature (the drill's --raw).
func rawSubscriber(ctx context.Context, hc *http.Client, server, product string, connected func(), got func([]revocation.LicenseEntry)) error {
	req, err := http.NewRequestWithContext(ctx, "GET", strings.TrimRight(server, "/")+"/v1/revocations/stream?product="+url.QueryEscape(product), nil)
	if err != nil {
		return err
	}
	cl := *hc
	cl.Timeout = 0
	resp, err := cl.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("stream: %s", resp.Status)
	}
	connected()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(nil, 4<<20)
	for sc.Scan() {
		data, ok := strings.CutPrefix(sc.Text(), "data: ")
		if !ok {
			continue
		}
		t, err := revocation.Parse(data, 0)
		if err != nil {
			return err
		}
		d, err := revocation.DecodeDelta(t.Payload)
		if err != nil {
			return err
		}
		got(d.Licenses)
	}
	return sc.Err()
}
