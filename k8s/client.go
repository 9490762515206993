package k8s

import (
	"context"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/tools/record"
)

// Client is every call kube2ra makes to the API server. kubeapi.Client is
// the real one (a REST client with only the kinds below in its scheme);
// tests wrap client-go's fake clientset with kubeapitest.
type Client interface {
	// ListPods and WatchPods feed the node's pod informer ("" namespace: all).
	ListPods(ctx context.Context, namespace string, o metav1.ListOptions) (*corev1.PodList, error)
	WatchPods(ctx context.Context, namespace string, o metav1.ListOptions) (watch.Interface, error)
	// GetPod is a live check of one pod.
	GetPod(ctx context.Context, namespace, name string) (*corev1.Pod, error)
	// ListNamespaces and WatchNamespaces feed the namespace informer.
	ListNamespaces(ctx context.Context, o metav1.ListOptions) (*corev1.NamespaceList, error)
	WatchNamespaces(ctx context.Context, o metav1.ListOptions) (watch.Interface, error)
	// GetNamespace is a live check of one namespace.
	GetNamespace(ctx context.Context, name string) (*corev1.Namespace, error)
	// ListServiceAccounts and WatchServiceAccounts feed the token door's
	// ServiceAccount informer (all namespaces).
	ListServiceAccounts(ctx context.Context, o metav1.ListOptions) (*corev1.ServiceAccountList, error)
	WatchServiceAccounts(ctx context.Context, o metav1.ListOptions) (watch.Interface, error)
	// GetNode and PatchNode read the node and remove its startup taint.
	GetNode(ctx context.Context, name string) (*corev1.Node, error)
	PatchNode(ctx context.Context, name string, pt types.PatchType, data []byte, fieldManager string) (*corev1.Node, error)
	// ListDaemonSets, WatchDaemonSets and GetDaemonSet follow and read the
	// agent's own DaemonSet.
	ListDaemonSets(ctx context.Context, namespace string, o metav1.ListOptions) (*appsv1.DaemonSetList, error)
	WatchDaemonSets(ctx context.Context, namespace string, o metav1.ListOptions) (watch.Interface, error)
	GetDaemonSet(ctx context.Context, namespace, name string) (*appsv1.DaemonSet, error)
	// GetPath reads a path of the API server (the OIDC documents).
	GetPath(ctx context.Context, path string) ([]byte, error)
	// EventSink writes Events.
	EventSink() record.EventSink
	// Scheme knows the kinds Events are recorded about.
	Scheme() *runtime.Scheme
}
