package main

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/kube2ra/kube2ra/test/bench"
	"github.com/kube2ra/kube2ra/test/harness"
)

// upstreamSessions measures upstream calls per distinct session: pods
// sharing a few roles are created together and then ask for their
// credentials steadily; every CreateSession the fake Roles Anywhere
// granted for those roles is counted, from before the pods existed to the
// end of the load, and divided by the number of distinct sessions (role,
// session name, certificate) it issued.
func (s *suite) upstreamSessions(ctx context.Context) error {
	env := s.env
	if err := env.CreateNamespace(ctx, "sess", allowAll); err != nil {
		return err
	}
	isSessRole := func(arn string) bool { return strings.HasPrefix(arn, harness.RoleARN("sess-")) }
	before := 0
	for _, a := range env.RA.Accepted() {
		if isSessRole(a.RoleARN) {
			before++
		}
	}
	n := s.cfg.sessionPods
	names, roles := make([]string, n), make([]string, n)
	for i := range names {
		names[i], roles[i] = fmt.Sprintf("sess-%02d", i), fmt.Sprintf("sess-%d", i%s.cfg.sessionRoles)
	}
	nets, err := s.burstNets(ctx, n)
	if err != nil {
		return err
	}
	t0 := time.Now()
	if err := s.createRunningPods(ctx, "sess", names, roles, nets); err != nil {
		return fmt.Errorf("creating the session pods: %w", err)
	}
	// Each pod asks for its own role's credentials at a steady pace.
	results := make([]bench.LoadResult, n)
	err = parallel(ctx, n, n, func(i int) error {
		o := bench.LoadOptions{
			Addr: metadataAddr, Path: credPathPrefix + roles[i], Conns: 1, Token: true,
			Duration: s.cfg.sessionLoad, RatePerConn: s.cfg.sessionRate, Timeout: 5 * time.Second, Expect: bench.CredentialsPrefix,
		}
		r, err := s.runLoad(ctx, nets[i:i+1], o)
		results[i] = r
		return err
	})
	if err != nil {
		return err
	}
	total := bench.LoadResult{}
	for _, r := range results {
		total.Merge(r)
	}
	if err := checkClean("session load", total); err != nil {
		return fmt.Errorf("%w; agent log:\n%s", err, s.agentLogTail())
	}
	calls := 0
	sessions := map[string]bool{}
	for _, a := range env.RA.Accepted() {
		if isSessRole(a.RoleARN) {
			calls++
			sessions[a.RoleARN+"|"+a.RoleSessionName+"|"+a.Serial] = true
		}
	}
	calls -= before
	if len(sessions) == 0 {
		return fmt.Errorf("no session was issued for the session pods")
	}
	ratio := float64(calls) / float64(len(sessions))
	s.logf("upstream cost: %d calls for %d sessions over %.0fs (%d requests)", calls, len(sessions), time.Since(t0).Seconds(), total.OK)
	s.report.Add("upstream_calls_per_session", ratio, "ratio",
		fmt.Sprintf("%d CreateSession calls / %d sessions; %d pods sharing %d roles, %.0f req/s each for %s (%d requests)",
			calls, len(sessions), s.cfg.sessionPods, s.cfg.sessionRoles, s.cfg.sessionRate, s.cfg.sessionLoad, total.OK))
	s.report.Detail("upstream_sessions", map[string]any{"calls": calls, "sessions": len(sessions), "requests": total.OK})
	return s.deleteNamespacePods(ctx, "sess")
}
