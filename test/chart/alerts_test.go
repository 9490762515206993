//go:build integration

package chart_test

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"

	"github.com/kube2ra/kube2ra/test/chart"
)

// alertTestsFile holds promtool's unit tests for the chart's alerts.
const alertTestsFile = "testdata/alerts/kube2ra-alerts-test.yaml"

// renderedRuleFileName is the name the unit tests' rule_files expects.
const renderedRuleFileName = "kube2ra-rules.yaml"

// promtool finds Debian's promtool (hack/install-test-deps.sh prometheus).
func promtool(t *testing.T) string {
	t.Helper()
	path, err := exec.LookPath("promtool")
	if err != nil {
		t.Fatalf("promtool is not on PATH: run hack/install-test-deps.sh prometheus (Debian's prometheus package): %v", err)
	}
	return path
}

// TestAlertRulesPassPromtool renders the chart's PrometheusRule, as shipped,
// into a rule file and runs `promtool check rules` and `promtool test rules`
// with testdata/alerts: every alert fires when its condition holds long
// enough and stays quiet otherwise, with the labels and annotations a
// receiver gets.
func TestAlertRulesPassPromtool(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), renderTimeout)
	defer cancel()
	ruleFile, groups, err := chart.RenderedRules(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(groups.Alerts()) == 0 {
		t.Fatal("the rendered PrometheusRule has no alerts")
	}
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, renderedRuleFileName), ruleFile, 0o644); err != nil {
		t.Fatal(err)
	}
	tests, err := os.ReadFile(alertTestsFile)
	if err != nil {
		t.Fatal(err)
	}
	testsPath := filepath.Join(dir, filepath.Base(alertTestsFile))
	if err := os.WriteFile(testsPath, tests, 0o644); err != nil {
		t.Fatal(err)
	}
	bin := promtool(t)
	for _, args := range [][]string{
		{"check", "rules", filepath.Join(dir, renderedRuleFileName)},
		{"test", "rules", testsPath},
	} {
		out, err := exec.CommandContext(ctx, bin, args...).CombinedOutput()
		if err != nil {
			t.Fatalf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		t.Logf("promtool %s:\n%s", strings.Join(args[:2], " "), out)
	}
}

// promtoolTests is the part of a promtool test file the coverage check reads.
type promtoolTests struct {
	Tests []struct {
		AlertRuleTest []struct {
			Alertname string `json:"alertname"`
			ExpAlerts []any  `json:"exp_alerts"`
		} `json:"alert_rule_test"`
	} `json:"tests"`
}

// TestEveryAlertIsTestedAndHasARunbook: each alert of the rendered rule has
// a promtool case where it fires and one where it stays quiet, a runbook_url
// pointing at the README's anchor for it, and that README section exists.
func TestEveryAlertIsTestedAndHasARunbook(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), renderTimeout)
	defer cancel()
	_, groups, err := chart.RenderedRules(ctx)
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(alertTestsFile)
	if err != nil {
		t.Fatal(err)
	}
	var tests promtoolTests
	if err := yaml.Unmarshal(b, &tests); err != nil {
		t.Fatalf("%s: %v", alertTestsFile, err)
	}
	fires, quiet := map[string]bool{}, map[string]bool{}
	for _, tc := range tests.Tests {
		for _, a := range tc.AlertRuleTest {
			if len(a.ExpAlerts) > 0 {
				fires[a.Alertname] = true
			} else {
				quiet[a.Alertname] = true
			}
		}
	}
	root, err := chart.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	readme, err := os.ReadFile(filepath.Join(root, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range groups.Alerts() {
		if !fires[a.Alert] {
			t.Errorf("%s: no promtool case in %s where it fires", a.Alert, alertTestsFile)
		}
		if !quiet[a.Alert] {
			t.Errorf("%s: no promtool case in %s where it stays quiet", a.Alert, alertTestsFile)
		}
		anchor := strings.ToLower(a.Alert)
		if got := a.Annotations["runbook_url"]; !strings.HasSuffix(got, "README.md#"+anchor) {
			t.Errorf("%s: runbook_url %q, want the README's #%s", a.Alert, got, anchor)
		}
		if !regexp.MustCompile(`(?m)^### ` + regexp.QuoteMeta(a.Alert) + `$`).Match(readme) {
			t.Errorf("%s: README.md has no runbook section \"### %s\"", a.Alert, a.Alert)
		}
		if a.Labels["severity"] == "" || a.Annotations["summary"] == "" || a.Annotations["description"] == "" {
			t.Errorf("%s: needs a severity label and summary and description annotations: %+v", a.Alert, a)
		}
		if _, ok := chart.SignalOf(a.Expr); !ok {
			t.Errorf("%s: expression %q is not \"<signal> <op> <number>\", the shape test/e2e checks against a real Prometheus", a.Alert, a.Expr)
		}
	}
}

// TestAlertRuleValuesReachTheRule: the values users set end up in the rule.
func TestAlertRuleValuesReachTheRule(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), renderTimeout)
	defer cancel()
	_, groups, err := chart.RenderedRules(ctx,
		"--set", "metrics.prometheusRule.alertLabels.team=platform",
		"--set", "metrics.prometheusRule.runbookURL=https://wiki.example.com/kube2ra/",
		"--set-json", "metrics.prometheusRule.certificateExpiryDays=1.5")
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range groups.Alerts() {
		if a.Labels["team"] != "platform" {
			t.Errorf("%s: labels %v, want team=platform from alertLabels", a.Alert, a.Labels)
		}
		if want := "https://wiki.example.com/kube2ra#" + strings.ToLower(a.Alert); a.Annotations["runbook_url"] != want {
			t.Errorf("%s: runbook_url %q, want %q", a.Alert, a.Annotations["runbook_url"], want)
		}
		if a.Alert == "Kube2raNodeCertificateExpiresSoon" && !strings.HasSuffix(a.Expr, "< 129600") {
			t.Errorf("%s: %q, want 1.5 days (129600 s)", a.Alert, a.Expr)
		}
	}
}

// TestDashboardShipsInAConfigMapForGrafanasSidecar: the ConfigMap carries
// the sidecar's label and valid dashboard JSON with queries in every panel.
func TestDashboardShipsInAConfigMapForGrafanasSidecar(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), renderTimeout)
	defer cancel()
	objects, err := chart.Objects(render(t, valueSet{name: "monitoring"}, chart.MonitoringArgs...))
	if err != nil {
		t.Fatal(err)
	}
	cm := chart.Find(objects, "ConfigMap", "kube2ra-dashboard")
	if cm == nil {
		t.Fatal("no ConfigMap kube2ra-dashboard with metrics.dashboard.enabled")
	}
	if cm.GetLabels()["grafana_dashboard"] != "1" {
		t.Errorf("labels %v, want grafana_dashboard: \"1\" (Grafana's sidecar default)", cm.GetLabels())
	}
	_, d, err := chart.RenderedDashboard(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if d.UID == "" || d.Title == "" {
		t.Errorf("dashboard uid %q title %q: both are needed for a stable import", d.UID, d.Title)
	}
	for _, p := range d.Panels {
		if p.Type != "row" && len(p.Targets) == 0 {
			t.Errorf("panel %q has no query", p.Title)
		}
	}
	if len(d.Queries()) == 0 {
		t.Fatal("the dashboard has no queries")
	}
	if defaults := render(t, valueSet{name: "defaults"}); strings.Contains(string(defaults), "grafana_dashboard") || strings.Contains(string(defaults), "PrometheusRule") {
		t.Error("the chart's defaults render the dashboard or the PrometheusRule; both are off by default")
	}
}
