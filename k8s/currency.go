package k8s

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sirupsen/logrus"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	utilnet "k8s.io/apimachinery/pkg/util/net"
	"k8s.io/apimachinery/pkg/util/resourceversion"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/watchlist"
	"k8s.io/utils/clock"

	"github.com/kube2ra/kube2ra/kubeapi/objects"
)

// A watch is "current" when kube2ra may answer from its informer cache
// alone: a watch stream is open and the cache has caught up with a
// consistent snapshot taken after that stream opened. Every change after
// the snapshot is then delivered by the open stream (it started at or
// before the snapshot's resource version), and every change before it is
// already applied, so the cache lags the API server only by the stream's
// own latency, as in normal operation. The reasoning and its limits are in
// docs/design.md ("Answering while the watch is broken").

const (
	// transientRetryInitial is the first wait before retrying a list or
	// watch that failed because the API server is unreachable.
	transientRetryInitial = 200 * time.Millisecond
	// transientRetryCap bounds that wait. client-go's reflector backs off to
	// 30 s; after an API server restart that left the cache stale for up
	// to 13 s in the soak. 2 s (jittered up to 3 s) per node is a few
	// refused connections a second cluster-wide; throttling (429) is left
	// to the reflector's own, longer backoff.
	transientRetryCap = 2 * time.Second
	// snapshotTimeout bounds one snapshot list.
	snapshotTimeout = 30 * time.Second
	// reopenGrace: a stream that ends cleanly while the cache is current,
	// followed by a new stream within this time, leaves the cache current.
	// The reflector resumes the new stream from the last resourceVersion
	// it applied (or relists, replacing the store with a consistent list),
	// so the API server delivers everything that happened in between: the
	// gap is no more than an ordinary watch's latency. API servers end
	// every watch after 5–10 minutes; without the grace each such end cost
	// a snapshot LIST and a window in which every answer needed a live GET
	// (under load the benchmark saw that window last 7 s and its GETs time
	// out). A stream that fails, is stopped by the reflector, or is not
	// followed by a new one within the grace (an API server that went
	// away) makes the cache not current as before.
	reopenGrace = time.Second
)

// objectVersion is what a snapshot keeps of one object.
type objectVersion struct {
	// uid tells the object from a later one with the same key.
	uid types.UID
	// resourceVersion is the object's resourceVersion in the snapshot.
	resourceVersion string
}

// snapshot is a consistent list of the watched objects: the state of the
// API server at resourceVersion.
type snapshot struct {
	// resourceVersion is the list's resourceVersion.
	resourceVersion string
	// objects maps store keys (namespace/name) to their versions.
	objects map[string]objectVersion
}

// newSnapshot reads a version list into a snapshot.
func newSnapshot(list *objects.VersionList) *snapshot {
	s := &snapshot{resourceVersion: list.ResourceVersion, objects: make(map[string]objectVersion, len(list.Items))}
	for _, item := range list.Items {
		key := cache.ObjectName{Namespace: item.Namespace, Name: item.Name}.String()
		s.objects[key] = objectVersion{uid: item.UID, resourceVersion: item.ResourceVersion}
	}
	return s
}

// storeKey is the informer store's key of an object.
func storeKey(m metav1.Object) string { return cache.MetaObjectToName(m).String() }

// newerThan reports whether resource version a is strictly later than b.
// Unparsable versions are never later: the caller then keeps verifying.
func newerThan(a, b string) bool {
	c, err := resourceversion.CompareResourceVersion(a, b)
	return err == nil && c > 0
}

// caughtUp reports whether every object in a store is at least as new as
// snap says, and if not, names the first stale one. An object missing
// from the store is not stale: a missing pod cannot give its IP's role to
// anyone, and the open stream adds it.
func caughtUp(store []any, snap *snapshot) (bool, string) {
	for _, obj := range store {
		m, err := meta.Accessor(obj)
		if err != nil {
			continue
		}
		key := storeKey(m)
		rv := m.GetResourceVersion()
		if want, ok := snap.objects[key]; ok && want.uid == m.GetUID() {
			if rv == want.resourceVersion || newerThan(rv, want.resourceVersion) {
				continue
			}
			return false, fmt.Sprintf("%s is at resourceVersion %s, the API server at %s", key, rv, want.resourceVersion)
		}
		// Not in the snapshot (or another incarnation there): fine only if
		// written after the snapshot, i.e. created since.
		if !newerThan(rv, snap.resourceVersion) {
			return false, fmt.Sprintf("%s (resourceVersion %s) was deleted or replaced before resourceVersion %s", key, rv, snap.resourceVersion)
		}
	}
	return true, ""
}

