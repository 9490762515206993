package install

import (
	"errors"
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the installer's Prometheus series.
type metrics struct {
	// installed is 1 while the binary and the entry were in place at the
	// last check.
	installed prometheus.Gauge
	// reinserts counts entries put back after another writer removed them.
	reinserts prometheus.Counter
	// reinsertSeconds is how long the entry was missing each time.
	reinsertSeconds prometheus.Histogram
	// errors counts checks that failed.
	errors prometheus.Counter
}

// newMetrics creates the series and registers them on reg unless it is nil.
func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		installed: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "kube2ra_cni_plugin_installed",
			Help: "1 when the kube2ra-cni binary is in the CNI bin directory and its one entry follows the primary plugin in the primary conflist at the last check, else 0.",
		}),
		reinserts: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "kube2ra_cni_reinserts_total",
			Help: "Times another writer (a primary CNI restarting) rewrote the primary conflist without kube2ra's entry and the agent put it back.",
		}),
		reinsertSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "kube2ra_cni_reinsert_seconds",
			Help:    "Time from another writer's rewrite of the primary conflist (its modification time) to kube2ra's entry being back.",
			Buckets: []float64{0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 30},
		}),
		errors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "kube2ra_cni_install_errors_total",
			Help: "Checks of the kube2ra-cni binary and conflist entry that failed (the log says why).",
		}),
	}
	if reg == nil {
		return m, nil
	}
	for _, c := range []prometheus.Collector{m.installed, m.reinserts, m.reinsertSeconds, m.errors} {
		if err := reg.Register(c); err != nil {
			var are prometheus.AlreadyRegisteredError
			if errors.As(err, &are) {
				return nil, fmt.Errorf("registering the CNI installer's metrics: %w: create one installer per registry", err)
			}
			return nil, fmt.Errorf("registering the CNI installer's metrics: %w", err)
		}
	}
	return m, nil
}

// observe records one Ensure.
func (m *metrics) observe(r Result, err error) {
	if err != nil {
		m.errors.Inc()
		m.installed.Set(0)
		return
	}
	if r.Conflist == "" {
		m.installed.Set(0)
		return
	}
	m.installed.Set(1)
	if r.Reinserted {
		m.reinserts.Inc()
		m.reinsertSeconds.Observe(r.Took.Seconds())
	}
}
