//go:build e2e

package e2e

import (
	"fmt"
	"net/netip"
	"os"
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kube2ra/kube2ra/test/harness"
	"github.com/kube2ra/kube2ra/test/simnode"
)

// TestPodIdentity runs the token door end to end on each credential
// source: pods created from plain manifests are mutated by the chart's
// admission policy, get a token bound to them (the harness plays the
// kubelet: TokenRequest API, written to a file), and unmodified SDKs reach
// http://169.254.170.23/v1/credentials through the agent's DNAT with only
// the injected variables. Each gets exactly its ServiceAccount's role; a
// pod with another pod's token, or with none, gets nothing; a host-network
// process gets its pod's role through the nat OUTPUT redirect.
func TestPodIdentity(t *testing.T) {
	for _, flavour := range flavours() {
		t.Run(string(flavour), func(t *testing.T) {
			ctx := ctxT(t)
			env := startEnvWith(t, harness.Options{Flavour: flavour, Roles: allRoles, PodIdentity: true})
			const ns = "pi-e2e"
			mustPodIdentityNamespace(t, env, ns)

			web := mustPod(t, env, harness.PodSpec{Namespace: ns, Name: "web", ServiceAccount: "web-sa"})
			worker := mustPod(t, env, harness.PodSpec{Namespace: ns, Name: "worker", ServiceAccount: "worker-sa"})
			thief := mustPod(t, env, harness.PodSpec{Namespace: ns, Name: "thief", ServiceAccount: "other-sa"})
			for _, p := range []*harness.Pod{web, worker, thief} {
				uri, _, err := harness.InjectedEnv(p.Object)
				if err != nil {
					t.Fatalf("the admission policy did not mutate the plain pod: %v", err)
				}
				if uri != "http://169.254.170.23/v1/credentials" {
					t.Fatalf("injected URI %q", uri)
				}
			}
			webTokenFile, webToken := projectToken(t, env, web)
			projectToken(t, env, worker)
			projectToken(t, env, thief)

			for _, tt := range []struct {
				pod  *harness.Pod
				role string
			}{{web, roleWeb}, {worker, roleWorker}} {
				got, err := env.GoSDK(ctx, tt.pod)
				if err != nil {
					t.Fatalf("Go SDK in %s: %v", tt.pod.Name, err)
				}
				assertIssuedFor(t, env, "Go SDK in "+tt.pod.Name, got, tt.role, "")
				got, err = env.Boto3(ctx, tt.pod)
				if err != nil {
					t.Fatalf("boto3 in %s: %v", tt.pod.Name, err)
				}
				assertIssuedFor(t, env, "boto3 in "+tt.pod.Name, got, tt.role, "")
			}

			// other-sa names no role: the thief's own token gets nothing,
			// and web's token copied into the thief gets nothing either.
			if got, err := env.GoSDK(ctx, thief); err == nil {
				t.Fatalf("a pod whose ServiceAccount has no role got %s", got.AccessKeyID)
			}
			thief.Env = replaceEnv(thief.Env, "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE", webTokenFile)
			if got, err := env.GoSDK(ctx, thief); err == nil {
				t.Fatalf("another pod's token got %s", got.AccessKeyID)
			} else if !strings.Contains(err.Error(), "does not have the address") {
				t.Errorf("stolen token: %v, want the door's 403 for a token from another pod's address", err)
			}
			thief.Env = replaceEnv(thief.Env, "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE", "/dev/null")
			if got, err := env.GoSDK(ctx, thief); err == nil {
				t.Fatalf("a pod without a token got %s", got.AccessKeyID)
			}

			// A host-network pod: its process runs in the node namespace,
			// and 169.254.170.23 reaches the agent through nat OUTPUT.
			hostPod, err := env.CreateHostNetworkPod(ctx, ns, "hostnet", "web-sa")
			if err != nil {
				t.Fatal(err)
			}
			hostPod.Object.Spec.Volumes = web.Object.Spec.Volumes // the policy's volume, for ProjectToken
			hostPod.Object.Spec.Containers = web.Object.Spec.Containers
			projectToken(t, env, hostPod)
			got, err := env.GoSDKOnNode(ctx, append(hostPod.Env, "AWS_REGION="+env.Region(), "AWS_EC2_METADATA_DISABLED=true"))
			if err != nil {
				t.Fatalf("Go SDK on the host network: %v", err)
			}
			assertIssuedFor(t, env, "Go SDK on the host network", got, roleWeb, "")

			metrics, err := env.Agent.Metrics()
			if err != nil {
				t.Fatal(err)
			}
			for _, result := range []string{"success", "source_mismatch", "no_role", "malformed_token"} {
				if n := metrics[`kube2ra_pod_identity_requests_total{result="`+result+`"}`]; n < 1 {
					t.Errorf("kube2ra_pod_identity_requests_total{result=%q} = %v, want at least 1", result, n)
				}
			}
			if log := env.Agent.LogTail(400); strings.Contains(log, webToken[strings.LastIndex(webToken, ".")+1:]) {
				t.Error("the agent's log contains a token")
			}
		})
	}
}

