package k8s

import (
	"context"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/watch"

	"github.com/kube2ra/kube2ra/kubeapi/objects"
)

// Client is every call kube2ra makes to the API server. kubeapi.Client is
// the real one (a REST client in JSON into the agent's own types);
// tests wrap client-go's fake clientset with kubeapitest.
type Client interface {
	// ListPods and WatchPods feed the node's pod informer ("" namespace: all).
	ListPods(ctx context.Context, namespace string, o metav1.ListOptions) (*objects.PodList, error)
	WatchPods(ctx context.Context, namespace string, o metav1.ListOptions) (watch.Interface, error)
	// GetPod is a live check of one pod.
	GetPod(ctx context.Context, namespace, name string) (*objects.Pod, error)
	// ListNamespaces and WatchNamespaces feed the namespace informer.
	ListNamespaces(ctx context.Context, o metav1.ListOptions) (*objects.NamespaceList, error)
	WatchNamespaces(ctx context.Context, o metav1.ListOptions) (watch.Interface, error)
	// GetNamespace is a live check of one namespace.
	GetNamespace(ctx context.Context, name string) (*objects.Namespace, error)
	// ListVersions takes the watch-currency snapshot of "pods" or
	// "namespaces": a consistent list of each object's namespace, name,
	// uid and resourceVersion only.
	ListVersions(ctx context.Context, resource, namespace string, o metav1.ListOptions) (*objects.VersionList, error)
	// ListServiceAccounts and WatchServiceAccounts feed the token door's
	// ServiceAccount informer (all namespaces).
	ListServiceAccounts(ctx context.Context, o metav1.ListOptions) (*objects.ServiceAccountList, error)
	WatchServiceAccounts(ctx context.Context, o metav1.ListOptions) (watch.Interface, error)
	// GetNode and PatchNode read the node and remove its startup taint.
	GetNode(ctx context.Context, name string) (*objects.Node, error)
	PatchNode(ctx context.Context, name string, pt types.PatchType, data []byte, fieldManager string) (*objects.Node, error)
	// ListDaemonSets, WatchDaemonSets and GetDaemonSet follow and read the
	// agent's own DaemonSet.
	ListDaemonSets(ctx context.Context, namespace string, o metav1.ListOptions) (*objects.DaemonSetList, error)
	WatchDaemonSets(ctx context.Context, namespace string, o metav1.ListOptions) (watch.Interface, error)
	GetDaemonSet(ctx context.Context, namespace, name string) (*objects.DaemonSet, error)
	// GetPath reads a path of the API server (the OIDC documents).
	GetPath(ctx context.Context, path string) ([]byte, error)
	// CreateEvent and PatchEvent write Events (a repeat patches the count
	// of the one it repeats).
	CreateEvent(ctx context.Context, e *objects.Event) (*objects.Event, error)
	PatchEvent(ctx context.Context, namespace, name string, data []byte) (*objects.Event, error)
}
