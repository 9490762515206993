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
	for _, naming := range []credentials.SessionNaming{credentials.SessionNamingNode, credentials.SessionNamingPod, credentials.SessionNamingNone} {
		r, err := bench.SimulateUpstream(ctx, bench.UpstreamSimOptions{
			Naming: naming, Pods: capacityPods, Roles: capacityRoles, Session: capacitySession,
			Warmup: capacitySession, Measure: measure, Step: capacityStep,
		})
		if err != nil {
			return fmt.Errorf("--session-name=%s: %w", naming, err)
		}
		fleet := r.CallsPerPodHour * capacityPods * capacityFleetNodes / time.Hour.Seconds()
		s.report.Add("upstream_calls_per_pod_hour_"+string(naming), r.CallsPerPodHour, "calls",
			fmt.Sprintf("--session-name=%s: %d calls for %d sessions over %s simulated (%d pods, %d roles, %s sessions, %d misses); %.1f calls/s for %d such nodes",
				naming, r.Calls, r.Sessions, measure, capacityPods, capacityRoles, capacitySession, r.Misses, fleet, capacityFleetNodes))
	}
	return nil
}
