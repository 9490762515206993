package iptables

import (
	"errors"
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the package's Prometheus series.
type metrics struct {
	// restores counts how often the monitor found the rules missing or
	// altered and put them back.
	restores prometheus.Counter
	// present is 1 while the last check or change left the rules in place.
	present prometheus.Gauge
}

// newMetrics creates the series and registers them on reg unless it is nil.
func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		restores: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "kube2ra_iptables_restores_total",
			Help: "Times the iptables monitor found kube2ra's DNAT or guard rules missing or altered and restored them.",
		}),
		present: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "kube2ra_iptables_rules_present",
			Help: "1 when kube2ra's DNAT and guard rules were in place at the last check, else 0.",
		}),
	}
	if reg == nil {
		return m, nil
	}
	for _, c := range []prometheus.Collector{m.restores, m.present} {
		if err := reg.Register(c); err != nil {
			var are prometheus.AlreadyRegisteredError
			if errors.As(err, &are) {
				return nil, fmt.Errorf("registering iptables metrics: %w: create one iptables.Redirect per registry", err)
			}
			return nil, fmt.Errorf("registering iptables metrics: %w", err)
		}
	}
	return m, nil
}
