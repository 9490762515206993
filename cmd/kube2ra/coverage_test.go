package main

import (
	"errors"
	"net/netip"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	logtest "github.com/sirupsen/logrus/hooks/test"
	"k8s.io/client-go/tools/record"

	"github.com/kube2ra/kube2ra/iptables"
	"github.com/kube2ra/kube2ra/k8s"
)

// TestCoverageNamesPatternPodAndInterface: a pod whose route (here: to
// 127.0.0.1, out of lo) leaves through an interface the pattern misses
// is reported with the pattern, the pod, the interface and the fix, as an
// Event and in the gauge; a pattern that matches reports nothing.
func TestCoverageNamesPatternPodAndInterface(t *testing.T) {
	pod := &k8s.Pod{Namespace: "shop", Name: "web-1", IPs: []netip.Addr{netip.MustParseAddr("127.0.0.1")}}
	for _, tt := range []struct {
		pattern string
		want    []string
	}{
		{"cni0", []string{`"cni0"`, "shop/web-1", "127.0.0.1", "through lo", "add lo"}},
		{"lo,cni0", nil},
	} {
		specs, err := iptables.ParseInterfaces(tt.pattern)
		if err != nil {
			t.Fatal(err)
		}
		events := record.NewFakeRecorder(10)
		gauge := prometheus.NewGauge(prometheus.GaugeOpts{Name: "g"})
		var problem string
		c := &coverage{specs: specs, pattern: tt.pattern, pods: func() []*k8s.Pod { return []*k8s.Pod{pod} },
			events: k8s.NewPodEvents(events), uncovered: gauge, problem: func(p string) { problem = p }}
		c.problem(c.check())
		for _, w := range tt.want {
			if !strings.Contains(problem, w) {
				t.Errorf("--host-interface %s: readiness %q does not name %s", tt.pattern, problem, w)
			}
		}
		if tt.want == nil && problem != "" {
			t.Errorf("--host-interface %s covers the pod, but readiness says %q", tt.pattern, problem)
		}
		wantGauge := 0.0
		if tt.want != nil {
			wantGauge = 1
		}
		if got := testutil.ToFloat64(gauge); got != wantGauge {
			t.Errorf("--host-interface %s: kube2ra_pods_not_intercepted = %v, want %v", tt.pattern, got, wantGauge)
		}
		if tt.want != nil && len(events.Events) != 1 {
			t.Errorf("--host-interface %s: %d Events, want 1 on the pod", tt.pattern, len(events.Events))
		}
	}
	// The agent's own pod and every other host-network pod carry the node's
	// addresses, whose route is lo here: never a coverage problem (on a real
	// node the agent otherwise never becomes ready).
	hostPod := &k8s.Pod{Namespace: "kube-system", Name: "kube2ra-x", HostNetwork: true, IPs: []netip.Addr{netip.MustParseAddr("127.0.0.1")}}
	specs, err := iptables.ParseInterfaces("cni0")
	if err != nil {
		t.Fatal(err)
	}
	var problem string
	c := &coverage{specs: specs, pattern: "cni0", pods: func() []*k8s.Pod { return []*k8s.Pod{hostPod} },
		events: k8s.NewPodEvents(record.NewFakeRecorder(10)), uncovered: prometheus.NewGauge(prometheus.GaugeOpts{Name: "g"}), problem: func(p string) { problem = p }}
	c.problem(c.check())
	if problem != "" {
		t.Errorf("a host-network pod made readiness say %q", problem)
	}
	if got := suggestion("cali1a2b3c"); got != "cali+" {
		t.Errorf("suggestion(cali1a2b3c) = %q, want cali+", got)
	}
}

// TestUnroutablePodsDoNotHoldReadiness: a pod the node has no route to
// (its network not set up yet, or torn down) is counted and logged once
// while it stays so, but readiness waits only for pods known to miss the
// DNAT; a read failure of another kind still holds it.
func TestUnroutablePodsDoNotHoldReadiness(t *testing.T) {
	gone := &k8s.Pod{Namespace: "shop", Name: "old-1", IPs: []netip.Addr{netip.MustParseAddr("10.250.0.9")}}
	web := &k8s.Pod{Namespace: "shop", Name: "web-1", IPs: []netip.Addr{netip.MustParseAddr("10.200.0.5")}}
	specs, err := iptables.ParseInterfaces("cni0")
	if err != nil {
		t.Fatal(err)
	}
	var cov iptables.Coverage
	var readErr error
	logger, hook := logtest.NewNullLogger()
	gauge := prometheus.NewGauge(prometheus.GaugeOpts{Name: "unroutable"})
	c := &coverage{specs: specs, pattern: "cni0", pods: func() []*k8s.Pod { return []*k8s.Pod{gone, web} },
		events: k8s.NewPodEvents(record.NewFakeRecorder(10)), uncovered: prometheus.NewGauge(prometheus.GaugeOpts{Name: "g"}),
		unroutable: gauge, log: logger,
		routes: func([]iptables.InterfaceSpec, []netip.Addr) (iptables.Coverage, error) { return cov, readErr }}

	cov = iptables.Coverage{Unroutable: []netip.Addr{gone.IPs[0]}}
	for range 3 {
		if p := c.check(); p != "" {
			t.Fatalf("an unroutable pod made readiness say %q", p)
		}
	}
	if got := testutil.ToFloat64(gauge); got != 1 {
		t.Errorf("kube2ra_pods_unroutable = %v, want 1", got)
	}
	if n := len(hook.AllEntries()); n != 1 || !strings.Contains(hook.LastEntry().Data["pods"].(string), "shop/old-1 (10.250.0.9)") {
		t.Errorf("three passes with the same unroutable pod logged %d lines (want 1 naming shop/old-1): %v", n, hook.AllEntries())
	}

	cov = iptables.Coverage{}
	if p := c.check(); p != "" || testutil.ToFloat64(gauge) != 0 || len(hook.AllEntries()) != 2 {
		t.Errorf("route back: readiness %q, gauge %v, %d log lines (want \"\", 0, 2)", p, testutil.ToFloat64(gauge), len(hook.AllEntries()))
	}

	cov, readErr = iptables.Coverage{Uncovered: []iptables.Uncovered{{IP: web.IPs[0], Interface: "eth1"}}}, nil
	if p := c.check(); !strings.Contains(p, "shop/web-1") {
		t.Errorf("a pod routed out of eth1 with --host-interface cni0: readiness %q, want it named", p)
	}
	cov, readErr = iptables.Coverage{}, errors.New("netlink: permission denied")
	if p := c.check(); !strings.Contains(p, "permission denied") {
		t.Errorf("routes that cannot be read: readiness %q, want the error", p)
	}
}
