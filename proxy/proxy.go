// Package proxy is the metadata server every pod talks to: it answers the
// IMDS credential routes for the calling pod's role, mints and checks IMDSv2
// session tokens, refuses non-canonical paths before routing, and passes an
// allowlist of harmless paths to the node's metadata service (or answers
// them synthetically off AWS). It also serves /healthz, /readyz, /metrics
// and /debug/store on a separate ops port (OpsServer).
//
// It knows nothing of Kubernetes or AWS APIs: it consumes a PodFinder, a
// RoleResolver and a CredentialGetter, wired by cmd/kube2ra.
package proxy

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/netip"
	"runtime/debug"
	"strconv"
	"strings"
	"time"

	"github.com/gorilla/mux"
	"github.com/kube2ra/kube2ra/fastlane"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/sirupsen/logrus"
	"k8s.io/utils/clock"

	"github.com/kube2ra/kube2ra/credentials"
	"github.com/kube2ra/kube2ra/k8s"
)

// PodFinder finds the one live pod on this node that owns a source IP.
// It returns k8s.ErrPodNotFound, k8s.ErrAmbiguousIP or k8s.ErrNotSynced
// when it cannot.
type PodFinder interface {
	FindPod(ctx context.Context, ip netip.Addr) (*k8s.Pod, error)
}

// RoleResolver picks the pod's role after namespace policy. It returns
// k8s.ErrNoRole or a *k8s.DenialError when the pod gets none.
type RoleResolver interface {
	ResolveRole(ctx context.Context, pod *k8s.Pod) (k8s.Role, error)
}

// CredentialGetter returns temporary credentials for the pod's role
// (normally from the credential cache). Failures are *credentials.Error.
type CredentialGetter interface {
	GetCredentials(ctx context.Context, pod *k8s.Pod, role k8s.Role) (credentials.Credentials, error)
}

// PodEvents records a rate-limited Warning Event on a pod, for what the
// pod's owners must fix (k8s.PodEvents). Nil Options.Events records none.
type PodEvents interface {
	PodWarning(pod *k8s.Pod, reason, message string)
}

// Event reasons the proxy records on pods.
const (
	// EventIMDSv1Refused: the pod read metadata without a token while
	// --imdsv2-required is on: its SDK is too old or IMDSv1 is forced.
	EventIMDSv1Refused = "IMDSv1Refused"
)

// Defaults for zero Options fields.
const (
	// DefaultRequestTimeout bounds pod lookup, credential fetch and upstream
	// reads for one request. SDKs give up sooner; this only stops runaway work.
	DefaultRequestTimeout = 5 * time.Second
	// DefaultUpstreamTimeout bounds one call to the upstream metadata service.
	DefaultUpstreamTimeout = 2 * time.Second
	// DefaultReadHeaderTimeout stops clients that trickle headers (slowloris).
	DefaultReadHeaderTimeout = 2 * time.Second
	// DefaultReadTimeout bounds reading a whole request.
	DefaultReadTimeout = 5 * time.Second
	// DefaultWriteTimeout bounds a request from headers read to response written;
	// it is above DefaultRequestTimeout so a slow credential fetch still answers.
	DefaultWriteTimeout = 10 * time.Second
	// DefaultIdleTimeout closes idle keep-alive connections.
	DefaultIdleTimeout = 60 * time.Second
	// DefaultMaxHeaderBytes: IMDS requests carry a handful of short headers.
	DefaultMaxHeaderBytes = 8 << 10
	// DefaultShutdownTimeout bounds a graceful shutdown.
	DefaultShutdownTimeout = 10 * time.Second
	// maxBodyBytes: no IMDS request has a body; this is the most one may carry.
	maxBodyBytes = 1 << 10
	// maxLoggedPathLen bounds the path written to the log.
	maxLoggedPathLen = 300
)

