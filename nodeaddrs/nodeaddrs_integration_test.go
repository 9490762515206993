//go:build integration

package nodeaddrs_test

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"testing"
	"time"

	"github.com/vishvananda/netns"

	"github.com/kube2ra/kube2ra/nodeaddrs"
)

// changeWait bounds how long an address change may take to reach the set;
// the kernel announces it at once, so reaching it is a failure.
const changeWait = 10 * time.Second

func ip(t *testing.T, args ...string) {
	t.Helper()
	if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
		t.Fatalf("ip %v: %v: %s", args, err, out)
	}
}

// waitFor waits until the set's answer for addr is want.
func waitFor(t *testing.T, s *nodeaddrs.Set, addr netip.Addr, want bool) {
	t.Helper()
	deadline := time.Now().Add(changeWait)
	for s.Contains(addr) != want {
		if time.Now().After(deadline) {
			t.Fatalf("Contains(%s) stayed %t for %s after the change", addr, !want, changeWait)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestSetFollowsTheNamespacesAddresses: the set holds the addresses of a
// real network namespace, loopback always, and follows an address added
// and removed after it started, without a restart.
func TestSetFollowsTheNamespacesAddresses(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("the nodeaddrs integration test creates a network namespace and needs root")
	}
	name := fmt.Sprintf("k2r-na-%d", os.Getpid())
	ip(t, "netns", "add", name)
	t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", name).Run() })
	ip(t, "-n", name, "link", "add", "eth0", "type", "veth", "peer", "name", "eth1")
	ip(t, "-n", name, "addr", "add", "10.197.0.1/24", "dev", "eth0")
	ip(t, "-n", name, "addr", "add", "fd00:197::1/64", "dev", "eth0", "nodad")
	h, err := netns.GetFromName(name)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })

	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	s := nodeaddrs.New(nodeaddrs.Options{Namespace: &h})
	if s.Contains(netip.MustParseAddr("10.197.0.1")) {
		t.Fatal("an address counted before Start")
	}
	if err := s.Start(ctx); err != nil {
		t.Fatal(err)
	}
	for addr, want := range map[string]bool{
		"10.197.0.1": true, "fd00:197::1": true, "::ffff:10.197.0.1": true,
		"127.0.0.1": true, "::1": true, "127.0.0.53": true,
		"10.197.0.2": false, "10.197.0.9": false, "fd00:197::2": false,
	} {
		if got := s.Contains(netip.MustParseAddr(addr)); got != want {
			t.Errorf("Contains(%s) = %t, want %t", addr, got, want)
		}
	}

	later := netip.MustParseAddr("10.197.0.9")
	ip(t, "-n", name, "addr", "add", later.String()+"/32", "dev", "eth0")
	waitFor(t, s, later, true)
	ip(t, "-n", name, "addr", "del", later.String()+"/32", "dev", "eth0")
	waitFor(t, s, later, false)
}
