package main

import (
	"context"
	"fmt"
	"net/netip"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/sirupsen/logrus"
	"k8s.io/utils/clock"

	"github.com/kube2ra/kube2ra/iptables"
	"github.com/kube2ra/kube2ra/k8s"
)

// coverageInterval is how often the routes to the node's pods are checked
// against --host-interface; a pod's first check waits at most this long.
const coverageInterval = 10 * time.Second

// coverage checks that every pod on this node sends its traffic in through
// an interface the DNAT matches, and keeps the answer for /readyz.
type coverage struct {
	// specs are the --host-interface entries.
	specs []iptables.InterfaceSpec
	// pattern is --host-interface as given, for messages.
	pattern string
	// pods lists this node's pods.
	pods func() []*k8s.Pod
	// events records one Warning per uncovered pod (rate-limited).
	events *k8s.PodEvents
	// uncovered is kube2ra_pods_not_intercepted.
	uncovered prometheus.Gauge
	// unroutable is kube2ra_pods_unroutable; nil counts nothing.
	unroutable prometheus.Gauge
	// log receives a line when the set of unroutable pods changes; nil logs nothing.
	log logrus.FieldLogger
	// lastUnroutable is the previous check's unroutable pods, so a
	// standing condition is logged once, not every pass.
	lastUnroutable string
	// problem receives each check's readiness failure, "" when covered.
	problem func(string)
	// clock ticks the checks.
	clock clock.WithTicker
	// routes reads the node's routes to the addresses; nil is
	// iptables.CheckCoverage (the kernel's).
	routes func([]iptables.InterfaceSpec, []netip.Addr) (iptables.Coverage, error)
}

// check runs one pass and returns the readiness problem, "" when covered.
// Only a pod known to miss the DNAT is a problem: a pod the node has no
// route to gets no answer from anyone (the metadata service's neither), so
// it is counted and logged but does not hold the agent unready for every
// other pod (a pod whose network is being set up or torn down, or a stale
// address after a reboot, would otherwise do that).
func (c *coverage) check() string {
	byIP := map[netip.Addr]*k8s.Pod{}
	var ips []netip.Addr
	for _, p := range c.pods() {
		// A host-network pod (the agent itself, kube-proxy, CNI agents)
		// has the node's addresses: its traffic is the node's own, which
		// the DNAT never redirects and the IP door never serves.
		if !servedByIP(p) {
			continue
		}
		for _, ip := range p.IPs {
			byIP[ip] = p
			ips = append(ips, ip)
		}
	}
	routes := c.routes
	if routes == nil {
		routes = iptables.CheckCoverage
	}
	cov, err := routes(c.specs, ips)
	c.uncovered.Set(float64(len(cov.Uncovered)))
	c.reportUnroutable(cov.Unroutable, byIP)
	var msgs []string
	for _, u := range cov.Uncovered {
		p := byIP[u.IP]
		msg := fmt.Sprintf("pod %s/%s (%s) sends its traffic in through %s, which --host-interface %q does not match: its metadata requests are not redirected to kube2ra (refused by the guard when forwarded); add %s to --host-interface (host.interface in the chart)",
			p.Namespace, p.Name, u.IP, u.Interface, c.pattern, suggestion(u.Interface))
		msgs = append(msgs, msg)
		c.events.PodWarning(p, k8s.ReasonMetadataNotIntercepted, msg)
	}
	if err != nil {
		msgs = append(msgs, "could not read the routes to some pods: "+err.Error())
	}
	return strings.Join(msgs, "; ")
}

// maxLoggedUnroutable bounds the pods named in one log line.
const maxLoggedUnroutable = 10

// reportUnroutable sets the gauge and logs the unroutable pods when they
// differ from the last pass's.
func (c *coverage) reportUnroutable(ips []netip.Addr, byIP map[netip.Addr]*k8s.Pod) {
	if c.unroutable != nil {
		c.unroutable.Set(float64(len(ips)))
	}
	names := make([]string, 0, min(len(ips), maxLoggedUnroutable))
	for _, ip := range ips[:min(len(ips), maxLoggedUnroutable)] {
		p := byIP[ip]
		names = append(names, fmt.Sprintf("%s/%s (%s)", p.Namespace, p.Name, ip))
	}
	list := strings.Join(names, ", ")
	if len(ips) > maxLoggedUnroutable {
		list += fmt.Sprintf(" and %d more", len(ips)-maxLoggedUnroutable)
	}
	if list == c.lastUnroutable || c.log == nil {
		c.lastUnroutable = list
		return
	}
	c.lastUnroutable = list
	if len(ips) == 0 {
		c.log.Info("every pod address on this node has a route again")
		return
	}
	c.log.WithField("pods", list).WithField("count", len(ips)).Warn("the node has no route to these pods' addresses: nothing reaches them, the metadata service's answers neither; readiness does not wait for them (normal while a pod's network is set up or torn down)")
}

// suggestion is the entry that would match iface: a wildcard for the
// usual per-pod interface names, the name itself otherwise.
func suggestion(iface string) string {
	for _, prefix := range []string{"cali", "lxc", "eni", "veth", "azv", "gke", "cilium"} {
		if strings.HasPrefix(iface, prefix) && iface != prefix {
			return prefix + "+"
		}
	}
	return iface
}

// run checks now and then every coverageInterval until ctx ends.
func (c *coverage) run(ctx context.Context) {
	t := c.clock.NewTicker(coverageInterval)
	defer t.Stop()
	for {
		c.problem(c.check())
		select {
		case <-ctx.Done():
			return
		case <-t.C():
		}
	}
}

// startCoverage runs the coverage check in the background; /readyz fails
// while a pod is not covered.
func (a *agent) startCoverage(ctx context.Context) error {
	gauge := prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "kube2ra_pods_not_intercepted",
		Help: "Pod addresses on this node whose route leaves through an interface --host-interface does not match, so their metadata requests miss the DNAT.",
	})
	if err := a.reg.Register(gauge); err != nil {
		return fmt.Errorf("registering kube2ra_pods_not_intercepted: %w", err)
	}
	unroutable := prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "kube2ra_pods_unroutable",
		Help: "Pod addresses on this node the node has no route to (network not set up yet, or torn down): nothing answers them; not a readiness failure.",
	})
	if err := a.reg.Register(unroutable); err != nil {
		return fmt.Errorf("registering kube2ra_pods_unroutable: %w", err)
	}
	c := &coverage{
		specs: a.cfg.parsed.interfaces, pattern: a.cfg.HostInterface, pods: a.watcher.Pods, events: k8s.NewPodEvents(a.events), uncovered: gauge,
		unroutable: unroutable, log: a.log.WithField("component", "coverage"),
		problem: func(p string) { a.coverageProblem.Store(&p) }, clock: clock.RealClock{},
	}
	c.problem(c.check()) // before the agent reports ready
	a.wg.Go(func() { c.run(ctx) })
	return nil
}
