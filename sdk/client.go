package sdk

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strings"
	"time"

	"github.com/keyward/keyward/keys"
	"github.com/keyward/keyward/licensekey"
)

// DefaultTimeout is the HTTP timeout of a Client from NewClient, and of a
// Client whose HTTP field is nil.
const DefaultTimeout = 10 * time.Second

// MaxResponseSize is the largest response body, in bytes, a Client reads.
const MaxResponseSize = 1 << 20

// Client calls the Keyward HTTP API as a relying party. The license key is
// the credential: no API token is sent. A Client is safe for concurrent use
// if its fields are not changed.
type Client struct {
	// BaseURL is the server's address, e.g. "https://licenses.example.com".
	BaseURL string
	// HTTP sends the requests; nil means a client with DefaultTimeout.
	HTTP *http.Client
	// UserAgent, if non-empty, is sent as the User-Agent header.
	UserAgent string
}

// NewClient returns a Client for the server at baseURL with a
// DefaultTimeout HTTP client and the User-Agent "keyward-sdk-go".
func NewClient(baseURL string) *Client {
	return &Client{
		BaseURL:   baseURL,
		HTTP:      &http.Client{Timeout: DefaultTimeout},
		UserAgent: "keyward-sdk-go",
	}
}

// Wire types of the API (api/views.go); the JSON names are the contract.

// License is a license as the API shows it: never its key, only the prefix.
type License struct {
	ID              string     `json:"id"`
	ProductID       string     `json:"product_id"`
	Product         string     `json:"product,omitempty"`
	Holder          string     `json:"holder"`
	State           string     `json:"state"`
	KeyPrefix       string     `json:"key_prefix"`
	Entitlements    []string   `json:"entitlements"`
	MaxMachines     int        `json:"max_machines"`
	ExpiresAt       *time.Time `json:"expires_at"`
	CreatedAt       time.Time  `json:"created_at"`
	UpdatedAt       time.Time  `json:"updated_at"`
	Reason          string     `json:"reason,omitempty"`
	LastValidatedAt *time.Time `json:"last_validated_at,omitempty"`
}

// Machine is a machine activated on a license.
type Machine struct {
	ID          string    `json:"id"`
	LicenseID   string    `json:"license_id"`
	Fingerprint string    `json:"fingerprint"`
	CreatedAt   time.Time `json:"created_at"`
	LastSeenAt  time.Time `json:"last_seen_at"`
}

// Lease is a signed lease token; verify Token with Verifier.VerifyLease.
type Lease struct {
	Token     string    `json:"token"`
	ExpiresAt time.Time `json:"expires_at"`
}

// Validation is the answer of POST /v1/validate. Valid is false, with Code
// saying why ("NOT_FOUND", "SUSPENDED", "REVOKED", "EXPIRED", "RETIRED",
// "SUPERSEDED", "TOO_MANY_MACHINES", "FINGERPRINT_REQUIRED"), for a license
// that does not authorize use; Code is "VALID" otherwise.
type Validation struct {
	Valid   bool     `json:"valid"`
	Code    string   `json:"code"`
	License *License `json:"license"`
	Machine *Machine `json:"machine,omitempty"`
	Lease   *Lease   `json:"lease,omitempty"`
}

// Certificate is a checked-out license certificate; verify Certificate
// with Verifier.VerifyCertificate before trusting it.
type Certificate struct {
	Certificate string    `json:"certificate"`
	KID         string    `json:"kid"`
	ExpiresAt   time.Time `json:"expires_at"`
}

// problem is an RFC 9457 problem details document as the API writes it.
type problem struct {
	Status    int    `json:"status"`
	Detail    string `json:"detail"`
	Code      string `json:"code"`
	RequestID string `json:"request_id"`
}

