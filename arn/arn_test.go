package arn

import (
	"strings"
	"testing"
)

const testBase = "arn:aws:iam::123456789012:role/"

func TestNormalizeRole(t *testing.T) {
	tests := []struct {
		name     string
		role     string
		base     string
		wantARN  string
		wantName string
		wantErr  string
	}{
		{name: "bare name gets the base prepended", role: "app", base: testBase,
			wantARN: testBase + "app", wantName: "app"},
		{name: "path and name get the base prepended, name is the last element", role: "team/app", base: testBase,
			wantARN: testBase + "team/app", wantName: "app"},
		{name: "leading slash of a path is dropped", role: "/team/sub/app", base: testBase,
			wantARN: testBase + "team/sub/app", wantName: "app"},
		{name: "surrounding spaces are ignored", role: "  app \n", base: testBase,
			wantARN: testBase + "app", wantName: "app"},
		{name: "base with a path keeps it", role: "app", base: "arn:aws:iam::123456789012:role/platform/",
			wantARN: "arn:aws:iam::123456789012:role/platform/app", wantName: "app"},
		{name: "full ARN is kept", role: "arn:aws:iam::210987654321:role/other", base: testBase,
			wantARN: "arn:aws:iam::210987654321:role/other", wantName: "other"},
		{name: "full ARN works without a base", role: "arn:aws:iam::210987654321:role/x/y/other",
			wantARN: "arn:aws:iam::210987654321:role/x/y/other", wantName: "other"},
		{name: "GovCloud partition", role: "arn:aws-us-gov:iam::123456789012:role/gov",
			wantARN: "arn:aws-us-gov:iam::123456789012:role/gov", wantName: "gov"},
		{name: "China partition", role: "arn:aws-cn:iam::123456789012:role/cn-app",
			wantARN: "arn:aws-cn:iam::123456789012:role/cn-app", wantName: "cn-app"},
		{name: "China base with bare name", role: "app", base: "arn:aws-cn:iam::123456789012:role/",
			wantARN: "arn:aws-cn:iam::123456789012:role/app", wantName: "app"},
		{name: "ISO-B partition", role: "arn:aws-iso-b:iam::123456789012:role/secret",
			wantARN: "arn:aws-iso-b:iam::123456789012:role/secret", wantName: "secret"},
		{name: "name characters allowed by IAM", role: "a+b=c,d.e@f_g-h", base: testBase,
			wantARN: testBase + "a+b=c,d.e@f_g-h", wantName: "a+b=c,d.e@f_g-h"},

		{name: "bare name without base is refused", role: "app", wantErr: "no base role ARN"},
		{name: "empty role is refused", role: "  ", base: testBase, wantErr: "empty"},
		{name: "unknown partition is refused", role: "arn:aws-mars:iam::123456789012:role/x", wantErr: "unknown partition"},
		{name: "non-IAM service is refused", role: "arn:aws:s3:::bucket/role/x", wantErr: "not an IAM role"},
		{name: "IAM user is refused", role: "arn:aws:iam::123456789012:user/bob", wantErr: "not a role"},
		{name: "instance profile is refused", role: "arn:aws:iam::123456789012:instance-profile/x", wantErr: "not a role"},
		{name: "STS assumed-role ARN is refused", role: "arn:aws:sts::123456789012:assumed-role/x/s", wantErr: "not an IAM role"},
		{name: "region in an IAM ARN is refused", role: "arn:aws:iam:us-east-1:123456789012:role/x", wantErr: "region"},
		{name: "short account is refused", role: "arn:aws:iam::12345:role/x", wantErr: "12 digits"},
		{name: "non-digit account is refused", role: "arn:aws:iam::12345678901a:role/x", wantErr: "12 digits"},
		{name: "too few fields is refused", role: "arn:aws:iam::123456789012", wantErr: "six colon-separated"},
		{name: "trailing slash (empty name) is refused", role: "team/", base: testBase, wantErr: "empty name"},
		{name: "empty path element is refused", role: "arn:aws:iam::123456789012:role/a//b", wantErr: "empty element"},
		{name: "space in a name is refused", role: "my app", base: testBase, wantErr: "contains"},
		{name: "colon in a name is refused", role: "arn:aws:iam::123456789012:role/a:b", wantErr: "contains"},
		{name: "65-character name is refused", role: strings.Repeat("a", 65), base: testBase, wantErr: "at most 64"},
		{name: "path elements may use every IAM name character", role: "a+b=c/d,e.f@g_h-i/app", base: testBase,
			wantARN: testBase + "a+b=c/d,e.f@g_h-i/app", wantName: "app"},
		{name: "dots inside a path element are kept", role: "v1.2/..x/x../app", base: testBase,
			wantARN: testBase + "v1.2/..x/x../app", wantName: "app"},
		{name: "dot-dot element in a bare path is refused", role: "team/../admin", base: testBase, wantErr: `role path "/team/../" has a ".." element; a role path is / or /element/.../`},
		{name: "dot element in a bare path is refused", role: "./app", base: testBase, wantErr: `has a "." element`},
		{name: "dot-dot element in a full ARN is refused", role: "arn:aws:iam::123456789012:role/a/../app", wantErr: `ARN "arn:aws:iam::123456789012:role/a/../app": role path "/a/../" has a ".." element`},
		{name: "dot-dot as the name is refused", role: "team/..", base: testBase, wantErr: "starts with a dot"},
		{name: "dot as the name is refused", role: ".", base: testBase, wantErr: "starts with a dot"},
		{name: "dot-led name is refused", role: ".hidden", base: testBase, wantErr: "starts with a dot"},
		{name: "percent in a path is refused", role: "team%2f/app", base: testBase, wantErr: `contains '%'; a role path is`},
		{name: "encoded dot-dot in a path is refused", role: "%2e%2e/app", base: testBase, wantErr: `contains '%'`},
		{name: "asterisk in a path is refused", role: "team*/app", base: testBase, wantErr: `contains '*'`},
		{name: "asterisk in a full ARN path is refused", role: "arn:aws:iam::123456789012:role/*/app", wantErr: `contains '*'`},
		{name: "asterisk in a name is refused", role: "app*", base: testBase, wantErr: "contains '*'"},
		{name: "backslash in a path is refused", role: `team\x/app`, base: testBase, wantErr: `contains '\\'`},
		{name: "colon-free printable characters IAM paths allow are refused", role: "team!/app", base: testBase, wantErr: "contains '!'"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var base Base
			if tt.base != "" {
				var err error
				if base, err = ParseBase(tt.base); err != nil {
					t.Fatal(err)
				}
			}
			r, err := NormalizeRole(tt.role, base)
			arn, name := r.String(), r.Name
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("NormalizeRole(%q, %q) = %q, %q, %v; want error containing %q", tt.role, tt.base, arn, name, err, tt.wantErr)
				}
				return
			}
			if err != nil || arn != tt.wantARN || name != tt.wantName {
				t.Fatalf("NormalizeRole(%q, %q) = %q, %q, %v; want %q, %q", tt.role, tt.base, arn, name, err, tt.wantARN, tt.wantName)
			}
		})
	}
}

