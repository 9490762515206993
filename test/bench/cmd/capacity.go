package main

import (
	"context"
	"fmt"
	"time"

	"github.com/kube2ra/kube2ra/credentials"
	"github.com/kube2ra/kube2ra/test/bench"
)

// Capacity run: one node as README's capacity section assumes it.
const (
	capacityPods    = 30
	capacityRoles   = 5
	capacitySession = time.Hour
	capacityStep    = 15 * time.Second
	// capacityFleetNodes is the fleet the notes extrapolate to.
	capacityFleetNodes = 1000
)

// upstreamCapacity measures upstream calls per pod-hour for each session
// naming by driving the real credential cache on a fake clock over
// simulated hours (bench.SimulateUpstream): no network, seconds of real time.
func (s *suite) upstreamCapacity(ctx context.Context) error {
	measure := 24 * time.Hour
	if s.cfg.quick {
		measure = 6 * time.Hour
	}
	for _, target := range []bool{false, true} {
		for _, naming := range []credentials.SessionNaming{credentials.SessionNamingNode, credentials.SessionNamingPod, credentials.SessionNamingNone} {
			r, err := bench.SimulateUpstream(ctx, bench.UpstreamSimOptions{
				Naming: naming, Pods: capacityPods, Roles: capacityRoles, Session: capacitySession,
				Warmup: capacitySession, Measure: measure, Step: capacityStep, Target: target,
			})
			if err != nil {
				return fmt.Errorf("--session-name=%s (target role %t): %w", naming, target, err)
			}
			name, what := "upstream_calls_per_pod_hour_"+string(naming), "--session-name="+string(naming)
			if target {
				name, what = "upstream_calls_per_pod_hour_chained_"+string(naming), what+" with a target role (two calls per fetch, 1 h sessions at most)"
			}
			fleet := r.CallsPerPodHour * capacityPods * capacityFleetNodes / time.Hour.Seconds()
			s.report.Add(name, r.CallsPerPodHour, "calls",
				fmt.Sprintf("%s: %d calls for %d sessions over %s simulated (%d pods, %d roles, %s sessions, %d misses); %.1f calls/s for %d such nodes, %.2f calls per session-hour",
					what, r.Calls, r.Sessions, measure, capacityPods, capacityRoles, capacitySession, r.Misses, fleet, capacityFleetNodes, float64(r.Calls)/(float64(r.Sessions)*measure.Hours())))
		}
	}
	return nil
}
