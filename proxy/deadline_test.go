package proxy

import (
	"context"
	"errors"
	"net/http"
	"testing"
	"time"
)

// TestRequestTimeoutStillBoundsALookupThatWaits: a pod lookup that waits
// (the pod not known yet) is ended by RequestTimeout and answered, though
// the request's deadline is only set up once something waits on it.
func TestRequestTimeoutStillBoundsALookupThatWaits(t *testing.T) {
	e := newTestEnv(t, Options{RequestTimeout: 100 * time.Millisecond})
	defer e.pods.holdLookups()()
	c := &http.Client{Timeout: 30 * time.Second}
	resp, err := c.Get(e.url + "/latest/meta-data/iam/security-credentials/" + testRole().Name)
	if err != nil {
		t.Fatalf("a lookup held past RequestTimeout got no answer: %v", err)
	}
	_ = resp.Body.Close()
	if resp.StatusCode == http.StatusOK {
		t.Fatalf("status 200 for a lookup that never finished")
	}
}

// TestLazyDeadlineActsAsWithTimeout: the context ends at its deadline with
// DeadlineExceeded, ends with its parent, reports the earlier deadline,
// is cancelled by its release function whether or not anything waited
// first, and contexts derived from it end with it.
func TestLazyDeadlineActsAsWithTimeout(t *testing.T) {
	t.Run("deadline", func(t *testing.T) {
		ctx, stop := withLazyDeadline(context.Background(), 20*time.Millisecond)
		defer stop()
		child, cancel := context.WithCancel(ctx)
		defer cancel()
		<-child.Done()
		if !errors.Is(ctx.Err(), context.DeadlineExceeded) || !errors.Is(child.Err(), context.DeadlineExceeded) {
			t.Fatalf("after the deadline: Err %v, child %v; want DeadlineExceeded", ctx.Err(), child.Err())
		}
	})
	t.Run("parent", func(t *testing.T) {
		parent, cancelParent := context.WithCancel(context.Background())
		ctx, stop := withLazyDeadline(parent, time.Hour)
		defer stop()
		cancelParent()
		<-ctx.Done()
		if !errors.Is(ctx.Err(), context.Canceled) {
			t.Fatalf("parent cancelled: Err %v", ctx.Err())
		}
	})
	t.Run("earlier parent deadline", func(t *testing.T) {
		want := time.Now().Add(time.Minute)
		parent, cancel := context.WithDeadline(context.Background(), want)
		defer cancel()
		ctx, stop := withLazyDeadline(parent, time.Hour)
		defer stop()
		if d, ok := ctx.Deadline(); !ok || !d.Equal(want) {
			t.Fatalf("Deadline %v %v, want the parent's %v", d, ok, want)
		}
		ctx, stop2 := withLazyDeadline(context.Background(), time.Minute)
		defer stop2()
		if d, ok := ctx.Deadline(); !ok || d.After(time.Now().Add(time.Minute)) {
			t.Fatalf("Deadline %v %v, want within a minute", d, ok)
		}
	})
	t.Run("released before a wait", func(t *testing.T) {
		ctx, stop := withLazyDeadline(context.Background(), time.Hour)
		stop()
		select {
		case <-ctx.Done():
		case <-time.After(10 * time.Second):
			t.Fatal("a released context never ended")
		}
		if !errors.Is(ctx.Err(), context.Canceled) {
			t.Fatalf("released: Err %v, want Canceled", ctx.Err())
		}
	})
	t.Run("released after a wait", func(t *testing.T) {
		ctx, stop := withLazyDeadline(context.Background(), time.Hour)
		done := ctx.Done()
		child, cancel := context.WithCancel(ctx)
		defer cancel()
		stop()
		<-done
		<-child.Done()
		if !errors.Is(child.Err(), context.Canceled) {
			t.Fatalf("child of a released context: Err %v", child.Err())
		}
	})
	t.Run("values", func(t *testing.T) {
		type key struct{}
		ctx, stop := withLazyDeadline(context.WithValue(context.Background(), key{}, "v"), time.Hour)
		defer stop()
		if ctx.Value(key{}) != "v" {
			t.Fatal("the parent's value is lost before a wait")
		}
		<-time.After(0)
		_ = ctx.Done()
		if ctx.Value(key{}) != "v" {
			t.Fatal("the parent's value is lost after a wait")
		}
	})
}

// withLazyDeadline is a lazyDeadline of its own, as context.WithTimeout
// returns one: the context and its release function.
func withLazyDeadline(parent context.Context, timeout time.Duration) (context.Context, func()) {
	c := &lazyDeadline{}
	c.begin(parent, timeout)
	return c, c.stop
}
