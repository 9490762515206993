package main

import (
	"fmt"
	"io"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/kube2ra/kube2ra/test/soak/wire"
)

// printReport writes every flavour's table and the verdict; it returns true
// when an invariant broke.
func printReport(w io.Writer, cfg config, reports []*flavourReport, wall time.Duration) bool {
	failed := false
	for _, r := range reports {
		printFlavour(w, cfg, r)
		if r.fatal != nil || len(r.breaks) > 0 {
			failed = true
		}
	}
	if len(reports) < len(cfg.flavours) {
		failed = true
		fmt.Fprintln(w, "soak interrupted before every flavour ran")
	}
	verdict := "PASS"
	if failed {
		verdict = "FAIL"
	}
	fmt.Fprintf(w, "\nsoak %s: %d s of load, wall time %s, logs in %s\n", verdict, cfg.seconds, wall.Round(time.Second), cfg.outDir)
	return failed
}

func printFlavour(w io.Writer, cfg config, r *flavourReport) {
	fmt.Fprintf(w, "\n=== kube2ra soak, %s flavour: %d pods, load %s ===\n", r.flavour, r.pods, r.loadTime.Round(time.Second))
	if r.fatal != nil {
		fmt.Fprintf(w, "STOPPED EARLY: %v\n", r.fatal)
	}
	t := r.t
	total := 0
	for _, n := range t.requests {
		total += n
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "requests\ttotal\tcreds\tlist\ttoken\tpass-through\tforbidden\tforeign role\t")
	fmt.Fprintf(tw, "\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t\n", total, t.requests[wire.KindCreds], t.requests[wire.KindList], t.requests[wire.KindToken],
		t.requests[wire.KindPass], t.requests[wire.KindForbidden], t.requests[wire.KindForeign])
	tw.Flush()
	fmt.Fprintf(w, "answers: %d right role, %d late (role revoked < %s before, max %s), %d refused while entitled to nothing, %d refused within %s of a change\n",
		t.ok, t.late, cfg.grace, t.maxLate.Round(time.Millisecond), t.expected404, t.propagation, cfg.grace)
	fmt.Fprintf(w, "credential latency: p50 %s, p99 %s, max %s\n",
		percentile(t.latencies, 0.5).Round(time.Microsecond), percentile(t.latencies, 0.99).Round(time.Microsecond), percentile(t.latencies, 1).Round(time.Microsecond))
	fmt.Fprintf(w, "WRONG-ROLE ANSWERS: %d   STALE AFTER AN API OUTAGE: %d   LEAKS (node credentials, user-data, signed documents): %d   forbidden answered 200: %d   malformed: %d\n",
		len(t.wrong), len(t.stale), len(t.leaks), len(t.forbiddenServed), len(t.malformed))
	if len(t.stale) > 0 {
		fmt.Fprintf(w, "stale (old state, a write made while the agent's watch was broken, answered before it caught up): %d\n", len(t.stale))
		for i, x := range t.stale {
			if i == 3 {
				fmt.Fprintf(w, "    ... and %d more\n", len(t.stale)-3)
				break
			}
			fmt.Fprintln(w, "    "+x)
		}
	}
	var refused []string
	for code, n := range t.forbiddenRefused {
		refused = append(refused, fmt.Sprintf("%d×%d", n, code))
	}
	sort.Strings(refused)
	fmt.Fprintf(w, "hostile requests refused with: %s\n", strings.Join(refused, ", "))
	fmt.Fprintf(w, "churn: %s\n", joinCounts(r.counts))

	fmt.Fprintln(w, "\nfault windows (s since load start; errors up to the tolerance after the end are the window's):")
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "fault\tfrom\tto\terrors\tby kind\tlast error after end\tnew pod served in\tcreds ok/failed inside\tevidence")
	var began time.Time
	if len(r.windows) > 0 {
		began = r.windows[0].start
	}
	for _, win := range r.windows {
		probe := "-"
		if win.probe >= 0 {
			probe = fmt.Sprintf("%.2fs", win.probe.Seconds())
		}
		fmt.Fprintf(tw, "%s\t%.1f\t%.1f\t%d\t%s\t%.2fs\t%s\t%d/%d\t%s\n", win.name,
			win.start.Sub(began).Seconds(), win.end.Sub(began).Seconds(), win.errorCount(), joinCounts(win.errors),
			win.recovery().Seconds(), probe, win.answered, win.failed, win.note)
	}
	unexplained := 0
	for _, n := range t.unexplainedByKind {
		unexplained += n
	}
	fmt.Fprintf(tw, "outside any window\t\t\t%d\t%s\t\t\t\t\n", unexplained, joinCounts(t.unexplainedByKind))
	tw.Flush()
	netDrops := 0
	for _, n := range t.netDrops {
		netDrops += n
	}
	fmt.Fprintf(w, "kernel: %d packets dropped by full softnet backlogs during the run; %d timeouts outside fault windows fell on such drops (%s) and are the simulated network's, not kube2ra's\n",
		r.kernelDrops, netDrops, joinCounts(t.netDrops))
	if s := r.slow; s != nil {
		fmt.Fprintf(w, "slowloris: %d connections wanted, %d open at most, %d opened, %d closed by the server (longest lived %s), %d answered, %d dial errors\n",
			s.conns, s.maxOpen, s.opened, s.closed, s.maxLife.Round(100*time.Millisecond), s.answered, s.dialErrs)
	}

	fmt.Fprintln(w, "\nagent resources (cold: before any load; start: idle after the warm-up; end: idle after the load; restarted: the new agent after the SIGKILL, under load):")
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "\tcold\tstart\tpeak\tend\tend limit\trestarted\t")
	fmt.Fprintf(tw, "goroutines\t%d\t%d\t%d\t%d\t%d\t%d\t\n", r.cold.goroutines, r.start.goroutines, r.peak.goroutines, r.end.goroutines, int(float64(r.start.goroutines)*1.1), r.restarted.goroutines)
	fmt.Fprintf(tw, "RSS MiB\t%.1f\t%.1f\t%.1f\t%.1f\t%.1f\t%.1f\t\n", mib(r.cold.rssKiB), mib(r.start.rssKiB), mib(r.peak.rssKiB), mib(r.end.rssKiB), mib(r.start.rssKiB)*1.2, mib(r.restarted.rssKiB))
	fmt.Fprintf(tw, "heap in use MiB\t%.1f\t%.1f\t%.1f\t%.1f\t\t%.1f\t\n", mib(r.cold.heapKiB), mib(r.start.heapKiB), mib(r.peak.heapKiB), mib(r.end.heapKiB), mib(r.restarted.heapKiB))
	fmt.Fprintf(tw, "open files\t%d\t%d\t%d\t%d\t%d\t%d\t\n", r.cold.fds, r.start.fds, r.peak.fds, r.end.fds, r.start.fds, r.restarted.fds)
	tw.Flush()
	fmt.Fprintf(w, "end reading taken %s after the load stopped\n", r.settledIn.Round(time.Second))

	if len(r.breaks) == 0 && r.fatal == nil {
		fmt.Fprintln(w, "invariants: all hold")
		return
	}
	fmt.Fprintln(w, "INVARIANTS BROKEN:")
	for _, b := range r.breaks {
		fmt.Fprintln(w, "  - "+b)
	}
}

func mib(kib int) float64 { return float64(kib) / 1024 }

// joinCounts prints a count map sorted by key.
func joinCounts(m map[string]int) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, 0, len(keys))
	for _, k := range keys {
		parts = append(parts, fmt.Sprintf("%s %d", k, m[k]))
	}
	if len(parts) == 0 {
		return "-"
	}
	return strings.Join(parts, ", ")
}
