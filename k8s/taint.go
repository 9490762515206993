package k8s

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/sirupsen/logrus"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/clock"

	"github.com/kube2ra/kube2ra/kubeapi/objects"
)

// StartupTaintKey is the taint a node registers with so that workload pods
// wait until kube2ra's rules are in place (Cilium's
// node.cilium.io/agent-not-ready is the model). The agent removes it from
// its own node once ready and never puts it back: a running node is
// protected by the guard, and re-tainting would evict nothing anyway.
const StartupTaintKey = "kube2ra.io/agent-not-ready"

// StartupTaintEffect is NoSchedule: it keeps new pods off the node until the
// agent is ready without evicting what already runs there (NoExecute would
// kill pods on every node whose kubelet re-registers with the taint, and
// the DaemonSets a node needs to become ready tolerate every taint anyway).
const StartupTaintEffect = objects.TaintEffectNoSchedule

const (
	// taintRetryInitial and taintRetryMax bound the backoff between
	// attempts to remove the taint; it keeps trying until the agent stops.
	taintRetryInitial = 500 * time.Millisecond
	taintRetryMax     = 30 * time.Second
)

// TaintRemoverOptions configures RemoveStartupTaint.
type TaintRemoverOptions struct {
	// NodeName is the agent's own node, the only one it ever patches.
	NodeName string
	// Logger receives the outcome; required.
	Logger logrus.FieldLogger
	// Registerer takes kube2ra_node_startup_taint; nil registers nothing.
	Registerer prometheus.Registerer
	// Clock times the backoff; clock.RealClock when nil.
	Clock clock.WithTicker
}

// StartupTaintRemover removes StartupTaintKey from the agent's own node.
type StartupTaintRemover struct {
	// client patches the node.
	client Client
	// node is the agent's own node.
	node string
	// log receives attempts and the outcome.
	log logrus.FieldLogger
	// clock times the backoff.
	clock clock.WithTicker
	// tainted is kube2ra_node_startup_taint: 1 while the node is known to
	// carry the taint, 0 once it is gone.
	tainted prometheus.Gauge
	// failures counts failed attempts.
	failures prometheus.Counter
}

// NewStartupTaintRemover prepares the remover; it changes nothing yet.
func NewStartupTaintRemover(client Client, opts TaintRemoverOptions) (*StartupTaintRemover, error) {
	if opts.NodeName == "" {
		return nil, errors.New("the startup taint remover needs the node name (--node or NODE_NAME)")
	}
	if opts.Logger == nil {
		return nil, errors.New("k8s.NewStartupTaintRemover needs a logger")
	}
	r := &StartupTaintRemover{
		client: client,
		node:   opts.NodeName,
		log:    opts.Logger.WithFields(logrus.Fields{"node": opts.NodeName, "taint": StartupTaintKey}),
		clock:  opts.Clock,
		tainted: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "kube2ra_node_startup_taint",
			Help: "1 while this agent's node is known to carry the kube2ra.io/agent-not-ready taint, 0 once the agent has removed it (or the node never had it).",
		}),
		failures: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "kube2ra_node_startup_taint_errors_total",
			Help: "Failed attempts to read the agent's node or remove the startup taint from it; each is retried with backoff.",
		}),
	}
	if r.clock == nil {
		r.clock = clock.RealClock{}
	}
	if opts.Registerer != nil {
		for _, c := range []prometheus.Collector{r.tainted, r.failures} {
			if err := opts.Registerer.Register(c); err != nil {
				return nil, fmt.Errorf("registering the startup taint metrics: %w", err)
			}
		}
	}
	return r, nil
}

// Run removes the taint, retrying with backoff until it is gone or ctx
// ends; it returns nil once the node no longer carries it. After each
// removal it reads the node again, so a taint listed twice goes too.
func (r *StartupTaintRemover) Run(ctx context.Context) error {
	delay := taintRetryInitial
	start := r.clock.Now()
	for attempt, removals := 1, 0; ; attempt++ {
		removed, err := r.removeOnce(ctx)
		switch {
		case err == nil && removed:
			removals++
			continue
		case err == nil:
			r.tainted.Set(0)
			if removals > 0 {
				r.log.WithFields(logrus.Fields{"attempts": attempt, "after": r.clock.Since(start).Round(time.Millisecond)}).
					Info("removed the startup taint: workload pods may now be scheduled on this node")
			} else {
				r.log.Debug("the node does not carry the startup taint")
			}
			return nil
		}
		r.failures.Inc()
		r.log.WithError(err).WithField("attempt", attempt).WithField("retryIn", delay).Warn("could not remove the startup taint yet")
		t := r.clock.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C():
		}
		delay = min(2*delay, taintRetryMax)
	}
}

// removeOnce reads the node and, when it carries the taint, removes exactly
// that entry with a JSON patch whose test operation makes the API server
// refuse it if the taint list changed in between (another controller added
// or removed a taint): the next attempt then reads the node again, so a
// concurrent change is never overwritten.
func (r *StartupTaintRemover) removeOnce(ctx context.Context) (removed bool, err error) {
	node, err := r.client.GetNode(ctx, r.node)
	if apierrors.IsNotFound(err) {
		// The kubelet registers its node before it runs pods, so an agent
		// whose node does not exist runs outside a kubelet (tests, a
		// mistyped --node): there is no taint to remove.
		r.log.Warn("the agent's node does not exist in the API server: no startup taint to remove (is --node right?)")
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("reading node %s: %w", r.node, err)
	}
	i := startupTaintIndex(node.Spec.Taints)
	if i < 0 {
		return false, nil
	}
	r.tainted.Set(1)
	patch, err := removeTaintPatch(i, node.Spec.Taints[i])
	if err != nil {
		return false, err
	}
	_, err = r.client.PatchNode(ctx, r.node, types.JSONPatchType, patch, "kube2ra")
	switch {
	case apierrors.IsNotFound(err):
		return false, fmt.Errorf("node %s is gone: %w", r.node, err)
	case apierrors.IsForbidden(err):
		return false, fmt.Errorf("removing the taint from node %s is forbidden: grant the agent get and patch on nodes (the chart's ClusterRole does): %w", r.node, err)
	case err != nil:
		return false, fmt.Errorf("removing the taint from node %s (the taint list may have changed meanwhile; read again): %w", r.node, err)
	}
	return true, nil
}

// startupTaintIndex is the position of the startup taint, or -1.
func startupTaintIndex(taints []objects.Taint) int {
	for i, t := range taints {
		if t.Key == StartupTaintKey {
			return i
		}
	}
	return -1
}

// jsonPatchOp is one RFC 6902 operation.
type jsonPatchOp struct {
	Op    string `json:"op"`
	Path  string `json:"path"`
	Value any    `json:"value,omitempty"`
}

// removeTaintPatch tests that position i still holds taint, then removes it.
func removeTaintPatch(i int, taint objects.Taint) ([]byte, error) {
	path := "/spec/taints/" + strconv.Itoa(i)
	b, err := json.Marshal([]jsonPatchOp{{Op: "test", Path: path, Value: taint}, {Op: "remove", Path: path}})
	if err != nil {
		return nil, fmt.Errorf("building the taint patch: %w", err)
	}
	return b, nil
}
