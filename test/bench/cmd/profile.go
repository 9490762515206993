package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/kube2ra/kube2ra/test/bench"
	"github.com/kube2ra/kube2ra/test/harness"
	"github.com/kube2ra/kube2ra/test/simnode"
)

// profileHz is perf's sampling frequency.
const profileHz = 999

// pprofAddr is where a profiling agent serves net/http/pprof (loopback of
// the node namespace, where the bench runs too).
const pprofAddr = "127.0.0.1:6061"

// buildSymbolBinary builds the agent with its symbol table (make build
// strips it) and net/http/pprof (-tags pprof), so perf can name Go
// functions and the bench can take pprof profiles.
func buildSymbolBinary(dir string) (string, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return "", err
	}
	return harness.BuildProgram(abs, "kube2ra-symbols", "./cmd/kube2ra", "-tags", "pprof")
}

// profileLoad takes pprof profiles of the agent during one more load of
// the given kind and after it: CPU over the load, the goroutines in the
// middle of it, the heap in use and the allocations; each as name-*.pb.gz and `go tool pprof -top` text. With
// perf installed it then records a perf profile of another such load
// (user and kernel stacks: where net/http and the kernel spend).
func (s *suite) profileLoad(ctx context.Context, name string, nets []*simnode.Pod, opts bench.LoadOptions) error {
	dir := s.cfg.profileDir
	window := opts.Duration
	cpuDone := make(chan error, 1)
	go func() {
		time.Sleep(spawnDelay + opts.Warmup)
		cpuDone <- s.fetchProfile(ctx, fmt.Sprintf("profile?seconds=%d", max(1, int(window.Seconds()))), name+"-cpu")
	}()
	// The goroutines mid-load: each holds a stack, part of the resident memory.
	goroutinesDone := make(chan error, 1)
	go func() {
		time.Sleep(spawnDelay + opts.Warmup + window/2)
		goroutinesDone <- s.fetchProfile(ctx, "goroutine", name+"-goroutines")
	}()
	res, err := s.runLoad(ctx, nets, opts)
	for _, done := range []chan error{cpuDone, goroutinesDone} {
		if perr := <-done; perr != nil && err == nil {
			err = perr
		}
	}
	if err != nil {
		return err
	}
	st := summarise(res)
	s.logf("profile %s: %.0f req/s under pprof, p99 %.0f µs", name, st.RPS, st.P99us)
	for _, p := range []struct{ path, file string }{{"heap", name + "-heap"}, {"allocs", name + "-allocs"}} {
		if err := s.fetchProfile(ctx, p.path, p.file); err != nil {
			return err
		}
	}
	s.report.Detail("profile_"+name, map[string]any{"dir": dir, "rps_under_pprof": st.RPS, "at": time.Now()})
	if _, err := exec.LookPath("perf"); err != nil {
		s.logf("profile %s: perf not installed, no perf profile (apt-get install linux-perf)", name)
		return nil
	}
	return s.perfLoad(ctx, name, nets, opts)
}

// fetchProfile saves /debug/pprof/<path> as file.pb.gz and its top list
// as file.txt (for heap and allocs: in-use space, and allocated space).
func (s *suite) fetchProfile(ctx context.Context, path, file string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+pprofAddr+"/debug/pprof/"+path, nil)
	if err != nil {
		return err
	}
	resp, err := (&http.Client{Timeout: time.Minute}).Do(req)
	if err != nil {
		return fmt.Errorf("profile %s: %w", path, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("profile %s: %s", path, resp.Status)
	}
	raw := filepath.Join(s.cfg.profileDir, file+".pb.gz")
	f, err := os.Create(raw)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, resp.Body); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if path == "heap" {
		if err := s.saveMemoryBreakdown(ctx, file); err != nil {
			return err
		}
	}
	args := []string{"tool", "pprof", "-top", "-nodecount", "60"}
	if path == "allocs" {
		args = append(args, "-sample_index", "alloc_space")
	}
	out, err := exec.CommandContext(ctx, "go", append(args, raw)...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("go tool pprof %s: %w: %s", raw, err, out)
	}
	return os.WriteFile(filepath.Join(s.cfg.profileDir, file+".txt"), out, 0o644)
}

