package credentials

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/maphash"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/sirupsen/logrus"
	"golang.org/x/time/rate"
	"k8s.io/utils/clock"
)

// Defaults of CacheOptions.
const (
	// DefaultMinTTL: credentials with less left are never handed out
	// (--credential-min-ttl): SDKMinTTL, what the SDKs' refresh logic needs.
	DefaultMinTTL = SDKMinTTL
	// DefaultRefreshBefore: IMDS promises new credentials at least 5 minutes
	// before expiry, so refreshes happen no later than that.
	DefaultRefreshBefore = 5 * time.Minute
	// DefaultRefreshAtFraction: refresh no later than this share of the
	// lifetime, which matters for short sessions.
	DefaultRefreshAtFraction = 0.8
	// DefaultRefreshLead: a refresh starts at least this long before the
	// cached credentials stop being served, so a slow or retried upstream
	// call still ends before a pod would have to wait for one.
	DefaultRefreshLead = time.Minute
	// DefaultRefreshJitter: refreshes move earlier by up to this share of
	// the time to the refresh, so pods started together do not refresh together.
	DefaultRefreshJitter = 0.1
	// DefaultEvictAfter: an entry no pod uses is dropped this long after its
	// last use.
	DefaultEvictAfter = 5 * time.Minute
	// DefaultErrorBackoffMin and DefaultErrorBackoffMax bound how long an
	// error is remembered (doubling per consecutive failure).
	DefaultErrorBackoffMin = time.Second
	DefaultErrorBackoffMax = 30 * time.Second
	// DefaultUpstreamQPS and DefaultUpstreamBurst bound upstream calls (--upstream-qps, --upstream-burst).
	DefaultUpstreamQPS   = 10
	DefaultUpstreamBurst = 50
	// DefaultFetchTimeout bounds one upstream call, whoever waits for it.
	DefaultFetchTimeout = 30 * time.Second

	// idleWakeInterval is the longest the refresher sleeps with nothing scheduled.
	idleWakeInterval = time.Minute
)

// CacheOptions configure a CredentialCache. Zero values take the defaults.
type CacheOptions struct {
	// Source fetches credentials on a miss or refresh. Required.
	Source Source
	// Clock drives every timing decision; the real clock if nil.
	Clock clock.Clock
	// Registerer receives the cache's metrics; a private registry if nil.
	Registerer prometheus.Registerer
	// Logger receives refresh failures and evictions; never secrets.
	Logger logrus.FieldLogger
	// MinTTL is the least validity credentials must have left to be served.
	MinTTL time.Duration
	// RefreshBefore is how long before expiry a refresh happens at the latest.
	RefreshBefore time.Duration
	// RefreshAtFraction (0..1) is the share of the lifetime after which a
	// refresh happens at the latest.
	RefreshAtFraction float64
	// RefreshJitter (0..1) moves refreshes earlier by up to that share; a
	// negative value turns jitter off.
	RefreshJitter float64
	// EvictAfter is how long an entry no pod uses stays after its last use.
	EvictAfter time.Duration
	// ErrorBackoffMin and ErrorBackoffMax bound the negative cache.
	ErrorBackoffMin time.Duration
	ErrorBackoffMax time.Duration
	// QPS and Burst form the token bucket for upstream calls; QPS < 0 means
	// no limit.
	QPS   float64
	Burst int
	// FetchTimeout bounds one upstream call.
	FetchTimeout time.Duration
}

