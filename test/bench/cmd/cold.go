package main

import (
	"context"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kube2ra/kube2ra/k8s"
	"github.com/kube2ra/kube2ra/test/bench"
	"github.com/kube2ra/kube2ra/test/fakeaws/fakests"
	"github.com/kube2ra/kube2ra/test/harness"
)

// noPrefetchLatency is the fake AWS's answer time in the no-prefetch run.
const noPrefetchLatency = 100 * time.Millisecond

// tokenRefill is how long the agent's upstream token bucket (10/s, burst
// 50 by default) needs to fill again after a burst of 50 calls.
const tokenRefill = 5500 * time.Millisecond

func coldRole(prefix string, i int) string { return fmt.Sprintf("%s-%02d", prefix, i) }

// coldResult is one burst's per-pod figures in milliseconds.
type coldResult struct {
	// FirstMS is the start of the API write that made the pod servable
	// (its IP, or with prefetch off its binding) → first credentials read
	// in the pod. Starting at the call, not its return, counts the API
	// server's write latency against kube2ra: conservative.
	FirstMS []float64 `json:"first_ms"`
	// CallMS is how long that API write took.
	CallMS []float64 `json:"call_ms"`
	// HeadStartMS is how long before that write the agent could know the
	// pod and its role (Create returned → write; 0 without prefetch).
	HeadStartMS []float64 `json:"head_start_ms"`
	// UpstreamAtMS is when the fake AWS answered the pod's role's call,
	// relative to the write (negative: the prefetch was earlier).
	UpstreamAtMS []float64 `json:"upstream_at_ms"`
	// Attempts is the requests each pod sent.
	Attempts []int `json:"attempts"`
	// UpstreamCalls is what the fake AWS answered during the burst.
	UpstreamCalls int `json:"upstream_calls"`
}

// coldStarts measures a pod's first credential request. The pods' clients
// are already asking (before the pods exist in the API); the pods are then
// created in a burst, their IPs set one by one as a kubelet does, and the
// clock runs from the start of the write that sets each pod's IP to the
// first 200 with credentials, read in the pod (same machine, same clock).
//
// With prefetch (as the kubelet does it): Create bound to the node, then
// the IP through the status subresource; the agent can fetch from the
// Create on. Without prefetch (kube2ra has no switch for it): Create
// unbound, set the IP, then bind, so the agent learns pod, role and IP in
// one event and the upstream call is on the request path; the fake AWS
// answers in 100 ms.
func (s *suite) coldStarts(ctx context.Context) error {
	warm, err := s.coldBurst(ctx, "cold", true, false)
	if err != nil {
		return err
	}
	s.lastBurst = time.Now()
	s.logf("cold start, prefetch: p50 %.1f ms, p99 %.1f ms (upstream calls %d)", bench.NearestRank(warm.FirstMS, 0.5), bench.NearestRank(warm.FirstMS, 0.99), warm.UpstreamCalls)
	n := s.cfg.coldPods
	r := s.report
	r.Add("cold_first_request_p50_ms", bench.NearestRank(warm.FirstMS, 0.5), "ms",
		fmt.Sprintf("%d pods created in a burst, one role each (%d upstream calls); start of the IP's UpdateStatus → first 200 read in the pod", n, warm.UpstreamCalls))
	r.Add("cold_first_request_p99_ms", bench.NearestRank(warm.FirstMS, 0.99), "ms",
		fmt.Sprintf("nearest rank of %d (the worst pod); API write included (p50 %.0f ms, max %.0f ms); prefetch head start median %.0f ms",
			n, bench.NearestRank(warm.CallMS, 0.5), bench.NearestRank(warm.CallMS, 1), bench.Median(warm.HeadStartMS)))
	r.Detail("cold_prefetch", warm)
	return nil
}

