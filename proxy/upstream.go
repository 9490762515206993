package proxy

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"k8s.io/utils/clock"
)

const (
	// upstreamTokenTTL is the lifetime kube2ra asks for its own upstream token.
	upstreamTokenTTL = 6 * time.Hour
	// upstreamTokenRefreshBefore renews the upstream token this long before it
	// expires, so no request is sent with a token about to lapse.
	upstreamTokenRefreshBefore = 30 * time.Minute
	// upstreamV1Retry is how long kube2ra uses IMDSv1 after the upstream
	// refused the token PUT with 403/404/405, before trying tokens again.
	upstreamV1Retry = 5 * time.Minute
	// maxUpstreamBody caps what is read from the upstream; metadata values
	// are small (the identity document is under 1 KiB).
	maxUpstreamBody = 64 << 10
	// upstreamUserAgent identifies kube2ra to the metadata service.
	upstreamUserAgent = "kube2ra"
	// DefaultMetadataAddr is EC2's link-local metadata service.
	DefaultMetadataAddr = "169.254.169.254"
	// MetadataAddrNone selects off-AWS mode: synthetic answers, no upstream.
	MetadataAddrNone = "none"
)

// errUpstreamBodyTooLarge is returned when the upstream answers more than maxUpstreamBody.
var errUpstreamBodyTooLarge = errors.New("metadata upstream answered more than 64 KiB")

// metadataResponse is an answer from the metadata backend.
type metadataResponse struct {
	// status is the HTTP status.
	status int
	// body is the (capped) body.
	body []byte
}

// metadataBackend answers pass-through reads: the real upstream, or
// synthetic values off AWS.
type metadataBackend interface {
	// get fetches target (a canonical, allowlisted request target).
	get(ctx context.Context, target string) (metadataResponse, error)
}

// upstream is the node's metadata service, reached with kube2ra's own
// IMDSv2 token.
type upstream struct {
	// base is scheme://host[:port] without a trailing slash.
	base string
	// client has its own transport: no proxy from the environment, short timeouts.
	client *http.Client
	// clock decides token refresh.
	clock clock.PassiveClock
	// onResponse is told every upstream status ("error" for transport failures).
	onResponse func(code string)

	// mu serialises token fetches and guards the fields below.
	mu sync.Mutex
	// token is the cached upstream token; empty when none.
	token string
	// refreshAt is when token must be renewed.
	refreshAt time.Time
	// v1Until: until then the upstream is known not to do tokens.
	v1Until time.Time
}

// ParseMetadataAddr is the one parser of --metadata-addr: it turns a host,
// host:port or http://host[:port] (empty means DefaultMetadataAddr) into the
// upstream's base URL, http://host[:port]. MetadataAddrNone is no address:
// callers check for it first.
func ParseMetadataAddr(addr string) (string, error) {
	if addr == "" {
		addr = DefaultMetadataAddr
	}
	if !strings.Contains(addr, "://") {
		addr = "http://" + addr
	}
	u, err := url.Parse(addr)
	if err != nil {
		return "", fmt.Errorf("metadata address %q is not a host, host:port or http URL: %w", addr, err)
	}
	if u.Scheme != "http" || u.Host == "" || (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.User != nil {
		return "", fmt.Errorf("metadata address %q must be a plain host, host:port or http://host[:port]; use %q to run without one", addr, MetadataAddrNone)
	}
	return "http://" + u.Host, nil
}

// upstreamIdleConns bounds the idle keep-alive connections to the upstream
// metadata service.
const upstreamIdleConns = 64

func newUpstream(base string, transport http.RoundTripper, timeout time.Duration, c clock.PassiveClock, onResponse func(string)) *upstream {
	if transport == nil {
		transport = &http.Transport{
			Proxy:                 nil, // never HTTP_PROXY: link-local traffic must not leave the node
			DialContext:           (&net.Dialer{Timeout: timeout}).DialContext,
			ResponseHeaderTimeout: timeout,
			// Enough idle connections for a node's pods asking at once: with
			// 4, most pass-through requests opened a new upstream connection.
			MaxIdleConns:           upstreamIdleConns,
			MaxIdleConnsPerHost:    upstreamIdleConns,
			IdleConnTimeout:        30 * time.Second,
			MaxResponseHeaderBytes: 16 << 10,
			DisableCompression:     true,
		}
	}
	return &upstream{
		base: base,
		client: &http.Client{
			Transport: transport,
			Timeout:   timeout,
			// A redirect from the metadata service is not followed anywhere.
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		},
		clock:      c,
		onResponse: onResponse,
	}
}

// get fetches target with kube2ra's own token. An upstream 401 means the
// cached token went stale (upstream restart); it is dropped and the request
// retried once.
func (u *upstream) get(ctx context.Context, target string) (metadataResponse, error) {
	for attempt := 0; ; attempt++ {
		tok, err := u.currentToken(ctx)
		if err != nil {
			return metadataResponse{}, err
		}
		resp, err := u.do(ctx, target, tok)
		if err != nil {
			return metadataResponse{}, err
		}
		if resp.status == http.StatusUnauthorized && attempt == 0 {
			u.dropToken(tok)
			continue
		}
		return resp, nil
	}
}

// do sends one GET built from scratch: no header of the client's is copied.
func (u *upstream) do(ctx context.Context, target, tok string) (metadataResponse, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.base+target, nil)
	if err != nil {
		return metadataResponse{}, fmt.Errorf("building the upstream request for %q failed: %w", target, err)
	}
	req.Header.Set("User-Agent", upstreamUserAgent)
	if tok != "" {
		req.Header.Set(tokenHeader, tok)
	}
	resp, err := u.client.Do(req)
	if err != nil {
		u.onResponse("error")
		return metadataResponse{}, fmt.Errorf("reading %s from the metadata service %s failed: %w", target, u.base, err)
	}
	defer resp.Body.Close()
	u.onResponse(strconv.Itoa(resp.StatusCode))
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxUpstreamBody+1))
	if err != nil {
		return metadataResponse{}, fmt.Errorf("reading the body of %s from the metadata service %s failed: %w", target, u.base, err)
	}
	if len(body) > maxUpstreamBody {
		return metadataResponse{}, fmt.Errorf("reading %s: %w", target, errUpstreamBodyTooLarge)
	}
	return metadataResponse{status: resp.StatusCode, body: body}, nil
}

