//go:build integration

package simnode_test

import (
	"context"
	"net"
	"net/http"
	"net/netip"
	"os"
	"testing"
	"time"

	"github.com/kube2ra/kube2ra/test/simnode"
)

func TestMain(m *testing.M) {
	if _, inside := simnode.Inside(); !inside {
		os.Exit(simnode.Reexec("k2r-sn"))
	}
	os.Exit(m.Run())
}

// TestPodsReachTheNode proves the topology the end-to-end tests rely on: a
// process in a bridge pod and in a Calico-style pod reaches a server on the
// node IP, and a removed pod's namespace is gone.
func TestPodsReachTheNode(t *testing.T) {
	node, err := simnode.Setup()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(node.Close)

	ln, err := net.Listen("tcp", simnode.HostIP+":18080")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = w.Write([]byte(r.RemoteAddr))
	}), ReadHeaderTimeout: time.Second}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })

	bridged, err := node.AddPod("a", netip.Addr{}, "")
	if err != nil {
		t.Fatal(err)
	}
	calico, err := node.AddPod("b", netip.MustParseAddr("10.200.0.77"), "cali1234")
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range []*simnode.Pod{bridged, calico} {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		out, err := p.Command(ctx, "curl", "-sS", "--max-time", "2", "http://"+simnode.HostIP+":18080/").CombinedOutput()
		cancel()
		if err != nil {
			t.Fatalf("pod %s cannot reach the node: %v: %s", p.Name, err, out)
		}
		if host, _, _ := net.SplitHostPort(string(out)); host != p.IP.String() {
			t.Fatalf("pod %s: server saw %q, want source %s", p.Name, out, p.IP)
		}
	}
	// Another auto-named pod, so a reused name after the removal would collide.
	if _, err := node.AddPod("d", netip.Addr{}, ""); err != nil {
		t.Fatal(err)
	}
	if err := node.RemovePod("a"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat("/var/run/netns/" + bridged.Netns); !os.IsNotExist(err) {
		t.Fatalf("removed pod's namespace still exists: %v", err)
	}
	// A pod added after a removal gets a fresh veth name.
	if _, err := node.AddPod("c", netip.Addr{}, ""); err != nil {
		t.Fatalf("adding a pod after a removal: %v", err)
	}
}
