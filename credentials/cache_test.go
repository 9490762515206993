package credentials

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	clocktesting "k8s.io/utils/clock/testing"

	"github.com/kube2ra/kube2ra/test/fakeaws/fakests"
)

func podReq(role, namespace, pod string) Request {
	return Request{RoleARN: role, SessionName: SessionName(namespace, pod)}
}

func TestCacheMakesOneUpstreamCallPerColdKey(t *testing.T) {
	for _, tc := range []struct {
		name    string
		keys    int
		callers int
	}{
		{name: "1000 concurrent Gets of one cold key make 1 call", keys: 1, callers: 1000},
		{name: "1000 concurrent Gets of 10 cold keys make 10 calls", keys: 10, callers: 1000},
	} {
		t.Run(tc.name, func(t *testing.T) {
			env := newCacheEnv(t, nil)
			var wg sync.WaitGroup
			start := make(chan struct{})
			keys := make([]sync.Map, tc.keys) // access key IDs each key's callers got
			errs := make(chan error, tc.callers)
			for i := 0; i < tc.callers; i++ {
				k := i % tc.keys
				wg.Add(1)
				go func() {
					defer wg.Done()
					<-start
					ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
					defer cancel()
					creds, err := env.cache.Get(ctx, podReq(appRoleARN, "ns", fmt.Sprintf("pod-%d", k)))
					if err != nil {
						errs <- err
						return
					}
					keys[k].Store(creds.AccessKeyID, true)
				}()
			}
			close(start)
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Fatal(err)
			}
			if got := env.calls(); got != tc.keys {
				t.Errorf("the fake STS saw %d AssumeRole calls, want %d", got, tc.keys)
			}
			for k := range keys {
				n := 0
				keys[k].Range(func(any, any) bool { n++; return true })
				if n != 1 {
					t.Errorf("callers of key %d got %d different credentials, want 1", k, n)
				}
			}
			st := env.cache.Stats()
			if st.Hits+st.Misses != uint64(tc.callers) || st.Entries != tc.keys {
				t.Errorf("stats %+v", st)
			}
		})
	}
}

