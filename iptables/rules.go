// Package iptables redirects pods' instance metadata traffic to kube2ra and
// refuses what escapes the redirect.
//
// It owns two chains per IP family. KUBE2RA in the nat table, reached by
// exactly one jump from PREROUTING for 169.254.169.254:80 (fd00:ec2::254:80
// with IPv6), holds one DNAT rule per --host-interface entry, to
// HOST_IP:port. KUBE2RA-GUARD in the filter table, reached by exactly one
// jump from INPUT and one from FORWARD for the same address and port, holds
// one REJECT rule per entry and one for every forwarded packet whatever its
// interface: a DNATed packet's destination is HOST_IP:port,
// so the guard only ever meets pod traffic that was not redirected (someone
// flushed the nat table) and refuses it instead of letting it reach the
// node's metadata service. A flushed nat table thus fails closed.
//
// With Config.PodIdentity the EKS Pod Identity address (169.254.170.23:80,
// fd00:ec2::23:80) gets the same pair, KUBE2RA-PODIDENTITY and
// KUBE2RA-PODIDENTITY-GUARD, plus KUBE2RA-PODIDENTITY-HOST reached from nat
// OUTPUT, so host-network processes reach kube2ra there too (the proxy
// authenticates those callers by ServiceAccount token, not by IP). The
// metadata address is never redirected in OUTPUT: the node's own processes
// keep reaching the real metadata service.
//
// Every verb is idempotent: EnsureRules converges any state (nothing, a
// half-installed chain, stale rules from another configuration, duplicate
// jumps) to exactly one correct set, and Remove succeeds when nothing exists.
//
// Atomicity: go-iptables runs one iptables command per change and cannot
// drive iptables-restore, so a rewrite is make-before-break instead of one
// transaction: the correct rules are appended behind the stale ones before
// the stale ones are deleted, and a jump is only added once its chain is
// complete. At no moment does a pod's packet for the metadata address find
// an empty chain and fall through to the real metadata service; during a
// rewrite it may still meet a stale rule, which fails closed. The guard is
// installed before the DNAT and removed after it (see ownedChains).
//
// Commands take the xtables lock with --wait and a bounded timeout; the
// DaemonSet must mount the host's /run/xtables.lock so the lock is shared.
package iptables

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
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
	// TableFilter holds the guard.
	TableFilter Table = "filter"
	// ChainPrerouting is the built-in chain the jump to the DNAT lives in.
	ChainPrerouting Chain = "PREROUTING"
	// ChainInput is where the guard meets pod packets for a metadata
	// address that is local to the node.
	ChainInput Chain = "INPUT"
	// ChainForward is where the guard meets pod packets for a metadata
	// address routed out of the node, as on EC2.
	ChainForward Chain = "FORWARD"
	// ChainKube2ra is kube2ra's DNAT chain in the nat table.
	ChainKube2ra Chain = "KUBE2RA"
	// ChainGuard is kube2ra's chain in the filter table that refuses pod
	// traffic for the metadata address that was not DNATed.
	ChainGuard Chain = "KUBE2RA-GUARD"
	// ChainOutput is the built-in nat chain the node's own processes'
	// packets pass; only the Pod Identity address is redirected there.
	ChainOutput Chain = "OUTPUT"
	// ChainPodIdentity is kube2ra's DNAT chain for pods' EKS Pod Identity
	// traffic (Config.PodIdentity).
	ChainPodIdentity Chain = "KUBE2RA-PODIDENTITY"
	// ChainPodIdentityHost is kube2ra's DNAT chain for the node's own
	// (host-network) Pod Identity traffic, reached from nat OUTPUT.
	ChainPodIdentityHost Chain = "KUBE2RA-PODIDENTITY-HOST"
	// ChainPodIdentityGuard refuses pod traffic for the Pod Identity
	// address that was not DNATed.
	ChainPodIdentityGuard Chain = "KUBE2RA-PODIDENTITY-GUARD"
)

// RuleComment marks the jumps so an operator reading iptables-save knows
// whose they are.
const RuleComment = "kube2ra"

// MetadataPort is the port the metadata service answers on.
const MetadataPort = 80

var (
	// MetadataIPv4 is the instance metadata address pods call.
	MetadataIPv4 = netip.MustParseAddr("169.254.169.254")
	// MetadataIPv6 is the IPv6 instance metadata address on Nitro instances.
	MetadataIPv6 = netip.MustParseAddr("fd00:ec2::254")
	// PodIdentityIPv4 is the EKS Pod Identity Agent's address, which the
	// SDKs call through AWS_CONTAINER_CREDENTIALS_FULL_URI.
	PodIdentityIPv4 = netip.MustParseAddr("169.254.170.23")
	// PodIdentityIPv6 is the EKS Pod Identity Agent's IPv6 address.
	PodIdentityIPv6 = netip.MustParseAddr("fd00:ec2::23")
)