// CredentialCache serves credentials from memory and calls its Source only
// when needed: one call per key however many wait (single flight), ahead of
// expiry for keys tracked pods use, and with backoff after errors. It is a
// Source itself, so it can wrap or be wrapped.
type CredentialCache struct {
	// source is the upstream.
	source Source
	// sourceName labels metrics and errors.
	sourceName string
	// clock drives every timing decision.
	clock clock.Clock
	// log receives refresh failures and evictions.
	log logrus.FieldLogger
	// minTTL, refreshBefore, refreshAtFraction, refreshJitter, evictAfter,
	// backoffMin, backoffMax and fetchTimeout are the resolved options.
	minTTL            time.Duration
	refreshBefore     time.Duration
	refreshAtFraction float64
	refreshJitter     float64
	evictAfter        time.Duration
	backoffMin        time.Duration
	backoffMax        time.Duration
	fetchTimeout      time.Duration
	// limiter is the token bucket for upstream calls, fed by clock's time.
	limiter *rate.Limiter
	// metrics are the cache's Prometheus collectors.
	metrics *cacheMetrics
	// wake tells the refresher that the schedule changed.
	wake chan struct{}
	// flightCtx parents every upstream call; cancelled when Run ends.
	flightCtx context.Context
	// stopFlights cancels flightCtx.
	stopFlights context.CancelFunc
	// flights counts running upstream calls, so Run can wait for them.
	flights sync.WaitGroup

	// seed keys the request hashes of the index.
	seed maphash.Seed

	// mu guards entries, count, pods and every entry's fields except lastUsed.
	mu sync.RWMutex
	// entries maps a request's hash to the entries with that hash (almost
	// always one), so a hit builds no key string. Entries are found by
	// comparing the whole Request, which is what Request.Key stands for.
	// One cache wraps one Source, so the source is part of every key.
	entries map[uint64][]*entry
	// count is the number of entries.
	count int
	// pods maps a tracked pod's UID to the entry it uses.
	pods map[string]*entry
}

// entry is the cache's state for one key.
type entry struct {
	// req is what the entry is for.
	req Request
	// hash is req's hash in the index.
	hash uint64
	// creds are the last credentials fetched; valid when hasCreds.
	creds Credentials
	// hasCreds is true once a fetch succeeded.
	hasCreds bool
	// servableUntil is creds.Expiration minus the min TTL.
	servableUntil time.Time
	// refreshAt is when a tracked entry is refreshed.
	refreshAt time.Time
	// err is the last upstream error, nil after a success.
	err error
	// retryAt is when the next upstream call may be made after a failure.
	retryAt time.Time
	// bgRetryAt is when the refresher retries a tracked entry's failure: a
	// little before retryAt, each entry by its own share (refreshJitter of
	// the backoff), so pods refused together (a throttled account) do not
	// all call again in the same instant. Set with retryAt.
	bgRetryAt time.Time
	// failures counts consecutive failures, for the backoff.
	failures int
	// users is how many tracked pods use the entry.
	users int
	// lastUsed is the clock's UnixNano of the last Get, Track or Untrack.
	lastUsed atomic.Int64
	// flight is the upstream call in progress, nil when none.
	flight *flight
}

// flight is one upstream call that any number of callers wait for.
type flight struct {
	// done is closed when creds and err are set.
	done chan struct{}
	// creds is the result on success.
	creds Credentials
	// err is the result on failure.
	err error
	// waitingForToken is true while the call waits for the rate limiter.
	waitingForToken atomic.Bool
}

// flightKind says why an upstream call was made, for metrics and logs.
type flightKind int

const (
	flightGet flightKind = iota
	flightPrefetch
	flightRefresh
)

// errLocalThrottle marks errors of the local rate limiter: no call was
// made, so they are not remembered as upstream errors.
var errLocalThrottle = errors.New("upstream call rate limit reached")

var _ Source = (*CredentialCache)(nil)

