package k8s

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/sirupsen/logrus"
	logtest "github.com/sirupsen/logrus/hooks/test"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
	clocktesting "k8s.io/utils/clock/testing"

	"github.com/kube2ra/kube2ra/kubeapi/kubeapitest"
)

func versioned(name, uid, rv string) *corev1.Pod {
	return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: name, UID: types.UID(uid), ResourceVersion: rv}}
}

func TestCaughtUp(t *testing.T) {
	snap := &snapshot{resourceVersion: "100", objects: map[string]objectVersion{
		"ns/a": {uid: "uid-a", resourceVersion: "50"},
		"ns/b": {uid: "uid-b", resourceVersion: "60"},
	}}
	tests := []struct {
		name  string
		store []any
		want  bool
	}{
		{"same versions as the snapshot", []any{versioned("a", "uid-a", "50"), versioned("b", "uid-b", "60")}, true},
		{"an update newer than the snapshot", []any{versioned("a", "uid-a", "101")}, true},
		{"a pod missing from the cache cannot answer wrongly", []any{versioned("a", "uid-a", "50")}, true},
		{"a pod created after the snapshot", []any{versioned("c", "uid-c", "120")}, true},
		{"an older version of a pod is stale", []any{versioned("a", "uid-a", "40")}, false},
		{"a pod deleted before the snapshot is stale", []any{versioned("gone", "uid-gone", "30")}, false},
		{"a pod replaced before the snapshot (same name, old UID) is stale", []any{versioned("b", "uid-old-b", "20")}, false},
		{"a newer incarnation of a name is fine", []any{versioned("b", "uid-new-b", "130")}, true},
		{"an unparsable resource version never counts as newer", []any{versioned("x", "uid-x", "abc")}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got, why := caughtUp(tt.store, snap); got != tt.want {
				t.Fatalf("caughtUp = %v (%s); want %v", got, why, tt.want)
			}
		})
	}
}

// errRefused is what a dial to a stopped API server returns.
var errRefused = fmt.Errorf("dial tcp 127.0.0.1:6443: connect: %w", syscall.ECONNREFUSED)

// apiSwitch makes the fake clientset behave like an API server whose
// watches and lists can be cut while single-object GETs keep working (the
// soak's case: the reflector is backing off, the API is back), or that is
// down altogether.
type apiSwitch struct {
	mu sync.Mutex
	// streams are the watch streams handed out, by resource.
	streams map[string][]*watch.RaceFreeFakeWatcher
	// cut refuses lists and watches of these resources.
	cut map[string]bool
	// down refuses GETs too.
	down bool
	// gets counts GETs by resource.
	gets map[string]*atomic.Int32
	// getGate, when set, holds GETs until it is closed.
	getGate chan struct{}
	// listRV is the highest list resourceVersion handed out.
	listRV int64
}

// stampList gives a list the resourceVersion an API server would: at
// least every listed object's and every earlier list's. The fake's own
// list versions count its writes and ignore the versions the tests give
// their objects, so a pod deleted at "10" looked created after a list at
// "3" and the currency check, rightly, trusted a cache still holding it.
func (s *apiSwitch) stampList(list runtime.Object) error {
	items, err := meta.ExtractList(list)
	if err != nil {
		return err
	}
	for _, item := range items {
		m, err := meta.Accessor(item)
		if err != nil {
			return err
		}
		if rv, err := strconv.ParseInt(m.GetResourceVersion(), 10, 64); err == nil && rv > s.listRV {
			s.listRV = rv
		}
	}
	lm, err := meta.ListAccessor(list)
	if err != nil {
		return err
	}
	if rv, err := strconv.ParseInt(lm.GetResourceVersion(), 10, 64); err == nil && rv > s.listRV {
		s.listRV = rv
	}
	lm.SetResourceVersion(strconv.FormatInt(s.listRV, 10))
	return nil
}

