// Command bench is `make bench`: kube2ra measured on the end-to-end harness
// (the built binary in a simulated node's network namespace, real iptables
// DNAT, a real kube-apiserver, fake AWS), against a bare net/http baseline
// behind the same DNAT rule, with load generated from inside pod network
// namespaces. It prints a table, one `BENCH <name> <value> <unit>` line per
// figure of issue 10, and writes JSON to $BENCH_OUT when set.
//
// Environment: BENCH_QUICK=1 runs a shorter, smaller version with the same
// figure names (under two minutes); BENCH_OUT=path writes the JSON report;
// BENCH_ONLY=cap,cred,pass,cold,sess,mem,podid runs a subset (for tuning);
// BENCH_PROFILE=dir records a perf CPU profile of the agent under the
// credential load into dir (needs perf; builds an unstripped agent).
// What-if runs: BENCH_AGENT_ARGS="--log-level=warn" adds agent flags,
// BENCH_AGENT_ENV="GOGC=400" adds agent environment; BENCH_AGENT_LOG=prefix
// keeps each node's agent log; BENCH_BASELINE_HARDENED=1 gives the bare
// server the agent's timeouts and connection hook.
//
// The client side runs inside pod network namespaces as a separate small
// program, test/bench/loadgen, built once at the start and started through
// `ip netns exec`.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"runtime"
	"slices"
	"strings"
	"time"

	"github.com/kube2ra/kube2ra/test/simnode"
)

// netnsPrefix names every network namespace this program creates.
const netnsPrefix = "k2r-bench"

// Phases that BENCH_ONLY can select.
const (
	phaseCred = "cred"
	// phasePodID is the token door against the bare server and the metadata door.
	phasePodID = "podid"
	phasePass  = "pass"
	phaseCold  = "cold"
	phaseSess  = "sess"
	phaseMem   = "mem"
	// phaseCap is upstream calls per pod-hour per session naming, simulated.
	phaseCap = "cap"
)

var allPhases = []string{phaseCap, phaseMem, phaseCred, phaseCold, phaseSess, phasePass, phasePodID}

// phaseFigures are the figures each phase must print: a run that misses
// one fails, so a phase that breaks cannot pass as a smaller table.
var phaseFigures = map[string][]string{
	phaseCap: {"upstream_calls_per_pod_hour_node", "upstream_calls_per_pod_hour_pod", "upstream_calls_per_pod_hour_none",
		"upstream_calls_per_pod_hour_chained_node", "upstream_calls_per_pod_hour_chained_pod", "upstream_calls_per_pod_hour_chained_none"},
	phaseMem:  {"ready_ms", "rss_mib_remote0", "rss_mib_remote20000"},
	phaseCred: {"cred_rps", "baseline_rps", "cred_rps_ratio", "cred_p50_us", "cred_p99_us", "baseline_p99_us", "cred_p99_ratio", "rss_mib_load"},
	phaseCold: {"cold_first_request_p50_ms", "cold_first_request_p99_ms", "cold_noprefetch_p99_ms",
		"cold_chained_first_request_p50_ms", "cold_chained_first_request_p99_ms", "upstream_calls_per_chained_session"},
	phaseSess:  {"upstream_calls_per_session"},
	phasePass:  {"passthrough_rps", "passthrough_p99_us", "direct_upstream_p99_us"},
	phasePodID: {"pod_identity_rps", "pod_identity_rps_ratio", "pod_identity_p99_us", "pod_identity_p99_ratio", "pod_identity_vs_cred_rps"},
}

// expectedFigures are the figures the selected phases print.
func (c config) expectedFigures() []string {
	var names []string
	for _, p := range c.phases {
		names = append(names, phaseFigures[p]...)
	}
	return names
}

// config is the size of a run.
type config struct {
	// quick is BENCH_QUICK.
	quick bool
	// out is BENCH_OUT.
	out string
	// profileDir is BENCH_PROFILE.
	profileDir string
	// hardenedBaseline is BENCH_BASELINE_HARDENED=1.
	hardenedBaseline bool
	// phases to run.
	phases []string

	// rounds is the number of A/B pairs.
	rounds int
	// warmup and measure are the parts of one A or B phase.
	warmup, measure time.Duration
	// loadPods and connsPerPod shape the closed-loop load.
	loadPods, connsPerPod int
	// coldPods is the size of each cold-start burst.
	coldPods int
	// sessionPods, sessionRoles, sessionLoad and sessionRate shape the
	// upstream-cost run.
	sessionPods, sessionRoles int
	sessionLoad               time.Duration
	sessionRate               float64
	// localPods, namespaces and remotePods shape the memory run.
	localPods, namespaces, remotePods int
	// readyRuns is how many agent starts ready_ms takes the median of.
	readyRuns int
	// rssSettle is how long after ready RSS is read.
	rssSettle time.Duration
}

