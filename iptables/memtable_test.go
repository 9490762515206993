package iptables

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
)

// memTable emulates the nat and filter tables as iptables -S shows them,
// enough to test the reconciler without root. It stores specs as given, so
// it trusts that the reconciler writes rules in iptables' own print order;
// the integration tests prove that against the real binaries.
type memTable struct {
	// tables maps a table name to its chains.
	tables map[string]*memChains
	// history records every table after every change, for
	// make-before-break checks.
	history []memSnapshot
}

// memChains is one table.
type memChains struct {
	// chains maps a chain name to its rule specs in order.
	chains map[string][][]string
	// order lists chain names as iptables -S prints them.
	order []string
}

// memSnapshot is every table's chains at one moment.
type memSnapshot map[string]map[string][][]string

// builtinChains are each table's built-in chains in print order.
var builtinChains = map[string][]string{
	"nat":    {"PREROUTING", "INPUT", "OUTPUT", "POSTROUTING"},
	"filter": {"INPUT", "FORWARD", "OUTPUT"},
}

func newMemTable() *memTable {
	m := &memTable{tables: map[string]*memChains{}}
	for table, builtins := range builtinChains {
		c := &memChains{chains: map[string][][]string{}, order: slices.Clone(builtins)}
		for _, b := range builtins {
			c.chains[b] = nil
		}
		m.tables[table] = c
	}
	return m
}

func builtin(table, chain string) bool {
	return slices.Contains(builtinChains[table], chain)
}

// errNoChain mimics iptables' message for a missing chain or rule.
func errNoChain(chain string) error {
	return fmt.Errorf("iptables: No chain/target/match by that name (chain %s)", chain)
}

func (m *memTable) record() { m.history = append(m.history, m.snapshot()) }

// snapshot copies every table's chains.
func (m *memTable) snapshot() memSnapshot {
	snap := memSnapshot{}
	for table, c := range m.tables {
		snap[table] = make(map[string][][]string, len(c.chains))
		for name, rules := range c.chains {
			snap[table][name] = slices.Clone(rules)
		}
	}
	return snap
}

// table returns a table's chains, or nil for a table iptables would not know.
func (m *memTable) table(table string) *memChains { return m.tables[table] }

func (m *memTable) List(table, chain string) ([]string, error) {
	c := m.table(table)
	if c == nil {
		return nil, errNoChain(chain)
	}
	rules, ok := c.chains[chain]
	if !ok {
		return nil, errNoChain(chain)
	}
	var out []string
	if builtin(table, chain) {
		out = append(out, "-P "+chain+" ACCEPT")
	} else {
		out = append(out, "-N "+chain)
	}
	for _, r := range rules {
		out = append(out, ruleLine(Chain(chain), r))
	}
	return out, nil
}

func (m *memTable) ChainExists(table, chain string) (bool, error) {
	c := m.table(table)
	if c == nil {
		return false, errNoChain(chain)
	}
	_, ok := c.chains[chain]
	return ok, nil
}

func (m *memTable) NewChain(table, chain string) error {
	c := m.table(table)
	if c == nil {
		return errNoChain(chain)
	}
	if _, ok := c.chains[chain]; ok {
		return fmt.Errorf("iptables: Chain already exists (%s)", chain)
	}
	c.chains[chain] = nil
	c.order = append(c.order, chain)
	m.record()
	return nil
}

// standardTargets are the targets that are not chains.
var standardTargets = []string{"DNAT", "ACCEPT", "RETURN", "REJECT", "DROP"}

func (c *memChains) checkTarget(spec []string) error {
	for i := 0; i+1 < len(spec); i++ {
		if spec[i] == "-j" && strings.ToUpper(spec[i+1]) == spec[i+1] && !slices.Contains(standardTargets, spec[i+1]) {
			if _, ok := c.chains[spec[i+1]]; !ok {
				return errNoChain(spec[i+1])
			}
		}
	}
	return nil
}

