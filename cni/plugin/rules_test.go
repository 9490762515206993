package plugin

import (
	"net/netip"
	"slices"
	"strings"
	"testing"
)

func testConfig() Config {
	return Config{
		Type:     PluginType,
		NodeIP:   netip.MustParseAddr("10.0.0.1"),
		NodeIPv6: netip.MustParseAddr("fd00::1"),
		Port:     8181,
		Redirect: []netip.AddrPort{
			netip.MustParseAddrPort("169.254.169.254:80"),
			netip.MustParseAddrPort("169.254.170.23:80"),
			netip.MustParseAddrPort("[fd00:ec2::254]:80"),
		},
		IPTablesBackend: "nft",
	}
}

// installed is iptables-nft -S output of a table after a correct Apply,
// as iptables 1.8.9 prints it.
func installed(f family, t table) string {
	lines := []string{"-P OUTPUT ACCEPT", "-N " + Chain, "-A OUTPUT -p tcp -m comment --comment kube2ra-cni -j KUBE2RA-CNI"}
	for _, r := range f.chainRules(t) {
		lines = append(lines, "-A "+Chain+" "+r)
	}
	return strings.Join(lines, "\n") + "\n"
}

func TestFamiliesSplitsRedirectByIPFamily(t *testing.T) {
	fs := families(testConfig())
	if len(fs) != 2 || fs[0].v6 || !fs[1].v6 {
		t.Fatalf("families = %+v, want IPv4 then IPv6", fs)
	}
	if got := fs[0].target.String(); got != "10.0.0.1:8181" {
		t.Errorf("IPv4 target = %s", got)
	}
	if got := fs[1].target.String(); got != "[fd00::1]:8181" {
		t.Errorf("IPv6 target = %s", got)
	}
	if len(fs[0].redirect) != 2 || len(fs[1].redirect) != 1 {
		t.Errorf("redirects = %v / %v", fs[0].redirect, fs[1].redirect)
	}
	cfg := testConfig()
	cfg.NodeIPv6, cfg.Redirect = netip.Addr{}, cfg.Redirect[:1]
	if fs := families(cfg); len(fs) != 1 || fs[0].v6 {
		t.Errorf("IPv4-only config gives families %+v, want only IPv4 (no ip6tables command at all)", fs)
	}
}

func TestChainRulesAsIPTablesPrintsThem(t *testing.T) {
	f := families(testConfig())
	want := map[table][]string{
		tableNAT: {
			"-d 169.254.169.254/32 -p tcp -m tcp --dport 80 -j DNAT --to-destination 10.0.0.1:8181",
			"-d 169.254.170.23/32 -p tcp -m tcp --dport 80 -j DNAT --to-destination 10.0.0.1:8181",
		},
		tableFilter: {
			"-d 169.254.169.254/32 -p tcp -m tcp --dport 80 -j REJECT --reject-with tcp-reset",
			"-d 169.254.170.23/32 -p tcp -m tcp --dport 80 -j REJECT --reject-with tcp-reset",
		},
	}
	for tb, w := range want {
		if got := f[0].chainRules(tb); !slices.Equal(got, w) {
			t.Errorf("%s rules = %q, want %q", tb, got, w)
		}
	}
	if got := f[1].chainRules(tableNAT); !slices.Equal(got, []string{"-d fd00:ec2::254/128 -p tcp -m tcp --dport 80 -j DNAT --to-destination [fd00::1]:8181"}) {
		t.Errorf("IPv6 nat rules = %q", got)
	}
}

func TestRestoreScriptConvergesEveryState(t *testing.T) {
	f := families(testConfig())[0]
	jump := jumpRule()
	stale := "-d 169.254.169.254/32 -p tcp -m tcp --dport 80 -j DNAT --to-destination 10.0.0.9:8181"
	oldJump := "-m comment --comment kube2ra-cni -j KUBE2RA-CNI"
	cases := []struct {
		name  string
		state string
		want  []string // lines the script must hold, in order, besides the chain's rules
		none  []string // lines it must not hold
		empty bool
	}{
		{name: "fresh namespace: chain, rules and the jump", state: "-P OUTPUT ACCEPT\n",
			want: []string{"*nat", ":KUBE2RA-CNI - [0:0]", "-I OUTPUT 1 " + jump, "COMMIT"}, none: []string{"-D OUTPUT"}},
		{name: "exact rules: nothing to do", state: installed(f, tableNAT), empty: true},
		{name: "stale rule: chain rewritten, jump kept",
			state: "-N KUBE2RA-CNI\n-A OUTPUT " + jump + "\n-A KUBE2RA-CNI " + stale + "\n",
			want:  []string{":KUBE2RA-CNI - [0:0]"}, none: []string{"-I OUTPUT", "-D OUTPUT", stale}},
		{name: "duplicate jump: one deleted",
			state: installed(f, tableNAT) + "-A OUTPUT " + jump + "\n",
			want:  []string{"-D OUTPUT " + jump}, none: []string{"-I OUTPUT"}},
		{name: "older jump: replaced",
			state: "-N KUBE2RA-CNI\n-A OUTPUT " + oldJump + "\n",
			want:  []string{"-I OUTPUT 1 " + jump, "-D OUTPUT " + oldJump}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got := f.restoreScript(tableNAT, parseTableState(tc.state))
			if tc.empty {
				if got != "" {
					t.Fatalf("script = %q, want none", got)
				}
				return
			}
			lines := strings.Split(strings.TrimSuffix(got, "\n"), "\n")
			for _, r := range f.chainRules(tableNAT) {
				if !slices.Contains(lines, "-A KUBE2RA-CNI "+r) {
					t.Errorf("script lacks rule %q:\n%s", r, got)
				}
			}
			at := -1
			for _, w := range tc.want {
				i := slices.Index(lines, w)
				if i < 0 || i < at {
					t.Errorf("script lacks %q (in this order):\n%s", w, got)
				}
				at = i
			}
			for _, n := range tc.none {
				if strings.Contains(got, n) {
					t.Errorf("script holds %q:\n%s", n, got)
				}
			}
			if lines[len(lines)-1] != "COMMIT" {
				t.Errorf("script does not end with COMMIT:\n%s", got)
			}
		})
	}
}

