package k8s

import (
	"context"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/kube2ra/kube2ra/kubeapi/kubeapitest"
)

// TestOwnerWatchSaysGoneOnlyWhenTheDaemonSetIs: the rules are removed on
// exit only when the agent's own DaemonSet is deleted or being deleted;
// a rolling update, a replaced DaemonSet or an unknown owner keep them.
func TestOwnerWatchSaysGoneOnlyWhenTheDaemonSetIs(t *testing.T) {
	const ns, dsName, podName = "kube-system", "kube2ra", "kube2ra-abcde"
	ds := func() *appsv1.DaemonSet {
		return &appsv1.DaemonSet{ObjectMeta: metav1.ObjectMeta{Name: dsName, Namespace: ns, UID: "ds-1"}}
	}
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: podName, Namespace: ns,
		OwnerReferences: []metav1.OwnerReference{{Kind: "DaemonSet", Name: dsName, UID: "ds-1"}}}}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	eventually := func(t *testing.T, w *OwnerWatch, want bool, why string) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for {
			gone, reason := w.Gone()
			if gone == want && strings.Contains(reason, why) {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("Gone() = %v, %q; want %v, a reason with %q", gone, reason, want, why)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}

	t.Run("rolling update keeps the rules", func(t *testing.T) {
		w := WatchOwner(ctx, kubeapitest.FromClientset(fake.NewClientset(pod, ds())), podName, ns)
		eventually(t, w, false, "still exists")
	})
	t.Run("deleted DaemonSet removes them", func(t *testing.T) {
		kube := fake.NewClientset(pod, ds())
		w := WatchOwner(ctx, kubeapitest.FromClientset(kube), podName, ns)
		eventually(t, w, false, "still exists")
		if err := kube.AppsV1().DaemonSets(ns).Delete(ctx, dsName, metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
		eventually(t, w, true, "deleted")
	})
	t.Run("DaemonSet being deleted removes them", func(t *testing.T) {
		kube := fake.NewClientset(pod, ds())
		w := WatchOwner(ctx, kubeapitest.FromClientset(kube), podName, ns)
		d := ds()
		now := metav1.Now()
		d.DeletionTimestamp = &now
		if _, err := kube.AppsV1().DaemonSets(ns).Update(ctx, d, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
		eventually(t, w, true, "being deleted")
	})
	t.Run("a replaced DaemonSet keeps them for its agents", func(t *testing.T) {
		kube := fake.NewClientset(pod, ds())
		w := WatchOwner(ctx, kubeapitest.FromClientset(kube), podName, ns)
		d := ds()
		d.UID = "ds-2"
		if _, err := kube.AppsV1().DaemonSets(ns).Update(ctx, d, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
		eventually(t, w, false, "was replaced")
	})
	t.Run("unknown own pod keeps them", func(t *testing.T) {
		eventually(t, WatchOwner(ctx, kubeapitest.FromClientset(fake.NewClientset()), podName, ns), false, "cannot read own pod")
		eventually(t, WatchOwner(ctx, kubeapitest.FromClientset(fake.NewClientset()), "", ""), false, "POD_NAME/POD_NAMESPACE not set")
	})
	t.Run("a pod no DaemonSet owns keeps them", func(t *testing.T) {
		bare := pod.DeepCopy()
		bare.OwnerReferences = nil
		eventually(t, WatchOwner(ctx, kubeapitest.FromClientset(fake.NewClientset(bare)), podName, ns), false, "no DaemonSet owner")
	})
}
