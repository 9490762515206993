package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"slices"
	"strconv"
	"time"

	"github.com/kube2ra/kube2ra/test/bench"
	"github.com/kube2ra/kube2ra/test/fakeaws/fakeimds"
	"github.com/kube2ra/kube2ra/test/harness"
	"github.com/kube2ra/kube2ra/test/simnode"
)

// loadRole is the role of the pods under load.
const loadRole = "bench-0"

// passThroughPath is an allowlisted metadata path every SDK reads.
const passThroughPath = "/latest/meta-data/instance-id"

// raRoles are every role the Roles Anywhere node hands out.
func raRoles(cfg config) []string {
	roles := []string{}
	for i := range 5 {
		roles = append(roles, fmt.Sprintf("bench-%d", i))
	}
	for i := range cfg.coldPods {
		roles = append(roles, coldRole("cold", i), coldRole("nopf", i), coldRole("chain", i))
	}
	for i := range cfg.sessionRoles {
		roles = append(roles, fmt.Sprintf("sess-%d", i))
	}
	return roles
}

// loadPodSpecs are the pods that carry the closed-loop load.
func (s *suite) loadPodSpecs(namespace string) []harness.PodSpec {
	specs := make([]harness.PodSpec, s.cfg.loadPods)
	for i := range specs {
		specs[i] = harness.PodSpec{Namespace: namespace, Name: fmt.Sprintf("load-%d", i), Annotations: map[string]string{"iam.amazonaws.com/role": loadRole}}
	}
	return specs
}

// loadOptions is the closed-loop load of one A or B phase.
func (s *suite) loadOptions(path, expect string) bench.LoadOptions {
	return bench.LoadOptions{
		Addr: metadataAddr, Path: path, Conns: s.cfg.connsPerPod, Token: true,
		Warmup: s.cfg.warmup, Duration: s.cfg.measure, Timeout: 5 * time.Second, Expect: expect,
	}
}

