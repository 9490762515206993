//go:build e2ecluster

package cluster

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kube2ra/kube2ra/cni/install"
	"github.com/kube2ra/kube2ra/cni/plugin"
)

// cniReboots is how many reboots in a row the CNI scenario survives: the
// race without the plugin lost 4 of 6 and 5 of 6.
const cniReboots = 5

// cniValues turn the chained CNI plugin on, in the node's own directories.
func cniValues() []string {
	return []string{"cni.enabled=true", "cni.binDir=" + dir("cni", "bin"), "cni.confDir=" + dir("cni", "net.d")}
}

// cniState is what of the plugin is on the node's disk: the binary, and
// the kube2ra-cni entries of every configuration with their positions.
func cniState() (binary bool, entries []string) {
	_, err := os.Stat(dir("cni", "bin", "kube2ra-cni"))
	binary = err == nil
	files, _ := filepath.Glob(dir("cni", "net.d", "*"))
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		var list struct {
			Plugins []struct {
				Type string `json:"type"`
			} `json:"plugins"`
		}
		if json.Unmarshal(b, &list) != nil {
			continue
		}
		for i, p := range list.Plugins {
			if p.Type == "kube2ra-cni" {
				entries = append(entries, fmt.Sprintf("%s: plugin %d of %d", filepath.Base(f), i+1, len(list.Plugins)))
			}
		}
	}
	return binary, entries
}

