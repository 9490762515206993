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

// unlinkedSymbols are functions the agent's binary must not contain,
// with the way back they show: each package is still imported (by
// client-go's rest and by the AWS SDK's config), so what is checked is
// the code the linker keeps.
var unlinkedSymbols = map[string]string{
	// A second HTTP/2 client, beside the standard library's (0.64 MB).
	"golang.org/x/net/http2.(*Transport).RoundTrip": "build the API server's client with kubeapi's httpClientFor, not rest.HTTPClientFor or rest.RESTClientFor",
	// The SDK's SSO, SSO-OIDC and console-login clients (0.8 MB).
	"github.com/aws/aws-sdk-go-v2/config.LoadDefaultConfig":                   "load the AWS configuration with awsconfig.Load",
	"github.com/aws/aws-sdk-go-v2/service/sso.(*Client).GetRoleCredentials":   "load the AWS configuration with awsconfig.Load",
	"github.com/aws/aws-sdk-go-v2/service/ssooidc.(*Client).CreateToken":      "load the AWS configuration with awsconfig.Load",
	"github.com/aws/aws-sdk-go-v2/service/signin.(*Client).CreateOAuth2Token": "load the AWS configuration with awsconfig.Load",
}

// TestAgentLinksNoCodeItNeverRuns fails when a change links again code
// that was removed from every node's memory (docs/performance.md): the
// agent's binary is resident page for page. It also checks that the
// symbols it looks for exist where they should (the standard library's
// HTTP/2 client), so a renamed symbol cannot make it pass unseen.
func TestAgentLinksNoCodeItNeverRuns(t *testing.T) {
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
	syms := string(out)
	for sym, fix := range unlinkedSymbols {
		if strings.Contains(syms, " "+sym+"\n") {
			t.Errorf("the agent links %s: %s", sym, fix)
		}
	}
	for _, sym := range []string{"net/http.(*http2Transport).RoundTrip", "github.com/kube2ra/kube2ra/awsconfig.Load"} {
		if !strings.Contains(syms, " "+sym+"\n") {
			t.Errorf("the agent does not link %s: has the API client or the AWS configuration moved?", sym)
		}
	}
}