// credRoute measures the cached credential route against the baseline:
// A = kube2ra, B = a bare net/http server on kube2ra's own address (kube2ra
// stopped; its DNAT rule stays, as it does on every exit), so both are
// reached by exactly the same packets through exactly the same rule.
func (s *suite) credRoute(ctx context.Context) error {
	env := s.env
	if err := env.CreateNamespace(ctx, "load", allowAll); err != nil {
		return err
	}
	pods, err := s.createPods(ctx, s.loadPodSpecs("load"))
	if err != nil {
		return fmt.Errorf("creating the load pods: %w", err)
	}
	nets := podNets(pods)
	path := credPathPrefix + loadRole

	// kube2ra's exact answer, for the baseline to repeat.
	ref, err := s.fetchReference(ctx, nets[0], bench.FetchOptions{Addr: metadataAddr, Path: path, Token: true})
	if err != nil {
		return err
	}
	baseline := bench.BaselineOptions{
		Addr:     net.JoinHostPort(simnode.HostIP, strconv.Itoa(harness.AppPort)),
		Path:     path,
		Header:   ref.Header,
		Body:     ref.Body,
		Hardened: s.cfg.hardenedBaseline,
	}
	opts := s.loadOptions(path, bench.CredentialsPrefix)

	var a, b []stats
	var rpsRatios, p99Ratios, rssLoad []float64
	var rssLoadMax rssReading
	for round := 1; round <= s.cfg.rounds; round++ {
		if !env.Agent.Running() {
			if err := s.restartAgent(ctx); err != nil {
				return err
			}
		}
		ra, cpuA, err := s.runLoadCPU(ctx, nets, opts, env.Agent.PID(), os.Getpid())
		if err == nil {
			err = checkClean("kube2ra", ra)
		}
		if err != nil {
			return fmt.Errorf("round %d, kube2ra: %w; agent log:\n%s", round, err, s.agentLogTail())
		}
		sa := summarise(ra)
		sa.CPUPerReqUS, sa.HarnessCPUPerReqUS = cpuPerReq(cpuA[0], ra.OK), cpuPerReq(cpuA[1], ra.OK)
		// Resident memory right after the load, the heap it grew still held.
		loaded, err := readRSS(env.Agent.PID())
		if err != nil {
			return err
		}
		rssLoad = append(rssLoad, loaded.MiB)
		if loaded.MiB > rssLoadMax.MiB {
			rssLoadMax = loaded
		}
		s.logf("credential route round %d: kube2ra  %8.0f req/s  p50 %6.0f µs  p99 %6.0f µs  server CPU %5.1f µs/req (log reader %4.1f)", round, sa.RPS, sa.P50us, sa.P99us, sa.CPUPerReqUS, sa.HarnessCPUPerReqUS)

		srv, err := s.replaceAgentWithBaseline(ctx, baseline)
		if err != nil {
			return err
		}
		rb, cpuB, err := s.runLoadCPU(ctx, nets, opts, srv.cmd.Process.Pid, os.Getpid())
		_ = srv.stop()
		if err == nil {
			err = checkClean("baseline", rb)
		}
		if err != nil {
			return fmt.Errorf("round %d, baseline: %w", round, err)
		}
		sb := summarise(rb)
		sb.CPUPerReqUS, sb.HarnessCPUPerReqUS = cpuPerReq(cpuB[0], rb.OK), cpuPerReq(cpuB[1], rb.OK)
		s.logf("credential route round %d: baseline %8.0f req/s  p50 %6.0f µs  p99 %6.0f µs  server CPU %5.1f µs/req (harness %4.1f; load avg %s)", round, sb.RPS, sb.P50us, sb.P99us, sb.CPUPerReqUS, sb.HarnessCPUPerReqUS, loadAverage())
		if err := s.restartAgent(ctx); err != nil {
			return err
		}
		a, b = append(a, sa), append(b, sb)
		rpsRatios = append(rpsRatios, sa.RPS/sb.RPS)
		p99Ratios = append(p99Ratios, sa.P99us/sb.P99us)
	}
	if s.cfg.profileDir != "" {
		if err := s.profileLoad(ctx, "cred", nets, opts); err != nil {
			return err
		}
	}
	conns := fmt.Sprintf("%d pods × %d keep-alive conns, IMDSv2, %d rounds of %s", s.cfg.loadPods, s.cfg.connsPerPod, s.cfg.rounds, s.cfg.measure)
	r := s.report
	r.Add("cred_rps", bench.Median(pick(a, rpsOf)), "req/s", fmt.Sprintf("median of rounds; %s; agent CPU %.1f µs/req", conns, bench.Median(pick(a, cpuOf))))
	r.Add("baseline_rps", bench.Median(pick(b, rpsOf)), "req/s", fmt.Sprintf("bare net/http on HOST_IP:8181 behind the same DNAT rule; its CPU %.1f µs/req", bench.Median(pick(b, cpuOf))))
	r.Add("cred_rps_ratio", bench.Median(rpsRatios), "ratio", "median of pairwise A/B ratios: "+bench.JoinFloats(rpsRatios))
	r.Add("cred_p50_us", bench.Median(pick(a, p50Of)), "us", "median of rounds")
	r.Add("cred_p99_us", bench.Median(pick(a, p99Of)), "us", "median of rounds: "+bench.JoinFloats(pick(a, p99Of)))
	r.Add("baseline_p99_us", bench.Median(pick(b, p99Of)), "us", "median of rounds: "+bench.JoinFloats(pick(b, p99Of)))
	r.Add("cred_p99_ratio", bench.Median(p99Ratios), "ratio", "median of pairwise A/B ratios: "+bench.JoinFloats(p99Ratios))
	r.Add("rss_mib_load", slices.Max(rssLoad), "MiB", fmt.Sprintf("VmRSS at the end of each round's load (the node of the memory phase: its pods and namespaces); highest of %s (%s)", bench.JoinFloats(rssLoad), rssLoadMax.parts()))
	r.Detail("cred_route", map[string]any{"rss_load": rssLoad, "kube2ra": a, "baseline": b, "rps_ratios": rpsRatios, "p99_ratios": p99Ratios, "connections": conns})
	return nil
}

// replaceAgentWithBaseline stops the agent (its DNAT rules stay) and starts
// the bare server on its address.
func (s *suite) replaceAgentWithBaseline(ctx context.Context, baseline bench.BaselineOptions) (*subprocess, error) {
	if err := s.env.Agent.Stop(); err != nil {
		return nil, fmt.Errorf("stopping the agent for the baseline: %w", err)
	}
	srv, err := s.startSub(ctx, nil, "baseline", baseline)
	if err != nil {
		return nil, err
	}
	if l, err := srv.line(10 * time.Second); err != nil || l != "listening" {
		return nil, fmt.Errorf("baseline did not start (%q): %w", l, err)
	}
	return srv, nil
}

