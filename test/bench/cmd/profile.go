package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"time"

	"github.com/kube2ra/kube2ra/test/bench"
	"github.com/kube2ra/kube2ra/test/harness"
	"github.com/kube2ra/kube2ra/test/simnode"
)

// profileHz is perf's sampling frequency.
const profileHz = 999

// buildSymbolBinary builds the agent with its symbol table (make build
// strips it), so perf can name Go functions.
func buildSymbolBinary(dir string) (string, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	if _, err := exec.LookPath("perf"); err != nil {
		return "", fmt.Errorf("BENCH_PROFILE needs perf: apt-get install linux-perf")
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return "", err
	}
	return harness.BuildProgram(abs, "kube2ra-symbols", "./cmd/kube2ra")
}

// profileCredRoute samples the whole agent process (user and kernel
// stacks) during one more credential-route load, and writes perf's report.
func (s *suite) profileCredRoute(ctx context.Context, nets []*simnode.Pod, opts bench.LoadOptions) error {
	dir := s.cfg.profileDir
	data := filepath.Join(dir, "perf.data")
	pid := s.env.Agent.PID()
	window := opts.Duration
	rec := exec.CommandContext(ctx, "perf", "record", "-F", strconv.Itoa(profileHz), "-g", "-p", strconv.Itoa(pid), "-o", data, "--", "sleep", fmt.Sprintf("%.1f", (spawnDelay+opts.Warmup+window).Seconds()))
	recOut := &cappedBuffer{}
	rec.Stdout, rec.Stderr = recOut, recOut
	if err := rec.Start(); err != nil {
		return fmt.Errorf("starting perf: %w", err)
	}
	res, err := s.runLoad(ctx, nets, opts)
	if werr := rec.Wait(); werr != nil {
		return fmt.Errorf("perf record: %w: %s", werr, recOut.String())
	}
	if err != nil {
		return err
	}
	st := summarise(res)
	s.logf("profile run: %.0f req/s (perf attached), p99 %.0f µs", st.RPS, st.P99us)
	for _, r := range []struct {
		file string
		args []string
	}{
		{"perf-flat.txt", []string{"report", "-i", data, "--stdio", "--no-children", "--sort", "symbol", "--percent-limit", "0.5"}},
		{"perf-children.txt", []string{"report", "-i", data, "--stdio", "--children", "--sort", "symbol", "-g", "none", "--percent-limit", "2"}},
	} {
		out, err := exec.CommandContext(ctx, "perf", r.args...).Output()
		if err != nil {
			return fmt.Errorf("perf report: %w", err)
		}
		if err := os.WriteFile(filepath.Join(dir, r.file), out, 0o644); err != nil {
			return err
		}
	}
	s.report.Detail("profile", map[string]any{"dir": dir, "rps_under_perf": st.RPS, "at": time.Now()})
	return nil
}

// cappedBuffer keeps the first 64 KiB written.
type cappedBuffer struct{ b []byte }

func (c *cappedBuffer) Write(p []byte) (int, error) {
	if room := 64<<10 - len(c.b); room > 0 {
		c.b = append(c.b, p[:min(room, len(p))]...)
	}
	return len(p), nil
}

func (c *cappedBuffer) String() string { return string(c.b) }