// streamTracker follows one informer's watch streams and decides whether
// its cache is current.
type streamTracker struct {
	// resource names the watched resource in logs and metrics ("pods").
	resource string
	// log receives one line per transition.
	log logrus.FieldLogger
	// clock times transitions and snapshot retries.
	clock clock.Clock
	// list takes a consistent snapshot list (resourceVersion "").
	list func(ctx context.Context) (*objects.VersionList, error)
	// store lists the informer's cache.
	store func() []any
	// onChange reports the new state to metrics; may be nil.
	onChange func(current bool)
	// changed runs after each transition is visible to isCurrent; the pod
	// tracker's wakes the lookups waiting for an unknown IP, which may now
	// be answered (a pod known by its sandbox is only given an address
	// while the watch is current). May be nil.
	changed func()
	// current is read on every lookup without the lock.
	current atomic.Bool

	// mu guards the fields below.
	mu sync.Mutex
	// gen numbers watch streams; a stream's callbacks carry its number.
	gen uint64
	// open is true while stream gen is open.
	open bool
	// pending is the snapshot stream gen must catch up with; nil when
	// none is taken yet or the stream is current.
	pending *snapshot
	// since is when the state last changed.
	since time.Time
	// reason says why the stream is not current, for errors and logs.
	reason string
	// lastErr is the last failed list or watch call, for the log of a
	// first sync that waits; nil when none failed.
	lastErr error
}

// callFailed records a failed list or watch call.
func (t *streamTracker) callFailed(err error) {
	t.mu.Lock()
	t.lastErr = err
	t.mu.Unlock()
}

// lastCallError is the last failed list or watch call, nil when none.
func (t *streamTracker) lastCallError() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.lastErr
}

// newStreamTracker starts not current: nothing is known before the first stream.
func newStreamTracker(resource string, log logrus.FieldLogger, clk clock.Clock, list func(context.Context) (*objects.VersionList, error), store func() []any, onChange func(bool)) *streamTracker {
	return &streamTracker{resource: resource, log: log, clock: clk, list: list, store: store, onChange: onChange,
		since: clk.Now(), reason: "no watch stream has been opened yet"}
}

// isCurrent reports whether the cache may be trusted alone. It only reads:
// the check against a pending snapshot runs when the snapshot arrives and
// after every change the informer applies (poke), which are the only
// moments its answer can change. Scanning the store here would cost every
// request a full pass over the cache under the tracker's lock, in exactly
// the window when requests are already paying for live checks.
func (t *streamTracker) isCurrent() bool { return t.current.Load() }

// notCurrentReason says why the cache is not current.
func (t *streamTracker) notCurrentReason() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.current.Load() {
		return "current"
	}
	return fmt.Sprintf("%s, for %s", t.reason, t.clock.Since(t.since).Round(time.Millisecond))
}

// streamOpened records a new stream and, unless it resumes a current
// cache within the reopen grace, starts taking its snapshot.
func (t *streamTracker) streamOpened(ctx context.Context) uint64 {
	t.mu.Lock()
	t.gen++
	gen := t.gen
	t.open = true
	t.pending = nil
	if t.current.Load() {
		// The previous stream ended cleanly less than reopenGrace ago
		// (otherwise the cache would not be current): this one resumes it.
		t.mu.Unlock()
		return gen
	}
	t.setLocked(false, "a watch stream opened; taking a snapshot to check the cache against")
	t.mu.Unlock()
	go t.takeSnapshot(ctx, gen)
	return gen
}

// streamClosed records the end of stream gen. A clean end (the server
// closed the stream without an error) of a current cache starts the reopen
// grace instead of ending currency at once.
func (t *streamTracker) streamClosed(gen uint64, why string, clean bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if gen != t.gen || !t.open {
		return
	}
	t.open = false
	t.pending = nil
	if clean && t.current.Load() {
		go t.expireGrace(gen, why)
		return
	}
	t.setLocked(false, why)
}

// expireGrace ends currency when no stream has opened within reopenGrace
// of stream gen's clean end.
func (t *streamTracker) expireGrace(gen uint64, why string) {
	<-t.clock.After(reopenGrace)
	t.mu.Lock()
	defer t.mu.Unlock()
	if gen == t.gen && !t.open {
		t.setLocked(false, fmt.Sprintf("%s and no new stream opened within %s", why, reopenGrace))
	}
}

