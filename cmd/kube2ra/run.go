package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/sirupsen/logrus"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/kube2ra/kube2ra/arn"
	"github.com/kube2ra/kube2ra/cni/install"
	"github.com/kube2ra/kube2ra/cni/plugin"
	"github.com/kube2ra/kube2ra/cniresults"
	"github.com/kube2ra/kube2ra/credentials"
	"github.com/kube2ra/kube2ra/handover"
	"github.com/kube2ra/kube2ra/iptables"
	"github.com/kube2ra/kube2ra/k8s"
	"github.com/kube2ra/kube2ra/kubeapi"
	"github.com/kube2ra/kube2ra/proxy"
)

// syncTimeout bounds the first informer sync. Listing one node's pods and all
// namespaces takes well under a second; two minutes covers an API server that
// is itself restarting when the node boots.
const syncTimeout = 2 * time.Minute

// sourceCheckTimeout bounds resolving the STS base credentials at start; the
// instance profile comes from IMDS in milliseconds.
const sourceCheckTimeout = 30 * time.Second

// rulesTimeout bounds installing or removing the iptables rules.
const rulesTimeout = 30 * time.Second

// kubeQPS and kubeBurst are the agent's API budget: it only lists, watches
// and writes a few Events.
const (
	kubeQPS   = 20
	kubeBurst = 40
	// verifyQPS and verifyBurst are a separate budget for the live checks
	// made while a watch is not current (at most one GET in flight per
	// calling pod), so they never queue the informers behind them.
	verifyQPS   = 20
	verifyBurst = 50
)

