// Command kube2ra-cni is kube2ra's chained CNI plugin: the container
// runtime runs it for every pod sandbox, and it writes the metadata
// redirect into the pod's network namespace (see package cni/plugin).
// The agent copies this binary from its image into the node's CNI bin
// directory.
package main

import (
	"os"

	"github.com/containernetworking/cni/pkg/skel"

	"github.com/kube2ra/kube2ra/cni/plugin"
)

// version and commit are set at build time (-ldflags -X).
var (
	version = "dev"
	commit  = "unknown"
)

func main() {
	c := plugin.Commands{Stdout: os.Stdout}
	skel.PluginMainFuncs(c.Funcs(), plugin.Versions(), plugin.About(version+" ("+commit+")"))
}
