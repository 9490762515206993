//go:build integration

package plugin_test

// The harness: a "node" network namespace and a fresh "pod" namespace per
// test. The runtime's part is played by libcni, run inside the node
// namespace: it executes the primary conflist, Debian's bridge plugin
// (containernetworking-plugins, host-local IPAM) followed by the built
// kube2ra-cni binary, exactly as containerd would. The node namespace
// holds the addresses 169.254.169.254, 169.254.170.23 and fd00:ec2::254
// with a fake metadata service that counts every request it gets, and
// kube2ra's stand-in listens on the bridge's gateway address (the node IP)
// when a test says so. A pod's request is a socket opened inside the pod
// namespace, as a container's would be.

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/types"
	types100 "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/kube2ra/kube2ra/cni/plugin"
)

const (
	// debianCNIDir holds bridge and host-local (apt-get install containernetworking-plugins).
	debianCNIDir = "/usr/lib/cni"
	nodeIP       = "10.213.0.1"
	nodeIPv6     = "fd00:213::1"
	podSubnet    = "10.213.0.0/24"
	podSubnetV6  = "fd00:213::/64"
	agentPort    = 8181
	// requestTimeout bounds one pod request; a refused one ends at once.
	requestTimeout = 3 * time.Second
	netnsPrefix    = "k2cni-"
)

var metadataAddrs = []string{"169.254.169.254", "169.254.170.23", "fd00:ec2::254"}

// pluginBin is the kube2ra-cni binary TestMain builds.
var pluginBin string

func TestMain(m *testing.M) {
	if os.Geteuid() != 0 {
		fmt.Fprintln(os.Stderr, "the CNI plugin's integration tests create network namespaces and need root: sudo go test -tags integration ./cni/plugin/")
		os.Exit(1)
	}
	for _, p := range []string{"bridge", "host-local"} {
		if _, err := os.Stat(filepath.Join(debianCNIDir, p)); err != nil {
			fmt.Fprintf(os.Stderr, "%s/%s is missing: apt-get install containernetworking-plugins (hack/install-test-deps.sh packages)\n", debianCNIDir, p)
			os.Exit(1)
		}
	}
	dir, err := os.MkdirTemp("", "kube2ra-cni-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	pluginBin = filepath.Join(dir, plugin.PluginType)
	build := exec.Command("go", "build", "-trimpath", "-o", pluginBin, "../../cmd/kube2ra-cni")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "building kube2ra-cni: %v\n%s", err, out)
		os.Exit(1)
	}
	code := m.Run()
	_ = os.RemoveAll(dir)
	os.Exit(code)
}

// node is one node namespace, one pod namespace and the servers on the node.
type node struct {
	t *testing.T
	// nodeNS and podNS are the namespaces' bind mounts.
	nodeNS, podNS string
	// dir holds host-local's and libcni's state.
	dir string
	// metadataHits counts requests the fake metadata service answered.
	metadataHits atomic.Int64
	// agentHits counts requests kube2ra's stand-in answered.
	agentHits atomic.Int64
}

