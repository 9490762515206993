package iptables

import (
	"fmt"
	"slices"
	"strings"
)

// memTable emulates the nat table as iptables -S shows it, enough to test
// the reconciler without root. It stores specs as given, so it trusts that
// the reconciler writes rules in iptables' own print order; the integration
// tests prove that against the real binaries.
type memTable struct {
	// chains maps a chain name to its rule specs in order.
	chains map[string][][]string
	// order lists chain names as iptables -S prints them.
	order []string
	// history records the chains after every change, for make-before-break checks.
	history []map[string][][]string
}

func newMemTable() *memTable {
	return &memTable{
		chains: map[string][][]string{"PREROUTING": nil, "INPUT": nil, "OUTPUT": nil, "POSTROUTING": nil},
		order:  []string{"PREROUTING", "INPUT", "OUTPUT", "POSTROUTING"},
	}
}

func builtin(chain string) bool {
	return chain == "PREROUTING" || chain == "INPUT" || chain == "OUTPUT" || chain == "POSTROUTING"
}

// errNoChain mimics iptables' message for a missing chain or rule.
func errNoChain(chain string) error {
	return fmt.Errorf("iptables: No chain/target/match by that name (chain %s)", chain)
}

func (m *memTable) record() {
	snap := make(map[string][][]string, len(m.chains))
	for c, rules := range m.chains {
		snap[c] = slices.Clone(rules)
	}
	m.history = append(m.history, snap)
}

func (m *memTable) List(table, chain string) ([]string, error) {
	rules, ok := m.chains[chain]
	if !ok || table != "nat" {
		return nil, errNoChain(chain)
	}
	var out []string
	if builtin(chain) {
		out = append(out, "-P "+chain+" ACCEPT")
	} else {
		out = append(out, "-N "+chain)
	}
	for _, r := range rules {
		out = append(out, ruleLine(Chain(chain), r))
	}
	return out, nil
}

func (m *memTable) ChainExists(_, chain string) (bool, error) {
	_, ok := m.chains[chain]
	return ok, nil
}

func (m *memTable) NewChain(_, chain string) error {
	if _, ok := m.chains[chain]; ok {
		return fmt.Errorf("iptables: Chain already exists (%s)", chain)
	}
	m.chains[chain] = nil
	m.order = append(m.order, chain)
	m.record()
	return nil
}

func (m *memTable) checkTarget(spec []string) error {
	for i := 0; i+1 < len(spec); i++ {
		if spec[i] == "-j" && strings.ToUpper(spec[i+1]) == spec[i+1] && spec[i+1] != "DNAT" && spec[i+1] != "ACCEPT" && spec[i+1] != "RETURN" {
			if _, ok := m.chains[spec[i+1]]; !ok {
				return errNoChain(spec[i+1])
			}
		}
	}
	return nil
}

func (m *memTable) Append(_, chain string, spec ...string) error {
	if _, ok := m.chains[chain]; !ok {
		return errNoChain(chain)
	}
	if err := m.checkTarget(spec); err != nil {
		return err
	}
	m.chains[chain] = append(m.chains[chain], slices.Clone(spec))
	m.record()
	return nil
}

func (m *memTable) Insert(_, chain string, pos int, spec ...string) error {
	rules, ok := m.chains[chain]
	if !ok {
		return errNoChain(chain)
	}
	if err := m.checkTarget(spec); err != nil {
		return err
	}
	if pos < 1 || pos > len(rules)+1 {
		return fmt.Errorf("iptables: Index of insertion too big")
	}
	m.chains[chain] = slices.Insert(rules, pos-1, slices.Clone(spec))
	m.record()
	return nil
}

func (m *memTable) Delete(_, chain string, spec ...string) error {
	rules, ok := m.chains[chain]
	if !ok {
		return errNoChain(chain)
	}
	i := slices.IndexFunc(rules, func(r []string) bool { return slices.Equal(r, spec) })
	if i < 0 {
		return fmt.Errorf("iptables: Bad rule (does a matching rule exist in that chain?)")
	}
	m.chains[chain] = slices.Delete(rules, i, i+1)
	m.record()
	return nil
}

func (m *memTable) ClearAndDeleteChain(_, chain string) error {
	if _, ok := m.chains[chain]; !ok {
		return nil
	}
	for c, rules := range m.chains {
		for _, r := range rules {
			if c != chain && jumpsTo(r, Chain(chain)) {
				return fmt.Errorf("iptables: Too many links (chain %s is referenced)", chain)
			}
		}
	}
	delete(m.chains, chain)
	m.order = slices.DeleteFunc(m.order, func(c string) bool { return c == chain })
	m.record()
	return nil
}

// dump prints the table like a normalised iptables-save -t nat.
func (m *memTable) dump() string {
	var b strings.Builder
	for _, c := range m.order {
		if builtin(c) {
			fmt.Fprintf(&b, ":%s ACCEPT\n", c)
		} else {
			fmt.Fprintf(&b, ":%s -\n", c)
		}
	}
	for _, c := range m.order {
		for _, r := range m.chains[c] {
			b.WriteString(ruleLine(Chain(c), r) + "\n")
		}
	}
	return b.String()
}

// exec applies raw rule lines ("-N X", "-A X ...", "-I X ...") to set up a state.
func (m *memTable) exec(lines ...string) error {
	for _, l := range lines {
		switch {
		case strings.HasPrefix(l, "-N "):
			if err := m.NewChain("nat", strings.TrimPrefix(l, "-N ")); err != nil {
				return err
			}
		case strings.HasPrefix(l, "-A "):
			c, spec, err := splitRuleLine(l)
			if err != nil {
				return err
			}
			if err := m.Append("nat", string(c), spec...); err != nil {
				return err
			}
		case strings.HasPrefix(l, "-I "):
			c, spec, err := splitRuleLine("-A " + strings.TrimPrefix(l, "-I "))
			if err != nil {
				return err
			}
			if err := m.Insert("nat", string(c), 1, spec...); err != nil {
				return err
			}
		default:
			return fmt.Errorf("memTable cannot run %q", l)
		}
	}
	m.history = nil
	return nil
}
