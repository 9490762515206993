// Package harness stands up kube2ra the way a user runs it, out of real
// parts: the built binary in a simulated node's network namespace, a real
// kube-apiserver and etcd, fake AWS endpoints that verify like AWS, and pods
// in their own namespaces. End-to-end tests, benchmarks, the soak and the
// demo all use it.
package harness

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/kube2ra/kube2ra/test/chart"
	"github.com/kube2ra/kube2ra/test/syncbuf"
)

// Agent is one kube2ra process.
type Agent struct {
	// Binary is the kube2ra executable.
	Binary string
	// Args are the arguments after the binary.
	Args []string
	// Env is added to the process environment.
	Env []string
	// MetricsURL is http://HOST_IP:metrics-port, as pods and the kubelet reach it.
	MetricsURL string
	// NodeURL is http://127.0.0.1:metrics-port, as a process on the node
	// reaches it: the only caller shown /debug/* and /readyz's reasons.
	NodeURL string

	mu sync.Mutex
	// cmd is the running process, nil when stopped.
	cmd *exec.Cmd
	// log collects the process's output across restarts.
	log *syncbuf.Buffer
	// done is closed when the current process exits.
	done chan struct{}
	// exitErr is the current process's exit error.
	exitErr error
	// mirror receives output as it is written, if set.
	mirror io.Writer
}

// NewAgent prepares an agent; Start runs it.
func NewAgent(binary, metricsURL string, args, env []string, mirror io.Writer) *Agent {
	a := &Agent{Binary: binary, Args: args, Env: env, MetricsURL: metricsURL, log: &syncbuf.Buffer{}, mirror: mirror}
	if u, err := url.Parse(metricsURL); err == nil {
		a.NodeURL = "http://" + net.JoinHostPort("127.0.0.1", u.Port())
	}
	return a
}

// FindBinary returns bin/kube2ra at the repository root, or $KUBE2RA_BINARY.
func FindBinary() (string, error) {
	if b := os.Getenv("KUBE2RA_BINARY"); b != "" {
		return b, nil
	}
	root, err := chart.RepoRoot()
	if err != nil {
		return "", err
	}
	bin := filepath.Join(root, "bin", "kube2ra")
	if _, err := os.Stat(bin); err != nil {
		return "", fmt.Errorf("harness: %s is missing: run make build first (make e2e does)", bin)
	}
	return bin, nil
}

// Start runs the agent. It does not wait for readiness.
func (a *Agent) Start() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.cmd != nil {
		return errors.New("harness: agent already running")
	}
	cmd := exec.Command(a.Binary, a.Args...)
	// What the DaemonSet gives it, not the developer's shell: no AWS_*
	// setting of the machine running the tests (an AWS_CA_BUNDLE there put
	// the host's whole CA bundle in the bench agent's heap).
	cmd.Env = append(CleanEnviron(), a.Env...)
	var w io.Writer = a.log
	if a.mirror != nil {
		w = io.MultiWriter(a.log, a.mirror)
	}
	cmd.Stdout, cmd.Stderr = w, w
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("harness: starting %s: %w", a.Binary, err)
	}
	a.cmd = cmd
	done := make(chan struct{})
	a.done = done
	go func() {
		err := cmd.Wait()
		a.mu.Lock()
		a.exitErr = err
		if a.cmd == cmd {
			a.cmd = nil
		}
		a.mu.Unlock()
		close(done)
	}()
	return nil
}

// Running reports whether the process is alive.
func (a *Agent) Running() bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.cmd != nil
}

// PID is the running process's id (for /proc readings), 0 when stopped.
func (a *Agent) PID() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.cmd == nil || a.cmd.Process == nil {
		return 0
	}
	return a.cmd.Process.Pid
}

// Signal sends sig and waits up to timeout for the process to exit.
func (a *Agent) Signal(sig syscall.Signal, timeout time.Duration) error {
	a.mu.Lock()
	cmd, done := a.cmd, a.done
	a.mu.Unlock()
	if cmd == nil {
		return nil
	}
	if err := cmd.Process.Signal(sig); err != nil {
		return err
	}
	select {
	case <-done:
		return nil
	case <-time.After(timeout):
		_ = cmd.Process.Kill()
		<-done
		return fmt.Errorf("harness: agent did not exit within %s of %s", timeout, sig)
	}
}

// Stop sends SIGTERM and waits.
func (a *Agent) Stop() error { return a.Signal(syscall.SIGTERM, 30*time.Second) }

// Kill sends SIGKILL and waits.
func (a *Agent) Kill() error { return a.Signal(syscall.SIGKILL, 10*time.Second) }

// ExitError is the last process's exit status.
func (a *Agent) ExitError() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.exitErr
}

// Log is everything the agent printed so far.
func (a *Agent) Log() string { return a.log.String() }

// WaitReady polls /readyz until it answers 200, the process exits, or ctx ends.
func (a *Agent) WaitReady(ctx context.Context) error {
	client := &http.Client{Timeout: time.Second}
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	last := "no answer"
	for {
		a.mu.Lock()
		done := a.done
		a.mu.Unlock()
		select {
		case <-done:
			return fmt.Errorf("harness: agent exited before ready (%v); its log:\n%s", a.ExitError(), a.LogTail(40))
		default:
		}
		resp, err := client.Get(a.MetricsURL + "/readyz")
		if err == nil {
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			last = fmt.Sprintf("%d %s", resp.StatusCode, strings.TrimSpace(string(body)))
		} else {
			last = err.Error()
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("harness: agent not ready (%s): %w; its log:\n%s", last, ctx.Err(), a.LogTail(40))
		case <-tick.C:
		}
	}
}

// Metrics scrapes /metrics and returns each sample by its full name with
// labels as printed, e.g. `kube2ra_credential_cache_hits_total` or
// `kube2ra_http_requests_total{code="200",route="credentials"}`.
func (a *Agent) Metrics() (map[string]float64, error) {
	client := &http.Client{Timeout: 2 * time.Second}
	resp, err := client.Get(a.MetricsURL + "/metrics")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	return ParseMetrics(resp.Body)
}

// ParseMetrics reads the Prometheus text format.
func ParseMetrics(r io.Reader) (map[string]float64, error) {
	out := map[string]float64{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			continue
		}
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			continue
		}
		out[line[:i]] = v
	}
	return out, sc.Err()
}

// Sum adds every sample whose name (before labels) is name and whose label
// text contains each of the given `key="value"` fragments.
func Sum(m map[string]float64, name string, labels ...string) float64 {
	var total float64
	for k, v := range m {
		base, rest, _ := strings.Cut(k, "{")
		if base != name {
			continue
		}
		ok := true
		for _, l := range labels {
			if !strings.Contains(rest, l) {
				ok = false
				break
			}
		}
		if ok {
			total += v
		}
	}
	return total
}

// LogTail is the last n lines of the agent's log, for failure messages.
func (a *Agent) LogTail(n int) string { return tail(a.Log(), n) }

// tail is the last lines of s.
func tail(s string, lines int) string {
	parts := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(parts) > lines {
		parts = parts[len(parts)-lines:]
	}
	return strings.Join(parts, "\n")
}
