package objects_test

import (
	"encoding/json"
	"reflect"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"

	"github.com/kube2ra/kube2ra/kubeapi/objects"
)

// decode re-decodes a client-go object (what the API server sends) as T.
func decode[T any](t *testing.T, in any) *T {
	t.Helper()
	b, err := json.Marshal(in)
	if err != nil {
		t.Fatal(err)
	}
	out := new(T)
	if err := json.Unmarshal(b, out); err != nil {
		t.Fatal(err)
	}
	return out
}

// TestObjectsDecodeTheFieldsTheAgentReads: every field the agent reads
// arrives from the API's JSON under its API name.
func TestObjectsDecodeTheFieldsTheAgentReads(t *testing.T) {
	del := metav1.NewTime(time.Unix(1700000000, 0))
	pod := decode[objects.Pod](t, &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "p", Namespace: "ns", UID: "u", ResourceVersion: "7", DeletionTimestamp: &del,
			Annotations: map[string]string{"iam.amazonaws.com/role": "r"}},
		Spec: corev1.PodSpec{NodeName: "n", ServiceAccountName: "sa", HostNetwork: true},
		Status: corev1.PodStatus{Phase: corev1.PodRunning, HostIP: "192.0.2.1", PodIP: "10.0.0.1",
			PodIPs: []corev1.PodIP{{IP: "10.0.0.1"}, {IP: "fd00::1"}}},
	})
	want := &objects.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "p", Namespace: "ns", UID: "u", ResourceVersion: "7", DeletionTimestamp: &del,
			Annotations: map[string]string{"iam.amazonaws.com/role": "r"}},
		Spec: objects.PodSpec{NodeName: "n", ServiceAccountName: "sa", HostNetwork: true},
		Status: objects.PodStatus{Phase: objects.PodRunning, HostIP: "192.0.2.1", PodIP: "10.0.0.1",
			PodIPs: []objects.PodIP{{IP: "10.0.0.1"}, {IP: "fd00::1"}}},
	}
	if !reflect.DeepEqual(pod, want) {
		t.Errorf("pod decoded as\n%+v\nwant\n%+v", pod, want)
	}

	node := decode[objects.Node](t, &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: "n"},
		Status:     corev1.NodeStatus{Addresses: []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: "fd00::2"}}},
	})
	if len(node.Status.Addresses) != 1 || node.Status.Addresses[0].Type != objects.NodeInternalIP || node.Status.Addresses[0].Address != "fd00::2" {
		t.Errorf("node addresses decoded as %+v", node.Status.Addresses)
	}

	ds := decode[objects.DaemonSet](t, &appsv1.DaemonSet{Spec: appsv1.DaemonSetSpec{Template: corev1.PodTemplateSpec{Spec: corev1.PodSpec{
		Containers: []corev1.Container{{Name: "kube2ra", Command: []string{"/kube2ra"}, Args: []string{"run", "--node=$(NODE_NAME)"},
			Env: []corev1.EnvVar{{Name: "A", Value: "a"}, {Name: "NODE_NAME", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "spec.nodeName"}}}}}},
	}}}})
	c := ds.Spec.Template.Spec.Containers
	if len(c) != 1 || c[0].Name != "kube2ra" || len(c[0].Args) != 2 || c[0].Env[0].Value != "a" ||
		c[0].Env[1].ValueFrom == nil || c[0].Env[1].ValueFrom.FieldRef.FieldPath != "spec.nodeName" {
		t.Errorf("DaemonSet containers decoded as %+v", c)
	}
}