func TestCacheNeverHandsOnePodsCredentialsToAnother(t *testing.T) {
	env := newCacheEnv(t, nil)
	reqs := []Request{
		{RoleARN: appRoleARN, SessionName: SessionName("ns", "a")},
		{RoleARN: appRoleARN, SessionName: SessionName("ns", "b")},
		{RoleARN: appRoleARN, SessionName: SessionName("ns", "a"), ExternalID: "x-1"},
		{RoleARN: appRoleARN, SessionName: SessionName("ns", "a"), ExternalID: "x-2"},
		{RoleARN: extRoleARN, SessionName: SessionName("ns", "c"), ExternalID: extRoleID},
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	got := map[int]map[string]bool{}
	for round := 0; round < 50; round++ {
		for i, r := range reqs {
			wg.Add(1)
			go func() {
				defer wg.Done()
				creds := get(t, env.cache, r)
				mu.Lock()
				if got[i] == nil {
					got[i] = map[string]bool{}
				}
				got[i][creds.AccessKeyID] = true
				mu.Unlock()
			}()
		}
	}
	wg.Wait()
	owner := map[string]int{}
	for i, ids := range got {
		if len(ids) != 1 {
			t.Errorf("request %d got %d credentials", i, len(ids))
		}
		for id := range ids {
			if j, ok := owner[id]; ok {
				t.Errorf("requests %d and %d got the same credentials %s", j, i, id)
			}
			owner[id] = i
			sess, _ := env.fake.Session(id)
			if sess.SessionName != reqs[i].SessionName || sess.ExternalID != reqs[i].ExternalID || sess.RoleARN != reqs[i].RoleARN {
				t.Errorf("request %d (%+v) got credentials issued for %+v", i, reqs[i], sess)
			}
		}
	}

	// Same role, same session, a wrong external ID: denied, even though the
	// right one's credentials are cached.
	wrong := Request{RoleARN: extRoleARN, SessionName: SessionName("ns", "c"), ExternalID: "guessed"}
	if _, err := env.cache.Get(context.Background(), wrong); KindOf(err) != KindDenied {
		t.Errorf("wrong external ID: %v, want denied", err)
	}
	noID := Request{RoleARN: extRoleARN, SessionName: SessionName("ns", "c")}
	if _, err := env.cache.Get(context.Background(), noID); KindOf(err) != KindDenied {
		t.Errorf("no external ID: %v, want denied", err)
	}
}

func TestCacheKeepsRequestsThatDifferOnlyInTagsApart(t *testing.T) {
	env := newCacheEnv(t, nil)
	a := Request{RoleARN: tagRoleARN, SessionName: "ns.pod", Tags: SessionTags("ns", "pod", "sa-1", "node")}
	b := Request{RoleARN: tagRoleARN, SessionName: "ns.pod", Tags: SessionTags("ns", "pod", "sa-2", "node")}
	ca, cb := get(t, env.cache, a), get(t, env.cache, b)
	if ca.AccessKeyID == cb.AccessKeyID || env.calls() != 2 || env.cache.Stats().Entries != 2 {
		t.Fatalf("tags-only difference shared credentials: %s %s, %d calls", ca.AccessKeyID, cb.AccessKeyID, env.calls())
	}
	for _, tc := range []struct {
		req  Request
		want string
	}{{a, ca.AccessKeyID}, {b, cb.AccessKeyID}} {
		if got := get(t, env.cache, tc.req); got.AccessKeyID != tc.want {
			t.Errorf("got %s, want %s", got.AccessKeyID, tc.want)
		}
		if sess, _ := env.fake.Session(tc.want); sess.Tags[TagServiceAccount] != tc.req.Tags[3].Value {
			t.Errorf("credentials %s carry tags %v", tc.want, sess.Tags)
		}
	}
	// The cache keeps its own copy of the tags.
	a.Tags[0].Value = "changed"
	if got := get(t, env.cache, b); got.AccessKeyID != cb.AccessKeyID {
		t.Error("changing a caller's tag slice changed the cache")
	}
}

func TestCacheRefreshesOnlyTrackedKeysAheadOfExpiry(t *testing.T) {
	// Eviction comes after the 9-minute step below, so the on-demand key's
	// keep-alive Get cannot race the refresher's eviction of it.
	// A 1-minute min TTL keeps the arithmetic below about tracking.
	env := newCacheEnv(t, func(o *CacheOptions) { o.EvictAfter = 12 * time.Minute; o.MinTTL = time.Minute })
	env.run(t)
	tracked := podReq(appRoleARN, "ns", "tracked")
	onDemand := podReq(appRoleARN, "ns", "on-demand")

	env.cache.Track("uid-tracked", tracked)
	eventually(t, "the tracked key is prefetched", func() bool { return env.cached(tracked) })
	first := get(t, env.cache, tracked)
	get(t, env.cache, onDemand)
	if env.calls() != 2 {
		t.Fatalf("%d calls, want 2", env.calls())
	}

	// 15-minute sessions are refreshed 10 minutes in at the latest
	// (5 minutes before expiry), a little earlier with jitter.
	env.clock.Step(9 * time.Minute)
	get(t, env.cache, onDemand) // a hit that keeps it from being evicted
	env.clock.Step(time.Minute)
	eventually(t, "the tracked key is refreshed", func() bool { return env.calls() == 3 })
	eventually(t, "the refreshed credentials are served", func() bool { return get(t, env.cache, tracked).AccessKeyID != first.AccessKeyID })
	second := get(t, env.cache, tracked)
	if !env.clock.Now().Before(first.Expiration.Add(-DefaultRefreshBefore).Add(time.Second)) {
		t.Errorf("refreshed at %s, later than 5 minutes before the old expiry %s", env.clock.Now(), first.Expiration)
	}
	if second.Expiration.Sub(env.clock.Now()) != testDuration {
		t.Errorf("new credentials expire in %s", second.Expiration.Sub(env.clock.Now()))
	}
	consistently(t, "the untracked key is not refreshed", 100*time.Millisecond, func() bool { return env.calls() == 3 })

	// Untracked and past the grace period: evicted, and never refreshed again.
	env.cache.Untrack("uid-tracked")
	env.clock.Step(12*time.Minute + time.Second)
	eventually(t, "both keys are evicted", func() bool { return env.cache.Stats().Entries == 0 })
	env.clock.Step(30 * time.Minute)
	consistently(t, "an evicted key is not refreshed", 100*time.Millisecond, func() bool { return env.calls() == 3 })
	if got := testutil.ToFloat64(env.cache.metrics.entries); got != 0 {
		t.Errorf("entries gauge %v", got)
	}
}

// runningWithATrackedPod is a running cache with one tracked pod of
// appRoleARN, its credentials prefetched: the request and them.
func runningWithATrackedPod(t *testing.T) (*cacheEnv, Request, Credentials) {
	t.Helper()
	env := newCacheEnv(t, nil)
	env.run(t)
	req := podReq(appRoleARN, "ns", "pod")
	env.cache.Track("uid", req)
	eventually(t, "prefetched", func() bool { return env.cached(req) })
	return env, req, get(t, env.cache, req)
}

func TestCacheServesCachedCredentialsWhileUpstreamIsDown(t *testing.T) {
	env, req, old := runningWithATrackedPod(t)
	if got := gaugeValue(t, env.reg, "kube2ra_credential_stale_entries"); got != 0 {
		t.Errorf("kube2ra_credential_stale_entries %v with fresh credentials, want 0", got)
	}
	if got, want := gaugeValue(t, env.reg, "kube2ra_credential_soonest_expiry_seconds"), old.Expiration.Sub(env.clock.Now()).Seconds(); got != want {
		t.Errorf("kube2ra_credential_soonest_expiry_seconds %v, want %v", got, want)
	}

	env.fake.SetOutage(true)
	// 15-minute sessions with the 11-minute min TTL are refreshed 3 minutes in.
	env.clock.Step(3 * time.Minute)
	eventually(t, "a refresh failed", func() bool { return env.cache.Stats().RefreshFailures >= 1 })
	if got := gaugeValue(t, env.reg, "kube2ra_credential_stale_entries"); got != 1 {
		t.Errorf("kube2ra_credential_stale_entries %v while serving after a failed refresh, want 1", got)
	}
	if got := get(t, env.cache, req); got.AccessKeyID != old.AccessKeyID {
		t.Fatalf("served %s during the outage, want the cached %s", got.AccessKeyID, old.AccessKeyID)
	}
	// Up to expiry minus the minimum TTL.
	env.clock.SetTime(old.Expiration.Add(-DefaultMinTTL - time.Second))
	if got := get(t, env.cache, req); got.AccessKeyID != old.AccessKeyID {
		t.Fatalf("served %s a second before the min TTL, want the cached %s", got.AccessKeyID, old.AccessKeyID)
	}
	env.clock.SetTime(old.Expiration.Add(-DefaultMinTTL))
	if got := gaugeValue(t, env.reg, "kube2ra_credential_stale_entries"); got != 0 {
		t.Errorf("kube2ra_credential_stale_entries %v once nothing is servable, want 0", got)
	}
	if n, err := testutil.GatherAndCount(env.reg, "kube2ra_credential_soonest_expiry_seconds"); err != nil || n != 0 {
		t.Errorf("kube2ra_credential_soonest_expiry_seconds: %d series with nothing servable (%v), want none", n, err)
	}
	_, err := env.cache.Get(context.Background(), req)
	var e *Error
	if !errors.As(err, &e) || e.Kind != KindUnavailable || e.RoleARN != appRoleARN {
		t.Fatalf("with the min TTL left and STS down: %v, want an unavailable error naming the role", err)
	}
	t.Logf("error at expiry: %v", err)

	// Recovery without restart: the refresher retries after its backoff.
	env.fake.SetOutage(false)
	env.clock.Step(DefaultErrorBackoffMax + time.Second)
	eventually(t, "fresh credentials after the outage", func() bool { return env.cached(req) })
	if got := get(t, env.cache, req); got.AccessKeyID == old.AccessKeyID {
		t.Error("still the old credentials")
	}
}

func TestCacheBacksOffWhenThrottled(t *testing.T) {
	env := newCacheEnv(t, nil)
	env.fake.SetThrottle(true)
	req := podReq(appRoleARN, "ns", "pod")
	const gets, every = 600, 100 * time.Millisecond // a Get every 100 ms for a minute
	for i := 0; i < gets; i++ {
		_, err := env.cache.Get(context.Background(), req)
		if KindOf(err) != KindThrottled {
			t.Fatalf("Get %d: %v, want throttled", i, err)
		}
		env.clock.Step(every)
	}
	// Remembered 1, 2, 4, 8, 16, 30 s: calls at 0, 1, 3, 7, 15 and 31 s.
	if got := env.calls(); got != 6 {
		t.Errorf("%d Gets in 60 s made %d calls, want 6", gets, got)
	}
	env.fake.SetThrottle(false)
	env.clock.Step(DefaultErrorBackoffMax)
	get(t, env.cache, req)
	if got := env.calls(); got != 7 {
		t.Errorf("%d calls after recovery, want 7", got)
	}
}

func TestCacheRemembersDenials(t *testing.T) {
	env := newCacheEnv(t, nil)
	env.run(t)
	req := podReq(deniedRoleARN, "ns", "pod")
	for i := 0; i < 50; i++ {
		_, err := env.cache.Get(context.Background(), req)
		var e *Error
		if !errors.As(err, &e) || e.Kind != KindDenied || e.Code != "AccessDenied" || !strings.Contains(e.Message, "is not authorized") {
			t.Fatalf("Get %d: %v", i, err)
		}
	}
	if env.calls() != 1 {
		t.Fatalf("50 Gets of a denied role made %d calls, want 1", env.calls())
	}
	env.clock.Step(time.Second)
	env.cache.Get(context.Background(), req)
	env.clock.Step(time.Second) // the second denial is remembered 2 s
	env.cache.Get(context.Background(), req)
	if env.calls() != 2 {
		t.Fatalf("%d calls, want 2", env.calls())
	}

	// A tracked pod with a denied role is not retried in the background.
	tracked := podReq(deniedRoleARN, "ns", "tracked")
	env.cache.Track("uid", tracked)
	eventually(t, "the prefetch ran", func() bool { return env.calls() == 3 })
	for i := 0; i < 5; i++ {
		env.clock.Step(time.Minute)
	}
	consistently(t, "no background retries of a denial", 100*time.Millisecond, func() bool { return env.calls() == 3 })
}

// TestCacheStopsRefreshingARoleThatBecameDenied: a tracked pod whose role
// stops trusting the node is refreshed (and refused) while its credentials
// are still servable, then no more in the background once they are not.
// It once kept asking every 30 s for as long as the pod lived.
func TestCacheStopsRefreshingARoleThatBecameDenied(t *testing.T) {
	env, req, creds := runningWithATrackedPod(t)
	if err := env.fake.AddRole(fakests.Role{ARN: appRoleARN, Trust: []string{"arn:aws:iam::111122223333:user/someone-else"}}); err != nil {
		t.Fatal(err)
	}
	env.clock.Step(3 * time.Minute) // the refresh time of a 15-minute session
	eventually(t, "the refresh was refused", func() bool { return env.cache.Stats().RefreshFailures >= 1 })
	if got := get(t, env.cache, req); got.AccessKeyID != creds.AccessKeyID {
		t.Fatalf("served %s after the refused refresh, want the servable %s", got.AccessKeyID, creds.AccessKeyID)
	}
	env.clock.SetTime(creds.Expiration.Add(-DefaultMinTTL))
	time.Sleep(50 * time.Millisecond) // the refresher's last look while servable
	calls := env.calls()
	for range 10 {
		env.clock.Step(time.Minute)
	}
	consistently(t, "no background calls for a denied role once nothing is servable", 200*time.Millisecond, func() bool { return env.calls() == calls })
	if _, err := env.cache.Get(context.Background(), req); KindOf(err) != KindDenied {
		t.Fatalf("a Get after expiry: %v, want denied", err)
	}
}

// TestCacheSpreadsTheRetriesOfPodsRefusedTogether: pods throttled in the
// same instant are retried by the refresher each a little earlier than the
// backoff, by its own share (up to the refresh jitter), not all at once;
// a Get still waits the whole backoff.
func TestCacheSpreadsTheRetriesOfPodsRefusedTogether(t *testing.T) {
	env := newCacheEnv(t, nil)
	env.fake.SetThrottle(true)
	env.run(t)
	const pods = 30
	for i := range pods {
		env.cache.Track(fmt.Sprintf("uid-%d", i), podReq(appRoleARN, "ns", fmt.Sprintf("pod-%d", i)))
	}
	eventually(t, "every prefetch was refused", func() bool { return env.calls() == pods && env.cache.Fetching() == 0 })
	c := env.cache
	c.mu.Lock()
	defer c.mu.Unlock()
	distinct := map[time.Time]bool{}
	for _, bucket := range c.entries {
		for _, e := range bucket {
			b := c.backoff(e.failures)
			if e.bgRetryAt.After(e.retryAt) || e.bgRetryAt.Before(e.retryAt.Add(-time.Duration(c.refreshJitter*float64(b)))) {
				t.Errorf("background retry at %s, want within %s before the backoff's end %s", e.bgRetryAt, time.Duration(c.refreshJitter*float64(b)), e.retryAt)
			}
			distinct[e.bgRetryAt] = true
		}
	}
	if len(distinct) < pods/2 {
		t.Errorf("%d pods refused together retry at %d distinct times, want them spread", pods, len(distinct))
	}
}

func TestCachePrefetchMakesTheFirstGetAHit(t *testing.T) {
	env := newCacheEnv(t, nil)
	req := podReq(appRoleARN, "ns", "new-pod")
	env.cache.Track("uid", req)
	eventually(t, "prefetched", func() bool { return env.cached(req) })
	get(t, env.cache, req)
	st := env.cache.Stats()
	if st.Hits != 1 || st.Misses != 0 || st.Prefetches != 1 {
		t.Errorf("stats after prefetch and one Get: %+v, want 1 hit, 0 misses, 1 prefetch", st)
	}
	if got := testutil.ToFloat64(env.cache.metrics.hits); got != 1 {
		t.Errorf("hits counter %v", got)
	}
	// Tracking the same pod again changes nothing.
	env.cache.Track("uid", req)
	if env.calls() != 1 || env.cache.Stats().Prefetches != 1 {
		t.Errorf("re-tracking made calls: %d, prefetches %d", env.calls(), env.cache.Stats().Prefetches)
	}
}

func TestCacheRateLimitWaitsUntilTheDeadlineThenThrottles(t *testing.T) {
	env := newCacheEnv(t, func(o *CacheOptions) { o.QPS, o.Burst = 1, 1 })
	a, b := podReq(appRoleARN, "ns", "a"), podReq(appRoleARN, "ns", "b")
	get(t, env.cache, a) // takes the only token

	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	_, err := env.cache.Get(ctx, b)
	if KindOf(err) != KindThrottled {
		t.Fatalf("with an empty bucket: %v, want throttled", err)
	}
	if env.calls() != 1 {
		t.Fatalf("%d calls went out with an empty bucket", env.calls())
	}
	// The call waits for its token (1 s of the cache's clock) and is cached.
	env.clock.Step(time.Second)
	eventually(t, "the waiting call completes", func() bool { return env.cached(b) })
	get(t, env.cache, b)
	if env.calls() != 2 || env.cache.Stats().Hits != 1 {
		t.Errorf("calls %d, stats %+v", env.calls(), env.cache.Stats())
	}
}

func TestCacheKeepsASlowAnswerForTheNextGet(t *testing.T) {
	env := newCacheEnv(t, nil)
	env.fake.SetLatency(500 * time.Millisecond)
	req := podReq(appRoleARN, "ns", "pod")
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if _, err := env.cache.Get(ctx, req); KindOf(err) != KindUnavailable || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Get past its deadline: %v", err)
	}
	eventually(t, "the slow answer is cached", func() bool { return env.cached(req) })
	get(t, env.cache, req)
	if env.calls() != 1 {
		t.Errorf("%d calls", env.calls())
	}
}