// mustPodIdentityNamespace creates namespace ns allowing web and worker,
// labelled for the chart's admission policy, with the ServiceAccounts
// web-sa (iam.amazonaws.com/role: web), worker-sa (IRSA's annotation:
// worker) and other-sa (no role).
func mustPodIdentityNamespace(t *testing.T, env *harness.Env, ns string) {
	t.Helper()
	ctx := ctxT(t)
	mustPodIdentityLabelledNamespace(t, env, ns, `["`+roleWeb+`", "`+roleWorker+`"]`)
	for sa, ann := range map[string]map[string]string{
		"web-sa":    roleAnnotation(roleWeb),
		"worker-sa": {"eks.amazonaws.com/role-arn": harness.RoleARN(roleWorker)},
		"other-sa":  nil,
	} {
		if err := env.CreateServiceAccount(ctx, ns, sa, ann); err != nil {
			t.Fatal(err)
		}
	}
}

// mustPodIdentityLabelledNamespace creates namespace ns allowing allowed,
// labelled for the chart's admission policy.
func mustPodIdentityLabelledNamespace(t *testing.T, env *harness.Env, ns, allowed string) {
	t.Helper()
	ctx := ctxT(t)
	mustNamespace(t, env, ns, allowed)
	nsObj, err := env.Kube.CoreV1().Namespaces().Get(ctx, ns, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	nsObj.Labels = map[string]string{"kube2ra.io/pod-identity": "enabled"}
	if _, err := env.Kube.CoreV1().Namespaces().Update(ctx, nsObj, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
}

// projectToken writes the pod's token and returns its file and the token.
func projectToken(t *testing.T, env *harness.Env, p *harness.Pod) (string, string) {
	t.Helper()
	path, err := env.ProjectToken(ctxT(t), p)
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return path, string(b)
}

func replaceEnv(env []string, name, value string) []string {
	out := []string{}
	for _, kv := range env {
		if !strings.HasPrefix(kv, name+"=") {
			out = append(out, kv)
		}
	}
	return append(out, name+"="+value)
}

// TestPodIdentitySourceAddress: a token counts only from an address its
// pod owns. A terminating pod owns no address (the metadata door's rule):
// its token, copied into the pod that received its recycled IP, gets
// nothing. A host-network pod's token counts only from the node's own
// addresses: from another pod, or from another host on the node's
// network reaching the agent's port directly, it gets nothing.
func TestPodIdentitySourceAddress(t *testing.T) {
	ctx := ctxT(t)
	env := startEnvWith(t, harness.Options{Flavour: harness.EC2, Roles: allRoles, PodIdentity: true})
	const ns = "pi-source"
	mustPodIdentityNamespace(t, env, ns)

	t.Run("TerminatingPodsTokenFromItsRecycledIP", func(t *testing.T) {
		old := mustPod(t, env, harness.PodSpec{Namespace: ns, Name: "old", ServiceAccount: "web-sa"})
		oldTokenFile, _ := projectToken(t, env, old)
		got, err := env.GoSDK(ctx, old)
		if err != nil {
			t.Fatalf("the old pod with its own token: %v", err)
		}
		assertIssuedFor(t, env, "old pod", got, roleWeb, "")

		if err := env.TerminatePod(ctx, ns, "old"); err != nil {
			t.Fatal(err)
		}
		successor := mustPod(t, env, harness.PodSpec{Namespace: ns, Name: "successor", ServiceAccount: "worker-sa", IP: old.Net.IP})
		projectToken(t, env, successor)
		got, err = env.GoSDK(ctx, successor)
		if err != nil {
			t.Fatalf("the pod on the recycled IP with its own token: %v", err)
		}
		assertIssuedFor(t, env, "successor pod", got, roleWorker, "")

		successor.Env = replaceEnv(successor.Env, "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE", oldTokenFile)
		if got, err := env.GoSDK(ctx, successor); err == nil {
			t.Fatalf("the terminating pod's token from its recycled IP got %s", got.AccessKeyID)
		} else if !strings.Contains(err.Error(), "does not own the address") {
			t.Errorf("terminating pod's token: %v, want the door's 403 for an address its pod does not own", err)
		}
	})

	t.Run("HostNetworkTokenOnlyFromTheNode", func(t *testing.T) {
		web := mustPod(t, env, harness.PodSpec{Namespace: ns, Name: "web", ServiceAccount: "web-sa"})
		hostPod, err := env.CreateHostNetworkPod(ctx, ns, "hostnet", "web-sa")
		if err != nil {
			t.Fatal(err)
		}
		hostPod.Object.Spec.Volumes = web.Object.Spec.Volumes // the policy's volume, for ProjectToken
		hostPod.Object.Spec.Containers = web.Object.Spec.Containers
		hostTokenFile, hostToken := projectToken(t, env, hostPod)
		got, err := env.GoSDKOnNode(ctx, append(hostPod.Env, "AWS_REGION="+env.Region(), "AWS_EC2_METADATA_DISABLED=true"))
		if err != nil {
			t.Fatalf("Go SDK on the host network: %v", err)
		}
		assertIssuedFor(t, env, "Go SDK on the host network", got, roleWeb, "")

		thief := mustPod(t, env, harness.PodSpec{Namespace: ns, Name: "thief", ServiceAccount: "other-sa"})
		projectToken(t, env, thief)
		thief.Env = replaceEnv(thief.Env, "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE", hostTokenFile)
		if got, err := env.GoSDK(ctx, thief); err == nil {
			t.Errorf("a host-network pod's token from another pod got %s", got.AccessKeyID)
		} else if !strings.Contains(err.Error(), "node's own addresses") {
			t.Errorf("host-network token from a pod: %v, want the door's 403 for an address not the node's", err)
		}

		// Another host on the node's network reaches HOST_IP:app-port
		// itself (the SDKs allow only link-local and loopback over http, so
		// curl plays the client).
		peer, err := env.Node.AddPeerNode("node2", netip.MustParseAddr("10.199.0.11"))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = env.Node.RemovePod(peer.Name) })
		url := fmt.Sprintf("http://%s:%d%s", simnode.HostIP, harness.AppPort, "/v1/credentials")
		out, err := peer.Command(ctx, "curl", "-sS", "--max-time", "5", "-w", "\n%{http_code}", "-H", "Authorization: "+hostToken, url).Output()
		if err != nil {
			t.Fatalf("curl from the second node: %v (%s)", err, out)
		}
		body, status, _ := strings.Cut(string(out), "\n")
		if status != "403" || !strings.Contains(body, "node's own addresses") {
			if status == "200" {
				body = "(credentials)"
			}
			t.Fatalf("a host-network pod's token from another node: %s %s, want 403 for an address not the node's", status, body)
		}
	})
}
