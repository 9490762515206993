// Package imdsprobe tells whether the node's instance metadata service
// would answer a pod that reached it directly: before kube2ra's rules are in
// place at boot, or if every rule were flushed. Two EC2 settings decide it:
// HttpTokens (a token-less GET answered means IMDSv1 is open, and GETs are
// not hop-limited) and HttpPutResponseHopLimit (EC2 sends the token PUT's
// response with the hop limit as its IP TTL; the node is hop 1, a pod
// behind it hop 2, so a limit of 1 keeps tokens on the node).
package imdsprobe

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Fix is the EC2 setting that closes an exposed metadata service.
const Fix = "aws ec2 modify-instance-metadata-options --instance-id INSTANCE_ID --http-tokens required --http-put-response-hop-limit 1"

// tokenTTLSeconds is the lifetime asked for the probe's token: the least.
const tokenTTLSeconds = "1"

// Result is what the probe learnt about the node's metadata service.
type Result struct {
	// IMDSv1Open is true when a GET without a token was answered.
	IMDSv1Open bool
	// HopLimitKnown is true when the probe could tell the hop limit apart.
	HopLimitKnown bool
	// TokenReachesPods is true when the token PUT's response arrived with an
	// IP TTL of at least 2, so it would survive one more hop to a pod.
	TokenReachesPods bool
}

// Exposed reports whether a pod reaching the service directly could read
// the node's credentials.
func (r Result) Exposed() bool { return r.IMDSv1Open || r.TokenReachesPods }

// Problems names each open setting, for logs and Events.
func (r Result) Problems() string {
	var p []string
	if r.IMDSv1Open {
		p = append(p, "IMDSv1 is open (HttpTokens=optional: a token-less GET is answered)")
	}
	if r.TokenReachesPods {
		p = append(p, "the IMDSv2 token response reaches a hop beyond the node (HttpPutResponseHopLimit is 2 or more)")
	}
	return strings.Join(p, "; ")
}

// Probe asks the metadata service at baseURL (http://169.254.169.254) a
// token-less GET and two token PUTs, the second over a socket that drops
// packets whose TTL is below 2 (IP_MINTTL): if that one is answered, the
// response had hops to spare. timeout bounds each request.
func Probe(ctx context.Context, baseURL string, timeout time.Duration) (Result, error) {
	var res Result
	plain := &http.Client{Timeout: timeout, Transport: &http.Transport{DisableKeepAlives: true, Proxy: nil}}
	status, err := do(ctx, plain, http.MethodGet, baseURL+"/latest/meta-data/", nil)
	if err != nil {
		return res, fmt.Errorf("asking the metadata service at %s without a token: %w", baseURL, err)
	}
	res.IMDSv1Open = status == http.StatusOK
	ttlHeader := http.Header{"X-Aws-Ec2-Metadata-Token-Ttl-Seconds": {tokenTTLSeconds}}
	if status, err := do(ctx, plain, http.MethodPut, baseURL+"/latest/api/token", ttlHeader); err != nil || status != http.StatusOK {
		return res, nil // no IMDSv2 answer at all: the hop limit cannot be told
	}
	dialer := &net.Dialer{Timeout: timeout, Control: minTTL(2)}
	strict := &http.Client{Timeout: timeout, Transport: &http.Transport{DialContext: dialer.DialContext, DisableKeepAlives: true, Proxy: nil}}
	status, err = do(ctx, strict, http.MethodPut, baseURL+"/latest/api/token", ttlHeader)
	if ctx.Err() != nil {
		return res, ctx.Err()
	}
	res.HopLimitKnown = true
	res.TokenReachesPods = err == nil && status == http.StatusOK
	return res, nil
}

func do(ctx context.Context, c *http.Client, method, url string, h http.Header) (int, error) {
	req, err := http.NewRequestWithContext(ctx, method, url, nil)
	if err != nil {
		return 0, err
	}
	for k, v := range h {
		req.Header[k] = v
	}
	resp, err := c.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<16))
	return resp.StatusCode, nil
}

// minTTL makes the kernel drop every packet of the connection that arrives
// with a TTL (hop limit) below n.
func minTTL(n int) func(network, address string, c syscall.RawConn) error {
	return func(network, _ string, c syscall.RawConn) error {
		var serr error
		err := c.Control(func(fd uintptr) {
			if strings.HasSuffix(network, "6") {
				serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_IPV6, unix.IPV6_MINHOPCOUNT, n)
				return
			}
			serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_IP, unix.IP_MINTTL, n)
		})
		return errors.Join(err, serr)
	}
}
