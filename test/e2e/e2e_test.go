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
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kube2ra/kube2ra/credentials"
	"github.com/kube2ra/kube2ra/handover"
	"github.com/kube2ra/kube2ra/test/fakeaws/fakeimds"
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

const fakeimdsSecretMarker = fakeimds.SecretMarker

const credsPath = "/latest/meta-data/iam/security-credentials/"

func startEnv(t *testing.T, flavour harness.Flavour, args ...string) *harness.Env {
	t.Helper()
	return startEnvWith(t, harness.Options{Flavour: flavour, Roles: allRoles, AgentArgs: args})
}

// startEnvWith starts an environment with opts and closes it at the end of the test.
func startEnvWith(t *testing.T, opts harness.Options) *harness.Env {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	env, err := harness.Start(ctx, opts)
	if err != nil {
		t.Fatalf("starting the %s environment: %v", opts.Flavour, err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("agent log (tail):\n%s", env.Agent.LogTail(60))
		}
		env.Close()
	})
	return env
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
			t.Run("NoRoleAndNoDefaultRoleIs404NeverTheNodeRole", func(t *testing.T) { testNoRole(t, env) })
			t.Run("NamespacePolicyAllowsDeniesAndFollowsLiveEdits", func(t *testing.T) { testNamespacePolicy(t, env) })
			t.Run("RoleInURLOtherThanThePodsIs404", func(t *testing.T) { testWrongRoleInURL(t, env) })
			t.Run("ReusedPodIPGetsTheNewPodsRoleFromItsFirstRequest", func(t *testing.T) { testIPReuse(t, env) })
			t.Run("NewPodsFirstRequestIsACacheHit", func(t *testing.T) { testPrefetch(t, env) })
			if flavour == harness.EC2 {
				t.Run("NodeSecretsNeverReachAPodAllowedPathsDo", func(t *testing.T) { testEC2Paths(t, env) })
			}
			t.Run("DefaultRoleAndRegexpPolicies", func(t *testing.T) { testDefaultRoleAndRegexp(t, env) })
			t.Run("IMDSv2Required", func(t *testing.T) { testIMDSv2Required(t, env) })
			t.Run("AgentRestartUnderLoadFailsClosed", func(t *testing.T) { testAgentRestart(t, env) })
			t.Run("TokensSurviveAKilledAgent", func(t *testing.T) { testTokensSurviveAKill(t, env) })
			t.Run("HandoverUnderLoadLosesNoRequest", func(t *testing.T) { testHandoverUnderLoad(t, env) })
			t.Run("HandoverToAnotherPortLosesNoRequest", func(t *testing.T) { testHandoverToAnotherPort(t, env) })
			t.Run("FlushedNatTableIsRestored", func(t *testing.T) { testFlushRestored(t, env) })
			if flavour == harness.EC2 {
				t.Run("FlushedNatTableFailsClosed", func(t *testing.T) { testNatFlushFailsClosed(t, env) })
			}
			if flavour == harness.EC2 {
				t.Run("HopLimitKeepsTokensFromPodsButNotFromTheAgent", func(t *testing.T) { testHopLimit(t, env) })
			}
			if flavour == harness.RolesAnywhere {
				// On EC2 a pod reaches the instance's own metadata service
				// until the agent is first installed; that is the node's
				// hop-limit setting, not kube2ra's.
				t.Run("NoRuleUntilTheAgentCanAnswer", func(t *testing.T) { testNoRuleBeforeReady(t, env) })
			}
			if flavour == harness.EC2 {
				t.Run("ExposedNodeMetadataIsReported", func(t *testing.T) { testMetadataExposure(t, env) })
			}
			t.Run("WrongHostInterfaceIsNotReady", func(t *testing.T) { testWrongInterface(t, env) })
			t.Run("DebugStoreOnlyOnTheNode", func(t *testing.T) { testDebugStoreOnTheNode(t, env) })
			t.Run("RulesKeptOnSIGTERMUnlessTheDaemonSetIsGone", func(t *testing.T) { testRulesOnExit(t, env) })
		})
	}
}

func expectedSession(env *harness.Env, ns, pod string) string {
	if env.Flavour == harness.EC2 {
		return credentials.SessionName(ns, pod)
	}
	return credentials.NodeSessionName(harness.NodeName) // --session-name's Roles Anywhere default
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

	c := getCreds(t, p, roleWeb, true)
	assertIssuedFor(t, env, "curl with a token", harness.ClientCreds{AccessKeyID: c.AccessKeyId, SecretAccessKey: c.SecretAccessKey, SessionToken: c.Token}, roleWeb, session)
	// IMDSv1 is refused by default (--imdsv2-required), as IMDS does with HttpTokens=required.
	expectStatus(t, env, p, credsPath+roleWeb, false, 401)
}

// iptablesSave is the node's nat table (the DNAT) and filter table (the
// guard), without counters and comments that vary.
func iptablesSave(t *testing.T) string {
	t.Helper()
	var out []byte
	for _, table := range []string{"nat", "filter"} {
		b, err := exec.Command("iptables-save", "-t", table).Output()
		if err != nil {
			t.Fatalf("iptables-save -t %s: %v", table, err)
		}
		out = append(out, b...)
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

// nodeSecrets are strings that must never appear in an answer to a pod.
func nodeSecrets(env *harness.Env) []string {
	if env.IMDS == nil {
		return nil
	}
	c := env.IMDS.Credentials()
	return []string{c.AccessKeyID, c.SecretAccessKey, c.Token, fakeimdsSecretMarker}
}

func assertNoSecrets(t *testing.T, env *harness.Env, what, body string) {
	t.Helper()
	for _, secret := range nodeSecrets(env) {
		if secret != "" && strings.Contains(body, secret) {
			t.Fatalf("%s: the answer carries node secret material: %q", what, body)
		}
	}
}

func expectStatus(t *testing.T, env *harness.Env, p *harness.Pod, path string, token bool, want int) string {
	t.Helper()
	code, body, err := p.PodGet(ctxT(t), path, token)
	if err != nil {
		t.Fatalf("pod %s/%s GET %s: %v", p.Namespace, p.Name, path, err)
	}
	assertNoSecrets(t, env, path, body)
	if code != want {
		t.Fatalf("pod %s/%s GET %s: status %d (%q), want %d", p.Namespace, p.Name, path, code, body, want)
	}
	return body
}

// eventually retries f until it returns nil or the informer-propagation
// budget is spent.
func eventually(t *testing.T, what string, f func() error) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %v", what, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func statusIs(p *harness.Pod, path string, want int) func() error {
	return func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		code, body, err := p.PodGet(ctx, path, true)
		if err != nil {
			return err
		}
		if code != want {
			return fmt.Errorf("status %d (%q), want %d", code, body, want)
		}
		return nil
	}
}

