package proxy

import (
	"net/netip"
	"sync"
	"time"

	"golang.org/x/time/rate"
	"k8s.io/utils/clock"
)

const (
	// rateLimiterIdle is how long a caller's bucket is kept after its last request.
	rateLimiterIdle = 5 * time.Minute
	// rateLimiterSweep is how often idle buckets are looked for.
	rateLimiterSweep = time.Minute
)

// ipRateLimiter is one token bucket per caller IP.
type ipRateLimiter struct {
	// limit is the sustained rate per IP.
	limit rate.Limit
	// burst is the bucket size.
	burst int

	// mu guards buckets and lastSweep.
	mu sync.Mutex
	// buckets holds one bucket per caller IP seen recently.
	buckets map[netip.Addr]*ipBucket
	// lastSweep is when idle buckets were last removed.
	lastSweep time.Time
}

// ipBucket is one caller's token bucket.
type ipBucket struct {
	// limiter is the bucket.
	limiter *rate.Limiter
	// last is the caller's latest request.
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
		limit:     rate.Limit(perSecond),
		burst:     burst,
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
		b = &ipBucket{limiter: rate.NewLimiter(l.limit, l.burst)}
		l.buckets[ip] = b
	}
	b.last = now
	l.mu.Unlock()
	return b.limiter.AllowN(now, 1)
}
