//go:build integration

package install

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kube2ra/kube2ra/cni/plugin"
)

func run(t *testing.T, name string, args ...string) {
	t.Helper()
	if out, err := exec.Command(name, args...).CombinedOutput(); err != nil {
		t.Fatalf("%s %s: %v: %s", name, strings.Join(args, " "), err, out)
	}
}

// podNetns creates a network namespace holding addr on a veth interface,
// bind-mounted into dir as a runtime keeps it, and removes both at the end.
func podNetns(t *testing.T, dir, addr string) string {
	t.Helper()
	b := make([]byte, 3)
	_, _ = rand.Read(b)
	name := "k2r-repair-" + hex.EncodeToString(b)
	run(t, "ip", "netns", "add", name)
	t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", name).Run() })
	run(t, "ip", "-n", name, "link", "set", "lo", "up")
	run(t, "ip", "-n", name, "link", "add", "eth0", "type", "veth", "peer", "name", "peer0")
	run(t, "ip", "-n", name, "addr", "add", addr+"/24", "dev", "eth0")
	run(t, "ip", "-n", name, "link", "set", "eth0", "up")
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	run(t, "mount", "--bind", "/var/run/netns/"+name, path)
	t.Cleanup(func() { _ = exec.Command("umount", path).Run() })
	return path
}

// TestRepairRealNamespaces finds pods' namespaces by the address inside
// (NetnsDir), leaves a pod the plugin already covers alone, writes the
// real plugin's rules into a pod that started without them (plugin.Apply,
// then plugin.Verify agrees), and reports a pod whose namespace it cannot
// find.
func TestRepairRealNamespaces(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("creates network namespaces: run as root (sudo go test -tags integration ./cni/install)")
	}
	dir := t.TempDir()
	entry := testEntry()
	for _, backend := range []string{"nft", "legacy"} {
		t.Run(backend, func(t *testing.T) {
			entry.IPTablesBackend = backend
			covered := podNetns(t, dir, "10.251.0.2")
			before := podNetns(t, dir, "10.251.0.3")
			if err := plugin.Apply(context.Background(), covered, entry); err != nil {
				t.Fatal(err)
			}
			if err := plugin.Verify(before, entry); err == nil {
				t.Fatal("a fresh namespace passes Verify: the test proves nothing")
			}
			r, err := NewRepairer(RepairOptions{
				Rules: PluginRules{}, Finder: NetnsDir{Dir: dir}, Entry: entry, Fix: true,
				Pods: func() []Pod {
					return []Pod{testPod("covered", "10.251.0.2"), testPod("before", "10.251.0.3"), testPod("elsewhere", "10.251.0.9")}
				},
				HostRules: func() bool { return false },
			})
			if err != nil {
				t.Fatal(err)
			}
			cov, err := r.Pass(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			if cov.Pods[LayerInPod] != 2 || cov.Pods[LayerNone] != 1 || strings.Join(cov.Repaired, ",") != "team/before" {
				t.Fatalf("coverage %+v: want covered and before in-pod (before repaired), elsewhere reported", cov)
			}
			if len(cov.Problems) != 1 || !strings.HasPrefix(cov.Problems[0], "team/elsewhere: no network namespace") {
				t.Errorf("problems %q", cov.Problems)
			}
			if err := plugin.Verify(before, entry); err != nil {
				t.Errorf("after repair: %v", err)
			}
			found, err := NetnsDir{Dir: dir}.Find()
			if err != nil || found[netip.MustParseAddr("10.251.0.3")] != before {
				t.Errorf("Find = %v, %v: want 10.251.0.3 in %s", found, err, before)
			}
			// The namespaces of this backend go before the next one's.
			for _, p := range []string{covered, before} {
				_ = exec.Command("umount", p).Run()
				_ = os.Remove(p)
			}
		})
	}
}
