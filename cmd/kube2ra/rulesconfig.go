package main

import "github.com/kube2ra/kube2ra/iptables"

// nodeRulesConfig is the DNAT and guard rules' configuration from the
// agent's validated settings, without logger, metrics and the IPv6 guard
// decision: what the agent installs and `kube2ra explain --node` checks.
func nodeRulesConfig(cfg *Config) iptables.Config {
	return iptables.Config{
		HostIP:      cfg.parsed.hostIP,
		HostIPv6:    cfg.parsed.hostIPv6,
		Port:        cfg.AppPort,
		Interfaces:  cfg.parsed.interfaces,
		IPv6:        cfg.IPv6,
		Mode:        cfg.parsed.iptablesMode,
		PodIdentity: cfg.PodIdentity,
	}
}
