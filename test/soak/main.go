// Command soak holds kube2ra under steady load from many pods while faults
// are injected one after another, in both flavours (Roles Anywhere and EC2),
// and checks every answer. It is `make soak` (SOAK_SECONDS, default 300,
// split between the flavours).
//
// Each pod runs test/soak/loadclient in its own network namespace; the
// driver (this program, inside the simulated node) writes the API state —
// pods churning on reused IPs, role annotations and namespace policies
// changing — and records, per IP, what kube2ra may answer at each moment.
// Every credential answer's access key is traced back to the role and
// session the fake AWS issued it for.
//
// What counts as wrong: a credential answer (or listed role name) for a
// role, or a session, that the IP was not entitled to at any moment of the
// request, where the entitlement changes at some moment inside the API
// call that changed it and the old entitlement is still honoured for -grace
// after that call returned (informer propagation; such answers are counted
// as "late"). A refusal (404) while the IP was entitled to nothing, or within
// the grace of a change, is correct. Any answer holding the node's secrets
// is a leak. Any other failure must fall inside a fault window (or
// -tolerance after its end); failures during the slowloris window are not
// tolerated at all.
//
// The program prints its table and exits 1 when an invariant breaks.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"github.com/kube2ra/kube2ra/test/harness"
	"github.com/kube2ra/kube2ra/test/simnode"
)

// netnsPrefix names the soak's network namespaces.
const netnsPrefix = "k2r-soak"

// lockPath is one per machine, whatever TMPDIR says, as network namespace
// names are.
const lockPath = "/run/kube2ra-soak.lock"

// config is the soak's configuration.
type config struct {
	// seconds is the total load time, split between the flavours.
	seconds int
	// flavours to run.
	flavours []harness.Flavour
	// scale is a flavour's load time over the 150 s the schedule is written for.
	scale float64
	// pods, namespaces and roles size the node.
	pods, namespaces, roles int
	// interval is each client's pause between iterations.
	interval time.Duration
	// churnEvery spaces churn operations.
	churnEvery time.Duration
	// staleOverlap is how long an old pod object keeps claiming a reused IP.
	staleOverlap time.Duration
	// outage is the upstream outage's length.
	outage time.Duration
	// apiDowntime is how long kube-apiserver stays down.
	apiDowntime time.Duration
	// slowConns is the slowloris connection count.
	slowConns int
	// grace and tolerance: see the package comment.
	grace, tolerance time.Duration
	// settleMax bounds waiting for the agent's resources to come back.
	settleMax time.Duration
	// hardenIMDS configures the EC2 instance's metadata service as
	// docs/security.md advises (tokens required, hop limit 1). Off by
	// default: the soak proves kube2ra alone keeps pods from the node's
	// credentials, even through a nat flush.
	hardenIMDS bool
	// seed makes churn choices repeatable.
	seed uint64
	// outDir keeps logs.
	outDir string
	// clientLog receives the load clients' stderr.
	clientLog io.Writer
}

func (c config) outPath(name string) string { return filepath.Join(c.outDir, name) }