// currentToken returns a fresh upstream token, "" while the upstream only
// speaks IMDSv1.
func (u *upstream) currentToken(ctx context.Context) (string, error) {
	u.mu.Lock()
	defer u.mu.Unlock()
	now := u.clock.Now()
	if u.token != "" && now.Before(u.refreshAt) {
		return u.token, nil
	}
	if now.Before(u.v1Until) {
		return "", nil
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPut, u.base+"/latest/api/token", nil)
	if err != nil {
		return "", fmt.Errorf("building the upstream token request failed: %w", err)
	}
	req.Header.Set(ttlHeader, strconv.Itoa(int(upstreamTokenTTL/time.Second)))
	req.Header.Set("User-Agent", upstreamUserAgent)
	resp, err := u.client.Do(req)
	if err != nil {
		u.onResponse("error")
		return "", fmt.Errorf("getting an IMDSv2 token from the metadata service %s failed: %w", u.base, err)
	}
	defer resp.Body.Close()
	u.onResponse(strconv.Itoa(resp.StatusCode))
	switch resp.StatusCode {
	case http.StatusOK:
	case http.StatusForbidden, http.StatusNotFound, http.StatusMethodNotAllowed:
		// The same fallback rule the SDKs use: this upstream has no IMDSv2.
		u.token, u.v1Until = "", now.Add(upstreamV1Retry)
		return "", nil
	default:
		return "", fmt.Errorf("getting an IMDSv2 token from the metadata service %s failed: status %d", u.base, resp.StatusCode)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxUpstreamBody))
	if err != nil || len(body) == 0 {
		return "", fmt.Errorf("reading the IMDSv2 token from the metadata service %s failed (empty or broken body): %v", u.base, err)
	}
	ttl := upstreamTokenTTL
	if granted, err := strconv.Atoi(resp.Header.Get(ttlHeader)); err == nil && granted > 0 {
		ttl = time.Duration(granted) * time.Second
	}
	refresh := ttl - upstreamTokenRefreshBefore
	if refresh < ttl/2 {
		refresh = ttl / 2
	}
	u.token, u.refreshAt = strings.TrimSpace(string(body)), now.Add(refresh)
	return u.token, nil
}

// dropToken forgets tok if it is still the cached one.
func (u *upstream) dropToken(tok string) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.token == tok {
		u.token = ""
		u.v1Until = time.Time{}
	}
}

// synthetic answers off AWS: just enough for SDKs to find their region.
type synthetic struct {
	// leaves maps version-relative paths to values; listings are derived.
	leaves map[string]string
}

// identityDocument is the part of the instance identity document SDKs read
// (aws-sdk-go-v2 GetRegion reads "region").
type identityDocument struct {
	AvailabilityZone string `json:"availabilityZone"`
	Region           string `json:"region"`
	Version          string `json:"version"`
}

func newSynthetic(region, zone string) (*synthetic, error) {
	doc, err := json.MarshalIndent(identityDocument{AvailabilityZone: zone, Region: region, Version: "2017-09-30"}, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("encoding the synthetic identity document failed: %w", err)
	}
	return &synthetic{leaves: map[string]string{
		"meta-data/placement/region":            region,
		"meta-data/placement/availability-zone": zone,
		"dynamic/instance-identity/document":    string(doc),
	}}, nil
}

func (s *synthetic) get(_ context.Context, target string) (metadataResponse, error) {
	c, status, _ := checkPath(target)
	if status != 0 || c.root {
		return metadataResponse{status: http.StatusNotFound, body: []byte(http.StatusText(http.StatusNotFound))}, nil
	}
	rel := c.rel()
	if v, ok := s.leaves[rel]; ok {
		return metadataResponse{status: http.StatusOK, body: []byte(v)}, nil
	}
	var names []string
	seen := map[string]bool{}
	for leaf := range s.leaves {
		rest, ok := strings.CutPrefix(leaf, rel+"/")
		if rel == "" {
			rest, ok = leaf, true
		}
		if !ok {
			continue
		}
		name, _, more := strings.Cut(rest, "/")
		if more {
			name += "/"
		}
		if !seen[name] {
			seen[name] = true
			names = append(names, name)
		}
	}
	if len(names) == 0 {
		return metadataResponse{status: http.StatusNotFound, body: []byte(http.StatusText(http.StatusNotFound))}, nil
	}
	slices.Sort(names)
	return metadataResponse{status: http.StatusOK, body: []byte(strings.Join(names, "\n"))}, nil
}
