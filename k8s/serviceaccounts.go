package k8s

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"strings"
	"sync"
	"time"

	"github.com/sirupsen/logrus"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/tools/cache"
	"k8s.io/utils/clock"

	"github.com/kube2ra/kube2ra/kubeapi/objects"
)

// IRSARoleKey is IRSA's ServiceAccount annotation. kube2ra reads it too, so
// a ServiceAccount set up for IRSA on EKS works unchanged on the token door.
const IRSARoleKey = "eks.amazonaws.com/role-arn"

// ServiceAccounts caches every ServiceAccount's role annotations (only
// those: a transform drops everything else). ServiceAccounts cannot be
// watched per node, so the cache is cluster-wide but small: name,
// namespace, UID and at most two annotations each.
type ServiceAccounts struct {
	// startOnce makes Start idempotent.
	startOnce sync.Once
	// running counts the informer's goroutine, for Shutdown.
	running sync.WaitGroup
	// informer is the ServiceAccount informer.
	informer cache.SharedIndexInformer
	// keys are the annotations kept, most preferred first.
	keys []string
}

// NewServiceAccounts builds the informer; call Start to run it. roleKey is
// --iam-role-key; the IRSA annotation is read after it.
func NewServiceAccounts(client Client, roleKey string) (*ServiceAccounts, error) {
	if client == nil {
		return nil, errors.New("k8s.NewServiceAccounts needs a client")
	}
	if roleKey == "" {
		roleKey = DefaultRoleKey
	}
	s := &ServiceAccounts{keys: []string{roleKey, IRSARoleKey}}
	s.informer = cache.NewSharedIndexInformerWithOptions(cache.ToListWatcherWithWatchListSemantics(&cache.ListWatch{
		ListWithContextFunc: func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) {
			return client.ListServiceAccounts(ctx, o)
		},
		WatchFuncWithContext: func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
			return client.WatchServiceAccounts(ctx, o)
		},
	}, client), &objects.ServiceAccount{}, cache.SharedIndexInformerOptions{}) // read by key only: no index
	if err := s.informer.SetTransform(transformServiceAccount(append([]string{TargetRoleKey, SessionPolicyKey}, s.keys...))); err != nil {
		return nil, fmt.Errorf("setting the ServiceAccount informer's transform: %w", err)
	}
	return s, nil
}

// transformServiceAccount keeps a ServiceAccount's identity and the
// annotations in keep.
func transformServiceAccount(keep []string) cache.TransformFunc {
	return func(obj any) (any, error) {
		sa, ok := obj.(*objects.ServiceAccount)
		if !ok {
			return obj, nil
		}
		return &objects.ServiceAccount{Meta: objects.Meta{
			Name:            sa.Name,
			Namespace:       sa.Namespace,
			UID:             sa.UID,
			ResourceVersion: sa.ResourceVersion,
			Annotations:     keepAnnotationList(sa.Annotations, keep),
		}}, nil
	}
}

// Start runs the informer until ctx ends.
func (s *ServiceAccounts) Start(ctx context.Context) {
	s.startOnce.Do(func() { s.running.Go(func() { s.informer.RunWithContext(ctx) }) })
}

// Shutdown waits for the informer to stop; cancel Start's context first.
func (s *ServiceAccounts) Shutdown() { s.running.Wait() }

// SyncLog says how WaitForSync reports a long wait; the zero value is silent.
type SyncLog struct {
	// Logger receives a warning every Interval while the sync waits.
	Logger logrus.FieldLogger
	// Interval is DefaultSyncLogInterval when zero.
	Interval time.Duration
	// Clock ticks the warnings; the real clock when nil.
	Clock clock.WithTicker
}

// WaitForSync blocks until the informer has synced or ctx ends, and says
// every SyncLog.Interval what it waits for.
func (s *ServiceAccounts) WaitForSync(ctx context.Context, sl SyncLog) error {
	clk := sl.Clock
	if clk == nil {
		clk = clock.RealClock{}
	}
	every := sl.Interval
	if every == 0 {
		every = DefaultSyncLogInterval
	}
	start := clk.Now()
	t := clk.NewTicker(every)
	defer t.Stop()
	synced := make(chan struct{})
	go func() {
		defer close(synced)
		cache.WaitForCacheSync(ctx.Done(), s.informer.HasSynced)
	}()
	for {
		select {
		case <-synced:
			if !s.informer.HasSynced() {
				return fmt.Errorf("%w: the ServiceAccount informer: %w", ErrNotSynced, ctx.Err())
			}
			return nil
		case <-t.C():
			if sl.Logger != nil {
				waited := clk.Since(start).Round(time.Second)
				sl.Logger.WithField("awaiting", "serviceaccounts").WithField("waited", waited.String()).
					Warnf("still waiting for the API server to list ServiceAccounts (%s so far), which the token door (--pod-identity) reads roles from: check that kube2ra may list and watch serviceaccounts (the chart grants it with podIdentity.enabled)", waited)
			}
		}
	}
}

