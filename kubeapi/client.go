// Package kubeapi is kube2ra's lean Kubernetes API client: the calls the
// agent makes (list and watch pods, namespaces, ServiceAccounts and its
// DaemonSet; read pods, namespaces, nodes and DaemonSets; patch its node;
// write Events; read the API server's OIDC documents), on client-go's REST
// client with a scheme holding only core/v1 and apps/v1.
//
// client-go's typed clientset registers every API group it knows (about 50)
// and links their clients, informers and apply configurations: about 13 MB
// of a 34 MB agent, resident on every node, for five kinds.
package kubeapi

import (
	"context"
	"fmt"
	"net/http"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/record"
	"k8s.io/client-go/util/flowcontrol"
)

// Client talks to one API server with one HTTP client and one rate limiter
// shared by both groups, and asks for protobuf unless the config names a
// content type, as client-go's typed clients do for built-in kinds.
type Client struct {
	// core is the REST client of /api/v1.
	core *rest.RESTClient
	// apps is the REST client of /apis/apps/v1.
	apps *rest.RESTClient
	// params encodes list options into query parameters.
	params runtime.ParameterCodec
	// scheme knows core/v1 and apps/v1 (Event references are built with it).
	scheme *runtime.Scheme
}

// NewScheme returns a scheme with the kinds kube2ra reads and writes:
// core/v1 and apps/v1, plus the meta types every group carries.
func NewScheme() *runtime.Scheme {
	s := runtime.NewScheme()
	// Both only add types to a fresh scheme, which cannot fail.
	if err := corev1.AddToScheme(s); err != nil {
		panic(fmt.Sprintf("registering core/v1: %v", err))
	}
	if err := appsv1.AddToScheme(s); err != nil {
		panic(fmt.Sprintf("registering apps/v1: %v", err))
	}
	metav1.AddToGroupVersion(s, schema.GroupVersion{Version: "v1"})
	return s
}

// New builds a Client from cfg (QPS and Burst as in client-go: one token
// bucket for every call this client makes).
func New(cfg *rest.Config) (*Client, error) {
	c := rest.CopyConfig(cfg)
	if c.RateLimiter == nil && c.QPS > 0 {
		if c.Burst <= 0 {
			return nil, fmt.Errorf("the Kubernetes client's burst is %d; it must be above 0 when QPS (%g) is set", c.Burst, c.QPS)
		}
		c.RateLimiter = flowcontrol.NewTokenBucketRateLimiter(c.QPS, c.Burst)
	}
	if c.UserAgent == "" {
		c.UserAgent = rest.DefaultKubernetesUserAgent()
	}
	httpClient, err := rest.HTTPClientFor(c)
	if err != nil {
		return nil, fmt.Errorf("building the HTTP client for the API server (TLS and credentials of the kubeconfig or the in-cluster config): %w", err)
	}
	scheme := NewScheme()
	codecs := serializer.NewCodecFactory(scheme).WithoutConversion()
	core, err := groupClient(c, httpClient, codecs, "/api", corev1.SchemeGroupVersion)
	if err != nil {
		return nil, err
	}
	apps, err := groupClient(c, httpClient, codecs, "/apis", appsv1.SchemeGroupVersion)
	if err != nil {
		return nil, err
	}
	return &Client{core: core, apps: apps, params: runtime.NewParameterCodec(scheme), scheme: scheme}, nil
}

// groupClient is the REST client of one group version.
func groupClient(base *rest.Config, h *http.Client, codecs runtime.NegotiatedSerializer, apiPath string, gv schema.GroupVersion) (*rest.RESTClient, error) {
	c := *base
	c.APIPath = apiPath
	c.GroupVersion = &gv
	c.NegotiatedSerializer = codecs
	rc, err := rest.RESTClientForConfigAndClient(&c, h)
	if err != nil {
		return nil, fmt.Errorf("building the Kubernetes client for %s: %w", gv, err)
	}
	return rc, nil
}

// Scheme is the scheme the client decodes with (core/v1 and apps/v1).
func (c *Client) Scheme() *runtime.Scheme { return c.scheme }

// list is a LIST of resource in namespace ("" for all or cluster scoped).
func list(ctx context.Context, rc *rest.RESTClient, params runtime.ParameterCodec, namespace, resource string, o metav1.ListOptions, into runtime.Object) error {
	return rc.Get().UseProtobufAsDefault().NamespaceIfScoped(namespace, namespace != "").Resource(resource).
		VersionedParams(&o, params).Timeout(listTimeout(o)).Do(ctx).Into(into)
}

// watchOf opens a WATCH of resource in namespace.
func watchOf(ctx context.Context, rc *rest.RESTClient, params runtime.ParameterCodec, namespace, resource string, o metav1.ListOptions) (watch.Interface, error) {
	o.Watch = true
	return rc.Get().UseProtobufAsDefault().NamespaceIfScoped(namespace, namespace != "").Resource(resource).
		VersionedParams(&o, params).Timeout(listTimeout(o)).Watch(ctx)
}

// listTimeout is the client-side bound the typed clients set from
// TimeoutSeconds (zero: none).
func listTimeout(o metav1.ListOptions) time.Duration {
	if o.TimeoutSeconds == nil {
		return 0
	}
	return time.Duration(*o.TimeoutSeconds) * time.Second
}

// get reads one object.
func get(ctx context.Context, rc *rest.RESTClient, namespace, resource, name string, into runtime.Object) error {
	return rc.Get().UseProtobufAsDefault().NamespaceIfScoped(namespace, namespace != "").Resource(resource).Name(name).Do(ctx).Into(into)
}

