// Command demo is `make demo`: it stands up a real kube-apiserver, a
// simulated node running the built kube2ra binary with real iptables DNAT,
// fake AWS endpoints that verify like AWS, and pods in their own network
// namespaces, then tells a short story in plain words — a pod that gets its
// role, a pod its namespace denies, the policy changed live, a pod with no
// role — checking each result. It exits non-zero when any check fails, so it
// doubles as a smoke test.
//
//	go run ./test/demo [-keep] [-flavour rolesanywhere|ec2]
//
// KEEP=1 and DEMO_FLAVOUR=ec2 in the environment do the same as the flags.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strconv"
	"syscall"

	"github.com/kube2ra/kube2ra/test/harness"
	"github.com/kube2ra/kube2ra/test/simnode"
)

// netnsPrefix names every network namespace the demo creates.
const netnsPrefix = "k2r-demo"

func main() {
	keepDefault, _ := strconv.ParseBool(os.Getenv("KEEP"))
	flavourDefault := os.Getenv("DEMO_FLAVOUR")
	if flavourDefault == "" {
		flavourDefault = string(harness.RolesAnywhere)
	}
	keep := flag.Bool("keep", keepDefault, "leave everything running after the story and print how to get in; Ctrl-C tears it down (env KEEP=1)")
	flavour := flag.String("flavour", flavourDefault, "rolesanywhere (a node off AWS) or ec2 (an instance with a metadata service and STS) (env DEMO_FLAVOUR)")
	flag.Parse()
	if f := harness.Flavour(*flavour); f != harness.RolesAnywhere && f != harness.EC2 {
		fmt.Fprintf(os.Stderr, "demo: unknown flavour %q: use rolesanywhere or ec2\n", *flavour)
		os.Exit(2)
	}

	if _, inside := simnode.Inside(); !inside {
		// The story runs in a child inside the node's network namespace.
		// Ctrl-C reaches the child through the terminal's process group; this
		// parent must outlive the child's teardown to remove the namespaces.
		signal.Notify(make(chan os.Signal, 1), os.Interrupt, syscall.SIGTERM)
		os.Exit(simnode.Reexec(netnsPrefix))
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	os.Exit(run(ctx, os.Stdout, harness.Flavour(*flavour), *keep))
}
