package iptables

import (
	"context"
	"net/netip"
	"reflect"
	"slices"
	"strings"
	"testing"

	goipt "github.com/coreos/go-iptables/iptables"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	logtest "github.com/sirupsen/logrus/hooks/test"
	"k8s.io/utils/clock"
)

// The lines below are what iptables 1.8.9 (nft and legacy) prints for the
// rules; the integration tests check the real binaries against the same text.
const (
	jumpLineV4 = "-A PREROUTING -d 169.254.169.254/32 -p tcp -m tcp --dport 80 -m comment --comment kube2ra -j KUBE2RA"
	jumpLineV6 = "-A PREROUTING -d fd00:ec2::254/128 -p tcp -m tcp --dport 80 -m comment --comment kube2ra -j KUBE2RA"
)

func v4(target string) family {
	return family{name: "IPv4", proto: goipt.ProtocolIPv4, metadata: MetadataIPv4, target: netip.MustParseAddrPort(target)}
}

func v6(target string) family {
	return family{name: "IPv6", proto: goipt.ProtocolIPv6, metadata: MetadataIPv6, target: netip.MustParseAddrPort(target)}
}

func mustInterfaces(t *testing.T, list string) []InterfaceSpec {
	t.Helper()
	specs, err := ParseInterfaces(list)
	if err != nil {
		t.Fatal(err)
	}
	return specs
}

