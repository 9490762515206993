package handover

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"time"

	"github.com/sirupsen/logrus"
)

// OfferOptions configure an Offer.
type OfferOptions struct {
	// Dir holds the handover socket (see PrepareDir).
	Dir string
	// Listeners are the listening TCP sockets a successor takes over; called
	// when it asks, so it sees what serves at that moment.
	Listeners func() []net.Listener
	// State, when set, is sent with the listeners (Inherited.State): what
	// the successor needs to accept what clients hold from this agent.
	State func() []byte
	// Version is announced to the successor, for its log.
	Version string
	// WarmupTimeout bounds a successor's warm-up; default DefaultWarmupTimeout.
	WarmupTimeout time.Duration
	// Logger receives the handover's steps; default discards.
	Logger logrus.FieldLogger
}

// Offer is the serving agent's side: it waits for a successor, tells
// readiness while one warms up, and hands its listeners over.
type Offer struct {
	// opts are the options, defaults applied.
	opts OfferOptions
	// ln is the handover socket.
	ln *net.UnixListener
	// handedOver is closed once a successor serves the sockets.
	handedOver chan struct{}
	// stop closes ln once.
	stop closer

	// mu guards successor and changed.
	mu sync.Mutex
	// successor is the agent warming up to take over, nil when none.
	successor *Peer
	// changed is closed (and replaced) whenever successor changes.
	changed chan struct{}
}

// Open prepares dir and listens on the handover socket, replacing a stale
// one. Call it once this agent serves the ports itself.
func Open(opts OfferOptions) (*Offer, error) {
	if opts.Listeners == nil {
		return nil, errors.New("handover: an offer needs the listeners it hands over")
	}
	if opts.WarmupTimeout <= 0 {
		opts.WarmupTimeout = DefaultWarmupTimeout
	}
	opts.Logger = defaultLogger(opts.Logger)
	if err := PrepareDir(opts.Dir); err != nil {
		return nil, err
	}
	path := SocketPath(opts.Dir)
	// A socket left there belongs to an agent that no longer serves the
	// ports (this one does now): the next successor must find this one.
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("removing the old handover socket %s: %w", path, err)
	}
	ln, err := net.ListenUnix("unixpacket", &net.UnixAddr{Name: path, Net: "unixpacket"})
	if err != nil {
		return nil, fmt.Errorf("listening on the handover socket %s: %w", path, err)
	}
	// The successor replaces the file with its own socket before this one
	// closes: closing must not remove the successor's.
	ln.SetUnlinkOnClose(false)
	if err := os.Chmod(path, 0o600); err != nil {
		_ = ln.Close()
		return nil, fmt.Errorf("restricting the handover socket %s to the agent: %w", path, err)
	}
	o := &Offer{opts: opts, ln: ln, handedOver: make(chan struct{}), changed: make(chan struct{})}
	o.stop.f = func() { _ = ln.Close() }
	return o, nil
}

// Path is the handover socket's path.
func (o *Offer) Path() string { return SocketPath(o.opts.Dir) }

// Serve handles successors one at a time until one takes over or ctx ends.
func (o *Offer) Serve(ctx context.Context) error {
	stop := context.AfterFunc(ctx, o.stop.close)
	defer stop()
	for {
		c, err := o.ln.AcceptUnix()
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return nil
			}
			return fmt.Errorf("accepting on the handover socket %s: %w", o.Path(), err)
		}
		if o.handle(ctx, c) {
			o.stop.close()
			return nil
		}
	}
}

// Close stops offering.
func (o *Offer) Close() { o.stop.close() }

// HandedOver is closed once a successor serves the listeners: stop
// accepting and drain.
func (o *Offer) HandedOver() <-chan struct{} { return o.handedOver }

// Successor is the agent warming up to take over, if any: while there is
// one, this agent answers /readyz 503, so the new pod is not Ready (and the
// old not deleted) before the new agent serves the sockets itself.
func (o *Offer) Successor() (Peer, bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.successor == nil {
		return Peer{}, false
	}
	return *o.successor, true
}

