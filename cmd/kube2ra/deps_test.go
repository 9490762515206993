package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// leanForbidden are packages the agent must not link: each drags code onto
// every node that the agent never runs (docs/performance.md, "Where the
// megabytes go").
var leanForbidden = []string{
	// client-go's typed clientset, its scheme and informers register and
	// link every API group (about 13 MB of binary); kubeapi has the calls
	// the agent makes.
	"k8s.io/client-go/kubernetes",
	"k8s.io/client-go/informers",
	"k8s.io/client-go/listers",
	"k8s.io/client-go/applyconfigurations",
	// k8s.io/api's generated types (protobuf, DeepCopy, String for every
	// kind of a group: core/v1 and apps/v1 were 5.6 MB); the agent decodes
	// into its own types, kubeapi/objects.
	"k8s.io/api",
	// tools/record's broadcaster links core/v1 for Events; k8s writes
	// them itself.
	"k8s.io/client-go/tools/record",
}

// TestAgentLinksOnlyTheKubernetesClientItUses fails when a change makes
// the agent import client-go's clientset (or anything that registers all
// API groups) again, any k8s.io/api package, or tools/record.
func TestAgentLinksOnlyTheKubernetesClientItUses(t *testing.T) {
	gobin, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("the go command is needed to list the agent's packages: %v", err)
	}
	out, err := exec.Command(gobin, "list", "-deps", ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go list -deps: %v\n%s", err, out)
	}
	for _, p := range strings.Fields(string(out)) {
		for _, f := range leanForbidden {
			if p == f || strings.HasPrefix(p, f+"/") {
				t.Errorf("the agent links %s (through %s): it must talk to the API server through kubeapi, into kubeapi/objects' types", p, f)
			}
		}
	}
}

// TestAgentLinksOneHTTP2 fails when a change makes the agent link the
// client of golang.org/x/net/http2 again (client-go's rest.HTTPClientFor
// and transport.New do, through apimachinery's SetTransportDefaults): the
// standard library's own HTTP/2 serves the API server (kubeapi's
// httpClientFor), and the second one was about 0.64 MB of every agent.
// The package is still imported (apimachinery's util/net); what is
// checked is the code the linker keeps.
func TestAgentLinksOneHTTP2(t *testing.T) {
	gobin, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("the go command is needed to build the agent: %v", err)
	}
	bin := filepath.Join(t.TempDir(), "kube2ra")
	build := exec.Command(gobin, "build", "-ldflags=-w", "-o", bin, ".")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	out, err := exec.Command(gobin, "tool", "nm", bin).CombinedOutput()
	if err != nil {
		t.Fatalf("go tool nm: %v\n%s", err, out)
	}
	for _, sym := range []string{"golang.org/x/net/http2.(*Transport).RoundTrip", "golang.org/x/net/http2.ConfigureTransports"} {
		if strings.Contains(string(out), " "+sym+"\n") {
			t.Errorf("the agent links %s: build the API server's client with kubeapi's httpClientFor, not rest.HTTPClientFor or rest.RESTClientFor", sym)
		}
	}
	if !strings.Contains(string(out), " net/http.(*http2Transport).RoundTrip\n") {
		t.Error("the agent does not link the standard library's HTTP/2 client; is the API server's client still HTTP/2?")
	}
}
