package k8s

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/sirupsen/logrus"
	"k8s.io/apimachinery/pkg/types"

	"github.com/kube2ra/kube2ra/arn"
	"github.com/kube2ra/kube2ra/kubeapi/objects"
)

// NamespaceGetter returns a cached namespace; *Watcher implements it.
type NamespaceGetter interface {
	Namespace(name string) (*objects.Namespace, bool)
}

var _ NamespaceGetter = (*Watcher)(nil)

// NamespaceVerifier returns a namespace that is safe to decide policy on
// even while the namespace watch is broken: the cached one while the watch
// is current, else the API server's. *Watcher implements it; ResolveRole
// uses it when its NamespaceGetter does.
type NamespaceVerifier interface {
	VerifiedNamespace(ctx context.Context, name string) (ns *objects.Namespace, ok bool, err error)
}

var _ NamespaceVerifier = (*Watcher)(nil)

// namespaceLookup finds a namespace for a policy check; err means it
// cannot be known now.
type namespaceLookup func(name string) (*objects.Namespace, bool, error)

// ResolverOptions configures a RoleResolver. cmd/kube2ra fills it from flags.
type ResolverOptions struct {
	// Keys names the annotations (--iam-role-key, --iam-external-id, --namespace-key).
	Keys AnnotationKeys
	// DefaultRole is --default-role: the role of pods without the role
	// annotation; empty for none. Exempt from namespace policy.
	DefaultRole string
	// BaseRoleARN returns the base role ARN (--base-role-arn, or one the
	// credential source discovered), "" while none is known. Called per
	// resolution, so a base discovered later takes effect. Nil means none.
	BaseRoleARN func() string
	// NamespaceRestrictions is --namespace-restrictions (true by default in
	// the flags; the zero value here turns the check off, so set it).
	NamespaceRestrictions bool
	// Format is --namespace-restriction-format; PolicyGlob when empty.
	Format PolicyFormat
	// ExternalIDAllowed is false for sources without external IDs (Roles
	// Anywhere): a pod asking for one is denied with DeniedExternalID.
	ExternalIDAllowed bool
	// SessionPolicyNeedsTarget is true for sources whose first hop takes no
	// session policy (Roles Anywhere): a session policy is then sent on a
	// target hop only, and a pod without a target role is denied.
	SessionPolicyNeedsTarget bool
	// Events records RoleDenied and InvalidRolePolicy; nil records none.
	// Give it a rate-limited recorder (NewEventRecorder).
	Events Recorder
	// Logger receives denial logs; required.
	Logger logrus.FieldLogger
}

// StaticBaseARN returns a BaseRoleARN func for a fixed value.
func StaticBaseARN(arn string) func() string { return func() string { return arn } }

// RoleResolver decides which role a pod gets: its annotation, else the
// default role, checked against its namespace's policy.
type RoleResolver struct {
	// opts are the options with defaults applied.
	opts ResolverOptions
	// namespaces gives the cached namespaces.
	namespaces NamespaceGetter
	// verifier reads namespaces live while their watch is not current;
	// nil when the namespace source cannot (decided once, in NewRoleResolver).
	verifier NamespaceVerifier
	// log is the injected logger.
	log logrus.FieldLogger
	// base memoises the last parsed base role ARN.
	base atomic.Pointer[parsedBase]
	// mu guards policies.
	mu sync.RWMutex
	// policies caches each namespace's compiled policy, by namespace name.
	policies map[string]*policyEntry
	// roles memoises arn.NormalizeRole, a pure function of the name and
	// the base that every request called (parsing and re-printing the
	// ARN: most of ResolveRole's cost on the credential route).
	roles roleNames
}

// maxMemoisedRoles bounds roleNames: past it the memo starts over (a
// node's pods name a handful of roles; a flood of names costs a re-parse).
const maxMemoisedRoles = 1024

// roleNames memoises role names normalised to full ARNs.
type roleNames struct {
	// mu guards byName.
	mu sync.RWMutex
	// byName holds successful normalisations; failures are not kept.
	byName map[roleNameKey]normalizedRole
}

// normalizedRole is a role as parsed and as its printed ARN.
type normalizedRole struct {
	// arn is role.String(), printed once.
	arn string
	// role is the parsed ARN.
	role arn.Role
}

