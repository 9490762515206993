// Package endpoint is the listening side that the fake AWS endpoints share:
// a loopback httptest server (Start, StartTLS) or servers on listeners the
// caller brings (Serve), all stopped by one idempotent Close. A fake embeds
// an *Endpoint built around its own handler and keeps only what is its own:
// what it verifies and how it answers.
package endpoint

import (
	"context"
	"crypto/x509"
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"time"
)

const (
	// readHeaderTimeout bounds how long a server started by Serve waits for
	// request headers, so a stuck client cannot hold a connection forever.
	readHeaderTimeout = 10 * time.Second
	// shutdownTimeout bounds how long Close waits for open requests on each
	// server started by Serve before it drops their connections.
	shutdownTimeout = 5 * time.Second
)

// Endpoint serves one handler on a loopback test server, on listeners given
// to Serve, or both. Its methods are safe for concurrent use.
type Endpoint struct {
	// handler is the fake's endpoint, served by every server here.
	handler http.Handler

	// mu guards everything below.
	mu sync.Mutex
	// test is the loopback server started by Start or StartTLS, nil otherwise;
	// kept after Close so URL still names where the fake was.
	test *httptest.Server
	// servers are the servers started by Serve and not yet shut down.
	servers []*http.Server
	// closed is set by Close; Serve refuses to start after it.
	closed bool
}

// New builds an Endpoint for h that listens nowhere until Serve.
func New(h http.Handler) *Endpoint { return &Endpoint{handler: h} }

// Start serves h over plain HTTP on a loopback port.
func Start(h http.Handler) *Endpoint {
	return &Endpoint{handler: h, test: httptest.NewServer(h)}
}

// StartTLS serves h over HTTPS on a loopback port with a certificate that
// Client trusts.
func StartTLS(h http.Handler) *Endpoint {
	return &Endpoint{handler: h, test: httptest.NewTLSServer(h)}
}

// URL is the base URL of the server started by Start or StartTLS
// ("http://127.0.0.1:port" or "https://..."), also after Close; empty when
// neither started it.
func (e *Endpoint) URL() string {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.test == nil {
		return ""
	}
	return e.test.URL
}

// Certificate is StartTLS's serving certificate, which a client must trust;
// nil for a server that is not HTTPS.
func (e *Endpoint) Certificate() *x509.Certificate {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.test == nil || e.test.TLS == nil {
		return nil
	}
	return e.test.Certificate()
}

// Client is an HTTP client for the server started by Start or StartTLS (it
// trusts StartTLS's certificate); http.DefaultClient when neither started it.
func (e *Endpoint) Client() *http.Client {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.test == nil {
		return http.DefaultClient
	}
	return e.test.Client()
}

// Serve answers on l until Close and returns http.ErrServerClosed then. After
// Close it closes l and returns http.ErrServerClosed at once, so a Serve that
// loses a race with Close never serves unstopped.
func (e *Endpoint) Serve(l net.Listener) error {
	srv := &http.Server{Handler: e.handler, ReadHeaderTimeout: readHeaderTimeout}
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		_ = l.Close()
		return http.ErrServerClosed
	}
	e.servers = append(e.servers, srv)
	e.mu.Unlock()
	return srv.Serve(l)
}

// Close stops the servers started by Start, StartTLS and Serve: the loopback
// server drops its connections at once, the others get shutdownTimeout to
// finish open requests. Calling it again does nothing.
func (e *Endpoint) Close() {
	e.mu.Lock()
	test, servers, closed := e.test, e.servers, e.closed
	e.servers, e.closed = nil, true
	e.mu.Unlock()
	if test != nil && !closed {
		test.CloseClientConnections()
		test.Close()
	}
	for _, srv := range servers {
		ctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
		if srv.Shutdown(ctx) != nil {
			_ = srv.Close()
		}
		cancel()
	}
}