func runCommand(args []string, stdout, stderr io.Writer) int {
	cfg := NewConfig()
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	cfg.BindFlags(fs)
	dryRun := fs.Bool("dry-run", false, "check every flag and environment variable as run does, print the effective configuration and exit (0 valid, 2 not); connects to nothing")
	if code, ok := parseFlags(fs, args, stdout, stderr); !ok {
		return code
	}
	cfg.explicit = givenFlags(fs)
	if cfg.kube2iam["version"].on() {
		return versionCommand(nil, stdout, stderr)
	}
	if err := cfg.Validate(); err != nil {
		for _, line := range strings.Split(err.Error(), "\n") {
			fmt.Fprintf(stderr, "kube2ra run: %s\n", line)
		}
		return exitUsage
	}
	if *dryRun {
		cfg.writeKube2iamNotices(stderr)
		printEffective(stdout, cfg)
		return 0
	}
	log, err := newLogger(stderr, cfg.LogFormat, cfg.parsed.logLevel.String())
	if err != nil {
		fmt.Fprintf(stderr, "kube2ra run: %v\n", err)
		return exitUsage
	}
	log.WithField("version", version).WithField("commit", commit).Infof("kube2ra starting: %s", cfg)
	for _, w := range append(cfg.LifetimeWarnings(), cfg.EndpointWarnings()...) {
		log.Warn(w)
	}
	cfg.logKube2iamNotices(log)
	if v6 := cfg.parsed.hostIPv6First; v6.IsValid() {
		log.WithField("host_ip", cfg.HostIP).Infof("the node's primary address %s is IPv6 (an IPv6-first dual-stack node): the IPv4 metadata redirect uses its IPv4 address from --host-ips", v6)
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if err := runAgent(ctx, cfg, log); err != nil {
		log.WithError(err).Error("kube2ra stopped")
		return 1
	}
	return 0
}

// agent is one running node agent: the parts and their readiness.
type agent struct {
	// cfg is the validated configuration.
	cfg *Config
	// log is the process logger.
	log logrus.FieldLogger
	// reg is the metrics registry the ops server serves.
	reg *prometheus.Registry
	// kube talks to the API server.
	kube k8s.Client
	// watcher finds pods by IP.
	watcher *k8s.Watcher
	// source is the credential source behind the cache.
	source *sourceParts
	// cache holds and refreshes the pods' credentials.
	cache *credentials.CredentialCache
	// events records Kubernetes Events on pods and the node.
	events *k8s.EventRecorder
	// notifier announces pods' roles to the broker for prefetch.
	notifier *k8s.RoleNotifier
	// podIdentity is the token door; nil without --pod-identity.
	podIdentity *podIdentityDoor
	// server is the IMDS proxy.
	server *proxy.Server
	// ops serves health, readiness and metrics.
	ops *proxy.OpsServer
	// owner follows the agent's own DaemonSet, to decide the rules on exit.
	owner ownerDecision
	// rules is the DNAT; nil with --iptables=false.
	rules nodeRules
	// cni keeps the chained CNI plugin installed; nil without --cni.
	cni *install.Installer
	// cniEntry is the plugin's conflist entry cni writes.
	cniEntry plugin.Config
	// repair adds the in-pod rule to running pods that lack it, or reports
	// them; nil without --cni.
	repair *install.Repairer
	// cniEvents records the Warning on each pod repair cannot fix.
	cniEvents *k8s.PodEvents
	// offer hands the listening sockets to a successor; nil without --handover-dir.
	offer *handover.Offer
	// handedOver is set once a successor serves the sockets: this agent
	// drained and leaves the rules to it.
	handedOver bool
	// cancel stops everything started under start's context.
	cancel context.CancelFunc
	// stopNode stops what keeps this agent's redirect on the node (the
	// rules' monitor and coverage check, the CNI plugin's installer and
	// repair): a successor's from the handover on.
	stopNode context.CancelFunc
	// wg waits for every goroutine start launched.
	wg sync.WaitGroup
	// serveErr receives a listener's failure.
	serveErr chan error
	// synced, sourceReady and rulesReady are the readiness conditions.
	synced, sourceReady, rulesReady atomic.Bool
	// baseARN is the discovered or configured base role ARN.
	baseARN atomic.Pointer[string]
	// coverageProblem names pods --host-interface misses; nil or "" when none.
	coverageProblem atomic.Pointer[string]
}

// nodeRules is what the agent needs of the node's DNAT and guard rules;
// *iptables.Redirect has it, and tests pass iptables.Fake behind it.
type nodeRules interface {
	iptables.Rules
	// Monitor restores the rules every interval until ctx ends.
	Monitor(ctx context.Context, interval time.Duration) error
	// Backend names the iptables backend in use.
	Backend() iptables.Mode
}

// ownerDecision is what decideRules needs of the owner watch: whether the
// agent's own DaemonSet is gone, and why.
type ownerDecision interface {
	Gone() (bool, string)
}

// runAgent builds the agent, starts it, waits for a signal or a failed
// listener and shuts it down.
func runAgent(ctx context.Context, cfg *Config, log *logrus.Logger) error {
	log.WithFields(logrus.Fields{"gogc": setGCDefault(), "gomaxprocs": setMaxProcsDefault()}).Debug("Go runtime settings")
	a, err := buildAgent(ctx, cfg, log)
	if err != nil {
		return err
	}
	defer a.events.Shutdown()
	if err := a.start(ctx); err != nil {
		return err
	}
	runErr := a.wait(ctx)
	a.shutdown()
	if a.handedOver && ctx.Err() == nil {
		// Exiting now would make the kubelet restart this container, which
		// would then take the sockets back: wait for the pod's deletion.
		a.log.Info("handover done: waiting for SIGTERM")
		<-ctx.Done()
	}
	return runErr
}

// buildAgent constructs every part; nothing listens or watches yet, except
// that the credential source is checked, so a bad source fails before any
// listener opens.
func buildAgent(ctx context.Context, cfg *Config, log *logrus.Logger) (_ *agent, err error) {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	buildInfo := prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "kube2ra_build_info", Help: "Build of the running agent (always 1)."}, []string{"version", "commit", "source"})
	reg.MustRegister(buildInfo)
	a := &agent{cfg: cfg, log: log, reg: reg}
	reg.MustRegister(a.readyGauge())
	empty := ""
	a.baseARN.Store(&empty)
	if base := cfg.parsed.baseRoleARN.String(); base != "" {
		a.baseARN.Store(&base)
	}

	restCfg, err := kubeConfig(cfg.Kubeconfig)
	if err != nil {
		return nil, err
	}
	restCfg.UserAgent = "kube2ra/" + version
	restCfg.QPS, restCfg.Burst = kubeQPS, kubeBurst
	a.kube, err = kubeapi.New(restCfg)
	if err != nil {
		return nil, fmt.Errorf("building the Kubernetes client: %w", err)
	}
	verifyCfg := rest.CopyConfig(restCfg)
	verifyCfg.QPS, verifyCfg.Burst = verifyQPS, verifyBurst
	verifyClient, err := kubeapi.New(verifyCfg)
	if err != nil {
		return nil, fmt.Errorf("building the Kubernetes client for live checks: %w", err)
	}

	// The credential source is made usable before the informers start, so
	// the pods announced during the first sync are prefetched at once.
	a.source, err = newSourceParts(ctx, cfg, log, reg)
	if err != nil {
		return nil, err
	}
	if err := a.source.check(ctx); err != nil {
		return nil, err
	}
	a.sourceReady.Store(true)
	log.WithField("source", a.source.name).WithField("region", a.source.region).Info("credential source ready")
	buildInfo.WithLabelValues(version, commit, a.source.name).Set(1)
	if b := a.source.baseARN(); b != "" && cfg.BaseRoleARN == "" && cfg.AutoDiscoverBaseARN {
		a.baseARN.Store(&b)
	}
	// Target roles are assumed through the regional STS endpoint of the
	// source's region, signed with each pod's first-role credentials.
	targetHop, err := credentials.NewTargetSTSSource(ctx, credentials.STSOptions{
		Region:   a.source.region,
		Endpoint: cfg.STSEndpoint,
		Logger:   log.WithField("component", "sts-target"),
	})
	if err != nil {
		return nil, fmt.Errorf("building the STS client for target roles: %w", err)
	}
	chain, err := credentials.NewChainSource(a.source.source, targetHop)
	if err != nil {
		return nil, err
	}
	a.cache, err = credentials.NewCredentialCache(credentials.CacheOptions{
		Source:     chain,
		Registerer: reg,
		Logger:     log.WithField("component", "credentials"),
		MinTTL:     cfg.CredentialMinTTL,
		QPS:        cfg.UpstreamQPS,
		Burst:      cfg.UpstreamBurst,
	})
	if err != nil {
		return nil, fmt.Errorf("building the credential cache: %w", err)
	}
	broker, err := newPodCredentials(a.cache, podRequestRules{
		naming:         a.source.naming,
		tags:           cfg.parsed.tagMode,
		directTags:     a.source.name == sourceSTS,
		transitiveTags: cfg.SessionTagsTransitive,
		node:           cfg.Node,
		clusterName:    cfg.ClusterName,
		clusterARN:     cfg.ClusterARN,
		region:         a.source.region,
	}, reg)
	if err != nil {
		return nil, err
	}

	keys := cfg.annotationKeys()
	var sandboxes k8s.SandboxIPs
	if cfg.CNIResultsDir != "" {
		results := cniresults.New(cfg.CNIResultsDir, log.WithField("component", "cni-results"))
		if err := results.Start(ctx); err != nil {
			// Only speed depends on it: new pods wait for the API instead.
			log.WithError(err).Warn("--cni-results-dir cannot be read: a new pod is known only once the kubelet reports its IP to the API server")
		} else {
			sandboxes = results
		}
	}
	a.watcher, err = k8s.NewWatcher(a.kube, k8s.WatcherOptions{
		NodeName:      cfg.Node,
		LookupTimeout: cfg.PodLookupTimeout,
		Keys:          keys,
		Logger:        log.WithField("component", "k8s"),
		APIServer:     restCfg.Host,
		Registerer:    reg,
		VerifyClient:  verifyClient,
		Sandboxes:     sandboxes,
	})
	if err != nil {
		return nil, err
	}
	events, err := k8s.NewEventRecorder(a.kube, k8s.EventOptions{NodeName: cfg.Node, Logger: log.WithField("component", "events")})
	if err != nil {
		return nil, err
	}
	a.events = events
	a.cniEvents = k8s.NewPodEvents(events)
	a.source.notices.events.Store(events)
	broker.events = k8s.NewPodEvents(events)
	// From here on a failed build stops the Event recorder it started.
	defer func() {
		if err != nil {
			events.Shutdown()
		}
	}()
	opts := cfg.resolverOptions(func() string { return *a.baseARN.Load() })
	opts.Events, opts.Logger = events, log.WithField("component", "roles")
	resolver, err := k8s.NewRoleResolver(a.watcher, opts)
	if err != nil {
		return nil, err
	}
	a.notifier, err = k8s.NewRoleNotifier(a.watcher, resolver, broker, log.WithField("component", "notifier"))
	if err != nil {
		return nil, err
	}

	if from, err := resolveHostIPv6(ctx, cfg, a.kube); err != nil {
		return nil, err
	} else if from != "" {
		log.WithField("host_ipv6", cfg.HostIPv6).Infof("node IPv6 address found in %s", from)
	}
	if cfg.PodIdentity {
		if a.podIdentity, err = newPodIdentityDoor(cfg, a.kube, a.watcher, resolver, log); err != nil {
			return nil, err
		}
		// Pods whose role only their ServiceAccount names are prefetched too.
		a.notifier.UseServiceAccountRoles(a.podIdentity.accounts)
	}
	a.server, err = proxy.New(proxy.Options{
		HostIP:          cfg.HostIP,
		HostIPv6:        hostIPv6(cfg),
		AppPort:         cfg.AppPort,
		IMDSv2Required:  cfg.IMDSv2Required,
		MetadataAddr:    cfg.resolvedMetadataAddr(),
		AllowPaths:      cfg.MetadataAllowPaths,
		Region:          a.source.region,
		RateLimit:       cfg.RateLimit,
		ShutdownTimeout: cfg.ShutdownTimeout,
		Logger:          log.WithField("component", "proxy"),
		Registerer:      reg,
		PodIdentity:     a.podIdentity.proxyDoor(),
		Events:          k8s.NewPodEvents(events),
	}, a.watcher, resolver, broker)
	if err != nil {
		return nil, err
	}
	a.ops, err = proxy.NewOpsServer(proxy.OpsOptions{
		Addr:       net.JoinHostPort(cfg.HostIP, strconv.Itoa(cfg.MetricsPort)),
		AlsoHosts:  opsIPv6FirstHosts(cfg),
		Gatherer:   reg,
		Ready:      a.ready,
		Debug:      cfg.Debug,
		DebugStore: func() any { return debugStore(a.watcher, resolver, a.cache) },
		Logger:     log.WithField("component", "ops"),
	})
	if err != nil {
		return nil, err
	}
	if err := a.shareMetadataPort(); err != nil {
		return nil, err
	}
	return a, nil
}

