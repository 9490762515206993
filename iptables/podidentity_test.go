package iptables

import (
	"context"
	"maps"
	"net/netip"
	"slices"
	"strings"
	"testing"
)

// withPodIdentity turns the Pod Identity redirect on in every family.
func withPodIdentity(r *Redirect) {
	for i := range r.families {
		r.families[i].family.podIdentity = r.families[i].family.podIdentityAddr()
	}
}

func TestPodIdentityRuleGeneration(t *testing.T) {
	f := v4("10.198.0.1:8181")
	f.podIdentity = PodIdentityIPv4
	ifaces := mustInterfaces(t, "cni0,!eth0")
	got := map[Chain][]string{}
	for _, oc := range f.ownedChains(ifaces) {
		got[oc.chain] = append(specLines(oc.chain, oc.rules), specLines(oc.from[0], [][]string{oc.jump})...)
	}
	want := map[Chain][]string{
		ChainPodIdentityGuard: {
			"-A KUBE2RA-PODIDENTITY-GUARD -i lo -j RETURN",
			"-A KUBE2RA-PODIDENTITY-GUARD -d 169.254.170.23/32 -i cni0 -p tcp -m tcp --dport 80 -j REJECT --reject-with tcp-reset",
			"-A KUBE2RA-PODIDENTITY-GUARD -d 169.254.170.23/32 ! -i eth0 -p tcp -m tcp --dport 80 -j REJECT --reject-with tcp-reset",
			"-A KUBE2RA-PODIDENTITY-GUARD -d 169.254.170.23/32 -p tcp -m tcp --dport 80 -m addrtype ! --dst-type LOCAL -j REJECT --reject-with tcp-reset",
			"-A INPUT -d 169.254.170.23/32 -p tcp -m tcp --dport 80 -m comment --comment kube2ra -j KUBE2RA-PODIDENTITY-GUARD",
		},
		ChainPodIdentity: {
			"-A KUBE2RA-PODIDENTITY -d 169.254.170.23/32 -i cni0 -p tcp -m tcp --dport 80 -j DNAT --to-destination 10.198.0.1:8181",
			"-A KUBE2RA-PODIDENTITY -d 169.254.170.23/32 ! -i eth0 -p tcp -m tcp --dport 80 -j DNAT --to-destination 10.198.0.1:8181",
			"-A PREROUTING -d 169.254.170.23/32 -p tcp -m tcp --dport 80 -m comment --comment kube2ra -j KUBE2RA-PODIDENTITY",
		},
		// The node's own processes: no interface, the same listener.
		ChainPodIdentityHost: {
			"-A KUBE2RA-PODIDENTITY-HOST -d 169.254.170.23/32 -p tcp -m tcp --dport 80 -j DNAT --to-destination 10.198.0.1:8181",
			"-A OUTPUT -d 169.254.170.23/32 -p tcp -m tcp --dport 80 -m comment --comment kube2ra -j KUBE2RA-PODIDENTITY-HOST",
		},
	}
	for chain, lines := range want {
		if !slices.Equal(got[chain], lines) {
			t.Errorf("%s:\n%s\nwant:\n%s", chain, strings.Join(got[chain], "\n"), strings.Join(lines, "\n"))
		}
	}
	// Without Pod Identity the family owns the metadata chains only.
	off := v4("10.198.0.1:8181")
	if n := len(off.ownedChains(ifaces)); n != 2 {
		t.Errorf("Pod Identity off: %d chains, want the guard and the DNAT only", n)
	}
}

// TestPodIdentityLifecycle: ensure installs the Pod Identity chains in both
// families, pods' packets are DNATed and, after a nat flush, refused;
// the node's own OUTPUT redirects the Pod Identity address and never the
// metadata address; turning the option off takes its chains away; Remove
// takes everything away.
func TestPodIdentityLifecycle(t *testing.T) {
	r, t4, t6 := testRedirect(t, "cni0,!eth0", 8181, true)
	withPodIdentity(r)
	ctx := context.Background()
	if _, err := r.EnsureRules(ctx); err != nil {
		t.Fatal(err)
	}
	if present, err := r.RulesPresent(ctx); err != nil || !present {
		t.Fatalf("RulesPresent = %v, %v after ensure; want true", present, err)
	}
	for _, tc := range []struct {
		table *memTable
		fam   family
	}{{t4, r.families[0].family}, {t6, r.families[1].family}} {
		s := tc.table.snapshot()
		for _, addr := range []struct{ name, want string }{{"metadata", ""}, {"Pod Identity", "DNAT"}} {
			meta := tc.fam.metadata
			if addr.name == "Pod Identity" {
				meta = tc.fam.podIdentity
			}
			if got := s.verdict("nat", "OUTPUT", meta, ""); got != addr.want {
				t.Errorf("%s: the node's own packet for the %s address %s gets %q in nat OUTPUT, want %q", tc.fam.name, addr.name, meta, got, addr.want)
			}
		}
		if got, want := s.fatesOf(tc.fam.podIdentity, podIfaces), allFates(fateDNAT); !maps.Equal(got, want) {
			t.Errorf("%s installed: %v, want %v", tc.fam.name, got, want)
		}
		tc.table.flush("nat")
		if got, want := tc.table.snapshot().fatesOf(tc.fam.podIdentity, podIfaces), allFates(fateRejected); !maps.Equal(got, want) {
			t.Errorf("%s after iptables -t nat -F: %v, want every pod path refused", tc.fam.name, got)
		}
	}
	if _, err := r.EnsureRules(ctx); err != nil {
		t.Fatal(err)
	}

	// Off again: the chains of the earlier run go.
	for i := range r.families {
		r.families[i].family.podIdentity = netip.Addr{}
	}
	if _, err := r.EnsureRules(ctx); err != nil {
		t.Fatal(err)
	}
	for _, tbl := range []*memTable{t4, t6} {
		for _, table := range []string{"nat", "filter"} {
			if d := tbl.dump(table); strings.Contains(d, "PODIDENTITY") {
				t.Errorf("Pod Identity off: the %s table still holds its chains:\n%s", table, d)
			}
		}
	}

	withPodIdentity(r)
	if _, err := r.EnsureRules(ctx); err != nil {
		t.Fatal(err)
	}
	if err := r.Remove(ctx); err != nil {
		t.Fatal(err)
	}
	for _, tbl := range []*memTable{t4, t6} {
		if d := tbl.dump("nat") + tbl.dump("filter"); strings.Contains(d, "KUBE2RA") {
			t.Errorf("after Remove:\n%s", d)
		}
	}
}