// TestClusterWideKindsKeepOnlyTheirMeta: namespaces and ServiceAccounts,
// which every agent caches for the whole cluster, decode to their name,
// namespace, UID, version and annotations, and serve client-go as a
// metav1.Object whose other fields read as zero.
func TestClusterWideKindsKeepOnlyTheirMeta(t *testing.T) {
	del := metav1.NewTime(time.Unix(1700000000, 0))
	full := metav1.ObjectMeta{Name: "web", Namespace: "apps", UID: "u", ResourceVersion: "7", Generation: 3,
		Annotations: map[string]string{"iam.amazonaws.com/role": "r"}, Labels: map[string]string{"team": "a"},
		Finalizers: []string{"kubernetes"}, DeletionTimestamp: &del, CreationTimestamp: del,
		OwnerReferences: []metav1.OwnerReference{{Name: "o"}}, ManagedFields: []metav1.ManagedFieldsEntry{{Manager: "kubectl"}}}
	want := objects.Meta{Name: "web", Namespace: "apps", UID: "u", ResourceVersion: "7",
		Annotations: objects.Annotations{{Key: "iam.amazonaws.com/role", Value: "r"}}}
	sa := decode[objects.ServiceAccount](t, &corev1.ServiceAccount{ObjectMeta: full})
	ns := decode[objects.Namespace](t, &corev1.Namespace{ObjectMeta: full})
	for _, got := range []*objects.Meta{&sa.Meta, &ns.Meta} {
		if !reflect.DeepEqual(*got, want) {
			t.Errorf("decoded as %+v; want %+v", *got, want)
		}
	}

	for _, obj := range []runtime.Object{sa, ns} {
		m, err := meta.Accessor(obj)
		if err != nil {
			t.Fatalf("meta.Accessor(%T): %v", obj, err)
		}
		if m.GetName() != "web" || m.GetNamespace() != "apps" || m.GetUID() != "u" || m.GetResourceVersion() != "7" || m.GetAnnotations()["iam.amazonaws.com/role"] != "r" {
			t.Errorf("%T's accessor reads %q %q %q %q %v", obj, m.GetName(), m.GetNamespace(), m.GetUID(), m.GetResourceVersion(), m.GetAnnotations())
		}
		m.SetResourceVersion("8")
		m.SetLabels(map[string]string{"x": "y"})
		m.SetDeletionTimestamp(&del)
		m.SetFinalizers([]string{"f"})
		if m.GetResourceVersion() != "8" || m.GetLabels() != nil || m.GetDeletionTimestamp() != nil || m.GetFinalizers() != nil ||
			m.GetGeneration() != 0 || !m.GetCreationTimestamp().Time.IsZero() || m.GetOwnerReferences() != nil || m.GetManagedFields() != nil {
			t.Errorf("%T: a kept field did not change or a dropped one did not read as zero: %+v", obj, m)
		}
	}
}

// TestAnnotationsAreTheAPIsObject: the cluster-wide kinds' annotation list
// encodes and decodes as the API's JSON object (null and empty included),
// and reads as the map it replaces.
func TestAnnotationsAreTheAPIsObject(t *testing.T) {
	for _, tc := range []struct {
		json string
		want objects.Annotations
	}{
		{`{"annotations":{"b":"2","a":"1"}}`, objects.Annotations{{Key: "a", Value: "1"}, {Key: "b", Value: "2"}}},
		{`{"annotations":{"a":""}}`, objects.Annotations{{Key: "a", Value: ""}}},
		{`{"annotations":{}}`, nil},
		{`{"annotations":null}`, nil},
		{`{}`, nil},
	} {
		var m objects.Meta
		if err := json.Unmarshal([]byte(tc.json), &m); err != nil {
			t.Fatalf("%s: %v", tc.json, err)
		}
		if !reflect.DeepEqual(m.Annotations, tc.want) {
			t.Errorf("%s decoded as %#v; want %#v", tc.json, m.Annotations, tc.want)
		}
		b, err := json.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		var again objects.Meta
		if err := json.Unmarshal(b, &again); err != nil || !reflect.DeepEqual(again.Annotations, tc.want) {
			t.Errorf("%s: encoded as %s, which decodes as %#v (%v)", tc.json, b, again.Annotations, err)
		}
	}
	if err := json.Unmarshal([]byte(`{"annotations":{"a":1}}`), new(objects.Meta)); err == nil {
		t.Error("a non-string annotation value decoded without an error")
	}

	a := objects.AnnotationsOf(map[string]string{"x": "1", "y": ""})
	if v, ok := a.Get("x"); !ok || v != "1" {
		t.Errorf(`Get("x") = %q, %v`, v, ok)
	}
	if v, ok := a.Get("y"); !ok || v != "" {
		t.Errorf(`Get("y") = %q, %v; an empty value is present`, v, ok)
	}
	if _, ok := a.Get("z"); ok {
		t.Error(`Get("z") found an absent key`)
	}
	var m objects.Meta
	m.SetAnnotations(map[string]string{"x": "1"})
	if got := m.GetAnnotations(); !reflect.DeepEqual(got, map[string]string{"x": "1"}) {
		t.Errorf("GetAnnotations after SetAnnotations = %v", got)
	}
	if m.SetAnnotations(nil); m.GetAnnotations() != nil {
		t.Error("GetAnnotations of no annotations is not nil")
	}
}

