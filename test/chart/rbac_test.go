//go:build integration

package chart_test

import (
	"context"
	"fmt"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	authorizationv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"

	"github.com/kube2ra/kube2ra/test/chart"
)

// rbacNamespace is where TestRenderedRBACAllowsTheAgentAndNothingElse installs
// the chart for real, apart from the dry-runs in kube-system.
const rbacNamespace = "kube2ra-rbac-test"

// TestRenderedRBACAllowsTheAgentAndNothingElse installs the rendered RBAC,
// ServiceAccount and DaemonSet for real, then calls the API server as the
// agent's ServiceAccount: every request the agent makes succeeds, and nearby
// requests it has no business making are forbidden.
func TestRenderedRBACAllowsTheAgentAndNothingElse(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), apiTimeout)
	defer cancel()
	a := newApplier(ctx, t)
	admin, err := kubernetes.NewForConfig(cp.AdminConfig())
	if err != nil {
		t.Fatal(err)
	}
	ensureNamespace(ctx, t, admin, rbacNamespace)

	objects, err := chart.Objects(render(t, valueSet{name: "defaults"}, "--namespace", rbacNamespace))
	if err != nil {
		t.Fatal(err)
	}
	for _, obj := range objects {
		if err := a.apply(ctx, obj, false); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			// Cluster-scoped objects would outlive the namespace; remove everything we made.
			ctx := context.Background()
			_ = a.delete(ctx, obj)
		})
	}
	// A DaemonSet that is not the agent's: its name is not in the Role's resourceNames.
	other := &appsv1.DaemonSet{
		ObjectMeta: metav1.ObjectMeta{Name: "someone-else", Namespace: rbacNamespace},
		Spec: appsv1.DaemonSetSpec{
			Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "x"}},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": "x"}},
				Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "x", Image: "x"}}},
			},
		},
	}
	if _, err := admin.AppsV1().DaemonSets(rbacNamespace).Create(ctx, other, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}

	sa := agentDaemonSet(t, objects).Spec.Template.Spec.ServiceAccountName
	cfg, err := cp.UserConfig("system:serviceaccount:"+rbacNamespace+":"+sa,
		"system:serviceaccounts", "system:serviceaccounts:"+rbacNamespace, "system:authenticated")
	if err != nil {
		t.Fatal(err)
	}
	agent, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}

	nodePods := metav1.ListOptions{FieldSelector: "spec.nodeName=node-1"}
	ownDaemonSet := metav1.ListOptions{FieldSelector: "metadata.name=" + chart.ReleaseName}
	event := &corev1.Event{
		ObjectMeta:     metav1.ObjectMeta{Name: "kube2ra-rbac-test.1", Namespace: rbacNamespace},
		InvolvedObject: corev1.ObjectReference{Kind: "Pod", Namespace: rbacNamespace, Name: "app", APIVersion: "v1"},
		Reason:         "RoleDenied", Message: "test", Type: corev1.EventTypeWarning,
		Source: corev1.EventSource{Component: "kube2ra"},
	}
	allowed := []struct {
		name string
		call func() error
	}{
		{"list this node's pods in all namespaces", func() error {
			_, err := agent.CoreV1().Pods("").List(ctx, nodePods)
			return err
		}},
		{"watch pods in all namespaces", func() error {
			return canI(ctx, agent, authorizationv1.ResourceAttributes{Verb: "watch", Resource: "pods"})
		}},
		{"get a pod", func() error {
			_, err := agent.CoreV1().Pods("default").Get(ctx, "absent", metav1.GetOptions{})
			return notFoundIsAllowed(err)
		}},
		{"list namespaces", func() error {
			_, err := agent.CoreV1().Namespaces().List(ctx, metav1.ListOptions{})
			return err
		}},
		{"watch namespaces", func() error {
			return canI(ctx, agent, authorizationv1.ResourceAttributes{Verb: "watch", Resource: "namespaces"})
		}},
		{"create an event", func() error {
			_, err := agent.CoreV1().Events(rbacNamespace).Create(ctx, event, metav1.CreateOptions{})
			return err
		}},
		{"patch an event (count of a repeated event)", func() error {
			_, err := agent.CoreV1().Events(rbacNamespace).Patch(ctx, event.Name, types.StrategicMergePatchType, []byte(`{"count":2}`), metav1.PatchOptions{})
			return err
		}},
		{"get its own DaemonSet", func() error {
			_, err := agent.AppsV1().DaemonSets(rbacNamespace).Get(ctx, chart.ReleaseName, metav1.GetOptions{})
			return err
		}},
		{"list its own DaemonSet by name (an informer's list)", func() error {
			_, err := agent.AppsV1().DaemonSets(rbacNamespace).List(ctx, ownDaemonSet)
			return err
		}},
		{"get a node (its own, for the startup taint)", func() error {
			_, err := agent.CoreV1().Nodes().Get(ctx, "absent", metav1.GetOptions{})
			return notFoundIsAllowed(err)
		}},
		{"patch a node (remove its own startup taint)", func() error {
			return canI(ctx, agent, authorizationv1.ResourceAttributes{Verb: "patch", Resource: "nodes"})
		}},
		{"watch its own DaemonSet by name", func() error {
			return canI(ctx, agent, authorizationv1.ResourceAttributes{
				Namespace: rbacNamespace, Verb: "watch", Group: "apps", Resource: "daemonsets", Name: chart.ReleaseName,
			})
		}},
	}
	for _, tt := range allowed {
		t.Run("allowed/"+tt.name, func(t *testing.T) {
			if err := tt.call(); err != nil {
				t.Errorf("the agent's ServiceAccount must be able to %s: %v", tt.name, err)
			}
		})
	}

	forbidden := []struct {
		name string
		call func() error
	}{
		{"read secrets", func() error {
			_, err := agent.CoreV1().Secrets(rbacNamespace).List(ctx, metav1.ListOptions{})
			return err
		}},
		{"get another DaemonSet", func() error {
			_, err := agent.AppsV1().DaemonSets(rbacNamespace).Get(ctx, other.Name, metav1.GetOptions{})
			return err
		}},
		{"list DaemonSets without naming its own", func() error {
			_, err := agent.AppsV1().DaemonSets(rbacNamespace).List(ctx, metav1.ListOptions{})
			return err
		}},
		{"get a DaemonSet in another namespace", func() error {
			_, err := agent.AppsV1().DaemonSets("default").Get(ctx, chart.ReleaseName, metav1.GetOptions{})
			return err
		}},
		{"delete its own DaemonSet", func() error {
			return agent.AppsV1().DaemonSets(rbacNamespace).Delete(ctx, chart.ReleaseName, metav1.DeleteOptions{})
		}},
		{"create a pod", func() error {
			_, err := agent.CoreV1().Pods(rbacNamespace).Create(ctx, &corev1.Pod{
				ObjectMeta: metav1.ObjectMeta{Name: "p"},
				Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "x", Image: "x"}}},
			}, metav1.CreateOptions{})
			return err
		}},
		{"annotate a namespace (grant itself roles)", func() error {
			_, err := agent.CoreV1().Namespaces().Patch(ctx, rbacNamespace, types.MergePatchType,
				[]byte(`{"metadata":{"annotations":{"iam.amazonaws.com/allowed-roles":"[\"*\"]"}}}`), metav1.PatchOptions{})
			return err
		}},
		{"delete an event", func() error {
			return agent.CoreV1().Events(rbacNamespace).Delete(ctx, event.Name, metav1.DeleteOptions{})
		}},
		{"list nodes", func() error {
			_, err := agent.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
			return err
		}},
		{"watch nodes", func() error {
			w, err := agent.CoreV1().Nodes().Watch(ctx, metav1.ListOptions{})
			if err == nil {
				w.Stop()
			}
			return err
		}},
		{"delete a node", func() error {
			return agent.CoreV1().Nodes().Delete(ctx, "absent", metav1.DeleteOptions{})
		}},
		{"write a node's status (its conditions and addresses)", func() error {
			_, err := agent.CoreV1().Nodes().PatchStatus(ctx, "absent", []byte(`{"status":{"phase":"Running"}}`))
			return err
		}},
		{"read configmaps", func() error {
			_, err := agent.CoreV1().ConfigMaps(rbacNamespace).List(ctx, metav1.ListOptions{})
			return err
		}},
		{"read its ServiceAccount", func() error {
			_, err := agent.CoreV1().ServiceAccounts(rbacNamespace).Get(ctx, sa, metav1.GetOptions{})
			return err
		}},
	}
	for _, tt := range forbidden {
		t.Run("forbidden/"+tt.name, func(t *testing.T) {
			if err := tt.call(); !apierrors.IsForbidden(err) {
				t.Errorf("the agent's ServiceAccount must not %s: got %v, want Forbidden", tt.name, err)
			}
		})
	}
}

// canI asks the API server whether the client may do attrs (a watch is
// authorised like any verb; opening one would only wait for events).
func canI(ctx context.Context, client kubernetes.Interface, attrs authorizationv1.ResourceAttributes) error {
	review, err := client.AuthorizationV1().SelfSubjectAccessReviews().Create(ctx,
		&authorizationv1.SelfSubjectAccessReview{Spec: authorizationv1.SelfSubjectAccessReviewSpec{ResourceAttributes: &attrs}},
		metav1.CreateOptions{})
	if err != nil {
		return err
	}
	if !review.Status.Allowed {
		return fmt.Errorf("%s %s is not allowed: %s", attrs.Verb, attrs.Resource, review.Status.Reason)
	}
	return nil
}

// notFoundIsAllowed treats NotFound as success: the request was authorised.
func notFoundIsAllowed(err error) error {
	if apierrors.IsNotFound(err) {
		return nil
	}
	return err
}