func TestCacheEvictsKeysNoPodUses(t *testing.T) {
	env := newCacheEnv(t, nil)
	env.run(t)
	onDemand := podReq(appRoleARN, "ns", "on-demand")
	shared := podReq(appRoleARN, "ns", "shared")
	get(t, env.cache, onDemand)
	env.cache.Track("uid-1", shared)
	env.cache.Track("uid-2", shared)
	eventually(t, "prefetched", func() bool { return env.cached(shared) })

	env.cache.Untrack("uid-1")
	env.clock.Step(DefaultEvictAfter + time.Second)
	eventually(t, "the on-demand key ages out", func() bool { return env.cache.Stats().Entries == 1 })
	// Present, not necessarily servable: the step may have carried the
	// shared entry past its servable time, and its refresh runs in the
	// background.
	if !env.present(shared) {
		t.Fatal("a key one pod still uses was evicted")
	}
	env.cache.Untrack("uid-2")
	env.clock.Step(DefaultEvictAfter - time.Second)
	consistently(t, "kept during the grace period", 50*time.Millisecond, func() bool { return env.cache.Stats().Entries == 1 })
	env.clock.Step(2 * time.Second)
	eventually(t, "evicted after the grace period", func() bool { return env.cache.Stats().Entries == 0 })
}

