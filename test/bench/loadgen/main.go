// Command loadgen is the client side of the benchmarks, run inside pod
// network namespaces (`ip netns exec <pod> loadgen <subcommand>`): a small
// binary with no Kubernetes packages, so fifty of them start in a blink.
// Subcommands: loadgen (keep-alive load with a latency histogram),
// firstreq (ask until the first credentials), fetch (one request, whole
// answer), baseline (the bare server kube2ra is compared with). Each reads
// its options as JSON on stdin and writes JSON on stdout; see package
// test/bench.
package main

import (
	"fmt"
	"os"

	"github.com/kube2ra/kube2ra/test/bench"
)

func main() {
	subcommands := map[string]func() error{
		"loadgen":  bench.LoadgenMain,
		"firstreq": bench.FirstRequestMain,
		"fetch":    bench.FetchMain,
		"baseline": bench.BaselineMain,
	}
	if len(os.Args) != 2 || subcommands[os.Args[1]] == nil {
		fmt.Fprintln(os.Stderr, "usage: loadgen loadgen|firstreq|fetch|baseline < options.json")
		os.Exit(2)
	}
	if err := subcommands[os.Args[1]](); err != nil {
		fmt.Fprintf(os.Stderr, "loadgen %s: %v\n", os.Args[1], err)
		os.Exit(1)
	}
}