// Synced reports whether the informer has synced.
func (s *ServiceAccounts) Synced() bool { return s.informer.HasSynced() }

// ServiceAccountRole returns the role a ServiceAccount's annotations name
// (--iam-role-key, else IRSA's), "" when none; ok is false when the
// ServiceAccount is not in the cache.
func (s *ServiceAccounts) ServiceAccountRole(namespace, name string) (role string, ok bool) {
	sa, ok := s.cached(namespace, name)
	if !ok {
		return "", false
	}
	for _, k := range s.keys {
		v, _ := sa.Annotations.Get(k)
		if v = strings.TrimSpace(v); v != "" {
			return v, true
		}
	}
	return "", true
}

// ServiceAccountUID returns a cached ServiceAccount's UID; ok is false
// when it is not in the cache.
func (s *ServiceAccounts) ServiceAccountUID(namespace, name string) (uid types.UID, ok bool) {
	sa, ok := s.cached(namespace, name)
	if !ok {
		return "", false
	}
	return sa.UID, true
}

// cached is the cached ServiceAccount namespace/name.
func (s *ServiceAccounts) cached(namespace, name string) (*objects.ServiceAccount, bool) {
	obj, ok, err := s.informer.GetStore().GetByKey(cache.NewObjectName(namespace, name).String())
	if err != nil || !ok {
		return nil, false
	}
	sa, ok := obj.(*objects.ServiceAccount)
	return sa, ok
}

// ServiceAccountUIDGetter is what PodAuthenticator reads; *ServiceAccounts implements it.
type ServiceAccountUIDGetter interface {
	ServiceAccountUID(namespace, name string) (uid types.UID, ok bool)
}

var _ ServiceAccountUIDGetter = (*ServiceAccounts)(nil)

// ServiceAccountTargetRole returns the target role a ServiceAccount's
// target-role annotation names, "" when none or not cached.
func (s *ServiceAccounts) ServiceAccountTargetRole(namespace, name string) string {
	return s.annotation(namespace, name, TargetRoleKey)
}

// ServiceAccountSessionPolicy returns a ServiceAccount's session policy
// annotation, "" when none or not cached.
func (s *ServiceAccounts) ServiceAccountSessionPolicy(namespace, name string) string {
	return s.annotation(namespace, name, SessionPolicyKey)
}

// annotation is a cached ServiceAccount's annotation key, trimmed.
func (s *ServiceAccounts) annotation(namespace, name, key string) string {
	if sa, ok := s.cached(namespace, name); ok {
		v, _ := sa.Annotations.Get(key)
		return strings.TrimSpace(v)
	}
	return ""
}

// ServiceAccountTargetGetter is read, when a ServiceAccountRoleGetter has
// it, for the target role and session policy of a ServiceAccount, which go
// with its role; *ServiceAccounts has it.
type ServiceAccountTargetGetter interface {
	ServiceAccountTargetRole(namespace, name string) string
	ServiceAccountSessionPolicy(namespace, name string) string
}

var _ ServiceAccountTargetGetter = (*ServiceAccounts)(nil)

// ServiceAccountRoleGetter is what ServiceAccountRoles reads; *ServiceAccounts implements it.
type ServiceAccountRoleGetter interface {
	ServiceAccountRole(namespace, name string) (role string, ok bool)
}

var _ ServiceAccountRoleGetter = (*ServiceAccounts)(nil)

// PodRoleResolver is the part of *RoleResolver the token door uses.
type PodRoleResolver interface {
	ResolveRole(ctx context.Context, pod *Pod) (Role, error)
}

var _ PodRoleResolver = (*RoleResolver)(nil)

// ServiceAccountRoles resolves the role of a token-door caller: the pod's
// role annotation when present (it wins, as on the metadata door), else
// its ServiceAccount's. The result goes through the same RoleResolver as
// the metadata door, so the default role, base ARN and the namespace's
// allowed-roles policy apply unchanged.
type ServiceAccountRoles struct {
	// resolver is the metadata door's resolver.
	resolver PodRoleResolver
	// accounts gives ServiceAccount roles.
	accounts ServiceAccountRoleGetter
	// roleKey is the pod annotation with the role (--iam-role-key).
	roleKey string
	// views memoises the pods as the resolver sees them.
	views saPodViews
}

// NewServiceAccountRoles builds the token door's resolver.
func NewServiceAccountRoles(resolver PodRoleResolver, accounts ServiceAccountRoleGetter, roleKey string) (*ServiceAccountRoles, error) {
	if resolver == nil || accounts == nil {
		return nil, errors.New("k8s.NewServiceAccountRoles needs a role resolver and a ServiceAccount source")
	}
	if roleKey == "" {
		roleKey = DefaultRoleKey
	}
	return &ServiceAccountRoles{resolver: resolver, accounts: accounts, roleKey: roleKey, views: saPodViews{byUID: make(map[types.UID]saPodView)}}, nil
}

