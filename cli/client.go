package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/keyward/keyward"
)

// client calls the Keyward API.
type client struct {
	base  string
	token string
	otp   string // TOTP code, sent as X-Keyward-OTP when set
	http  *http.Client
}

// apiError is a problem+json answer.
type apiError struct {
	Status int                  `json:"status"`
	Code   string               `json:"code"`
	Detail string               `json:"detail"`
	Errors []keyward.FieldError `json:"errors,omitempty"` // per-field problems, e.g. policy lint
}

func (e *apiError) Error() string { return fmt.Sprintf("%s: %s", e.Code, e.Detail) }

func newClient(base, token string) *client {
	return &client{base: strings.TrimRight(base, "/"), token: token, http: &http.Client{Timeout: 60 * time.Second}}
}

// do sends a JSON request and decodes a JSON answer into out (if non-nil).
func (c *client) do(ctx context.Context, method, path string, in, out any) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, body)
	if err != nil {
		return fmt.Errorf("bad server address %q: %w", c.base, err)
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	if c.otp != "" {
		req.Header.Set("X-Keyward-OTP", c.otp)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return fmt.Errorf("cannot reach keyward server at %s (set --server or KEYWARD_ADDR): %w", c.base, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
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
	if out == nil || resp.StatusCode == http.StatusNoContent {
		return nil
	}
	if err := json.Unmarshal(data, out); err != nil {
		return fmt.Errorf("decode response: %w", err)
	}
	return nil
}
