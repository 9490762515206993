package iptables

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os/exec"
	"regexp"
	"strings"
	"time"

	goipt "github.com/coreos/go-iptables/iptables"
	"github.com/sirupsen/logrus"
)

// saveTimeout bounds one iptables-save during detection; the iptables
// wrappers use the same bound because iptables-nft-save can hang on a
// broken nf_tables setup.
const saveTimeout = 5 * time.Second

// saveRunner runs an iptables-save variant and returns its output.
type saveRunner func(ctx context.Context, binary string, args ...string) (string, error)

// execSave runs the real binary.
func execSave(ctx context.Context, binary string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, saveTimeout)
	defer cancel()
	out, err := exec.CommandContext(ctx, binary, args...).Output()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return string(out), fmt.Errorf("%s %s: %w: %s", binary, strings.Join(args, " "), err, strings.TrimSpace(string(ee.Stderr)))
		}
		return string(out), fmt.Errorf("%s %s: %w", binary, strings.Join(args, " "), err)
	}
	return string(out), nil
}

// kubeletHint matches the chains kubelet creates in the mangle table of
// the backend it uses (KUBE-IPTABLES-HINT since 1.24, the canary before).
var kubeletHint = regexp.MustCompile(`^:(KUBE-IPTABLES-HINT|KUBE-KUBELET-CANARY)\s`)

// detection is the outcome of detectBackend, kept for the log line.
type detection struct {
	// mode is ModeNFT or ModeLegacy.
	mode Mode
	// reason says which evidence decided.
	reason string
	// nftRules and legacyRules are the rule counts, when they were compared.
	nftRules, legacyRules int
}

// detectBackend picks the backend the host uses, as Kubernetes'
// iptables-wrapper does: kubelet's hint chain decides if present, else the
// backend with more rules wins, else nft.
func detectBackend(ctx context.Context, run saveRunner, log logrus.FieldLogger) detection {
	count := func(match func(string) bool, cmds ...[]string) int {
		n := 0
		for _, c := range cmds {
			out, err := run(ctx, c[0], c[1:]...)
			if err != nil {
				// A backend that cannot even list has no rules of the host's.
				log.WithError(err).Debug("iptables backend detection: listing failed, counting what was printed")
			}
			sc := bufio.NewScanner(strings.NewReader(out))
			sc.Buffer(make([]byte, 0, 64*1024), 1024*1024)
			for sc.Scan() {
				if match(sc.Text()) {
					n++
				}
			}
		}
		return n
	}
	isHint := kubeletHint.MatchString
	isRule := func(l string) bool { return strings.HasPrefix(l, "-") }

	if count(isHint, []string{"iptables-nft-save", "-t", "mangle"}, []string{"ip6tables-nft-save", "-t", "mangle"}) > 0 {
		return detection{mode: ModeNFT, reason: "kubelet's hint chain is in the nft tables"}
	}
	if count(isHint, []string{"iptables-legacy-save", "-t", "mangle"}, []string{"ip6tables-legacy-save", "-t", "mangle"}) > 0 {
		return detection{mode: ModeLegacy, reason: "kubelet's hint chain is in the legacy tables"}
	}
	d := detection{
		nftRules:    count(isRule, []string{"iptables-nft-save"}, []string{"ip6tables-nft-save"}),
		legacyRules: count(isRule, []string{"iptables-legacy-save"}, []string{"ip6tables-legacy-save"}),
	}
	switch {
	case d.legacyRules > d.nftRules:
		d.mode, d.reason = ModeLegacy, "the legacy tables hold more rules"
	case d.nftRules > 0:
		d.mode, d.reason = ModeNFT, "the nft tables hold at least as many rules"
	default:
		d.mode, d.reason = ModeNFT, "no rules in either backend: nft is the default"
	}
	return d
}

// RemoveAll deletes kube2ra's jumps and chains (DNAT, then guard) from both
// backends and both families, whichever exist, for `kube2ra cleanup`: it
// needs no configuration and succeeds when nothing is installed. A backend
// whose binary is missing is skipped.
func RemoveAll(ctx context.Context, logger logrus.FieldLogger) error {
	if logger == nil {
		logger = logrus.New()
	}
	log := logger.WithField("component", "iptables")
	var errs []error
	for _, backend := range []Mode{ModeNFT, ModeLegacy} {
		for _, f := range []family{
			{name: "IPv4", proto: goipt.ProtocolIPv4, metadata: MetadataIPv4},
			{name: "IPv6", proto: goipt.ProtocolIPv6, metadata: MetadataIPv6},
		} {
			bin := binaryName(backend, f.proto)
			if _, err := exec.LookPath(bin); err != nil {
				log.WithField("command", bin).Debug("iptables command not installed: nothing to remove with it")
				continue
			}
			t, err := newGoIPTables(bin, f.proto, DefaultLockTimeout)
			if err != nil {
				errs = append(errs, err)
				continue
			}
			ft := familyTable{family: f, table: t, binary: bin}
			if err := removeFamily(ctx, ft, log.WithField("backend", backend)); err != nil {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}
