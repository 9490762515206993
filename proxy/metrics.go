package proxy

import (
	"fmt"
	"strconv"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
)

// Route labels: a fixed, small set so the metrics stay bounded whatever
// paths clients send.
const (
	routeToken           = "token"
	routeCredentialsList = "credentials_list"
	routeCredentials     = "credentials"
	// The extended directory's routes (documents with AccountId).
	routeExtendedCredentialsList = "credentials_extended_list"
	routeExtendedCredentials     = "credentials_extended"
	routeIAMInfo                 = "iam_info"
	routeIAMList                 = "iam_list"
	routeIAMOther                = "iam_other"
	routeListing                 = "listing"
	routePassthrough             = "passthrough"
	routeRefused                 = "refused"
	routeRateLimited             = "rate_limited"
	routeUnauthorized            = "unauthorized"
	routeNotFound                = "not_found"
	routeMethodNotAllowed        = "method_not_allowed"
	routePodIdentity             = "pod_identity"
)

// metrics are the proxy's Prometheus collectors.
type metrics struct {
	// requests counts answered requests by route and status code.
	requests *prometheus.CounterVec
	// duration observes request latency by route.
	duration *prometheus.HistogramVec
	// denials counts refusals by reason (pod not found, policy, bad path, ...).
	denials *prometheus.CounterVec
	// passthrough counts upstream answers by status code ("error" for transport failures).
	passthrough *prometheus.CounterVec
	// tokensIssued counts IMDSv2 tokens minted.
	tokensIssued prometheus.Counter
	// podIdentity counts token-door requests by result.
	podIdentity *prometheus.CounterVec
	// perRoute holds each (route, code)'s counter and observer once used:
	// WithLabelValues hashes its labels under a lock on every call, and
	// every request records both. Routes are a fixed set and codes a
	// handful, so it stays small.
	perRoute sync.Map
	// perResult holds podIdentity's counter for each result once used, for
	// the same reason.
	perResult sync.Map
}

// countPodIdentity counts one token-door request with result.
func (m *metrics) countPodIdentity(result string) {
	v, ok := m.perResult.Load(result)
	if !ok {
		v, _ = m.perResult.LoadOrStore(result, m.podIdentity.WithLabelValues(result))
	}
	v.(prometheus.Counter).Inc()
}

// routeCode is a perRoute key.
type routeCode struct {
	// route is the route label.
	route string
	// code is the HTTP status.
	code int
}

// routeCollectors are one (route, code)'s request counter and the route's
// duration observer.
type routeCollectors struct {
	// requests is kube2ra_http_requests_total{route, code}.
	requests prometheus.Counter
	// duration is kube2ra_http_request_duration_seconds{route}.
	duration prometheus.Observer
}

// observe counts one request of route answered with code, taking seconds.
func (m *metrics) observe(route string, code int, seconds float64) {
	k := routeCode{route: route, code: code}
	v, ok := m.perRoute.Load(k)
	if !ok {
		v, _ = m.perRoute.LoadOrStore(k, &routeCollectors{
			requests: m.requests.WithLabelValues(route, strconv.Itoa(code)),
			duration: m.duration.WithLabelValues(route),
		})
	}
	c := v.(*routeCollectors)
	c.requests.Inc()
	c.duration.Observe(seconds)
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kube2ra_http_requests_total",
			Help: "Metadata requests answered, by route and HTTP status code.",
		}, []string{"route", "code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "kube2ra_http_request_duration_seconds",
			Help: "Time to answer a metadata request, by route.",
			// SDKs give up after 1 s (botocore) or 0.5 s to the first byte (Go v2).
			Buckets: []float64{0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5},
		}, []string{"route"}),
		denials: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kube2ra_denials_total",
			Help: "Requests refused, by reason.",
		}, []string{"reason"}),
		passthrough: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kube2ra_passthrough_requests_total",
			Help: "Requests sent to the upstream metadata service, by its status code (error: no answer).",
		}, []string{"code"}),
		tokensIssued: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "kube2ra_imds_tokens_issued_total",
			Help: "IMDSv2 session tokens issued to pods.",
		}),
		podIdentity: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kube2ra_pod_identity_requests_total",
			Help: "Requests to the token door (GET /v1/credentials), by result: success or why the token, pod, role or credentials were refused.",
		}, []string{"result"}),
	}
	if reg == nil {
		return m, nil
	}
	for _, c := range []prometheus.Collector{m.requests, m.duration, m.denials, m.passthrough, m.tokensIssued, m.podIdentity} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("registering the proxy metrics failed (is a second proxy registered on the same registry?): %w", err)
		}
	}
	return m, nil
}
