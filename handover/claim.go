package handover

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"sort"
	"sync"
	"syscall"
	"time"
)

// Claim is the successor's side of a handover, from Dial to Serving.
type Claim struct {
	// conn is the connection to the serving agent.
	conn *net.UnixConn
	// Peer is the serving agent.
	Peer Peer
}

// Dial connects to the agent serving on this node, if any, and announces a
// successor; from then on that agent answers /readyz 503. It returns nil
// and no error when no agent offers a handover (no socket, or a stale one).
func Dial(ctx context.Context, dir, version string) (*Claim, error) {
	path := SocketPath(dir)
	var d net.Dialer
	raw, err := d.DialContext(ctx, "unixpacket", path)
	if err != nil {
		if noOffer(err) {
			return nil, nil
		}
		return nil, fmt.Errorf("connecting to the serving agent's handover socket %s: %w", path, err)
	}
	c := raw.(*net.UnixConn)
	pid, err := peerCred(c)
	if err != nil {
		_ = c.Close()
		return nil, fmt.Errorf("handover socket %s: %w", path, err)
	}
	setDeadline(ctx, c)
	defer func() { _ = c.SetDeadline(time.Time{}) }()
	if err := send(c, message{Msg: msgHello, PID: os.Getpid(), Version: version}, nil); err != nil {
		_ = c.Close()
		return nil, fmt.Errorf("handover socket %s: %w", path, err)
	}
	welcome, files, err := receive(c, msgWelcome)
	closeFiles(files)
	if err != nil {
		_ = c.Close()
		return nil, fmt.Errorf("handover socket %s: %w", path, err)
	}
	return &Claim{conn: c, Peer: Peer{PID: pid, Version: welcome.Version}}, nil
}

// Take receives duplicates of the serving agent's listeners. It keeps
// serving on its own copies until Serving.
func (c *Claim) Take(ctx context.Context) (*Inherited, error) {
	setDeadline(ctx, c.conn)
	defer func() { _ = c.conn.SetDeadline(time.Time{}) }()
	if err := send(c.conn, message{Msg: msgTake}, nil); err != nil {
		return nil, err
	}
	m, files, err := receive(c.conn, msgListeners)
	if err != nil {
		return nil, err
	}
	defer closeFiles(files)
	if len(files) != len(m.Addrs) {
		return nil, fmt.Errorf("the serving agent sent %d descriptors for %d listeners", len(files), len(m.Addrs))
	}
	in := &Inherited{lns: map[netip.AddrPort]net.Listener{}, State: m.State}
	for i, f := range files {
		ln, err := net.FileListener(f)
		if err != nil {
			in.Close()
			return nil, fmt.Errorf("adopting the listener on %s: %w", m.Addrs[i], err)
		}
		key, ok := addrKey(ln.Addr())
		if !ok {
			_ = ln.Close()
			in.Close()
			return nil, fmt.Errorf("the descriptor for %s is not a TCP listener", m.Addrs[i])
		}
		in.lns[key] = ln
	}
	return in, nil
}

// Serving tells the serving agent that this one accepts on the listeners
// now, so it may stop accepting, and ends the exchange.
func (c *Claim) Serving() error {
	defer c.conn.Close()
	return send(c.conn, message{Msg: msgServing}, nil)
}

// Close abandons the handover: the serving agent serves on and is ready again.
func (c *Claim) Close() error { return c.conn.Close() }

// Inherited are the listeners taken over, by address.
type Inherited struct {
	// State is the serving agent's OfferOptions.State.
	State []byte
	// mu guards lns.
	mu sync.Mutex
	// lns are the listeners not yet used.
	lns map[netip.AddrPort]net.Listener
}

// Listen returns the inherited listener on addr, or binds addr when none
// was inherited (a port the old agent did not have). A nil Inherited binds.
func (in *Inherited) Listen(network, addr string) (net.Listener, error) {
	if in != nil {
		if ap, err := netip.ParseAddrPort(addr); err == nil {
			key := netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
			in.mu.Lock()
			ln, ok := in.lns[key]
			delete(in.lns, key)
			in.mu.Unlock()
			if ok {
				return ln, nil
			}
		}
	}
	return net.Listen(network, addr)
}

// Unused are the inherited addresses nothing listened on (a port this
// agent's configuration no longer has).
func (in *Inherited) Unused() []string {
	in.mu.Lock()
	defer in.mu.Unlock()
	var out []string
	for k := range in.lns {
		out = append(out, k.String())
	}
	sort.Strings(out)
	return out
}

// Close closes the listeners nothing used; the old agent closes its copies
// when it drains, and the sockets are gone.
func (in *Inherited) Close() {
	in.mu.Lock()
	defer in.mu.Unlock()
	for k, ln := range in.lns {
		_ = ln.Close()
		delete(in.lns, k)
	}
}

// RemoveStale removes dir's handover socket and saved state when no agent
// listens on the socket (what an agent killed without closing leaves;
// `kube2ra cleanup`). It returns whether it removed a socket. A socket an
// agent listens on stays, and so does the state, so that agent's successor
// still finds them; the connection made to find out ends before its hello,
// and that agent serves on.
func RemoveStale(ctx context.Context, dir string) (removed bool, err error) {
	path := SocketPath(dir)
	var d net.Dialer
	c, err := d.DialContext(ctx, "unixpacket", path)
	switch {
	case err == nil:
		_ = c.Close()
		return false, nil
	case errors.Is(err, syscall.ENOENT):
		return false, RemoveState(dir)
	case !errors.Is(err, syscall.ECONNREFUSED):
		return false, fmt.Errorf("could not tell whether an agent listens on the handover socket %s, so it was left in place: %w (remove it by hand once no kube2ra agent runs on this node)", path, err)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return false, fmt.Errorf("removing the stale handover socket %s: %w (run kube2ra cleanup as root, or remove the file by hand)", path, err)
	}
	return true, RemoveState(dir)
}
