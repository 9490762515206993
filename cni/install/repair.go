package install

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync/atomic"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/sirupsen/logrus"
	"k8s.io/apimachinery/pkg/types"

	"github.com/kube2ra/kube2ra/cni/plugin"
)

// PodRules is what repair needs of the plugin's in-pod rules:
// plugin.Apply and plugin.Verify (PluginRules), faked in unit tests.
type PodRules interface {
	// Apply writes the rules into the namespace at netnsPath.
	Apply(ctx context.Context, netnsPath string, cfg plugin.Config) error
	// Verify returns nil when the namespace holds exactly those rules.
	Verify(netnsPath string, cfg plugin.Config) error
}

// PluginRules is PodRules through the plugin package.
type PluginRules struct{}

var _ PodRules = PluginRules{}

// Apply implements PodRules.
func (PluginRules) Apply(ctx context.Context, netnsPath string, cfg plugin.Config) error {
	return plugin.Apply(ctx, netnsPath, cfg)
}

// Verify implements PodRules.
func (PluginRules) Verify(netnsPath string, cfg plugin.Config) error {
	return plugin.Verify(netnsPath, cfg)
}

// NetnsFinder maps the addresses pods have inside their network
// namespaces to those namespaces' paths.
type NetnsFinder interface {
	Find() (map[netip.Addr]string, error)
}

// NetnsDir finds pods' network namespaces among the bind mounts a
// container runtime keeps in one directory (containerd and CRI-O:
// /var/run/netns, which is /run/netns), and matches them to pods by the addresses seen inside.
// Entering a namespace needs CAP_SYS_ADMIN; nothing else on the host is
// read (no host PID namespace, no runtime socket).
type NetnsDir struct {
	// Dir is the directory of bind mounts.
	Dir string
}

var _ NetnsFinder = NetnsDir{}

// Find implements NetnsFinder. A namespace that vanishes or cannot be
// entered meanwhile (a pod being deleted) is skipped; its pod is then
// reported as not found, never guessed.
func (d NetnsDir) Find() (map[netip.Addr]string, error) {
	entries, err := os.ReadDir(d.Dir)
	if err != nil {
		return nil, fmt.Errorf("reading pods' network namespaces in %s (--cni-netns-dir): %w", d.Dir, err)
	}
	found := map[netip.Addr]string{}
	for _, e := range entries {
		if e.IsDir() {
			continue
		}
		path := filepath.Join(d.Dir, e.Name())
		addrs, err := addrsIn(path)
		if err != nil {
			continue
		}
		for _, a := range addrs {
			found[a] = path
		}
	}
	return found, nil
}

// addrsIn lists the unicast addresses inside the namespace at path.
func addrsIn(path string) ([]netip.Addr, error) {
	var out []netip.Addr
	err := ns.WithNetNSPath(path, func(ns.NetNS) error {
		addrs, err := net.InterfaceAddrs()
		if err != nil {
			return err
		}
		for _, a := range addrs {
			p, err := netip.ParsePrefix(a.String())
			if err != nil || p.Addr().IsLoopback() || p.Addr().IsLinkLocalUnicast() {
				continue
			}
			out = append(out, p.Addr().Unmap())
		}
		return nil
	})
	return out, err
}

// Pod is a pod on this node as repair sees it.
type Pod struct {
	// Namespace and Name name it in reports.
	Namespace, Name string
	// UID tells it from a later pod of the same name (for its Event).
	UID types.UID
	// IPs are its addresses (status.podIPs).
	IPs []netip.Addr
}

// Key is namespace/name.
func (p Pod) Key() string { return p.Namespace + "/" + p.Name }

// Layer says what intercepts a pod's metadata traffic.
type Layer string

// The layers a pod can be covered by.
const (
	// LayerInPod: the plugin's rule is in the pod's namespace (written at
	// ADD or by repair); the host rule, if any, is a second layer.
	LayerInPod Layer = "in_pod"
	// LayerHostOnly: only the host's DNAT and guard, which eBPF dataplanes
	// bypass.
	LayerHostOnly Layer = "host_only"
	// LayerNone: nothing; the pod can reach the node's metadata service.
	LayerNone Layer = "none"
)

