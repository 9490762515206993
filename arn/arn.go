// Package arn owns the one parser of the Amazon Resource Names kube2ra
// reads: IAM role ARNs (annotations, --default-role), base role ARNs
// (--base-role-arn, discovered), Roles Anywhere trust anchor and profile
// ARNs, instance profiles, and the partitions they live in. Every other
// package asks this one, so a value accepted in one place is accepted in all.
package arn

import (
	"fmt"
	"strings"
)

const (
	// Prefix starts every ARN.
	Prefix = "arn:"
	// roleResource starts the resource part of an IAM role ARN.
	roleResource = "role/"
	// instanceProfileResource starts the resource part of an instance profile ARN.
	instanceProfileResource = "instance-profile/"
	// maxRoleNameLen is IAM's limit on a role name.
	maxRoleNameLen = 64
	// maxRolePathLen is IAM's limit on a role path, slashes included.
	maxRolePathLen = 512
	// accountIDLen is the number of digits in an AWS account ID.
	accountIDLen = 12
	// rolesAnywhereService is the service field of Roles Anywhere ARNs.
	rolesAnywhereService = "rolesanywhere"
)

// partitionList names the accepted partitions in error messages.
const partitionList = "aws, aws-cn, aws-us-gov, aws-iso, aws-iso-b, aws-iso-e, aws-iso-f, aws-eusc"

// KnownPartition reports whether p is an AWS partition. A typo such as
// "aws-us-gov-west" is refused rather than sent to AWS.
func KnownPartition(p string) bool {
	switch p {
	case "aws", "aws-cn", "aws-us-gov", "aws-iso", "aws-iso-b", "aws-iso-e", "aws-iso-f", "aws-eusc":
		return true
	}
	return false
}

// DNSSuffix is the endpoint domain of a partition (the AWS SDKs'
// partitions.json): one for every partition KnownPartition accepts.
func DNSSuffix(partition string) string {
	switch partition {
	case "aws-cn":
		return "amazonaws.com.cn"
	case "aws-iso":
		return "c2s.ic.gov"
	case "aws-iso-b":
		return "sc2s.sgov.gov"
	case "aws-iso-e":
		return "cloud.adc-e.uk"
	case "aws-iso-f":
		return "csp.hci.ic.gov"
	case "aws-eusc":
		return "amazonaws.eu"
	default:
		return "amazonaws.com"
	}
}

// ARN is a parsed Amazon Resource Name.
type ARN struct {
	// Partition is aws, aws-cn, aws-us-gov, ...
	Partition string
	// Service is the service namespace, e.g. rolesanywhere or iam.
	Service string
	// Region is empty for global services such as IAM.
	Region string
	// AccountID is the 12-digit account.
	AccountID string
	// Resource is everything after the account, e.g. trust-anchor/<id>.
	Resource string
}

// String is the ARN in its usual form.
func (a ARN) String() string {
	return Prefix + a.Partition + ":" + a.Service + ":" + a.Region + ":" + a.AccountID + ":" + a.Resource
}

// Parse splits s into its six fields, checking the partition and, where
// there is one, the account (S3 ARNs have none).
func Parse(s string) (ARN, error) {
	if !strings.HasPrefix(s, Prefix) {
		return ARN{}, fmt.Errorf("%q is not an ARN: it must start with %q", s, Prefix)
	}
	parts := strings.SplitN(s, ":", 6)
	if len(parts) != 6 || parts[2] == "" || parts[5] == "" {
		return ARN{}, fmt.Errorf("%q is not an ARN: it needs six colon-separated fields (arn:partition:service:region:account:resource)", s)
	}
	a := ARN{Partition: parts[1], Service: parts[2], Region: parts[3], AccountID: parts[4], Resource: parts[5]}
	if !KnownPartition(a.Partition) {
		return ARN{}, fmt.Errorf("ARN %q has unknown partition %q; use one of %s", s, a.Partition, partitionList)
	}
	if a.AccountID != "" && !isAccountID(a.AccountID) {
		return ARN{}, accountError(s, a.AccountID)
	}
	return a, nil
}

// accountError says that an ARN's account is not an account ID.
func accountError(s, account string) error {
	return fmt.Errorf("ARN %q has account %q; an account ID is exactly 12 digits", s, account)
}

// parseIAM parses an IAM ARN whose resource starts with kind.
func parseIAM(s, kind string) (ARN, error) {
	a, err := Parse(s)
	if err != nil {
		return ARN{}, err
	}
	if a.Service != "iam" {
		return ARN{}, fmt.Errorf("ARN %q is for service %q, not an IAM %s (arn:%s:iam::account:%sname)", s, a.Service, strings.TrimSuffix(kind, "/"), a.Partition, kind)
	}
	if a.Region != "" {
		return ARN{}, fmt.Errorf("ARN %q has region %q; IAM ARNs have an empty region field (arn:%s:iam::account:%sname)", s, a.Region, a.Partition, kind)
	}
	if a.AccountID == "" {
		return ARN{}, accountError(s, a.AccountID)
	}
	if !strings.HasPrefix(a.Resource, kind) {
		return ARN{}, fmt.Errorf("ARN %q names %q, not a %s; it must end in %sname or %spath/name", s, a.Resource, strings.TrimSuffix(kind, "/"), kind, kind)
	}
	return a, nil
}