// NewCredentialCache builds a cache around opts.Source and registers its
// metrics. Call Run to refresh and evict in the background.
func NewCredentialCache(opts CacheOptions) (*CredentialCache, error) {
	if opts.Source == nil {
		return nil, errors.New("credentials: CacheOptions.Source is nil; pass the STS or Roles Anywhere source")
	}
	c := &CredentialCache{
		source:            opts.Source,
		sourceName:        opts.Source.Name(),
		clock:             opts.Clock,
		log:               opts.Logger,
		minTTL:            orDuration(opts.MinTTL, DefaultMinTTL),
		refreshBefore:     orDuration(opts.RefreshBefore, DefaultRefreshBefore),
		refreshAtFraction: opts.RefreshAtFraction,
		refreshJitter:     opts.RefreshJitter,
		evictAfter:        orDuration(opts.EvictAfter, DefaultEvictAfter),
		backoffMin:        orDuration(opts.ErrorBackoffMin, DefaultErrorBackoffMin),
		backoffMax:        orDuration(opts.ErrorBackoffMax, DefaultErrorBackoffMax),
		fetchTimeout:      orDuration(opts.FetchTimeout, DefaultFetchTimeout),
		wake:              make(chan struct{}, 1),
		seed:              maphash.MakeSeed(),
		entries:           map[uint64][]*entry{},
		pods:              map[string]*entry{},
	}
	if c.clock == nil {
		c.clock = clock.RealClock{}
	}
	if c.log == nil {
		l := logrus.New()
		l.Out = discard{}
		c.log = l
	}
	c.log = c.log.WithField("source", c.sourceName)
	if c.refreshAtFraction <= 0 || c.refreshAtFraction > 1 {
		c.refreshAtFraction = DefaultRefreshAtFraction
	}
	switch {
	case c.refreshJitter == 0:
		c.refreshJitter = DefaultRefreshJitter
	case c.refreshJitter < 0:
		c.refreshJitter = 0
	case c.refreshJitter > 1:
		c.refreshJitter = 1
	}
	if c.backoffMax < c.backoffMin {
		c.backoffMax = c.backoffMin
	}
	qps, burst := opts.QPS, opts.Burst
	if qps == 0 {
		qps = DefaultUpstreamQPS
	}
	if burst <= 0 {
		burst = DefaultUpstreamBurst
	}
	if qps < 0 {
		c.limiter = rate.NewLimiter(rate.Inf, burst)
	} else {
		c.limiter = rate.NewLimiter(rate.Limit(qps), burst)
	}
	reg := opts.Registerer
	if reg == nil {
		reg = prometheus.NewRegistry()
	}
	m, err := newCacheMetrics(reg, c.sourceName)
	if err != nil {
		return nil, err
	}
	c.metrics = m
	if err := reg.Register(newHeldCollector(c)); err != nil {
		return nil, fmt.Errorf("credentials: registering the held-credentials metrics for source %q failed: %w; use one cache per source and registry", c.sourceName, err)
	}
	c.flightCtx, c.stopFlights = context.WithCancel(context.Background())
	return c, nil
}

func orDuration(d, def time.Duration) time.Duration {
	if d <= 0 {
		return def
	}
	return d
}

// Name is the wrapped source's name.
func (c *CredentialCache) Name() string { return c.sourceName }

// Fetch is Get, so the cache is a Source.
func (c *CredentialCache) Fetch(ctx context.Context, req Request) (Credentials, error) {
	return c.Get(ctx, req)
}

// Get returns credentials for req with at least the min TTL left: from
// memory when it can, else from the one upstream call for req's key,
// waiting at most until ctx is done. A recent upstream error for the key
// is returned again without a call until its backoff has passed.
func (c *CredentialCache) Get(ctx context.Context, req Request) (Credentials, error) {
	h := c.hash(req)
	now := c.clock.Now()
	c.mu.RLock()
	if e := c.findLocked(h, req); e != nil && e.hasCreds && now.Before(e.servableUntil) {
		creds := e.creds
		e.lastUsed.Store(now.UnixNano())
		c.mu.RUnlock()
		c.metrics.hits.Inc()
		return creds, nil
	}
	c.mu.RUnlock()
	return c.getSlow(ctx, h, req)
}

// getSlow is Get's miss path.
func (c *CredentialCache) getSlow(ctx context.Context, h uint64, req Request) (Credentials, error) {
	c.mu.Lock()
	now := c.clock.Now()
	e := c.entryLocked(h, req)
	e.lastUsed.Store(now.UnixNano())
	if e.hasCreds && now.Before(e.servableUntil) {
		// Another caller's fetch finished in between.
		creds := e.creds
		c.mu.Unlock()
		c.metrics.hits.Inc()
		return creds, nil
	}
	c.metrics.misses.Inc()
	if e.flight == nil {
		if e.err != nil && now.Before(e.retryAt) {
			err := e.err
			retryAt := e.retryAt
			c.mu.Unlock()
			return Credentials{}, fmt.Errorf("%w (remembered; next attempt after %s)", err, retryAt.UTC().Format(time.RFC3339))
		}
		c.startFlightLocked(e, flightGet)
	}
	f := e.flight
	c.mu.Unlock()

	select {
	case <-f.done:
		return f.creds, f.err
	case <-ctx.Done():
		if f.waitingForToken.Load() {
			return Credentials{}, &Error{Kind: KindThrottled, Source: c.sourceName, RoleARN: req.RoleARN,
				Message: "the upstream call rate limit (--upstream-qps, --upstream-burst) let no call through before the request's deadline", Err: ctx.Err()}
		}
		return Credentials{}, &Error{Kind: KindUnavailable, Source: c.sourceName, RoleARN: req.RoleARN,
			Message: "no answer from upstream before the request's deadline; the call goes on and its result is cached", Err: ctx.Err()}
	}
}

