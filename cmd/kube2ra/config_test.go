package main

import (
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
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
		{"missing node", func(c *Config) { c.Node = "" }, "--node is empty"},
		{"bad host IP", func(c *Config) { c.HostIP = "10.0.0" }, `--host-ip "10.0.0" is not a usable IP`},
		{"unspecified host IP", func(c *Config) { c.HostIP = "0.0.0.0" }, "--host-ip"},
		{"port out of range", func(c *Config) { c.AppPort = 70000 }, "--app-port 70000 is out of range: use 1..65535"},
		{"same ports", func(c *Config) { c.MetricsPort = c.AppPort }, "both 8181"},
		{"empty interface list", func(c *Config) { c.HostInterface = " " }, "--host-interface is empty"},
		{"empty interface without iptables is fine", func(c *Config) { c.HostInterface, c.IPTables = "", false }, ""},
		{"unknown iptables mode", func(c *Config) { c.IPTablesMode = "xt" }, `--iptables-mode "xt" is unknown`},
		{"unknown credential source", func(c *Config) { c.CredentialSource = "vault" }, `--credential-source "vault" is unknown: use auto, rolesanywhere or sts`},
		{"base ARN without trailing slash", func(c *Config) { c.BaseRoleARN = "arn:aws:iam::123456789012:role" }, "--base-role-arn"},
		{"base ARN of a user", func(c *Config) { c.BaseRoleARN = "arn:aws:iam::123456789012:user/" }, "--base-role-arn"},
		{"GovCloud base ARN", func(c *Config) { c.BaseRoleARN = "arn:aws-us-gov:iam::123456789012:role/" }, ""},
		{"auto-discover-default-role refused", func(c *Config) { c.AutoDiscoverDefaultRole = true }, "never serves the node's own role"},
		{"bad annotation key", func(c *Config) { c.IAMRoleKey = "iam role" }, "--iam-role-key"},
		{"bad restriction format", func(c *Config) { c.NamespaceRestrictionFormat = "re2" }, "glob or regexp"},
		{"session TTL too short", func(c *Config) { c.SessionTTL = time.Minute }, "15m to 12h"},
		{"ra flags with sts source", func(c *Config) {
			c.CredentialSource = sourceSTS
			c.RAProfileARN = "arn:aws:rolesanywhere:eu-central-1:123456789012:profile/x"
		}, "--ra-* flags are set"},
		{"forced rolesanywhere without flags", func(c *Config) { c.CredentialSource = sourceRolesAnywhere }, "--ra-trust-anchor-arn"},
		{"bad metadata address", func(c *Config) { c.MetadataAddr = "metadata.local:80" }, "--metadata-addr"},
		{"metadata none", func(c *Config) { c.MetadataAddr = "none" }, ""},
		{"hostile allow path", func(c *Config) { c.MetadataAllowPaths = stringList{"/latest/../user-data"} }, "--metadata-allow-path"},
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

func TestValidateRolesAnywhere(t *testing.T) {
	c := validRA(t)
	if err := c.Validate(); err != nil {
		t.Fatalf("valid Roles Anywhere config refused: %v", err)
	}
	if c.resolvedSource() != sourceRolesAnywhere || c.resolvedMetadataAddr() != metadataNone {
		t.Fatalf("auto source with a trust anchor: got %s, metadata %s", c.resolvedSource(), c.resolvedMetadataAddr())
	}
	c.RACertificate = filepath.Join(t.TempDir(), "missing.crt")
	if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "--ra-certificate") {
		t.Fatalf("missing certificate: got %v", err)
	}
	c = validRA(t)
	c.RATrustAnchorARN = c.RAProfileARN
	if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "is not a trust anchor ARN") {
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
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	c.BindFlags(fs)
	if err := fs.Parse([]string{"--default-role=from-flag"}); err != nil {
		t.Fatal(err)
	}
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
	fs.VisitAll(func(f *flag.Flag) {
		if !strings.Contains(string(readme), "| `--"+f.Name+"` |") {
			t.Errorf("README.md's flag table has no row for --%s", f.Name)
		}
	})
}
