package main

import (
	"context"
	"encoding/json"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/kube2ra/kube2ra/credentials"
	"github.com/kube2ra/kube2ra/imdsprobe"
	"github.com/kube2ra/kube2ra/iptables"
	"github.com/kube2ra/kube2ra/k8s"
	"github.com/kube2ra/kube2ra/kubeapi/kubeapitest"
)

const (
	tBase    = "arn:aws:iam::123456789012:role/"
	tNode    = "node-a"
	tHostIP  = "127.0.0.1"
	tBaseArg = "--base-role-arn=" + tBase
)

// testPod is a running pod on node-a with the given IP and annotations.
func testPod(ns, name, ip string, ann map[string]string) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, UID: types.UID("uid-" + ns + "-" + name), Annotations: ann},
		Spec:       corev1.PodSpec{NodeName: tNode, ServiceAccountName: "default"},
		Status: corev1.PodStatus{Phase: corev1.PodRunning, HostIP: tHostIP, PodIP: ip,
			PodIPs: []corev1.PodIP{{IP: ip}}},
	}
}

// testNamespace is a namespace with an allowed-roles annotation (none when policy is "").
func testNamespace(name, policy string) *corev1.Namespace {
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, UID: types.UID("uid-ns-" + name)}}
	if policy != "" {
		ns.Annotations = map[string]string{k8s.DefaultNamespaceKey: policy}
	}
	return ns
}

// webAccount is shop's default ServiceAccount, naming role web the IRSA way.
func webAccount() *corev1.ServiceAccount {
	return &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "default", UID: "uid-sa-shop-default",
		Annotations: map[string]string{k8s.IRSARoleKey: tBase + "web"}}}
}

// role is the pod annotation naming a role.
func role(r string) map[string]string { return map[string]string{k8s.DefaultRoleKey: r} }

// closedPort is a loopback port nothing listens on: the node's agent
// where a test has none (its metrics port refuses at once).
func closedPort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	_, port, _ := net.SplitHostPort(l.Addr().String())
	l.Close()
	return port
}

