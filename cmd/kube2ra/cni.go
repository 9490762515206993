package main

import (
	"context"
	"net/netip"
	"path/filepath"

	"github.com/kube2ra/kube2ra/cni/install"
	"github.com/kube2ra/kube2ra/cni/plugin"
	"github.com/kube2ra/kube2ra/iptables"
	"github.com/kube2ra/kube2ra/k8s"
)

// metadataPort is the port of every metadata address the plugin redirects.
const metadataPort = 80

// cniEntry is the plugin's conflist entry from the agent's settings: the
// addresses the host rules redirect, to the same HOST_IP:port, with the
// iptables backend the host rules use.
func cniEntry(cfg *Config, backend iptables.Mode) plugin.Config {
	e := plugin.Config{
		Type:            plugin.PluginType,
		NodeIP:          cfg.parsed.hostIP,
		Port:            uint16(cfg.AppPort),
		IPTablesBackend: string(backend),
	}
	redirect := func(a netip.Addr) { e.Redirect = append(e.Redirect, netip.AddrPortFrom(a, metadataPort)) }
	redirect(iptables.MetadataIPv4)
	if cfg.PodIdentity {
		redirect(iptables.PodIdentityIPv4)
	}
	if cfg.IPv6 {
		e.NodeIPv6 = cfg.parsed.hostIPv6
		redirect(iptables.MetadataIPv6)
		if cfg.PodIdentity {
			redirect(iptables.PodIdentityIPv6)
		}
	} else if wantIPv6Guard(cfg) {
		// IPv6 off on a kernel with IPv6: the pod is refused the IPv6
		// addresses, as the host's guard refuses them, also where the
		// host's netfilter is skipped (eBPF dataplanes).
		refuse := func(a netip.Addr) { e.Refuse = append(e.Refuse, netip.AddrPortFrom(a, metadataPort)) }
		refuse(iptables.MetadataIPv6)
		if cfg.PodIdentity {
			refuse(iptables.PodIdentityIPv6)
		}
	}
	return e
}

// cniOptions are the installer's options from the agent's settings.
func cniOptions(cfg *Config, backend iptables.Mode) install.Options {
	return install.Options{
		Binary:  cfg.CNIPluginBinary,
		BinDir:  cfg.CNIBinDir,
		ConfDir: cfg.CNIConfDir,
		Entry:   cniEntry(cfg, backend),
		Resync:  cfg.CNIResync,
	}
}

// startCNI installs the plugin and keeps it installed until ctx ends. The
// first check runs inside the watch loop: a primary CNI's broken conflist
// is the primary's problem to fix, reported by /readyz, and never stops
// the agent that serves the pods already running.
func (a *agent) startCNI(ctx context.Context) error {
	var backend iptables.Mode
	if a.rules != nil {
		backend = a.rules.Backend()
	} else {
		backend = iptables.ChooseBackend(ctx, a.cfg.parsed.iptablesMode, a.log.WithField("component", "cni"))
	}
	opts := cniOptions(a.cfg, backend)
	opts.Logger, opts.Registerer = a.log.WithField("component", "cni"), a.reg
	inst, err := install.New(opts)
	if err != nil {
		return err
	}
	a.cni, a.cniEntry = inst, opts.Entry
	a.wg.Go(func() { inst.Run(ctx) })
	a.repair, err = install.NewRepairer(install.RepairOptions{
		Rules:  install.PluginRules{},
		Finder: install.NetnsDir{Dir: a.cfg.CNINetnsDir},
		Entry:  opts.Entry,
		Fix:    a.cfg.CNIRepair,
		// A pod the runtime is re-creating shows its old address for a
		// moment: reported only when a second pass finds it uncovered too.
		ReportAfter: 2,
		Pods:        a.repairPods,
		HostRules:   func() bool { return a.rules != nil },
		Report: func(p install.Pod, msg string) {
			a.cniEvents.PodWarning(&k8s.Pod{Namespace: p.Namespace, Name: p.Name, UID: p.UID}, reasonNotInterceptedInPod, msg)
		},
		Logger:     a.log.WithField("component", "cni-repair"),
		Registerer: a.reg,
	})
	if err != nil {
		return err
	}
	a.wg.Go(func() { a.repair.Run(ctx, a.cfg.CNIResync, inst.Inserted()) })
	return nil
}