func testNoRole(t *testing.T, env *harness.Env) {
	mustNamespace(t, env, "plain", `["*"]`)
	p := mustPod(t, env, harness.PodSpec{Namespace: "plain", Name: "no-role"})
	expectStatus(t, env, p, credsPath, true, 404)
	expectStatus(t, env, p, strings.TrimSuffix(credsPath, "/"), true, 404)
	expectStatus(t, env, p, credsPath+"node-instance-role", true, 404)
	expectStatus(t, env, p, "/latest/meta-data/iam/info", true, 404)
}

func testNamespacePolicy(t *testing.T, env *harness.Env) {
	mustNamespace(t, env, "team", `["app"]`)
	allowed := mustPod(t, env, harness.PodSpec{Namespace: "team", Name: "allowed", Annotations: roleAnnotation(roleApp)})
	denied := mustPod(t, env, harness.PodSpec{Namespace: "team", Name: "denied", Annotations: roleAnnotation(roleAdmin)})
	if body := expectStatus(t, env, allowed, credsPath, true, 200); body != roleApp {
		t.Fatalf("allowed pod lists %q, want %q", body, roleApp)
	}
	getCreds(t, allowed, roleApp, true)
	// The pattern "app" must not allow "app-admin".
	expectStatus(t, env, denied, credsPath, true, 404)
	expectStatus(t, env, denied, credsPath+roleAdmin, true, 404)

	// RoleDenied is an Event on the pod, visible with kubectl.
	eventually(t, "RoleDenied event on team/denied", func() error {
		out, err := exec.Command("kubectl", "--kubeconfig", env.CP.Kubeconfig, "get", "events", "-n", "team",
			"--field-selector", "reason=RoleDenied,involvedObject.name=denied", "-o", "name").CombinedOutput()
		if err != nil {
			return fmt.Errorf("kubectl: %v: %s", err, out)
		}
		if strings.TrimSpace(string(out)) == "" {
			return fmt.Errorf("no RoleDenied event yet")
		}
		return nil
	})

	// Live edit: app-* now allows app-admin, without a restart.
	if err := env.SetNamespacePolicy(ctxT(t), "team", `["app", "app-*"]`); err != nil {
		t.Fatal(err)
	}
	eventually(t, "live policy edit allows app-admin", statusIs(denied, credsPath+roleAdmin, 200))
	c := getCreds(t, denied, roleAdmin, true)
	assertIssuedFor(t, env, "curl after live edit", harness.ClientCreds{AccessKeyID: c.AccessKeyId, SecretAccessKey: c.SecretAccessKey, SessionToken: c.Token}, roleAdmin, "")

	// A malformed policy denies everything and says so on the namespace.
	if err := env.SetNamespacePolicy(ctxT(t), "team", `app-*`); err != nil {
		t.Fatal(err)
	}
	eventually(t, "malformed policy denies", statusIs(allowed, credsPath+roleApp, 404))
	expectStatus(t, env, denied, credsPath+roleAdmin, true, 404)
	eventually(t, "InvalidRolePolicy event for namespace team", func() error {
		out, err := exec.Command("kubectl", "--kubeconfig", env.CP.Kubeconfig, "get", "events", "-A",
			"--field-selector", "reason=InvalidRolePolicy,involvedObject.name=team", "-o", "name").CombinedOutput()
		if err != nil {
			return fmt.Errorf("kubectl: %v: %s", err, out)
		}
		if strings.TrimSpace(string(out)) == "" {
			return fmt.Errorf("no InvalidRolePolicy event yet")
		}
		return nil
	})
}

func testWrongRoleInURL(t *testing.T, env *harness.Env) {
	mustNamespace(t, env, "urls", `["web", "worker"]`)
	p := mustPod(t, env, harness.PodSpec{Namespace: "urls", Name: "web", Annotations: roleAnnotation(roleWeb)})
	getCreds(t, p, roleWeb, true)
	expectStatus(t, env, p, credsPath+roleWorker, true, 404)
	expectStatus(t, env, p, credsPath+"WEB", true, 404)
}

func testIPReuse(t *testing.T, env *harness.Env) {
	mustNamespace(t, env, "reuse", `["web", "worker"]`)
	a := mustPod(t, env, harness.PodSpec{Namespace: "reuse", Name: "a", Annotations: roleAnnotation(roleWeb)})
	getCreds(t, a, roleWeb, true)
	ip := a.Net.IP
	if err := env.DeletePod(ctxT(t), "reuse", "a"); err != nil {
		t.Fatal(err)
	}
	b := mustPod(t, env, harness.PodSpec{Namespace: "reuse", Name: "b", Annotations: roleAnnotation(roleWorker), IP: ip})
	// The very first request of b: never a's role.
	code, body, err := b.PodGet(ctxT(t), credsPath, true)
	if err != nil {
		t.Fatal(err)
	}
	if code != 200 || body != roleWorker {
		t.Fatalf("first request of the pod reusing %s: %d %q, want 200 %q", ip, code, body, roleWorker)
	}
	c := getCreds(t, b, roleWorker, true)
	assertIssuedFor(t, env, "reused IP", harness.ClientCreds{AccessKeyID: c.AccessKeyId, SecretAccessKey: c.SecretAccessKey, SessionToken: c.Token}, roleWorker, expectedSession(env, "reuse", "b"))
}

