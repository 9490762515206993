// Package faults is the fault injector the fake AWS endpoints share: knobs
// that make a fake slow, fail a share or the next few of its requests, throttle
// them, or drop them as an unreachable endpoint would. The injector decides
// and carries out the fault; each fake supplies only its service's own error
// answers (status, body and headers), so the bodies stay exactly AWS's.
package faults

import (
	"context"
	"math/rand/v2"
	"net/http"
	"sync"
	"time"

	"k8s.io/utils/clock"
)

// Knobs are the setters tests turn. A fake embeds them so its callers keep
// calling fake.SetLatency(...) and friends.
type Knobs interface {
	// SetLatency delays every answer by d; the request's context still
	// cancels the wait.
	SetLatency(d time.Duration)
	// SetFailurePercent answers that share (0..100) of requests with the
	// service's internal error.
	SetFailurePercent(p int)
	// FailNext answers the next n requests with the service's internal error.
	FailNext(n int)
	// SetThrottlePercent answers that share (0..100) of requests with the
	// service's throttling error.
	SetThrottlePercent(p int)
	// ThrottleNext answers the next n requests with the service's throttling error.
	ThrottleNext(n int)
	// SetOutage drops every connection without an answer while on, as an
	// unreachable endpoint would.
	SetOutage(on bool)
}

var _ Knobs = (*Injector)(nil)

// Fault is what the knobs decide for one request.
type Fault int

const (
	// None lets the request through (after the latency).
	None Fault = iota
	// Outage drops the connection without an answer.
	Outage
	// Fail answers with the service's internal error.
	Fail
	// Throttle answers with the service's throttling error.
	Throttle
)

// String names the fault for test messages.
func (f Fault) String() string {
	switch f {
	case None:
		return "none"
	case Outage:
		return "outage"
	case Fail:
		return "fail"
	case Throttle:
		return "throttle"
	}
	return "unknown"
}

// Counts are how many requests each fault took, counted when decided.
type Counts struct {
	// Failed were answered with the internal error.
	Failed int
	// Throttled were answered with the throttling error.
	Throttled int
	// Dropped were closed without an answer.
	Dropped int
}

// Options configure an Injector.
type Options struct {
	// Clock times the latency; the real clock when nil (SDK clients time
	// out in real time, so the fakes keep it real).
	Clock clock.Clock
	// Seed orders the failures and throttles within each hundred requests;
	// the same seed and the same request order give the same decisions.
	Seed uint64
	// FailAnswer writes the service's internal error; a bare 500 when nil.
	FailAnswer func(http.ResponseWriter)
	// ThrottleAnswer writes the service's throttling error; a bare 429 when nil.
	ThrottleAnswer func(http.ResponseWriter)
}

// Injector holds the knobs and applies them to requests. Its methods are
// safe for concurrent use.
type Injector struct {
	// clock times the latency.
	clock clock.Clock
	// failAnswer writes the internal error answer.
	failAnswer func(http.ResponseWriter)
	// throttleAnswer writes the throttling answer.
	throttleAnswer func(http.ResponseWriter)

	// mu guards everything below.
	mu sync.Mutex
	// rng shuffles the share decks; seeded, so decisions repeat.
	rng *rand.Rand
	// latency delays every answer but a dropped one.
	latency time.Duration
	// fail picks the requests that fail.
	fail trigger
	// throttle picks the requests that are throttled.
	throttle trigger
	// outage drops every request while true.
	outage bool
	// counts are the decisions so far.
	counts Counts
}

// New builds an Injector with every knob off.
func New(opts Options) *Injector {
	in := &Injector{
		clock:          opts.Clock,
		failAnswer:     opts.FailAnswer,
		throttleAnswer: opts.ThrottleAnswer,
		rng:            rand.New(rand.NewPCG(opts.Seed, opts.Seed)),
	}
	if in.clock == nil {
		in.clock = clock.RealClock{}
	}
	if in.failAnswer == nil {
		in.failAnswer = func(w http.ResponseWriter) { w.WriteHeader(http.StatusInternalServerError) }
	}
	if in.throttleAnswer == nil {
		in.throttleAnswer = func(w http.ResponseWriter) { w.WriteHeader(http.StatusTooManyRequests) }
	}
	return in
}

// SetLatency implements Knobs.
func (in *Injector) SetLatency(d time.Duration) { in.locked(func() { in.latency = d }) }

// SetFailurePercent implements Knobs.
func (in *Injector) SetFailurePercent(p int) { in.locked(func() { in.fail.share.set(p) }) }

