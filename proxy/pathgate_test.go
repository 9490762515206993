package proxy

import (
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
)

func TestCheckPath(t *testing.T) {
	tests := []struct {
		name       string
		target     string
		wantStatus int
		wantRoute  string
		wantSegs   []string
	}{
		{"root lists versions", "/", 0, "/", nil},
		{"latest version root", "/latest", 0, "/latest", nil},
		{"latest version root with slash", "/latest/", 0, "/latest", nil},
		{"dated version", "/2021-07-15/meta-data/instance-id", 0, "/2021-07-15/meta-data/instance-id", []string{"meta-data", "instance-id"}},
		{"credential listing with slash", "/latest/meta-data/iam/security-credentials/", 0, "/latest/meta-data/iam/security-credentials", []string{"meta-data", "iam", "security-credentials"}},
		{"mac address segment", "/latest/meta-data/network/interfaces/macs/0e:49:61:0f:c3:11/subnet-id", 0, "/latest/meta-data/network/interfaces/macs/0e:49:61:0f:c3:11/subnet-id", []string{"meta-data", "network", "interfaces", "macs", "0e:49:61:0f:c3:11", "subnet-id"}},
		{"a role name with every IAM punctuation", "/latest/meta-data/iam/security-credentials/app+prod@team=a,b_c-d.e", 0, "/latest/meta-data/iam/security-credentials/app+prod@team=a,b_c-d.e", []string{"meta-data", "iam", "security-credentials", "app+prod@team=a,b_c-d.e"}},
		{"mixed case passes the gate (routes decide)", "/latest/Meta-Data/iam", 0, "/latest/Meta-Data/iam", []string{"Meta-Data", "iam"}},

		{"empty target", "", http.StatusBadRequest, "", nil},
		{"absolute form", "http://169.254.169.254/latest/meta-data/", http.StatusBadRequest, "", nil},
		{"asterisk form", "*", http.StatusBadRequest, "", nil},
		{"overlong", "/latest/meta-data/" + strings.Repeat("a", maxPathLen), http.StatusBadRequest, "", nil},
		{"percent-encoded slash", "/latest/meta-data/iam%2Fsecurity-credentials/", http.StatusBadRequest, "", nil},
		{"percent-encoded dot", "/latest/meta-data/%2e%2e/user-data", http.StatusBadRequest, "", nil},
		{"percent-encoded letter", "/latest/meta-data/%69am/info", http.StatusBadRequest, "", nil},
		{"backslash", "/latest/meta-data/iam\\security-credentials", http.StatusBadRequest, "", nil},
		{"semicolon path parameter", "/latest/meta-data/iam/security-credentials/..;/..;/user-data", http.StatusBadRequest, "", nil},
		{"query string", "/latest/meta-data/iam/security-credentials/pod-role?x=1", http.StatusBadRequest, "", nil},
		{"empty query", "/latest/meta-data/iam/security-credentials/pod-role?", http.StatusBadRequest, "", nil},
		{"fragment", "/latest/meta-data/iam/security-credentials/pod-role#x", http.StatusBadRequest, "", nil},
		{"space", "/latest/meta-data/iam/security-credentials/ ", http.StatusBadRequest, "", nil},
		{"tab", "/latest/meta-data/\tiam", http.StatusBadRequest, "", nil},
		{"NUL", "/latest/meta-data/iam\x00", http.StatusBadRequest, "", nil},
		{"DEL", "/latest/meta-data/iam\x7f", http.StatusBadRequest, "", nil},
		{"non-ASCII", "/latest/meta-data/ïam/info", http.StatusBadRequest, "", nil},
		{"tilde", "/latest/meta-data/~iam", http.StatusBadRequest, "", nil},
		{"plus is a role name's byte, not another spelling (routes decide)", "/latest/meta-data/iam+", 0, "/latest/meta-data/iam+", []string{"meta-data", "iam+"}},

		{"double slash at start", "//latest/meta-data/iam/security-credentials/", http.StatusNotFound, "", nil},
		{"double slash inside", "/latest//meta-data/iam/security-credentials/", http.StatusNotFound, "", nil},
		{"double slash at end", "/latest/meta-data/iam/security-credentials//", http.StatusNotFound, "", nil},
		{"only slashes", "//", http.StatusNotFound, "", nil},
		{"dot segment", "/latest/meta-data/./iam/info", http.StatusNotFound, "", nil},
		{"dot-dot segment", "/latest/meta-data/iam/security-credentials/../../user-data", http.StatusNotFound, "", nil},
		{"trailing dot-dot", "/latest/meta-data/iam/security-credentials/..", http.StatusNotFound, "", nil},
		{"dot-dot as version", "/../latest/user-data", http.StatusNotFound, "", nil},
		{"segment starting with dots (fuzz finding)", "/latest/meta-data/placement/..0", http.StatusNotFound, "", nil},
		{"hidden-file segment", "/latest/meta-data/.placement/region", http.StatusNotFound, "", nil},
		{"unknown version", "/v1/meta-data/", http.StatusNotFound, "", nil},
		{"upper-case version", "/LATEST/meta-data/", http.StatusNotFound, "", nil},
		{"impossible month", "/2021-13-15/meta-data/", http.StatusNotFound, "", nil},
		{"short date", "/2021-7-15/meta-data/", http.StatusNotFound, "", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, status, reason := checkPath(tt.target)
			if status != tt.wantStatus {
				t.Fatalf("checkPath(%q) status = %d (%s), want %d", tt.target, status, reason, tt.wantStatus)
			}
			if status != 0 {
				if reason == "" {
					t.Errorf("checkPath(%q) refused without a reason", tt.target)
				}
				return
			}
			if got := c.routePath(); got != tt.wantRoute {
				t.Errorf("routePath = %q, want %q", got, tt.wantRoute)
			}
			if !slices.Equal(c.segs, tt.wantSegs) {
				t.Errorf("segs = %q, want %q", c.segs, tt.wantSegs)
			}
			if c.raw != tt.target {
				t.Errorf("raw = %q, want the target unchanged", c.raw)
			}
		})
	}
}