// ResolveRole implements the proxy's RoleResolver for the token door.
func (r *ServiceAccountRoles) ResolveRole(ctx context.Context, pod *Pod) (Role, error) {
	withRole, err := r.views.withServiceAccountRole(pod, r.accounts, r.roleKey)
	if err != nil {
		return Role{}, err
	}
	return r.resolver.ResolveRole(ctx, withRole)
}

// withServiceAccountRole is pod as the resolver should see it on the token
// door: itself when it names its own role (it wins) or has no
// ServiceAccount, else a copy carrying its ServiceAccount's role as its
// role annotation (the pod's annotations are the informer's, read only).
func withServiceAccountRole(pod *Pod, accounts ServiceAccountRoleGetter, roleKey string) (*Pod, error) {
	var none saPodViews
	return none.withServiceAccountRole(pod, accounts, roleKey)
}

// maxSAPodViews bounds saPodViews (one entry per pod of this node that
// uses the token door); past it the memo starts over.
const maxSAPodViews = 1024

// saPodViews memoises withServiceAccountRole's copies: a request whose
// Pod is the same object as the last one's (the watcher hands out one Pod
// per cached pod object, and a new one for every change) and whose
// ServiceAccount values are the same gets the same read-only copy; any
// change to either builds a new one. The zero value memoises nothing.
type saPodViews struct {
	// mu guards byUID.
	mu sync.Mutex
	// byUID holds the last copy made for each pod; nil memoises nothing.
	byUID map[types.UID]saPodView
}

// saPodView is one memoised copy and what it was made from.
type saPodView struct {
	// src is the Pod the copy was made from.
	src *Pod
	// from are the ServiceAccount's values the copy carries.
	from saValues
	// pod is the copy.
	pod *Pod
}

// saValues are what a ServiceAccount gives a pod that names no role.
type saValues struct {
	// role, target and policy: its role, target role and session policy.
	role, target, policy string
}

// withServiceAccountRole is the package function, memoised when v is.
func (v *saPodViews) withServiceAccountRole(pod *Pod, accounts ServiceAccountRoleGetter, roleKey string) (*Pod, error) {
	if pod == nil {
		return nil, errors.New("k8s: ResolveRole called without a pod")
	}
	if strings.TrimSpace(pod.Annotations[roleKey]) != "" || pod.ServiceAccount == "" {
		return pod, nil
	}
	role, ok := accounts.ServiceAccountRole(pod.Namespace, pod.ServiceAccount)
	if !ok {
		// The pod exists, so its ServiceAccount did when it was admitted;
		// a cache that lacks it is behind or the account was deleted.
		// Either way its role cannot be known: deny, the SDK retries.
		return nil, fmt.Errorf("%w: ServiceAccount %s/%s of pod %s is not in the cache", ErrNotSynced, pod.Namespace, pod.ServiceAccount, pod.Key())
	}
	if role == "" {
		return pod, nil
	}
	from := saValues{role: role}
	// The ServiceAccount's target role and session policy go with its
	// role, unless the pod sets its own.
	if tg, ok := accounts.(ServiceAccountTargetGetter); ok {
		if strings.TrimSpace(pod.Annotations[TargetRoleKey]) == "" {
			from.target = tg.ServiceAccountTargetRole(pod.Namespace, pod.ServiceAccount)
		}
		if strings.TrimSpace(pod.Annotations[SessionPolicyKey]) == "" {
			from.policy = tg.ServiceAccountSessionPolicy(pod.Namespace, pod.ServiceAccount)
		}
	}
	if v.byUID != nil {
		v.mu.Lock()
		memo, ok := v.byUID[pod.UID]
		v.mu.Unlock()
		if ok && memo.src == pod && memo.from == from {
			return memo.pod, nil
		}
	}
	withRole := *pod
	withRole.Annotations = maps.Clone(pod.Annotations)
	if withRole.Annotations == nil {
		withRole.Annotations = make(map[string]string, 1)
	}
	withRole.Annotations[roleKey] = role
	if from.target != "" {
		withRole.Annotations[TargetRoleKey] = from.target
	}
	if from.policy != "" {
		withRole.Annotations[SessionPolicyKey] = from.policy
	}
	if v.byUID != nil {
		v.mu.Lock()
		if len(v.byUID) >= maxSAPodViews {
			clear(v.byUID)
		}
		v.byUID[pod.UID] = saPodView{src: pod, from: from, pod: &withRole}
		v.mu.Unlock()
	}
	return &withRole, nil
}
