//go:build e2ecluster

// Package cluster is the real-node tier (make e2e-cluster): one Kubernetes
// node with containerd, kubelet, kube-proxy (iptables) and the bridge CNI
// plugin in its own network namespace, a control plane with
// kube-controller-manager and kube-scheduler, the fake AWS endpoints, and
// kube2ra published to an OCI registry (docker-registry; the image built
// from the project's Dockerfile by hack/cluster-images.sh, the chart
// packaged) and installed from it with `helm install oci://…`, the node
// pulling the image.
package cluster

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// The node's fixed names and addresses. Fixed, so a run cleans up what a
// crashed previous run left.
const (
	// Root holds every file of the node: containerd's root and state, the
	// kubelet's root, CNI state, logs and pid files.
	Root = "/tmp/kube2ra-cluster"
	// NetNS is the node's network namespace.
	NetNS = "k2rc-node"
	// HostVeth is the root-namespace end of the node's link; HostIP is on it
	// (the API server and the fake AWS listen there).
	HostVeth, HostIP = "k2rc-host", "10.231.0.1"
	// NodeIP is the node's address (its eth0 in NetNS).
	NodeIP = "10.231.0.2"
	// NodeName is the Node object's name.
	NodeName = "k2rc-node"
	// PodCIDR is host-local's range: a /28, so deleted pods' IPs come back
	// after 13 pods.
	PodCIDR = "10.232.0.0/28"
	// Bridge is the CNI bridge, the agent's host interface.
	Bridge = "cni0"
	// netnsPath is the node namespace's bind mount.
	netnsPath = "/var/run/netns/" + NetNS
)

func dir(parts ...string) string { return filepath.Join(append([]string{Root}, parts...)...) }

// run runs a command and returns an error naming it with its output.
func run(ctx context.Context, name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, name, args...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return string(out), nil
}

// inNode runs a command in the node's network namespace.
func inNode(ctx context.Context, name string, args ...string) (string, error) {
	return run(ctx, "nsenter", append([]string{"--net=" + netnsPath, "--", name}, args...)...)
}

// daemon is a node process (containerd, kubelet, kube-proxy) in its own
// process group, started in the node's network namespace with nsenter (not
// `ip netns exec`, which remounts /sys and hides the cgroup mounts).
type daemon struct {
	name string
	cmd  *exec.Cmd
	done chan struct{}
	log  string
}

func startDaemon(name, binary string, args ...string) (*daemon, error) {
	log := dir("logs", name+".log")
	f, err := os.OpenFile(log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	cmd := exec.Command("nsenter", append([]string{"--net=" + netnsPath, "--", binary}, args...)...)
	cmd.Stdout, cmd.Stderr = f, f
	// No Pdeathsig: it fires when the starting OS thread exits, and
	// ListenInNode ends a thread. A crashed run's daemons are killed by
	// the next run's Cleanup from their pid files.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting %s: %w", name, err)
	}
	if err := os.WriteFile(dir("pids", name), []byte(strconv.Itoa(cmd.Process.Pid)), 0o600); err != nil {
		return nil, err
	}
	d := &daemon{name: name, cmd: cmd, done: make(chan struct{}), log: log}
	go func() { _ = cmd.Wait(); close(d.done) }()
	return d, nil
}

func (d *daemon) exited() bool {
	select {
	case <-d.done:
		return true
	default:
		return false
	}
}

// stop sends SIGTERM to the process group, SIGKILL after 15 s.
func (d *daemon) stop() {
	if d == nil || d.exited() {
		return
	}
	_ = syscall.Kill(-d.cmd.Process.Pid, syscall.SIGTERM)
	select {
	case <-d.done:
	case <-time.After(15 * time.Second):
		_ = syscall.Kill(-d.cmd.Process.Pid, syscall.SIGKILL)
		<-d.done
	}
	_ = os.Remove(dir("pids", d.name))
}

// logTail is the end of the daemon's log, for failure messages.
func (d *daemon) logTail(n int) string { return fileTail(d.log, n) }

