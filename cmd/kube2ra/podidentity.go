package main

import (
	"context"
	"fmt"
	"net"
	"net/netip"

	"github.com/sirupsen/logrus"

	"github.com/kube2ra/kube2ra/iptables"
	"github.com/kube2ra/kube2ra/k8s"
	"github.com/kube2ra/kube2ra/nodeaddrs"
	"github.com/kube2ra/kube2ra/proxy"
)

// podIdentityDoor is the token door's parts: the ServiceAccount cache it
// reads roles from and the door the proxy serves.
type podIdentityDoor struct {
	// accounts caches ServiceAccounts' role annotations.
	accounts *k8s.ServiceAccounts
	// keys reads the cluster's token signing keys.
	keys *k8s.APIServerKeys
	// nodeAddrs are the node's own addresses, where host-network pods'
	// tokens are accepted from.
	nodeAddrs *nodeaddrs.Set
	// door is what the proxy serves at /v1/credentials.
	door *proxy.PodIdentity
}

// newPodIdentityDoor wires the token door (--pod-identity): tokens verified
// against the API server's OIDC keys, the caller found by the pod its token
// names among this node's pods, its role from the pod's annotation or its
// ServiceAccount's through the metadata door's resolver.
func newPodIdentityDoor(cfg *Config, kube k8s.Client, watcher *k8s.Watcher, resolver *k8s.RoleResolver, log logrus.FieldLogger) (*podIdentityDoor, error) {
	accounts, err := k8s.NewServiceAccounts(kube, cfg.IAMRoleKey)
	if err != nil {
		return nil, err
	}
	keys := k8s.NewAPIServerKeys(kube.GetPath, nil, log.WithField("component", "pod-identity"))
	verifier, err := k8s.NewTokenVerifier(k8s.TokenVerifierOptions{Keys: keys, Audience: cfg.PodIdentityAudience})
	if err != nil {
		return nil, err
	}
	auth, err := k8s.NewPodAuthenticator(verifier, watcher, accounts, cfg.Node)
	if err != nil {
		return nil, err
	}
	roles, err := k8s.NewServiceAccountRoles(resolver, accounts, cfg.IAMRoleKey)
	if err != nil {
		return nil, err
	}
	addrs := nodeaddrs.New(nodeaddrs.Options{Log: log.WithField("component", "pod-identity")})
	return &podIdentityDoor{accounts: accounts, keys: keys, nodeAddrs: addrs, door: &proxy.PodIdentity{Pods: auth, Roles: roles, NodeAddrs: addrs}}, nil
}

// start follows the node's addresses, runs the ServiceAccount informer and
// waits for it, then reads the
// signing keys once so a missing permission is reported at start (the
// door answers 503 until they can be read, it does not stop the agent).
// The informer runs until runCtx ends; the waits end with syncCtx.
func (d *podIdentityDoor) start(runCtx, syncCtx context.Context, log logrus.FieldLogger) error {
	if err := d.nodeAddrs.Start(runCtx); err != nil {
		return fmt.Errorf("the token door accepts a host-network pod's token only from the node's own addresses, and cannot read them: %w", err)
	}
	d.accounts.Start(runCtx)
	if err := d.accounts.WaitForSync(syncCtx, k8s.SyncLog{Logger: log}); err != nil {
		return fmt.Errorf("the ServiceAccount informer did not sync (may kube2ra list and watch serviceaccounts?): %w", err)
	}
	if _, err := d.keys.Keys(syncCtx); err != nil {
		log.WithError(err).Error("the token door cannot read the cluster's ServiceAccount signing keys; it answers 503 until it can")
	}
	if addrs, err := net.InterfaceAddrs(); err == nil {
		if a, ok := eksAgentAddress(addrs); ok {
			log.WithField("address", a).Warn("169.254.170.23 is an address of this node: AWS's EKS Pod Identity Agent is probably running here; kube2ra's DNAT now takes its pods' traffic. Remove the eks-pod-identity-agent add-on, or turn --pod-identity off")
		}
	}
	return nil
}

// eksAgentAddress returns the node address that betrays AWS's agent, if
// any: it listens on 169.254.170.23 and fd00:ec2::23, added to a link of
// the node.
func eksAgentAddress(addrs []net.Addr) (netip.Addr, bool) {
	for _, a := range addrs {
		p, err := netip.ParsePrefix(a.String())
		if err != nil {
			continue
		}
		if a := p.Addr().Unmap(); a == iptables.PodIdentityIPv4 || a == iptables.PodIdentityIPv6 {
			return p.Addr(), true
		}
	}
	return netip.Addr{}, false
}

// proxyDoor is the proxy's door, nil when the token door is closed.
func (d *podIdentityDoor) proxyDoor() *proxy.PodIdentity {
	if d == nil {
		return nil
	}
	return d.door
}
