package k8s

import (
	"context"
	"errors"
	"fmt"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/client-go/tools/cache"
	"k8s.io/utils/clock"

	"github.com/kube2ra/kube2ra/kubeapi/objects"
)

// BoundPod returns the live pod of this node that ref names, by
// namespace, name and UID: the pod a ServiceAccount token is bound to.
// Unlike FindPod it does not care about IPs, so host-network pods are
// found, and a terminating pod is still itself (its token cannot be
// reused by a successor, as an IP can). A pod that is missing, finished,
// on another node or replaced by a namesake is waited for up to
// LookupTimeout (the informer may not have seen it yet), then fails with
// ErrPodNotFound. While the pod watch is not current the pod is checked
// with a live GET; a failed check fails with ErrNotSynced.
func (w *Watcher) BoundPod(ctx context.Context, ref BoundPodRef) (*Pod, error) {
	if err := w.waitSynced(ctx); err != nil {
		return nil, err
	}
	key := cache.NewObjectName(ref.Namespace, ref.Name).String()
	var timeout clock.Timer
	for {
		changed := w.changes()
		if pod := w.boundPod(key, ref); pod != nil {
			if timeout != nil {
				timeout.Stop()
			}
			if w.podTracker.isCurrent() {
				return w.views.of(pod), nil
			}
			return w.verifyBoundPod(ctx, ref)
		}
		if timeout == nil {
			timeout = w.clock.NewTimer(w.opts.LookupTimeout)
			defer timeout.Stop()
		}
		select {
		case <-changed:
		case <-timeout.C():
			if !w.podTracker.isCurrent() {
				return nil, fmt.Errorf("%w: pod %s is not in the cache of node %q and the pod watch is not current (%s); retry shortly",
					ErrNotSynced, ref, w.opts.NodeName, w.podTracker.notCurrentReason())
			}
			return nil, fmt.Errorf("%w: pod %s is not a live pod of node %q (deleted, finished, replaced or on another node)", ErrPodNotFound, ref, w.opts.NodeName)
		case <-ctx.Done():
			return nil, fmt.Errorf("%w: lookup of pod %s ended early: %w", ErrPodNotFound, ref, ctx.Err())
		}
	}
}

// boundPod is the cached pod under key if it is ref's and live on this node.
func (w *Watcher) boundPod(key string, ref BoundPodRef) *objects.Pod {
	obj, ok, err := w.pods.GetStore().GetByKey(key)
	if err != nil || !ok {
		return nil
	}
	pod, ok := obj.(*objects.Pod)
	if !ok || w.boundMismatch(pod, ref) != "" {
		return nil
	}
	return pod
}

// boundMismatch says why pod is not ref's live pod on this node, or "".
func (w *Watcher) boundMismatch(pod *objects.Pod, ref BoundPodRef) string {
	switch {
	case pod.UID != ref.UID:
		return fmt.Sprintf("was replaced (UID %s, token %s)", pod.UID, ref.UID)
	case pod.Spec.NodeName != w.opts.NodeName:
		return fmt.Sprintf("runs on node %q", pod.Spec.NodeName)
	case pod.Status.Phase == objects.PodSucceeded || pod.Status.Phase == objects.PodFailed:
		return fmt.Sprintf("has finished (phase %s)", pod.Status.Phase)
	}
	return ""
}

// verifyBoundPod asks the API server whether ref is still a live pod of
// this node.
func (w *Watcher) verifyBoundPod(ctx context.Context, ref BoundPodRef) (*Pod, error) {
	return w.podVerifier.do(ctx, "token "+string(ref.UID), func(ctx context.Context) (*Pod, error) {
		live, err := w.client.GetPod(ctx, ref.Namespace, ref.Name)
		why := func() string {
			return fmt.Sprintf("the pod watch of node %q is not current (%s)", w.opts.NodeName, w.podTracker.notCurrentReason())
		}
		switch {
		case apierrors.IsNotFound(err):
			w.metrics.verifications.WithLabelValues(resourcePods, verifyGone).Inc()
			return nil, fmt.Errorf("%w: %s and pod %s no longer exists", ErrPodNotFound, why(), ref)
		case err != nil:
			w.metrics.verifications.WithLabelValues(resourcePods, verifyError).Inc()
			return nil, fmt.Errorf("%w: %s and checking pod %s with the API server failed: %w", ErrNotSynced, why(), ref, err)
		}
		if mismatch := w.boundMismatch(live, ref); mismatch != "" {
			w.metrics.verifications.WithLabelValues(resourcePods, verifyMismatch).Inc()
			return nil, fmt.Errorf("%w: %s and pod %s %s", ErrPodNotFound, why(), ref, mismatch)
		}
		w.metrics.verifications.WithLabelValues(resourcePods, verifyConfirmed).Inc()
		slim, err := trim(w.podTransform, live, "pod "+ref.String())
		if err != nil {
			return nil, err
		}
		return podFromObject(slim), nil
	})
}

