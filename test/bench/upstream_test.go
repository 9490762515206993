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