// start brings the agent up in its fixed order: listen, informers synced,
// DNAT and guard rules, startup taint removed. On a failure it stops what it
// started and returns the error.
func (a *agent) start(ctx context.Context) error {
	cfg, log := a.cfg, a.log
	// 1. Listen: health and metrics answer from now on, readiness says why
	// not yet. With an agent serving this node already (an upgrade), nothing
	// is bound: its sockets are taken over at step 5, once this one is warm.
	if cfg.HandoverDir != "" {
		a.restoreTokenKey()
	}
	claim, err := a.claimHandover(ctx)
	if err != nil {
		return err
	}
	if claim == nil {
		if err := a.listen(net.Listen); err != nil {
			return err
		}
	}
	runCtx, cancel := context.WithCancel(ctx)
	a.cancel = cancel
	fail := func(err error) error {
		if claim != nil {
			_ = claim.Close()
		}
		cancel()
		a.wg.Wait()
		return err
	}
	a.serveErr = make(chan error, 2)
	if claim == nil {
		a.serve(runCtx)
	}
	a.wg.Go(func() { a.cache.Run(runCtx) })
	a.wg.Go(func() { a.source.run(runCtx) })
	if err := startProfiling(runCtx, log); err != nil {
		return fail(err)
	}

	if a.source.name == sourceSTS && cfg.parsed.metadataURL != "" {
		a.wg.Go(func() {
			if err := a.checkMetadataExposure(runCtx); err != nil {
				log.WithError(err).Error("metadata exposure check")
			}
		})
	}

	// 2. Informers synced (the credential source was made usable first).
	a.watcher.Start(runCtx)
	a.owner = k8s.WatchOwner(runCtx, a.kube, os.Getenv("POD_NAME"), os.Getenv("POD_NAMESPACE"))
	syncCtx, syncCancel := context.WithTimeout(runCtx, syncTimeout)
	err = a.watcher.WaitForSync(syncCtx)
	syncCancel()
	if err != nil {
		return fail(fmt.Errorf("pod and namespace informers did not sync within %s (is the API server reachable, and may kube2ra list pods and namespaces?): %w", syncTimeout, err))
	}
	if a.podIdentity != nil {
		syncCtx, syncCancel := context.WithTimeout(runCtx, syncTimeout)
		err = a.podIdentity.start(runCtx, syncCtx, log)
		syncCancel()
		if err != nil {
			return fail(err)
		}
	}
	a.notifier.Resync()
	a.synced.Store(true)
	log.WithField("pods", a.watcher.CachedPods()).WithField("namespaces", a.watcher.CachedNamespaces()).Info("informers synced")

	log.WithField("base_role_arn", *a.baseARN.Load()).Debug("base role ARN")

	// 3 and 4: the node's redirect (takeNode). With an agent serving the
	// node already, its rules and CNI entry stay as they are until this one
	// serves (step 5): a configuration that changes them (another port)
	// would otherwise send pods to a port nobody listens on yet, and the two
	// agents would rewrite each other's rules and plugin while this one
	// warms up.
	nodeCtx, stopNode := context.WithCancel(runCtx)
	a.stopNode = stopNode
	takeNode := func() error { return a.takeNode(nodeCtx) }
	if claim == nil {
		if err := takeNode(); err != nil {
			return fail(err)
		}
	}
	// 5. Take the predecessor's sockets over, the node's pods' credentials
	// cached first; then offer them to the next agent.
	if claim != nil {
		if err := a.takeOver(runCtx, claim, takeNode); err != nil {
			return fail(err)
		}
	}
	if cfg.HandoverDir != "" {
		if err := a.offerHandover(runCtx); err != nil {
			return fail(err)
		}
	}
	a.rulesReady.Store(true)
	log.Info("kube2ra ready")
	if cfg.RemoveStartupTaint {
		if err := a.removeStartupTaint(runCtx); err != nil {
			return fail(err)
		}
	}
	return nil
}

