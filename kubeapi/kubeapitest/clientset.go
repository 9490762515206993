// Package kubeapitest serves kube2ra's API calls from a client-go clientset,
// for tests: unit tests keep client-go's fake clientset (its object
// tracker, reactors and watches) behind the same methods as kubeapi.Client.
// Production code never imports it, so the agent does not link the
// clientset and its 50-odd API groups.
package kubeapitest

import (
	"context"
	"errors"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/tools/record"
	"k8s.io/client-go/util/watchlist"
)

// Client is kubeapi.Client's methods on a clientset.
type Client struct {
	// Clientset answers every call.
	Clientset kubernetes.Interface
}

// FromClientset wraps cs (typically k8s.io/client-go/kubernetes/fake's).
func FromClientset(cs kubernetes.Interface) *Client { return &Client{Clientset: cs} }

// IsWatchListSemanticsUnSupported passes the fake clientset's answer on to
// the informers (it cannot stream a watch list).
func (c *Client) IsWatchListSemanticsUnSupported() bool {
	return watchlist.DoesClientNotSupportWatchListSemantics(c.Clientset)
}

// Scheme is client-go's scheme.
func (c *Client) Scheme() *runtime.Scheme { return scheme.Scheme }

// ListPods lists pods in namespace ("" for all).
func (c *Client) ListPods(ctx context.Context, namespace string, o metav1.ListOptions) (*corev1.PodList, error) {
	return c.Clientset.CoreV1().Pods(namespace).List(ctx, o)
}

// WatchPods watches pods in namespace ("" for all).
func (c *Client) WatchPods(ctx context.Context, namespace string, o metav1.ListOptions) (watch.Interface, error) {
	return c.Clientset.CoreV1().Pods(namespace).Watch(ctx, o)
}

// GetPod reads one pod.
func (c *Client) GetPod(ctx context.Context, namespace, name string) (*corev1.Pod, error) {
	return c.Clientset.CoreV1().Pods(namespace).Get(ctx, name, metav1.GetOptions{})
}

// ListNamespaces lists namespaces.
func (c *Client) ListNamespaces(ctx context.Context, o metav1.ListOptions) (*corev1.NamespaceList, error) {
	return c.Clientset.CoreV1().Namespaces().List(ctx, o)
}

// WatchNamespaces watches namespaces.
func (c *Client) WatchNamespaces(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
	return c.Clientset.CoreV1().Namespaces().Watch(ctx, o)
}

// GetNamespace reads one namespace.
func (c *Client) GetNamespace(ctx context.Context, name string) (*corev1.Namespace, error) {
	return c.Clientset.CoreV1().Namespaces().Get(ctx, name, metav1.GetOptions{})
}

// ListServiceAccounts lists ServiceAccounts in all namespaces.
func (c *Client) ListServiceAccounts(ctx context.Context, o metav1.ListOptions) (*corev1.ServiceAccountList, error) {
	return c.Clientset.CoreV1().ServiceAccounts(metav1.NamespaceAll).List(ctx, o)
}

// WatchServiceAccounts watches ServiceAccounts in all namespaces.
func (c *Client) WatchServiceAccounts(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
	return c.Clientset.CoreV1().ServiceAccounts(metav1.NamespaceAll).Watch(ctx, o)
}

// GetNode reads one node.
func (c *Client) GetNode(ctx context.Context, name string) (*corev1.Node, error) {
	return c.Clientset.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
}

// PatchNode patches one node as fieldManager.
func (c *Client) PatchNode(ctx context.Context, name string, pt types.PatchType, data []byte, fieldManager string) (*corev1.Node, error) {
	return c.Clientset.CoreV1().Nodes().Patch(ctx, name, pt, data, metav1.PatchOptions{FieldManager: fieldManager})
}

// ListDaemonSets lists DaemonSets in namespace.
func (c *Client) ListDaemonSets(ctx context.Context, namespace string, o metav1.ListOptions) (*appsv1.DaemonSetList, error) {
	return c.Clientset.AppsV1().DaemonSets(namespace).List(ctx, o)
}

// WatchDaemonSets watches DaemonSets in namespace.
func (c *Client) WatchDaemonSets(ctx context.Context, namespace string, o metav1.ListOptions) (watch.Interface, error) {
	return c.Clientset.AppsV1().DaemonSets(namespace).Watch(ctx, o)
}

// GetDaemonSet reads one DaemonSet.
func (c *Client) GetDaemonSet(ctx context.Context, namespace, name string) (*appsv1.DaemonSet, error) {
	return c.Clientset.AppsV1().DaemonSets(namespace).Get(ctx, name, metav1.GetOptions{})
}

// GetPath reads a path of the API server through the clientset's discovery
// client; a fake clientset has none.
func (c *Client) GetPath(ctx context.Context, path string) ([]byte, error) {
	rc := c.Clientset.Discovery().RESTClient()
	if rc == nil {
		return nil, errors.New("kubeapitest: the clientset has no REST client to read " + path)
	}
	return rc.Get().AbsPath(path).DoRaw(ctx)
}

// EventSink writes Events through the clientset.
func (c *Client) EventSink() record.EventSink {
	return &typedcorev1.EventSinkImpl{Interface: c.Clientset.CoreV1().Events("")}
}
