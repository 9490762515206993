package k8s

import (
	"fmt"
	"net/netip"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/cache"

	"github.com/kube2ra/kube2ra/kubeapi/objects"
)

// podIPIndex is the name of the informer index from IP to pods.
const podIPIndex = "podIP"

// podIPIndexFunc is the informer index function: the IPs of a pod that may
// own them. It depends on the object alone (no clock, no node state), so
// the index always agrees with the store. Host-network pods share the
// node's address and pods in phase Succeeded or Failed have given theirs
// back to the CNI, so neither is ever indexed.
func podIPIndexFunc(obj any) ([]string, error) {
	pod, ok := obj.(*objects.Pod)
	if !ok {
		return nil, fmt.Errorf("pod IP index: got %T, want *v1.Pod", obj)
	}
	if !indexable(pod) {
		return nil, nil
	}
	ips := podIPs(pod)
	keys := make([]string, 0, len(ips))
	for _, ip := range ips {
		keys = append(keys, ip.String())
	}
	return keys, nil
}

// indexable reports whether a pod can own its IPs.
func indexable(pod *objects.Pod) bool {
	if pod.Spec.HostNetwork {
		return false
	}
	switch pod.Status.Phase {
	case objects.PodSucceeded, objects.PodFailed:
		return false
	}
	return true
}

// podIPs parses status.podIPs (or status.podIP when the list is empty),
// unmapping IPv4-in-IPv6 so one address has one index key. Unparsable
// entries are skipped: they cannot match a source address anyway.
func podIPs(pod *objects.Pod) []netip.Addr {
	var ips []netip.Addr
	add := func(s string) {
		ip, err := netip.ParseAddr(s)
		if err != nil {
			return
		}
		ip = normalizeIP(ip)
		for _, have := range ips {
			if have == ip {
				return
			}
		}
		ips = append(ips, ip)
	}
	for _, p := range pod.Status.PodIPs {
		add(p.IP)
	}
	if len(ips) == 0 && pod.Status.PodIP != "" {
		add(pod.Status.PodIP)
	}
	return ips
}

// normalizeIP is ip as the index holds it: IPv4-mapped addresses as IPv4,
// no zone.
func normalizeIP(ip netip.Addr) netip.Addr { return ip.Unmap().WithZone("") }

// ipKey is the index key of a source address.
func ipKey(ip netip.Addr) string { return normalizeIP(ip).String() }

// ownership is what the single-owner rule decided for one IP.
type ownership int

const (
	// ownerNone: no live pod holds the IP (none at all, or only terminating
	// ones); the caller may wait for the informer to learn a live one.
	ownerNone ownership = iota
	// ownerOne: exactly one live pod holds the IP; it is the owner.
	ownerOne
	// ownerAmbiguous: several live pods hold the IP; deny.
	ownerAmbiguous
)

// ownerOf applies the single-owner rule to the pods indexed under one IP:
// the one pod without deletionTimestamp owns it. Several live pods mean the
// node's view is inconsistent and kube2ra will not guess. A terminating pod
// never owns an IP: once it is being deleted its address may already have
// been handed to a pod the informer has not seen yet, and answering with
// the old pod's role would give the newcomer the wrong credentials. (A pod
// in graceful shutdown keeps the credentials its SDK already cached.)
// Pods that are not indexable are ignored, so a stale index entry cannot
// let a Completed pod win.
func ownerOf(pods []*objects.Pod) (*objects.Pod, ownership) {
	var owner *objects.Pod
	live := 0
	for _, p := range pods {
		if !indexable(p) || p.DeletionTimestamp != nil {
			continue
		}
		live++
		owner = p
	}
	switch live {
	case 0:
		return nil, ownerNone
	case 1:
		return owner, ownerOne
	}
	return nil, ownerAmbiguous
}

