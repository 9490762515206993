package proxy

import (
	"context"
	"errors"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

func startOps(t *testing.T, opts OpsOptions) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	opts.Listener = ln
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
