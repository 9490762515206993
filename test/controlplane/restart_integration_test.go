//go:build integration

package controlplane_test

import (
	"context"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/kube2ra/kube2ra/test/controlplane"
)

// TestRestartAPIServerKeepsURLAndData proves the restart fault the soak uses:
// while kube-apiserver is down the API refuses, and afterwards the same URL
// and the same client answer again with the objects written before.
func TestRestartAPIServerKeepsURLAndData(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cp, kube := startOwn(t, ctx)
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "before-restart"}}
	if _, err := kube.CoreV1().Namespaces().Create(ctx, ns, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	url := cp.URL()

	done := make(chan error, 1)
	go func() { done <- cp.RestartAPIServer(ctx, 2*time.Second) }()
	sawDown := false
	for !sawDown {
		select {
		case err := <-done:
			t.Fatalf("RestartAPIServer returned (%v) before the API was ever seen down", err)
		case <-time.After(100 * time.Millisecond):
		}
		shortCtx, shortCancel := context.WithTimeout(ctx, time.Second)
		_, err := kube.CoreV1().Namespaces().Get(shortCtx, "before-restart", metav1.GetOptions{})
		shortCancel()
		sawDown = err != nil
	}
	if err := <-done; err != nil {
		t.Fatalf("RestartAPIServer: %v", err)
	}
	if cp.URL() != url {
		t.Fatalf("URL changed across the restart: %s -> %s", url, cp.URL())
	}
	if _, err := kube.CoreV1().Namespaces().Get(ctx, "before-restart", metav1.GetOptions{}); err != nil {
		t.Fatalf("the namespace written before the restart is not readable after it: %v", err)
	}
}

// startOwn starts a control plane for a test that restarts kube-apiserver
// (the package's shared one must stay as the other tests expect it) and
// returns it with an admin client; it is stopped when the test ends.
func startOwn(t *testing.T, ctx context.Context) (*controlplane.ControlPlane, kubernetes.Interface) {
	t.Helper()
	cp, err := controlplane.Start(ctx, controlplane.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cp.Stop() })
	kube, err := kubernetes.NewForConfig(cp.AdminConfig())
	if err != nil {
		t.Fatal(err)
	}
	return cp, kube
}