// reasonNotInterceptedInPod is the Warning Event on a pod the CNI plugin's
// rule is missing from and the agent could not add it to.
const reasonNotInterceptedInPod = "MetadataNotInterceptedInPod"

// repairPods are this node's pods with a network namespace of their own
// and an address: the ones the in-pod rule must cover.
func (a *agent) repairPods() []install.Pod { return inPodRulePods(a.watcher.Pods()) }

// inPodRulePods are the pods among pods that the in-pod rule must cover.
func inPodRulePods(pods []*k8s.Pod) []install.Pod {
	var out []install.Pod
	for _, p := range pods {
		if !servedByIP(p) || len(p.IPs) == 0 {
			continue
		}
		out = append(out, install.Pod{Namespace: p.Namespace, Name: p.Name, UID: p.UID, IPs: p.IPs})
	}
	return out
}

// cniProblem is /readyz's reason when the plugin is not installed as
// configured, "" when it is or --cni is off.
func (a *agent) cniProblem() string {
	if a.cni == nil {
		return ""
	}
	st, err := install.Inspect(a.cfg.CNIBinDir, a.cfg.CNIConfDir, &a.cniEntry)
	if err != nil {
		return "could not check the CNI plugin: " + err.Error()
	}
	if p := st.Problem(); p != "" {
		return p
	}
	if a.repair != nil {
		if a.repair.Last() == nil {
			// Ready means the running pods were checked (and repaired) once.
			return "the first check of the running pods for the in-pod rule has not finished"
		}
		return a.repair.Problem()
	}
	return ""
}

// explainCNI is `explain --node`'s view of the pod layer: the plugin's
// binary and entry, and which of the node's pods each layer covers (the
// agent's repair check, writing nothing).
func explainCNI(ctx context.Context, r *report, cfg *Config, pods []*k8s.Pod, podsListed bool, problem func(label, format string, args ...any)) {
	if !cfg.CNI {
		r.line("cni", "--cni=false: no in-pod rule; pods are covered by the host rules alone (gone after a reboot until the agent runs, bypassed by eBPF dataplanes)")
		return
	}
	backend := iptables.ChooseBackend(ctx, cfg.parsed.iptablesMode, discard())
	entry := cniEntry(cfg, backend)
	st, err := install.Inspect(cfg.CNIBinDir, cfg.CNIConfDir, &entry)
	switch {
	case err != nil:
		problem("cni", "cannot read the plugin's state: %v", err)
	case !st.Installed():
		problem("cni", "%s", st.Problem())
	default:
		r.line("cni", "plugin installed: %s, entry %d of %d (last) in %s, as the agent writes it (backend %s)", filepath.Join(cfg.CNIBinDir, plugin.PluginType), st.Position+1, st.Plugins, st.Conflist, backend)
	}
	if !podsListed {
		return
	}
	rep, err := install.NewRepairer(install.RepairOptions{
		Rules: install.PluginRules{}, Finder: install.NetnsDir{Dir: cfg.CNINetnsDir}, Entry: entry,
		Pods:      func() []install.Pod { return inPodRulePods(pods) },
		HostRules: func() bool { return cfg.IPTables },
	})
	if err != nil {
		problem("cni", "%v", err)
		return
	}
	cov, err := rep.Pass(ctx)
	if err != nil {
		problem("cni", "cannot check the pods' namespaces (run explain on the node, in the agent's pod): %v", err)
		return
	}
	r.line("cni", "pods covered in-pod: %d; only by the host rule: %d; by neither: %d", cov.Pods[install.LayerInPod], cov.Pods[install.LayerHostOnly], cov.Pods[install.LayerNone])
	for _, p := range cov.Problems {
		problem("cni", "%s", p)
	}
}
