package proxy

import (
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
	_, port, _ := net.SplitHostPort(serveInTest(t, s).String())
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
	if _, err := New(Options{HostIP: "127.0.0.1", HostIPv6: "10.0.0.1"}, &fakePods{}, &fakeRoles{}, &fakeCreds{}); err == nil || !strings.Contains(err.Error(), "IPv6") {
		t.Errorf("New with an IPv4 HostIPv6: %v, want an error naming IPv6", err)
	}
}