// hash is req's index hash. Tags, the target's external ID and session
// name and the policy are left out to keep hits cheap: they follow from
// the session name and target (same pod), and sameRequest compares them.
func (c *CredentialCache) hash(req Request) uint64 {
	var h maphash.Hash
	h.SetSeed(c.seed)
	hashField(&h, req.RoleARN)
	hashField(&h, req.ExternalID)
	hashField(&h, req.SessionName)
	hashField(&h, req.TargetRoleARN)
	return h.Sum64()
}

func hashField(h *maphash.Hash, s string) {
	var n [8]byte
	binary.LittleEndian.PutUint64(n[:], uint64(len(s)))
	_, _ = h.Write(n[:])
	_, _ = h.WriteString(s)
}

// sameRequest is Request.Key equality without building keys.
func sameRequest(a, b Request) bool {
	if a.scalarFields() != b.scalarFields() || len(a.Tags) != len(b.Tags) {
		return false
	}
	for i := range a.Tags {
		if a.Tags[i] != b.Tags[i] {
			return false
		}
	}
	return true
}

// findLocked returns the entry for req (hash h), nil when none.
func (c *CredentialCache) findLocked(h uint64, req Request) *entry {
	for _, e := range c.entries[h] {
		if sameRequest(e.req, req) {
			return e
		}
	}
	return nil
}

// entryLocked returns the entry for req (hash h), creating it.
func (c *CredentialCache) entryLocked(h uint64, req Request) *entry {
	e := c.findLocked(h, req)
	if e == nil {
		// Own copy of the tags: the caller may reuse its slice.
		req.Tags = append([]Tag(nil), req.Tags...)
		e = &entry{req: req, hash: h}
		c.entries[h] = append(c.entries[h], e)
		c.count++
		c.metrics.entries.Set(float64(c.count))
	}
	return e
}

// removeLocked drops e from the index.
func (c *CredentialCache) removeLocked(e *entry) {
	bucket := c.entries[e.hash]
	for i, o := range bucket {
		if o == e {
			bucket = append(bucket[:i], bucket[i+1:]...)
			break
		}
	}
	if len(bucket) == 0 {
		delete(c.entries, e.hash)
	} else {
		c.entries[e.hash] = bucket
	}
	c.count--
	c.metrics.entries.Set(float64(c.count))
}

// Track records that the pod uses req now (replacing what it used before)
// and prefetches req's credentials when none are cached, so the pod's first
// Get is a hit. Tracked keys are refreshed ahead of expiry.
func (c *CredentialCache) Track(podUID string, req Request) {
	h := c.hash(req)
	c.mu.Lock()
	now := c.clock.Now()
	if old, ok := c.pods[podUID]; ok {
		if sameRequest(old.req, req) {
			c.mu.Unlock()
			return
		}
		releaseLocked(old, now)
	}
	e := c.entryLocked(h, req)
	c.pods[podUID] = e
	e.users++
	e.lastUsed.Store(now.UnixNano())
	servable := e.hasCreds && now.Before(e.servableUntil)
	if !servable && e.flight == nil && !(e.err != nil && now.Before(e.retryAt)) {
		c.startFlightLocked(e, flightPrefetch)
	}
	c.mu.Unlock()
	c.signal()
}

// EntryState is what the cache holds for one tracked pod, without the
// credentials themselves: for /debug/store and `kube2ra explain`.
type EntryState struct {
	// RoleARN is the role the pod's entry is for.
	RoleARN string `json:"roleArn"`
	// Cached is true when credentials servable now are held (a Get is a hit).
	Cached bool `json:"cached"`
	// Expiration is when the held credentials expire; zero when none are held.
	Expiration time.Time `json:"expiration,omitzero"`
	// ServableUntil is when the held credentials stop being served (the min TTL).
	ServableUntil time.Time `json:"servableUntil,omitzero"`
	// RefreshAt is when they are refreshed in the background.
	RefreshAt time.Time `json:"refreshAt,omitzero"`
	// Fetching is true while an upstream call for the entry runs.
	Fetching bool `json:"fetching,omitempty"`
	// LastError is the last upstream error, "" after a success.
	LastError string `json:"lastError,omitempty"`
}

