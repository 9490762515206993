// Package kubeapi is kube2ra's lean Kubernetes API client: the calls the
// agent makes (list and watch pods, namespaces, ServiceAccounts and its
// DaemonSet; read pods, namespaces, nodes and DaemonSets; patch its node;
// write Events; read the API server's OIDC documents), on client-go's REST
// client, in JSON, into the agent's own object types (package objects).
//
// client-go's typed clientset registers every API group it knows (about 50)
// and links their clients, informers and apply configurations: about 13 MB
// of a 34 MB agent, resident on every node, for five kinds. k8s.io/api's
// core/v1 and apps/v1 alone (protobuf, DeepCopy and String code for 265
// types) were another 5.6 MB; the agent links neither.
package kubeapi

import (
	"context"
	"fmt"
	"net/http"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/runtime/serializer/json"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/util/flowcontrol"

	"github.com/kube2ra/kube2ra/kubeapi/objects"
)

// Client talks to one API server with one HTTP client and one rate limiter
// shared by both groups, in JSON: the agent's own types have no protobuf
// code (see package objects).
type Client struct {
	// core is the REST client of /api/v1.
	core *rest.RESTClient
	// apps is the REST client of /apis/apps/v1.
	apps *rest.RESTClient
	// params encodes list options into query parameters.
	params runtime.ParameterCodec
}

// mediaJSON is the one content type the client sends and accepts.
const mediaJSON = "application/json"

// NewScheme returns a scheme with the kinds kube2ra reads and writes, its
// own types under core/v1 and apps/v1, plus the meta types every group
// carries.
func NewScheme() *runtime.Scheme {
	s := runtime.NewScheme()
	// AddToScheme only adds types to a fresh scheme, which cannot fail.
	if err := objects.AddToScheme(s); err != nil {
		panic(fmt.Sprintf("registering the agent's object types: %v", err))
	}
	return s
}