// runExplain runs `kube2ra explain args...` against a fake API server
// holding objs; the agent's DaemonSet is not read unless objs hold one.
// Without --metrics-port the node's agent is a closed loopback port.
func runExplain(t *testing.T, objs []runtime.Object, args ...string) (string, int) {
	t.Helper()
	if !strings.Contains(strings.Join(args, " "), "--metrics-port") {
		args = append(args, "--metrics-port="+closedPort(t))
	}
	var out, errOut strings.Builder
	o, code, ok := parseExplainFlags(args, &out, &errOut)
	if !ok {
		return errOut.String(), code
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	code = explainPod(ctx, kubeapitest.FromClientset(fake.NewClientset(objs...)), o, &out)
	return out.String(), code
}

// checkOutput fails t unless explain exited wantCode, printed every text in
// want and none in dontWant; it shows the output when failing.
func checkOutput(t *testing.T, out string, code, wantCode int, want, dontWant []string) {
	t.Helper()
	if code != wantCode {
		t.Errorf("exit %d, want %d", code, wantCode)
	}
	for _, w := range want {
		if !strings.Contains(out, w) {
			t.Errorf("output lacks %q", w)
		}
	}
	for _, w := range dontWant {
		if strings.Contains(out, w) {
			t.Errorf("output has %q", w)
		}
	}
	if t.Failed() {
		t.Logf("output:\n%s", out)
	}
}

func TestExplainPod(t *testing.T) {
	shop := testNamespace("shop", `["web","team/*"]`)
	tests := []struct {
		name     string
		objs     []runtime.Object
		args     []string
		wantCode int
		want     []string
	}{
		{name: "annotated role allowed by a namespace pattern is served, and the matching pattern is named",
			objs:     []runtime.Object{shop, testPod("shop", "web-1", "10.1.0.5", role("team/db"))},
			args:     []string{"-n", "shop", "web-1", tBaseArg},
			wantCode: exitServed,
			want: []string{
				`annotation iam.amazonaws.com/role = "team/db"`,
				"base ARN:    " + tBase + " (--base-role-arn)",
				"role ARN:    " + tBase + "team/db",
				tBase + "web does not match",
				tBase + "team/* matches: allowed",
				"10.1.0.5 is owned by this pod",
				"verdict:     served: role " + tBase + "team/db",
			}},
		{name: "no annotation and no default role is denied with the annotation to add",
			objs:     []runtime.Object{shop, testPod("shop", "web-1", "10.1.0.5", nil)},
			args:     []string{"shop/web-1", tBaseArg},
			wantCode: exitDenied,
			want: []string{
				"no iam.amazonaws.com/role annotation and no --default-role",
				"reason:      the pod has no iam.amazonaws.com/role annotation",
				"fix:         annotate the pod (its template) with iam.amazonaws.com/role: ROLE",
			}},
		{name: "the default role applies without an annotation and is exempt from the namespace policy",
			objs:     []runtime.Object{testNamespace("bare", ""), testPod("bare", "job", "10.1.0.6", nil)},
			args:     []string{"-n", "bare", "job", tBaseArg, "--default-role=reader"},
			wantCode: exitServed,
			want: []string{
				`--default-role "reader" applies`,
				"not checked: the default role is exempt from namespace policy",
				"verdict:     served: role " + tBase + "reader",
			}},
		{name: "a role no pattern matches is denied, each pattern shown",
			objs:     []runtime.Object{shop, testPod("shop", "web-1", "10.1.0.5", role("web-admin"))},
			args:     []string{"-n", "shop", "web-1", tBaseArg},
			wantCode: exitDenied,
			want: []string{
				tBase + "web does not match",
				tBase + "team/* does not match",
				"no pattern matches " + tBase + "web-admin (the whole ARN must match)",
				"reason:      role " + tBase + "web-admin denied (NamespacePolicy)",
				"add the role to it",
			}},
		{name: "a role annotation that is no IAM role ARN is denied as invalid",
			objs:     []runtime.Object{shop, testPod("shop", "web-1", "10.1.0.5", role("arn:aws:iam::12345:role/web"))},
			args:     []string{"-n", "shop", "web-1", tBaseArg},
			wantCode: exitDenied,
			want: []string{
				"reason:      role arn:aws:iam::12345:role/web denied (InvalidRole)",
				"annotation iam.amazonaws.com/role is not a usable role",
			}},
		{name: "an IP claimed by two live pods is denied, both holders named",
			objs: []runtime.Object{shop, testPod("shop", "web-1", "10.1.0.5", role("web")),
				testPod("shop", "stale", "10.1.0.5", nil)},
			args:     []string{"-n", "shop", "web-1", tBaseArg},
			wantCode: exitDenied,
			want: []string{
				"role ARN:    " + tBase + "web",
				"10.1.0.5 is claimed by several live pods: shop/stale, shop/web-1",
				"the agent never guesses",
				"verdict:     denied",
			}},
		{name: "a host-network pod is denied: the agent never serves the node's own address",
			objs: []runtime.Object{shop, func() *corev1.Pod {
				p := testPod("shop", "web-1", tHostIP, role("web"))
				p.Spec.HostNetwork = true
				return p
			}()},
			args:     []string{"-n", "shop", "web-1", tBaseArg},
			wantCode: exitDenied,
			want: []string{
				"the pod uses the host network",
				"reason:      the pod runs with hostNetwork: true",
				"fix:         run it without hostNetwork",
			}},
		{name: "a terminating pod no longer owns its IP",
			objs: []runtime.Object{shop, func() *corev1.Pod {
				p := testPod("shop", "web-1", "10.1.0.5", role("web"))
				p.DeletionTimestamp = &metav1.Time{Time: time.Now()}
				p.Finalizers = []string{"test/keep"}
				return p
			}()},
			args:     []string{"-n", "shop", "web-1", tBaseArg},
			wantCode: exitDenied,
			want:     []string{"reason:      the pod is terminating"},
		},
		{name: "a namespace without the annotation allows no role but the default",
			objs:     []runtime.Object{testNamespace("bare", ""), testPod("bare", "job", "10.1.0.6", role("web"))},
			args:     []string{"-n", "bare", "job", tBaseArg},
			wantCode: exitDenied,
			want:     []string{"namespace bare has no iam.amazonaws.com/allowed-roles annotation: it allows no role but the default"},
		},
		{name: "with --pod-identity the ServiceAccount's role serves the token door where the metadata door has none",
			objs:     []runtime.Object{shop, testPod("shop", "web-1", "10.1.0.5", nil), webAccount()},
			args:     []string{"-n", "shop", "web-1", tBaseArg, "--pod-identity"},
			wantCode: exitServed,
			want: []string{
				`ServiceAccount shop/default names role "` + tBase + `web"`,
				"token door:  role " + tBase + "web, for a token with audience kube2ra",
				"token for:   ServiceAccount shop/default with UID uid-sa-shop-default only",
				"token from:  10.1.0.5 only, owned by this pod (UID uid-shop-web-1) under the metadata door's rule; the same token from any other address, another pod's or the node's, is refused",
				"verdict:     served by the token door only: role " + tBase + "web",
				"reason:      the pod has no iam.amazonaws.com/role annotation",
			}},
		{name: "with --pod-identity a host-network pod's token counts only from the node's own addresses",
			objs: []runtime.Object{shop, func() *corev1.Pod {
				p := testPod("shop", "web-1", "192.0.2.10", nil)
				p.Spec.HostNetwork, p.Status.HostIP = true, "192.0.2.10"
				return p
			}(), webAccount()},
			args:     []string{"-n", "shop", "web-1", tBaseArg, "--pod-identity"},
			wantCode: exitServed,
			want: []string{
				"token from:  the node's own addresses only (node node-a's, 192.0.2.10 among them, loopback included)",
				"its token from any pod's address is refused (403 AccessDeniedException, source_mismatch)",
				"verdict:     served by the token door only: role " + tBase + "web",
			}},
		{name: "with --pod-identity a token from an IP two live pods claim is refused on both doors",
			objs:     []runtime.Object{shop, testPod("shop", "web-1", "10.1.0.5", nil), testPod("shop", "stale", "10.1.0.5", nil), webAccount()},
			args:     []string{"-n", "shop", "web-1", tBaseArg, "--pod-identity"},
			wantCode: exitDenied,
			want: []string{
				"token from:  not 10.1.0.5: several live pods claim it (shop/stale, shop/web-1), so the token is refused from it (403 AccessDeniedException, source_mismatch)",
				"verdict:     denied",
			}},
		{name: "with --pod-identity a terminating pod's token counts only while its sandbox holds its IP",
			objs: []runtime.Object{shop, func() *corev1.Pod {
				p := testPod("shop", "web-1", "10.1.0.5", nil)
				p.DeletionTimestamp = &metav1.Time{Time: time.Now()}
				p.Finalizers = []string{"test/keep"}
				return p
			}(), webAccount()},
			args:     []string{"-n", "shop", "web-1", tBaseArg, "--pod-identity"},
			wantCode: exitDenied,
			want:     []string{"token from:  its IP only while its sandbox still holds it", "verdict:     denied"},
		},
		{name: "with --pod-identity a pod whose ServiceAccount the cache lacks gets no answer on the token door",
			objs:     []runtime.Object{shop, testPod("shop", "web-1", "10.1.0.5", role("web"))},
			args:     []string{"-n", "shop", "web-1", tBaseArg, "--pod-identity"},
			wantCode: exitServed,
			want: []string{
				"token for:   ServiceAccount shop/default, which the agent's cache lacks: every token of the pod is answered 503 (retry) until it is there",
				"verdict:     served: role " + tBase + "web at 169.254.169.254",
			}},
		{name: "with --pod-identity the namespace policy still governs the ServiceAccount's role",
			objs: []runtime.Object{shop, testPod("shop", "web-1", "10.1.0.5", nil), &corev1.ServiceAccount{
				ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "default", Annotations: map[string]string{k8s.DefaultRoleKey: "admin"}}}},
			args:     []string{"-n", "shop", "web-1", tBaseArg, "--pod-identity"},
			wantCode: exitDenied,
			want:     []string{"token door:  no role: role \"" + tBase + "admin\" denied", "verdict:     denied"},
		},
		{name: "an unknown pod cannot be answered",
			objs:     []runtime.Object{shop},
			args:     []string{"-n", "shop", "nope"},
			wantCode: exitUsage,
			want:     []string{"pod shop/nope not found"},
		},
		{name: "a bare role name with sts and no base ARN cannot be decided here",
			objs:     []runtime.Object{shop, testPod("shop", "web-1", "10.1.0.5", role("web"))},
			args:     []string{"-n", "shop", "web-1"},
			wantCode: exitUsage,
			want:     []string{"give explain --base-role-arn"},
		},
		{name: "an invalid agent flag is a usage error naming the flag",
			objs:     []runtime.Object{shop, testPod("shop", "web-1", "10.1.0.5", role("web"))},
			args:     []string{"-n", "shop", "web-1", "--namespace-restriction-format=fnmatch"},
			wantCode: exitUsage,
			want:     []string{"--namespace-restriction-format"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, code := runExplain(t, tt.objs, tt.args...)
			checkOutput(t, out, code, tt.wantCode, tt.want, nil)
		})
	}
}