// PodIdentityPort is the port the EKS Pod Identity address answers on.
const PodIdentityPort = 80

// Rules is what the agent needs of the node's DNAT and guard.
type Rules interface {
	// EnsureRules converges the node to exactly one correct set of rules
	// (guard and DNAT) and reports whether it had to change anything.
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
	// podIdentity is the family's EKS Pod Identity address when that
	// redirect is on; invalid when it is off.
	podIdentity netip.Addr
	// guardOnly installs the guard without the DNAT: pods of this family
	// are refused the metadata address rather than redirected (IPv6 on a
	// node where --ipv6 is off).
	guardOnly bool
}

// podIdentityAddr is the family's EKS Pod Identity address, on or off.
func (f family) podIdentityAddr() netip.Addr {
	if f.metadata.Is4() {
		return PodIdentityIPv4
	}
	return PodIdentityIPv6
}

// withEveryChain is the family with every optional chain on, for removal,
// which must take away what any configuration installed.
func (f family) withEveryChain() family {
	f.podIdentity = f.podIdentityAddr()
	f.guardOnly = false
	return f
}

// hostPrefix is a -d argument for one address as iptables prints it back.
func hostPrefix(dst netip.Addr) string {
	return netip.PrefixFrom(dst, dst.BitLen()).String()
}

// jumpSpec is the rule that leads into chain from a built-in chain for
// the metadata address.
func (f family) jumpSpec(chain Chain) []string { return jumpFor(f.metadata, chain) }

// jumpFor is the rule that leads packets for dst:80 into chain from a
// built-in chain, in the order iptables -S prints it, so a listed rule
// compares equal to it as text. (The metadata and the Pod Identity ports
// are both 80.)
func jumpFor(dst netip.Addr, chain Chain) []string {
	return append(dstMatch(dst), "-m", "comment", "--comment", RuleComment, "-j", string(chain))
}

// dstMatch matches TCP packets for dst:80 from any interface.
func dstMatch(dst netip.Addr) []string {
	return []string{"-d", hostPrefix(dst), "-p", "tcp", "-m", "tcp", "--dport", strconv.Itoa(MetadataPort)}
}

// podMatchesFor are the matches of pod traffic for dst, one per interface
// entry, in the order of the entries and in iptables -S order. The DNAT
// and the guard share them, so the guard refuses exactly the traffic the
// DNAT should have redirected.
func podMatchesFor(dst netip.Addr, ifaces []InterfaceSpec) [][]string {
	specs := make([][]string, 0, len(ifaces))
	for _, in := range ifaces {
		spec := []string{"-d", hostPrefix(dst)}
		if in.Negated {
			spec = append(spec, "!")
		}
		spec = append(spec, "-i", in.Name, "-p", "tcp", "-m", "tcp", "--dport", strconv.Itoa(MetadataPort))
		specs = append(specs, spec)
	}
	return specs
}

// withTarget appends the same target to every match.
func withTarget(matches [][]string, target ...string) [][]string {
	specs := make([][]string, len(matches))
	for i, m := range matches {
		specs[i] = append(slices.Clip(m), target...)
	}
	return specs
}

// dnatSpecs are the KUBE2RA rules, one per interface entry.
func (f family) dnatSpecs(ifaces []InterfaceSpec) [][]string {
	return f.dnatSpecsFor(f.metadata, ifaces)
}

// dnatSpecsFor are the DNAT rules of pod traffic for dst, one per entry.
func (f family) dnatSpecsFor(dst netip.Addr, ifaces []InterfaceSpec) [][]string {
	return withTarget(podMatchesFor(dst, ifaces), f.dnatTarget()...)
}

// dnatTarget sends a packet to kube2ra's proxy port.
func (f family) dnatTarget() []string {
	return []string{"-j", "DNAT", "--to-destination", f.target.String()}
}

// hostDNATSpecs is the KUBE2RA-PODIDENTITY-HOST rule: the node's own
// processes (host-network pods among them) reach the Pod Identity address
// through kube2ra too. It has no interface match, as nat OUTPUT has no
// input interface; the metadata address is never redirected there, so
// the node keeps reaching its real metadata service.
func (f family) hostDNATSpecs() [][]string {
	return [][]string{append(dstMatch(f.podIdentity), f.dnatTarget()...)}
}

// loopbackReturn lets the node's own traffic through the guard: packets a
// node process sends to a metadata address that is local to the node come
// in on lo, never from a pod, and a negated entry (!eth0) would match them.
var loopbackReturn = []string{"-i", "lo", "-j", "RETURN"}