// WaitForSuccessor waits, while a successor warms up, until it has taken
// over (true), has left, or ctx ends: on SIGTERM the serving agent must not
// close the sockets under a successor about to take them.
func (o *Offer) WaitForSuccessor(ctx context.Context) bool {
	for {
		select {
		case <-o.handedOver:
			return true
		default:
		}
		o.mu.Lock()
		warming, changed := o.successor != nil, o.changed
		o.mu.Unlock()
		if !warming {
			return false
		}
		select {
		case <-o.handedOver:
			return true
		case <-changed:
		case <-ctx.Done():
			return false
		}
	}
}

func (o *Offer) setSuccessor(p *Peer) {
	o.mu.Lock()
	o.successor = p
	close(o.changed)
	o.changed = make(chan struct{})
	o.mu.Unlock()
}

// handle runs one successor's exchange; true when it took over.
func (o *Offer) handle(ctx context.Context, c *net.UnixConn) bool {
	defer c.Close()
	log := o.opts.Logger
	pid, err := peerCred(c)
	if err != nil {
		log.WithError(err).Warn("handover: connection refused")
		return false
	}
	log = log.WithField("successor_pid", pid)
	wctx, cancel := context.WithTimeout(ctx, o.opts.WarmupTimeout)
	defer cancel()
	// Unblocks the reads below when the warm-up takes too long.
	defer context.AfterFunc(wctx, func() { _ = c.SetDeadline(time.Unix(1, 0)) })()
	hello, _, err := receive(c, msgHello)
	if err != nil {
		log.WithError(err).Warn("handover: successor left before saying hello")
		return false
	}
	o.setSuccessor(&Peer{PID: pid, Version: hello.Version})
	log = log.WithField("successor_version", hello.Version)
	handedOver := false
	defer func() {
		if !handedOver {
			o.setSuccessor(nil)
		}
	}()
	left := func(err error) bool {
		if wctx.Err() != nil && ctx.Err() == nil {
			err = fmt.Errorf("warm-up longer than %s: %w", o.opts.WarmupTimeout, err)
		}
		log.WithError(err).Warn("handover: the successor left without taking over; this agent serves on and is ready again")
		return false
	}
	if err := send(c, message{Msg: msgWelcome, PID: os.Getpid(), Version: o.opts.Version}, nil); err != nil {
		return left(err)
	}
	log.Info("handover: a successor is warming up; /readyz answers 503 until it serves the sockets")
	if _, files, err := receive(c, msgTake); err != nil {
		closeFiles(files)
		return left(err)
	}
	files, addrs, err := listenerFiles(o.opts.Listeners())
	if err != nil {
		return left(err)
	}
	m := message{Msg: msgListeners, Addrs: addrs}
	if o.opts.State != nil {
		m.State = o.opts.State()
	}
	err = send(c, m, files)
	closeFiles(files)
	if err != nil {
		return left(err)
	}
	if _, files, err := receive(c, msgServing); err != nil {
		closeFiles(files)
		return left(err)
	}
	handedOver = true
	log.WithField("listeners", addrs).Info("handover: the successor serves the sockets; this agent stops accepting and drains")
	close(o.handedOver)
	return true
}

// listenerFiles duplicates each listener's descriptor.
func listenerFiles(lns []net.Listener) ([]*os.File, []string, error) {
	if len(lns) > maxListeners {
		return nil, nil, fmt.Errorf("%d listeners to hand over, at most %d", len(lns), maxListeners)
	}
	var files []*os.File
	var addrs []string
	for _, ln := range lns {
		fl, ok := ln.(interface{ File() (*os.File, error) })
		if !ok {
			closeFiles(files)
			return nil, nil, fmt.Errorf("listener on %s has no descriptor to hand over", ln.Addr())
		}
		f, err := fl.File()
		if err != nil {
			closeFiles(files)
			return nil, nil, fmt.Errorf("duplicating the listener on %s: %w", ln.Addr(), err)
		}
		files, addrs = append(files, f), append(addrs, ln.Addr().String())
	}
	return files, addrs, nil
}
