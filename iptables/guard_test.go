package iptables

import (
	"context"
	"maps"
	"slices"
	"strings"
	"testing"
)

func TestGuardRuleGeneration(t *testing.T) {
	tests := []struct {
		name   string
		family family
		ifaces string
		want   []string
	}{
		{name: "loopback exception first, then one REJECT per entry in entry order", family: v4("10.198.0.1:8181"), ifaces: "cni0,cali+,!eth0", want: []string{
			"-A KUBE2RA-GUARD -i lo -j RETURN",
			"-A KUBE2RA-GUARD -d 169.254.169.254/32 -i cni0 -p tcp -m tcp --dport 80 -j REJECT --reject-with tcp-reset",
			"-A KUBE2RA-GUARD -d 169.254.169.254/32 -i cali+ -p tcp -m tcp --dport 80 -j REJECT --reject-with tcp-reset",
			"-A KUBE2RA-GUARD -d 169.254.169.254/32 ! -i eth0 -p tcp -m tcp --dport 80 -j REJECT --reject-with tcp-reset",
			guardForwarded,
		}},
		{name: "IPv6 refuses the Nitro address", family: v6("[fd00::1]:8181"), ifaces: "cali+", want: []string{
			"-A KUBE2RA-GUARD -i lo -j RETURN",
			"-A KUBE2RA-GUARD -d fd00:ec2::254/128 -i cali+ -p tcp -m tcp --dport 80 -j REJECT --reject-with tcp-reset",
			"-A KUBE2RA-GUARD -d fd00:ec2::254/128 -p tcp -m tcp --dport 80 -m addrtype ! --dst-type LOCAL -j REJECT --reject-with tcp-reset",
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ifaces := mustInterfaces(t, tt.ifaces)
			got := specLines(ChainGuard, tt.family.guardSpecs(ifaces))
			if !slices.Equal(got, tt.want) {
				t.Errorf("rules:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(tt.want, "\n"))
			}
			// The guard refuses exactly what the DNAT redirects: the same
			// matches, entry for entry.
			dnat := tt.family.dnatSpecs(ifaces)
			guard := tt.family.guardSpecs(ifaces)
			for i, g := range guard[1 : len(guard)-1] {
				if !slices.Equal(g[:slices.Index(g, "-j")], dnat[i][:slices.Index(dnat[i], "-j")]) {
					t.Errorf("guard rule %q and DNAT rule %q match different traffic", g, dnat[i])
				}
			}
		})
	}
	for _, tc := range []struct {
		from Chain
		line string
	}{{ChainInput, guardJumpInputV4}, {ChainForward, guardJumpForwardV4}} {
		if got := ruleLine(tc.from, v4("10.0.0.1:1").jumpSpec(ChainGuard)); got != tc.line {
			t.Errorf("%s jump = %q, want %q", tc.from, got, tc.line)
		}
	}
}

// podIfaces are node-side interfaces of pods under cni0,!eth0 (vethab12
// is only matched by the negation).
var podIfaces = []string{"cni0", "vethab12"}

// allFates is every pod path with the same fate.
func allFates(f fate) map[string]fate {
	out := map[string]fate{}
	for _, in := range podIfaces {
		out[in+" INPUT"], out[in+" FORWARD"] = f, f
	}
	return out
}

// assertNoPathReopens checks the states a reconciliation went through: a
// pod path that was DNATed or refused in the state before never reaches
// the metadata service in any later state.
func assertNoPathReopens(t *testing.T, before memSnapshot, history []memSnapshot) {
	t.Helper()
	closed := map[string]bool{}
	for path, f := range before.fatesOf(MetadataIPv4, podIfaces) {
		closed[path] = f != fateLeaked
	}
	for i, snap := range history {
		for path, f := range snap.fatesOf(MetadataIPv4, podIfaces) {
			if f == fateLeaked && closed[path] {
				t.Errorf("after change %d a pod packet on %s %s, closed before", i+1, path, f)
			}
			closed[path] = closed[path] || f != fateLeaked
		}
	}
}

// TestFlushedNatTableFailsClosed is the soak's finding: after
// `iptables -t nat -F` a pod's packet for the metadata address is refused
// until the next resync, which restores the DNAT without a leak on the way.
func TestFlushedNatTableFailsClosed(t *testing.T) {
	r, t4, _ := testRedirect(t, "cni0,!eth0", 8181, false)
	ctx := context.Background()
	if _, err := r.EnsureRules(ctx); err != nil {
		t.Fatal(err)
	}
	if got, want := t4.snapshot().fatesOf(MetadataIPv4, podIfaces), allFates(fateDNAT); !maps.Equal(got, want) {
		t.Fatalf("installed: %v, want %v", got, want)
	}
	t4.flush("nat")
	if got, want := t4.snapshot().fatesOf(MetadataIPv4, podIfaces), allFates(fateRejected); !maps.Equal(got, want) {
		t.Errorf("after iptables -t nat -F: %v, want every pod path %s", got, fateRejected)
	}
	// The node's own traffic to a local metadata address comes in on lo
	// and passes the guard even though !eth0 matches lo.
	if v := t4.snapshot().verdict("filter", "INPUT", MetadataIPv4, "lo"); v != "" {
		t.Errorf("the guard gives the node's own loopback traffic %q, want it to pass", v)
	}
	if present, err := r.RulesPresent(ctx); err != nil || present {
		t.Errorf("RulesPresent = %v, %v after the flush; want false", present, err)
	}
	if problem, err := r.RulesProblem(ctx); err != nil || !strings.Contains(problem, "IPv4") || !strings.Contains(problem, "chain KUBE2RA holds []") {
		t.Errorf("RulesProblem = %q, %v after the flush; want the family and the emptied nat chain named", problem, err)
	}
	before := t4.snapshot()
	t4.history = nil
	if changed, err := r.EnsureRules(ctx); err != nil || !changed {
		t.Fatalf("restore: changed %v, %v", changed, err)
	}
	assertNoPathReopens(t, before, t4.history)
	if got, want := t4.snapshot().fatesOf(MetadataIPv4, podIfaces), allFates(fateDNAT); !maps.Equal(got, want) {
		t.Errorf("restored: %v, want %v", got, want)
	}
}

// TestEnsureNeverReopensAPath: from nothing, from a flushed filter table,
// and through a rewrite from another configuration, no pod path that was
// DNATed or refused reaches the metadata service in any intermediate state,
// and every pod path ends DNATed.
func TestEnsureNeverReopensAPath(t *testing.T) {
	tests := []struct {
		name  string
		setup []string
	}{
		{name: "nothing installed"},
		{name: "flushed filter table", setup: []string{"*filter", "-N KUBE2RA-GUARD", "*nat", "-N KUBE2RA", dnatCni0, dnatEth0, jumpLineV4}},
		{name: "both tables flushed", setup: []string{"*filter", "-N KUBE2RA-GUARD", "*nat", "-N KUBE2RA"}},
		{name: "older configuration with stale DNAT and guard", setup: []string{
			"*filter", "-N KUBE2RA-GUARD", guardCni0, guardJumpInputV4, guardJumpForwardV4,
			"*nat", "-N KUBE2RA", staleCni0Port, jumpLineV4}},
		{name: "a CNI plugin's ACCEPT rules already in INPUT and FORWARD", setup: []string{"*filter", foreignAccept, "-A INPUT -i cni0 -j ACCEPT",
			"*nat", "-N KUBE2RA", dnatCni0, dnatEth0, jumpLineV4}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, t4, _ := testRedirect(t, "cni0,!eth0", 8181, false)
			if err := t4.exec(tt.setup...); err != nil {
				t.Fatal(err)
			}
			before := t4.snapshot()
			if _, err := r.EnsureRules(context.Background()); err != nil {
				t.Fatal(err)
			}
			assertNoPathReopens(t, before, t4.history)
			if got, want := t4.snapshot().fatesOf(MetadataIPv4, podIfaces), allFates(fateDNAT); !maps.Equal(got, want) {
				t.Errorf("after EnsureRules: %v, want %v", got, want)
			}
			// Inserted first, the guard decides before any ACCEPT rule.
			t4.flush("nat")
			if got, want := t4.snapshot().fatesOf(MetadataIPv4, podIfaces), allFates(fateRejected); !maps.Equal(got, want) {
				t.Errorf("after EnsureRules and a nat flush: %v, want every pod path %s", got, fateRejected)
			}
		})
	}
}

