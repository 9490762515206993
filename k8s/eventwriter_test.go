package k8s

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
	clocktesting "k8s.io/utils/clock/testing"

	"github.com/kube2ra/kube2ra/kubeapi/kubeapitest"
	"github.com/kube2ra/kube2ra/kubeapi/objects"
)

// writeNow queues one Event and writes it at once, as run would.
func writeNow(t *testing.T, w *eventWriter, object runtime.Object, reason, message string) {
	t.Helper()
	w.Event(object, objects.EventTypeWarning, reason, message)
	select {
	case e := <-w.queue:
		w.write(e)
	default:
		t.Fatal("the Event was not queued")
	}
}

// listEvents is every Event in namespace.
func listEvents(t *testing.T, cs *fake.Clientset, namespace string) []corev1.Event {
	t.Helper()
	l, err := cs.CoreV1().Events(namespace).List(context.Background(), metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return l.Items
}

// TestEventWriterWritesEventsAsKubectlShowsThem: an Event lands in its
// object's namespace (a node's in "default") with the source, reason and
// message; a repeat of the same Event raises that Event's count instead of
// writing another; a new message is a new Event; a repeat of an Event that
// expired is written anew.
func TestEventWriterWritesEventsAsKubectlShowsThem(t *testing.T) {
	cs := fake.NewClientset()
	clk := clocktesting.NewFakePassiveClock(time.Unix(1700000000, 0))
	w := newEventWriter(kubeapitest.FromClientset(cs), objects.EventSource{Component: eventComponent, Host: "node-a"}, clk, testLogger())
	pod := podRef(&Pod{Namespace: "ns", Name: "p", UID: "u1"})

	writeNow(t, w, pod, ReasonRoleDenied, "role x denied")
	clk.SetTime(clk.Now().Add(time.Minute))
	writeNow(t, w, pod, ReasonRoleDenied, "role x denied")
	evs := listEvents(t, cs, "ns")
	if len(evs) != 1 {
		t.Fatalf("a repeated Event made %d Events; want 1 with count 2", len(evs))
	}
	e := evs[0]
	if e.Count != 2 || e.Reason != ReasonRoleDenied || e.Message != "role x denied" || e.Type != corev1.EventTypeWarning ||
		e.InvolvedObject.Kind != "Pod" || e.InvolvedObject.Name != "p" || e.InvolvedObject.UID != "u1" ||
		e.Source.Component != eventComponent || e.Source.Host != "node-a" || !e.LastTimestamp.After(e.FirstTimestamp.Time) {
		t.Fatalf("the Event is %+v; want count 2 about pod ns/p from kube2ra on node-a, last seen after first", e)
	}

	clk.SetTime(clk.Now().Add(time.Minute))
	writeNow(t, w, pod, ReasonRoleDenied, "role y denied")
	if n := len(listEvents(t, cs, "ns")); n != 2 {
		t.Fatalf("another message made %d Events in all; want 2", n)
	}

	if err := cs.CoreV1().Events("ns").Delete(context.Background(), e.Name, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	clk.SetTime(clk.Now().Add(time.Minute))
	writeNow(t, w, pod, ReasonRoleDenied, "role x denied")
	evs = listEvents(t, cs, "ns")
	if len(evs) != 2 || evs[0].Name == e.Name || evs[1].Name == e.Name {
		t.Fatalf("the repeat of an expired Event: %d Events; want it written anew", len(evs))
	}

	writeNow(t, w, NodeRef("node-a"), ReasonNodeMetadataExposed, "exposed")
	if evs := listEvents(t, cs, metav1.NamespaceDefault); len(evs) != 1 || evs[0].InvolvedObject.Kind != "Node" {
		t.Fatalf("a node's Event: %+v in default; want one about the node", evs)
	}
}

// TestEventWriterRetriesOnlyWhatMaySucceed: the API server's refusal
// (RBAC) is final; an unreachable API server is tried again until it
// answers, and shutdown ends the waiting.
func TestEventWriterRetriesOnlyWhatMaySucceed(t *testing.T) {
	for _, tc := range []struct {
		name      string
		fail      error
		wantCalls int32
		wantSaved int
	}{
		{name: "forbidden is final", fail: apierrors.NewForbidden(schema.GroupResource{Resource: "events"}, "x", errors.New("RBAC")), wantCalls: 1},
		{name: "unreachable is retried", fail: errors.New("connection refused"), wantCalls: 3, wantSaved: 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cs := fake.NewClientset()
			var calls atomic.Int32
			cs.PrependReactor("create", "events", func(k8stesting.Action) (bool, runtime.Object, error) {
				if calls.Add(1) < 3 {
					return true, nil, tc.fail
				}
				return false, nil, nil
			})
			w := newEventWriter(kubeapitest.FromClientset(cs), objects.EventSource{Component: eventComponent}, clocktesting.NewFakePassiveClock(time.Now()), testLogger())
			w.retryInterval = time.Millisecond
			writeNow(t, w, podRef(&Pod{Namespace: "ns", Name: "p"}), ReasonRoleDenied, "m")
			if got := calls.Load(); got != tc.wantCalls {
				t.Errorf("%d create calls; want %d", got, tc.wantCalls)
			}
			if n := len(listEvents(t, cs, "ns")); n != tc.wantSaved {
				t.Errorf("%d Events stored; want %d", n, tc.wantSaved)
			}
		})
	}

	// Shutdown ends a writer waiting to retry.
	cs := fake.NewClientset()
	cs.PrependReactor("create", "events", func(k8stesting.Action) (bool, runtime.Object, error) {
		return true, nil, errors.New("connection refused")
	})
	w := newEventWriter(kubeapitest.FromClientset(cs), objects.EventSource{Component: eventComponent}, clocktesting.NewFakePassiveClock(time.Now()), testLogger())
	w.retryInterval = time.Hour
	go w.run()
	w.Event(podRef(&Pod{Namespace: "ns", Name: "p"}), objects.EventTypeWarning, ReasonRoleDenied, "m")
	done := make(chan struct{})
	go func() { w.shutdown(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("shutdown did not end the writer waiting to retry")
	}
}
