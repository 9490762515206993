package bench

import (
	"context"
	"testing"
	"time"

	"github.com/kube2ra/kube2ra/credentials"
)

// TestSimulatedUpstreamCallsFollowTheSessionNaming runs the real cache on a
// fake clock for simulated hours: per-pod names make one session per pod,
// node names and none one per role; every session is refreshed once per
// 43.2 to 48 minutes of a 1 h session (at 80 % of its life, up to 10 %
// earlier by jitter).
func TestSimulatedUpstreamCallsFollowTheSessionNaming(t *testing.T) {
	const pods, roles = 30, 5
	for _, tc := range []struct {
		naming       credentials.SessionNaming
		wantSessions int
	}{
		{credentials.SessionNamingPod, pods},
		{credentials.SessionNamingNode, roles},
		{credentials.SessionNamingNone, roles},
	} {
		t.Run(string(tc.naming), func(t *testing.T) {
			r, err := SimulateUpstream(context.Background(), UpstreamSimOptions{
				Naming: tc.naming, Pods: pods, Roles: roles, Session: time.Hour,
				Warmup: time.Hour, Measure: 6 * time.Hour, Step: 15 * time.Second,
			})
			if err != nil {
				t.Fatal(err)
			}
			if r.Sessions != tc.wantSessions {
				t.Errorf("%d sessions, want %d", r.Sessions, tc.wantSessions)
			}
			// Each session is refreshed every 43.2..48 minutes: over 6 h that
			// is 7.5..8.33 calls per session, give or take one at the edges.
			perSession := float64(r.Calls) / float64(tc.wantSessions)
			if lo, hi := 6*60/48.0-1, 6*60/43.2+1; perSession < lo || perSession > hi {
				t.Errorf("%.2f calls per session in 6 h, want %.2f..%.2f", perSession, lo, hi)
			}
			t.Logf("%s: %d calls, %.3f per pod-hour, %d misses", tc.naming, r.Calls, r.CallsPerPodHour, r.Misses)
		})
	}
}

// TestSimulatedChainedSessionsCostTwoCallsPerRefresh: with a target role
// the real chain source makes two calls (first hop, target hop) per fetch,
// and the target session, one hour at most, is refreshed as often as a
// direct 1 h session: twice the calls per session-hour of a direct session.
func TestSimulatedChainedSessionsCostTwoCallsPerRefresh(t *testing.T) {
	const pods, roles = 30, 5
	opts := UpstreamSimOptions{Naming: credentials.SessionNamingNode, Pods: pods, Roles: roles, Session: 2 * time.Hour,
		Warmup: 2 * time.Hour, Measure: 6 * time.Hour, Step: 15 * time.Second}
	direct, err := SimulateUpstream(context.Background(), opts)
	if err != nil {
		t.Fatal(err)
	}
	opts.Target = true
	chained, err := SimulateUpstream(context.Background(), opts)
	if err != nil {
		t.Fatal(err)
	}
	if chained.Sessions != roles {
		t.Errorf("%d chained sessions, want %d (one per role and target on the node)", chained.Sessions, roles)
	}
	// Direct 2 h sessions: refreshed every 86.4..96 min, 3.75..4.17 per 6 h.
	// Chained: capped at 1 h, refreshed every 43.2..48 min through two
	// hops, 15..16.7 calls per 6 h.
	perDirect, perChained := float64(direct.Calls)/roles, float64(chained.Calls)/roles
	if lo, hi := 2*(6*60/48.0)-2, 2*(6*60/43.2)+2; perChained < lo || perChained > hi {
		t.Errorf("%.2f calls per chained session in 6 h, want %.2f..%.2f", perChained, lo, hi)
	}
	if perChained < 3*perDirect {
		t.Errorf("chained %.2f vs direct %.2f calls per session: the 1 h cap and the second hop should make it about 4x", perChained, perDirect)
	}
	t.Logf("direct %.3f, chained %.3f calls per pod-hour; misses %d, %d", direct.CallsPerPodHour, chained.CallsPerPodHour, direct.Misses, chained.Misses)
}
