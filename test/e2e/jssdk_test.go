//go:build e2e

package e2e

import (
	"strings"
	"testing"
	"time"

	"github.com/kube2ra/kube2ra/test/harness"
)

// TestJSSDK runs the AWS SDK for JavaScript v3 (test/e2e/jsclient, the
// version hack/js-sdk pins) in pods on each credential source, through both
// doors, with nothing but what a user sets: its default chain finds
// credentials and signs STS GetCallerIdentity, which the fake STS answers
// only after verifying the SigV4 signature.
//   - Metadata door: pods annotated web and worker in a namespace without
//     the pod-identity label reach 169.254.169.254 with IMDSv2 (the agent
//     refuses IMDSv1) and each gets exactly its own role; a pod without an
//     annotation gets no credentials from the chain at all.
//   - Token door: pods whose ServiceAccounts name web and worker get the
//     injected AWS_CONTAINER_CREDENTIALS_FULL_URI and token file, and each
//     gets exactly its ServiceAccount's role; one whose ServiceAccount names
//     no role gets nothing, even though the metadata door is also there.
func TestJSSDK(t *testing.T) {
	if _, err := harness.JSSDKDir(); err != nil {
		t.Fatal(err)
	}
	for _, flavour := range flavours() {
		t.Run(string(flavour), func(t *testing.T) {
			ctx := ctxT(t)
			env := startEnvWith(t, harness.Options{Flavour: flavour, Roles: allRoles, PodIdentity: true})

			const imdsNS = "js-imds"
			mustNamespace(t, env, imdsNS, `["`+roleWeb+`", "`+roleWorker+`"]`)
			before := agentMetrics(t, env)
			for _, tt := range []struct{ pod, role string }{{"web", roleWeb}, {"worker", roleWorker}} {
				p := mustPod(t, env, harness.PodSpec{Namespace: imdsNS, Name: tt.pod, Annotations: roleAnnotation(tt.role)})
				if _, _, err := harness.InjectedEnv(p.Object); err == nil {
					t.Fatalf("pod %s/%s has the token door's variables; the metadata door would not be exercised", imdsNS, tt.pod)
				}
				assertJSSDK(t, env, p, tt.role, expectedSession(env, imdsNS, tt.pod))
			}
			// IMDSv2: the agent refuses token-less reads (401, route
			// unauthorized), so each run must have PUT for a token first.
			after := agentMetrics(t, env)
			count := func(m map[string]float64, route, code string) float64 {
				return harness.Sum(m, "kube2ra_http_requests_total", `route="`+route+`"`, `code="`+code+`"`)
			}
			if n := count(after, "token", "200") - count(before, "token", "200"); n < 2 {
				t.Errorf("the agent minted %v IMDSv2 tokens for two JS SDK runs, want at least 2", n)
			}
			if n := count(after, "unauthorized", "401") - count(before, "unauthorized", "401"); n != 0 {
				t.Errorf("the JS SDK made %v token-less (IMDSv1) reads, want 0", n)
			}
			bare := mustPod(t, env, harness.PodSpec{Namespace: imdsNS, Name: "no-role"})
			if got, err := env.JSSDK(ctx, bare); err == nil {
				t.Fatalf("JS SDK in a pod without a role got %s signing as %s", got.AccessKeyID, got.Arn)
			}

			const tokenNS = "js-token"
			mustPodIdentityNamespace(t, env, tokenNS)
			for _, tt := range []struct{ pod, sa, role string }{{"web", "web-sa", roleWeb}, {"worker", "worker-sa", roleWorker}} {
				p := mustPod(t, env, harness.PodSpec{Namespace: tokenNS, Name: tt.pod, ServiceAccount: tt.sa})
				if uri, _, err := harness.InjectedEnv(p.Object); err != nil || uri != "http://169.254.170.23/v1/credentials" {
					t.Fatalf("pod %s/%s: injected URI %q (%v), want the token door's", tokenNS, tt.pod, uri, err)
				}
				projectToken(t, env, p)
				assertJSSDK(t, env, p, tt.role, "")
			}
			other := mustPod(t, env, harness.PodSpec{Namespace: tokenNS, Name: "other", ServiceAccount: "other-sa"})
			projectToken(t, env, other)
			got, err := env.JSSDK(ctx, other)
			if err == nil {
				t.Fatalf("JS SDK in a pod whose ServiceAccount names no role got %s signing as %s", got.AccessKeyID, got.Arn)
			}
			// The chain falls from its Pod Identity provider to its ECS one,
			// which rejects the address: the message users see, which the
			// README's troubleshooting explains.
			if !strings.Contains(err.Error(), "169.254.170.23 is not a valid container metadata service hostname") {
				t.Errorf("JS SDK refused by the token door: %v; README's troubleshooting names another message", err)
			}

			metrics := agentMetrics(t, env)
			for _, result := range []string{"success", "no_role"} {
				if n := metrics[`kube2ra_pod_identity_requests_total{result="`+result+`"}`]; n < 1 {
					t.Errorf("kube2ra_pod_identity_requests_total{result=%q} = %v, want at least 1: the token door did not answer the JS SDK", result, n)
				}
			}
		})
	}
}

func agentMetrics(t *testing.T, env *harness.Env) map[string]float64 {
	t.Helper()
	m, err := env.Agent.Metrics()
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// assertJSSDK runs the JS SDK in p and checks that it got credentials the
// fake AWS issued for role (with session, when given) and that the fake STS
// verified its GetCallerIdentity signature as that role's session.
func assertJSSDK(t *testing.T, env *harness.Env, p *harness.Pod, role, session string) {
	t.Helper()
	client := "JS SDK in " + p.Namespace + "/" + p.Name
	start := time.Now()
	got, err := env.JSSDK(ctxT(t), p)
	if err != nil {
		t.Fatalf("%s: %v", client, err)
	}
	took := time.Since(start)
	assertIssuedFor(t, env, client, got.ClientCreds, role, session)
	_, issuedSession, _ := env.WhoIs(got.AccessKeyID)
	want := "arn:aws:sts::" + harness.Account + ":assumed-role/" + role + "/" + issuedSession
	if got.Arn != want {
		t.Fatalf("%s: GetCallerIdentity says %q, want %q", client, got.Arn, want)
	}
	t.Logf("%s: signed as %s in %s (node start, credential chain, GetCallerIdentity)", client, got.Arn, took.Round(time.Millisecond))
}
