package iptables

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net/netip"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"time"

	goipt "github.com/coreos/go-iptables/iptables"
	"github.com/sirupsen/logrus"
	"k8s.io/utils/clock"
)

// ruleTable is the part of go-iptables the reconciler uses. *goipt.IPTables
// satisfies it; unit tests use an in-memory table.
type ruleTable interface {
	List(table, chain string) ([]string, error)
	ChainExists(table, chain string) (bool, error)
	NewChain(table, chain string) error
	Append(table, chain string, rulespec ...string) error
	Insert(table, chain string, pos int, rulespec ...string) error
	Delete(table, chain string, rulespec ...string) error
	ClearAndDeleteChain(table, chain string) error
}

var _ ruleTable = (*goipt.IPTables)(nil)

// familyTable is one IP family and the iptables binary that manages it.
type familyTable struct {
	// family says which addresses and rules belong to it.
	family family
	// table runs the commands (iptables-nft, ip6tables-legacy, ...).
	table ruleTable
	// binary names the command for errors and logs.
	binary string
}

// Redirect is the real Rules: the KUBE2RA chain (nat) and the KUBE2RA-GUARD
// chain (filter) on this host, through the iptables binary of the chosen
// backend, for IPv4 and optionally IPv6.
type Redirect struct {
	// backend is the iptables variant in use (nft or legacy, never auto).
	backend Mode
	// families holds IPv4 and, with IPv6 on, IPv6.
	families []familyTable
	// interfaces are the --host-interface entries, in order.
	interfaces []InterfaceSpec
	// log receives decisions and restores.
	log logrus.FieldLogger
	// clock drives Monitor.
	clock clock.WithTicker
	// metrics counts restores and reports whether the rules are present.
	metrics *metrics
	// mu serialises reconciliation: Monitor and Remove may race at shutdown.
	mu sync.Mutex
}

var _ Rules = (*Redirect)(nil)

// ChooseBackend is mode unless it is auto (or empty), else the backend the
// host uses, and logs which and why. The agent's rules and the CNI
// plugin's in-pod rules (its conflist entry) use the same choice.
func ChooseBackend(ctx context.Context, mode Mode, log logrus.FieldLogger) Mode {
	backend, _ := ParseMode(string(mode))
	if backend == ModeAuto {
		d := detectBackend(ctx, execSave, log)
		log.WithFields(logrus.Fields{
			"backend": d.mode, "reason": d.reason,
			"nftRules": d.nftRules, "legacyRules": d.legacyRules,
		}).Info("iptables backend chosen by detection")
		return d.mode
	}
	log.WithField("backend", backend).Info("iptables backend chosen by --iptables-mode")
	return backend
}

// New validates cfg, chooses the backend (detecting it in ModeAuto) and
// prepares the iptables commands. It changes nothing on the host.
func New(ctx context.Context, cfg Config) (*Redirect, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("invalid iptables configuration: %w", err)
	}
	log := cfg.Logger
	if log == nil {
		log = logrus.New()
	}
	log = log.WithField("component", "iptables")
	backend := ChooseBackend(ctx, cfg.Mode, log)
	lockWait := cfg.LockTimeout
	if lockWait == 0 {
		lockWait = DefaultLockTimeout
	}
	fams := []family{{
		name: "IPv4", proto: goipt.ProtocolIPv4, metadata: MetadataIPv4,
		target: netip.AddrPortFrom(cfg.HostIP.Unmap(), uint16(cfg.Port)),
	}}
	switch {
	case cfg.IPv6:
		fams = append(fams, family{
			name: "IPv6", proto: goipt.ProtocolIPv6, metadata: MetadataIPv6,
			target: netip.AddrPortFrom(cfg.HostIPv6, uint16(cfg.Port)),
		})
	case cfg.IPv6Guard:
		fams = append(fams, family{name: "IPv6", proto: goipt.ProtocolIPv6, metadata: MetadataIPv6, guardOnly: true})
	}
	if cfg.PodIdentity {
		for i := range fams {
			if fams[i].guardOnly {
				continue
			}
			fams[i].podIdentity = fams[i].podIdentityAddr()
		}
	}
	r := &Redirect{
		backend:    backend,
		interfaces: slices.Clone(cfg.Interfaces),
		log:        log.WithField("backend", backend),
		clock:      cfg.Clock,
	}
	if r.clock == nil {
		r.clock = clock.RealClock{}
	}
	for _, f := range fams {
		bin := binaryName(backend, f.proto)
		t, err := newGoIPTables(bin, f.proto, lockWait)
		if err != nil {
			return nil, err
		}
		r.families = append(r.families, familyTable{family: f, table: t, binary: bin})
	}
	m, err := newMetrics(cfg.Registerer)
	if err != nil {
		return nil, err
	}
	r.metrics = m
	return r, nil
}