func run(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v: %s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// newNode creates the namespaces and the fake metadata service.
func newNode(t *testing.T) *node {
	t.Helper()
	b := make([]byte, 3)
	_, _ = rand.Read(b)
	id := hex.EncodeToString(b)
	n := &node{t: t, dir: t.TempDir()}
	for _, role := range []string{"n", "p"} {
		name := netnsPrefix + role + "-" + id
		run(t, "ip", "netns", "add", name)
		t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", name).Run() })
		// No duplicate address detection: addresses are usable at once.
		run(t, "ip", "netns", "exec", name, "sysctl", "-q", "-w", "net.ipv6.conf.all.accept_dad=0", "net.ipv6.conf.default.accept_dad=0")
		run(t, "ip", "-n", name, "link", "set", "lo", "up")
		if role == "n" {
			n.nodeNS = "/var/run/netns/" + name
			for _, a := range metadataAddrs {
				ip := netip.MustParseAddr(a)
				args := []string{"-n", name, "addr", "add", netip.PrefixFrom(ip, ip.BitLen()).String(), "dev", "lo"}
				if ip.Is6() {
					args = append(args, "nodad") // usable at once, never tentative
				}
				run(t, "ip", args...)
			}
		} else {
			n.podNS = "/var/run/netns/" + name
		}
	}
	for _, a := range metadataAddrs {
		n.serve(netip.AddrPortFrom(netip.MustParseAddr(a), 80), "metadata", &n.metadataHits)
	}
	return n
}

// serve answers HTTP on addr in the node namespace with name and the
// caller's address, counting requests.
func (n *node) serve(addr netip.AddrPort, name string, hits *atomic.Int64) {
	n.t.Helper()
	var l net.Listener
	err := ns.WithNetNSPath(n.nodeNS, func(ns.NetNS) error {
		var err error
		l, err = net.Listen("tcp", addr.String())
		return err
	})
	if err != nil {
		n.t.Fatalf("listening on %s in the node namespace: %v", addr, err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		fmt.Fprintf(w, "%s %s", name, r.RemoteAddr)
	})}
	go func() { _ = srv.Serve(l) }()
	n.t.Cleanup(func() { _ = srv.Close() })
}

// serveAgent starts kube2ra's stand-in on the node IPs and agentPort.
func (n *node) serveAgent() {
	n.serve(netip.AddrPortFrom(netip.MustParseAddr(nodeIP), agentPort), "kube2ra", &n.agentHits)
	n.serve(netip.AddrPortFrom(netip.MustParseAddr(nodeIPv6), agentPort), "kube2ra", &n.agentHits)
}

// config is kube2ra-cni's entry with both doors and IPv6.
func config(backend string) plugin.Config {
	return plugin.Config{
		Type:     plugin.PluginType,
		NodeIP:   netip.MustParseAddr(nodeIP),
		NodeIPv6: netip.MustParseAddr(nodeIPv6),
		Port:     agentPort,
		Redirect: []netip.AddrPort{
			netip.MustParseAddrPort("169.254.169.254:80"),
			netip.MustParseAddrPort("169.254.170.23:80"),
			netip.MustParseAddrPort("[fd00:ec2::254]:80"),
		},
		IPTablesBackend: backend,
	}
}

// conflist is a primary conflist (bridge, host-local, IPv4 and IPv6) with
// kube2ra-cni's entry last when cfg is set, as the agent inserts it.
func (n *node) conflist(cfg *plugin.Config) *libcni.NetworkConfigList {
	n.t.Helper()
	plugins := []any{map[string]any{
		"type": "bridge", "bridge": "k2cbr0", "isGateway": true,
		"ipam": map[string]any{
			"type": "host-local", "dataDir": filepath.Join(n.dir, "ipam"),
			"ranges": []any{
				[]any{map[string]any{"subnet": podSubnet, "gateway": nodeIP}},
				[]any{map[string]any{"subnet": podSubnetV6, "gateway": nodeIPv6}},
			},
			"routes": []any{map[string]any{"dst": "0.0.0.0/0"}, map[string]any{"dst": "::/0"}},
		},
	}}
	if cfg != nil {
		plugins = append(plugins, *cfg)
	}
	b, err := json.Marshal(map[string]any{"cniVersion": "1.0.0", "name": "k2cni-test", "plugins": plugins})
	if err != nil {
		n.t.Fatal(err)
	}
	list, err := libcni.ConfListFromBytes(b)
	if err != nil {
		n.t.Fatalf("conflist %s: %v", b, err)
	}
	return list
}

// runtime runs one verb of list for the pod the way containerd does: libcni
// executes the plugins from the node namespace.
func (n *node) runtime(verb string, list *libcni.NetworkConfigList) (types.Result, error) {
	c := libcni.NewCNIConfigWithCacheDir([]string{filepath.Dir(pluginBin), debianCNIDir}, filepath.Join(n.dir, "cache"), nil)
	rt := &libcni.RuntimeConf{ContainerID: "sandbox-" + filepath.Base(n.podNS), NetNS: n.podNS, IfName: "eth0"}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var res types.Result
	err := ns.WithNetNSPath(n.nodeNS, func(ns.NetNS) error {
		var err error
		switch verb {
		case "ADD":
			res, err = c.AddNetworkList(ctx, list, rt)
		case "CHECK":
			err = c.CheckNetworkList(ctx, list, rt)
		case "DEL":
			err = c.DelNetworkList(ctx, list, rt)
		}
		return err
	})
	return res, err
}