// agentDaemonSet is the chart's DaemonSet shape: `run`, downward-API
// references and literal env values.
func agentDaemonSet(args []string, env ...corev1.EnvVar) *appsv1.DaemonSet {
	env = append(env, corev1.EnvVar{Name: "NODE_NAME", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "spec.nodeName"}}})
	return &appsv1.DaemonSet{
		ObjectMeta: metav1.ObjectMeta{Namespace: "kube-system", Name: "kube2ra"},
		Spec: appsv1.DaemonSetSpec{Template: corev1.PodTemplateSpec{Spec: corev1.PodSpec{Containers: []corev1.Container{{
			Name: "kube2ra", Args: append([]string{"run", "--node=$(NODE_NAME)", "--host-ip=$(HOST_IP)"}, args...), Env: env,
		}}}}},
	}
}

// TestExplainReadsTheAgentsSettingsFromItsDaemonSet: the DaemonSet's args
// and env change the answer (annotation key, default role, base ARN), and
// a flag given to explain wins over them.
func TestExplainReadsTheAgentsSettingsFromItsDaemonSet(t *testing.T) {
	ds := agentDaemonSet([]string{"--iam-role-key=example.com/role", "--default-role=$(DEFAULT_ROLE)"},
		corev1.EnvVar{Name: "DEFAULT_ROLE", Value: "reader"},
		corev1.EnvVar{Name: "KUBE2RA_BASE_ROLE_ARN", Value: tBase})
	objs := []runtime.Object{ds, testNamespace("shop", `["web"]`),
		testPod("shop", "custom", "10.1.0.7", map[string]string{"example.com/role": "web"}),
		testPod("shop", "kube2iam-key", "10.1.0.8", role("web"))}

	out, code := runExplain(t, objs, "-n", "shop", "custom")
	if code != exitServed || !strings.Contains(out, `annotation example.com/role = "web"`) || !strings.Contains(out, "DaemonSet kube-system/kube2ra") {
		t.Errorf("the DaemonSet's --iam-role-key and base ARN were not used: exit %d\n%s", code, out)
	}
	// Under the DaemonSet's key, the kube2iam annotation is not a role: the default role applies.
	out, code = runExplain(t, objs, "-n", "shop", "kube2iam-key")
	if code != exitServed || !strings.Contains(out, `--default-role "reader" applies`) {
		t.Errorf("the DaemonSet's --default-role (from $(DEFAULT_ROLE)) was not used: exit %d\n%s", code, out)
	}
	// explain's own flag wins over the DaemonSet's.
	out, code = runExplain(t, objs, "-n", "shop", "kube2iam-key", "--iam-role-key", k8s.DefaultRoleKey)
	if code != exitServed || !strings.Contains(out, `annotation iam.amazonaws.com/role = "web"`) || !strings.Contains(out, "explain's flags --iam-role-key") {
		t.Errorf("explain's --iam-role-key did not win over the DaemonSet's: exit %d\n%s", code, out)
	}
	// --from-daemonset=none ignores it: no default role, no base, the bare name cannot be decided.
	out, code = runExplain(t, objs, "-n", "shop", "custom", "--from-daemonset=none")
	if code != exitDenied || !strings.Contains(out, "no iam.amazonaws.com/role annotation and no --default-role") {
		t.Errorf("--from-daemonset=none still read the DaemonSet: exit %d\n%s", code, out)
	}
	// Naming a DaemonSet that is not there is an error, not a silent fallback.
	out, code = runExplain(t, objs, "-n", "shop", "custom", "--from-daemonset=kube-system/other")
	if code != exitUsage || !strings.Contains(out, "kube-system/other") {
		t.Errorf("a missing --from-daemonset was not an error: exit %d\n%s", code, out)
	}
	// Args that are not kube2ra run's are refused with the way out.
	bad := agentDaemonSet([]string{"--no-such-flag"})
	out, code = runExplain(t, []runtime.Object{bad, testNamespace("shop", `["web"]`), testPod("shop", "custom", "10.1.0.7", nil)}, "-n", "shop", "custom")
	if code != exitUsage || !strings.Contains(out, "--from-daemonset=none") {
		t.Errorf("unknown DaemonSet args were not reported: exit %d\n%s", code, out)
	}
}

