// Package simnode builds a Kubernetes node out of network namespaces: a
// "node" namespace with a pod bridge (cni0), an uplink (eth0) holding the
// node IP, and one namespace per pod joined to the bridge by a veth pair —
// what a bridge CNI plugin builds. A process in a pod namespace reaching
// 169.254.169.254 is exactly what a container does.
//
// The calling test process moves itself into the node namespace (Reexec), so
// the control plane, the fake AWS endpoints and the agent all live there on
// loopback and the node IP, and nothing touches the host's network.
package simnode

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// envInside marks a process already re-executed inside the node namespace.
const envInside = "KUBE2RA_SIMNODE_NS"

// Defaults of the simulated node's addressing.
const (
	// HostIP is the node's own address, on its eth0.
	HostIP = "10.199.0.10"
	// BridgeIP is the pod gateway on cni0.
	BridgeIP = "10.200.0.1"
	// PodPrefixLen is the pod subnet's prefix length.
	PodPrefixLen = 24
	// MetadataIP is the instance metadata address.
	MetadataIP = "169.254.169.254"
	// Bridge is the pod bridge's name, as the bridge CNI plugin names it.
	Bridge = "cni0"
	// HostIPv6 is the node's IPv6 address on eth0, after EnableIPv6.
	HostIPv6 = "fd00:199::10"
	// BridgeIPv6 is the pods' IPv6 gateway on cni0, after EnableIPv6.
	BridgeIPv6 = "fd00:200::1"
	// podIPv6PrefixLen is the pods' IPv6 subnet on the bridge.
	podIPv6PrefixLen = 64
)

// commandTimeout bounds every ip/sysctl call; they take milliseconds.
const commandTimeout = 10 * time.Second

// Inside reports whether this process runs inside a simulated node, and its name.
func Inside() (string, bool) {
	ns := os.Getenv(envInside)
	return ns, ns != ""
}