// TestTaintIsTheAPIsWholeTaint: the startup taint's removal tests the
// whole taint at its index before removing it, so the agent's taint must
// encode exactly as the API's, every field included.
func TestTaintIsTheAPIsWholeTaint(t *testing.T) {
	added := metav1.NewTime(time.Unix(1700000000, 0))
	for _, api := range []corev1.Taint{
		{Key: "k", Value: "v", Effect: corev1.TaintEffectNoExecute, TimeAdded: &added},
		{Key: "kube2ra.io/agent-not-ready", Effect: corev1.TaintEffectNoSchedule},
	} {
		want, _ := json.Marshal(api)
		got, _ := json.Marshal(decode[objects.Taint](t, api))
		if string(got) != string(want) {
			t.Errorf("the agent's taint encodes as %s; the API's as %s", got, want)
		}
	}
}

// TestDeepCopiesShareNothing: changing a copy leaves the original as it
// was (informers hand out copies of cached objects).
func TestDeepCopiesShareNothing(t *testing.T) {
	added := metav1.NewTime(time.Unix(1700000000, 0))
	for _, tc := range []struct {
		name   string
		obj    runtime.Object
		mutate func(runtime.Object)
	}{
		{"pod", &objects.Pod{ObjectMeta: metav1.ObjectMeta{Annotations: map[string]string{"a": "1"}}, Status: objects.PodStatus{PodIPs: []objects.PodIP{{IP: "10.0.0.1"}}}},
			func(o runtime.Object) {
				p := o.(*objects.Pod)
				p.Annotations["a"] = "2"
				p.Status.PodIPs[0].IP = "10.0.0.2"
			}},
		{"pod list", &objects.PodList{Items: []objects.Pod{{ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"a": "1"}}}}},
			func(o runtime.Object) { o.(*objects.PodList).Items[0].Labels["a"] = "2" }},
		{"namespace list", &objects.NamespaceList{Items: []objects.Namespace{{Meta: objects.Meta{Annotations: objects.Annotations{{Key: "a", Value: "1"}}}}}},
			func(o runtime.Object) { o.(*objects.NamespaceList).Items[0].Annotations[0].Value = "2" }},
		{"service account list", &objects.ServiceAccountList{Items: []objects.ServiceAccount{{Meta: objects.Meta{Annotations: objects.Annotations{{Key: "a", Value: "1"}}}}}},
			func(o runtime.Object) { o.(*objects.ServiceAccountList).Items[0].Annotations[0].Value = "2" }},
		{"node", &objects.Node{Spec: objects.NodeSpec{Taints: []objects.Taint{{Key: "k", TimeAdded: &added}}}, Status: objects.NodeStatus{Addresses: []objects.NodeAddress{{Address: "a"}}}},
			func(o runtime.Object) {
				n := o.(*objects.Node)
				n.Spec.Taints[0].TimeAdded.Time = time.Unix(0, 0)
				n.Status.Addresses[0].Address = "b"
			}},
		{"DaemonSet list", &objects.DaemonSetList{Items: []objects.DaemonSet{{Spec: objects.DaemonSetSpec{Template: objects.PodTemplateSpec{Spec: objects.PodSpec{
			Containers: []objects.Container{{Args: []string{"run"}, Env: []objects.EnvVar{{Name: "N", ValueFrom: &objects.EnvVarSource{FieldRef: &objects.ObjectFieldSelector{FieldPath: "spec.nodeName"}}}}}}}}}}}},
			func(o runtime.Object) {
				c := &o.(*objects.DaemonSetList).Items[0].Spec.Template.Spec.Containers[0]
				c.Args[0] = "cleanup"
				c.Env[0].ValueFrom.FieldRef.FieldPath = "status.hostIP"
			}},
		{"event", &objects.Event{ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"a": "1"}}, Count: 1},
			func(o runtime.Object) { o.(*objects.Event).Labels["a"] = "2" }},
		{"reference", &objects.ObjectReference{Name: "a"},
			func(o runtime.Object) { o.(*objects.ObjectReference).Name = "b" }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before, _ := json.Marshal(tc.obj)
			cp := tc.obj.DeepCopyObject()
			if !reflect.DeepEqual(cp, tc.obj) {
				t.Fatalf("the copy differs: %+v", cp)
			}
			tc.mutate(cp)
			if after, _ := json.Marshal(tc.obj); string(after) != string(before) {
				t.Errorf("changing the copy changed the original: %s, was %s", after, before)
			}
		})
	}
}
