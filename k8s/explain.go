package k8s

import (
	"slices"

	"github.com/kube2ra/kube2ra/kubeapi/objects"
)

// PolicyCheck is how a namespace's allowed-roles policy judges one role, as
// `kube2ra explain` shows it: read from the same compiled policy
// ResolveRole decides with.
type PolicyCheck struct {
	// Key is the namespace annotation read (--namespace-key).
	Key string
	// Format is --namespace-restriction-format.
	Format PolicyFormat
	// Present is false when the namespace has no such annotation.
	Present bool
	// Raw is the annotation's value as written.
	Raw string
	// Patterns are the patterns normalised as roles are (glob: full ARN
	// patterns; regexp: the expression matched, before anchoring).
	Patterns []string
	// Match is the index in Patterns of the first pattern allowing the
	// role; -1 when none does.
	Match int
	// Err says why the annotation cannot be used: every role it governs is
	// then denied.
	Err error
}

// CheckPolicy judges the full role ARN roleARN against ns's policy as
// ResolveRole does and says which pattern allows it. It records no Events.
func (r *RoleResolver) CheckPolicy(ns *objects.Namespace, roleARN string) PolicyCheck {
	base, baseErr := r.baseARN()
	e := r.policyFor(ns, base)
	c := PolicyCheck{Key: r.opts.Keys.Namespace, Format: r.opts.Format, Present: e.present, Raw: e.raw, Match: -1}
	switch {
	case e.err != nil:
		c.Err = withBaseErr(e.err, baseErr)
	case e.policy != nil:
		c.Patterns = slices.Clone(e.policy.patterns)
		c.Match = e.policy.match(roleARN)
	}
	return c
}
