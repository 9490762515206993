package main

import (
	"os"
	"runtime/debug"
)

// nodeAgentGCPercent is the agent's GOGC unless GOGC is set. A node agent
// keeps a small live heap (informer caches, about 5 MiB) and allocates
// briefly per request: collecting at 50 % growth instead of Go's 100 %
// held 2-3 MiB less resident under `make bench`'s load, with no change in
// its throughput or CPU per request that the bench could tell from noise
// (docs/performance.md). GOGC=200 was tried before and rejected: more RSS.
const nodeAgentGCPercent = 50

// setGCDefault applies nodeAgentGCPercent unless the environment sets
// GOGC (which the runtime has read already); it returns the percent in force.
func setGCDefault() int {
	if os.Getenv("GOGC") != "" {
		percent := debug.SetGCPercent(-1)
		debug.SetGCPercent(percent)
		return percent
	}
	debug.SetGCPercent(nodeAgentGCPercent)
	return nodeAgentGCPercent
}
