//go:build e2ecluster

package cluster

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kube2ra/kube2ra/test/harness"
)

// scriptPod is a one-container pod of the client image running script,
// with the role annotation.
func (w *world) scriptPod(name, role, script string) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: appNS, Annotations: map[string]string{"iam.amazonaws.com/role": role}},
		Spec: corev1.PodSpec{
			RestartPolicy: corev1.RestartPolicyNever, AutomountServiceAccountToken: boolPtr(false), TerminationGracePeriodSeconds: int64Ptr(0),
			Containers: []corev1.Container{{
				Name: "c", Image: w.images["client"].Ref, ImagePullPolicy: corev1.PullNever,
				Command: []string{"sh", "-c", script},
				Env:     []corev1.EnvVar{{Name: "AWS_DEFAULT_REGION", Value: harness.EC2Region}},
			}},
		},
	}
}

// firstCredentials retries aws-sdk-go-v2's default chain until it gets
// credentials (the agent may not know a brand-new pod yet) and writes them,
// with the time they arrived, to the termination message.
const firstCredentials = `until out=$(podclient 2>&1); do sleep 0.05; done; printf '%s %s' "$(date +%s%3N)" "$out" >/dev/termination-log`

// podResult is one finished pod of a batch.
type podResult struct {
	name, role, ip string
	created        time.Time
	doneMs         int64  // when the container had credentials (epoch ms)
	accessKeyID    string // what it got
	err            error
}

// runBatch runs pods (name → role) at once and collects their first
// credentials.
func (w *world) runBatch(ctx context.Context, roles map[string]string) []podResult {
	var mu sync.Mutex
	var out []podResult
	var wg sync.WaitGroup
	for name, role := range roles {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := podResult{name: name, role: role, created: time.Now()}
			defer func() { mu.Lock(); out = append(out, r); mu.Unlock() }()
			if _, r.err = w.kube.CoreV1().Pods(appNS).Create(ctx, w.scriptPod(name, role, firstCredentials), metav1.CreateOptions{}); r.err != nil {
				return
			}
			var msgs map[string]string
			msgs, _, r.err = w.waitPodDone(ctx, appNS, name, 2*time.Minute)
			if r.err != nil {
				r.err = fmt.Errorf("%w\n%s", r.err, podLogs(appNS, name, 10))
				return
			}
			if p, err := w.kube.CoreV1().Pods(appNS).Get(ctx, name, metav1.GetOptions{}); err == nil {
				r.ip = p.Status.PodIP
			}
			ts, body, _ := strings.Cut(msgs["c"], " ")
			var creds struct{ AccessKeyID string }
			r.doneMs, r.err = strconv.ParseInt(ts, 10, 64)
			if r.err == nil {
				r.err = json.Unmarshal([]byte(body), &creds)
			}
			r.accessKeyID = creds.AccessKeyID
			_ = w.kube.CoreV1().Pods(appNS).Delete(ctx, name, metav1.DeleteOptions{GracePeriodSeconds: int64Ptr(0)})
		}()
	}
	wg.Wait()
	return out
}

// coldStart is scenario 3: from creating a pod to its container's first
// credentials, over 20 pods in two batches of 10 (the /28 holds 13).
func (w *world) coldStart(ctx context.Context) {
	t := w.t
	var ms []int64
	for batch := range 2 {
		roles := map[string]string{}
		for i := range 10 {
			roles[fmt.Sprintf("cold-%d-%d", batch, i)] = allowedRole
		}
		for _, r := range w.runBatch(ctx, roles) {
			if r.err != nil {
				t.Fatalf("%s: %v", r.name, r.err)
			}
			if got := w.roleOfKey(r.accessKeyID); got != harness.RoleARN(r.role) {
				t.Errorf("%s got credentials of %q, want %s", r.name, got, r.role)
			}
			ms = append(ms, r.doneMs-r.created.UnixMilli())
		}
	}
	figure("cold_start_p50_ms", percentile(ms, 0.50))
	figure("cold_start_p99_ms", percentile(ms, 0.99))
}