// ListPods lists pods in namespace ("" for all).
func (c *Client) ListPods(ctx context.Context, namespace string, o metav1.ListOptions) (*corev1.PodList, error) {
	l := &corev1.PodList{}
	return l, list(ctx, c.core, c.params, namespace, "pods", o, l)
}

// WatchPods watches pods in namespace ("" for all).
func (c *Client) WatchPods(ctx context.Context, namespace string, o metav1.ListOptions) (watch.Interface, error) {
	return watchOf(ctx, c.core, c.params, namespace, "pods", o)
}

// GetPod reads one pod.
func (c *Client) GetPod(ctx context.Context, namespace, name string) (*corev1.Pod, error) {
	p := &corev1.Pod{}
	return p, get(ctx, c.core, namespace, "pods", name, p)
}

// ListNamespaces lists namespaces.
func (c *Client) ListNamespaces(ctx context.Context, o metav1.ListOptions) (*corev1.NamespaceList, error) {
	l := &corev1.NamespaceList{}
	return l, list(ctx, c.core, c.params, "", "namespaces", o, l)
}

// WatchNamespaces watches namespaces.
func (c *Client) WatchNamespaces(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
	return watchOf(ctx, c.core, c.params, "", "namespaces", o)
}

// GetNamespace reads one namespace.
func (c *Client) GetNamespace(ctx context.Context, name string) (*corev1.Namespace, error) {
	n := &corev1.Namespace{}
	return n, get(ctx, c.core, "", "namespaces", name, n)
}

// ListServiceAccounts lists ServiceAccounts in all namespaces.
func (c *Client) ListServiceAccounts(ctx context.Context, o metav1.ListOptions) (*corev1.ServiceAccountList, error) {
	l := &corev1.ServiceAccountList{}
	return l, list(ctx, c.core, c.params, "", "serviceaccounts", o, l)
}

// WatchServiceAccounts watches ServiceAccounts in all namespaces.
func (c *Client) WatchServiceAccounts(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
	return watchOf(ctx, c.core, c.params, "", "serviceaccounts", o)
}

// GetNode reads one node.
func (c *Client) GetNode(ctx context.Context, name string) (*corev1.Node, error) {
	n := &corev1.Node{}
	return n, get(ctx, c.core, "", "nodes", name, n)
}

// PatchNode patches one node as fieldManager.
func (c *Client) PatchNode(ctx context.Context, name string, pt types.PatchType, data []byte, fieldManager string) (*corev1.Node, error) {
	n := &corev1.Node{}
	err := c.core.Patch(pt).UseProtobufAsDefault().Resource("nodes").Name(name).
		VersionedParams(&metav1.PatchOptions{FieldManager: fieldManager}, c.params).
		Body(data).Do(ctx).Into(n)
	return n, err
}

// ListDaemonSets lists DaemonSets in namespace.
func (c *Client) ListDaemonSets(ctx context.Context, namespace string, o metav1.ListOptions) (*appsv1.DaemonSetList, error) {
	l := &appsv1.DaemonSetList{}
	return l, list(ctx, c.apps, c.params, namespace, "daemonsets", o, l)
}

// WatchDaemonSets watches DaemonSets in namespace.
func (c *Client) WatchDaemonSets(ctx context.Context, namespace string, o metav1.ListOptions) (watch.Interface, error) {
	return watchOf(ctx, c.apps, c.params, namespace, "daemonsets", o)
}

// GetDaemonSet reads one DaemonSet.
func (c *Client) GetDaemonSet(ctx context.Context, namespace, name string) (*appsv1.DaemonSet, error) {
	d := &appsv1.DaemonSet{}
	return d, get(ctx, c.apps, namespace, "daemonsets", name, d)
}

// GetPath reads a path of the API server as bytes (the OIDC discovery
// document and its keys).
func (c *Client) GetPath(ctx context.Context, path string) ([]byte, error) {
	return c.core.Get().AbsPath(path).DoRaw(ctx)
}

// EventSink writes Events for tools/record's broadcaster, each into its
// own namespace, as client-go's EventSinkImpl does.
func (c *Client) EventSink() record.EventSink { return eventSink{rc: c.core} }

// eventSink is record.EventSink on the core REST client.
type eventSink struct {
	// rc is the core/v1 REST client.
	rc *rest.RESTClient
}

// Create posts a new Event.
func (s eventSink) Create(e *corev1.Event) (*corev1.Event, error) {
	out := &corev1.Event{}
	err := s.rc.Post().UseProtobufAsDefault().NamespaceIfScoped(e.Namespace, e.Namespace != "").Resource("events").
		Body(e).Do(context.TODO()).Into(out)
	return out, err
}

// Update replaces an Event (the broadcaster's aggregation of repeats).
func (s eventSink) Update(e *corev1.Event) (*corev1.Event, error) {
	out := &corev1.Event{}
	err := s.rc.Put().UseProtobufAsDefault().NamespaceIfScoped(e.Namespace, e.Namespace != "").Resource("events").Name(e.Name).
		Body(e).Do(context.TODO()).Into(out)
	return out, err
}

// Patch patches an Event's count and last timestamp.
func (s eventSink) Patch(e *corev1.Event, data []byte) (*corev1.Event, error) {
	out := &corev1.Event{}
	err := s.rc.Patch(types.StrategicMergePatchType).UseProtobufAsDefault().NamespaceIfScoped(e.Namespace, e.Namespace != "").
		Resource("events").Name(e.Name).Body(data).Do(context.TODO()).Into(out)
	return out, err
}
