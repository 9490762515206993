package iptables

import (
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"strings"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Matches reports whether the entry matches the interface name as
// iptables' -i does: exactly, by prefix with a trailing '+', or negated.
func (s InterfaceSpec) Matches(iface string) bool {
	var m bool
	if prefix, wild := strings.CutSuffix(s.Name, "+"); wild {
		m = strings.HasPrefix(iface, prefix)
	} else {
		m = iface == s.Name
	}
	return m != s.Negated
}

// Covers reports whether traffic arriving on iface meets one of the DNAT
// rules: each entry is a rule of its own, so any match is enough.
func Covers(specs []InterfaceSpec, iface string) bool {
	for _, s := range specs {
		if s.Matches(iface) {
			return true
		}
	}
	return false
}

// Uncovered is a pod address whose traffic the DNAT does not see.
type Uncovered struct {
	// IP is the pod's address.
	IP netip.Addr
	// Interface is where the node's route to it goes out, so where the
	// pod's packets come in.
	Interface string
}

// ErrNoRoute is RouteInterface's error when the node has no route to the
// address at all (none, or an "unreachable" one): nothing the
// node sends reaches it, so no answer, the metadata service's included,
// gets back to a pod there.
var ErrNoRoute = errors.New("the node has no route")

// RouteInterface names the interface the node's route to ip goes out of,
// read from the kernel over netlink. It returns an error wrapping
// ErrNoRoute when there is no such route.
func RouteInterface(ip netip.Addr) (string, error) {
	routes, err := netlink.RouteGet(ip.AsSlice())
	if errors.Is(err, unix.ENETUNREACH) || errors.Is(err, unix.EHOSTUNREACH) {
		return "", fmt.Errorf("%w to %s: %w", ErrNoRoute, ip, err)
	}
	if err != nil {
		return "", fmt.Errorf("looking up the route to %s: %w", ip, err)
	}
	if len(routes) == 0 || routes[0].LinkIndex == 0 {
		return "", fmt.Errorf("%w to %s", ErrNoRoute, ip)
	}
	link, err := netlink.LinkByIndex(routes[0].LinkIndex)
	if err != nil {
		return "", fmt.Errorf("reading interface %d of the route to %s: %w", routes[0].LinkIndex, ip, err)
	}
	return link.Attrs().Name, nil
}

// Coverage is what the node's routes say about its pods' addresses.
type Coverage struct {
	// Uncovered are addresses whose route leaves through an interface no
	// --host-interface entry matches: their metadata requests miss the DNAT.
	Uncovered []Uncovered
	// Unroutable are addresses the node has no route to (ErrNoRoute): a
	// pod there gets no answer from anyone, so it is neither served nor
	// exposed.
	Unroutable []netip.Addr
}

// CheckCoverage reads the node's route to each pod address and sorts out
// the ones --host-interface misses and the ones with no route. An address
// whose route cannot be read for another reason is reported in the error,
// as it is not known to be covered.
func CheckCoverage(specs []InterfaceSpec, ips []netip.Addr) (Coverage, error) {
	var out Coverage
	var errs []string
	for _, ip := range ips {
		iface, err := RouteInterface(ip)
		switch {
		case errors.Is(err, ErrNoRoute):
			out.Unroutable = append(out.Unroutable, ip)
		case err != nil:
			errs = append(errs, err.Error())
		case !Covers(specs, iface):
			out.Uncovered = append(out.Uncovered, Uncovered{IP: ip, Interface: iface})
		}
	}
	if len(errs) > 0 {
		return out, fmt.Errorf("%s", strings.Join(errs, "; "))
	}
	return out, nil
}

// KernelHasIPv6 reports whether the kernel has IPv6 (it does unless booted
// with ipv6.disable=1): /proc/net/if_inet6 exists. Unsure (any other
// error) counts as yes, so the IPv6 guard goes in.
func KernelHasIPv6() bool {
	_, err := os.Stat("/proc/net/if_inet6")
	return !errors.Is(err, fs.ErrNotExist)
}

// NodeIPv6Addrs lists the node's IPv6 addresses that pods could reach it
// on: global unicast, unique local included; link-local, loopback and
// tentative (DAD) addresses are left out. A node with one has IPv6
// connectivity to pods worth guarding.
func NodeIPv6Addrs() ([]netip.Addr, error) {
	addrs, err := netlink.AddrList(nil, netlink.FAMILY_V6)
	if err != nil {
		return nil, fmt.Errorf("listing the node's IPv6 addresses: %w", err)
	}
	var out []netip.Addr
	for _, a := range addrs {
		ip, ok := netip.AddrFromSlice(a.IP)
		if ok && ip.IsGlobalUnicast() && a.Flags&unix.IFA_F_TENTATIVE == 0 {
			out = append(out, ip)
		}
	}
	return out, nil
}