// roleNameKey is one NormalizeRole call's arguments.
type roleNameKey struct {
	// name is the role as the pod or the flag gives it.
	name string
	// base is the base role ARN it was normalised against.
	base arn.Base
}

// normalize is arn.NormalizeRole, memoised, with the printed ARN.
func (m *roleNames) normalize(name string, base arn.Base) (normalizedRole, error) {
	k := roleNameKey{name: name, base: base}
	m.mu.RLock()
	n, ok := m.byName[k]
	m.mu.RUnlock()
	if ok {
		return n, nil
	}
	role, err := arn.NormalizeRole(name, base)
	if err != nil {
		return normalizedRole{}, err
	}
	n = normalizedRole{arn: role.String(), role: role}
	m.mu.Lock()
	if m.byName == nil || len(m.byName) >= maxMemoisedRoles {
		m.byName = make(map[roleNameKey]normalizedRole)
	}
	m.byName[k] = n
	m.mu.Unlock()
	return n, nil
}

// parsedBase is a base role ARN as given and as parsed.
type parsedBase struct {
	// raw is what BaseRoleARN returned.
	raw string
	// arn is the validated base, zero when raw is empty or invalid.
	arn arn.Base
	// err says why raw is invalid.
	err error
}

// policyEntry is one namespace's compiled policy and what it was built from.
type policyEntry struct {
	// uid and resourceVersion identify the namespace object it came from.
	uid types.UID
	// resourceVersion of the namespace when compiled or last confirmed.
	resourceVersion string
	// present is false when the namespace has no policy annotation.
	present bool
	// raw is the annotation value.
	raw string
	// base is the base role ARN the patterns were normalised with.
	base arn.Base
	// policy is the compiled policy; nil when err is set or !present.
	policy *rolePolicy
	// err says why the annotation could not be used.
	err error
}

// NewRoleResolver builds a resolver reading namespaces from namespaces.
func NewRoleResolver(namespaces NamespaceGetter, opts ResolverOptions) (*RoleResolver, error) {
	if namespaces == nil {
		return nil, errors.New("k8s.NewRoleResolver needs a namespace source (the Watcher)")
	}
	if opts.Logger == nil {
		return nil, errors.New("k8s.NewRoleResolver needs a logger")
	}
	opts.Keys = opts.Keys.withDefaults()
	if opts.Format == "" {
		opts.Format = PolicyGlob
	}
	if _, err := ParsePolicyFormat(string(opts.Format)); err != nil {
		return nil, err
	}
	if opts.BaseRoleARN == nil {
		opts.BaseRoleARN = StaticBaseARN("")
	}
	r := &RoleResolver{
		opts:       opts,
		namespaces: namespaces,
		log:        opts.Logger.WithField("component", "k8s"),
		policies:   make(map[string]*policyEntry),
	}
	r.verifier, _ = namespaces.(NamespaceVerifier)
	// A bad base or default role is a configuration error: say so now.
	if raw := strings.TrimSpace(opts.BaseRoleARN()); raw != "" {
		if _, err := arn.ParseBase(raw); err != nil {
			return nil, fmt.Errorf("--base-role-arn: %w", err)
		}
	}
	if opts.DefaultRole != "" {
		if base, _ := r.baseARN(); !base.IsZero() || strings.HasPrefix(strings.TrimSpace(opts.DefaultRole), arn.Prefix) {
			if _, err := arn.NormalizeRole(opts.DefaultRole, base); err != nil {
				return nil, fmt.Errorf("--default-role: %w", err)
			}
		}
	}
	return r, nil
}

// baseARN returns the parsed base role ARN, parsing only when it changed.
func (r *RoleResolver) baseARN() (arn.Base, error) {
	raw := strings.TrimSpace(r.opts.BaseRoleARN())
	if b := r.base.Load(); b != nil && b.raw == raw {
		return b.arn, b.err
	}
	b := &parsedBase{raw: raw}
	if raw != "" {
		b.arn, b.err = arn.ParseBase(raw)
		if b.err != nil {
			b.err = fmt.Errorf("the base role ARN is invalid: %w", b.err)
		}
	}
	r.base.Store(b)
	return b.arn, b.err
}

