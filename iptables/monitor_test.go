package iptables

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/sirupsen/logrus"
	logtest "github.com/sirupsen/logrus/hooks/test"
	clocktesting "k8s.io/utils/clock/testing"
)

const resync = 30 * time.Second

// startMonitor runs a monitor over rules on a fake clock until the test ends.
func startMonitor(t *testing.T, rules Rules) (*clocktesting.FakeClock, *metrics, *logtest.Hook) {
	t.Helper()
	clk := clocktesting.NewFakeClock(time.Unix(0, 0))
	m, err := newMetrics(prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	log, hook := logtest.NewNullLogger()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- monitor{rules: rules, clock: clk, log: log, metrics: m}.run(ctx, resync) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("monitor returned %v", err)
			}
		case <-time.After(2 * time.Second):
			t.Error("monitor did not stop after its context ended")
		}
	})
	waitFor(t, "the monitor's ticker", func() bool { return clk.HasWaiters() })
	return clk, m, hook
}

// waitFor polls a condition the monitor goroutine makes true.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

func TestMonitorRestoresFlushedRules(t *testing.T) {
	fake := NewFake()
	if _, err := fake.EnsureRules(context.Background()); err != nil {
		t.Fatal(err)
	}
	clk, m, hook := startMonitor(t, fake)

	clk.Step(resync)
	waitFor(t, "the first check", func() bool { return fake.Calls().Present == 1 })
	waitFor(t, "the gauge", func() bool { return testutil.ToFloat64(m.present) == 1 })
	if got := fake.Calls().Ensure; got != 1 {
		t.Errorf("present rules were ensured again: %d ensure calls", got)
	}

	fake.Flush()
	clk.Step(resync - time.Second)
	time.Sleep(10 * time.Millisecond)
	if fake.Installed() {
		t.Fatal("restored before the interval elapsed")
	}
	clk.Step(time.Second)
	waitFor(t, "the restore", func() bool { return testutil.ToFloat64(m.restores) == 1 })
	if !fake.Installed() {
		t.Error("rules not restored")
	}
	if got := testutil.ToFloat64(m.present); got != 1 {
		t.Errorf("rules_present = %v after restore, want 1", got)
	}
	warned := false
	for _, e := range hook.AllEntries() {
		if e.Level == logrus.WarnLevel {
			warned = true
		}
	}
	if !warned {
		t.Error("no warning logged for the restore")
	}
}

func TestMonitorKeepsTryingWhenRestoreFails(t *testing.T) {
	fake := NewFake()
	fake.SetErrors(errors.New("xtables lock held"), nil, nil)
	clk, m, _ := startMonitor(t, fake)

	clk.Step(resync)
	waitFor(t, "a failed restore", func() bool { return fake.Calls().Ensure == 1 })
	waitFor(t, "the gauge", func() bool { return fake.Calls().Present == 1 })
	if got := testutil.ToFloat64(m.present); got != 0 {
		t.Errorf("rules_present = %v while missing, want 0", got)
	}
	if got := testutil.ToFloat64(m.restores); got != 0 {
		t.Errorf("restores = %v after a failure, want 0", got)
	}

	fake.SetErrors(nil, nil, nil)
	clk.Step(resync)
	waitFor(t, "the restore", func() bool { return testutil.ToFloat64(m.restores) == 1 })
	if !fake.Installed() {
		t.Error("rules not restored on the next tick")
	}
}

func TestMonitorRefusesNonPositiveInterval(t *testing.T) {
	m, _ := newMetrics(nil)
	log, _ := logtest.NewNullLogger()
	err := monitor{rules: NewFake(), clock: clocktesting.NewFakeClock(time.Unix(0, 0)), log: log, metrics: m}.run(context.Background(), 0)
	if err == nil {
		t.Fatal("interval 0 accepted")
	}
}

func TestFakeVerbs(t *testing.T) {
	ctx := context.Background()
	f := NewFake()
	if p, _ := f.RulesPresent(ctx); p {
		t.Error("new fake has rules")
	}
	if c, _ := f.EnsureRules(ctx); !c {
		t.Error("first EnsureRules reported no change")
	}
	if c, _ := f.EnsureRules(ctx); c {
		t.Error("second EnsureRules reported a change")
	}
	if err := f.Remove(ctx); err != nil {
		t.Error(err)
	}
	if err := f.Remove(ctx); err != nil {
		t.Errorf("Remove with nothing installed: %v", err)
	}
	if got := f.Calls(); got != (FakeCalls{Ensure: 2, Present: 1, Remove: 2}) {
		t.Errorf("calls = %+v", got)
	}
}
