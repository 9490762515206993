package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"net/netip"
	neturl "net/url"
	"os"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/sirupsen/logrus"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/kube2ra/kube2ra/arn"
	"github.com/kube2ra/kube2ra/credentials"
	"github.com/kube2ra/kube2ra/imdsprobe"
	"github.com/kube2ra/kube2ra/iptables"
	"github.com/kube2ra/kube2ra/k8s"
	"github.com/kube2ra/kube2ra/kubeapi"
	"github.com/kube2ra/kube2ra/kubeapi/objects"
	"github.com/kube2ra/kube2ra/rolesanywhere"
)

// Exit codes of `kube2ra explain` (exitUsage, 2, when it cannot answer).
const (
	// exitServed: the pod would get a role (node mode: nothing stops the agent).
	exitServed = 0
	// exitDenied: the pod would get no role (node mode: a problem was found).
	exitDenied = 1
)

const (
	// explainDefaultDaemonSet is where the README installs the chart.
	explainDefaultDaemonSet = "kube-system/kube2ra"
	// explainDefaultTimeout bounds reading the pod, the DaemonSet and the
	// node's pods and namespaces: a few lists, well under a second on a
	// healthy API server.
	explainDefaultTimeout = 30 * time.Second
	// agentStoreTimeout bounds asking the node's agent for /debug/store;
	// it answers from memory, so a slow answer means it cannot be reached.
	agentStoreTimeout = 2 * time.Second
	// noDaemonSet turns reading the DaemonSet off.
	noDaemonSet = "none"
	// placeholderHostIP stands in for --host-ip while a pod has no host
	// IP yet, or only an IPv6 one: the address decides nothing about the
	// pod's role, and Validate wants an IPv4 one.
	placeholderHostIP = "127.0.0.1"
)

// explainOptions are explain's own flags and arguments.
type explainOptions struct {
	// namespace and pod name the pod to explain (pod mode).
	namespace, pod string
	// nodeMode is --node: explain this node instead of a pod.
	nodeMode bool
	// nodeName is --node=NAME; empty: NODE_NAME, then the host name.
	nodeName string
	// daemonSet is --from-daemonset: namespace/name, or none.
	daemonSet string
	// daemonSetGiven is true when --from-daemonset was on the command line.
	daemonSetGiven bool
	// kubeconfig is --kubeconfig (explain's own, never the DaemonSet's).
	kubeconfig string
	// timeout bounds the API reads.
	timeout time.Duration
	// overrides are the agent flags given to explain, which win over the DaemonSet.
	overrides []flagSetting
}

// flagSetting is one agent flag as given on explain's command line.
type flagSetting struct {
	// name is the flag's name without dashes.
	name string
	// value is its value as flag.Value.String prints it.
	value string
}

// nodeModeFlag is --node: alone it turns node mode on; --node=NAME also
// names the node (the agent's --node is the node's name, so both fit).
type nodeModeFlag struct {
	// opts receives the mode and name.
	opts *explainOptions
}

func (f nodeModeFlag) IsBoolFlag() bool { return true }

func (f nodeModeFlag) String() string {
	if f.opts == nil {
		return ""
	}
	return f.opts.nodeName
}

func (f nodeModeFlag) Set(s string) error {
	switch s {
	case "true":
		f.opts.nodeMode = true
	case "false":
		f.opts.nodeMode = false
	default:
		f.opts.nodeMode, f.opts.nodeName = true, s
	}
	return nil
}

// explainUsage is the synopsis printed by --help and after a usage error.
const explainUsage = `Usage: kube2ra explain [-n NAMESPACE] POD [agent flags]
       kube2ra explain --node[=NAME] [agent flags]

Says which role a pod would get from kube2ra and why, step by step, from the
agent's own code: the role annotation or default role, the base role ARN, the
namespace's allowed-roles patterns, the ServiceAccount's role (--pod-identity),
whether the node's agent owns the pod's IP, and what the agent itself reports.
With --node (on a node, or in the agent's pod through kubectl exec): the
credential source, kube2ra's iptables rules, the interfaces --host-interface
matches and the pods behind them, with --cni the CNI plugin (binary, its
entry's place in the primary conflist) and which pods each layer covers
(in-pod, host rule only, neither), and whether the node's metadata service
is exposed.

The agent's settings are read from its DaemonSet (--from-daemonset, default
kube-system/kube2ra: its args and literal env values); any agent flag given
here (--default-role, --base-role-arn, --iam-role-key, ...) wins.

Exit: 0 the pod would get a role (node mode: no problem found), 1 it would be
denied (node mode: a problem found), with the reason and the fix, 2 usage
error or no answer possible (pod not found, API server unreachable).

Flags:
`

// explainCommand is `kube2ra explain`.
func explainCommand(args []string, stdout, stderr io.Writer) int {
	o, code, ok := parseExplainFlags(args, stdout, stderr)
	if !ok {
		return code
	}
	ctx, cancel := context.WithTimeout(context.Background(), o.timeout)
	defer cancel()
	restCfg, kubeErr := explainKubeConfig(o.kubeconfig)
	var kube k8s.Client
	if kubeErr == nil {
		restCfg.UserAgent = "kube2ra-explain/" + version
		if c, err := kubeapi.New(restCfg); err != nil {
			kubeErr = fmt.Errorf("building the Kubernetes client: %w", err)
		} else {
			kube = c
		}
	}
	if o.nodeMode {
		return explainNode(ctx, kube, kubeErr, o, hostRules, stdout)
	}
	if kubeErr != nil {
		fmt.Fprintf(stderr, "kube2ra explain: %v\n", kubeErr)
		return exitUsage
	}
	return explainPod(ctx, kube, o, stdout)
}

