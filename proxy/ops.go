package proxy

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/sirupsen/logrus"
	"k8s.io/utils/clock"
)

// DefaultReadinessTimeout bounds one call of the readiness function.
const DefaultReadinessTimeout = 2 * time.Second

// OpsOptions configure the ops server (health, readiness, metrics, debug).
type OpsOptions struct {
	// Addr is host:port to bind (HOST_IP:9181 by kube2ra's default). The
	// same port is bound on 127.0.0.1 too unless the host is loopback, so
	// the loopback-only pages (see loopbackOnly) can be reached from the
	// node. Ignored with Listener.
	Addr string
	// AlsoHosts are more addresses bound on Addr's port: the node's IPv6
	// address on an IPv6-first dual-stack node, where the kubelet probes
	// a host-network pod (and Prometheus scrapes it) at that address while
	// Addr is the node's IPv4 one. Ignored with Listener.
	AlsoHosts []string
	// Listener, when set, is served instead of binding Addr.
	Listener net.Listener
	// Gatherer is what /metrics exposes; nil serves an empty registry.
	Gatherer prometheus.Gatherer
	// Ready is /readyz: nil error when synced, rules in place and the
	// credential source usable. nil means always ready.
	Ready func(ctx context.Context) error
	// ReadinessTimeout bounds one Ready call; default DefaultReadinessTimeout.
	ReadinessTimeout time.Duration
	// Debug enables /debug/store, answered to loopback callers only.
	Debug bool
	// DebugStore returns the IP → pod → role table for /debug/store; it must
	// hold no secrets.
	DebugStore func() any
	// Logger receives readiness failures; default discards.
	Logger logrus.FieldLogger
	// ShutdownTimeout bounds a graceful shutdown; default DefaultShutdownTimeout.
	ShutdownTimeout time.Duration
	// Clock times the repeats of an unchanged "not ready" line; default the real clock.
	Clock clock.PassiveClock
}

// notReadyRepeat is how often an unchanged readiness failure is logged
// again. Probes ask every few seconds (a benchmark every few milliseconds)
// and the reasons can list every pod of the node: a line each time buried
// the log without saying anything new.
const notReadyRepeat = time.Minute

// readinessLog writes "not ready" when the reasons change, and again every
// notReadyRepeat while they stay the same.
type readinessLog struct {
	// log receives the lines.
	log logrus.FieldLogger
	// clock tells time.
	clock clock.PassiveClock
	// mu guards last and at.
	mu sync.Mutex
	// last is the reasons last logged, "" after a success.
	last string
	// at is when last was logged.
	at time.Time
}

// failed logs err unless the same reasons were logged within notReadyRepeat.
func (l *readinessLog) failed(err error) {
	msg, now := err.Error(), l.clock.Now()
	l.mu.Lock()
	repeat := msg == l.last && now.Sub(l.at) < notReadyRepeat
	if !repeat {
		l.last, l.at = msg, now
	}
	l.mu.Unlock()
	if !repeat {
		l.log.WithError(err).Warn("not ready")
	}
}

// succeeded forgets the last reasons, so the next failure is logged.
func (l *readinessLog) succeeded() {
	l.mu.Lock()
	l.last = ""
	l.mu.Unlock()
}

// HealthzPath is the liveness route: the process serves.
const HealthzPath = "/healthz"

// OpsServer serves /healthz, /readyz, /metrics and (with Debug) /debug/store.
// Every pod can reach the host IP it listens on, so what tells about other
// pods (/debug/*, the details of /readyz) is answered only on a connection
// from loopback to loopback: one made on the node itself.
type OpsServer struct {
	// handler is the ops mux.
	handler http.Handler
	// listener runs the HTTP server.
	listener *httpListener
}

// NewOpsServer builds the ops server; call Listen and Serve to run it.
func NewOpsServer(opts OpsOptions) (*OpsServer, error) {
	if opts.Logger == nil {
		l := logrus.New()
		l.SetOutput(io.Discard)
		opts.Logger = l
	}
	if opts.Gatherer == nil {
		opts.Gatherer = prometheus.NewRegistry()
	}
	if opts.ReadinessTimeout <= 0 {
		opts.ReadinessTimeout = DefaultReadinessTimeout
	}
	if opts.ShutdownTimeout <= 0 {
		opts.ShutdownTimeout = DefaultShutdownTimeout
	}
	if opts.Clock == nil {
		opts.Clock = clock.RealClock{}
	}
	if opts.Listener == nil && opts.Addr == "" {
		return nil, errors.New("proxy: the ops server needs an address (--metrics-port) or a listener")
	}
	if opts.Debug && opts.DebugStore == nil {
		return nil, errors.New("proxy: --debug is on but no debug store function was given")
	}
	h := newOpsHandler(opts)
	return &OpsServer{
		handler: h,
		listener: &httpListener{
			name: "ops server",
			addr: opts.Addr,
			srv: &http.Server{
				Handler:           h,
				ReadHeaderTimeout: DefaultReadHeaderTimeout,
				ReadTimeout:       DefaultReadTimeout,
				WriteTimeout:      DefaultWriteTimeout,
				IdleTimeout:       DefaultIdleTimeout,
				MaxHeaderBytes:    DefaultMaxHeaderBytes,
				ErrorLog:          newServerErrorLog(opts.Logger, "ops"),
			},
			shutdownTimeout: opts.ShutdownTimeout,
			ln:              opts.Listener,
			alsoHosts:       append(loopbackAlso(opts.Addr), opts.AlsoHosts...),
		},
	}, nil
}

