// Command pause is the real-node tier's sandbox image (containerd's
// sandbox_image): it holds a pod's namespaces open and exits on SIGTERM or
// SIGINT, like registry.k8s.io/pause, so the tier needs no registry.
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	<-sig
}
