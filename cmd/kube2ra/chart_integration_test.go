//go:build integration

package main

import (
	"context"
	"fmt"
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

// chartCase is one way the chart is installed: a values file and --set
// arguments, as a user passes them to helm install.
type chartCase struct {
	name       string
	valuesFile string
	helmArgs   []string
}

// TestEveryChartInstallRendersArgsTheBinaryAccepts renders the chart with
// its defaults, with every ci/*-values.yaml and with every `helm install`
// command the READMEs show, and runs the DaemonSet's arguments, with the
// downward API's environment, through `kube2ra run --dry-run`, so the chart,
// its documentation and the binary cannot disagree (host.ipv6=true once
// rendered --ipv6 without an address the binary accepted; the README's
// first EC2 command once failed the schema).
func TestEveryChartInstallRendersArgsTheBinaryAccepts(t *testing.T) {
	dir, err := chart.ChartDir()
	if err != nil {
		t.Fatal(err)
	}
	files, err := filepath.Glob(filepath.Join(dir, "ci", "*-values.yaml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no ci values files in %s: %v", dir, err)
	}
	cases := []chartCase{{name: "defaults"}}
	for _, f := range files {
		cases = append(cases, chartCase{name: strings.TrimSuffix(filepath.Base(f), "-values.yaml"), valuesFile: f})
	}
	for _, readme := range []string{"../../README.md", filepath.Join(dir, "README.md")} {
		cmds, err := readmeInstallCommands(readme)
		if err != nil {
			t.Fatal(err)
		}
		if len(cmds) == 0 {
			t.Fatalf("%s shows no helm install command", readme)
		}
		for i, args := range cmds {
			cases = append(cases, chartCase{name: fmt.Sprintf("%s-install-%d", readmeName(readme), i+1), helmArgs: args})
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	if _, err := chart.EnsureHelm(ctx); err != nil {
		t.Fatal(err)
	}
	for _, cc := range cases {
		t.Run(cc.name, func(t *testing.T) {
			manifest, err := chart.Render(ctx, cc.valuesFile, cc.helmArgs...)
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
			if _, ok := env["HOST_IPS"]; !ok {
				t.Error("the DaemonSet does not pass HOST_IPS (status.hostIPs): host.ipv6 could not find the node's IPv6 address")
			}
			for k, v := range env {
				t.Setenv(k, v)
			}
			// Files the pod gets from its volumes live under a stand-in root.
			root := t.TempDir()
			args := make([]string, 0, len(c.Args)+1)
			for _, a := range c.Args {
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
			args = append(args, "--dry-run")
			var stdout, stderr strings.Builder
			if code := dispatch(args, &stdout, &stderr); code != 0 {
				t.Errorf("kube2ra %s\nexit %d, want 0 (the chart's arguments must pass the binary's own checks):\n%s", strings.Join(args, " "), code, stderr.String())
			}
			if !strings.Contains(stdout.String(), "configuration valid") {
				t.Errorf("--dry-run printed no effective configuration:\n%s", stdout.String())
			}
		})
	}
}

// readmeInstallCommands returns the helm arguments (--set, --set-string,
// --values) of every `helm install ... charts/kube2ra` command in a
// Markdown file, continuation lines joined, comments and "..." dropped.
func readmeInstallCommands(path string) ([][]string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var cmds [][]string
	lines := strings.Split(string(b), "\n")
	for i := 0; i < len(lines); i++ {
		if !strings.HasPrefix(strings.TrimSpace(lines[i]), "helm install ") {
			continue
		}
		var joined strings.Builder
		for ; i < len(lines); i++ {
			line := strings.TrimSpace(lines[i])
			cont := strings.HasSuffix(line, "\\")
			line = strings.TrimSuffix(line, "\\")
			joined.WriteString(line + " ")
			if !cont {
				break
			}
		}
		words, err := shellWords(joined.String())
		if err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		var args []string
		for j := 0; j < len(words); j++ {
			switch w := words[j]; w {
			case "--set", "--set-string", "--values", "-f":
				if j+1 == len(words) {
					return nil, fmt.Errorf("%s: %s without a value in %q", path, w, joined.String())
				}
				args = append(args, w, words[j+1])
				j++
			}
		}
		cmds = append(cmds, args)
	}
	return cmds, nil
}

// shellWords splits s as sh would for the READMEs' commands: blanks
// separate words, single and double quotes group, # starts a comment.
func shellWords(s string) ([]string, error) {
	var words []string
	var cur strings.Builder
	inWord := false
	var quote rune
	for _, r := range s {
		switch {
		case quote != 0:
			if r == quote {
				quote = 0
			} else {
				cur.WriteRune(r)
			}
		case r == '\'' || r == '"':
			quote, inWord = r, true
		case r == '#' && !inWord:
			return append(words, finish(&cur, inWord)...), nil
		case r == ' ' || r == '\t':
			words = append(words, finish(&cur, inWord)...)
			inWord = false
		default:
			cur.WriteRune(r)
			inWord = true
		}
	}
	if quote != 0 {
		return nil, fmt.Errorf("unterminated quote in %q", s)
	}
	return append(words, finish(&cur, inWord)...), nil
}

// finish ends the current word, if any.
func finish(cur *strings.Builder, inWord bool) []string {
	if !inWord {
		return nil
	}
	w := cur.String()
	cur.Reset()
	return []string{w}
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

// readmeName names a README in subtest names: README or chart-README.
func readmeName(path string) string {
	if filepath.Base(filepath.Dir(path)) == "kube2ra" {
		return "chart-README"
	}
	return "README"
}
