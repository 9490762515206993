package main

import (
	"context"
	"fmt"
	"net/http"
	"regexp"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kube2ra/kube2ra/test/bench"
	"github.com/kube2ra/kube2ra/test/harness"
)

// remoteNodes spread the pods of other nodes.
const remoteNodes = 100

// idlePodRange holds the addresses of the memory phase's pods, which exist
// only as API objects; the node routes it to its pod bridge.
const idlePodRange = "10.201.0.0/16"

// creators is how many creates run in parallel against the API server.
const creators = 32

// readyPoll is how often /readyz is asked while timing a start.
const readyPoll = 5 * time.Millisecond

// memory measures start-to-ready and resident memory of a fresh agent on a
// node with a full node's worth of pods (API objects with IPs; the agent
// only sees the API), many namespaces, and then many pods on other nodes.
// It leaves the agent running.
func (s *suite) memory(ctx context.Context) error {
	roles := []string{"bench-0", "bench-1", "bench-2", "bench-3", "bench-4"}
	if s.env.Agent.Running() {
		return fmt.Errorf("the memory phase needs a node whose agent has not started yet")
	}
	// A node routes every pod it runs through the CNI's interface; the agent
	// checks that route for each pod before it is ready.
	if err := s.env.Node.RouteToBridge(idlePodRange); err != nil {
		return err
	}
	t0 := time.Now()
	if err := parallel(ctx, s.cfg.namespaces, creators, func(i int) error {
		ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: nsName(i), Annotations: map[string]string{"iam.amazonaws.com/allowed-roles": `["bench-*"]`}}}
		_, err := s.fast.CoreV1().Namespaces().Create(ctx, ns, metav1.CreateOptions{})
		return err
	}); err != nil {
		return fmt.Errorf("creating namespaces: %w", err)
	}
	if err := parallel(ctx, s.cfg.localPods, creators, func(i int) error {
		pod := realisticPod(nsName(i*17%s.cfg.namespaces), fmt.Sprintf("local-%03d", i), harness.NodeName)
		pod.Annotations["iam.amazonaws.com/role"] = roles[i%len(roles)]
		created, err := s.fast.CoreV1().Pods(pod.Namespace).Create(ctx, pod, metav1.CreateOptions{})
		if err != nil {
			return err
		}
		setRunning(created, fmt.Sprintf("10.201.%d.%d", i/200, i%200+2))
		_, err = s.fast.CoreV1().Pods(pod.Namespace).UpdateStatus(ctx, created, metav1.UpdateOptions{})
		return err
	}); err != nil {
		return fmt.Errorf("creating the local pods: %w", err)
	}
	s.logf("memory: %d namespaces and %d local pods in %.1fs", s.cfg.namespaces, s.cfg.localPods, time.Since(t0).Seconds())

	var readyMS []float64
	var rss0 rssReading
	for run := range s.cfg.readyRuns {
		ms, err := s.timedStart(ctx)
		if err != nil {
			return err
		}
		readyMS = append(readyMS, ms)
		if run == 0 {
			time.Sleep(s.cfg.rssSettle)
			if rss0, err = readRSS(s.env.Agent.PID()); err != nil {
				return err
			}
			rss0.Synced = syncedLine(s.env.Agent.Log())
		}
		if err := s.env.Agent.Stop(); err != nil {
			return err
		}
	}
	s.logf("memory: ready in %s ms; RSS %.1f MiB (%s)", bench.JoinFloats(readyMS), rss0.MiB, rss0.Synced)

	t0 = time.Now()
	if err := parallel(ctx, s.cfg.remotePods, creators, func(i int) error {
		pod := realisticPod(nsName(i%s.cfg.namespaces), fmt.Sprintf("remote-%05d", i), fmt.Sprintf("node-r%03d", i%remoteNodes))
		_, err := s.fast.CoreV1().Pods(pod.Namespace).Create(ctx, pod, metav1.CreateOptions{})
		return err
	}); err != nil {
		return fmt.Errorf("creating the remote pods: %w", err)
	}
	createSec := time.Since(t0).Seconds()
	s.logf("memory: %d remote pods in %.1fs", s.cfg.remotePods, createSec)
	readyRemote, err := s.timedStart(ctx)
	if err != nil {
		return err
	}
	time.Sleep(s.cfg.rssSettle)
	rss1, err := readRSS(s.env.Agent.PID())
	if err != nil {
		return err
	}
	rss1.Synced = syncedLine(s.env.Agent.Log())
	if s.cfg.profileDir != "" {
		// What the resident memory holds: the heap in use after ready.
		if err := s.fetchProfile(ctx, "heap", "mem-heap"); err != nil {
			return err
		}
	}
	s.logf("memory: with %d remote pods ready in %.0f ms; RSS %.1f MiB (%s)", s.cfg.remotePods, readyRemote, rss1.MiB, rss1.Synced)

	r := s.report
	r.Add("ready_ms", bench.Median(readyMS), "ms",
		fmt.Sprintf("process start → /readyz 200, %d local pods, %d namespaces; median of %s", s.cfg.localPods, s.cfg.namespaces, bench.JoinFloats(readyMS)))
	r.Add("rss_mib_remote0", rss0.MiB, "MiB", fmt.Sprintf("VmRSS %s after ready (%s); %d local pods, %d namespaces (%s)", s.cfg.rssSettle, rss0.parts(), s.cfg.localPods, s.cfg.namespaces, rss0.Synced))
	r.Add("rss_mib_remote20000", rss1.MiB, "MiB", s.quickNote(
		fmt.Sprintf("same with %d pods on %d other nodes (%s)", s.cfg.remotePods, remoteNodes, rss1.parts()),
		fmt.Sprintf("QUICK: only %d pods on %d other nodes (full run: 20000; %s)", s.cfg.remotePods, remoteNodes, rss1.parts())))
	diff := rss1.MiB - rss0.MiB
	r.Checks = append(r.Checks, bench.Check{What: fmt.Sprintf("RSS figures within 10 MiB (difference %.1f MiB)", diff), Met: diff <= 10 && diff >= -10})
	r.Detail("memory", map[string]any{
		"ready_ms": readyMS, "ready_ms_with_remote": readyRemote, "rss_remote0": rss0, "rss_remote": rss1,
		"remote_pods": s.cfg.remotePods, "namespaces": s.cfg.namespaces, "local_pods": s.cfg.localPods, "remote_create_seconds": createSec,
	})
	return nil
}

