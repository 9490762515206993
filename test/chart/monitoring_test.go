package chart

import (
	"slices"
	"testing"
)

func TestSignalOfTurnsTheTrailingComparisonIntoBool(t *testing.T) {
	for _, tc := range []struct {
		name, expr, want string
		ok               bool
	}{
		{"greater than zero", `max by (node) (kube2ra_pods_not_intercepted) > 0`, `max by (node) (kube2ra_pods_not_intercepted) > bool 0`, true},
		{"less than a fraction", `sum by (x) (rate(m[5m])) > 0.05`, `sum by (x) (rate(m[5m])) > bool 0.05`, true},
		{"less than", `min by (node) (kube2ra_ready) < 1`, `min by (node) (kube2ra_ready) < bool 1`, true},
		{"large number", `min(m) < 604800`, `min(m) < bool 604800`, true},
		{"two-character operator", `min(m) <= 1e3`, `min(m) <= bool 1e3`, true},
		{"no comparison", `sum(rate(m[5m]))`, "", false},
		{"comparison inside, not at the end", `sum(m > 0)`, "", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, ok := SignalOf(tc.expr)
			if ok != tc.ok || got != tc.want {
				t.Errorf("SignalOf(%q) = %q, %v; want %q, %v", tc.expr, got, ok, tc.want, tc.ok)
			}
		})
	}
}

func TestGroupingLabelsLeaveOutTheQuantilesLe(t *testing.T) {
	for _, tc := range []struct {
		name, expr string
		want       []string
	}{
		{"one aggregation", `sum by (node, instance, reason) (rate(m[5m])) > 0`, []string{"node", "instance", "reason"}},
		{"histogram quantile", `histogram_quantile(0.99, sum by (route, le) (rate(m_bucket[1m])))`, []string{"route"}},
		{"no grouping", `sum(m)`, nil},
		{"two aggregations, labels once", `sum by (a) (m) / sum by (a, b) (n)`, []string{"a", "b"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := GroupingLabels(tc.expr); !slices.Equal(got, tc.want) {
				t.Errorf("GroupingLabels(%q) = %v, want %v", tc.expr, got, tc.want)
			}
		})
	}
}

func TestExpandGrafanaVariables(t *testing.T) {
	got := ExpandGrafanaVariables(`sum by (route) (rate(m{node=~"$node"}[$__rate_interval])) + on() m{node=~"${node}"}`)
	if want := `sum by (route) (rate(m{node=~".*"}[1m])) + on() m{node=~".*"}`; got != want {
		t.Errorf("got %s, want %s", got, want)
	}
}