// wait blocks until ctx ends (a signal), a listener fails or a successor
// took the sockets over, and returns the listener's error.
func (a *agent) wait(ctx context.Context) error {
	var handedOver <-chan struct{}
	if a.offer != nil {
		handedOver = a.offer.HandedOver()
	}
	select {
	case <-ctx.Done():
		if a.offer != nil {
			// A successor warming up is about to take the sockets: closing
			// them now would refuse pods until it binds them anew.
			wctx, cancel := context.WithTimeout(context.Background(), a.cfg.ShutdownTimeout)
			took := a.offer.WaitForSuccessor(wctx)
			cancel()
			if took {
				a.drain()
				return nil
			}
		}
		a.log.Info("signal received: draining requests in flight")
		return nil
	case err := <-a.serveErr:
		a.log.WithError(err).Error("a listener failed")
		return err
	case <-handedOver:
		a.drain()
		return nil
	}
}

// shutdown stops a started agent in order: not ready, drain the proxy,
// decide the rules (unless a successor took over: they are its now), stop
// the rest and wait for every goroutine.
func (a *agent) shutdown() {
	a.synced.Store(false)
	if a.offer != nil {
		a.offer.Close()
	}
	shutdownCtx, shutdownCancel := context.WithTimeout(context.Background(), a.cfg.ShutdownTimeout)
	_ = a.server.Shutdown(shutdownCtx)
	shutdownCancel()
	if (a.rules != nil || a.cni != nil) && !a.handedOver {
		a.decideRules()
	}
	a.cancel()
	shutdownCtx, shutdownCancel = context.WithTimeout(context.Background(), time.Second)
	_ = a.ops.Shutdown(shutdownCtx)
	shutdownCancel()
	a.watcher.Shutdown()
	if a.podIdentity != nil {
		a.podIdentity.accounts.Shutdown()
	}
	a.wg.Wait()
}

