package k8s

import (
	"net/netip"
	"slices"

	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/cache"

	"github.com/kube2ra/kube2ra/kubeapi/objects"
)

// SandboxClaim is one pod sandbox's network as the node's container runtime
// recorded it (package cniresults): the pod it was made for and the
// addresses it got, known before the kubelet reports them.
type SandboxClaim struct {
	// Namespace, Name and UID are the pod's (the runtime's K8S_POD_* CNI
	// arguments).
	Namespace, Name string
	UID             types.UID
	// SandboxID is the runtime's sandbox ID.
	SandboxID string
	// IPs are the addresses the network gave the sandbox.
	IPs []netip.Addr
}

// SandboxIPs is the node's record of which sandbox holds which address.
type SandboxIPs interface {
	// Claims returns the sandboxes whose network holds ip.
	Claims(ip netip.Addr) []SandboxClaim
	// Changes returns a channel closed at the next change.
	Changes() <-chan struct{}
}

// sandboxOwner is the pod a sandbox record gives ip to, for an address no
// live pod holds in the API: exactly one record of the address names a pod
// in the cache on this node with the same UID, live, not host-network, and
// without addresses in its status yet. Records of pods the cache does not
// hold (gone, or another UID: an earlier pod of that name) are stale
// sandboxes a runtime did not clean up and are skipped; a second record
// naming a live pod makes the address nobody's. Once the kubelet reports a
// pod's addresses the API decides alone. A record can delay an answer (the
// lookup then waits for the API, as without records) but never widen one.
//
// A pod being deleted keeps ip while the node's only record of the address
// is its own sandbox's and its status in the API has the address too. The
// runtime deletes a sandbox's record when it tears the sandbox's network
// down, after the pod's containers have stopped, and only then can the
// address go to another pod, whose own sandbox is recorded before its
// containers start; so while that one record stands, a request from the
// address is the terminating pod's (a preStop hook's aws call, an SDK
// refresh while draining). Any second record, or none, leaves the address
// nobody's.
func (w *Watcher) sandboxOwner(ip netip.Addr) *Pod {
	if w.opts.Sandboxes == nil {
		return nil
	}
	claims := w.opts.Sandboxes.Claims(ip)
	var owner *Pod
	var draining *objects.Pod // the one record's pod, when it is being deleted
	for _, c := range claims {
		p := w.claimedPod(c)
		switch {
		case p == nil:
		case p.DeletionTimestamp != nil:
			if len(claims) == 1 && slices.Contains(podIPs(p), normalizeIP(ip)) {
				draining = p
			}
		case len(podIPs(p)) == 0:
			if owner != nil {
				return nil
			}
			owner = podFromObject(p)
			owner.IPs = c.IPs
		}
	}
	if owner == nil && draining != nil {
		return podFromObject(draining)
	}
	return owner
}

// claimedPod is the pod a record names when it is in the cache on this
// node with the record's UID and not host-network or finished; nil
// otherwise.
func (w *Watcher) claimedPod(c SandboxClaim) *objects.Pod {
	obj, ok, err := w.pods.GetStore().GetByKey(cache.NewObjectName(c.Namespace, c.Name).String())
	if err != nil || !ok {
		return nil
	}
	p, ok := obj.(*objects.Pod)
	if !ok || p.UID != c.UID || p.Spec.NodeName != w.opts.NodeName || !indexable(p) {
		return nil
	}
	return p
}