// podConn opens a TCP connection from inside the pod namespace.
func (n *node) podConn(addr string) (net.Conn, error) {
	var c net.Conn
	err := ns.WithNetNSPath(n.podNS, func(ns.NetNS) error {
		var err error
		c, err = net.DialTimeout("tcp", addr, requestTimeout)
		return err
	})
	return c, err
}

// request sends one HTTP/1.1 request on c and returns the body.
func request(c net.Conn, r *bufio.Reader) (string, error) {
	_ = c.SetDeadline(time.Now().Add(requestTimeout))
	if _, err := io.WriteString(c, "GET /latest/meta-data/ HTTP/1.1\r\nHost: metadata\r\n\r\n"); err != nil {
		return "", err
	}
	resp, err := http.ReadResponse(r, nil)
	if err != nil {
		return "", err
	}
	defer func() { _ = resp.Body.Close() }()
	b, err := io.ReadAll(resp.Body)
	return string(b), err
}

// podGet is one request from the pod to addr (host:port) on a new connection.
func (n *node) podGet(addr string) (string, error) {
	c, err := n.podConn(addr)
	if err != nil {
		return "", err
	}
	defer func() { _ = c.Close() }()
	return request(c, bufio.NewReader(c))
}

// podIPs are the pod's addresses from a CNI result.
func podIPs(t *testing.T, res types.Result) map[string]bool {
	t.Helper()
	r, err := types100.NewResultFromResult(res)
	if err != nil {
		t.Fatal(err)
	}
	ips := map[string]bool{}
	for _, ip := range r.IPs {
		ips[ip.Address.IP.String()] = true
	}
	return ips
}

// metadataTargets are every redirected address as host:port.
var metadataTargets = []string{"169.254.169.254:80", "169.254.170.23:80", "[fd00:ec2::254]:80"}