// parseExplainFlags parses explain's flags and the agent's. Flags may come
// before or after the pod's name, as with kubectl.
func parseExplainFlags(args []string, stdout, stderr io.Writer) (explainOptions, int, bool) {
	o := explainOptions{namespace: "default", daemonSet: explainDefaultDaemonSet, timeout: explainDefaultTimeout}
	fs := flag.NewFlagSet("explain", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {}
	// The agent's flags, except --node, which is explain's mode switch here.
	agent := flag.NewFlagSet("agent", flag.ContinueOnError)
	NewConfig().BindFlags(agent)
	agentFlags := map[string]bool{}
	agent.VisitAll(func(f *flag.Flag) {
		if f.Name == "node" || f.Name == "kubeconfig" {
			return
		}
		agentFlags[f.Name] = true
		fs.Var(f.Value, f.Name, f.Usage)
	})
	fs.StringVar(&o.namespace, "n", o.namespace, "the pod's namespace")
	fs.StringVar(&o.namespace, "namespace", o.namespace, "the pod's namespace")
	fs.Var(nodeModeFlag{&o}, "node", "explain this node instead of a pod: --node (the node from NODE_NAME, else the host name) or --node=NAME")
	fs.StringVar(&o.daemonSet, "from-daemonset", o.daemonSet, "namespace/name of the agent's DaemonSet whose args and env give the agent's settings, or none")
	fs.StringVar(&o.kubeconfig, "kubeconfig", "", "kubeconfig file (default: $KUBECONFIG, then in-cluster, then ~/.kube/config)")
	fs.DurationVar(&o.timeout, "timeout", o.timeout, "how long explain may take reading the API server")

	var positional []string
	for rest := args; ; {
		if err := fs.Parse(rest); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				fmt.Fprint(stdout, explainUsage)
				fs.SetOutput(stdout)
				fs.PrintDefaults()
				return o, 0, false
			}
			fmt.Fprintf(stderr, "kube2ra explain: see kube2ra explain --help\n")
			return o, exitUsage, false
		}
		rest = fs.Args()
		if len(rest) == 0 {
			break
		}
		positional, rest = append(positional, rest[0]), rest[1:]
	}
	fs.Visit(func(f *flag.Flag) {
		switch {
		case agentFlags[f.Name]:
			o.overrides = append(o.overrides, flagSetting{name: f.Name, value: f.Value.String()})
		case f.Name == "from-daemonset":
			o.daemonSetGiven = true
		}
	})
	bad := func(format string, args ...any) (explainOptions, int, bool) {
		fmt.Fprintf(stderr, "kube2ra explain: "+format+"\n", args...)
		return o, exitUsage, false
	}
	if o.daemonSet != noDaemonSet {
		if ns, name, ok := strings.Cut(o.daemonSet, "/"); !ok || ns == "" || name == "" || strings.Contains(name, "/") {
			return bad("--from-daemonset %q is not namespace/name: give e.g. %s, or none to use explain's flags alone", o.daemonSet, explainDefaultDaemonSet)
		}
	}
	if o.timeout <= 0 {
		return bad("--timeout %s must be positive", o.timeout)
	}
	switch {
	case o.nodeMode && len(positional) > 0:
		return bad("--node explains the node, not pod %q: give one or the other", positional[0])
	case !o.nodeMode && len(positional) == 0:
		return bad("which pod? give its name: kube2ra explain -n NAMESPACE POD (or --node for the node)")
	case !o.nodeMode && len(positional) > 1:
		return bad("one pod at a time: got %q", positional)
	case !o.nodeMode:
		o.pod = positional[0]
		if ns, name, ok := strings.Cut(o.pod, "/"); ok {
			// NAMESPACE/POD, as kube2ra's own logs write pods.
			o.namespace, o.pod = ns, name
		}
	}
	return o, 0, true
}

// explainKubeConfig finds the API server: --kubeconfig, else $KUBECONFIG,
// else in-cluster (kubectl exec into the agent's pod), else ~/.kube/config.
func explainKubeConfig(path string) (*rest.Config, error) {
	if path != "" || os.Getenv(clientcmd.RecommendedConfigPathEnvVar) != "" {
		rules := clientcmd.NewDefaultClientConfigLoadingRules()
		rules.ExplicitPath = path
		cfg, err := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, &clientcmd.ConfigOverrides{}).ClientConfig()
		if err != nil {
			return nil, fmt.Errorf("reading the kubeconfig (--kubeconfig %q, KUBECONFIG %q): %w", path, os.Getenv(clientcmd.RecommendedConfigPathEnvVar), err)
		}
		return cfg, nil
	}
	if cfg, err := rest.InClusterConfig(); err == nil {
		return cfg, nil
	}
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	cfg, err := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, &clientcmd.ConfigOverrides{}).ClientConfig()
	if err != nil {
		return nil, fmt.Errorf("no API server: not in a cluster, no --kubeconfig, no KUBECONFIG and no usable %s: %w", clientcmd.RecommendedHomeFile, err)
	}
	return cfg, nil
}

// report writes explain's answer: one labelled line per step, then the
// verdict and, when denied, the fix.
type report struct {
	// w receives the lines.
	w io.Writer
	// denials are the reasons found, in order; the first decides the fix shown first.
	denials []denial
}

// denial is one reason the pod gets no role, with what to do about it.
type denial struct {
	// reason says what stops the pod, in one sentence.
	reason string
	// fix says what to change.
	fix string
}

func (r *report) line(label, format string, args ...any) {
	fmt.Fprintf(r.w, "%-12s %s\n", label+":", fmt.Sprintf(format, args...))
}

// settingErrors prints each problem Validate found in the agent's settings
// on its own line; explain cannot answer with them.
func (r *report) settingErrors(err error) int {
	for _, line := range strings.Split(err.Error(), "\n") {
		r.line("error", "agent setting: %s", line)
	}
	return exitUsage
}

func (r *report) deny(reason, fix string) { r.denials = append(r.denials, denial{reason, fix}) }