// Options configure a Server. Zero values mean the documented defaults.
type Options struct {
	// HostIP is the address the metadata port binds to: the node's IP, never
	// 0.0.0.0, so only DNATed pod traffic reaches it. Ignored with Listener.
	HostIP string
	// AppPort is the metadata port (kube2ra's default 8181; 0 picks a free port).
	AppPort int
	// HostIPv6, when set, is bound on AppPort too: the IPv6 DNAT's target.
	HostIPv6 string
	// Listener, when set, is served instead of binding HostIP:AppPort.
	Listener net.Listener
	// IMDSv2Required refuses GETs without a session token (401), as EC2's HttpTokens=required.
	IMDSv2Required bool
	// MetadataAddr is the upstream metadata service: host, host:port or
	// http URL; empty means 169.254.169.254, "none" means off AWS
	// (synthetic region answers, nothing passed through).
	MetadataAddr string
	// AllowPaths are extra pass-through patterns (see DefaultAllowPaths for the syntax).
	AllowPaths []string
	// Region is the region answered off AWS; required with MetadataAddr "none".
	Region string
	// AvailabilityZone is answered off AWS; default Region+"a".
	AvailabilityZone string
	// RateLimit is requests per second per caller IP; 0 disables the limit.
	RateLimit float64
	// RateLimitBurst is the bucket size per caller IP; default max(1, RateLimit).
	RateLimitBurst int
	// RequestTimeout bounds the work for one request; default DefaultRequestTimeout.
	RequestTimeout time.Duration
	// UpstreamTimeout bounds one upstream call; default DefaultUpstreamTimeout.
	UpstreamTimeout time.Duration
	// ReadHeaderTimeout, default DefaultReadHeaderTimeout.
	ReadHeaderTimeout time.Duration
	// ReadTimeout, default DefaultReadTimeout.
	ReadTimeout time.Duration
	// WriteTimeout, default DefaultWriteTimeout.
	WriteTimeout time.Duration
	// IdleTimeout, default DefaultIdleTimeout.
	IdleTimeout time.Duration
	// MaxHeaderBytes, default DefaultMaxHeaderBytes.
	MaxHeaderBytes int
	// ShutdownTimeout bounds a graceful shutdown; default DefaultShutdownTimeout.
	ShutdownTimeout time.Duration
	// Logger receives one line per request (repeat reads of a credential a
	// pod already has at debug); default discards.
	Logger logrus.FieldLogger
	// Registerer gets the proxy's metrics; nil keeps them unregistered.
	Registerer prometheus.Registerer
	// Clock tells time for tokens, rate limits and durations; default the real clock.
	Clock clock.PassiveClock
	// UpstreamTransport replaces the transport to the upstream (tests only).
	UpstreamTransport http.RoundTripper
	// PodIdentity opens the token door (GET /v1/credentials); nil keeps it
	// closed, and the path is refused like any non-IMDS path.
	PodIdentity *PodIdentity
	// Events records Warning Events on pods (IMDSv1 refused, credential
	// failures the user must act on); nil records none.
	Events PodEvents
}

// Server is the metadata server.
type Server struct {
	// pods finds the calling pod.
	pods PodFinder
	// roles resolves the pod's role.
	roles RoleResolver
	// creds gets credentials for the role.
	creds CredentialGetter
	// imdsv2Required refuses token-less GETs.
	imdsv2Required bool
	// requestTimeout bounds one request's work.
	requestTimeout time.Duration
	// tokens mints and checks session tokens.
	tokens *tokenMinter
	// allow is the pass-through allowlist.
	allow *allowlist
	// backend answers pass-through reads (upstream or synthetic).
	backend metadataBackend
	// limiter is the per-IP rate limit, nil when off.
	limiter *ipRateLimiter
	// metrics are the Prometheus collectors.
	metrics *metrics
	// log is the base logger.
	log logrus.FieldLogger
	// clock tells time.
	clock clock.PassiveClock
	// router dispatches canonical requests (but the credential route).
	router *mux.Router
	// docs caches encoded credential documents and who got them.
	docs *credentialDocs
	// extendedDocs is docs for the extended documents (with AccountId).
	extendedDocs *credentialDocs
	// logs reports whether the logger writes a level, so a line nobody
	// keeps is never built.
	logs func(logrus.Level) bool
	// listener runs the HTTP server.
	listener *httpListener
	// podIdentity is the token door, nil when closed.
	podIdentity *PodIdentity
	// podIdentityDocs caches the token door's encoded documents.
	podIdentityDocs *credentialDocs
	// events records Warning Events on pods; nil when none.
	events PodEvents
}

