package k8s

import (
	"net/netip"

	"k8s.io/client-go/tools/cache"

	"github.com/kube2ra/kube2ra/kubeapi/objects"
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
	// byObject holds the view of each cached object looked up so far.
	byObject boundedMemo[*objects.Pod, *Pod]
}

// of returns p's view, building it on first use.
func (v *podViews) of(p *objects.Pod) *Pod {
	return v.byObject.get(p, maxPodViews, podFromObject)
}

// replaced drops the view of an object the store replaced (an update's
// old object is the one the store held).
func (v *podViews) replaced(old any) {
	if p, ok := old.(*objects.Pod); ok {
		v.byObject.forget(p)
	}
}

// deleted drops every view of a deleted pod. A delete's object is the
// watch event's, not the one the store held, so views are found by UID
// (deletes are rare; the scan is over this node's pods).
func (v *podViews) deleted(obj any) {
	if p, ok := deletedPod(obj); ok {
		v.byObject.forgetIf(func(_ *objects.Pod, view *Pod) bool { return view.UID == p.UID })
	}
}

// deletedPod is the pod of a delete notification, tombstones included.
func deletedPod(obj any) (*objects.Pod, bool) {
	if d, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = d.Obj
	}
	p, ok := obj.(*objects.Pod)
	return p, ok
}

// size is the number of views held.
func (v *podViews) size() int { return v.byObject.size() }

// maxIPKeys bounds ipKeys; past it the memo starts over.
const maxIPKeys = 4096

// ipKeys memoises ipKey, a pure function of the address that printed it
// (an allocation) on every lookup. Callers' addresses are this node's pods'.
type ipKeys struct {
	// byIP holds each address's index key.
	byIP boundedMemo[netip.Addr, string]
}

// key is ipKey(ip).
func (k *ipKeys) key(ip netip.Addr) string {
	return k.byIP.get(ip, maxIPKeys, ipKey)
}
