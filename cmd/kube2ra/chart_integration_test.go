//go:build integration

package main

import (
	"context"
	"flag"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"

	"github.com/kube2ra/kube2ra/test/chart"
)

// downwardAPI is what the kubelet puts in the DaemonSet's environment on
// a dual-stack node.
var downwardAPI = map[string]string{
	"NODE_NAME": "node-1", "HOST_IP": "10.0.1.23", "HOST_IPS": "10.0.1.23,fd00:10::23",
	"POD_NAME": "kube2ra-abcde", "POD_NAMESPACE": "kube-system",
}

// TestEveryChartValuesFileRendersArgsTheBinaryAccepts renders the chart
// with its defaults and with every ci/*-values.yaml and runs the
// DaemonSet's arguments, with the downward API's environment, through the
// binary's own flag parsing and Config.Validate, so the chart and the
// binary cannot disagree (host.ipv6=true once rendered --ipv6 without an
// address the binary accepted).
func TestEveryChartValuesFileRendersArgsTheBinaryAccepts(t *testing.T) {
	dir, err := chart.ChartDir()
	if err != nil {
		t.Fatal(err)
	}
	files, err := filepath.Glob(filepath.Join(dir, "ci", "*-values.yaml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no ci values files in %s: %v", dir, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	if _, err := chart.EnsureHelm(ctx); err != nil {
		t.Fatal(err)
	}
	for _, file := range append([]string{""}, files...) {
		name := strings.TrimSuffix(filepath.Base(file), "-values.yaml")
		if file == "" {
			name = "defaults"
		}
		t.Run(name, func(t *testing.T) {
			manifest, err := chart.Render(ctx, file)
			if err != nil {
				t.Fatal(err)
			}
			objects, err := chart.Objects(manifest)
			if err != nil {
				t.Fatal(err)
			}
			var ds appsv1.DaemonSet
			obj := chart.Find(objects, "DaemonSet", chart.ReleaseName)
			if obj == nil {
				t.Fatal("no DaemonSet rendered")
			}
			if err := chart.Convert(obj, &ds); err != nil {
				t.Fatal(err)
			}
			c := ds.Spec.Template.Spec.Containers[0]
			env := map[string]string{}
			for _, e := range c.Env {
				switch {
				case e.ValueFrom != nil && e.ValueFrom.FieldRef != nil:
					env[e.Name] = downwardAPI[e.Name]
				case e.ValueFrom == nil:
					env[e.Name] = e.Value
				}
			}
			// Files the pod gets from its volumes live under a stand-in root.
			root := t.TempDir()
			args := make([]string, 0, len(c.Args))
			for _, a := range c.Args[1:] { // after "run"
				for k, v := range env {
					a = strings.ReplaceAll(a, "$("+k+")", v)
				}
				for _, m := range c.VolumeMounts {
					flagName, value, ok := strings.Cut(a, "=")
					if ok && strings.HasPrefix(value, m.MountPath+"/") {
						a = flagName + "=" + mountedFile(t, root, value)
					}
				}
				args = append(args, a)
			}
			cfg := NewConfig()
			fs := flag.NewFlagSet("run", flag.ContinueOnError)
			fs.SetOutput(io.Discard)
			cfg.BindFlags(fs)
			if err := fs.Parse(args); err != nil {
				t.Fatalf("kube2ra run refuses the chart's arguments %q: %v", args, err)
			}
			if err := applyEnv(fs, func(k string) string { return env[k] }); err != nil {
				t.Fatalf("environment %v: %v", env, err)
			}
			if err := cfg.Validate(); err != nil {
				t.Errorf("the chart's arguments %q fail validation:\n%v", args, err)
			}
			if _, ok := env["HOST_IPS"]; !ok {
				t.Error("the DaemonSet does not pass HOST_IPS (status.hostIPs): host.ipv6 could not find the node's IPv6 address")
			}
		})
	}
}

// mountedFile creates a stand-in for a file the pod reads from a volume.
func mountedFile(t *testing.T, root, path string) string {
	t.Helper()
	p := filepath.Join(root, path)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte("stand-in for a mounted file\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}