func testPrefetch(t *testing.T, env *harness.Env) {
	mustNamespace(t, env, "fresh", `["reports"]`)
	before, err := env.Agent.Metrics()
	if err != nil {
		t.Fatal(err)
	}
	p := mustPod(t, env, harness.PodSpec{Namespace: "fresh", Name: "reporter", Annotations: roleAnnotation(roleReports)})
	// The pod's application starts after its IP is set; by then the agent
	// has seen the pod and fetched its credentials.
	eventually(t, "prefetch for the new pod", func() error {
		m, err := env.Agent.Metrics()
		if err != nil {
			return err
		}
		if harness.Sum(m, "kube2ra_credential_prefetches_total") <= harness.Sum(before, "kube2ra_credential_prefetches_total") {
			return fmt.Errorf("no prefetch yet")
		}
		return nil
	})
	mid, err := env.Agent.Metrics()
	if err != nil {
		t.Fatal(err)
	}
	getCreds(t, p, roleReports, true)
	after, err := env.Agent.Metrics()
	if err != nil {
		t.Fatal(err)
	}
	hits := harness.Sum(after, "kube2ra_credential_cache_hits_total") - harness.Sum(mid, "kube2ra_credential_cache_hits_total")
	misses := harness.Sum(after, "kube2ra_credential_cache_misses_total") - harness.Sum(mid, "kube2ra_credential_cache_misses_total")
	if hits != 1 || misses != 0 {
		t.Fatalf("first request of a new pod: %v hits, %v misses; want 1 hit, 0 misses", hits, misses)
	}
}

func testEC2Paths(t *testing.T, env *harness.Env) {
	mustNamespace(t, env, "ec2paths", `["web"]`)
	p := mustPod(t, env, harness.PodSpec{Namespace: "ec2paths", Name: "web", Annotations: roleAnnotation(roleWeb)})
	env.IMDS.ResetRequests()
	forbidden := []string{
		"/latest/user-data",
		"/latest/user-data/",
		"/latest/meta-data/iam/security-credentials/node-instance-role",
		"/latest/meta-data/iam/security-credentials//node-instance-role",
		"/latest/meta-data/iam/security-credentials/web/../node-instance-role",
		"/latest/meta-data/iam/security-credentials/%6eode-instance-role",
		"/latest//user-data",
		"/latest/meta-data/../user-data",
		"/latest/dynamic/instance-identity/pkcs7",
		"/latest/dynamic/instance-identity/signature",
		"/latest/dynamic/instance-identity/rsa2048",
		"/latest/meta-data/identity-credentials/ec2/security-credentials/ec2-instance",
		"/2021-07-15/user-data",
		"/latest/Meta-Data/iam/security-credentials/node-instance-role",
		"/latest/meta-data/iam/security-credentials-extended/node-instance-role",
		"/latest/meta-data/IAM/security-credentials-extended/node-instance-role",
		"/latest/meta-data/iam/Security-Credentials/node-instance-role",
		"/latest/meta-data/IDENTITY-CREDENTIALS/ec2/security-credentials/ec2-instance",
	}
	for _, path := range forbidden {
		code, body, err := p.PodGet(ctxT(t), path, true)
		if err != nil {
			t.Fatalf("GET %s: %v", path, err)
		}
		assertNoSecrets(t, env, path, body)
		if code == 200 {
			t.Fatalf("GET %s answered 200 (%q): must be refused", path, body)
		}
	}
	for _, r := range env.IMDS.Requests() {
		for _, bad := range []string{"user-data", "pkcs7", "signature", "rsa2048", "identity-credentials", "security-credentials"} {
			if strings.Contains(strings.ToLower(r.RequestURI), bad) {
				t.Fatalf("a forbidden path reached the upstream metadata service: %s", r.RequestURI)
			}
		}
	}
	// The extended directory is kube2ra's answer for the pod's own role,
	// with the role's account, never the node's.
	if body := expectStatus(t, env, p, "/latest/meta-data/iam/security-credentials-extended/", true, 200); body != roleWeb {
		t.Fatalf("extended listing %q, want %q", body, roleWeb)
	}
	ext := expectStatus(t, env, p, "/latest/meta-data/iam/security-credentials-extended/"+roleWeb, true, 200)
	assertNoSecrets(t, env, "extended document", ext)
	var doc struct{ Code, AccessKeyId, AccountId string }
	if err := json.Unmarshal([]byte(ext), &doc); err != nil || doc.Code != "Success" || doc.AccessKeyId == "" || doc.AccountId != harness.Account {
		t.Fatalf("extended document %q (%v): want Success, a key and AccountId %s", ext, err, harness.Account)
	}
	if body := expectStatus(t, env, p, "/latest/meta-data/placement/region", true, 200); body != harness.EC2Region {
		t.Fatalf("placement/region: %q, want %q", body, harness.EC2Region)
	}
	body := expectStatus(t, env, p, "/latest/dynamic/instance-identity/document", true, 200)
	if !strings.Contains(body, harness.EC2Region) {
		t.Fatalf("identity document without the region: %q", body)
	}
}

// restartAgent stops the agent (SIGTERM: the rules stay), starts it again
// with the environment's original arguments plus extra, and waits until ready.
func restartAgent(t *testing.T, env *harness.Env, extra ...string) {
	t.Helper()
	restartWithoutWait(t, env, extra...)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := env.Agent.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
}

func testDefaultRoleAndRegexp(t *testing.T, env *harness.Env) {
	restartAgent(t, env, "--default-role", roleDefault, "--namespace-restriction-format", "regexp")
	t.Cleanup(func() { restartAgent(t, env) })
	// The default role is exempt from the namespace policy.
	mustNamespace(t, env, "defaults", "")
	p := mustPod(t, env, harness.PodSpec{Namespace: "defaults", Name: "plain"})
	if body := expectStatus(t, env, p, credsPath, true, 200); body != roleDefault {
		t.Fatalf("pod without annotation lists %q, want the default role %q", body, roleDefault)
	}
	getCreds(t, p, roleDefault, true)
	// Regexp patterns are anchored: "app" allows app, not app-admin; "app-.*" does.
	mustNamespace(t, env, "regex", `["app"]`)
	app := mustPod(t, env, harness.PodSpec{Namespace: "regex", Name: "app", Annotations: roleAnnotation(roleApp)})
	admin := mustPod(t, env, harness.PodSpec{Namespace: "regex", Name: "admin", Annotations: roleAnnotation(roleAdmin)})
	getCreds(t, app, roleApp, true)
	expectStatus(t, env, admin, credsPath+roleAdmin, true, 404)
	if err := env.SetNamespacePolicy(ctxT(t), "regex", `["app-.*"]`); err != nil {
		t.Fatal(err)
	}
	eventually(t, "regexp app-.* allows app-admin", statusIs(admin, credsPath+roleAdmin, 200))
}

