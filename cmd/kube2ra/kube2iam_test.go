package main

import (
	"flag"
	"os"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"

	"github.com/kube2ra/kube2ra/test/chart"
)

// kube2iamDaemonSetArgs is the container's args of the DaemonSet kube2iam's
// own chart renders (testdata/kube2iam-daemonset.yaml), with $(VAR)
// expanded as the kubelet does from the downward API values given.
func kube2iamDaemonSetArgs(t *testing.T, fieldValues map[string]string) []string {
	t.Helper()
	manifest, err := os.ReadFile("testdata/kube2iam-daemonset.yaml")
	if err != nil {
		t.Fatal(err)
	}
	objects, err := chart.Objects(manifest)
	if err != nil {
		t.Fatal(err)
	}
	u := chart.Find(objects, "DaemonSet", "kube2iam-kube2iam-chart")
	if u == nil {
		t.Fatal("testdata/kube2iam-daemonset.yaml has no DaemonSet kube2iam-kube2iam-chart")
	}
	var ds appsv1.DaemonSet
	if err := chart.Convert(u, &ds); err != nil {
		t.Fatal(err)
	}
	c := ds.Spec.Template.Spec.Containers[0]
	env := map[string]string{}
	for _, e := range c.Env {
		if e.ValueFrom != nil && e.ValueFrom.FieldRef != nil {
			env[e.Name] = fieldValues[e.ValueFrom.FieldRef.FieldPath]
			t.Setenv(e.Name, env[e.Name])
		}
	}
	var args []string
	for _, a := range c.Args {
		for name, v := range env {
			a = strings.ReplaceAll(a, "$("+name+")", v)
		}
		args = append(args, a)
	}
	return args
}

// TestKube2iamDaemonSetArgsRunUnchanged: the args kube2iam's own chart
// renders (no command, kube2iam's flags, --metrics-port equal to
// --app-port, --verbose and the flags kube2ra has no use for) pass
// `--dry-run` with exit 0, one warning per ignored flag that says why, a
// loud one for --insecure, and the effective values kube2iam meant; the API
// token is never printed.
func TestKube2iamDaemonSetArgsRunUnchanged(t *testing.T) {
	args := kube2iamDaemonSetArgs(t, map[string]string{"status.podIP": "10.0.1.23", "spec.nodeName": "ip-10-0-1-23.eu-west-1.compute.internal"})
	if args[0] != "--host-interface=cali+" {
		t.Fatalf("the rendered args start with %q, want kube2iam's --host-interface", args[0])
	}
	var out, errOut strings.Builder
	code := dispatch(append(args, "--dry-run"), &out, &errOut)
	if code != 0 {
		t.Fatalf("exit %d, want 0; stderr:\n%s", code, errOut.String())
	}
	for _, want := range []string{
		"--host-interface=cali+", "--node=ip-10-0-1-23.eu-west-1.compute.internal", "--host-ip=10.0.1.23", "--iptables=true",
		"--app-port=8181", "--metrics-port=8181", "--default-role=kube2iam-default", "--iam-role-session-ttl=30m0s",
		"--namespace-restrictions=true", "--log-format=json", "log level debug", `base role ARN "arn:aws:iam::123456789012:role/"`,
		"--pod-lookup-timeout=5s", // kube2iam's --backoff-max-elapsed-time=5s
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("effective configuration lacks %q:\n%s", want, out.String())
		}
	}
	warnings := errOut.String()
	for _, want := range []string{
		"--api-server is kube2iam's and is ignored: kube2ra reaches the API server with its pod's in-cluster configuration",
		"--api-token is kube2iam's and is ignored",
		"--insecure is kube2iam's and is ignored: kube2ra always verifies the API server's TLS certificate",
		"--backoff-max-elapsed-time is kube2iam's and is mapped: read as --pod-lookup-timeout",
		"--resolve-duplicate-cache-ips is kube2iam's and is ignored: kube2ra never serves an IP claimed by two live pods",
		"--use-regional-sts-endpoint is kube2iam's and is ignored: kube2ra always calls the regional STS endpoint",
		"--iam-role-error-ttl is kube2iam's and is ignored",
		"--cache-resync-period is kube2iam's and is ignored",
		"--verbose is kube2iam's and is mapped: read as --log-level=debug",
		// Defaults that changed under kube2iam's arguments, unset there.
		"--imdsv2-required is not set and kube2ra's default differs from kube2iam's: IMDSv1 reads (no token) get 401",
		"--metadata-allow-path is not set and kube2ra's default differs from kube2iam's: only an allowlist",
	} {
		if strings.Count(warnings, want) != 1 {
			t.Errorf("want the warning %q once, stderr:\n%s", want, warnings)
		}
	}
	// kube2iam's chart sets these itself: nothing to say.
	for _, flag := range []string{"--namespace-restrictions", "--iptables", "--host-interface"} {
		if strings.Contains(warnings, flag+" is not set") {
			t.Errorf("a notice about %s, which the DaemonSet sets:\n%s", flag, warnings)
		}
	}
	if strings.Contains(out.String()+warnings, "k2i-test-token-do-not-print") {
		t.Errorf("the API token was printed:\n%s\n%s", out.String(), warnings)
	}
	var cfg Config
	cfg.kube2iam = map[string]*kube2iamValue{}
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	cfg.bindKube2iamFlags(fs)
	if err := fs.Parse([]string{"--insecure", "--api-server=https://x"}); err != nil {
		t.Fatal(err)
	}
	for _, n := range cfg.Kube2iamNotices() {
		if loud := strings.HasPrefix(n.text, "--insecure"); n.loud != loud {
			t.Errorf("notice %q: loud %v, want %v", n.text, n.loud, loud)
		}
	}
}