// TestChainedPluginRedirectsEveryMetadataAddress is the runtime's view:
// the primary conflist with kube2ra-cni last, both backends, IPv4 and
// IPv6, both doors.
func TestChainedPluginRedirectsEveryMetadataAddress(t *testing.T) {
	for _, backend := range []string{"nft", "legacy"} {
		t.Run(backend, func(t *testing.T) {
			n := newNode(t)
			cfg := config(backend)
			list := n.conflist(&cfg)
			res, err := n.runtime("ADD", list)
			if err != nil {
				t.Fatalf("ADD: %v", err)
			}
			ips := podIPs(t, res)
			if len(ips) != 2 {
				t.Fatalf("result after kube2ra-cni has IPs %v, want the bridge's IPv4 and IPv6 addresses passed on", ips)
			}

			// Before the agent listens: refused, never the metadata service.
			for _, addr := range metadataTargets {
				if body, err := n.podGet(addr); !errors.Is(err, unix.ECONNREFUSED) {
					t.Errorf("%s before the agent listens: %q, %v; want connection refused", addr, body, err)
				}
			}

			n.serveAgent()
			for _, addr := range metadataTargets {
				body, err := n.podGet(addr)
				if err != nil || !strings.HasPrefix(body, "kube2ra ") {
					t.Errorf("%s: %q, %v; want kube2ra's answer", addr, body, err)
					continue
				}
				// kube2ra recognises the pod by its source address.
				from, _, _ := net.SplitHostPort(strings.Fields(body)[1])
				if !ips[from] {
					t.Errorf("%s reached kube2ra from %s, want one of the pod's addresses %v", addr, from, ips)
				}
			}
			if got := n.metadataHits.Load(); got != 0 {
				t.Errorf("the node's metadata service got %d requests from the pod, want 0", got)
			}

			if _, err := n.runtime("CHECK", list); err != nil {
				t.Errorf("CHECK on a correct pod: %v", err)
			}
			// Someone flushes the pod's redirect: CHECK and Verify say so, Apply repairs.
			bin := map[string]string{"nft": "iptables-nft", "legacy": "iptables-legacy"}[backend]
			run(t, "ip", "netns", "exec", filepath.Base(n.podNS), bin, "-t", "nat", "-F", plugin.Chain)
			if _, err := n.runtime("CHECK", list); err == nil || !strings.Contains(err.Error(), "chain KUBE2RA-CNI in the nat table holds []") {
				t.Errorf("CHECK after a flush = %v, want the empty chain named", err)
			}
			if err := plugin.Verify(n.podNS, cfg); err == nil {
				t.Error("Verify after a flush = nil")
			}
			// A stale rule (another node IP) and a duplicate jump, as an
			// older entry or a half-done repair could leave: Apply leaves
			// neither.
			pod := filepath.Base(n.podNS)
			run(t, "ip", "netns", "exec", pod, bin, "-t", "nat", "-A", plugin.Chain, "-d", "169.254.169.254/32", "-p", "tcp", "-m", "tcp", "--dport", "80", "-j", "DNAT", "--to-destination", "10.213.0.99:80")
			run(t, "ip", "netns", "exec", pod, bin, "-t", "filter", "-A", "OUTPUT", "-p", "tcp", "-m", "comment", "--comment", plugin.RuleComment, "-j", plugin.Chain)
			if err := plugin.Apply(context.Background(), n.podNS, cfg); err != nil {
				t.Fatalf("Apply: %v", err)
			}
			if err := plugin.Apply(context.Background(), n.podNS, cfg); err != nil {
				t.Fatalf("Apply again: %v", err)
			}
			if err := plugin.Verify(n.podNS, cfg); err != nil {
				t.Errorf("Verify after two Applies: %v", err)
			}
			save := run(t, "ip", "netns", "exec", pod, bin+"-save")
			if got := strings.Count(save, "-A OUTPUT "); got != 2 {
				t.Errorf("pod's %s-save has %d OUTPUT rules, want 2 (one jump each in nat and filter):\n%s", bin, got, save)
			}
			if strings.Contains(save, "10.213.0.99") {
				t.Errorf("the stale rule survived Apply:\n%s", save)
			}
			if body, err := n.podGet("169.254.169.254:80"); err != nil || !strings.HasPrefix(body, "kube2ra ") {
				t.Errorf("after the repair: %q, %v; want kube2ra", body, err)
			}
			if _, err := n.runtime("DEL", list); err != nil {
				t.Errorf("DEL: %v", err)
			}
		})
	}
}

// TestGuardRefusesWhatTheRedirectMisses: a packet for a metadata address
// that leaves nat OUTPUT unchanged (here a rule ahead of kube2ra's jump
// accepts it) is refused in the pod, never delivered.
func TestGuardRefusesWhatTheRedirectMisses(t *testing.T) {
	n := newNode(t)
	cfg := config("nft")
	if _, err := n.runtime("ADD", n.conflist(&cfg)); err != nil {
		t.Fatalf("ADD: %v", err)
	}
	n.serveAgent()
	pod := filepath.Base(n.podNS)
	run(t, "ip", "netns", "exec", pod, "iptables-nft", "-t", "nat", "-I", "OUTPUT", "1", "-d", "169.254.169.254", "-j", "ACCEPT")
	run(t, "ip", "netns", "exec", pod, "ip6tables-nft", "-t", "nat", "-I", "OUTPUT", "1", "-d", "fd00:ec2::254", "-j", "ACCEPT")
	for _, addr := range []string{"169.254.169.254:80", "[fd00:ec2::254]:80"} {
		if body, err := n.podGet(addr); !errors.Is(err, unix.ECONNREFUSED) {
			t.Errorf("%s past the redirect: %q, %v; want refused by the guard", addr, body, err)
		}
	}
	if got := n.metadataHits.Load(); got != 0 {
		t.Errorf("the node's metadata service got %d requests, want 0", got)
	}
}

