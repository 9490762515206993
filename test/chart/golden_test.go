//go:build integration

package chart_test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/kube2ra/kube2ra/test/chart"
)

// renderTimeout bounds one helm template run inside a test (helm is installed by TestMain).
const renderTimeout = time.Minute

// valueSet is one configuration the chart is rendered with.
type valueSet struct {
	name string // golden file and subtest name
	file string // values file; empty means the chart's defaults
}

// requiredValueSets are the configurations the issue names; each must exist in charts/kube2ra/ci.
var requiredValueSets = []string{"ec2-sts", "rolesanywhere-certmanager", "rolesanywhere-secret"}

// valueSets returns the chart defaults plus every charts/kube2ra/ci/*-values.yaml.
func valueSets(t *testing.T) []valueSet {
	t.Helper()
	dir, err := chart.ChartDir()
	if err != nil {
		t.Fatal(err)
	}
	files, err := filepath.Glob(filepath.Join(dir, "ci", "*-values.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	sets := []valueSet{{name: "defaults"}}
	found := map[string]bool{}
	for _, f := range files {
		name := strings.TrimSuffix(filepath.Base(f), "-values.yaml")
		found[name] = true
		sets = append(sets, valueSet{name: name, file: f})
	}
	for _, name := range requiredValueSets {
		if !found[name] {
			t.Fatalf("value set %s is missing: add charts/kube2ra/ci/%s-values.yaml", name, name)
		}
	}
	return sets
}

func render(t *testing.T, set valueSet, helmArgs ...string) []byte {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), renderTimeout)
	defer cancel()
	manifest, err := chart.Render(ctx, set.file, helmArgs...)
	if err != nil {
		t.Fatalf("rendering value set %s: %v", set.name, err)
	}
	return manifest
}

func renderObjects(t *testing.T, set valueSet) []*unstructured.Unstructured {
	t.Helper()
	objects, err := chart.Objects(render(t, set))
	if err != nil {
		t.Fatal(err)
	}
	return objects
}

// TestRenderedManifestsMatchGoldenFiles diffs helm template's output for every
// value set against testdata/golden: a change to what the chart installs shows
// up in review as a change to these files (-update rewrites them).
func TestRenderedManifestsMatchGoldenFiles(t *testing.T) {
	for _, set := range valueSets(t) {
		t.Run(set.name, func(t *testing.T) {
			got := render(t, set)
			golden := filepath.Join("testdata", "golden", set.name+".yaml")
			if *update {
				if err := os.MkdirAll(filepath.Dir(golden), 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(golden, got, 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("reading %s (run the test with -update to create it): %v", golden, err)
			}
			if !bytes.Equal(got, want) {
				t.Errorf("helm template for %s differs from %s (run with -update if the change is intended):\n%s",
					set.name, golden, lineDiff(string(want), string(got)))
			}
		})
	}
}

// lineDiff shows the first lines where want and got differ.
func lineDiff(want, got string) string {
	w, g := strings.Split(want, "\n"), strings.Split(got, "\n")
	var b strings.Builder
	shown := 0
	for i := 0; i < len(w) || i < len(g); i++ {
		var wl, gl string
		if i < len(w) {
			wl = w[i]
		}
		if i < len(g) {
			gl = g[i]
		}
		if wl == gl {
			continue
		}
		fmt.Fprintf(&b, "line %d:\n  - %s\n  + %s\n", i+1, wl, gl)
		if shown++; shown == 10 {
			b.WriteString("  ...\n")
			break
		}
	}
	return b.String()
}
