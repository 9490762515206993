package credentials

import (
	"crypto/sha256"
	"encoding/hex"
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
	if exact && len(clean) >= minSessionNameLen && len(clean) <= maxSessionNameLen {
		return clean
	}
	sum := sha256.Sum256([]byte(namespace + "/" + pod))
	suffix := hex.EncodeToString(sum[:])[:sessionHashLen]
	// clean is ASCII, so cutting bytes cuts characters.
	if keep := maxSessionNameLen - 1 - sessionHashLen; len(clean) > keep {
		clean = clean[:keep]
	}
	return clean + string(sessionHashSep) + suffix
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
		v := sanitize(t.Value, isTagRune)
		if utf8.RuneCountInString(v) > maxTagValueLen {
			v = string([]rune(v)[:maxTagValueLen])
		}
		if v == "" {
			continue
		}
		tags = append(tags, Tag{Key: t.Key, Value: v})
	}
	sort.Slice(tags, func(i, j int) bool { return tags[i].Key < tags[j].Key })
	return tags
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
