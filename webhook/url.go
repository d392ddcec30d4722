package webhook

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/keyward/keyward"
)

// MaxURLLength bounds an endpoint URL.
const MaxURLLength = 2048

// CheckURL validates an endpoint URL: absolute, http or https, with a host,
// without a fragment, at most MaxURLLength bytes. Unless allowPrivate, a
// host that is "localhost" or an IP literal in a non-public range (see
// PublicAddr) is refused too; names that resolve to such addresses are
// refused at connection time by NewClient. It returns a keyward.EInvalid
// error whose message names the URL only in redacted form.
func CheckURL(raw string, allowPrivate bool) (*url.URL, error) {
	if raw == "" {
		return nil, keyward.Errorf(keyward.EInvalid, "url is required")
	}
	if len(raw) > MaxURLLength {
		return nil, keyward.Errorf(keyward.EInvalid, "url: at most %d bytes", MaxURLLength)
	}
	u, err := url.Parse(raw)
	if err != nil {
		return nil, keyward.Errorf(keyward.EInvalid, "url is not a valid URL")
	}
	switch {
	case u.Scheme != "http" && u.Scheme != "https":
		return nil, keyward.Errorf(keyward.EInvalid, "url %s: want an absolute http or https URL", RedactURL(raw))
	case u.Opaque != "" || u.Host == "" || u.Hostname() == "":
		return nil, keyward.Errorf(keyward.EInvalid, "url %s: want an absolute http or https URL with a host", RedactURL(raw))
	case u.Fragment != "" || strings.Contains(raw, "#"):
		return nil, keyward.Errorf(keyward.EInvalid, "url %s: a fragment is never sent; remove it", RedactURL(raw))
	case strings.ContainsAny(raw, " \t\r\n"):
		return nil, keyward.Errorf(keyward.EInvalid, "url must not contain white space")
	}
	if p := u.Port(); p != "" {
		if n, err := strconv.Atoi(p); err != nil || n < 1 || n > 65535 {
			return nil, keyward.Errorf(keyward.EInvalid, "url %s: port %q out of range", RedactURL(raw), p)
		}
	}
	if !allowPrivate {
		host := strings.ToLower(strings.TrimSuffix(u.Hostname(), "."))
		if host == "localhost" || strings.HasSuffix(host, ".localhost") {
			return nil, keyward.Errorf(keyward.EInvalid, "url %s: loopback hosts are refused (server runs without --webhook-allow-private)", RedactURL(raw))
		}
		if ip, err := netip.ParseAddr(host); err == nil && !PublicAddr(ip) {
			return nil, keyward.Errorf(keyward.EInvalid, "url %s: %s is not a public address (server runs without --webhook-allow-private)", RedactURL(raw), ip)
		}
	}
	return u, nil
}

// RedactURL returns raw without credentials and with the query replaced, for
// audit entries, events, logs and error messages: webhook URLs often carry
// a token.
func RedactURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil || u.Scheme == "" {
		return "(invalid URL)"
	}
	r := url.URL{Scheme: u.Scheme, Host: u.Host, Path: u.Path}
	if u.User != nil {
		r.User = url.User("REDACTED")
	}
	s := r.String()
	if u.RawQuery != "" {
		s += "?REDACTED"
	}
	return s
}

// nonPublic lists address ranges a production server MUST NOT send webhooks
// to, beyond what netip.Addr's predicates cover.
func nonPublic() []netip.Prefix {
	return []netip.Prefix{
		netip.MustParsePrefix("0.0.0.0/8"),       // "this network"
		netip.MustParsePrefix("100.64.0.0/10"),   // carrier-grade NAT
		netip.MustParsePrefix("192.0.0.0/24"),    // IETF protocol assignments
		netip.MustParsePrefix("192.0.2.0/24"),    // TEST-NET-1
		netip.MustParsePrefix("198.18.0.0/15"),   // benchmarking
		netip.MustParsePrefix("198.51.100.0/24"), // TEST-NET-2
		netip.MustParsePrefix("203.0.113.0/24"),  // TEST-NET-3
		netip.MustParsePrefix("240.0.0.0/4"),     // reserved, broadcast
		netip.MustParsePrefix("64:ff9b::/96"),    // NAT64: embeds an IPv4 address
		netip.MustParsePrefix("64:ff9b:1::/48"),  // local-use NAT64
		netip.MustParsePrefix("2001:db8::/32"),   // documentation
	}
}

// PublicAddr reports whether ip is a public unicast address: not loopback,
// private (RFC 1918, RFC 4193), link-local (which includes cloud metadata
// at 169.254.169.254), multicast, unspecified, carrier-grade NAT, NAT64,
// reserved or documentation space. IPv4-mapped IPv6 addresses are judged by
// their IPv4 address.
func PublicAddr(ip netip.Addr) bool {
	ip = ip.Unmap()
	if !ip.IsValid() || ip.IsLoopback() || ip.IsPrivate() || ip.IsLinkLocalUnicast() || ip.IsLinkLocalMulticast() ||
		ip.IsInterfaceLocalMulticast() || ip.IsMulticast() || ip.IsUnspecified() {
		return false
	}
	for _, p := range nonPublic() {
		if p.Contains(ip) {
			return false
		}
	}
	return true
}

// BlockedAddressError is a connection NewClient refused because the
// endpoint's name resolved to a non-public address.
type BlockedAddressError struct {
	Addr netip.Addr
}

func (e *BlockedAddressError) Error() string {
	return fmt.Sprintf("connection to %s refused: not a public address (SSRF protection; --webhook-allow-private lifts it)", e.Addr)
}

// NewClient returns the HTTP client deliveries use: no proxy from the
// environment, no redirects (a 3xx is a failed attempt, as Standard
// Webhooks asks), and, unless allowPrivate, a dialer that refuses every
// non-public address after DNS resolution, so a name that resolves (or is
// re-bound) to an internal address cannot be reached. Timeouts per attempt
// come from the request's context.
func NewClient(allowPrivate bool) *http.Client {
	dialer := &net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}
	if !allowPrivate {
		dialer.Control = func(network, address string, _ syscall.RawConn) error {
			ap, err := netip.ParseAddrPort(address)
			if err != nil {
				return fmt.Errorf("connection to %q refused: cannot parse address", address)
			}
			if !PublicAddr(ap.Addr()) {
				return &BlockedAddressError{Addr: ap.Addr().Unmap()}
			}
			return nil
		}
	}
	tr := &http.Transport{
		Proxy: nil,
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			return dialer.DialContext(ctx, network, addr)
		},
		ForceAttemptHTTP2:      true,
		MaxIdleConns:           64,
		MaxIdleConnsPerHost:    4,
		IdleConnTimeout:        90 * time.Second,
		TLSHandshakeTimeout:    10 * time.Second,
		ResponseHeaderTimeout:  30 * time.Second,
		MaxResponseHeaderBytes: 64 << 10,
	}
	return &http.Client{
		Transport: tr,
		CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse
		},
	}
}
