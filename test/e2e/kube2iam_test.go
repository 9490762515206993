//go:build e2e

package e2e

import (
	"fmt"
	"net"
	"strings"
	"testing"

	"github.com/kube2ra/kube2ra/test/harness"
	"github.com/kube2ra/kube2ra/test/simnode"
)

// TestKube2iamSharedPort runs the agent as kube2iam's chart lays it out,
// --metrics-port equal to --app-port (with --verbose), on a dual-stack node
// with the token door: through every DNAT a pod can use (169.254.169.254,
// fd00:ec2::254, 169.254.170.23) the ops routes get IMDS's 404 while its
// credentials are served on the same port; the node dialing HOST_IP:port
// itself (as Prometheus and the kubelet's probes do), over IPv4 and IPv6,
// gets the ops routes.
func TestKube2iamSharedPort(t *testing.T) {
	env := startEnvWith(t, harness.Options{
		Flavour: harness.RolesAnywhere, Roles: allRoles, IPv6: true, PodIdentity: true,
		MetricsPort: harness.AppPort, AgentArgs: []string{"--verbose"},
	})
	mustNamespace(t, env, "shared", `["web"]`)
	p := mustPod(t, env, harness.PodSpec{Namespace: "shared", Name: "web", Annotations: roleAnnotation(roleWeb)})

	for _, base := range []string{"http://169.254.169.254", "http://[fd00:ec2::254]", "http://169.254.170.23"} {
		for _, path := range []string{"/metrics", "/healthz", "/readyz", "/debug/store"} {
			code, body, err := p.PodGetAt(ctxT(t), base, path, false)
			if err != nil || code != 404 || strings.Contains(body, "kube2ra_") || body == "ok" {
				t.Errorf("pod GET %s%s: %d %q %v, want IMDS's 404", base, path, code, body, err)
			}
		}
	}
	if code, body, err := p.PodGet(ctxT(t), credsPath+roleWeb, true); err != nil || code != 200 || !strings.Contains(body, "SecretAccessKey") {
		t.Errorf("pod credentials on the shared port: %d %.80q %v, want 200", code, body, err)
	}

	for _, host := range []string{simnode.HostIP, simnode.HostIPv6} {
		base := "http://" + net.JoinHostPort(host, fmt.Sprint(harness.AppPort))
		if code, body, err := harness.Get(base + "/metrics"); err != nil || code != 200 || !strings.Contains(body, "kube2ra_build_info") {
			t.Errorf("node GET %s/metrics: %d %v, want 200 with kube2ra_build_info", base, code, err)
		}
		for _, path := range []string{"/healthz", "/readyz"} {
			if code, body, err := harness.Get(base + path); err != nil || code != 200 || body != "ok" {
				t.Errorf("node GET %s%s: %d %q %v, want 200 ok", base, path, code, body, err)
			}
		}
	}
	if log := env.Agent.LogTail(400); !strings.Contains(log, "level=debug") {
		t.Errorf("--verbose did not turn on debug logs:\n%s", env.Agent.LogTail(20))
	}
}
