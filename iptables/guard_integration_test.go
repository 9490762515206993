//go:build integration

package iptables_test

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/kube2ra/kube2ra/iptables"
)

// refusedWithin bounds how long a refused request may take: a TCP reset
// comes back at once; a dropped packet would take the whole dial timeout.
const refusedWithin = 300 * time.Millisecond

// addMetadataService serves a stand-in for the node's metadata service on
// meta:80: on the node itself (the request reaches INPUT, as in the e2e
// harness), or, routed, in a namespace of its own behind the node (the
// request is forwarded, as on EC2 where 169.254.169.254 is out of eth0).
func (n *node) addMetadataService(meta string, routed bool) {
	t := n.t
	t.Helper()
	addr := netip.MustParseAddr(meta)
	bits := fmt.Sprintf("/%d", addr.BitLen())
	listen := netip.AddrPortFrom(addr, 80).String()
	if !routed {
		n.ip("addr", "add", meta+bits, "dev", "k2rhost", "nodad")
		n.startServer(n.ns, listen)
		return
	}
	if addr.Is6() {
		t.Fatal("the routed metadata service is IPv4 only")
	}
	ns := n.prefix + n.id + "-m"
	run(t, "ip", "netns", "add", ns)
	t.Cleanup(func() {
		if out, err := tryRun("ip", "netns", "del", ns); err != nil {
			t.Errorf("deleting netns %s: %v %s", ns, err, out)
		}
	})
	mip := func(args ...string) { run(t, "ip", append([]string{"-n", ns}, args...)...) }
	n.ip("link", "add", "k2rimds", "type", "veth", "peer", "name", "eth0", "netns", ns)
	n.ip("addr", "add", "10.197.0.1/30", "dev", "k2rimds")
	n.ip("link", "set", "k2rimds", "up")
	mip("link", "set", "lo", "up")
	mip("addr", "add", "10.197.0.2/30", "dev", "eth0")
	mip("addr", "add", meta+bits, "dev", "eth0")
	mip("link", "set", "eth0", "up")
	mip("route", "add", "default", "via", "10.197.0.1")
	n.ip("route", "add", meta+bits, "via", "10.197.0.2")
	run(t, "ip", "netns", "exec", n.ns, "sysctl", "-q", "-w", "net.ipv4.ip_forward=1")
	n.startServer(ns, listen)
}

// expectAnswer checks which server answered pod p: wantLocal is the
// server's own address ("" for a refused connection).
func expectAnswer(t *testing.T, what string, p *pod, url, wantLocal string) {
	t.Helper()
	local, elapsed, err := p.answer(url)
	switch {
	case wantLocal == "" && err == nil:
		t.Errorf("%s: pod behind %s was answered by %s, want the connection refused", what, p.nodeIface, local)
	case wantLocal == "" && !strings.Contains(err.Error(), "connection refused"):
		t.Errorf("%s: pod behind %s: %v, want the connection refused (a TCP reset)", what, p.nodeIface, err)
	case wantLocal == "" && elapsed > refusedWithin:
		t.Errorf("%s: pod behind %s was refused after %s, want at once", what, p.nodeIface, elapsed)
	case wantLocal != "" && err != nil:
		t.Errorf("%s: pod behind %s: %v, want an answer from %s", what, p.nodeIface, err, wantLocal)
	case wantLocal != "" && local != wantLocal:
		t.Errorf("%s: pod behind %s was answered by %s, want %s", what, p.nodeIface, local, wantLocal)
	}
}