func testIMDSv2Required(t *testing.T, env *harness.Env) {
	restartAgent(t, env, "--imdsv2-required")
	t.Cleanup(func() { restartAgent(t, env) })
	mustNamespace(t, env, "v2only", `["web"]`)
	a := mustPod(t, env, harness.PodSpec{Namespace: "v2only", Name: "a", Annotations: roleAnnotation(roleWeb)})
	b := mustPod(t, env, harness.PodSpec{Namespace: "v2only", Name: "b", Annotations: roleAnnotation(roleWeb)})
	expectStatus(t, env, a, credsPath+roleWeb, false, 401)
	getCreds(t, a, roleWeb, true)
	// A token minted for pod a is refused in pod b.
	ctx := ctxT(t)
	tok, err := a.Net.Command(ctx, "curl", "-sS", "-f", "--max-time", "2", "-X", "PUT", "-H", "X-aws-ec2-metadata-token-ttl-seconds: 60", "http://169.254.169.254/latest/api/token").Output()
	if err != nil || len(tok) == 0 {
		t.Fatalf("token PUT in pod a: %v", err)
	}
	out, err := b.Net.Command(ctx, "curl", "-sS", "--max-time", "2", "-o", "/dev/null", "-w", "%{http_code}", "-H", "X-aws-ec2-metadata-token: "+string(tok), "http://169.254.169.254"+credsPath+roleWeb).Output()
	if err != nil {
		t.Fatalf("GET in pod b: %v", err)
	}
	if string(out) != "401" {
		t.Fatalf("pod b with pod a's token: status %s, want 401", out)
	}
}

// testTokensSurviveAKill: an IMDSv2 token a pod holds stays valid when its
// agent is SIGKILLed and started again with the same --handover-dir (no
// handover: the key comes from the state file), as on EC2, where a token
// lives its TTL. The Rust SDK keeps a token for its whole 6 hours and
// retries a 401 with it; a new key would leave it without metadata.
func testTokensSurviveAKill(t *testing.T, env *harness.Env) {
	dir := t.TempDir()
	restartAgent(t, env, "--handover-dir", dir)
	t.Cleanup(func() { restartAgent(t, env) })
	mustNamespace(t, env, "keepkey", `["web"]`)
	p := mustPod(t, env, harness.PodSpec{Namespace: "keepkey", Name: "web", Annotations: roleAnnotation(roleWeb)})
	ctx := ctxT(t)
	tok, err := p.Net.Command(ctx, "curl", "-sS", "-f", "--max-time", "2", "-X", "PUT", "-H", "X-aws-ec2-metadata-token-ttl-seconds: 21600", "http://169.254.169.254/latest/api/token").Output()
	if err != nil || len(tok) == 0 {
		t.Fatalf("token PUT: %v", err)
	}
	get := func() string {
		t.Helper()
		out, err := p.Net.Command(ctx, "curl", "-sS", "--max-time", "2", "-o", "/dev/null", "-w", "%{http_code}", "-H", "X-aws-ec2-metadata-token: "+string(tok), "http://169.254.169.254"+credsPath).Output()
		if err != nil {
			t.Fatalf("GET with the token: %v", err)
		}
		return string(out)
	}
	if code := get(); code != "200" {
		t.Fatalf("GET with a fresh token: %s, want 200", code)
	}
	st, err := os.Stat(handover.StatePath(dir))
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("the saved token key: %v, mode %v; want a 0600 file", err, st)
	}
	if err := env.Agent.Kill(); err != nil {
		t.Fatal(err)
	}
	if err := env.Agent.Start(); err != nil { // the same arguments, --handover-dir among them
		t.Fatal(err)
	}
	wctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	if err := env.Agent.WaitReady(wctx); err != nil {
		t.Fatal(err)
	}
	if code := get(); code != "200" {
		t.Fatalf("GET with the token after the agent was killed and started again: %s, want 200", code)
	}
	if !strings.Contains(env.Agent.Log(), "token key the last agent on this node saved is restored") {
		t.Errorf("the restarted agent did not say it restored the token key")
	}
}

