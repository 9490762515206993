package proxy

import (
	"fmt"
	"path"
	"strings"
)

// DefaultAllowPaths are the metadata paths a pod may read from the upstream:
// what SDKs and common tools ask for (region and zone, instance ID and type,
// local and public addresses, network layout, block devices (the EBS CSI
// node driver), security groups, partition and domain, spot, Auto Scaling
// and maintenance notices) and nothing that identifies or authenticates the
// node to a third party. Not here, on purpose: user-data (often holds secrets),
// identity-credentials/* (the node's own credentials), the signed identity
// documents pkcs7/signature/rsa2048 (let a pod impersonate the node to
// services that trust them), public-keys, tags (may hold secrets).
//
// Patterns are relative to the version. A segment is matched with path.Match
// ("*" never crosses "/"); a final "**" matches the named directory itself
// and everything below it.
var DefaultAllowPaths = []string{
	"meta-data/ami-id",
	"meta-data/ami-launch-index",
	"meta-data/autoscaling/**",
	"meta-data/block-device-mapping/**",
	"meta-data/hostname",
	"meta-data/instance-id",
	"meta-data/instance-life-cycle",
	"meta-data/instance-type",
	"meta-data/ipv6",
	"meta-data/local-hostname",
	"meta-data/local-ipv4",
	"meta-data/mac",
	"meta-data/public-hostname",
	"meta-data/public-ipv4",
	"meta-data/reservation-id",
	"meta-data/security-groups",
	"meta-data/placement/**",
	"meta-data/network/**",
	"meta-data/services/**",
	"meta-data/spot/**",
	"meta-data/events/**",
	"dynamic/instance-identity/document",
}

// blockedPrefixes are never passed through, whatever the patterns say: the
// node's credentials live there (kube2ra answers iam/* itself, the extended
// credentials included) and the token route is answered by kube2ra. They
// are compared in any letter case, so no spelling of them reaches the
// upstream; they are written in lower case.
var blockedPrefixes = [][]string{
	{"meta-data", "iam"},
	{"meta-data", "identity-credentials"},
	{"api"},
}

// allowlist decides which version-relative paths are passed through.
type allowlist struct {
	// patterns are the compiled patterns, one slice of segments each.
	patterns [][]string
}

// ValidateAllowPaths checks --metadata-allow-path patterns as the proxy
// will compile them, so a bad one stops the agent at flag validation.
func ValidateAllowPaths(patterns []string) error {
	_, err := newAllowlist(patterns)
	return err
}

// newAllowlist compiles patterns such as "meta-data/tags/instance/**" and
// refuses any that would match a path that is never passed through, in any
// letter case: such a pattern says the operator expects something kube2ra
// will never do. A leading "/" and a leading "latest/" are tolerated.
func newAllowlist(patterns []string) (*allowlist, error) {
	a, err := compileAllowlist(patterns)
	if err != nil {
		return nil, err
	}
	for i, p := range a.patterns {
		if b := blockedMatch(p); b != nil {
			return nil, fmt.Errorf("metadata allow path %q would match %s/... (in some letter case), which is never passed through: the node's own credentials and the token route live there; narrow the pattern so no segment can match %q, e.g. meta-data/tags/instance/**",
				patterns[i], strings.Join(b, "/"), b[len(b)-1])
		}
	}
	return a, nil
}

