package kubeapi

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"net/http"
	"os"
	"strconv"
	"sync"
	"time"

	utilnet "k8s.io/apimachinery/pkg/util/net"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/transport"
	"k8s.io/utils/clock"
)

// The HTTP client to the API server is built here rather than by
// rest.HTTPClientFor, whose transport.New configures HTTP/2 through
// golang.org/x/net/http2: a second HTTP/2 implementation beside the
// standard library's, with client-go's transport cache and certificate
// rotation dialer, about 0.64 MB of every agent's binary and so of its
// resident memory (docs/performance.md). This client keeps what
// transport.New gives a client of one API server:
//
//   - the TLS configuration, credentials and request wrappers of the
//     kubeconfig or in-cluster config (client-go's own TLSConfigFor and
//     HTTPWrappersForConfig: bearer token files re-read, exec and auth
//     provider plugins, impersonation, the user agent);
//   - HTTP/2 with client-go's connection health check (a ping after 30 s
//     without a frame, the connection closed 15 s later without an
//     answer; HTTP2_READ_IDLE_TIMEOUT_SECONDS and HTTP2_PING_TIMEOUT_SECONDS
//     change them, DISABLE_HTTP2 turns HTTP/2 off), on the standard
//     library's HTTP/2;
//   - client-go's dial, TLS handshake and idle timeouts, its proxy rules
//     (NO_PROXY may name CIDRs) and idle connections per host;
//   - the CA file re-read every 5 minutes and a changed CA used for new
//     connections (client-go's ClientsAllowCARotation, on by default).
//
// What it does not keep: when client certificate files change, the new
// certificate is used by new connections only (client-go also closes the
// old ones); the agent normally authenticates with its ServiceAccount
// token, which is re-read from its file as before.
//
// On an upgrade of client-go, compare with its transport/cache.go
// (tlsTransportCache.get) and apimachinery's util/net SetTransportDefaults.

// client-go's transport defaults (k8s.io/client-go/transport and
// k8s.io/apimachinery/pkg/util/net).
const (
	dialTimeout         = 30 * time.Second
	dialKeepAlive       = 30 * time.Second
	tlsHandshakeTimeout = 10 * time.Second
	idleConnTimeout     = 90 * time.Second
	idleConnsPerHost    = 25
	// readIdleTimeout is how long a connection may go without a frame
	// before a ping checks it.
	readIdleTimeout = 30 * time.Second
	// pingTimeout is how long the answer to that ping may take.
	pingTimeout = 15 * time.Second
	// caRefresh is how often the CA file is re-read.
	caRefresh = 5 * time.Minute
)

// httpClientFor is the HTTP client of every request to the API server of
// cfg (see above).
func httpClientFor(cfg *rest.Config) (*http.Client, error) {
	tc, err := cfg.TransportConfig()
	if err != nil {
		return nil, err
	}
	if tc.Transport != nil && (tc.HasCA() || tc.HasCertAuth() || tc.HasCertCallback() || tc.TLS.Insecure) {
		// As client-go's transport.New.
		return nil, fmt.Errorf("using a custom transport with TLS certificate options or the insecure flag is not allowed")
	}
	if tc.TLS.GetCertHolder != nil && tc.TLS.GetCertHolder.GetCert == nil {
		return nil, fmt.Errorf("the Kubernetes client's certificate holder has no callback")
	}
	var rt http.RoundTripper
	if tc.Transport != nil {
		rt = tc.Transport
	} else {
		// TLSConfigFor reads the CA and certificate files into tc and
		// marks a CA file for reloading.
		tlsConfig, err := transport.TLSConfigFor(tc)
		if err != nil {
			return nil, err
		}
		t, err := apiTransport(tc, tlsConfig)
		if err != nil {
			return nil, err
		}
		rt = t
		if tc.TLS.ReloadCAFiles && tlsConfig != nil && tlsConfig.RootCAs != nil && tc.TLS.CAFile != "" {
			rt = newCAReloader(tc.TLS.CAFile, tc.TLS.CAData, t, clock.RealClock{})
		}
	}
	wrapped, err := transport.HTTPWrappersForConfig(tc, rt)
	if err != nil {
		return nil, err
	}
	return &http.Client{Transport: wrapped, Timeout: cfg.Timeout}, nil
}