// rules returns a table's chain and whether it exists.
func (m *memTable) rules(table, chain string) (*memChains, [][]string, error) {
	c := m.table(table)
	if c == nil {
		return nil, nil, errNoChain(chain)
	}
	rules, ok := c.chains[chain]
	if !ok {
		return nil, nil, errNoChain(chain)
	}
	return c, rules, nil
}

func (m *memTable) Append(table, chain string, spec ...string) error {
	return m.Insert(table, chain, -1, spec...)
}

// Insert inserts at pos (1-based); -1 appends.
func (m *memTable) Insert(table, chain string, pos int, spec ...string) error {
	c, rules, err := m.rules(table, chain)
	if err != nil {
		return err
	}
	if err := c.checkTarget(spec); err != nil {
		return err
	}
	if pos == -1 {
		pos = len(rules) + 1
	}
	if pos < 1 || pos > len(rules)+1 {
		return fmt.Errorf("iptables: Index of insertion too big")
	}
	c.chains[chain] = slices.Insert(rules, pos-1, slices.Clone(spec))
	m.record()
	return nil
}

func (m *memTable) Delete(table, chain string, spec ...string) error {
	c, rules, err := m.rules(table, chain)
	if err != nil {
		return err
	}
	i := slices.IndexFunc(rules, func(r []string) bool { return slices.Equal(r, spec) })
	if i < 0 {
		return fmt.Errorf("iptables: Bad rule (does a matching rule exist in that chain?)")
	}
	c.chains[chain] = slices.Delete(rules, i, i+1)
	m.record()
	return nil
}

func (m *memTable) ClearAndDeleteChain(table, chain string) error {
	c := m.table(table)
	if c == nil {
		return errNoChain(chain)
	}
	if _, ok := c.chains[chain]; !ok {
		return nil
	}
	for name, rules := range c.chains {
		for _, r := range rules {
			if name != chain && jumpsTo(r, Chain(chain)) {
				return fmt.Errorf("iptables: Too many links (chain %s is referenced)", chain)
			}
		}
	}
	delete(c.chains, chain)
	c.order = slices.DeleteFunc(c.order, func(n string) bool { return n == chain })
	m.record()
	return nil
}

// flush empties every chain of a table, as iptables -t TABLE -F does.
func (m *memTable) flush(table string) {
	c := m.table(table)
	for name := range c.chains {
		c.chains[name] = nil
	}
	m.record()
}

// dump prints a table like a normalised iptables-save -t TABLE.
func (m *memTable) dump(table string) string {
	c := m.table(table)
	var b strings.Builder
	for _, name := range c.order {
		if builtin(table, name) {
			fmt.Fprintf(&b, ":%s ACCEPT\n", name)
		} else {
			fmt.Fprintf(&b, ":%s -\n", name)
		}
	}
	for _, name := range c.order {
		for _, r := range c.chains[name] {
			b.WriteString(ruleLine(Chain(name), r) + "\n")
		}
	}
	return b.String()
}

// exec applies raw rule lines ("-N X", "-A X ...", "-I X ...") to set up a
// state, in the nat table until a "*filter" (or "*nat") line switches, as
// in iptables-restore input.
func (m *memTable) exec(lines ...string) error {
	table := "nat"
	for _, l := range lines {
		switch {
		case strings.HasPrefix(l, "*"):
			table = strings.TrimPrefix(l, "*")
		case strings.HasPrefix(l, "-N "):
			if err := m.NewChain(table, strings.TrimPrefix(l, "-N ")); err != nil {
				return err
			}
		case strings.HasPrefix(l, "-A "):
			c, spec, err := splitRuleLine(l)
			if err != nil {
				return err
			}
			if err := m.Append(table, string(c), spec...); err != nil {
				return err
			}
		case strings.HasPrefix(l, "-I "):
			c, spec, err := splitRuleLine("-A " + strings.TrimPrefix(l, "-I "))
			if err != nil {
				return err
			}
			if err := m.Insert(table, string(c), 1, spec...); err != nil {
				return err
			}
		default:
			return fmt.Errorf("memTable cannot run %q", l)
		}
	}
	m.history = nil
	return nil
}

