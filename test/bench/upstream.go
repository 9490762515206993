package bench

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"runtime"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	clocktesting "k8s.io/utils/clock/testing"

	"github.com/kube2ra/kube2ra/credentials"
)

// UpstreamSimOptions shape one simulated node for SimulateUpstream.
type UpstreamSimOptions struct {
	// Naming is the session naming under test (--session-name).
	Naming credentials.SessionNaming
	// Pods on the node, each using one of Roles roles (pod i uses role i mod Roles).
	Pods, Roles int
	// Session is the lifetime of each issued session (--ra-session-duration).
	Session time.Duration
	// Warmup is simulated time before counting starts: the first fetch of
	// each session is a one-off, not the steady state.
	Warmup time.Duration
	// Measure is the simulated time over which calls are counted.
	Measure time.Duration
	// Step is how far the fake clock moves at a time; every pod asks for its
	// credentials after each step, as an SDK polling IMDS would.
	Step time.Duration
	// Target gives every pod a target role (one per role, in another
	// account): the cache wraps the real credentials.ChainSource, each fetch
	// is two upstream calls and the target session lasts at most an hour.
	Target bool
}

// UpstreamSimResult is what SimulateUpstream counted.
type UpstreamSimResult struct {
	// Calls are upstream calls made during the measured window.
	Calls int
	// Sessions are the distinct (role, session name) keys fetched.
	Sessions int
	// PodHours is Pods times the measured window in hours.
	PodHours float64
	// CallsPerPodHour is Calls / PodHours.
	CallsPerPodHour float64
	// Misses are pod requests that were not answered from memory during the
	// measured window (0 when refreshes stay ahead of expiry).
	Misses uint64
}

const (
	// settleBound is how long, in real time, one step may take to settle.
	settleBound = 5 * time.Second
	// settleQuietRounds is how many scheduler rounds in a row the cache
	// must look idle; settlePause then lets goroutines it just started run.
	settleQuietRounds = 20
	settlePause       = 50 * time.Microsecond
)

// SimulateUpstream drives the real credentials.CredentialCache (refresh
// ahead, jitter, min TTL, rate limit: everything the agent uses) with a
// fake clock over simulated hours, for pods tracked and asking as the agent
// makes them, and counts the calls its source receives. The source issues
// sessions expiring Session after the fake clock's now.
func SimulateUpstream(ctx context.Context, o UpstreamSimOptions) (UpstreamSimResult, error) {
	if o.Pods <= 0 || o.Roles <= 0 || o.Session <= 0 || o.Measure <= 0 || o.Step <= 0 {
		return UpstreamSimResult{}, fmt.Errorf("SimulateUpstream: pods, roles, session, measure and step must be positive (got %+v)", o)
	}
	clk := clocktesting.NewFakeClock(time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC))
	src := &simSource{clock: clk, session: o.Session, keys: map[string]bool{}, chained: o.Target}
	chain, err := credentials.NewChainSource(src, src)
	if err != nil {
		return UpstreamSimResult{}, err
	}
	cache, err := credentials.NewCredentialCache(credentials.CacheOptions{Source: chain, Clock: clk, Registerer: prometheus.NewRegistry()})
	if err != nil {
		return UpstreamSimResult{}, err
	}
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		cache.Run(runCtx)
		close(done)
	}()
	defer func() {
		stop()
		<-done
	}()

	const node = "node-1"
	reqs := make([]credentials.Request, o.Pods)
	for i := range reqs {
		ns, pod := fmt.Sprintf("ns-%d", i%3), fmt.Sprintf("pod-%d", i)
		reqs[i] = credentials.Request{
			RoleARN:     fmt.Sprintf("arn:aws:iam::123456789012:role/role-%d", i%o.Roles),
			SessionName: o.Naming.SessionNameFor(ns, pod, node),
		}
		if o.Target {
			reqs[i].TargetRoleARN = fmt.Sprintf("arn:aws:iam::444455556666:role/target-%d", i%o.Roles)
			reqs[i].TargetSessionName = cmp.Or(reqs[i].SessionName, credentials.NodeSessionName(node))
		}
		cache.Track(fmt.Sprintf("uid-%d", i), reqs[i])
	}
	ask := func() error {
		for _, r := range reqs {
			getCtx, cancel := context.WithTimeout(ctx, settleBound)
			_, err := cache.Get(getCtx, r)
			cancel()
			if err != nil {
				return fmt.Errorf("a pod's request at simulated %s failed: %w", clk.Now().Format(time.TimeOnly), err)
			}
		}
		return nil
	}
	run := func(d time.Duration) error {
		for end := clk.Now().Add(d); clk.Now().Before(end); {
			clk.Step(o.Step)
			if err := settle(ctx, clk, src); err != nil {
				return err
			}
			if err := ask(); err != nil {
				return err
			}
		}
		return nil
	}
	if err := settle(ctx, clk, src); err != nil {
		return UpstreamSimResult{}, err
	}
	if err := run(o.Warmup); err != nil {
		return UpstreamSimResult{}, err
	}
	callsBefore, missesBefore := src.count(), cache.Stats().Misses
	if err := run(o.Measure); err != nil {
		return UpstreamSimResult{}, err
	}
	r := UpstreamSimResult{
		Calls:    src.count() - callsBefore,
		Sessions: src.sessions(),
		PodHours: float64(o.Pods) * o.Measure.Hours(),
		Misses:   cache.Stats().Misses - missesBefore,
	}
	r.CallsPerPodHour = float64(r.Calls) / r.PodHours
	return r, nil
}

