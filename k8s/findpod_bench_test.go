package k8s

import (
	"context"
	"net/netip"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
)

// BenchmarkFindPodHit is the credential route's lookup of a cached pod
// while the pod watch is current, with the runtime's sandbox records on (as
// the chart sets --cni-results-dir): the path every cached request takes.
func BenchmarkFindPodHit(b *testing.B) {
	pod := testPod("a", corev1.PodRunning, "10.0.0.1")
	w, _, _ := newTestWatcherWith(b, newFakeSandboxes(), true, pod)
	for deadline := time.Now().Add(10 * time.Second); !w.podTracker.isCurrent(); time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			b.Fatal("the pod watch did not become current")
		}
	}
	ip, ctx := netip.MustParseAddr("10.0.0.1"), context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if p, err := w.FindPod(ctx, ip); err != nil || p == nil {
			b.Fatalf("FindPod: %v", err)
		}
	}
}
