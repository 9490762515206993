package k8s

import (
	"net/netip"
	"sync"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/tools/cache"
)

// maxPodViews bounds podViews: a node runs a few hundred pods; past this
// (views of replaced objects whose events were missed) it starts over.
const maxPodViews = 4096

// podViews keeps one Pod per cached pod object, built on its first lookup,
// so a lookup hands out the same read-only Pod instead of building one
// (the credential route's largest allocation in the k8s package). A view
// is keyed by the informer's object itself: objects in an informer's store
// are never modified, an update stores a new object, so a view can never
// describe another state of the pod than the object the lookup found.
// Forgetting replaced and deleted objects only frees memory.
type podViews struct {
	// mu guards byObject.
	mu sync.RWMutex
	// byObject holds the view of each cached object looked up so far.
	byObject map[*corev1.Pod]*Pod
}

// of returns p's view, building it on first use.
func (v *podViews) of(p *corev1.Pod) *Pod {
	v.mu.RLock()
	view := v.byObject[p]
	v.mu.RUnlock()
	if view != nil {
		return view
	}
	view = podFromObject(p)
	v.mu.Lock()
	defer v.mu.Unlock()
	if have := v.byObject[p]; have != nil {
		return have
	}
	if v.byObject == nil || len(v.byObject) >= maxPodViews {
		v.byObject = make(map[*corev1.Pod]*Pod)
	}
	v.byObject[p] = view
	return view
}

// replaced drops the view of an object the store replaced (an update's
// old object is the one the store held).
func (v *podViews) replaced(old any) {
	p, ok := old.(*corev1.Pod)
	if !ok {
		return
	}
	v.mu.Lock()
	delete(v.byObject, p)
	v.mu.Unlock()
}

// deleted drops every view of a deleted pod. A delete's object is the
// watch event's, not the one the store held, so views are found by UID
// (deletes are rare; the scan is over this node's pods).
func (v *podViews) deleted(obj any) {
	p, ok := deletedPod(obj)
	if !ok {
		return
	}
	v.mu.Lock()
	for o, view := range v.byObject {
		if view.UID == p.UID {
			delete(v.byObject, o)
		}
	}
	v.mu.Unlock()
}

// deletedPod is the pod of a delete notification, tombstones included.
func deletedPod(obj any) (*corev1.Pod, bool) {
	if d, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = d.Obj
	}
	p, ok := obj.(*corev1.Pod)
	return p, ok
}

// size is the number of views held.
func (v *podViews) size() int {
	v.mu.RLock()
	defer v.mu.RUnlock()
	return len(v.byObject)
}

// maxIPKeys bounds ipKeys; past it the memo starts over.
const maxIPKeys = 4096

// ipKeys memoises ipKey, a pure function of the address that printed it
// (an allocation) on every lookup. Callers' addresses are this node's pods'.
type ipKeys struct {
	// mu guards byIP.
	mu sync.RWMutex
	// byIP holds each address's index key.
	byIP map[netip.Addr]string
}

// key is ipKey(ip).
func (k *ipKeys) key(ip netip.Addr) string {
	k.mu.RLock()
	s, ok := k.byIP[ip]
	k.mu.RUnlock()
	if ok {
		return s
	}
	s = ipKey(ip)
	k.mu.Lock()
	if k.byIP == nil || len(k.byIP) >= maxIPKeys {
		k.byIP = make(map[netip.Addr]string)
	}
	k.byIP[ip] = s
	k.mu.Unlock()
	return s
}