func TestAllowlist(t *testing.T) {
	a, err := newAllowlist(append(append([]string{}, DefaultAllowPaths...), "/latest/meta-data/tags/instance/Name", "meta-data/elastic-gpus/*"))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		path         string
		wantAllowed  bool
		wantAncestor bool
	}{
		{"meta-data/instance-id", true, false},
		{"meta-data/placement", true, false},
		{"meta-data/placement/availability-zone", true, false},
		{"meta-data/network/interfaces/macs/0e:49:61:0f:c3:11/vpc-id", true, false},
		{"dynamic/instance-identity/document", true, false},
		{"meta-data/tags/instance/Name", true, false},
		{"meta-data/elastic-gpus/root", true, false},
		{"meta-data/block-device-mapping/root", true, false},
		{"meta-data", false, true},
		{"dynamic", false, true},
		{"dynamic/instance-identity", false, true},
		{"meta-data/tags", false, true},
		{"meta-data/tags/instance", false, true},
		{"meta-data/elastic-gpus", false, true},
		{"meta-data/elastic-gpus/root/x", false, false},
		{"meta-data/block-device-mapping/ebs1/x", true, false},
		{"meta-data/tags/instance/Secret", false, false},
		{"dynamic/instance-identity/pkcs7", false, false},
		{"dynamic/instance-identity/signature", false, false},
		{"dynamic/instance-identity/rsa2048", false, false},
		{"user-data", false, false},
		{"meta-data/iam", false, false},
		{"meta-data/iam/security-credentials/node-instance-role", false, false},
		{"meta-data/identity-credentials/ec2/security-credentials/ec2-instance", false, false},
		{"meta-data/public-keys/0/openssh-key", false, false},
		{"meta-data/instance-id/x", false, false},
		{"api/token", false, false},
	}
	for _, tt := range tests {
		segs := strings.Split(tt.path, "/")
		if got := a.allows(segs); got != tt.wantAllowed {
			t.Errorf("allows(%q) = %v, want %v", tt.path, got, tt.wantAllowed)
		}
		if got := a.isAncestor(segs); got != tt.wantAncestor {
			t.Errorf("isAncestor(%q) = %v, want %v", tt.path, got, tt.wantAncestor)
		}
	}
}

// The request-time lock holds even for patterns newAllowlist would refuse
// (compileAllowlist skips that check): no spelling of a blocked path, in
// any letter case, is passed through or listed.
func TestAllowlistNeverPassesIAMEvenWhenAPatternSaysSo(t *testing.T) {
	a, err := compileAllowlist([]string{"meta-data/**", "**", "meta-data/IAM/**", "META-DATA/*/**"})
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{
		"meta-data/iam/info", "meta-data/iam/security-credentials/x", "meta-data/identity-credentials/ec2/info", "api/token",
		"meta-data/iam/security-credentials-extended/node-instance-role",
		"meta-data/IAM/security-credentials/node-instance-role", "meta-data/Iam/info", "META-DATA/iam/security-credentials",
		"meta-data/iam/Security-Credentials", "meta-data/IDENTITY-CREDENTIALS/ec2/security-credentials/ec2-instance",
		"meta-data/Identity-Credentials/ec2/info", "API/token", "Api/Token",
	} {
		if a.allows(strings.Split(p, "/")) {
			t.Errorf("allows(%q) = true; iam, identity-credentials and the token route must never pass through, in any letter case", p)
		}
	}
	if got := a.filterListing([]string{"meta-data"}, "ami-id\niam/\nIAM/\nidentity-credentials/\nIdentity-Credentials/\nplacement/"); !slices.Equal(got, []string{"ami-id", "placement/"}) {
		t.Errorf("filterListing kept %q", got)
	}
}