// fetchReference asks kube2ra from pod net until it answers 200 (the pod
// may not be known yet): its exact answer, for the baseline to repeat.
func (s *suite) fetchReference(ctx context.Context, net *simnode.Pod, o bench.FetchOptions) (bench.Response, error) {
	var ref bench.Response
	deadline := time.Now().Add(20 * time.Second)
	for {
		p, err := s.startSub(ctx, net, "fetch", o)
		if err == nil {
			err = p.result(10*time.Second, &ref)
		}
		if err == nil && ref.Status == 200 {
			return ref, nil
		}
		if time.Now().After(deadline) {
			return ref, fmt.Errorf("the load pod never got its credentials from %s%s (last: %d, %v); agent log:\n%s", o.Addr, o.Path, ref.Status, err, s.agentLogTail())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// restartAgent starts the agent and waits until it is ready.
func (s *suite) restartAgent(ctx context.Context) error {
	if err := s.env.Agent.Start(); err != nil {
		return err
	}
	rctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	return s.env.Agent.WaitReady(rctx)
}

// passThrough measures an allowlisted path through kube2ra (A, from pods)
// against the fake upstream asked directly (B, from the node namespace,
// where no DNAT applies), alternating.
func (s *suite) passThrough(ctx context.Context) error {
	env := s.env
	if err := env.CreateNamespace(ctx, "pt", allowAll); err != nil {
		return err
	}
	pods, err := s.createPods(ctx, s.loadPodSpecs("pt"))
	if err != nil {
		return fmt.Errorf("creating the pass-through pods: %w", err)
	}
	nets := podNets(pods)
	direct := make([]*simnode.Pod, len(nets)) // nil: run in the node namespace
	opts := s.loadOptions(passThroughPath, env.IMDS.InstanceID())
	var a, b []stats
	var conns, reqs []int
	for round := 1; round <= s.cfg.rounds; round++ {
		ra, cpuA, err := s.runLoadCPU(ctx, nets, opts, env.Agent.PID())
		upstreamConns, upstreamReqs := connectionsSeen(env.IMDS.Requests())
		env.IMDS.ResetRequests()
		if err == nil {
			err = checkClean("pass-through", ra)
		}
		if err != nil {
			return fmt.Errorf("round %d, pass-through: %w; agent log:\n%s", round, err, s.agentLogTail())
		}
		rb, err := s.runLoad(ctx, direct, opts)
		env.IMDS.ResetRequests()
		if err == nil {
			err = checkClean("direct upstream", rb)
		}
		if err != nil {
			return fmt.Errorf("round %d, direct upstream: %w", round, err)
		}
		sa, sb := summarise(ra), summarise(rb)
		sa.CPUPerReqUS = cpuPerReq(cpuA[0], ra.OK)
		s.logf("pass-through round %d: kube2ra %8.0f req/s p99 %6.0f µs | direct %8.0f req/s p99 %6.0f µs | upstream saw %d connections for %d requests from kube2ra",
			round, sa.RPS, sa.P99us, sb.RPS, sb.P99us, upstreamConns, upstreamReqs)
		a, b = append(a, sa), append(b, sb)
		conns = append(conns, upstreamConns)
		reqs = append(reqs, upstreamReqs)
	}
	r := s.report
	r.Add("passthrough_rps", bench.Median(pick(a, rpsOf)), "req/s", fmt.Sprintf("%s via kube2ra to the fake IMDS (EC2 node); direct: %.0f req/s; agent CPU %.1f µs/req", passThroughPath, bench.Median(pick(b, rpsOf)), bench.Median(pick(a, cpuOf))))
	r.Add("passthrough_p99_us", bench.Median(pick(a, p99Of)), "us", "median of rounds: "+bench.JoinFloats(pick(a, p99Of)))
	r.Add("direct_upstream_p99_us", bench.Median(pick(b, p99Of)), "us", "same load from the node namespace straight to the fake IMDS")
	r.Detail("pass_through", map[string]any{"kube2ra": a, "direct": b, "upstream_connections": conns, "upstream_requests": reqs})
	return nil
}

// connectionsSeen counts the distinct client connections (source address
// and port) among the upstream's recorded requests, and those requests
// (during a kube2ra phase only kube2ra talks to it).
func connectionsSeen(reqs []fakeimds.Request) (conns, n int) {
	seen := map[string]bool{}
	for _, r := range reqs {
		seen[r.RemoteAddr] = true
	}
	return len(seen), len(reqs)
}

func pick(xs []stats, f func(stats) float64) []float64 {
	out := make([]float64, len(xs))
	for i, x := range xs {
		out[i] = f(x)
	}
	return out
}

func rpsOf(s stats) float64 { return s.RPS }
func cpuOf(s stats) float64 { return s.CPUPerReqUS }

// cpuPerReq is CPU microseconds per request.
func cpuPerReq(cpu time.Duration, n uint64) float64 {
	if n == 0 {
		return 0
	}
	return float64(cpu) / float64(time.Microsecond) / float64(n)
}
func p50Of(s stats) float64 { return s.P50us }
func p99Of(s stats) float64 { return s.P99us }