// coldNoPrefetch is the cold start with the upstream call on the request
// path and the fake AWS answering in 100 ms.
func (s *suite) coldNoPrefetch(ctx context.Context) error {
	// Let the upstream rate limiter fill up again after the first burst,
	// so this one measures AWS latency, not that burst's debt.
	if wait := tokenRefill - time.Since(s.lastBurst); wait > 0 {
		time.Sleep(wait)
	}
	s.env.RA.SetLatency(noPrefetchLatency)
	slow, err := s.coldBurst(ctx, "nopf", false, false)
	s.env.RA.SetLatency(0)
	if err != nil {
		return err
	}
	s.lastBurst = time.Now()
	s.logf("cold start, no prefetch, AWS at 100 ms: p50 %.1f ms, p99 %.1f ms", bench.NearestRank(slow.FirstMS, 0.5), bench.NearestRank(slow.FirstMS, 0.99))
	s.report.Add("cold_noprefetch_p99_ms", bench.NearestRank(slow.FirstMS, 0.99), "ms",
		fmt.Sprintf("fake AWS at %s; pod, role and IP reach the agent in one event (Bind after the IP; clock from the Bind), so the call is on the request path; p50 %.1f ms",
			noPrefetchLatency, bench.NearestRank(slow.FirstMS, 0.5)))
	s.report.Detail("cold_no_prefetch_aws_100ms", slow)
	return nil
}

// chainAccount is the account of the chained cold start's target roles.
const chainAccount = "444455556666"

func chainTargetARN(role string) string { return "arn:aws:iam::" + chainAccount + ":role/" + role }

// coldChained is the prefetched cold start with a target role per pod
// (iam.amazonaws.com/target-role in another account): both hops, Roles
// Anywhere then STS, before the pod's first request.
func (s *suite) coldChained(ctx context.Context) error {
	if wait := tokenRefill - time.Since(s.lastBurst); wait > 0 {
		time.Sleep(wait)
	}
	r, err := s.coldBurst(ctx, "chain", true, true)
	if err != nil {
		return err
	}
	s.lastBurst = time.Now()
	n := s.cfg.coldPods
	targetCalls := 0
	for i := 0; i < n; i++ {
		targetCalls += len(s.env.STS.Sessions(chainTargetARN(coldRole("chain", i))))
	}
	s.logf("cold start, target role: p50 %.1f ms, p99 %.1f ms (first hops %d, target hops %d)", bench.NearestRank(r.FirstMS, 0.5), bench.NearestRank(r.FirstMS, 0.99), r.UpstreamCalls, targetCalls)
	s.report.Add("cold_chained_first_request_p50_ms", bench.NearestRank(r.FirstMS, 0.5), "ms",
		fmt.Sprintf("as cold_first_request, each of %d pods with a target role in another account: Roles Anywhere, then STS signed with that session, both prefetched", n))
	s.report.Add("cold_chained_first_request_p99_ms", bench.NearestRank(r.FirstMS, 0.99), "ms",
		fmt.Sprintf("nearest rank of %d; API write p50 %.0f ms", n, bench.NearestRank(r.CallMS, 0.5)))
	s.report.Add("upstream_calls_per_chained_session", float64(r.UpstreamCalls+targetCalls)/float64(n), "calls",
		fmt.Sprintf("%d CreateSession + %d AssumeRole for %d pods' first sessions (direct: 1 per session)", r.UpstreamCalls, targetCalls, n))
	s.report.Detail("cold_chained", r)
	return nil
}