// takeNode puts this agent's redirect on the node: 3. the DNAT and guard
// rules (only now that every request can be answered), their coverage check
// and monitor; 4. the chained CNI plugin, so new pods get the redirect in
// their own network namespace, also after a reboot, before any agent runs.
// What it starts runs under ctx, which a handover to a successor ends.
func (a *agent) takeNode(ctx context.Context) error {
	cfg, log := a.cfg, a.log
	if cfg.IPTables {
		if err := a.installRules(ctx); err != nil {
			return err
		}
		if err := a.startCoverage(ctx); err != nil {
			return err
		}
		a.wg.Go(func() {
			if err := a.rules.Monitor(ctx, cfg.IPTablesResync); err != nil && ctx.Err() == nil {
				log.WithError(err).Error("iptables monitor stopped")
			}
		})
	}
	if cfg.CNI {
		if err := a.startCNI(ctx); err != nil {
			return err
		}
	}
	return nil
}

func (a *agent) installRules(ctx context.Context) error {
	icfg := nodeRulesConfig(a.cfg)
	icfg.Logger, icfg.Registerer = a.log.WithField("component", "iptables"), a.reg
	if wantIPv6Guard(a.cfg) {
		a.log.Info("--ipv6 is off and the kernel has IPv6: pods are refused fd00:ec2::254 by the IPv6 guard")
		icfg.IPv6Guard = true
	}
	rulesCtx, cancel := context.WithTimeout(ctx, rulesTimeout)
	defer cancel()
	rules, err := iptables.New(rulesCtx, icfg)
	if err != nil {
		return err
	}
	a.rules = rules
	changed, err := a.rules.EnsureRules(rulesCtx)
	if err != nil {
		return fmt.Errorf("installing the DNAT and guard rules: %w", err)
	}
	a.log.WithField("backend", a.rules.Backend()).WithField("changed", changed).Info("DNAT and guard rules in place")
	return nil
}