// TestRefusedAddressIsNeverRedirected: with the agent's IPv6 off on a
// node with IPv6, the entry refuses fd00:ec2::254 in the pod (the guard
// alone, as the host's IPv6 guard) and writes no IPv6 nat rules.
func TestRefusedAddressIsNeverRedirected(t *testing.T) {
	n := newNode(t)
	cfg := config("legacy")
	cfg.NodeIPv6 = netip.Addr{}
	cfg.Redirect = cfg.Redirect[:2]
	cfg.Refuse = []netip.AddrPort{netip.MustParseAddrPort("[fd00:ec2::254]:80")}
	if _, err := n.runtime("ADD", n.conflist(&cfg)); err != nil {
		t.Fatalf("ADD: %v", err)
	}
	n.serveAgent()
	if body, err := n.podGet("[fd00:ec2::254]:80"); !errors.Is(err, unix.ECONNREFUSED) {
		t.Errorf("refused address: %q, %v; want connection refused", body, err)
	}
	if body, err := n.podGet("169.254.169.254:80"); err != nil || !strings.HasPrefix(body, "kube2ra ") {
		t.Errorf("redirected address: %q, %v; want kube2ra", body, err)
	}
	if got := n.metadataHits.Load(); got != 0 {
		t.Errorf("the node's metadata service got %d requests, want 0", got)
	}
	if nat := run(t, "ip", "netns", "exec", filepath.Base(n.podNS), "ip6tables-legacy-save", "-t", "nat"); strings.Contains(nat, plugin.Chain) {
		t.Errorf("IPv6 nat rules written for a refused-only family:\n%s", nat)
	}
	if err := plugin.Verify(n.podNS, cfg); err != nil {
		t.Errorf("Verify: %v", err)
	}
}

// TestConnectionOpenedBeforeApplyIsCut: a keep-alive connection to the
// metadata service opened before the rules existed (a pod the agent
// repairs) can no longer reach the service once Apply returns.
func TestConnectionOpenedBeforeApplyIsCut(t *testing.T) {
	for _, backend := range []string{"nft", "legacy"} {
		t.Run(backend, func(t *testing.T) {
			n := newNode(t)
			if _, err := n.runtime("ADD", n.conflist(nil)); err != nil {
				t.Fatalf("ADD of the bridge alone: %v", err)
			}
			n.serveAgent()
			// Something in the pod already tracks connections (a sidecar's
			// rules, as istio's): without it the namespace has no conntrack
			// yet and the first packet after Apply would count as new.
			pod := filepath.Base(n.podNS)
			for _, bin := range []string{"iptables-", "ip6tables-"} {
				run(t, "ip", "netns", "exec", pod, bin+backend, "-A", "OUTPUT", "-m", "conntrack", "--ctstate", "NEW,ESTABLISHED")
			}
			var conns []net.Conn
			var readers []*bufio.Reader
			for _, addr := range metadataTargets {
				c, err := n.podConn(addr)
				if err != nil {
					t.Fatalf("dialing %s without the plugin: %v", addr, err)
				}
				defer func() { _ = c.Close() }()
				r := bufio.NewReader(c)
				if body, err := request(c, r); err != nil || !strings.HasPrefix(body, "metadata ") {
					t.Fatalf("%s without the plugin: %q, %v; want the metadata service (the hole being closed)", addr, body, err)
				}
				conns, readers = append(conns, c), append(readers, r)
			}
			cfg := config(backend)
			if len(conntrackTo(t, n.podNS)) == 0 {
				t.Fatal("no conntrack entries to metadata addresses before Apply: the test proves nothing")
			}
			before := n.metadataHits.Load()
			if err := plugin.Apply(context.Background(), n.podNS, cfg); err != nil {
				t.Fatalf("Apply: %v", err)
			}
			if left := conntrackTo(t, n.podNS); len(left) > 0 {
				t.Errorf("conntrack entries to metadata addresses left after Apply: %v", left)
			}
			for i, c := range conns {
				if body, err := request(c, readers[i]); err == nil {
					t.Errorf("%s on the connection opened before Apply: %q; want the connection cut", metadataTargets[i], body)
				}
			}
			if got := n.metadataHits.Load() - before; got != 0 {
				t.Errorf("the node's metadata service got %d requests on connections opened before Apply, want 0", got)
			}
		})
	}
}

