package plugin

import (
	"net/netip"
	"strings"
	"testing"
)

func TestConfigValidateNamesEveryBadField(t *testing.T) {
	cases := []struct {
		name   string
		change func(*Config)
		want   string
	}{
		{"valid", func(*Config) {}, ""},
		{"valid IPv4 only", func(c *Config) { c.NodeIPv6, c.Redirect = netip.Addr{}, c.Redirect[:2] }, ""},
		{"another plugin's type", func(c *Config) { c.Type = "bridge" }, `type "bridge"`},
		{"node IP missing", func(c *Config) { c.NodeIP = netip.Addr{} }, "nodeIP"},
		{"node IP is IPv6", func(c *Config) { c.NodeIP = netip.MustParseAddr("fd00::1") }, "nodeIP"},
		{"node IP loopback", func(c *Config) { c.NodeIP = netip.MustParseAddr("127.0.0.1") }, "nodeIP"},
		{"node IPv6 is IPv4", func(c *Config) { c.NodeIPv6 = netip.MustParseAddr("10.0.0.1") }, "nodeIPv6"},
		{"no port", func(c *Config) { c.Port = 0 }, "port is 0"},
		{"no redirect", func(c *Config) { c.Redirect = nil }, "redirect is empty"},
		{"IPv6 redirect without node IPv6", func(c *Config) { c.NodeIPv6 = netip.Addr{} }, "nodeIPv6 is not set"},
		{"auto backend", func(c *Config) { c.IPTablesBackend = "auto" }, "iptablesBackend"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := testConfig()
			tc.change(&c)
			err := c.Validate()
			if tc.want == "" {
				if err != nil {
					t.Fatalf("Validate = %v, want nil", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Validate = %v, want an error naming %q", err, tc.want)
			}
		})
	}
}

func TestParseConfigReadsTheRuntimesStdin(t *testing.T) {
	c, err := ParseConfig([]byte(`{"cniVersion":"1.0.0","name":"k8s","type":"kube2ra-cni","nodeIP":"10.0.0.1","port":8181,
		"redirect":["169.254.169.254:80"],"iptablesBackend":"legacy","prevResult":{"cniVersion":"1.0.0"}}`))
	if err != nil {
		t.Fatal(err)
	}
	if c.NodeIP.String() != "10.0.0.1" || c.Port != 8181 || len(c.Redirect) != 1 || c.IPTablesBackend != "legacy" {
		t.Errorf("parsed %+v", c)
	}
	_, err = ParseConfig([]byte(`{"type":"kube2ra-cni","nodeIP":"10.0.0.1","port":8181,"redirect":["169.254.169.254"],"iptablesBackend":"nft"}`))
	if err == nil || !strings.Contains(err.Error(), "not valid JSON") {
		t.Errorf("a redirect address without a port: %v, want a JSON error", err)
	}
	_, err = ParseConfig([]byte(`{"type":"kube2ra-cni"}`))
	if err == nil || !strings.Contains(err.Error(), "reinstall the plugin's entry") {
		t.Errorf("empty entry: %v, want the fix named", err)
	}
}