func TestCacheTrackMovesAPodToItsNewRole(t *testing.T) {
	env := newCacheEnv(t, nil)
	env.run(t)
	oldReq, newReq := podReq(appRoleARN, "ns", "pod"), podReq(tagRoleARN, "ns", "pod")
	env.cache.Track("uid", oldReq)
	eventually(t, "old role prefetched", func() bool { return env.cached(oldReq) })
	env.cache.Track("uid", newReq)
	eventually(t, "new role prefetched", func() bool { return env.cached(newReq) })
	env.clock.Step(DefaultEvictAfter + time.Second)
	eventually(t, "the old role is evicted", func() bool { return env.cache.Stats().Entries == 1 && !env.cached(oldReq) })
}

func TestCacheRefusesCredentialsShorterThanTheMinTTL(t *testing.T) {
	clk := clocktesting.NewFakeClock(time.Now())
	src := &stubSource{fetch: func(context.Context, Request) (Credentials, error) {
		return Credentials{AccessKeyID: "ASIASHORT", Expiration: clk.Now().Add(30 * time.Second)}, nil
	}}
	c, err := NewCredentialCache(CacheOptions{Source: src, Clock: clk})
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.Get(context.Background(), Request{RoleARN: appRoleARN, SessionName: "ns.pod"})
	if KindOf(err) != KindInvalid || !strings.Contains(err.Error(), "--credential-min-ttl") {
		t.Errorf("credentials with 30 s left: %v", err)
	}
}

