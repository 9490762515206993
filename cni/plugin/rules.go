package plugin

import (
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"
)

// Chain is the plugin's own chain in the pod's nat table (the redirect)
// and in its filter table (the guard). One name in both tables, reached
// by exactly one jump from the table's OUTPUT chain, so Verify can tell
// exactly whether the pod holds kube2ra's rules and nothing else of ours.
const Chain = "KUBE2RA-CNI"

// RuleComment marks the jumps so an operator reading iptables-save in a
// pod's namespace knows whose they are.
const RuleComment = "kube2ra-cni"

// table is an iptables table the plugin writes in the pod's namespace.
type table string

const (
	// tableNAT holds the redirect: nat OUTPUT sees a connection's first
	// packet before routing sends it to the pod's interface.
	tableNAT table = "nat"
	// tableFilter holds the guard: filter OUTPUT runs after nat OUTPUT, so
	// a packet still addressed to a metadata address there was not
	// redirected (its connection was opened before the redirect existed).
	tableFilter table = "filter"
)

// outputChain is the built-in chain both jumps live in: a pod's own
// packets leave through OUTPUT, whatever dataplane the node runs.
const outputChain = "OUTPUT"

// family is one IP family's share of a Config.
type family struct {
	// name labels errors ("IPv4", "IPv6").
	name string
	// v6 selects ip6tables.
	v6 bool
	// target is where the family's redirect sends traffic (node IP, port).
	target netip.AddrPort
	// redirect are the family's addresses (with their ports) to redirect.
	redirect []netip.AddrPort
	// refuse are the family's addresses the guard alone refuses.
	refuse []netip.AddrPort
}

// guarded are every address the family's guard refuses: the redirected
// ones (should the DNAT miss) and the refused ones.
func (f family) guarded() []netip.AddrPort {
	return slices.Concat(f.redirect, f.refuse)
}

// tables are the tables the family needs, in writing order: the guard
// before the redirect, so that a connection opened between the two is
// refused, never let through. A family with nothing to redirect needs no
// nat rules.
func (f family) tables() []table {
	if len(f.redirect) == 0 {
		return []table{tableFilter}
	}
	return []table{tableFilter, tableNAT}
}

// families splits cfg into the IP families it has addresses for, IPv4
// first. A family without addresses gets no rules at all.
func families(cfg Config) []family {
	v4 := family{name: "IPv4", target: netip.AddrPortFrom(cfg.NodeIP, cfg.Port)}
	v6 := family{name: "IPv6", v6: true, target: netip.AddrPortFrom(cfg.NodeIPv6, cfg.Port)}
	pick := func(a netip.AddrPort) (*family, netip.AddrPort) {
		if a.Addr().Unmap().Is4() {
			return &v4, netip.AddrPortFrom(a.Addr().Unmap(), a.Port())
		}
		return &v6, a
	}
	for _, a := range cfg.Redirect {
		f, a := pick(a)
		f.redirect = append(f.redirect, a)
	}
	for _, a := range cfg.Refuse {
		f, a := pick(a)
		f.refuse = append(f.refuse, a)
	}
	var fs []family
	for _, f := range []family{v4, v6} {
		if len(f.guarded()) > 0 {
			fs = append(fs, f)
		}
	}
	return fs
}

// dstMatch matches TCP packets for one address and port, in the order
// iptables -S prints it, so a listed rule compares equal to it as text.
func dstMatch(a netip.AddrPort) string {
	return fmt.Sprintf("-d %s -p tcp -m tcp --dport %s", netip.PrefixFrom(a.Addr(), a.Addr().BitLen()), strconv.Itoa(int(a.Port())))
}

// jumpRule is the one rule in OUTPUT that leads into Chain, as printed by
// iptables -S (without the "-A OUTPUT " prefix).
func jumpRule() string {
	return "-p tcp -m comment --comment " + RuleComment + " -j " + Chain
}

// chainRules are the rules Chain must hold in t, in order, as printed by
// iptables -S without the "-A KUBE2RA-CNI " prefix.
//
// nat: one DNAT per redirect address to the node's kube2ra port. Before
// the agent listens there the node refuses the connection: a pod is never
// sent to the node's metadata service, with or without a running agent.
//
// filter: one REJECT per redirect and per refused address, with a TCP reset so SDKs fail at
// once and retry (as when the agent restarts) instead of waiting out a
// drop. Only packets that the DNAT did not rewrite meet it.
func (f family) chainRules(t table) []string {
	var rules []string
	switch t {
	case tableNAT:
		for _, a := range f.redirect {
			rules = append(rules, dstMatch(a)+" -j DNAT --to-destination "+f.target.String())
		}
	case tableFilter:
		for _, a := range f.guarded() {
			rules = append(rules, dstMatch(a)+" -j REJECT --reject-with tcp-reset")
		}
	}
	return rules
}