// ResolveRole returns the role pod may have, ErrNoRole, or a *DenialError.
// Denials are recorded as Warning Events (rate-limited): RoleDenied on the
// pod and, for an unparsable policy, InvalidRolePolicy on the namespace.
// While the namespace watch is not current the policy is read from the API
// server; when that fails the error wraps ErrNotSynced.
func (r *RoleResolver) ResolveRole(ctx context.Context, pod *Pod) (Role, error) {
	lookup := r.cachedNamespace
	if r.verifier != nil {
		lookup = func(name string) (*objects.Namespace, bool, error) { return r.verifier.VerifiedNamespace(ctx, name) }
	}
	role, err := r.resolveWith(pod, lookup)
	if err != nil {
		// Declared here: errors.As moves its target to the heap, which
		// every allowed request paid for when it was declared above.
		var denial *DenialError
		if errors.As(err, &denial) {
			r.recordDenial(pod, denial)
		}
	}
	return role, err
}

// cachedNamespace is a namespaceLookup on the cache alone.
func (r *RoleResolver) cachedNamespace(name string) (*objects.Namespace, bool, error) {
	ns, ok := r.namespaces.Namespace(name)
	return ns, ok, nil
}

// resolve is ResolveRole from the cache alone and without Events: used for
// notifications and the debug page, which answer no pod.
func (r *RoleResolver) resolve(pod *Pod) (Role, error) {
	return r.resolveWith(pod, r.cachedNamespace)
}

// resolveWith resolves pod's role, reading namespaces through lookup.
func (r *RoleResolver) resolveWith(pod *Pod, lookup namespaceLookup) (Role, error) {
	if pod == nil {
		return Role{}, errors.New("k8s: ResolveRole called without a pod")
	}
	base, baseErr := r.baseARN()
	asked := strings.TrimSpace(pod.Annotations[r.opts.Keys.Role])
	externalID := strings.TrimSpace(pod.Annotations[r.opts.Keys.ExternalID])
	deny := func(reason DenialReason, role, detail string) (Role, error) {
		return Role{}, &DenialError{Reason: reason, Role: role, Namespace: pod.Namespace, Detail: detail}
	}

	var defaultARN, defaultName, defaultAccount string
	if r.opts.DefaultRole != "" {
		def, err := r.roles.normalize(r.opts.DefaultRole, base)
		if err != nil && asked == "" {
			return deny(DeniedInvalidRole, r.opts.DefaultRole, "the default role is not usable: "+withBaseErr(err, baseErr).Error()+"; fix --default-role or --base-role-arn")
		}
		if err == nil {
			defaultARN, defaultName, defaultAccount = def.arn, def.role.Name, def.role.AccountID
		}
	}

	role := Role{ExternalID: externalID}
	switch {
	case asked != "":
		own, err := r.roles.normalize(asked, base)
		if err != nil {
			return deny(DeniedInvalidRole, asked, fmt.Sprintf("annotation %s is not a usable role: %v", r.opts.Keys.Role, withBaseErr(err, baseErr)))
		}
		role.ARN, role.Name, role.AccountID = own.arn, own.role.Name, own.role.AccountID
	case defaultARN != "":
		role.ARN, role.Name, role.AccountID, role.Default = defaultARN, defaultName, defaultAccount, true
	default:
		return Role{}, fmt.Errorf("%w: pod %s has no %s annotation", ErrNoRole, pod.Key(), r.opts.Keys.Role)
	}

	// The default role is granted cluster-wide by the operator, so it is
	// exempt from namespace policy even when a pod names it explicitly.
	if r.opts.NamespaceRestrictions && role.ARN != defaultARN {
		if err := r.checkPolicy(pod, role.ARN, base, baseErr, lookup); err != nil {
			return Role{}, withHop(err, targetARNOf(pod), "first hop")
		}
	}
	if target := strings.TrimSpace(pod.Annotations[TargetRoleKey]); target != "" {
		t, err := arn.NormalizeRole(target, base)
		if err != nil {
			return deny(DeniedInvalidRole, target, fmt.Sprintf("annotation %s is not a usable role: %v", TargetRoleKey, withBaseErr(err, baseErr)))
		}
		first, _ := arn.ParseRole(role.ARN)
		if t.Partition != first.Partition {
			return deny(DeniedInvalidRole, t.String(), fmt.Sprintf("target role (second hop) is in partition %s but the first role %s is in %s: credentials cannot cross partitions; fix annotation %s", t.Partition, role.ARN, first.Partition, TargetRoleKey))
		}
		// The target is never exempt: the default role's exemption covers
		// the role the operator granted, not roles reached through it.
		if r.opts.NamespaceRestrictions {
			if err := r.checkPolicy(pod, t.String(), base, baseErr, lookup); err != nil {
				return Role{}, withHop(err, t.String(), "second hop (target role)")
			}
		}
		role.TargetARN, role.Name, role.AccountID = t.String(), t.Name, t.AccountID
	}
	if externalID != "" && !r.opts.ExternalIDAllowed {
		return deny(DeniedExternalID, role.ARN, fmt.Sprintf("annotation %s is set but the credential source (IAM Roles Anywhere) has no external ID; remove the annotation", r.opts.Keys.ExternalID))
	}
	policy, err := r.sessionPolicy(pod, lookup)
	if err != nil {
		return deny(DeniedSessionPolicy, role.ServedARN(), err.Error())
	}
	if policy != "" && role.TargetARN == "" && r.opts.SessionPolicyNeedsTarget {
		return deny(DeniedSessionPolicy, role.ARN, fmt.Sprintf("a session policy (%s on the pod, its ServiceAccount or the namespace) applies but IAM Roles Anywhere CreateSession takes none: name a target role (%s), whose AssumeRole carries it, or remove the policy", SessionPolicyKey, TargetRoleKey))
	}
	role.SessionPolicy = policy
	return role, nil
}