// TestBackoffMaxElapsedTimeIsThePodLookupTimeout: kube2iam's bound on
// waiting for an unknown pod IP becomes --pod-lookup-timeout, capped at
// its 30s, unless --pod-lookup-timeout is given.
func TestBackoffMaxElapsedTimeIsThePodLookupTimeout(t *testing.T) {
	for args, want := range map[string]string{
		"":                               "1s",
		"--backoff-max-elapsed-time=5s":  "5s",
		"--backoff-max-elapsed-time=10m": "30s",
		"--backoff-max-elapsed-time=5s --pod-lookup-timeout=3s": "3s",
		// Given, though it is the default: the operator's word wins.
		"--backoff-max-elapsed-time=5s --pod-lookup-timeout=1s": "1s",
	} {
		c := validSTS()
		parseRunFlags(t, c, args)
		if err := c.Validate(); err != nil {
			t.Fatalf("%q: %v", args, err)
		}
		if got := c.PodLookupTimeout.String(); got != want {
			t.Errorf("%q: --pod-lookup-timeout %s, want %s", args, got, want)
		}
	}
}

// TestNoCommandMeansRun: a first argument that is a flag runs the agent, as
// kube2iam's DaemonSets call it; a stray word is still refused.
func TestNoCommandMeansRun(t *testing.T) {
	var out, errOut strings.Builder
	if code := dispatch([]string{"--node=n", "--host-ip=10.0.0.1", "--dry-run"}, &out, &errOut); code != 0 || !strings.Contains(out.String(), "configuration valid") {
		t.Fatalf("flags without a command: exit %d, stdout %q, stderr %q; want run's dry run", code, out.String(), errOut.String())
	}
	out.Reset()
	errOut.Reset()
	if code := dispatch([]string{"--version"}, &out, &errOut); code != 0 || !strings.HasPrefix(out.String(), "kube2ra "+version) {
		t.Fatalf("kube2iam's --version: exit %d, stdout %q, stderr %q; want the version", code, out.String(), errOut.String())
	}
	if code := dispatch([]string{"serve"}, &out, &errOut); code != exitUsage {
		t.Fatalf("unknown command: exit %d, want %d", code, exitUsage)
	}
}