// compileAllowlist checks and compiles patterns, without the blocked-path
// check (newAllowlist adds it; tests use this to prove the request-time lock).
func compileAllowlist(patterns []string) (*allowlist, error) {
	a := &allowlist{}
	for _, p := range patterns {
		orig := p
		p = strings.TrimPrefix(p, "/")
		p = strings.TrimPrefix(p, "latest/")
		p = strings.TrimSuffix(p, "/")
		if p == "" {
			return nil, fmt.Errorf("metadata allow path %q is empty; give a path relative to the version such as meta-data/tags/instance/**", orig)
		}
		if strings.Contains(p, "..") || strings.Contains(p, `\`) {
			// The path gate refuses both in requests, so such a pattern
			// could only ever match something the gate lets through by mistake.
			return nil, fmt.Errorf("metadata allow path %q contains \"..\" or a backslash; write a canonical path such as meta-data/tags/instance/**", orig)
		}
		segs := strings.Split(p, "/")
		for i, s := range segs {
			if s == "" || s == "." || s == ".." {
				return nil, fmt.Errorf("metadata allow path %q has an empty or dot segment; write it without empty, dot or dot-dot segments", orig)
			}
			if s == "**" {
				if i != len(segs)-1 {
					return nil, fmt.Errorf("metadata allow path %q uses ** before the last segment; ** is only allowed at the end", orig)
				}
				continue
			}
			if strings.ContainsAny(s, "[]") {
				// With only * and ? a pattern's reach in any letter case is
				// its lower-case reach, which blockedMatch can decide.
				return nil, fmt.Errorf("metadata allow path %q uses a character class in segment %q; use * and ? only (IMDS names are letters, digits and -_.:)", orig, s)
			}
			if _, err := path.Match(s, ""); err != nil {
				return nil, fmt.Errorf("metadata allow path %q has a bad pattern in segment %q (path.Match syntax): %w", orig, s, err)
			}
		}
		a.patterns = append(a.patterns, segs)
	}
	return a, nil
}

// blocked reports whether segs lies under a path that is never passed
// through, or is not a plain path (the gate refuses those already; this is
// the second lock).
func blocked(segs []string) bool {
	for _, s := range segs {
		if s == "" || s[0] == '.' {
			return true
		}
	}
	for _, b := range blockedPrefixes {
		if len(segs) >= len(b) && segsEqualFold(segs[:len(b)], b) {
			return true
		}
	}
	return false
}

// segsEqualFold compares segments in any letter case: IMDS names are
// ASCII, and a server that folds case must not be handed IAM/ for iam/.
func segsEqualFold(a, b []string) bool {
	for i := range a {
		if !strings.EqualFold(a[i], b[i]) {
			return false
		}
	}
	return true
}

// blockedMatch returns the blocked prefix that compiled pattern p could
// match a path under, in some letter case, or nil. Patterns hold only *,
// ? and escapes-free literals (compileAllowlist), so matching the lower-cased
// pattern against the lower-case prefix decides it.
func blockedMatch(p []string) []string {
	fixed, open := p, false
	if p[len(p)-1] == "**" {
		fixed, open = p[:len(p)-1], true
	}
	for _, b := range blockedPrefixes {
		if len(fixed) < len(b) && !open {
			continue // the pattern ends above b
		}
		n := min(len(fixed), len(b))
		hit := true
		for i := 0; i < n && hit; i++ {
			hit, _ = path.Match(strings.ToLower(fixed[i]), b[i])
		}
		if hit {
			return b
		}
	}
	return nil
}

// allows reports whether segs may be passed through as it is.
func (a *allowlist) allows(segs []string) bool {
	if len(segs) == 0 || blocked(segs) {
		return false
	}
	for _, p := range a.patterns {
		if matchPattern(p, segs) {
			return true
		}
	}
	return false
}

// isAncestor reports whether segs is a directory above an allowed path, so
// its listing may be shown after filtering.
func (a *allowlist) isAncestor(segs []string) bool {
	if blocked(segs) {
		return false
	}
	for _, p := range a.patterns {
		fixed := p
		if p[len(p)-1] == "**" {
			fixed = p[:len(p)-1]
		}
		if len(segs) >= len(fixed) {
			continue
		}
		if matchSegs(fixed[:len(segs)], segs) {
			return true
		}
	}
	return false
}

// matchPattern matches segs against one compiled pattern.
func matchPattern(p, segs []string) bool {
	if p[len(p)-1] == "**" {
		fixed := p[:len(p)-1]
		return len(segs) >= len(fixed) && matchSegs(fixed, segs[:len(fixed)])
	}
	return len(p) == len(segs) && matchSegs(p, segs)
}

func matchSegs(p, segs []string) bool {
	for i := range p {
		if ok, _ := path.Match(p[i], segs[i]); !ok {
			return false
		}
	}
	return true
}

// filterListing keeps the entries of the directory listing body (one name a
// line, directories ending in "/") that are allowed or lead to something
// allowed. dir is the listing's version-relative path.
func (a *allowlist) filterListing(dir []string, body string) []string {
	var keep []string
	child := make([]string, len(dir)+1)
	copy(child, dir)
	for _, line := range strings.Split(body, "\n") {
		line = strings.TrimSuffix(line, "\r")
		name := strings.TrimSuffix(line, "/")
		if name == "" || name == "." || name == ".." {
			continue
		}
		if _, status, _ := checkPath("/latest/" + name); status != 0 || strings.Contains(name, "/") {
			continue
		}
		child[len(dir)] = name
		if a.allows(child) || a.isAncestor(child) {
			keep = append(keep, line)
		}
	}
	return keep
}