func TestCacheRunStopsWithoutLeakingGoroutines(t *testing.T) {
	before := runtime.NumGoroutine()
	var inFlight sync.WaitGroup
	src := &stubSource{fetch: func(ctx context.Context, _ Request) (Credentials, error) {
		inFlight.Done()
		<-ctx.Done() // an upstream that never answers
		return Credentials{}, ctx.Err()
	}}
	c, err := NewCredentialCache(CacheOptions{Source: src, Clock: clocktesting.NewFakeClock(time.Now())})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		c.Run(ctx)
		close(done)
	}()
	inFlight.Add(5)
	for i := 0; i < 5; i++ {
		c.Track(fmt.Sprintf("uid-%d", i), podReq(appRoleARN, "ns", fmt.Sprintf("pod-%d", i)))
	}
	inFlight.Wait()
	cancel()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return after its context ended")
	}
	eventually(t, "goroutines return to the count before", func() bool { return runtime.NumGoroutine() <= before })
}

func TestCacheMetricsAreRegistered(t *testing.T) {
	env := newCacheEnv(t, nil)
	get(t, env.cache, podReq(appRoleARN, "ns", "pod"))
	for _, name := range []string{
		"kube2ra_credential_cache_hits_total",
		"kube2ra_credential_cache_misses_total",
		"kube2ra_credential_upstream_requests_total",
		"kube2ra_credential_upstream_duration_seconds",
		"kube2ra_credential_cache_entries",
		"kube2ra_credential_refresh_failures_total",
		"kube2ra_credential_prefetches_total",
		"kube2ra_credential_stale_entries",
		"kube2ra_credential_soonest_expiry_seconds",
	} {
		if n, err := testutil.GatherAndCount(env.reg, name); err != nil || n == 0 {
			t.Errorf("%s: %d series, %v", name, n, err)
		}
	}
	want := `
# HELP kube2ra_credential_upstream_requests_total Upstream credential calls by result.
# TYPE kube2ra_credential_upstream_requests_total counter
kube2ra_credential_upstream_requests_total{result="denied",source="sts"} 0
kube2ra_credential_upstream_requests_total{result="invalid",source="sts"} 0
kube2ra_credential_upstream_requests_total{result="success",source="sts"} 1
kube2ra_credential_upstream_requests_total{result="throttled",source="sts"} 0
kube2ra_credential_upstream_requests_total{result="unavailable",source="sts"} 0
`
	if err := testutil.GatherAndCompare(env.reg, strings.NewReader(want), "kube2ra_credential_upstream_requests_total"); err != nil {
		t.Error(err)
	}
	if _, err := NewCredentialCache(CacheOptions{Source: env.source, Registerer: env.reg}); err == nil {
		t.Error("a second cache of the same source on the same registry should fail to register")
	}
}

