package k8s

import (
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/sirupsen/logrus"
	"golang.org/x/time/rate"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/clock"

	"github.com/kube2ra/kube2ra/kubeapi/objects"
)

const (
	// ReasonRoleDenied is the Event reason on a pod whose role is refused.
	ReasonRoleDenied = "RoleDenied"
	// ReasonInvalidRolePolicy is the Event reason on a namespace whose
	// allowed-roles annotation cannot be parsed.
	ReasonInvalidRolePolicy = "InvalidRolePolicy"
	// eventComponent is the source component of kube2ra's Events.
	eventComponent = "kube2ra"

	// DefaultEventBurst is how many Events one object may get for one
	// reason at once: a pod retrying 100 times a second makes this many,
	// then one per DefaultEventInterval.
	DefaultEventBurst = 3
	// DefaultEventInterval is how often the burst refills by one Event.
	DefaultEventInterval = 20 * time.Second
	// maxEventKeys bounds the rate limiter's memory; idle keys are pruned
	// first, and past the bound new keys get no Event (logs still say it).
	maxEventKeys = 4096
)

// EventOptions configures NewEventRecorder.
type EventOptions struct {
	// NodeName goes into the Events' source host.
	NodeName string
	// Burst is Events per object and reason at once; DefaultEventBurst when zero.
	Burst int
	// Interval refills the burst by one; DefaultEventInterval when zero.
	Interval time.Duration
	// Logger is where dropped or failed Events are mentioned; required.
	Logger logrus.FieldLogger
	// Clock drives the rate limit; clock.RealClock when nil.
	Clock clock.PassiveClock
}

// Recorder records an Event about an object (an *objects.ObjectReference).
// RateLimitedRecorder and client-go's record.FakeRecorder (in tests) are
// Recorders.
type Recorder interface {
	// Event records an Event of eventtype (objects.EventTypeWarning...)
	// with reason and message about object.
	Event(object runtime.Object, eventtype, reason, message string)
}

// EventRecorder writes Kubernetes Events through an eventWriter,
// rate-limited per object and reason so a hot retry loop makes a handful.
type EventRecorder struct {
	// writer sends Events to the API server; nil when wrapping.
	writer *eventWriter
	// RateLimitedRecorder is the rate-limited front of the writer.
	*RateLimitedRecorder
}

// NewEventRecorder starts a writer of client's Events API. Call Shutdown
// when done.
func NewEventRecorder(client Client, opts EventOptions) (*EventRecorder, error) {
	if opts.Logger == nil {
		return nil, errors.New("k8s.NewEventRecorder needs a logger")
	}
	opts = opts.withDefaults()
	w := newEventWriter(client, objects.EventSource{Component: eventComponent, Host: opts.NodeName}, opts.Clock, opts.Logger)
	go w.run()
	return &EventRecorder{writer: w, RateLimitedRecorder: NewRateLimitedRecorder(w, opts)}, nil
}

// Shutdown stops the writer, dropping Events not yet sent.
func (r *EventRecorder) Shutdown() {
	if r.writer != nil {
		r.writer.shutdown()
	}
}

// withDefaults fills zero fields.
func (o EventOptions) withDefaults() EventOptions {
	if o.Burst <= 0 {
		o.Burst = DefaultEventBurst
	}
	if o.Interval <= 0 {
		o.Interval = DefaultEventInterval
	}
	if o.Clock == nil {
		o.Clock = clock.RealClock{}
	}
	if o.Logger == nil {
		o.Logger = logrus.New()
	}
	return o
}

// RateLimitedRecorder wraps any Recorder with a token bucket per (object,
// reason).
type RateLimitedRecorder struct {
	// inner records the Events that pass.
	inner Recorder
	// burst and every configure each bucket.
	burst int
	// every is the refill interval of one token.
	every time.Duration
	// clock reads the time for the buckets.
	clock clock.PassiveClock
	// log mentions suppressed Events at debug level.
	log logrus.FieldLogger
	// mu guards buckets.
	mu sync.Mutex
	// buckets maps an object-and-reason key to its limiter.
	buckets map[string]*eventBucket
}