func testAgentRestart(t *testing.T, env *harness.Env) {
	mustNamespace(t, env, "restart", `["web"]`)
	p := mustPod(t, env, harness.PodSpec{Namespace: "restart", Name: "web", Annotations: roleAnnotation(roleWeb)})
	getCreds(t, p, roleWeb, true)
	rulesBefore := iptablesSave(t)

	stop := askWithoutPause(p, credsPath+roleWeb)
	time.Sleep(500 * time.Millisecond)
	if err := env.Agent.Kill(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(1500 * time.Millisecond)
	if err := env.Agent.Start(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := env.Agent.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	time.Sleep(500 * time.Millisecond)

	var ok, refused int
	for _, r := range stop() {
		assertNoSecrets(t, env, "during restart", r.body)
		switch {
		case r.err != nil:
			refused++ // connection refused: the rule points at a port nobody listens on
		case r.code == 200:
			var c imdsCreds
			if err := json.Unmarshal([]byte(r.body), &c); err != nil {
				t.Fatalf("200 without a credential document during restart: %q", r.body)
			}
			if role, _, found := env.WhoIs(c.AccessKeyId); !found || role != harness.RoleARN(roleWeb) {
				t.Fatalf("during restart the pod got credentials for %q (found %v)", role, found)
			}
			ok++
		default:
			t.Fatalf("during restart: status %d %q", r.code, r.body)
		}
	}
	if refused == 0 || ok == 0 {
		t.Fatalf("restart under load: %d answered, %d refused; want both (the gap must be refused, never answered otherwise)", ok, refused)
	}
	t.Logf("restart under load: %d answered with the pod's role, %d refused during the gap", ok, refused)
	getCreds(t, p, roleWeb, true)
	if after := iptablesSave(t); after != rulesBefore {
		t.Fatalf("rules after SIGKILL and restart differ:\nbefore:\n%s\nafter:\n%s", rulesBefore, after)
	}
}

func testRulesOnExit(t *testing.T, env *harness.Env) {
	ctx := ctxT(t)
	ds, pod, err := env.CreateAgentOwner(ctx)
	if err != nil {
		t.Fatal(err)
	}
	base := env.Agent.Env
	env.Agent.Env = append(append([]string{}, base...), "POD_NAME="+pod, "POD_NAMESPACE=kube-system")
	t.Cleanup(func() { env.Agent.Env = base })
	restartAgent(t, env)
	if err := env.Agent.Stop(); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(iptablesSave(t), "-j KUBE2RA") {
		t.Fatalf("SIGTERM with the DaemonSet present removed the rules:\n%s", iptablesSave(t))
	}
	if !strings.Contains(env.Agent.Log(), "still exists") {
		t.Fatalf("the agent did not say why it kept the rules")
	}

	if err := env.Agent.Start(); err != nil {
		t.Fatal(err)
	}
	if err := env.Agent.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	if err := env.DeleteAgentOwner(ctx, ds); err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Second) // the watch delivers the deletion
	if err := env.Agent.Stop(); err != nil {
		t.Fatal(err)
	}
	if save := iptablesSave(t); strings.Contains(save, "KUBE2RA") {
		t.Fatalf("SIGTERM after the DaemonSet was deleted kept the rules:\n%s", save)
	}

	// Without an owner the rules stay, and `kube2ra cleanup` removes them (twice is fine).
	env.Agent.Env = base
	if err := env.Agent.Start(); err != nil {
		t.Fatal(err)
	}
	if err := env.Agent.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	if err := env.Agent.Stop(); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(iptablesSave(t), "KUBE2RA") {
		t.Fatal("rules gone after SIGTERM without an owner")
	}
	// A handover socket an agent killed without closing left behind goes
	// too (the agent's own is kept while it serves: handover's tests).
	handoverDir := t.TempDir()
	stale, err := net.ListenUnix("unixpacket", &net.UnixAddr{Name: handover.SocketPath(handoverDir), Net: "unixpacket"})
	if err != nil {
		t.Fatal(err)
	}
	stale.SetUnlinkOnClose(false)
	_ = stale.Close()
	for i := 0; i < 2; i++ {
		if out, err := exec.Command(env.Agent.Binary, "cleanup", "--handover-dir", handoverDir).CombinedOutput(); err != nil {
			t.Fatalf("kube2ra cleanup (run %d): %v: %s", i+1, err, out)
		}
	}
	if save := iptablesSave(t); strings.Contains(save, "KUBE2RA") {
		t.Fatalf("kube2ra cleanup left rules:\n%s", save)
	}
	if _, err := os.Stat(handover.SocketPath(handoverDir)); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("kube2ra cleanup left the stale handover socket: %v", err)
	}
	restartAgent(t, env)
}

func testNoRuleBeforeReady(t *testing.T, env *harness.Env) {
	mustNamespace(t, env, "early", `["web"]`)
	p := mustPod(t, env, harness.PodSpec{Namespace: "early", Name: "web", Annotations: roleAnnotation(roleWeb)})
	getCreds(t, p, roleWeb, true)
	if err := env.Agent.Stop(); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(env.Agent.Binary, "cleanup").CombinedOutput(); err != nil {
		t.Fatalf("kube2ra cleanup: %v: %s", err, out)
	}
	// An agent whose informers cannot sync (its user has no RBAC) never
	// becomes ready, so it must never redirect pods to itself.
	nobody, err := env.CP.UserKubeconfig("nobody")
	if err != nil {
		t.Fatal(err)
	}
	restartWithoutWait(t, env, "--kubeconfig", nobody)
	time.Sleep(300 * time.Millisecond) // past listen, inside the sync wait
	deadline := time.Now().Add(3 * time.Second)
	for attempts := 0; time.Now().Before(deadline); attempts++ {
		code, body, err := p.PodGet(ctxT(t), credsPath+roleWeb, true)
		if err == nil {
			t.Fatalf("before ready, attempt %d: the pod got an answer %d %q", attempts, code, body)
		}
		if strings.Contains(iptablesSave(t), "KUBE2RA") {
			t.Fatal("the DNAT rule was installed before the agent was ready")
		}
	}
	if code, _, _ := harness.Get(env.Agent.MetricsURL + "/readyz"); code == 200 {
		t.Fatal("an agent whose informers cannot sync says it is ready")
	}
	restartAgent(t, env)
	getCreds(t, p, roleWeb, true)
}

// baseArgs are each Env's agent arguments as harness.Start chose them.
var baseArgs = map[*harness.Env][]string{}

// restartWithoutWait restarts the agent with the original arguments plus
// extra and does not wait for readiness.
func restartWithoutWait(t *testing.T, env *harness.Env, extra ...string) {
	t.Helper()
	if _, ok := baseArgs[env]; !ok {
		baseArgs[env] = env.Agent.Args
	}
	if err := env.Agent.Stop(); err != nil {
		t.Fatal(err)
	}
	env.Agent.Args = append(append([]string{}, baseArgs[env]...), extra...)
	if err := env.Agent.Start(); err != nil {
		t.Fatal(err)
	}
}

