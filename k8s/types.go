// Package k8s knows who is calling: it watches this node's pods and all
// namespaces, maps a source IP to the one pod that owns it, and resolves the
// pod's role against its namespace's policy.
package k8s

import (
	"errors"
	"fmt"
	"net/netip"

	"k8s.io/apimachinery/pkg/types"
)

// Pod is what kube2ra keeps of a pod: enough to identify it, pick its role
// and name its session. A Pod from a lookup is shared with every other
// lookup of the same cached object: read it, never write it.
type Pod struct {
	// UID tells a pod from a later one with the same name.
	UID types.UID
	// Namespace of the pod.
	Namespace string
	// Name of the pod.
	Name string
	// ServiceAccount is spec.serviceAccountName.
	ServiceAccount string
	// NodeName is spec.nodeName.
	NodeName string
	// IPs are the addresses from status.podIPs.
	IPs []netip.Addr
	// Annotations holds only the annotations kube2ra reads (role, external
	// ID). It is shared with the informer's cache: read it, never write it.
	Annotations map[string]string
	// Terminating is true once deletionTimestamp is set.
	Terminating bool
	// HostNetwork is spec.hostNetwork: the pod shares the node's addresses.
	HostNetwork bool
}

// Key is namespace/name.
func (p *Pod) Key() string { return p.Namespace + "/" + p.Name }

// Role is the role a pod may have, after policy.
type Role struct {
	// ARN is the full role ARN: the role the pod (or its ServiceAccount)
	// names, the first hop when there is a target role.
	ARN string
	// TargetARN is the target role assumed with ARN's credentials (the
	// target-role annotation); empty when none.
	TargetARN string
	// Name is the last element of the served role's resource path (the
	// target's when there is one): what IMDS lists under
	// iam/security-credentials/.
	Name string
	// AccountID is the served role's account, parsed with its ARN (the
	// token door's AccountId).
	AccountID string
	// ExternalID comes from the pod's external-ID annotation; empty if none.
	ExternalID string
	// SessionPolicy is the inline session policy of the pod's session (its
	// own and its namespace's cap, see SessionPolicy), packed; "" if none.
	SessionPolicy string
	// Default is true when the role came from --default-role, not the pod.
	Default bool
}

// ServedARN is the role whose credentials the pod gets: the target role
// when there is one.
func (r Role) ServedARN() string {
	if r.TargetARN != "" {
		return r.TargetARN
	}
	return r.ARN
}

var (
	// ErrPodNotFound: no live pod on this node has the IP (after waiting).
	ErrPodNotFound = errors.New("no pod on this node has this IP")
	// ErrAmbiguousIP: several live pods claim the IP; kube2ra will not guess.
	ErrAmbiguousIP = errors.New("several pods on this node claim this IP")
	// ErrNotSynced: the informers have not synced within the wait.
	ErrNotSynced = errors.New("pod informer has not synced yet")
	// ErrNoRole: the pod has no role annotation and there is no default role.
	ErrNoRole = errors.New("pod has no role and no default role is set")
)

// DenialReason says why a role was refused.
type DenialReason string

const (
	// DeniedByNamespace: the namespace's allowed-roles policy does not list the role.
	DeniedByNamespace DenialReason = "NamespacePolicy"
	// DeniedInvalidPolicy: the namespace's policy annotation cannot be parsed.
	DeniedInvalidPolicy DenialReason = "InvalidRolePolicy"
	// DeniedInvalidRole: the pod's role annotation is not a usable role.
	DeniedInvalidRole DenialReason = "InvalidRole"
	// DeniedExternalID: an external ID was asked for where the source cannot use one.
	DeniedExternalID DenialReason = "ExternalIDUnsupported"
	// DeniedSessionPolicy: the pod's or namespace's session policy cannot be sent.
	DeniedSessionPolicy DenialReason = "InvalidSessionPolicy"
)

// DenialError is a role the pod asked for and may not have.
type DenialError struct {
	// Reason classifies the denial.
	Reason DenialReason
	// Role is the role as asked for (annotation value or normalised ARN).
	Role string
	// Namespace is the pod's namespace.
	Namespace string
	// Detail is a sentence for logs and Events: what was wrong and what to do.
	Detail string
}

func (e *DenialError) Error() string {
	return fmt.Sprintf("role %q denied in namespace %q (%s): %s", e.Role, e.Namespace, e.Reason, e.Detail)
}
