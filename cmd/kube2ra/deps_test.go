package main

import (
	"os/exec"
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
