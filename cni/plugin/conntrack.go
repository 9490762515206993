package plugin

import (
	"errors"
	"fmt"
	"net"
	"syscall"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// conntrackAttempts bounds the retries of a conntrack dump the kernel
// interrupted because the table changed while it was read.
const conntrackAttempts = 3

// flushConntrack removes the namespace's conntrack entries of TCP
// connections to the redirected and refused addresses. A NAT rule applies only to a
// connection's first packet: a keep-alive connection the pod opened
// before the redirect existed would otherwise keep talking to the node's
// metadata service. Once its entry is gone the connection's next packet
// is a new one to the kernel, so it meets the redirect (or the guard)
// like any other. The netlink socket is opened in the pod's namespace;
// this thread never switches.
func flushConntrack(netnsPath string, fams []family) error {
	nsh, err := netns.GetFromPath(netnsPath)
	if err != nil {
		return fmt.Errorf("opening the namespace to remove conntrack entries: %w", err)
	}
	defer func() { _ = nsh.Close() }()
	h, err := netlink.NewHandleAt(nsh, unix.NETLINK_NETFILTER)
	if err != nil {
		return fmt.Errorf("opening a conntrack netlink socket in the namespace: %w", err)
	}
	defer h.Close()
	for _, f := range fams {
		nlFamily := netlink.InetFamily(unix.AF_INET)
		if f.v6 {
			nlFamily = netlink.InetFamily(unix.AF_INET6)
		}
		filters := make([]netlink.CustomConntrackFilter, 0, len(f.guarded()))
		for _, a := range f.guarded() {
			fl := &netlink.ConntrackFilter{}
			if err := errors.Join(
				fl.AddProtocol(unix.IPPROTO_TCP), // before the port: a port needs a protocol
				fl.AddIP(netlink.ConntrackOrigDstIP, net.IP(a.Addr().AsSlice())),
				fl.AddPort(netlink.ConntrackOrigDstPort, a.Port()),
			); err != nil {
				return fmt.Errorf("building the conntrack filter for %s: %w", a, err)
			}
			filters = append(filters, fl)
		}
		for attempt := 1; ; attempt++ {
			_, err = h.ConntrackDeleteFilters(netlink.ConntrackTable, nlFamily, filters...)
			if err == nil || !errors.Is(err, netlink.ErrDumpInterrupted) || attempt == conntrackAttempts {
				break
			}
		}
		if err != nil {
			if errors.Is(err, syscall.EPERM) {
				err = fmt.Errorf("%w (removing conntrack entries needs CAP_NET_ADMIN)", err)
			}
			return fmt.Errorf("removing %s conntrack entries to %v: %w", f.name, f.guarded(), err)
		}
	}
	return nil
}