func TestProblemNamesTheFirstDifference(t *testing.T) {
	f := families(testConfig())[0]
	cases := []struct {
		name, state, want string
	}{
		{"exact", installed(f, tableFilter), ""},
		{"no chain", "-P OUTPUT ACCEPT\n", "chain KUBE2RA-CNI is missing from the filter table"},
		{"flushed chain", "-N KUBE2RA-CNI\n-A OUTPUT " + jumpRule() + "\n", "chain KUBE2RA-CNI in the filter table holds []"},
		{"no jump", strings.Replace(installed(f, tableFilter), "-A OUTPUT ", "-A FORWARD ", 1), "OUTPUT in the filter table jumps to KUBE2RA-CNI with []"},
		{"jump as goto", installed(f, tableFilter) + "-A OUTPUT -g KUBE2RA-CNI\n", "OUTPUT in the filter table jumps to KUBE2RA-CNI with"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got := f.problem(tableFilter, parseTableState(tc.state))
			if tc.want == "" && got != "" || !strings.HasPrefix(got, tc.want) {
				t.Errorf("problem = %q, want prefix %q", got, tc.want)
			}
		})
	}
}

func TestRefusedAddressesGetTheGuardOnly(t *testing.T) {
	cfg := testConfig()
	cfg.NodeIPv6 = netip.Addr{}
	cfg.Redirect = cfg.Redirect[:1]
	cfg.Refuse = []netip.AddrPort{netip.MustParseAddrPort("[fd00:ec2::254]:80"), netip.MustParseAddrPort("[fd00:ec2::23]:80")}
	if err := cfg.Validate(); err != nil {
		t.Fatalf("IPv6 refused without nodeIPv6: %v", err)
	}
	fs := families(cfg)
	if len(fs) != 2 || !fs[1].v6 {
		t.Fatalf("families = %+v, want IPv4 and a refuse-only IPv6", fs)
	}
	if got := fs[1].tables(); !slices.Equal(got, []table{tableFilter}) {
		t.Errorf("refuse-only family writes tables %v, want only filter (no redirect to a node IPv6 it does not have)", got)
	}
	if got := fs[1].chainRules(tableFilter); !slices.Equal(got, []string{
		"-d fd00:ec2::254/128 -p tcp -m tcp --dport 80 -j REJECT --reject-with tcp-reset",
		"-d fd00:ec2::23/128 -p tcp -m tcp --dport 80 -j REJECT --reject-with tcp-reset",
	}) {
		t.Errorf("IPv6 guard = %q", got)
	}
	if got := fs[0].tables(); !slices.Equal(got, []table{tableFilter, tableNAT}) {
		t.Errorf("IPv4 tables = %v, want the guard written before the redirect", got)
	}
	cfg.Refuse = append(cfg.Refuse, cfg.Redirect[0])
	if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), "either redirected or refused") {
		t.Errorf("an address both redirected and refused: %v", err)
	}
}

func TestParseSaveSplitsTables(t *testing.T) {
	f := families(testConfig())[0]
	out := "# Generated by iptables-nft-save v1.8.9 (nf_tables)\n*filter\n:INPUT ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:KUBE2RA-CNI - [0:0]\n" +
		"-A OUTPUT " + jumpRule() + "\n"
	for _, r := range f.chainRules(tableFilter) {
		out += "-A KUBE2RA-CNI " + r + "\n"
	}
	out += "COMMIT\n# Completed\n*nat\n:OUTPUT ACCEPT [0:0]\nCOMMIT\n"
	s := parseSave(out)
	if p := f.problem(tableFilter, s[tableFilter]); p != "" {
		t.Errorf("filter as saved: %s", p)
	}
	if p := f.problem(tableNAT, s[tableNAT]); !strings.Contains(p, "missing from the nat table") {
		t.Errorf("nat without our chain: %q", p)
	}
	if _, ok := s["mangle"]; ok {
		t.Error("a table that was not printed appeared")
	}
}
