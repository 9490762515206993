package main

import (
	"net"
	"testing"
)

func TestEKSAgentAddressIsNoticed(t *testing.T) {
	addr := func(s string) net.Addr {
		ip, n, err := net.ParseCIDR(s)
		if err != nil {
			t.Fatal(err)
		}
		return &net.IPNet{IP: ip, Mask: n.Mask}
	}
	tests := []struct {
		name  string
		addrs []net.Addr
		want  bool
	}{
		{"a node with only its own addresses", []net.Addr{addr("10.0.0.5/24"), addr("127.0.0.1/8"), addr("fe80::1/64")}, false},
		{"AWS's agent's IPv4 link", []net.Addr{addr("10.0.0.5/24"), addr("169.254.170.23/32")}, true},
		{"AWS's agent's IPv6 link", []net.Addr{addr("fd00:ec2::23/128")}, true},
		{"the metadata address is not the agent's", []net.Addr{addr("169.254.169.254/32")}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, got := eksAgentAddress(tt.addrs); got != tt.want {
				t.Fatalf("eksAgentAddress = %v, want %v", got, tt.want)
			}
		})
	}
}
