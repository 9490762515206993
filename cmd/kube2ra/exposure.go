package main

import (
	"context"
	"fmt"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/kube2ra/kube2ra/imdsprobe"
	"github.com/kube2ra/kube2ra/k8s"
	"github.com/kube2ra/kube2ra/kubeapi/objects"
)

// probeTimeout bounds each request of the metadata exposure probe; the
// hop-limited token PUT of a hardened node ends in it.
const probeTimeout = time.Second

// checkMetadataExposure asks the node's metadata service whether it would
// answer a pod directly (what a pod gets before the rules are in place at
// boot, or after every rule is flushed) and says so in a log line, the
// kube2ra_node_metadata_exposed gauge and an Event on the node.
func (a *agent) checkMetadataExposure(ctx context.Context) error {
	gauge := prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "kube2ra_node_metadata_exposed",
		Help: "1 when the node's metadata service answers token-less GETs (IMDSv1) or sends IMDSv2 tokens beyond the node (hop limit 2 or more), so a pod reaching it directly would get the node's credentials; 0 when neither.",
	})
	if err := a.reg.Register(gauge); err != nil {
		return fmt.Errorf("registering kube2ra_node_metadata_exposed: %w", err)
	}
	url := a.cfg.parsed.metadataURL
	res, err := imdsprobe.Probe(ctx, url, probeTimeout)
	log := a.log.WithField("component", "imdsprobe").WithField("metadata", url)
	if err != nil {
		log.WithError(err).Warn("could not tell whether the node's metadata service is exposed to pods")
		return nil
	}
	if !res.Exposed() {
		gauge.Set(0)
		log.WithField("hopLimitKnown", res.HopLimitKnown).Info("the node's metadata service is closed to pods (IMDSv2 required, hop limit 1)")
		return nil
	}
	gauge.Set(1)
	msg := fmt.Sprintf("the node's metadata service would give a pod that reaches it directly the node's credentials: %s. kube2ra's rules stop that while they are in place; close it on the instance: %s", res.Problems(), imdsprobe.Fix)
	log.Warn(msg)
	a.events.Event(k8s.NodeRef(a.cfg.Node), objects.EventTypeWarning, k8s.ReasonNodeMetadataExposed, msg)
	return nil
}
