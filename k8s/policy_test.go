package k8s

import (
	"strings"
	"testing"

	"github.com/kube2ra/kube2ra/arn"
)

// testBase is the base role ARN of the k8s tests.
const testBase = "arn:aws:iam::123456789012:role/"

// parseTestBase parses a base role ARN of a test case; "" is none.
func parseTestBase(t *testing.T, s string) arn.Base {
	t.Helper()
	if s == "" {
		return arn.Base{}
	}
	b, err := arn.ParseBase(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestPolicyMatching(t *testing.T) {
	const (
		govBase = "arn:aws-us-gov:iam::123456789012:role/"
		cnBase  = "arn:aws-cn:iam::123456789012:role/"
	)
	tests := []struct {
		name   string
		format PolicyFormat
		policy string
		base   string
		allow  []string
		deny   []string
	}{
		{name: "glob: a bare name allows exactly that role, not a longer one",
			format: PolicyGlob, policy: `["app"]`, base: testBase,
			allow: []string{testBase + "app"},
			deny:  []string{testBase + "app-admin", testBase + "myapp", testBase + "team/app", "arn:aws:iam::999999999999:role/app"}},
		{name: "glob: star matches a suffix",
			format: PolicyGlob, policy: `["app-*"]`, base: testBase,
			allow: []string{testBase + "app-reader", testBase + "app-"},
			deny:  []string{testBase + "app", testBase + "xapp-reader"}},
		{name: "glob: star crosses slashes (documented), so team/* covers every depth",
			format: PolicyGlob, policy: `["team/*"]`, base: testBase,
			allow: []string{testBase + "team/a", testBase + "team/sub/b"},
			deny:  []string{testBase + "team", testBase + "teammate/a", testBase + "other/team/a"}},
		{name: "glob: lone star allows every role of the base account, not others",
			format: PolicyGlob, policy: `["*"]`, base: testBase,
			allow: []string{testBase + "anything", testBase + "p/q/r"},
			deny:  []string{"arn:aws:iam::999999999999:role/anything", "arn:aws-cn:iam::123456789012:role/anything"}},
		{name: "glob: star in the middle",
			format: PolicyGlob, policy: `["svc-*-reader"]`, base: testBase,
			allow: []string{testBase + "svc-orders-reader", testBase + "svc--reader"},
			deny:  []string{testBase + "svc-orders-writer", testBase + "svc-orders-reader-admin"}},
		{name: "glob: question mark and brackets are literal",
			format: PolicyGlob, policy: `["app?","[ab]"]`, base: testBase,
			deny: []string{testBase + "app1", testBase + "a"}},
		{name: "glob: full ARN pattern with account wildcard",
			format: PolicyGlob, policy: `["arn:aws:iam::*:role/shared"]`, base: testBase,
			allow: []string{"arn:aws:iam::210987654321:role/shared", testBase + "shared"},
			deny:  []string{testBase + "shared2"}},
		{name: "glob: several patterns, any may allow",
			format: PolicyGlob, policy: `["a", "b/*", "arn:aws:iam::210987654321:role/c"]`, base: testBase,
			allow: []string{testBase + "a", testBase + "b/x", "arn:aws:iam::210987654321:role/c"},
			deny:  []string{testBase + "c"}},
		{name: "glob: empty array allows nothing",
			format: PolicyGlob, policy: `[]`, base: testBase,
			deny: []string{testBase + "app"}},
		{name: "glob: GovCloud base normalises patterns into that partition",
			format: PolicyGlob, policy: `["app"]`, base: govBase,
			allow: []string{govBase + "app"},
			deny:  []string{testBase + "app"}},
		{name: "glob: China full ARN pattern",
			format: PolicyGlob, policy: `["arn:aws-cn:iam::123456789012:role/cn-*"]`, base: testBase,
			allow: []string{cnBase + "cn-app"},
			deny:  []string{testBase + "cn-app"}},

		{name: "regexp: anchored, so app does not allow app-admin",
			format: PolicyRegexp, policy: `["app"]`, base: testBase,
			allow: []string{testBase + "app"},
			deny:  []string{testBase + "app-admin", testBase + "myapp", "x" + testBase + "app"}},
		{name: "regexp: alternation is anchored as a whole",
			format: PolicyRegexp, policy: `["app|db"]`, base: testBase,
			allow: []string{testBase + "app", testBase + "db"},
			deny:  []string{testBase + "app-admin", testBase + "dbx", testBase + "db-admin"}},
		{name: "regexp: user anchors are accepted",
			format: PolicyRegexp, policy: `["^app-[a-z]+$"]`, base: testBase,
			allow: []string{testBase + "app-reader"},
			deny:  []string{testBase + "app-reader2", testBase + "app-"}},
		{name: "regexp: the base ARN is quoted, its dots and colons are literal",
			format: PolicyRegexp, policy: `[".*"]`, base: testBase,
			allow: []string{testBase + "anything"},
			deny:  []string{"arn:aws:iam::999999999999:role/anything"}},
		{name: "regexp: full ARN pattern",
			format: PolicyRegexp, policy: `["arn:aws:iam::[0-9]{12}:role/shared"]`, base: testBase,
			allow: []string{"arn:aws:iam::210987654321:role/shared"},
			deny:  []string{"arn:aws:iam::210987654321:role/shared-admin"}},
		{name: "regexp: GovCloud base",
			format: PolicyRegexp, policy: `["gov-.*"]`, base: govBase,
			allow: []string{govBase + "gov-x"},
			deny:  []string{testBase + "gov-x"}},
		{name: "regexp: China full ARN pattern",
			format: PolicyRegexp, policy: `["arn:aws-cn:iam::123456789012:role/(a|b)"]`, base: testBase,
			allow: []string{cnBase + "a", cnBase + "b"},
			deny:  []string{cnBase + "ab", testBase + "a"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := compilePolicy(tt.policy, parseTestBase(t, tt.base), tt.format)
			if err != nil {
				t.Fatalf("compilePolicy(%s): %v", tt.policy, err)
			}
			for _, arn := range tt.allow {
				if !p.allows(arn) {
					t.Errorf("policy %s (%s) denies %s; want allowed", tt.policy, tt.format, arn)
				}
			}
			for _, arn := range tt.deny {
				if p.allows(arn) {
					t.Errorf("policy %s (%s) allows %s; want denied", tt.policy, tt.format, arn)
				}
			}
		})
	}
}

func TestPolicyRejectsMalformedAnnotations(t *testing.T) {
	tests := []struct {
		name    string
		format  PolicyFormat
		policy  string
		base    string
		wantErr string
	}{
		{name: "plain string instead of array", format: PolicyGlob, policy: `app`, base: testBase, wantErr: "not a JSON array"},
		{name: "JSON string instead of array", format: PolicyGlob, policy: `"app"`, base: testBase, wantErr: "not a JSON array"},
		{name: "comma-separated list", format: PolicyGlob, policy: `app,db`, base: testBase, wantErr: "not a JSON array"},
		{name: "array of numbers", format: PolicyGlob, policy: `[1,2]`, base: testBase, wantErr: "not a JSON array"},
		{name: "object", format: PolicyGlob, policy: `{"roles":["app"]}`, base: testBase, wantErr: "not a JSON array"},
		{name: "truncated JSON", format: PolicyGlob, policy: `["app"`, base: testBase, wantErr: "not a JSON array"},
		{name: "empty annotation", format: PolicyGlob, policy: ``, base: testBase, wantErr: "not a JSON array"},
		{name: "null element", format: PolicyGlob, policy: `["app", null]`, base: testBase, wantErr: "empty pattern"},
		{name: "empty pattern", format: PolicyGlob, policy: `["app", " "]`, base: testBase, wantErr: "empty pattern"},
		{name: "bare pattern without base ARN", format: PolicyGlob, policy: `["app"]`, wantErr: "no base role ARN"},
		{name: "invalid regexp", format: PolicyRegexp, policy: `["app(["]`, base: testBase, wantErr: "not a valid regular expression"},
		{name: "bare regexp without base ARN", format: PolicyRegexp, policy: `["app"]`, wantErr: "no base role ARN"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := compilePolicy(tt.policy, parseTestBase(t, tt.base), tt.format)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("compilePolicy(%q) = %v, %v; want error containing %q", tt.policy, p, err, tt.wantErr)
			}
		})
	}
}

func TestParsePolicyFormat(t *testing.T) {
	for in, want := range map[string]PolicyFormat{"": PolicyGlob, "glob": PolicyGlob, "REGEXP": PolicyRegexp} {
		if got, err := ParsePolicyFormat(in); err != nil || got != want {
			t.Errorf("ParsePolicyFormat(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	if _, err := ParsePolicyFormat("regex"); err == nil {
		t.Error("ParsePolicyFormat(\"regex\") succeeded; want an error naming glob and regexp")
	}
}