// Coverage is one repair pass's outcome.
type Coverage struct {
	// Pods counts the node's pods by layer.
	Pods map[Layer]int
	// Repaired are the pods whose rule this pass wrote.
	Repaired []string
	// Problems are the pods without the in-pod rule, each with why and
	// the fix, sorted.
	Problems []string
}

// RepairOptions configure a Repairer.
type RepairOptions struct {
	// Rules writes and checks the in-pod rules.
	Rules PodRules
	// Finder locates pods' network namespaces.
	Finder NetnsFinder
	// Entry is the plugin's configuration, the rules every pod must hold.
	Entry plugin.Config
	// Fix writes missing rules; false only reports (--cni-repair=false).
	Fix bool
	// Pods lists this node's pods that have their own network namespace
	// (no host-network pods) and an address.
	Pods func() []Pod
	// HostRules reports whether the host's DNAT and guard are installed.
	HostRules func() bool
	// Report tells a pod's owner its pod lacks the in-pod rule (a Warning
	// Event); nil reports only in the log and metrics.
	Report func(pod Pod, message string)
	// ReportAfter is how many passes in a row a pod must be found without
	// the rule before it is reported (Problems, Report): a pod whose sandbox
	// the runtime is re-creating (after a reboot, its status still shows the
	// old address) is not an alarm. 0 or 1 reports at once.
	ReportAfter int
	// Logger receives repairs and problems; nil discards.
	Logger logrus.FieldLogger
	// Registerer receives kube2ra_cni_pods and kube2ra_cni_repairs_total.
	Registerer prometheus.Registerer
}

// Repairer finds the node's pods that lack the in-pod rule and writes it,
// or reports each one it cannot fix.
type Repairer struct {
	// opts are the options.
	opts RepairOptions
	// log receives what happened.
	log logrus.FieldLogger
	// pods is kube2ra_cni_pods{layer}.
	pods *prometheus.GaugeVec
	// repairs is kube2ra_cni_repairs_total{result}.
	repairs *prometheus.CounterVec
	// last is the latest pass's Coverage, for /readyz and explain.
	last atomic.Pointer[Coverage]
	// misses counts, per pod, the passes in a row that found it without
	// the rule (only Pass touches it).
	misses map[string]int
}

// NewRepairer registers the metrics.
func NewRepairer(opts RepairOptions) (*Repairer, error) {
	if opts.Rules == nil || opts.Finder == nil || opts.Pods == nil || opts.HostRules == nil {
		return nil, errors.New("repair needs Rules, Finder, Pods and HostRules")
	}
	r := &Repairer{
		opts:   opts,
		misses: map[string]int{},
		log:    opts.Logger,
		pods: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "kube2ra_cni_pods",
			Help: "This node's pods by what intercepts their metadata traffic at the last repair pass: in_pod (the CNI plugin's rule), host_only (the host's DNAT alone, which eBPF dataplanes bypass), none.",
		}, []string{"layer"}),
		repairs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kube2ra_cni_repairs_total",
			Help: "Running pods found without the in-pod rule, by result: repaired (the agent wrote it) or failed (reported on the pod).",
		}, []string{"result"}),
	}
	if r.log == nil {
		l := logrus.New()
		l.Out = discard{}
		r.log = l
	}
	for _, l := range []Layer{LayerInPod, LayerHostOnly, LayerNone} {
		r.pods.WithLabelValues(string(l))
	}
	for _, res := range []string{"repaired", "failed"} {
		r.repairs.WithLabelValues(res)
	}
	if opts.Registerer != nil {
		for _, c := range []prometheus.Collector{r.pods, r.repairs} {
			if err := opts.Registerer.Register(c); err != nil {
				return nil, fmt.Errorf("registering the CNI repair metrics: %w", err)
			}
		}
	}
	return r, nil
}

// Last is the latest pass's Coverage; nil before the first.
func (r *Repairer) Last() *Coverage { return r.last.Load() }

