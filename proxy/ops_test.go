package proxy

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	logtest "github.com/sirupsen/logrus/hooks/test"
	clocktesting "k8s.io/utils/clock/testing"
)

// startOps serves an ops server until the test ends, on opts.Addr (and its
// AlsoHosts) when given, else on a loopback listener; it returns its URL.
func startOps(t *testing.T, opts OpsOptions) string {
	t.Helper()
	if opts.Addr == "" {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		opts.Listener = ln
	}
	o, err := NewOpsServer(opts)
	if err != nil {
		t.Fatal(err)
	}
	if err := o.Listen(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- o.Serve(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Error("ops Serve did not return")
		}
	})
	return "http://" + o.Addr().String()
}

func TestOpsEndpoints(t *testing.T) {
	var ready atomic.Bool
	reg := prometheus.NewRegistry()
	c := prometheus.NewCounter(prometheus.CounterOpts{Name: "kube2ra_test_total", Help: "t"})
	reg.MustRegister(c)
	url := startOps(t, OpsOptions{
		Gatherer: reg,
		Ready: func(context.Context) error {
			if !ready.Load() {
				return errors.New("pod informer not synced")
			}
			return nil
		},
	})
	if status, body, _ := httpGet(t, url+"/healthz", nil); status != 200 || body != "ok" {
		t.Errorf("/healthz = %d %q", status, body)
	}
	if status, body, _ := httpGet(t, url+"/readyz", nil); status != 503 || !strings.Contains(body, "not synced") {
		t.Errorf("/readyz before ready = %d %q", status, body)
	}
	ready.Store(true)
	if status, _, _ := httpGet(t, url+"/readyz", nil); status != 200 {
		t.Errorf("/readyz when ready = %d", status)
	}
	if status, body, _ := httpGet(t, url+"/metrics", nil); status != 200 || !strings.Contains(body, "kube2ra_test_total") {
		t.Errorf("/metrics = %d %q", status, body)
	}
	if status, _, _ := httpGet(t, url+"/debug/store", nil); status != 404 {
		t.Errorf("/debug/store without --debug = %d, want 404", status)
	}
}

func TestOpsMetricsExposeProxyMetrics(t *testing.T) {
	e := newTestEnv(t, Options{})
	httpGet(t, e.url+"/latest/meta-data/iam/security-credentials/", nil)
	url := startOps(t, OpsOptions{Gatherer: e.reg})
	_, body, _ := httpGet(t, url+"/metrics", nil)
	for _, name := range []string{"kube2ra_http_requests_total", "kube2ra_http_request_duration_seconds"} {
		if !strings.Contains(body, name) {
			t.Errorf("/metrics lacks %s", name)
		}
	}
}

func TestOpsDebugStore(t *testing.T) {
	url := startOps(t, OpsOptions{Debug: true, DebugStore: func() any {
		return map[string]any{"10.0.0.5": map[string]string{"pod": "team-a/app", "role": testRoleARN}}
	}})
	status, body, hdr := httpGet(t, url+"/debug/store", nil)
	if status != http.StatusOK || !strings.Contains(body, "team-a/app") || hdr.Get("Content-Type") != "application/json" {
		t.Errorf("/debug/store = %d %q %q", status, body, hdr.Get("Content-Type"))
	}
	if _, err := NewOpsServer(OpsOptions{Addr: "127.0.0.1:0", Debug: true}); err == nil {
		t.Error("Debug without a DebugStore was accepted")
	}
	if _, err := NewOpsServer(OpsOptions{}); err == nil {
		t.Error("an ops server without address was accepted")
	}
}

// opsRequest is GET path as it arrives on a connection from remote to local.
func opsRequest(t *testing.T, h http.Handler, path, local, remote string) (int, string) {
	t.Helper()
	r := httptest.NewRequest(http.MethodGet, path, nil)
	if local != "" {
		r = r.WithContext(context.WithValue(r.Context(), http.LocalAddrContextKey, net.TCPAddrFromAddrPort(netip.MustParseAddrPort(local))))
	}
	r.RemoteAddr = remote
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	return w.Code, w.Body.String()
}