func TestRefreshTime(t *testing.T) {
	now := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		name   string
		minTTL time.Duration
		life   time.Duration
		want   time.Duration
	}{
		{name: "15-minute sessions refresh a minute before the SDKs' 11-minute floor", life: 15 * time.Minute, want: 3 * time.Minute},
		{name: "20-minute sessions refresh a minute before the SDKs' floor", life: 20 * time.Minute, want: 8 * time.Minute},
		{name: "30-minute sessions refresh a minute before the SDKs' floor", life: 30 * time.Minute, want: 18 * time.Minute},
		{name: "1-hour sessions refresh at 80% of their life", life: time.Hour, want: 48 * time.Minute},
		{name: "12-hour sessions refresh at 80% of their life", life: 12 * time.Hour, want: 576 * time.Minute},
		{name: "12-minute sessions refresh within the last quarter of their servable minute", life: 12 * time.Minute, want: 45 * time.Second},
		{name: "with a 1-minute min TTL 15-minute sessions refresh 5 minutes before expiry", minTTL: time.Minute, life: 15 * time.Minute, want: 10 * time.Minute},
		{name: "with a 1-minute min TTL 6-minute sessions refresh 5 minutes before expiry", minTTL: time.Minute, life: 6 * time.Minute, want: time.Minute},
		{name: "with a 1-minute min TTL 4-minute sessions refresh a lead before the min TTL cuts them off", minTTL: time.Minute, life: 4 * time.Minute, want: 2*time.Minute + 15*time.Second},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := NewCredentialCache(CacheOptions{Source: &stubSource{}, RefreshJitter: -1, MinTTL: tc.minTTL})
			if err != nil {
				t.Fatal(err)
			}
			if got := c.refreshTime(now, now.Add(tc.life)).Sub(now); got != tc.want {
				t.Errorf("refresh after %s, want %s", got, tc.want)
			}
		})
	}
	t.Run("jitter only moves refreshes earlier, by at most 10%", func(t *testing.T) {
		j, _ := NewCredentialCache(CacheOptions{Source: &stubSource{}})
		for i := 0; i < 1000; i++ {
			got := j.refreshTime(now, now.Add(time.Hour)).Sub(now)
			if got > 48*time.Minute || got < 43*time.Minute+12*time.Second {
				t.Fatalf("refresh after %s", got)
			}
		}
	})
}

