package k8s

import (
	"encoding/json"
	"reflect"
	"strconv"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/kube2ra/kube2ra/kubeapi/objects"
)

// ownPod is p as the agent decodes it from the API server (through JSON,
// into its own type): for tests that hand a pod to the k8s package
// directly, while the same fixtures feed client-go's fake clientset.
func ownPod(p *corev1.Pod) *objects.Pod {
	return roundTrip[objects.Pod](p)
}

// ownPods is ownPod of each.
func ownPods(pods []*corev1.Pod) []*objects.Pod {
	out := make([]*objects.Pod, len(pods))
	for i, p := range pods {
		out[i] = ownPod(p)
	}
	return out
}

// roundTrip re-decodes in (a client-go object) as the agent's type Out.
func roundTrip[Out any](in any) *Out {
	b, err := json.Marshal(in)
	if err != nil {
		panic(err)
	}
	out := new(Out)
	if err := json.Unmarshal(b, out); err != nil {
		panic(err)
	}
	return out
}

// testPod builds a pod on node-a with the given IPs and phase.
func testPod(name string, phase corev1.PodPhase, ips ...string) *corev1.Pod {
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "ns", UID: types.UID("uid-" + name)},
		Spec:       corev1.PodSpec{NodeName: "node-a"},
		Status:     corev1.PodStatus{Phase: phase},
	}
	for _, ip := range ips {
		p.Status.PodIPs = append(p.Status.PodIPs, corev1.PodIP{IP: ip})
	}
	if len(ips) > 0 {
		p.Status.PodIP = ips[0]
	}
	return p
}

func terminating(p *corev1.Pod) *corev1.Pod {
	now := metav1.NewTime(time.Unix(1700000000, 0))
	p.DeletionTimestamp = &now
	return p
}

func hostNetwork(p *corev1.Pod) *corev1.Pod {
	p.Spec.HostNetwork = true
	return p
}

func TestPodIPIndexFunc(t *testing.T) {
	tests := []struct {
		name string
		pod  *corev1.Pod
		want []string
	}{
		{name: "running pod indexes its IP", pod: testPod("a", corev1.PodRunning, "10.1.0.5"), want: []string{"10.1.0.5"}},
		{name: "pending pod with an IP is indexed", pod: testPod("a", corev1.PodPending, "10.1.0.5"), want: []string{"10.1.0.5"}},
		{name: "dual-stack pod indexes both families", pod: testPod("a", corev1.PodRunning, "10.1.0.5", "fd00::5"),
			want: []string{"10.1.0.5", "fd00::5"}},
		{name: "IPv6 is indexed in canonical form", pod: testPod("a", corev1.PodRunning, "FD00:0:0::0005"), want: []string{"fd00::5"}},
		{name: "IPv4-mapped IPv6 is indexed as IPv4", pod: testPod("a", corev1.PodRunning, "::ffff:10.1.0.5"), want: []string{"10.1.0.5"}},
		{name: "succeeded pod is never indexed", pod: testPod("a", corev1.PodSucceeded, "10.1.0.5"), want: []string{}},
		{name: "failed pod is never indexed", pod: testPod("a", corev1.PodFailed, "10.1.0.5"), want: []string{}},
		{name: "host-network pod is never indexed", pod: hostNetwork(testPod("a", corev1.PodRunning, "192.168.0.10")), want: []string{}},
		{name: "terminating pod stays indexed (the owner rule decides)", pod: terminating(testPod("a", corev1.PodRunning, "10.1.0.5")),
			want: []string{"10.1.0.5"}},
		{name: "pod without IP has no keys", pod: testPod("a", corev1.PodPending), want: []string{}},
		{name: "garbage IP is skipped", pod: testPod("a", corev1.PodRunning, "not-an-ip", "10.1.0.6"), want: []string{"10.1.0.6"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := podIPIndexFunc(ownPod(tt.pod))
			if err != nil {
				t.Fatal(err)
			}
			if len(got) == 0 && len(tt.want) == 0 {
				return
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("podIPIndexFunc = %v; want %v", got, tt.want)
			}
		})
	}
}