// New builds a metadata server. It does not bind a port; call Listen.
func New(opts Options, pods PodFinder, roles RoleResolver, creds CredentialGetter) (*Server, error) {
	if pods == nil || roles == nil || creds == nil {
		return nil, errors.New("proxy: New needs a PodFinder, a RoleResolver and a CredentialGetter; one of them is nil")
	}
	setDuration := func(d *time.Duration, def time.Duration) {
		if *d <= 0 {
			*d = def
		}
	}
	setDuration(&opts.RequestTimeout, DefaultRequestTimeout)
	setDuration(&opts.UpstreamTimeout, DefaultUpstreamTimeout)
	setDuration(&opts.ReadHeaderTimeout, DefaultReadHeaderTimeout)
	setDuration(&opts.ReadTimeout, DefaultReadTimeout)
	setDuration(&opts.WriteTimeout, DefaultWriteTimeout)
	setDuration(&opts.IdleTimeout, DefaultIdleTimeout)
	setDuration(&opts.ShutdownTimeout, DefaultShutdownTimeout)
	if opts.MaxHeaderBytes <= 0 {
		opts.MaxHeaderBytes = DefaultMaxHeaderBytes
	}
	if opts.Logger == nil {
		l := logrus.New()
		l.SetOutput(io.Discard)
		opts.Logger = l
	}
	if opts.Clock == nil {
		opts.Clock = clock.RealClock{}
	}
	if opts.PodIdentity != nil && (opts.PodIdentity.Pods == nil || opts.PodIdentity.Roles == nil || opts.PodIdentity.NodeAddrs == nil) {
		return nil, errors.New("proxy: the pod identity door needs a PodAuthenticator, a RoleResolver and the node's addresses; one of them is nil")
	}
	if opts.RateLimit < 0 {
		return nil, fmt.Errorf("proxy: rate limit %v is negative; use 0 to disable it", opts.RateLimit)
	}
	if opts.Listener == nil {
		ip, err := netip.ParseAddr(opts.HostIP)
		if err != nil {
			return nil, fmt.Errorf("proxy: host IP %q is not an IP address; set --host-ip (env HOST_IP) to the node's IP: %w", opts.HostIP, err)
		}
		if ip.IsUnspecified() {
			// On the host network 0.0.0.0 would expose pods' credentials
			// route to anything that can reach the node.
			return nil, fmt.Errorf("proxy: host IP %s would listen on every interface; set --host-ip (env HOST_IP) to the node's own IP", opts.HostIP)
		}
		if opts.AppPort < 0 || opts.AppPort > 65535 {
			return nil, fmt.Errorf("proxy: app port %d is out of range 0..65535", opts.AppPort)
		}
		if opts.HostIPv6 != "" {
			if ip6, err := netip.ParseAddr(opts.HostIPv6); err != nil || !ip6.Is6() || ip6.IsUnspecified() {
				return nil, fmt.Errorf("proxy: host IPv6 address %q is not the node's own IPv6 address; set --host-ipv6 or leave it empty to find it", opts.HostIPv6)
			}
		}
	}

	m, err := newMetrics(opts.Registerer)
	if err != nil {
		return nil, err
	}
	tokens, err := newTokenMinter(opts.Clock)
	if err != nil {
		return nil, err
	}
	patterns := append(append([]string{}, DefaultAllowPaths...), opts.AllowPaths...)
	allow, err := newAllowlist(patterns)
	if err != nil {
		return nil, fmt.Errorf("proxy: %w", err)
	}
	var backend metadataBackend
	if opts.MetadataAddr == MetadataAddrNone {
		if opts.Region == "" {
			return nil, errors.New("proxy: metadata address is \"none\" but no region is set; set --region so SDKs can discover it")
		}
		zone := opts.AvailabilityZone
		if zone == "" {
			zone = opts.Region + "a"
		}
		if backend, err = newSynthetic(opts.Region, zone); err != nil {
			return nil, err
		}
		if len(opts.AllowPaths) > 0 {
			opts.Logger.WithField("allow_paths", opts.AllowPaths).Warn("metadata allow paths are ignored: there is no upstream metadata service (--metadata-addr=none)")
		}
	} else {
		base, err := ParseMetadataAddr(opts.MetadataAddr)
		if err != nil {
			return nil, fmt.Errorf("proxy: %w", err)
		}
		backend = newUpstream(base, opts.UpstreamTransport, opts.UpstreamTimeout, opts.Clock, func(code string) {
			m.passthrough.WithLabelValues(code).Inc()
		})
	}

	s := &Server{
		pods:            pods,
		roles:           roles,
		creds:           creds,
		imdsv2Required:  opts.IMDSv2Required,
		requestTimeout:  opts.RequestTimeout,
		tokens:          tokens,
		allow:           allow,
		backend:         backend,
		metrics:         m,
		log:             opts.Logger,
		clock:           opts.Clock,
		docs:            newCredentialDocs(opts.Clock),
		extendedDocs:    newCredentialDocs(opts.Clock),
		logs:            levelEnabled(opts.Logger),
		podIdentity:     opts.PodIdentity,
		podIdentityDocs: newCredentialDocs(opts.Clock),
		events:          opts.Events,
	}
	if opts.RateLimit > 0 {
		s.limiter = newIPRateLimiter(opts.RateLimit, opts.RateLimitBurst, opts.Clock)
	}
	s.router = s.newRouter()
	srv := &http.Server{
		Handler:           s,
		ReadHeaderTimeout: opts.ReadHeaderTimeout,
		ReadTimeout:       opts.ReadTimeout,
		WriteTimeout:      opts.WriteTimeout,
		IdleTimeout:       opts.IdleTimeout,
		MaxHeaderBytes:    opts.MaxHeaderBytes,
		ErrorLog:          newServerErrorLog(opts.Logger, "metadata"),
		// "OPTIONS *" reaches the gate (and is refused) instead of net/http's 200.
		DisableGeneralOptionsHandler: true,
	}
	s.listener = &httpListener{
		name:            "metadata server",
		addr:            net.JoinHostPort(opts.HostIP, strconv.Itoa(opts.AppPort)),
		alsoHosts:       ipv6Hosts(opts),
		srv:             srv,
		front:           &fastlane.Server{HTTP: srv, Takes: laneTakes},
		shutdownTimeout: opts.ShutdownTimeout,
		ln:              opts.Listener,
	}
	return s, nil
}

