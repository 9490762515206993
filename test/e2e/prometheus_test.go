//go:build e2e

package e2e

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kube2ra/kube2ra/test/chart"
	"github.com/kube2ra/kube2ra/test/harness"
)

// trafficInterval is the pause between rounds of background requests while
// Prometheus scrapes.
const trafficInterval = 300 * time.Millisecond

// scrapesBeforeQuerying gives every rate() at least two samples taken
// under traffic.
const scrapesBeforeQuerying = 4

// promCheck is one query the chart ships: an alert's signal or a panel's query.
type promCheck struct {
	// name says where the query is (alert or panel).
	name string
	// query is plain PromQL.
	query string
	// labels are the labels it groups by, which every series must carry.
	labels []string
}

// TestPrometheusEvaluatesEveryAlertAndPanel has a real Prometheus (Debian's
// prometheus) scrape a running agent of each flavour under traffic, with
// the node label the chart's monitors add, and evaluates every alert
// expression of the chart's PrometheusRule (its comparison made `bool`, so
// a healthy agent's series show) and every query of its dashboard, both as
// helm renders them. Each must return series from at least one flavour
// (some metrics exist only with Roles Anywhere or only with STS), and every
// series must carry the labels its query groups by: a renamed metric or
// label fails here instead of blanking a user's panel or silencing an alert.
func TestPrometheusEvaluatesEveryAlertAndPanel(t *testing.T) {
	ctx := ctxT(t)
	_, groups, err := chart.RenderedRules(ctx)
	if err != nil {
		t.Fatal(err)
	}
	_, dashboard, err := chart.RenderedDashboard(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var checks []promCheck
	for _, a := range groups.Alerts() {
		signal, ok := chart.SignalOf(a.Expr)
		if !ok {
			t.Fatalf("alert %s: %q is not \"<signal> <op> <number>\"", a.Alert, a.Expr)
		}
		checks = append(checks, promCheck{name: "alert " + a.Alert, query: signal, labels: chart.GroupingLabels(a.Expr)})
	}
	for _, q := range dashboard.Queries() {
		checks = append(checks, promCheck{name: "panel " + q.Panel, query: chart.ExpandGrafanaVariables(q.Expr), labels: chart.GroupingLabels(q.Expr)})
	}
	if len(checks) == 0 {
		t.Fatal("the chart ships no alert or dashboard query")
	}

	answered := map[int][]harness.Flavour{} // index in checks -> flavours whose agent gave series
	for _, flavour := range flavours() {
		t.Run(string(flavour), func(t *testing.T) {
			env := startEnvWith(t, harness.Options{Flavour: flavour, Roles: allRoles, PodIdentity: flavour == harness.RolesAnywhere})
			stop := startMonitoredTraffic(t, env)
			defer stop()
			prom, err := harness.StartPrometheus(ctxT(t), t.TempDir(), harness.ScrapeTarget{
				Address: strings.TrimPrefix(env.Agent.MetricsURL, "http://"),
				Labels:  map[string]string{"node": harness.NodeName},
			})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() {
				if t.Failed() {
					t.Logf("prometheus log:\n%s", prom.Log())
				}
				prom.Stop()
			})
			if err := prom.WaitForScrapes(ctxT(t), 1, scrapesBeforeQuerying); err != nil {
				t.Fatal(err)
			}
			for i, c := range checks {
				samples, err := prom.Query(ctxT(t), c.query)
				if err != nil {
					t.Errorf("%s: %v", c.name, err)
					continue
				}
				for _, s := range samples {
					for _, l := range c.labels {
						if s.Labels[l] == "" {
							t.Errorf("%s: %s returned a series without the label %q it groups by: %v", c.name, c.query, l, s.Labels)
						}
					}
				}
				if len(samples) > 0 {
					answered[i] = append(answered[i], flavour)
				}
				t.Logf("%s: %d series (%s)", c.name, len(samples), c.query)
			}
		})
	}
	for i, c := range checks {
		if len(answered[i]) == 0 {
			t.Errorf("%s: %s returned no series from either flavour's agent under traffic: a metric or label it uses is missing or renamed", c.name, c.query)
		}
	}
}

// startMonitoredTraffic creates pods that get credentials, are refused, read
// pass-through paths and knock on the token door with a bad token, and
// keeps them asking until stop is called.
func startMonitoredTraffic(t *testing.T, env *harness.Env) (stop func()) {
	t.Helper()
	const ns = "prom-e2e"
	mustNamespace(t, env, ns, `["`+roleWeb+`"]`)
	web := mustPod(t, env, harness.PodSpec{Namespace: ns, Name: "web", Annotations: roleAnnotation(roleWeb)})
	denied := mustPod(t, env, harness.PodSpec{Namespace: ns, Name: "denied", Annotations: roleAnnotation(roleAdmin)})
	getCreds(t, web, roleWeb, true) // an upstream call before the first scrape

	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() {
		for ctx.Err() == nil {
			_, _, _ = web.PodGet(ctx, credsPath+roleWeb, true)
			_, _, _ = denied.PodGet(ctx, credsPath, true)
			_, _, _ = web.PodGet(ctx, "/latest/meta-data/placement/region", true)
			if env.Flavour == harness.RolesAnywhere {
				// The token door refuses a token that is not a JWT.
				cmd := web.Net.Command(ctx, "curl", "-s", "-o", "/dev/null", "--max-time", "2",
					"-H", "Authorization: not-a-token", "http://169.254.170.23/v1/credentials")
				cmd.Env = harness.CleanEnviron()
				_ = cmd.Run()
			}
			select {
			case <-ctx.Done():
			case <-time.After(trafficInterval):
			}
		}
	})
	return func() {
		cancel()
		wg.Wait()
	}
}