func main() {
	if _, inside := simnode.Inside(); !inside {
		// Reexec removes every namespace with the prefix, before and after:
		// a second soak at the same time would tear the first one's pods down.
		lock, err := os.OpenFile(lockPath, os.O_CREATE|os.O_RDWR, 0o600)
		if err == nil {
			err = syscall.Flock(int(lock.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		}
		if err != nil {
			fmt.Fprintf(os.Stderr, "soak: another soak is running on this machine (or its lock cannot be taken: %v); wait for it to finish\n", err)
			os.Exit(1)
		}
		os.Exit(simnode.Reexec(netnsPrefix))
	}
	os.Exit(run())
}

func run() int {
	def := 300
	if v, err := strconv.Atoi(os.Getenv("SOAK_SECONDS")); err == nil && v > 0 {
		def = v
	}
	var cfg config
	var flavour string
	flag.IntVar(&cfg.seconds, "seconds", def, "total load time in seconds, split between the flavours (env SOAK_SECONDS)")
	flag.StringVar(&flavour, "flavour", "both", "rolesanywhere, ec2 or both")
	flag.IntVar(&cfg.pods, "pods", 32, "pods under load, each in its own network namespace")
	flag.IntVar(&cfg.namespaces, "namespaces", 34, "Kubernetes namespaces the pods move between")
	flag.IntVar(&cfg.roles, "roles", 16, "roles the fake AWS knows")
	flag.DurationVar(&cfg.interval, "interval", 300*time.Millisecond, "mean pause between a client's iterations")
	flag.IntVar(&cfg.slowConns, "slowloris", 500, "slowloris connections")
	flag.DurationVar(&cfg.grace, "grace", 3*time.Second, "propagation grace after an API write")
	flag.DurationVar(&cfg.tolerance, "tolerance", 10*time.Second, "how long after a fault its errors are still its own")
	flag.BoolVar(&cfg.hardenIMDS, "harden-imds", false, "EC2: require tokens and emulate hop limit 1 on the instance's metadata service (default: reachable by pods with IMDSv1, the worst case)")
	flag.Uint64Var(&cfg.seed, "seed", uint64(time.Now().UnixNano()), "random seed for churn")
	flag.StringVar(&cfg.outDir, "out", "", "directory for logs (default a new one under $TMPDIR)")
	flag.Parse()

	switch flavour {
	case "both":
		cfg.flavours = []harness.Flavour{harness.RolesAnywhere, harness.EC2}
	case string(harness.RolesAnywhere), string(harness.EC2):
		cfg.flavours = []harness.Flavour{harness.Flavour(flavour)}
	default:
		fmt.Fprintf(os.Stderr, "soak: -flavour %q: use rolesanywhere, ec2 or both\n", flavour)
		return 2
	}
	if cfg.seconds < 20 {
		fmt.Fprintf(os.Stderr, "soak: -seconds %d is too short to inject every fault; use 20 or more\n", cfg.seconds)
		return 2
	}
	per := time.Duration(cfg.seconds) * time.Second / time.Duration(len(cfg.flavours))
	cfg.scale = per.Seconds() / 150
	cfg.churnEvery = 1500 * time.Millisecond
	cfg.staleOverlap = time.Second
	cfg.outage = max(time.Duration(float64(30*time.Second)*min(cfg.scale, 1)), 5*time.Second)
	cfg.apiDowntime = 5 * time.Second
	if cfg.scale < 0.5 {
		cfg.apiDowntime = 2 * time.Second
	}
	// The runtime gives heap back to the OS after a GC, and an idle agent
	// runs one only every two minutes; wait that long before calling RSS kept.
	cfg.settleMax = 150 * time.Second
	if cfg.outDir == "" {
		dir, err := os.MkdirTemp("", "kube2ra-soak-")
		if err != nil {
			fmt.Fprintln(os.Stderr, "soak:", err)
			return 1
		}
		cfg.outDir = dir
	}
	clientLog, err := os.Create(cfg.outPath("clients.log"))
	if err != nil {
		fmt.Fprintln(os.Stderr, "soak:", err)
		return 1
	}
	defer clientLog.Close()
	cfg.clientLog = clientLog

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	began := time.Now()
	clientBin, err := buildClient(cfg.outDir)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	fmt.Fprintf(os.Stderr, "soak: %d s of load over %v, %d pods, seed %d, logs in %s\n", cfg.seconds, cfg.flavours, cfg.pods, cfg.seed, cfg.outDir)
	var reports []*flavourReport
	for _, f := range cfg.flavours {
		f := f
		fbegan := time.Now()
		logf := func(format string, args ...any) {
			fmt.Fprintf(os.Stderr, "[%s +%5.1fs] %s\n", f, time.Since(fbegan).Seconds(), fmt.Sprintf(format, args...))
		}
		reports = append(reports, runFlavour(ctx, cfg, f, clientBin, logf))
		if ctx.Err() != nil {
			break
		}
	}
	failed := printReport(os.Stdout, cfg, reports, time.Since(began))
	if failed {
		return 1
	}
	return 0
}