// BoundPodFinder finds the live pod of this node a token names; *Watcher
// implements it.
type BoundPodFinder interface {
	BoundPod(ctx context.Context, ref BoundPodRef) (*Pod, error)
}

var _ BoundPodFinder = (*Watcher)(nil)

// PodAuthenticator turns a projected ServiceAccount token into the live
// pod of this node that holds it: the caller of the token door, whatever
// its source address.
type PodAuthenticator struct {
	// tokens verifies the token.
	tokens *TokenVerifier
	// pods finds the token's pod.
	pods BoundPodFinder
	// accounts gives the UIDs of the node's pods' ServiceAccounts.
	accounts ServiceAccountUIDGetter
	// node is this node's name.
	node string
}

// NewPodAuthenticator builds an authenticator for node.
func NewPodAuthenticator(tokens *TokenVerifier, pods BoundPodFinder, accounts ServiceAccountUIDGetter, node string) (*PodAuthenticator, error) {
	if tokens == nil || pods == nil || accounts == nil || node == "" {
		return nil, errors.New("k8s.NewPodAuthenticator needs a token verifier, a pod finder, the ServiceAccount cache and the node name")
	}
	return &PodAuthenticator{tokens: tokens, pods: pods, accounts: accounts, node: node}, nil
}

// AuthenticatePod verifies token and returns its pod. It fails with a
// *TokenError (a refused token or a pod not live on this node), an error
// wrapping ErrTokenKeys or ErrNotSynced (cannot be judged now), or
// another error.
func (a *PodAuthenticator) AuthenticatePod(ctx context.Context, token string) (*Pod, error) {
	claims, err := a.tokens.Verify(ctx, token)
	if err != nil {
		return nil, err
	}
	if claims.Node != "" && claims.Node != a.node {
		return nil, reject(TokenPodNotHere, "the token was issued to pod %s on node %q, not this node %q", claims.Pod, claims.Node, a.node)
	}
	pod, err := a.pods.BoundPod(ctx, claims.Pod)
	switch {
	case errors.Is(err, ErrPodNotFound):
		return nil, &TokenError{Reason: TokenPodNotHere, Detail: err.Error()}
	case err != nil:
		return nil, err
	case pod.ServiceAccount != claims.ServiceAccount:
		// The API server binds a pod's tokens to its own ServiceAccount;
		// a disagreement means the claims or the cache are wrong.
		return nil, reject(TokenPodNotHere, "pod %s runs as ServiceAccount %q, the token names %q", claims.Pod, pod.ServiceAccount, claims.ServiceAccount)
	}
	// As the API server's own authenticator: a token outlives neither its
	// ServiceAccount nor the account's UID, so a namesake created since
	// (another role, perhaps) is not the token's.
	uid, ok := a.accounts.ServiceAccountUID(claims.Pod.Namespace, claims.ServiceAccount)
	switch {
	case !ok:
		return nil, fmt.Errorf("%w: ServiceAccount %s/%s of pod %s is not in the cache", ErrNotSynced, claims.Pod.Namespace, claims.ServiceAccount, claims.Pod)
	case uid != claims.ServiceAccountUID:
		return nil, reject(TokenServiceAccountReplaced, "the token was issued for ServiceAccount %s/%s with UID %s, which was deleted (that name now has UID %s); the pod needs a new token, so recreate it",
			claims.Pod.Namespace, claims.ServiceAccount, claims.ServiceAccountUID, uid)
	}
	return pod, nil
}