// TrackedEntry is the state of the entry podUID is tracked under (see
// Track); false when the pod is not tracked.
func (c *CredentialCache) TrackedEntry(podUID string) (EntryState, bool) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	e, ok := c.pods[podUID]
	if !ok {
		return EntryState{}, false
	}
	st := EntryState{RoleARN: e.req.RoleARN, Fetching: e.flight != nil}
	if e.hasCreds {
		st.Cached = c.clock.Now().Before(e.servableUntil)
		st.Expiration, st.ServableUntil, st.RefreshAt = e.creds.Expiration, e.servableUntil, e.refreshAt
	}
	if e.err != nil {
		st.LastError = e.err.Error()
	}
	return st, true
}

// Fetching is how many tracked pods' entries wait for an upstream call
// (a prefetch or a refresh): a successor agent takes traffic over when it is
// 0, so the first request after an upgrade is a hit.
func (c *CredentialCache) Fetching() int {
	c.mu.RLock()
	defer c.mu.RUnlock()
	n := 0
	for _, e := range c.pods {
		if e.flight != nil {
			n++
		}
	}
	return n
}

// Untrack records that the pod is gone; its key is evicted after the grace
// period unless another pod uses it or it is used again.
func (c *CredentialCache) Untrack(podUID string) {
	c.mu.Lock()
	e, ok := c.pods[podUID]
	if ok {
		delete(c.pods, podUID)
		releaseLocked(e, c.clock.Now())
	}
	c.mu.Unlock()
	if ok {
		c.signal()
	}
}

// releaseLocked records that one pod stopped using e. A used entry is never
// evicted, so e is still in the index.
func releaseLocked(e *entry, now time.Time) {
	e.users--
	e.lastUsed.Store(now.UnixNano())
}