// fate is what the tables do with the first packet of a pod's new TCP
// connection to the metadata address, port 80.
type fate string

const (
	fateDNAT     fate = "DNATed to kube2ra"
	fateRejected fate = "refused"
	fateLeaked   fate = "reaches the metadata service"
)

// podPacketFate follows such a packet arriving on iface through nat
// PREROUTING and then the filter table's hook: INPUT when the metadata
// address is local to the node, FORWARD when it is routed on (EC2).
func (s memSnapshot) podPacketFate(meta netip.Addr, iface, hook string) fate {
	if s.verdict("nat", "PREROUTING", meta, iface) == "DNAT" {
		return fateDNAT // its destination is HOST_IP:port from here on
	}
	switch s.verdict("filter", hook, meta, iface) {
	case "REJECT", "DROP":
		return fateRejected
	}
	return fateLeaked // the built-in chains' policy is ACCEPT
}

// verdict walks chain and returns the first terminating target the packet
// meets, or "" when it falls through (or RETURNs) from chain.
func (s memSnapshot) verdict(table, chain string, meta netip.Addr, iface string) string {
	return s.walk(table, chain, chain, meta, iface)
}

// walk is verdict inside chain for a packet on the built-in chain hook.
func (s memSnapshot) walk(table, hook, chain string, meta netip.Addr, iface string) string {
	for _, spec := range s[table][chain] {
		if !specMatches(spec, meta, iface, hook) {
			continue
		}
		switch target := targetOf(spec); target {
		case "RETURN":
			return ""
		case "DNAT", "ACCEPT", "REJECT", "DROP":
			return target
		case "":
		default:
			if v := s.walk(table, hook, target, meta, iface); v != "" {
				return v
			}
		}
	}
	return ""
}

// specMatches evaluates the matches the tests' rules use against a TCP
// packet for meta:80 arriving on iface, seen on the built-in chain hook
// (its destination is local on INPUT and OUTPUT, routed on FORWARD).
func specMatches(spec []string, meta netip.Addr, iface, hook string) bool {
	negate := false
	for i := 0; i < len(spec); i++ {
		var ok bool
		switch spec[i] {
		case "!":
			negate = true
			continue
		case "-j", "-g":
			return true
		case "-m", "--comment":
			i++
			continue
		case "-d":
			i++
			ok = netip.MustParsePrefix(spec[i]).Contains(meta)
		case "-i":
			i++
			name := spec[i]
			if prefix, wild := strings.CutSuffix(name, "+"); wild {
				ok = strings.HasPrefix(iface, prefix)
			} else {
				ok = iface == name
			}
		case "-p":
			i++
			ok = spec[i] == "tcp"
		case "--dport":
			i++
			ok = spec[i] == "80"
		case "--dst-type":
			i++
			local := hook == "INPUT" || hook == "OUTPUT"
			ok = spec[i] == "LOCAL" && local
		default:
			panic(fmt.Sprintf("memTable cannot evaluate %q in %q", spec[i], spec))
		}
		if ok == negate {
			return false
		}
		negate = false
	}
	return true
}

// targetOf is a rule's -j or -g target.
func targetOf(spec []string) string {
	for i := 0; i+1 < len(spec); i++ {
		if spec[i] == "-j" || spec[i] == "-g" {
			return spec[i+1]
		}
	}
	return ""
}

// fatesOf lists the fate of a packet from each interface on each hook.
func (s memSnapshot) fatesOf(meta netip.Addr, ifaces []string) map[string]fate {
	out := map[string]fate{}
	for _, in := range ifaces {
		for _, hook := range []string{"INPUT", "FORWARD"} {
			out[in+" "+hook] = s.podPacketFate(meta, in, hook)
		}
	}
	return out
}
