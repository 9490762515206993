package rolesanywhere

import (
	"fmt"
	"strings"
)

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
	return "arn:" + a.Partition + ":" + a.Service + ":" + a.Region + ":" + a.AccountID + ":" + a.Resource
}

// ParseARN splits an ARN into its parts.
func ParseARN(s string) (ARN, error) {
	parts := strings.SplitN(s, ":", 6)
	if len(parts) != 6 || parts[0] != "arn" || parts[1] == "" || parts[2] == "" || parts[5] == "" {
		return ARN{}, fmt.Errorf("%q is not an ARN (arn:partition:service:region:account:resource)", s)
	}
	return ARN{Partition: parts[1], Service: parts[2], Region: parts[3], AccountID: parts[4], Resource: parts[5]}, nil
}

// parseRolesAnywhereARN checks that s is a Roles Anywhere ARN of the given
// resource kind ("trust-anchor" or "profile").
func parseRolesAnywhereARN(s, kind, flag string) (ARN, error) {
	a, err := ParseARN(s)
	if err != nil {
		return ARN{}, fmt.Errorf("%s: %w", flag, err)
	}
	if a.Service != SigningName || a.Region == "" || !isAccountID(a.AccountID) || !strings.HasPrefix(a.Resource, kind+"/") || len(a.Resource) == len(kind)+1 {
		return ARN{}, fmt.Errorf("%s: %q is not a Roles Anywhere %s ARN (arn:aws:rolesanywhere:<region>:<account>:%s/<id>)", flag, s, kind, kind)
	}
	return a, nil
}

// ParseTrustAnchorARN checks a trust anchor ARN.
func ParseTrustAnchorARN(s string) (ARN, error) {
	return parseRolesAnywhereARN(s, "trust-anchor", "--ra-trust-anchor-arn")
}

// ParseProfileARN checks a profile ARN.
func ParseProfileARN(s string) (ARN, error) {
	return parseRolesAnywhereARN(s, "profile", "--ra-profile-arn")
}

// ParseRoleARN checks an IAM role ARN.
func ParseRoleARN(s string) (ARN, error) {
	a, err := ParseARN(s)
	if err != nil {
		return ARN{}, err
	}
	if a.Service != "iam" || a.Region != "" || !isAccountID(a.AccountID) || !strings.HasPrefix(a.Resource, "role/") || len(a.Resource) == len("role/") {
		return ARN{}, fmt.Errorf("%q is not an IAM role ARN (arn:aws:iam::<account>:role/<name>)", s)
	}
	return a, nil
}

// BaseRoleARNFor is the prefix that turns a role name into a role ARN in the
// trust anchor's partition and account: arn:<partition>:iam::<account>:role/.
func BaseRoleARNFor(trustAnchor ARN) string {
	return "arn:" + trustAnchor.Partition + ":iam::" + trustAnchor.AccountID + ":role/"
}

// isAccountID reports whether s is twelve digits.
func isAccountID(s string) bool {
	if len(s) != 12 {
		return false
	}
	for _, c := range s {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}

// dnsSuffix is the endpoint domain of a partition.
func dnsSuffix(partition string) string {
	switch partition {
	case "aws-cn":
		return "amazonaws.com.cn"
	case "aws-iso":
		return "c2s.ic.gov"
	case "aws-iso-b":
		return "sc2s.sgov.gov"
	default:
		return "amazonaws.com"
	}
}

// EndpointFor is the Roles Anywhere endpoint of a region:
// https://rolesanywhere.{region}.amazonaws.com, or rolesanywhere-fips.
func EndpointFor(partition, region string, fips bool) string {
	host := "rolesanywhere"
	if fips {
		host = "rolesanywhere-fips"
	}
	return "https://" + host + "." + region + "." + dnsSuffix(partition)
}