// sessionPolicy is the pod's session policy with its namespace's cap
// (SessionPolicy). A namespace that cannot be read is denied: its cap
// cannot be known.
func (r *RoleResolver) sessionPolicy(pod *Pod, lookup namespaceLookup) (string, error) {
	ns, ok, err := lookup(pod.Namespace)
	if err != nil {
		return "", err
	}
	if !ok {
		return "", fmt.Errorf("namespace %q was not found, so its %s cap cannot be checked; retry shortly", pod.Namespace, SessionPolicyKey)
	}
	limit, _ := ns.Annotations.Get(SessionPolicyKey)
	return SessionPolicy(pod.Annotations[SessionPolicyKey], limit)
}

// targetARNOf is the pod's target-role annotation as written, "" if none.
func targetARNOf(pod *Pod) string { return strings.TrimSpace(pod.Annotations[TargetRoleKey]) }

// withHop says in a policy denial of a chained pod which hop was refused;
// other errors and pods without a target role pass unchanged.
func withHop(err error, target, hop string) error {
	var d *DenialError
	if target == "" || !errors.As(err, &d) {
		return err
	}
	marked := *d
	marked.Detail = hop + " refused: " + d.Detail
	return &marked
}

// withBaseErr adds why the base ARN is unusable to err, when it is.
func withBaseErr(err, baseErr error) error {
	if baseErr != nil {
		return fmt.Errorf("%w (%v)", err, baseErr)
	}
	return err
}

// checkPolicy denies arn unless the namespace's policy allows it.
func (r *RoleResolver) checkPolicy(pod *Pod, roleARN string, base arn.Base, baseErr error, lookup namespaceLookup) error {
	ns, ok, err := lookup(pod.Namespace)
	if err != nil {
		return fmt.Errorf("role %s of pod %s: %w", roleARN, pod.Key(), err)
	}
	if !ok {
		return &DenialError{Reason: DeniedByNamespace, Role: roleARN, Namespace: pod.Namespace,
			Detail: fmt.Sprintf("namespace %q was not found (not in the cache yet, or gone from the API server), so its %s policy cannot be checked; retry shortly", pod.Namespace, r.opts.Keys.Namespace)}
	}
	e := r.policyFor(ns, base)
	switch {
	case e.err != nil:
		return &DenialError{Reason: DeniedInvalidPolicy, Role: roleARN, Namespace: pod.Namespace,
			Detail: fmt.Sprintf("namespace annotation %s is invalid, so no role is allowed: %v", r.opts.Keys.Namespace, withBaseErr(e.err, baseErr))}
	case !e.present:
		return &DenialError{Reason: DeniedByNamespace, Role: roleARN, Namespace: pod.Namespace,
			Detail: fmt.Sprintf("namespace has no %s annotation, so only the default role is allowed; add the role to it", r.opts.Keys.Namespace)}
	case !e.policy.allows(roleARN):
		return &DenialError{Reason: DeniedByNamespace, Role: roleARN, Namespace: pod.Namespace,
			Detail: fmt.Sprintf("namespace annotation %s (%s) %s does not allow it; add the role to it", r.opts.Keys.Namespace, r.opts.Format, e.policy)}
	}
	return nil
}