// ipReuse is scenario 4: 100 pods with alternating roles churn through the
// /28, so each address carries several pods; every pod must get its own role.
func (w *world) ipReuse(ctx context.Context) {
	t := w.t
	wrong, pods := 0, 0
	perIP := map[string]int{}
	for batch := range 10 {
		roles := map[string]string{}
		for i := range 10 {
			role := allowedRole
			if (batch+i)%2 == 1 {
				role = otherRole
			}
			roles[fmt.Sprintf("reuse-%d-%d", batch, i)] = role
		}
		for _, r := range w.runBatch(ctx, roles) {
			if r.err != nil {
				t.Fatalf("%s: %v", r.name, r.err)
			}
			pods++
			perIP[r.ip]++
			if got := w.roleOfKey(r.accessKeyID); got != harness.RoleARN(r.role) {
				wrong++
				t.Errorf("%s (IP %s) got credentials of %q, want %s", r.name, r.ip, got, r.role)
			}
		}
	}
	reused := 0
	for _, n := range perIP {
		if n > 1 {
			reused++
		}
	}
	figure("ipreuse_pods", pods)
	figure("ipreuse_addresses_reused", reused)
	figure("ipreuse_wrong_role", wrong)
	if reused == 0 {
		t.Errorf("no address carried two pods (%v): the test did not exercise IP reuse", perIP)
	}
}

// poller asks the metadata service for the role listing every 100 ms and
// prints "<epoch ms> <http code> <body>" per answer.
const poller = `while true; do t=$(curl -s -m 1 -X PUT -H 'X-aws-ec2-metadata-token-ttl-seconds: 60' http://169.254.169.254/latest/api/token); b=$(curl -s -m 1 -H "X-aws-ec2-metadata-token: $t" -w ' %{http_code}' http://169.254.169.254/latest/meta-data/iam/security-credentials/); echo "$(date +%s%3N) ${b##* } ${b% *}"; sleep 0.1; done`

// pollAnswers reads a poller's answers from the kubelet's log of the pod.
type pollAnswer struct {
	ms   int64
	code string
	body string
}

func pollerAnswers(name string) []pollAnswer {
	files, _ := filepath.Glob(dir("kubelet", "logs", appNS+"_"+name+"_*", "*", "*.log"))
	var out []pollAnswer
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(b), "\n") {
			// CRI log format: time stream tag message.
			f := strings.SplitN(line, " ", 4)
			if len(f) < 4 {
				continue
			}
			parts := strings.SplitN(f[3], " ", 3)
			ms, err := strconv.ParseInt(parts[0], 10, 64)
			if err != nil || len(parts) < 2 {
				continue
			}
			a := pollAnswer{ms: ms, code: parts[1]}
			if len(parts) == 3 {
				a.body = parts[2]
			}
			out = append(out, a)
		}
	}
	return out
}

