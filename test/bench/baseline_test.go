package bench

import (
	"io"
	"net"
	"net/http"
	"testing"

	"github.com/kube2ra/kube2ra/proxy"
)

// TestHardenedBaselineHasTheAgentsProtections: BENCH_BASELINE_HARDENED's
// server carries the agent's timeouts and a connection hook, and still
// answers kube2ra's recorded bytes.
func TestHardenedBaselineHasTheAgentsProtections(t *testing.T) {
	o := BaselineOptions{Path: "/latest/meta-data/iam/security-credentials/r", Header: [][2]string{{"Content-Type", "text/plain"}}, Body: []byte("doc")}
	if plain := NewBaselineServer(o); plain.ReadTimeout != 0 || plain.WriteTimeout != 0 || plain.ConnState != nil {
		t.Fatalf("the plain baseline has protections: %+v", plain)
	}
	o.Hardened = true
	srv := NewBaselineServer(o)
	if srv.ReadHeaderTimeout != proxy.DefaultReadHeaderTimeout || srv.ReadTimeout != proxy.DefaultReadTimeout ||
		srv.WriteTimeout != proxy.DefaultWriteTimeout || srv.IdleTimeout != proxy.DefaultIdleTimeout || srv.ConnState == nil {
		t.Fatalf("the hardened baseline lacks the agent's protections: %+v", srv)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.Serve(ln) }()
	defer srv.Close()
	resp, err := http.Get("http://" + ln.Addr().String() + o.Path)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || string(body) != "doc" || resp.Header.Get("Content-Type") != "text/plain" {
		t.Fatalf("hardened baseline answered %d %q %v", resp.StatusCode, body, resp.Header)
	}
}