// eventBucket is one key's limiter and when it was last used.
type eventBucket struct {
	// limiter holds the tokens.
	limiter *rate.Limiter
	// last is when an Event was last offered for the key.
	last time.Time
}

var _ Recorder = (*RateLimitedRecorder)(nil)

// NewRateLimitedRecorder wraps inner.
func NewRateLimitedRecorder(inner Recorder, opts EventOptions) *RateLimitedRecorder {
	opts = opts.withDefaults()
	return &RateLimitedRecorder{
		inner:   inner,
		burst:   opts.Burst,
		every:   opts.Interval,
		clock:   opts.Clock,
		log:     opts.Logger,
		buckets: make(map[string]*eventBucket),
	}
}

// allow takes a token for object and reason.
func (r *RateLimitedRecorder) allow(object runtime.Object, reason string) bool {
	key := eventKey(object) + "\x00" + reason
	now := r.clock.Now()
	r.mu.Lock()
	defer r.mu.Unlock()
	b, ok := r.buckets[key]
	if !ok {
		if len(r.buckets) >= maxEventKeys {
			r.prune(now)
		}
		if len(r.buckets) >= maxEventKeys {
			return false
		}
		b = &eventBucket{limiter: rate.NewLimiter(rate.Every(r.every), r.burst)}
		r.buckets[key] = b
	}
	b.last = now
	return b.limiter.AllowN(now, 1)
}

// prune drops buckets idle long enough to have refilled completely.
func (r *RateLimitedRecorder) prune(now time.Time) {
	full := time.Duration(r.burst) * r.every
	for k, b := range r.buckets {
		if now.Sub(b.last) >= full {
			delete(r.buckets, k)
		}
	}
}

// eventKey identifies the object an Event is about.
func eventKey(object runtime.Object) string {
	if ref, ok := object.(*objects.ObjectReference); ok {
		return ref.Kind + "/" + ref.Namespace + "/" + ref.Name + "/" + string(ref.UID)
	}
	return fmt.Sprintf("%T/%p", object, object)
}

// Event records an Event if the object's budget for reason allows.
func (r *RateLimitedRecorder) Event(object runtime.Object, eventtype, reason, message string) {
	if r.allow(object, reason) {
		r.inner.Event(object, eventtype, reason, message)
		return
	}
	r.log.WithFields(logrus.Fields{"object": eventKey(object), "reason": reason}).Debug("event suppressed by rate limit")
}

// Eventf is Event with a format.
func (r *RateLimitedRecorder) Eventf(object runtime.Object, eventtype, reason, messageFmt string, args ...any) {
	r.Event(object, eventtype, reason, fmt.Sprintf(messageFmt, args...))
}

// podRef is the Event target for a pod.
func podRef(p *Pod) *objects.ObjectReference {
	return &objects.ObjectReference{Kind: "Pod", APIVersion: "v1", Namespace: p.Namespace, Name: p.Name, UID: p.UID}
}

// namespaceRef is the Event target for a namespace. Namespaces are cluster
// scoped, so the Event lands in "default", where `kubectl describe
// namespace` finds it.
func namespaceRef(ns *objects.Namespace) *objects.ObjectReference {
	return &objects.ObjectReference{Kind: "Namespace", APIVersion: "v1", Name: ns.Name, UID: ns.UID}
}

// ReasonNodeMetadataExposed is the Event reason on the agent's node when its
// metadata service would answer a pod directly.
const ReasonNodeMetadataExposed = "NodeMetadataExposed"

// NodeRef is the Event target for a node, as the kubelet writes it (the
// node's name as its UID), so `kubectl describe node` shows the Event.
func NodeRef(name string) *objects.ObjectReference {
	return &objects.ObjectReference{Kind: "Node", APIVersion: "v1", Name: name, UID: types.UID(name)}
}

// ReasonSessionNamesRefused is the Event reason on the agent's node when the
// Roles Anywhere profile refuses custom role session names
// (acceptRoleSessionName false) and sessions are created without one.
const ReasonSessionNamesRefused = "SessionNamesRefused"

// ReasonMetadataNotIntercepted is the Event reason on a pod whose traffic
// leaves the node through an interface --host-interface does not match.
const ReasonMetadataNotIntercepted = "MetadataNotIntercepted"