func TestRuleGeneration(t *testing.T) {
	tests := []struct {
		name   string
		family family
		ifaces string
		want   []string
	}{
		{name: "exact interface", family: v4("10.198.0.1:8181"), ifaces: "cni0", want: []string{
			"-A KUBE2RA -d 169.254.169.254/32 -i cni0 -p tcp -m tcp --dport 80 -j DNAT --to-destination 10.198.0.1:8181",
		}},
		{name: "wildcard interface", family: v4("10.198.0.1:8181"), ifaces: "cali+", want: []string{
			"-A KUBE2RA -d 169.254.169.254/32 -i cali+ -p tcp -m tcp --dport 80 -j DNAT --to-destination 10.198.0.1:8181",
		}},
		{name: "negation puts ! before -i", family: v4("10.198.0.1:8181"), ifaces: "!eth0", want: []string{
			"-A KUBE2RA -d 169.254.169.254/32 ! -i eth0 -p tcp -m tcp --dport 80 -j DNAT --to-destination 10.198.0.1:8181",
		}},
		{name: "one rule per entry in entry order", family: v4("192.168.1.5:9000"), ifaces: "cni0,cali+,!eth0", want: []string{
			"-A KUBE2RA -d 169.254.169.254/32 -i cni0 -p tcp -m tcp --dport 80 -j DNAT --to-destination 192.168.1.5:9000",
			"-A KUBE2RA -d 169.254.169.254/32 -i cali+ -p tcp -m tcp --dport 80 -j DNAT --to-destination 192.168.1.5:9000",
			"-A KUBE2RA -d 169.254.169.254/32 ! -i eth0 -p tcp -m tcp --dport 80 -j DNAT --to-destination 192.168.1.5:9000",
		}},
		{name: "IPv6 uses the Nitro address and a bracketed target", family: v6("[fd00::1]:8181"), ifaces: "cali+", want: []string{
			"-A KUBE2RA -d fd00:ec2::254/128 -i cali+ -p tcp -m tcp --dport 80 -j DNAT --to-destination [fd00::1]:8181",
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := specLines(ChainKube2ra, tt.family.dnatSpecs(mustInterfaces(t, tt.ifaces)))
			if !slices.Equal(got, tt.want) {
				t.Errorf("rules:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(tt.want, "\n"))
			}
		})
	}
	if got := ruleLine(ChainPrerouting, v4("10.0.0.1:1").jumpSpec(ChainKube2ra)); got != jumpLineV4 {
		t.Errorf("IPv4 jump = %q, want %q", got, jumpLineV4)
	}
	if got := ruleLine(ChainPrerouting, v6("[fd00::1]:1").jumpSpec(ChainKube2ra)); got != jumpLineV6 {
		t.Errorf("IPv6 jump = %q, want %q", got, jumpLineV6)
	}
}

func TestSplitRuleLine(t *testing.T) {
	tests := []struct {
		name      string
		line      string
		wantChain Chain
		wantSpec  []string
		wantErr   bool
	}{
		{name: "plain rule", line: jumpLineV4, wantChain: ChainPrerouting, wantSpec: v4("10.0.0.1:1").jumpSpec(ChainKube2ra)},
		{name: "quoted comment with spaces", line: `-A PREROUTING -m comment --comment "kube2ra old \"v1\"" -j KUBE2RA`,
			wantChain: ChainPrerouting, wantSpec: []string{"-m", "comment", "--comment", `kube2ra old "v1"`, "-j", "KUBE2RA"}},
		{name: "counters from go-iptables are dropped", line: "-A KUBE2RA -i cni0 -j DNAT --to-destination 1.2.3.4:5 -c 12 3456",
			wantChain: ChainKube2ra, wantSpec: []string{"-i", "cni0", "-j", "DNAT", "--to-destination", "1.2.3.4:5"}},
		{name: "unterminated quote is an error", line: `-A X -m comment --comment "oops`, wantErr: true},
		{name: "chain declaration is not a rule", line: "-N KUBE2RA", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, spec, err := splitRuleLine(tt.line)
			if tt.wantErr {
				if err == nil {
					t.Fatalf("splitRuleLine(%q) = %v, want an error", tt.line, spec)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if c != tt.wantChain || !reflect.DeepEqual(spec, tt.wantSpec) {
				t.Errorf("splitRuleLine(%q) = %s %q, want %s %q", tt.line, c, spec, tt.wantChain, tt.wantSpec)
			}
			if !strings.Contains(tt.line, " -c ") {
				if back := ruleLine(c, spec); back != tt.line {
					t.Errorf("ruleLine(splitRuleLine(%q)) = %q", tt.line, back)
				}
			}
		})
	}
}

// testRedirect builds a Redirect over in-memory tables.
func testRedirect(t *testing.T, ifaces string, port int, ipv6 bool) (*Redirect, *memTable, *memTable) {
	t.Helper()
	m, err := newMetrics(prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	log, _ := logtest.NewNullLogger()
	r := &Redirect{
		backend:    ModeNFT,
		interfaces: mustInterfaces(t, ifaces),
		log:        log,
		clock:      clock.RealClock{},
		metrics:    m,
	}
	t4, t6 := newMemTable(), newMemTable()
	target := netip.AddrPortFrom(netip.MustParseAddr("10.198.0.1"), uint16(port))
	r.families = []familyTable{{family: v4(target.String()), table: t4, binary: "iptables-test"}}
	if ipv6 {
		target6 := netip.AddrPortFrom(netip.MustParseAddr("fd00::1"), uint16(port))
		r.families = append(r.families, familyTable{family: v6(target6.String()), table: t6, binary: "ip6tables-test"})
	}
	return r, t4, t6
}

// The guard's lines, in the filter table.
const (
	guardJumpInputV4   = "-A INPUT -d 169.254.169.254/32 -p tcp -m tcp --dport 80 -m comment --comment kube2ra -j KUBE2RA-GUARD"
	guardJumpForwardV4 = "-A FORWARD -d 169.254.169.254/32 -p tcp -m tcp --dport 80 -m comment --comment kube2ra -j KUBE2RA-GUARD"
	guardLoopback      = "-A KUBE2RA-GUARD -i lo -j RETURN"
	guardCni0          = "-A KUBE2RA-GUARD -d 169.254.169.254/32 -i cni0 -p tcp -m tcp --dport 80 -j REJECT --reject-with tcp-reset"
	guardEth0          = "-A KUBE2RA-GUARD -d 169.254.169.254/32 ! -i eth0 -p tcp -m tcp --dport 80 -j REJECT --reject-with tcp-reset"
	// guardForwarded refuses every forwarded packet that was not DNATed, whatever its interface.
	guardForwarded = "-A KUBE2RA-GUARD -d 169.254.169.254/32 -p tcp -m tcp --dport 80 -m addrtype ! --dst-type LOCAL -j REJECT --reject-with tcp-reset"
	// a CNI plugin's rule that accepts pod traffic
	foreignAccept = "-A FORWARD -i cni0 -j ACCEPT"
)

// guardOf is a correct guard in memTable.exec form for the given REJECT
// lines; it ends back in the nat table.
func guardOf(rejects ...string) []string {
	lines := append([]string{"*filter", "-N KUBE2RA-GUARD", guardLoopback}, rejects...)
	return append(lines, guardForwarded, guardJumpInputV4, guardJumpForwardV4, "*nat")
}

// wantFilterDump is the normalised filter table after a correct install of
// cni0,!eth0.
func wantFilterDump() string {
	return ":INPUT ACCEPT\n:FORWARD ACCEPT\n:OUTPUT ACCEPT\n:KUBE2RA-GUARD -\n" +
		guardJumpInputV4 + "\n" + guardJumpForwardV4 + "\n" + guardLoopback + "\n" + guardCni0 + "\n" + guardEth0 + "\n" + guardForwarded + "\n"
}

const emptyFilter = ":INPUT ACCEPT\n:FORWARD ACCEPT\n:OUTPUT ACCEPT\n"

const (
	dnatCni0 = "-A KUBE2RA -d 169.254.169.254/32 -i cni0 -p tcp -m tcp --dport 80 -j DNAT --to-destination 10.198.0.1:8181"
	dnatEth0 = "-A KUBE2RA -d 169.254.169.254/32 ! -i eth0 -p tcp -m tcp --dport 80 -j DNAT --to-destination 10.198.0.1:8181"
	// stale rules as an earlier configuration or version left them
	staleCni0Port = "-A KUBE2RA -d 169.254.169.254/32 -i cni0 -p tcp -m tcp --dport 80 -j DNAT --to-destination 10.198.0.1:9999"
	staleCni0Host = "-A KUBE2RA -d 169.254.169.254/32 -i cni0 -p tcp -m tcp --dport 80 -j DNAT --to-destination 10.198.0.7:8181"
	staleJump     = "-A PREROUTING -d 169.254.169.254/32 -p tcp -m tcp --dport 80 -j KUBE2RA"
	foreignRule   = "-A PREROUTING -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES"
)

// wantDump is the normalised table after a correct install of cni0,!eth0,
// with the foreign KUBE-SERVICES chain when withForeign.
func wantDump(withForeign bool) string {
	decl := ":PREROUTING ACCEPT\n:INPUT ACCEPT\n:OUTPUT ACCEPT\n:POSTROUTING ACCEPT\n"
	if withForeign {
		// the correct jump already there keeps its place behind the foreign rule
		decl += ":KUBE-SERVICES -\n:KUBE2RA -\n" + foreignRule + "\n" + jumpLineV4 + "\n"
	} else {
		decl += ":KUBE2RA -\n" + jumpLineV4 + "\n"
	}
	return decl + dnatCni0 + "\n" + dnatEth0 + "\n"
}

func TestEnsureRulesConverges(t *testing.T) {
	tests := []struct {
		name        string
		setup       []string
		wantChanged bool
		withForeign bool
	}{
		{name: "nothing installed gets one set", wantChanged: true},
		{name: "correct set is left alone", wantChanged: false,
			setup: append(guardOf(guardCni0, guardEth0), "-N KUBE2RA", dnatCni0, dnatEth0, jumpLineV4)},
		{name: "DNAT without guard gets the guard", wantChanged: true,
			setup: []string{"-N KUBE2RA", dnatCni0, dnatEth0, jumpLineV4}},
		{name: "guard without DNAT (nat table flushed) gets the DNAT", wantChanged: true,
			setup: guardOf(guardCni0, guardEth0)},
		{name: "flushed filter table gets the guard back", wantChanged: true,
			setup: []string{"*filter", "-N KUBE2RA-GUARD", "*nat", "-N KUBE2RA", dnatCni0, dnatEth0, jumpLineV4}},
		{name: "guard jump missing from FORWARD is added", wantChanged: true,
			setup: []string{"*filter", "-N KUBE2RA-GUARD", guardLoopback, guardCni0, guardEth0, guardJumpInputV4}},
		{name: "stale and duplicated guard rules and jumps are rewritten", wantChanged: true,
			setup: []string{"*filter", "-N KUBE2RA-GUARD", guardCni0, guardCni0, guardJumpInputV4, guardJumpInputV4, guardJumpForwardV4}},
		{name: "chain without jump gets the jump", wantChanged: true,
			setup: []string{"-N KUBE2RA", dnatCni0, dnatEth0}},
		{name: "empty chain with jump gets its rules", wantChanged: true,
			setup: []string{"-N KUBE2RA", jumpLineV4}},
		{name: "half-written chain is completed", wantChanged: true,
			setup: []string{"-N KUBE2RA", dnatCni0, jumpLineV4}},
		{name: "stale port is replaced", wantChanged: true,
			setup: []string{"-N KUBE2RA", staleCni0Port, jumpLineV4}},
		{name: "stale host IP is replaced", wantChanged: true,
			setup: []string{"-N KUBE2RA", staleCni0Host, dnatEth0, jumpLineV4}},
		{name: "rules in the wrong order are rewritten", wantChanged: true,
			setup: []string{"-N KUBE2RA", dnatEth0, dnatCni0, jumpLineV4}},
		{name: "duplicated rules are collapsed", wantChanged: true,
			setup: []string{"-N KUBE2RA", dnatCni0, dnatCni0, dnatEth0, jumpLineV4}},
		{name: "duplicate jumps are collapsed", wantChanged: true,
			setup: []string{"-N KUBE2RA", dnatCni0, dnatEth0, jumpLineV4, jumpLineV4, jumpLineV4}},
		{name: "jump from an older version is replaced", wantChanged: true,
			setup: []string{"-N KUBE2RA", dnatCni0, dnatEth0, staleJump}},
		{name: "foreign PREROUTING rules are kept", wantChanged: true, withForeign: true,
			setup: []string{"-N KUBE-SERVICES", "-N KUBE2RA", foreignRule, staleJump, jumpLineV4, staleCni0Port}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, t4, _ := testRedirect(t, "cni0,!eth0", 8181, false)
			if err := t4.exec(tt.setup...); err != nil {
				t.Fatal(err)
			}
			changed, err := r.EnsureRules(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			if changed != tt.wantChanged {
				t.Errorf("changed = %v, want %v", changed, tt.wantChanged)
			}
			if got, want := t4.dump("nat"), wantDump(tt.withForeign); got != want {
				t.Errorf("nat table after EnsureRules:\n%s\nwant:\n%s", got, want)
			}
			if got, want := t4.dump("filter"), wantFilterDump(); got != want {
				t.Errorf("filter table after EnsureRules:\n%s\nwant:\n%s", got, want)
			}
			if present, err := r.RulesPresent(context.Background()); err != nil || !present {
				t.Errorf("RulesPresent = %v, %v after EnsureRules", present, err)
			}
			changed, err = r.EnsureRules(context.Background())
			if err != nil || changed {
				t.Errorf("second EnsureRules = %v, %v; want no change", changed, err)
			}
			if got := testutil.ToFloat64(r.metrics.present); got != 1 {
				t.Errorf("rules_present = %v, want 1", got)
			}
		})
	}
}

// TestRewriteNeverEmptiesTheChain proves make-before-break: while a jump
// leads into KUBE2RA, the chain always holds a DNAT for cni0, so a pod's
// packet never falls through to the real metadata service.
func TestRewriteNeverEmptiesTheChain(t *testing.T) {
	r, t4, _ := testRedirect(t, "cni0,!eth0", 8181, false)
	if err := t4.exec("-N KUBE2RA", staleCni0Port, staleCni0Host, jumpLineV4, jumpLineV4); err != nil {
		t.Fatal(err)
	}
	if _, err := r.EnsureRules(context.Background()); err != nil {
		t.Fatal(err)
	}
	if len(t4.history) == 0 {
		t.Fatal("no changes recorded")
	}
	for i, snap := range t4.history {
		jumps := slices.ContainsFunc(snap["nat"]["PREROUTING"], func(s []string) bool { return jumpsTo(s, ChainKube2ra) })
		cni0 := slices.ContainsFunc(snap["nat"]["KUBE2RA"], func(s []string) bool { return slices.Contains(s, "cni0") })
		if jumps && !cni0 {
			t.Errorf("after change %d the jump leads into a chain without a cni0 DNAT: %q", i+1, snap["nat"]["KUBE2RA"])
		}
	}
}

func TestRulesPresentDetectsDrift(t *testing.T) {
	guarded := func(lines ...string) []string { return append(guardOf(guardCni0), lines...) }
	tests := []struct {
		name  string
		setup []string
		want  bool
	}{
		{name: "nothing", want: false},
		{name: "correct set", setup: guarded("-N KUBE2RA", dnatCni0, jumpLineV4), want: true},
		{name: "chain only", setup: guarded("-N KUBE2RA", dnatCni0), want: false},
		{name: "flushed chain", setup: guarded("-N KUBE2RA", jumpLineV4), want: false},
		{name: "stale port", setup: guarded("-N KUBE2RA", staleCni0Port, jumpLineV4), want: false},
		{name: "extra rule", setup: guarded("-N KUBE2RA", dnatCni0, dnatEth0, jumpLineV4), want: false},
		{name: "duplicate jump", setup: guarded("-N KUBE2RA", dnatCni0, jumpLineV4, jumpLineV4), want: false},
		{name: "old jump", setup: guarded("-N KUBE2RA", dnatCni0, staleJump), want: false},
		{name: "guard missing", setup: []string{"-N KUBE2RA", dnatCni0, jumpLineV4}, want: false},
		{name: "guard chain flushed", setup: []string{"*filter", "-N KUBE2RA-GUARD", guardJumpInputV4, guardJumpForwardV4,
			"*nat", "-N KUBE2RA", dnatCni0, jumpLineV4}, want: false},
		{name: "guard without the loopback exception", setup: []string{"*filter", "-N KUBE2RA-GUARD", guardCni0, guardJumpInputV4, guardJumpForwardV4,
			"*nat", "-N KUBE2RA", dnatCni0, jumpLineV4}, want: false},
		{name: "guard jump missing from INPUT", setup: []string{"*filter", "-N KUBE2RA-GUARD", guardLoopback, guardCni0, guardJumpForwardV4,
			"*nat", "-N KUBE2RA", dnatCni0, jumpLineV4}, want: false},
		{name: "guard jump duplicated in FORWARD", setup: guarded("*filter", guardJumpForwardV4, "*nat", "-N KUBE2RA", dnatCni0, jumpLineV4), want: false},
		{name: "guard jump below a foreign ACCEPT still counts", setup: append([]string{"*filter", foreignAccept}, guarded("-N KUBE2RA", dnatCni0, jumpLineV4)...), want: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, t4, _ := testRedirect(t, "cni0", 8181, false)
			if err := t4.exec(tt.setup...); err != nil {
				t.Fatal(err)
			}
			got, err := r.RulesPresent(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			if got != tt.want {
				t.Errorf("RulesPresent = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestRemove(t *testing.T) {
	tests := []struct {
		name  string
		setup []string
		want  string
	}{
		{name: "nothing installed succeeds", want: ":PREROUTING ACCEPT\n:INPUT ACCEPT\n:OUTPUT ACCEPT\n:POSTROUTING ACCEPT\n"},
		{name: "full set is removed", setup: append(guardOf(guardCni0), "-N KUBE2RA", dnatCni0, jumpLineV4),
			want: ":PREROUTING ACCEPT\n:INPUT ACCEPT\n:OUTPUT ACCEPT\n:POSTROUTING ACCEPT\n"},
		{name: "every duplicate and old jump is removed", setup: []string{"-N KUBE2RA", staleCni0Port, jumpLineV4, staleJump, jumpLineV4},
			want: ":PREROUTING ACCEPT\n:INPUT ACCEPT\n:OUTPUT ACCEPT\n:POSTROUTING ACCEPT\n"},
		{name: "foreign rules stay", setup: []string{"-N KUBE-SERVICES", "-N KUBE2RA", foreignRule, jumpLineV4},
			want: ":PREROUTING ACCEPT\n:INPUT ACCEPT\n:OUTPUT ACCEPT\n:POSTROUTING ACCEPT\n:KUBE-SERVICES -\n" + foreignRule + "\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, t4, _ := testRedirect(t, "cni0", 8181, false)
			if err := t4.exec(tt.setup...); err != nil {
				t.Fatal(err)
			}
			for i := range 2 {
				if err := r.Remove(context.Background()); err != nil {
					t.Fatalf("Remove #%d: %v", i+1, err)
				}
				if got := t4.dump("nat"); got != tt.want {
					t.Errorf("table after Remove #%d:\n%s\nwant:\n%s", i+1, got, tt.want)
				}
				if got := t4.dump("filter"); got != emptyFilter {
					t.Errorf("filter table after Remove #%d:\n%s", i+1, got)
				}
			}
			if got := testutil.ToFloat64(r.metrics.present); got != 0 {
				t.Errorf("rules_present = %v, want 0", got)
			}
		})
	}
}

func TestIPv6FamilyIsManagedToo(t *testing.T) {
	r, t4, t6 := testRedirect(t, "cali+", 8181, true)
	if _, err := r.EnsureRules(context.Background()); err != nil {
		t.Fatal(err)
	}
	want6 := ":PREROUTING ACCEPT\n:INPUT ACCEPT\n:OUTPUT ACCEPT\n:POSTROUTING ACCEPT\n:KUBE2RA -\n" + jumpLineV6 + "\n" +
		"-A KUBE2RA -d fd00:ec2::254/128 -i cali+ -p tcp -m tcp --dport 80 -j DNAT --to-destination [fd00::1]:8181\n"
	if got := t6.dump("nat"); got != want6 {
		t.Errorf("IPv6 table:\n%s\nwant:\n%s", got, want6)
	}
	jump6 := " -d fd00:ec2::254/128 -p tcp -m tcp --dport 80 -m comment --comment kube2ra -j KUBE2RA-GUARD\n"
	wantFilter6 := emptyFilter + ":KUBE2RA-GUARD -\n-A INPUT" + jump6 + "-A FORWARD" + jump6 + guardLoopback + "\n" +
		"-A KUBE2RA-GUARD -d fd00:ec2::254/128 -i cali+ -p tcp -m tcp --dport 80 -j REJECT --reject-with tcp-reset\n" +
		"-A KUBE2RA-GUARD -d fd00:ec2::254/128 -p tcp -m tcp --dport 80 -m addrtype ! --dst-type LOCAL -j REJECT --reject-with tcp-reset\n"
	if got := t6.dump("filter"); got != wantFilter6 {
		t.Errorf("IPv6 filter table:\n%s\nwant:\n%s", got, wantFilter6)
	}
	// Drift in IPv6 alone makes the whole set absent.
	if err := t6.Delete("nat", "PREROUTING", v6("[fd00::1]:1").jumpSpec(ChainKube2ra)...); err != nil {
		t.Fatal(err)
	}
	if present, _ := r.RulesPresent(context.Background()); present {
		t.Error("RulesPresent = true with the IPv6 jump missing")
	}
	if err := r.Remove(context.Background()); err != nil {
		t.Fatal(err)
	}
	empty := ":PREROUTING ACCEPT\n:INPUT ACCEPT\n:OUTPUT ACCEPT\n:POSTROUTING ACCEPT\n"
	if t4.dump("nat") != empty || t6.dump("nat") != empty || t4.dump("filter") != emptyFilter || t6.dump("filter") != emptyFilter {
		t.Errorf("after Remove:\n%s\n%s\n%s\n%s", t4.dump("nat"), t6.dump("nat"), t4.dump("filter"), t6.dump("filter"))
	}
}

func TestEnsureRulesStopsOnCancelledContext(t *testing.T) {
	r, t4, _ := testRedirect(t, "cni0", 8181, false)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := r.EnsureRules(ctx); err == nil {
		t.Fatal("EnsureRules with a cancelled context succeeded")
	}
	if len(t4.history) != 0 {
		t.Errorf("a cancelled EnsureRules changed the table %d times", len(t4.history))
	}
}

func TestErrorsNameTheCommandAndTheFix(t *testing.T) {
	r, t4, _ := testRedirect(t, "cni0", 8181, false)
	r.families[0].table = &failingTable{memTable: t4, failOn: "Insert"}
	_, err := r.EnsureRules(context.Background())
	if err == nil {
		t.Fatal("EnsureRules succeeded though Insert fails")
	}
	for _, s := range []string{"inserting", guardJumpInputV4, "filter table", "iptables-test", "CAP_NET_ADMIN", "boom"} {
		if !strings.Contains(err.Error(), s) {
			t.Errorf("error %q does not contain %q", err, s)
		}
	}
}

// failingTable fails one verb: "Insert" (any table) or "Delete filter".
type failingTable struct {
	*memTable
	failOn string
}

func (f *failingTable) Delete(table, chain string, spec ...string) error {
	if f.failOn == "Delete "+table {
		return errBoom
	}
	return f.memTable.Delete(table, chain, spec...)
}

func (f *failingTable) Insert(table, chain string, pos int, spec ...string) error {
	if f.failOn == "Insert" {
		return errBoom
	}
	return f.memTable.Insert(table, chain, pos, spec...)
}

var errBoom = &testError{"boom"}

type testError struct{ s string }

func (e *testError) Error() string { return e.s }

func TestNewRefusesInvalidConfig(t *testing.T) {
	c := validConfig()
	c.Port = 0
	if _, err := New(context.Background(), c); err == nil || !strings.Contains(err.Error(), "port 0") {
		t.Errorf("New with port 0 = %v, want an error naming the port", err)
	}
}

func TestMetricsRegistration(t *testing.T) {
	reg := prometheus.NewRegistry()
	if _, err := newMetrics(reg); err != nil {
		t.Fatal(err)
	}
	if _, err := newMetrics(reg); err == nil || !strings.Contains(err.Error(), "one iptables.Redirect per registry") {
		t.Errorf("second registration = %v, want an error explaining it", err)
	}
	if _, err := newMetrics(nil); err != nil {
		t.Errorf("nil registerer: %v", err)
	}
}
