// Command controlplane runs the test control plane (etcd and kube-apiserver)
// by hand until Ctrl-C, so a person can point kubectl at it:
//
//	go run ./test/controlplane/cmd    # or: make controlplane
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/kube2ra/kube2ra/test/controlplane"
)

func main() {
	os.Exit(run())
}

func run() int {
	var opts controlplane.Options
	flag.StringVar(&opts.KubeAPIServer, "kube-apiserver", "", "kube-apiserver binary (default $KUBE_APISERVER, else the cache hack/build-kube.sh fills)")
	flag.StringVar(&opts.Etcd, "etcd", "", "etcd binary (default: etcd on PATH)")
	flag.StringVar(&opts.BindAddress, "bind-address", "", "address both processes listen on (default 127.0.0.1)")
	flag.IntVar(&opts.SecurePort, "port", 0, "kube-apiserver port (default: a free one)")
	flag.DurationVar(&opts.StartTimeout, "start-timeout", controlplane.DefaultStartTimeout, "how long to wait for /readyz")
	flag.Parse()
	opts.Log = os.Stderr

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	cp, err := controlplane.Start(ctx, opts)
	if err != nil {
		fmt.Fprintf(os.Stderr, "controlplane: %v\n", err)
		return 1
	}
	fmt.Printf("control plane ready at %s in %s\n", cp.URL(), cp.StartupDuration.Round(time.Millisecond))
	fmt.Printf("kubeconfig: %s\n", cp.Kubeconfig)
	fmt.Printf("try:        kubectl --kubeconfig %s get ns\n", cp.Kubeconfig)
	fmt.Printf("files:      %s (removed on exit)\n", cp.Dir)
	fmt.Println("Ctrl-C to stop.")

	<-ctx.Done()
	fmt.Println("stopping...")
	if err := cp.Stop(); err != nil {
		fmt.Fprintf(os.Stderr, "controlplane: %v\n", err)
		return 1
	}
	fmt.Println("stopped.")
	return 0
}