func newAPISwitch(client *fake.Clientset) *apiSwitch {
	s := &apiSwitch{streams: map[string][]*watch.RaceFreeFakeWatcher{}, cut: map[string]bool{},
		gets: map[string]*atomic.Int32{"pods": {}, "namespaces": {}}}
	client.PrependWatchReactor("*", func(a k8stesting.Action) (bool, watch.Interface, error) {
		s.mu.Lock()
		defer s.mu.Unlock()
		res := a.GetResource().Resource
		if s.cut[res] || s.down {
			return true, nil, errRefused
		}
		w, err := client.Tracker().Watch(a.GetResource(), a.GetNamespace())
		if err != nil {
			return true, nil, err
		}
		s.streams[res] = append(s.streams[res], w.(*watch.RaceFreeFakeWatcher))
		return true, w, nil
	})
	client.PrependReactor("list", "*", func(a k8stesting.Action) (bool, runtime.Object, error) {
		s.mu.Lock()
		defer s.mu.Unlock()
		if s.cut[a.GetResource().Resource] || s.down {
			return true, nil, errRefused
		}
		la, ok := a.(k8stesting.ListActionImpl)
		if !ok {
			return false, nil, nil
		}
		list, err := client.Tracker().List(la.GetResource(), la.GetKind(), la.GetNamespace(), la.ListOptions)
		if err != nil {
			return true, nil, err
		}
		if err := s.stampList(list); err != nil {
			return true, nil, err
		}
		return true, list, nil
	})
	client.PrependReactor("get", "*", func(a k8stesting.Action) (bool, runtime.Object, error) {
		s.mu.Lock()
		gate, down := s.getGate, s.down
		if c := s.gets[a.GetResource().Resource]; c != nil {
			c.Add(1)
		}
		s.mu.Unlock()
		if gate != nil {
			<-gate
		}
		if down {
			return true, nil, errRefused
		}
		return false, nil, nil
	})
	return s
}

// cutWatch refuses new lists and watches of resource and ends its open streams.
func (s *apiSwitch) cutWatch(resource string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.cut[resource] = true
	for _, w := range s.streams[resource] {
		w.Stop()
	}
	s.streams[resource] = nil
}

