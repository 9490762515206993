//go:build e2e

// Package e2e judges kube2ra the way a user does: the built binary runs in a
// simulated node's network namespace with real iptables DNAT, a real
// kube-apiserver, and fake AWS endpoints that verify like AWS; processes in
// pod network namespaces use unmodified AWS SDKs and CLIs, or curl, against
// 169.254.169.254.
package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/kube2ra/kube2ra/credentials"
	"github.com/kube2ra/kube2ra/test/harness"
	"github.com/kube2ra/kube2ra/test/simnode"
)

func TestMain(m *testing.M) {
	if _, inside := simnode.Inside(); !inside {
		os.Exit(simnode.Reexec("k2r-e2e"))
	}
	os.Exit(m.Run())
}

// Roles the fake AWS knows.
const (
	roleWeb     = "web"
	roleWorker  = "worker"
	roleAdmin   = "app-admin"
	roleApp     = "app"
	roleDefault = "default-reader"
	roleReports = "reports"
)

var allRoles = []string{roleWeb, roleWorker, roleAdmin, roleApp, roleDefault, roleReports}

const credsPath = "/latest/meta-data/iam/security-credentials/"

func startEnv(t *testing.T, flavour harness.Flavour, args ...string) *harness.Env {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	env, err := harness.Start(ctx, harness.Options{Flavour: flavour, Roles: allRoles, AgentArgs: args})
	if err != nil {
		t.Fatalf("starting the %s environment: %v", flavour, err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("agent log (tail):\n%s", tailLines(env.Agent.Log(), 60))
		}
		env.Close()
	})
	return env
}

func tailLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

func mustPod(t *testing.T, env *harness.Env, spec harness.PodSpec) *harness.Pod {
	t.Helper()
	p, err := env.CreatePod(ctxT(t), spec)
	if err != nil {
		t.Fatalf("creating pod %s/%s: %v", spec.Namespace, spec.Name, err)
	}
	return p
}

func mustNamespace(t *testing.T, env *harness.Env, name, allowed string) {
	t.Helper()
	if err := env.CreateNamespace(ctxT(t), name, allowed); err != nil {
		t.Fatalf("creating namespace %s: %v", name, err)
	}
}

func roleAnnotation(role string) map[string]string {
	return map[string]string{"iam.amazonaws.com/role": role}
}

// imdsCreds is the credential document IMDS serves.
type imdsCreds struct {
	Code, Type, AccessKeyId, SecretAccessKey, Token, Expiration, LastUpdated string
}

// getCreds asks for the pod's credentials under roleName with curl and
// decodes them; it fails the test unless the answer is 200.
func getCreds(t *testing.T, p *harness.Pod, roleName string, token bool) imdsCreds {
	t.Helper()
	code, body, err := p.PodGet(ctxT(t), credsPath+roleName, token)
	if err != nil || code != 200 {
		t.Fatalf("pod %s/%s: GET %s%s: %d %q %v", p.Namespace, p.Name, credsPath, roleName, code, body, err)
	}
	var c imdsCreds
	if err := json.Unmarshal([]byte(body), &c); err != nil {
		t.Fatalf("credential document %q: %v", body, err)
	}
	if c.Code != "Success" || c.Type != "AWS-HMAC" {
		t.Fatalf("credential document %+v", c)
	}
	return c
}

// assertIssuedFor checks that the fake AWS issued accessKeyID for roleName,
// and, when secret and token are given, that they are the issued ones.
func assertIssuedFor(t *testing.T, env *harness.Env, client string, got harness.ClientCreds, roleName, wantSession string) {
	t.Helper()
	role, session, ok := env.WhoIs(got.AccessKeyID)
	if !ok {
		t.Fatalf("%s: access key %q was not issued by the fake AWS (node credentials or made up)", client, got.AccessKeyID)
	}
	if role != harness.RoleARN(roleName) {
		t.Fatalf("%s: got credentials for %s, want %s", client, role, harness.RoleARN(roleName))
	}
	if wantSession != "" && session != wantSession {
		t.Fatalf("%s: session name %q, want %q", client, session, wantSession)
	}
	if env.RA != nil {
		issued, _ := env.RA.Issued(got.AccessKeyID)
		if issued.SecretAccessKey != got.SecretAccessKey || issued.SessionToken != got.SessionToken {
			t.Fatalf("%s: secret or token differ from what Roles Anywhere issued for %s", client, got.AccessKeyID)
		}
	} else {
		if !env.STS.Matches(got.AccessKeyID, got.SecretAccessKey, got.SessionToken) {
			t.Fatalf("%s: secret or token differ from what STS issued for %s", client, got.AccessKeyID)
		}
	}
}

