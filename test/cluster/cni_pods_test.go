//go:build e2ecluster

package cluster

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kube2ra/kube2ra/cni/install"
	"github.com/kube2ra/kube2ra/cni/plugin"
)

// hostNetworkAnswer runs a host-network pod (annotated with a role like any
// workload) that asks 169.254.169.254 for its role name once, and returns
// "<HTTP code> <body>". The runtime calls no CNI plugin for such a pod, so
// what it gets must not depend on kube2ra-cni being chained.
func (w *world) hostNetworkAnswer(ctx context.Context, prefix string) string {
	name := "hostnet-" + prefix
	pod := w.scriptPod(name, allowedRole, `code=$(curl -s -m 5 -o /tmp/body -w '%{http_code}' http://169.254.169.254/latest/meta-data/iam/security-credentials/); printf '%s %s' "$code" "$(cat /tmp/body)" >/dev/termination-log`)
	pod.Spec.HostNetwork = true
	msgs, _ := w.runPod(ctx, pod, time.Minute)
	w.deletePod(ctx, appNS, name)
	figure(prefix+"_hostnetwork_answer", strconv.Quote(msgs["c"]))
	return msgs["c"]
}

// conflistPath is the node's primary CNI configuration.
func conflistPath() string { return dir("cni", "net.d", "10-k2rc.conflist") }