// TestOpsPagesAboutPodsAnswerOnlyOnTheNode: the metrics port listens on the
// host IP, which every pod reaches; /debug/store (every pod's IP and role)
// and the reasons of /readyz (pod names, interfaces) are answered only when
// both ends of the connection are loopback. Statuses stay the same for
// everyone, so the kubelet's probes on the host IP work unchanged.
func TestOpsPagesAboutPodsAnswerOnlyOnTheNode(t *testing.T) {
	const secretish = "pod team-a/web uses interface cali123"
	o, err := NewOpsServer(OpsOptions{
		Addr:       "127.0.0.1:0",
		Ready:      func(context.Context) error { return errors.New(secretish) },
		Debug:      true,
		DebugStore: func() any { return map[string]string{"10.0.0.5": "team-a/app " + testRoleARN} },
	})
	if err != nil {
		t.Fatal(err)
	}
	h := o.Handler()
	cases := []struct {
		name          string
		local, remote string
		onNode        bool
	}{
		{"loopback to loopback (curl 127.0.0.1 on the node, kubectl exec wget localhost)", "127.0.0.1:9181", "127.0.0.1:40000", true},
		{"IPv6 loopback", "[::1]:9181", "[::1]:40000", true},
		{"a pod to the host IP", "10.0.1.23:9181", "10.244.1.7:40000", false},
		{"the kubelet's probe to the host IP", "10.0.1.23:9181", "10.0.1.23:40000", false},
		{"a pod's address spoofed as loopback to the host IP", "10.0.1.23:9181", "127.0.0.1:40000", false},
		{"a pod DNATed to loopback (route_localnet)", "127.0.0.1:9181", "10.244.1.7:40000", false},
		{"IPv4-mapped host IP", "[::ffff:10.0.1.23]:9181", "[::ffff:127.0.0.1]:40000", false},
		{"no local address known", "", "127.0.0.1:40000", false},
		{"unparsable remote address", "127.0.0.1:9181", "localhost", false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			status, body := opsRequest(t, h, "/readyz", c.local, c.remote)
			if status != http.StatusServiceUnavailable {
				t.Errorf("/readyz status = %d, want 503 whoever asks", status)
			}
			if got := strings.Contains(body, secretish); got != c.onNode {
				t.Errorf("/readyz body %q: reasons shown = %v, want %v", body, got, c.onNode)
			}
			if !c.onNode && !strings.Contains(body, "curl http://127.0.0.1:") {
				t.Errorf("/readyz off the node %q does not say how to read the reasons", body)
			}
			status, body = opsRequest(t, h, "/debug/store", c.local, c.remote)
			if c.onNode {
				if status != http.StatusOK || !strings.Contains(body, "team-a/app") {
					t.Errorf("/debug/store on the node = %d %q, want 200 with the table", status, body)
				}
				return
			}
			if status != http.StatusForbidden || strings.Contains(body, "team-a") || !strings.Contains(body, "curl http://127.0.0.1:") {
				t.Errorf("/debug/store off the node = %d %q, want 403 without the table, saying how to ask on the node", status, body)
			}
		})
	}
}

// TestOpsAlsoListensOnLoopback: with a host IP, the ops port is bound on
// 127.0.0.1 too, so the node can read what pods may not.
func TestOpsAlsoListensOnLoopback(t *testing.T) {
	for addr, want := range map[string]string{
		"10.0.1.23:9181":    opsLoopbackHost,
		"[fd00::23]:9181":   opsLoopbackHost,
		"127.0.0.1:9181":    "",
		"127.0.0.2:0":       "",
		"[::1]:9181":        "",
		"not an address":    "",
		"node-a.local:9181": "",
		"0.0.0.0:9181":      "",
	} {
		if got := strings.Join(loopbackAlso(addr), ","); got != want {
			t.Errorf("loopbackAlso(%q) = %q, want %q", addr, got, want)
		}
	}
}

// TestOpsListensOnItsAlsoHosts: AlsoHosts (the primary IPv6 address of an
// IPv6-first node, where the kubelet probes) answer on the ops port too.
func TestOpsListensOnItsAlsoHosts(t *testing.T) {
	_, port, _ := net.SplitHostPort(strings.TrimPrefix(startOps(t, OpsOptions{Addr: "127.0.0.2:0", AlsoHosts: []string{"::1"}}), "http://"))
	for _, host := range []string{"127.0.0.2", "::1"} {
		url := "http://" + net.JoinHostPort(host, port) + "/healthz"
		if status, body, _ := httpGet(t, url, nil); status != http.StatusOK || body != "ok" {
			t.Errorf("%s = %d %q, want 200 ok", url, status, body)
		}
	}
}

// TestNotReadyIsLoggedWhenTheReasonsChange: probes polling an unready
// agent get a "not ready" line when the reasons change and once per
// notReadyRepeat while they stay, not one per probe; after a success the
// next failure is logged again.
func TestNotReadyIsLoggedWhenTheReasonsChange(t *testing.T) {
	logger, hook := logtest.NewNullLogger()
	clk := clocktesting.NewFakePassiveClock(time.Now())
	var reason atomic.Pointer[string]
	set := func(s string) { reason.Store(&s) }
	set("pod and namespace informers not synced")
	url := startOps(t, OpsOptions{Logger: logger, Clock: clk, Ready: func(context.Context) error {
		if r := *reason.Load(); r != "" {
			return errors.New(r)
		}
		return nil
	}})
	probe := func(want int) {
		t.Helper()
		if status, _, _ := httpGet(t, url+"/readyz", nil); status != want {
			t.Fatalf("/readyz = %d, want %d", status, want)
		}
	}
	lines := func() int { return len(hook.AllEntries()) }
	for range 5 {
		probe(503)
	}
	if lines() != 1 {
		t.Fatalf("5 probes with the same reasons logged %d lines, want 1", lines())
	}
	set("DNAT and guard rules not installed")
	probe(503)
	probe(503)
	if lines() != 2 {
		t.Fatalf("a new reason: %d lines, want 2", lines())
	}
	clk.SetTime(clk.Now().Add(notReadyRepeat))
	probe(503)
	if lines() != 3 {
		t.Fatalf("the same reason after %s: %d lines, want 3", notReadyRepeat, lines())
	}
	set("")
	probe(200)
	set("DNAT and guard rules not installed")
	probe(503)
	if lines() != 4 || hook.LastEntry().Message != "not ready" {
		t.Fatalf("failing again after a success: %d lines (last %q), want 4", lines(), hook.LastEntry().Message)
	}
}
