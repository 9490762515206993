package main

import (
	"context"
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/kube2ra/kube2ra/handover"
	"github.com/kube2ra/kube2ra/proxy"
)

// warmWait bounds how long a successor waits, before taking traffic over,
// for the node's pods' credentials (a hit for the first request after the
// upgrade) and for its watches to be current (else each answer waits for a
// live GET of the pod: half a second on the e2e node right after start). If
// upstream or the API server is this slow, requests wait as they would.
const warmWait = 10 * time.Second

// warmPoll is how often the successor looks whether it is warm.
const warmPoll = 20 * time.Millisecond

// takeTimeout bounds receiving the listeners from the serving agent.
const takeTimeout = 10 * time.Second

// listening is one of the agent's listening servers.
type listening struct {
	// what names its port in errors, with the flags that set it.
	what string
	// srv is the server.
	srv interface {
		ListenWith(proxy.ListenFunc) error
		Serve(context.Context) error
		Listeners() []net.Listener
		Drain(context.Context) error
	}
}

// servers are the metadata server and, unless it shares the metadata
// port, the ops server: what the agent binds, serves, hands over and drains.
func (a *agent) servers() []listening {
	cfg := a.cfg
	out := []listening{{what: fmt.Sprintf("the metadata port %s:%d (--host-ip, --app-port)", cfg.HostIP, cfg.AppPort), srv: a.server}}
	if !cfg.sharesMetadataPort() {
		hosts := append([]string{cfg.HostIP, "127.0.0.1"}, opsIPv6FirstHosts(cfg)...)
		out = append(out, listening{what: fmt.Sprintf("the ops port %d on %s (--host-ip, --metrics-port)", cfg.MetricsPort, strings.Join(hosts, ", ")), srv: a.ops})
	}
	return out
}

// listen binds (or, through listen, adopts) every server's port.
func (a *agent) listen(listen proxy.ListenFunc) error {
	for _, l := range a.servers() {
		if err := l.srv.ListenWith(listen); err != nil {
			return fmt.Errorf("listening on %s: %w", l.what, err)
		}
	}
	return nil
}

// serve starts serving the listeners listen opened.
func (a *agent) serve(ctx context.Context) {
	for _, l := range a.servers() {
		a.wg.Go(func() {
			if err := l.srv.Serve(ctx); err != nil {
				a.serveErr <- err
			}
		})
	}
}

// claimHandover announces this agent as the successor of the one serving
// the node, if any (nil: none, bind as on a first install). From then on
// that agent answers /readyz 503 until this one serves its sockets.
func (a *agent) claimHandover(ctx context.Context) (*handover.Claim, error) {
	if a.cfg.HandoverDir == "" {
		return nil, nil
	}
	dctx, cancel := context.WithTimeout(ctx, takeTimeout)
	defer cancel()
	claim, err := handover.Dial(dctx, a.cfg.HandoverDir, version)
	if err != nil {
		return nil, fmt.Errorf("--handover-dir %s: %w", a.cfg.HandoverDir, err)
	}
	if claim != nil {
		a.log.WithField("predecessor_pid", claim.Peer.PID).WithField("predecessor_version", claim.Peer.Version).
			Info("handover: an agent serves this node; warming up without binding, then taking its sockets over")
	}
	return claim, nil
}