// Validate asks the server whether key is good for product (optional) on
// the machine with fingerprint (optional; some policies require it, and a
// lease is issued only with one). key is first parsed offline with
// licensekey.Parse: a malformed or mistyped key returns Parse's error
// (errors.Is licensekey.ErrFormat or ErrChecksum) without any request.
// A license that does not authorize use is a Validation with Valid false,
// not an error. An error answer is returned as an *APIError, unwrapped;
// other failures (network, a malformed answer) are wrapped errors.
func (c *Client) Validate(ctx context.Context, key, fingerprint, product string) (*Validation, error) {
	k, err := licensekey.Parse(key)
	if err != nil {
		return nil, err
	}
	in := struct {
		Key         string `json:"key"`
		Fingerprint string `json:"fingerprint,omitempty"`
		Product     string `json:"product,omitempty"`
	}{string(k), fingerprint, product}
	var out Validation
	if err := c.do(ctx, http.MethodPost, "/v1/validate", in, &out); err != nil {
		return nil, wrap("validate", err)
	}
	return &out, nil
}

// Checkout asks the server for a fresh license certificate for key and
// product (optional), signed by the product's active key. key is parsed
// offline first, as for Validate. A license that is not active gives an
// *APIError with Code "LICENSE_INACTIVE".
func (c *Client) Checkout(ctx context.Context, key, product string) (*Certificate, error) {
	k, err := licensekey.Parse(key)
	if err != nil {
		return nil, err
	}
	in := struct {
		Key     string `json:"key"`
		Product string `json:"product,omitempty"`
	}{string(k), product}
	var out Certificate
	if err := c.do(ctx, http.MethodPost, "/v1/checkout", in, &out); err != nil {
		return nil, wrap("checkout", err)
	}
	return &out, nil
}

// JWKS fetches the server's trust bundle (GET /.well-known/jwks.json) and
// parses it with ParseJWKS. Fetch it over TLS from a server you trust, or
// ship it with the app: whoever controls this answer controls which
// certificates verify.
func (c *Client) JWKS(ctx context.Context) (keys.JWKS, error) {
	var set keys.JWKS
	err := c.do(ctx, http.MethodGet, "/.well-known/jwks.json", nil, func(body []byte) error {
		var err error
		set, err = parseJWKS(body)
		return err
	})
	if err != nil {
		return keys.JWKS{}, wrap("jwks", err)
	}
	return set, nil
}

// wrap returns an *APIError as it is and adds "keyward: op: " to other errors.
func wrap(op string, err error) error {
	if _, ok := err.(*APIError); ok {
		return err
	}
	return fmt.Errorf("keyward: %s: %w", op, err)
}

// do sends in (if non-nil) as JSON and decodes a 2xx answer into out: a
// pointer for json.Unmarshal, or a func([]byte) error. Non-2xx answers are
// *APIError.
func (c *Client) do(ctx context.Context, method, path string, in, out any) error {
	base := strings.TrimRight(c.BaseURL, "/")
	if base == "" {
		return errors.New("no BaseURL")
	}
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, base+path, body)
	if err != nil {
		return err
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Accept", "application/json, application/problem+json")
	if c.UserAgent != "" {
		req.Header.Set("User-Agent", c.UserAgent)
	}
	hc := c.HTTP
	if hc == nil {
		hc = &http.Client{Timeout: DefaultTimeout}
	}
	resp, err := hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, MaxResponseSize+1))
	if err != nil {
		return fmt.Errorf("read response: %w", err)
	}
	if len(data) > MaxResponseSize {
		return fmt.Errorf("response larger than %d bytes", MaxResponseSize)
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return apiError(resp, data)
	}
	switch out := out.(type) {
	case nil:
		return nil
	case func([]byte) error:
		return out(data)
	default:
		if err := decodeOne(data, out); err != nil {
			return fmt.Errorf("decode response: %w", err)
		}
		return nil
	}
}

// decodeOne unmarshals data, exactly one JSON value, into v. Unknown
// members are allowed: a newer server may send more.
func decodeOne(data []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(v); err != nil {
		return err
	}
	if _, err := dec.Token(); err != io.EOF {
		return errors.New("data after the JSON value")
	}
	return nil
}

// apiError makes the *APIError of a non-2xx answer.
func apiError(resp *http.Response, data []byte) *APIError {
	e := &APIError{Status: resp.StatusCode}
	mt, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type"))
	var p problem
	if (mt == "application/problem+json" || mt == "application/json") && decodeOne(data, &p) == nil && p.Code != "" {
		e.Code, e.Detail, e.RequestID = p.Code, p.Detail, p.RequestID
	}
	return e
}
