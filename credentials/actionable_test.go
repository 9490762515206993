package credentials

import (
	"errors"
	"fmt"
	"strings"
	"testing"
)

func TestActionableFailure(t *testing.T) {
	const role = "arn:aws:iam::111122223333:role/app"
	awsMessage := "User: arn:aws:sts::111122223333:assumed-role/node-role/i-0abc is not authorized to perform: sts:AssumeRole"
	for _, tc := range []struct {
		name       string
		err        error
		wantReason string // "" means not actionable
		wantIn     []string
	}{
		{"sts denial names the trust policy", &Error{Kind: KindDenied, Source: STSSourceName, RoleARN: role, Code: "AccessDenied", Message: awsMessage},
			ReasonUpstreamAccessDenied, []string{role, "trust policy", "AccessDenied"}},
		{"roles anywhere denial names the profile", &Error{Kind: KindDenied, Source: "rolesanywhere", RoleARN: role, Code: "AccessDeniedException", Message: "Role is not in the role list"},
			ReasonUpstreamAccessDenied, []string{role, "profile", "AccessDeniedException"}},
		{"a remembered denial is still one", fmt.Errorf("%w (remembered; next attempt after x)", &Error{Kind: KindDenied, Source: STSSourceName, RoleARN: role, Code: "AccessDenied"}),
			ReasonUpstreamAccessDenied, []string{"trust policy"}},
		{"a refused target hop names the target and the first role", &Error{Kind: KindDenied, Source: STSSourceName, RoleARN: "arn:aws:iam::444455556666:role/t", Hop: HopTarget, Code: "AccessDenied", Message: awsMessage},
			ReasonUpstreamAccessDenied, []string{"target role arn:aws:iam::444455556666:role/t", "second hop", "first role", "external ID"}},
		{"a target hop refused for tags says sts:TagSession", &Error{Kind: KindDenied, Source: STSSourceName, RoleARN: "arn:aws:iam::444455556666:role/t", Hop: HopTarget, Code: "AccessDenied",
			Message: "User: arn:aws:sts::111122223333:assumed-role/first/n is not authorized to perform: sts:TagSession on resource: arn:aws:iam::444455556666:role/t"},
			ReasonUpstreamAccessDenied, []string{"sts:TagSession", "second hop", "--session-tags"}},
		{"a direct hop refused for tags says sts:TagSession", &Error{Kind: KindDenied, Source: STSSourceName, RoleARN: role, Code: "AccessDenied",
			Message: "User: x is not authorized to perform: sts:TagSession on resource: " + role},
			ReasonUpstreamAccessDenied, []string{"sts:TagSession", role}},
		{"a refused Roles Anywhere first hop says so", &Error{Kind: KindDenied, Source: "rolesanywhere", RoleARN: role, Hop: HopFirst, Code: "AccessDeniedException"},
			ReasonUpstreamAccessDenied, []string{"first hop", "profile"}},
		{"a target hop the agent cannot request says why", &Error{Kind: KindInvalid, Source: STSSourceName, RoleARN: "arn:aws:iam::444455556666:role/t", Hop: HopTarget, Message: "set --cluster-name"},
			ReasonTargetRoleInvalid, []string{"second hop", "--cluster-name"}},
		{"AWS throttling", &Error{Kind: KindThrottled, Source: "rolesanywhere", RoleARN: role, Code: "ThrottlingException"},
			ReasonUpstreamThrottled, []string{"quota", "--session-name=node"}},
		{"expired node certificate", &Error{Kind: KindDenied, Source: "rolesanywhere", RoleARN: role, Code: CodeCertificateExpired},
			ReasonNodeCertificateExpired, []string{"renew"}},
		{"node certificate not yet valid", &Error{Kind: KindDenied, Source: "rolesanywhere", RoleARN: role, Code: CodeCertificateNotYetValid},
			ReasonNodeCertificateNotYetValid, []string{"clock"}},
		{"the local rate limit is not AWS's", &Error{Kind: KindThrottled, Source: "rolesanywhere", RoleARN: role, Message: "the upstream call rate limit (--upstream-qps, --upstream-burst)"}, "", nil},
		{"an outage passes by itself", &Error{Kind: KindUnavailable, Source: STSSourceName, RoleARN: role, Code: "ServiceUnavailable"}, "", nil},
		{"the pod's own invalid request", &Error{Kind: KindInvalid, Source: "rolesanywhere", RoleARN: role}, "", nil},
		{"a one-role request AWS refused as invalid", &Error{Kind: KindInvalid, Source: STSSourceName, RoleARN: role, Code: "RegionDisabledException", Message: "STS is not activated in this region for account:111122223333"},
			ReasonUpstreamRequestInvalid, []string{role, "RegionDisabledException", "not activated"}},
		{"not an *Error", errors.New("boom"), "", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f, ok := ActionableFailure(tc.err)
			if ok != (tc.wantReason != "") || f.Reason != tc.wantReason {
				t.Fatalf("ActionableFailure = %+v, %t; want reason %q", f, ok, tc.wantReason)
			}
			for _, w := range tc.wantIn {
				if !strings.Contains(f.Message, w) {
					t.Errorf("message %q lacks %q", f.Message, w)
				}
			}
			if strings.Contains(f.Message, "i-0abc") || strings.Contains(f.Message, "node-role") {
				t.Errorf("message %q repeats AWS's message, which names the node's role and instance", f.Message)
			}
		})
	}
}