func TestParseBase(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    string
		wantErr bool
	}{
		{name: "base with trailing slash is kept", in: testBase, want: testBase},
		{name: "missing trailing slash is added", in: "arn:aws:iam::123456789012:role", want: testBase},
		{name: "base with a path", in: "arn:aws:iam::123456789012:role/team", want: "arn:aws:iam::123456789012:role/team/"},
		{name: "GovCloud base", in: "arn:aws-us-gov:iam::123456789012:role/", want: "arn:aws-us-gov:iam::123456789012:role/"},
		{name: "empty base is refused", in: "", wantErr: true},
		{name: "user ARN prefix is refused", in: "arn:aws:iam::123456789012:user/", wantErr: true},
		{name: "bad account is refused", in: "arn:aws:iam::1:role/", wantErr: true},
		{name: "dot-dot path element is refused", in: "arn:aws:iam::123456789012:role/team/../", wantErr: true},
		{name: "dot path element is refused", in: "arn:aws:iam::123456789012:role/./", wantErr: true},
		{name: "percent in the path is refused", in: "arn:aws:iam::123456789012:role/%2e%2e/", wantErr: true},
		{name: "asterisk in the path is refused", in: "arn:aws:iam::123456789012:role/*/", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, err := ParseBase(tt.in)
			got := b.String()
			if (err != nil) != tt.wantErr || got != tt.want {
				t.Fatalf("ParseBase(%q) = %q, %v; want %q, error %v", tt.in, got, err, tt.want, tt.wantErr)
			}
		})
	}
}