func TestPodIPIndexFuncUsesStatusPodIPWhenListEmpty(t *testing.T) {
	p := testPod("a", corev1.PodRunning)
	p.Status.PodIP = "10.1.0.9"
	got, _ := podIPIndexFunc(ownPod(p))
	if !reflect.DeepEqual(got, []string{"10.1.0.9"}) {
		t.Fatalf("podIPIndexFunc = %v; want [10.1.0.9]", got)
	}
}

func TestOwnerOf(t *testing.T) {
	tests := []struct {
		name      string
		pods      []*corev1.Pod
		wantOwner string
		want      ownership
	}{
		{name: "no pods: nobody owns the IP", pods: nil, want: ownerNone},
		{name: "one running pod owns it", pods: []*corev1.Pod{testPod("a", corev1.PodRunning, "10.0.0.1")}, wantOwner: "a", want: ownerOne},
		{name: "IP reuse: the live newcomer wins over the terminating old pod",
			pods:      []*corev1.Pod{terminating(testPod("old", corev1.PodRunning, "10.0.0.1")), testPod("new", corev1.PodRunning, "10.0.0.1")},
			wantOwner: "new", want: ownerOne},
		{name: "order does not matter",
			pods:      []*corev1.Pod{testPod("new", corev1.PodRunning, "10.0.0.1"), terminating(testPod("old", corev1.PodRunning, "10.0.0.1"))},
			wantOwner: "new", want: ownerOne},
		{name: "a completed pod holding the IP never wins",
			pods:      []*corev1.Pod{testPod("done", corev1.PodSucceeded, "10.0.0.1"), testPod("live", corev1.PodRunning, "10.0.0.1")},
			wantOwner: "live", want: ownerOne},
		{name: "only a completed pod: nobody", pods: []*corev1.Pod{testPod("done", corev1.PodSucceeded, "10.0.0.1")}, want: ownerNone},
		{name: "only a failed pod: nobody", pods: []*corev1.Pod{testPod("failed", corev1.PodFailed, "10.0.0.1")}, want: ownerNone},
		{name: "a lone terminating pod owns nothing (its IP may be reused already)",
			pods: []*corev1.Pod{terminating(testPod("old", corev1.PodRunning, "10.0.0.1"))}, want: ownerNone},
		{name: "two terminating pods: nobody",
			pods: []*corev1.Pod{terminating(testPod("a", corev1.PodRunning, "10.0.0.1")), terminating(testPod("b", corev1.PodRunning, "10.0.0.1"))}, want: ownerNone},
		{name: "two live pods: ambiguous, deny",
			pods: []*corev1.Pod{testPod("a", corev1.PodRunning, "10.0.0.1"), testPod("b", corev1.PodPending, "10.0.0.1")}, want: ownerAmbiguous},
		{name: "two live pods and a terminating one: ambiguous",
			pods: []*corev1.Pod{testPod("a", corev1.PodRunning, "10.0.0.1"), testPod("b", corev1.PodRunning, "10.0.0.1"), terminating(testPod("c", corev1.PodRunning, "10.0.0.1"))},
			want: ownerAmbiguous},
		{name: "host-network pod never owns, even if it reached the index",
			pods: []*corev1.Pod{hostNetwork(testPod("h", corev1.PodRunning, "10.0.0.1"))}, want: ownerNone},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			owner, got := ownerOf(ownPods(tt.pods))
			if got != tt.want {
				t.Fatalf("ownerOf = %v; want %v", got, tt.want)
			}
			name := ""
			if owner != nil {
				name = owner.Name
			}
			if name != tt.wantOwner {
				t.Fatalf("owner = %q; want %q", name, tt.wantOwner)
			}
		})
	}
}