// TestExplainAsksTheNodesAgent: the agent's /debug/store on the node's
// metrics port is read and compared; without --debug it says so.
func TestExplainAsksTheNodesAgent(t *testing.T) {
	pod := testPod("shop", "web-1", "10.1.0.5", role("web"))
	until := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	cached := &credentials.EntryState{RoleARN: tBase + "other", Cached: true, ServableUntil: until, Expiration: until.Add(11 * time.Minute), RefreshAt: until.Add(-time.Minute)}
	store := []debugEntry{{DebugEntry: k8s.DebugEntry{IPEntry: k8s.IPEntry{IP: "10.1.0.5", Holders: []string{"shop/web-1"}, Verdict: "owned",
		Owner: &k8s.Pod{UID: pod.UID, Namespace: "shop", Name: "web-1", IPs: []netip.Addr{netip.MustParseAddr("10.1.0.5")}}}, Role: tBase + "other"},
		Credentials: cached}}
	debug := true
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/debug/store" || !debug {
			http.NotFound(w, r)
			return
		}
		_ = json.NewEncoder(w).Encode(store)
	}))
	defer srv.Close()
	_, port, _ := net.SplitHostPort(srv.Listener.Addr().String())
	objs := []runtime.Object{testNamespace("shop", `["web"]`), pod}
	args := []string{"-n", "shop", "web-1", tBaseArg, "--metrics-port=" + port}

	// Off the pod's node the page cannot be read (it answers only over
	// loopback there): explain says where to run it and asks nothing.
	t.Setenv("NODE_NAME", "some-other-node")
	out, _ := runExplain(t, objs, args...)
	if !strings.Contains(out, "only over loopback on its own node") || !strings.Contains(out, "kubectl exec -n kube-system AGENT_POD_ON_"+pod.Spec.NodeName) {
		t.Errorf("off the node, explain did not say where to ask\n%s", out)
	}
	t.Setenv("NODE_NAME", pod.Spec.NodeName)

	out, code := runExplain(t, objs, args...)
	if code != exitServed {
		t.Errorf("exit %d, want %d", code, exitServed)
	}
	for _, w := range []string{
		"10.1.0.5 owned by shop/web-1, role " + tBase + "other",
		"the agent resolves " + tBase + "other, explain " + tBase + "web: their settings differ",
		"credentials: cached for " + tBase + "other: served until 2026-01-02T03:04:05Z (expire 2026-01-02T03:15:05Z)",
	} {
		if !strings.Contains(out, w) {
			t.Errorf("output lacks %q\n%s", w, out)
		}
	}
	cached.Cached, cached.LastError = false, "sts: AccessDenied: not authorized to perform sts:AssumeRole"
	if out, _ = runExplain(t, objs, args...); !strings.Contains(out, "not cached for "+tBase+"other: the last upstream call failed: sts: AccessDenied") {
		t.Errorf("a failed entry was not reported\n%s", out)
	}
	store[0].Credentials = nil
	if out, _ = runExplain(t, objs, args...); !strings.Contains(out, "the agent's cache tracks no entry for this pod") {
		t.Errorf("an untracked pod was not reported\n%s", out)
	}
	debug = false
	out, _ = runExplain(t, objs, args...)
	if !strings.Contains(out, "the agent runs without --debug") {
		t.Errorf("a 404 from the metrics port was not explained as --debug off\n%s", out)
	}
	srv.Close()
	out, _ = runExplain(t, objs, args...)
	if !strings.Contains(out, "not reachable") {
		t.Errorf("an unreachable agent was not reported\n%s", out)
	}
}