// takeSnapshot lists until it succeeds, ctx ends or stream gen is gone.
func (t *streamTracker) takeSnapshot(ctx context.Context, gen uint64) {
	backoff := transientBackoff()
	for {
		if !t.streamIs(gen) {
			return
		}
		lctx, cancel := context.WithTimeout(ctx, snapshotTimeout)
		list, err := t.list(lctx)
		cancel()
		if err == nil {
			snap := newSnapshot(list)
			t.mu.Lock()
			if gen == t.gen && t.open {
				t.pending = snap
				t.checkLocked()
			}
			t.mu.Unlock()
			return
		}
		t.log.WithError(err).WithField("resource", t.resource).Debug("snapshot list failed; retrying")
		t.snapshotFailed(gen, err)
		select {
		case <-ctx.Done():
			return
		case <-t.clock.After(backoff.Step()):
		}
	}
}

// snapshotFailed puts a failed snapshot list's error into the reason the
// cache is not current, which lookups' errors and the readiness check
// quote: without it they said only that a snapshot was being taken.
func (t *streamTracker) snapshotFailed(gen uint64, err error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if gen == t.gen && t.open && !t.current.Load() {
		t.reason = fmt.Sprintf("a watch stream opened and its snapshot list failed (retrying): %v", err)
	}
}

// streamIs reports whether stream gen is the open one.
func (t *streamTracker) streamIs(gen uint64) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return gen == t.gen && t.open
}

// poke checks a pending snapshot against the cache; the informer calls it
// after every change it applies.
func (t *streamTracker) poke() {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.checkLocked()
}

// checkLocked marks the stream current once the cache caught up with the
// pending snapshot; t.mu must be held.
func (t *streamTracker) checkLocked() {
	if t.pending == nil || !t.open {
		return
	}
	ok, stale := caughtUp(t.store(), t.pending)
	if !ok {
		t.reason = "the cache is catching up with the API server: " + stale
		return
	}
	t.pending = nil
	t.setLocked(true, "")
}

// setLocked changes the state, logging and reporting transitions only;
// t.mu must be held.
func (t *streamTracker) setLocked(current bool, reason string) {
	if !current {
		t.reason = reason
	}
	if t.current.Load() == current {
		return
	}
	now := t.clock.Now()
	was := now.Sub(t.since).Round(time.Millisecond)
	t.since = now
	// The gauge and the log line come first: whoever sees the new state
	// (a lookup, a readiness probe) then also finds them.
	if t.onChange != nil {
		t.onChange(current)
	}
	log := t.log.WithFields(logrus.Fields{"resource": t.resource})
	if current {
		log.WithField("notCurrentFor", was.String()).Info("watch is current again; answering from the cache")
	} else {
		log.WithField("reason", reason).Warn("watch is not current; verifying every answer with the API server until it catches up")
	}
	t.current.Store(current)
	if t.changed != nil {
		t.changed()
	}
}

// transientBackoff is the retry schedule for an unreachable API server.
func transientBackoff() *wait.Backoff {
	return &wait.Backoff{Duration: transientRetryInitial, Factor: 2, Jitter: 0.5, Steps: 1 << 30, Cap: transientRetryCap}
}

// isTransient reports whether err means the API server could not be
// reached or is not serving yet: worth retrying soon rather than after the
// reflector's backoff. Answers the reflector acts on (410 Gone, 429, 403...)
// are not transient here.
func isTransient(err error) bool {
	return utilnet.IsConnectionRefused(err) || utilnet.IsConnectionReset(err) || utilnet.IsProbableEOF(err) ||
		errors.Is(err, io.ErrUnexpectedEOF) || apierrors.IsServiceUnavailable(err)
}

// trackedListWatch wraps an informer's ListWatch: it retries calls that
// failed because the API server was unreachable (so the reflector's long
// backoff never starts) and reports watch streams to a streamTracker.
type trackedListWatch struct {
	// inner does the calls.
	inner *cache.ListWatch
	// tracker hears about streams; its clock times retries.
	tracker *streamTracker
	// noWatchList is true for clients without watch-list support (fakes).
	noWatchList bool
}

var (
	_ cache.ListerWatcherWithContext = (*trackedListWatch)(nil)
	_ cache.ListerWatcher            = (*trackedListWatch)(nil)
)

// IsWatchListSemanticsUnSupported tells the reflector whether the client
// can stream lists (client-go's watchlist package asks).
func (l *trackedListWatch) IsWatchListSemanticsUnSupported() bool { return l.noWatchList }