func flavours() []harness.Flavour { return []harness.Flavour{harness.RolesAnywhere, harness.EC2} }

// TestFlavours runs the scenarios that need no special agent flags, once per
// credential source, each on a fresh node.
func TestFlavours(t *testing.T) {
	for _, flavour := range flavours() {
		t.Run(string(flavour), func(t *testing.T) {
			env := startEnv(t, flavour)
			t.Run("AnnotatedPodGetsItsRoleThroughEveryClient", func(t *testing.T) { testEveryClient(t, env) })
		})
	}
}

func expectedSession(env *harness.Env, ns, pod string) string {
	if env.Flavour == harness.EC2 {
		return credentials.SessionName(ns, pod)
	}
	return "" // Roles Anywhere names the session after the certificate serial.
}

func testEveryClient(t *testing.T, env *harness.Env) {
	mustNamespace(t, env, "shop", `["web"]`)
	p := mustPod(t, env, harness.PodSpec{Namespace: "shop", Name: "web-1", Annotations: roleAnnotation(roleWeb)})
	session := expectedSession(env, "shop", "web-1")
	ctx := ctxT(t)

	goCreds, err := env.GoSDK(ctx, p)
	if err != nil {
		t.Fatalf("aws-sdk-go-v2: %v", err)
	}
	assertIssuedFor(t, env, "aws-sdk-go-v2", goCreds, roleWeb, session)
	if goCreds.Region != env.Region() {
		t.Errorf("aws-sdk-go-v2 found region %q, want %q", goCreds.Region, env.Region())
	}

	v2, err := env.CLIv2(ctx, p)
	if err != nil {
		t.Fatalf("AWS CLI v2: %v", err)
	}
	assertIssuedFor(t, env, "AWS CLI v2", v2, roleWeb, session)

	boto, err := env.Boto3(ctx, p)
	if err != nil {
		t.Fatalf("boto3: %v", err)
	}
	assertIssuedFor(t, env, "boto3", boto, roleWeb, session)

	arn, err := env.CLIv1CallerIdentity(ctx, p)
	if err != nil {
		t.Fatalf("AWS CLI v1: %v", err)
	}
	if !strings.Contains(arn, ":assumed-role/"+roleWeb+"/") {
		t.Fatalf("AWS CLI v1 get-caller-identity says %q, want an assumed-role session of %s", arn, roleWeb)
	}

	for _, token := range []bool{true, false} {
		c := getCreds(t, p, roleWeb, token)
		assertIssuedFor(t, env, fmt.Sprintf("curl (token %v)", token), harness.ClientCreds{AccessKeyID: c.AccessKeyId, SecretAccessKey: c.SecretAccessKey, SessionToken: c.Token}, roleWeb, session)
	}
}

// iptablesSave is the node's nat table, without counters and comments that vary.
func iptablesSave(t *testing.T) string {
	t.Helper()
	out, err := exec.Command("iptables-save", "-t", "nat").Output()
	if err != nil {
		t.Fatalf("iptables-save: %v", err)
	}
	var keep []string
	for _, l := range strings.Split(string(out), "\n") {
		if strings.HasPrefix(l, "#") || l == "" {
			continue
		}
		if strings.HasPrefix(l, ":") {
			l = strings.Fields(l)[0]
		}
		keep = append(keep, l)
	}
	return strings.Join(keep, "\n")
}
