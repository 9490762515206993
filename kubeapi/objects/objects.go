// Package objects holds the agent's own Kubernetes API object types: the
// kinds it reads and writes (core/v1 Pod, Namespace, ServiceAccount, Node,
// Event and apps/v1 DaemonSet), with only the fields it reads, under the
// API's JSON names and corev1's Go names.
//
// k8s.io/api/core/v1 and apps/v1 bring generated protobuf, DeepCopy and
// String code for some 265 types: about 5.6 MB of the agent's binary, and
// so of its resident memory on every node. These types decode from the API
// server's JSON (kubeapi asks for JSON) and satisfy runtime.Object and
// metav1.Object, so client-go's informers, stores and reflector (watch
// lists and bookmarks included) use them unchanged. A field the API sends
// and these types lack is dropped on decoding, which is what the
// informers' transforms did anyway. Namespaces and ServiceAccounts, which
// every agent caches for the whole cluster, carry the smaller Meta instead
// of metav1.ObjectMeta.
package objects

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
)

// CoreV1 and AppsV1 are the group versions of the kinds below.
var (
	CoreV1 = schema.GroupVersion{Version: "v1"}
	AppsV1 = schema.GroupVersion{Group: "apps", Version: "v1"}
)

// PodPhase is a pod's status.phase.
type PodPhase string

// The pod phases the agent tells apart.
const (
	PodPending   PodPhase = "Pending"
	PodRunning   PodPhase = "Running"
	PodSucceeded PodPhase = "Succeeded"
	PodFailed    PodPhase = "Failed"
	PodUnknown   PodPhase = "Unknown"
)

// Pod is a core/v1 Pod.
type Pod struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`
	// Spec holds the node, ServiceAccount and host networking.
	Spec PodSpec `json:"spec,omitempty"`
	// Status holds the phase and IPs.
	Status PodStatus `json:"status,omitempty"`
}

// PodSpec is the part of a pod's spec the agent reads.
type PodSpec struct {
	// Containers are read from a DaemonSet's template (explain).
	Containers []Container `json:"containers,omitempty"`
	// ServiceAccountName is the pod's ServiceAccount.
	ServiceAccountName string `json:"serviceAccountName,omitempty"`
	// NodeName is the node the pod is bound to.
	NodeName string `json:"nodeName,omitempty"`
	// HostNetwork pods share the node's IPs and are never indexed.
	HostNetwork bool `json:"hostNetwork,omitempty"`
}

// PodStatus is the part of a pod's status the agent reads.
type PodStatus struct {
	// Phase is the pod's lifecycle phase.
	Phase PodPhase `json:"phase,omitempty"`
	// HostIP is the node's IP (explain).
	HostIP string `json:"hostIP,omitempty"`
	// PodIP is the first of PodIPs.
	PodIP string `json:"podIP,omitempty"`
	// PodIPs are every IP of the pod.
	PodIPs []PodIP `json:"podIPs,omitempty"`
}

// PodIP is one IP of a pod.
type PodIP struct {
	// IP is the address.
	IP string `json:"ip,omitempty"`
}

// Container is the part of a container the agent reads (explain).
type Container struct {
	// Name is the container's name.
	Name string `json:"name"`
	// Command is the entrypoint.
	Command []string `json:"command,omitempty"`
	// Args are the entrypoint's arguments.
	Args []string `json:"args,omitempty"`
	// Env is the container's environment.
	Env []EnvVar `json:"env,omitempty"`
}

// EnvVar is one environment variable of a container.
type EnvVar struct {
	// Name is the variable's name.
	Name string `json:"name"`
	// Value is the literal value.
	Value string `json:"value,omitempty"`
	// ValueFrom is set when the kubelet fills the value in.
	ValueFrom *EnvVarSource `json:"valueFrom,omitempty"`
}

// EnvVarSource says where the kubelet takes a value from; the agent only
// tells it from a literal value, and reads the downward API's field path.
type EnvVarSource struct {
	// FieldRef is a downward API field.
	FieldRef *ObjectFieldSelector `json:"fieldRef,omitempty"`
}

// ObjectFieldSelector names a field of the pod.
type ObjectFieldSelector struct {
	// FieldPath is the field's path, e.g. spec.nodeName.
	FieldPath string `json:"fieldPath"`
}

// PodList is a list of pods.
type PodList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	// Items are the pods.
	Items []Pod `json:"items"`
}

// Namespace is a core/v1 Namespace (its metadata: annotations hold the
// role policy).
type Namespace struct {
	metav1.TypeMeta `json:",inline"`
	Meta            `json:"metadata,omitempty"`
}

// NamespaceList is a list of namespaces.
type NamespaceList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	// Items are the namespaces.
	Items []Namespace `json:"items"`
}

// ServiceAccount is a core/v1 ServiceAccount (its metadata: annotations
// hold the token door's role).
type ServiceAccount struct {
	metav1.TypeMeta `json:",inline"`
	Meta            `json:"metadata,omitempty"`
}

// ServiceAccountList is a list of ServiceAccounts.
type ServiceAccountList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	// Items are the ServiceAccounts.
	Items []ServiceAccount `json:"items"`
}

// TaintEffect is a taint's effect.
type TaintEffect string

// The taint effects.
const (
	TaintEffectNoSchedule       TaintEffect = "NoSchedule"
	TaintEffectPreferNoSchedule TaintEffect = "PreferNoSchedule"
	TaintEffectNoExecute        TaintEffect = "NoExecute"
)

// NodeAddressType is the kind of a node's address.
type NodeAddressType string

// The node address types.
const (
	NodeHostName    NodeAddressType = "Hostname"
	NodeInternalIP  NodeAddressType = "InternalIP"
	NodeExternalIP  NodeAddressType = "ExternalIP"
	NodeInternalDNS NodeAddressType = "InternalDNS"
	NodeExternalDNS NodeAddressType = "ExternalDNS"
)

// Node is a core/v1 Node.
type Node struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`
	// Spec holds the taints.
	Spec NodeSpec `json:"spec,omitempty"`
	// Status holds the addresses.
	Status NodeStatus `json:"status,omitempty"`
}

