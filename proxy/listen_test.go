package proxy

import (
	"context"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// TestListensOnEveryDNATTarget: with HostIPv6 set the metadata server binds
// the same port on the IPv6 address too (the IPv6 DNAT's target), so an
// IPv6 pod is answered rather than refused.
func TestListensOnEveryDNATTarget(t *testing.T) {
	s, err := New(Options{HostIP: "127.0.0.1", HostIPv6: "::1", MetadataAddr: MetadataAddrNone, Region: "eu-west-1"}, &fakePods{}, &fakeRoles{}, &fakeCreds{})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Listen(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx) }()
	_, port, _ := net.SplitHostPort(s.Addr().String())
	client := &http.Client{Timeout: 2 * time.Second}
	for _, host := range []string{"127.0.0.1", "::1"} {
		resp, err := client.Get("http://" + net.JoinHostPort(host, port) + "/latest/meta-data/placement/region")
		if err != nil {
			t.Errorf("%s: %v", host, err)
			continue
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Errorf("%s: status %d, want 200", host, resp.StatusCode)
		}
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Serve after shutdown: %v", err)
	}
	if _, err := New(Options{HostIP: "127.0.0.1", HostIPv6: "10.0.0.1"}, &fakePods{}, &fakeRoles{}, &fakeCreds{}); err == nil || !strings.Contains(err.Error(), "IPv6") {
		t.Errorf("New with an IPv4 HostIPv6: %v, want an error naming IPv6", err)
	}
}
