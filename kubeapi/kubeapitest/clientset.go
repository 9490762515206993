// Package kubeapitest serves kube2ra's API calls from a client-go clientset,
// for tests: unit tests keep client-go's fake clientset (its object
// tracker, reactors and watches) behind the same methods as kubeapi.Client,
// converting client-go's objects to the agent's own types (package objects)
// through JSON, as the API server's answers reach the agent. Production code
// never imports it, so the agent does not link the clientset, its 50-odd
// API groups or k8s.io/api.
package kubeapitest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/util/watchlist"

	"github.com/kube2ra/kube2ra/kubeapi/objects"
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

// convert re-decodes in (a client-go object) as the agent's type Out,
// through JSON as the API server's answer would reach it.
func convert[Out any](in any, err error) (*Out, error) {
	if err != nil {
		return nil, err
	}
	b, err := json.Marshal(in)
	if err != nil {
		return nil, fmt.Errorf("kubeapitest: encoding %T: %w", in, err)
	}
	out := new(Out)
	if err := json.Unmarshal(b, out); err != nil {
		return nil, fmt.Errorf("kubeapitest: decoding %T as %T: %w", in, out, err)
	}
	return out, nil
}

// converted passes w's events on with their objects as the agent's types
// (errors' Status as it is).
func converted(w watch.Interface, err error) (watch.Interface, error) {
	if err != nil {
		return nil, err
	}
	return watch.Filter(w, func(e watch.Event) (watch.Event, bool) {
		var out runtime.Object
		var err error
		switch o := e.Object.(type) {
		case *corev1.Pod:
			out, err = convert[objects.Pod](o, nil)
		case *corev1.Namespace:
			out, err = convert[objects.Namespace](o, nil)
		case *corev1.ServiceAccount:
			out, err = convert[objects.ServiceAccount](o, nil)
		case *appsv1.DaemonSet:
			out, err = convert[objects.DaemonSet](o, nil)
		default:
			return e, true
		}
		if err != nil {
			return watch.Event{Type: watch.Error, Object: &metav1.Status{Status: metav1.StatusFailure, Message: err.Error()}}, true
		}
		e.Object = out
		return e, true
	}), nil
}

// ListPods lists pods in namespace ("" for all).
func (c *Client) ListPods(ctx context.Context, namespace string, o metav1.ListOptions) (*objects.PodList, error) {
	return convert[objects.PodList](c.Clientset.CoreV1().Pods(namespace).List(ctx, o))
}

// WatchPods watches pods in namespace ("" for all).
func (c *Client) WatchPods(ctx context.Context, namespace string, o metav1.ListOptions) (watch.Interface, error) {
	return converted(c.Clientset.CoreV1().Pods(namespace).Watch(ctx, o))
}

// GetPod reads one pod.
func (c *Client) GetPod(ctx context.Context, namespace, name string) (*objects.Pod, error) {
	return convert[objects.Pod](c.Clientset.CoreV1().Pods(namespace).Get(ctx, name, metav1.GetOptions{}))
}

// ListNamespaces lists namespaces.
func (c *Client) ListNamespaces(ctx context.Context, o metav1.ListOptions) (*objects.NamespaceList, error) {
	return convert[objects.NamespaceList](c.Clientset.CoreV1().Namespaces().List(ctx, o))
}

// WatchNamespaces watches namespaces.
func (c *Client) WatchNamespaces(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
	return converted(c.Clientset.CoreV1().Namespaces().Watch(ctx, o))
}

// GetNamespace reads one namespace.
func (c *Client) GetNamespace(ctx context.Context, name string) (*objects.Namespace, error) {
	return convert[objects.Namespace](c.Clientset.CoreV1().Namespaces().Get(ctx, name, metav1.GetOptions{}))
}