// readyCheckTimeout bounds the rules check a scrape of kube2ra_ready makes
// (an iptables-save, waiting for the xtables lock at worst).
const readyCheckTimeout = 5 * time.Second

// readyGauge is kube2ra_ready: /readyz's answer at scrape time, so an alert
// sees an agent that runs but serves no pod (the kubelet only marks it unready).
func (a *agent) readyGauge() prometheus.GaugeFunc {
	return prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "kube2ra_ready",
		Help: "1 when /readyz would answer 200 (informers synced, credential source usable, rules in place, every pod intercepted), else 0.",
	}, func() float64 {
		ctx, cancel := context.WithTimeout(context.Background(), readyCheckTimeout)
		defer cancel()
		if a.ready(ctx) != nil {
			return 0
		}
		return 1
	})
}

// ready is /readyz: every start-up step done and the rules still in place.
func (a *agent) ready(ctx context.Context) error {
	var missing []string
	if !a.synced.Load() {
		missing = append(missing, "pod and namespace informers not synced")
	}
	if !a.sourceReady.Load() {
		missing = append(missing, "credential source not ready")
	} else if err := a.source.ready(); err != nil {
		missing = append(missing, "credential source: "+err.Error())
	}
	if !a.rulesReady.Load() {
		missing = append(missing, "DNAT and guard rules not installed")
	} else if a.rules != nil {
		switch ok, err := a.rules.RulesPresent(ctx); {
		case err != nil:
			missing = append(missing, fmt.Sprintf("could not check the DNAT and guard rules: %v", err))
		case !ok:
			missing = append(missing, "DNAT or guard rules are not as installed (flushed or changed by someone else); restored at the next --iptables-resync, compare `iptables-save` with the README's \"The node's iptables rules\"")
		}
	}
	if p := a.cniProblem(); p != "" {
		missing = append(missing, p)
	}
	if p := a.coverageProblem.Load(); p != nil && *p != "" {
		missing = append(missing, *p)
	}
	if a.offer != nil {
		if p, ok := a.offer.Successor(); ok {
			missing = append(missing, fmt.Sprintf("a successor agent (pid %d, version %s) is taking over this node's sockets; the new pod is ready once it serves them", p.PID, p.Version))
		}
	}
	if len(missing) > 0 {
		return errors.New(strings.Join(missing, "; "))
	}
	return nil
}

