//go:build integration

package iptables_test

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/kube2ra/kube2ra/iptables"
)

// TestPodIdentityRedirect: with PodIdentity on, pods and the node's own
// processes reach kube2ra's listener through the Pod Identity address,
// while the node itself keeps reaching the real metadata service; after
// `iptables -t nat -F` pods are refused at once instead of reaching
// whatever else answers on that address; Remove takes it all away.
func TestPodIdentityRedirect(t *testing.T) {
	families := []struct {
		name                string
		ipv6                bool
		family, agent       string
		metaURL, podIDURL   string
		meta, podID         string
		wantNat, wantFilter []string
	}{
		{name: "IPv4", family: "4", agent: hostIP, metaURL: metadataURL, podIDURL: "http://169.254.170.23/v1/credentials",
			meta: "169.254.169.254", podID: "169.254.170.23"},
		{name: "IPv6", ipv6: true, family: "6", agent: hostIPv6, metaURL: metadataURLv6, podIDURL: "http://[fd00:ec2::23]/v1/credentials",
			meta: "fd00:ec2::254", podID: "fd00:ec2::23"},
	}
	eachBackend(t, func(t *testing.T, mode iptables.Mode) {
		concurrently(t, len(families), func(i int) string { return families[i].name }, func(t *testing.T, i int) {
			fam := families[i]
			n := newNodeNamed(t, guardNetnsPrefix, mode, fam.ipv6)
			agent := netip.AddrPortFrom(netip.MustParseAddr(fam.agent), appPort).String()
			metaAnswer := netip.AddrPortFrom(netip.MustParseAddr(fam.meta), 80).String()
			podIDAnswer := netip.AddrPortFrom(netip.MustParseAddr(fam.podID), 80).String()
			// Stand-ins for the node's metadata service and for something
			// else (the EKS agent, say) answering on the Pod Identity address.
			n.addMetadataService(fam.meta, false)
			n.addMetadataService(fam.podID, false)
			pods := []*pod{n.addPod("cni0"), n.addPod("veth1")}
			node := &pod{ns: n.ns, nodeIface: "lo (the node itself)"}
			const ifaces = "cni0,!eth0"
			req := helperRequest{Interfaces: ifaces, PodIdentity: true}

			res, logs := n.rules(withOps(req, "ensure", "present"))
			mustSucceed(t, res, logs)
			if !res.Ops[1].Present {
				t.Fatalf("RulesPresent is false right after ensure\n%s", logs)
			}
			nat, filter := n.saveTable(fam.family, "nat"), n.saveTable(fam.family, "filter")
			for _, chain := range []string{"KUBE2RA-PODIDENTITY", "KUBE2RA-PODIDENTITY-HOST"} {
				if !strings.Contains(nat, ":"+chain+" ") && !strings.Contains(nat, ":"+chain+"\n") {
					t.Errorf("nat table has no %s chain:\n%s", chain, nat)
				}
			}
			if !strings.Contains(filter, "-j KUBE2RA-PODIDENTITY-GUARD") {
				t.Errorf("filter table has no jump to the Pod Identity guard:\n%s", filter)
			}
			for _, p := range pods {
				expectAnswer(t, "Pod Identity address, installed", p, fam.podIDURL, agent)
				expectAnswer(t, "metadata address, installed", p, fam.metaURL, agent)
			}
			expectAnswer(t, "the node's own Pod Identity request", node, fam.podIDURL, agent)
			expectAnswer(t, "the node's own metadata request", node, fam.metaURL, metaAnswer)

			n.ipt(fam.family, "-t", "nat", "-F")
			for _, p := range pods {
				expectAnswer(t, "Pod Identity address after iptables -t nat -F", p, fam.podIDURL, "")
			}
			expectAnswer(t, "the node's own Pod Identity request after the flush", node, fam.podIDURL, podIDAnswer)

			res, logs = n.rules(withOps(req, "present", "ensure", "present"))
			mustSucceed(t, res, logs)
			if res.Ops[0].Present || !res.Ops[1].Changed || !res.Ops[2].Present {
				t.Errorf("after the flush: present %v, restored %v, present %v; want false, true, true\n%s",
					res.Ops[0].Present, res.Ops[1].Changed, res.Ops[2].Present, logs)
			}
			for _, p := range pods {
				expectAnswer(t, "Pod Identity address, restored", p, fam.podIDURL, agent)
			}

			// Turned off, the Pod Identity chains go and the metadata ones stay.
			n.mustOps(ifaces, "ensure")
			if s := n.saveTable(fam.family, "nat") + n.saveTable(fam.family, "filter"); strings.Contains(s, "PODIDENTITY") {
				t.Errorf("Pod Identity off: its chains are still there:\n%s", s)
			}
			expectSave(t, n, fam.family, wantSave(fam.family, agent, "cni0", "!eth0"))

			res, logs = n.rules(withOps(req, "ensure", "remove"))
			mustSucceed(t, res, logs)
			if s := n.saveTable(fam.family, "nat") + n.saveTable(fam.family, "filter"); strings.Contains(s, "KUBE2RA") {
				t.Errorf("after Remove:\n%s", s)
			}
		})
	})
}

func withOps(req helperRequest, ops ...string) helperRequest {
	req.Ops = ops
	return req
}

func mustSucceed(t *testing.T, res helperResult, logs string) {
	t.Helper()
	if res.NewErr != "" {
		t.Fatalf("New: %s\n%s", res.NewErr, logs)
	}
	for _, o := range res.Ops {
		if o.Err != "" {
			t.Fatalf("%s: %s\n%s", o.Op, o.Err, logs)
		}
	}
}