// ListVersions lists pods or namespaces whole and keeps what a
// metadata-only list gives the snapshot.
func (c *Client) ListVersions(ctx context.Context, resource, namespace string, o metav1.ListOptions) (*objects.VersionList, error) {
	var list runtime.Object
	var err error
	switch resource {
	case "pods":
		list, err = c.Clientset.CoreV1().Pods(namespace).List(ctx, o)
	case "namespaces":
		list, err = c.Clientset.CoreV1().Namespaces().List(ctx, o)
	default:
		return nil, fmt.Errorf("kubeapitest: ListVersions of %q: only pods and namespaces are snapshotted", resource)
	}
	if err != nil {
		return nil, err
	}
	lm, err := meta.ListAccessor(list)
	if err != nil {
		return nil, err
	}
	items, err := meta.ExtractList(list)
	if err != nil {
		return nil, err
	}
	out := &objects.VersionList{ResourceVersion: lm.GetResourceVersion()}
	for _, item := range items {
		m, err := meta.Accessor(item)
		if err != nil {
			return nil, err
		}
		out.Items = append(out.Items, objects.ObjectVersion{Namespace: m.GetNamespace(), Name: m.GetName(), UID: m.GetUID(), ResourceVersion: m.GetResourceVersion()})
	}
	return out, nil
}

// ListServiceAccounts lists ServiceAccounts in all namespaces.
func (c *Client) ListServiceAccounts(ctx context.Context, o metav1.ListOptions) (*objects.ServiceAccountList, error) {
	return convert[objects.ServiceAccountList](c.Clientset.CoreV1().ServiceAccounts(metav1.NamespaceAll).List(ctx, o))
}

// WatchServiceAccounts watches ServiceAccounts in all namespaces.
func (c *Client) WatchServiceAccounts(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
	return converted(c.Clientset.CoreV1().ServiceAccounts(metav1.NamespaceAll).Watch(ctx, o))
}

// GetNode reads one node.
func (c *Client) GetNode(ctx context.Context, name string) (*objects.Node, error) {
	return convert[objects.Node](c.Clientset.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{}))
}

// PatchNode patches one node as fieldManager.
func (c *Client) PatchNode(ctx context.Context, name string, pt types.PatchType, data []byte, fieldManager string) (*objects.Node, error) {
	return convert[objects.Node](c.Clientset.CoreV1().Nodes().Patch(ctx, name, pt, data, metav1.PatchOptions{FieldManager: fieldManager}))
}

// ListDaemonSets lists DaemonSets in namespace.
func (c *Client) ListDaemonSets(ctx context.Context, namespace string, o metav1.ListOptions) (*objects.DaemonSetList, error) {
	return convert[objects.DaemonSetList](c.Clientset.AppsV1().DaemonSets(namespace).List(ctx, o))
}

// WatchDaemonSets watches DaemonSets in namespace.
func (c *Client) WatchDaemonSets(ctx context.Context, namespace string, o metav1.ListOptions) (watch.Interface, error) {
	return converted(c.Clientset.AppsV1().DaemonSets(namespace).Watch(ctx, o))
}

// GetDaemonSet reads one DaemonSet.
func (c *Client) GetDaemonSet(ctx context.Context, namespace, name string) (*objects.DaemonSet, error) {
	return convert[objects.DaemonSet](c.Clientset.AppsV1().DaemonSets(namespace).Get(ctx, name, metav1.GetOptions{}))
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

// CreateEvent creates an Event through the clientset.
func (c *Client) CreateEvent(ctx context.Context, e *objects.Event) (*objects.Event, error) {
	in, err := convert[corev1.Event](e, nil)
	if err != nil {
		return nil, err
	}
	return convert[objects.Event](c.Clientset.CoreV1().Events(e.Namespace).Create(ctx, in, metav1.CreateOptions{}))
}

// PatchEvent patches an Event through the clientset.
func (c *Client) PatchEvent(ctx context.Context, namespace, name string, data []byte) (*objects.Event, error) {
	return convert[objects.Event](c.Clientset.CoreV1().Events(namespace).Patch(ctx, name, types.StrategicMergePatchType, data, metav1.PatchOptions{}))
}