// cniScenario: five reboots in a row with a workload pod polling from its
// first instant, first without the plugin (printed only: a race), then with
// the chart's cni.enabled, which installs the plugin (binary, entry last in
// the node's conflist). A reboot takes the pods' network namespaces with
// it, so the in-pod rule can only come from the plugin at ADD: the pod must
// get 0 answers from the node's metadata service on every reboot, its
// polls before the agent listens refused. Around them: a host-network
// pod gets the same answer from 169.254.169.254 with the plugin as without
// (the runtime does not call it); a pod whose ADD cannot install the rule
// does not start until the entry is mended (addFails); the conflist
// rewritten by the primary CNI; helm upgrade with the plugin on
// (cniUpgrade). helm uninstall leaves no binary and no entry.
func (w *world) cniScenario(ctx context.Context) {
	t := w.t
	// The same reboots without the plugin first, for the figures beside.
	w.install(ctx, "sts")
	without := w.reboots(ctx, "nocni", false)
	hostWithout := w.hostNetworkAnswer(ctx, "nocni")
	w.uninstall(ctx, "sts-nocni")

	w.install(ctx, "sts", cniValues()...)
	if err := waitFor(ctx, "the CNI plugin installed", time.Minute, nil, func() error {
		if bin, entries := cniState(); !bin || len(entries) != 1 || !strings.HasSuffix(entries[0], "plugin 2 of 2") {
			return fmt.Errorf("binary %v, entries %v", bin, entries)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if hostWith := w.hostNetworkAnswer(ctx, "cni"); hostWith != hostWithout || !strings.HasPrefix(hostWith, "200 ") {
		t.Errorf("a host-network pod got %q from 169.254.169.254 with the plugin, %q without: want the same answer of the node's metadata service", hostWith, hostWithout)
	}
	w.addFails(ctx)
	w.conflistRewritten(ctx)
	w.cniUpgrade(ctx)
	with := w.reboots(ctx, "cni", true)
	figure("cni_boot_reboot_node_credential_answers", with)
	figure("nocni_boot_reboot_node_credential_answers", without)
	w.uninstall(ctx, "sts-cni")
	bin, entries := cniState()
	left := len(entries)
	if bin {
		left++
	}
	figure("cni_left_after_uninstall", left)
	if left != 0 {
		t.Errorf("after helm uninstall: binary %v, entries %v", bin, entries)
	}
	w.keepAlive(ctx)
	w.cniOnly(ctx)
}

// cniOnly stands in for an eBPF dataplane (Cilium eBPF host routing,
// Calico eBPF), where pod packets never meet the host's netfilter hooks:
// the chart with host.iptables=false installs no host DNAT and no guard at
// all (checked in the node's tables, both backends), so the in-pod rule is
// the only thing between a pod and the node's metadata service. The AWS
// CLI, boto3 and aws-sdk-go-v2 each get exactly their pod's role, and a
// denied pod gets 404 (sdk_clients_ok_cni-only); through the token door
// (podIdentity.enabled, 169.254.170.23, the metadata service disabled for
// the clients) boto3 and aws-sdk-go-v2 get exactly their ServiceAccount's
// role (cni_only_podidentity_sdk_clients_ok).
func (w *world) cniOnly(ctx context.Context) {
	t := w.t
	w.install(ctx, "sts", append(cniValues(), "host.iptables=false", "podIdentity.enabled=true")...)
	if err := waitFor(ctx, "the CNI plugin installed", time.Minute, nil, func() error {
		if bin, entries := cniState(); !bin || len(entries) != 1 {
			return fmt.Errorf("binary %v, entries %v", bin, entries)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if left := w.rules(ctx); len(left) != 0 {
		t.Fatalf("host rules present with host.iptables=false: the emulation is not honest:\n%s", strings.Join(left, "\n"))
	}
	w.credentials(ctx, "cni-only")
	w.podIdentityNamespace(ctx)
	w.waitPolicy(ctx)
	piOK := w.podIdentityClientsOK(ctx, w.startPodIdentityClients(ctx, "cni-pi"))
	figure("cni_only_podidentity_sdk_clients_ok", piOK)
	host := w.rules(ctx)
	figure("cni_only_host_rules", len(host))
	if len(host) != 0 {
		t.Errorf("host rules appeared during the check:\n%s", strings.Join(host, "\n"))
	}
	w.uninstall(ctx, "sts-cni-only")
}

// reboots reboots the node cniReboots times in a row with a workload pod
// polling, prints per reboot the answers from the node's metadata service
// and the polls before the agent was Ready by HTTP code (000: refused),
// and returns the most node answers any reboot gave. With want0 every
// reboot must give 0, and the pod must have asked before the agent
// listened at least once (a refused poll), or the 0 proves nothing.
func (w *world) reboots(ctx context.Context, prefix string, want0 bool) int {
	t := w.t
	name := "poller-" + prefix + "-boot"
	w.startPoller(ctx, name, corev1.RestartPolicyAlways)
	worst, refusedTotal := 0, 0
	for i := 1; i <= cniReboots; i++ {
		r := w.rebootOnce(ctx, name)
		node, _ := judge(r.answers, r.fromMs)
		codes := map[string]int{}
		for _, a := range r.answers {
			if a.ms > r.fromMs && a.ms < r.readyMs {
				codes[a.code]++
			}
		}
		refusedTotal += codes["000"]
		figure(fmt.Sprintf("%s_boot_reboot_%d_node_credential_answers", prefix, i), node)
		figure(fmt.Sprintf("%s_boot_reboot_%d_polls_before_agent_ready_by_code", prefix, i), codeList(codes))
		if want0 && node != 0 {
			t.Errorf("reboot %d with the CNI plugin: the pod got %d answers from the node's own metadata service", i, node)
		}
		worst = max(worst, node)
	}
	if want0 && refusedTotal == 0 {
		t.Errorf("in %d reboots the pod never asked before the agent listened: the window the plugin closes was not measured", cniReboots)
	}
	w.deletePod(ctx, appNS, name)
	return worst
}

// codeList prints code counts sorted, e.g. "000:2,200:27".
func codeList(codes map[string]int) string {
	var out []string
	for c, n := range codes {
		out = append(out, fmt.Sprintf("%s:%d", c, n))
	}
	sort.Strings(out)
	if len(out) == 0 {
		return "none"
	}
	return strings.Join(out, ",")
}

// rewritePods is how many pods are created right after the rewrite.
const rewritePods = 5

// conflistRewritten: the primary CNI rewrites its conflist without
// kube2ra's entry, by a temporary file and a rename, as aws-node or
// Calico's install-cni do on restart, and pods are created at once. The
// agent's watch puts the entry back (cni_reinsert_ms, from the rename to
// the entry back on disk); every pod created in that window ends up with
// the in-pod rule (the plugin at ADD, or the agent's repair) and gets no
// answer with the node's role.
func (w *world) conflistRewritten(ctx context.Context) {
	t := w.t
	var entry plugin.Config
	if err := rewriteEntry(func(plugins []any) []any {
		var kept []any
		for _, p := range plugins {
			if m, _ := p.(map[string]any); m["type"] == plugin.PluginType {
				raw, _ := json.Marshal(m)
				if err := json.Unmarshal(raw, &entry); err != nil {
					t.Fatal(err)
				}
				continue
			}
			kept = append(kept, p)
		}
		return kept
	}); err != nil {
		t.Fatal(err)
	}
	renamed := time.Now()
	names := make([]string, rewritePods)
	for i := range names {
		names[i] = fmt.Sprintf("poller-rewrite-%d", i)
		if _, err := w.kube.CoreV1().Pods(appNS).Create(ctx, w.scriptPod(names[i], allowedRole, poller), metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	var back time.Duration
	if err := waitFor(ctx, "the kube2ra-cni entry back in the conflist", time.Minute, nil, func() error {
		if _, entries := cniState(); len(entries) != 1 {
			return fmt.Errorf("entries %v", entries)
		}
		back = time.Since(renamed)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	// waitFor looks every 200 ms: the agent's own timing is in its log.
	figure("cni_reinsert_ms", back.Milliseconds())
	figure("cni_reinsert_ms_agent_log", agentLogTook())
	for _, name := range names {
		w.waitPollerRole(ctx, name, renamed.UnixMilli())
	}
	found, err := install.NetnsDir{Dir: "/run/netns"}.Find()
	if err != nil {
		t.Fatal(err)
	}
	uncovered, node := 0, 0
	for _, name := range names {
		p, err := w.kube.CoreV1().Pods(appNS).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		ns := found[netip.MustParseAddr(p.Status.PodIP)]
		if err := waitFor(ctx, name+" covered in-pod", time.Minute, nil, func() error { return plugin.Verify(ns, entry) }); err != nil {
			uncovered++
			t.Errorf("pod %s (%s, netns %q) created while the entry was missing: %v", name, p.Status.PodIP, ns, err)
		}
		n, _ := judge(pollerAnswers(name), renamed.UnixMilli())
		node += n
		w.deletePod(ctx, appNS, name)
	}
	figure("cni_rewrite_pods_uncovered", uncovered)
	figure("cni_rewrite_node_credential_answers", node)
	if node != 0 {
		t.Errorf("pods created while the conflist was rewritten got %d answers with the node's role", node)
	}
}

// agentLogTook is the took_ms of the agent's last re-insertion log line,
// -1 when there is none.
func agentLogTook() int64 {
	files, _ := filepath.Glob(dir("kubelet", "logs", "kube-system_kube2ra-*", "*", "*.log"))
	took := int64(-1)
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(b), "\n") {
			if !strings.Contains(line, "kube2ra-cni entry re-inserted") {
				continue
			}
			if i := strings.Index(line, "took_ms="); i >= 0 {
				var v int64
				if _, err := fmt.Sscanf(line[i+len("took_ms="):], "%d", &v); err == nil {
					took = v
				}
			}
		}
	}
	return took
}

// keepAliver holds one HTTP/1.1 connection to 169.254.169.254 open and asks
// on it every 100 ms, opening a new one only when it fails.
const keepAliver = `import http.client, time
def conn():
    return http.client.HTTPConnection("169.254.169.254", 80, timeout=1)
c = conn()
while True:
    try:
        c.request("GET", "/latest/meta-data/iam/security-credentials/")
        r = c.getresponse()
        print(int(time.time() * 1000), r.status, r.read().decode(), flush=True)
    except Exception as e:
        print(int(time.time() * 1000), "000", type(e).__name__, flush=True)
        c.close()
        c = conn()
    time.sleep(0.1)
`

// keepAlive: a pod that opened a keep-alive connection to the node's
// metadata service before kube2ra was there (nothing installed, as on a
// node where kube2ra is installed for the first time), with no host rule
// either (host.iptables=false, so the host guard cannot help). Once the
// agent is Ready, its repair has put the rule into the pod and removed the
// pod's conntrack entries: the open connection gets no answer from the
// node's metadata service any more (keepalive_node_credential_answers).
func (w *world) keepAlive(ctx context.Context) {
	t := w.t
	const name = "keepalive"
	pod := w.scriptPod(name, allowedRole, "exec python3 -c '"+keepAliver+"'")
	if _, err := w.kube.CoreV1().Pods(appNS).Create(ctx, pod, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := waitFor(ctx, name+" answered by the node's metadata service", 2*time.Minute, nil, func() error {
		if n, _ := judge(pollerAnswers(name), 0); n < 3 {
			return fmt.Errorf("%d answers with the node's role so far", n)
		}
		return nil
	}); err != nil {
		t.Fatalf("%v\n%s", err, podLogs(appNS, name, 10))
	}
	before, _ := judge(pollerAnswers(name), 0)
	w.install(ctx, "sts", append(cniValues(), "host.iptables=false")...)
	readyMs := time.Now().UnixMilli()
	time.Sleep(3 * time.Second)
	node, _ := judge(pollerAnswers(name), readyMs)
	figure("keepalive_node_credential_answers_before_kube2ra", before)
	figure("keepalive_node_credential_answers", node)
	if node != 0 {
		t.Errorf("the keep-alive connection opened before kube2ra got %d answers from the node's metadata service after the agent was Ready", node)
	}
	// It kept asking: refused (the connection reset), then the agent on a
	// new connection (401: the agent requires IMDSv2 tokens, this client
	// sends none).
	codes := map[string]int{}
	for _, a := range pollerAnswers(name) {
		if a.ms > readyMs {
			codes[a.code]++
		}
	}
	figure("keepalive_answers_after_ready_by_code", codeList(codes))
	if len(codes) == 0 {
		t.Errorf("the keep-alive pod asked nothing after the agent was Ready: the 0 proves nothing\n%s", podLogs(appNS, name, 10))
	}
	w.deletePod(ctx, appNS, name)
	w.uninstall(ctx, "sts-keepalive")
}
