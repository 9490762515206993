package proxy

import (
	"errors"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

var testMetadataAddrs = []netip.Addr{netip.MustParseAddr("169.254.169.254"), netip.MustParseAddr("fd00:ec2::254")}

// startShared runs a metadata server on 127.0.0.1 sharing its port with an
// ops server whose /metrics has kube2ra_test_total; every connection's
// original destination is what dst returns.
func startShared(t *testing.T, debug bool, dst func(net.Conn) (netip.Addr, error)) string {
	t.Helper()
	reg := prometheus.NewRegistry()
	reg.MustRegister(prometheus.NewCounter(prometheus.CounterOpts{Name: "kube2ra_test_total", Help: "t"}))
	ops, err := NewOpsServer(OpsOptions{Addr: "127.0.0.1:0", Gatherer: reg, Debug: debug, DebugStore: func() any { return map[string]string{"10.0.0.5": "pod"} }})
	if err != nil {
		t.Fatal(err)
	}
	s, err := New(Options{HostIP: "127.0.0.1", MetadataAddr: MetadataAddrNone, Region: "eu-west-1", IMDSv2Required: false}, &fakePods{}, &fakeRoles{}, &fakeCreds{})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.ShareWith(SharedPort{Ops: ops, MetadataAddrs: testMetadataAddrs, originalDst: dst}); err != nil {
		t.Fatal(err)
	}
	return "http://" + serveInTest(t, s).String()
}

// TestSharedPortKeepsPodsOffTheOpsRoutes: on a port shared by the metadata
// server and the ops routes (kube2iam's --metrics-port = --app-port), a
// connection DNATed from a metadata address, or one whose original
// destination cannot be read, gets IMDS's 404 for every ops route; a direct
// connection gets them; both get metadata answers.
func TestSharedPortKeepsPodsOffTheOpsRoutes(t *testing.T) {
	direct := func(c net.Conn) (netip.Addr, error) {
		return netip.MustParseAddrPort(c.LocalAddr().String()).Addr(), nil
	}
	cases := []struct {
		name string
		dst  func(net.Conn) (netip.Addr, error)
		ops  bool
	}{
		{"DNATed from 169.254.169.254", func(net.Conn) (netip.Addr, error) { return testMetadataAddrs[0], nil }, false},
		{"DNATed from fd00:ec2::254", func(net.Conn) (netip.Addr, error) { return testMetadataAddrs[1], nil }, false},
		{"DNATed from 169.254.169.254 as an IPv4-mapped address", func(net.Conn) (netip.Addr, error) {
			return netip.AddrFrom16(testMetadataAddrs[0].As16()), nil
		}, false},
		{"original destination unreadable: fail closed", func(net.Conn) (netip.Addr, error) { return netip.Addr{}, errors.New("ENOENT") }, false},
		{"direct to host-ip:port", direct, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			url := startShared(t, true, tc.dst)
			for _, path := range []string{"/metrics", "/healthz", "/readyz", "/debug/store"} {
				status, body, _ := httpGet(t, url+path, nil)
				if tc.ops {
					if status != 200 {
						t.Errorf("%s: %d %q, want the ops route's 200", path, status, body)
					}
					continue
				}
				if status != 404 || strings.Contains(body, "kube2ra_test_total") || strings.Contains(body, "10.0.0.5") || body == "ok" {
					t.Errorf("%s: %d %q, want IMDS's 404", path, status, body)
				}
			}
			if status, body, _ := httpGet(t, url+"/metrics", nil); tc.ops && !strings.Contains(body, "kube2ra_test_total") {
				t.Errorf("/metrics on a direct connection: %d %q lacks the registry's metric", status, body)
			}
			if status, body, _ := httpGet(t, url+"/latest/meta-data/placement/region", nil); status != 200 || body != "eu-west-1" {
				t.Errorf("metadata on the shared port: %d %q, want 200 eu-west-1", status, body)
			}
		})
	}
}