// signal wakes the refresher without blocking.
func (c *CredentialCache) signal() {
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

// startFlightLocked starts the one upstream call for e.
func (c *CredentialCache) startFlightLocked(e *entry, kind flightKind) {
	f := &flight{done: make(chan struct{})}
	e.flight = f
	if kind == flightPrefetch {
		c.metrics.prefetches.Inc()
	}
	c.flights.Add(1)
	go c.runFlight(e, f, kind)
}

// runFlight makes the upstream call detached from any caller (its result
// serves everyone) and stores the result.
func (c *CredentialCache) runFlight(e *entry, f *flight, kind flightKind) {
	defer c.flights.Done()
	ctx, cancel := context.WithTimeout(c.flightCtx, c.fetchTimeout)
	defer cancel()
	creds, err := c.fetch(ctx, e.req, f)

	c.mu.Lock()
	now := c.clock.Now()
	switch {
	case err == nil:
		e.creds, e.hasCreds = creds, true
		e.servableUntil = creds.Expiration.Add(-c.minTTL)
		e.refreshAt = c.refreshTime(now, creds.Expiration)
		e.err, e.failures, e.retryAt, e.bgRetryAt = nil, 0, time.Time{}, time.Time{}
	case errors.Is(err, errLocalThrottle):
		// No call was made: nothing to remember, but the refresher waits a little.
		e.retryAt = now.Add(c.backoffMin)
		e.bgRetryAt = e.retryAt
	default:
		e.failures++
		e.err = err
		b := c.backoff(e.failures)
		e.retryAt = now.Add(b)
		e.bgRetryAt = e.retryAt.Add(-time.Duration(rand.Float64() * c.refreshJitter * float64(b)))
		if kind == flightRefresh {
			c.metrics.refreshFailures.Inc()
		}
	}
	e.flight = nil
	f.creds, f.err = creds, err
	close(f.done)
	stillServing := e.hasCreds && now.Before(e.servableUntil)
	failures := e.failures
	retryAt := e.retryAt
	c.mu.Unlock()
	c.signal()

	if err != nil {
		fields := logrus.Fields{"role": e.req.RoleARN, "session": e.req.SessionName, "kind": KindOf(err).String(), "failures": failures, "retryAt": retryAt, "error": err}
		if stillServing {
			c.log.WithFields(fields).Warn("refreshing credentials failed; serving the cached ones until they are about to expire")
		} else {
			c.log.WithFields(fields).Warn("getting credentials failed")
		}
	}
}

// fetch takes a token from the bucket and calls the source once.
func (c *CredentialCache) fetch(ctx context.Context, req Request, f *flight) (Credentials, error) {
	if err := c.waitForToken(ctx, f); err != nil {
		return Credentials{}, &Error{Kind: KindThrottled, Source: c.sourceName, RoleARN: req.RoleARN,
			Message: "the upstream call rate limit (--upstream-qps, --upstream-burst) let no call through in time", Err: err}
	}
	start := c.clock.Now()
	creds, err := c.source.Fetch(ctx, req)
	c.metrics.duration.Observe(c.clock.Since(start).Seconds())
	if err == nil && !creds.Expiration.After(c.clock.Now().Add(c.minTTL)) {
		err = &Error{Kind: KindInvalid, Source: c.sourceName, RoleARN: req.RoleARN,
			Message: fmt.Sprintf("the credentials issued expire at %s, sooner than the minimum TTL %s; raise the session duration or lower --credential-min-ttl", creds.Expiration.UTC().Format(time.RFC3339), c.minTTL)}
	}
	if err != nil {
		var e *Error
		if !errors.As(err, &e) {
			err = &Error{Kind: KindUnavailable, Source: c.sourceName, RoleARN: req.RoleARN, Err: err}
		}
		c.metrics.upstream.WithLabelValues(KindOf(err).String()).Inc()
		return Credentials{}, err
	}
	c.metrics.upstreamSuccess.Inc()
	return creds, nil
}

// waitForToken waits, on the cache's clock, for the bucket to allow a call,
// failing at once when that would take longer than ctx allows.
func (c *CredentialCache) waitForToken(ctx context.Context, f *flight) error {
	now := c.clock.Now()
	r := c.limiter.ReserveN(now, 1)
	if !r.OK() {
		return errLocalThrottle
	}
	d := r.DelayFrom(now)
	if d <= 0 {
		return nil
	}
	if dl, ok := ctx.Deadline(); ok && time.Until(dl) < d {
		r.CancelAt(now)
		return errLocalThrottle
	}
	t := c.clock.NewTimer(d)
	defer t.Stop()
	f.waitingForToken.Store(true)
	defer f.waitingForToken.Store(false)
	select {
	case <-t.C():
		return nil
	case <-ctx.Done():
		r.CancelAt(c.clock.Now())
		return fmt.Errorf("%w: %w", errLocalThrottle, ctx.Err())
	}
}

// refreshTime is when credentials fetched at now and expiring at exp are
// refreshed: at the latest RefreshBefore before expiry and after
// RefreshAtFraction of the lifetime, and a lead (DefaultRefreshLead, at
// most a quarter of the span) before they stop being served, moved earlier
// by jitter.
func (c *CredentialCache) refreshTime(now, exp time.Time) time.Time {
	life := exp.Sub(now)
	at := now.Add(time.Duration(float64(life) * c.refreshAtFraction))
	if latest := exp.Add(-c.refreshBefore); latest.Before(at) && latest.After(now) {
		at = latest
	}
	servable := exp.Add(-c.minTTL)
	lead := min(DefaultRefreshLead, servable.Sub(now)/4)
	if latest := servable.Add(-max(lead, 0)); latest.Before(at) {
		at = latest
	}
	if span := at.Sub(now); span > 0 && c.refreshJitter > 0 {
		at = at.Add(-time.Duration(rand.Float64() * c.refreshJitter * float64(span)))
	}
	return at
}

// backoff is how long the n-th consecutive failure is remembered.
func (c *CredentialCache) backoff(n int) time.Duration {
	d := c.backoffMin
	for i := 1; i < n && d < c.backoffMax; i++ {
		d *= 2
	}
	return min(d, c.backoffMax)
}

// Run refreshes tracked keys ahead of expiry, retries their failed fetches
// after backoff and evicts keys no pod uses, until ctx is done. Then it
// cancels upstream calls in progress and waits for them; the cache answers
// only from memory (and with errors on misses) after Run returns.
func (c *CredentialCache) Run(ctx context.Context) {
	defer func() {
		c.stopFlights()
		c.flights.Wait()
	}()
	for {
		due := c.tick()
		t := c.clock.NewTimer(due.Sub(c.clock.Now()))
		// The clock may have passed due between tick and NewTimer (a test
		// stepping a fake clock); the timer would then fire too late.
		if !c.clock.Now().Before(due) {
			t.Stop()
			continue
		}
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C():
		case <-c.wake:
			t.Stop()
		}
	}
}

