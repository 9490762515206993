package proxy

import (
	"context"
	"sync"
	"sync/atomic"
	"time"
)

// lazyDeadline bounds one request's work like context.WithTimeout, but sets
// up the timer and the link to the connection's context only when
// something waits on it (Done or Err): a request answered from the caches
// never does, and the eager version was 17 % of the bytes the credential
// route allocated (a timer, a cancel context and its registration with the
// connection's context, on every request).
type lazyDeadline struct {
	// parent is the request's own context.
	parent context.Context
	// deadline is when the work must stop.
	deadline time.Time
	// mu serialises building real.
	mu sync.Mutex
	// real is the context.WithDeadline built on first wait; nil before.
	real atomic.Pointer[deadlineCtx]
	// done is set by stop: a real context built after it starts cancelled.
	done atomic.Bool
}

// deadlineCtx is the materialised context and its cancel function.
type deadlineCtx struct {
	ctx    context.Context
	cancel context.CancelFunc
}

// begin arms a zero lazyDeadline in place to end timeout from now, or
// with parent (ServeHTTP keeps one inside the request's info, so the bound
// costs no allocation of its own); the context is c itself. Call stop when
// the request ends.
func (c *lazyDeadline) begin(parent context.Context, timeout time.Duration) {
	c.parent, c.deadline = parent, time.Now().Add(timeout)
}

// materialise builds the real deadline context once.
func (c *lazyDeadline) materialise() *deadlineCtx {
	if r := c.real.Load(); r != nil {
		return r
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if r := c.real.Load(); r != nil {
		return r
	}
	ctx, cancel := context.WithDeadline(c.parent, c.deadline)
	if c.done.Load() {
		cancel()
	}
	r := &deadlineCtx{ctx: ctx, cancel: cancel}
	c.real.Store(r)
	return r
}

// stop releases the timer, if one was set up; waiting afterwards finds the
// context cancelled, as after a context.WithTimeout's cancel.
func (c *lazyDeadline) stop() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.done.Store(true)
	if r := c.real.Load(); r != nil {
		r.cancel()
	}
}

// Deadline is the earlier of this bound and the parent's.
func (c *lazyDeadline) Deadline() (time.Time, bool) {
	if d, ok := c.parent.Deadline(); ok && d.Before(c.deadline) {
		return d, true
	}
	return c.deadline, true
}

func (c *lazyDeadline) Done() <-chan struct{} { return c.materialise().ctx.Done() }

func (c *lazyDeadline) Err() error { return c.materialise().ctx.Err() }

// Value answers from the real context once there is one, so a context
// derived from this one links to its cancellation directly.
func (c *lazyDeadline) Value(key any) any {
	if r := c.real.Load(); r != nil {
		return r.ctx.Value(key)
	}
	return c.parent.Value(key)
}
