package iptables

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/sirupsen/logrus"
	"k8s.io/utils/clock"
)

// Mode selects the iptables backend: the nf_tables or the legacy (x_tables)
// variant of the iptables binary.
type Mode string

const (
	// ModeAuto picks the backend the host already uses, as Kubernetes'
	// iptables wrappers do.
	ModeAuto Mode = "auto"
	// ModeNFT uses iptables-nft and ip6tables-nft.
	ModeNFT Mode = "nft"
	// ModeLegacy uses iptables-legacy and ip6tables-legacy.
	ModeLegacy Mode = "legacy"
)

// ParseMode reads an --iptables-mode value.
func ParseMode(s string) (Mode, error) {
	switch m := Mode(strings.TrimSpace(s)); m {
	case ModeAuto, ModeNFT, ModeLegacy:
		return m, nil
	case "":
		return ModeAuto, nil
	default:
		return "", fmt.Errorf("iptables mode %q is not known: use auto, nft or legacy", s)
	}
}

// DefaultLockTimeout bounds how long one iptables command waits for the
// xtables lock (/run/xtables.lock) that the host's other iptables users hold.
const DefaultLockTimeout = 5 * time.Second

// maxInterfaceNameLen is IFNAMSIZ-1, the longest name the kernel and
// iptables' -i accept (a trailing '+' counts).
const maxInterfaceNameLen = 15

// interfaceForms is quoted in every interface error so the fix is at hand.
const interfaceForms = "accepted forms: an exact name (cni0), a prefix wildcard (cali+), a negation (!eth0, !cali+); names at most 15 characters of letters, digits, '.', '-' and '_'; entries separated by commas"

// InterfaceSpec is one entry of --host-interface: which pod-facing
// interfaces the DNAT applies to.
type InterfaceSpec struct {
	// Name is the interface name as iptables' -i takes it; a trailing '+'
	// makes it a prefix wildcard.
	Name string
	// Negated makes the rule match every interface except Name.
	Negated bool
}

// Wildcard reports whether the entry matches every interface with the
// prefix before its trailing '+', including interfaces created later.
func (s InterfaceSpec) Wildcard() bool { return strings.HasSuffix(s.Name, "+") }

// String gives the entry back in --host-interface form.
func (s InterfaceSpec) String() string {
	if s.Negated {
		return "!" + s.Name
	}
	return s.Name
}

// ParseInterfaces reads a --host-interface comma list such as
// "cni0,cali+,!eth0". Interfaces need not exist yet.
func ParseInterfaces(list string) ([]InterfaceSpec, error) {
	if strings.TrimSpace(list) == "" {
		return nil, fmt.Errorf("host interface list is empty: name at least one pod-facing interface (%s)", interfaceForms)
	}
	var specs []InterfaceSpec
	seen := make(map[InterfaceSpec]bool)
	for i, entry := range strings.Split(list, ",") {
		spec, err := parseInterface(strings.TrimSpace(entry))
		if err != nil {
			return nil, fmt.Errorf("host interface entry %d of %q: %w", i+1, list, err)
		}
		if seen[spec] {
			return nil, fmt.Errorf("host interface entry %d of %q: %q is listed twice: list each interface once", i+1, list, spec.String())
		}
		seen[spec] = true
		specs = append(specs, spec)
	}
	return specs, nil
}

func parseInterface(entry string) (InterfaceSpec, error) {
	var spec InterfaceSpec
	if entry == "" {
		return spec, fmt.Errorf("empty entry: remove the extra comma (%s)", interfaceForms)
	}
	name := entry
	if rest, ok := strings.CutPrefix(entry, "!"); ok {
		spec.Negated = true
		name = strings.TrimSpace(rest)
	}
	if err := validateInterfaceName(name); err != nil {
		return spec, fmt.Errorf("%q: %w (%s)", entry, err, interfaceForms)
	}
	spec.Name = name
	return spec, nil
}

func validateInterfaceName(name string) error {
	base := strings.TrimSuffix(name, "+")
	switch {
	case name == "":
		return errors.New("no interface name after '!'")
	case len(name) > maxInterfaceNameLen:
		return fmt.Errorf("name is %d characters, longer than %d", len(name), maxInterfaceNameLen)
	case base == "." || base == "..":
		return errors.New("'.' and '..' are not interface names")
	case base == "":
		return errors.New("a bare '+' would match every interface: name a prefix (cali+) or use a negation (!eth0)")
	}
	for _, r := range base {
		ok := r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '.' || r == '-' || r == '_'
		if !ok {
			return fmt.Errorf("character %q is not allowed", r)
		}
	}
	return nil
}