// TestRemoveTakesTheDNATDownBeforeTheGuard: in every state Remove passes
// through while any DNAT is left, the guard is whole, so a nat flush at
// that moment (or a Remove that stops there) refuses pods instead of
// leaking; only the last changes, on the guard, open the path, which is
// what uninstalling means.
func TestRemoveTakesTheDNATDownBeforeTheGuard(t *testing.T) {
	r, t4, _ := testRedirect(t, "cni0,!eth0", 8181, false)
	if _, err := r.EnsureRules(context.Background()); err != nil {
		t.Fatal(err)
	}
	t4.history = nil
	if err := r.Remove(context.Background()); err != nil {
		t.Fatal(err)
	}
	guardChanges := 0
	for i, snap := range t4.history {
		dnatLeft := len(snap["nat"]["KUBE2RA"]) > 0 || slices.ContainsFunc(snap["nat"]["PREROUTING"], func(s []string) bool { return jumpsTo(s, ChainKube2ra) })
		guardWhole := len(snap["filter"]["KUBE2RA-GUARD"]) == 4 &&
			slices.ContainsFunc(snap["filter"]["INPUT"], func(s []string) bool { return jumpsTo(s, ChainGuard) }) &&
			slices.ContainsFunc(snap["filter"]["FORWARD"], func(s []string) bool { return jumpsTo(s, ChainGuard) })
		if !guardWhole {
			guardChanges++
		}
		if dnatLeft && !guardWhole {
			t.Errorf("after change %d DNAT rules remain without a whole guard: %v", i+1, snap)
		}
		flushed := maps.Clone(snap)
		flushed["nat"] = nil
		if got := flushed.fatesOf(MetadataIPv4, podIfaces); guardWhole && !maps.Equal(got, allFates(fateRejected)) {
			t.Errorf("after change %d a nat flush would leave %v", i+1, got)
		}
	}
	if guardChanges == 0 || guardChanges > 3 {
		t.Errorf("%d of %d states had the guard partly removed; want only the last ones (2 jumps, 1 chain)", guardChanges, len(t4.history))
	}
	if got, want := t4.dump("filter"), emptyFilter; got != want {
		t.Errorf("filter table after Remove:\n%s\nwant:\n%s", got, want)
	}
}

