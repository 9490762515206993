package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"time"

	"github.com/kube2ra/kube2ra/cni/install"
	"github.com/kube2ra/kube2ra/handover"
	"github.com/kube2ra/kube2ra/iptables"
)

// cleanupTimeout bounds `kube2ra cleanup`; each iptables call takes milliseconds
// unless the xtables lock is held.
const cleanupTimeout = 60 * time.Second

// defaultCleanupHandoverDir is the chart's handover directory
// (handover.hostPath).
const defaultCleanupHandoverDir = "/run/kube2ra"

// cleanupCommand removes every kube2ra rule and chain from both iptables
// backends and both families, the CNI plugin and its conflist entries, and
// a handover socket no agent listens on, and succeeds when there are none.
func cleanupCommand(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("cleanup", flag.ContinueOnError)
	logFormat := fs.String("log-format", "text", "log format: text or json")
	logLevel := fs.String("log-level", "info", "log level: debug, info, warn or error")
	defaults := NewConfig()
	binDir := fs.String("cni-bin-dir", defaults.CNIBinDir, "the host's CNI bin directory the kube2ra-cni plugin is removed from")
	confDir := fs.String("cni-conf-dir", defaults.CNIConfDir, "the host's CNI configuration directory whose files lose their kube2ra-cni entry")
	handoverDir := fs.String("handover-dir", defaultCleanupHandoverDir, "the host's handover directory whose socket is removed when no agent listens on it (empty: left alone)")
	if code, ok := parseFlags(fs, args, stdout, stderr); !ok {
		return code
	}
	log, err := newLogger(stderr, *logFormat, *logLevel)
	if err != nil {
		fmt.Fprintf(stderr, "kube2ra cleanup: %v\n", err)
		return exitUsage
	}
	ctx, cancel := context.WithTimeout(context.Background(), cleanupTimeout)
	defer cancel()
	code := 0
	if err := iptables.RemoveAll(ctx, log); err != nil {
		fmt.Fprintf(stderr, "kube2ra cleanup: %v\n", err)
		code = 1
	} else {
		log.Info("kube2ra iptables rules and chains removed (or none were installed)")
	}
	if err := install.RemoveAll(*binDir, *confDir); err != nil {
		fmt.Fprintf(stderr, "kube2ra cleanup: %v\n", err)
		code = 1
	} else {
		log.WithField("bin_dir", *binDir).WithField("conf_dir", *confDir).Info("kube2ra-cni plugin and conflist entries removed (or none were installed)")
	}
	if *handoverDir != "" {
		switch removed, err := handover.RemoveStale(ctx, *handoverDir); {
		case err != nil:
			fmt.Fprintf(stderr, "kube2ra cleanup: %v\n", err)
			code = 1
		case removed:
			log.WithField("handover_dir", *handoverDir).Info("stale handover socket removed")
		default:
			log.WithField("handover_dir", *handoverDir).Info("no stale handover socket (none, or an agent serves on this node and keeps its own)")
		}
	}
	return code
}