// An operator pattern that could match a blocked path, in any letter case,
// stops the agent at start with an error naming the pattern; patterns
// beside the blocked paths are accepted.
func TestNewAllowlistRefusesPatternsReachingBlockedPaths(t *testing.T) {
	for _, p := range []string{
		"**", "meta-data/**", "meta-data/*", "meta-data/*/**", "*/**", "*/iam/**", "meta-data/iam", "meta-data/iam/**",
		"meta-data/IAM/security-credentials/**", "meta-data/iam/Security-Credentials", "meta-data/i?m/info",
		"meta-data/i*/**", "Meta-Data/Iam/security-credentials-extended/*", "meta-data/IDENTITY-CREDENTIALS/**",
		"meta-data/identity-credentials/ec2/info", "meta-data/ident*/**", "api/token", "API/**", "a*", "/latest/meta-data/iam/info",
	} {
		_, err := newAllowlist([]string{"meta-data/tags/instance/**", p})
		if err == nil {
			t.Errorf("newAllowlist accepted %q, which reaches a path that is never passed through", p)
			continue
		}
		if !strings.Contains(err.Error(), fmt.Sprintf("%q", p)) || !strings.Contains(err.Error(), "never passed through") {
			t.Errorf("newAllowlist(%q): error %q does not name the pattern and why", p, err)
		}
	}
	for _, p := range []string{"meta-data/tags/instance/**", "meta-data/iam-notes", "meta-data/ia", "meta-data/block-device-mapping/*", "dynamic/**", "meta-data", "user-data"} {
		if _, err := newAllowlist([]string{p}); err != nil {
			t.Errorf("newAllowlist(%q) = %v; it reaches no blocked path", p, err)
		}
	}
	if _, err := newAllowlist(DefaultAllowPaths); err != nil {
		t.Errorf("the default allowlist is refused: %v", err)
	}
}

func TestNewAllowlistRefusesBadPatterns(t *testing.T) {
	for _, p := range []string{"", "/", "meta-data//x", "meta-data/../user-data", "meta-data/./x", "**/x", "meta-data/[x", "meta-data/ebs[0-9]", "meta-data/a..b", `meta-data\x`} {
		if _, err := newAllowlist([]string{p}); err == nil {
			t.Errorf("newAllowlist(%q) accepted a bad pattern", p)
		}
	}
}

// The flag check is the proxy's own: a pattern the proxy would refuse at
// start is refused when the flags are validated, with the same reason.
func TestValidateAllowPathsIsTheAllowlistsCheck(t *testing.T) {
	if err := ValidateAllowPaths([]string{"meta-data/tags/instance/**"}); err != nil {
		t.Errorf("a good pattern is refused: %v", err)
	}
	err := ValidateAllowPaths([]string{"meta-data/**/x"})
	if err == nil || !strings.Contains(err.Error(), "only allowed at the end") {
		t.Errorf("ValidateAllowPaths(meta-data/**/x) = %v; want the allowlist's reason", err)
	}
}

func TestFilterListing(t *testing.T) {
	a, err := newAllowlist(DefaultAllowPaths)
	if err != nil {
		t.Fatal(err)
	}
	got := a.filterListing([]string{"dynamic", "instance-identity"}, "document\npkcs7\nrsa2048\nsignature")
	if !slices.Equal(got, []string{"document"}) {
		t.Errorf("instance-identity listing = %q, want only document", got)
	}
	got = a.filterListing([]string{"meta-data"}, "ami-id\nhostname\niam/\nidentity-credentials/\ninstance-id\nplacement/\npublic-keys/\ntags/\n../user-data\nx%2fy\n")
	want := []string{"ami-id", "hostname", "instance-id", "placement/"}
	if !slices.Equal(got, want) {
		t.Errorf("meta-data listing = %q, want %q", got, want)
	}
}
