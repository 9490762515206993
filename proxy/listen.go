package proxy

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync"
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
	// srv is the configured HTTP server.
	srv *http.Server
	// shutdownTimeout bounds a graceful shutdown when Serve's context ends.
	shutdownTimeout time.Duration

	// mu guards ln.
	mu sync.Mutex
	// ln is the bound listener, nil before Listen.
	ln net.Listener
}

// listen binds addr unless a listener was given.
func (h *httpListener) listen() error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.ln != nil {
		return nil
	}
	ln, err := net.Listen("tcp", h.addr)
	if err != nil {
		return fmt.Errorf("%s: listening on %s failed (port in use, or the address is not on this host?): %w", h.name, h.addr, err)
	}
	h.ln = ln
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

// serve runs until ctx ends, then shuts down gracefully within
// shutdownTimeout (closing what is left after that). It returns nil after a
// shutdown caused by ctx.
func (h *httpListener) serve(ctx context.Context) error {
	h.mu.Lock()
	ln := h.ln
	h.mu.Unlock()
	if ln == nil {
		return fmt.Errorf("%s: Serve called before Listen; call Listen first", h.name)
	}
	errc := make(chan error, 1)
	go func() { errc <- h.srv.Serve(ln) }()
	select {
	case err := <-errc:
		if errors.Is(err, http.ErrServerClosed) {
			return nil
		}
		return fmt.Errorf("%s: serving on %s failed: %w", h.name, ln.Addr(), err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), h.shutdownTimeout)
	defer cancel()
	if err := h.shutdown(sctx); err != nil {
		return err
	}
	<-errc
	return nil
}

// shutdown stops accepting, waits for open requests until ctx ends, then
// closes the rest.
func (h *httpListener) shutdown(ctx context.Context) error {
	err := h.srv.Shutdown(ctx)
	if err != nil {
		_ = h.srv.Close()
		return fmt.Errorf("%s: graceful shutdown did not finish in time; open connections were closed: %w", h.name, err)
	}
	return nil
}