// agentSettings rebuilds the agent's Config: the defaults, then the
// DaemonSet's args and literal env values, then this process's KUBE2RA_*
// environment (in the agent's pod, the agent's own), then explain's flags.
// Node-local files (the Roles Anywhere certificate and key) are not
// required to exist where explain runs; they are reported instead.
func agentSettings(ctx context.Context, kube k8s.Client, o explainOptions, r *report) (*Config, []string, error) {
	cfg := NewConfig()
	fs := flag.NewFlagSet("agent", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	cfg.BindFlags(fs)
	var sources []string
	if o.daemonSet != noDaemonSet && kube != nil {
		used, err := applyDaemonSet(ctx, kube, o.daemonSet, fs)
		switch {
		case err == nil:
			sources = append(sources, used)
		case apierrors.IsNotFound(err) && !o.daemonSetGiven:
			r.line("settings", "DaemonSet %s not found: the agent's settings are explain's flags and defaults (give --from-daemonset NAMESPACE/NAME of your install)", o.daemonSet)
		case (apierrors.IsForbidden(err) || apierrors.IsNotFound(err)) && !o.daemonSetGiven:
			r.line("settings", "cannot read DaemonSet %s (%v): the agent's settings are explain's flags and defaults", o.daemonSet, err)
		default:
			return nil, nil, err
		}
	}
	before := countSet(fs)
	if err := applyEnv(fs, os.Getenv); err != nil {
		return nil, nil, fmt.Errorf("this process's environment: %w", err)
	}
	if countSet(fs) > before {
		sources = append(sources, "this process's KUBE2RA_* environment")
	}
	var given []string
	for _, s := range o.overrides {
		if err := fs.Set(s.name, s.value); err != nil {
			return nil, nil, fmt.Errorf("--%s %q: %w", s.name, s.value, err)
		}
		given = append(given, "--"+s.name)
	}
	if len(given) > 0 {
		sources = append(sources, "explain's flags "+strings.Join(given, " "))
	}
	if len(sources) == 0 {
		sources = append(sources, "the defaults")
	}
	return cfg, sources, nil
}

// countSet is how many flags of fs have been set.
func countSet(fs *flag.FlagSet) int {
	n := 0
	fs.Visit(func(*flag.Flag) { n++ })
	return n
}

// envRef is a $(VAR) reference in a container's args, or the escape $$
// (a literal $), as the kubelet expands them.
var envRef = regexp.MustCompile(`\$\$|\$\(([A-Za-z_][A-Za-z0-9_]*)\)`)

// applyDaemonSet parses the DaemonSet's kube2ra container args and literal
// env values into fs, as the agent's run would. Values the kubelet fills in
// on the node (fieldRef, secrets) are left to the later layers; explain
// sets --node and --host-ip from the pod itself.
func applyDaemonSet(ctx context.Context, kube k8s.Client, ref string, fs *flag.FlagSet) (string, error) {
	ns, name, _ := strings.Cut(ref, "/")
	ds, err := kube.GetDaemonSet(ctx, ns, name)
	if err != nil {
		return "", fmt.Errorf("reading DaemonSet %s (--from-daemonset; none uses explain's flags alone): %w", ref, err)
	}
	c, err := agentContainer(ds)
	if err != nil {
		return "", err
	}
	env := map[string]string{}
	for _, e := range c.Env {
		if e.ValueFrom == nil {
			env[e.Name] = e.Value
		}
	}
	args := append(append([]string(nil), c.Command[min(1, len(c.Command)):]...), c.Args...)
	if len(args) > 0 && args[0] == "run" {
		args = args[1:]
	}
	args = expandArgs(args, func(name string) (string, bool) {
		if v, ok := env[name]; ok {
			return v, true
		}
		// In the agent's pod the kubelet has filled the downward API's.
		return os.LookupEnv(name)
	})
	if err := fs.Parse(args); err != nil {
		return "", fmt.Errorf("the args of DaemonSet %s container %s are not kube2ra run's (%v): fix them, or give --from-daemonset=none and the agent's flags to explain", ref, c.Name, err)
	}
	if fs.NArg() > 0 {
		return "", fmt.Errorf("the args of DaemonSet %s container %s have the stray argument %q: every setting of kube2ra run is a --flag", ref, c.Name, fs.Arg(0))
	}
	if err := applyEnv(fs, func(k string) string { return env[k] }); err != nil {
		return "", fmt.Errorf("the env of DaemonSet %s: %w", ref, err)
	}
	return fmt.Sprintf("DaemonSet %s (container %s: args and env values)", ref, c.Name), nil
}

// expandArgs expands $(VAR) in args as the kubelet does, with lookup. An
// argument left with a reference lookup cannot fill (NODE_NAME, HOST_IP from
// fieldRef, off the node) is dropped, with its value when that is the next
// argument, so the flag falls to the later layers (NODE_NAME and HOST_IP
// are read as run reads them) instead of holding "$(HOST_IP)".
func expandArgs(args []string, lookup func(string) (string, bool)) []string {
	var out []string
	for _, a := range args {
		unresolved := false
		a = envRef.ReplaceAllStringFunc(a, func(m string) string {
			if m == "$$" {
				return "$"
			}
			if v, ok := lookup(envRef.FindStringSubmatch(m)[1]); ok {
				return v
			}
			unresolved = true
			return m
		})
		if !unresolved {
			out = append(out, a)
			continue
		}
		if n := len(out); n > 0 && !strings.HasPrefix(a, "-") && strings.HasPrefix(out[n-1], "-") && !strings.Contains(out[n-1], "=") {
			out = out[:n-1] // "--host-ip" "$(HOST_IP)"
		}
	}
	return out
}

// agentContainer is the DaemonSet's container named kube2ra, else its only one.
func agentContainer(ds *objects.DaemonSet) (*objects.Container, error) {
	cs := ds.Spec.Template.Spec.Containers
	for i := range cs {
		if cs[i].Name == "kube2ra" {
			return &cs[i], nil
		}
	}
	if len(cs) == 1 {
		return &cs[0], nil
	}
	return nil, fmt.Errorf("DaemonSet %s/%s has %d containers and none is named kube2ra: give --from-daemonset=none and the agent's flags", ds.Namespace, ds.Name, len(cs))
}

// validateForExplain is Config.Validate, except that node-local files that
// do not exist here are listed instead of failing: explain reads no key.
func validateForExplain(cfg *Config) (unchecked []string, err error) {
	verr := cfg.Validate()
	if verr == nil {
		return nil, nil
	}
	all := []error{verr}
	if j, ok := verr.(interface{ Unwrap() []error }); ok {
		all = j.Unwrap()
	}
	var rest []error
	for _, e := range all {
		if pe := (*fs.PathError)(nil); errors.As(e, &pe) {
			unchecked = append(unchecked, e.Error())
			continue
		}
		rest = append(rest, e)
	}
	if len(rest) > 0 {
		return unchecked, errors.Join(rest...)
	}
	// Validate stops before keeping the parsed values when anything fails:
	// run it again with the missing files out of the way.
	saved := *cfg
	for _, p := range []*string{&cfg.RACertificate, &cfg.RAPrivateKey, &cfg.RAIntermediates, &cfg.RAPrivateKeyPasswordFile} {
		if *p != "" {
			if _, err := os.Stat(*p); err != nil {
				*p = os.DevNull
			}
		}
	}
	err = cfg.Validate()
	parsed := cfg.parsed
	*cfg = saved
	cfg.parsed = parsed
	return unchecked, err
}

// explainBase is the base role ARN the agent would use, and where it comes
// from; zero when explain cannot know it (STS discovers it on the node).
func explainBase(cfg *Config) (arn.Base, string) {
	if !cfg.parsed.baseRoleARN.IsZero() {
		return cfg.parsed.baseRoleARN, "--base-role-arn"
	}
	if !cfg.AutoDiscoverBaseARN {
		return arn.Base{}, "none: --base-role-arn is empty and --auto-discover-base-arn=false, so only full role ARNs work"
	}
	if cfg.resolvedSource() == sourceRolesAnywhere {
		if ta, err := arn.ParseTrustAnchor(cfg.RATrustAnchorARN); err == nil {
			return arn.BaseFromTrustAnchor(ta), "discovered from --ra-trust-anchor-arn, as the agent does"
		}
	}
	return arn.Base{}, "unknown here: with sts the agent discovers it from the node's instance profile at start; give explain --base-role-arn=arn:aws:iam::ACCOUNT:role/ to check bare role names"
}

// discard is a logger that writes nothing: explain's answer is its report.
func discard() *logrus.Logger {
	l := logrus.New()
	l.SetOutput(io.Discard)
	return l
}

// nodeView is the agent's view of one node, built with the agent's own
// watcher and resolver.
type nodeView struct {
	// watcher holds the node's pods and all namespaces.
	watcher *k8s.Watcher
	// resolver decides roles with the agent's settings.
	resolver *k8s.RoleResolver
	// stop ends the informers.
	stop func()
}

// watchNode starts the agent's watcher for node and waits for it to sync.
func watchNode(ctx context.Context, kube k8s.Client, cfg *Config, node string, base arn.Base) (*nodeView, error) {
	log := discard()
	w, err := k8s.NewWatcher(kube, k8s.WatcherOptions{NodeName: node, LookupTimeout: cfg.PodLookupTimeout, Keys: cfg.annotationKeys(), Logger: log})
	if err != nil {
		return nil, err
	}
	runCtx, cancel := context.WithCancel(ctx)
	w.Start(runCtx)
	stop := func() { cancel(); w.Shutdown() }
	if err := w.WaitForSync(ctx); err != nil {
		stop()
		return nil, fmt.Errorf("listing node %s's pods and all namespaces, as the agent does (may you list pods and namespaces?): %w", node, err)
	}
	opts := cfg.resolverOptions(k8s.StaticBaseARN(base.String()))
	opts.Logger = log
	resolver, err := k8s.NewRoleResolver(w, opts)
	if err != nil {
		stop()
		return nil, err
	}
	return &nodeView{watcher: w, resolver: resolver, stop: stop}, nil
}

// explainPod answers for one pod; it returns the exit code.
func explainPod(ctx context.Context, kube k8s.Client, o explainOptions, out io.Writer) int {
	r := &report{w: out}
	cannot := func(format string, args ...any) int {
		r.line("error", format, args...)
		return exitUsage
	}
	obj, err := kube.GetPod(ctx, o.namespace, o.pod)
	if apierrors.IsNotFound(err) {
		return cannot("pod %s/%s not found: check the name and -n NAMESPACE", o.namespace, o.pod)
	}
	if err != nil {
		return cannot("reading pod %s/%s: %v", o.namespace, o.pod, err)
	}
	r.line("pod", "%s/%s on node %q, phase %s, IPs %s, ServiceAccount %q", obj.Namespace, obj.Name, obj.Spec.NodeName, obj.Status.Phase, podIPList(obj), obj.Spec.ServiceAccountName)

	cfg, sources, err := agentSettings(ctx, kube, o, r)
	if err != nil {
		return cannot("%v", err)
	}
	r.line("settings", "%s", strings.Join(sources, ", then "))
	cfg.Node, cfg.HostIP = obj.Spec.NodeName, obj.Status.HostIP
	if cfg.Node == "" {
		cfg.Node = "(unscheduled)"
	}
	if ip, err := netip.ParseAddr(cfg.HostIP); err != nil || (ip.Is6() && !ip.Is4In6()) {
		// Unscheduled, or an IPv6-first node, whose IPv4 address (the one
		// the agent serves on) the pod's status does not give.
		cfg.HostIP = placeholderHostIP
	}
	unchecked, err := validateForExplain(cfg)
	if err != nil {
		return r.settingErrors(err)
	}
	for _, u := range unchecked {
		r.line("settings", "not checked here (a file on the node): %s", u)
	}
	keys := cfg.annotationKeys()
	r.line("keys", "role annotation %s (--iam-role-key), external ID %s (--iam-external-id), namespace policy %s (--namespace-key)", keys.Role, keys.ExternalID, keys.Namespace)

	if obj.Spec.NodeName == "" {
		r.deny("the pod is not scheduled to a node yet, so no agent serves it", "wait until it is scheduled, then explain again")
		return r.verdict("", "")
	}
	base, baseFrom := explainBase(cfg)
	view, err := watchNode(ctx, kube, cfg, obj.Spec.NodeName, base)
	if err != nil {
		return cannot("%v", err)
	}
	defer view.stop()
	pod := findPod(view.watcher, obj)
	if pod == nil {
		return cannot("pod %s/%s is not among node %s's pods as the agent lists them (deleted meanwhile?); explain again", obj.Namespace, obj.Name, obj.Spec.NodeName)
	}

	metadataRole, undecided := explainRole(ctx, r, cfg, view, pod, base, baseFrom)
	if undecided != "" {
		return cannot("%s", undecided)
	}
	explainIPs(r, view.watcher, pod)
	doorRole := ""
	if cfg.PodIdentity {
		if doorRole, err = explainTokenDoor(ctx, r, kube, cfg, view, pod); err != nil {
			return cannot("%v", err)
		}
	}
	explainAgentStore(ctx, r, cfg, pod, metadataRole)
	return r.verdict(metadataRole, doorRole)
}

// podIPList is the pod's status IPs for the first line.
func podIPList(p *objects.Pod) string {
	var ips []string
	for _, ip := range p.Status.PodIPs {
		ips = append(ips, ip.IP)
	}
	if len(ips) == 0 && p.Status.PodIP != "" {
		ips = append(ips, p.Status.PodIP)
	}
	if len(ips) == 0 {
		return "none yet"
	}
	return strings.Join(ips, ",")
}

// findPod is the agent's copy of obj (same UID) among the node's pods.
func findPod(w *k8s.Watcher, obj *objects.Pod) *k8s.Pod {
	for _, p := range w.Pods() {
		if p.UID == obj.UID {
			return p
		}
	}
	return nil
}

// explainRole walks the metadata door's role decision: annotation or
// default role, base ARN, namespace policy. It returns the role ARN the
// pod gets ("" when denied), or why explain cannot decide.
func explainRole(ctx context.Context, r *report, cfg *Config, view *nodeView, pod *k8s.Pod, base arn.Base, baseFrom string) (roleARN, undecided string) {
	keys := cfg.annotationKeys()
	asked := strings.TrimSpace(pod.Annotations[keys.Role])
	named := asked
	switch {
	case asked != "":
		r.line("role", "annotation %s = %q", keys.Role, asked)
	case cfg.DefaultRole != "":
		named = cfg.DefaultRole
		r.line("role", "no %s annotation: --default-role %q applies (granted cluster-wide, so exempt from namespace policy)", keys.Role, cfg.DefaultRole)
	default:
		r.line("role", "no %s annotation and no --default-role", keys.Role)
	}
	if named != "" && !strings.HasPrefix(named, arn.Prefix) {
		if base.IsZero() {
			r.line("base ARN", "%s", baseFrom)
		} else {
			r.line("base ARN", "%s (%s), prepended to %q", base, baseFrom, named)
		}
	}
	role, err := view.resolver.ResolveRole(ctx, pod)
	var d *k8s.DenialError
	switch {
	case err == nil:
		if role.TargetARN == "" {
			r.line("role ARN", "%s (name %s, account %s)", role.ARN, role.Name, role.AccountID)
		} else {
			r.line("role ARN", "%s (the first hop)", role.ARN)
		}
		switch {
		case role.Default:
			r.line("policy", "not checked: the default role is exempt from namespace policy")
		case !cfg.NamespaceRestrictions:
			r.line("policy", "not checked: --namespace-restrictions=false")
		default:
			explainPolicy(r, view, pod.Namespace, role.ARN)
		}
		if role.ExternalID != "" {
			r.line("external ID", "%s is set: passed to sts:AssumeRole", keys.ExternalID)
		}
		if role.TargetARN != "" {
			r.line("target role", "%s (%s): assumed through STS with %s's credentials, for one hour at most; the pod is served its credentials (name %s, account %s)",
				role.TargetARN, k8s.TargetRoleKey, role.ARN, role.Name, role.AccountID)
			if cfg.NamespaceRestrictions {
				explainPolicy(r, view, pod.Namespace, role.TargetARN)
			}
		}
		if role.SessionPolicy != "" {
			r.line("session policy", "%d characters (%s of the pod or its ServiceAccount, capped by the namespace's) sent with the last AssumeRole", len(role.SessionPolicy), k8s.SessionPolicyKey)
		}
		return role.ARN, ""
	case errors.Is(err, k8s.ErrNoRole):
		r.deny(fmt.Sprintf("the pod has no %s annotation and the agent has no --default-role", keys.Role),
			fmt.Sprintf("annotate the pod (its template) with %s: ROLE, or set --default-role on the agent", keys.Role))
	case errors.As(err, &d):
		if d.Reason == k8s.DeniedInvalidRole && base.IsZero() && cfg.AutoDiscoverBaseARN && cfg.parsed.baseRoleARN.IsZero() && cfg.resolvedSource() == sourceSTS {
			return "", fmt.Sprintf("role %q is a bare name and the base role ARN is %s", d.Role, baseFrom)
		}
		if d.Reason == k8s.DeniedByNamespace || d.Reason == k8s.DeniedInvalidPolicy {
			r.line("role ARN", "%s", d.Role)
			explainPolicy(r, view, pod.Namespace, d.Role)
		}
		r.deny(fmt.Sprintf("role %s denied (%s)", d.Role, d.Reason), d.Detail)
	default:
		return "", fmt.Sprintf("resolving the role: %v", err)
	}
	return "", ""
}

// explainPolicy prints how the namespace's allowed-roles policy judges roleARN.
func explainPolicy(r *report, view *nodeView, namespace, roleARN string) {
	ns, ok := view.watcher.Namespace(namespace)
	if !ok {
		r.line("policy", "namespace %s is not in the agent's cache", namespace)
		return
	}
	c := view.resolver.CheckPolicy(ns, roleARN)
	switch {
	case !c.Present:
		r.line("policy", "namespace %s has no %s annotation: it allows no role but the default", namespace, c.Key)
	case c.Err != nil:
		r.line("policy", "namespace %s's %s is unusable, so it allows no role: %v", namespace, c.Key, c.Err)
	default:
		r.line("policy", "namespace %s %s (%s) = %s", namespace, c.Key, c.Format, c.Raw)
		for i, p := range c.Patterns {
			verdict := "does not match"
			switch {
			case i == c.Match:
				verdict = "matches: allowed"
			case c.Match >= 0 && i > c.Match:
				verdict = "not tried: an earlier pattern allows it"
			}
			r.line("  pattern", "%s %s", p, verdict)
		}
		if c.Match < 0 {
			r.line("policy", "no pattern matches %s (the whole ARN must match)", roleARN)
		}
	}
}

// explainIPs says whether the node's agent owns each of the pod's IPs:
// the metadata door knows a pod only by its source address.
func explainIPs(r *report, w *k8s.Watcher, pod *k8s.Pod) {
	const door = "the metadata door knows a pod only by its source IP"
	switch {
	case pod.HostNetwork:
		r.line("IP", "the pod uses the host network: its requests are the node's own, which the DNAT never redirects and the agent never serves")
		r.deny("the pod runs with hostNetwork: true, so "+door+" and the node's address is no pod's",
			"run it without hostNetwork (or, with --pod-identity, use the token door, which knows a pod by its ServiceAccount token)")
		return
	case pod.Terminating:
		r.line("IP", "the pod is being deleted: it owns its IP only while the node's runtime still records its sandbox with it (until its containers stop and its network is torn down; after that the address may be a new pod's), which explain cannot see from here")
		r.deny("the pod is terminating: the agent serves it only while its sandbox holds the address (with the chart's --cni-results-dir), and never after", "none needed: its SDK keeps the credentials it holds until they expire; a replacement pod gets its own")
		return
	case len(pod.IPs) == 0:
		r.line("IP", "the pod has no IP yet")
		r.deny("the pod has no IP yet, so "+door, "wait until it is running, then explain again")
		return
	}
	entries := map[string]k8s.IPEntry{}
	for _, e := range w.Snapshot() {
		entries[e.IP] = e
	}
	for _, ip := range pod.IPs {
		e, ok := entries[ip.String()]
		switch {
		case !ok:
			r.line("IP", "%s is not in the agent's index (phase finished?)", ip)
			r.deny(fmt.Sprintf("IP %s is not served: the pod's phase has given it back", ip), "none: a finished pod gets no credentials")
		case e.Verdict == "owned" && e.Owner != nil && e.Owner.UID == pod.UID:
			r.line("IP", "%s is owned by this pod: the one live pod on node %s holding it (holders: %s)", ip, pod.NodeName, strings.Join(e.Holders, ", "))
		case e.Verdict == "ambiguous":
			r.line("IP", "%s is claimed by several live pods: %s", ip, strings.Join(e.Holders, ", "))
			r.deny(fmt.Sprintf("IP %s is claimed by several live pods (%s); the agent never guesses and refuses every request from it", ip, strings.Join(e.Holders, ", ")),
				"find the pod that no longer holds the address (a stale status from a CNI or a node that lost track) and delete it")
		default:
			r.line("IP", "%s is held by %s (verdict %s)", ip, strings.Join(e.Holders, ", "), e.Verdict)
			r.deny(fmt.Sprintf("IP %s is not this pod's in the agent's view (%s)", ip, e.Verdict), "explain again once the pod's status settles")
		}
	}
}

// explainTokenDoor walks the token door's decision (--pod-identity): the
// pod's annotation, else its ServiceAccount's role, through the same
// resolver. It returns the role ARN, "" when denied.
func explainTokenDoor(ctx context.Context, r *report, kube k8s.Client, cfg *Config, view *nodeView, pod *k8s.Pod) (string, error) {
	accounts, err := k8s.NewServiceAccounts(kube, cfg.IAMRoleKey)
	if err != nil {
		return "", err
	}
	runCtx, cancel := context.WithCancel(ctx)
	defer func() { cancel(); accounts.Shutdown() }()
	accounts.Start(runCtx)
	if err := accounts.WaitForSync(ctx, k8s.SyncLog{}); err != nil {
		return "", fmt.Errorf("listing ServiceAccounts as the token door does (may you list serviceaccounts?): %w", err)
	}
	saRole, ok := accounts.ServiceAccountRole(pod.Namespace, pod.ServiceAccount)
	switch {
	case strings.TrimSpace(pod.Annotations[cfg.IAMRoleKey]) != "":
		r.line("token door", "the pod's own %s annotation wins over its ServiceAccount's", cfg.IAMRoleKey)
	case !ok:
		r.line("token door", "ServiceAccount %s/%s not found", pod.Namespace, pod.ServiceAccount)
	case saRole == "":
		r.line("token door", "ServiceAccount %s/%s names no role (%s or %s)", pod.Namespace, pod.ServiceAccount, cfg.IAMRoleKey, k8s.IRSARoleKey)
	default:
		r.line("token door", "ServiceAccount %s/%s names role %q", pod.Namespace, pod.ServiceAccount, saRole)
	}
	roles, err := k8s.NewServiceAccountRoles(view.resolver, accounts, cfg.IAMRoleKey)
	if err != nil {
		return "", err
	}
	role, err := roles.ResolveRole(ctx, pod)
	if err != nil {
		r.line("token door", "no role: %v", err)
		return "", nil
	}
	r.line("token door", "role %s, for a token with audience %s", role.ARN, cfg.PodIdentityAudience)
	if !explainTokenAccount(r, accounts, pod) || !explainTokenSource(r, cfg, view.watcher, pod) {
		return "", nil
	}
	return role.ARN, nil
}

// explainTokenAccount says which ServiceAccount a token of pod must have
// been issued for, as the token door checks it (k8s.PodAuthenticator):
// the account's current UID, so a token outlives neither the account nor
// its UID. It reports false when no token of the pod is accepted now.
func explainTokenAccount(r *report, accounts *k8s.ServiceAccounts, pod *k8s.Pod) bool {
	uid, ok := accounts.ServiceAccountUID(pod.Namespace, pod.ServiceAccount)
	if !ok {
		r.line("token for", "ServiceAccount %s/%s, which the agent's cache lacks: every token of the pod is answered 503 (retry) until it is there", pod.Namespace, pod.ServiceAccount)
		return false
	}
	r.line("token for", "ServiceAccount %s/%s with UID %s only: a token issued for an earlier account of that name is refused (401 %s; recreate the pod)",
		pod.Namespace, pod.ServiceAccount, uid, k8s.TokenServiceAccountReplaced)
	return true
}

// explainTokenSource says from which source addresses the token door
// accepts pod's token (proxy's sourceMatches): a pod network pod's only
// from an address it owns under the metadata door's rule (FindPod, the
// same pod UID), a host-network pod's only from the node's own addresses
// or loopback (package nodeaddrs). It reports false when no address
// qualifies now.
func explainTokenSource(r *report, cfg *Config, w *k8s.Watcher, pod *k8s.Pod) bool {
	const refused = "403 AccessDeniedException, source_mismatch"
	switch {
	case pod.HostNetwork:
		node := "node " + pod.NodeName + "'s"
		if cfg.HostIP != placeholderHostIP {
			node += ", " + cfg.HostIP + " among them"
		}
		r.line("token from", "the node's own addresses only (%s, loopback included): the pod shares the node's network, so its token from any pod's address is refused (%s)", node, refused)
		return true
	case pod.Terminating:
		r.line("token from", "its IP only while its sandbox still holds it (the agent reads the runtime's records; explain cannot), then no address: it may be a new pod's (%s)", refused)
		return false
	case len(pod.IPs) == 0:
		r.line("token from", "no address yet: the agent does not know the pod's IP, so its token is answered 503 (retry) until it does")
		return false
	}
	entries := map[string]k8s.IPEntry{}
	for _, e := range w.Snapshot() {
		entries[e.IP] = e
	}
	var owned []string
	for _, ip := range pod.IPs {
		e, ok := entries[ip.String()]
		switch {
		case ok && e.Verdict == "owned" && e.Owner != nil && e.Owner.UID == pod.UID:
			owned = append(owned, ip.String())
		case ok && e.Verdict == "ambiguous":
			r.line("token from", "not %s: several live pods claim it (%s), so the token is refused from it (%s)", ip, strings.Join(e.Holders, ", "), refused)
		default:
			r.line("token from", "not %s: the pod does not own it in the agent's view, so the token is refused from it (%s)", ip, refused)
		}
	}
	if len(owned) == 0 {
		return false
	}
	r.line("token from", "%s only, owned by this pod (UID %s) under the metadata door's rule; the same token from any other address, another pod's or the node's, is refused (%s)",
		strings.Join(owned, ", "), pod.UID, refused)
	return true
}

// explainAgentStore asks the node's agent what it holds for the pod's IPs
// (/debug/store on the metrics port, with --debug), and says so when it
// cannot be asked. The agent answers that page only over loopback on its
// node, so explain asks only when it runs on the pod's node (NODE_NAME, as in
// the agent's pod, else the host name).
func explainAgentStore(ctx context.Context, r *report, cfg *Config, pod *k8s.Pod, roleARN string) {
	if pod.NodeName == "" {
		r.line("agent", "not asked: the pod is not on a node yet")
		return
	}
	if here := thisNode(); here != pod.NodeName {
		r.line("agent", "not asked: the agent shows what it holds (/debug/store) only over loopback on its own node, and this is %q, not %s; run explain there: kubectl exec -n kube-system AGENT_POD_ON_%s -- kube2ra explain -n %s %s",
			here, pod.NodeName, pod.NodeName, pod.Namespace, pod.Name)
		r.line("credentials", "not known here: the agent could not be asked")
		return
	}
	url := "http://" + net.JoinHostPort("127.0.0.1", strconv.Itoa(cfg.MetricsPort)) + "/debug/store"
	entries, err := fetchAgentStore(ctx, url)
	if err != nil {
		r.line("agent", "%s: %v", url, err)
		r.line("credentials", "not known here: the agent could not be asked")
		return
	}
	byIP := map[string]debugEntry{}
	for _, e := range entries {
		byIP[e.IP] = e
	}
	var creds *credentials.EntryState
	for _, ip := range pod.IPs {
		e, ok := byIP[ip.String()]
		switch {
		case !ok:
			r.line("agent", "%s: the agent on node %s has no entry for %s", url, pod.NodeName, ip)
		case e.Role != "":
			r.line("agent", "%s: %s %s by %s, role %s", url, ip, e.Verdict, strings.Join(e.Holders, ", "), e.Role)
			if roleARN != "" && e.Role != roleARN {
				r.line("agent", "the agent resolves %s, explain %s: their settings differ (check --from-daemonset and explain's flags)", e.Role, roleARN)
			}
		default:
			r.line("agent", "%s: %s %s by %s, no role: %s", url, ip, e.Verdict, strings.Join(e.Holders, ", "), e.RoleError)
		}
		if ok && e.Owner != nil && e.Owner.UID == pod.UID && e.Credentials != nil {
			creds = e.Credentials
		}
	}
	switch {
	case creds == nil:
		r.line("credentials", "the agent's cache tracks no entry for this pod (no role, or not announced yet)")
	case creds.Cached:
		r.line("credentials", "cached for %s: served until %s (expire %s), refreshed from %s", creds.RoleARN,
			creds.ServableUntil.UTC().Format(time.RFC3339), creds.Expiration.UTC().Format(time.RFC3339), creds.RefreshAt.UTC().Format(time.RFC3339))
	case creds.LastError != "":
		r.line("credentials", "not cached for %s: the last upstream call failed: %s", creds.RoleARN, creds.LastError)
	case creds.Fetching:
		r.line("credentials", "not cached yet for %s: an upstream call is running", creds.RoleARN)
	default:
		r.line("credentials", "not cached for %s: the first request will call upstream", creds.RoleARN)
	}
}

// fetchAgentStore reads the agent's /debug/store.
func fetchAgentStore(ctx context.Context, url string) ([]debugEntry, error) {
	ctx, cancel := context.WithTimeout(ctx, agentStoreTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	client := &http.Client{Transport: &http.Transport{Proxy: nil, DisableKeepAlives: true}}
	resp, err := client.Do(req)
	if err != nil {
		if ue := (*neturl.Error)(nil); errors.As(err, &ue) {
			err = ue.Err // the URL is already on the line
		}
		return nil, fmt.Errorf("not reachable (%v): is the agent running on this node, with this --metrics-port?", err)
	}
	defer resp.Body.Close()
	switch resp.StatusCode {
	case http.StatusNotFound:
		return nil, errors.New("not served: the agent runs without --debug, which adds /debug/store")
	case http.StatusForbidden:
		return nil, errors.New("refused: the agent answers /debug/store only to loopback connections on its node")
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("answered %s", resp.Status)
	}
	var entries []debugEntry
	if err := json.NewDecoder(io.LimitReader(resp.Body, 16<<20)).Decode(&entries); err != nil {
		return nil, fmt.Errorf("not the agent's store: %w", err)
	}
	return entries, nil
}

// verdict prints the answer and returns the exit code: served when the
// metadata door gives the pod metadataRole with nothing in the way, or the
// token door gives it doorRole.
func (r *report) verdict(metadataRole, doorRole string) int {
	if metadataRole != "" && len(r.denials) == 0 {
		r.line("verdict", "served: role %s at 169.254.169.254", metadataRole)
		return exitServed
	}
	if len(r.denials) == 0 {
		r.deny("no role", "see the lines above")
	}
	if doorRole != "" {
		r.line("verdict", "served by the token door only: role %s (the metadata door refuses the pod)", doorRole)
	} else {
		r.line("verdict", "denied")
	}
	for _, d := range r.denials {
		r.line("reason", "%s", d.reason)
		r.line("fix", "%s", d.fix)
	}
	if doorRole != "" {
		return exitServed
	}
	return exitDenied
}

// servedByIP reports whether the metadata door could serve a pod by its
// IP at all: host-network and terminating pods never own one.
func servedByIP(p *k8s.Pod) bool { return !p.Terminating && !p.HostNetwork }

// rulesReader is what --node needs of the node's rules: the iptables
// package's own check. *iptables.Redirect has it.
type rulesReader interface {
	// RulesProblem is "" when the rules are exactly as the agent installs them.
	RulesProblem(ctx context.Context) (string, error)
	// Backend names the iptables backend in use.
	Backend() iptables.Mode
}

var _ rulesReader = (*iptables.Redirect)(nil)

// hostRules reads this host's rules through the iptables binary, the
// backend chosen as the agent chooses it.
func hostRules(ctx context.Context, cfg iptables.Config) (rulesReader, error) {
	return iptables.New(ctx, cfg)
}

// explainNode answers for this node; it returns the exit code. rules
// opens the node's rules (hostRules; tests pass a fake).
func explainNode(ctx context.Context, kube k8s.Client, kubeErr error, o explainOptions, rules func(context.Context, iptables.Config) (rulesReader, error), out io.Writer) int {
	r := &report{w: out}
	problems := 0
	problem := func(label, format string, args ...any) {
		problems++
		r.line(label, "PROBLEM: "+format, args...)
	}
	cfg, sources, err := agentSettings(ctx, kube, o, r)
	if err != nil {
		r.line("error", "%v", err)
		return exitUsage
	}
	r.line("settings", "%s", strings.Join(sources, ", then "))
	if o.nodeName != "" {
		cfg.Node = o.nodeName
	}
	if cfg.Node == "" {
		cfg.Node, _ = os.Hostname()
	}
	unchecked, err := validateForExplain(cfg)
	if err != nil {
		return r.settingErrors(err)
	}
	for _, u := range unchecked {
		problem("settings", "%s", u)
	}
	r.line("node", "%s, host IP %s", cfg.Node, cfg.HostIP)

	explainSource(r, cfg, problem)

	var pods []*k8s.Pod
	podsListed := false
	switch {
	case kubeErr != nil:
		r.line("pods", "not listed: %v", kubeErr)
	default:
		base, _ := explainBase(cfg)
		view, err := watchNode(ctx, kube, cfg, cfg.Node, base)
		if err != nil {
			r.line("pods", "not listed: %v", err)
			break
		}
		pods, podsListed = view.watcher.Pods(), true
		view.stop()
	}

	if !cfg.IPTables {
		r.line("rules", "--iptables=false: kube2ra installs no rules here; pods reach 169.254.169.254 as they would without it")
	} else {
		explainRules(ctx, r, cfg, rules, problem)
		explainInterfaces(r, cfg, pods, problem)
	}
	explainCNI(ctx, r, cfg, pods, podsListed, problem)

	if url := cfg.parsed.metadataURL; url == "" {
		r.line("IMDS", "--metadata-addr none: no metadata service behind the agent, nothing to probe")
	} else if res, err := imdsprobe.Probe(ctx, url, probeTimeout); err != nil {
		r.line("IMDS", "could not tell whether %s is exposed to pods: %v", url, err)
	} else if res.Exposed() {
		r.line("IMDS", "WARNING: %s would give a pod that reaches it directly the node's credentials: %s; kube2ra's rules stop that while they are in place; close it: %s", url, res.Problems(), imdsprobe.Fix)
	} else {
		r.line("IMDS", "%s is closed to pods (IMDSv2 required, hop limit 1; hop limit known: %v)", url, res.HopLimitKnown)
	}
	if problems > 0 {
		r.line("verdict", "%d problem(s) found", problems)
		return exitDenied
	}
	r.line("verdict", "no problem found")
	return exitServed
}

// explainSource says which credential source the agent uses and, for
// Roles Anywhere, whether the node's certificate and key are usable.
func explainSource(r *report, cfg *Config, problem func(label, format string, args ...any)) {
	switch cfg.resolvedSource() {
	case sourceRolesAnywhere:
		r.line("source", "IAM Roles Anywhere: trust anchor %s, profile %s, certificate %s", cfg.RATrustAnchorARN, cfg.RAProfileARN, cfg.RACertificate)
		src, err := rolesanywhere.NewSource(raConfig(cfg), rolesanywhere.Deps{Logger: discard(), Registerer: prometheus.NewRegistry()})
		if err == nil {
			err = src.Ready()
		}
		if err != nil {
			problem("source", "the Roles Anywhere source is not usable: %v", err)
			return
		}
		r.line("source", "the node's certificate and key load and can sign (region %s)", src.Region())
	default:
		r.line("source", "STS AssumeRole with the node's own credentials (region %q, discovered from the instance when empty)", cfg.Region)
	}
}

// explainRules checks kube2ra's chains with the iptables package's own check.
func explainRules(ctx context.Context, r *report, cfg *Config, open func(context.Context, iptables.Config) (rulesReader, error), problem func(label, format string, args ...any)) {
	icfg := nodeRulesConfig(cfg)
	icfg.Logger, icfg.Registerer = discard(), prometheus.NewRegistry()
	icfg.IPv6Guard = wantIPv6Guard(cfg) // as the agent decides it
	rules, err := open(ctx, icfg)
	if err != nil {
		problem("rules", "cannot read the iptables rules: %v", err)
		return
	}
	switch p, err := rules.RulesProblem(ctx); {
	case err != nil:
		problem("rules", "cannot read the iptables rules (backend %s): %v", rules.Backend(), err)
	case p != "":
		problem("rules", "not as the agent installs them (backend %s): %s; the agent restores them every --iptables-resync while it runs; if it is not running, start it", rules.Backend(), p)
	default:
		r.line("rules", "present and exactly as the agent installs them (backend %s)", rules.Backend())
	}
}

// explainInterfaces lists the node's interfaces --host-interface matches
// and, for each pod address, the interface its traffic comes in on.
func explainInterfaces(r *report, cfg *Config, pods []*k8s.Pod, problem func(label, format string, args ...any)) {
	specs := cfg.parsed.interfaces
	var matched, others []string
	if links, err := net.Interfaces(); err != nil {
		r.line("interfaces", "cannot list this node's interfaces: %v", err)
	} else {
		for _, l := range links {
			if iptables.Covers(specs, l.Name) {
				matched = append(matched, l.Name)
			} else {
				others = append(others, l.Name)
			}
		}
		r.line("interfaces", "--host-interface %s matches: %s; not: %s", cfg.HostInterface, listOrNone(matched), listOrNone(others))
	}
	if pods == nil {
		return
	}
	byIface := map[string][]string{}
	var served []*k8s.Pod
	for _, p := range pods {
		if !servedByIP(p) {
			continue
		}
		served = append(served, p)
		for _, ip := range p.IPs {
			iface, err := iptables.RouteInterface(ip)
			if err != nil {
				iface = "(no route: " + err.Error() + ")"
			}
			byIface[iface] = append(byIface[iface], fmt.Sprintf("%s (%s)", p.Key(), ip))
		}
	}
	names := make([]string, 0, len(byIface))
	for n := range byIface {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		r.line("pods", "via %s (matched: %v): %s", n, iptables.Covers(specs, n), strings.Join(byIface[n], ", "))
	}
	c := &coverage{
		specs: specs, pattern: cfg.HostInterface, events: k8s.NewPodEvents(nil),
		pods:      func() []*k8s.Pod { return served },
		uncovered: prometheus.NewGauge(prometheus.GaugeOpts{Name: "kube2ra_pods_not_intercepted"}),
	}
	if p := c.check(); p != "" {
		problem("coverage", "%s", p)
	} else {
		r.line("coverage", "every pod address on node %s comes in through an interface --host-interface matches (%d pods)", cfg.Node, len(served))
	}
}

// listOrNone joins names, or says none.
func listOrNone(names []string) string {
	if len(names) == 0 {
		return "none"
	}
	return strings.Join(names, ", ")
}

// thisNode is the node explain runs on: NODE_NAME (the agent's pod has it
// from the downward API), else the host name.
func thisNode() string {
	if n := os.Getenv("NODE_NAME"); n != "" {
		return n
	}
	h, _ := os.Hostname()
	return h
}