func TestExplainUsage(t *testing.T) {
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"no pod", nil, "which pod?"},
		{"two pods", []string{"a", "b"}, "one pod at a time"},
		{"node mode and a pod", []string{"--node", "a"}, "--node explains the node"},
		{"a DaemonSet that is no namespace/name", []string{"a", "--from-daemonset=kube2ra"}, "is not namespace/name"},
		{"an unknown flag", []string{"a", "--no-such-flag"}, "see kube2ra explain --help"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out, errOut strings.Builder
			if code := dispatch(append([]string{"explain"}, tt.args...), &out, &errOut); code != exitUsage {
				t.Errorf("exit %d, want %d", code, exitUsage)
			}
			if !strings.Contains(errOut.String(), tt.want) {
				t.Errorf("stderr %q lacks %q", errOut.String(), tt.want)
			}
		})
	}
	// Flags may follow the pod's name, as with kubectl; NAMESPACE/POD works too.
	var out, errOut strings.Builder
	o, _, ok := parseExplainFlags([]string{"shop/web-1", "--default-role", "reader"}, &out, &errOut)
	if !ok || o.namespace != "shop" || o.pod != "web-1" || len(o.overrides) != 1 || o.overrides[0] != (flagSetting{"default-role", "reader"}) {
		t.Errorf("parsed %+v, ok %v (%s)", o, ok, errOut.String())
	}
	o, _, ok = parseExplainFlags([]string{"--node=node-b"}, &out, &errOut)
	if !ok || !o.nodeMode || o.nodeName != "node-b" {
		t.Errorf("--node=node-b parsed as %+v", o)
	}
	if code := dispatch([]string{"explain", "--help"}, &out, &errOut); code != 0 || !strings.Contains(out.String(), "Exit: 0") {
		t.Errorf("--help: exit %d\n%s", code, out.String())
	}
}

