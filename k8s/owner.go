package k8s

import (
	"context"
	"fmt"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/tools/cache"

	"github.com/kube2ra/kube2ra/kubeapi/objects"
)

// OwnerWatchSync bounds the wait for the owner watch's first list.
const OwnerWatchSync = 10 * time.Second

// OwnerWatch follows the DaemonSet that owns the agent's pod from start-up.
// On exit the agent must know whether it is being uninstalled; asking then is
// too late, because `helm uninstall` deletes the agent's Role together with
// the DaemonSet, while an open watch keeps delivering.
type OwnerWatch struct {
	// name and uid identify the owning DaemonSet.
	name string
	uid  types.UID
	// informer watches that one DaemonSet (field selector on its name).
	informer cache.SharedIndexInformer
	// why explains an unknown owner; set when informer is nil.
	why string
}

// WatchOwner finds the owning DaemonSet through the agent's own pod (name
// and namespace from the downward API's POD_NAME and POD_NAMESPACE) and
// starts watching it until ctx ends.
func WatchOwner(ctx context.Context, kube Client, name, namespace string) *OwnerWatch {
	if name == "" || namespace == "" {
		return &OwnerWatch{why: "POD_NAME/POD_NAMESPACE not set, so the owning DaemonSet is unknown"}
	}
	pod, err := kube.GetPod(ctx, namespace, name)
	if err != nil {
		return &OwnerWatch{why: fmt.Sprintf("cannot read own pod %s/%s: %v", namespace, name, err)}
	}
	w := &OwnerWatch{why: "own pod has no DaemonSet owner"}
	for _, ref := range pod.OwnerReferences {
		if ref.Kind == "DaemonSet" {
			w.name, w.uid = ref.Name, ref.UID
		}
	}
	if w.name == "" {
		return w
	}
	byName := fields.OneTermEqualSelector("metadata.name", w.name).String()
	lw := &cache.ListWatch{
		ListWithContextFunc: func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) {
			o.FieldSelector = byName
			return kube.ListDaemonSets(ctx, namespace, o)
		},
		WatchFuncWithContext: func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
			o.FieldSelector = byName
			return kube.WatchDaemonSets(ctx, namespace, o)
		},
	}
	w.informer = cache.NewSharedIndexInformer(cache.ToListWatcherWithWatchListSemantics(lw, kube), &objects.DaemonSet{}, 0, cache.Indexers{})
	go w.informer.Run(ctx.Done())
	syncCtx, cancel := context.WithTimeout(ctx, OwnerWatchSync)
	defer cancel()
	if !cache.WaitForCacheSync(syncCtx.Done(), w.informer.HasSynced) {
		w.why = "cannot watch DaemonSet " + w.name + " (RBAC: list/watch on it)"
	}
	return w
}

// Gone reports whether the owning DaemonSet is deleted or being deleted,
// and why. When unsure it says no: keeping the rules is the safe side.
func (w *OwnerWatch) Gone() (bool, string) {
	if w.informer == nil || !w.informer.HasSynced() {
		return false, w.why
	}
	var ds *objects.DaemonSet
	for _, obj := range w.informer.GetStore().List() {
		if d, ok := obj.(*objects.DaemonSet); ok && d.Name == w.name {
			ds = d
		}
	}
	switch {
	case ds == nil:
		return true, "DaemonSet " + w.name + " deleted"
	case ds.UID != w.uid:
		return false, "DaemonSet " + w.name + " was replaced; its agents take over the rules"
	case ds.DeletionTimestamp != nil:
		return true, "DaemonSet " + w.name + " is being deleted"
	default:
		return false, "DaemonSet " + w.name + " still exists (rolling update or restart)"
	}
}
