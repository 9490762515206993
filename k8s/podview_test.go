package k8s

import (
	"context"
	"errors"
	"net/netip"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/kube2ra/kube2ra/kubeapi/objects"
)

// storedPod is the pod object the informer's store holds now.
func storedPod(w *Watcher, name string) *objects.Pod {
	obj, ok, _ := w.pods.GetStore().GetByKey("ns/" + name)
	if !ok {
		return nil
	}
	return obj.(*objects.Pod)
}

// TestFindPodSharesOneViewPerCachedObject: repeat lookups of an unchanged
// pod hand out the same Pod (no Pod built per lookup), and every change the
// store holds is in the very next lookup's answer: a new annotation, a
// deletion, a new pod on the same IP. Views are keyed by the store's
// object, so a view keyed by anything else (UID, IP) fails here.
func TestFindPodSharesOneViewPerCachedObject(t *testing.T) {
	pod := testPod("a", corev1.PodRunning, "10.0.0.1")
	pod.Annotations = map[string]string{DefaultRoleKey: "role-1"}
	w, client, _ := newTestWatcher(t, true, pod)
	waitFor(t, "the pod watch to be current", w.podTracker.isCurrent)
	ip := netip.MustParseAddr("10.0.0.1")
	ctx := context.Background()
	find := func() *Pod {
		t.Helper()
		p, err := w.FindPod(ctx, ip)
		if err != nil {
			t.Fatalf("FindPod: %v", err)
		}
		return p
	}

	first := find()
	if find() != first {
		t.Error("two lookups of an unchanged pod built two Pods")
	}
	if got := first.Annotations[DefaultRoleKey]; got != "role-1" {
		t.Fatalf("role annotation %q, want role-1", got)
	}

	// An annotation change: the next lookup after the store has it sees it.
	pod.Annotations = map[string]string{DefaultRoleKey: "role-2"}
	pod.ResourceVersion = ""
	if _, err := client.CoreV1().Pods("ns").Update(ctx, pod, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the store to hold the new annotation", func() bool {
		p := storedPod(w, "a")
		return p != nil && p.Annotations[DefaultRoleKey] == "role-2"
	})
	if got := find().Annotations[DefaultRoleKey]; got != "role-2" {
		t.Errorf("after the annotation changed in the store, the lookup answered role %q", got)
	}
	// The replaced object's view is forgotten (memory, not correctness).
	waitFor(t, "the replaced object's view to be forgotten", func() bool { return w.views.size() == 1 })

	// Deleted, then the IP handed to a new pod: never the old pod's view.
	if err := client.CoreV1().Pods("ns").Delete(ctx, "a", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the store to drop the pod", func() bool { return storedPod(w, "a") == nil })
	short, cancel := context.WithCancel(ctx)
	cancel()
	if p, err := w.FindPod(short, ip); !errors.Is(err, ErrPodNotFound) {
		t.Errorf("after the pod was deleted, FindPod = %+v, %v; want ErrPodNotFound", p, err)
	}
	waitFor(t, "the deleted object's view to be forgotten", func() bool { return w.views.size() == 0 })
	next := testPod("b", corev1.PodRunning, "10.0.0.1")
	next.UID = types.UID("uid-b")
	if _, err := client.CoreV1().Pods("ns").Create(ctx, next, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the store to hold the new pod", func() bool { return storedPod(w, "b") != nil })
	if got := find(); got.UID != "uid-b" || got.Name != "b" {
		t.Errorf("the IP's new owner is %s (%s), want b (uid-b)", got.Name, got.UID)
	}
}

// TestPodViewsStayBounded: views of objects whose events were missed
// cannot grow without bound.
func TestPodViewsStayBounded(t *testing.T) {
	var v podViews
	for i := range 2*maxPodViews + 1 {
		p := ownPod(testPod("p", corev1.PodRunning, "10.0.0.1"))
		p.ResourceVersion = string(rune('a' + i%26))
		v.of(p)
	}
	if n := v.size(); n > maxPodViews {
		t.Errorf("%d views held, bound %d", n, maxPodViews)
	}
}

// TestIPKeysAreTheIndexKeys: the memoised key of an address is the one the
// index files it under (IPv4-mapped and zoned spellings included), and the
// memo stays bounded.
func TestIPKeysAreTheIndexKeys(t *testing.T) {
	var k ipKeys
	for _, s := range []string{"10.0.0.1", "::ffff:10.0.0.1", "fd00::1", "fe80::1%eth0", "10.0.0.1"} {
		ip := netip.MustParseAddr(s)
		if got, want := k.key(ip), ipKey(ip); got != want {
			t.Errorf("key(%s) = %q, want %q", s, got, want)
		}
	}
	for i := range 2*maxIPKeys + 1 {
		k.key(netip.AddrFrom4([4]byte{10, 1, byte(i >> 8), byte(i)}))
	}
	n := k.byIP.size()
	if n > maxIPKeys {
		t.Errorf("%d keys held, bound %d", n, maxIPKeys)
	}
}