func nsName(i int) string { return fmt.Sprintf("ns-%04d", i) }

// timedStart starts the agent and returns the milliseconds until /readyz
// answers 200.
func (s *suite) timedStart(ctx context.Context) (float64, error) {
	client := &http.Client{Timeout: time.Second}
	url := s.env.Agent.MetricsURL + "/readyz"
	t0 := time.Now()
	if err := s.env.Agent.Start(); err != nil {
		return 0, err
	}
	deadline := t0.Add(time.Minute)
	for time.Now().Before(deadline) && ctx.Err() == nil {
		if !s.env.Agent.Running() {
			return 0, fmt.Errorf("the agent exited during start; its log:\n%s", s.agentLogTail())
		}
		resp, err := client.Get(url)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return float64(time.Since(t0)) / float64(time.Millisecond), nil
			}
		}
		time.Sleep(readyPoll)
	}
	return 0, fmt.Errorf("the agent was not ready within a minute; its log:\n%s", s.agentLogTail())
}

// rssReading is the agent's memory as the kernel counts it.
type rssReading struct {
	// MiB is VmRSS.
	MiB float64 `json:"vmrss_mib"`
	// HWMMiB is VmHWM, the peak RSS.
	HWMMiB float64 `json:"vmhwm_mib"`
	// AnonMiB is RssAnon: the agent's own memory (heap, stacks, runtime).
	AnonMiB float64 `json:"rssanon_mib"`
	// FileMiB is RssFile: mapped files' pages, mostly the binary's.
	FileMiB float64 `json:"rssfile_mib"`
	// Synced is the agent's own count of cached pods and namespaces.
	Synced string `json:"synced"`
}

func readRSS(pid int) (rssReading, error) {
	rss, hwm, err := harness.ProcMemory(pid)
	if err != nil {
		return rssReading{}, err
	}
	anon, file, err := harness.ProcRSSParts(pid)
	if err != nil {
		return rssReading{}, err
	}
	return rssReading{MiB: float64(rss) / 1024, HWMMiB: float64(hwm) / 1024, AnonMiB: float64(anon) / 1024, FileMiB: float64(file) / 1024}, nil
}

// parts says how r splits, for a figure's note.
func (r rssReading) parts() string {
	return fmt.Sprintf("anon %.1f + file %.1f MiB", r.AnonMiB, r.FileMiB)
}

// syncedRE finds the agent's "informers synced" counts.
var syncedRE = regexp.MustCompile(`informers synced.*`)

// syncedLine is the pod and namespace counts of the agent's last sync.
func syncedLine(log string) string {
	all := syncedRE.FindAllString(log, -1)
	if len(all) == 0 {
		return "no sync line in the agent log"
	}
	last := all[len(all)-1]
	var parts []string
	for _, key := range []string{"pods=", "namespaces="} {
		if i := strings.Index(last, key); i >= 0 {
			parts = append(parts, strings.Fields(last[i:])[0])
		}
	}
	return "agent cached " + strings.Join(parts, " ")
}

// realisticPod is a pod of ordinary size: labels, a last-applied
// annotation, two containers with environment.
func realisticPod(namespace, name, node string) *corev1.Pod {
	env := make([]corev1.EnvVar, 10)
	for i := range env {
		env[i] = corev1.EnvVar{Name: fmt.Sprintf("VAR_%d", i), Value: strings.Repeat("v", 40)}
	}
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{
			Namespace: namespace, Name: name,
			Labels:      map[string]string{"app": "bench", "pod-template-hash": "5d9f8c7b6", "team": "platform"},
			Annotations: map[string]string{"kubectl.kubernetes.io/last-applied-configuration": strings.Repeat(`{"apiVersion":"v1","kind":"Pod"}`, 40)},
		},
		Spec: corev1.PodSpec{
			NodeName:           node,
			ServiceAccountName: "default",
			Containers: []corev1.Container{
				{Name: "app", Image: "registry.example/app:1.2.3", Env: env, Args: []string{"--port=8080", "--verbose"}},
				{Name: "sidecar", Image: "registry.example/sidecar:4.5.6", Env: env},
			},
		},
	}
}