// Backend is the iptables variant in use: ModeNFT or ModeLegacy.
func (r *Redirect) Backend() Mode { return r.backend }

// binaryName is the iptables command of one backend and family.
func binaryName(backend Mode, proto goipt.Protocol) string {
	name := "iptables"
	if proto == goipt.ProtocolIPv6 {
		name = "ip6tables"
	}
	return name + "-" + string(backend)
}

// newGoIPTables opens one iptables binary with a bounded wait for the
// xtables lock: go-iptables then passes "--wait SECONDS" to every command.
func newGoIPTables(binary string, proto goipt.Protocol, lockWait time.Duration) (*goipt.IPTables, error) {
	if _, err := exec.LookPath(binary); err != nil {
		return nil, fmt.Errorf("iptables command %s is not available: install the iptables package (apt-get install iptables) or pick the other backend with --iptables-mode: %w", binary, err)
	}
	secs := int(math.Ceil(lockWait.Seconds()))
	if secs < 1 {
		secs = 1
	}
	t, err := goipt.New(goipt.IPFamily(proto), goipt.Path(binary), goipt.Timeout(secs))
	if err != nil {
		return nil, fmt.Errorf("preparing iptables command %s: %w", binary, err)
	}
	return t, nil
}

// EnsureRules converges every family to exactly one correct set of rules.
func (r *Redirect) EnsureRules(ctx context.Context) (bool, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	changed := false
	for _, ft := range r.families {
		c, err := r.ensureFamily(ctx, ft)
		changed = changed || c
		if err != nil {
			return changed, err
		}
	}
	r.metrics.present.Set(1)
	return changed, nil
}

// RulesPresent reports whether every family has exactly the correct rules.
func (r *Redirect) RulesPresent(ctx context.Context) (bool, error) {
	problem, err := r.RulesProblem(ctx)
	if err != nil {
		return false, err
	}
	if problem != "" {
		r.log.Debugf("rules not as expected: %s", problem)
		return false, nil
	}
	return true, nil
}

// RulesProblem is RulesPresent's check in words: "" when every family has
// exactly the correct rules, else the family and its first difference
// (`kube2ra explain --node` prints it).
func (r *Redirect) RulesProblem(ctx context.Context) (string, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, ft := range r.families {
		problem, err := r.checkFamily(ctx, ft)
		if err != nil {
			return "", err
		}
		if problem != "" {
			return ft.family.name + " (" + ft.binary + "): " + problem, nil
		}
	}
	return "", nil
}

// Remove deletes every jump to KUBE2RA and KUBE2RA-GUARD and the chains, in
// every family, the DNAT before the guard; it succeeds when none exist.
func (r *Redirect) Remove(ctx context.Context) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	var errs []error
	for _, ft := range r.families {
		if err := removeFamily(ctx, ft, r.log); err != nil {
			errs = append(errs, err)
		}
	}
	r.metrics.present.Set(0)
	return errors.Join(errs...)
}

func (r *Redirect) ensureFamily(ctx context.Context, ft familyTable) (bool, error) {
	changed := false
	wanted := ft.family.ownedChains(r.interfaces)
	for _, oc := range wanted {
		c, err := r.ensureChain(ctx, ft, oc)
		changed = changed || c
		if err != nil {
			return changed, err
		}
	}
	// Chains of a feature turned off since an earlier run (Pod Identity)
	// would keep redirecting to a proxy that no longer serves them.
	every := ft.family.withEveryChain().ownedChains(nil)
	for i := len(every) - 1; i >= 0; i-- {
		if slices.ContainsFunc(wanted, func(oc ownedChain) bool { return oc.chain == every[i].chain }) {
			continue
		}
		if err := removeChain(ctx, ft, every[i], r.log); err != nil {
			return changed, err
		}
	}
	if changed {
		// Verify what iptables prints back: a difference here would make
		// every later check fail and the monitor rewrite forever.
		problem, err := r.checkFamily(ctx, ft)
		if err != nil {
			return changed, err
		}
		if problem != "" {
			return changed, fmt.Errorf("%s rules written with %s still differ from the expected ones (%s): report this with the output of %s-save -t nat and %s-save -t filter", ft.family.name, ft.binary, problem, ft.binary, ft.binary)
		}
	}
	return changed, nil
}