// Config is what the iptables package needs to redirect pods' metadata
// traffic to kube2ra. cmd/kube2ra builds it from the flags.
type Config struct {
	// HostIP is the node's IPv4 address kube2ra listens on (--host-ip).
	HostIP netip.Addr
	// Port is kube2ra's proxy port (--app-port).
	Port int
	// Interfaces are the pod-facing interfaces (--host-interface).
	Interfaces []InterfaceSpec
	// IPv6 also redirects fd00:ec2::254 with ip6tables (--ipv6).
	IPv6 bool
	// HostIPv6 is the IPv6 DNAT target when IPv6 is on.
	HostIPv6 netip.Addr
	// IPv6Guard installs the IPv6 guard (no DNAT) when IPv6 is off, for a node whose pods have IPv6: they are refused fd00:ec2::254 instead of reaching it.
	IPv6Guard bool
	// PodIdentity also redirects the EKS Pod Identity address (169.254.170.23:80, fd00:ec2::23:80 with IPv6) to HostIP:Port, from pods and from the node's own processes (--pod-identity).
	PodIdentity bool
	// Mode picks the iptables backend (--iptables-mode); empty means auto.
	Mode Mode
	// LockTimeout bounds each command's wait for the xtables lock; zero
	// means DefaultLockTimeout.
	LockTimeout time.Duration
	// Logger receives what the package decides and restores.
	Logger logrus.FieldLogger
	// Registerer takes the package's metrics; nil registers nothing.
	Registerer prometheus.Registerer
	// Clock drives the monitor; nil means the real clock.
	Clock clock.WithTicker
}

// Validate names every bad value in the configuration, with the accepted form.
func (c Config) Validate() error {
	var errs []error
	switch {
	case !c.HostIP.IsValid():
		errs = append(errs, errors.New("host IP is not set: pass the node's IPv4 address kube2ra listens on (--host-ip)"))
	case !c.HostIP.Unmap().Is4():
		errs = append(errs, fmt.Errorf("host IP %s is not an IPv4 address: pass the node's IPv4 address (--host-ip)", c.HostIP))
	case c.HostIP.IsUnspecified() || c.HostIP.IsLoopback() || c.HostIP.IsMulticast():
		errs = append(errs, fmt.Errorf("host IP %s cannot receive DNATed pod traffic: pass the node's own unicast, non-loopback IPv4 address (--host-ip)", c.HostIP))
	}
	if c.Port < 1 || c.Port > 65535 {
		errs = append(errs, fmt.Errorf("port %d is out of range: use 1-65535 (--app-port)", c.Port))
	}
	if len(c.Interfaces) == 0 {
		errs = append(errs, fmt.Errorf("no host interfaces: name the pod-facing interfaces (--host-interface; %s)", interfaceForms))
	}
	for _, s := range c.Interfaces {
		if err := validateInterfaceName(s.Name); err != nil {
			errs = append(errs, fmt.Errorf("host interface %q: %w (%s)", s.String(), err, interfaceForms))
		}
	}
	if c.IPv6 {
		switch {
		case !c.HostIPv6.IsValid():
			errs = append(errs, errors.New("IPv6 is on but the host IPv6 address is not set: pass the node's IPv6 address or turn IPv6 off (--ipv6=false)"))
		case !c.HostIPv6.Is6() || c.HostIPv6.Is4In6():
			errs = append(errs, fmt.Errorf("host IPv6 address %s is not an IPv6 address", c.HostIPv6))
		case c.HostIPv6.IsUnspecified() || c.HostIPv6.IsLoopback() || c.HostIPv6.IsMulticast():
			errs = append(errs, fmt.Errorf("host IPv6 address %s cannot receive DNATed pod traffic: pass the node's own unicast, non-loopback IPv6 address", c.HostIPv6))
		}
	}
	if _, err := ParseMode(string(c.Mode)); err != nil {
		errs = append(errs, err)
	}
	if c.LockTimeout < 0 {
		errs = append(errs, fmt.Errorf("xtables lock timeout %s is negative: use a positive duration or zero for the default %s", c.LockTimeout, DefaultLockTimeout))
	}
	return errors.Join(errs...)
}
