//go:build integration

package k8s

import (
	"context"
	"encoding/json"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/watch"

	"github.com/kube2ra/kube2ra/kubeapi"
	"github.com/kube2ra/kube2ra/kubeapi/objects"
)

// TestIntegrationLeanClientMakesEveryCall drives each call of the agent's
// lean client (kubeapi, the one the binary links instead of client-go's
// clientset) against the real API server, and checks each answer against
// what the admin client wrote: options reach the server (field selectors,
// patch field manager), objects decode, watches stream, Events are
// created and patched in their own namespace.
func TestIntegrationLeanClientMakesEveryCall(t *testing.T) {
	const ns, node, other = "lean", "node-lean", "node-lean-other"
	ctx, cancel := context.WithTimeout(context.Background(), eventuallyTimeout)
	defer cancel()
	createNamespace(t, ns, nil)
	c, err := kubeapi.New(cp.AdminConfig())
	if err != nil {
		t.Fatal(err)
	}
	var _ Client = c

	runPod(t, ctx, newPod(ns, "mine", node, nil), corev1.PodRunning, "10.99.0.1")
	runPod(t, ctx, newPod(ns, "theirs", other, nil), corev1.PodRunning, "10.99.0.2")
	onNode := metav1.ListOptions{FieldSelector: fields.OneTermEqualSelector("spec.nodeName", node).String()}
	pods, err := c.ListPods(ctx, metav1.NamespaceAll, onNode)
	if err != nil {
		t.Fatalf("ListPods: %v", err)
	}
	if len(pods.Items) != 1 || pods.Items[0].Name != "mine" || pods.Items[0].Status.PodIP != "10.99.0.1" {
		t.Fatalf("ListPods with field selector %q = %v; want only pod mine with IP 10.99.0.1", onNode.FieldSelector, podNames(pods.Items))
	}
	// The currency snapshot: metadata only, the same pods at the same versions.
	versions, err := c.ListVersions(ctx, "pods", metav1.NamespaceAll, metav1.ListOptions{FieldSelector: onNode.FieldSelector})
	if err != nil {
		t.Fatalf("ListVersions(pods): %v", err)
	}
	if want := []objects.ObjectVersion{{Namespace: ns, Name: "mine", UID: pods.Items[0].UID, ResourceVersion: pods.Items[0].ResourceVersion}}; !reflect.DeepEqual(versions.Items, want) || versions.ResourceVersion == "" {
		t.Fatalf("ListVersions(pods) with field selector %q = %+v; want %+v and the list's resourceVersion", onNode.FieldSelector, versions, want)
	}
	// A node without pods: the API server writes the items as null.
	none, err := c.ListVersions(ctx, "pods", metav1.NamespaceAll, metav1.ListOptions{FieldSelector: fields.OneTermEqualSelector("spec.nodeName", node+"-empty").String()})
	if err != nil || len(none.Items) != 0 || none.ResourceVersion == "" {
		t.Fatalf("ListVersions(pods) of a node without pods = %+v, %v; want no items at a resourceVersion", none, err)
	}
	nsVersions, err := c.ListVersions(ctx, "namespaces", metav1.NamespaceAll, metav1.ListOptions{FieldSelector: "metadata.name=" + ns})
	if err != nil || len(nsVersions.Items) != 1 || nsVersions.Items[0].Name != ns || nsVersions.Items[0].Namespace != "" || nsVersions.Items[0].UID == "" {
		t.Fatalf("ListVersions(namespaces) = %+v, %v; want namespace %s alone, cluster scoped", nsVersions, err, ns)
	}
	if p, err := c.GetPod(ctx, ns, "theirs"); err != nil || p.Spec.NodeName != other {
		t.Fatalf("GetPod = %v, %v; want pod theirs on %s", p, err, other)
	}

	// A watch from the list's version sees the next pod of the node only.
	onNode.ResourceVersion = pods.ResourceVersion
	w, err := c.WatchPods(ctx, metav1.NamespaceAll, onNode)
	if err != nil {
		t.Fatalf("WatchPods: %v", err)
	}
	defer w.Stop()
	runPod(t, ctx, newPod(ns, "theirs-later", other, nil), "")
	runPod(t, ctx, newPod(ns, "mine-later", node, nil), "")
	if got := nextWatched(t, w); got != "mine-later" {
		t.Fatalf("WatchPods first delivered %q; want mine-later (the other node's pod filtered by the server)", got)
	}

	if n, err := c.GetNamespace(ctx, ns); err != nil || n.Name != ns {
		t.Fatalf("GetNamespace = %v, %v", n, err)
	}
	nsList, err := c.ListNamespaces(ctx, metav1.ListOptions{FieldSelector: "metadata.name=" + ns})
	if err != nil || len(nsList.Items) != 1 {
		t.Fatalf("ListNamespaces = %v, %v; want namespace %s", nsList, err, ns)
	}
	nsWatch, err := c.WatchNamespaces(ctx, metav1.ListOptions{ResourceVersion: nsList.ResourceVersion})
	if err != nil {
		t.Fatalf("WatchNamespaces: %v", err)
	}
	defer nsWatch.Stop()
	createNamespace(t, ns+"-later", nil)
	if got := nextWatched(t, nsWatch); got != ns+"-later" {
		t.Fatalf("WatchNamespaces delivered %q; want %s-later", got, ns)
	}

	if _, err := admin.CoreV1().ServiceAccounts(ns).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "app", Annotations: map[string]string{IRSARoleKey: "arn:aws:iam::111122223333:role/app"}}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	accounts, err := c.ListServiceAccounts(ctx, metav1.ListOptions{FieldSelector: "metadata.namespace=" + ns})
	if err != nil || len(accounts.Items) == 0 {
		t.Fatalf("ListServiceAccounts = %v, %v", accounts, err)
	}
	saWatch, err := c.WatchServiceAccounts(ctx, metav1.ListOptions{ResourceVersion: accounts.ResourceVersion, FieldSelector: "metadata.namespace=" + ns})
	if err != nil {
		t.Fatalf("WatchServiceAccounts: %v", err)
	}
	defer saWatch.Stop()
	if _, err := admin.CoreV1().ServiceAccounts(ns).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "app-later"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if got := nextWatched(t, saWatch); got != "app-later" {
		t.Fatalf("WatchServiceAccounts delivered %q; want app-later", got)
	}

	if _, err := admin.CoreV1().Nodes().Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: node}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if n, err := c.GetNode(ctx, node); err != nil || n.Name != node {
		t.Fatalf("GetNode = %v, %v", n, err)
	}
	patched, err := c.PatchNode(ctx, node, types.MergePatchType, []byte(`{"metadata":{"labels":{"lean":"yes"}}}`), "kube2ra-lean-test")
	if err != nil || patched.Labels["lean"] != "yes" {
		t.Fatalf("PatchNode = %v, %v; want label lean=yes", patched, err)
	}
	// The patch type reaches the server: a JSON patch whose test fails is refused.
	stale := []byte(`[{"op":"test","path":"/metadata/labels/lean","value":"no"},{"op":"remove","path":"/metadata/labels/lean"}]`)
	if _, err := c.PatchNode(ctx, node, types.JSONPatchType, stale, "kube2ra-lean-test"); err == nil {
		t.Fatal("PatchNode applied a JSON patch whose test operation fails")
	}

	ds := &appsv1.DaemonSet{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "agent"},
		Spec: appsv1.DaemonSetSpec{
			Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "agent"}},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": "agent"}},
				Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "agent", Image: "registry.example/agent:1"}}},
			},
		},
	}
	if ds, err = admin.AppsV1().DaemonSets(ns).Create(ctx, ds, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if got, err := c.GetDaemonSet(ctx, ns, "agent"); err != nil || got.UID != ds.UID {
		t.Fatalf("GetDaemonSet = %v, %v; want UID %s", got, err, ds.UID)
	}
	dsList, err := c.ListDaemonSets(ctx, ns, metav1.ListOptions{FieldSelector: "metadata.name=agent"})
	if err != nil || len(dsList.Items) != 1 {
		t.Fatalf("ListDaemonSets = %v, %v", dsList, err)
	}
	dsWatch, err := c.WatchDaemonSets(ctx, ns, metav1.ListOptions{ResourceVersion: dsList.ResourceVersion, FieldSelector: "metadata.name=agent"})
	if err != nil {
		t.Fatalf("WatchDaemonSets: %v", err)
	}
	defer dsWatch.Stop()
	if err := admin.AppsV1().DaemonSets(ns).Delete(ctx, "agent", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	if got := nextWatched(t, dsWatch); got != "agent" {
		t.Fatalf("WatchDaemonSets delivered %q; want agent's deletion", got)
	}

	doc, err := c.GetPath(ctx, "/.well-known/openid-configuration")
	var oidc struct {
		Issuer  string `json:"issuer"`
		JWKSURI string `json:"jwks_uri"`
	}
	if err != nil || json.Unmarshal(doc, &oidc) != nil || oidc.Issuer == "" || oidc.JWKSURI == "" {
		t.Fatalf("GetPath(openid-configuration) = %q, %v; want the issuer and jwks_uri", doc, err)
	}

	e := &objects.Event{
		ObjectMeta:     metav1.ObjectMeta{Namespace: ns, Name: "lean.1"},
		InvolvedObject: objects.ObjectReference{Kind: "Pod", Namespace: ns, Name: "mine"},
		Reason:         "LeanTest", Message: "first", Type: objects.EventTypeNormal, Count: 1,
		Source: objects.EventSource{Component: eventComponent},
	}
	created, err := c.CreateEvent(ctx, e)
	if err != nil || created.UID == "" || created.Message != "first" {
		t.Fatalf("CreateEvent = %v, %v", created, err)
	}
	patchedEvent, err := c.PatchEvent(ctx, ns, created.Name, []byte(`{"count":3,"message":"third"}`))
	if err != nil || patchedEvent.Count != 3 || patchedEvent.Message != "third" {
		t.Fatalf("PatchEvent = %v, %v; want count 3, message third", patchedEvent, err)
	}
	stored, err := admin.CoreV1().Events(ns).Get(ctx, "lean.1", metav1.GetOptions{})
	if err != nil || stored.Count != 3 || stored.InvolvedObject.Name != "mine" || stored.Source.Component != eventComponent {
		t.Fatalf("the stored Event = %v, %v; want count 3 about pod mine from %s", stored, err, eventComponent)
	}
}

// nextWatched is the name of the next object a watch delivers.
func nextWatched(t *testing.T, w watch.Interface) string {
	t.Helper()
	select {
	case ev, ok := <-w.ResultChan():
		if !ok {
			t.Fatal("the watch ended")
		}
		m, err := metaOf(ev.Object)
		if err != nil {
			t.Fatalf("watch event %s: %v", ev.Type, err)
		}
		return m
	case <-time.After(eventuallyTimeout):
		t.Fatal("the watch delivered nothing")
	}
	return ""
}

// metaOf is an object's name.
func metaOf(obj any) (string, error) {
	if o, ok := obj.(metav1.Object); ok {
		return o.GetName(), nil
	}
	return "", fmt.Errorf("%T is not a Kubernetes object", obj)
}

// podNames lists pods' names.
func podNames(pods []objects.Pod) string {
	var names []string
	for _, p := range pods {
		names = append(names, p.Name)
	}
	return strings.Join(names, ",")
}