// TestSharedHealthzOnlyOnTheMetadataPort: with separate ports, the
// metadata port answers /healthz alone to direct connections (a kubelet
// probe from kube2iam's chart, which aims both probes at the app port), as
// kube2iam did; the other ops routes stay off it, and through the DNAT
// /healthz is IMDS's 404.
func TestSharedHealthzOnlyOnTheMetadataPort(t *testing.T) {
	direct := func(c net.Conn) (netip.Addr, error) {
		return netip.MustParseAddrPort(c.LocalAddr().String()).Addr(), nil
	}
	dnat := func(net.Conn) (netip.Addr, error) { return testMetadataAddrs[0], nil }
	for name, tc := range map[string]struct {
		dst     func(net.Conn) (netip.Addr, error)
		healthz int
	}{"direct": {direct, 200}, "DNATed": {dnat, 404}} {
		t.Run(name, func(t *testing.T) {
			ops, err := NewOpsServer(OpsOptions{Addr: "127.0.0.1:0"})
			if err != nil {
				t.Fatal(err)
			}
			s, err := New(Options{HostIP: "127.0.0.1", MetadataAddr: MetadataAddrNone, Region: "eu-west-1", IMDSv2Required: false}, &fakePods{}, &fakeRoles{}, &fakeCreds{})
			if err != nil {
				t.Fatal(err)
			}
			if err := s.ShareWith(SharedPort{Ops: ops, MetadataAddrs: testMetadataAddrs, Only: HealthzPath, originalDst: tc.dst}); err != nil {
				t.Fatal(err)
			}
			url := "http://" + serveInTest(t, s).String()
			if status, body, _ := httpGet(t, url+HealthzPath, nil); status != tc.healthz {
				t.Errorf("%s: %d %q, want %d", HealthzPath, status, body, tc.healthz)
			}
			for _, path := range []string{"/metrics", "/readyz"} {
				if status, _, _ := httpGet(t, url+path, nil); status != 404 {
					t.Errorf("%s: %d, want 404 (only %s is shared)", path, status, HealthzPath)
				}
			}
			if status, body, _ := httpGet(t, url+"/latest/meta-data/placement/region", nil); status != 200 || body != "eu-west-1" {
				t.Errorf("metadata: %d %q, want 200 eu-west-1", status, body)
			}
		})
	}
}

func TestShareWithRefusesWhatCannotKeepPodsOut(t *testing.T) {
	s, err := New(Options{HostIP: "127.0.0.1", MetadataAddr: MetadataAddrNone, Region: "eu-west-1"}, &fakePods{}, &fakeRoles{}, &fakeCreds{})
	if err != nil {
		t.Fatal(err)
	}
	ops, err := NewOpsServer(OpsOptions{Addr: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.ShareWith(SharedPort{Ops: ops}); err == nil || !strings.Contains(err.Error(), "metadata addresses") {
		t.Errorf("no metadata addresses: %v, want an error naming them", err)
	}
	if err := s.ShareWith(SharedPort{MetadataAddrs: testMetadataAddrs}); err == nil {
		t.Error("no ops server: accepted")
	}
}

// TestSharedPortDecidesPerRequest: a kept-alive connection whose original
// destination could not be read at first (conntrack tracked nothing before
// the node's first NAT rule) gets the ops routes once it can be, on the
// same connection.
func TestSharedPortDecidesPerRequest(t *testing.T) {
	var tracked atomic.Bool
	conns := map[string]bool{}
	var mu sync.Mutex
	url := startShared(t, false, func(c net.Conn) (netip.Addr, error) {
		mu.Lock()
		conns[c.RemoteAddr().String()] = true
		mu.Unlock()
		if !tracked.Load() {
			return netip.Addr{}, errors.New("ENOENT")
		}
		return netip.MustParseAddrPort(c.LocalAddr().String()).Addr(), nil
	})
	if status, _, _ := httpGet(t, url+"/healthz", nil); status != 404 {
		t.Fatalf("/healthz before conntrack tracks the connection: %d, want 404", status)
	}
	tracked.Store(true)
	if status, body, _ := httpGet(t, url+"/healthz", nil); status != 200 || body != "ok" {
		t.Fatalf("/healthz once it does: %d %q, want 200 ok", status, body)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(conns) != 1 {
		t.Fatalf("the requests came on %d connections, want 1 kept alive", len(conns))
	}
}
