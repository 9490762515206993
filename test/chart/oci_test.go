//go:build integration

package chart_test

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/kube2ra/kube2ra/test/chart"
)

// ociTimeout bounds the packaging, pushes, install and upgrade.
const ociTimeout = 3 * time.Minute

// TestReleasedChartInstallsAndUpgradesFromAnOCIRegistry packages two chart
// versions with hack/release.sh (what make release ships), pushes both to a
// real registry (Debian's docker-registry) as OCI artefacts, installs the
// first with `helm install oci://…` into the test control plane and
// upgrades to the second: helm list names each version and the DaemonSet's
// image tag follows the chart's appVersion.
func TestReleasedChartInstallsAndUpgradesFromAnOCIRegistry(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), ociTimeout)
	defer cancel()
	root, err := chart.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	versions := []string{"0.9.0", "0.9.1"}
	for _, v := range versions {
		out, err := exec.CommandContext(ctx, filepath.Join(root, "hack", "release.sh"), "chart", v, dir).CombinedOutput()
		if err != nil {
			t.Fatalf("hack/release.sh chart %s: %v\n%s", v, err, out)
		}
	}
	reg, err := chart.StartRegistry(ctx, t.TempDir(), "127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("registry log:\n%s", reg.Log())
		}
		reg.Stop()
	})
	helmHome := t.TempDir()
	helm := func(args ...string) string {
		t.Helper()
		cmd := exec.CommandContext(ctx, chart.HelmPath(), args...)
		cmd.Env = append(os.Environ(),
			"HELM_CONFIG_HOME="+filepath.Join(helmHome, "config"),
			"HELM_CACHE_HOME="+filepath.Join(helmHome, "cache"),
			"HELM_DATA_HOME="+filepath.Join(helmHome, "data"),
			"KUBECONFIG="+cp.Kubeconfig)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("helm %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return string(out)
	}
	repo := "oci://" + reg.Host + "/charts"
	for _, v := range versions {
		helm("push", filepath.Join(dir, "kube2ra-"+v+".tgz"), repo, "--plain-http")
	}

	const release, ns = "kube2ra-oci", "oci-test"
	values, err := chart.ValuesFile("rolesanywhere-secret")
	if err != nil {
		t.Fatal(err)
	}
	client, err := kubernetes.NewForConfig(cp.AdminConfig())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd := exec.Command(chart.HelmPath(), "uninstall", release, "-n", ns)
		cmd.Env = append(os.Environ(), "KUBECONFIG="+cp.Kubeconfig, "HELM_CONFIG_HOME="+filepath.Join(helmHome, "config"))
		_ = cmd.Run()
	})
	for i, v := range versions {
		verb := []string{"install", "--create-namespace"}
		if i > 0 {
			verb = []string{"upgrade"}
		}
		helm(append(verb, release, repo+"/kube2ra", "--version", v, "--plain-http", "-n", ns, "--values", values)...)

		var list []struct {
			Name, Chart, Status string
			AppVersion          string `json:"app_version"`
			Revision            string
		}
		if err := json.Unmarshal([]byte(helm("list", "-n", ns, "-o", "json")), &list); err != nil {
			t.Fatal(err)
		}
		if len(list) != 1 || list[0].Chart != "kube2ra-"+v || list[0].AppVersion != v || list[0].Status != "deployed" {
			t.Fatalf("helm list after %s of %s: %+v, want kube2ra-%s deployed", verb[0], v, list, v)
		}
		ds, err := client.AppsV1().DaemonSets(ns).Get(ctx, release, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if got, want := ds.Spec.Template.Spec.Containers[0].Image, "ghcr.io/kube2ra/kube2ra:"+v; got != want {
			t.Errorf("DaemonSet image after %s of %s: %s, want %s (image.tag defaults to appVersion)", verb[0], v, got, want)
		}
		t.Logf("%s %s/kube2ra %s: helm list %s revision %s", verb[0], repo, v, list[0].Chart, list[0].Revision)
	}
}