// conntrackTo lists the pod namespace's conntrack entries to metadata addresses.
func conntrackTo(t *testing.T, nsPath string) []string {
	t.Helper()
	h, err := netns.GetFromPath(nsPath)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = h.Close() }()
	nl, err := netlink.NewHandleAt(h, unix.NETLINK_NETFILTER)
	if err != nil {
		t.Fatal(err)
	}
	defer nl.Close()
	var left []string
	for _, fam := range []netlink.InetFamily{unix.AF_INET, unix.AF_INET6} {
		flows, err := nl.ConntrackTableList(netlink.ConntrackTable, fam)
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range flows {
			for _, a := range metadataAddrs {
				if f.Forward.DstIP.Equal(net.ParseIP(a)) {
					left = append(left, f.String())
				}
			}
		}
	}
	return left
}

// invoke runs the built binary as a runtime does, with env added to the
// CNI variables.
func invoke(t *testing.T, command, netnsPath string, stdin []byte, env ...string) (stdout string, err error) {
	t.Helper()
	cmd := exec.Command(pluginBin)
	cmd.Env = append([]string{
		"CNI_COMMAND=" + command, "CNI_CONTAINERID=sandbox1", "CNI_NETNS=" + netnsPath,
		"CNI_IFNAME=eth0", "CNI_PATH=" + filepath.Dir(pluginBin), "PATH=" + os.Getenv("PATH"),
	}, env...)
	cmd.Stdin = strings.NewReader(string(stdin))
	out, err := cmd.Output()
	return string(out), err
}

// entry is the runtime's stdin for kube2ra-cni: its conflist entry with
// name, cniVersion and prevResult added.
func entry(t *testing.T, cfg plugin.Config, version, prevResult string) []byte {
	t.Helper()
	b, err := json.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	s := fmt.Sprintf(`{"cniVersion":%q,"name":"k2cni-test",%s`, version, strings.TrimPrefix(string(b), "{"))
	if prevResult != "" {
		s = strings.TrimSuffix(s, "}") + `,"prevResult":` + prevResult + "}"
	}
	return []byte(s)
}

