package iptables

import (
	"net/netip"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestParseInterfaces(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    []InterfaceSpec
		wantErr []string // substrings the error must contain
	}{
		{name: "exact name", in: "cni0", want: []InterfaceSpec{{Name: "cni0"}}},
		{name: "prefix wildcard", in: "cali+", want: []InterfaceSpec{{Name: "cali+"}}},
		{name: "negation", in: "!eth0", want: []InterfaceSpec{{Name: "eth0", Negated: true}}},
		{name: "negated wildcard", in: "!veth+", want: []InterfaceSpec{{Name: "veth+", Negated: true}}},
		{name: "several keep their order", in: "cni0,cali+,!eth0",
			want: []InterfaceSpec{{Name: "cni0"}, {Name: "cali+"}, {Name: "eth0", Negated: true}}},
		{name: "spaces around entries are ignored", in: " cni0 , cali+ ",
			want: []InterfaceSpec{{Name: "cni0"}, {Name: "cali+"}}},
		{name: "fifteen characters is the longest name", in: "abcdefghijklmn+",
			want: []InterfaceSpec{{Name: "abcdefghijklmn+"}}},
		{name: "dots dashes underscores are allowed", in: "eth0.100,br-1a_2",
			want: []InterfaceSpec{{Name: "eth0.100"}, {Name: "br-1a_2"}}},

		{name: "empty list is refused", in: "", wantErr: []string{"empty", "accepted forms"}},
		{name: "blank list is refused", in: "  ", wantErr: []string{"empty", "accepted forms"}},
		{name: "empty entry between commas is refused", in: "cni0,,eth0", wantErr: []string{"entry 2", "empty entry", "accepted forms"}},
		{name: "trailing comma is refused", in: "cni0,", wantErr: []string{"entry 2", "empty entry"}},
		{name: "bare negation is refused", in: "!", wantErr: []string{`"!"`, "no interface name"}},
		{name: "sixteen characters is too long", in: "abcdefghijklmnop", wantErr: []string{`"abcdefghijklmnop"`, "16 characters", "accepted forms"}},
		{name: "slash is refused", in: "eth0/1", wantErr: []string{`"eth0/1"`, `'/'`}},
		{name: "inner space is refused", in: "eth 0", wantErr: []string{`"eth 0"`, `' '`}},
		{name: "wildcard in the middle is refused", in: "ca+li", wantErr: []string{`"ca+li"`, `'+'`}},
		{name: "bare wildcard is refused", in: "+", wantErr: []string{"every interface"}},
		{name: "dot is refused", in: ".", wantErr: []string{"not interface names"}},
		{name: "duplicate is refused", in: "cni0,cni0", wantErr: []string{"entry 2", "listed twice"}},
		{name: "literal quotes from a shell are refused", in: "''", wantErr: []string{`"''"`, `'\''`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseInterfaces(tt.in)
			if len(tt.wantErr) > 0 {
				if err == nil {
					t.Fatalf("ParseInterfaces(%q) = %v, want an error", tt.in, got)
				}
				for _, s := range tt.wantErr {
					if !strings.Contains(err.Error(), s) {
						t.Errorf("ParseInterfaces(%q) error %q does not contain %q", tt.in, err, s)
					}
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseInterfaces(%q): %v", tt.in, err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("ParseInterfaces(%q) = %#v, want %#v", tt.in, got, tt.want)
			}
		})
	}
}

func TestInterfaceSpecStringRoundTrips(t *testing.T) {
	for _, in := range []string{"cni0", "cali+", "!eth0", "!veth+"} {
		specs, err := ParseInterfaces(in)
		if err != nil {
			t.Fatal(err)
		}
		if got := specs[0].String(); got != in {
			t.Errorf("String() = %q, want %q", got, in)
		}
	}
	if s := (InterfaceSpec{Name: "cali+"}); !s.Wildcard() {
		t.Error("cali+ is a wildcard")
	}
	if s := (InterfaceSpec{Name: "cni0"}); s.Wildcard() {
		t.Error("cni0 is not a wildcard")
	}
}

func TestParseMode(t *testing.T) {
	for in, want := range map[string]Mode{"": ModeAuto, "auto": ModeAuto, "nft": ModeNFT, "legacy": ModeLegacy} {
		got, err := ParseMode(in)
		if err != nil || got != want {
			t.Errorf("ParseMode(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	_, err := ParseMode("nftables")
	if err == nil || !strings.Contains(err.Error(), "auto, nft or legacy") {
		t.Errorf("ParseMode(nftables) error = %v, want one naming the accepted values", err)
	}
}

func validConfig() Config {
	return Config{
		HostIP:     netip.MustParseAddr("10.198.0.1"),
		Port:       8181,
		Interfaces: []InterfaceSpec{{Name: "cni0"}},
		Mode:       ModeNFT,
	}
}

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name    string
		edit    func(*Config)
		wantErr []string
	}{
		{name: "valid config passes", edit: func(*Config) {}},
		{name: "valid IPv6 config passes", edit: func(c *Config) {
			c.IPv6, c.HostIPv6 = true, netip.MustParseAddr("fd00::1")
		}},
		{name: "IPv4-mapped host IP is accepted", edit: func(c *Config) { c.HostIP = netip.MustParseAddr("::ffff:10.0.0.1") }},
		{name: "missing host IP", edit: func(c *Config) { c.HostIP = netip.Addr{} }, wantErr: []string{"host IP is not set", "--host-ip"}},
		{name: "IPv6 host IP", edit: func(c *Config) { c.HostIP = netip.MustParseAddr("fd00::1") }, wantErr: []string{"not an IPv4 address"}},
		{name: "loopback host IP", edit: func(c *Config) { c.HostIP = netip.MustParseAddr("127.0.0.1") }, wantErr: []string{"127.0.0.1", "non-loopback"}},
		{name: "unspecified host IP", edit: func(c *Config) { c.HostIP = netip.MustParseAddr("0.0.0.0") }, wantErr: []string{"0.0.0.0"}},
		{name: "port zero", edit: func(c *Config) { c.Port = 0 }, wantErr: []string{"port 0", "1-65535"}},
		{name: "port too big", edit: func(c *Config) { c.Port = 65536 }, wantErr: []string{"port 65536", "1-65535"}},
		{name: "no interfaces", edit: func(c *Config) { c.Interfaces = nil }, wantErr: []string{"no host interfaces", "accepted forms"}},
		{name: "bad interface built by hand", edit: func(c *Config) { c.Interfaces = []InterfaceSpec{{Name: "a/b"}} }, wantErr: []string{`"a/b"`}},
		{name: "IPv6 without address", edit: func(c *Config) { c.IPv6 = true }, wantErr: []string{"host IPv6 address is not set"}},
		{name: "IPv6 with an IPv4 address", edit: func(c *Config) {
			c.IPv6, c.HostIPv6 = true, netip.MustParseAddr("10.0.0.1")
		}, wantErr: []string{"not an IPv6 address"}},
		{name: "unknown mode", edit: func(c *Config) { c.Mode = "iptables" }, wantErr: []string{`"iptables"`, "auto, nft or legacy"}},
		{name: "negative lock timeout", edit: func(c *Config) { c.LockTimeout = -time.Second }, wantErr: []string{"negative"}},
		{name: "every problem is named at once", edit: func(c *Config) { c.Port = 0; c.Interfaces = nil },
			wantErr: []string{"port 0", "no host interfaces"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := validConfig()
			tt.edit(&c)
			err := c.Validate()
			if len(tt.wantErr) == 0 {
				if err != nil {
					t.Fatalf("Validate() = %v, want nil", err)
				}
				return
			}
			if err == nil {
				t.Fatal("Validate() = nil, want an error")
			}
			for _, s := range tt.wantErr {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("Validate() error %q does not contain %q", err, s)
				}
			}
		})
	}
}

func TestInterfaceSpecMatchesAsIptablesDoes(t *testing.T) {
	tests := []struct {
		list, iface string
		want        bool
	}{
		{"cni0", "cni0", true}, {"cni0", "cni01", false}, {"cali+", "cali12ab", true}, {"cali+", "eth0", false},
		{"!eth0", "eth0", false}, {"!eth0", "lxc1", true}, {"!cali+", "cali1", false}, {"cni0,cali+", "cali9", true},
	}
	for _, tt := range tests {
		specs, err := ParseInterfaces(tt.list)
		if err != nil {
			t.Fatal(err)
		}
		if got := Covers(specs, tt.iface); got != tt.want {
			t.Errorf("Covers(%q, %q) = %v, want %v", tt.list, tt.iface, got, tt.want)
		}
	}
}
