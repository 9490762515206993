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

// Redirect is the real Rules: the KUBE2RA chain on this host, through the
// iptables binary of the chosen backend, for IPv4 and optionally IPv6.
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
	backend, _ := ParseMode(string(cfg.Mode))
	if backend == ModeAuto {
		d := detectBackend(ctx, execSave, log)
		backend = d.mode
		log.WithFields(logrus.Fields{
			"backend": backend, "reason": d.reason,
			"nftRules": d.nftRules, "legacyRules": d.legacyRules,
		}).Info("iptables backend chosen by detection")
	} else {
		log.WithField("backend", backend).Info("iptables backend chosen by --iptables-mode")
	}
	lockWait := cfg.LockTimeout
	if lockWait == 0 {
		lockWait = DefaultLockTimeout
	}
	fams := []family{{
		name: "IPv4", proto: goipt.ProtocolIPv4, metadata: MetadataIPv4,
		target: netip.AddrPortFrom(cfg.HostIP.Unmap(), uint16(cfg.Port)),
	}}
	if cfg.IPv6 {
		fams = append(fams, family{
			name: "IPv6", proto: goipt.ProtocolIPv6, metadata: MetadataIPv6,
			target: netip.AddrPortFrom(cfg.HostIPv6, uint16(cfg.Port)),
		})
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
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, ft := range r.families {
		problem, err := r.checkFamily(ctx, ft)
		if err != nil {
			return false, err
		}
		if problem != "" {
			r.log.WithField("family", ft.family.name).Debugf("rules not as expected: %s", problem)
			return false, nil
		}
	}
	return true, nil
}

// Remove deletes every jump to KUBE2RA from PREROUTING and the chain, in
// every family; it succeeds when none exist.
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
	log := r.log.WithField("family", ft.family.name)
	t := ft.table
	changed := false

	exists, err := t.ChainExists(string(TableNAT), string(ChainKube2ra))
	if err != nil {
		return false, ft.fail("checking whether chain KUBE2RA exists", err)
	}
	if !exists {
		if err := step(ctx, func() error { return t.NewChain(string(TableNAT), string(ChainKube2ra)) }); err != nil {
			return changed, ft.fail("creating chain KUBE2RA", err)
		}
		changed = true
		log.Info("created chain KUBE2RA in the nat table")
	}

	// The chain's rules: make before break, so the chain is never empty
	// while a jump leads into it.
	want := ft.family.dnatSpecs(r.interfaces)
	have, err := listChain(t)
	if err != nil {
		return changed, ft.fail("listing chain KUBE2RA", err)
	}
	if !equalSpecs(have, want) {
		for _, spec := range want {
			if err := step(ctx, func() error { return t.Append(string(TableNAT), string(ChainKube2ra), spec...) }); err != nil {
				return changed, ft.fail(fmt.Sprintf("appending %q", ruleLine(ChainKube2ra, spec)), err)
			}
			changed = true
		}
		for _, spec := range have {
			if err := step(ctx, func() error { return t.Delete(string(TableNAT), string(ChainKube2ra), spec...) }); err != nil {
				return changed, ft.fail(fmt.Sprintf("deleting stale %q", ruleLine(ChainKube2ra, spec)), err)
			}
		}
		log.WithFields(logrus.Fields{"staleRules": len(have), "rules": len(want)}).Info("wrote the DNAT rules of chain KUBE2RA")
	}

	// The jump: exactly one, with the expected spec; others are removed
	// only after the correct one is in place.
	jumps, err := listJumps(t)
	if err != nil {
		return changed, ft.fail("listing chain PREROUTING", err)
	}
	wantJump := ft.family.jumpSpec()
	keep := slices.IndexFunc(jumps, func(s []string) bool { return slices.Equal(s, wantJump) })
	if keep < 0 {
		if err := step(ctx, func() error { return t.Insert(string(TableNAT), string(ChainPrerouting), 1, wantJump...) }); err != nil {
			return changed, ft.fail(fmt.Sprintf("inserting %q", ruleLine(ChainPrerouting, wantJump)), err)
		}
		changed = true
		log.Info("inserted the jump from PREROUTING to KUBE2RA")
	}
	for i, spec := range jumps {
		if i == keep {
			continue
		}
		if err := step(ctx, func() error { return t.Delete(string(TableNAT), string(ChainPrerouting), spec...) }); err != nil {
			return changed, ft.fail(fmt.Sprintf("deleting extra jump %q", ruleLine(ChainPrerouting, spec)), err)
		}
		changed = true
		log.WithField("rule", ruleLine(ChainPrerouting, spec)).Info("deleted an extra jump to KUBE2RA")
	}

	if changed {
		// Verify what iptables prints back: a difference here would make
		// every later check fail and the monitor rewrite forever.
		problem, err := r.checkFamily(ctx, ft)
		if err != nil {
			return changed, err
		}
		if problem != "" {
			return changed, fmt.Errorf("%s rules written with %s still differ from the expected ones (%s): report this with the output of %s-save -t nat", ft.family.name, ft.binary, problem, ft.binary)
		}
	}
	return changed, nil
}