// checkedRules is the node's rules as RulesProblem reads them.
type checkedRules struct {
	// problem is what RulesProblem answers.
	problem string
	// got is the configuration explain opened the rules with.
	got *iptables.Config
}

func (f checkedRules) RulesProblem(context.Context) (string, error) { return f.problem, nil }
func (f checkedRules) Backend() iptables.Mode                       { return iptables.ModeNFT }

// runExplainNode runs `kube2ra explain --node` against a fake API server
// and fake rules; pods' routes are the host's (loopback addresses go via lo).
func runExplainNode(t *testing.T, objs []runtime.Object, rules checkedRules, args ...string) (string, int) {
	t.Helper()
	var out, errOut strings.Builder
	o, code, ok := parseExplainFlags(append([]string{"--node=" + tNode, "--host-ip=127.0.0.1", "--metadata-addr=none"}, args...), &out, &errOut)
	if !ok {
		return errOut.String(), code
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	open := func(_ context.Context, c iptables.Config) (rulesReader, error) {
		if rules.got != nil {
			*rules.got = c
		}
		return rules, nil
	}
	code = explainNode(ctx, kubeapitest.FromClientset(fake.NewClientset(objs...)), nil, o, open, &out)
	return out.String(), code
}

// TestExplainNode: node mode reports the rules' state from the iptables
// check, the interfaces --host-interface matches, each pod's interface,
// and exits 1 on a problem.
func TestExplainNode(t *testing.T) {
	pods := []runtime.Object{testPod("shop", "web-1", "127.0.0.2", nil), func() *corev1.Pod {
		p := testPod("kube-system", "agent", "127.0.0.1", nil)
		p.Spec.HostNetwork = true
		return p
	}()}
	tests := []struct {
		name     string
		rules    checkedRules
		args     []string
		wantCode int
		want     []string
		dontWant []string
	}{
		{name: "rules in place and every pod behind a matched interface: no problem",
			args: []string{"--host-interface=lo"}, wantCode: exitServed,
			want: []string{"rules:       present and exactly as the agent installs them (backend nft)",
				"--host-interface lo matches: lo;",
				"via lo (matched: true): shop/web-1 (127.0.0.2)",
				"every pod address on node node-a comes in through an interface --host-interface matches (1 pods)",
				"verdict:     no problem found"},
			dontWant: []string{"kube-system/agent"}},
		{name: "flushed rules are a problem, named by the iptables check",
			rules: checkedRules{problem: "IPv4 (iptables-nft): chain KUBE2RA is missing from the nat table"},
			args:  []string{"--host-interface=lo"}, wantCode: exitDenied,
			want: []string{"PROBLEM: not as the agent installs them (backend nft): IPv4 (iptables-nft): chain KUBE2RA is missing", "verdict:     1 problem(s) found"}},
		{name: "a pod whose interface --host-interface misses is a problem, with the agent's fix",
			args: []string{"--host-interface=cni0"}, wantCode: exitDenied,
			want: []string{"via lo (matched: false): shop/web-1 (127.0.0.2)",
				"PROBLEM: pod shop/web-1 (127.0.0.2) sends its traffic in through lo, which --host-interface \"cni0\" does not match",
				"add lo to --host-interface"}},
		{name: "without --iptables nothing is checked and nothing is a problem",
			args: []string{"--iptables=false"}, wantCode: exitServed,
			want: []string{"--iptables=false: kube2ra installs no rules here"}, dontWant: []string{"interfaces:"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, code := runExplainNode(t, pods, tt.rules, tt.args...)
			checkOutput(t, out, code, tt.wantCode, tt.want, tt.dontWant)
		})
	}
}

// TestExplainNodeChecksTheRulesTheAgentInstalls: the rules are checked
// with the configuration run installs (nodeRulesConfig), from the same flags.
func TestExplainNodeChecksTheRulesTheAgentInstalls(t *testing.T) {
	var got iptables.Config
	if _, code := runExplainNode(t, nil, checkedRules{got: &got}, "--host-interface=cali+,!eth0", "--app-port=8282", "--pod-identity"); code != exitServed {
		t.Fatalf("exit %d", code)
	}
	want, err := iptables.ParseInterfaces("cali+,!eth0")
	if err != nil {
		t.Fatal(err)
	}
	if got.Port != 8282 || got.HostIP != netip.MustParseAddr("127.0.0.1") || !got.PodIdentity || len(got.Interfaces) != len(want) || got.Interfaces[1] != want[1] {
		t.Errorf("rules opened with %+v, want port 8282, host 127.0.0.1, pod identity, interfaces %v", got, want)
	}
}

// TestExplainNodeProbesTheMetadataService: an IMDS answering token-less
// GETs is reported as exposed, with the EC2 fix, and is a warning, not a
// problem (the rules stop pods while they are in place).
func TestExplainNodeProbesTheMetadataService(t *testing.T) {
	imds := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { _, _ = w.Write([]byte("ami-id\n")) }))
	defer imds.Close()
	out, code := runExplainNode(t, nil, checkedRules{}, "--host-interface=lo", "--metadata-addr="+imds.URL)
	if code != exitServed || !strings.Contains(out, "WARNING: "+imds.URL+" would give a pod that reaches it directly the node's credentials: IMDSv1 is open") || !strings.Contains(out, imdsprobe.Fix) {
		t.Errorf("exit %d\n%s", code, out)
	}
}

