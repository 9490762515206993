// Package iptables redirects pods' instance metadata traffic to kube2ra.
//
// It owns one chain, KUBE2RA, in the nat table, reached by exactly one jump
// from PREROUTING for 169.254.169.254:80 (and fd00:ec2::254:80 with IPv6).
// The chain holds one DNAT rule per --host-interface entry, to HOST_IP:port.
// Every verb is idempotent: EnsureRules converges any state (nothing, a
// half-installed chain, stale rules from another configuration, duplicate
// jumps) to exactly one correct set, and Remove succeeds when nothing exists.
//
// Atomicity: go-iptables runs one iptables command per change and cannot
// drive iptables-restore, so a rewrite is make-before-break instead of one
// transaction: the correct rules are appended behind the stale ones before
// the stale ones are deleted, and the jump is only added once the chain is
// complete. At no moment does a pod's packet for the metadata address find
// an empty KUBE2RA chain and fall through to the real metadata service;
// during a rewrite it may still meet a stale DNAT, which fails closed.
//
// Commands take the xtables lock with --wait and a bounded timeout; the
// DaemonSet must mount the host's /run/xtables.lock so the lock is shared.
package iptables

import (
	"context"
	"fmt"
	"net/netip"
	"strconv"
	"strings"

	goipt "github.com/coreos/go-iptables/iptables"
)

// Table is an iptables table name.
type Table string

// Chain is an iptables chain name.
type Chain string

const (
	// TableNAT holds the DNAT.
	TableNAT Table = "nat"
	// ChainPrerouting is the built-in chain the jump lives in.
	ChainPrerouting Chain = "PREROUTING"
	// ChainKube2ra is kube2ra's own chain.
	ChainKube2ra Chain = "KUBE2RA"
)

// RuleComment marks the jump so an operator reading iptables-save knows
// whose it is.
const RuleComment = "kube2ra"

// MetadataPort is the port the metadata service answers on.
const MetadataPort = 80

var (
	// MetadataIPv4 is the instance metadata address pods call.
	MetadataIPv4 = netip.MustParseAddr("169.254.169.254")
	// MetadataIPv6 is the IPv6 instance metadata address on Nitro instances.
	MetadataIPv6 = netip.MustParseAddr("fd00:ec2::254")
)

// Rules is what the agent needs of the node's DNAT.
type Rules interface {
	// EnsureRules converges the node to exactly one correct set of rules
	// and reports whether it had to change anything.
	EnsureRules(ctx context.Context) (changed bool, err error)
	// RulesPresent reports whether exactly the correct set is installed.
	RulesPresent(ctx context.Context) (bool, error)
	// Remove deletes every kube2ra jump and chain; it succeeds when none exist.
	Remove(ctx context.Context) error
}

// family is one IP family's view of the rules.
type family struct {
	// name labels logs and errors ("IPv4", "IPv6").
	name string
	// proto selects iptables or ip6tables.
	proto goipt.Protocol
	// metadata is the address pods call.
	metadata netip.Addr
	// target is where the DNAT sends the traffic; invalid when only
	// removing.
	target netip.AddrPort
}

// metadataPrefix is the -d argument as iptables prints it back.
func (f family) metadataPrefix() string {
	return netip.PrefixFrom(f.metadata, f.metadata.BitLen()).String()
}

// jumpSpec is the PREROUTING rule, in the order iptables -S prints it, so a
// listed rule compares equal to it as text.
func (f family) jumpSpec() []string {
	return []string{
		"-d", f.metadataPrefix(),
		"-p", "tcp", "-m", "tcp", "--dport", strconv.Itoa(MetadataPort),
		"-m", "comment", "--comment", RuleComment,
		"-j", string(ChainKube2ra),
	}
}

// dnatSpecs are the KUBE2RA rules, one per interface entry, in the order of
// the entries and in iptables -S order.
func (f family) dnatSpecs(ifaces []InterfaceSpec) [][]string {
	specs := make([][]string, 0, len(ifaces))
	for _, in := range ifaces {
		spec := []string{"-d", f.metadataPrefix()}
		if in.Negated {
			spec = append(spec, "!")
		}
		spec = append(spec, "-i", in.Name,
			"-p", "tcp", "-m", "tcp", "--dport", strconv.Itoa(MetadataPort),
			"-j", "DNAT", "--to-destination", f.target.String())
		specs = append(specs, spec)
	}
	return specs
}

// ruleLine renders a rule the way iptables -S and iptables-save print it.
func ruleLine(chain Chain, spec []string) string {
	quoted := make([]string, len(spec))
	for i, a := range spec {
		quoted[i] = quoteArg(a)
	}
	return "-A " + string(chain) + " " + strings.Join(quoted, " ")
}

// quoteArg quotes as iptables does for comments: words with spaces or
// quotes are wrapped in double quotes with '"' and '\' escaped.
func quoteArg(a string) string {
	if a != "" && !strings.ContainsAny(a, " \t\"\\'") {
		return a
	}
	r := strings.NewReplacer(`\`, `\\`, `"`, `\"`)
	return `"` + r.Replace(a) + `"`
}

// splitRuleLine parses one line of iptables -S output into its chain and
// rule spec, undoing quoteArg, so the rule can be deleted by spec.
func splitRuleLine(line string) (Chain, []string, error) {
	var args []string
	var cur strings.Builder
	inQuote, escaped, have := false, false, false
	for _, r := range line {
		switch {
		case escaped:
			cur.WriteRune(r)
			escaped = false
		case inQuote && r == '\\':
			escaped = true
		case r == '"':
			inQuote = !inQuote
			have = true
		case !inQuote && (r == ' ' || r == '\t'):
			if have {
				args = append(args, cur.String())
				cur.Reset()
				have = false
			}
		default:
			cur.WriteRune(r)
			have = true
		}
	}
	if inQuote || escaped {
		return "", nil, fmt.Errorf("iptables rule %q has an unterminated quote", line)
	}
	if have {
		args = append(args, cur.String())
	}
	if len(args) < 2 || args[0] != "-A" {
		return "", nil, fmt.Errorf("iptables rule %q does not start with -A CHAIN", line)
	}
	return Chain(args[1]), stripCounters(args[2:]), nil
}

// stripCounters drops "-c PKTS BYTES", which go-iptables appends to listed
// rules when the nft backend prints counters.
func stripCounters(spec []string) []string {
	for i := 0; i+2 < len(spec); i++ {
		if spec[i] == "-c" {
			if _, err := strconv.ParseUint(spec[i+1], 10, 64); err == nil {
				if _, err := strconv.ParseUint(spec[i+2], 10, 64); err == nil {
					return append(append([]string{}, spec[:i]...), spec[i+3:]...)
				}
			}
		}
	}
	return spec
}

// jumpsTo reports whether a rule spec's target is chain.
func jumpsTo(spec []string, chain Chain) bool {
	for i := 0; i+1 < len(spec); i++ {
		if (spec[i] == "-j" || spec[i] == "-g") && spec[i+1] == string(chain) {
			return true
		}
	}
	return false
}