// startPoller starts a poller pod and waits until it has its role.
func (w *world) startPoller(ctx context.Context, name string, restart corev1.RestartPolicy) {
	t := w.t
	pod := w.scriptPod(name, allowedRole, poller)
	pod.Spec.RestartPolicy = restart
	if _, err := w.kube.CoreV1().Pods(appNS).Create(ctx, pod, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := waitFor(ctx, name+" answered with its role", 2*time.Minute, nil, func() error {
		for _, a := range pollerAnswers(name) {
			if a.code == "200" && a.body == allowedRole {
				return nil
			}
		}
		return fmt.Errorf("no answer with its role yet")
	}); err != nil {
		t.Fatalf("%v\n%s", err, podLogs(appNS, name, 10))
	}
}

// judge counts a poller's answers with the node's own role, and the longest
// gap between answers with the pod's role, from from on.
func judge(answers []pollAnswer, from int64) (nodeAnswers int, gapMs int64) {
	last := int64(0)
	for _, a := range answers {
		if a.ms < from {
			continue
		}
		if strings.Contains(a.body, nodeRole) {
			nodeAnswers++
		}
		if a.code == "200" && a.body == allowedRole {
			if last != 0 && a.ms-last > gapMs {
				gapMs = a.ms - last
			}
			last = a.ms
		}
	}
	return nodeAnswers, gapMs
}

// upgrade is scenario 5: helm upgrade restarts the agent while a pod polls;
// the pod never gets the node's credentials, and the gap is measured.
func (w *world) upgrade(ctx context.Context) {
	t := w.t
	const name = "poller-upgrade"
	w.startPoller(ctx, name, corev1.RestartPolicyNever)
	ds, err := w.kube.AppsV1().DaemonSets("kube-system").Get(ctx, "kube2ra", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	from := time.Now().UnixMilli()
	w.helm(ctx, append([]string{"upgrade", "kube2ra", filepath.Join(w.repo, "charts", "kube2ra"), "-n", "kube-system"},
		w.values("sts", "podAnnotations.kube2ra-test/upgrade=at-"+strconv.FormatInt(from, 10))...)...)
	w.waitDaemonSetReady(ctx, ds.Status.ObservedGeneration)
	// Answers with the pod's role again after the new agent is Ready.
	if err := waitFor(ctx, name+" answered after the upgrade", time.Minute, nil, func() error {
		as := pollerAnswers(name)
		if len(as) > 0 && as[len(as)-1].code == "200" && as[len(as)-1].body == allowedRole && as[len(as)-1].ms > time.Now().UnixMilli()-2000 {
			return nil
		}
		return fmt.Errorf("not yet")
	}); err != nil {
		t.Error(err)
	}
	node, gap := judge(pollerAnswers(name), from)
	figure("upgrade_node_credential_answers", node)
	figure("upgrade_gap_ms", gap)
	if node != 0 {
		t.Errorf("during helm upgrade a pod got %d answers from the node's own metadata service", node)
	}
	w.deletePod(ctx, appNS, name)
}

// nodeRestart is scenario 6: a workload pod is already on the node, the
// node "reboots" (every container and the node daemons die, the iptables
// rules are gone) and containerd, the kubelet and kube-proxy start again;
// the kubelet restarts the workload and the agent together. Every answer the
// pod gets with the node's own role (from the metadata service on the node,
// because no rule sends it to the agent yet) is counted. Without the
// startup taint (#16) this is the honest number, expected above 0 here.
func (w *world) nodeRestart(ctx context.Context) {
	t := w.t
	const name = "poller-boot"
	w.startPoller(ctx, name, corev1.RestartPolicyAlways)
	from := time.Now().UnixMilli()
	if err := w.node.reboot(ctx); err != nil {
		t.Fatal(err)
	}
	if err := waitFor(ctx, "the agent restarted and Ready", 3*time.Minute, nil, func() error {
		pods, err := w.kube.CoreV1().Pods("kube-system").List(ctx, metav1.ListOptions{})
		if err != nil {
			return err
		}
		for _, p := range pods.Items {
			for _, c := range p.Status.ContainerStatuses {
				if c.Ready && c.State.Running != nil && c.State.Running.StartedAt.UnixMilli() > from {
					return nil
				}
			}
		}
		return fmt.Errorf("not yet")
	}); err != nil {
		t.Fatalf("%v\n%s", err, w.agentPodState(ctx))
	}
	readyMs := time.Now().UnixMilli()
	// The agent is back; the pod answers with its role again.
	if err := waitFor(ctx, name+" answered after the restart", 2*time.Minute, nil, func() error {
		as := pollerAnswers(name)
		if len(as) > 0 && as[len(as)-1].ms > from && as[len(as)-1].code == "200" && as[len(as)-1].body == allowedRole {
			return nil
		}
		return fmt.Errorf("not yet")
	}); err != nil {
		t.Error(err)
	}
	answers := pollerAnswers(name)
	node, _ := judge(answers, from)
	// How often the workload asked before the agent was Ready again: with
	// none, the count above proves nothing about the boot window.
	early := 0
	for _, a := range answers {
		if a.ms > from && a.ms < readyMs {
			early++
		}
	}
	figure("boot_polls_before_agent_ready", early)
	figure("boot_node_credential_answers", node)
	figure("boot_startup_taint", w.node.RegisterTaints != "")
	w.deletePod(ctx, appNS, name)
}
