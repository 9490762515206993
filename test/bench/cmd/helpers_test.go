package main

import (
	"context"
	"errors"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kube2ra/kube2ra/test/bench"
)

func TestProcessReadingsOfThisProcessAreSane(t *testing.T) {
	r, err := readRSS(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if r.MiB <= 1 || r.HWMMiB < r.MiB {
		t.Fatalf("RSS %.1f MiB, peak %.1f MiB", r.MiB, r.HWMMiB)
	}
	// Burn CPU until /proc/self/stat counts 30 ms of it. Spinning for a
	// fixed wall time was flaky on a loaded machine (the scheduler may give
	// this process little of it); a reader that never counts fails at the
	// deadline instead.
	before, err := processCPU(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	const want = 30 * time.Millisecond
	deadline := time.Now().Add(30 * time.Second)
	for {
		after, err := processCPU(os.Getpid())
		if err != nil {
			t.Fatal(err)
		}
		if after-before >= want {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("30 s of spinning counted as %v of CPU", after-before)
		}
		for end := time.Now().Add(5 * time.Millisecond); time.Now().Before(end); {
		}
	}
	if _, err := readRSS(0); err == nil {
		t.Fatal("pid 0 accepted")
	}
}

func TestSyncedLineFindsTheLastSync(t *testing.T) {
	log := `time="x" level=info msg="informers synced" namespaces=4 pods=0
time="y" level=info msg="informers synced" namespaces=2004 pods=110
`
	if got := syncedLine(log); got != "agent cached pods=110 namespaces=2004" {
		t.Fatalf("got %q", got)
	}
	if got := syncedLine("nothing"); got != "no sync line in the agent log" {
		t.Fatalf("got %q", got)
	}
}

func TestParallelRunsEveryJobAndReturnsAnError(t *testing.T) {
	var n atomic.Int32
	boom := errors.New("boom")
	err := parallel(context.Background(), 100, 7, func(i int) error {
		n.Add(1)
		if i == 42 {
			return boom
		}
		return nil
	})
	if !errors.Is(err, boom) || n.Load() != 100 {
		t.Fatalf("err %v after %d jobs", err, n.Load())
	}
	if err := parallel(context.Background(), 0, 4, func(int) error { return boom }); err != nil {
		t.Fatalf("no jobs, error %v", err)
	}
}

func TestQuickConfigKeepsEveryPhaseButSmaller(t *testing.T) {
	t.Setenv("BENCH_QUICK", "1")
	t.Setenv("BENCH_ONLY", "")
	q, err := newConfig()
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv("BENCH_QUICK", "")
	f, err := newConfig()
	if err != nil {
		t.Fatal(err)
	}
	if len(q.phases) != len(allPhases) || q.rounds < 3 || q.measure >= f.measure || q.remotePods >= f.remotePods || q.coldPods != 50 {
		t.Fatalf("quick %+v\nfull %+v", q, f)
	}
	t.Setenv("BENCH_ONLY", "cred,nope")
	if _, err := newConfig(); err == nil {
		t.Fatal("unknown phase accepted")
	}
}

// TestEveryFigureBelongsToOnePhase: a full run expects every figure the
// issues ask for, and a subset run expects exactly its phases' figures, so
// a figure a phase stops printing fails the run (make test's smoke bench).
func TestEveryFigureBelongsToOnePhase(t *testing.T) {
	seen := map[string]string{}
	for phase, names := range phaseFigures {
		for _, n := range names {
			if other, dup := seen[n]; dup {
				t.Errorf("%s is expected from %s and %s", n, other, phase)
			}
			seen[n] = phase
		}
	}
	for _, n := range bench.FigureNames {
		if seen[n] == "" {
			t.Errorf("%s is a figure of the report but no phase is expected to print it", n)
		}
	}
	t.Setenv("BENCH_QUICK", "")
	t.Setenv("BENCH_ONLY", "mem")
	c, err := newConfig()
	if err != nil {
		t.Fatal(err)
	}
	r := &bench.Report{}
	r.Add("ready_ms", 1, "ms", "")
	if got := strings.Join(r.Missing(c.expectedFigures()), ","); got != "rss_mib_remote0,rss_mib_remote20000" {
		t.Errorf("BENCH_ONLY=mem with ready_ms only: missing %q, want the two RSS figures", got)
	}
}