// transformPod keeps only what kube2ra reads of a pod, in a new object so
// the decoded original (managedFields, containers, conditions...) can be
// freed. keep lists the annotation keys to retain. It is pure and
// idempotent, as client-go asks of transforms.
func transformPod(keep []string) cache.TransformFunc {
	return func(obj any) (any, error) {
		pod, ok := obj.(*objects.Pod)
		if !ok {
			return obj, nil
		}
		out := &objects.Pod{
			ObjectMeta: metav1.ObjectMeta{
				Name:              pod.Name,
				Namespace:         pod.Namespace,
				UID:               pod.UID,
				ResourceVersion:   pod.ResourceVersion,
				DeletionTimestamp: pod.DeletionTimestamp,
				Annotations:       keepAnnotations(pod.Annotations, keep),
			},
			Spec: objects.PodSpec{
				NodeName:           pod.Spec.NodeName,
				ServiceAccountName: pod.Spec.ServiceAccountName,
				HostNetwork:        pod.Spec.HostNetwork,
			},
			Status: objects.PodStatus{
				Phase: pod.Status.Phase,
			},
		}
		if len(pod.Status.PodIPs) > 0 {
			out.Status.PodIPs = make([]objects.PodIP, len(pod.Status.PodIPs))
			for i, ip := range pod.Status.PodIPs {
				out.Status.PodIPs[i] = objects.PodIP{IP: ip.IP}
			}
		} else if pod.Status.PodIP != "" {
			out.Status.PodIPs = []objects.PodIP{{IP: pod.Status.PodIP}}
		}
		return out, nil
	}
}

// transformNamespace keeps a namespace's identity and the annotations in
// keep.
func transformNamespace(keep []string) cache.TransformFunc {
	return func(obj any) (any, error) {
		ns, ok := obj.(*objects.Namespace)
		if !ok {
			return obj, nil
		}
		return &objects.Namespace{
			Meta: objects.Meta{
				Name:            ns.Name,
				UID:             ns.UID,
				ResourceVersion: ns.ResourceVersion,
				Annotations:     keepAnnotationList(ns.Annotations, keep),
			},
		}, nil
	}
}

// keepAnnotationList is keepAnnotations for the cluster-wide kinds'
// annotation lists: the entries named in keep, under keep's own key
// strings (shared by every object), in a list of exactly their number;
// nil when none.
func keepAnnotationList(in objects.Annotations, keep []string) objects.Annotations {
	n := 0
	for _, k := range keep {
		if _, ok := in.Get(k); ok {
			n++
		}
	}
	if n == 0 {
		return nil
	}
	out := make(objects.Annotations, 0, n)
	for _, k := range keep {
		if v, ok := in.Get(k); ok {
			out = append(out, objects.Annotation{Key: k, Value: v})
		}
	}
	return out
}

// keepAnnotations copies the annotations named in keep; nil when none.
func keepAnnotations(in map[string]string, keep []string) map[string]string {
	var out map[string]string
	for _, k := range keep {
		if v, ok := in[k]; ok {
			if out == nil {
				out = make(map[string]string, len(keep))
			}
			out[k] = v
		}
	}
	return out
}

// podFromObject converts a cached pod to kube2ra's Pod, sharing its
// annotations map (read only, see Pod.Annotations).
func podFromObject(p *objects.Pod) *Pod {
	// The annotations are shared, not copied: objects in an informer's
	// store are never modified (client-go's contract), the transform has
	// already cut them to the keys kube2ra reads, and Pod users only read
	// them. A copy per lookup was 5 % of the credential route's CPU.
	ann := p.Annotations
	if len(ann) == 0 {
		ann = nil
	}
	return &Pod{
		UID:            p.UID,
		Namespace:      p.Namespace,
		Name:           p.Name,
		ServiceAccount: p.Spec.ServiceAccountName,
		NodeName:       p.Spec.NodeName,
		IPs:            podIPs(p),
		Annotations:    ann,
		Terminating:    p.DeletionTimestamp != nil,
		HostNetwork:    p.Spec.HostNetwork,
	}
}
