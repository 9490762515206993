package main

import (
	"runtime/debug"
	"testing"
)

func TestTuneGCDefaultsUnlessGOGCIsSet(t *testing.T) {
	prev := debug.SetGCPercent(100)
	t.Cleanup(func() { debug.SetGCPercent(prev) })

	if got := tuneGC(func(string) (string, bool) { return "", false }); got != defaultGCPercent {
		t.Fatalf("tuneGC without GOGC = %d, want %d", got, defaultGCPercent)
	}
	if now := debug.SetGCPercent(100); now != defaultGCPercent {
		t.Fatalf("GC percent in force %d, want %d", now, defaultGCPercent)
	}
	// GOGC set: the runtime already applied it; tuneGC leaves it alone.
	debug.SetGCPercent(50)
	if got := tuneGC(func(k string) (string, bool) { return "50", k == "GOGC" }); got != 50 {
		t.Fatalf("tuneGC with GOGC=50 = %d, want 50", got)
	}
	if now := debug.SetGCPercent(100); now != 50 {
		t.Fatalf("GC percent in force %d, want the operator's 50", now)
	}
}