// TestInterruptedRemoveLeavesTheGuard: when a command of the guard's
// removal fails, Remove reports it and the guard still refuses pods.
func TestInterruptedRemoveLeavesTheGuard(t *testing.T) {
	r, t4, _ := testRedirect(t, "cni0,!eth0", 8181, false)
	if _, err := r.EnsureRules(context.Background()); err != nil {
		t.Fatal(err)
	}
	r.families[0].table = &failingTable{memTable: t4, failOn: "Delete filter"}
	err := r.Remove(context.Background())
	if err == nil || !strings.Contains(err.Error(), "filter table") {
		t.Fatalf("Remove = %v, want the failed filter command", err)
	}
	if got, want := t4.snapshot().fatesOf(MetadataIPv4, podIfaces), allFates(fateRejected); !maps.Equal(got, want) {
		t.Errorf("after an interrupted Remove: %v, want every pod path %s", got, fateRejected)
	}
	if got := t4.dump("nat"); strings.Contains(got, "KUBE2RA") {
		t.Errorf("the DNAT should be gone before the guard is touched:\n%s", got)
	}
}

func TestGuardRemovedWithEveryDuplicate(t *testing.T) {
	r, t4, _ := testRedirect(t, "cni0", 8181, false)
	if err := t4.exec("*filter", "-N KUBE2RA-GUARD", guardCni0, guardJumpInputV4, guardJumpInputV4, guardJumpForwardV4, foreignAccept); err != nil {
		t.Fatal(err)
	}
	for i := range 2 {
		if err := r.Remove(context.Background()); err != nil {
			t.Fatalf("Remove #%d: %v", i+1, err)
		}
		if got, want := t4.dump("filter"), emptyFilter+foreignAccept+"\n"; got != want {
			t.Errorf("filter table after Remove #%d:\n%s\nwant:\n%s", i+1, got, want)
		}
	}
}

func TestFakeModelsTheGuard(t *testing.T) {
	ctx := context.Background()
	f := NewFake()
	if !f.PodsReachMetadata() {
		t.Fatal("a fresh Fake should have nothing installed")
	}
	if changed, err := f.EnsureRules(ctx); err != nil || !changed {
		t.Fatalf("EnsureRules = %v, %v", changed, err)
	}
	for _, tc := range []struct {
		name  string
		flush func()
	}{{"nat flush", f.Flush}, {"filter flush", f.FlushFilter}} {
		tc.flush()
		if present, _ := f.RulesPresent(ctx); present || f.Installed() {
			t.Errorf("%s: rules still reported present", tc.name)
		}
		if f.PodsReachMetadata() {
			t.Errorf("%s: pods reach the metadata service with the other half installed", tc.name)
		}
		if changed, err := f.EnsureRules(ctx); err != nil || !changed || !f.Installed() {
			t.Errorf("%s: restore = %v, %v", tc.name, changed, err)
		}
	}
	if err := f.Remove(ctx); err != nil || !f.PodsReachMetadata() {
		t.Errorf("Remove = %v, pods reach metadata %v", err, f.PodsReachMetadata())
	}
}

// TestForwardGuardIgnoresTheInterface: with a --host-interface that names
// no pod interface (cni0 on a Calico node), a pod's packet the node would
// forward to the metadata service (EC2) is refused all the same; on INPUT
// (a metadata address local to the node) the interface exemptions stay.
func TestForwardGuardIgnoresTheInterface(t *testing.T) {
	r, t4, _ := testRedirect(t, "cni0", 8181, false)
	if _, err := r.EnsureRules(context.Background()); err != nil {
		t.Fatal(err)
	}
	s := t4.snapshot()
	for _, iface := range []string{"cali1234", "eth0", "lxc99"} {
		if got := s.podPacketFate(MetadataIPv4, iface, "FORWARD"); got != fateRejected {
			t.Errorf("forwarded packet from %s: %s, want %s", iface, got, fateRejected)
		}
		if got := s.podPacketFate(MetadataIPv4, iface, "INPUT"); got != fateLeaked {
			t.Errorf("local packet from %s (not a pod interface by the pattern): %s, want it to pass as the node's own", iface, got)
		}
	}
}
