package k8s

import (
	"context"
	"errors"
	"net/netip"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"
	clocktesting "k8s.io/utils/clock/testing"
)

// The unit tier drives the wait logic with client-go's fake clientset and a
// fake clock; the integration tier runs the same paths against a real API
// server.

const testLookupTimeout = time.Second

// lookupResult is one FindPod outcome.
type lookupResult struct {
	pod *Pod
	err error
}

func newTestWatcher(t *testing.T, start bool, objs ...*corev1.Pod) (*Watcher, *fake.Clientset, *clocktesting.FakeClock) {
	t.Helper()
	client := fake.NewClientset()
	for _, p := range objs {
		if _, err := client.CoreV1().Pods(p.Namespace).Create(context.Background(), p, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	clk := clocktesting.NewFakeClock(time.Unix(1700000000, 0))
	w, err := NewWatcher(client, WatcherOptions{NodeName: "node-a", LookupTimeout: testLookupTimeout, Logger: testLogger(), Clock: clk})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(func() { cancel(); w.Shutdown() })
	if start {
		w.Start(ctx)
		if err := w.WaitForSync(ctx); err != nil {
			t.Fatal(err)
		}
	}
	return w, client, clk
}

// findAsync starts a lookup and waits until it is blocked on the clock.
func findAsync(t *testing.T, w *Watcher, clk *clocktesting.FakeClock, ip string) <-chan lookupResult {
	t.Helper()
	out := make(chan lookupResult, 1)
	go func() {
		p, err := w.FindPod(context.Background(), netip.MustParseAddr(ip))
		out <- lookupResult{p, err}
	}()
	deadline := time.Now().Add(5 * time.Second)
	for !clk.HasWaiters() {
		if time.Now().After(deadline) {
			t.Fatal("the lookup never started waiting")
		}
		time.Sleep(time.Millisecond)
	}
	return out
}

// assertPending checks that a lookup has not answered yet.
func assertPending(t *testing.T, res <-chan lookupResult, why string) {
	t.Helper()
	select {
	case r := <-res:
		t.Fatalf("%s: lookup answered early: %+v, %v", why, r.pod, r.err)
	case <-time.After(50 * time.Millisecond):
	}
}

func receive(t *testing.T, res <-chan lookupResult) lookupResult {
	t.Helper()
	select {
	case r := <-res:
		return r
	case <-time.After(5 * time.Second):
		t.Fatal("the lookup did not answer")
		return lookupResult{}
	}
}

func TestFindPodBeforeSyncWaitsThenFailsNotSynced(t *testing.T) {
	w, _, clk := newTestWatcher(t, false)
	if w.Synced() {
		t.Fatal("Synced before Start")
	}
	res := findAsync(t, w, clk, "10.0.0.1")
	clk.Step(testLookupTimeout - time.Millisecond)
	assertPending(t, res, "before the sync timeout")
	clk.Step(time.Millisecond)
	if r := receive(t, res); !errors.Is(r.err, ErrNotSynced) {
		t.Fatalf("FindPod before sync = %v; want ErrNotSynced", r.err)
	}
}

func TestFindPodWaitsForSyncThenAnswers(t *testing.T) {
	w, _, clk := newTestWatcher(t, false, testPod("a", corev1.PodRunning, "10.0.0.1"))
	res := findAsync(t, w, clk, "10.0.0.1")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	w.Start(ctx)
	if r := receive(t, res); r.err != nil || r.pod.Name != "a" {
		t.Fatalf("FindPod during sync = %+v, %v; want pod a", r.pod, r.err)
	}
	if !w.Synced() {
		t.Fatal("not Synced after a lookup succeeded")
	}
}

func TestFindPodFindsAPodCreatedAfterTheLookupStarted(t *testing.T) {
	w, client, clk := newTestWatcher(t, true)
	res := findAsync(t, w, clk, "10.0.0.2")
	assertPending(t, res, "before the pod exists")
	if _, err := client.CoreV1().Pods("ns").Create(context.Background(), testPod("late", corev1.PodRunning, "10.0.0.2"), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	// No clock step: the informer event, not a poll, must wake the lookup.
	if r := receive(t, res); r.err != nil || r.pod.Name != "late" {
		t.Fatalf("FindPod = %+v, %v; want pod late", r.pod, r.err)
	}
}

func TestFindPodUnknownIPNotFoundAfterTheTimeoutNotBefore(t *testing.T) {
	w, client, clk := newTestWatcher(t, true, testPod("a", corev1.PodRunning, "10.0.0.1"))
	res := findAsync(t, w, clk, "10.0.0.99")
	// Unrelated pod events wake the lookup but must not end it.
	if _, err := client.CoreV1().Pods("ns").Create(context.Background(), testPod("b", corev1.PodRunning, "10.0.0.3"), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	clk.Step(testLookupTimeout - time.Millisecond)
	assertPending(t, res, "before the lookup timeout")
	clk.Step(time.Millisecond)
	if r := receive(t, res); !errors.Is(r.err, ErrPodNotFound) {
		t.Fatalf("FindPod = %+v, %v; want ErrPodNotFound", r.pod, r.err)
	}
}

func TestFindPodAmbiguousIPFailsAtOnce(t *testing.T) {
	w, _, _ := newTestWatcher(t, true, testPod("a", corev1.PodRunning, "10.0.0.1"), testPod("b", corev1.PodRunning, "10.0.0.1"))
	if _, err := w.FindPod(context.Background(), netip.MustParseAddr("10.0.0.1")); !errors.Is(err, ErrAmbiguousIP) {
		t.Fatalf("FindPod = %v; want ErrAmbiguousIP", err)
	}
}

func TestFindPodHonoursContext(t *testing.T) {
	w, _, _ := newTestWatcher(t, true)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := w.FindPod(ctx, netip.MustParseAddr("10.0.0.1")); !errors.Is(err, ErrPodNotFound) || !errors.Is(err, context.Canceled) {
		t.Fatalf("FindPod with a cancelled context = %v; want ErrPodNotFound wrapping context.Canceled", err)
	}
}

func TestFindPodIgnoresPodsOfOtherNodes(t *testing.T) {
	// The fake clientset ignores field selectors, so the other node's pod
	// reaches the store here; the lookup must still not return it.
	other := testPod("elsewhere", corev1.PodRunning, "10.0.0.7")
	other.Spec.NodeName = "node-b"
	w, _, clk := newTestWatcher(t, true, other)
	res := findAsync(t, w, clk, "10.0.0.7")
	clk.Step(testLookupTimeout)
	if r := receive(t, res); !errors.Is(r.err, ErrPodNotFound) {
		t.Fatalf("FindPod = %+v, %v; want ErrPodNotFound for another node's pod", r.pod, r.err)
	}
}

func TestSnapshot(t *testing.T) {
	w, _, _ := newTestWatcher(t, true,
		testPod("a", corev1.PodRunning, "10.0.0.1"),
		testPod("b", corev1.PodRunning, "10.0.0.2"), testPod("c", corev1.PodRunning, "10.0.0.2"),
		terminating(testPod("d", corev1.PodRunning, "10.0.0.3")),
		testPod("done", corev1.PodSucceeded, "10.0.0.4"))
	got := w.Snapshot()
	if len(got) != 3 {
		t.Fatalf("Snapshot has %d IPs; want 3 (completed pods are not indexed): %+v", len(got), got)
	}
	want := map[string]string{"10.0.0.1": "owned", "10.0.0.2": "ambiguous", "10.0.0.3": "no live pod"}
	for _, e := range got {
		if want[e.IP] != e.Verdict {
			t.Errorf("%s: verdict %q; want %q", e.IP, e.Verdict, want[e.IP])
		}
	}
	if got[0].Owner == nil || got[0].Owner.Name != "a" {
		t.Errorf("10.0.0.1 owner = %+v; want a", got[0].Owner)
	}
}