// coldBurst runs one burst of cfg.coldPods pods in namespace prefix, each
// with its own role prefix-NN (so every pod costs one upstream call, two
// with a target role of the same name in chainAccount), and deletes them
// afterwards.
func (s *suite) coldBurst(ctx context.Context, prefix string, prefetch, target bool) (coldResult, error) {
	n := s.cfg.coldPods
	allowed := allowAll
	if target {
		allowed = `["*", "` + chainTargetARN("*") + `"]`
		for i := 0; i < n; i++ {
			if err := s.env.STS.AddRole(fakests.Role{ARN: chainTargetARN(coldRole(prefix, i)), Trust: []string{harness.RoleARN(coldRole(prefix, i))}}); err != nil {
				return coldResult{}, err
			}
		}
	}
	if err := s.env.CreateNamespace(ctx, prefix, allowed); err != nil {
		return coldResult{}, err
	}
	names := make([]string, n)
	for i := range names {
		names[i] = coldRole(prefix, i)
	}
	t0 := time.Now()
	nets, err := s.burstNets(ctx, n)
	if err != nil {
		return coldResult{}, err
	}
	// Every pod starts asking now, before its Pod object exists.
	deadline := time.Now().Add(30 * time.Second)
	pollers := make([]*subprocess, n)
	for i, net := range nets {
		p, err := s.startSub(ctx, net, "firstreq", bench.FirstRequestOptions{
			Addr: metadataAddr, Path: credPathPrefix + names[i], Deadline: deadline, Retry: 2 * time.Millisecond,
		})
		if err != nil {
			return coldResult{}, err
		}
		pollers[i] = p
	}
	for i, p := range pollers {
		if l, err := p.line(10 * time.Second); err != nil || l != "started" {
			return coldResult{}, fmt.Errorf("pod %s did not start asking (%q): %w", names[i], l, err)
		}
	}
	callsBefore := s.env.UpstreamCalls()
	s.logf("%s: %d pods' clients asking after %.1fs", prefix, n, time.Since(t0).Seconds())

	pods := s.fast.CoreV1().Pods(prefix)
	knownAt := make([]time.Time, n) // the agent may know the pod from here (prefetch)
	callAt := make([]time.Time, n)  // the call that makes the pod servable starts
	callDone := make([]time.Time, n)
	// First the burst that makes the pods exist (scheduler bindings), then
	// the writes that make them servable one at a time, as one kubelet's
	// status manager does: each pod's clock starts at its own write.
	objs := make([]*corev1.Pod, n)
	err = parallel(ctx, n, n, func(i int) error {
		pod := newPodObject(prefix, names[i], names[i])
		if target {
			pod.Annotations[k8s.TargetRoleKey] = chainTargetARN(names[i])
		}
		if !prefetch {
			pod.Spec.NodeName = "" // not scheduled yet: the agent does not see it
		}
		created, err := pods.Create(ctx, pod, metav1.CreateOptions{})
		knownAt[i] = time.Now()
		if err != nil {
			return err
		}
		setRunning(created, nets[i].IP.String())
		if !prefetch {
			// The IP while unbound: invisible to the agent until the bind.
			created, err = pods.UpdateStatus(ctx, created, metav1.UpdateOptions{})
		}
		objs[i] = created
		return err
	})
	for i := 0; i < n && err == nil; i++ {
		callAt[i] = time.Now()
		if prefetch {
			_, err = pods.UpdateStatus(ctx, objs[i], metav1.UpdateOptions{})
		} else {
			err = pods.Bind(ctx, &corev1.Binding{
				ObjectMeta: metav1.ObjectMeta{Namespace: prefix, Name: names[i]},
				Target:     corev1.ObjectReference{Kind: "Node", Name: harness.NodeName},
			}, metav1.CreateOptions{})
			knownAt[i] = callAt[i]
		}
		callDone[i] = time.Now()
	}
	if err != nil {
		return coldResult{}, fmt.Errorf("creating the %s pods: %w", prefix, err)
	}
	res := coldResult{}
	okAt := make([]time.Time, n)
	for i, p := range pollers {
		var fr bench.FirstRequestResult
		if err := p.result(time.Until(deadline)+5*time.Second, &fr); err != nil {
			return coldResult{}, fmt.Errorf("pod %s: %w; agent log:\n%s", names[i], err, s.agentLogTail())
		}
		okAt[i] = time.Unix(0, fr.OKUnixNano)
		res.Attempts = append(res.Attempts, fr.Attempts)
	}
	accepted := s.env.RA.Accepted()
	ms := func(a, b time.Time) float64 { return float64(b.Sub(a)) / 1e6 }
	for i := range pollers {
		res.FirstMS = append(res.FirstMS, ms(callAt[i], okAt[i]))
		res.CallMS = append(res.CallMS, ms(callAt[i], callDone[i]))
		res.HeadStartMS = append(res.HeadStartMS, max(0, ms(knownAt[i], callAt[i])))
		up := 0.0
		for _, a := range accepted {
			if a.RoleARN == harness.RoleARN(names[i]) {
				up = ms(callAt[i], a.Time)
			}
		}
		res.UpstreamAtMS = append(res.UpstreamAtMS, up)
	}
	res.UpstreamCalls = s.env.UpstreamCalls() - callsBefore
	// The network namespaces serve the next burst, with new pods on the
	// same IPs (as IPs are reused on a node).
	if err := s.deleteNamespacePods(ctx, prefix); err != nil {
		return res, err
	}
	return res, nil
}