// tick does what is due and returns when something next is.
func (c *CredentialCache) tick() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	now := c.clock.Now()
	next := now.Add(idleWakeInterval)
	soonest := func(t time.Time) {
		if t.Before(next) {
			next = t
		}
	}
	var evict []*entry
	for _, bucket := range c.entries {
		for _, e := range bucket {
			if due, ok := c.dueLocked(e, now, &evict); ok {
				soonest(due)
			}
		}
	}
	for _, e := range evict {
		c.removeLocked(e)
		c.log.WithFields(logrus.Fields{"role": e.req.RoleARN, "session": e.req.SessionName}).Debug("evicted credentials no pod uses")
	}
	return next
}

// dueLocked does what is due for e: evicts it (appending to evict) or
// starts its refresh. It returns when e next needs attention, false when
// only an event (a flight ending, a Get, a Track) will change that.
func (c *CredentialCache) dueLocked(e *entry, now time.Time, evict *[]*entry) (time.Time, bool) {
	if e.flight != nil {
		return time.Time{}, false // its end wakes the refresher
	}
	if e.users <= 0 {
		evictAt := time.Unix(0, e.lastUsed.Load()).Add(c.evictAfter)
		if !now.Before(evictAt) {
			*evict = append(*evict, e)
			return time.Time{}, false
		}
		return evictAt, true
	}
	due, ok := e.nextAttempt(now)
	if !ok {
		return time.Time{}, false
	}
	if !now.Before(due) {
		kind := flightRefresh
		if !e.hasCreds {
			kind = flightPrefetch
		}
		c.startFlightLocked(e, kind)
		return time.Time{}, false // its end wakes the refresher
	}
	return due, true
}

// nextAttempt is when the refresher should call upstream for a tracked
// entry; false when it should not: the pod is denied or its request is
// invalid and nothing servable is held (only a Get retries those, after
// backoff). Credentials still servable are refreshed after a denial too,
// in case it is undone before they run out; once they have, a role whose
// trust policy stopped trusting the node is not asked every 30 s for as
// long as the pod lives.
func (e *entry) nextAttempt(now time.Time) (time.Time, bool) {
	if !e.hasCreds || !now.Before(e.servableUntil) {
		if k := KindOf(e.err); e.err != nil && (k == KindDenied || k == KindInvalid) {
			return time.Time{}, false
		}
	}
	if !e.hasCreds || e.bgRetryAt.After(e.refreshAt) {
		return e.bgRetryAt, true
	}
	return e.refreshAt, true
}

// CacheStats are counters for tests and health checks.
type CacheStats struct {
	// Hits are Gets answered from memory.
	Hits uint64
	// Misses are Gets that waited for, or were refused by, upstream.
	Misses uint64
	// Prefetches are upstream calls started by Track.
	Prefetches uint64
	// RefreshFailures are failed refreshes of cached credentials.
	RefreshFailures uint64
	// Entries is the number of cached keys.
	Entries int
}

// Stats reads the cache's counters.
func (c *CredentialCache) Stats() CacheStats {
	c.mu.RLock()
	n := c.count
	c.mu.RUnlock()
	return CacheStats{
		Hits:            counterValue(c.metrics.hits),
		Misses:          counterValue(c.metrics.misses),
		Prefetches:      counterValue(c.metrics.prefetches),
		RefreshFailures: counterValue(c.metrics.refreshFailures),
		Entries:         n,
	}
}

func counterValue(m prometheus.Metric) uint64 {
	var out dto.Metric
	if err := m.Write(&out); err != nil {
		return 0
	}
	return uint64(out.GetCounter().GetValue())
}

// cacheMetrics are the cache's collectors. Every one carries the constant
// label source, so caches of two sources can share a registry.
type cacheMetrics struct {
	// hits counts Gets answered from memory.
	hits prometheus.Counter
	// misses counts Gets that were not.
	misses prometheus.Counter
	// upstream counts upstream calls by result (error kinds).
	upstream *prometheus.CounterVec
	// upstreamSuccess is upstream's "success" child, resolved once.
	upstreamSuccess prometheus.Counter
	// duration observes upstream call latency.
	duration prometheus.Observer
	// entries is the number of cached keys.
	entries prometheus.Gauge
	// refreshFailures counts failed refreshes.
	refreshFailures prometheus.Counter
	// prefetches counts upstream calls started by Track.
	prefetches prometheus.Counter
}