// TestBinaryAsTheRuntimeCallsIt: prevResult passes through byte for byte
// (spec 0.3.1 to 1.1), STATUS and GC answer, and ADD fails closed, with the
// reason, when iptables cannot run or the namespace is not one.
func TestBinaryAsTheRuntimeCallsIt(t *testing.T) {
	n := newNode(t)
	prev := `{"cniVersion":"1.1.0","interfaces":[{"name":"eth0","sandbox":"` + n.podNS + `"}],"ips":[{"address":"10.213.0.9/24","interface":0}]}`
	cfg := config("legacy")
	prev04 := `{"cniVersion":"0.4.0","interfaces":[{"name":"eth0","sandbox":"` + n.podNS + `"}],"ips":[{"version":"4","address":"10.213.0.9/24","interface":0}],"dns":{}}`
	for _, v := range []string{"0.3.1", "0.4.0", "1.0.0", "1.1.0"} {
		p := strings.Replace(prev, "1.1.0", v, 1)
		if strings.HasPrefix(v, "0.") {
			p = strings.Replace(prev04, "0.4.0", v, 1)
		}
		out, err := invoke(t, "ADD", n.podNS, entry(t, cfg, v, p))
		if err != nil || out != p {
			t.Errorf("ADD %s printed %q (%v), want prevResult unchanged %q", v, out, err, p)
		}
	}
	for _, verb := range []string{"CHECK", "STATUS", "GC", "DEL"} {
		if out, err := invoke(t, verb, n.podNS, entry(t, cfg, "1.1.0", prev)); err != nil {
			t.Errorf("%s: %v: %s", verb, err, out)
		}
	}

	// A node whose iptables cannot run: ADD fails and says why.
	bogus := t.TempDir()
	for _, name := range []string{"iptables-nft-save", "iptables-nft-restore", "ip6tables-nft-save", "ip6tables-nft-restore"} {
		if err := os.WriteFile(filepath.Join(bogus, name), []byte("#!/bin/sh\necho 'iptables: bogus backend' >&2\nexit 3\n"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	fresh := newNode(t)
	cases := []struct {
		name, netns string
		stdin       []byte
		env         []string
		want        []string
	}{
		{"iptables fails", fresh.podNS, entry(t, config("nft"), "1.0.0", prev), []string{"PATH=" + bogus + ":" + os.Getenv("PATH")},
			[]string{"sandbox is refused", filepath.Join(bogus, "iptables-nft"), "bogus backend"}},
		{"not a network namespace", "/etc/hostname", entry(t, cfg, "1.0.0", prev), nil,
			[]string{"sandbox is refused", "/etc/hostname"}},
		{"not chained", fresh.podNS, entry(t, cfg, "1.0.0", ""), nil, []string{"no prevResult"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			out, err := invoke(t, "ADD", tc.netns, tc.stdin, tc.env...)
			if err == nil {
				t.Fatalf("ADD succeeded: %s", out)
			}
			for _, w := range tc.want {
				if !strings.Contains(out, w) {
					t.Errorf("ADD's error %s does not say %q", out, w)
				}
			}
		})
	}
	if err := plugin.Verify(fresh.podNS, config("nft")); err == nil {
		t.Error("the failed ADDs left rules that Verify accepts")
	}
}

// TestApplyConcurrently: the agent repairs several pods at once; each
// Apply switches only its own OS thread, so every namespace gets exactly
// its rules and the test process's namespace none.
func TestApplyConcurrently(t *testing.T) {
	const pods = 4
	paths := make([]string, pods)
	for i := range paths {
		paths[i] = newNode(t).podNS
	}
	cfg := config("nft")
	errs := make(chan error, pods)
	for _, p := range paths {
		go func() { errs <- plugin.Apply(context.Background(), p, cfg) }()
	}
	for range paths {
		if err := <-errs; err != nil {
			t.Errorf("Apply: %v", err)
		}
	}
	for _, p := range paths {
		if err := plugin.Verify(p, cfg); err != nil {
			t.Errorf("Verify %s: %v", p, err)
		}
	}
	if out := run(t, "iptables-nft-save", "-t", "nat"); strings.Contains(out, plugin.Chain) {
		t.Errorf("the test process's own namespace got kube2ra-cni rules:\n%s", out)
	}
}

// BenchmarkApply is the time ADD adds to a sandbox's start: Apply of both
// families and both doors into a fresh namespace, per backend. Baseline in
// the same run: "netns-only", the cost of entering the namespace and
// reading its (empty) tables once, which any in-pod plugin pays.
//
//	go test -tags integration -run '^$' -bench Apply ./cni/plugin/
func BenchmarkApply(b *testing.B) {
	for _, backend := range []string{"nft", "legacy"} {
		cfg := config(backend)
		b.Run(backend, func(b *testing.B) {
			for i := 0; i < b.N; i++ {
				b.StopTimer()
				name := fmt.Sprintf("%sbench-%d", netnsPrefix, i)
				if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
					b.Fatalf("ip netns add: %v: %s", err, out)
				}
				b.StartTimer()
				err := plugin.Apply(context.Background(), "/var/run/netns/"+name, cfg)
				b.StopTimer()
				_ = exec.Command("ip", "netns", "del", name).Run()
				if err != nil {
					b.Fatal(err)
				}
				b.StartTimer()
			}
		})
		b.Run(backend+"/netns-only", func(b *testing.B) {
			name := netnsPrefix + "bench-base"
			if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
				b.Fatalf("ip netns add: %v: %s", err, out)
			}
			defer func() { _ = exec.Command("ip", "netns", "del", name).Run() }()
			for i := 0; i < b.N; i++ {
				err := ns.WithNetNSPath("/var/run/netns/"+name, func(ns.NetNS) error {
					return exec.Command("iptables-" + backend + "-save").Run()
				})
				if err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