// saveMemoryBreakdown writes file-mem.txt: the Go runtime's own account
// (runtime.MemStats, from the heap page's debug form) and the kernel's
// (smaps_rollup: anonymous memory against pages of the binary), which
// together say where the resident memory goes.
func (s *suite) saveMemoryBreakdown(ctx context.Context, file string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+pprofAddr+"/debug/pprof/heap?debug=1", nil)
	if err != nil {
		return err
	}
	resp, err := (&http.Client{Timeout: time.Minute}).Do(req)
	if err != nil {
		return fmt.Errorf("heap?debug=1: %w", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	out := []byte("# smaps_rollup\n")
	rollup, err := os.ReadFile(fmt.Sprintf("/proc/%d/smaps_rollup", s.env.Agent.PID()))
	if err != nil {
		return err
	}
	out = append(out, rollup...)
	smaps, err := os.ReadFile(fmt.Sprintf("/proc/%d/smaps", s.env.Agent.PID()))
	if err != nil {
		return err
	}
	out = append(out, "\n# resident mappings (smaps: Rss and Anonymous kB, then the mapping)\n"...)
	out = append(out, residentMappings(smaps)...)
	out = append(out, "\n# runtime.MemStats\n"...)
	if i := bytes.Index(body, []byte("# runtime.MemStats")); i >= 0 {
		out = append(out, body[i:]...)
	}
	return os.WriteFile(filepath.Join(s.cfg.profileDir, file+"-mem.txt"), out, 0o644)
}

// perfLoad samples the whole agent process with perf during one more load,
// and writes perf's reports as name-perf-*.txt.
func (s *suite) perfLoad(ctx context.Context, name string, nets []*simnode.Pod, opts bench.LoadOptions) error {
	dir := s.cfg.profileDir
	data := filepath.Join(dir, name+"-perf.data")
	pid := s.env.Agent.PID()
	rec := exec.CommandContext(ctx, "perf", "record", "-F", strconv.Itoa(profileHz), "-g", "-p", strconv.Itoa(pid), "-o", data, "--", "sleep", fmt.Sprintf("%.1f", (spawnDelay+opts.Warmup+opts.Duration).Seconds()))
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
	s.logf("profile %s: %.0f req/s under perf, p99 %.0f µs", name, st.RPS, st.P99us)
	for _, r := range []struct {
		file string
		args []string
	}{
		{name + "-perf-flat.txt", []string{"report", "-i", data, "--stdio", "--no-children", "--sort", "symbol", "--percent-limit", "0.5"}},
		{name + "-perf-children.txt", []string{"report", "-i", data, "--stdio", "--children", "--sort", "symbol", "-g", "none", "--percent-limit", "2"}},
	} {
		out, err := exec.CommandContext(ctx, "perf", r.args...).Output()
		if err != nil {
			return fmt.Errorf("perf report: %w", err)
		}
		if err := os.WriteFile(filepath.Join(dir, r.file), out, 0o644); err != nil {
			return err
		}
	}
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

// residentMappings is one line per mapping of an smaps file that holds
// resident pages: its Rss and Anonymous kB, then the mapping's header line
// (address range, permissions and file), so a breakdown can say which of
// the binary's segments, heap arenas or stacks the memory is in.
func residentMappings(smaps []byte) []byte {
	var out []byte
	var header string
	var rss int
	for _, line := range strings.Split(string(smaps), "\n") {
		f := strings.Fields(line)
		switch {
		case len(f) > 0 && strings.Contains(f[0], "-") && !strings.HasSuffix(f[0], ":"):
			header = line
		case len(f) >= 2 && f[0] == "Rss:":
			rss, _ = strconv.Atoi(f[1])
		case len(f) >= 2 && f[0] == "Anonymous:" && rss > 0:
			out = append(out, fmt.Sprintf("%7d %7s  %s\n", rss, f[1], header)...)
		}
	}
	return out
}
