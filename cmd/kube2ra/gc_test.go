package main

import (
	"runtime"
	"runtime/debug"
	"testing"
)

// TestGCDefaultYieldsToGOGC: the agent collects at nodeAgentGCPercent
// unless the operator set GOGC, whose value stays in force.
func TestGCDefaultYieldsToGOGC(t *testing.T) {
	before := debug.SetGCPercent(100)
	t.Cleanup(func() { debug.SetGCPercent(before) })

	t.Setenv("GOGC", "300")
	debug.SetGCPercent(300) // as the runtime has read it at start
	if got := setGCDefault(); got != 300 || debug.SetGCPercent(300) != 300 {
		t.Errorf("with GOGC set the percent became %d, want the operator's 300", got)
	}
	t.Setenv("GOGC", "")
	debug.SetGCPercent(100)
	if got := setGCDefault(); got != nodeAgentGCPercent || debug.SetGCPercent(100) != nodeAgentGCPercent {
		t.Errorf("without GOGC the percent is %d, want %d", got, nodeAgentGCPercent)
	}
}

// TestMaxProcsDefault: the agent runs on at most nodeAgentMaxProcs
// processors, unless the operator set GOMAXPROCS.
func TestMaxProcsDefault(t *testing.T) {
	for _, c := range []struct {
		operator      bool
		current, want int
	}{
		{false, 1, 1},
		{false, 2, nodeAgentMaxProcs},
		{false, 16, nodeAgentMaxProcs},
		{false, 96, nodeAgentMaxProcs},
		{true, 16, 16},
		{true, 1, 1},
	} {
		if got := maxProcsDefault(c.operator, c.current); got != c.want {
			t.Errorf("GOMAXPROCS set by the operator: %t, runtime's %d: got %d, want %d", c.operator, c.current, got, c.want)
		}
	}
	before := runtime.GOMAXPROCS(8)
	t.Cleanup(func() { runtime.GOMAXPROCS(before) })
	t.Setenv("GOMAXPROCS", "")
	if got := setMaxProcsDefault(); got != nodeAgentMaxProcs || runtime.GOMAXPROCS(0) != nodeAgentMaxProcs {
		t.Errorf("on eight processors the agent runs on %d (said %d), want %d", runtime.GOMAXPROCS(0), got, nodeAgentMaxProcs)
	}
	runtime.GOMAXPROCS(8)
	t.Setenv("GOMAXPROCS", "8")
	if got := setMaxProcsDefault(); got != 8 || runtime.GOMAXPROCS(0) != 8 {
		t.Errorf("with GOMAXPROCS=8 set the agent runs on %d (said %d)", runtime.GOMAXPROCS(0), got)
	}
}