// Role is a parsed IAM role ARN.
type Role struct {
	// Partition is aws, aws-cn, aws-us-gov, ...
	Partition string
	// AccountID is the 12-digit account.
	AccountID string
	// Path is the role path, "/" or "/a/b/".
	Path string
	// Name is the role name, the last element.
	Name string
}

// String is the canonical ARN.
func (r Role) String() string {
	return Prefix + r.Partition + ":iam::" + r.AccountID + ":" + roleResource + strings.TrimPrefix(r.Path, "/") + r.Name
}

// InstanceProfile is the instance profile ARN named like the role
// (arn:P:iam::A:instance-profile/path/name), as EC2's iam/info shows it.
func (r Role) InstanceProfile() string {
	return Prefix + r.Partition + ":iam::" + r.AccountID + ":" + instanceProfileResource + strings.TrimPrefix(r.Path, "/") + r.Name
}

// ParseRole checks that s is an IAM role ARN such as
// arn:aws:iam::123456789012:role/path/name and splits it.
func ParseRole(s string) (Role, error) {
	if !strings.HasPrefix(s, Prefix) {
		return Role{}, fmt.Errorf("%q is not an ARN: it must start with %q; give a role name or a full IAM role ARN", s, Prefix)
	}
	a, err := parseIAM(s, roleResource)
	if err != nil {
		return Role{}, err
	}
	path, name, err := splitRolePath(strings.TrimPrefix(a.Resource, roleResource))
	if err != nil {
		return Role{}, fmt.Errorf("ARN %q: %w", s, err)
	}
	return Role{Partition: a.Partition, AccountID: a.AccountID, Path: path, Name: name}, nil
}

// Base is a base role ARN: the prefix that turns a role name (or path/name)
// into a role ARN, arn:P:iam::A:role/ or arn:P:iam::A:role/team/.
type Base struct {
	// Partition is aws, aws-cn, aws-us-gov, ...
	Partition string
	// AccountID is the 12-digit account.
	AccountID string
	// Path is the role path, "/" or "/team/".
	Path string
}

// String is the prefix with exactly one trailing slash.
func (b Base) String() string {
	if b.Partition == "" {
		return ""
	}
	return Prefix + b.Partition + ":iam::" + b.AccountID + ":" + roleResource + strings.TrimPrefix(b.Path, "/")
}

// IsZero reports whether no base is known.
func (b Base) IsZero() bool { return b.Partition == "" }

// BaseFor is the base of the root path in a partition and account.
func BaseFor(partition, accountID string) Base {
	return Base{Partition: partition, AccountID: accountID, Path: "/"}
}

// ParseBase checks a base role ARN such as arn:aws:iam::123456789012:role/
// or arn:aws:iam::123456789012:role/team/. A missing trailing slash is
// added, as kube2iam does.
func ParseBase(s string) (Base, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return Base{}, fmt.Errorf("the base role ARN is empty; set it like arn:aws:iam::123456789012:role/")
	}
	if !strings.HasSuffix(s, "/") {
		s += "/"
	}
	a, err := parseIAM(s, roleResource)
	if err != nil {
		return Base{}, fmt.Errorf("base role ARN %q is not an IAM role ARN prefix (arn:aws:iam::123456789012:role/ or …:role/path/): %w", s, err)
	}
	path := "/" + strings.TrimPrefix(a.Resource, roleResource)
	if err := checkRolePath(path); err != nil {
		return Base{}, fmt.Errorf("base role ARN %q: %w", s, err)
	}
	return Base{Partition: a.Partition, AccountID: a.AccountID, Path: path}, nil
}

// BaseFromInstanceProfile turns arn:P:iam::A:instance-profile/x (EC2's
// iam/info) into the base arn:P:iam::A:role/.
func BaseFromInstanceProfile(s string) (Base, error) {
	a, err := parseIAM(s, instanceProfileResource)
	if err != nil {
		return Base{}, err
	}
	return BaseFor(a.Partition, a.AccountID), nil
}

// BaseFromTrustAnchor is the base role ARN a parsed Roles Anywhere trust
// anchor implies (its partition and account, root path): what the agent
// prepends to bare role names with Roles Anywhere and no --base-role-arn.
func BaseFromTrustAnchor(trustAnchor ARN) Base {
	return BaseFor(trustAnchor.Partition, trustAnchor.AccountID)
}

