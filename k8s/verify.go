package k8s

import (
	"context"
	"fmt"
	"net/netip"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/client-go/tools/cache"
	"k8s.io/utils/clock"

	"github.com/kube2ra/kube2ra/kubeapi/objects"
)

const (
	// DefaultVerifyTTL is how long a failed live verification (a denial or
	// an unreachable API server) answers for its pod or namespace: it
	// bounds the API load of an outage to about one GET per calling pod
	// per second. A confirmation is never kept: it only answers the
	// lookups that were waiting for it, because one kept even 250 ms gave
	// a replaced pod's role to its successor in the integration test.
	DefaultVerifyTTL = time.Second
	// memoSweepSize is the memo size above which expired entries are swept.
	memoSweepSize = 256
)

// Verification results, the "result" label of kube2ra_k8s_live_verifications_total.
const (
	// verifyConfirmed: the API server agrees with the cache.
	verifyConfirmed = "confirmed"
	// verifyMismatch: the object changed (replaced, moved, terminating, lost the IP).
	verifyMismatch = "mismatch"
	// verifyGone: the object no longer exists.
	verifyGone = "gone"
	// verifyError: the API server could not be asked.
	verifyError = "error"
)

// watchMetrics are the k8s package's Prometheus metrics.
type watchMetrics struct {
	// current is kube2ra_k8s_watch_current{resource}: 1 while the cache is trusted alone.
	current *prometheus.GaugeVec
	// verifications counts live checks by resource and result.
	verifications *prometheus.CounterVec
}

// newWatchMetrics registers the metrics on reg; nil reg keeps them unregistered.
func newWatchMetrics(reg prometheus.Registerer) (*watchMetrics, error) {
	m := &watchMetrics{
		current: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "kube2ra_k8s_watch_current",
			Help: "1 while the informer's watch is open and caught up, so answers come from the cache alone; 0 while every answer is verified with the API server.",
		}, []string{"resource"}),
		verifications: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kube2ra_k8s_live_verifications_total",
			Help: "Live GETs made because the watch was not current, by resource and result (confirmed, mismatch, gone, error).",
		}, []string{"resource", "result"}),
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{m.current, m.verifications} {
			if err := reg.Register(c); err != nil {
				return nil, fmt.Errorf("registering the k8s watch metrics: %w", err)
			}
		}
	}
	for _, r := range []string{resourcePods, resourceNamespaces} {
		m.current.WithLabelValues(r).Set(0)
		for _, res := range []string{verifyConfirmed, verifyMismatch, verifyGone, verifyError} {
			m.verifications.WithLabelValues(r, res)
		}
	}
	return m, nil
}

// memoEntry is one verification result; only failures are memoised.
type memoEntry[T any] struct {
	// value is the verified object; its zero value with err.
	value T
	// err is why verification failed.
	err error
	// expires is when it stops answering.
	expires time.Time
}

// verifier memoises live verifications for a TTL and runs one at a time
// per key, so a burst of requests from one pod makes one GET.
type verifier[T any] struct {
	// clock ages entries.
	clock clock.PassiveClock
	// ttl is how long a failure answers.
	ttl time.Duration
	// timeout bounds one verification.
	timeout time.Duration
	// mu guards memo and inflight.
	mu sync.Mutex
	// memo holds results by key.
	memo map[string]memoEntry[T]
	// inflight holds the running verification of each key; its channel
	// is closed when the result is in memo.
	inflight map[string]*flight[T]
}

// flight is one running verification.
type flight[T any] struct {
	// done is closed when entry is set.
	done chan struct{}
	// entry is the result.
	entry memoEntry[T]
}

func newVerifier[T any](clk clock.PassiveClock, ttl, timeout time.Duration) *verifier[T] {
	return &verifier[T]{clock: clk, ttl: ttl, timeout: timeout, memo: make(map[string]memoEntry[T]), inflight: make(map[string]*flight[T])}
}

// do returns the memoised failure for key or runs check once for all
// concurrent callers. check gets a context of its own, bounded by the
// verifier's timeout, so one caller giving up does not fail the others.
func (v *verifier[T]) do(ctx context.Context, key string, check func(ctx context.Context) (T, error)) (T, error) {
	v.mu.Lock()
	if e, ok := v.memo[key]; ok && v.clock.Now().Before(e.expires) {
		v.mu.Unlock()
		return e.value, e.err
	}
	f, running := v.inflight[key]
	if !running {
		f = &flight[T]{done: make(chan struct{})}
		v.inflight[key] = f
		go v.run(ctx, key, f, check)
	}
	v.mu.Unlock()
	select {
	case <-f.done:
		return f.entry.value, f.entry.err
	case <-ctx.Done():
		var zero T
		return zero, fmt.Errorf("%w: waiting for a live check: %w", ErrNotSynced, ctx.Err())
	}
}

// run performs one verification and publishes its result.
func (v *verifier[T]) run(ctx context.Context, key string, f *flight[T], check func(ctx context.Context) (T, error)) {
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), v.timeout)
	defer cancel()
	val, err := check(cctx)
	f.entry = memoEntry[T]{value: val, err: err, expires: v.clock.Now().Add(v.ttl)}
	v.mu.Lock()
	defer v.mu.Unlock()
	if err != nil {
		v.sweepLocked()
		v.memo[key] = f.entry
	}
	delete(v.inflight, key)
	close(f.done)
}