// Problem is /readyz's reason: the pods left without the in-pod rule.
func (r *Repairer) Problem() string {
	c := r.Last()
	if c == nil || len(c.Problems) == 0 {
		return ""
	}
	return fmt.Sprintf("%d pod(s) without the CNI plugin's in-pod rule: %s", len(c.Problems), strings.Join(c.Problems, "; "))
}

// Pass checks every pod once, repairs what it may, and records the outcome.
func (r *Repairer) Pass(ctx context.Context) (Coverage, error) {
	cov := Coverage{Pods: map[Layer]int{}}
	pods := r.opts.Pods()
	found, err := r.opts.Finder.Find()
	if err != nil {
		// Every pod is then unverifiable: report them all, fail closed.
		found = nil
	}
	hostRules := r.opts.HostRules()
	seen := map[string]bool{}
	for _, p := range pods {
		seen[p.Key()] = true
		repaired, problem := r.check(ctx, p, found, err)
		switch {
		case problem == "":
			cov.Pods[LayerInPod]++
			if repaired {
				cov.Repaired = append(cov.Repaired, p.Key())
			}
			delete(r.misses, p.Key())
			continue
		case hostRules:
			cov.Pods[LayerHostOnly]++
		default:
			cov.Pods[LayerNone]++
		}
		if r.misses[p.Key()]++; r.misses[p.Key()] < r.opts.ReportAfter {
			continue
		}
		msg := p.Key() + ": " + problem
		cov.Problems = append(cov.Problems, msg)
		r.log.WithField("pod", p.Key()).WithField("host_rules", hostRules).Warn("pod without the CNI plugin's in-pod rule: " + problem)
		if r.opts.Report != nil {
			r.opts.Report(p, "kube2ra's CNI plugin rule is missing from this pod's network namespace: "+problem)
		}
	}
	for k := range r.misses {
		if !seen[k] {
			delete(r.misses, k)
		}
	}
	sort.Strings(cov.Problems)
	for _, l := range []Layer{LayerInPod, LayerHostOnly, LayerNone} {
		r.pods.WithLabelValues(string(l)).Set(float64(cov.Pods[l]))
	}
	r.last.Store(&cov)
	return cov, err
}

// check reports whether it wrote p's rule, or why p has none and what
// fixes it ("" when p has the rule).
func (r *Repairer) check(ctx context.Context, p Pod, found map[netip.Addr]string, findErr error) (bool, string) {
	if findErr != nil {
		return false, fmt.Sprintf("cannot look for its network namespace (%v)", findErr)
	}
	path := ""
	for _, ip := range p.IPs {
		if path = found[ip]; path != "" {
			break
		}
	}
	if path == "" {
		return false, "no network namespace in the runtime's directory (--cni-netns-dir) holds its address; recreate the pod (the plugin writes the rule at ADD)"
	}
	verr := r.opts.Rules.Verify(path, r.opts.Entry)
	if verr == nil {
		return false, ""
	}
	if !r.opts.Fix {
		return false, fmt.Sprintf("not repaired (--cni-repair=false): %v; recreate the pod", verr)
	}
	if err := r.opts.Rules.Apply(ctx, path, r.opts.Entry); err != nil {
		r.repairs.WithLabelValues("failed").Inc()
		return false, fmt.Sprintf("writing it failed: %v; recreate the pod", err)
	}
	r.repairs.WithLabelValues("repaired").Inc()
	r.log.WithField("pod", p.Key()).WithField("netns", path).Info("pod had no in-pod rule (it started without the CNI plugin): rule written")
	return true, ""
}

// Run makes a pass now, every interval, and whenever wake signals (the
// installer after it chained the entry: pods created while it was missing
// are found at once), until ctx ends.
func (r *Repairer) Run(ctx context.Context, interval time.Duration, wake <-chan struct{}) {
	ticker := time.NewTicker(interval)
	defer ticker.Stop()
	for {
		if _, err := r.Pass(ctx); err != nil {
			r.log.WithError(err).Warn("CNI repair pass could not look for pods' network namespaces")
		}
		select {
		case <-ctx.Done():
			return
		case <-ticker.C:
		case <-wake:
		}
	}
}