// NormalizeRole turns a role as written in an annotation or flag into a
// full IAM role ARN. A full ARN is validated and returned in canonical form;
// a bare name ("app") or a path and name ("team/app", "/team/app") gets base
// prepended. With a zero base only full ARNs are accepted. It returns the
// parsed role.
func NormalizeRole(role string, base Base) (Role, error) {
	role = strings.TrimSpace(role)
	if role == "" {
		return Role{}, fmt.Errorf("the role is empty; give a role name or a full IAM role ARN")
	}
	if !strings.HasPrefix(role, Prefix) {
		if base.IsZero() {
			return Role{}, fmt.Errorf("role %q is not a full ARN and no base role ARN is known; set --base-role-arn or write the full ARN", role)
		}
		role = base.String() + strings.TrimPrefix(role, "/")
	}
	return ParseRole(role)
}

// ParseTrustAnchor checks a Roles Anywhere trust anchor ARN.
func ParseTrustAnchor(s string) (ARN, error) { return parseRolesAnywhere(s, "trust-anchor") }

// ParseProfile checks a Roles Anywhere profile ARN.
func ParseProfile(s string) (ARN, error) { return parseRolesAnywhere(s, "profile") }

// parseRolesAnywhere checks that s is a Roles Anywhere ARN of the given
// resource kind ("trust-anchor" or "profile") with a region and an ID.
func parseRolesAnywhere(s, kind string) (ARN, error) {
	want := fmt.Sprintf("arn:aws:rolesanywhere:<region>:<account>:%s/<id>", kind)
	a, err := Parse(s)
	if err != nil {
		return ARN{}, fmt.Errorf("%w; a Roles Anywhere %s ARN looks like %s", err, kind, want)
	}
	id, ok := strings.CutPrefix(a.Resource, kind+"/")
	if a.Service != rolesAnywhereService || a.Region == "" || a.AccountID == "" || !ok || !isResourceID(id) {
		return ARN{}, fmt.Errorf("%q is not a Roles Anywhere %s ARN (%s)", s, kind, want)
	}
	return a, nil
}

// isResourceID reports whether id is a Roles Anywhere resource ID (a UUID
// in practice: letters, digits and dashes).
func isResourceID(id string) bool {
	if id == "" {
		return false
	}
	for _, c := range id {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-') {
			return false
		}
	}
	return true
}

// splitRolePath splits "a/b/name" into path "/a/b/" and name "name",
// checking both against IAM's character rules.
func splitRolePath(s string) (path, name string, err error) {
	i := strings.LastIndexByte(s, '/')
	path, name = "/"+s[:i+1], s[i+1:] // i == -1 gives path "/"
	if name == "" {
		return "", "", fmt.Errorf("role %q has an empty name; it must not end in /", s)
	}
	if name[0] == '.' {
		// "." and ".." would be path segments, and the metadata path gate
		// refuses every segment that starts with a dot: such a role could
		// never be read under iam/security-credentials/.
		return "", "", fmt.Errorf("role name %q starts with a dot; kube2ra serves role names that start with a letter, digit or one of +=,@_- (IAM role names use letters, digits and +=,.@_-)", name)
	}
	if len(name) > maxRoleNameLen {
		return "", "", fmt.Errorf("role name %q is %d characters; IAM allows at most %d", name, len(name), maxRoleNameLen)
	}
	for _, c := range name {
		if !isRoleNameChar(c) {
			return "", "", fmt.Errorf("role name %q contains %q; IAM role names use letters, digits and +=,.@_-", name, c)
		}
	}
	return path, name, checkRolePath(path)
}

// rolePathRule says what a role path may be, for error messages.
const rolePathRule = "a role path is / or /element/.../ where each element uses letters, digits and +=,.@_- and is not . or .."

// checkRolePath checks a role path ("/" or "/a/b/", both slashes always
// there). IAM itself accepts any printable ASCII in a path; kube2ra takes
// the name characters only, so that no "*", "%" or dot element can make a
// role ARN that reads as another (a pattern, an encoding, a parent path).
func checkRolePath(path string) error {
	if len(path) > maxRolePathLen {
		return fmt.Errorf("role path %q is %d characters; IAM allows at most %d", path, len(path), maxRolePathLen)
	}
	if path == "/" {
		return nil
	}
	for _, el := range strings.Split(path[1:len(path)-1], "/") {
		switch el {
		case "":
			return fmt.Errorf("role path %q has an empty element (//); %s", path, rolePathRule)
		case ".", "..":
			return fmt.Errorf("role path %q has a %q element; %s", path, el, rolePathRule)
		}
		for _, c := range el {
			if !isRoleNameChar(c) {
				return fmt.Errorf("role path %q contains %q; %s", path, c, rolePathRule)
			}
		}
	}
	return nil
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
