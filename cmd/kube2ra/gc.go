package main

import (
	"os"
	"runtime"
	"runtime/debug"
)

// nodeAgentGCPercent is the agent's GOGC unless GOGC is set. A node agent
// keeps a small live heap (informer caches, about 3 MiB) and, since the
// lane (package fastlane), allocates about 1 KB a request: collecting at
// 25 % growth instead of Go's 100 % holds 1–2 MiB less resident under load
// at a few percent of one CPU on the bench's closed loop (a node's real
// traffic, a few requests per pod per hour, never notices);
// docs/performance.md weighs it. Below 25 the resident memory stopped
// falling (GOGC=10: the same within the runs' noise).
const nodeAgentGCPercent = 25

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

// nodeAgentMaxProcs caps the processors the agent runs Go code on, unless
// GOMAXPROCS is set. Go's default is every CPU of the node (the chart sets
// no CPU limit, which Go 1.25 would follow), and each processor keeps its
// own cache of heap spans: in `make bench`, GOMAXPROCS=16 held 2.8 MiB more
// at rest and 4.9 MiB more under load than 2, and 1 holds another 1 MiB
// less under load than 2 (24.1–24.4 MiB against 25.1–25.5, four pairs).
// One processor serves over 80,000 cached requests a second with the lane
// (package fastlane), at a lower p99 than two on the bench's two CPUs
// (0.49–0.62 of the bare server's against 0.70–0.82), and the first
// requests of 50 starting pods were as fast (`BENCH_ONLY=cold`, three
// pairs, within the runs' noise); the agent's slow work (AWS calls, the
// API server) waits on the network, not on a processor, and a goroutine
// that computes for longer is preempted within 10 ms.
// docs/performance.md, "Processors", has the runs.
const nodeAgentMaxProcs = 1

// setMaxProcsDefault lowers GOMAXPROCS to nodeAgentMaxProcs unless the
// environment sets GOMAXPROCS; it returns the number in force.
func setMaxProcsDefault() int {
	current := runtime.GOMAXPROCS(0)
	n := maxProcsDefault(os.Getenv("GOMAXPROCS") != "", current)
	if n != current {
		runtime.GOMAXPROCS(n)
	}
	return n
}

// maxProcsDefault is setMaxProcsDefault's choice for the runtime's current
// GOMAXPROCS.
func maxProcsDefault(setByOperator bool, current int) int {
	if setByOperator || current <= nodeAgentMaxProcs {
		return current
	}
	return nodeAgentMaxProcs
}