// List implements cache.Lister.
func (l *trackedListWatch) List(opts metav1.ListOptions) (runtime.Object, error) {
	return l.ListWithContext(context.Background(), opts)
}

// Watch implements cache.Watcher.
func (l *trackedListWatch) Watch(opts metav1.ListOptions) (watch.Interface, error) {
	return l.WatchWithContext(context.Background(), opts)
}

// ListWithContext lists, retrying while the API server is unreachable.
func (l *trackedListWatch) ListWithContext(ctx context.Context, opts metav1.ListOptions) (runtime.Object, error) {
	var out runtime.Object
	err := l.retry(ctx, func() (err error) {
		out, err = l.inner.ListWithContext(ctx, opts)
		return err
	})
	return out, err
}

// WatchWithContext opens a stream, retrying while the API server is
// unreachable, and reports it to the tracker.
func (l *trackedListWatch) WatchWithContext(ctx context.Context, opts metav1.ListOptions) (watch.Interface, error) {
	var w watch.Interface
	if err := l.retry(ctx, func() (err error) {
		w, err = l.inner.WatchWithContext(ctx, opts)
		return err
	}); err != nil {
		return nil, err
	}
	gen := l.tracker.streamOpened(ctx)
	return newTrackedWatch(w, func(why string, clean bool) { l.tracker.streamClosed(gen, why, clean) }), nil
}

// retry calls f until it succeeds, fails for a reason that is not
// transient, or ctx ends.
func (l *trackedListWatch) retry(ctx context.Context, f func() error) error {
	backoff := transientBackoff()
	for {
		err := f()
		if err == nil || !isTransient(err) || ctx.Err() != nil {
			return err
		}
		l.tracker.callFailed(err)
		l.tracker.log.WithError(err).WithField("resource", l.tracker.resource).Debug("API server unreachable; retrying")
		select {
		case <-ctx.Done():
			return err
		case <-l.tracker.clock.After(backoff.Step()):
		}
	}
}

// trackedWatch forwards a stream's events and reports when it ends.
type trackedWatch struct {
	// inner is the real stream.
	inner watch.Interface
	// out carries inner's events to the reflector.
	out chan watch.Event
	// done is closed by Stop.
	done chan struct{}
	// stopOnce makes Stop idempotent.
	stopOnce sync.Once
	// endOnce reports the end once.
	endOnce sync.Once
	// onEnd hears why the stream ended, and whether the server ended it
	// cleanly (closed without an error event).
	onEnd func(why string, clean bool)
}

// newTrackedWatch starts forwarding inner.
func newTrackedWatch(inner watch.Interface, onEnd func(string, bool)) *trackedWatch {
	w := &trackedWatch{inner: inner, out: make(chan watch.Event), done: make(chan struct{}), onEnd: onEnd}
	go w.forward()
	return w
}

// end reports the end of the stream once.
func (w *trackedWatch) end(why string, clean bool) { w.endOnce.Do(func() { w.onEnd(why, clean) }) }

// forward copies events until inner closes or Stop is called.
func (w *trackedWatch) forward() {
	defer close(w.out)
	in := w.inner.ResultChan()
	for {
		select {
		case <-w.done:
			return
		case ev, ok := <-in:
			if !ok {
				w.end("the watch stream ended", true)
				return
			}
			if ev.Type == watch.Error {
				w.end(fmt.Sprintf("the watch stream failed: %v", apierrors.FromObject(ev.Object)), false)
			}
			select {
			case w.out <- ev:
			case <-w.done:
				return
			}
		}
	}
}

// Stop implements watch.Interface.
func (w *trackedWatch) Stop() {
	w.stopOnce.Do(func() {
		w.end("the watch stream was stopped", false)
		close(w.done)
		w.inner.Stop()
	})
}

// ResultChan implements watch.Interface.
func (w *trackedWatch) ResultChan() <-chan watch.Event { return w.out }

// newTrackedInformer builds a SharedIndexInformer with indexers whose list
// and watch go through a trackedListWatch reporting to tracker.
func newTrackedInformer(lw *cache.ListWatch, client any, obj runtime.Object, tracker *streamTracker, indexers cache.Indexers) cache.SharedIndexInformer {
	tlw := &trackedListWatch{inner: lw, tracker: tracker, noWatchList: watchlist.DoesClientNotSupportWatchListSemantics(client)}
	return cache.NewSharedIndexInformerWithOptions(tlw, obj, cache.SharedIndexInformerOptions{Indexers: indexers})
}