// decideRules keeps the DNAT and guard rules and the CNI plugin on exit
// (fail closed: during a rolling update or a reboot pods get a refused
// connection, never the node's metadata service, and new pods still get
// the in-pod rule) unless the agent's own DaemonSet is gone or being
// deleted, which means kube2ra is being uninstalled and a stale rule, or a
// plugin whose agent never comes back, would break every pod's metadata
// access.
func (a *agent) decideRules() {
	remove, why := a.owner.Gone()
	log := a.log.WithField("reason", why)
	if !remove {
		log.Info("keeping the DNAT and guard rules and the CNI plugin for the next agent")
		return
	}
	if a.cni != nil {
		// First, so that no new pod gets a rule pointing at a gone agent.
		if err := a.cni.Remove(); err != nil {
			log.WithError(err).Error("removing the CNI plugin failed: run `kube2ra cleanup` on this node")
		} else {
			log.Info("CNI plugin binary and conflist entry removed")
		}
	}
	if a.rules == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), rulesTimeout)
	defer cancel()
	if err := a.rules.Remove(ctx); err != nil {
		log.WithError(err).Error("removing the DNAT and guard rules failed: run `kube2ra cleanup` on this node")
		return
	}
	log.Info("DNAT and guard rules removed")
}

func kubeConfig(path string) (*rest.Config, error) {
	if path != "" {
		cfg, err := clientcmd.BuildConfigFromFlags("", path)
		if err != nil {
			return nil, fmt.Errorf("--kubeconfig %q: %w", path, err)
		}
		return cfg, nil
	}
	cfg, err := rest.InClusterConfig()
	if err != nil {
		return nil, fmt.Errorf("not running in a cluster and no --kubeconfig given: %w", err)
	}
	return cfg, nil
}

// podCredentials adapts the credential cache to the proxy (credentials for
// a pod's role) and to the pod notifier (prefetch and eviction). It owns the
// one rule that turns a pod and its role into a cache key, so a prefetch and
// the pod's first request always meet in the same entry.
type podCredentials struct {
	// cache holds the credentials.
	cache *credentials.CredentialCache
	// rules turn a pod and its role into a request.
	rules podRequestRules
	// events tells a pod's owner about upstream failures they must act on
	// (rate-limited per pod and reason); nil records none.
	events *k8s.PodEvents
	// failures counts pod requests that failed that way, by reason.
	failures *prometheus.CounterVec
}

// podRequestRules are the settings that shape a pod's credential request.
type podRequestRules struct {
	// naming decides the session name, and with it which pods share a
	// cache entry: the name is part of the key, so pod naming never hands
	// one pod's session to another and node naming shares one per role.
	naming credentials.SessionNaming
	// tags is --session-tags.
	tags credentials.TagMode
	// directTags is true when the first hop can carry tags (STS); with
	// Roles Anywhere only target hops carry them.
	directTags bool
	// transitiveTags is --session-tags-transitive.
	transitiveTags bool
	// node is this node's name, for the node tag and node session names.
	node string
	// clusterName and clusterARN are --cluster-name and --cluster-arn.
	clusterName, clusterARN string
	// region is the source's region, for target external IDs without --cluster-arn.
	region string
}

// newPodCredentials builds the broker and registers its failure counter.
func newPodCredentials(cache *credentials.CredentialCache, rules podRequestRules, reg prometheus.Registerer) (*podCredentials, error) {
	failures := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "kube2ra_credential_failures_total",
		Help: "Pod credential requests that failed for a reason an operator must fix, by reason (the Event reason on the pod).",
	}, []string{"reason"})
	for _, r := range credentials.ActionableReasons {
		failures.WithLabelValues(r) // present at 0 from the start
	}
	if err := reg.Register(failures); err != nil {
		return nil, fmt.Errorf("registering the credential failure metric: %w", err)
	}
	return &podCredentials{cache: cache, rules: rules, failures: failures}, nil
}