// laneTakes are the requests the lane answers without net/http: an SDK's
// token PUT, its credential GETs and the token door's GET. Everything else
// (pass-through reads, /healthz on a shared port) is net/http's.
func laneTakes(method string, target []byte) bool {
	switch method {
	case http.MethodPut:
		return string(target) == tokenPath
	case http.MethodGet:
		return bytes.HasPrefix(target, laneCredentialsPrefix) || string(target) == PodIdentityPath
	}
	return false
}

// laneCredentialsPrefix starts the credential routes the lane takes.
var laneCredentialsPrefix = []byte("/latest/meta-data/iam/" + credentialsDir)

// ipv6Hosts are the extra addresses the metadata server binds.
func ipv6Hosts(opts Options) []string {
	if opts.HostIPv6 == "" || opts.Listener != nil {
		return nil
	}
	return []string{opts.HostIPv6}
}

// newRouter lays out the IMDS routes. Paths arrive canonical and without a
// trailing slash (the gate ran first), so nothing here cleans or redirects.
func (s *Server) newRouter() *mux.Router {
	r := mux.NewRouter().SkipClean(true).UseEncodedPath()
	const v = "/{version}"
	// api/* never gets here: ServeHTTP answers it (serveTokenRoute).
	methodNotAllowed := s.refuse(routeMethodNotAllowed, http.StatusMethodNotAllowed, "MethodNotAllowed")
	get := []string{http.MethodGet, http.MethodHead}
	r.HandleFunc(v+"/meta-data/iam/"+credentialsDir, s.credentialsList(routeCredentialsList)).Methods(get...)
	r.HandleFunc(v+"/meta-data/iam/"+extendedCredentialsDir, s.credentialsList(routeExtendedCredentialsList)).Methods(get...)
	// iam/security-credentials[-extended]/<name> never gets here: ServeHTTP answers it.
	r.HandleFunc(v+"/meta-data/iam/info", s.handleIAMInfo).Methods(get...)
	r.HandleFunc(v+"/meta-data/iam", s.handleIAMList).Methods(get...)
	// Anything else under iam/ is not IMDS's and never reaches pass-through.
	r.PathPrefix(v + "/meta-data/iam/").HandlerFunc(s.refuse(routeIAMOther, http.StatusNotFound, reasonPathNotAllowed)).Methods(get...)
	r.PathPrefix("/").HandlerFunc(s.handleMetadata).Methods(get...)
	r.NotFoundHandler = s.refuse(routeNotFound, http.StatusNotFound, reasonPathNotAllowed)
	r.MethodNotAllowedHandler = methodNotAllowed
	return r
}

