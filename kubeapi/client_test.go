package kubeapi_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
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

// TestClientAsksForJSONWhateverTheConfigPrefers: the agent's types decode
// JSON only, so a protobuf preference in the config is overridden; other
// documents (the OIDC keys) are still accepted in their own type.
func TestClientAsksForJSONWhateverTheConfigPrefers(t *testing.T) {
	accepts := make(chan string, 2)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		accepts <- r.Header.Get("Accept")
		switch r.URL.Path {
		case "/api/v1/namespaces/ns/pods/p":
			w.Header().Set("Content-Type", "application/json")
			fmt.Fprint(w, `{"kind":"Pod","apiVersion":"v1","metadata":{"name":"p","namespace":"ns","uid":"u"},"spec":{"nodeName":"n"},"status":{"podIPs":[{"ip":"10.0.0.1"}]}}`)
		case "/openid/v1/jwks":
			w.Header().Set("Content-Type", "application/jwk-set+json")
			fmt.Fprint(w, `{"keys":[]}`)
		default:
			http.NotFound(w, r)
		}
	}))
	defer srv.Close()
	c, err := kubeapi.New(&rest.Config{Host: srv.URL, ContentConfig: rest.ContentConfig{
		ContentType: "application/vnd.kubernetes.protobuf", AcceptContentTypes: "application/vnd.kubernetes.protobuf"}})
	if err != nil {
		t.Fatal(err)
	}
	p, err := c.GetPod(context.Background(), "ns", "p")
	if err != nil || p.UID != "u" || p.Spec.NodeName != "n" || len(p.Status.PodIPs) != 1 {
		t.Fatalf("GetPod = %+v, %v; want pod ns/p decoded from JSON", p, err)
	}
	if a := <-accepts; !strings.HasPrefix(a, "application/json") || strings.Contains(a, "protobuf") {
		t.Errorf("GetPod sent Accept %q; want JSON first and no protobuf", a)
	}
	if doc, err := c.GetPath(context.Background(), "/openid/v1/jwks"); err != nil || string(doc) != `{"keys":[]}` {
		t.Fatalf("GetPath(jwks) = %q, %v; want the key set", doc, err)
	}
	if a := <-accepts; !strings.Contains(a, "*/*") {
		t.Errorf("GetPath sent Accept %q; want */* too (the keys are application/jwk-set+json)", a)
	}
}