// ensureChain converges one owned chain and its jumps.
func (r *Redirect) ensureChain(ctx context.Context, ft familyTable, oc ownedChain) (bool, error) {
	log := r.log.WithFields(logrus.Fields{"family": ft.family.name, "table": oc.table})
	t := ft.table
	table, chain := string(oc.table), string(oc.chain)
	changed := false

	exists, err := t.ChainExists(table, chain)
	if err != nil {
		return false, ft.fail(oc.table, "checking whether chain "+chain+" exists", err)
	}
	if !exists {
		if err := step(ctx, func() error { return t.NewChain(table, chain) }); err != nil {
			return changed, ft.fail(oc.table, "creating chain "+chain, err)
		}
		changed = true
		log.Infof("created chain %s in the %s table", chain, table)
	}

	// The chain's rules: make before break, so the chain is never empty
	// while a jump leads into it.
	have, err := listChain(t, oc.table, oc.chain)
	if err != nil {
		return changed, ft.fail(oc.table, "listing chain "+chain, err)
	}
	if !equalSpecs(have, oc.rules) {
		for _, spec := range oc.rules {
			if err := step(ctx, func() error { return t.Append(table, chain, spec...) }); err != nil {
				return changed, ft.fail(oc.table, fmt.Sprintf("appending %q", ruleLine(oc.chain, spec)), err)
			}
			changed = true
		}
		for _, spec := range have {
			if err := step(ctx, func() error { return t.Delete(table, chain, spec...) }); err != nil {
				return changed, ft.fail(oc.table, fmt.Sprintf("deleting stale %q", ruleLine(oc.chain, spec)), err)
			}
		}
		log.WithFields(logrus.Fields{"staleRules": len(have), "rules": len(oc.rules)}).Infof("wrote the %s rules of chain %s", oc.what, chain)
	}

	// The jumps: exactly one from each built-in chain, with the expected
	// spec, inserted first so that an ACCEPT rule of a CNI plugin or of
	// Docker does not decide before it; others are removed only after the
	// correct one is in place. A correct jump found lower down is left
	// there: moving it would fight agents that keep their own rule first.
	for _, from := range oc.from {
		jumps, err := listJumps(t, oc.table, from, oc.chain)
		if err != nil {
			return changed, ft.fail(oc.table, "listing chain "+string(from), err)
		}
		keep := slices.IndexFunc(jumps, func(s []string) bool { return slices.Equal(s, oc.jump) })
		if keep < 0 {
			if err := step(ctx, func() error { return t.Insert(table, string(from), 1, oc.jump...) }); err != nil {
				return changed, ft.fail(oc.table, fmt.Sprintf("inserting %q", ruleLine(from, oc.jump)), err)
			}
			changed = true
			log.Infof("inserted the jump from %s to %s", from, chain)
		}
		for i, spec := range jumps {
			if i == keep {
				continue
			}
			if err := step(ctx, func() error { return t.Delete(table, string(from), spec...) }); err != nil {
				return changed, ft.fail(oc.table, fmt.Sprintf("deleting extra jump %q", ruleLine(from, spec)), err)
			}
			changed = true
			log.WithField("rule", ruleLine(from, spec)).Infof("deleted an extra jump to %s", chain)
		}
	}
	return changed, nil
}

// checkFamily returns "" when the family's rules are exactly right, else a
// description of the first difference.
func (r *Redirect) checkFamily(ctx context.Context, ft familyTable) (string, error) {
	for _, oc := range ft.family.ownedChains(r.interfaces) {
		if err := ctx.Err(); err != nil {
			return "", err
		}
		problem, err := checkChain(ft, oc)
		if problem != "" || err != nil {
			return problem, err
		}
	}
	return "", nil
}

// checkChain returns "" when one owned chain and its jumps are exactly
// right, else a description of the first difference.
func checkChain(ft familyTable, oc ownedChain) (string, error) {
	t := ft.table
	chain := string(oc.chain)
	exists, err := t.ChainExists(string(oc.table), chain)
	if err != nil {
		return "", ft.fail(oc.table, "checking whether chain "+chain+" exists", err)
	}
	if !exists {
		return fmt.Sprintf("chain %s is missing from the %s table", chain, oc.table), nil
	}
	have, err := listChain(t, oc.table, oc.chain)
	if err != nil {
		return "", ft.fail(oc.table, "listing chain "+chain, err)
	}
	if !equalSpecs(have, oc.rules) {
		return fmt.Sprintf("chain %s holds %q, want %q", chain, specLines(oc.chain, have), specLines(oc.chain, oc.rules)), nil
	}
	for _, from := range oc.from {
		jumps, err := listJumps(t, oc.table, from, oc.chain)
		if err != nil {
			return "", ft.fail(oc.table, "listing chain "+string(from), err)
		}
		if want := [][]string{oc.jump}; !equalSpecs(jumps, want) {
			return fmt.Sprintf("%s jumps to %s with %q, want %q", from, chain, specLines(from, jumps), specLines(from, want)), nil
		}
	}
	return "", nil
}

