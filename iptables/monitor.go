package iptables

import (
	"context"
	"fmt"
	"time"

	"github.com/sirupsen/logrus"
	"k8s.io/utils/clock"
)

// Monitor re-verifies the rules every interval and restores them when they
// are missing or altered (someone flushed the nat table, another agent
// rewrote PREROUTING). It blocks until ctx is done and then returns nil.
func (r *Redirect) Monitor(ctx context.Context, interval time.Duration) error {
	return monitor{rules: r, clock: r.clock, log: r.log, metrics: r.metrics}.run(ctx, interval)
}

// monitor is the loop behind Redirect.Monitor, on the Rules interface so it
// can be tested with the fake.
type monitor struct {
	// rules is what is checked and restored.
	rules Rules
	// clock makes the ticks.
	clock clock.WithTicker
	// log receives restores at warn level.
	log logrus.FieldLogger
	// metrics counts restores and reports presence.
	metrics *metrics
}

func (m monitor) run(ctx context.Context, interval time.Duration) error {
	if interval <= 0 {
		return fmt.Errorf("iptables resync interval %s is not positive: use a duration such as 30s (--iptables-resync)", interval)
	}
	ticker := m.clock.NewTicker(interval)
	defer ticker.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-ticker.C():
			m.check(ctx)
		}
	}
}

// check verifies once and restores when needed.
func (m monitor) check(ctx context.Context) {
	present, err := m.rules.RulesPresent(ctx)
	if ctx.Err() != nil {
		return
	}
	if err != nil {
		m.log.WithError(err).Error("checking kube2ra's iptables rules failed; will retry at the next resync")
		return
	}
	if present {
		m.metrics.present.Set(1)
		return
	}
	m.metrics.present.Set(0)
	m.log.Warn("kube2ra's iptables rules are missing or altered; restoring them")
	if _, err := m.rules.EnsureRules(ctx); err != nil {
		if ctx.Err() == nil {
			m.log.WithError(err).Error("restoring kube2ra's iptables rules failed; will retry at the next resync")
		}
		return
	}
	m.metrics.restores.Inc()
	m.metrics.present.Set(1)
	m.log.Info("kube2ra's iptables rules restored")
}
