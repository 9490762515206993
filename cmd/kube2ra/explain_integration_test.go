//go:build integration

package main

import (
	"context"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/kube2ra/kube2ra/test/controlplane"
)

// explainRBAC is the permissions the README gives for kube2ra explain:
// read the pod, list and watch the node's pods and all namespaces (the
// agent's informers), read the agent's DaemonSet.
var explainRBAC = []rbacv1.PolicyRule{
	{APIGroups: []string{""}, Resources: []string{"pods", "namespaces"}, Verbs: []string{"get", "list", "watch"}},
	{APIGroups: []string{"apps"}, Resources: []string{"daemonsets"}, Verbs: []string{"get"}},
	// Only with --pod-identity.
	{APIGroups: []string{""}, Resources: []string{"serviceaccounts"}, Verbs: []string{"list", "watch"}},
}

// TestExplainAgainstARealAPIServer runs `kube2ra explain` as a user with
// only the documented permissions, through a kubeconfig, against a real
// kube-apiserver: the agent's settings come from a real DaemonSet, the
// node's pods from the agent's field-selected informer (a pod of another
// node with the same IP does not count), and two pods of this node on one
// IP are refused.
func TestExplainAgainstARealAPIServer(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cp, err := controlplane.Start(ctx, controlplane.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cp.Stop() })
	admin, err := kubernetes.NewForConfig(cp.AdminConfig())
	if err != nil {
		t.Fatal(err)
	}
	must := func(_ any, err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(admin.RbacV1().ClusterRoles().Create(ctx, &rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: "kube2ra-explain"}, Rules: explainRBAC}, metav1.CreateOptions{}))
	must(admin.RbacV1().ClusterRoleBindings().Create(ctx, &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "kube2ra-explain"},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: "kube2ra-explain"},
		Subjects:   []rbacv1.Subject{{Kind: rbacv1.UserKind, APIGroup: rbacv1.GroupName, Name: "explainer"}},
	}, metav1.CreateOptions{}))
	kubeconfig, err := cp.UserKubeconfig("explainer")
	if err != nil {
		t.Fatal(err)
	}

	ds := agentDaemonSet([]string{"--default-role=reader", "--namespace-restriction-format=regexp"},
		corev1.EnvVar{Name: "KUBE2RA_BASE_ROLE_ARN", Value: tBase})
	ds.Spec.Selector = &metav1.LabelSelector{MatchLabels: map[string]string{"app": "kube2ra"}}
	ds.Spec.Template.Labels = map[string]string{"app": "kube2ra"}
	ds.Spec.Template.Spec.Containers[0].Image = "kube2ra:test"
	must(admin.AppsV1().DaemonSets("kube-system").Create(ctx, ds, metav1.CreateOptions{}))
	must(admin.CoreV1().Namespaces().Create(ctx, testNamespace("shop", `["web|api","team/.*"]`), metav1.CreateOptions{}))

	create := func(p *corev1.Pod, node string) {
		t.Helper()
		status := p.Status
		p.ResourceVersion, p.UID, p.Status = "", "", corev1.PodStatus{}
		p.Spec.NodeName = node
		p.Spec.Containers = []corev1.Container{{Name: "app", Image: "app:test"}}
		created, err := admin.CoreV1().Pods(p.Namespace).Create(ctx, p, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		created.Status = status
		must(admin.CoreV1().Pods(p.Namespace).UpdateStatus(ctx, created, metav1.UpdateOptions{}))
	}
	create(testPod("shop", "api", "10.1.0.5", role("api")), tNode)
	create(testPod("shop", "elsewhere", "10.1.0.5", nil), "node-b") // same IP, other node
	create(testPod("shop", "plain", "10.1.0.6", nil), tNode)
	create(testPod("shop", "twin-a", "10.1.0.9", role("team/db")), tNode)
	create(testPod("shop", "twin-b", "10.1.0.9", nil), tNode)
	// No controller-manager: the token door's ServiceAccount is made here.
	account, err := admin.CoreV1().ServiceAccounts("shop").Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "default"}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	api, err := admin.CoreV1().Pods("shop").Get(ctx, "api", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}

	explain := func(args ...string) (string, int) {
		t.Helper()
		var out, errOut strings.Builder
		args = append([]string{"explain", "--kubeconfig", kubeconfig, "--metrics-port=" + closedPort(t)}, args...)
		start := time.Now()
		code := dispatch(args, &out, &errOut)
		t.Logf("kube2ra explain %s: exit %d in %s", strings.Join(args[4:], " "), code, time.Since(start).Round(time.Millisecond))
		return out.String() + errOut.String(), code
	}
	tests := []struct {
		name     string
		args     []string
		wantCode int
		want     []string
	}{
		{name: "the DaemonSet's regexp format and base ARN decide; the other node's pod on the same IP does not count",
			args: []string{"-n", "shop", "api"}, wantCode: exitServed,
			want: []string{"DaemonSet kube-system/kube2ra (container kube2ra: args and env values)",
				"allowed-roles (regexp)", "arn:aws:iam::123456789012:role/(?:web|api) matches: allowed",
				"10.1.0.5 is owned by this pod", "(holders: shop/api)", "served: role " + tBase + "api"}},
		{name: "the DaemonSet's default role serves a pod without an annotation",
			args: []string{"shop/plain"}, wantCode: exitServed,
			want: []string{`--default-role "reader" applies`, "served: role " + tBase + "reader"}},
		{name: "two pods of the node on one IP are refused",
			args: []string{"-n", "shop", "twin-a"}, wantCode: exitDenied,
			want: []string{"10.1.0.9 is claimed by several live pods: shop/twin-a, shop/twin-b"}},
		{name: "with --pod-identity the token counts only from the IP the pod owns, for the ServiceAccount's current UID",
			args: []string{"-n", "shop", "api", "--pod-identity"}, wantCode: exitServed,
			want: []string{"token door:  role " + tBase + "api",
				"token for:   ServiceAccount shop/default with UID " + string(account.UID) + " only",
				"token from:  10.1.0.5 only, owned by this pod (UID " + string(api.UID) + ")"}},
		{name: "with --pod-identity a token from an IP two pods of the node claim is refused",
			args: []string{"-n", "shop", "twin-a", "--pod-identity"}, wantCode: exitDenied,
			want: []string{"token from:  not 10.1.0.9: several live pods claim it (shop/twin-a, shop/twin-b)", "verdict:     denied"}},
		{name: "explain's flag wins over the DaemonSet's",
			args: []string{"-n", "shop", "plain", "--default-role="}, wantCode: exitDenied,
			want: []string{"no iam.amazonaws.com/role annotation and no --default-role"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, code := explain(tt.args...)
			checkOutput(t, out, code, tt.wantCode, tt.want, nil)
		})
	}
}
