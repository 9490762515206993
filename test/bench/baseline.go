package bench

import (
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/kube2ra/kube2ra/proxy"
)

// BaselineOptions describe the bare server kube2ra is compared with.
type BaselineOptions struct {
	// Addr is where it listens (kube2ra's own HOST_IP:app-port, so the same
	// DNAT rule leads to it).
	Addr string `json:"addr"`
	// Path is the one route it answers.
	Path string `json:"path"`
	// Header are the response headers kube2ra sent (Date and
	// Content-Length are left to net/http, as kube2ra does).
	Header [][2]string `json:"header"`
	// Body is kube2ra's response body, byte for byte.
	Body []byte `json:"body"`
	// Hardened gives the server the agent's protections: its read, write
	// and idle timeouts and a connection-state hook counting connections
	// (BENCH_BASELINE_HARDENED=1), to tell their cost from kube2ra's own.
	Hardened bool `json:"hardened,omitempty"`
}

// baselineToken is what the baseline answers to a token PUT; it accepts
// any token on GET, as a bare handler would.
const baselineToken = "baseline-token-not-checked"

// BaselineHandler answers Path with the recorded bytes, the token PUT with
// a fixed token, and everything else 404: the least a metadata endpoint can
// do, with no lookup, no policy, no cache, no log and no metrics.
func BaselineHandler(o BaselineOptions) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET "+o.Path, func(w http.ResponseWriter, _ *http.Request) {
		h := w.Header()
		for _, kv := range o.Header {
			if strings.EqualFold(kv[0], "Date") || strings.EqualFold(kv[0], "Content-Length") {
				continue
			}
			h[http.CanonicalHeaderKey(kv[0])] = append(h[http.CanonicalHeaderKey(kv[0])], kv[1])
		}
		h.Set("Content-Length", strconv.Itoa(len(o.Body)))
		_, _ = w.Write(o.Body)
	})
	mux.HandleFunc("PUT /latest/api/token", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set(tokenTTLHeader, r.Header.Get(tokenTTLHeader))
		w.Header().Set("Content-Type", "text/plain")
		_, _ = w.Write([]byte(baselineToken))
	})
	return mux
}

// NewBaselineServer is a net/http server for the baseline handler.
func NewBaselineServer(o BaselineOptions) *http.Server {
	srv := &http.Server{Addr: o.Addr, Handler: BaselineHandler(o), ReadHeaderTimeout: 10 * time.Second}
	if o.Hardened {
		srv.ReadHeaderTimeout, srv.ReadTimeout = proxy.DefaultReadHeaderTimeout, proxy.DefaultReadTimeout
		srv.WriteTimeout, srv.IdleTimeout = proxy.DefaultWriteTimeout, proxy.DefaultIdleTimeout
		var conns atomic.Int64
		srv.ConnState = func(_ net.Conn, st http.ConnState) {
			switch st {
			case http.StateNew:
				conns.Add(1)
			case http.StateClosed, http.StateHijacked:
				conns.Add(-1)
			}
		}
	}
	return srv
}
