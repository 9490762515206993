package k8s

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"net/url"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/sirupsen/logrus"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/tools/cache"
	"k8s.io/utils/clock"

	"github.com/kube2ra/kube2ra/kubeapi/objects"
)

const (
	// DefaultLookupTimeout is --pod-lookup-timeout: how long a lookup of an
	// unknown IP waits for the informer. AWS SDKs give up after about 1 s.
	DefaultLookupTimeout = time.Second
	// DefaultSyncLogInterval is how often WaitForSync says what it still
	// waits for: a node whose API server is unreachable is not silent.
	DefaultSyncLogInterval = 10 * time.Second
	// DefaultRoleKey is the pod annotation naming its role (--iam-role-key).
	DefaultRoleKey = "iam.amazonaws.com/role"
	// DefaultExternalIDKey is the pod annotation with the external ID (--iam-external-id).
	DefaultExternalIDKey = "iam.amazonaws.com/external-id"
	// DefaultNamespaceKey is the namespace annotation listing allowed roles (--namespace-key).
	DefaultNamespaceKey = "iam.amazonaws.com/allowed-roles"
	// TargetRoleKey is the pod (or ServiceAccount) annotation naming a
	// second role assumed with the first one's credentials: EKS Pod
	// Identity's targetRoleArn; kube2iam has none.
	TargetRoleKey = "iam.amazonaws.com/target-role"
)

// AnnotationKeys names the annotations kube2ra reads. The informer cache
// keeps these and drops every other annotation.
type AnnotationKeys struct {
	// Role is the pod annotation with the role (default iam.amazonaws.com/role).
	Role string
	// ExternalID is the pod annotation with the external ID (default iam.amazonaws.com/external-id).
	ExternalID string
	// Namespace is the namespace annotation with the allowed roles (default iam.amazonaws.com/allowed-roles).
	Namespace string
}

// withDefaults fills empty keys with kube2iam's names.
func (k AnnotationKeys) withDefaults() AnnotationKeys {
	if k.Role == "" {
		k.Role = DefaultRoleKey
	}
	if k.ExternalID == "" {
		k.ExternalID = DefaultExternalIDKey
	}
	if k.Namespace == "" {
		k.Namespace = DefaultNamespaceKey
	}
	return k
}

// WatcherOptions configures a Watcher.
type WatcherOptions struct {
	// NodeName is this node (--node); only pods with spec.nodeName equal to
	// it are watched. Required.
	NodeName string
	// LookupTimeout bounds the wait for an IP the informer does not know
	// yet (--pod-lookup-timeout); DefaultLookupTimeout when zero.
	LookupTimeout time.Duration
	// Sandboxes, when set, tells a new pod's address before the kubelet
	// reports it (see sandboxOwner); the API alone when nil.
	Sandboxes SandboxIPs
	// SyncTimeout bounds how long a lookup made before the first sync waits
	// for it; LookupTimeout when zero, since the caller gives up soon after.
	SyncTimeout time.Duration
	// Keys names the annotations to keep in the cache.
	Keys AnnotationKeys
	// Logger receives informer and lookup logs; required.
	Logger logrus.FieldLogger
	// APIServer is the API server's address (the client's host), named by
	// WaitForSync's logs; "" names none.
	APIServer string
	// SyncLogInterval is how often WaitForSync logs what it still waits
	// for; DefaultSyncLogInterval when zero.
	SyncLogInterval time.Duration
	// Clock times the waits; clock.RealClock when nil.
	Clock clock.Clock
	// VerifyTTL is how long a failed live check made while a watch is not
	// current answers for its pod or namespace (a confirmation is never
	// reused); DefaultVerifyTTL when zero.
	VerifyTTL time.Duration
	// Registerer receives kube2ra_k8s_watch_current and
	// kube2ra_k8s_live_verifications_total; nil registers none.
	Registerer prometheus.Registerer
	// VerifyClient makes the live checks while a watch is not current;
	// the informers' client when nil. Give it a client with its own rate
	// limiter: a burst of checks must never queue the informers' relist,
	// watch and snapshot behind it, or the window the checks are for could
	// not end.
	VerifyClient Client
}

