//go:build integration

package install

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/cni/libcni"
	types100 "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/plugins/pkg/ns"

	"github.com/kube2ra/kube2ra/cni/plugin"
)

// debianCNIDir holds Debian's containernetworking-plugins (bridge, host-local).
const debianCNIDir = "/usr/lib/cni"

// runtimeNode is a node namespace whose runtime reads the installer's
// directories, as containerd does.
type runtimeNode struct {
	t *testing.T
	// id makes the namespaces' names unique on a shared machine.
	id string
	// nodeNS is the node namespace's path.
	nodeNS string
	// binDir, confDir and netnsDir are the installer's and repair's directories.
	binDir, confDir, netnsDir string
	// cache is libcni's cache directory.
	cache string
}

// netns creates a namespace named name and removes it at the end.
func (n *runtimeNode) netns(name string) string {
	n.t.Helper()
	name = "k2r-inst-" + name + "-" + n.id
	run(n.t, "ip", "netns", "add", name)
	n.t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", name).Run() })
	run(n.t, "ip", "-n", name, "link", "set", "lo", "up")
	return "/var/run/netns/" + name
}

// primary is what the runtime loads: the first configuration by name.
func (n *runtimeNode) primary() *libcni.NetworkConfigList {
	n.t.Helper()
	files, err := libcni.ConfFiles(n.confDir, []string{".conf", ".conflist", ".json"})
	if err != nil || len(files) == 0 {
		n.t.Fatalf("no configuration in %s: %v", n.confDir, err)
	}
	sort.Strings(files)
	list, err := libcni.ConfListFromFile(files[0])
	if err != nil {
		n.t.Fatalf("the runtime cannot load %s: %v", files[0], err)
	}
	return list
}

// add creates a pod sandbox's network the way containerd does, from the
// node namespace with the primary configuration on disk, and returns the
// pod's namespace (bind-mounted into netnsDir too) and address.
func (n *runtimeNode) add(name string) (string, netip.Addr) {
	n.t.Helper()
	podNS := n.netns(name)
	c := libcni.NewCNIConfigWithCacheDir([]string{n.binDir, debianCNIDir}, n.cache, nil)
	rt := &libcni.RuntimeConf{ContainerID: "sandbox-" + name, NetNS: podNS, IfName: "eth0"}
	list := n.primary()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var addr netip.Addr
	err := ns.WithNetNSPath(n.nodeNS, func(ns.NetNS) error {
		res, err := c.AddNetworkList(ctx, list, rt)
		if err != nil {
			return err
		}
		r, err := types100.NewResultFromResult(res)
		if err != nil {
			return err
		}
		addr, _ = netip.AddrFromSlice(r.IPs[0].Address.IP.To4())
		return nil
	})
	if err != nil {
		n.t.Fatalf("ADD %s: %v", name, err)
	}
	n.t.Cleanup(func() {
		_ = ns.WithNetNSPath(n.nodeNS, func(ns.NetNS) error { return c.DelNetworkList(context.Background(), n.primary(), rt) })
	})
	mount := filepath.Join(n.netnsDir, filepath.Base(podNS))
	if err := os.WriteFile(mount, nil, 0o644); err != nil {
		n.t.Fatal(err)
	}
	run(n.t, "mount", "--bind", podNS, mount)
	n.t.Cleanup(func() { _ = exec.Command("umount", mount).Run() })
	return podNS, addr
}

// get asks 169.254.169.254 from inside podNS and returns the answer.
func get(podNS string) (string, error) {
	var body string
	err := ns.WithNetNSPath(podNS, func(ns.NetNS) error {
		c, err := net.DialTimeout("tcp", "169.254.169.254:80", 2*time.Second)
		if err != nil {
			return err
		}
		defer func() { _ = c.Close() }()
		_ = c.SetDeadline(time.Now().Add(2 * time.Second))
		if _, err := io.WriteString(c, "GET /latest/meta-data/ HTTP/1.1\r\nHost: metadata\r\n\r\n"); err != nil {
			return err
		}
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			return err
		}
		defer func() { _ = resp.Body.Close() }()
		b, err := io.ReadAll(resp.Body)
		body = string(b)
		return err
	})
	return body, err
}

