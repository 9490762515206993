package k8s

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
	logtest "github.com/sirupsen/logrus/hooks/test"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/client-go/rest"
	clocktesting "k8s.io/utils/clock/testing"

	"github.com/kube2ra/kube2ra/kubeapi"
	"github.com/kube2ra/kube2ra/kubeapi/kubeapitest"
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

func newTestWatcher(t testing.TB, start bool, objs ...*corev1.Pod) (*Watcher, *fake.Clientset, *clocktesting.FakeClock) {
	t.Helper()
	return newTestWatcherWith(t, nil, start, objs...)
}

// newTestWatcherWith is newTestWatcher with sandboxes as the node's
// sandbox record (none when nil).
func newTestWatcherWith(t testing.TB, sandboxes SandboxIPs, start bool, objs ...*corev1.Pod) (*Watcher, *fake.Clientset, *clocktesting.FakeClock) {
	t.Helper()
	client := fake.NewClientset()
	for _, p := range objs {
		if _, err := client.CoreV1().Pods(p.Namespace).Create(context.Background(), p, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	clk := clocktesting.NewFakeClock(time.Unix(1700000000, 0))
	w, err := NewWatcher(kubeapitest.FromClientset(client), WatcherOptions{NodeName: "node-a", LookupTimeout: testLookupTimeout, Logger: testLogger(), Clock: clk})
	if err != nil {
		t.Fatal(err)
	}
	w.opts.Sandboxes = sandboxes // before Start, as NewWatcher would set it
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

// TestWaitForSyncSaysWhatItWaitsFor: with the API server unreachable, the
// first sync is not silent: every SyncLogInterval (10 s by default) a
// warning names the API server, what is still awaited, and the last failed
// call; nothing is logged before the first interval.
func TestWaitForSyncSaysWhatItWaitsFor(t *testing.T) {
	t.Run("unreachable", func(t *testing.T) {
		// An address that refuses connections: a port just released.
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		server := "http://" + ln.Addr().String()
		ln.Close()
		testWaitForSyncLogs(t, server, "connection refused")
	})
	t.Run("kube2ra may not list", func(t *testing.T) {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusForbidden)
			fmt.Fprintf(w, `{"kind":"Status","apiVersion":"v1","status":"Failure","reason":"Forbidden","code":403,"message":"%s is forbidden: User \"system:serviceaccount:kube-system:kube2ra\" cannot list"}`, r.URL.Path)
		}))
		defer srv.Close()
		testWaitForSyncLogs(t, srv.URL, "cannot list")
	})
}

func testWaitForSyncLogs(t *testing.T, server, wantError string) {
	client, err := kubeapi.New(&rest.Config{Host: server})
	if err != nil {
		t.Fatal(err)
	}
	log, hook := logtest.NewNullLogger()
	clk := clocktesting.NewFakeClock(time.Unix(1700000000, 0))
	// A kubeconfig's server may carry user:password@; the logs never do.
	withPassword := strings.Replace(server, "http://", "http://kube:s3cret@", 1)
	w, err := NewWatcher(client, WatcherOptions{NodeName: "node-a", Logger: log, Clock: clk, APIServer: withPassword})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer func() { cancel(); w.Shutdown() }()
	w.Start(ctx)
	done := make(chan error, 1)
	go func() { done <- w.WaitForSync(ctx) }()

	waits := func() []*logrus.Entry {
		var out []*logrus.Entry
		for _, e := range hook.AllEntries() {
			if strings.Contains(e.Message, "still waiting") {
				out = append(out, e)
			}
		}
		return out
	}
	// waitFor polls cond in real time: the informers run on their own goroutines.
	waitFor := func(what string, cond func() bool) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for !cond() {
			if time.Now().After(deadline) {
				t.Fatalf("timed out waiting for %s; log: %v", what, hook.AllEntries())
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	waitFor("the first failed call", func() bool {
		return w.podTracker.lastCallError() != nil && w.nsTracker.lastCallError() != nil && clk.HasWaiters()
	})
	clk.Step(DefaultSyncLogInterval - time.Second)
	time.Sleep(50 * time.Millisecond)
	if got := waits(); len(got) != 0 {
		t.Fatalf("logged before the interval: %v", got[0].Message)
	}
	for i := 1; i <= 3; i++ {
		clk.Step(time.Second)
		waitFor(fmt.Sprintf("wait log %d", i), func() bool { return len(waits()) == i })
		e := waits()[i-1]
		for _, want := range []string{server, `the pods of node "node-a"`, "the namespaces", fmt.Sprintf("(%ds so far)", 10*i)} {
			if !strings.Contains(e.Message, want) {
				t.Errorf("wait log %d %q lacks %q", i, e.Message, want)
			}
		}
		if strings.Contains(e.Message+fmt.Sprint(e.Data), "s3cret") {
			t.Errorf("wait log %d shows the kubeconfig's password: %q %v", i, e.Message, e.Data)
		}
		if e.Level != logrus.WarnLevel || e.Data["api_server"] != server || !strings.Contains(fmt.Sprint(e.Data["last_error"]), wantError) {
			t.Errorf("wait log %d: level %s, fields %v; want a warning with api_server %s and the failed call (%q)", i, e.Level, e.Data, server, wantError)
		}
		clk.Step(DefaultSyncLogInterval - time.Second)
	}
	cancel()
	if err := <-done; !errors.Is(err, ErrNotSynced) {
		t.Fatalf("WaitForSync after cancel = %v, want ErrNotSynced", err)
	}
}