// Listen binds HostIP:AppPort (or adopts Options.Listener). Call it before
// installing the DNAT rule, so a port clash stops the start early.
func (s *Server) Listen() error { return s.listener.listen() }

// ListenWith is Listen with listen opening each address: a successor
// adopts its predecessor's listeners through it (see package handover).
func (s *Server) ListenWith(listen ListenFunc) error { return s.listener.listenWith(listen) }

// Listeners are the bound listeners (HostIP's first), nil before Listen.
func (s *Server) Listeners() []net.Listener { return s.listener.listeners() }

// TokenKey is the IMDSv2 token key, for a successor to adopt: the tokens
// pods hold then stay valid across the handover. A token only proves that
// its bearer could PUT from the pod's IP, which any process there can.
func (s *Server) TokenKey() []byte { return bytes.Clone(s.tokens.key) }

// AdoptTokenKey mints and checks tokens with a predecessor's key; call it
// before Serve.
func (s *Server) AdoptTokenKey(key []byte) error {
	m, err := newTokenMinterWithKey(s.clock, key)
	if err != nil {
		return err
	}
	s.tokens = m
	return nil
}

// Drain stops accepting after a successor took the listeners over, answers
// what was accepted and closes idle connections; see httpListener.drain.
func (s *Server) Drain(ctx context.Context) error { return s.listener.drain(ctx) }

// Addr is the bound address, nil before Listen.
func (s *Server) Addr() net.Addr { return s.listener.address() }

// Serve answers requests until ctx ends, then shuts down gracefully within
// ShutdownTimeout. It returns nil after such a shutdown.
func (s *Server) Serve(ctx context.Context) error { return s.listener.serve(ctx) }

// Shutdown stops the server, waiting for open requests until ctx ends.
func (s *Server) Shutdown(ctx context.Context) error { return s.listener.shutdown(ctx) }

// Handler is the whole metadata handler (gate, tokens, routes), for tests
// and for serving on a listener of one's own.
func (s *Server) Handler() http.Handler { return s }

// ServeHTTP runs one request: rate limit, body limit, canonical-path gate,
// token check, then the router; and writes the request's log line and metrics.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := s.clock.Now()
	// One allocation holds what the request learns, its status writer and
	// its deadline: fewer objects a request means fewer GC cycles.
	info := &requestInfo{ip: callerIP(r), route: routeRefused, log: s.log}
	info.sw.ResponseWriter = w
	sw := &info.sw
	defer s.finish(sw, r, info, start)
	defer func() {
		// A bug in a handler or a consumer interface answers 500 and is
		// logged with this request's line, rather than dropping the connection.
		if p := recover(); p != nil {
			if p == http.ErrAbortHandler {
				panic(p)
			}
			info.err = fmt.Errorf("panic while answering: %v\n%s", p, debug.Stack())
			if sw.status == 0 {
				writeStatus(sw, http.StatusInternalServerError)
			}
		}
	}()

	if s.limiter != nil && !s.limiter.allow(info.ip, start) {
		info.route = routeRateLimited
		s.deny(sw, info, http.StatusTooManyRequests, "RateLimited")
		return
	}
	if r.ContentLength > maxBodyBytes {
		s.deny(sw, info, http.StatusRequestEntityTooLarge, "BodyTooLarge")
		return
	}
	if r.Body != nil && r.Body != http.NoBody {
		r.Body = http.MaxBytesReader(sw, r.Body, maxBodyBytes)
	}

	target := r.RequestURI
	if target == "" {
		// A handler called without a server (tests): rebuild the target.
		target = r.URL.RequestURI()
	}
	if s.podIdentity != nil && target == PodIdentityPath {
		// The token door: the caller is whoever its token names, so the
		// IMDS path gate and session tokens do not apply.
		info.deadline.begin(r.Context(), s.requestTimeout)
		defer info.deadline.stop()
		s.servePodIdentity(&info.deadline, sw, r, info)
		return
	}
	c, status, reason := checkPathInto(target, info.segs[:0])
	if status == 0 && (r.URL.RawQuery != "" || r.URL.ForceQuery || r.URL.Fragment != "") {
		status, reason = http.StatusBadRequest, reasonMalformedPath
	}
	if status != 0 {
		s.deny(sw, info, status, reason)
		return
	}
	info.path = c

	if r.Method != http.MethodPut {
		vals := r.Header[tokenHeaderKey]
		switch {
		case len(vals) > 0 && (len(vals) != 1 || !s.tokens.validAt(vals[0], info.ip, start)):
			info.route = routeUnauthorized
			s.deny(sw, info, http.StatusUnauthorized, "InvalidToken")
			return
		case len(vals) == 0 && s.imdsv2Required:
			info.route = routeUnauthorized
			s.deny(sw, info, http.StatusUnauthorized, "TokenRequired")
			// The 401 goes out now; naming the pod may wait for a lookup.
			_ = http.NewResponseController(sw).Flush()
			s.reportIMDSv1(r.Context(), info)
			return
		}
		info.imdsv2 = len(vals) == 1
	}

	if c.underAPI() {
		s.serveTokenRoute(sw, r, info)
		return
	}
	info.deadline.begin(r.Context(), s.requestTimeout)
	defer info.deadline.stop()
	var ctx context.Context = &info.deadline
	if name, extended, ok := c.credentialName(); ok && (r.Method == http.MethodGet || r.Method == http.MethodHead) {
		s.serveCredentials(ctx, sw, info, name, extended)
		return
	}
	ctx = context.WithValue(ctx, infoKey{}, info)
	r2 := r.WithContext(ctx)
	u := *r.URL
	u.Path, u.RawPath = c.routePath(), ""
	r2.URL = &u
	s.router.ServeHTTP(sw, r2)
}

