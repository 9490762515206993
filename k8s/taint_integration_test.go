//go:build integration

package k8s

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/kube2ra/kube2ra/kubeapi/objects"
)

// createNode creates a node with taints, as a kubelet registering with
// --register-with-taints would, and returns the taints it got: the API
// server's TaintNodesByCondition admission adds node.kubernetes.io/not-ready.
func createNode(t *testing.T, ctx context.Context, name string, taints ...corev1.Taint) []corev1.Taint {
	t.Helper()
	n, err := admin.CoreV1().Nodes().Create(ctx, &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec:       corev1.NodeSpec{Taints: taints},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = admin.CoreV1().Nodes().Delete(context.Background(), name, metav1.DeleteOptions{}) })
	return n.Spec.Taints
}

// withoutStartupTaint is taints minus the startup taint, in order.
func withoutStartupTaint(taints []corev1.Taint) []corev1.Taint {
	return slices.DeleteFunc(slices.Clone(taints), func(tn corev1.Taint) bool { return tn.Key == StartupTaintKey })
}

func nodeTaints(t *testing.T, ctx context.Context, name string) []corev1.Taint {
	t.Helper()
	n, err := admin.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return n.Spec.Taints
}

func taintKeys(taints []corev1.Taint) []string {
	keys := make([]string, len(taints))
	for i, tn := range taints {
		keys[i] = tn.Key + ":" + string(tn.Effect)
	}
	return keys
}

var startupTaint = corev1.Taint{Key: StartupTaintKey, Effect: corev1.TaintEffect(StartupTaintEffect)}

// TestStartupTaintRemovedFromOwnNodeOnly: the agent, with the chart's RBAC,
// removes the startup taint from its own node, leaves every other taint of
// that node where it was, and leaves the taint on every other node.
func TestStartupTaintRemovedFromOwnNodeOnly(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), eventuallyTimeout)
	defer cancel()
	before := corev1.Taint{Key: "example.com/gpu", Value: "true", Effect: corev1.TaintEffectNoSchedule}
	after := corev1.Taint{Key: "node.kubernetes.io/not-ready", Effect: corev1.TaintEffectNoExecute, TimeAdded: &metav1.Time{Time: time.Now().Truncate(time.Second)}}
	own := createNode(t, ctx, "taint-own", before, startupTaint, after)
	other := createNode(t, ctx, "taint-other", startupTaint)

	reg := prometheus.NewRegistry()
	r, err := NewStartupTaintRemover(agentAPI(t), TaintRemoverOptions{NodeName: "taint-own", Logger: testLogger(), Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Run(ctx); err != nil {
		t.Fatal(err)
	}
	if got, want := taintKeys(nodeTaints(t, ctx, "taint-own")), taintKeys(withoutStartupTaint(own)); !slices.Equal(got, want) {
		t.Errorf("own node's taints = %v, want %v (only the startup taint removed, the others in place)", got, want)
	}
	if got, want := taintKeys(nodeTaints(t, ctx, "taint-other")), taintKeys(other); !slices.Equal(got, want) || !slices.Contains(got, StartupTaintKey+":NoSchedule") {
		t.Errorf("another node's taints = %v, want %v untouched", got, want)
	}
	if v := testutil.ToFloat64(r.tainted); v != 0 {
		t.Errorf("kube2ra_node_startup_taint = %v after removal, want 0", v)
	}
	// Running again finds nothing to do: the agent never puts the taint back.
	if err := r.Run(ctx); err != nil {
		t.Fatal(err)
	}
	if got := taintKeys(nodeTaints(t, ctx, "taint-own")); !slices.Equal(got, taintKeys(withoutStartupTaint(own))) {
		t.Errorf("second run changed the taints to %v", got)
	}
}

// TestStartupTaintPatchNeverClobbersAConcurrentChange: a patch prepared for
// one taint list is refused once another writer changed the list, so the
// taint that writer added survives; the remover then reads again and
// succeeds.
func TestStartupTaintPatchNeverClobbersAConcurrentChange(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), eventuallyTimeout)
	defer cancel()
	created := createNode(t, ctx, "taint-race", startupTaint)
	stale, err := removeTaintPatch(startupTaintIndex(*roundTrip[[]objects.Taint](created)), *roundTrip[objects.Taint](startupTaint))
	if err != nil {
		t.Fatal(err)
	}
	// Another controller puts its taint first after the agent read the node.
	concurrent := corev1.Taint{Key: "example.com/maintenance", Effect: corev1.TaintEffectNoSchedule}
	n, err := admin.CoreV1().Nodes().Get(ctx, "taint-race", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	n.Spec.Taints = append([]corev1.Taint{concurrent}, n.Spec.Taints...)
	raced := n.Spec.Taints
	if _, err := admin.CoreV1().Nodes().Update(ctx, n, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := agentClient(t).CoreV1().Nodes().Patch(ctx, "taint-race", types.JSONPatchType, stale, metav1.PatchOptions{}); err == nil {
		t.Fatal("a patch built for the old taint list was applied; it would have removed the other controller's taint")
	}
	if got, want := taintKeys(nodeTaints(t, ctx, "taint-race")), taintKeys(raced); !slices.Equal(got, want) {
		t.Fatalf("taints after the refused patch = %v, want %v", got, want)
	}
	r, err := NewStartupTaintRemover(agentAPI(t), TaintRemoverOptions{NodeName: "taint-race", Logger: testLogger()})
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Run(ctx); err != nil {
		t.Fatal(err)
	}
	if got, want := taintKeys(nodeTaints(t, ctx, "taint-race")), taintKeys(withoutStartupTaint(raced)); !slices.Equal(got, want) {
		t.Errorf("taints = %v, want %v", got, want)
	}
}