func TestErrorBackoffDoublesUpToTheMaximum(t *testing.T) {
	c, err := NewCredentialCache(CacheOptions{Source: &stubSource{}})
	if err != nil {
		t.Fatal(err)
	}
	want := []time.Duration{time.Second, 2 * time.Second, 4 * time.Second, 8 * time.Second, 16 * time.Second, 30 * time.Second, 30 * time.Second}
	for i, w := range want {
		if got := c.backoff(i + 1); got != w {
			t.Errorf("failure %d remembered %s, want %s", i+1, got, w)
		}
	}
	if got := c.backoff(1000); got != 30*time.Second {
		t.Errorf("failure 1000 remembered %s", got)
	}
}

func BenchmarkCacheHit(b *testing.B) {
	src := &stubSource{fetch: func(context.Context, Request) (Credentials, error) {
		return Credentials{AccessKeyID: "ASIABENCH", SecretAccessKey: "s", SessionToken: "t", Expiration: time.Now().Add(time.Hour)}, nil
	}}
	c, err := NewCredentialCache(CacheOptions{Source: src})
	if err != nil {
		b.Fatal(err)
	}
	req := Request{RoleARN: "arn:aws:iam::111122223333:role/some-application-role", ExternalID: "ext-123",
		SessionName: SessionName("team-payments", "checkout-api-7f9c8d6b5-x2x4q"), Tags: SessionTags("team-payments", "checkout-api-7f9c8d6b5-x2x4q", "checkout-api", "ip-10-0-1-23.eu-west-1.compute.internal")}
	ctx := context.Background()
	if _, err := c.Get(ctx, req); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.Run("serial", func(b *testing.B) {
		for b.Loop() {
			if _, err := c.Get(ctx, req); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("parallel", func(b *testing.B) {
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if _, err := c.Get(ctx, req); err != nil {
					b.Error(err)
					return
				}
			}
		})
	})
	if src.calls() != 1 {
		b.Errorf("%d upstream calls", src.calls())
	}
}