// Resources, the "resource" label of the k8s metrics.
const (
	// resourcePods is the node's pods.
	resourcePods = "pods"
	// resourceNamespaces is all namespaces.
	resourceNamespaces = "namespaces"
)

// Watcher watches this node's pods and all namespaces and answers which
// pod owns a source IP. It is kube2ra's PodFinder.
type Watcher struct {
	// opts are the options with defaults applied.
	opts WatcherOptions
	// log is the injected logger.
	log logrus.FieldLogger
	// clock times lookup and sync waits.
	clock clock.Clock
	// running counts the informers' goroutines, for Shutdown.
	running sync.WaitGroup
	// pods is the node-scoped pod informer, indexed by IP.
	pods cache.SharedIndexInformer
	// namespaces is the namespace informer.
	namespaces cache.SharedIndexInformer
	// synced is closed once both informers have synced.
	synced chan struct{}
	// mu guards changed.
	mu sync.Mutex
	// changed is closed and replaced whenever the pod store gains or
	// changes a pod: a broadcast to lookups waiting for an unknown IP.
	changed chan struct{}
	// startOnce makes Start idempotent.
	startOnce sync.Once
	// client makes the live checks (WatcherOptions.VerifyClient).
	client Client
	// podTracker says whether the pod cache may be trusted alone.
	podTracker *streamTracker
	// nsTracker says whether the namespace cache may be trusted alone.
	nsTracker *streamTracker
	// podVerifier memoises live checks of pods, by UID and IP.
	podVerifier *verifier[*Pod]
	// nsVerifier memoises live reads of namespaces, by name.
	nsVerifier *verifier[*objects.Namespace]
	// podTransform trims pods as the cache does; used on live pods too.
	podTransform cache.TransformFunc
	// nsTransform trims namespaces as the cache does.
	nsTransform cache.TransformFunc
	// metrics are the watch metrics.
	metrics *watchMetrics
	// views hands out one read-only Pod per cached pod object.
	views podViews
	// keys memoises the IP index keys of callers' addresses.
	keys ipKeys
}