// sweepLocked drops expired entries once the memo has grown; v.mu must be held.
func (v *verifier[T]) sweepLocked() {
	if len(v.memo) < memoSweepSize {
		return
	}
	now := v.clock.Now()
	for k, e := range v.memo {
		if !now.Before(e.expires) {
			delete(v.memo, k)
		}
	}
}

// verifyPod checks the cache's owner of ip against the API server and
// returns the live pod, or ErrNotSynced when the API server disagrees or
// cannot be asked.
func (w *Watcher) verifyPod(ctx context.Context, ip netip.Addr, cached *objects.Pod) (*Pod, error) {
	key := string(cached.UID) + " " + ipKey(ip)
	return w.podVerifier.do(ctx, key, func(ctx context.Context) (*Pod, error) {
		live, err := w.client.GetPod(ctx, cached.Namespace, cached.Name)
		// Only a refusal says why the cache was not trusted.
		why := func() string {
			return fmt.Sprintf("the pod watch of node %q is not current (%s)", w.opts.NodeName, w.podTracker.notCurrentReason())
		}
		switch {
		case apierrors.IsNotFound(err):
			w.metrics.verifications.WithLabelValues(resourcePods, verifyGone).Inc()
			return nil, fmt.Errorf("%w: %s and pod %s/%s, which the cache says owns %s, no longer exists; deny until the cache catches up", ErrNotSynced, why(), cached.Namespace, cached.Name, ip)
		case err != nil:
			w.metrics.verifications.WithLabelValues(resourcePods, verifyError).Inc()
			return nil, fmt.Errorf("%w: %s and checking pod %s/%s with the API server failed: %w", ErrNotSynced, why(), cached.Namespace, cached.Name, err)
		}
		if mismatch := w.podMismatch(live, cached, ip); mismatch != "" {
			w.metrics.verifications.WithLabelValues(resourcePods, verifyMismatch).Inc()
			return nil, fmt.Errorf("%w: %s and pod %s/%s %s; deny until the cache catches up", ErrNotSynced, why(), cached.Namespace, cached.Name, mismatch)
		}
		w.metrics.verifications.WithLabelValues(resourcePods, verifyConfirmed).Inc()
		slim, err := trim(w.podTransform, live, "pod "+live.Namespace+"/"+live.Name)
		if err != nil {
			return nil, err
		}
		return podFromObject(slim), nil
	})
}

// podMismatch says how the live pod differs from the cached owner of ip in
// a way that matters, or "" when it may still own ip.
func (w *Watcher) podMismatch(live, cached *objects.Pod, ip netip.Addr) string {
	switch {
	case live.UID != cached.UID:
		return fmt.Sprintf("was replaced (UID %s, cache %s)", live.UID, cached.UID)
	case live.Spec.NodeName != w.opts.NodeName:
		return fmt.Sprintf("runs on node %q", live.Spec.NodeName)
	case live.DeletionTimestamp != nil:
		return "is terminating"
	case !indexable(live):
		return fmt.Sprintf("cannot own an IP (phase %s, hostNetwork %t)", live.Status.Phase, live.Spec.HostNetwork)
	}
	for _, have := range podIPs(live) {
		if have == normalizeIP(ip) {
			return ""
		}
	}
	return fmt.Sprintf("no longer holds %s", ip)
}

// trim applies the cache's transform to a live object, so it is shaped as
// the cache's objects are; what names the object in errors.
func trim[T any](transform cache.TransformFunc, obj T, what string) (T, error) {
	var zero T
	out, err := transform(obj)
	if err != nil {
		return zero, fmt.Errorf("trimming %s: %w", what, err)
	}
	slim, ok := out.(T)
	if !ok {
		return zero, fmt.Errorf("trimming %s gave %T", what, out)
	}
	return slim, nil
}

// VerifiedNamespace returns a namespace the caller may decide policy on:
// the cached one while the namespace watch is current, else the API
// server's (memoised for VerifyTTL). ok is false when it does not exist;
// err wraps ErrNotSynced when it cannot be known.
func (w *Watcher) VerifiedNamespace(ctx context.Context, name string) (*objects.Namespace, bool, error) {
	if w.nsTracker.isCurrent() {
		ns, ok := w.Namespace(name)
		return ns, ok, nil
	}
	ns, err := w.nsVerifier.do(ctx, name, func(ctx context.Context) (*objects.Namespace, error) {
		live, err := w.client.GetNamespace(ctx, name)
		switch {
		case apierrors.IsNotFound(err):
			w.metrics.verifications.WithLabelValues(resourceNamespaces, verifyGone).Inc()
			return nil, nil
		case err != nil:
			w.metrics.verifications.WithLabelValues(resourceNamespaces, verifyError).Inc()
			return nil, fmt.Errorf("%w: the namespace watch is not current (%s) and reading namespace %q from the API server failed, so its role policy cannot be checked: %w",
				ErrNotSynced, w.nsTracker.notCurrentReason(), name, err)
		}
		slim, err := trim(w.nsTransform, live, fmt.Sprintf("namespace %q", name))
		if err != nil {
			return nil, err
		}
		if cached, ok := w.Namespace(name); ok && cached.UID == slim.UID && cached.ResourceVersion == slim.ResourceVersion {
			w.metrics.verifications.WithLabelValues(resourceNamespaces, verifyConfirmed).Inc()
		} else {
			w.metrics.verifications.WithLabelValues(resourceNamespaces, verifyMismatch).Inc()
		}
		return slim, nil
	})
	if err != nil {
		return nil, false, err
	}
	return ns, ns != nil, nil
}
