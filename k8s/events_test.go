package k8s

import (
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/tools/record"
	clocktesting "k8s.io/utils/clock/testing"
)

func TestRateLimitedRecorderMakesAHandfulOfEvents(t *testing.T) {
	clk := clocktesting.NewFakePassiveClock(time.Unix(1700000000, 0))
	fake := record.NewFakeRecorder(1000)
	rec := NewRateLimitedRecorder(fake, EventOptions{Clock: clk, Logger: testLogger()})
	pod := podRef(&Pod{Namespace: "ns", Name: "hot", UID: "u1"})

	// A pod retrying 100 times a second for 10 seconds.
	for range 10 {
		for range 100 {
			rec.Eventf(pod, corev1.EventTypeWarning, ReasonRoleDenied, "role %s denied", "x")
		}
		clk.SetTime(clk.Now().Add(time.Second))
	}
	if got := len(fake.Events); got != DefaultEventBurst {
		t.Fatalf("1000 denials in 10 s made %d events; want the burst of %d", got, DefaultEventBurst)
	}
	// One more per interval after that.
	clk.SetTime(clk.Now().Add(DefaultEventInterval))
	for range 100 {
		rec.Event(pod, corev1.EventTypeWarning, ReasonRoleDenied, "again")
	}
	if got := len(fake.Events); got != DefaultEventBurst+1 {
		t.Fatalf("after one interval: %d events; want %d", got, DefaultEventBurst+1)
	}
	// Another reason on the same object and another object have their own budgets.
	rec.Event(pod, corev1.EventTypeWarning, ReasonInvalidRolePolicy, "other reason")
	rec.Event(podRef(&Pod{Namespace: "ns", Name: "calm", UID: "u2"}), corev1.EventTypeWarning, ReasonRoleDenied, "other pod")
	if got := len(fake.Events); got != DefaultEventBurst+3 {
		t.Fatalf("other reason and other pod: %d events; want %d", got, DefaultEventBurst+3)
	}
}

func TestRateLimitedRecorderBoundsItsMemory(t *testing.T) {
	clk := clocktesting.NewFakePassiveClock(time.Unix(1700000000, 0))
	fake := record.NewFakeRecorder(2 * maxEventKeys)
	rec := NewRateLimitedRecorder(fake, EventOptions{Clock: clk, Logger: testLogger()})
	for i := range maxEventKeys + 10 {
		rec.Event(podRef(&Pod{Namespace: "ns", Name: "p", UID: typesUID(i)}), corev1.EventTypeWarning, ReasonRoleDenied, "x")
	}
	if len(rec.buckets) > maxEventKeys {
		t.Fatalf("%d buckets; want at most %d", len(rec.buckets), maxEventKeys)
	}
	// Once the old keys have idled long enough they are pruned and new keys get events again.
	clk.SetTime(clk.Now().Add(DefaultEventBurst * DefaultEventInterval))
	before := len(fake.Events)
	rec.Event(podRef(&Pod{Namespace: "ns", Name: "late", UID: "late"}), corev1.EventTypeWarning, ReasonRoleDenied, "x")
	if len(fake.Events) != before+1 {
		t.Fatal("a new key got no event after the idle keys were pruned")
	}
}