// TestNatFlushIsRefusedNotLeaked: after `iptables -t nat -F` a pod's
// request for the metadata address is refused at once by the guard instead
// of reaching the node's metadata service, whether the address is local to
// the node (INPUT) or routed out of it (FORWARD); the node's own requests
// still pass; EnsureRules brings the DNAT back.
func TestNatFlushIsRefusedNotLeaked(t *testing.T) {
	placements := []struct {
		name   string
		ipv6   bool
		routed bool
	}{
		{name: "local IPv4"}, {name: "routed IPv4", routed: true}, {name: "local IPv6", ipv6: true},
	}
	eachBackend(t, func(t *testing.T, mode iptables.Mode) {
		concurrently(t, len(placements), func(i int) string { return placements[i].name }, func(t *testing.T, i int) {
			pl := placements[i]
			n := newNodeNamed(t, guardNetnsPrefix, mode, pl.ipv6)
			url, meta, family := metadataURL, "169.254.169.254", "4"
			agent := netip.AddrPortFrom(netip.MustParseAddr(hostIP), appPort).String()
			if pl.ipv6 {
				url, meta, family = metadataURLv6, "fd00:ec2::254", "6"
				agent = netip.AddrPortFrom(netip.MustParseAddr(hostIPv6), appPort).String()
			}
			metaAnswer := netip.AddrPortFrom(netip.MustParseAddr(meta), 80).String()
			n.addMetadataService(meta, pl.routed)
			pods := []*pod{n.addPod("cni0"), n.addPod("veth1")} // veth1: only !eth0 matches it
			const ifaces = "cni0,!eth0"
			for _, p := range pods {
				expectAnswer(t, "without kube2ra (the harness sees a leak)", p, url, metaAnswer)
			}

			n.mustOps(ifaces, "ensure")
			expectGuardSave(t, n, family, wantGuardSave(family, "cni0", "!eth0"))
			for _, p := range pods {
				expectAnswer(t, "installed", p, url, agent)
			}

			n.ipt(family, "-t", "nat", "-F")
			for _, p := range pods {
				expectAnswer(t, "after iptables -t nat -F", p, url, "")
			}
			// The node's own request is not a pod's: the guard lets it by.
			node := &pod{ns: n.ns, nodeIface: "lo (the node itself)"}
			expectAnswer(t, "the node itself after the flush", node, url, metaAnswer)

			ops := n.mustOps(ifaces, "present", "ensure", "present")
			if ops[0].Present || !ops[1].Changed || !ops[2].Present {
				t.Errorf("present %v, ensure changed %v, present %v; want false, true, true", ops[0].Present, ops[1].Changed, ops[2].Present)
			}
			for _, p := range pods {
				expectAnswer(t, "restored", p, url, agent)
			}
		})
	})
}

// TestGuardIsInsertedAheadOfAcceptRules: a CNI plugin's or Docker's
// ACCEPT rules already in INPUT and FORWARD do not pre-empt the guard.
func TestGuardIsInsertedAheadOfAcceptRules(t *testing.T) {
	eachBackend(t, func(t *testing.T, mode iptables.Mode) {
		n := newNodeNamed(t, guardNetnsPrefix, mode, false)
		n.addMetadataService("169.254.169.254", false)
		p := n.addPod("cni0")
		n.ipt("4", "-A", "INPUT", "-i", "cni0", "-j", "ACCEPT")
		n.ipt("4", "-A", "FORWARD", "-i", "cni0", "-j", "ACCEPT")
		n.mustOps("cni0", "ensure")
		save := n.saveTable("4", "filter")
		for _, from := range []string{"INPUT", "FORWARD"} {
			first := ""
			for _, l := range strings.Split(save, "\n") {
				if strings.HasPrefix(l, "-A "+from+" ") {
					first = l
					break
				}
			}
			if !strings.HasSuffix(first, "-j KUBE2RA-GUARD") {
				t.Errorf("first rule of %s is %q, want the jump to KUBE2RA-GUARD:\n%s", from, first, save)
			}
		}
		n.ipt("4", "-t", "nat", "-F")
		expectAnswer(t, "after iptables -t nat -F", p, metadataURL, "")
	})
}

// TestWrongInterfaceIsRefusedWhenForwarded: with a --host-interface that
// names no pod interface (cni0 where pods sit behind cali*), the DNAT
// misses every pod, but on a node that routes 169.254.169.254 onwards (EC2)
// the guard still refuses them instead of letting them reach the metadata
// service; the node's own request still passes.
func TestWrongInterfaceIsRefusedWhenForwarded(t *testing.T) {
	eachBackend(t, func(t *testing.T, mode iptables.Mode) {
		n := newNodeNamed(t, guardNetnsPrefix, mode, false)
		n.addMetadataService("169.254.169.254", true)
		p := n.addPod("cali1a2b")
		expectAnswer(t, "without kube2ra (the harness sees a leak)", p, metadataURL, "169.254.169.254:80")
		n.mustOps("cni0", "ensure")
		expectAnswer(t, "pod behind cali1a2b with --host-interface cni0", p, metadataURL, "")
		node := &pod{ns: n.ns, nodeIface: "the node itself"}
		expectAnswer(t, "the node itself", node, metadataURL, "169.254.169.254:80")
	})
}