// takeOver waits (bounded) for the prefetch of the node's pods'
// credentials and a current watch, takes the predecessor's listeners,
// serves on them, puts its own redirect on the node (takeNode: the
// predecessor still accepts on every socket, so a changed port is answered
// on both sides of the rules' switch) and tells the predecessor to drain.
// If the predecessor is gone meanwhile, the ports are bound.
func (a *agent) takeOver(ctx context.Context, claim *handover.Claim, takeNode func() error) error {
	log := a.log.WithField("predecessor_pid", claim.Peer.PID)
	start := time.Now()
	wctx, cancel := context.WithTimeout(ctx, warmWait)
	for (a.cache.Fetching() > 0 || !a.watcher.Current()) && wctx.Err() == nil {
		select {
		case <-wctx.Done():
		case <-time.After(warmPoll):
		}
	}
	cancel()
	log = log.WithField("warm_wait", time.Since(start).Round(time.Millisecond)).
		WithField("still_fetching", a.cache.Fetching()).WithField("watch_current", a.watcher.Current())
	tctx, cancel := context.WithTimeout(ctx, takeTimeout)
	in, err := claim.Take(tctx)
	cancel()
	if err != nil {
		log.WithError(err).Warn("handover: the serving agent did not hand its sockets over; binding them")
		_ = claim.Close()
		in, claim = nil, nil
	}
	if in != nil {
		// The tokens pods hold were minted with the predecessor's key.
		if err := a.server.AdoptTokenKey(in.State); err != nil {
			log.WithError(err).Warn("handover: the predecessor's IMDSv2 token key is unusable: pods' tokens get 401 once, and SDKs fetch new ones")
		} else {
			a.saveTokenKey()
		}
	}
	err = a.listen(in.Listen)
	if in != nil {
		if unused := in.Unused(); len(unused) > 0 {
			log.WithField("addresses", unused).Info("handover: the predecessor listened on addresses this configuration does not; they close with it")
		}
		in.Close()
	}
	if err != nil {
		return err
	}
	a.serve(ctx)
	if err := takeNode(); err != nil {
		return err
	}
	if claim == nil {
		return nil
	}
	if err := claim.Serving(); err != nil {
		// Both accept until the predecessor's pod is deleted; nothing refused.
		log.WithError(err).Warn("handover: could not tell the predecessor that this agent serves; it drains on SIGTERM instead")
		return nil
	}
	log.Info("handover: serving the predecessor's sockets")
	return nil
}

// restoreTokenKey mints IMDSv2 tokens with the key the last agent on this
// node saved in the handover directory, so the tokens pods hold stay valid
// when that agent stopped without a handover (a crash, an OOM kill, a
// deleted pod); without one it saves this agent's key. Call it before
// serving.
func (a *agent) restoreTokenKey() {
	saved, err := handover.LoadState(a.cfg.HandoverDir)
	if err == nil && saved != nil {
		if err = a.server.AdoptTokenKey(saved); err == nil {
			a.log.Info("the IMDSv2 token key the last agent on this node saved is restored: the tokens pods hold stay valid")
			return
		}
	}
	if err != nil {
		a.log.WithError(err).Warn("the IMDSv2 token key the last agent saved is unusable: pods' tokens get 401 once, and SDKs fetch new ones")
	}
	a.saveTokenKey()
}

// saveTokenKey keeps the IMDSv2 token key in force for the next agent.
func (a *agent) saveTokenKey() {
	if err := handover.SaveState(a.cfg.HandoverDir, a.server.TokenKey()); err != nil {
		a.log.WithError(err).Warn("the IMDSv2 token key could not be saved for the next agent: after a restart without a handover, pods' tokens get 401 once")
	}
}

// offerHandover opens the handover socket for the next agent.
func (a *agent) offerHandover(ctx context.Context) error {
	offer, err := handover.Open(handover.OfferOptions{
		Dir:       a.cfg.HandoverDir,
		Listeners: a.handoverListeners,
		State:     a.server.TokenKey,
		Version:   version,
		Logger:    a.log.WithField("component", "handover"),
	})
	if err != nil {
		return fmt.Errorf("--handover-dir: %w", err)
	}
	a.offer = offer
	a.wg.Go(func() {
		if err := offer.Serve(ctx); err != nil {
			a.log.WithError(err).Error("handover socket stopped: the next upgrade binds the ports after this agent exits")
		}
	})
	return nil
}

// handoverListeners are every socket a successor takes over.
func (a *agent) handoverListeners() []net.Listener {
	var lns []net.Listener
	for _, l := range a.servers() {
		lns = append(lns, l.srv.Listeners()...)
	}
	return lns
}

// drain stops accepting on the sockets a successor now serves and answers
// what was accepted; the rules stay, they are the successor's.
func (a *agent) drain() {
	a.handedOver = true
	// The successor keeps the rules and the CNI plugin from now on: this
	// agent's monitor and installer must not rewrite them.
	a.stopNode()
	ctx, cancel := context.WithTimeout(context.Background(), a.cfg.ShutdownTimeout)
	defer cancel()
	for _, l := range a.servers() {
		if err := l.srv.Drain(ctx); err != nil {
			a.log.WithError(err).Warn("handover: draining " + l.what)
		}
	}
	a.log.Info("handover: drained; the successor serves this node's pods")
}
