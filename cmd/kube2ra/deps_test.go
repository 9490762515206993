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
}

// TestAgentLinksOnlyTheKubernetesClientItUses fails when a change makes
// the agent import client-go's clientset (or anything that registers all
// API groups) again, or an API group beyond core/v1 and apps/v1.
func TestAgentLinksOnlyTheKubernetesClientItUses(t *testing.T) {
	gobin, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("the go command is needed to list the agent's packages: %v", err)
	}
	out, err := exec.Command(gobin, "list", "-deps", ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go list -deps: %v\n%s", err, out)
	}
	allowedAPI := map[string]bool{"k8s.io/api/core/v1": true, "k8s.io/api/apps/v1": true}
	for _, p := range strings.Fields(string(out)) {
		for _, f := range leanForbidden {
			if p == f || strings.HasPrefix(p, f+"/") {
				t.Errorf("the agent links %s (through %s): it must talk to the API server through kubeapi", p, f)
			}
		}
		if strings.HasPrefix(p, "k8s.io/api/") && !allowedAPI[p] {
			t.Errorf("the agent links the API group %s; register only the kinds it reads in kubeapi's scheme", p)
		}
	}
}
