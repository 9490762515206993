package main

import (
	"context"
	"fmt"
	"net"
	"strconv"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kube2ra/kube2ra/test/bench"
	"github.com/kube2ra/kube2ra/test/harness"
	"github.com/kube2ra/kube2ra/test/simnode"
)

// podIdentityAddr is the token door's address as pods dial it.
const podIdentityAddr = "169.254.170.23:80"

// podIdentityPath is the token door's route.
const podIdentityPath = "/v1/credentials"

// startPodIdentity starts a Roles Anywhere node with the token door open.
func (s *suite) startPodIdentity(ctx context.Context) error {
	return s.startEnvWith(ctx, harness.Options{Flavour: harness.RolesAnywhere, Roles: []string{loadRole}, PodIdentity: true})
}

// podIdentityRoute measures the token door (every request carries the
// pod's ServiceAccount token, verified once and then answered from the
// verified-token cache) against the same bare server the metadata route
// is compared with, and against the metadata route itself from the same
// pods in the same round.
func (s *suite) podIdentityRoute(ctx context.Context) error {
	env := s.env
	const ns = "pid"
	if err := env.CreateNamespace(ctx, ns, allowAll); err != nil {
		return err
	}
	nsObj, err := env.Kube.CoreV1().Namespaces().Get(ctx, ns, metav1.GetOptions{})
	if err != nil {
		return err
	}
	nsObj.Labels = map[string]string{"kube2ra.io/pod-identity": "enabled"}
	if _, err := env.Kube.CoreV1().Namespaces().Update(ctx, nsObj, metav1.UpdateOptions{}); err != nil {
		return err
	}
	if err := env.CreateServiceAccount(ctx, ns, "bench", map[string]string{"iam.amazonaws.com/role": loadRole}); err != nil {
		return err
	}
	specs := s.loadPodSpecs(ns)
	for i := range specs {
		specs[i].ServiceAccount = "bench"
	}
	pods, err := s.createPods(ctx, specs)
	if err != nil {
		return fmt.Errorf("creating the token-door pods: %w", err)
	}
	files := map[string]string{}
	for _, p := range pods {
		file, err := env.ProjectToken(ctx, p)
		if err != nil {
			return err
		}
		files[p.Net.IP.String()] = file
	}
	nets := podNets(pods)

	ref, err := s.fetchReference(ctx, nets[0], bench.FetchOptions{Addr: podIdentityAddr, Path: podIdentityPath, AuthorizationFiles: files})
	if err != nil {
		return err
	}
	baseline := bench.BaselineOptions{
		Addr: net.JoinHostPort(simnode.HostIP, strconv.Itoa(harness.AppPort)), Path: podIdentityPath,
		Header: ref.Header, Body: ref.Body,
		Hardened: s.cfg.hardenedBaseline,
	}
	door := s.loadOptions(podIdentityPath, `{"AccessKeyId":`)
	door.Addr, door.Token, door.AuthorizationFiles = podIdentityAddr, false, files
	metadata := s.loadOptions(credPathPrefix+loadRole, bench.CredentialsPrefix)

	var a, m, b []stats
	var rpsRatios, p99Ratios, vsCred []float64
	for round := 1; round <= s.cfg.rounds; round++ {
		ra, cpuA, err := s.runLoadCPU(ctx, nets, door, env.Agent.PID())
		if err == nil {
			err = checkClean("token door", ra)
		}
		if err != nil {
			return fmt.Errorf("round %d, token door: %w; agent log:\n%s", round, err, s.agentLogTail())
		}
		rm, err := s.runLoad(ctx, nets, metadata)
		if err == nil {
			err = checkClean("metadata door", rm)
		}
		if err != nil {
			return fmt.Errorf("round %d, metadata door: %w; agent log:\n%s", round, err, s.agentLogTail())
		}
		srv, err := s.replaceAgentWithBaseline(ctx, baseline)
		if err != nil {
			return err
		}
		rb, err := s.runLoad(ctx, nets, door)
		_ = srv.stop()
		if err == nil {
			err = checkClean("baseline", rb)
		}
		if err != nil {
			return fmt.Errorf("round %d, baseline: %w", round, err)
		}
		if err := s.restartAgent(ctx); err != nil {
			return err
		}
		sa, sm, sb := summarise(ra), summarise(rm), summarise(rb)
		sa.CPUPerReqUS = cpuPerReq(cpuA[0], ra.OK)
		s.logf("token door round %d: %8.0f req/s p99 %6.0f µs (agent CPU %5.1f µs/req) | metadata door %8.0f req/s p99 %6.0f µs | baseline %8.0f req/s p99 %6.0f µs",
			round, sa.RPS, sa.P99us, sa.CPUPerReqUS, sm.RPS, sm.P99us, sb.RPS, sb.P99us)
		a, m, b = append(a, sa), append(m, sm), append(b, sb)
		rpsRatios = append(rpsRatios, sa.RPS/sb.RPS)
		p99Ratios = append(p99Ratios, sa.P99us/sb.P99us)
		vsCred = append(vsCred, sa.RPS/sm.RPS)
	}
	if s.cfg.profileDir != "" {
		if err := s.profileLoad(ctx, "podid", nets, door); err != nil {
			return err
		}
	}
	conns := fmt.Sprintf("%d pods × %d keep-alive conns, a token per pod, %d rounds of %s", s.cfg.loadPods, s.cfg.connsPerPod, s.cfg.rounds, s.cfg.measure)
	r := s.report
	r.Add("pod_identity_rps", bench.Median(pick(a, rpsOf)), "req/s", fmt.Sprintf("median of rounds; %s; agent CPU %.1f µs/req", conns, bench.Median(pick(a, cpuOf))))
	r.Add("pod_identity_rps_ratio", bench.Median(rpsRatios), "ratio", "against the bare server of cred_rps_ratio serving the door's answer; pairwise: "+bench.JoinFloats(rpsRatios))
	r.Add("pod_identity_p99_us", bench.Median(pick(a, p99Of)), "us", "median of rounds: "+bench.JoinFloats(pick(a, p99Of)))
	r.Add("pod_identity_p99_ratio", bench.Median(p99Ratios), "ratio", "against the same bare server; pairwise: "+bench.JoinFloats(p99Ratios))
	r.Add("pod_identity_vs_cred_rps", bench.Median(vsCred), "ratio", fmt.Sprintf("token door / metadata door (IMDSv2) from the same pods in the same round; metadata p99 %.0f µs; pairwise: %s", bench.Median(pick(m, p99Of)), bench.JoinFloats(vsCred)))
	r.Detail("pod_identity_route", map[string]any{"door": a, "metadata": m, "baseline": b, "rps_ratios": rpsRatios, "p99_ratios": p99Ratios, "vs_cred": vsCred, "connections": conns})
	return nil
}