// apiTransport is the http.Transport of tc with client-go's defaults.
func apiTransport(tc *transport.Config, tlsConfig *tls.Config) (*http.Transport, error) {
	if tc.DialHolder != nil && tc.DialHolder.Dial == nil {
		return nil, fmt.Errorf("the Kubernetes client's dialer holder has no dialer")
	}
	dial := (&net.Dialer{Timeout: dialTimeout, KeepAlive: dialKeepAlive}).DialContext
	if tc.DialHolder != nil {
		dial = tc.DialHolder.Dial
	}
	proxy := tc.Proxy
	if proxy == nil {
		// http.ProxyFromEnvironment with NO_PROXY CIDRs, as client-go.
		proxy = utilnet.NewProxierWithNoProxyCIDR(http.ProxyFromEnvironment)
	}
	t := &http.Transport{
		Proxy:               proxy,
		DialContext:         dial,
		TLSClientConfig:     tlsConfig,
		TLSHandshakeTimeout: tlsHandshakeTimeout,
		IdleConnTimeout:     idleConnTimeout,
		MaxIdleConnsPerHost: idleConnsPerHost,
		DisableCompression:  tc.DisableCompression,
	}
	if os.Getenv("DISABLE_HTTP2") != "" {
		// As client-go: HTTP/1.1 only. A non-nil empty map turns the
		// standard library's HTTP/2 off.
		t.TLSNextProto = map[string]func(string, *tls.Conn) http.RoundTripper{}
		return t, nil
	}
	t.ForceAttemptHTTP2 = true
	t.HTTP2 = &http.HTTP2Config{
		SendPingTimeout: envSeconds("HTTP2_READ_IDLE_TIMEOUT_SECONDS", readIdleTimeout),
		PingTimeout:     envSeconds("HTTP2_PING_TIMEOUT_SECONDS", pingTimeout),
	}
	return t, nil
}

// envSeconds is the whole number of seconds in the environment variable
// name, or def when it is unset or not a number (as client-go reads it:
// 0 turns the health check off).
func envSeconds(name string, def time.Duration) time.Duration {
	s := os.Getenv(name)
	if s == "" {
		return def
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 0 {
		return def
	}
	return time.Duration(n) * time.Second
}

// caReloader re-reads the CA file at most every caRefresh and, when its
// content changed and parses, sends new connections through a copy of the
// transport that trusts the new CA (existing connections finish on the
// old one, whose idle connections are closed). A file that cannot be read
// or parsed keeps the CA in use. This is client-go's CA rotation.
type caReloader struct {
	file  string
	clock clock.PassiveClock

	mu      sync.RWMutex
	current *http.Transport
	data    []byte
	checked time.Time
}

func newCAReloader(file string, data []byte, t *http.Transport, c clock.PassiveClock) *caReloader {
	return &caReloader{file: file, clock: c, current: t, data: data, checked: c.Now()}
}

// RoundTrip sends req through the transport of the CA in use.
func (r *caReloader) RoundTrip(req *http.Request) (*http.Response, error) {
	return r.transport().RoundTrip(req)
}

// WrappedRoundTripper is the transport in use (client-go's wrappers look
// through it, to cancel requests for instance).
func (r *caReloader) WrappedRoundTripper() http.RoundTripper { return r.transport() }

// transport is the transport of the CA in use, after a reload if one is due.
func (r *caReloader) transport() *http.Transport {
	r.mu.RLock()
	t, fresh := r.current, r.clock.Since(r.checked) < caRefresh
	r.mu.RUnlock()
	if fresh {
		return t
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.clock.Since(r.checked) >= caRefresh {
		r.checked = r.clock.Now()
		r.reloadLocked()
	}
	return r.current
}

// reloadLocked swaps in a transport that trusts the file's CA if it changed.
func (r *caReloader) reloadLocked() {
	data, err := os.ReadFile(r.file)
	if err != nil || len(data) == 0 || bytes.Equal(data, r.data) {
		return
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(data) {
		return
	}
	next := r.current.Clone()
	next.TLSClientConfig.RootCAs = pool
	old := r.current
	r.current, r.data = next, data
	old.CloseIdleConnections()
}

var _ utilnet.RoundTripperWrapper = (*caReloader)(nil)