// reportIMDSv1 names the pod refused for reading without a token, in the
// log line and in an Event, so operators find the old SDKs. The 401 stands
// whoever the caller is.
func (s *Server) reportIMDSv1(ctx context.Context, info *requestInfo) {
	if s.events == nil {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, s.requestTimeout)
	defer cancel()
	pod, err := s.pods.FindPod(ctx, info.ip)
	if err != nil || pod == nil {
		return
	}
	info.pod = pod
	s.events.PodWarning(pod, EventIMDSv1Refused, "read instance metadata without an IMDSv2 token and was refused (401), as IMDS does with HttpTokens=required: "+
		"upgrade the AWS SDK or tool (every current one uses IMDSv2), or, on the agent, set --imdsv2-required=false (chart imdsv2Required: false) to allow IMDSv1 for every pod")
}

// callerIP is the TCP peer's address. Headers such as X-Forwarded-For are
// never believed: the pod is whoever opened the connection.
func callerIP(r *http.Request) netip.Addr {
	ap, err := netip.ParseAddrPort(r.RemoteAddr)
	if err != nil {
		return netip.Addr{}
	}
	return ap.Addr().Unmap()
}

// deny answers status and counts the refusal by reason. The body never
// says why: the reason goes to the log and the metric.
func (s *Server) deny(w http.ResponseWriter, info *requestInfo, status int, reason string) {
	info.reason = reason
	s.metrics.denials.WithLabelValues(reason).Inc()
	writeStatus(w, status)
}

// finish records the request's metrics and writes its log line.
func (s *Server) finish(sw *statusWriter, r *http.Request, info *requestInfo, start time.Time) {
	status := sw.statusCode()
	elapsed := s.clock.Since(start)
	s.metrics.observe(info.route, status, elapsed.Seconds())

	level, msg := logrus.InfoLevel, "metadata request"
	switch {
	case status >= http.StatusInternalServerError:
		level, msg = logrus.ErrorLevel, "metadata request failed"
	case info.reason != "":
		level, msg = logrus.WarnLevel, "metadata request refused"
	case info.routine:
		// A credential this pod has already been served: SDKs re-read it
		// often, and a line each time costs more than the answer. The
		// first serving of each credential to each pod is at info.
		level = logrus.DebugLevel
	case info.accessKeyID != "":
		msg = "credentials served to pod"
	}
	if !s.logs(level) {
		return
	}
	path := r.RequestURI
	if len(path) > maxLoggedPathLen {
		path = path[:maxLoggedPathLen] + "..."
	}
	fields := logrus.Fields{
		"client_ip":   info.ip.String(),
		"method":      r.Method,
		"path":        path,
		"route":       info.route,
		"status":      status,
		"duration_ms": float64(elapsed.Microseconds()) / 1000,
		"imdsv2":      info.imdsv2,
	}
	if info.pod != nil {
		fields["pod"] = info.pod.Name
		fields["namespace"] = info.pod.Namespace
	}
	if info.role != "" {
		fields["role"] = info.role
	}
	if info.reason != "" {
		fields["reason"] = info.reason
	}
	if info.accessKeyID != "" {
		// The key ID is not a secret (CloudTrail records it); it ties the
		// pod to what it did with the credentials.
		fields["access_key_id"] = info.accessKeyID
		fields["expiration"] = info.expiration.UTC().Format(time.RFC3339)
	}
	entry := s.log.WithFields(fields)
	if info.err != nil {
		entry = entry.WithError(info.err)
	}
	entry.Log(level, msg)
}