func TestTransformPodKeepsOnlyWhatKube2raReads(t *testing.T) {
	del := metav1.NewTime(time.Unix(1700000000, 0))
	in := &objects.Pod{
		ObjectMeta: metav1.ObjectMeta{
			Name: "p", Namespace: "ns", UID: "u", ResourceVersion: "7", DeletionTimestamp: &del,
			Labels:          map[string]string{"app": "x"},
			Annotations:     map[string]string{DefaultRoleKey: "r", DefaultExternalIDKey: "e", "kubectl.kubernetes.io/last-applied-configuration": "{huge}"},
			ManagedFields:   []metav1.ManagedFieldsEntry{{Manager: "kubectl"}},
			OwnerReferences: []metav1.OwnerReference{{Name: "rs"}},
		},
		Spec: objects.PodSpec{NodeName: "node-a", ServiceAccountName: "sa", HostNetwork: false,
			Containers: []objects.Container{{Name: "c", Env: []objects.EnvVar{{Name: "A", Value: "B"}}}}},
		Status: objects.PodStatus{Phase: objects.PodRunning, PodIP: "10.0.0.1", PodIPs: []objects.PodIP{{IP: "10.0.0.1"}, {IP: "fd00::1"}},
			HostIP: "192.168.0.1"},
	}
	want := &objects.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "p", Namespace: "ns", UID: "u", ResourceVersion: "7", DeletionTimestamp: &del,
			Annotations: map[string]string{DefaultRoleKey: "r", DefaultExternalIDKey: "e"}},
		Spec:   objects.PodSpec{NodeName: "node-a", ServiceAccountName: "sa"},
		Status: objects.PodStatus{Phase: objects.PodRunning, PodIPs: []objects.PodIP{{IP: "10.0.0.1"}, {IP: "fd00::1"}}},
	}
	transform := transformPod([]string{DefaultRoleKey, DefaultExternalIDKey})
	out, err := transform(in)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(out, want) {
		t.Fatalf("transformPod =\n%+v\nwant\n%+v", out, want)
	}
	again, _ := transform(out)
	if !reflect.DeepEqual(again, want) {
		t.Fatal("transformPod is not idempotent")
	}
	// Tombstones and other types pass through untouched.
	if got, _ := transform("other"); got != "other" {
		t.Fatal("transformPod changed a non-pod")
	}
}

func TestTransformNamespaceKeepsOnlyPolicy(t *testing.T) {
	in := &objects.Namespace{Meta: objects.Meta{Name: "ns", UID: "u", ResourceVersion: "3",
		Annotations: objects.Annotations{{Key: "other", Value: "y"}, {Key: DefaultNamespaceKey, Value: `["x"]`}}}}
	out, _ := transformNamespace([]string{DefaultNamespaceKey})(in)
	want := &objects.Namespace{Meta: objects.Meta{Name: "ns", UID: "u", ResourceVersion: "3",
		Annotations: objects.Annotations{{Key: DefaultNamespaceKey, Value: `["x"]`}}}}
	if !reflect.DeepEqual(out, want) {
		t.Fatalf("transformNamespace = %+v; want %+v", out, want)
	}
}

func TestPodFromObject(t *testing.T) {
	p := ownPod(terminating(testPod("a", corev1.PodRunning, "10.0.0.1", "fd00::1")))
	p.Spec.ServiceAccountName = "sa"
	p.Annotations = map[string]string{DefaultRoleKey: "r"}
	got := podFromObject(p)
	if got.Key() != "ns/a" || got.UID != "uid-a" || got.ServiceAccount != "sa" || got.NodeName != "node-a" || !got.Terminating ||
		len(got.IPs) != 2 || got.IPs[1].String() != "fd00::1" || got.Annotations[DefaultRoleKey] != "r" {
		t.Fatalf("podFromObject = %+v", got)
	}
	// No annotations is a nil map (reads still work).
	p.Annotations = map[string]string{}
	if got := podFromObject(p); got.Annotations != nil || got.Annotations[DefaultRoleKey] != "" {
		t.Fatalf("empty annotations = %#v", got.Annotations)
	}
}

func typesUID(i int) types.UID { return types.UID("uid-" + strconv.Itoa(i)) }