// jsonOnly is the negotiated serializer of a scheme's kinds in JSON, for
// single objects and for watch streams.
func jsonOnly(s *runtime.Scheme) runtime.NegotiatedSerializer {
	js := json.NewSerializerWithOptions(json.DefaultMetaFactory, s, s, json.SerializerOptions{})
	return runtime.NewSimpleNegotiatedSerializer(runtime.SerializerInfo{
		MediaType: mediaJSON, MediaTypeType: "application", MediaTypeSubType: "json", EncodesAsText: true,
		Serializer:       js,
		StreamSerializer: &runtime.StreamSerializerInfo{EncodesAsText: true, Serializer: js, Framer: json.Framer},
	})
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
	httpClient, err := httpClientFor(c)
	if err != nil {
		return nil, fmt.Errorf("building the HTTP client for the API server (TLS and credentials of the kubeconfig or the in-cluster config): %w", err)
	}
	// The agent's types decode JSON only; a protobuf preference in the
	// config would make every answer undecodable. Requests then accept
	// "application/json, */*": JSON from every API, and GetPath's documents
	// in their own types (the keys are application/jwk-set+json).
	c.ContentType, c.AcceptContentTypes = mediaJSON, ""
	scheme := NewScheme()
	codecs := jsonOnly(scheme)
	core, err := groupClient(c, httpClient, codecs, "/api", objects.CoreV1)
	if err != nil {
		return nil, err
	}
	apps, err := groupClient(c, httpClient, codecs, "/apis", objects.AppsV1)
	if err != nil {
		return nil, err
	}
	return &Client{core: core, apps: apps, params: runtime.NewParameterCodec(scheme)}, nil
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

// list is a LIST of resource in namespace ("" for all or cluster scoped).
func list(ctx context.Context, rc *rest.RESTClient, params runtime.ParameterCodec, namespace, resource string, o metav1.ListOptions, into runtime.Object) error {
	return rc.Get().NamespaceIfScoped(namespace, namespace != "").Resource(resource).
		VersionedParams(&o, params).Timeout(listTimeout(o)).Do(ctx).Into(into)
}

// watchOf opens a WATCH of resource in namespace.
func watchOf(ctx context.Context, rc *rest.RESTClient, params runtime.ParameterCodec, namespace, resource string, o metav1.ListOptions) (watch.Interface, error) {
	o.Watch = true
	return rc.Get().NamespaceIfScoped(namespace, namespace != "").Resource(resource).
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
	return rc.Get().NamespaceIfScoped(namespace, namespace != "").Resource(resource).Name(name).Do(ctx).Into(into)
}

// ListPods lists pods in namespace ("" for all).
func (c *Client) ListPods(ctx context.Context, namespace string, o metav1.ListOptions) (*objects.PodList, error) {
	l := &objects.PodList{}
	return l, list(ctx, c.core, c.params, namespace, "pods", o, l)
}

// WatchPods watches pods in namespace ("" for all).
func (c *Client) WatchPods(ctx context.Context, namespace string, o metav1.ListOptions) (watch.Interface, error) {
	return watchOf(ctx, c.core, c.params, namespace, "pods", o)
}

// GetPod reads one pod.
func (c *Client) GetPod(ctx context.Context, namespace, name string) (*objects.Pod, error) {
	p := &objects.Pod{}
	return p, get(ctx, c.core, namespace, "pods", name, p)
}

// ListNamespaces lists namespaces.
func (c *Client) ListNamespaces(ctx context.Context, o metav1.ListOptions) (*objects.NamespaceList, error) {
	l := &objects.NamespaceList{}
	return l, list(ctx, c.core, c.params, "", "namespaces", o, l)
}

// WatchNamespaces watches namespaces.
func (c *Client) WatchNamespaces(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
	return watchOf(ctx, c.core, c.params, "", "namespaces", o)
}

// GetNamespace reads one namespace.
func (c *Client) GetNamespace(ctx context.Context, name string) (*objects.Namespace, error) {
	n := &objects.Namespace{}
	return n, get(ctx, c.core, "", "namespaces", name, n)
}

// ListServiceAccounts lists ServiceAccounts in all namespaces.
func (c *Client) ListServiceAccounts(ctx context.Context, o metav1.ListOptions) (*objects.ServiceAccountList, error) {
	l := &objects.ServiceAccountList{}
	return l, list(ctx, c.core, c.params, "", "serviceaccounts", o, l)
}

// WatchServiceAccounts watches ServiceAccounts in all namespaces.
func (c *Client) WatchServiceAccounts(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
	return watchOf(ctx, c.core, c.params, "", "serviceaccounts", o)
}

// GetNode reads one node.
func (c *Client) GetNode(ctx context.Context, name string) (*objects.Node, error) {
	n := &objects.Node{}
	return n, get(ctx, c.core, "", "nodes", name, n)
}

// PatchNode patches one node as fieldManager.
func (c *Client) PatchNode(ctx context.Context, name string, pt types.PatchType, data []byte, fieldManager string) (*objects.Node, error) {
	n := &objects.Node{}
	err := c.core.Patch(pt).Resource("nodes").Name(name).
		VersionedParams(&metav1.PatchOptions{FieldManager: fieldManager}, c.params).
		Body(data).Do(ctx).Into(n)
	return n, err
}

// ListDaemonSets lists DaemonSets in namespace.
func (c *Client) ListDaemonSets(ctx context.Context, namespace string, o metav1.ListOptions) (*objects.DaemonSetList, error) {
	l := &objects.DaemonSetList{}
	return l, list(ctx, c.apps, c.params, namespace, "daemonsets", o, l)
}

// WatchDaemonSets watches DaemonSets in namespace.
func (c *Client) WatchDaemonSets(ctx context.Context, namespace string, o metav1.ListOptions) (watch.Interface, error) {
	return watchOf(ctx, c.apps, c.params, namespace, "daemonsets", o)
}

// GetDaemonSet reads one DaemonSet.
func (c *Client) GetDaemonSet(ctx context.Context, namespace, name string) (*objects.DaemonSet, error) {
	d := &objects.DaemonSet{}
	return d, get(ctx, c.apps, namespace, "daemonsets", name, d)
}

// GetPath reads a path of the API server as bytes (the OIDC discovery
// document and its keys).
func (c *Client) GetPath(ctx context.Context, path string) ([]byte, error) {
	return c.core.Get().AbsPath(path).DoRaw(ctx)
}

// CreateEvent posts a new Event into its own namespace.
func (c *Client) CreateEvent(ctx context.Context, e *objects.Event) (*objects.Event, error) {
	out := &objects.Event{}
	err := c.core.Post().Namespace(e.Namespace).Resource("events").Body(e).Do(ctx).Into(out)
	return out, err
}

// PatchEvent applies a strategic merge patch (a repeat's count and last
// timestamp) to an Event.
func (c *Client) PatchEvent(ctx context.Context, namespace, name string, data []byte) (*objects.Event, error) {
	out := &objects.Event{}
	err := c.core.Patch(types.StrategicMergePatchType).Namespace(namespace).Resource("events").Name(name).
		Body(data).Do(ctx).Into(out)
	return out, err
}
