package main

import (
	"flag"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/kube2ra/kube2ra/proxy"
)

// validSTS is a minimal valid configuration for the STS source.
func validSTS() *Config {
	c := NewConfig()
	c.Node, c.HostIP = "node-a", "10.0.0.10"
	return c
}

func validRA(t *testing.T) *Config {
	t.Helper()
	dir := t.TempDir()
	cert, key := filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	for _, f := range []string{cert, key} {
		if err := os.WriteFile(f, []byte("pem"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	c := validSTS()
	c.RATrustAnchorARN = "arn:aws:rolesanywhere:eu-central-1:123456789012:trust-anchor/0f1e2d3c-4b5a-6978-8a9b-0c1d2e3f4a5b"
	c.RAProfileARN = "arn:aws:rolesanywhere:eu-central-1:123456789012:profile/9a8b7c6d-5e4f-3a2b-1c0d-e9f8a7b6c5d4"
	c.RACertificate, c.RAPrivateKey = cert, key
	return c
}

func TestValidateNamesTheProblem(t *testing.T) {
	cases := []struct {
		name   string
		mutate func(c *Config)
		want   string // substring of the error; "" means valid
	}{
		{"defaults with node and host IP are valid", func(c *Config) {}, ""},
		{"EKS session tags need the cluster name", func(c *Config) { c.SessionTags = "eks" }, "--session-tags=eks needs --cluster-name"},
		{"EKS session tags with a cluster name", func(c *Config) { c.SessionTags, c.ClusterName = "eks", "prod" }, ""},
		{"unknown session tag mode", func(c *Config) { c.SessionTags = "all" }, `--session-tags: session tag mode "all" is unknown`},
		{"cluster name unusable in a tag", func(c *Config) { c.ClusterName = "a b" }, `--cluster-name "a b"`},
		{"cluster ARN of another service", func(c *Config) { c.ClusterARN = "arn:aws:ecs:eu-west-1:123456789012:cluster/prod" }, "--cluster-arn"},
		{"cluster ARN naming another cluster", func(c *Config) {
			c.ClusterName, c.ClusterARN = "prod", "arn:aws:eks:eu-west-1:123456789012:cluster/dev"
		}, `--cluster-arn names cluster "dev" but --cluster-name is "prod"`},
		{"missing node", func(c *Config) { c.Node = "" }, "--node is empty"},
		{"bad interface entry names the flag", func(c *Config) { c.HostInterface = "cni0,,cali+" }, "--host-interface: host interface entry 2"},
		{"bad host IP", func(c *Config) { c.HostIP = "10.0.0" }, `--host-ip "10.0.0" is not a usable IP`},
		{"unspecified host IP", func(c *Config) { c.HostIP = "0.0.0.0" }, "--host-ip"},
		{"port out of range", func(c *Config) { c.AppPort = 70000 }, "--app-port 70000 is out of range: use 1..65535"},
		{"kube2iam's one port for metadata and metrics", func(c *Config) { c.MetricsPort = c.AppPort }, ""},
		{"empty interface list", func(c *Config) { c.HostInterface = " " }, "--host-interface: host interface list is empty"},
		{"empty interface without iptables is fine", func(c *Config) { c.HostInterface, c.IPTables = "", false }, ""},
		{"unknown iptables mode", func(c *Config) { c.IPTablesMode = "xt" }, `--iptables-mode: iptables mode "xt" is not known`},
		{"relative CNI bin dir names the flag and the default", func(c *Config) { c.CNI, c.CNIBinDir = true, "opt/cni/bin" }, `--cni-bin-dir "opt/cni/bin" is not an absolute path: give the host directory as mounted into the agent, e.g. /opt/cni/bin`},
		{"relative CNI conf dir", func(c *Config) { c.CNI, c.CNIConfDir = true, "net.d" }, `--cni-conf-dir "net.d" is not an absolute path`},
		{"relative CNI result cache names the flag and the default", func(c *Config) { c.CNIResultsDir = "results" }, `--cni-results-dir "results" is not an absolute path: give the runtime's result cache as mounted into the agent, e.g. /var/lib/cni/results`},
		{"the CNI result cache as the chart mounts it", func(c *Config) { c.CNIResultsDir = "/host/var/lib/cni/results" }, ""},
		{"CNI resync too short", func(c *Config) { c.CNI, c.CNIResync = true, time.Millisecond }, "--cni-resync 1ms is too short"},
		{"CNI paths unchecked without --cni", func(c *Config) { c.CNIBinDir = "bin" }, ""},
		{"unknown credential source", func(c *Config) { c.CredentialSource = "vault" }, `--credential-source "vault" is unknown: use auto, rolesanywhere or sts`},
		{"base ARN without trailing slash gets one, as kube2iam adds it", func(c *Config) { c.BaseRoleARN = "arn:aws:iam::123456789012:role" }, ""},
		{"base ARN with a role path", func(c *Config) { c.BaseRoleARN = "arn:aws:iam::123456789012:role/team/" }, ""},
		{"base ARN with a role path and no trailing slash", func(c *Config) { c.BaseRoleARN = "arn:aws:iam::123456789012:role/team" }, ""},
		{"base ARN with a bad account", func(c *Config) { c.BaseRoleARN = "arn:aws:iam::1234:role/" }, "--base-role-arn"},
		{"base ARN of a user", func(c *Config) { c.BaseRoleARN = "arn:aws:iam::123456789012:user/" }, "--base-role-arn"},
		{"GovCloud base ARN", func(c *Config) { c.BaseRoleARN = "arn:aws-us-gov:iam::123456789012:role/" }, ""},
		{"bad annotation key", func(c *Config) { c.IAMRoleKey = "iam role" }, "--iam-role-key"},
		{"bad restriction format", func(c *Config) { c.NamespaceRestrictionFormat = "re2" }, "glob or regexp"},
		{"session TTL too short", func(c *Config) { c.SessionTTL = time.Minute }, "15m to 12h"},
		{"ra flags with sts source", func(c *Config) {
			c.CredentialSource = sourceSTS
			c.RAProfileARN = "arn:aws:rolesanywhere:eu-central-1:123456789012:profile/x"
		}, "--ra-* flags are set"},
		{"forced rolesanywhere without flags", func(c *Config) { c.CredentialSource = sourceRolesAnywhere }, "--ra-trust-anchor-arn"},
		{"metadata address as an http URL, as the proxy documents", func(c *Config) { c.MetadataAddr = "http://169.254.169.254" }, ""},
		{"metadata address as a host name and port", func(c *Config) { c.MetadataAddr = "localhost:1338" }, ""},
		{"metadata address over https is refused", func(c *Config) { c.MetadataAddr = "https://169.254.169.254" }, "--metadata-addr"},
		{"metadata address with a path is refused", func(c *Config) { c.MetadataAddr = "http://169.254.169.254/latest" }, "--metadata-addr"},
		{"metadata none", func(c *Config) { c.MetadataAddr = "none" }, ""},
		{"hostile allow path", func(c *Config) { c.MetadataAllowPaths = stringList{"/latest/../user-data"} }, "--metadata-allow-path"},
		{"allow path reaching the node's credentials by case", func(c *Config) {
			c.MetadataAllowPaths = stringList{"meta-data/tags/instance/**", "meta-data/Identity-Credentials/**"}
		}, `--metadata-allow-path: metadata allow path "meta-data/Identity-Credentials/**" would match meta-data/identity-credentials`},
		{"ipv6 without address: found at start", func(c *Config) { c.IPv6 = true }, ""},
		{"ipv6 with an IPv4 address", func(c *Config) { c.IPv6, c.HostIPv6 = true, "10.0.0.1" }, "--host-ipv6"},
		{"host IPs not addresses", func(c *Config) { c.HostIPs = "10.0.0.1,node-a" }, "--host-ips"},
		{"bad log format", func(c *Config) { c.LogFormat = "xml" }, "--log-format"},
		{"zero upstream qps", func(c *Config) { c.UpstreamQPS = 0 }, "--upstream-qps"},
		{"empty pod identity audience", func(c *Config) { c.PodIdentityAudience = "" }, "--pod-identity-audience"},
		{"pod identity audience with a space", func(c *Config) { c.PodIdentityAudience = "kube 2ra" }, "--pod-identity-audience"},
		{"EKS's audience for the token door", func(c *Config) { c.PodIdentity, c.PodIdentityAudience = true, "pods.eks.amazonaws.com" }, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := validSTS()
			tc.mutate(c)
			err := c.Validate()
			if tc.want == "" {
				if err != nil {
					t.Fatalf("want valid, got %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("want error containing %q, got %v", tc.want, err)
			}
		})
	}
}

// TestIPv6FirstNodeServesOnItsIPv4Address: on an IPv6-first dual-stack
// node the downward API's status.hostIP (HOST_IP) is the IPv6 address; the
// IPv4 redirect of 169.254.169.254 needs the IPv4 one, taken from
// HOST_IPS, and with none the error names the fix.
func TestIPv6FirstNodeServesOnItsIPv4Address(t *testing.T) {
	cases := []struct {
		name, hostIP, hostIPs string
		want, wantFirst       string // wantFirst: the IPv6 address replaced
		wantErr               string
	}{
		{name: "IPv4-first: kept", hostIP: "10.0.0.5", hostIPs: "10.0.0.5,fd00:10::5", want: "10.0.0.5"},
		{name: "IPv6-first: the IPv4 of HOST_IPS", hostIP: "fd00:10::5", hostIPs: "fd00:10::5, 10.0.0.5", want: "10.0.0.5", wantFirst: "fd00:10::5"},
		{name: "IPv4-mapped: the IPv4 address itself", hostIP: "::ffff:10.0.0.5", want: "::ffff:10.0.0.5"},
		{name: "link-local IPv4 is no node address", hostIP: "fd00:10::5", hostIPs: "fd00:10::5,169.254.3.3", wantErr: "set --host-ip to it"},
		{name: "no HOST_IPS (Kubernetes before 1.29)", hostIP: "fd00:10::5", wantErr: "--host-ip fd00:10::5 is IPv6 and --host-ips (HOST_IPS) has no IPv4 address"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := validSTS()
			c.HostIP, c.HostIPs = tc.hostIP, tc.hostIPs
			err := c.Validate()
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("want an error containing %q, got %v", tc.wantErr, err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if c.HostIP != tc.want || c.parsed.hostIP.String() != netip.MustParseAddr(tc.want).String() {
				t.Errorf("HostIP = %q (parsed %s), want %q", c.HostIP, c.parsed.hostIP, tc.want)
			}
			if got := c.parsed.hostIPv6First; (tc.wantFirst == "" && got.IsValid()) || (tc.wantFirst != "" && got.String() != tc.wantFirst) {
				t.Errorf("hostIPv6First = %s, want %q", got, tc.wantFirst)
			}
			if rc := nodeRulesConfig(c); rc.HostIP != c.parsed.hostIP {
				t.Errorf("the redirect targets %s, want %s", rc.HostIP, c.parsed.hostIP)
			}
		})
	}
}

// TestSessionTagsFlagKeepsItsBooleanSpelling: --session-tags alone (the
// bool flag it was) still means kube2ra's tags; a value picks the mode.
func TestSessionTagsFlagKeepsItsBooleanSpelling(t *testing.T) {
	for args, want := range map[string]string{"": "off", "--session-tags": "true", "--session-tags=false": "false", "--session-tags=eks": "eks"} {
		c := NewConfig()
		parseRunFlags(t, c, args)
		if c.SessionTags != want {
			t.Errorf("%q: SessionTags = %q, want %q", args, c.SessionTags, want)
		}
	}
}

func TestValidateRolesAnywhere(t *testing.T) {
	c := validRA(t)
	if err := c.Validate(); err != nil {
		t.Fatalf("valid Roles Anywhere config refused: %v", err)
	}
	if c.resolvedSource() != sourceRolesAnywhere || c.resolvedMetadataAddr() != proxy.MetadataAddrNone {
		t.Fatalf("auto source with a trust anchor: got %s, metadata %s", c.resolvedSource(), c.resolvedMetadataAddr())
	}
	c.RACertificate = filepath.Join(t.TempDir(), "missing.crt")
	if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "--ra-certificate") {
		t.Fatalf("missing certificate: got %v", err)
	}
	c = validRA(t)
	c.RATrustAnchorARN = c.RAProfileARN
	if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "is not a Roles Anywhere trust-anchor ARN") {
		t.Fatalf("profile ARN as trust anchor: got %v", err)
	}
}

func TestValidateReportsEveryProblem(t *testing.T) {
	c := NewConfig()
	c.AppPort = 0
	err := c.Validate()
	if err == nil {
		t.Fatal("want errors")
	}
	for _, want := range []string{"--node", "--host-ip", "--app-port"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error does not name %s: %v", want, err)
		}
	}
}

// parseRunFlags binds c to run's flags and parses args (space separated).
func parseRunFlags(t *testing.T, c *Config, args string) *flag.FlagSet {
	t.Helper()
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	c.BindFlags(fs)
	if err := fs.Parse(strings.Fields(args)); err != nil {
		t.Fatalf("%q: %v", args, err)
	}
	c.explicit = givenFlags(fs)
	return fs
}

func TestEnvironmentFillsUnsetFlagsOnly(t *testing.T) {
	env := map[string]string{
		"KUBE2RA_APP_PORT":            "9000",
		"KUBE2RA_DEFAULT_ROLE":        "from-env",
		"NODE_NAME":                   "node-env",
		"HOST_IP":                     "10.0.0.1",
		"KUBE2RA_HOST_IP":             "10.0.0.2",
		"KUBE2RA_METADATA_ALLOW_PATH": "meta-data/tags/instance/**",
	}
	c := NewConfig()
	fs := parseRunFlags(t, c, "--default-role=from-flag")
	if err := applyEnv(fs, func(k string) string { return env[k] }); err != nil {
		t.Fatal(err)
	}
	if c.AppPort != 9000 || c.DefaultRole != "from-flag" || c.Node != "node-env" || c.HostIP != "10.0.0.2" {
		t.Fatalf("got port %d, default role %q, node %q, host IP %q", c.AppPort, c.DefaultRole, c.Node, c.HostIP)
	}
	if len(c.MetadataAllowPaths) != 1 {
		t.Fatalf("allow paths from env: %v", c.MetadataAllowPaths)
	}

	fs = flag.NewFlagSet("run", flag.ContinueOnError)
	NewConfig().BindFlags(fs)
	err := applyEnv(fs, func(k string) string {
		if k == "KUBE2RA_APP_PORT" {
			return "eighty"
		}
		return ""
	})
	if err == nil || !strings.Contains(err.Error(), "KUBE2RA_APP_PORT") || !strings.Contains(err.Error(), "--app-port") {
		t.Fatalf("bad env value: got %v", err)
	}
}

func TestHelpListsEveryFlag(t *testing.T) {
	var out strings.Builder
	usage(&out)
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	NewConfig().BindFlags(fs)
	fs.VisitAll(func(f *flag.Flag) {
		if !strings.Contains(out.String(), "-"+f.Name) {
			t.Errorf("--help does not list --%s", f.Name)
		}
	})
}

func TestReadmeDocumentsEveryFlag(t *testing.T) {
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	NewConfig().BindFlags(fs)
	fs.Bool("dry-run", false, "") // run's own, outside Config
	fs.VisitAll(func(f *flag.Flag) {
		if !strings.Contains(string(readme), "| `--"+f.Name+"` |") {
			t.Errorf("README.md's flag table has no row for --%s", f.Name)
		}
	})
	// And no row documents a flag run does not have.
	_, table, _ := strings.Cut(string(readme), "\n## Flags\n")
	table, _, _ = strings.Cut(table, "\n## ")
	for _, m := range regexp.MustCompile("(?m)^\\| `--([a-z0-9-]+)` \\|").FindAllStringSubmatch(table, -1) {
		if fs.Lookup(m[1]) == nil {
			t.Errorf("README.md's flag table documents --%s, which kube2ra run does not have", m[1])
		}
	}
}

// TestSubcommandHelpPrintsTheFlagsOnce: `kube2ra run --help` lists each
// flag once, on stdout, and exits 0 (flag's own usage printed it a second
// time on stderr).
func TestSubcommandHelpPrintsTheFlagsOnce(t *testing.T) {
	for _, args := range [][]string{{"run", "--help"}, {"run", "-h"}, {"cleanup", "--help"}} {
		t.Run(strings.Join(args, " "), func(t *testing.T) {
			var out, errOut strings.Builder
			if code := dispatch(args, &out, &errOut); code != 0 {
				t.Fatalf("exit %d, want 0; stderr:\n%s", code, errOut.String())
			}
			if errOut.Len() != 0 {
				t.Errorf("help also went to stderr:\n%s", errOut.String())
			}
			if n := strings.Count(out.String(), "\n  -"); n == 0 || strings.Count(out.String(), "-help") > 0 {
				t.Errorf("help lists %d flags:\n%s", n, out.String())
			}
			seen := map[string]int{}
			for _, line := range strings.Split(out.String(), "\n") {
				if name, ok := strings.CutPrefix(line, "  -"); ok {
					seen[strings.Fields(name)[0]]++
				}
			}
			for name, n := range seen {
				if n != 1 {
					t.Errorf("--%s is listed %d times", name, n)
				}
			}
		})
	}
}

func TestLifetimeWarnings(t *testing.T) {
	for _, tc := range []struct {
		name   string
		mutate func(*Config)
		want   []string
	}{
		{name: "defaults need no warning", mutate: func(*Config) {}},
		{name: "a min TTL below the SDKs' floor says boto3 signs with expired credentials",
			mutate: func(c *Config) { c.CredentialMinTTL = time.Minute }, want: []string{"sign requests with expired credentials"}},
		{name: "15-minute sessions say they are refreshed every 4 minutes",
			mutate: func(c *Config) { c.SessionTTL = 15 * time.Minute }, want: []string{"refreshed upstream about every 4m0s", "--iam-role-session-ttl to 22m0s"}},
		{name: "30-minute sessions need no warning", mutate: func(c *Config) { c.SessionTTL = 30 * time.Minute }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := NewConfig()
			tc.mutate(c)
			got := strings.Join(c.LifetimeWarnings(), "\n")
			if len(tc.want) == 0 && got != "" {
				t.Errorf("warnings %q, want none", got)
			}
			for _, w := range tc.want {
				if !strings.Contains(got, w) {
					t.Errorf("warnings %q do not say %q", got, w)
				}
			}
		})
	}
}