// FailNext implements Knobs.
func (in *Injector) FailNext(n int) { in.locked(func() { in.fail.next = n }) }

// SetThrottlePercent implements Knobs.
func (in *Injector) SetThrottlePercent(p int) { in.locked(func() { in.throttle.share.set(p) }) }

// ThrottleNext implements Knobs.
func (in *Injector) ThrottleNext(n int) { in.locked(func() { in.throttle.next = n }) }

// SetOutage implements Knobs.
func (in *Injector) SetOutage(on bool) { in.locked(func() { in.outage = on }) }

// locked runs set under the injector's lock.
func (in *Injector) locked(set func()) {
	in.mu.Lock()
	defer in.mu.Unlock()
	set()
}

// Counts is a snapshot of the decisions so far.
func (in *Injector) Counts() Counts {
	in.mu.Lock()
	defer in.mu.Unlock()
	return in.counts
}

// Intercept applies the knobs to one request: it drops the connection in an
// outage, waits out the latency, and writes the fault's answer. It reports
// whether the request is finished — dropped, answered, or abandoned by its
// client during the wait; false means the fake answers it as usual.
func (in *Injector) Intercept(w http.ResponseWriter, r *http.Request) bool {
	f, latency := in.decide()
	if f == Outage {
		dropConnection(w)
		return true
	}
	if !in.wait(r.Context(), latency) {
		return true
	}
	switch f {
	case Fail:
		in.failAnswer(w)
		return true
	case Throttle:
		in.throttleAnswer(w)
		return true
	}
	return false
}

// decide draws the fault for one request and counts it. An outage wins and
// consumes nothing; then failures (the next n, then the share) before
// throttles (likewise), as both fakes always did.
func (in *Injector) decide() (Fault, time.Duration) {
	in.mu.Lock()
	defer in.mu.Unlock()
	switch {
	case in.outage:
		in.counts.Dropped++
		return Outage, 0
	case in.fail.fire(in.rng):
		in.counts.Failed++
		return Fail, in.latency
	case in.throttle.fire(in.rng):
		in.counts.Throttled++
		return Throttle, in.latency
	}
	return None, in.latency
}

// wait sleeps d on the injector's clock; false when ctx ends first.
func (in *Injector) wait(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return true
	}
	t := in.clock.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C():
		return true
	case <-ctx.Done():
		return false
	}
}

// dropConnection closes the connection without an answer; a writer that
// cannot hand over its connection gets a bare 503 instead.
func dropConnection(w http.ResponseWriter) {
	hj, ok := w.(http.Hijacker)
	if !ok {
		w.WriteHeader(http.StatusServiceUnavailable)
		return
	}
	if conn, _, err := hj.Hijack(); err == nil {
		_ = conn.Close()
	}
}

// trigger is one fault's knobs: the next n requests, then a share of the rest.
type trigger struct {
	// next is how many next requests take the fault.
	next int
	// share picks a share of the requests after those.
	share share
}

// fire reports whether this request takes the fault, using up one of next
// before drawing from the share.
func (t *trigger) fire(rng *rand.Rand) bool {
	if t.next > 0 {
		t.next--
		return true
	}
	return t.share.draw(rng)
}

// deckSize is how many draws one shuffled deck holds: a percent is exact
// over every deckSize draws since the knob was set.
const deckSize = 100

// share draws "yes" for exactly percent of every deckSize draws, in an order
// a seeded generator shuffles, so the share holds over any run of calls
// without lock-step patterns (a client that always makes two calls is not
// always failed on its second).
type share struct {
	// percent is the share in 0..100.
	percent int
	// deck is the current hundred decisions.
	deck [deckSize]bool
	// next is the deck position of the next draw; deckSize means reshuffle.
	next int
}

// set changes the share and starts a fresh deck.
func (s *share) set(p int) {
	s.percent = min(max(p, 0), deckSize)
	s.next = deckSize
}

// draw takes the next decision; 0 and 100 percent need no deck.
func (s *share) draw(rng *rand.Rand) bool {
	switch s.percent {
	case 0:
		return false
	case deckSize:
		return true
	}
	if s.next >= deckSize {
		for i := range s.deck {
			s.deck[i] = i < s.percent
		}
		rng.Shuffle(deckSize, func(i, j int) { s.deck[i], s.deck[j] = s.deck[j], s.deck[i] })
		s.next = 0
	}
	yes := s.deck[s.next]
	s.next++
	return yes
}
