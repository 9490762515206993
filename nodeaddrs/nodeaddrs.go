// Package nodeaddrs keeps the node's own addresses current from the
// kernel (netlink), so a request can be asked "did this come from the node
// itself?" without a system call.
package nodeaddrs

import (
	"context"
	"fmt"
	"io"
	"net/netip"
	"sync/atomic"
	"time"

	"github.com/sirupsen/logrus"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

// ResyncInterval is how often the addresses are listed again whatever the
// kernel announced: a lost netlink message (a full socket buffer) is
// repaired within it.
const ResyncInterval = 30 * time.Second

// Set is the node's addresses, replaced whole on every change. Before
// Start it holds none (only loopback counts).
type Set struct {
	// addrs is the current set; nil before Start.
	addrs atomic.Pointer[map[netip.Addr]struct{}]
	// ns is the namespace watched.
	ns netns.NsHandle
	// log receives failures.
	log logrus.FieldLogger
}

// Options configure a Set.
type Options struct {
	// Namespace is the network namespace to watch; the caller's when nil.
	Namespace *netns.NsHandle
	// Log receives failures; discarded when nil.
	Log logrus.FieldLogger
}

// New builds a Set; Start fills it.
func New(opts Options) *Set {
	s := &Set{ns: netns.None(), log: opts.Log}
	if opts.Namespace != nil {
		s.ns = *opts.Namespace
	}
	if s.log == nil {
		l := logrus.New()
		l.SetOutput(io.Discard)
		s.log = l
	}
	return s
}

// Start lists the addresses of every interface of the namespace and keeps
// the set current (on every address the kernel adds or removes, and every
// ResyncInterval) until ctx ends. It fails when the first listing or the
// subscription fails.
func (s *Set) Start(ctx context.Context) error {
	handle, err := netlink.NewHandleAt(s.ns)
	if err != nil {
		return fmt.Errorf("opening netlink to list the node's addresses: %w", err)
	}
	sub, err := s.subscribe()
	if err != nil {
		handle.Close()
		return err
	}
	// Listed after subscribing, so no change falls between the two.
	if err := s.reload(handle); err != nil {
		sub.stop()
		handle.Close()
		return err
	}
	go s.follow(ctx, handle, sub)
	return nil
}

// subscription is one netlink subscription to address changes.
type subscription struct {
	// updates receives the changes; closed when the subscription fails.
	updates chan netlink.AddrUpdate
	// done ends the subscription when closed.
	done chan struct{}
}

// stop ends the subscription; nil is a no-op.
func (sub *subscription) stop() {
	if sub != nil {
		close(sub.done)
	}
}

// subscribe asks the kernel for the namespace's address changes.
func (s *Set) subscribe() (*subscription, error) {
	sub := &subscription{updates: make(chan netlink.AddrUpdate, 64), done: make(chan struct{})}
	ns := s.ns
	err := netlink.AddrSubscribeWithOptions(sub.updates, sub.done, netlink.AddrSubscribeOptions{
		Namespace: &ns,
		// A failed receive (a full socket buffer) closes updates, which
		// follow notices; other errors skip one message, which the
		// reload that follows every change repairs.
		ErrorCallback: func(err error) { s.log.WithError(err).Debug("netlink address subscription") },
	})
	if err != nil {
		return nil, fmt.Errorf("subscribing to the node's address changes over netlink: %w", err)
	}
	return sub, nil
}

// follow applies changes until ctx ends. A subscription that fails is
// replaced (at once, else at each ResyncInterval); meanwhile the listing
// every ResyncInterval follows changes, only later.
func (s *Set) follow(ctx context.Context, handle *netlink.Handle, sub *subscription) {
	defer handle.Close()
	defer func() { sub.stop() }()
	tick := time.NewTicker(ResyncInterval)
	defer tick.Stop()
	var updates <-chan netlink.AddrUpdate = sub.updates
	for {
		select {
		case <-ctx.Done():
			return
		case _, ok := <-updates:
			if !ok {
				sub.stop()
				sub, updates = s.resubscribe()
			}
		case <-tick.C:
			if sub == nil {
				sub, updates = s.resubscribe()
			}
		}
		if err := s.reload(handle); err != nil {
			s.log.WithError(err).Warn("listing the node's addresses failed; keeping the last ones")
		}
	}
}

// resubscribe replaces a failed subscription; nil (and a nil channel, which
// never receives) when it cannot.
func (s *Set) resubscribe() (*subscription, <-chan netlink.AddrUpdate) {
	sub, err := s.subscribe()
	if err != nil {
		s.log.WithError(err).Warn("the node's address changes cannot be followed now; listing them every " + ResyncInterval.String() + " and retrying")
		return nil, nil
	}
	return sub, sub.updates
}

// reload lists the addresses and replaces the set.
func (s *Set) reload(handle *netlink.Handle) error {
	addrs, err := handle.AddrList(nil, netlink.FAMILY_ALL)
	if err != nil {
		return fmt.Errorf("listing the node's addresses over netlink: %w", err)
	}
	set := make(map[netip.Addr]struct{}, len(addrs))
	for _, a := range addrs {
		if ip, ok := netip.AddrFromSlice(a.IP); ok {
			set[ip.Unmap()] = struct{}{}
		}
	}
	s.addrs.Store(&set)
	return nil
}

// Contains says whether ip is loopback or one of the node's addresses.
func (s *Set) Contains(ip netip.Addr) bool {
	ip = ip.Unmap().WithZone("")
	if ip.IsLoopback() {
		return true
	}
	set := s.addrs.Load()
	if set == nil {
		return false
	}
	_, ok := (*set)[ip]
	return ok
}