// settle waits until the cache's refresher is back asleep on the fake
// clock with no upstream call running, so the step's work is done. A
// refresh whose goroutine has not reached the source yet can still slip to
// a later step (the machine is shared); that moves it by seconds of
// simulated time, which the counts do not notice, and a pod that asks in
// between is counted in Misses.
func settle(ctx context.Context, clk *clocktesting.FakeClock, src *simSource) error {
	deadline := time.Now().Add(settleBound)
	for quiet := 0; quiet < settleQuietRounds; {
		if clk.HasWaiters() && src.idle() {
			quiet++
		} else {
			quiet = 0
		}
		if time.Now().After(deadline) {
			return errors.New("the credential cache did not settle within 5s of real time after a step")
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		runtime.Gosched()
	}
	time.Sleep(settlePause)
	return nil
}

// simSource issues sessions on the fake clock and counts calls.
type simSource struct {
	// clock stamps and ends the sessions.
	clock *clocktesting.FakeClock
	// session is their lifetime.
	session time.Duration
	// mu guards the fields below.
	mu sync.Mutex
	// calls is the number of Fetches.
	calls int
	// running is the number of Fetches in progress.
	running int
	// keys are the distinct requests whose sessions pods are served.
	keys map[string]bool
	// chained is true when every request names a target role.
	chained bool
}

func (s *simSource) Name() string { return "sim" }

func (s *simSource) Fetch(_ context.Context, req credentials.Request) (credentials.Credentials, error) {
	return s.issue(req, s.session, !s.chained)
}

// AssumeTarget is the target hop: one more call, at most an hour, as STS
// grants a chained session.
func (s *simSource) AssumeTarget(_ context.Context, req credentials.Request, _ credentials.Credentials) (credentials.Credentials, error) {
	return s.issue(req, min(s.session, credentials.ChainedMaxSessionDuration), true)
}

// issue counts one upstream call for req and issues a session of life;
// served says it is the session pods get (counted in sessions).
func (s *simSource) issue(req credentials.Request, life time.Duration, served bool) (credentials.Credentials, error) {
	s.mu.Lock()
	s.calls++
	s.running++
	n := s.calls
	if served {
		s.keys[req.Key()] = true
	}
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		s.running--
		s.mu.Unlock()
	}()
	now := s.clock.Now()
	return credentials.Credentials{
		AccessKeyID:     fmt.Sprintf("ASIASIM%013d", n),
		SecretAccessKey: "sim",
		SessionToken:    "sim",
		Expiration:      now.Add(life),
		LastUpdated:     now,
	}, nil
}

func (s *simSource) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.calls
}

func (s *simSource) idle() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.running == 0
}

func (s *simSource) sessions() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.keys)
}
