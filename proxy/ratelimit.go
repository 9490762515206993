package proxy

import (
	"net/netip"
	"sync"
	"time"

	"k8s.io/utils/clock"
)

const (
	// rateLimiterIdle is how long a caller's bucket is kept after its last request.
	rateLimiterIdle = 5 * time.Minute
	// rateLimiterSweep is how often idle buckets are looked for.
	rateLimiterSweep = time.Minute
)

// ipRateLimiter is one token bucket per caller IP. The bucket is kept
// inline (a count and a time under the limiter's one lock) rather than as
// a rate.Limiter with a lock of its own: it is on every request's path.
type ipRateLimiter struct {
	// limit is the sustained rate per IP, in tokens per second.
	limit float64
	// burst is the bucket size.
	burst float64

	// mu guards buckets and lastSweep.
	mu sync.Mutex
	// buckets holds one bucket per caller IP seen recently.
	buckets map[netip.Addr]*ipBucket
	// lastSweep is when idle buckets were last removed.
	lastSweep time.Time
}

// ipBucket is one caller's token bucket.
type ipBucket struct {
	// tokens left at last; a request takes one.
	tokens float64
	// last is the caller's latest request, when tokens was refilled.
	last time.Time
}

func newIPRateLimiter(perSecond float64, burst int, c clock.PassiveClock) *ipRateLimiter {
	if burst < 1 {
		burst = int(perSecond)
		if burst < 1 {
			burst = 1
		}
	}
	return &ipRateLimiter{
		limit:     perSecond,
		burst:     float64(burst),
		buckets:   map[netip.Addr]*ipBucket{},
		lastSweep: c.Now(),
	}
}

// allow takes one token from ip's bucket at now (the request's start). A
// new caller starts with a full bucket; tokens come back at limit per
// second up to burst.
func (l *ipRateLimiter) allow(ip netip.Addr, now time.Time) bool {
	l.mu.Lock()
	if now.Sub(l.lastSweep) >= rateLimiterSweep {
		for k, b := range l.buckets {
			if now.Sub(b.last) >= rateLimiterIdle {
				delete(l.buckets, k)
			}
		}
		l.lastSweep = now
	}
	b := l.buckets[ip]
	if b == nil {
		b = &ipBucket{tokens: l.burst, last: now}
		l.buckets[ip] = b
	}
	if elapsed := now.Sub(b.last); elapsed > 0 {
		b.tokens = min(l.burst, b.tokens+elapsed.Seconds()*l.limit)
		b.last = now
	}
	ok := b.tokens >= 1
	if ok {
		b.tokens--
	}
	l.mu.Unlock()
	return ok
}