func testFlushRestored(t *testing.T, env *harness.Env) {
	mustNamespace(t, env, "flush", `["web"]`)
	p := mustPod(t, env, harness.PodSpec{Namespace: "flush", Name: "web", Annotations: roleAnnotation(roleWeb)})
	getCreds(t, p, roleWeb, true)
	want := iptablesSave(t)
	if out, err := exec.Command("iptables", "-t", "nat", "-F").CombinedOutput(); err != nil {
		t.Fatalf("flushing the nat table: %v: %s", err, out)
	}
	if strings.Contains(iptablesSave(t), "-j DNAT") {
		t.Fatal("the flush did not remove the DNAT rule")
	}
	waitRulesRestored(t, want, time.Now())
	getCreds(t, p, roleWeb, true)
	// The counter moves when EnsureRules returns, after every family's
	// rules are written: the IPv4 nat rules this test watches can be back
	// a moment before the IPv6 guard is.
	deadline := time.Now().Add(10 * time.Second)
	for {
		m, err := env.Agent.Metrics()
		if err != nil {
			t.Fatal(err)
		}
		if harness.Sum(m, "kube2ra_iptables_restores_total") >= 1 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("the restore is not counted in kube2ra_iptables_restores_total 10 s after the rules were back")
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// testNatFlushFailsClosed is the soak's finding: on an instance that is not
// hardened (IMDSv1 answers whoever reaches it; the hop limit only stops
// token PUTs), a pod's request that escapes the DNAT gets the node's
// credentials. After `iptables -t nat -F` the guard must refuse the pod at
// once, the metadata service must never see the pod, and the agent must
// restore service at the next resync (2s here).
func testNatFlushFailsClosed(t *testing.T, env *harness.Env) {
	mustNamespace(t, env, "guard", `["web"]`)
	p := mustPod(t, env, harness.PodSpec{Namespace: "guard", Name: "web", Annotations: roleAnnotation(roleWeb)})
	node := env.IMDS.Credentials()

	// Without kube2ra's rules the pod gets the node's credentials with
	// IMDSv1: the leak this test must never see is real here.
	if err := env.Agent.Stop(); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(env.Agent.Binary, "cleanup").CombinedOutput(); err != nil {
		t.Fatalf("kube2ra cleanup: %v: %s", err, out)
	}
	if code, _, err := p.PodGet(ctxT(t), credsPath, false); err != nil || code != 200 {
		t.Fatalf("without kube2ra the pod should reach the unhardened metadata service: %d %v", code, err)
	}
	if _, body, _ := p.PodGet(ctxT(t), credsPath+"node-instance-role", false); !strings.Contains(body, node.AccessKeyID) {
		t.Fatalf("without kube2ra the pod should get the node's credentials with IMDSv1, got %q", body)
	}
	restartAgent(t, env)
	getCreds(t, p, roleWeb, true)
	want := iptablesSave(t)

	refused := false
	var flushed time.Time
	for attempt := 1; attempt <= 5 && !refused; attempt++ {
		env.IMDS.ResetRequests()
		if out, err := exec.Command("iptables", "-t", "nat", "-F").CombinedOutput(); err != nil {
			t.Fatalf("flushing the nat table: %v: %s", err, out)
		}
		flushed = time.Now()
		start := time.Now()
		code, body, err := p.PodGet(ctxT(t), credsPath+"node-instance-role", false)
		elapsed := time.Since(start)
		stillFlushed := !strings.Contains(iptablesSave(t), "-j DNAT")
		assertNoSecrets(t, env, "a pod's request after iptables -t nat -F", body)
		for _, r := range env.IMDS.Requests() {
			if strings.HasPrefix(r.RemoteAddr, p.Net.IP.String()+":") {
				t.Fatalf("after iptables -t nat -F the metadata service saw the pod's request %s %s", r.Method, r.RequestURI)
			}
		}
		switch {
		case err == nil && stillFlushed:
			t.Fatalf("after iptables -t nat -F the pod was answered %d %q while no DNAT existed", code, body)
		case err == nil:
			t.Logf("attempt %d: the monitor restored the DNAT before the pod's request; flushing again", attempt)
		case !strings.Contains(body, "Couldn't connect") && !strings.Contains(body, "refused"):
			t.Fatalf("after iptables -t nat -F: %v, want the connection refused (the guard's TCP reset)", err)
		case elapsed > 1500*time.Millisecond:
			t.Fatalf("after iptables -t nat -F the refusal took %s, want at once (curl's timeout is 2s)", elapsed)
		default:
			refused = true
			t.Logf("after iptables -t nat -F the pod was refused in %s (%s)", elapsed.Round(time.Millisecond), strings.TrimSpace(body))
		}
	}
	if !refused {
		t.Fatal("the monitor restored the DNAT before every one of 5 requests; the guard was never exercised")
	}
	waitRulesRestored(t, want, flushed)
	getCreds(t, p, roleWeb, true)
}

// waitRulesRestored waits until the agent's monitor has put the rules back
// as want after a flush at flushed.
func waitRulesRestored(t *testing.T, want string, flushed time.Time) {
	t.Helper()
	eventually(t, "rules restored after a flush", func() error {
		if got := iptablesSave(t); got != want {
			return fmt.Errorf("rules not back yet:\n%s", got)
		}
		return nil
	})
	t.Logf("rules restored %s after the flush (resync interval 2s)", time.Since(flushed).Round(10*time.Millisecond))
}

// testHopLimit: with the instance's hop limit at 1, a pod that reached the
// real metadata service could not get a token, while kube2ra on the node
// passes allowed paths through with its own token.
func testHopLimit(t *testing.T, env *harness.Env) {
	mustNamespace(t, env, "hops", `["web"]`)
	p := mustPod(t, env, harness.PodSpec{Namespace: "hops", Name: "web", Annotations: roleAnnotation(roleWeb)})
	env.IMDS.ResetRequests()
	expectStatus(t, env, p, "/latest/meta-data/instance-id", true, 200)
	var withToken bool
	for _, r := range env.IMDS.Requests() {
		if strings.HasSuffix(r.RequestURI, "/meta-data/instance-id") && r.Header.Get("X-aws-ec2-metadata-token") != "" {
			withToken = true
		}
	}
	if !withToken {
		t.Fatal("kube2ra did not pass instance-id through with an upstream token under hop limit 1")
	}
	if err := env.Agent.Stop(); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(env.Agent.Binary, "cleanup").CombinedOutput(); err != nil {
		t.Fatalf("kube2ra cleanup: %v: %s", err, out)
	}
	defer restartAgent(t, env)
	out, err := p.Net.Command(ctxT(t), "curl", "-sS", "--max-time", "2", "-X", "PUT", "-H", "X-aws-ec2-metadata-token-ttl-seconds: 60", "http://169.254.169.254/latest/api/token").CombinedOutput()
	if err == nil {
		t.Fatalf("a pod reaching the metadata service directly got a token: %q", out)
	}
}

// TestIPv6 runs a dual-stack node whose agent has --ipv6 and learns its
// IPv6 address only from HOST_IPS (the chart's status.hostIPs): a
// dual-stack pod gets its role's credentials through fd00:ec2::254 with
// aws-sdk-go-v2 in IPv6 endpoint mode and with curl, from the pod's IPv6
// address, and never the node's.
func TestIPv6(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	env, err := harness.Start(ctx, harness.Options{Flavour: harness.RolesAnywhere, Roles: allRoles, IPv6: true})
	if err != nil {
		t.Fatalf("starting the dual-stack environment: %v", err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("agent log (tail):\n%s", env.Agent.LogTail(60))
		}
		env.Close()
	})
	mustNamespace(t, env, "v6", `["web"]`)
	p := mustPod(t, env, harness.PodSpec{Namespace: "v6", Name: "web", Annotations: roleAnnotation(roleWeb)})
	if !p.Net.IPv6.IsValid() {
		t.Fatal("the pod has no IPv6 address")
	}
	goCreds, err := env.GoSDK(ctxT(t), p, "AWS_EC2_METADATA_SERVICE_ENDPOINT_MODE=IPv6")
	if err != nil {
		t.Fatalf("aws-sdk-go-v2 over IPv6: %v", err)
	}
	assertIssuedFor(t, env, "aws-sdk-go-v2 (IPv6 endpoint)", goCreds, roleWeb, "")
	// IMDSv2 is required by default, over IPv6 as over IPv4: a token-less
	// read is refused as IMDS refuses it.
	if code, body, err := p.PodGetAt(ctxT(t), "http://[fd00:ec2::254]", credsPath+roleWeb, false); err != nil || code != 401 {
		t.Fatalf("curl over IPv6 without a token: %d %q %v, want 401", code, body, err)
	}
	code, body, err := p.PodGetAt(ctxT(t), "http://[fd00:ec2::254]", credsPath+roleWeb, true)
	if err != nil || code != 200 {
		t.Fatalf("curl over IPv6 with a token: %d %q %v", code, body, err)
	}
	var c imdsCreds
	if err := json.Unmarshal([]byte(body), &c); err != nil {
		t.Fatalf("credential document %q: %v", body, err)
	}
	assertIssuedFor(t, env, "curl over IPv6 (token)", harness.ClientCreds{AccessKeyID: c.AccessKeyId, SecretAccessKey: c.SecretAccessKey, SessionToken: c.Token}, roleWeb, "")
	if log := env.Agent.LogTail(400); !strings.Contains(log, p.Net.IPv6.String()) {
		t.Errorf("the agent's request log does not name the pod's IPv6 address %s as the caller:\n%s", p.Net.IPv6, log)
	}
}

// testMetadataExposure: the harness's instance leaves IMDSv1 open (hop
// limit 1), so the agent reports the node exposed: the gauge, and a
// Warning Event on the node naming the EC2 setting that closes it.
func testMetadataExposure(t *testing.T, env *harness.Env) {
	deadline := time.Now().Add(15 * time.Second)
	for {
		_, metrics, _ := harness.Get(env.Agent.MetricsURL + "/metrics")
		if strings.Contains(metrics, "kube2ra_node_metadata_exposed 1") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("kube2ra_node_metadata_exposed is not 1 with IMDSv1 open:\n%s", grepLines(metrics, "kube2ra_node_metadata_exposed"))
		}
		time.Sleep(200 * time.Millisecond)
	}
	for {
		evs, err := env.Kube.CoreV1().Events("default").List(ctxT(t), metav1.ListOptions{FieldSelector: "reason=NodeMetadataExposed"})
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range evs.Items {
			if e.InvolvedObject.Kind == "Node" && e.InvolvedObject.Name == harness.NodeName &&
				strings.Contains(e.Message, "--http-tokens required --http-put-response-hop-limit 1") && strings.Contains(e.Message, "IMDSv1") {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no NodeMetadataExposed Event on node %s naming the fix: %+v", harness.NodeName, evs.Items)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// testWrongInterface: with a --host-interface that matches none of the
// node's pod interfaces, the agent is not ready and /readyz names the
// pattern, the pod and the interface its traffic really uses (the
// bridge); the pod gets no credentials meanwhile.
func testWrongInterface(t *testing.T, env *harness.Env) {
	mustNamespace(t, env, "wrongif", `["web"]`)
	p := mustPod(t, env, harness.PodSpec{Namespace: "wrongif", Name: "web", Annotations: roleAnnotation(roleWeb)})
	restartWithoutWait(t, env, "--host-interface", "wrong0")
	t.Cleanup(func() { restartAgent(t, env) })
	deadline := time.Now().Add(30 * time.Second)
	for {
		code, body, err := harness.Get(env.Agent.NodeURL + "/readyz")
		if err == nil && code != 200 && strings.Contains(body, "wrongif/web") && strings.Contains(body, simnode.Bridge) && strings.Contains(body, `"wrong0"`) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("/readyz on the node with --host-interface wrong0: %d %q %v; want not ready naming wrongif/web, %s and wrong0", code, body, err, simnode.Bridge)
		}
		time.Sleep(200 * time.Millisecond)
	}
	// On the host IP (the kubelet's probe, and every pod) the same status
	// without the reasons: they name pods and interfaces.
	if code, body, err := p.PodGetAt(ctxT(t), env.Agent.MetricsURL, "/readyz", false); err != nil || code != 503 || strings.Contains(body, "wrongif") || !strings.Contains(body, "127.0.0.1") {
		t.Fatalf("/readyz from a pod: %d %q %v; want 503 without the reasons, saying where to read them", code, body, err)
	}
	if env.Flavour == harness.EC2 {
		// The simulated node's metadata address is local (INPUT), where
		// the guard keeps its interface exemptions (docs/security.md); on
		// EC2 it is routed (FORWARD) and refused, which iptables'
		// TestWrongInterfaceIsRefusedWhenForwarded proves.
		return
	}
	if code, body, err := p.PodGet(ctxT(t), credsPath+roleWeb, false); err == nil {
		t.Fatalf("with the wrong interface the pod got an answer: %d %q", code, body)
	}
}

// testDebugStoreOnTheNode: the metrics port is on the host IP, which
// every pod reaches; /debug/store (every pod's IP and role, the agent runs
// with --debug) answers only a process on the node asking over loopback.
// /metrics stays on the host IP for Prometheus.
func testDebugStoreOnTheNode(t *testing.T, env *harness.Env) {
	mustNamespace(t, env, "debugview", `["web"]`)
	p := mustPod(t, env, harness.PodSpec{Namespace: "debugview", Name: "web", Annotations: roleAnnotation(roleWeb)})
	getCreds(t, p, roleWeb, true)
	if code, body, err := harness.Get(env.Agent.NodeURL + "/debug/store"); err != nil || code != 200 || !strings.Contains(body, "debugview") {
		t.Fatalf("/debug/store on the node over loopback: %d %q %v; want 200 listing debugview/web", code, body, err)
	}
	if code, body, err := p.PodGetAt(ctxT(t), env.Agent.MetricsURL, "/debug/store", false); err != nil || code != 403 || strings.Contains(body, "debugview") {
		t.Fatalf("/debug/store from a pod on the host IP: %d %q %v; want 403 without the table", code, body, err)
	}
	if code, body, err := harness.Get(env.Agent.MetricsURL + "/debug/store"); err != nil || code != 403 || strings.Contains(body, "debugview") {
		t.Fatalf("/debug/store on the node but to the host IP: %d %q %v; want 403 (only loopback to loopback is the node)", code, body, err)
	}
	if code, body, err := p.PodGetAt(ctxT(t), env.Agent.MetricsURL, "/metrics", false); err != nil || code != 200 || !strings.Contains(body, "kube2ra_") {
		t.Fatalf("/metrics on the host IP: %d %v; want 200", code, err)
	}
}

// grepLines keeps the lines of s that contain sub.
func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// TestIPv6FirstNode: on a dual-stack node whose primary address is IPv6
// (status.hostIP, so the chart's --host-ip, is the IPv6 one), the agent
// serves the IPv4 metadata address on the node's IPv4 address from
// HOST_IPS, and answers its probes on the IPv6 address too, where the
// kubelet asks a host-network pod. It once refused to start.
func TestIPv6FirstNode(t *testing.T) {
	env := startEnvWith(t, harness.Options{Flavour: harness.RolesAnywhere, Roles: allRoles, IPv6: true,
		AgentArgs: []string{"--host-ip", simnode.HostIPv6}})
	if !strings.Contains(env.Agent.Log(), "is IPv6 (an IPv6-first dual-stack node)") {
		t.Errorf("the agent did not say it serves on the IPv4 address of HOST_IPS")
	}
	mustNamespace(t, env, "v6first", `["web"]`)
	p := mustPod(t, env, harness.PodSpec{Namespace: "v6first", Name: "web", Annotations: roleAnnotation(roleWeb)})
	creds, err := env.GoSDK(ctxT(t), p)
	if err != nil {
		t.Fatalf("aws-sdk-go-v2 over 169.254.169.254: %v", err)
	}
	assertIssuedFor(t, env, "aws-sdk-go-v2 (IPv4, IPv6-first node)", creds, roleWeb, "")
	// The kubelet probes a host-network pod at its pod IP: the node's IPv6.
	_, port, _ := net.SplitHostPort(strings.TrimPrefix(env.Agent.MetricsURL, "http://"))
	if code, body, err := p.PodGetAt(ctxT(t), "http://"+net.JoinHostPort(simnode.HostIPv6, port), "/healthz", false); err != nil || code != 200 || body != "ok" {
		t.Fatalf("/healthz on the node's IPv6 address: %d %q %v, want 200 ok", code, body, err)
	}
}

// TestIPv6GuardWithoutIPv6: with --ipv6 off on a node that has no IPv6
// address when the agent starts, IPv6 that arrives later (an address on
// the uplink, dual-stack pods) is guarded from the first pod on, without
// a restart: a pod's request for [fd00:ec2::254] is refused at once,
// never reaching a metadata service listening there.
func TestIPv6GuardWithoutIPv6(t *testing.T) {
	env := startEnvWith(t, harness.Options{Flavour: harness.EC2, Roles: allRoles})
	if err := env.Node.EnableIPv6(); err != nil {
		t.Fatal(err)
	}
	// The instance's IPv6 metadata service, as EC2's Nitro instances have it.
	if out, err := exec.Command("ip", "addr", "add", "fd00:ec2::254/128", "dev", "eth0", "nodad").CombinedOutput(); err != nil {
		t.Fatalf("adding fd00:ec2::254: %v: %s", err, out)
	}
	ln, err := net.Listen("tcp", "[fd00:ec2::254]:80")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		_, _ = io.WriteString(w, "the node's metadata service")
	}), ReadHeaderTimeout: time.Second}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })

	mustNamespace(t, env, "v6late", `["web"]`)
	p := mustPod(t, env, harness.PodSpec{Namespace: "v6late", Name: "web", Annotations: roleAnnotation(roleWeb)})
	if !p.Net.IPv6.IsValid() {
		t.Fatal("the pod has no IPv6 address")
	}
	code, body, err := p.PodGetAt(ctxT(t), "http://[fd00:ec2::254]", "/latest/meta-data/", false)
	if err == nil {
		t.Fatalf("a pod reached [fd00:ec2::254] on a node that gained IPv6 after the agent started: %d %q, want refused", code, body)
	}
	// The guard answers with a TCP reset: curl fails to connect (exit 7)
	// at once, rather than timing out (exit 28).
	if !strings.Contains(err.Error(), "exit status 7") {
		t.Errorf("request for [fd00:ec2::254]: %v, want the guard's refusal (curl exit 7, failed to connect)", err)
	}
}
