package main

import (
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