// NewWatcher builds the informers; call Start to run them.
func NewWatcher(client Client, opts WatcherOptions) (*Watcher, error) {
	verifyClient := opts.VerifyClient
	if verifyClient == nil {
		verifyClient = client
	}
	if opts.NodeName == "" {
		return nil, errors.New("the node name is empty; set --node or the NODE_NAME environment variable (from spec.nodeName via the downward API)")
	}
	if opts.Logger == nil {
		return nil, errors.New("k8s.NewWatcher needs a logger")
	}
	if opts.LookupTimeout <= 0 {
		opts.LookupTimeout = DefaultLookupTimeout
	}
	if opts.SyncTimeout <= 0 {
		opts.SyncTimeout = opts.LookupTimeout
	}
	if opts.SyncLogInterval <= 0 {
		opts.SyncLogInterval = DefaultSyncLogInterval
	}
	if u, err := url.Parse(opts.APIServer); err == nil && u.User != nil {
		u.User = nil // a kubeconfig's user:password@ is never logged
		opts.APIServer = u.String()
	}
	if opts.Clock == nil {
		opts.Clock = clock.RealClock{}
	}
	if opts.VerifyTTL <= 0 {
		opts.VerifyTTL = DefaultVerifyTTL
	}
	opts.Keys = opts.Keys.withDefaults()
	metrics, err := newWatchMetrics(opts.Registerer)
	if err != nil {
		return nil, err
	}
	w := &Watcher{
		opts:         opts,
		log:          opts.Logger.WithField("component", "k8s"),
		clock:        opts.Clock,
		synced:       make(chan struct{}),
		changed:      make(chan struct{}),
		client:       verifyClient,
		podTransform: transformPod([]string{opts.Keys.Role, opts.Keys.ExternalID, TargetRoleKey, SessionPolicyKey}),
		nsTransform:  transformNamespace([]string{opts.Keys.Namespace, SessionPolicyKey}),
		metrics:      metrics,
	}
	// A live check has the lookup's time to answer; a caller that gives up
	// earlier leaves it running for the others waiting on it.
	w.podVerifier = newVerifier[*Pod](opts.Clock, opts.VerifyTTL, opts.LookupTimeout)
	w.nsVerifier = newVerifier[*objects.Namespace](opts.Clock, opts.VerifyTTL, opts.LookupTimeout)
	nodeSelector := fields.OneTermEqualSelector("spec.nodeName", opts.NodeName).String()

	w.podTracker = newStreamTracker(resourcePods, w.log, opts.Clock,
		func(ctx context.Context) (*objects.VersionList, error) {
			return client.ListVersions(ctx, resourcePods, metav1.NamespaceAll, metav1.ListOptions{FieldSelector: nodeSelector})
		},
		func() []any { return w.pods.GetStore().List() },
		func(current bool) { metrics.current.WithLabelValues(resourcePods).Set(boolGauge(current)) })
	// A lookup waiting for an unknown IP may be answered once the watch is
	// current (by the pod's sandbox record): wake it then, not at its timeout.
	w.podTracker.changed = w.broadcast
	w.nsTracker = newStreamTracker(resourceNamespaces, w.log, opts.Clock,
		func(ctx context.Context) (*objects.VersionList, error) {
			return client.ListVersions(ctx, resourceNamespaces, metav1.NamespaceAll, metav1.ListOptions{})
		},
		func() []any { return w.namespaces.GetStore().List() },
		func(current bool) { metrics.current.WithLabelValues(resourceNamespaces).Set(boolGauge(current)) })
	// No resync (newTrackedInformer): the handlers react to changes only,
	// and a periodic resync would wake every waiting lookup for nothing.
	w.pods = newTrackedInformer(&cache.ListWatch{
		ListWithContextFunc: func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) {
			o.FieldSelector = nodeSelector
			return client.ListPods(ctx, metav1.NamespaceAll, o)
		},
		WatchFuncWithContext: func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
			o.FieldSelector = nodeSelector
			return client.WatchPods(ctx, metav1.NamespaceAll, o)
		},
	}, client, &objects.Pod{}, w.podTracker, cache.Indexers{cache.NamespaceIndex: cache.MetaNamespaceIndexFunc}) // a namespace's pods, when its policy changes
	w.namespaces = newTrackedInformer(&cache.ListWatch{
		ListWithContextFunc: func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) {
			return client.ListNamespaces(ctx, o)
		},
		WatchFuncWithContext: func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
			return client.WatchNamespaces(ctx, o)
		},
	}, client, &objects.Namespace{}, w.nsTracker, nil) // read by name only: a namespace index would list every namespace under ""
	for informer, transform := range map[cache.SharedIndexInformer]cache.TransformFunc{w.pods: w.podTransform, w.namespaces: w.nsTransform} {
		if err := informer.SetTransform(transform); err != nil {
			return nil, fmt.Errorf("setting the informers' transform: %w", err)
		}
	}
	// The reflector's own failures (403, 404...) are kept for WaitForSync's log too.
	for informer, tracker := range map[cache.SharedIndexInformer]*streamTracker{w.pods: w.podTracker, w.namespaces: w.nsTracker} {
		if err := informer.SetWatchErrorHandlerWithContext(func(ctx context.Context, r *cache.Reflector, err error) {
			tracker.callFailed(err)
			cache.DefaultWatchErrorHandler(ctx, r, err)
		}); err != nil {
			return nil, fmt.Errorf("setting the %s watch error handler: %w", tracker.resource, err)
		}
	}
	if opts.Registerer != nil {
		cached := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "kube2ra_k8s_cached_pods",
			Help: "Pods of this node in the agent's cache (every phase): the pods it can tell apart by address.",
		}, func() float64 { return float64(w.CachedPods()) })
		if err := opts.Registerer.Register(cached); err != nil {
			return nil, fmt.Errorf("registering kube2ra_k8s_cached_pods: %w", err)
		}
	}
	if err := w.pods.AddIndexers(cache.Indexers{podIPIndex: podIPIndexFunc}); err != nil {
		return nil, fmt.Errorf("adding the pod IP index: %w", err)
	}
	if _, err := w.pods.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(any) { w.broadcast(); w.podTracker.poke() },
		UpdateFunc: func(old, _ any) { w.views.replaced(old); w.broadcast(); w.podTracker.poke() },
		DeleteFunc: func(obj any) { w.views.deleted(obj); w.podTracker.poke() },
	}); err != nil {
		return nil, fmt.Errorf("adding the pod lookup handler: %w", err)
	}
	if _, err := w.namespaces.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(any) { w.nsTracker.poke() },
		UpdateFunc: func(_, _ any) { w.nsTracker.poke() },
		DeleteFunc: func(any) { w.nsTracker.poke() },
	}); err != nil {
		return nil, fmt.Errorf("adding the namespace currency handler: %w", err)
	}
	return w, nil
}