func (s *apiSwitch) set(f func(s *apiSwitch)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	f(s)
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting until %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// currencyFixture is a started Watcher on a switchable fake API.
type currencyFixture struct {
	w      *Watcher
	client *fake.Clientset
	api    *apiSwitch
	clk    *clocktesting.FakeClock
	reg    *prometheus.Registry
	logs   *logtest.Hook
}

func newCurrencyFixture(t *testing.T, objs ...runtime.Object) *currencyFixture {
	t.Helper()
	client := fake.NewClientset(objs...)
	api := newAPISwitch(client)
	clk := clocktesting.NewFakeClock(time.Unix(1700000000, 0))
	log, hook := logtest.NewNullLogger()
	log.SetLevel(logrus.InfoLevel)
	reg := prometheus.NewRegistry()
	w, err := NewWatcher(kubeapitest.FromClientset(client), WatcherOptions{NodeName: "node-a", LookupTimeout: testLookupTimeout, Logger: log, Clock: clk, Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(func() { cancel(); w.Shutdown() })
	w.Start(ctx)
	if err := w.WaitForSync(ctx); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the watches are current", w.Current)
	return &currencyFixture{w: w, client: client, api: api, clk: clk, reg: reg, logs: hook}
}

func rolePod(name, uid, rv, role, ip string) *corev1.Pod {
	p := testPod(name, corev1.PodRunning, ip)
	p.UID, p.ResourceVersion = types.UID(uid), rv
	p.Annotations = map[string]string{DefaultRoleKey: role}
	return p
}

// replace deletes old and creates its successor on the API server only.
func (f *currencyFixture) replace(t *testing.T, old, successor *corev1.Pod) {
	t.Helper()
	ctx := context.Background()
	if err := f.client.CoreV1().Pods(old.Namespace).Delete(ctx, old.Name, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := f.client.CoreV1().Pods(successor.Namespace).Create(ctx, successor, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
}

func (f *currencyFixture) gauge(resource string) float64 {
	return testutil.ToFloat64(f.w.metrics.current.WithLabelValues(resource))
}

func TestCachedPodsGaugeCountsThisNodesPods(t *testing.T) {
	f := newCurrencyFixture(t, rolePod("a", "uid-a", "10", "role-x", "10.0.0.1"), rolePod("b", "uid-b", "11", "role-x", "10.0.0.2"))
	if got, err := testutil.GatherAndCount(f.reg, "kube2ra_k8s_cached_pods"); err != nil || got != 1 {
		t.Fatalf("kube2ra_k8s_cached_pods: %d series, %v", got, err)
	}
	want := "# HELP kube2ra_k8s_cached_pods Pods of this node in the agent's cache (every phase): the pods it can tell apart by address.\n# TYPE kube2ra_k8s_cached_pods gauge\nkube2ra_k8s_cached_pods 2\n"
	if err := testutil.GatherAndCompare(f.reg, strings.NewReader(want), "kube2ra_k8s_cached_pods"); err != nil {
		t.Error(err)
	}
}

func (f *currencyFixture) verifications(resource, result string) float64 {
	return testutil.ToFloat64(f.w.metrics.verifications.WithLabelValues(resource, result))
}

func TestFindPodNeverAnswersForAReplacedPodWhileTheWatchIsCut(t *testing.T) {
	a := rolePod("a", "uid-a", "10", "role-x", "10.0.0.1")
	f := newCurrencyFixture(t, a)
	ip := netip.MustParseAddr("10.0.0.1")
	if p, err := f.w.FindPod(context.Background(), ip); err != nil || p.UID != "uid-a" {
		t.Fatalf("FindPod before the cut = %+v, %v; want pod a", p, err)
	}
	if f.gauge("pods") != 1 {
		t.Fatalf("kube2ra_k8s_watch_current{pods} = %v while current; want 1", f.gauge("pods"))
	}

	f.api.cutWatch("pods")
	waitFor(t, "the pod watch is not current", func() bool { f.clk.Step(reopenGrace); return !f.w.podTracker.isCurrent() })
	// The soak's case: the API is reachable, the informer is not told.
	f.replace(t, a, rolePod("b", "uid-b", "20", "role-y", "10.0.0.1"))
	for range 3 {
		p, err := f.w.FindPod(context.Background(), ip)
		if !errors.Is(err, ErrNotSynced) {
			t.Fatalf("FindPod after a was replaced behind the cache = %+v, %v; want ErrNotSynced", p, err)
		}
	}
	if got := f.api.gets["pods"].Load(); got != 1 {
		t.Errorf("%d GETs for 3 lookups within the verify TTL; want 1", got)
	}
	if f.verifications("pods", verifyGone) != 1 || f.gauge("pods") != 0 {
		t.Errorf("metrics: gone=%v current=%v; want 1 and 0", f.verifications("pods", verifyGone), f.gauge("pods"))
	}

	// Recovery: lists and watches come back (after the wrapper's retry
	// wait), the cache learns b and is current again.
	f.api.set(func(s *apiSwitch) { s.cut["pods"] = false })
	waitFor(t, "the pod watch is current again", func() bool {
		f.clk.Step(transientRetryCap * 2)
		return f.w.podTracker.isCurrent()
	})
	p, err := f.w.FindPod(context.Background(), ip)
	if err != nil || p.UID != "uid-b" || p.Annotations[DefaultRoleKey] != "role-y" {
		t.Fatalf("FindPod after recovery = %+v, %v; want pod b with role-y", p, err)
	}
	var warns, infos int
	for _, e := range f.logs.AllEntries() {
		switch {
		case e.Level == logrus.WarnLevel && e.Message == "watch is not current; verifying every answer with the API server until it catches up":
			warns++
		case e.Level == logrus.InfoLevel && e.Message == "watch is current again; answering from the cache":
			infos++
		}
	}
	// Start: one "current" per resource; the cut: one warning, one recovery.
	if warns != 1 || infos != 3 {
		t.Errorf("transition logs: %d warnings, %d infos; want 1 and 3 (one per transition, none per request)", warns, infos)
	}
}

func TestFindPodWhileTheWatchIsCutVerifiesLive(t *testing.T) {
	tests := []struct {
		name     string
		change   func(p *corev1.Pod) *corev1.Pod // the live pod; nil deletes it
		apiDown  bool
		wantRole string // "" means ErrNotSynced
		result   string
	}{
		{name: "unchanged pod is answered", change: func(p *corev1.Pod) *corev1.Pod { return p }, wantRole: "role-x", result: verifyConfirmed},
		{name: "the live role annotation wins", change: func(p *corev1.Pod) *corev1.Pod {
			p.Annotations[DefaultRoleKey] = "role-new"
			return p
		}, wantRole: "role-new", result: verifyConfirmed},
		{name: "deleted pod is denied", change: func(*corev1.Pod) *corev1.Pod { return nil }, result: verifyGone},
		{name: "replaced pod (same name, new UID) is denied", change: func(p *corev1.Pod) *corev1.Pod {
			p.UID = "uid-a2"
			return p
		}, result: verifyMismatch},
		{name: "terminating pod is denied", change: terminating, result: verifyMismatch},
		{name: "pod that finished is denied", change: func(p *corev1.Pod) *corev1.Pod {
			p.Status.Phase = corev1.PodSucceeded
			return p
		}, result: verifyMismatch},
		{name: "pod with another IP is denied", change: func(p *corev1.Pod) *corev1.Pod {
			p.Status.PodIPs = []corev1.PodIP{{IP: "10.0.0.9"}}
			return p
		}, result: verifyMismatch},
		{name: "unreachable API server is denied", change: func(p *corev1.Pod) *corev1.Pod { return p }, apiDown: true, result: verifyError},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := rolePod("a", "uid-a", "10", "role-x", "10.0.0.1")
			f := newCurrencyFixture(t, a)
			f.api.cutWatch("pods")
			waitFor(t, "the pod watch is not current", func() bool { f.clk.Step(reopenGrace); return !f.w.podTracker.isCurrent() })
			ctx := context.Background()
			if live := tt.change(a.DeepCopy()); live == nil {
				if err := f.client.CoreV1().Pods("ns").Delete(ctx, "a", metav1.DeleteOptions{}); err != nil {
					t.Fatal(err)
				}
			} else if err := f.client.Tracker().Update(corev1.SchemeGroupVersion.WithResource("pods"), live, "ns"); err != nil {
				t.Fatal(err)
			}
			f.api.set(func(s *apiSwitch) { s.down = tt.apiDown })
			p, err := f.w.FindPod(ctx, netip.MustParseAddr("10.0.0.1"))
			switch {
			case tt.wantRole == "" && !errors.Is(err, ErrNotSynced):
				t.Fatalf("FindPod = %+v, %v; want ErrNotSynced", p, err)
			case tt.wantRole != "" && (err != nil || p.Annotations[DefaultRoleKey] != tt.wantRole):
				t.Fatalf("FindPod = %+v, %v; want pod a with %s", p, err, tt.wantRole)
			}
			if got := f.verifications("pods", tt.result); got != 1 {
				t.Errorf("kube2ra_k8s_live_verifications_total{pods,%s} = %v; want 1", tt.result, got)
			}
		})
	}
}

func TestLiveChecksAreSharedButConfirmationsNotKept(t *testing.T) {
	f := newCurrencyFixture(t, rolePod("a", "uid-a", "10", "role-x", "10.0.0.1"))
	f.api.cutWatch("pods")
	waitFor(t, "the pod watch is not current", func() bool { f.clk.Step(reopenGrace); return !f.w.podTracker.isCurrent() })
	gate := make(chan struct{})
	f.api.set(func(s *apiSwitch) { s.getGate = gate })
	const callers = 20
	var wg sync.WaitGroup
	errs := make(chan error, callers)
	for range callers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := f.w.FindPod(context.Background(), netip.MustParseAddr("10.0.0.1"))
			errs <- err
		}()
	}
	waitFor(t, "the first GET is in flight", func() bool { return f.api.gets["pods"].Load() == 1 })
	time.Sleep(50 * time.Millisecond) // let the others join it
	close(gate)
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatalf("FindPod: %v", err)
		}
	}
	if got := f.api.gets["pods"].Load(); got != 1 {
		t.Fatalf("%d GETs for %d concurrent lookups; want 1", got, callers)
	}
	// A confirmation answers only the lookups that waited for it: the next
	// one asks again, since the pod may have been deleted meanwhile.
	if _, err := f.w.FindPod(context.Background(), netip.MustParseAddr("10.0.0.1")); err != nil {
		t.Fatal(err)
	}
	if got := f.api.gets["pods"].Load(); got != 2 {
		t.Fatalf("a later lookup reused a confirmation: %d GETs; want 2", got)
	}
}

