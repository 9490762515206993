// Package plugin is kube2ra's chained CNI plugin: for every pod sandbox the
// container runtime creates, it writes the metadata redirect into the pod's
// own network namespace, where it applies before any dataplane (netfilter
// on the host or eBPF) sees the packet. It needs no API server and no
// running agent. The agent's installer (cni/install) writes this
// configuration into the node's conflist; the plugin never imports it.
package plugin

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"slices"
)

// PluginType is the plugin's binary name and its conflist entry's "type".
const PluginType = "kube2ra-cni"

// Config is the plugin's entry in the primary conflist, written by the agent
// (cni/install) from its own flags. Field names are the JSON keys.
type Config struct {
	// Type is PluginType.
	Type string `json:"type"`
	// NodeIP is the node's IPv4 address the agent listens on (--host-ip):
	// the in-pod DNAT target.
	NodeIP netip.Addr `json:"nodeIP"`
	// NodeIPv6 is the IPv6 DNAT target; unset when IPv6 is off.
	NodeIPv6 netip.Addr `json:"nodeIPv6,omitzero"`
	// Port is the agent's proxy port (--app-port).
	Port uint16 `json:"port"`
	// Redirect lists the addresses (port 80) the pod's traffic to which is
	// sent to NodeIP:Port (or NodeIPv6:Port): 169.254.169.254, and with the
	// token door 169.254.170.23, plus fd00:ec2::254 and fd00:ec2::23 with IPv6.
	Redirect []netip.AddrPort `json:"redirect"`
	// Refuse lists addresses (with their ports) the pod is refused, by the
	// guard alone, without a redirect: fd00:ec2::254:80 (and fd00:ec2::23:80
	// with the token door) on a node with IPv6 where the agent's IPv6 is
	// off, as the host's IPv6 guard does. Optional; added after the
	// contract, so an entry without it keeps its meaning.
	Refuse []netip.AddrPort `json:"refuse,omitempty"`
	// IPTablesBackend is "nft" or "legacy": the backend the agent detected
	// on the host, so the rules in every pod use the same one.
	IPTablesBackend string `json:"iptablesBackend"`
}

// Validate names every bad value, with what the agent should have written.
func (c Config) Validate() error {
	var errs []error
	if c.Type != PluginType {
		errs = append(errs, fmt.Errorf("type %q: this plugin is %q", c.Type, PluginType))
	}
	if !c.NodeIP.IsValid() || !c.NodeIP.Is4() || c.NodeIP.IsUnspecified() || c.NodeIP.IsLoopback() {
		errs = append(errs, fmt.Errorf("nodeIP %q: need the node's own unicast IPv4 address (the agent's --host-ip)", c.NodeIP))
	}
	if c.NodeIPv6.IsValid() && (!c.NodeIPv6.Is6() || c.NodeIPv6.Is4In6() || c.NodeIPv6.IsUnspecified() || c.NodeIPv6.IsLoopback()) {
		errs = append(errs, fmt.Errorf("nodeIPv6 %q: need the node's own unicast IPv6 address, or leave it out", c.NodeIPv6))
	}
	if c.Port == 0 {
		errs = append(errs, errors.New("port is 0: need the agent's proxy port (--app-port)"))
	}
	if len(c.Redirect) == 0 {
		errs = append(errs, errors.New("redirect is empty: need at least 169.254.169.254:80"))
	}
	for _, a := range c.Redirect {
		if a.Addr().Is6() && !c.NodeIPv6.IsValid() {
			errs = append(errs, fmt.Errorf("redirect %s is IPv6 but nodeIPv6 is not set", a))
		}
	}
	for _, a := range c.Refuse {
		if slices.Contains(c.Redirect, a) {
			errs = append(errs, fmt.Errorf("refuse %s is also in redirect: an address is either redirected or refused", a))
		}
	}
	for _, a := range slices.Concat(c.Redirect, c.Refuse) {
		if !a.IsValid() || a.Port() == 0 {
			errs = append(errs, fmt.Errorf("address %q needs an IP and a port, such as 169.254.169.254:80", a))
		}
	}
	switch c.IPTablesBackend {
	case "nft", "legacy":
	default:
		errs = append(errs, fmt.Errorf("iptablesBackend %q: use \"nft\" or \"legacy\" (the host's backend)", c.IPTablesBackend))
	}
	return errors.Join(errs...)
}

// ParseConfig reads the plugin's entry as the runtime passes it on stdin
// (other keys, such as prevResult, cniVersion and name, are ignored here).
func ParseConfig(stdin []byte) (Config, error) {
	var c Config
	if err := json.Unmarshal(stdin, &c); err != nil {
		return Config{}, fmt.Errorf("kube2ra-cni configuration is not valid JSON: %w", err)
	}
	if err := c.Validate(); err != nil {
		return Config{}, fmt.Errorf("kube2ra-cni configuration: %w; reinstall the plugin's entry (the kube2ra agent writes it)", err)
	}
	return c, nil
}