// tableState is what iptables -S printed for one table, reduced to what
// the plugin owns: whether Chain exists, its rules, and the OUTPUT rules
// that jump into it (each without its "-A CHAIN " prefix).
type tableState struct {
	// chainExists is true when "-N KUBE2RA-CNI" was printed.
	chainExists bool
	// chainRules are Chain's rules in order.
	chainRules []string
	// jumps are the OUTPUT rules whose target is Chain, in order.
	jumps []string
}

// parseSave reads iptables-save output into the state of each table it
// prints; a table it does not print holds nothing of ours.
func parseSave(out string) map[table]tableState {
	states := map[table]tableState{}
	var cur []string
	var name table
	flush := func() {
		if name != "" {
			states[name] = parseTableState(strings.Join(cur, "\n"))
		}
	}
	for _, line := range strings.Split(out, "\n") {
		if t, ok := strings.CutPrefix(strings.TrimSpace(line), "*"); ok {
			flush()
			name, cur = table(t), nil
			continue
		}
		cur = append(cur, line)
	}
	flush()
	return states
}

// parseTableState reads one table as iptables -S or iptables-save prints
// it (a user chain is "-N CHAIN" in the one, ":CHAIN - [0:0]" in the other).
func parseTableState(out string) tableState {
	var s tableState
	chainPrefix := "-A " + Chain + " "
	outputPrefix := "-A " + outputChain + " "
	for _, line := range strings.Split(out, "\n") {
		line = strings.TrimSpace(line)
		switch {
		case line == "-N "+Chain || strings.HasPrefix(line, ":"+Chain+" "):
			s.chainExists = true
		case strings.HasPrefix(line, chainPrefix):
			s.chainRules = append(s.chainRules, strings.TrimPrefix(line, chainPrefix))
		case strings.HasPrefix(line, outputPrefix):
			rule := strings.TrimPrefix(line, outputPrefix)
			if jumpsToChain(rule) {
				s.jumps = append(s.jumps, rule)
			}
		}
	}
	return s
}

// jumpsToChain reports whether a rule's target (-j or -g) is Chain.
func jumpsToChain(rule string) bool {
	f := strings.Fields(rule)
	for i := 0; i+1 < len(f); i++ {
		if (f[i] == "-j" || f[i] == "-g") && f[i+1] == Chain {
			return true
		}
	}
	return false
}

// problem is "" when s is exactly what f needs in t, else the first
// difference in words.
func (f family) problem(t table, s tableState) string {
	want := f.chainRules(t)
	switch {
	case !s.chainExists:
		return fmt.Sprintf("chain %s is missing from the %s table", Chain, t)
	case !slices.Equal(s.chainRules, want):
		return fmt.Sprintf("chain %s in the %s table holds %q, want %q", Chain, t, s.chainRules, want)
	case !slices.Equal(s.jumps, []string{jumpRule()}):
		return fmt.Sprintf("%s in the %s table jumps to %s with %q, want exactly %q", outputChain, t, Chain, s.jumps, jumpRule())
	}
	return ""
}

// restoreScript is the iptables-restore --noflush input that turns s into
// exactly what f needs in t, in one transaction per table. Declaring the
// chain flushes it if it exists, so its rules are replaced atomically; the
// jump is inserted first in OUTPUT if no exact one exists, and every other
// jump into Chain (a duplicate, a stale one) is deleted. "" when nothing
// needs to change.
func (f family) restoreScript(t table, s tableState) string {
	if f.problem(t, s) == "" {
		return ""
	}
	var b strings.Builder
	fmt.Fprintf(&b, "*%s\n:%s - [0:0]\n", t, Chain)
	for _, r := range f.chainRules(t) {
		fmt.Fprintf(&b, "-A %s %s\n", Chain, r)
	}
	keep := slices.Index(s.jumps, jumpRule())
	if keep < 0 {
		fmt.Fprintf(&b, "-I %s 1 %s\n", outputChain, jumpRule())
	}
	for i, j := range s.jumps {
		if i != keep {
			fmt.Fprintf(&b, "-D %s %s\n", outputChain, j)
		}
	}
	b.WriteString("COMMIT\n")
	return b.String()
}
