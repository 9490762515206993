package k8s

import (
	"errors"
	"fmt"
	"sync"

	"github.com/sirupsen/logrus"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/cache"

	"github.com/kube2ra/kube2ra/kubeapi/objects"
)

// RoleListener hears which live pods on this node have which allowed role;
// the credential cache uses it to prefetch and to evict.
//
// Both methods are called from the informer's event handlers, one call at
// a time, in order. They must be quick and must not block (hand work to a
// goroutine or a queue): a slow listener delays every later notification.
// They must not call back into the RoleNotifier.
type RoleListener interface {
	// PodRoleChanged: pod is live (not terminating, not Succeeded/Failed,
	// not host-network) and may have role: it appeared, got a role, or its
	// role changed (annotation, namespace policy or default changed).
	PodRoleChanged(pod *Pod, role Role)
	// PodRoleGone: pod, previously announced with a role, no longer has
	// one: it was deleted, is terminating or finished, or its role is no
	// longer allowed.
	PodRoleGone(pod *Pod)
}

// RoleNotifier watches the Watcher's informers and tells a RoleListener
// when a pod's allowed role appears, changes or goes away.
type RoleNotifier struct {
	// watcher owns the informers.
	watcher *Watcher
	// resolver decides the roles.
	resolver *RoleResolver
	// listener hears the changes.
	listener RoleListener
	// log is the injected logger.
	log logrus.FieldLogger
	// mu serialises evaluations (pod and namespace handlers run on
	// different goroutines) and guards announced.
	mu sync.Mutex
	// announced is the role last announced per pod UID.
	announced map[types.UID]announcement
	// accounts (guarded by mu), when set, gives pods without a role annotation their
	// ServiceAccount's role (the token door's rule), so those are
	// prefetched too.
	accounts ServiceAccountRoleGetter
}

// UseServiceAccountRoles makes the notifier announce, for a pod without
// its own role annotation, its ServiceAccount's role, as the token door
// resolves it. Call it before the Watcher starts (or Resync after).
func (n *RoleNotifier) UseServiceAccountRoles(accounts ServiceAccountRoleGetter) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.accounts = accounts
}

// announcement is what the listener was last told about a pod.
type announcement struct {
	// pod is the pod as announced.
	pod *Pod
	// role is the role announced.
	role Role
}

// NewRoleNotifier registers handlers on w's informers; call it before
// w.Start so the first list is announced too (registering later works:
// client-go replays the store as additions).
func NewRoleNotifier(w *Watcher, r *RoleResolver, l RoleListener, log logrus.FieldLogger) (*RoleNotifier, error) {
	if w == nil || r == nil || l == nil || log == nil {
		return nil, errors.New("k8s.NewRoleNotifier needs a watcher, a resolver, a listener and a logger")
	}
	n := &RoleNotifier{watcher: w, resolver: r, listener: l, log: log.WithField("component", "k8s"), announced: make(map[types.UID]announcement)}
	if _, err := w.pods.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    n.podUpdated,
		UpdateFunc: func(_, obj any) { n.podUpdated(obj) },
		DeleteFunc: n.podDeleted,
	}); err != nil {
		return nil, fmt.Errorf("adding the pod role handler: %w", err)
	}
	if _, err := w.namespaces.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    n.namespaceUpdated,
		UpdateFunc: func(_, obj any) { n.namespaceUpdated(obj) },
		DeleteFunc: n.namespaceDeleted,
	}); err != nil {
		return nil, fmt.Errorf("adding the namespace role handler: %w", err)
	}
	return n, nil
}

// Resync re-evaluates every cached pod, for when something outside the
// informers changed, such as a base role ARN discovered after start.
func (n *RoleNotifier) Resync() {
	for _, obj := range n.watcher.pods.GetStore().List() {
		n.podUpdated(obj)
	}
}

// podUpdated evaluates one pod.
func (n *RoleNotifier) podUpdated(obj any) {
	p, ok := obj.(*objects.Pod)
	if !ok {
		return
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	n.evaluateLocked(p)
}

// evaluateLocked announces p's role if it changed; n.mu must be held.
func (n *RoleNotifier) evaluateLocked(p *objects.Pod) {
	if !indexable(p) || p.DeletionTimestamp != nil || p.Spec.NodeName != n.watcher.opts.NodeName {
		n.goneLocked(p.UID)
		return
	}
	pod := podFromObject(p)
	resolved := pod
	var err error
	if n.accounts != nil {
		resolved, err = withServiceAccountRole(pod, n.accounts, n.resolver.opts.Keys.Role)
	}
	var role Role
	if err == nil {
		role, err = n.resolver.resolve(resolved)
	}
	if err != nil {
		n.goneLocked(p.UID)
		return
	}
	if prev, ok := n.announced[p.UID]; ok && prev.role == role {
		return
	}
	n.announced[p.UID] = announcement{pod: pod, role: role}
	n.listener.PodRoleChanged(pod, role)
}

// goneLocked announces that a pod has no role any more, if it had one.
func (n *RoleNotifier) goneLocked(uid types.UID) {
	prev, ok := n.announced[uid]
	if !ok {
		return
	}
	delete(n.announced, uid)
	n.listener.PodRoleGone(prev.pod)
}

// podDeleted handles deletions, tombstones included.
func (n *RoleNotifier) podDeleted(obj any) {
	p, ok := deletedPod(obj)
	if !ok {
		return
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	n.goneLocked(p.UID)
}

// namespaceUpdated recompiles the policy and re-evaluates the namespace's pods.
func (n *RoleNotifier) namespaceUpdated(obj any) {
	ns, ok := obj.(*objects.Namespace)
	if !ok {
		return
	}
	n.resolver.NamespaceChanged(ns)
	n.reevaluateNamespace(ns.Name)
}

// namespaceDeleted forgets the policy and re-evaluates the namespace's pods.
func (n *RoleNotifier) namespaceDeleted(obj any) {
	if t, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = t.Obj
	}
	ns, ok := obj.(*objects.Namespace)
	if !ok {
		return
	}
	n.resolver.NamespaceDeleted(ns.Name)
	n.reevaluateNamespace(ns.Name)
}

// reevaluateNamespace evaluates every cached pod of one namespace.
func (n *RoleNotifier) reevaluateNamespace(name string) {
	objs, err := n.watcher.pods.GetIndexer().ByIndex(cache.NamespaceIndex, name)
	if err != nil {
		n.log.WithError(err).Error("listing pods by namespace failed")
		return
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, obj := range objs {
		if p, ok := obj.(*objects.Pod); ok {
			n.evaluateLocked(p)
		}
	}
}

// DebugEntry is one line of /debug/store: an IP, its pod and its role.
type DebugEntry struct {
	IPEntry
	// Role is the owner's role ARN, when it has an allowed one.
	Role string `json:"role,omitempty"`
	// RoleError says why the owner has no role (no annotation, denied...).
	RoleError string `json:"roleError,omitempty"`
}

// DebugStore is the /debug/store view: every indexed IP, the pod owning it
// and the role that pod would get. It records no Events.
func DebugStore(w *Watcher, r *RoleResolver) []DebugEntry {
	entries := w.Snapshot()
	out := make([]DebugEntry, 0, len(entries))
	for _, e := range entries {
		d := DebugEntry{IPEntry: e}
		if e.Owner != nil {
			if role, err := r.resolve(e.Owner); err != nil {
				d.RoleError = err.Error()
			} else {
				d.Role = role.ARN
			}
		}
		out = append(out, d)
	}
	return out
}
