package main

import (
	"os"
	"runtime/debug"
)

// nodeAgentGCPercent is the agent's GOGC unless GOGC is set. A node agent
// keeps a small live heap (informer caches, about 5 MiB) and allocates
// briefly per request: collecting at 50 % growth instead of Go's 100 %
// held 2 MiB less resident in every `make bench` run, for the same
// credential-route throughput and about 2.5 µs more CPU per token-door
// request (docs/performance.md weighs it). GOGC=200 with GOMEMLIMIT=20MiB
// is the throughput end of the trade: +0.1 on both doors, 5 MiB more.
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
