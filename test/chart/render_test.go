package chart

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestChartTestScriptPinsTheSameHelm keeps hack/chart-test.sh and HelmVersion
// from drifting apart: both install helm into the same path.
func TestChartTestScriptPinsTheSameHelm(t *testing.T) {
	root, err := RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	script, err := os.ReadFile(filepath.Join(root, "hack", "chart-test.sh"))
	if err != nil {
		t.Fatal(err)
	}
	if want := "HELM_VERSION=" + HelmVersion + "\n"; !strings.Contains(string(script), want) {
		t.Errorf("hack/chart-test.sh does not pin %q: update it or HelmVersion in render.go", strings.TrimSpace(want))
	}
}

// TestObjectsSkipsEmptyDocuments proves a manifest with comment-only or empty
// documents (what disabled templates render) splits into its real objects.
func TestObjectsSkipsEmptyDocuments(t *testing.T) {
	manifest := "---\n# Source: x\n---\napiVersion: v1\nkind: ServiceAccount\nmetadata:\n  name: a\n---\n\n---\napiVersion: v1\nkind: Service\nmetadata:\n  name: b\n"
	objects, err := Objects([]byte(manifest))
	if err != nil {
		t.Fatal(err)
	}
	if len(objects) != 2 || Find(objects, "ServiceAccount", "a") == nil || Find(objects, "Service", "b") == nil {
		t.Errorf("Objects = %v, want ServiceAccount a and Service b", objects)
	}
}