// levelEnabled tells which levels l writes; unknown loggers write all.
func levelEnabled(l logrus.FieldLogger) func(logrus.Level) bool {
	switch l := l.(type) {
	case *logrus.Logger:
		return l.IsLevelEnabled
	case *logrus.Entry:
		return l.Logger.IsLevelEnabled
	default:
		return func(logrus.Level) bool { return true }
	}
}

// writeStatus answers code with its status text, as plain text.
func writeStatus(w http.ResponseWriter, code int) {
	writeText(w, code, http.StatusText(code))
}

// writeText answers code with body as text/plain, as IMDS does for everything.
func writeText(w http.ResponseWriter, code int, body string) {
	setTextHeaders(w, len(body))
	w.WriteHeader(code)
	_, _ = io.WriteString(w, body)
}

// Content-Type values shared by every answer instead of a new slice each:
// net/http copies the handler's header when the status is written, and
// nothing writes into a header value in place (capacity 1, so an append
// copies too).
var (
	textPlain       = []string{"text/plain"}[:1:1]
	applicationJSON = []string{"application/json"}[:1:1]
)

// setTextHeaders declares a text/plain body of n bytes, as IMDS serves everything.
func setTextHeaders(w http.ResponseWriter, n int) {
	h := w.Header()
	h["Content-Type"] = textPlain
	h["Content-Length"] = []string{strconv.Itoa(n)}
}

// statusWriter remembers the status written.
type statusWriter struct {
	http.ResponseWriter
	// status is the code written, 0 until then.
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

// statusCode is the status the client got (200 if the handler wrote nothing).
func (w *statusWriter) statusCode() int {
	if w.status == 0 {
		return http.StatusOK
	}
	return w.status
}

// Unwrap lets http.ResponseController reach the underlying writer.
func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// requestInfo is what a request learned on its way, for its log line and metrics.
type requestInfo struct {
	// ip is the caller's address.
	ip netip.Addr
	// path is the canonical path (zero if the gate refused it).
	path canonicalPath
	// route is the metrics label of the handler that answered.
	route string
	// reason is why the request was refused, empty if it was not.
	reason string
	// pod is the calling pod, once known.
	pod *k8s.Pod
	// role is the pod's role ARN, once known.
	role string
	// err is the failure to log, if any.
	err error
	// log is the server's base logger.
	log logrus.FieldLogger
	// imdsv2 is true when the request carried a valid session token.
	imdsv2 bool
	// accessKeyID is the key ID of the credentials served, if any.
	accessKeyID string
	// expiration is when the served credentials expire.
	expiration time.Time
	// routine is true for credentials this pod had been served before.
	routine bool
	// sw is the request's status writer (kept here: one allocation).
	sw statusWriter
	// deadline bounds the request's work once begun (kept here: one allocation).
	deadline lazyDeadline
	// segs holds path's segments when they fit (IMDS paths are short).
	segs [maxInlineSegments]string
}

// maxInlineSegments is how many path segments a request holds without an
// allocation of their own: iam/security-credentials/<name> is 4.
const maxInlineSegments = 6

// infoKey is the context key of *requestInfo.
type infoKey struct{}

// requestInfoFrom returns the request's info (a throwaway one outside ServeHTTP).
func requestInfoFrom(ctx context.Context) *requestInfo {
	if info, ok := ctx.Value(infoKey{}).(*requestInfo); ok {
		return info
	}
	return &requestInfo{}
}

// serverErrorLog sends net/http's own complaints (accept errors, broken
// connections) to the injected logger.
type serverErrorLog struct {
	// log receives each line.
	log logrus.FieldLogger
}

func (l serverErrorLog) Write(p []byte) (int, error) {
	l.log.Warn(strings.TrimSpace(string(p)))
	return len(p), nil
}

func newServerErrorLog(l logrus.FieldLogger, server string) *log.Logger {
	return log.New(serverErrorLog{log: l.WithField("server", server)}, "", 0)
}
