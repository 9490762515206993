package k8s

import (
	"fmt"
	"strings"
)

// rolePartitions are the AWS partitions whose IAM role ARNs kube2ra accepts.
// A typo such as "arn:aws-us-gov-west:..." is refused rather than sent to STS.
var rolePartitions = map[string]bool{
	"aws":        true,
	"aws-cn":     true,
	"aws-us-gov": true,
	"aws-iso":    true,
	"aws-iso-b":  true,
	"aws-iso-e":  true,
	"aws-iso-f":  true,
	"aws-eusc":   true,
}

const (
	// arnPrefix starts every ARN.
	arnPrefix = "arn:"
	// roleResourcePrefix starts the resource part of an IAM role ARN.
	roleResourcePrefix = "role/"
	// maxRoleNameLen is IAM's limit on a role name.
	maxRoleNameLen = 64
	// maxRolePathLen is IAM's limit on a role path, slashes included.
	maxRolePathLen = 512
	// accountIDLen is the number of digits in an AWS account ID.
	accountIDLen = 12
)

// roleARN is a parsed IAM role ARN.
type roleARN struct {
	// partition is aws, aws-cn, aws-us-gov, ...
	partition string
	// account is the 12-digit account ID.
	account string
	// path is the role path without the leading "role" element, "/" or "/a/b/".
	path string
	// name is the role name, the last element.
	name string
}

// String returns the canonical ARN.
func (a roleARN) String() string {
	return arnPrefix + a.partition + ":iam::" + a.account + ":" + roleResourcePrefix + strings.TrimPrefix(a.path, "/") + a.name
}

// parseRoleARN checks that s is an IAM role ARN such as
// arn:aws:iam::123456789012:role/path/name and splits it.
func parseRoleARN(s string) (roleARN, error) {
	if !strings.HasPrefix(s, arnPrefix) {
		return roleARN{}, fmt.Errorf("%q is not an ARN: it must start with %q; give a role name or a full IAM role ARN", s, arnPrefix)
	}
	parts := strings.SplitN(s, ":", 6)
	if len(parts) != 6 {
		return roleARN{}, fmt.Errorf("%q is not an ARN: it needs six colon-separated fields (arn:partition:iam::account:role/name)", s)
	}
	partition, service, region, account, resource := parts[1], parts[2], parts[3], parts[4], parts[5]
	if !rolePartitions[partition] {
		return roleARN{}, fmt.Errorf("ARN %q has unknown partition %q; use one of aws, aws-cn, aws-us-gov, aws-iso, aws-iso-b, aws-iso-e, aws-iso-f, aws-eusc", s, partition)
	}
	if service != "iam" {
		return roleARN{}, fmt.Errorf("ARN %q is for service %q, not an IAM role (arn:%s:iam::account:role/name)", s, service, partition)
	}
	if region != "" {
		return roleARN{}, fmt.Errorf("ARN %q has region %q; IAM ARNs have an empty region field (arn:%s:iam::account:role/name)", s, region, partition)
	}
	if !isAccountID(account) {
		return roleARN{}, fmt.Errorf("ARN %q has account %q; an account ID is exactly 12 digits", s, account)
	}
	if !strings.HasPrefix(resource, roleResourcePrefix) {
		return roleARN{}, fmt.Errorf("ARN %q names %q, not a role; an IAM role ARN ends in role/name or role/path/name", s, resource)
	}
	path, name, err := splitRolePath(strings.TrimPrefix(resource, roleResourcePrefix))
	if err != nil {
		return roleARN{}, fmt.Errorf("ARN %q: %w", s, err)
	}
	return roleARN{partition: partition, account: account, path: path, name: name}, nil
}

// splitRolePath splits "a/b/name" into path "/a/b/" and name "name",
// checking both against IAM's character rules.
func splitRolePath(s string) (path, name string, err error) {
	i := strings.LastIndexByte(s, '/')
	path, name = "/"+s[:i+1], s[i+1:] // i == -1 gives path "/"
	if name == "" {
		return "", "", fmt.Errorf("role %q has an empty name; it must not end in /", s)
	}
	if len(name) > maxRoleNameLen {
		return "", "", fmt.Errorf("role name %q is %d characters; IAM allows at most %d", name, len(name), maxRoleNameLen)
	}
	for _, c := range name {
		if !isRoleNameChar(c) {
			return "", "", fmt.Errorf("role name %q contains %q; IAM role names use letters, digits and +=,.@_-", name, c)
		}
	}
	if len(path) > maxRolePathLen {
		return "", "", fmt.Errorf("role path %q is %d characters; IAM allows at most %d", path, len(path), maxRolePathLen)
	}
	if strings.Contains(path, "//") {
		return "", "", fmt.Errorf("role path %q has an empty element (//)", path)
	}
	for _, c := range path {
		if c < 0x21 || c > 0x7e {
			return "", "", fmt.Errorf("role path %q contains %q; IAM paths use printable ASCII without spaces", path, c)
		}
	}
	return path, name, nil
}

// isRoleNameChar reports whether c may appear in an IAM role name ([\w+=,.@-]).
func isRoleNameChar(c rune) bool {
	switch {
	case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		return true
	}
	return strings.ContainsRune("+=,.@_-", c)
}

// isAccountID reports whether s is 12 decimal digits.
func isAccountID(s string) bool {
	if len(s) != accountIDLen {
		return false
	}
	for _, c := range s {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}

// ParseBaseRoleARN checks a base role ARN such as
// arn:aws:iam::123456789012:role/ or arn:aws:iam::123456789012:role/team/
// and returns it with exactly one trailing slash. Bare role names are
// appended to it.
func ParseBaseRoleARN(s string) (string, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return "", fmt.Errorf("the base role ARN is empty; set it like arn:aws:iam::123456789012:role/")
	}
	if !strings.HasSuffix(s, "/") {
		s += "/"
	}
	// Validate by parsing the prefix with a placeholder name.
	a, err := parseRoleARN(s + "x")
	if err != nil {
		return "", fmt.Errorf("base role ARN %q is not an IAM role ARN prefix (arn:aws:iam::123456789012:role/): %w", s, err)
	}
	return strings.TrimSuffix(a.String(), "x"), nil
}

// NormalizeRoleARN turns a role as written in an annotation or flag into a
// full IAM role ARN. A full ARN is validated and returned as is; a bare
// name ("app") or a path and name ("team/app", "/team/app") gets base
// prepended. base must come from ParseBaseRoleARN, or be empty when none is
// known, in which case only full ARNs are accepted. It returns the ARN and
// the role name (the last path element).
func NormalizeRoleARN(role, base string) (arn, name string, err error) {
	role = strings.TrimSpace(role)
	if role == "" {
		return "", "", fmt.Errorf("the role is empty; give a role name or a full IAM role ARN")
	}
	if !strings.HasPrefix(role, arnPrefix) {
		if base == "" {
			return "", "", fmt.Errorf("role %q is not a full ARN and no base role ARN is known; set --base-role-arn or write the full ARN", role)
		}
		role = base + strings.TrimPrefix(role, "/")
	}
	a, err := parseRoleARN(role)
	if err != nil {
		return "", "", err
	}
	return a.String(), a.name, nil
}
