package credentials

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"sort"
	"strings"
	"unicode"
	"unicode/utf8"
)

const (
	// maxSessionNameLen and minSessionNameLen bound RoleSessionName.
	maxSessionNameLen = 64
	minSessionNameLen = 2
	// sessionHashLen is how many hex digits of SHA-256 end a shortened or
	// altered session name: 48 bits, so pods on a node do not collide.
	sessionHashLen = 12
	// sessionHashSep separates the hash. It is never part of an unaltered
	// name, so an altered name cannot equal another pod's unaltered one.
	sessionHashSep = '_'
	// maxTagValueLen is the most characters STS takes in a tag value.
	maxTagValueLen = 256

	// Session tag keys, for ABAC policies (aws:PrincipalTag/...).
	TagNamespace      = "kubernetes-namespace"
	TagPodName        = "kubernetes-pod-name"
	TagServiceAccount = "kubernetes-service-account"
	TagNode           = "kubernetes-node"
)

// SessionName is the RoleSessionName for a pod: "namespace.pod" when that
// is a valid name as it stands. Otherwise (too long, too short, characters
// outside [\w+=,.@-], or a '.' or '_' in the namespace or a '_' in the pod
// that could make two pods read alike) it is the sanitised name cut to
// leave room for '_' and a hash of the exact namespace and pod, so distinct
// pods get distinct names.
func SessionName(namespace, pod string) string {
	raw := namespace + "." + pod
	clean := sanitize(raw, isSessionNameRune)
	exact := clean == raw && !strings.ContainsRune(namespace, '.') && !strings.ContainsRune(raw, sessionHashSep)
	return fitSessionName(clean, exact, namespace+"/"+pod)
}

// NodeSessionName is the RoleSessionName for every pod of a node: the node's
// name when it is a valid name as it stands (Kubernetes node names are DNS
// subdomains, so this is the common case), else the sanitised name cut to
// leave room for '_' and a hash of the exact name.
func NodeSessionName(node string) string {
	clean := sanitize(node, isSessionNameRune)
	return fitSessionName(clean, clean == node && !strings.ContainsRune(node, sessionHashSep), node)
}

// fitSessionName returns clean when exact and within RoleSessionName's
// length bounds; otherwise clean cut short, '_' and a hash of identity.
func fitSessionName(clean string, exact bool, identity string) string {
	if exact && len(clean) >= minSessionNameLen && len(clean) <= maxSessionNameLen {
		return clean
	}
	sum := sha256.Sum256([]byte(identity))
	suffix := hex.EncodeToString(sum[:])[:sessionHashLen]
	// clean is ASCII, so cutting bytes cuts characters.
	if keep := maxSessionNameLen - 1 - sessionHashLen; len(clean) > keep {
		clean = clean[:keep]
	}
	return clean + string(sessionHashSep) + suffix
}

// SessionNaming is what a pod's role session is named after
// (--session-name). The name is part of the cache key (Request.SessionName),
// so it also decides which pods share a session: with SessionNamingPod every
// pod has its own, with SessionNamingNode and SessionNamingNone the pods of
// a node that use the same role share one, which is what keeps upstream
// calls per node proportional to roles instead of pods.
type SessionNaming string

const (
	// SessionNamingNode names sessions after the node (NodeSessionName): one
	// session per (node, role), traceable in CloudTrail to the node; the
	// agent's log ties each access key ID to the pods it was served to.
	SessionNamingNode SessionNaming = "node"
	// SessionNamingPod names sessions namespace.pod (SessionName): one
	// session per pod, traceable to the pod, one upstream call per pod.
	SessionNamingPod SessionNaming = "pod"
	// SessionNamingNone sends no name: Roles Anywhere then names the session
	// after the certificate's serial. STS cannot do without one.
	SessionNamingNone SessionNaming = "none"
)

// ParseSessionNaming reads a --session-name value.
func ParseSessionNaming(s string) (SessionNaming, error) {
	switch n := SessionNaming(s); n {
	case SessionNamingNode, SessionNamingPod, SessionNamingNone:
		return n, nil
	}
	return "", fmt.Errorf("session naming %q is unknown: use node (one session per node and role), pod (one per pod) or none", s)
}

// SessionNameFor is the session name of the pod namespace/pod on node;
// empty for SessionNamingNone.
func (n SessionNaming) SessionNameFor(namespace, pod, node string) string {
	switch n {
	case SessionNamingNode:
		return NodeSessionName(node)
	case SessionNamingPod:
		return SessionName(namespace, pod)
	}
	return ""
}

// SessionTags are the session tags for a pod, sorted by key, values
// sanitised to what STS accepts and cut to 256 characters. Empty values are
// left out.
func SessionTags(namespace, pod, serviceAccount, node string) []Tag {
	tags := make([]Tag, 0, 4)
	for _, t := range []Tag{
		{TagNamespace, namespace},
		{TagPodName, pod},
		{TagServiceAccount, serviceAccount},
		{TagNode, node},
	} {
		v := cleanTagValue(t.Value)
		if v == "" {
			continue
		}
		tags = append(tags, Tag{Key: t.Key, Value: v})
	}
	sort.Slice(tags, func(i, j int) bool { return tags[i].Key < tags[j].Key })
	return tags
}

