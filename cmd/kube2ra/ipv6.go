package main

import (
	"context"
	"fmt"
	"net/netip"
	"strings"

	"github.com/kube2ra/kube2ra/iptables"
	"github.com/kube2ra/kube2ra/k8s"
	"github.com/kube2ra/kube2ra/kubeapi/objects"
)

// resolveHostIPv6 fills an empty --host-ipv6 when --ipv6 is on: the first
// IPv6 address of --host-ips (the downward API's status.hostIPs), else of
// the Node object's InternalIP then ExternalIP addresses. The proxy
// listens there and the IPv6 DNAT targets it.
func resolveHostIPv6(ctx context.Context, cfg *Config, kube k8s.Client) (from string, err error) {
	if !cfg.IPv6 || cfg.HostIPv6 != "" {
		return "", nil
	}
	if ip, ok := firstIPv6(strings.Split(cfg.HostIPs, ",")); ok {
		cfg.HostIPv6, cfg.parsed.hostIPv6 = ip.String(), ip
		return "--host-ips", nil
	}
	node, err := kube.GetNode(ctx, cfg.Node)
	if err != nil {
		return "", fmt.Errorf("--ipv6 is on without --host-ipv6 and --host-ips has no IPv6 address; reading node %s for one failed (set --host-ipv6, or HOST_IPS from the downward API's status.hostIPs): %w", cfg.Node, err)
	}
	for _, kind := range []objects.NodeAddressType{objects.NodeInternalIP, objects.NodeExternalIP} {
		var addrs []string
		for _, a := range node.Status.Addresses {
			if a.Type == kind {
				addrs = append(addrs, a.Address)
			}
		}
		if ip, ok := firstIPv6(addrs); ok {
			cfg.HostIPv6, cfg.parsed.hostIPv6 = ip.String(), ip
			return "the Node object's " + string(kind), nil
		}
	}
	return "", fmt.Errorf("--ipv6 is on but node %s has no IPv6 address (not in --host-ips, not among the Node object's addresses): set --host-ipv6 to the node's IPv6 address, or turn --ipv6 off", cfg.Node)
}

// firstIPv6 is the first global unicast IPv6 address among addrs.
func firstIPv6(addrs []string) (netip.Addr, bool) {
	for _, s := range addrs {
		ip, err := netip.ParseAddr(strings.TrimSpace(s))
		if err == nil && ip.Is6() && !ip.Is4In6() && ip.IsGlobalUnicast() {
			return ip, true
		}
	}
	return netip.Addr{}, false
}

// opsIPv6FirstHosts is where the ops port listens beside --host-ip and
// loopback: on an IPv6-first dual-stack node, the node's primary (IPv6)
// address too, since the kubelet probes a host-network pod at its pod IP,
// which is that address. Nothing elsewhere.
func opsIPv6FirstHosts(cfg *Config) []string {
	if v6 := cfg.parsed.hostIPv6First; v6.IsValid() {
		return []string{v6.String()}
	}
	return nil
}

// firstIPv4 is the first IPv4 address among addrs that can receive DNATed
// pod traffic (global unicast: not loopback, link-local or unspecified).
func firstIPv4(addrs []string) (netip.Addr, bool) {
	for _, s := range addrs {
		ip, err := netip.ParseAddr(strings.TrimSpace(s))
		if ip = ip.Unmap(); err == nil && ip.Is4() && ip.IsGlobalUnicast() {
			return ip, true
		}
	}
	return netip.Addr{}, false
}

// wantIPv6Guard reports whether the IPv6 guard goes in without --ipv6:
// whenever the kernel has IPv6, so pods' requests for fd00:ec2::254 are
// refused rather than reach the metadata service, also when the node
// gains an IPv6 address after the agent started (a router advertisement,
// a CNI change). The guard costs nothing; a kernel without IPv6 has no
// ip6tables and no IPv6 for pods either.
func wantIPv6Guard(cfg *Config) bool {
	return !cfg.IPv6 && iptables.KernelHasIPv6()
}