// TestRuntimeRunsWhatTheInstallerWrote is the handover between the halves
// on one node: the installer copies the built kube2ra-cni and chains it
// into the primary conflist on disk; the runtime (libcni, from the node
// namespace) loads that file and the pod's metadata request lands on the
// agent. Then a primary CNI rewrites its conflist without the entry: a pod
// created in that window has no in-pod rule, the installer puts the entry
// back (counted as a re-insertion) and repair writes the rule into that
// pod, whose request then lands on the agent too.
func TestRuntimeRunsWhatTheInstallerWrote(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("creates network namespaces: run as root (sudo go test -tags integration ./cni/install)")
	}
	for _, p := range []string{"bridge", "host-local"} {
		if _, err := os.Stat(filepath.Join(debianCNIDir, p)); err != nil {
			t.Fatalf("%s/%s is missing: apt-get install containernetworking-plugins (hack/install-test-deps.sh)", debianCNIDir, p)
		}
	}
	root := t.TempDir()
	n := &runtimeNode{t: t, id: fmt.Sprintf("%x", time.Now().UnixNano()&0xffffff),
		binDir: filepath.Join(root, "bin"), confDir: filepath.Join(root, "net.d"), netnsDir: filepath.Join(root, "netns"), cache: filepath.Join(root, "cache")}
	for _, d := range []string{n.binDir, n.confDir, n.netnsDir} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	n.nodeNS = n.netns("n")
	image := filepath.Join(root, "image", plugin.PluginType)
	build := exec.Command("go", "build", "-trimpath", "-o", image, "../../cmd/kube2ra-cni")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("building kube2ra-cni: %v\n%s", err, out)
	}

	// The primary CNI's own file, as it writes it on every start.
	const gateway = "10.253.0.1"
	primary, err := json.Marshal(map[string]any{"cniVersion": "1.0.0", "name": "k2r-inst", "plugins": []any{map[string]any{
		"type": "bridge", "bridge": "k2ibr0", "isGateway": true,
		"ipam": map[string]any{"type": "host-local", "dataDir": filepath.Join(root, "ipam"),
			"ranges": []any{[]any{map[string]any{"subnet": "10.253.0.0/24", "gateway": gateway}}},
			"routes": []any{map[string]any{"dst": "0.0.0.0/0"}}},
	}}})
	if err != nil {
		t.Fatal(err)
	}
	conflist := filepath.Join(n.confDir, "10-k2r-inst.conflist")
	writePrimary := func() {
		if err := os.WriteFile(conflist, primary, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	writePrimary()

	// The agent on the node address and port the entry names.
	const agentPort = 8181
	var l net.Listener
	if err := ns.WithNetNSPath(n.nodeNS, func(ns.NetNS) error {
		var err error
		l, err = net.Listen("tcp", fmt.Sprintf("0.0.0.0:%d", agentPort))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "kube2ra %s", r.RemoteAddr)
	})}
	go func() { _ = srv.Serve(l) }()
	defer func() { _ = srv.Close() }()

	entry := plugin.Config{Type: plugin.PluginType, NodeIP: netip.MustParseAddr(gateway), Port: agentPort,
		Redirect: []netip.AddrPort{netip.MustParseAddrPort("169.254.169.254:80")}, IPTablesBackend: "nft"}
	inst, err := New(Options{Binary: image, BinDir: n.binDir, ConfDir: n.confDir, Entry: entry, Resync: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := inst.Ensure(context.Background()); err != nil {
		t.Fatal(err)
	}

	pod1, ip1 := n.add("p1")
	if err := plugin.Verify(pod1, entry); err != nil {
		t.Fatalf("a pod created with the installed entry has no in-pod rule: %v", err)
	}
	if body, err := get(pod1); err != nil || !strings.HasPrefix(body, "kube2ra "+ip1.String()) {
		t.Fatalf("pod 1's metadata request: %q, %v; want the agent, from the pod's own address %s", body, err, ip1)
	}

	// The primary CNI restarts and rewrites its file; a pod comes in the window.
	writePrimary()
	pod2, ip2 := n.add("p2")
	if err := plugin.Verify(pod2, entry); err == nil {
		t.Fatal("a pod created without the entry has the in-pod rule: the window is not reproduced")
	}
	if body, err := get(pod2); err == nil {
		t.Fatalf("pod 2 reached %q without any rule: the test's node routes 169.254.169.254 somewhere", body)
	}
	r, err := inst.Ensure(context.Background())
	if err != nil || !r.Reinserted {
		t.Fatalf("Ensure after the rewrite = %+v, %v; want a re-insertion", r, err)
	}
	t.Logf("re-insertion took %s (from the rewrite's modification time)", r.Took)
	rep, err := NewRepairer(RepairOptions{
		Rules: PluginRules{}, Finder: NetnsDir{Dir: n.netnsDir}, Entry: entry, Fix: true,
		Pods: func() []Pod {
			return []Pod{{Namespace: "apps", Name: "p1", IPs: []netip.Addr{ip1}}, {Namespace: "apps", Name: "p2", IPs: []netip.Addr{ip2}}}
		},
		HostRules: func() bool { return false },
	})
	if err != nil {
		t.Fatal(err)
	}
	cov, err := rep.Pass(context.Background())
	if err != nil || cov.Pods[LayerInPod] != 2 || strings.Join(cov.Repaired, ",") != "apps/p2" || len(cov.Problems) != 0 {
		t.Fatalf("repair pass = %+v, %v; want both pods in-pod, p2 repaired", cov, err)
	}
	if body, err := get(pod2); err != nil || !strings.HasPrefix(body, "kube2ra "+ip2.String()) {
		t.Fatalf("pod 2's metadata request after repair: %q, %v; want the agent", body, err)
	}

	// Uninstall: the runtime's next pod gets no kube2ra plugin, and nothing is left.
	if err := inst.Remove(); err != nil {
		t.Fatal(err)
	}
	st, err := Inspect(n.binDir, n.confDir, &entry)
	if err != nil || st.BinaryPresent || st.Entries != 0 {
		t.Fatalf("after Remove: %+v, %v; want no binary and no entry", st, err)
	}
	pod3, _ := n.add("p3")
	if err := plugin.Verify(pod3, entry); err == nil {
		t.Fatal("a pod created after uninstall has the in-pod rule")
	}
}