// request is the cache key of pod's credentials for role. With a target
// role, tags (when on) go on the target hop; else the target hop carries
// EKS's external ID, for which the cluster name is required.
func (r podRequestRules) request(pod *k8s.Pod, role k8s.Role) (credentials.Request, error) {
	req := credentials.Request{RoleARN: role.ARN, ExternalID: role.ExternalID, Policy: role.SessionPolicy}
	req.SessionName = r.naming.SessionNameFor(pod.Namespace, pod.Name, r.node)
	tags := r.tags.Tags(credentials.PodTags{Namespace: pod.Namespace, Pod: pod.Name, PodUID: string(pod.UID), ServiceAccount: pod.ServiceAccount,
		Node: r.node, ClusterName: r.clusterName, ClusterARN: r.clusterARN})
	if role.TargetARN == "" {
		if r.directTags {
			req.Tags, req.TransitiveTags = tags, r.transitiveTags && len(tags) > 0
		}
		return req, nil
	}
	req.TargetRoleARN = role.TargetARN
	// The target's session is named like the first's; Roles Anywhere may
	// send none, and STS requires one.
	req.TargetSessionName = req.SessionName
	if req.TargetSessionName == "" {
		req.TargetSessionName = credentials.NodeSessionName(r.node)
	}
	if len(tags) > 0 {
		req.Tags, req.TransitiveTags = tags, r.transitiveTags
		return req, nil
	}
	if r.clusterName == "" {
		return req, &credentials.Error{Kind: credentials.KindInvalid, Source: credentials.STSSourceName, RoleARN: role.TargetARN, Hop: credentials.HopTarget,
			Message: "a target role without session tags carries EKS's external ID region/account/cluster/namespace/serviceaccount, and --cluster-name (the chart's clusterName) is not set: set it, or turn --session-tags on"}
	}
	region, account := r.region, ""
	if r.clusterARN != "" {
		region, account, _, _ = parseClusterARN(r.clusterARN) // validated with the flags
	}
	if account == "" {
		first, err := arn.ParseRole(role.ARN)
		if err != nil {
			return req, &credentials.Error{Kind: credentials.KindInvalid, Source: credentials.STSSourceName, RoleARN: role.ARN, Hop: credentials.HopFirst, Message: err.Error()}
		}
		account = first.AccountID
	}
	req.TargetExternalID = credentials.TargetExternalID(region, account, r.clusterName, pod.Namespace, pod.ServiceAccount)
	return req, nil
}

// GetCredentials implements proxy.CredentialGetter. A failure someone must
// fix (the role does not trust the node, throttling, the node certificate,
// a target role the configuration cannot reach) is counted and told to the
// pod's owner with a Warning Event on the pod.
func (p *podCredentials) GetCredentials(ctx context.Context, pod *k8s.Pod, role k8s.Role) (credentials.Credentials, error) {
	req, err := p.rules.request(pod, role)
	var creds credentials.Credentials
	if err == nil {
		creds, err = p.cache.Get(ctx, req)
	}
	if err != nil {
		if f, ok := credentials.ActionableFailure(err); ok {
			p.failures.WithLabelValues(f.Reason).Inc()
			p.events.PodWarning(pod, f.Reason, f.Message)
		}
	}
	return creds, err
}

// PodRoleChanged implements k8s.RoleListener: track (and prefetch) the entry.
func (p *podCredentials) PodRoleChanged(pod *k8s.Pod, role k8s.Role) {
	req, err := p.rules.request(pod, role)
	if err != nil {
		// Nothing to prefetch; the pod's request gets the error and Event.
		p.cache.Untrack(string(pod.UID))
		return
	}
	p.cache.Track(string(pod.UID), req)
}

// PodRoleGone implements k8s.RoleListener.
func (p *podCredentials) PodRoleGone(pod *k8s.Pod) { p.cache.Untrack(string(pod.UID)) }

// removeStartupTaint lets workload pods onto the node now that a pod's
// metadata request is redirected or refused: it removes the startup taint
// from this node only, in the background, retrying until it is gone.
func (a *agent) removeStartupTaint(ctx context.Context) error {
	remover, err := k8s.NewStartupTaintRemover(a.kube, k8s.TaintRemoverOptions{
		NodeName: a.cfg.Node, Logger: a.log.WithField("component", "taint"), Registerer: a.reg,
	})
	if err != nil {
		return err
	}
	a.wg.Go(func() { _ = remover.Run(ctx) })
	return nil
}

// hostIPv6 is the proxy's IPv6 listen address: --host-ipv6 with --ipv6.
func hostIPv6(cfg *Config) string {
	if cfg.IPv6 {
		return cfg.HostIPv6
	}
	return ""
}