// TestEveryKube2iamFlagIsAccepted: each kube2iam flag parses on `run`; one
// kube2ra shares is kube2ra's own flag, the others are bound by
// bindKube2iamFlags and typed as kube2iam types them.
func TestEveryKube2iamFlagIsAccepted(t *testing.T) {
	ownFS := flag.NewFlagSet("own", flag.ContinueOnError)
	own := NewConfig()
	own.BindFlags(ownFS)
	var kube2iamOnly Config
	onlyFS := flag.NewFlagSet("kube2iam", flag.ContinueOnError)
	kube2iamOnly.bindKube2iamFlags(onlyFS)
	seen := map[string]bool{}
	for _, f := range kube2iamFlags() {
		if seen[f.name] {
			t.Errorf("--%s is listed twice", f.name)
		}
		seen[f.name] = true
		shared := f.handling == kube2iamSame
		if got := onlyFS.Lookup(f.name) == nil; got != shared {
			t.Errorf("--%s (%s): bound as kube2iam-only = %v", f.name, f.handling, !got)
		}
		if ownFS.Lookup(f.name) == nil {
			t.Errorf("--%s is not accepted by run", f.name)
			continue
		}
		if shared {
			continue
		}
		v := map[kube2iamValueKind]string{kube2iamBool: "true", kube2iamString: "x", kube2iamDuration: "5s"}[f.kind]
		if err := ownFS.Set(f.name, v); err != nil {
			t.Errorf("--%s=%s: %v", f.name, v, err)
		}
		if f.kind != kube2iamString {
			if err := ownFS.Set(f.name, "banana"); err == nil || !strings.Contains(err.Error(), "--"+f.name) {
				t.Errorf("--%s=banana: %v, want an error naming the flag", f.name, err)
			}
		}
	}
}

// TestReadmeMigrationTableIsKube2iamFlags: README's "kube2iam's flags" table
// has exactly one row per flag of kube2iamFlags, each naming the handling
// the code applies, and no other rows.
func TestReadmeMigrationTableIsKube2iamFlags(t *testing.T) {
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, section, ok := strings.Cut(string(readme), "\n### kube2iam's flags\n")
	if !ok {
		t.Fatal(`README.md has no "### kube2iam's flags" section`)
	}
	rows := map[string]string{}
	inTable := false
	for _, line := range strings.Split(section, "\n") {
		if !strings.HasPrefix(line, "|") {
			if inTable {
				break
			}
			continue
		}
		inTable = true
		cells := strings.Split(strings.Trim(line, "|"), "|")
		name, isFlag := strings.CutPrefix(strings.TrimSpace(cells[0]), "`--")
		if !isFlag || len(cells) < 3 {
			continue // header and separator
		}
		name = strings.TrimSuffix(name, "`")
		if _, dup := rows[name]; dup {
			t.Errorf("README lists --%s twice", name)
		}
		rows[name] = strings.TrimSpace(cells[1])
	}
	for _, f := range kube2iamFlags() {
		got, ok := rows[f.name]
		if !ok {
			t.Errorf("README's kube2iam table has no row for --%s", f.name)
			continue
		}
		if got != string(f.handling) {
			t.Errorf("README says --%s is %q; the code makes it %q", f.name, got, f.handling)
		}
		delete(rows, f.name)
	}
	for name := range rows {
		t.Errorf("README's kube2iam table lists --%s, which kube2iamFlags does not", name)
	}
}

// TestAutoDiscoverDefaultRoleNeverServesTheNodesRole: kube2iam's
// --auto-discover-default-role=true (serve the instance's role to pods
// without an annotation) starts the agent, so the node keeps its rules, but
// with no default role, and says so at error level.
func TestAutoDiscoverDefaultRoleNeverServesTheNodesRole(t *testing.T) {
	var out, errOut strings.Builder
	code := dispatch([]string{"--node=n", "--host-ip=10.0.0.1", "--auto-discover-default-role=true", "--dry-run"}, &out, &errOut)
	if code != 0 {
		t.Fatalf("exit %d, want 0 (the agent must start and keep the node's rules); stderr:\n%s", code, errOut.String())
	}
	all := out.String() + errOut.String()
	if !strings.Contains(all, "--auto-discover-default-role is kube2iam's and is ignored: kube2ra never serves the node's own role") {
		t.Errorf("no warning naming the flag and the reason:\n%s", all)
	}
	cfg := NewConfig()
	parseRunFlags(t, cfg, "--node=n --host-ip=10.0.0.1 --auto-discover-default-role")
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	if cfg.DefaultRole != "" {
		t.Errorf("default role %q, want none: the node's role is never a pod's", cfg.DefaultRole)
	}
	// The changed defaults of kube2iam's other flags are quiet notices beside it.
	var loud []kube2iamNotice
	for _, n := range cfg.Kube2iamNotices() {
		if n.loud {
			loud = append(loud, n)
		}
	}
	if len(loud) != 1 || !strings.Contains(loud[0].text, "--auto-discover-default-role") {
		t.Errorf("notices at error level %+v, want the one for --auto-discover-default-role", loud)
	}
}
