package proxy

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// httpListener is the Listen/Serve/Shutdown life cycle shared by the
// metadata server and the ops server: cmd listens first (so a port clash
// fails the start, before any iptables rule points at us) and serves later.
type httpListener struct {
	// name says which server this is, for errors.
	name string
	// addr is the address to bind when no listener was given.
	addr string
	// alsoHosts are more addresses bound on addr's port (the IPv6 DNAT
	// target), so the server listens wherever the rules send pods.
	alsoHosts []string
	// srv is the configured HTTP server.
	srv *http.Server
	// front accepts the connections: srv itself, or a lane that hands srv
	// what it does not answer (see package fastlane).
	front frontServer
	// shutdownTimeout bounds a graceful shutdown when Serve's context ends.
	shutdownTimeout time.Duration

	// mu guards ln.
	mu sync.Mutex
	// ln is the bound listener, nil before Listen.
	ln net.Listener
	// also are the listeners of alsoHosts.
	also []net.Listener

	// conns counts the server's open connections, for drain.
	conns atomic.Int64
	// handedOff is set once drain closed the listeners for a successor.
	handedOff atomic.Bool
}

// frontServer is what accepts a server's connections: an *http.Server or
// a *fastlane.Server in front of one.
type frontServer interface {
	Serve(net.Listener) error
	Shutdown(context.Context) error
	Close() error
	SetKeepAlivesEnabled(bool)
}

// accepter is front, or srv when there is no lane.
func (h *httpListener) accepter() frontServer {
	if h.front != nil {
		return h.front
	}
	return h.srv
}

// ListenFunc opens a listener, as net.Listen does.
type ListenFunc func(network, addr string) (net.Listener, error)

// listen binds addr unless a listener was given.
func (h *httpListener) listen() error { return h.listenWith(net.Listen) }

// listenWith opens addr and alsoHosts with listen (net.Listen, or one
// that adopts a predecessor's listeners) unless a listener was given.
func (h *httpListener) listenWith(listen ListenFunc) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.ln != nil {
		return nil
	}
	ln, err := listen("tcp", h.addr)
	if err != nil {
		return fmt.Errorf("%s: listening on %s failed (port in use, or the address is not on this host?): %w", h.name, h.addr, err)
	}
	// The same port on every address: with port 0 the first one picked it.
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	var also []net.Listener
	for _, host := range h.alsoHosts {
		addr := net.JoinHostPort(host, port)
		l, err := listen("tcp", addr)
		if err != nil {
			_ = ln.Close()
			for _, l := range also {
				_ = l.Close()
			}
			return fmt.Errorf("%s: listening on %s failed (port in use, or the address is not on this host?): %w", h.name, addr, err)
		}
		also = append(also, l)
	}
	h.ln, h.also = ln, also
	return nil
}

// address is the bound address, nil before Listen.
func (h *httpListener) address() net.Addr {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.ln == nil {
		return nil
	}
	return h.ln.Addr()
}

// listeners are the bound listeners (none before Listen): what serve
// serves and a successor takes over.
func (h *httpListener) listeners() []net.Listener {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.ln == nil {
		return nil
	}
	return append([]net.Listener{h.ln}, h.also...)
}

// countConn keeps conns; it is the server's ConnState hook.
func (h *httpListener) countConn(_ net.Conn, st http.ConnState) {
	switch st {
	case http.StateNew:
		h.conns.Add(1)
	case http.StateClosed, http.StateHijacked:
		h.conns.Add(-1)
	}
}

// drainPoll is how often drain looks whether the last connection closed.
const drainPoll = 10 * time.Millisecond

// drain stops accepting once a successor accepts on the same sockets: it
// closes this process's copies of the listeners (the successor's keep the
// sockets and their accept queues), answers every connection already
// accepted, each with "Connection: close", and closes idle keep-alive
// connections (clients reconnect, to the successor). Unlike
// http.Server.Shutdown it never drops a request read after it started. What
// is still open when ctx ends is closed.
func (h *httpListener) drain(ctx context.Context) error {
	h.handedOff.Store(true)
	for _, ln := range h.listeners() {
		_ = ln.Close()
	}
	tick := time.NewTicker(drainPoll)
	defer tick.Stop()
	for {
		// Closes the connections idle now; busy ones close after their answer.
		h.accepter().SetKeepAlivesEnabled(false)
		if h.conns.Load() <= 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			_ = h.accepter().Close()
			return fmt.Errorf("%s: draining after the handover did not finish in time; %d connections were closed: %w", h.name, h.conns.Load(), ctx.Err())
		case <-tick.C:
		}
	}
}

// serve runs until ctx ends, then shuts down gracefully within
// shutdownTimeout (closing what is left after that). It returns nil after a
// shutdown caused by ctx.
func (h *httpListener) serve(ctx context.Context) error {
	lns := h.listeners()
	if len(lns) == 0 {
		return fmt.Errorf("%s: Serve called before Listen; call Listen first", h.name)
	}
	h.srv.ConnState = h.countConn
	errc := make(chan error, len(lns))
	for _, ln := range lns {
		go func() {
			if err := h.accepter().Serve(ln); !errors.Is(err, http.ErrServerClosed) && !h.handedOff.Load() {
				errc <- fmt.Errorf("%s: serving on %s failed: %w", h.name, ln.Addr(), err)
				return
			}
			errc <- nil
		}()
	}
	select {
	case err := <-errc:
		if err == nil {
			return nil
		}
		_ = h.accepter().Close()
		return err
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), h.shutdownTimeout)
	defer cancel()
	if err := h.shutdown(sctx); err != nil {
		return err
	}
	for range lns {
		<-errc
	}
	return nil
}

// shutdown stops accepting, waits for open requests until ctx ends, then
// closes the rest.
func (h *httpListener) shutdown(ctx context.Context) error {
	err := h.accepter().Shutdown(ctx)
	if err != nil {
		_ = h.accepter().Close()
		return fmt.Errorf("%s: graceful shutdown did not finish in time; open connections were closed: %w", h.name, err)
	}
	return nil
}