// opsLoopbackHost is where the ops server also listens, for callers on the node.
const opsLoopbackHost = "127.0.0.1"

// loopbackAlso is the extra host the ops server binds beside addr's:
// 127.0.0.1 when addr's host is an IP that is neither loopback nor
// unspecified (both already cover loopback; --host-ip is always an IP).
func loopbackAlso(addr string) []string {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return nil
	}
	ip, err := netip.ParseAddr(host)
	if err != nil || ip.Unmap().IsLoopback() || ip.IsUnspecified() {
		return nil
	}
	return []string{opsLoopbackHost}
}

// fromLoopback reports whether r came in on a connection whose both ends
// are loopback addresses, i.e. from a process on the node (a pod's packets
// never carry a loopback source, and the DNAT target is the host IP).
// Anything it cannot tell is not loopback.
func fromLoopback(r *http.Request) bool {
	local, ok := localAddr(r)
	if !ok {
		return false
	}
	remote, err := netip.ParseAddrPort(r.RemoteAddr)
	if err != nil {
		return false
	}
	return local.Addr().Unmap().IsLoopback() && remote.Addr().Unmap().IsLoopback()
}

// localAddr is the address r's connection was accepted on.
func localAddr(r *http.Request) (netip.AddrPort, bool) {
	local, ok := r.Context().Value(http.LocalAddrContextKey).(net.Addr)
	if !ok {
		return netip.AddrPort{}, false
	}
	ap, err := netip.ParseAddrPort(local.String())
	return ap, err == nil
}

// onNode is the command that asks r's page on the node, over loopback.
func onNode(r *http.Request) string {
	port := "METRICS_PORT"
	if local, ok := localAddr(r); ok {
		port = strconv.Itoa(int(local.Port()))
	}
	return "curl http://" + net.JoinHostPort(opsLoopbackHost, port) + r.URL.Path
}

// loopbackOnly answers h to loopback callers and 403 to everyone else.
func loopbackOnly(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if !fromLoopback(r) {
			writeText(w, http.StatusForbidden, "forbidden: "+r.URL.Path+" is answered on the node only: "+onNode(r))
			return
		}
		h(w, r)
	}
}

func newOpsHandler(opts OpsOptions) http.Handler {
	m := http.NewServeMux()
	notReady := &readinessLog{log: opts.Logger, clock: opts.Clock}
	m.HandleFunc("GET "+HealthzPath, func(w http.ResponseWriter, _ *http.Request) {
		writeText(w, http.StatusOK, "ok")
	})
	m.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		if opts.Ready != nil {
			ctx, cancel := context.WithTimeout(r.Context(), opts.ReadinessTimeout)
			defer cancel()
			if err := opts.Ready(ctx); err != nil {
				notReady.failed(err)
				if fromLoopback(r) {
					writeText(w, http.StatusServiceUnavailable, "not ready: "+err.Error())
					return
				}
				// The reasons name pods, namespaces and interfaces: any pod can ask here.
				writeText(w, http.StatusServiceUnavailable, "not ready: the reasons are in the agent's log (\"not ready\"), or ask on the node: "+onNode(r))
				return
			}
			notReady.succeeded()
		}
		writeText(w, http.StatusOK, "ok")
	})
	m.Handle("GET /metrics", promhttp.HandlerFor(opts.Gatherer, promhttp.HandlerOpts{}))
	if opts.Debug {
		m.HandleFunc("GET /debug/store", loopbackOnly(func(w http.ResponseWriter, _ *http.Request) {
			body, err := json.MarshalIndent(opts.DebugStore(), "", "  ")
			if err != nil {
				writeText(w, http.StatusInternalServerError, "encoding the store failed: "+err.Error())
				return
			}
			w.Header().Set("Content-Type", "application/json")
			_, _ = w.Write(body)
		}))
	}
	return m
}

// Handler is the ops handler, for tests and custom listeners.
func (o *OpsServer) Handler() http.Handler { return o.handler }

// Listen binds the ops address (or adopts OpsOptions.Listener).
func (o *OpsServer) Listen() error { return o.listener.listen() }

// ListenWith is Listen with listen opening each address (see Server.ListenWith).
func (o *OpsServer) ListenWith(listen ListenFunc) error { return o.listener.listenWith(listen) }

// Listeners are the bound listeners, nil before Listen.
func (o *OpsServer) Listeners() []net.Listener { return o.listener.listeners() }

// Drain stops accepting after a successor took the listeners over (see Server.Drain).
func (o *OpsServer) Drain(ctx context.Context) error { return o.listener.drain(ctx) }

// Addr is the bound address, nil before Listen.
func (o *OpsServer) Addr() net.Addr { return o.listener.address() }

// Serve answers until ctx ends, then shuts down gracefully; nil after that.
func (o *OpsServer) Serve(ctx context.Context) error { return o.listener.serve(ctx) }

// Shutdown stops the server, waiting for open requests until ctx ends.
func (o *OpsServer) Shutdown(ctx context.Context) error { return o.listener.shutdown(ctx) }
