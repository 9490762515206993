package main

import (
	"context"
	"fmt"
	"os"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
)

// ownerWatchSync bounds the wait for the owner watch's first list.
const ownerWatchSync = 10 * time.Second

// ownerWatch follows the DaemonSet that owns this agent's pod from start-up.
// On exit the agent must know whether it is being uninstalled; asking then is
// too late, because `helm uninstall` deletes the agent's Role together with
// the DaemonSet, while an open watch keeps delivering.
type ownerWatch struct {
	// name and uid identify the owning DaemonSet.
	name string
	uid  types.UID
	// informer watches that one DaemonSet (field selector on its name).
	informer cache.SharedIndexInformer
	// why explains an unknown owner; set when informer is nil.
	why string
}

// watchOwner finds the owning DaemonSet through the agent's own pod
// (POD_NAME and POD_NAMESPACE from the downward API) and starts watching it.
func watchOwner(ctx context.Context, kube kubernetes.Interface) *ownerWatch {
	name, namespace := os.Getenv("POD_NAME"), os.Getenv("POD_NAMESPACE")
	if name == "" || namespace == "" {
		return &ownerWatch{why: "POD_NAME/POD_NAMESPACE not set, so the owning DaemonSet is unknown"}
	}
	pod, err := kube.CoreV1().Pods(namespace).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return &ownerWatch{why: fmt.Sprintf("cannot read own pod %s/%s: %v", namespace, name, err)}
	}
	w := &ownerWatch{why: "own pod has no DaemonSet owner"}
	for _, ref := range pod.OwnerReferences {
		if ref.Kind == "DaemonSet" {
			w.name, w.uid = ref.Name, ref.UID
		}
	}
	if w.name == "" {
		return w
	}
	lw := cache.NewFilteredListWatchFromClient(kube.AppsV1().RESTClient(), "daemonsets", namespace, func(o *metav1.ListOptions) {
		o.FieldSelector = fields.OneTermEqualSelector("metadata.name", w.name).String()
	})
	w.informer = cache.NewSharedIndexInformer(lw, &appsv1.DaemonSet{}, 0, cache.Indexers{})
	go w.informer.Run(ctx.Done())
	syncCtx, cancel := context.WithTimeout(ctx, ownerWatchSync)
	defer cancel()
	if !cache.WaitForCacheSync(syncCtx.Done(), w.informer.HasSynced) {
		w.why = "cannot watch DaemonSet " + w.name + " (RBAC: list/watch on it)"
	}
	return w
}

// gone reports whether the owning DaemonSet is deleted or being deleted.
// When unsure it says no: keeping the rules is the safe side.
func (w *ownerWatch) gone() (bool, string) {
	if w.informer == nil || !w.informer.HasSynced() {
		return false, w.why
	}
	var ds *appsv1.DaemonSet
	for _, obj := range w.informer.GetStore().List() {
		if d, ok := obj.(*appsv1.DaemonSet); ok && d.Name == w.name {
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