// removeFamily deletes the family's chains and the jumps into them, in the
// reverse of the installation order (see ownedChains).
func removeFamily(ctx context.Context, ft familyTable, log logrus.FieldLogger) error {
	owned := ft.family.withEveryChain().ownedChains(nil)
	for i := len(owned) - 1; i >= 0; i-- {
		if err := removeChain(ctx, ft, owned[i], log); err != nil {
			return err
		}
	}
	return nil
}

// removeChain deletes every jump into one owned chain, then the chain.
func removeChain(ctx context.Context, ft familyTable, oc ownedChain, log logrus.FieldLogger) error {
	log = log.WithFields(logrus.Fields{"family": ft.family.name, "table": oc.table})
	t := ft.table
	table, chain := string(oc.table), string(oc.chain)
	for _, from := range oc.from {
		jumps, err := listJumps(t, oc.table, from, oc.chain)
		if isNotExist(err) {
			continue // no such chain (or table): no jump of ours in it; the chain check below still runs
		}
		if err != nil {
			return ft.fail(oc.table, "listing chain "+string(from), err)
		}
		for _, spec := range jumps {
			if err := step(ctx, func() error { return t.Delete(table, string(from), spec...) }); err != nil {
				return ft.fail(oc.table, fmt.Sprintf("deleting jump %q", ruleLine(from, spec)), err)
			}
			log.WithField("rule", ruleLine(from, spec)).Infof("deleted the jump to %s", chain)
		}
	}
	exists, err := t.ChainExists(table, chain)
	if err != nil && !isNotExist(err) {
		return ft.fail(oc.table, "checking whether chain "+chain+" exists", err)
	}
	if !exists {
		return nil
	}
	if err := step(ctx, func() error { return t.ClearAndDeleteChain(table, chain) }); err != nil {
		return ft.fail(oc.table, fmt.Sprintf("deleting chain %s (a rule outside %s may still jump to it)", chain, joinChains(oc.from)), err)
	}
	log.Infof("deleted chain %s", chain)
	return nil
}

// step runs one iptables command unless ctx is already done.
func step(ctx context.Context, cmd func() error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	return cmd()
}

// fail wraps an iptables error with what was attempted and the usual fix.
func (ft familyTable) fail(table Table, what string, err error) error {
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("%s (%s, %s) stopped: %w", what, ft.family.name, ft.binary, err)
	}
	return fmt.Errorf("%s in the %s %s table with %s failed: %w (kube2ra needs CAP_NET_ADMIN in the host network namespace and the host's /run/xtables.lock)", what, ft.family.name, table, ft.binary, err)
}

// listChain returns the rule specs of one chain.
func listChain(t ruleTable, table Table, chain Chain) ([][]string, error) {
	lines, err := t.List(string(table), string(chain))
	if err != nil {
		return nil, err
	}
	return parseRules(lines, chain)
}

// listJumps returns the specs of the rules in from that lead to chain, in
// order; other rules there are not ours and are left alone.
func listJumps(t ruleTable, table Table, from, chain Chain) ([][]string, error) {
	rules, err := listChain(t, table, from)
	if err != nil {
		return nil, err
	}
	var jumps [][]string
	for _, spec := range rules {
		if jumpsTo(spec, chain) {
			jumps = append(jumps, spec)
		}
	}
	return jumps, nil
}

// joinChains lists chain names for a message.
func joinChains(chains []Chain) string {
	names := make([]string, len(chains))
	for i, c := range chains {
		names[i] = string(c)
	}
	return strings.Join(names, " and ")
}

// parseRules keeps the -A lines of chain from iptables -S output.
func parseRules(lines []string, chain Chain) ([][]string, error) {
	var specs [][]string
	for _, line := range lines {
		if !strings.HasPrefix(line, "-A ") {
			continue // -P and -N lines declare chains
		}
		c, spec, err := splitRuleLine(line)
		if err != nil {
			return nil, err
		}
		if c == chain {
			specs = append(specs, spec)
		}
	}
	return specs, nil
}

func equalSpecs(a, b [][]string) bool {
	return slices.EqualFunc(a, b, func(x, y []string) bool { return slices.Equal(x, y) })
}

func specLines(chain Chain, specs [][]string) []string {
	lines := make([]string, len(specs))
	for i, s := range specs {
		lines[i] = ruleLine(chain, s)
	}
	return lines
}

// isNotExist reports an iptables error saying the table or chain is absent.
func isNotExist(err error) bool {
	var e *goipt.Error
	return errors.As(err, &e) && e.IsNotExist()
}