// cleanTagValue is v sanitised to what STS accepts and cut to 256 characters.
func cleanTagValue(v string) string {
	v = sanitize(v, isTagRune)
	if utf8.RuneCountInString(v) > maxTagValueLen {
		v = string([]rune(v)[:maxTagValueLen])
	}
	return v
}

// sanitize replaces every rune that ok rejects with '-'.
func sanitize(s string, ok func(rune) bool) string {
	clean := true
	for _, r := range s {
		if !ok(r) {
			clean = false
			break
		}
	}
	if clean {
		return s
	}
	return strings.Map(func(r rune) rune {
		if ok(r) {
			return r
		}
		return '-'
	}, s)
}

// isSessionNameRune is STS's [\w+=,.@-] for RoleSessionName (ASCII \w).
func isSessionNameRune(r rune) bool {
	switch {
	case 'a' <= r && r <= 'z', 'A' <= r && r <= 'Z', '0' <= r && r <= '9':
		return true
	}
	return strings.ContainsRune("_+=,.@-", r)
}

// isTagRune is STS's [\p{L}\p{Z}\p{N}_.:/=+\-@] for tag values.
func isTagRune(r rune) bool {
	if unicode.IsLetter(r) || unicode.Is(unicode.Z, r) || unicode.IsNumber(r) {
		return true
	}
	return strings.ContainsRune("_.:/=+-@", r)
}

// TagMode is --session-tags: which session tags a pod's session carries.
type TagMode string

const (
	// TagsOff sends no session tags.
	TagsOff TagMode = "off"
	// TagsKube2ra sends kube2ra's four kubernetes-* tags (SessionTags).
	TagsKube2ra TagMode = "kube2ra"
	// TagsEKS sends EKS Pod Identity's six tags with their meanings
	// beside kube2ra's, so ABAC policies written for EKS work unchanged.
	TagsEKS TagMode = "eks"
)

// EKS Pod Identity's session tag keys beyond the ones kube2ra shares with
// it (kubernetes-namespace, kubernetes-service-account, kubernetes-pod-name).
const (
	TagEKSClusterARN  = "eks-cluster-arn"
	TagEKSClusterName = "eks-cluster-name"
	TagPodUID         = "kubernetes-pod-uid"
)

// ParseTagMode reads a --session-tags value; true and false are the
// flag's old boolean spellings of kube2ra and off.
func ParseTagMode(s string) (TagMode, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "", "false", "off":
		return TagsOff, nil
	case "true", "kube2ra":
		return TagsKube2ra, nil
	case "eks":
		return TagsEKS, nil
	}
	return "", fmt.Errorf("session tag mode %q is unknown: use off, kube2ra (kubernetes-namespace, -pod-name, -service-account, -node) or eks (those and EKS Pod Identity's eks-cluster-arn, eks-cluster-name, kubernetes-pod-uid)", s)
}

// PodTags names what a pod's session tags say.
type PodTags struct {
	// Namespace, Pod, PodUID, ServiceAccount and Node are the pod's.
	Namespace, Pod, PodUID, ServiceAccount, Node string
	// ClusterName and ClusterARN are --cluster-name and --cluster-arn.
	ClusterName, ClusterARN string
}

// Tags are the session tags of mode for p, sorted by key; nil when off.
// Empty values are left out (an unset --cluster-arn, say), so a policy
// conditioned on a missing tag denies rather than matching "".
func (m TagMode) Tags(p PodTags) []Tag {
	switch m {
	case TagsKube2ra:
		return SessionTags(p.Namespace, p.Pod, p.ServiceAccount, p.Node)
	case TagsEKS:
		tags := SessionTags(p.Namespace, p.Pod, p.ServiceAccount, p.Node)
		for _, t := range []Tag{{TagEKSClusterARN, p.ClusterARN}, {TagEKSClusterName, p.ClusterName}, {TagPodUID, p.PodUID}} {
			if v := cleanTagValue(t.Value); v != "" {
				tags = append(tags, Tag{Key: t.Key, Value: v})
			}
		}
		sort.Slice(tags, func(i, j int) bool { return tags[i].Key < tags[j].Key })
		return tags
	}
	return nil
}

// TargetExternalID is the external ID of a target hop when session tags
// are off, as EKS Pod Identity sends it:
// region/account-id/cluster-name/namespace/service-account-name, with the
// cluster's region and account. A target role's trust policy can pin
// exactly which service account of which cluster may assume it.
func TargetExternalID(region, account, cluster, namespace, serviceAccount string) string {
	return region + "/" + account + "/" + cluster + "/" + namespace + "/" + serviceAccount
}