// checkFamily returns "" when the family's rules are exactly right, else a
// description of the first difference.
func (r *Redirect) checkFamily(ctx context.Context, ft familyTable) (string, error) {
	if err := ctx.Err(); err != nil {
		return "", err
	}
	t := ft.table
	exists, err := t.ChainExists(string(TableNAT), string(ChainKube2ra))
	if err != nil {
		return "", ft.fail("checking whether chain KUBE2RA exists", err)
	}
	if !exists {
		return "chain KUBE2RA is missing", nil
	}
	have, err := listChain(t)
	if err != nil {
		return "", ft.fail("listing chain KUBE2RA", err)
	}
	if want := ft.family.dnatSpecs(r.interfaces); !equalSpecs(have, want) {
		return fmt.Sprintf("chain KUBE2RA holds %q, want %q", specLines(ChainKube2ra, have), specLines(ChainKube2ra, want)), nil
	}
	jumps, err := listJumps(t)
	if err != nil {
		return "", ft.fail("listing chain PREROUTING", err)
	}
	if want := [][]string{ft.family.jumpSpec()}; !equalSpecs(jumps, want) {
		return fmt.Sprintf("PREROUTING jumps to KUBE2RA with %q, want %q", specLines(ChainPrerouting, jumps), specLines(ChainPrerouting, want)), nil
	}
	return "", nil
}

// removeFamily deletes every jump to KUBE2RA, then the chain.
func removeFamily(ctx context.Context, ft familyTable, log logrus.FieldLogger) error {
	log = log.WithField("family", ft.family.name)
	t := ft.table
	jumps, err := listJumps(t)
	if isNotExist(err) {
		return nil // no nat table: nothing of ours can exist
	}
	if err != nil {
		return ft.fail("listing chain PREROUTING", err)
	}
	for _, spec := range jumps {
		if err := step(ctx, func() error { return t.Delete(string(TableNAT), string(ChainPrerouting), spec...) }); err != nil {
			return ft.fail(fmt.Sprintf("deleting jump %q", ruleLine(ChainPrerouting, spec)), err)
		}
		log.WithField("rule", ruleLine(ChainPrerouting, spec)).Info("deleted the jump to KUBE2RA")
	}
	exists, err := t.ChainExists(string(TableNAT), string(ChainKube2ra))
	if err != nil && !isNotExist(err) {
		return ft.fail("checking whether chain KUBE2RA exists", err)
	}
	if !exists {
		return nil
	}
	if err := step(ctx, func() error { return t.ClearAndDeleteChain(string(TableNAT), string(ChainKube2ra)) }); err != nil {
		return ft.fail("deleting chain KUBE2RA (another rule outside PREROUTING may still jump to it)", err)
	}
	log.Info("deleted chain KUBE2RA")
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
func (ft familyTable) fail(what string, err error) error {
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("%s (%s, %s) stopped: %w", what, ft.family.name, ft.binary, err)
	}
	return fmt.Errorf("%s in the %s nat table with %s failed: %w (kube2ra needs CAP_NET_ADMIN in the host network namespace and the host's /run/xtables.lock)", what, ft.family.name, ft.binary, err)
}

// listChain returns the rule specs of KUBE2RA.
func listChain(t ruleTable) ([][]string, error) {
	lines, err := t.List(string(TableNAT), string(ChainKube2ra))
	if err != nil {
		return nil, err
	}
	return parseRules(lines, ChainKube2ra)
}

// listJumps returns the specs of the PREROUTING rules that lead to KUBE2RA,
// in chain order; other rules there are not ours and are left alone.
func listJumps(t ruleTable) ([][]string, error) {
	lines, err := t.List(string(TableNAT), string(ChainPrerouting))
	if err != nil {
		return nil, err
	}
	rules, err := parseRules(lines, ChainPrerouting)
	if err != nil {
		return nil, err
	}
	var jumps [][]string
	for _, spec := range rules {
		if jumpsTo(spec, ChainKube2ra) {
			jumps = append(jumps, spec)
		}
	}
	return jumps, nil
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
