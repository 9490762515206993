package k8s

import (
	"context"
	"fmt"
	"runtime"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	k8sruntime "k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/kube2ra/kube2ra/kubeapi/kubeapitest"
)

// quietListener ignores role announcements.
type quietListener struct{}

func (quietListener) PodRoleChanged(*Pod, Role) {}
func (quietListener) PodRoleGone(*Pod)          {}

// heapInUse collects garbage and returns HeapInuse and HeapAlloc in bytes.
func heapInUse() (inuse, alloc uint64) {
	var m runtime.MemStats
	runtime.GC()
	runtime.GC()
	runtime.ReadMemStats(&m)
	return m.HeapInuse, m.HeapAlloc
}

// settledHeap is the live heap (HeapAlloc after collecting) once the
// informers' handlers have caught up: their queued notifications hold
// objects too, so it waits (up to 5 s) until the heap stops shrinking by
// more than 8 bytes an object.
func settledHeap(objects int) uint64 {
	_, h := heapInUse()
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); {
		time.Sleep(20 * time.Millisecond)
		_, next := heapInUse()
		if next+uint64(8*objects) >= h {
			return min(h, next)
		}
		h = next
	}
	return h
}

// reportCacheBytes reports, as unit, the live heap per object that start
// adds: start builds and syncs the caches over client's n objects and
// returns what stops them.
func reportCacheBytes(b *testing.B, client *fake.Clientset, n int, unit string, start func(ctx context.Context, client Client) (stop func())) {
	b.Helper()
	for b.Loop() {
		_, before := heapInUse()
		ctx, cancel := context.WithCancel(context.Background())
		stop := start(ctx, kubeapitest.FromClientset(client))
		after := settledHeap(n)
		b.ReportMetric(float64(int64(after)-int64(before))/float64(n), unit)
		cancel()
		stop()
	}
}

// BenchmarkNamespaceCacheMemory reports what one namespace of the cluster
// costs every agent's live heap (B/namespace): the watcher's namespace
// cache with its transform and indexes, and the role resolver and notifier
// that hear of every namespace, for namespaces like most clusters' (a
// policy annotation, labels and an annotation kube2ra does not read) and
// no pod on the agent's node. Resident memory is about 1.5 times the live
// heap at GOGC=50 (1.25 times at the agent's GOGC=25).
func BenchmarkNamespaceCacheMemory(b *testing.B) {
	const n = 2000
	objs := make([]k8sruntime.Object, 0, n)
	for i := range n {
		objs = append(objs, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{
			Name: fmt.Sprintf("team-%05d", i), UID: types.UID(fmt.Sprintf("%08d-6d3b-4c61-9c3a-0242ac120002", i)), ResourceVersion: fmt.Sprint(100000 + i),
			Labels:      map[string]string{"kubernetes.io/metadata.name": fmt.Sprintf("team-%05d", i), "team": "payments"},
			Annotations: map[string]string{DefaultNamespaceKey: `["team-*"]`, "owner": "payments@example.com"},
		}})
	}
	reportCacheBytes(b, fake.NewClientset(objs...), n, "B/namespace", func(ctx context.Context, client Client) func() {
		w, err := NewWatcher(client, WatcherOptions{NodeName: "node-a", Logger: testLogger()})
		if err != nil {
			b.Fatal(err)
		}
		r, err := NewRoleResolver(w, ResolverOptions{BaseRoleARN: StaticBaseARN(testBase), NamespaceRestrictions: true, Logger: testLogger()})
		if err != nil {
			b.Fatal(err)
		}
		if _, err := NewRoleNotifier(w, r, quietListener{}, testLogger()); err != nil {
			b.Fatal(err)
		}
		w.Start(ctx)
		if err := w.WaitForSync(ctx); err != nil {
			b.Fatal(err)
		}
		if got := len(w.namespaces.GetStore().ListKeys()); got != n {
			b.Fatalf("%d namespaces cached; want %d", got, n)
		}
		return w.Shutdown
	})
}

// BenchmarkServiceAccountCacheMemory reports what one ServiceAccount of the
// cluster costs the live heap of an agent with the token door
// (--pod-identity), which caches them all (B/serviceaccount); most have no
// kube2ra annotation, a few name a role.
func BenchmarkServiceAccountCacheMemory(b *testing.B) {
	const n = 2000
	objs := make([]k8sruntime.Object, 0, n)
	for i := range n {
		sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{
			Namespace: fmt.Sprintf("team-%05d", i/2), Name: fmt.Sprintf("app-%d", i%2),
			UID: types.UID(fmt.Sprintf("%08d-6d3b-4c61-9c3a-0242ac120002", i)), ResourceVersion: fmt.Sprint(100000 + i),
			Labels: map[string]string{"app.kubernetes.io/name": "app"},
		}}
		if i%10 == 0 {
			sa.Annotations = map[string]string{DefaultRoleKey: fmt.Sprintf("role-%d", i)}
		}
		objs = append(objs, sa)
	}
	reportCacheBytes(b, fake.NewClientset(objs...), n, "B/serviceaccount", func(ctx context.Context, client Client) func() {
		accounts, err := NewServiceAccounts(client, "")
		if err != nil {
			b.Fatal(err)
		}
		accounts.Start(ctx)
		if err := accounts.WaitForSync(ctx, SyncLog{}); err != nil {
			b.Fatal(err)
		}
		if _, ok := accounts.ServiceAccountUID("team-00000", "app-1"); !ok {
			b.Fatal("team-00000/app-1 is not cached")
		}
		return accounts.Shutdown
	})
}