// TestExpandArgsLikeTheKubelet: $(VAR) is filled from the container's env,
// then this process's; $$ is a literal $; an argument it cannot fill is dropped (with its
// separate value), never kept as the literal "$(HOST_IP)".
func TestExpandArgsLikeTheKubelet(t *testing.T) {
	lookup := func(name string) (string, bool) {
		v, ok := map[string]string{"ROLE": "reader", "HOST_IP": "10.9.9.9"}[name]
		return v, ok
	}
	got := expandArgs([]string{"--default-role=$(ROLE)", "--host-ip", "$(HOST_IP)", "--node=$(NODE_NAME)", "--host-ips", "$(HOST_IPS)", "--debug", "--x=$$(ROLE)"}, lookup)
	want := []string{"--default-role=reader", "--host-ip", "10.9.9.9", "--debug", "--x=$(ROLE)"}
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("expandArgs = %q, want %q", got, want)
	}
}

// TestExplainNodeFillsTheDownwardAPIFromTheAgentsPod: the chart's
// --host-ip=$(HOST_IP) and --node=$(NODE_NAME) take the values the
// kubelet put in the agent's pod, where explain --node runs.
func TestExplainNodeFillsTheDownwardAPIFromTheAgentsPod(t *testing.T) {
	t.Setenv("NODE_NAME", "node-z")
	t.Setenv("HOST_IP", "10.9.9.9")
	var out, errOut strings.Builder
	o, _, ok := parseExplainFlags([]string{"--node", "--metadata-addr=none", "--iptables=false"}, &out, &errOut)
	if !ok {
		t.Fatal(errOut.String())
	}
	ds := agentDaemonSet(nil)
	code := explainNode(context.Background(), kubeapitest.FromClientset(fake.NewClientset(ds)), nil, o, nil, &out)
	if code != exitServed || !strings.Contains(out.String(), "node:        node-z, host IP 10.9.9.9") {
		t.Errorf("exit %d\n%s", code, out.String())
	}
}
