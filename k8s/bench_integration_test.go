//go:build integration

package k8s

import (
	"context"
	"fmt"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"

	"github.com/kube2ra/kube2ra/kubeapi"
)

const (
	// benchNode is the node whose agent is measured.
	benchNode = "node-bench"
	// benchLocalPods is the kubelet's default pod limit per node.
	benchLocalPods = 110
	// benchRemotePods exist on other nodes; the agent must not pay for them.
	benchRemotePods = 5000
	// benchRemoteNodes spreads the remote pods.
	benchRemoteNodes = 50
	// benchCreators is how many creates run in parallel.
	benchCreators = 32
)

// benchSetup creates the cluster state once per test binary.
var benchSetup sync.Once

// benchPod is a pod of realistic size: labels, a last-applied annotation,
// two containers with environment, and (for local pods) a role.
func benchPod(name, node string, local bool) *corev1.Pod {
	p := newPod("bench", name, node, map[string]string{
		"kubectl.kubernetes.io/last-applied-configuration": strings.Repeat(`{"apiVersion":"v1","kind":"Pod"}`, 40),
	})
	p.Labels = map[string]string{"app": "bench", "pod-template-hash": "5d9f8c7b6", "team": "platform"}
	if local {
		p.Annotations[DefaultRoleKey] = "app"
	}
	env := make([]corev1.EnvVar, 10)
	for i := range env {
		env[i] = corev1.EnvVar{Name: fmt.Sprintf("VAR_%d", i), Value: strings.Repeat("v", 40)}
	}
	p.Spec.Containers = []corev1.Container{
		{Name: "app", Image: "registry.example/app:1.2.3", Env: env, Args: []string{"--port=8080", "--verbose"}},
		{Name: "sidecar", Image: "registry.example/sidecar:4.5.6", Env: env},
	}
	return p
}

// createBenchPods creates the remote and local pods with parallel creates.
func createBenchPods(b *testing.B) {
	ctx := context.Background()
	createNamespace(b, "bench", ptr(`["app"]`))
	type job struct {
		pod *corev1.Pod
		ip  string
	}
	jobs := make(chan job)
	var wg sync.WaitGroup
	errs := make(chan error, benchCreators)
	for range benchCreators {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range jobs {
				created, err := admin.CoreV1().Pods("bench").Create(ctx, j.pod, metav1.CreateOptions{})
				if err != nil {
					errs <- err
					return
				}
				created.Status.Phase = corev1.PodRunning
				created.Status.PodIP = j.ip
				created.Status.PodIPs = []corev1.PodIP{{IP: j.ip}}
				if _, err := admin.CoreV1().Pods("bench").UpdateStatus(ctx, created, metav1.UpdateOptions{}); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	start := time.Now()
	for i := range benchRemotePods {
		node := fmt.Sprintf("node-remote-%d", i%benchRemoteNodes)
		jobs <- job{benchPod(fmt.Sprintf("remote-%d", i), node, false), fmt.Sprintf("10.%d.%d.%d", 100+i%benchRemoteNodes, i/250, i%250+1)}
	}
	for i := range benchLocalPods {
		jobs <- job{benchPod(fmt.Sprintf("local-%d", i), benchNode, true), fmt.Sprintf("10.99.0.%d", i+1)}
	}
	close(jobs)
	wg.Wait()
	close(errs)
	for err := range errs {
		b.Fatalf("creating bench pods: %v", err)
	}
	b.Logf("created %d remote and %d local pods with status in %s", benchRemotePods, benchLocalPods, time.Since(start).Round(time.Millisecond))
}

const mib = 1 << 20

// BenchmarkSyncMemory measures the heap the agent's informers hold after
// syncing 110 local pods while 5,000 pods exist on other nodes: the
// Watcher's (field selector + transform) against a naive informer over all
// pods without a transform, for scale.
//
//	go test -tags integration -run '^$' -bench BenchmarkSyncMemory -benchtime 3x ./k8s/
func BenchmarkSyncMemory(b *testing.B) {
	benchSetup.Do(func() { createBenchPods(b) })

	var watcherMiB, naiveMiB float64
	for b.Loop() {
		watcherMiB = measureWatcher(b)
		naiveMiB = measureNaive(b)
	}
	b.ReportMetric(watcherMiB, "heap-MiB")
	b.ReportMetric(naiveMiB, "naive-heap-MiB")
	fmt.Printf("BENCH k8s_heap_mib_110local_5000remote %.2f MiB\n", watcherMiB)
	fmt.Printf("BENCH k8s_heap_mib_naive_all_pods_untransformed %.2f MiB\n", naiveMiB)
}

// measureWatcher starts a Watcher (and resolver, as the agent runs them),
// waits for sync and returns the heap growth in MiB.
func measureWatcher(b *testing.B) float64 {
	beforeInuse, beforeAlloc := heapInUse()
	client, err := kubeapi.New(agentConfig)
	if err != nil {
		b.Fatal(err)
	}
	w, err := NewWatcher(client, WatcherOptions{NodeName: benchNode, Logger: testLogger()})
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	w.Start(ctx)
	syncCtx, syncCancel := context.WithTimeout(ctx, time.Minute)
	defer syncCancel()
	if err := w.WaitForSync(syncCtx); err != nil {
		b.Fatal(err)
	}
	if n := w.CachedPods(); n != benchLocalPods {
		b.Fatalf("the store holds %d pods; want %d", n, benchLocalPods)
	}
	afterInuse, afterAlloc := heapInUse()
	runtime.KeepAlive(w)
	cancel()
	w.Shutdown()
	b.Logf("watcher: heap in use +%.2f MiB, live heap +%.2f MiB (%d pods, %d namespaces cached)",
		float64(afterInuse-beforeInuse)/mib, float64(int64(afterAlloc)-int64(beforeAlloc))/mib, benchLocalPods, w.CachedNamespaces())
	return float64(int64(afterInuse)-int64(beforeInuse)) / mib
}

// measureNaive caches every pod of the cluster, untransformed: what an
// agent without field selector and transform would hold.
func measureNaive(b *testing.B) float64 {
	beforeInuse, _ := heapInUse()
	client, err := kubernetes.NewForConfig(agentConfig)
	if err != nil {
		b.Fatal(err)
	}
	f := informers.NewSharedInformerFactory(client, 0)
	inf := f.Core().V1().Pods().Informer()
	ctx, cancel := context.WithCancel(context.Background())
	f.Start(ctx.Done())
	if !cache.WaitForCacheSync(ctx.Done(), inf.HasSynced) {
		b.Fatal("naive informer did not sync")
	}
	n := len(inf.GetStore().ListKeys())
	afterInuse, _ := heapInUse()
	runtime.KeepAlive(inf)
	cancel()
	f.Shutdown()
	b.Logf("naive informer: heap in use +%.2f MiB (%d pods cached)", float64(afterInuse-beforeInuse)/mib, n)
	return float64(int64(afterInuse)-int64(beforeInuse)) / mib
}