// rewriteEntry rewrites the node's conflist by a temporary file and a
// rename, as a primary CNI does, with edit applied to the plugin list.
func rewriteEntry(edit func(plugins []any) []any) error {
	path := conflistPath()
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	var list map[string]any
	if err := json.Unmarshal(b, &list); err != nil {
		return err
	}
	plugins, _ := list["plugins"].([]any)
	list["plugins"] = edit(plugins)
	out, err := json.Marshal(list)
	if err != nil {
		return err
	}
	tmp := path + ".primary-tmp"
	if err := os.WriteFile(tmp, out, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// agentPID is the host PID of the running agent container's process.
func (w *world) agentPID(ctx context.Context) int {
	t := w.t
	pods, err := w.kube.CoreV1().Pods("kube-system").List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	id := ""
	for _, p := range pods.Items {
		if p.DeletionTimestamp == nil && len(p.Status.ContainerStatuses) > 0 && p.Status.ContainerStatuses[0].State.Running != nil {
			id = strings.TrimPrefix(p.Status.ContainerStatuses[0].ContainerID, "containerd://")
		}
	}
	out, err := run(ctx, "ctr", "--address", Socket, "-n", "k8s.io", "tasks", "ls")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(out, "\n") {
		if f := strings.Fields(line); id != "" && len(f) >= 2 && f[0] == id {
			if pid, err := strconv.Atoi(f[1]); err == nil && pid > 0 {
				return pid
			}
		}
	}
	t.Fatalf("no running task of the agent container %q:\n%s", id, out)
	return 0
}

// brokenBackend is what addFails puts into the entry: not an iptables
// backend, so the plugin's ADD refuses the entry and installs no rule.
const brokenBackend = "no-such-backend"

// addFails: a pod whose ADD cannot install the in-pod rule must not start.
// The agent is stopped (SIGSTOP) so that it cannot mend the entry, the
// entry's iptablesBackend is made one the plugin cannot run, and a pod is
// created: the runtime's ADD fails, the pod stays in ContainerCreating and
// the kubelet's FailedCreatePodSandBox Event names kube2ra-cni. The agent
// continues (SIGCONT), puts its entry back, and the kubelet's next try
// starts the pod, with the in-pod rule.
func (w *world) addFails(ctx context.Context) {
	t := w.t
	const name = "cni-addfail"
	pid := w.agentPID(ctx)
	if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	stopped := true
	cont := func() {
		if stopped {
			stopped = false
			if err := syscall.Kill(pid, syscall.SIGCONT); err != nil {
				t.Errorf("continuing the agent (pid %d): %v", pid, err)
			}
		}
	}
	defer cont()
	var entry plugin.Config
	if err := rewriteEntry(func(plugins []any) []any {
		for _, p := range plugins {
			if m, _ := p.(map[string]any); m["type"] == plugin.PluginType {
				raw, _ := json.Marshal(m)
				_ = json.Unmarshal(raw, &entry)
				m["iptablesBackend"] = brokenBackend
			}
		}
		return plugins
	}); err != nil {
		t.Fatal(err)
	}
	created := time.Now()
	if _, err := w.kube.CoreV1().Pods(appNS).Create(ctx, w.scriptPod(name, allowedRole, poller), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	var event string
	if err := waitFor(ctx, "a FailedCreatePodSandBox Event naming kube2ra-cni on "+name, 30*time.Second, nil, func() error {
		evs, err := w.kube.CoreV1().Events(appNS).List(ctx, metav1.ListOptions{FieldSelector: "involvedObject.name=" + name + ",reason=FailedCreatePodSandBox"})
		if err != nil {
			return err
		}
		for _, e := range evs.Items {
			if strings.Contains(e.Message, plugin.PluginType) {
				event = e.Message
				return nil
			}
		}
		return fmt.Errorf("%d such Events, none naming %s", len(evs.Items), plugin.PluginType)
	}); err != nil {
		t.Error(err)
	}
	p, err := w.kube.CoreV1().Pods(appNS).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	state := string(p.Status.Phase)
	for _, c := range p.Status.ContainerStatuses {
		if c.State.Waiting != nil {
			state += "/" + c.State.Waiting.Reason
		} else if c.State.Running != nil {
			state += "/Running"
		}
	}
	if p.Status.PodIP != "" {
		state += " ip " + p.Status.PodIP
	}
	figure("cni_add_failed_pod_state", state)
	figure("cni_add_failed_event_names_plugin", event != "")
	t.Logf("%s: %s", name, event)
	if p.Status.Phase != corev1.PodPending || p.Status.PodIP != "" {
		t.Errorf("pod %s, created while ADD could not install the rule, is %s: want Pending in ContainerCreating, without an address", name, state)
	}
	cont()
	var started int64
	if err := waitFor(ctx, name+" running after the agent mended its entry", time.Minute, nil, func() error {
		p, err = w.kube.CoreV1().Pods(appNS).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		if p.Status.Phase != corev1.PodRunning || p.Status.PodIP == "" {
			return fmt.Errorf("phase %s", p.Status.Phase)
		}
		started = time.Since(created).Milliseconds()
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	figure("cni_add_failed_pod_started_after_ms", started)
	found, err := install.NetnsDir{Dir: "/run/netns"}.Find()
	if err != nil {
		t.Fatal(err)
	}
	if err := plugin.Verify(found[netip.MustParseAddr(p.Status.PodIP)], entry); err != nil {
		t.Errorf("pod %s started without the in-pod rule: %v", name, err)
	}
	w.waitPollerRole(ctx, name, created.UnixMilli())
	node, _ := judge(pollerAnswers(name), created.UnixMilli())
	figure("cni_add_failed_node_credential_answers", node)
	if node != 0 {
		t.Errorf("pod %s got %d answers with the node's role", name, node)
	}
	w.deletePod(ctx, appNS, name)
}

// cniUpgrade is the upgrade scenario with the plugin on: the pod polling
// through helm upgrade never gets the node's role, and the plugin's binary
// and entry are on the node all along (looked at every 50 ms) and after.
func (w *world) cniUpgrade(ctx context.Context) {
	t := w.t
	var mu sync.Mutex
	looks, missing := 0, 0
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-done:
				return
			case <-time.After(50 * time.Millisecond):
			}
			bin, entries := cniState()
			mu.Lock()
			looks++
			if !bin || len(entries) != 1 {
				missing++
			}
			mu.Unlock()
		}
	}()
	w.upgrade(ctx, "cni", cniValues()...)
	close(done)
	wg.Wait()
	bin, entries := cniState()
	figure("cni_upgrade_plugin_missing_looks", fmt.Sprintf("%d/%d", missing, looks))
	if missing != 0 || !bin || len(entries) != 1 || !strings.HasSuffix(entries[0], "plugin 2 of 2") {
		t.Errorf("through helm upgrade the plugin was missing %d of %d looks; after it: binary %v, entries %v", missing, looks, bin, entries)
	}
}