// boolGauge is 1 for true.
func boolGauge(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// Current reports whether both watches are open and caught up, so lookups
// are answered from the cache alone. While it is false, every answer is
// checked with the API server first (and denied with ErrNotSynced when
// that fails or disagrees).
func (w *Watcher) Current() bool {
	return w.podTracker.isCurrent() && w.nsTracker.isCurrent()
}

// Start runs the informers until ctx ends and returns at once. Call
// Shutdown after ctx ends to wait for them to stop.
func (w *Watcher) Start(ctx context.Context) {
	w.startOnce.Do(func() {
		w.running.Go(func() { w.pods.RunWithContext(ctx) })
		w.running.Go(func() { w.namespaces.RunWithContext(ctx) })
		go func() {
			if cache.WaitForCacheSync(ctx.Done(), w.pods.HasSynced, w.namespaces.HasSynced) {
				w.log.WithFields(logrus.Fields{"node": w.opts.NodeName, "pods": len(w.pods.GetStore().ListKeys()),
					"namespaces": len(w.namespaces.GetStore().ListKeys())}).Info("pod and namespace informers synced")
				close(w.synced)
				w.broadcast()
			}
		}()
	})
}

// Shutdown waits for the informers to stop; cancel Start's context first.
func (w *Watcher) Shutdown() {
	w.running.Wait()
}

// Synced reports whether both informers have synced: the readiness signal.
func (w *Watcher) Synced() bool {
	select {
	case <-w.synced:
		return true
	default:
		return false
	}
}

// WaitForSync blocks until both informers have synced or ctx ends, and
// every SyncLogInterval logs what it still waits for, from which API
// server, and the last failed call.
func (w *Watcher) WaitForSync(ctx context.Context) error {
	start := w.clock.Now()
	every := w.clock.NewTimer(w.opts.SyncLogInterval)
	defer every.Stop()
	for {
		select {
		case <-w.synced:
			return nil
		case <-ctx.Done():
			return fmt.Errorf("%w: waiting for the pod and namespace informers of node %q: %w", ErrNotSynced, w.opts.NodeName, ctx.Err())
		case <-every.C():
			// Re-armed before the log line, so whoever reads the line
			// (a test stepping a fake clock) finds the next tick set.
			every.Reset(w.opts.SyncLogInterval)
			w.logSyncWait(w.clock.Since(start))
		}
	}
}

// logSyncWait says what the first sync still waits for.
func (w *Watcher) logSyncWait(waited time.Duration) {
	var awaiting []string
	var lastErr error
	for _, p := range []struct {
		what    string
		synced  func() bool
		tracker *streamTracker
	}{
		{fmt.Sprintf("the pods of node %q", w.opts.NodeName), w.pods.HasSynced, w.podTracker},
		{"the namespaces", w.namespaces.HasSynced, w.nsTracker},
	} {
		if p.synced() {
			continue
		}
		awaiting = append(awaiting, p.what)
		if err := p.tracker.lastCallError(); err != nil {
			lastErr = err
		}
	}
	if len(awaiting) == 0 {
		return // synced between the tick and now
	}
	server := "the API server"
	if w.opts.APIServer != "" {
		server = "the API server " + w.opts.APIServer
	}
	log := w.log.WithFields(logrus.Fields{"api_server": w.opts.APIServer, "awaiting": awaiting, "waited": waited.Round(time.Second).String()})
	if lastErr != nil {
		log = log.WithField("last_error", lastErr.Error())
	}
	log.Warnf("still waiting for %s to list %s (%s so far): the agent is not ready and pods get no credentials until then; check that this node reaches the API server and that kube2ra may list and watch pods and namespaces",
		server, strings.Join(awaiting, " and "), waited.Round(time.Second))
}

// broadcast wakes every lookup waiting for an unknown IP.
func (w *Watcher) broadcast() {
	w.mu.Lock()
	close(w.changed)
	w.changed = make(chan struct{})
	w.mu.Unlock()
}

// changes returns the channel the next broadcast closes.
func (w *Watcher) changes() <-chan struct{} {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.changed
}

// FindPod returns the one live pod on this node that owns ip. Before the
// first sync it waits up to SyncTimeout, then fails with ErrNotSynced. An
// IP held by several live pods fails at once with ErrAmbiguousIP. An IP no
// live pod holds is waited for, woken by informer events, up to
// LookupTimeout, then fails with ErrPodNotFound. While the pod watch is
// not current (see Current) the owner is checked with a live GET and the
// live pod is returned; a failed or disagreeing check, or an unknown IP,
// fails with ErrNotSynced.
func (w *Watcher) FindPod(ctx context.Context, ip netip.Addr) (*Pod, error) {
	if !ip.IsValid() {
		return nil, fmt.Errorf("%w: the source address is not a valid IP", ErrPodNotFound)
	}
	if err := w.waitSynced(ctx); err != nil {
		return nil, err
	}
	key := w.keys.key(ip)
	var timeout clock.Timer
	defer func() {
		if timeout != nil {
			timeout.Stop()
		}
	}()
	// A hit, the usual case, looks once. Only a miss waits for a change:
	// it takes the change channels and looks again before waiting, so an
	// event between a look and the wait still wakes it.
	var changed, sandboxChanged <-chan struct{}
	for watching := false; ; watching = true {
		if watching {
			changed = w.changes()
			if w.opts.Sandboxes != nil {
				sandboxChanged = w.opts.Sandboxes.Changes()
			}
		}
		pod, own := w.lookup(key)
		if own == ownerNone && w.podTracker.isCurrent() {
			if p := w.sandboxOwner(ip); p != nil {
				msg := "pod known by its sandbox's network before the API has its IP"
				if p.Terminating {
					msg = "terminating pod served: its sandbox still holds the address"
				}
				w.log.WithField("pod", p.Key()).WithField("ip", ip).Debug(msg)
				return p, nil
			}
		}
		switch own {
		case ownerOne:
			if w.podTracker.isCurrent() {
				return w.views.of(pod), nil
			}
			// The cache may have missed this pod's deletion and its IP's
			// reuse: ask the API server before answering.
			return w.verifyPod(ctx, ip, pod)
		case ownerAmbiguous:
			return nil, fmt.Errorf("%w: %s; deny until only one live pod holds it", ErrAmbiguousIP, ip)
		}
		if !watching {
			continue
		}
		if timeout == nil {
			timeout = w.clock.NewTimer(w.opts.LookupTimeout)
		}
		select {
		case <-changed:
		case <-sandboxChanged:
		case <-timeout.C():
			if !w.podTracker.isCurrent() {
				// The cache may just not have heard of the pod yet.
				return nil, fmt.Errorf("%w: no pod in the cache of node %q has %s and the pod watch is not current (%s); retry shortly",
					ErrNotSynced, w.opts.NodeName, ip, w.podTracker.notCurrentReason())
			}
			return nil, fmt.Errorf("%w: %s on node %q after waiting %s", ErrPodNotFound, ip, w.opts.NodeName, w.opts.LookupTimeout)
		case <-ctx.Done():
			return nil, fmt.Errorf("%w: lookup of %s ended early: %w", ErrPodNotFound, ip, ctx.Err())
		}
	}
}

// waitSynced waits, bounded by SyncTimeout, for the first sync.
func (w *Watcher) waitSynced(ctx context.Context) error {
	select {
	case <-w.synced:
		return nil
	default:
	}
	t := w.clock.NewTimer(w.opts.SyncTimeout)
	defer t.Stop()
	select {
	case <-w.synced:
		return nil
	case <-t.C():
		return fmt.Errorf("%w: still syncing after %s; the agent is not ready", ErrNotSynced, w.opts.SyncTimeout)
	case <-ctx.Done():
		return fmt.Errorf("%w: %w", ErrNotSynced, ctx.Err())
	}
}

// lookup applies the single-owner rule to the pods indexed under key.
func (w *Watcher) lookup(key string) (*objects.Pod, ownership) {
	objs, err := w.pods.GetIndexer().ByIndex(podIPIndex, key)
	if err != nil {
		// Only an unknown index name fails, which NewWatcher rules out.
		w.log.WithError(err).Error("pod IP index lookup failed")
		return nil, ownerNone
	}
	// An IP has one holder, rarely a few: keep them on the stack.
	var held [4]*objects.Pod
	return ownerOf(w.appendNodePods(held[:0], objs))
}

// nodePods converts index results, dropping anything not on this node
// (the field selector already does; this keeps a wrong selector from
// becoming a wrong answer).
func (w *Watcher) nodePods(objs []any) []*objects.Pod {
	return w.appendNodePods(make([]*objects.Pod, 0, len(objs)), objs)
}

// appendNodePods is nodePods appending to pods.
func (w *Watcher) appendNodePods(pods []*objects.Pod, objs []any) []*objects.Pod {
	for _, o := range objs {
		if p, ok := o.(*objects.Pod); ok && p.Spec.NodeName == w.opts.NodeName {
			pods = append(pods, p)
		}
	}
	return pods
}

// Namespace returns the cached namespace; it implements NamespaceGetter.
func (w *Watcher) Namespace(name string) (*objects.Namespace, bool) {
	obj, ok, err := w.namespaces.GetStore().GetByKey(name)
	if err != nil || !ok {
		return nil, false
	}
	ns, ok := obj.(*objects.Namespace)
	return ns, ok
}

// CachedPods is the number of pods in the informer store (all phases).
func (w *Watcher) CachedPods() int { return len(w.pods.GetStore().ListKeys()) }

// CachedNamespaces is the number of namespaces in the informer store.
func (w *Watcher) CachedNamespaces() int { return len(w.namespaces.GetStore().ListKeys()) }

// Pods returns every cached pod of this node, live or not, for listings.
func (w *Watcher) Pods() []*Pod {
	objs := w.pods.GetStore().List()
	out := make([]*Pod, 0, len(objs))
	for _, p := range w.nodePods(objs) {
		out = append(out, podFromObject(p))
	}
	return out
}

// IPEntry is one address of the store as /debug/store shows it.
type IPEntry struct {
	// IP is the address.
	IP string `json:"ip"`
	// Holders are the indexed pods claiming it, "namespace/name" with
	// " (terminating)" when being deleted.
	Holders []string `json:"holders"`
	// Owner is the pod the single-owner rule picks; nil when none or ambiguous.
	Owner *Pod `json:"owner,omitempty"`
	// Verdict is "owned", "ambiguous" or "no live pod".
	Verdict string `json:"verdict"`
}

// Snapshot lists every indexed IP with its holders and owner, sorted by IP.
func (w *Watcher) Snapshot() []IPEntry {
	idx := w.pods.GetIndexer()
	keys := idx.ListIndexFuncValues(podIPIndex)
	sort.Strings(keys)
	out := make([]IPEntry, 0, len(keys))
	for _, key := range keys {
		objs, err := idx.ByIndex(podIPIndex, key)
		if err != nil || len(objs) == 0 {
			continue
		}
		pods := w.nodePods(objs)
		e := IPEntry{IP: key}
		for _, p := range pods {
			h := p.Namespace + "/" + p.Name
			if p.DeletionTimestamp != nil {
				h += " (terminating)"
			}
			e.Holders = append(e.Holders, h)
		}
		sort.Strings(e.Holders)
		owner, own := ownerOf(pods)
		switch own {
		case ownerOne:
			e.Owner, e.Verdict = podFromObject(owner), "owned"
		case ownerAmbiguous:
			e.Verdict = "ambiguous"
		default:
			e.Verdict = "no live pod"
		}
		out = append(out, e)
	}
	return out
}
