// Command kube2ra gives every Kubernetes pod its own AWS IAM role: a node
// agent that answers the instance metadata service on behalf of the pod.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"runtime"
	"strings"
)

// Set by the Makefile with -ldflags -X.
var (
	version = "dev"
	commit  = "unknown"
)

// exitUsage is the exit code for bad flags or configuration.
const exitUsage = 2

type subcommand struct {
	name    string
	summary string
	run     func(args []string, stdout, stderr io.Writer) int
}

func subcommands() []subcommand {
	return []subcommand{
		{"run", "run the node agent (metadata proxy, pod identity, DNAT and guard rules)", runCommand},
		{"credentials", "fetch credentials for one role once and print them as credential_process JSON", credentialsCommand},
		{"explain", "say which role a pod would get and why (-n NAMESPACE POD), or check this node (--node)", explainCommand},
		{"cleanup", "remove kube2ra's iptables rules and chains from this node", cleanupCommand},
		{"version", "print version, commit and Go version", versionCommand},
	}
}

func main() {
	os.Exit(dispatch(os.Args[1:], os.Stdout, os.Stderr))
}

func dispatch(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "-help" || args[0] == "help" {
		usage(stdout)
		if len(args) == 0 {
			return exitUsage
		}
		return 0
	}
	for _, sc := range subcommands() {
		if sc.name == args[0] {
			return sc.run(args[1:], stdout, stderr)
		}
	}
	// kube2iam takes its flags without a command: a DaemonSet's kube2iam
	// args run the agent unchanged.
	if strings.HasPrefix(args[0], "-") {
		return runCommand(args, stdout, stderr)
	}
	fmt.Fprintf(stderr, "kube2ra: unknown command %q: use one of run, credentials, cleanup, version (kube2ra --help)\n", args[0])
	return exitUsage
}

func usage(w io.Writer) {
	fmt.Fprintf(w, "kube2ra %s: per-pod AWS IAM roles on any Kubernetes cluster\n\nUsage: kube2ra <command> [flags]\n\nCommands:\n", version)
	for _, sc := range subcommands() {
		fmt.Fprintf(w, "  %-12s %s\n", sc.name, sc.summary)
	}
	fmt.Fprintf(w, "\nFlags of 'run' (each also from environment KUBE2RA_<FLAG>, e.g. KUBE2RA_HOST_IP; flags win):\n")
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	NewConfig().BindFlags(fs)
	fs.SetOutput(w)
	fs.PrintDefaults()
}

// parseFlags parses args into fs, then fills unset flags from the environment.
// It returns false and an exit code when parsing ended the command.
func parseFlags(fs *flag.FlagSet, args []string, stdout, stderr io.Writer) (int, bool) {
	fs.SetOutput(stderr)
	// The flag package would print the whole list on stderr for -h and after
	// every bad flag; help is printed once, below, and a bad flag is one line.
	fs.Usage = func() {}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fmt.Fprintf(stdout, "Usage: kube2ra %s [flags]\n\nFlags (each also from environment KUBE2RA_<FLAG>; flags win):\n", fs.Name())
			fs.SetOutput(stdout)
			fs.PrintDefaults()
			return 0, false
		}
		fmt.Fprintf(stderr, "kube2ra %s: see kube2ra %s --help\n", fs.Name(), fs.Name())
		return exitUsage, false
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "kube2ra %s: unexpected argument %q: every setting is a --flag\n", fs.Name(), fs.Arg(0))
		return exitUsage, false
	}
	if err := applyEnv(fs, os.Getenv); err != nil {
		fmt.Fprintf(stderr, "kube2ra %s: %v\n", fs.Name(), err)
		return exitUsage, false
	}
	return 0, true
}

// givenFlags names the flags fs was given (command line or environment).
func givenFlags(fs *flag.FlagSet) map[string]bool {
	given := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { given[f.Name] = true })
	return given
}

func versionCommand(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("version", flag.ContinueOnError)
	if code, ok := parseFlags(fs, args, stdout, stderr); !ok {
		return code
	}
	fmt.Fprintf(stdout, "kube2ra %s (commit %s, %s, %s/%s)\n", version, commit, runtime.Version(), runtime.GOOS, runtime.GOARCH)
	return 0
}