func newCacheMetrics(reg prometheus.Registerer, source string) (*cacheMetrics, error) {
	labels := prometheus.Labels{"source": source}
	duration := prometheus.NewHistogram(prometheus.HistogramOpts{
		Name: "kube2ra_credential_upstream_duration_seconds", Help: "Latency of upstream credential calls.",
		ConstLabels: labels, Buckets: []float64{0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30},
	})
	m := &cacheMetrics{
		hits: prometheus.NewCounter(prometheus.CounterOpts{Name: "kube2ra_credential_cache_hits_total",
			Help: "Credential requests answered from the cache.", ConstLabels: labels}),
		misses: prometheus.NewCounter(prometheus.CounterOpts{Name: "kube2ra_credential_cache_misses_total",
			Help: "Credential requests not answered from the cache.", ConstLabels: labels}),
		upstream: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "kube2ra_credential_upstream_requests_total",
			Help: "Upstream credential calls by result.", ConstLabels: labels}, []string{"result"}),
		duration: duration,
		entries: prometheus.NewGauge(prometheus.GaugeOpts{Name: "kube2ra_credential_cache_entries",
			Help: "Keys in the credential cache.", ConstLabels: labels}),
		refreshFailures: prometheus.NewCounter(prometheus.CounterOpts{Name: "kube2ra_credential_refresh_failures_total",
			Help: "Failed refreshes of cached credentials.", ConstLabels: labels}),
		prefetches: prometheus.NewCounter(prometheus.CounterOpts{Name: "kube2ra_credential_prefetches_total",
			Help: "Upstream calls started because a pod appeared.", ConstLabels: labels}),
	}
	m.upstreamSuccess = m.upstream.WithLabelValues("success")
	for _, k := range []ErrorKind{KindUnavailable, KindDenied, KindThrottled, KindInvalid} {
		m.upstream.WithLabelValues(k.String()) // present at 0 from the start
	}
	for _, col := range []prometheus.Collector{m.hits, m.misses, m.upstream, duration, m.entries, m.refreshFailures, m.prefetches} {
		if err := reg.Register(col); err != nil {
			return nil, fmt.Errorf("credentials: registering cache metrics for source %q failed: %w; use one cache per source and registry", source, err)
		}
	}
	return m, nil
}

// heldCollector reads, at scrape time, what the cache serves: how many
// entries serve credentials whose refresh failed (stale-on-error), and how
// long the soonest-expiring servable credentials have left.
type heldCollector struct {
	// cache is read under its read lock.
	cache *CredentialCache
	// stale describes kube2ra_credential_stale_entries.
	stale *prometheus.Desc
	// soonest describes kube2ra_credential_soonest_expiry_seconds.
	soonest *prometheus.Desc
}

func newHeldCollector(c *CredentialCache) *heldCollector {
	labels := prometheus.Labels{"source": c.sourceName}
	return &heldCollector{
		cache: c,
		stale: prometheus.NewDesc("kube2ra_credential_stale_entries",
			"Cached keys still served after their last refresh failed (served until expiry minus the min TTL).", nil, labels),
		soonest: prometheus.NewDesc("kube2ra_credential_soonest_expiry_seconds",
			"Seconds until the soonest-expiring servable cached credentials expire; absent while none are held.", nil, labels),
	}
}

// Describe implements prometheus.Collector.
func (h *heldCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- h.stale
	ch <- h.soonest
}

// Collect implements prometheus.Collector.
func (h *heldCollector) Collect(ch chan<- prometheus.Metric) {
	stale, soonest, held := h.cache.held()
	ch <- prometheus.MustNewConstMetric(h.stale, prometheus.GaugeValue, float64(stale))
	if held {
		ch <- prometheus.MustNewConstMetric(h.soonest, prometheus.GaugeValue, soonest.Seconds())
	}
}

// held counts the servable entries whose last upstream call failed and finds
// the shortest time left on servable credentials; held is false when no
// entry holds servable credentials.
func (c *CredentialCache) held() (stale int, soonest time.Duration, held bool) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	now := c.clock.Now()
	for _, list := range c.entries {
		for _, e := range list {
			if !e.hasCreds || !now.Before(e.servableUntil) {
				continue
			}
			if e.err != nil {
				stale++
			}
			if left := e.creds.Expiration.Sub(now); !held || left < soonest {
				soonest, held = left, true
			}
		}
	}
	return stale, soonest, held
}