func newConfig() (config, error) {
	c := config{
		quick:            os.Getenv("BENCH_QUICK") != "" && os.Getenv("BENCH_QUICK") != "0",
		out:              os.Getenv("BENCH_OUT"),
		profileDir:       os.Getenv("BENCH_PROFILE"),
		hardenedBaseline: os.Getenv("BENCH_BASELINE_HARDENED") == "1",
		phases:           allPhases,

		rounds: 3, warmup: time.Second, measure: 5 * time.Second,
		loadPods: 4, connsPerPod: 4,
		coldPods:    50,
		sessionPods: 50, sessionRoles: 5, sessionLoad: 60 * time.Second, sessionRate: 20,
		localPods: 110, namespaces: 2000, remotePods: 20000,
		readyRuns: 3, rssSettle: 3 * time.Second,
	}
	if c.quick {
		c.warmup, c.measure = 500*time.Millisecond, 2*time.Second
		c.sessionLoad = 5 * time.Second
		c.namespaces, c.remotePods = 500, 1000
		c.readyRuns = 1
		c.rssSettle = time.Second
	}
	if only := os.Getenv("BENCH_ONLY"); only != "" {
		c.phases = nil
		for _, p := range strings.Split(only, ",") {
			p = strings.TrimSpace(p)
			if !slices.Contains(allPhases, p) {
				return c, fmt.Errorf("BENCH_ONLY: unknown phase %q (phases: %s)", p, strings.Join(allPhases, ","))
			}
			c.phases = append(c.phases, p)
		}
	}
	return c, nil
}

func (c config) runs(phase string) bool { return slices.Contains(c.phases, phase) }

func main() {
	if _, inside := simnode.Inside(); !inside {
		os.Exit(simnode.Reexec(netnsPrefix))
	}
	cfg, err := newConfig()
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(2)
	}
	if err := run(cfg); err != nil {
		fmt.Fprintln(os.Stderr, "bench: FAILED:", err)
		os.Exit(1)
	}
}

// runBound caps the whole run: full runs take about five minutes.
const runBound = 15 * time.Minute

func run(cfg config) error {
	ctx, cancel := context.WithTimeout(context.Background(), runBound)
	defer cancel()
	s, err := newSuite(cfg)
	if err != nil {
		return err
	}
	defer s.close()
	rep := s.report
	loadStart := loadAverage()
	var errs []error
	step := func(phase string, f func(context.Context) error) {
		if !cfg.runs(phase) || ctx.Err() != nil {
			return
		}
		if err := f(ctx); err != nil {
			s.logf("phase %s failed: %v", phase, err)
			errs = append(errs, fmt.Errorf("%s: %w", phase, err))
		}
	}
	step(phaseCap, s.upstreamCapacity)
	// One Roles Anywhere node for readiness and memory (measured first, on
	// a fresh agent), then, with those pods and namespaces still there as a
	// realistic cluster, the credential route, cold starts and upstream
	// cost; an EC2 node for pass-through.
	if cfg.runs(phaseMem) || cfg.runs(phaseCred) || cfg.runs(phaseCold) || cfg.runs(phaseSess) {
		if err := s.startRA(ctx); err != nil {
			return err
		}
		step(phaseMem, s.memory)
		if !s.env.Agent.Running() {
			if err := s.restartAgent(ctx); err != nil {
				return err
			}
		}
		step(phaseCred, s.credRoute)
		step(phaseCold, s.coldStarts)
		step(phaseCold, s.coldChained)
		// The session run also lets the upstream rate limiter refill
		// between the two cold-start bursts.
		step(phaseSess, s.upstreamSessions)
		step(phaseCold, s.coldNoPrefetch)
		s.closeEnv()
	}
	if cfg.runs(phasePass) {
		if err := s.startEC2(ctx); err != nil {
			return err
		}
		step(phasePass, s.passThrough)
		s.closeEnv()
	}
	if cfg.runs(phasePodID) {
		if err := s.startPodIdentity(ctx); err != nil {
			return err
		}
		step(phasePodID, s.podIdentityRoute)
		s.closeEnv()
	}

	rep.WallSeconds = time.Since(rep.Started).Seconds()
	rep.Machine = fmt.Sprintf("%d CPUs, 1-minute load average %s at start, %s at end (other work on the machine competes with every figure)", runtime.NumCPU(), loadStart, loadAverage())
	if err := rep.WriteTable(os.Stdout); err != nil {
		return err
	}
	fmt.Println()
	if err := rep.WriteBenchLines(os.Stdout); err != nil {
		return err
	}
	if cfg.out != "" {
		if err := rep.WriteJSON(cfg.out); err != nil {
			return err
		}
		fmt.Printf("\nJSON report written to %s\n", cfg.out)
	}
	if missing := rep.Missing(cfg.expectedFigures()); len(missing) > 0 {
		errs = append(errs, fmt.Errorf("figures not measured: %s", strings.Join(missing, ", ")))
	}
	return errors.Join(errs...)
}

// quickNote marks figures measured at a reduced scale in quick mode.
func (s *suite) quickNote(full, quick string) string {
	if s.cfg.quick {
		return quick
	}
	return full
}
