package proxy

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"syscall"

	"golang.org/x/sys/unix"
)

// ip6tSOOriginalDst is IP6T_SO_ORIGINAL_DST (linux/netfilter_ipv6/ip6_tables.h),
// which golang.org/x/sys/unix does not define; it has SO_ORIGINAL_DST's value.
const ip6tSOOriginalDst = 80

// SharedPort puts the ops routes on the metadata port, for kube2iam's
// --metrics-port equal to --app-port. Pods reach that port through the DNAT
// of the metadata addresses, and must never read /metrics, /readyz or a
// debug page that way: a connection whose conntrack original destination is
// one of MetadataAddrs, or cannot be read, is a metadata connection and gets
// IMDS's answers only (404 for /metrics). Any other connection (Prometheus
// or a kubelet probe dialing host-ip:port) gets the ops routes for their
// paths and the metadata server for the rest. The destination is read at
// each request for an ops path, not once per connection: a connection made
// before the node's conntrack tracked anything (it starts with the first
// NAT rule, kube2ra's own DNAT on a node without kube-proxy) is told apart
// as soon as conntrack has picked it up, rather than refused for its life.
type SharedPort struct {
	// Ops is the ops server whose routes are shared; it is never listened on.
	Ops *OpsServer
	// MetadataAddrs are the addresses the DNAT redirects to the port
	// (169.254.169.254, fd00:ec2::254, 169.254.170.23, fd00:ec2::23).
	MetadataAddrs []netip.Addr
	// Only, when set, is the one ops path shared (kube2iam's /healthz on its
	// app port, where kube2iam's chart probes); empty shares every route.
	Only string
	// originalDst reads a connection's pre-DNAT destination; nil reads conntrack.
	originalDst func(net.Conn) (netip.Addr, error)
}

// connKey holds, in a request's context, the connection it came on.
type connKey struct{}

// ShareWith serves p.Ops's routes on this server's port; call it before
// Listen. Without MetadataAddrs nothing could be told apart, so it refuses.
func (s *Server) ShareWith(p SharedPort) error {
	if p.Ops == nil {
		return errors.New("proxy: sharing the metadata port needs the ops server")
	}
	if len(p.MetadataAddrs) == 0 {
		return errors.New("proxy: sharing the metadata port needs the metadata addresses the DNAT redirects, to keep pods off the ops routes")
	}
	lookup := p.originalDst
	if lookup == nil {
		lookup = conntrackOriginalDst
	}
	metadata := map[netip.Addr]bool{}
	for _, a := range p.MetadataAddrs {
		metadata[a.Unmap()] = true
	}
	mux, _ := p.Ops.handler.(*http.ServeMux)
	if mux == nil {
		return fmt.Errorf("proxy: the ops handler is a %T, not the ops server's own mux", p.Ops.handler)
	}
	srv := s.listener.srv
	srv.ConnContext = func(ctx context.Context, c net.Conn) context.Context {
		return context.WithValue(ctx, connKey{}, c)
	}
	srv.Handler = sharedHandler{metadata: srv.Handler, ops: mux, only: p.Only, lookup: lookup, metadataAddrs: metadata}
	return nil
}

// sharedHandler sends a direct connection's ops paths to the ops mux and
// everything else to the metadata server.
type sharedHandler struct {
	// metadata is the metadata server's handler.
	metadata http.Handler
	// ops is the ops server's mux.
	ops *http.ServeMux
	// only, when set, is the one ops path shared.
	only string
	// lookup reads a connection's pre-DNAT destination.
	lookup func(net.Conn) (netip.Addr, error)
	// metadataAddrs are the DNATed addresses, unmapped.
	metadataAddrs map[netip.Addr]bool
}

func (h sharedHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if h.only != "" {
		// One path: a comparison, not a route lookup, on every metadata request.
		if r.RequestURI == h.only && h.direct(r) {
			h.ops.ServeHTTP(w, r)
			return
		}
		h.metadata.ServeHTTP(w, r)
		return
	}
	if _, pattern := h.ops.Handler(r); pattern != "" && h.direct(r) {
		h.ops.ServeHTTP(w, r)
		return
	}
	h.metadata.ServeHTTP(w, r)
}

// direct reports whether r's client dialed this port itself rather than a
// metadata address. Fail closed: a destination that cannot be read is a pod's.
func (h sharedHandler) direct(r *http.Request) bool {
	c, ok := r.Context().Value(connKey{}).(net.Conn)
	if !ok {
		return false
	}
	dst, err := h.lookup(c)
	return err == nil && !h.metadataAddrs[dst.Unmap()]
}

// conntrackOriginalDst is the address the client dialed before any DNAT,
// from conntrack (SO_ORIGINAL_DST, IP6T_SO_ORIGINAL_DST for IPv6). A
// connection that was not DNATed has its own local address there.
func conntrackOriginalDst(c net.Conn) (netip.Addr, error) {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return netip.Addr{}, fmt.Errorf("a %T has no socket to ask conntrack about", c)
	}
	local, ok := c.LocalAddr().(*net.TCPAddr)
	if !ok {
		return netip.Addr{}, fmt.Errorf("local address %v is not TCP", c.LocalAddr())
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return netip.Addr{}, err
	}
	var dst netip.Addr
	var serr error
	err = raw.Control(func(fd uintptr) {
		if local.IP.To4() != nil {
			// The kernel writes a sockaddr_in (16 bytes) into the buffer.
			var mreq *unix.IPv6Mreq
			if mreq, serr = unix.GetsockoptIPv6Mreq(int(fd), unix.SOL_IP, unix.SO_ORIGINAL_DST); serr == nil {
				dst = netip.AddrFrom4([4]byte(mreq.Multiaddr[4:8]))
			}
			return
		}
		// The kernel writes a sockaddr_in6 (28 bytes) into the buffer.
		var info *unix.IPv6MTUInfo
		if info, serr = unix.GetsockoptIPv6MTUInfo(int(fd), unix.SOL_IPV6, ip6tSOOriginalDst); serr == nil {
			dst = netip.AddrFrom16(info.Addr.Addr)
		}
	})
	if err == nil {
		err = serr
	}
	if err != nil {
		return netip.Addr{}, fmt.Errorf("reading the original destination of %v from conntrack: %w", c.RemoteAddr(), err)
	}
	return dst, nil
}