func fileTail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// Cleanup removes everything a run (also a crashed one) leaves: node
// daemons and container shims, containers, mounts under Root, the pods'
// and the node's network namespaces (and with them their iptables rules),
// the host's end of the link, and Root itself. Safe to call when nothing is left.
func Cleanup() {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	// Daemons from pid files: whole process groups.
	if entries, err := os.ReadDir(dir("pids")); err == nil {
		for _, e := range entries {
			b, _ := os.ReadFile(dir("pids", e.Name()))
			if pid, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil && pid > 1 {
				_ = syscall.Kill(-pid, syscall.SIGKILL)
			}
		}
	}
	// Containers, through runc's state under Root, then the shims (they
	// name our containerd's socket on their command line).
	if out, err := run(ctx, "runc", "--root", dir("runc", "k8s.io"), "list", "-q"); err == nil {
		for _, id := range strings.Fields(out) {
			_, _ = run(ctx, "runc", "--root", dir("runc", "k8s.io"), "delete", "--force", id)
		}
	}
	killMatching(dir("containerd"))
	// Mounts under Root, deepest first.
	for _, m := range mountsUnder(Root) {
		_ = syscall.Unmount(m, syscall.MNT_DETACH)
	}
	// Pod network namespaces our containerd made, then the node's.
	for _, ns := range podNetNS() {
		_, _ = run(ctx, "ip", "netns", "delete", ns)
	}
	_, _ = run(ctx, "ip", "netns", "delete", NetNS)
	_, _ = run(ctx, "ip", "link", "delete", HostVeth)
	for _, m := range mountsUnder(Root) {
		_ = syscall.Unmount(m, syscall.MNT_DETACH)
	}
	_ = os.RemoveAll(Root)
}

// killMatching SIGKILLs processes whose command line contains s.
func killMatching(s string) {
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	self := os.Getpid()
	for _, p := range procs {
		b, err := os.ReadFile(p)
		if err != nil || !strings.Contains(string(b), s) {
			continue
		}
		pid, _ := strconv.Atoi(filepath.Base(filepath.Dir(p)))
		if pid > 1 && pid != self {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	}
}

// mountsUnder lists mount points under root, deepest first.
func mountsUnder(root string) []string {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) > 4 && (fields[4] == root || strings.HasPrefix(fields[4], root+"/")) {
			out = append(out, fields[4])
		}
	}
	sort.Slice(out, func(i, j int) bool { return len(out[i]) > len(out[j]) })
	return out
}

// podNetNS lists the pod network namespaces our containerd created: they
// are the cni-* namespaces whose pod sandboxes were ours. No other
// containerd runs on the test machines, so every cni-* namespace is ours.
func podNetNS() []string {
	entries, _ := os.ReadDir("/var/run/netns")
	var out []string
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), "cni-") {
			out = append(out, e.Name())
		}
	}
	return out
}

// setupNetwork makes the node's namespace with a veth pair to the root
// namespace and a default route through it (client-go in the agent needs a
// route for the Service IP that kube-proxy rewrites).
func setupNetwork(ctx context.Context) error {
	steps := [][]string{
		{"ip", "netns", "add", NetNS},
		{"ip", "link", "add", HostVeth, "type", "veth", "peer", "name", "k2rc-eth0", "netns", NetNS},
		{"ip", "addr", "add", HostIP + "/24", "dev", HostVeth},
		{"ip", "link", "set", HostVeth, "up"},
		{"ip", "-n", NetNS, "link", "set", "k2rc-eth0", "name", "eth0"},
		{"ip", "-n", NetNS, "addr", "add", NodeIP + "/24", "dev", "eth0"},
		{"ip", "-n", NetNS, "link", "set", "eth0", "up"},
		{"ip", "-n", NetNS, "link", "set", "lo", "up"},
		{"ip", "-n", NetNS, "route", "add", "default", "via", HostIP},
		{"ip", "netns", "exec", NetNS, "sysctl", "-qw", "net.ipv4.ip_forward=1"},
	}
	for _, s := range steps {
		if _, err := run(ctx, s[0], s[1:]...); err != nil {
			return err
		}
	}
	return nil
}

// waitFor polls check every 200 ms until it returns nil, the daemon d (if
// any) exits, or timeout passes.
func waitFor(ctx context.Context, what string, timeout time.Duration, d *daemon, check func() error) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var last error
	for {
		if last = check(); last == nil {
			return nil
		}
		if d != nil && d.exited() {
			return fmt.Errorf("%s: %s exited; its log ends with:\n%s", what, d.name, d.logTail(30))
		}
		select {
		case <-ctx.Done():
			msg := fmt.Sprintf("%s: not within %s (last: %v)", what, timeout, last)
			if d != nil {
				msg += fmt.Sprintf("; %s's log ends with:\n%s", d.name, d.logTail(30))
			}
			return errors.New(msg)
		case <-time.After(200 * time.Millisecond):
		}
	}
}
