package chart

import (
	"context"
	"encoding/json"
	"fmt"
	"regexp"
	"strings"
)

// MonitoringArgs are the helm arguments that turn on the chart's
// PrometheusRule and Grafana dashboard ConfigMap (both off by default).
var MonitoringArgs = []string{"--set", "metrics.prometheusRule.enabled=true", "--set", "metrics.dashboard.enabled=true"}

// DashboardKey is the ConfigMap key that holds the dashboard JSON.
const DashboardKey = "kube2ra.json"

// AlertRule is one alerting rule of the chart's PrometheusRule.
type AlertRule struct {
	// Alert is the alert's name.
	Alert string `json:"alert"`
	// Expr is its PromQL expression.
	Expr string `json:"expr"`
	// For is how long it must hold before firing.
	For string `json:"for"`
	// Labels are added to the alert.
	Labels map[string]string `json:"labels"`
	// Annotations are its summary, description and runbook_url.
	Annotations map[string]string `json:"annotations"`
}

// RuleGroups is the PrometheusRule's spec: exactly a Prometheus rule file.
type RuleGroups struct {
	// Groups are the rule groups.
	Groups []struct {
		// Name is the group's name.
		Name string `json:"name"`
		// Rules are its rules.
		Rules []AlertRule `json:"rules"`
	} `json:"groups"`
}

// Alerts lists every alerting rule of every group.
func (g RuleGroups) Alerts() []AlertRule {
	var out []AlertRule
	for _, group := range g.Groups {
		for _, r := range group.Rules {
			if r.Alert != "" {
				out = append(out, r)
			}
		}
	}
	return out
}

// RenderedRules renders the chart with MonitoringArgs (and more helm
// arguments) and returns the PrometheusRule's spec as a Prometheus rule file
// (JSON, which promtool and Prometheus read as YAML) and parsed: what the
// chart ships, not a copy.
func RenderedRules(ctx context.Context, helmArgs ...string) (ruleFile []byte, groups RuleGroups, err error) {
	obj, err := renderedMonitoringObject(ctx, "PrometheusRule", helmArgs)
	if err != nil {
		return nil, groups, err
	}
	spec, ok := obj["spec"]
	if !ok {
		return nil, groups, fmt.Errorf("the rendered PrometheusRule has no spec")
	}
	ruleFile, err = json.MarshalIndent(spec, "", "  ")
	if err != nil {
		return nil, groups, err
	}
	if err := json.Unmarshal(ruleFile, &groups); err != nil {
		return nil, groups, fmt.Errorf("the rendered PrometheusRule's spec: %w", err)
	}
	return ruleFile, groups, nil
}

// Dashboard is the part of a Grafana dashboard the tests read.
type Dashboard struct {
	// Title is the dashboard's title.
	Title string `json:"title"`
	// UID is its stable identifier.
	UID string `json:"uid"`
	// Panels are its panels (rows included, without targets).
	Panels []struct {
		// Title is the panel's title.
		Title string `json:"title"`
		// Type is the panel type (timeseries, stat, row...).
		Type string `json:"type"`
		// Targets are its queries.
		Targets []struct {
			// Expr is the PromQL query, with Grafana variables.
			Expr string `json:"expr"`
		} `json:"targets"`
	} `json:"panels"`
}

// DashboardQuery is one panel query.
type DashboardQuery struct {
	// Panel is the panel's title.
	Panel string
	// Expr is the query as Grafana sends it before variable expansion.
	Expr string
}

// Queries lists every panel's queries.
func (d Dashboard) Queries() []DashboardQuery {
	var out []DashboardQuery
	for _, p := range d.Panels {
		for _, t := range p.Targets {
			out = append(out, DashboardQuery{Panel: p.Title, Expr: t.Expr})
		}
	}
	return out
}

// RenderedDashboard renders the chart with MonitoringArgs and returns the
// dashboard JSON from its ConfigMap, raw and parsed.
func RenderedDashboard(ctx context.Context, helmArgs ...string) (raw []byte, d Dashboard, err error) {
	obj, err := renderedMonitoringObject(ctx, "ConfigMap", helmArgs)
	if err != nil {
		return nil, d, err
	}
	data, _ := obj["data"].(map[string]any)
	text, ok := data[DashboardKey].(string)
	if !ok {
		return nil, d, fmt.Errorf("the dashboard ConfigMap has no %s", DashboardKey)
	}
	if err := json.Unmarshal([]byte(text), &d); err != nil {
		return nil, d, fmt.Errorf("the dashboard in the ConfigMap is not JSON: %w", err)
	}
	return []byte(text), d, nil
}

// renderedMonitoringObject renders with MonitoringArgs and returns the one
// object of kind that monitoring adds (a ConfigMap counts when it holds
// DashboardKey).
func renderedMonitoringObject(ctx context.Context, kind string, helmArgs []string) (map[string]any, error) {
	manifest, err := Render(ctx, "", append(append([]string{}, MonitoringArgs...), helmArgs...)...)
	if err != nil {
		return nil, err
	}
	objects, err := Objects(manifest)
	if err != nil {
		return nil, err
	}
	var found []map[string]any
	for _, o := range objects {
		if o.GetKind() != kind {
			continue
		}
		data, _ := o.Object["data"].(map[string]any)
		if _, isDashboard := data[DashboardKey]; kind == "ConfigMap" && !isDashboard {
			continue
		}
		found = append(found, o.Object)
	}
	if len(found) != 1 {
		return nil, fmt.Errorf("the chart with %s rendered %d %s objects, want 1", strings.Join(MonitoringArgs, " "), len(found), kind)
	}
	return found[0], nil
}

// Grafana's variables in the dashboard's queries, and what a test puts in
// their place to ask Prometheus directly: every node, a one-minute window.
var grafanaVariables = strings.NewReplacer("$__rate_interval", "1m", "${node}", ".*", "$node", ".*")

// ExpandGrafanaVariables turns a dashboard query into plain PromQL.
func ExpandGrafanaVariables(expr string) string { return grafanaVariables.Replace(expr) }

// groupingClause finds "by (a, b)" in PromQL.
var groupingClause = regexp.MustCompile(`\bby\s*\(([^)]*)\)`)

// GroupingLabels are the labels an expression's aggregations group by,
// without histogram_quantile's le, which the quantile consumes: the labels
// every series of its result carries.
func GroupingLabels(expr string) []string {
	seen := map[string]bool{}
	var out []string
	for _, m := range groupingClause.FindAllStringSubmatch(expr, -1) {
		for _, l := range strings.Split(m[1], ",") {
			l = strings.TrimSpace(l)
			if l == "" || l == "le" || seen[l] {
				continue
			}
			seen[l] = true
			out = append(out, l)
		}
	}
	return out
}

// trailingComparison is an alert expression's final "<op> <number>".
var trailingComparison = regexp.MustCompile(`\s*(==|!=|>=|<=|>|<)\s*([-+]?[0-9.eE+]+)\s*$`)

// SignalOf turns an alert expression "<signal> <op> <number>" into
// "<signal> <op> bool <number>": the same comparison, answered 0 or 1 for
// every series of the signal instead of filtering, so a test can see the
// series (and their labels) of a healthy agent. ok is false for any other
// shape of expression.
func SignalOf(expr string) (string, bool) {
	m := trailingComparison.FindStringSubmatchIndex(expr)
	if m == nil {
		return "", false
	}
	op, number := expr[m[2]:m[3]], expr[m[4]:m[5]]
	return expr[:m[0]] + " " + op + " bool " + number, true
}