// NodeSpec is the part of a node's spec the agent reads.
type NodeSpec struct {
	// Taints are the node's taints, all of each one's fields (the startup
	// taint's removal tests the whole taint before removing it).
	Taints []Taint `json:"taints,omitempty"`
}

// Taint is a node taint, complete.
type Taint struct {
	// Key is the taint's key.
	Key string `json:"key"`
	// Value is the taint's value.
	Value string `json:"value,omitempty"`
	// Effect is what the taint does to pods that do not tolerate it.
	Effect TaintEffect `json:"effect"`
	// TimeAdded is when a NoExecute taint was added.
	TimeAdded *metav1.Time `json:"timeAdded,omitempty"`
}

// NodeStatus is the part of a node's status the agent reads.
type NodeStatus struct {
	// Addresses are the node's addresses.
	Addresses []NodeAddress `json:"addresses,omitempty"`
}

// NodeAddress is one address of a node.
type NodeAddress struct {
	// Type is the kind of address.
	Type NodeAddressType `json:"type"`
	// Address is the address.
	Address string `json:"address"`
}

// DaemonSet is an apps/v1 DaemonSet.
type DaemonSet struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`
	// Spec holds the pod template.
	Spec DaemonSetSpec `json:"spec,omitempty"`
}

// DaemonSetSpec is the part of a DaemonSet's spec the agent reads.
type DaemonSetSpec struct {
	// Template is the pods' template.
	Template PodTemplateSpec `json:"template"`
}

// PodTemplateSpec is a pod template.
type PodTemplateSpec struct {
	metav1.ObjectMeta `json:"metadata,omitempty"`
	// Spec is the pods' spec.
	Spec PodSpec `json:"spec,omitempty"`
}

// DaemonSetList is a list of DaemonSets.
type DaemonSetList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	// Items are the DaemonSets.
	Items []DaemonSet `json:"items"`
}

// The Event types.
const (
	EventTypeNormal  = "Normal"
	EventTypeWarning = "Warning"
)

// Event is a core/v1 Event, as the agent writes it.
type Event struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata"`
	// InvolvedObject is what the Event is about.
	InvolvedObject ObjectReference `json:"involvedObject"`
	// Reason is a short machine-readable word.
	Reason string `json:"reason,omitempty"`
	// Message is for people.
	Message string `json:"message,omitempty"`
	// Source is the component and host that wrote the Event.
	Source EventSource `json:"source,omitempty"`
	// FirstTimestamp is when the Event was first seen.
	FirstTimestamp metav1.Time `json:"firstTimestamp,omitempty"`
	// LastTimestamp is when it was seen last.
	LastTimestamp metav1.Time `json:"lastTimestamp,omitempty"`
	// Count is how often it was seen.
	Count int32 `json:"count,omitempty"`
	// Type is Normal or Warning.
	Type string `json:"type,omitempty"`
}

// EventSource is the component and host that wrote an Event.
type EventSource struct {
	// Component is the writer's name.
	Component string `json:"component,omitempty"`
	// Host is the writer's node.
	Host string `json:"host,omitempty"`
}

// ObjectReference names an object (what an Event is about).
type ObjectReference struct {
	// Kind is the object's kind.
	Kind string `json:"kind,omitempty"`
	// Namespace is the object's namespace.
	Namespace string `json:"namespace,omitempty"`
	// Name is the object's name.
	Name string `json:"name,omitempty"`
	// UID is the object's UID.
	UID types.UID `json:"uid,omitempty"`
	// APIVersion is the object's API version.
	APIVersion string `json:"apiVersion,omitempty"`
	// ResourceVersion is the object's version the reference was made from.
	ResourceVersion string `json:"resourceVersion,omitempty"`
	// FieldPath names a part of the object (a container).
	FieldPath string `json:"fieldPath,omitempty"`
}

// AddToScheme registers the kinds above and the meta types (Status, watch
// events, list options) under their group versions.
func AddToScheme(s *runtime.Scheme) error {
	s.AddKnownTypes(CoreV1, &Pod{}, &PodList{}, &Namespace{}, &NamespaceList{},
		&ServiceAccount{}, &ServiceAccountList{}, &Node{}, &Event{})
	s.AddKnownTypes(AppsV1, &DaemonSet{}, &DaemonSetList{})
	metav1.AddToGroupVersion(s, CoreV1)
	metav1.AddToGroupVersion(s, AppsV1)
	return nil
}
