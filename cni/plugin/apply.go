package plugin

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
)

// lockWait bounds the wait for the host's xtables lock (iptables -w): the
// agent and the kubelet hold it briefly, but kube-proxy's or Calico's
// restores on a large iptables-legacy node can hold it for seconds; a
// runtime's ADD (the kubelet's 2-minute request timeout) waits longer.
const lockWait = 20 * time.Second

// commandTimeout bounds one iptables command, lock wait included:
// iptables-nft can hang on a broken nf_tables setup.
const commandTimeout = lockWait + 5*time.Second

// sbinDirs are searched for the iptables commands when PATH lacks them:
// a runtime may run plugins with a minimal PATH.
func sbinDirs() []string { return []string{"/usr/sbin", "/sbin", "/usr/local/sbin"} }

// Apply writes kube2ra's redirect and guard into the network namespace at
// netnsPath (a /proc/PID/ns/net or a bind mount such as /var/run/netns/X)
// and removes the namespace's conntrack entries to the metadata addresses,
// so no connection opened before the redirect still reaches the node's
// metadata service. It converges any state (nothing, stale rules, a
// duplicate jump) to exactly the rules cfg asks for, then checks what
// iptables prints back. Any failure is an error: callers fail closed.
// Re-running it is safe; it changes nothing when the rules are right
// (the conntrack entries are removed every time).
func Apply(ctx context.Context, netnsPath string, cfg Config) error {
	fams, cmds, err := prepare(cfg)
	if err != nil {
		return err
	}
	err = ns.WithNetNSPath(netnsPath, func(ns.NetNS) error {
		// Everything here runs on this locked OS thread: the iptables
		// commands are forked from it and so inherit the pod's namespace.
		for _, f := range fams {
			if err := cmds.ensure(ctx, f); err != nil {
				return err
			}
		}
		return cmds.checkAll(ctx, fams)
	})
	if err != nil {
		return inNetns(netnsPath, err)
	}
	if err := flushConntrack(netnsPath, fams); err != nil {
		return inNetns(netnsPath, err)
	}
	return nil
}

// Verify returns nil when the network namespace at netnsPath holds exactly
// the rules Apply writes for cfg, else an error naming the first
// difference. It changes nothing.
func Verify(netnsPath string, cfg Config) error {
	fams, cmds, err := prepare(cfg)
	if err != nil {
		return err
	}
	err = ns.WithNetNSPath(netnsPath, func(ns.NetNS) error {
		return cmds.checkAll(context.Background(), fams)
	})
	if err != nil {
		return inNetns(netnsPath, err)
	}
	return nil
}

// prepare validates cfg and finds the iptables commands its families need.
func prepare(cfg Config) ([]family, commands, error) {
	if err := cfg.Validate(); err != nil {
		return nil, commands{}, fmt.Errorf("kube2ra-cni configuration: %w", err)
	}
	fams := families(cfg)
	cmds, err := lookCommands(cfg.IPTablesBackend, fams)
	return fams, cmds, err
}

// inNetns names the namespace in an error.
func inNetns(netnsPath string, err error) error {
	return fmt.Errorf("pod network namespace %s: %w", netnsPath, err)
}

// commands are the resolved paths of the iptables commands of one backend.
type commands struct {
	// backend is "nft" or "legacy".
	backend string
	// save and restore are per family: index 0 IPv4, 1 IPv6.
	save, restore [2]string
}

// lookCommands finds iptables-<backend>-save and -restore (and the
// ip6tables pair when a family needs them).
func lookCommands(backend string, fams []family) (commands, error) {
	c := commands{backend: backend}
	for _, f := range fams {
		i, base := 0, "iptables"
		if f.v6 {
			i, base = 1, "ip6tables"
		}
		var err error
		if c.save[i], err = lookCommand(base + "-" + backend + "-save"); err != nil {
			return c, err
		}
		if c.restore[i], err = lookCommand(base + "-" + backend + "-restore"); err != nil {
			return c, err
		}
	}
	return c, nil
}

// lookCommand finds one command on PATH, else in the usual sbin folders.
func lookCommand(name string) (string, error) {
	if p, err := exec.LookPath(name); err == nil {
		return p, nil
	}
	for _, d := range sbinDirs() {
		if p, err := exec.LookPath(filepath.Join(d, name)); err == nil {
			return p, nil
		}
	}
	return "", fmt.Errorf("iptables command %s is not installed on this node (searched PATH and %s): install the iptables package, or have the kube2ra agent rewrite the plugin's entry with the backend the node uses (iptablesBackend)", name, strings.Join(sbinDirs(), ", "))
}

func (c commands) index(f family) int {
	if f.v6 {
		return 1
	}
	return 0
}

// state reads the family's tables with one iptables-save (which takes no
// lock: it only reads).
func (c commands) state(ctx context.Context, f family) (map[table]tableState, error) {
	out, err := run(ctx, c.save[c.index(f)], nil)
	if err != nil {
		return nil, fmt.Errorf("reading the %s rules: %w", f.name, err)
	}
	return parseSave(out), nil
}

// ensure converges the family's tables with one iptables-restore: the
// guard's table before the redirect's in the same input (iptables-nft
// commits both in one transaction, iptables-legacy one table after the
// other, in that order).
func (c commands) ensure(ctx context.Context, f family) error {
	s, err := c.state(ctx, f)
	if err != nil {
		return err
	}
	var script strings.Builder
	for _, t := range f.tables() {
		script.WriteString(f.restoreScript(t, s[t]))
	}
	if script.Len() == 0 {
		return nil
	}
	if _, err := run(ctx, c.restore[c.index(f)], []byte(script.String()), "-w", strconv.Itoa(int(lockWait.Seconds())), "--noflush"); err != nil {
		return fmt.Errorf("writing the %s rules (%q): %w", f.name, script.String(), err)
	}
	return nil
}

// checkAll compares every table of every family with what it needs.
func (c commands) checkAll(ctx context.Context, fams []family) error {
	for _, f := range fams {
		s, err := c.state(ctx, f)
		if err != nil {
			return err
		}
		for _, t := range f.tables() {
			if p := f.problem(t, s[t]); p != "" {
				return fmt.Errorf("%s rules (%s backend): %s", f.name, c.backend, p)
			}
		}
	}
	return nil
}

// run executes one command with a bounded time and returns its standard
// output; an error carries the command line and its standard error.
func run(ctx context.Context, bin string, stdin []byte, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, commandTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		msg := strings.TrimSpace(stderr.String())
		if errors.Is(ctx.Err(), context.DeadlineExceeded) {
			msg = "timed out after " + commandTimeout.String() + "; " + msg
		}
		return stdout.String(), fmt.Errorf("%s %s: %w: %s", bin, strings.Join(args, " "), err, msg)
	}
	return stdout.String(), nil
}