func TestRolesAnywhereARNs(t *testing.T) {
	const anchor = "arn:aws:rolesanywhere:eu-central-1:123456789012:trust-anchor/0f1e2d3c-4b5a-6978-8a9b-0c1d2e3f4a5b"
	const profile = "arn:aws:rolesanywhere:eu-central-1:123456789012:profile/9a8b7c6d-5e4f-3a2b-1c0d-e9f8a7b6c5d4"
	tests := []struct {
		name    string
		parse   func(string) (ARN, error)
		in      string
		wantErr string
	}{
		{"trust anchor", ParseTrustAnchor, anchor, ""},
		{"profile", ParseProfile, profile, ""},
		{"profile given as trust anchor is refused", ParseTrustAnchor, profile, "not a Roles Anywhere trust-anchor ARN"},
		{"trust anchor without region is refused", ParseTrustAnchor, "arn:aws:rolesanywhere::123456789012:trust-anchor/x", "not a Roles Anywhere"},
		{"trust anchor without an ID is refused", ParseTrustAnchor, "arn:aws:rolesanywhere:eu-central-1:123456789012:trust-anchor/", "not a Roles Anywhere"},
		{"unknown partition is refused", ParseProfile, "arn:aws-mars:rolesanywhere:eu-central-1:123456789012:profile/x", "unknown partition"},
		{"IAM role is refused", ParseProfile, testBase + "x", "not a Roles Anywhere"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a, err := tt.parse(tt.in)
			if tt.wantErr == "" {
				if err != nil || a.String() != tt.in {
					t.Fatalf("parse(%q) = %v, %v; want it back unchanged", tt.in, a, err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("parse(%q) = %v, %v; want an error containing %q", tt.in, a, err, tt.wantErr)
			}
		})
	}
}

func TestInstanceProfilesAndRoles(t *testing.T) {
	r, err := ParseRole("arn:aws-cn:iam::123456789012:role/team/app")
	if err != nil {
		t.Fatal(err)
	}
	if got, want := r.InstanceProfile(), "arn:aws-cn:iam::123456789012:instance-profile/team/app"; got != want {
		t.Errorf("InstanceProfile() = %q, want %q", got, want)
	}
	b, err := BaseFromInstanceProfile("arn:aws-cn:iam::123456789012:instance-profile/node")
	if err != nil || b.String() != "arn:aws-cn:iam::123456789012:role/" {
		t.Errorf("BaseFromInstanceProfile = %q, %v; want the account's root role path", b, err)
	}
	if _, err := BaseFromInstanceProfile(testBase + "node"); err == nil {
		t.Error("a role ARN was taken for an instance profile")
	}
	ta, err := ParseTrustAnchor("arn:aws-us-gov:rolesanywhere:us-gov-west-1:123456789012:trust-anchor/0a1b2c3d-0000-4000-8000-000000000000")
	if err != nil {
		t.Fatal(err)
	}
	if got := BaseFromTrustAnchor(ta).String(); got != "arn:aws-us-gov:iam::123456789012:role/" {
		t.Errorf("BaseFromTrustAnchor = %q, want the anchor's partition and account, root path", got)
	}
}