func TestUnknownIPWhileTheWatchIsCutIsNotSyncedNotNotFound(t *testing.T) {
	f := newCurrencyFixture(t)
	f.api.cutWatch("pods")
	waitFor(t, "the pod watch is not current", func() bool { f.clk.Step(reopenGrace); return !f.w.podTracker.isCurrent() })
	res := make(chan error, 1)
	go func() {
		_, err := f.w.FindPod(context.Background(), netip.MustParseAddr("10.0.0.5"))
		res <- err
	}()
	var err error
	waitFor(t, "the lookup gives up", func() bool {
		f.clk.Step(testLookupTimeout)
		select {
		case err = <-res:
			return true
		default:
			return false
		}
	})
	if !errors.Is(err, ErrNotSynced) {
		t.Fatalf("FindPod of an unknown IP while not current = %v; want ErrNotSynced (the cache may just be behind)", err)
	}
}

func TestResolveRoleChecksANarrowedPolicyLiveWhileTheNamespaceWatchIsCut(t *testing.T) {
	ns := roundTrip[corev1.Namespace](namespace("ns", "5", ptr(`["role-x"]`)))
	f := newCurrencyFixture(t, ns)
	r, err := NewRoleResolver(f.w, ResolverOptions{NamespaceRestrictions: true, BaseRoleARN: StaticBaseARN(testBase), Logger: testLogger()})
	if err != nil {
		t.Fatal(err)
	}
	pod := annotatedPod("ns", map[string]string{DefaultRoleKey: "role-x"})
	if _, err := r.ResolveRole(context.Background(), pod); err != nil {
		t.Fatalf("ResolveRole before the cut: %v", err)
	}
	f.api.cutWatch("namespaces")
	waitFor(t, "the namespace watch is not current", func() bool { f.clk.Step(reopenGrace); return !f.w.nsTracker.isCurrent() })
	narrowed := roundTrip[corev1.Namespace](namespace("ns", "6", ptr(`["role-y"]`)))
	if _, err := f.client.CoreV1().Namespaces().Update(context.Background(), narrowed, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	var denial *DenialError
	if _, err := r.ResolveRole(context.Background(), pod); !errors.As(err, &denial) || denial.Reason != DeniedByNamespace {
		t.Fatalf("ResolveRole after the policy was narrowed behind the cache = %v; want a NamespacePolicy denial", err)
	}
	f.api.set(func(s *apiSwitch) { s.down = true })
	f.clk.Step(DefaultVerifyTTL)
	if _, err := r.ResolveRole(context.Background(), pod); !errors.Is(err, ErrNotSynced) {
		t.Fatalf("ResolveRole with the API server down and the namespace watch cut = %v; want ErrNotSynced", err)
	}
}

func TestTransientErrorsAreRetriedNotPassedToTheReflector(t *testing.T) {
	tests := []struct {
		name string
		err  error
		want bool
	}{
		{"connection errRefused", errRefused, true},
		{"connection reset", fmt.Errorf("read: %w", syscall.ECONNRESET), true},
		{"forbidden is the reflector's to handle", errors.New("pods is forbidden"), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := isTransient(tt.err); got != tt.want {
				t.Fatalf("isTransient(%v) = %v; want %v", tt.err, got, tt.want)
			}
		})
	}
}