// TestDryRunValidatesLikeRun: --dry-run checks flags and environment as run
// does, prints the effective configuration and exits 0, or exits 2 with one
// line per problem, and starts nothing (no API server is reachable here).
func TestDryRunValidatesLikeRun(t *testing.T) {
	t.Setenv("KUBE2RA_BASE_ROLE_ARN", "arn:aws:iam::123456789012:role/team")
	var out, errOut strings.Builder
	code := dispatch([]string{"run", "--dry-run", "--node=n", "--host-ip=10.0.0.1", "--kubeconfig=/nonexistent"}, &out, &errOut)
	if code != 0 {
		t.Fatalf("exit %d, want 0; stderr:\n%s", code, errOut.String())
	}
	for _, want := range []string{"--base-role-arn=arn:aws:iam::123456789012:role/team", `base role ARN "arn:aws:iam::123456789012:role/team/"`, "credential source sts", "http://169.254.169.254"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("dry run output lacks %q:\n%s", want, out.String())
		}
	}

	t.Setenv("KUBE2RA_BASE_ROLE_ARN", "arn:aws:iam::12:role/")
	out.Reset()
	errOut.Reset()
	code = dispatch([]string{"run", "--dry-run", "--node=n", "--host-ip=10.0.0.1"}, &out, &errOut)
	if code != exitUsage || out.Len() != 0 {
		t.Fatalf("bad environment value: exit %d, stdout %q; want %d and nothing printed", code, out.String(), exitUsage)
	}
	if lines := strings.Split(strings.TrimSpace(errOut.String()), "\n"); len(lines) != 1 || !strings.Contains(lines[0], "--base-role-arn") {
		t.Fatalf("want one line naming --base-role-arn, got:\n%s", errOut.String())
	}
}

// TestEndpointWarnings: an AWS endpoint over plain http on a non-loopback
// host is warned about at start; https, and loopback test fakes, are not.
func TestEndpointWarnings(t *testing.T) {
	for _, tc := range []struct {
		sts, ra string
		want    []string
	}{
		{sts: "https://sts.eu-west-1.amazonaws.com", ra: "https://rolesanywhere.eu-west-1.amazonaws.com"},
		{sts: "http://127.0.0.1:8443", ra: "http://localhost:9000"},
		{sts: "http://10.0.0.7:8080", want: []string{"--sts-endpoint http://10.0.0.7:8080 is plain http"}},
		{ra: "http://ra-proxy.internal", want: []string{"--ra-endpoint http://ra-proxy.internal is plain http"}},
	} {
		c := validSTS()
		c.STSEndpoint, c.RAEndpoint = tc.sts, tc.ra
		got := c.EndpointWarnings()
		if len(got) != len(tc.want) {
			t.Errorf("%q %q: warnings %q, want %d", tc.sts, tc.ra, got, len(tc.want))
			continue
		}
		for i, w := range tc.want {
			if !strings.Contains(got[i], w) {
				t.Errorf("warning %q lacks %q", got[i], w)
			}
		}
	}
}