// TestCoverageNamesTheInterfacePodsReallyUse: the coverage check reads the
// node's routes to its pods and reports each pod whose interface no
// --host-interface entry matches, naming the interface its traffic uses;
// an address the node has no route to (the node namespace has no default
// route) is reported apart, as unroutable, whatever the pattern.
func TestCoverageNamesTheInterfacePodsReallyUse(t *testing.T) {
	n := newNodeNamed(t, guardNetnsPrefix, iptables.ModeNFT, true)
	n.addPod("cni0")     // 10.199.1.2, fd00:199:1::2
	n.addPod("cali1a2b") // 10.199.2.2, fd00:199:2::2
	const noRoute = "10.250.0.9"
	ips := []string{"10.199.1.2", "fd00:199:1::2", "10.199.2.2", "fd00:199:2::2", noRoute}
	for _, tt := range []struct {
		ifaces string
		want   []string
	}{
		{"cni0", []string{"10.199.2.2 cali1a2b", "fd00:199:2::2 cali1a2b"}},
		{"cni0,cali+", nil},
		{"!eth0", nil},
		{"cali+", []string{"10.199.1.2 cni0", "fd00:199:1::2 cni0"}},
	} {
		res, logs := n.rules(helperRequest{Interfaces: tt.ifaces, PodIPs: ips, Ops: []string{"coverage"}})
		mustSucceed(t, res, logs)
		if strings.Join(res.Uncovered, ",") != strings.Join(tt.want, ",") {
			t.Errorf("--host-interface %s: uncovered %q, want %q", tt.ifaces, res.Uncovered, tt.want)
		}
		if strings.Join(res.Unroutable, ",") != noRoute {
			t.Errorf("--host-interface %s: unroutable %q, want %s", tt.ifaces, res.Unroutable, noRoute)
		}
	}
}

// TestIPv6GuardWithoutIPv6DNAT: with --ipv6 off on a node whose pods have
// IPv6, the IPv6 guard alone refuses them fd00:ec2::254 (instead of
// letting them reach a metadata service there) while IPv4 is redirected;
// the node's IPv6 addresses are found for the agent to decide it.
func TestIPv6GuardWithoutIPv6DNAT(t *testing.T) {
	eachBackend(t, func(t *testing.T, mode iptables.Mode) {
		n := newNodeNamed(t, guardNetnsPrefix, mode, true)
		n.addMetadataService("fd00:ec2::254", false)
		p := n.addPod("cni0")
		expectAnswer(t, "IPv6 without kube2ra (the harness sees a leak)", p, metadataURLv6, "[fd00:ec2::254]:80")
		res, logs := n.rules(helperRequest{Interfaces: "cni0", IPv6Guard: true, Ops: []string{"ensure", "present", "nodeipv6"}})
		mustSucceed(t, res, logs)
		if !res.Ops[1].Present {
			t.Errorf("RulesPresent is false right after ensure\n%s", logs)
		}
		expectAnswer(t, "IPv6 with the guard only", p, metadataURLv6, "")
		expectAnswer(t, "IPv4", p, metadataURL, netip.AddrPortFrom(netip.MustParseAddr(hostIP), appPort).String())
		if s := n.saveTable("6", "nat"); strings.Contains(s, "KUBE2RA") {
			t.Errorf("the IPv6 nat table holds kube2ra rules with --ipv6 off:\n%s", s)
		}
		if got := strings.Join(res.Uncovered, ","); !strings.Contains(got, hostIPv6) || strings.Contains(got, "fe80") {
			t.Errorf("node IPv6 addresses %q, want %s among them and no link-local one", got, hostIPv6)
		}
	})
}
