//go:build integration

package cniresults

import (
	"context"
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/kube2ra/kube2ra/k8s"
	"github.com/kube2ra/kube2ra/kubeapi"
	"github.com/kube2ra/kube2ra/test/controlplane"
)

// TestWatcherKnowsANewPodByItsSandboxRecord runs the agent's Watcher
// against a real API server with a real Cache: a scheduled pod whose
// status has no IP yet is found by its address the moment the runtime's
// record appears; a record naming an earlier pod of that name (another
// UID) gives nothing, and the lookup ends as an unknown address does.
func TestWatcherKnowsANewPodByItsSandboxRecord(t *testing.T) {
	const node, ns, timeout = "node-sandbox", "sandbox", 2 * time.Second
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cp, err := controlplane.Start(ctx, controlplane.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cp.Stop() })
	kube, err := kubernetes.NewForConfig(cp.AdminConfig())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kube.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	newPod := func(name string) *corev1.Pod {
		t.Helper()
		p, err := kube.CoreV1().Pods(ns).Create(ctx, &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
			Spec:       corev1.PodSpec{NodeName: node, Containers: []corev1.Container{{Name: "app", Image: "app:test"}}},
		}, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	fresh := newPod("fresh")
	newPod("renamed")

	dir := t.TempDir()
	results := New(dir, nil)
	if err := results.Start(ctx); err != nil {
		t.Fatal(err)
	}
	log := logrus.New()
	log.SetOutput(os.Stderr)
	api, err := kubeapi.New(cp.AdminConfig())
	if err != nil {
		t.Fatal(err)
	}
	w, err := k8s.NewWatcher(api, k8s.WatcherOptions{NodeName: node, LookupTimeout: timeout, Logger: log, Sandboxes: results})
	if err != nil {
		t.Fatal(err)
	}
	wctx, wcancel := context.WithCancel(ctx)
	t.Cleanup(func() { wcancel(); w.Shutdown() })
	w.Start(wctx)
	if err := w.WaitForSync(ctx); err != nil {
		t.Fatal(err)
	}

	type result struct {
		pod *k8s.Pod
		err error
		at  time.Time
	}
	find := func(ip string) <-chan result {
		out := make(chan result, 1)
		go func() {
			p, err := w.FindPod(ctx, netip.MustParseAddr(ip))
			out <- result{p, err, time.Now()}
		}()
		return out
	}
	record := func(name, body string) time.Time {
		t.Helper()
		// In place, as libcni writes it.
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		return time.Now()
	}

	res := find("10.60.0.5")
	time.Sleep(200 * time.Millisecond) // the lookup waits before the sandbox exists
	written := record("k2rc-fresh-eth0", containerdEntry(ns, "fresh", string(fresh.UID), "10.60.0.5/24"))
	r := <-res
	if r.err != nil || r.pod.UID != fresh.UID || len(r.pod.IPs) != 1 || r.pod.IPs[0] != netip.MustParseAddr("10.60.0.5") {
		t.Fatalf("FindPod = %+v, %v; want pod fresh with 10.60.0.5", r.pod, r.err)
	}
	t.Logf("answered %s after the record was written", r.at.Sub(written))

	res = find("10.60.0.6")
	record("k2rc-renamed-eth0", containerdEntry(ns, "renamed", "uid-of-an-earlier-pod", "10.60.0.6/24"))
	if r := <-res; !errors.Is(r.err, k8s.ErrPodNotFound) {
		t.Fatalf("FindPod for a record of another UID = %+v, %v; want ErrPodNotFound after the timeout", r.pod, r.err)
	}
}
