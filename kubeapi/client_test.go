package kubeapi_test

import (
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/rest"

	"github.com/kube2ra/kube2ra/k8s"
	"github.com/kube2ra/kube2ra/kubeapi"
	"github.com/kube2ra/kube2ra/kubeapi/kubeapitest"
)

// Both the lean client and the clientset adapter the unit tests use make
// every call package k8s needs.
var (
	_ k8s.Client = (*kubeapi.Client)(nil)
	_ k8s.Client = (*kubeapitest.Client)(nil)
)

// TestNewRefusesQPSWithoutBurst: a rate limit without a burst is refused
// with the fix named, as client-go's clientset refuses it.
func TestNewRefusesQPSWithoutBurst(t *testing.T) {
	_, err := kubeapi.New(&rest.Config{Host: "https://127.0.0.1:6443", QPS: 5})
	if err == nil || !strings.Contains(err.Error(), "burst") {
		t.Fatalf("New with QPS 5 and burst 0 = %v; want an error naming the burst", err)
	}
	if _, err := kubeapi.New(&rest.Config{Host: "https://127.0.0.1:6443", QPS: 5, Burst: 10}); err != nil {
		t.Fatalf("New with QPS 5 and burst 10: %v", err)
	}
}

// TestSchemeHoldsOnlyTheKindsTheAgentUses: the scheme knows the kinds the
// agent reads and writes, and no other group (each one registered is
// binary and resident memory on every node).
func TestSchemeHoldsOnlyTheKindsTheAgentUses(t *testing.T) {
	s := kubeapi.NewScheme()
	for _, kind := range []string{"Pod", "PodList", "Namespace", "ServiceAccount", "Node", "Event"} {
		if !s.Recognizes(schemaGVK("", kind)) {
			t.Errorf("core/v1 %s is not in the scheme", kind)
		}
	}
	if !s.Recognizes(schemaGVK("apps", "DaemonSet")) {
		t.Error("apps/v1 DaemonSet is not in the scheme")
	}
	groups := map[string]bool{}
	for gvk := range s.AllKnownTypes() {
		groups[gvk.Group] = true
	}
	delete(groups, "")
	delete(groups, "apps")
	if len(groups) > 0 {
		t.Errorf("the scheme registers other groups too: %v", groups)
	}
}

// schemaGVK is group/v1 kind.
func schemaGVK(group, kind string) schema.GroupVersionKind {
	return schema.GroupVersionKind{Group: group, Version: "v1", Kind: kind}
}