// Reexec runs this very program again inside a fresh node namespace named
// prefix-<pid> and returns its exit code; the caller exits with it. Namespaces
// left by an earlier crashed run with the same prefix (whose process is gone)
// are removed first, and this run's namespaces are removed afterwards; runs
// going on beside it keep theirs.
func Reexec(prefix string) int {
	if os.Geteuid() != 0 {
		fmt.Fprintln(os.Stderr, "simnode: network namespaces need root: run the test as root (make e2e does)")
		return 1
	}
	if _, err := exec.LookPath("ip"); err != nil {
		fmt.Fprintln(os.Stderr, "simnode: the ip command is missing: apt-get install iproute2 (or run hack/install-test-deps.sh)")
		return 1
	}
	deleteNamespaces(func(name string) bool { return staleRun(prefix, name) })
	node := fmt.Sprintf("%s-%d", prefix, os.Getpid())
	if err := run("ip", "netns", "add", node); err != nil {
		fmt.Fprintln(os.Stderr, "simnode:", err)
		return 1
	}
	defer deleteNamespaces(func(name string) bool { return name == node || strings.HasPrefix(name, node+"-") })
	self, err := os.Executable()
	if err != nil {
		fmt.Fprintln(os.Stderr, "simnode: cannot find own executable:", err)
		return 1
	}
	cmd := exec.Command("ip", append([]string{"netns", "exec", node, self}, os.Args[1:]...)...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	cmd.Env = append(os.Environ(), envInside+"="+node)
	if err := cmd.Run(); err != nil {
		var exit *exec.ExitError
		if errors.As(err, &exit) {
			return exit.ExitCode()
		}
		fmt.Fprintln(os.Stderr, "simnode:", err)
		return 1
	}
	return 0
}

// CleanupPrefix deletes every network namespace whose name starts with prefix.
func CleanupPrefix(prefix string) {
	deleteNamespaces(func(name string) bool { return strings.HasPrefix(name, prefix) })
}

// deleteNamespaces deletes every network namespace whose name matches.
func deleteNamespaces(match func(name string) bool) {
	out, err := exec.Command("ip", "netns", "list").Output()
	if err != nil {
		return
	}
	for _, line := range strings.Split(string(out), "\n") {
		name, _, _ := strings.Cut(strings.TrimSpace(line), " ")
		if name != "" && match(name) {
			_ = exec.Command("ip", "netns", "del", name).Run()
		}
	}
}

// staleRun says whether name is a namespace of Reexec's (prefix-<pid> or
// prefix-<pid>-<pod>) whose process is gone.
func staleRun(prefix, name string) bool {
	rest, ok := strings.CutPrefix(name, prefix+"-")
	if !ok {
		return false
	}
	pidText, _, _ := strings.Cut(rest, "-")
	pid, err := strconv.Atoi(pidText)
	if err != nil || pid <= 0 {
		return false
	}
	err = syscall.Kill(pid, 0)
	return err != nil && !errors.Is(err, syscall.EPERM)
}

// Node is the simulated node; the calling process is inside it.
type Node struct {
	// Name is the node namespace's name; pod namespaces start with it.
	Name string
	// HostIP is the node IP (on eth0).
	HostIP netip.Addr

	mu sync.Mutex
	// pods are the live pod namespaces by name.
	pods map[string]*Pod
	// nextHost is the next free host number in the pod subnet.
	nextHost int
	// nextVeth numbers node-side veths; never reused, so a removed pod's
	// name cannot collide with a new one.
	nextVeth int
	// ipv6 makes the node dual-stack: bridge pods get an IPv6 address too.
	ipv6 bool
}

// EnableIPv6 makes the node dual-stack: HostIPv6 on eth0, BridgeIPv6 on
// the bridge, IPv6 forwarding; bridge pods added from now on get an IPv6
// address (fd00:200::N, N as in their IPv4 address) and a default route.
func (n *Node) EnableIPv6() error {
	for _, s := range [][]string{
		{"ip", "addr", "add", HostIPv6 + "/64", "dev", "eth0", "nodad"},
		{"ip", "addr", "add", fmt.Sprintf("%s/%d", BridgeIPv6, podIPv6PrefixLen), "dev", Bridge, "nodad"},
		{"sysctl", "-q", "-w", "net.ipv6.conf.all.forwarding=1"},
	} {
		if err := run(s...); err != nil {
			return err
		}
	}
	n.mu.Lock()
	n.ipv6 = true
	n.mu.Unlock()
	return nil
}

// Setup builds the node's interfaces in the current (node) namespace. It must
// run inside Reexec's child.
func Setup() (*Node, error) {
	name, ok := Inside()
	if !ok {
		return nil, errors.New("simnode: Setup must run inside the node namespace: call simnode.Reexec from TestMain first")
	}
	steps := [][]string{
		{"ip", "link", "set", "lo", "up"},
		// The uplink is a veth whose peer stays in the node: this kernel has
		// no dummy driver, and nothing is meant to leave the node anyway.
		{"ip", "link", "add", "eth0", "type", "veth", "peer", "name", "uplink0"},
		{"ip", "addr", "add", HostIP + "/24", "dev", "eth0"},
		{"ip", "link", "set", "uplink0", "up"},
		{"ip", "link", "set", "eth0", "up"},
		{"ip", "link", "add", Bridge, "type", "bridge"},
		{"ip", "addr", "add", fmt.Sprintf("%s/%d", BridgeIP, PodPrefixLen), "dev", Bridge},
		{"ip", "link", "set", Bridge, "up"},
		{"sysctl", "-q", "-w", "net.ipv4.ip_forward=1"},
	}
	for _, s := range steps {
		if err := run(s...); err != nil {
			return nil, err
		}
	}
	return &Node{Name: name, HostIP: netip.MustParseAddr(HostIP), pods: map[string]*Pod{}, nextHost: 2}, nil
}

// AddMetadataAddress puts 169.254.169.254 on the node's uplink so an upstream
// metadata fake can listen there, as EC2's is reachable from the instance.
func (n *Node) AddMetadataAddress() error {
	return run("ip", "addr", "add", MetadataIP+"/32", "dev", "eth0")
}

// RouteViaUplink routes prefix out of eth0, as a real node's default route
// would: a host-network process's connection needs a route before nat
// OUTPUT can redirect it (the node namespace has no default route).
func (n *Node) RouteViaUplink(prefix string) error {
	return run("ip", "route", "add", prefix, "dev", "eth0")
}

// RouteToBridge routes prefix to the pod bridge, as a node routes the pod
// range its CNI hands out: pods that exist only as API objects (the
// bench's hundreds of idle pods) then have what a node gives a real pod, a
// route through an interface --host-interface matches.
func (n *Node) RouteToBridge(prefix string) error {
	return run("ip", "route", "add", prefix, "dev", Bridge)
}

// Pod is one pod network namespace.
type Pod struct {
	// Name is the short name given to AddPod.
	Name string
	// Netns is the namespace's name.
	Netns string
	// IP is the pod's address on the bridge subnet.
	IP netip.Addr
	// HostVeth is the node-side interface.
	HostVeth string
	// IPv6 is the pod's IPv6 address on a dual-stack node; invalid otherwise.
	IPv6 netip.Addr
}

// AddPod creates a pod namespace with the given IP (zero: the next free one)
// and a veth whose node side is attached to the bridge (or left unattached
// with its own /32 route, Calico style, when hostVeth starts with "cali").
func (n *Node) AddPod(name string, ip netip.Addr, hostVeth string) (*Pod, error) {
	n.mu.Lock()
	if _, dup := n.pods[name]; dup {
		n.mu.Unlock()
		return nil, fmt.Errorf("simnode: pod %q exists", name)
	}
	if !ip.IsValid() {
		ip = netip.AddrFrom4([4]byte{10, 200, 0, byte(n.nextHost)})
		n.nextHost++
	}
	idx := n.nextVeth
	n.nextVeth++
	dual := n.ipv6
	n.mu.Unlock()
	if hostVeth == "" {
		hostVeth = fmt.Sprintf("veth%04x", idx)
	}
	p := &Pod{Name: name, Netns: n.Name + "-" + name, IP: ip, HostVeth: hostVeth}
	// A link of this name can outlive an earlier run's pod whose namespace a
	// lingering process still holds open (the soak's second flavour reuses
	// the first one's names); it belongs to no live pod of this node.
	_ = exec.Command("ip", "link", "del", hostVeth).Run()
	calico := strings.HasPrefix(hostVeth, "cali")
	steps := [][]string{
		{"ip", "netns", "add", p.Netns},
		{"ip", "link", "add", hostVeth, "type", "veth", "peer", "name", "eth0", "netns", p.Netns},
		{"ip", "-n", p.Netns, "link", "set", "lo", "up"},
		{"ip", "-n", p.Netns, "addr", "add", fmt.Sprintf("%s/%d", ip, PodPrefixLen), "dev", "eth0"},
		{"ip", "-n", p.Netns, "link", "set", "eth0", "up"},
	}
	if calico {
		steps = append(steps,
			[]string{"ip", "link", "set", hostVeth, "up"},
			[]string{"ip", "route", "add", ip.String() + "/32", "dev", hostVeth},
			[]string{"sysctl", "-q", "-w", "net.ipv4.conf." + hostVeth + ".proxy_arp=1"},
			[]string{"ip", "-n", p.Netns, "route", "add", "default", "dev", "eth0"},
		)
	} else {
		steps = append(steps,
			[]string{"ip", "link", "set", hostVeth, "master", Bridge},
			[]string{"ip", "link", "set", hostVeth, "up"},
			[]string{"ip", "-n", p.Netns, "route", "add", "default", "via", BridgeIP},
		)
		if dual && ip.Is4() {
			v4 := ip.As4()
			p.IPv6 = netip.MustParseAddr(fmt.Sprintf("fd00:200::%x", v4[3]))
			steps = append(steps,
				[]string{"ip", "-n", p.Netns, "addr", "add", fmt.Sprintf("%s/%d", p.IPv6, podIPv6PrefixLen), "dev", "eth0", "nodad"},
				[]string{"ip", "-n", p.Netns, "-6", "route", "add", "default", "via", BridgeIPv6},
			)
		}
	}
	return n.build(name, p, steps)
}

// AddPeerNode creates a namespace that plays another host on the node's
// network: address ip (outside the pod subnet, e.g. 10.199.0.11 beside
// HostIP), reaching the node over a veth routed as a /32 (no bridge, no
// pod interface name), so its packets reach the node's addresses directly
// and never pass the DNAT. RemovePod and Close remove it.
func (n *Node) AddPeerNode(name string, ip netip.Addr) (*Pod, error) {
	n.mu.Lock()
	if _, dup := n.pods[name]; dup {
		n.mu.Unlock()
		return nil, fmt.Errorf("simnode: namespace %q exists", name)
	}
	idx := n.nextVeth
	n.nextVeth++
	n.mu.Unlock()
	p := &Pod{Name: name, Netns: n.Name + "-" + name, IP: ip, HostVeth: fmt.Sprintf("peer%04x", idx)}
	steps := [][]string{
		{"ip", "netns", "add", p.Netns},
		{"ip", "link", "add", p.HostVeth, "type", "veth", "peer", "name", "eth0", "netns", p.Netns},
		{"ip", "-n", p.Netns, "link", "set", "lo", "up"},
		{"ip", "-n", p.Netns, "addr", "add", ip.String() + "/32", "dev", "eth0"},
		{"ip", "-n", p.Netns, "link", "set", "eth0", "up"},
		{"ip", "-n", p.Netns, "route", "add", HostIP + "/32", "dev", "eth0"},
		{"ip", "link", "set", p.HostVeth, "up"},
		{"ip", "route", "add", ip.String() + "/32", "dev", p.HostVeth},
	}
	return n.build(name, p, steps)
}

// build runs the steps that make p's namespace and records it under name;
// on a failure it removes the namespace again.
func (n *Node) build(name string, p *Pod, steps [][]string) (*Pod, error) {
	for _, s := range steps {
		if err := run(s...); err != nil {
			_ = exec.Command("ip", "netns", "del", p.Netns).Run()
			return nil, err
		}
	}
	n.mu.Lock()
	n.pods[name] = p
	n.mu.Unlock()
	return p, nil
}

// RemovePod deletes a pod's namespace (and so its veth pair).
func (n *Node) RemovePod(name string) error {
	n.mu.Lock()
	p, ok := n.pods[name]
	delete(n.pods, name)
	n.mu.Unlock()
	if !ok {
		return nil
	}
	return run("ip", "netns", "del", p.Netns)
}

// Close deletes every pod namespace and the node's own interfaces, so Setup
// can build the node again in the same process. The node namespace itself is
// removed by Reexec's parent.
func (n *Node) Close() {
	n.mu.Lock()
	pods := n.pods
	n.pods = map[string]*Pod{}
	n.mu.Unlock()
	for _, p := range pods {
		_ = exec.Command("ip", "netns", "del", p.Netns).Run()
	}
	// Deleting one end of a veth deletes its peer.
	_ = exec.Command("ip", "link", "del", "eth0").Run()
	_ = exec.Command("ip", "link", "del", Bridge).Run()
}

// Command runs name with args inside the pod's namespace.
func (p *Pod) Command(ctx context.Context, name string, args ...string) *exec.Cmd {
	return exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", p.Netns, name}, args...)...)
}

func run(args ...string) error {
	ctx, cancel := context.WithTimeout(context.Background(), commandTimeout)
	defer cancel()
	var out bytes.Buffer
	cmd := exec.CommandContext(ctx, args[0], args[1:]...)
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("simnode: %s failed: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(out.String()))
	}
	return nil
}
