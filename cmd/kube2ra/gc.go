package main

import "runtime/debug"

// defaultGCPercent is the agent's GC target when GOGC is not set. Its live
// heap is small (about 10 MiB with a full node), so letting the heap grow
// to 3× rather than 2× of it between collections costs a few MiB, and
// saves about 7 µs of CPU per credential request, an eighth of the
// route's cost (docs/performance.md). The chart's GOMEMLIMIT still bounds
// the heap near the container's memory limit.
const defaultGCPercent = 200

// tuneGC applies defaultGCPercent unless the operator set GOGC, and
// returns the GC percent in force.
func tuneGC(lookupEnv func(string) (string, bool)) int {
	if _, set := lookupEnv("GOGC"); set {
		current := debug.SetGCPercent(100)
		debug.SetGCPercent(current)
		return current
	}
	debug.SetGCPercent(defaultGCPercent)
	return defaultGCPercent
}
