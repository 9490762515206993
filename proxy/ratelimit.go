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
	// clock feeds the buckets, so tests can move time.
	clock clock.PassiveClock

	// mu guards buckets and lastSweep.
	mu sync.Mutex
	// buckets holds one limiter per caller IP seen recently.
	buckets map[netip.Addr]*ipBucket
	// lastSweep is when idle buckets were last removed.
	lastSweep time.Time
}

// ipBucket is one caller's limiter.
type ipBucket struct {
	// limiter is the token bucket.
	limiter *rate.Limiter
	// lastSeen is the caller's latest request.
	lastSeen time.Time
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
		clock:     c,
		buckets:   map[netip.Addr]*ipBucket{},
		lastSweep: c.Now(),
	}
}

// allow takes one token from ip's bucket.
func (l *ipRateLimiter) allow(ip netip.Addr) bool {
	now := l.clock.Now()
	l.mu.Lock()
	defer l.mu.Unlock()
	if now.Sub(l.lastSweep) >= rateLimiterSweep {
		for k, b := range l.buckets {
			if now.Sub(b.lastSeen) >= rateLimiterIdle {
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
	b.lastSeen = now
	return b.limiter.AllowN(now, 1)
}