// policyFor returns the namespace's compiled policy, compiling only when
// the annotation or the base ARN changed since the last call, and keeps it
// for the next request from the namespace.
func (r *RoleResolver) policyFor(ns *objects.Namespace, base arn.Base) *policyEntry {
	e, changed := r.policyEntry(ns, base)
	if changed {
		r.mu.Lock()
		r.policies[ns.Name] = e
		r.mu.Unlock()
	}
	return e
}

// policyEntry returns the namespace's policy: the kept entry while it
// still describes ns and base, otherwise a new one (changed is then true).
func (r *RoleResolver) policyEntry(ns *objects.Namespace, base arn.Base) (e *policyEntry, changed bool) {
	r.mu.RLock()
	e = r.policies[ns.Name]
	r.mu.RUnlock()
	if e != nil && e.uid == ns.UID && e.resourceVersion == ns.ResourceVersion && e.base == base {
		return e, false
	}
	raw, present := ns.Annotations.Get(r.opts.Keys.Namespace)
	if e != nil && e.present == present && e.raw == raw && e.base == base {
		// Same policy under a new resourceVersion (a label changed, say).
		same := *e
		same.uid, same.resourceVersion = ns.UID, ns.ResourceVersion
		return &same, true
	}
	e = &policyEntry{uid: ns.UID, resourceVersion: ns.ResourceVersion, present: present, raw: raw, base: base}
	if present {
		e.policy, e.err = compilePolicy(raw, base, r.opts.Format)
	}
	return e, true
}

// NamespaceChanged checks a namespace's policy when the namespace changes
// and records InvalidRolePolicy when it cannot be parsed. The RoleNotifier
// calls it from the namespace informer. It refreshes the kept policy of a
// namespace whose pods asked this agent before and keeps none for the
// others: the agent sees every namespace of the cluster but answers only
// its node's pods, and a kept policy costs about 370 bytes (2,000
// namespaces: 0.75 MB of live heap, about 1 MB resident at the agent's GOGC).
func (r *RoleResolver) NamespaceChanged(ns *objects.Namespace) {
	base, _ := r.baseARN()
	e, changed := r.policyEntry(ns, base)
	if changed {
		r.mu.Lock()
		if _, kept := r.policies[ns.Name]; kept {
			r.policies[ns.Name] = e
		}
		r.mu.Unlock()
	}
	if e.err != nil {
		r.log.WithFields(logrus.Fields{"namespace": ns.Name}).WithError(e.err).Warn("namespace role policy is invalid; its pods get no role but the default")
		r.event(namespaceRef(ns), ReasonInvalidRolePolicy, e.err.Error())
	}
}

// NamespaceDeleted forgets a namespace's compiled policy.
func (r *RoleResolver) NamespaceDeleted(name string) {
	r.mu.Lock()
	delete(r.policies, name)
	r.mu.Unlock()
}

// recordDenial logs a denial and records its Events.
func (r *RoleResolver) recordDenial(pod *Pod, d *DenialError) {
	r.log.WithFields(logrus.Fields{"pod": pod.Key(), "namespace": pod.Namespace, "role": d.Role, "reason": d.Reason}).Warn(d.Detail)
	r.event(podRef(pod), ReasonRoleDenied, fmt.Sprintf("role %s denied in namespace %s: %s", d.Role, d.Namespace, d.Detail))
	if d.Reason == DeniedInvalidPolicy {
		if ns, ok := r.namespaces.Namespace(pod.Namespace); ok {
			r.event(namespaceRef(ns), ReasonInvalidRolePolicy, d.Detail)
		}
	}
}

// event records a Warning Event when a recorder is configured.
func (r *RoleResolver) event(ref *objects.ObjectReference, reason, message string) {
	if r.opts.Events != nil {
		r.opts.Events.Event(ref, objects.EventTypeWarning, reason, message)
	}
}
