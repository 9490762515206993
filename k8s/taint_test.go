package k8s

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
	clocktesting "k8s.io/utils/clock/testing"

	"github.com/kube2ra/kube2ra/kubeapi/kubeapitest"
)

// TestStartupTaintRemoverRetriesWithBackoff: a failing patch is retried
// after a growing delay until it succeeds, and every failure is counted.
func TestStartupTaintRemoverRetriesWithBackoff(t *testing.T) {
	client := fake.NewClientset(&corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: "n1"},
		Spec:       corev1.NodeSpec{Taints: []corev1.Taint{{Key: "other", Effect: corev1.TaintEffectNoSchedule}, {Key: StartupTaintKey, Effect: corev1.TaintEffect(StartupTaintEffect)}}},
	})
	var patches atomic.Int32
	client.PrependReactor("patch", "nodes", func(k8stesting.Action) (bool, runtime.Object, error) {
		if patches.Add(1) <= 2 {
			return true, nil, errors.New("API server unavailable")
		}
		return false, nil, nil
	})
	clk := clocktesting.NewFakeClock(time.Unix(0, 0))
	r, err := NewStartupTaintRemover(kubeapitest.FromClientset(client), TaintRemoverOptions{NodeName: "n1", Logger: testLogger(), Clock: clk})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- r.Run(context.Background()) }()
	for _, wait := range []time.Duration{taintRetryInitial, 2 * taintRetryInitial} {
		waitFor(t, "the remover waiting to retry", clk.HasWaiters)
		clk.Step(wait - time.Millisecond)
		if !clk.HasWaiters() {
			t.Fatalf("retried before the %s backoff", wait)
		}
		clk.Step(time.Millisecond)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	n, _ := client.CoreV1().Nodes().Get(context.Background(), "n1", metav1.GetOptions{})
	if len(n.Spec.Taints) != 1 || n.Spec.Taints[0].Key != "other" {
		t.Errorf("taints = %v, want only the other taint", n.Spec.Taints)
	}
	if got := testutil.ToFloat64(r.failures); got != 2 {
		t.Errorf("failures counted = %v, want 2", got)
	}
}
