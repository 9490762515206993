package k8s

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/sirupsen/logrus"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/utils/clock"

	"github.com/kube2ra/kube2ra/kubeapi/objects"
)

const (
	// eventQueueLength bounds the Events waiting to be written; past it
	// new ones are dropped (and logged), as client-go's broadcaster does.
	eventQueueLength = 1000
	// eventTries is how often one Event is attempted while the API server
	// cannot be reached (client-go's broadcaster: 12).
	eventTries = 12
	// eventRetryInterval is the wait between attempts (client-go's: 10 s).
	eventRetryInterval = 10 * time.Second
	// eventWriteTimeout bounds one create or patch.
	eventWriteTimeout = 30 * time.Second
)

// eventWriter writes Events one at a time in the background, as client-go's
// broadcaster and correlator did (same names, namespaces, source and
// fields): an Event repeating one already written (same object, type,
// reason and message) patches that one's count and last timestamp instead
// of making another, so `kubectl describe` shows "x5" rather than five lines.
// Unlike the correlator it does not fold Events with different messages
// into one "(combined from similar events)": the RateLimitedRecorder in
// front already bounds them per object and reason.
type eventWriter struct {
	// client creates and patches Events.
	client Client
	// source is the component and node written into every Event.
	source objects.EventSource
	// clock stamps the Events.
	clock clock.PassiveClock
	// log reports dropped and failed Events.
	log logrus.FieldLogger
	// retryInterval is the wait between attempts of one Event.
	retryInterval time.Duration
	// queue holds Events waiting to be written.
	queue chan *objects.Event
	// stop ends run; stopOnce closes it once.
	stop     chan struct{}
	stopOnce sync.Once
	// done is closed when run returns.
	done chan struct{}
	// written maps an Event's identity (eventIdentity) to the last one
	// written for it, for repeats; only run touches it.
	written map[string]*objects.Event
}

// newEventWriter prepares a writer; go run() starts it.
func newEventWriter(client Client, source objects.EventSource, clk clock.PassiveClock, log logrus.FieldLogger) *eventWriter {
	return &eventWriter{
		client: client, source: source, clock: clk, log: log, retryInterval: eventRetryInterval,
		queue: make(chan *objects.Event, eventQueueLength), stop: make(chan struct{}), done: make(chan struct{}),
		written: make(map[string]*objects.Event),
	}
}

var _ Recorder = (*eventWriter)(nil)

// Event queues an Event about object, which must be an
// *objects.ObjectReference (every target kube2ra builds is one).
func (w *eventWriter) Event(object runtime.Object, eventtype, reason, message string) {
	ref, ok := object.(*objects.ObjectReference)
	if !ok {
		w.log.WithFields(logrus.Fields{"object": fmt.Sprintf("%T", object), "reason": reason}).Warn("event dropped: its target is not an object reference")
		return
	}
	now := metav1.NewTime(w.clock.Now())
	namespace := ref.Namespace
	if namespace == "" {
		// Cluster-scoped objects' Events go to "default", where kubectl
		// describe looks for them.
		namespace = metav1.NamespaceDefault
	}
	e := &objects.Event{
		TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "Event"},
		ObjectMeta: metav1.ObjectMeta{
			Name:      ref.Name + "." + strconv.FormatInt(now.UnixNano(), 16),
			Namespace: namespace,
		},
		InvolvedObject: *ref,
		Reason:         reason,
		Message:        message,
		Source:         w.source,
		FirstTimestamp: now,
		LastTimestamp:  now,
		Count:          1,
		Type:           eventtype,
	}
	select {
	case w.queue <- e:
	default:
		w.log.WithFields(logrus.Fields{"object": eventKey(ref), "reason": reason}).Warn("event dropped: too many waiting to be written")
	}
}

// run writes queued Events until shutdown.
func (w *eventWriter) run() {
	defer close(w.done)
	for {
		select {
		case <-w.stop:
			return
		case e := <-w.queue:
			w.write(e)
		}
	}
}

// shutdown stops run and waits for it; Events not yet written are dropped.
func (w *eventWriter) shutdown() {
	w.stopOnce.Do(func() { close(w.stop) })
	<-w.done
}

// eventIdentity is what makes two Events the same one repeated.
func eventIdentity(e *objects.Event) string {
	o := e.InvolvedObject
	return e.Source.Component + "\x00" + e.Source.Host + "\x00" + o.Kind + "\x00" + o.Namespace + "\x00" + o.Name + "\x00" +
		string(o.UID) + "\x00" + o.APIVersion + "\x00" + e.Type + "\x00" + e.Reason + "\x00" + e.Message
}

// write creates e, or patches the count of the Event it repeats, retrying
// while the API server cannot be reached. An answer from the API server
// that refuses the write (RBAC, a terminating namespace) is final.
func (w *eventWriter) write(e *objects.Event) {
	key := eventIdentity(e)
	prev := w.written[key]
	log := w.log.WithFields(logrus.Fields{"object": eventKey(&e.InvolvedObject), "reason": e.Reason})
	for try := 1; ; try++ {
		written, err := w.writeOnce(e, prev)
		if err == nil {
			if len(w.written) >= maxEventKeys {
				clear(w.written) // forget repeats rather than grow; the next one is a new Event
			}
			w.written[key] = written
			return
		}
		if prev != nil && apierrors.IsNotFound(err) {
			prev = nil // the repeated Event expired: write a new one
			delete(w.written, key)
			continue
		}
		var status apierrors.APIStatus
		if errors.As(err, &status) || try >= eventTries {
			log.WithError(err).Warn("could not write event")
			return
		}
		log.WithError(err).Debug("writing event; will retry")
		t := time.NewTimer(w.retryInterval)
		select {
		case <-w.stop:
			t.Stop()
			return
		case <-t.C:
		}
	}
}

// writeOnce creates e, or patches prev's count and last timestamp.
func (w *eventWriter) writeOnce(e, prev *objects.Event) (*objects.Event, error) {
	ctx, cancel := context.WithTimeout(context.Background(), eventWriteTimeout)
	defer cancel()
	if prev == nil {
		return w.client.CreateEvent(ctx, e)
	}
	// The message is the repeated one's (it is part of eventIdentity).
	patch, err := json.Marshal(map[string]any{"count": prev.Count + 1, "lastTimestamp": e.LastTimestamp})
	if err != nil {
		return nil, fmt.Errorf("building the event patch: %w", err)
	}
	return w.client.PatchEvent(ctx, prev.Namespace, prev.Name, patch)
}
