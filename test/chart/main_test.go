//go:build integration

package chart_test

import (
	"context"
	"flag"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/kube2ra/kube2ra/test/chart"
	"github.com/kube2ra/kube2ra/test/controlplane"
)

// update rewrites the golden files from the current chart: go test -tags integration ./test/chart/... -update
var update = flag.Bool("update", false, "rewrite testdata/golden from the current chart")

// cp is the real control plane the rendered manifests are applied to (server-side dry-run).
var cp *controlplane.ControlPlane

func TestMain(m *testing.M) {
	flag.Parse()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	// Install helm before any test's own timeout starts, so a first run only waits once.
	if _, err := chart.EnsureHelm(ctx); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	var err error
	cp, err = controlplane.Start(ctx, controlplane.Options{})
	cancel()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code := m.Run()
	if err := cp.Stop(); err != nil {
		fmt.Fprintln(os.Stderr, err)
	}
	os.Exit(code)
}