// TestCacheTrackedEntrySaysWhetherAPodsCredentialsAreCached: a tracked
// pod's entry shows cached once prefetched and not once past its min TTL;
// a denied role shows the error; the state holds no secret.
func TestCacheTrackedEntrySaysWhetherAPodsCredentialsAreCached(t *testing.T) {
	env := newCacheEnv(t, nil)
	if _, ok := env.cache.TrackedEntry("uid"); ok {
		t.Fatal("an untracked pod has an entry")
	}
	req := podReq(appRoleARN, "ns", "pod")
	env.cache.Track("uid", req)
	eventually(t, "prefetched", func() bool { st, _ := env.cache.TrackedEntry("uid"); return st.Cached })
	st, ok := env.cache.TrackedEntry("uid")
	creds := get(t, env.cache, req)
	if !ok || st.RoleARN != appRoleARN || !st.Expiration.Equal(creds.Expiration) || st.LastError != "" || !st.ServableUntil.Before(st.Expiration) {
		t.Errorf("state %+v, want role %s, expiration %s, servable before it, no error", st, appRoleARN, creds.Expiration)
	}
	doc, err := json.Marshal(st)
	if err != nil {
		t.Fatal(err)
	}
	for _, secret := range []string{creds.SecretAccessKey, creds.SessionToken, creds.AccessKeyID} {
		if strings.Contains(string(doc), secret) {
			t.Errorf("the entry state %s holds a credential", doc)
		}
	}
	env.clock.Step(st.ServableUntil.Sub(env.clock.Now()) + time.Second)
	if st, _ := env.cache.TrackedEntry("uid"); st.Cached {
		t.Errorf("credentials past their min TTL still show as cached: %+v", st)
	}

	env.cache.Track("uid-denied", podReq(deniedRoleARN, "ns", "denied"))
	eventually(t, "the prefetch failed", func() bool { st, _ := env.cache.TrackedEntry("uid-denied"); return st.LastError != "" })
	if st, _ := env.cache.TrackedEntry("uid-denied"); st.Cached || !strings.Contains(st.LastError, "is not authorized") {
		t.Errorf("denied role's state %+v, want not cached with the denial", st)
	}
}

// TestFetchingCountsTrackedPodsWaitingForUpstream: a successor agent takes
// traffic over when Fetching is 0, so the first request after an upgrade
// is a hit; it must count a prefetch in flight and drop to 0 once cached.
func TestFetchingCountsTrackedPodsWaitingForUpstream(t *testing.T) {
	env := newCacheEnv(t, nil)
	env.run(t)
	if n := env.cache.Fetching(); n != 0 {
		t.Fatalf("Fetching %d with nothing tracked", n)
	}
	env.fake.SetLatency(300 * time.Millisecond)
	req := podReq(appRoleARN, "ns", "pod")
	env.cache.Track("uid", req)
	if n := env.cache.Fetching(); n != 1 {
		t.Fatalf("Fetching %d right after Track started the prefetch, want 1", n)
	}
	eventually(t, "prefetched", func() bool { return env.cached(req) })
	eventually(t, "no fetch in flight", func() bool { return env.cache.Fetching() == 0 })
	env.fake.SetLatency(0)
	before := env.calls()
	get(t, env.cache, req)
	if env.calls() != before {
		t.Errorf("the first Get after Fetching reached 0 called upstream")
	}
}