// guardSpecs are the KUBE2RA-GUARD rules: loopbackReturn, then one REJECT
// per interface entry, then forwardedReject.
//
// REJECT with a TCP reset rather than DROP: the SDKs' credential chains try
// IMDS with short timeouts and then retry or move on; a reset makes a pod's
// request fail at once (connection refused, as when the agent restarts),
// while a drop would hold every pod's SDK for its whole connect timeout and
// look like a network fault. Telling a pod that nothing listens reveals
// nothing it could not learn otherwise.
func (f family) guardSpecs(ifaces []InterfaceSpec) [][]string {
	return guardSpecsFor(f.metadata, ifaces)
}

// rejectTarget refuses with a TCP reset (see guardSpecs).
var rejectTarget = []string{"-j", "REJECT", "--reject-with", "tcp-reset"}

// guardSpecsFor are the guard rules for any destination address.
//
// The per-interface rules decide on INPUT, where the metadata address is
// local to the node and the node's own requests (lo, the node NIC) must
// pass. The last rule decides on FORWARD whatever the interface: a packet
// for the metadata address that the node forwards is never the node's own
// (those leave through OUTPUT), and one that was not DNATed is exactly
// what must not reach the real metadata service. So a --host-interface
// that names no pod interface (cni0 on a Calico node) still fails closed
// on EC2, where 169.254.169.254 is routed out of the node. Its destination
// is never LOCAL on FORWARD and always LOCAL on INPUT, so it leaves the
// INPUT exemptions as they are.
func guardSpecsFor(dst netip.Addr, ifaces []InterfaceSpec) [][]string {
	specs := append([][]string{loopbackReturn}, withTarget(podMatchesFor(dst, ifaces), rejectTarget...)...)
	forwarded := append(dstMatch(dst), "-m", "addrtype", "!", "--dst-type", "LOCAL")
	return append(specs, append(forwarded, rejectTarget...))
}

// ownedChain is one of kube2ra's chains, the rules it must hold, and the
// built-in chains that jump into it.
type ownedChain struct {
	// table holds the chain.
	table Table
	// chain is kube2ra's chain.
	chain Chain
	// from are the built-in chains that each hold exactly one jump into chain.
	from []Chain
	// jump is the spec of that jump.
	jump []string
	// rules are the chain's rules in order (removal ignores them).
	rules [][]string
	// what names the rules in logs.
	what string
}

// ownedChains are the family's chains in installation order: the guard
// first, then the DNAT. Remove goes in reverse order, DNAT first, so every
// state on the way, including one an interrupted command leaves, still
// has a whole guard while any DNAT remains: a pod's packet is then DNATed
// or refused, even if the nat table is flushed at that moment. Removing
// the guard first would leave a DNAT-only state that a nat flush, or a
// Remove that fails half way, turns into the leak the guard exists to stop.
// Removal needs no interfaces: it deletes whatever the chains hold.
//
// With Pod Identity on, its chains follow in the same order (guard, pod
// DNAT, then the node's own DNAT in nat OUTPUT), each address with its own
// chains so every chain keeps exactly one jump from each built-in chain.
func (f family) ownedChains(ifaces []InterfaceSpec) []ownedChain {
	chains := []ownedChain{
		{table: TableFilter, chain: ChainGuard, from: []Chain{ChainInput, ChainForward},
			jump: f.jumpSpec(ChainGuard), rules: f.guardSpecs(ifaces), what: "guard"},
	}
	if f.guardOnly {
		return chains
	}
	chains = append(chains, ownedChain{table: TableNAT, chain: ChainKube2ra, from: []Chain{ChainPrerouting},
		jump: f.jumpSpec(ChainKube2ra), rules: f.dnatSpecs(ifaces), what: "DNAT"})
	if pi := f.podIdentity; pi.IsValid() {
		chains = append(chains,
			ownedChain{table: TableFilter, chain: ChainPodIdentityGuard, from: []Chain{ChainInput, ChainForward},
				jump: jumpFor(pi, ChainPodIdentityGuard), rules: guardSpecsFor(pi, ifaces), what: "Pod Identity guard"},
			ownedChain{table: TableNAT, chain: ChainPodIdentity, from: []Chain{ChainPrerouting},
				jump: jumpFor(pi, ChainPodIdentity), rules: f.dnatSpecsFor(pi, ifaces), what: "Pod Identity DNAT"},
			ownedChain{table: TableNAT, chain: ChainPodIdentityHost, from: []Chain{ChainOutput},
				jump: jumpFor(pi, ChainPodIdentityHost), rules: f.hostDNATSpecs(), what: "node Pod Identity DNAT"},
		)
	}
	return chains
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
