package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/kube2ra/kube2ra/test/bench"
	"github.com/kube2ra/kube2ra/test/harness"
	"github.com/kube2ra/kube2ra/test/simnode"
)

// metadataAddr is where pods send metadata requests.
const metadataAddr = simnode.MetadataIP + ":80"

// credPathPrefix is the IMDS credential route.
const credPathPrefix = "/latest/meta-data/iam/security-credentials/"

// allowAll is a namespace policy allowing every role of the account.
const allowAll = `["*"]`

// spawnDelay is how far ahead the shared start of a load is set, so that
// every load process (started through `ip netns exec`) is connected by then.
const spawnDelay = 800 * time.Millisecond

// agentArgs are the agent's flags for every benchmark node, after the
// harness's own: production log settings (the harness turns --debug on),
// and a per-pod rate limit high enough not to refuse a closed-loop load;
// the limiter still runs on every request, so its cost is measured.
// IMDSv1 stays allowed: the cold-start probe measures a pod's first read
// alone, without a token PUT before it (the load runs send tokens).
// BENCH_AGENT_ARGS (space separated) adds flags, for what-if runs.
var agentArgs = []string{"--debug=false", "--log-level", "info", "--rate-limit", "1000000", "--imdsv2-required=false", "--cluster-name", "bench"}

// suite is one benchmark run: its configuration, the node under test, and
// the report.
type suite struct {
	// cfg sizes the run.
	cfg config
	// report collects figures.
	report *bench.Report
	// loadgen is the client-side program (test/bench/loadgen), built at start.
	loadgen string
	// tmp holds the built program.
	tmp string
	// env is the node under test, nil between nodes.
	env *harness.Env
	// fast is an admin client without client-side throttling, for bursts.
	fast kubernetes.Interface
	// lastBurst is when the last cold-start burst ended (upstream tokens).
	lastBurst time.Time
	// logSeq numbers kept agent logs.
	logSeq int
	// netns are the pod network namespaces created on the current node.
	netns []string
	// pool are reusable pod network namespaces (see burstNets).
	pool []*simnode.Pod
	// vethSeq numbers node-side veth names (simnode's own numbering is not
	// safe for concurrent AddPod calls).
	vethSeq int
}

func newSuite(cfg config) (*suite, error) {
	tmp, err := os.MkdirTemp("", "kube2ra-bench-")
	if err != nil {
		return nil, err
	}
	loadgen, err := buildLoadgen(tmp)
	if err != nil {
		_ = os.RemoveAll(tmp)
		return nil, err
	}
	if cfg.profileDir != "" {
		bin, err := buildSymbolBinary(cfg.profileDir)
		if err != nil {
			return nil, err
		}
		os.Setenv("KUBE2RA_BINARY", bin)
	}
	if _, err := harness.FindBinary(); err != nil {
		return nil, err
	}
	return &suite{cfg: cfg, loadgen: loadgen, tmp: tmp, report: &bench.Report{Quick: cfg.quick, Started: time.Now()}}, nil
}

// buildLoadgen builds test/bench/loadgen into dir.
func buildLoadgen(dir string) (string, error) {
	return harness.BuildProgram(dir, "loadgen", "./test/bench/loadgen")
}

func (s *suite) logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "[%6.1fs] %s\n", time.Since(s.report.Started).Seconds(), fmt.Sprintf(format, args...))
}

// startEnv starts a node of the given flavour with the roles the phases use.
func (s *suite) startEnv(ctx context.Context, flavour harness.Flavour, roles []string, noAgent bool) error {
	return s.startEnvWith(ctx, harness.Options{Flavour: flavour, Roles: roles, NoAgent: noAgent})
}

// startEnvWith starts a node with opts plus the bench's agent arguments
// and environment.
func (s *suite) startEnvWith(ctx context.Context, opts harness.Options) error {
	s.closeEnv()
	t0 := time.Now()
	flavour := opts.Flavour
	opts.AgentArgs = append(slices.Clone(agentArgs), strings.Fields(os.Getenv("BENCH_AGENT_ARGS"))...)
	// BENCH_AGENT_ENV (space separated K=V) adds environment, e.g. GOGC.
	opts.AgentEnv = strings.Fields(os.Getenv("BENCH_AGENT_ENV"))
	if s.cfg.profileDir != "" {
		opts.AgentEnv = append(opts.AgentEnv, "KUBE2RA_PPROF_ADDR="+pprofAddr)
	}
	env, err := harness.Start(ctx, opts)
	if err != nil {
		return fmt.Errorf("starting the %s node: %w", flavour, err)
	}
	s.env = env
	cfg := env.CP.AdminConfig()
	cfg.QPS, cfg.Burst = 5000, 5000
	if s.fast, err = kubernetes.NewForConfig(cfg); err != nil {
		return err
	}
	s.logf("%s node up in %.1fs", flavour, time.Since(t0).Seconds())
	return nil
}

// startRA starts the Roles Anywhere node, its agent not yet started (the
// memory phase times the start).
func (s *suite) startRA(ctx context.Context) error {
	return s.startEnv(ctx, harness.RolesAnywhere, raRoles(s.cfg), true)
}

// startEC2 starts the EC2 node for pass-through.
func (s *suite) startEC2(ctx context.Context) error {
	return s.startEnv(ctx, harness.EC2, []string{loadRole}, false)
}

func (s *suite) closeEnv() {
	if s.env == nil {
		return
	}
	// BENCH_AGENT_LOG=prefix keeps each node's agent log, for digging.
	if prefix := os.Getenv("BENCH_AGENT_LOG"); prefix != "" {
		s.logSeq++
		path := fmt.Sprintf("%s-%d-%s.log", prefix, s.logSeq, s.env.Flavour)
		if err := os.WriteFile(path, []byte(s.env.Agent.Log()), 0o644); err != nil {
			s.logf("keeping the agent log: %v", err)
		}
	}
	// The harness removes pod namespaces one by one; in parallel it is
	// several seconds faster with a hundred and fifty pods.
	t0 := time.Now()
	_ = parallel(context.Background(), len(s.netns), 8, func(i int) error { return s.env.Node.RemovePod(s.netns[i]) })
	s.netns, s.pool = nil, nil
	s.env.Close()
	s.env = nil
	s.logf("node closed in %.1fs", time.Since(t0).Seconds())
}

func (s *suite) close() {
	s.closeEnv()
	_ = os.RemoveAll(s.tmp)
}

// agentLogTail is the end of the agent's log, for failures.
func (s *suite) agentLogTail() string {
	if s.env == nil || s.env.Agent == nil {
		return ""
	}
	lines := strings.Split(strings.TrimRight(s.env.Agent.Log(), "\n"), "\n")
	if len(lines) > 30 {
		lines = lines[len(lines)-30:]
	}
	return strings.Join(lines, "\n")
}

// nextVeth is a unique node-side interface name.
func (s *suite) nextVeth() string {
	s.vethSeq++
	return fmt.Sprintf("vb%05d", s.vethSeq)
}

// createPods creates pods (network namespace and Running object) with a
// few in parallel.
func (s *suite) createPods(ctx context.Context, specs []harness.PodSpec) ([]*harness.Pod, error) {
	for i := range specs {
		if specs[i].HostVeth == "" {
			specs[i].HostVeth = s.nextVeth()
		}
	}
	pods := make([]*harness.Pod, len(specs))
	err := parallel(ctx, len(specs), 8, func(i int) error {
		p, err := s.env.CreatePod(ctx, specs[i])
		pods[i] = p
		return err
	})
	for _, p := range pods {
		if p != nil {
			s.netns = append(s.netns, p.Net.Name)
		}
	}
	return pods, err
}

// burstNets returns n pod network namespaces for pods whose objects the
// caller creates; they are made once and reused by every burst (each burst
// deletes its pods, so the next one gets the same IPs, as a node reuses
// them): creating and deleting network namespaces costs seconds per fifty.
func (s *suite) burstNets(ctx context.Context, n int) ([]*simnode.Pod, error) {
	if missing := n - len(s.pool); missing > 0 {
		names := make([]string, missing)
		for i := range names {
			names[i] = fmt.Sprintf("burst-%03d", len(s.pool)+i)
		}
		nets, err := s.addNetns(ctx, names)
		if err != nil {
			return nil, fmt.Errorf("creating pod network namespaces: %w", err)
		}
		s.pool = append(s.pool, nets...)
	}
	return s.pool[:n], nil
}

// deleteNamespacePods deletes every pod of a namespace at once (grace 0,
// as after the kubelet confirmed) and waits until the API has none left.
func (s *suite) deleteNamespacePods(ctx context.Context, namespace string) error {
	pods := s.fast.CoreV1().Pods(namespace)
	list, err := pods.List(ctx, metav1.ListOptions{})
	if err != nil {
		return err
	}
	zero := int64(0)
	err = parallel(ctx, len(list.Items), 16, func(i int) error {
		return pods.Delete(ctx, list.Items[i].Name, metav1.DeleteOptions{GracePeriodSeconds: &zero})
	})
	if err != nil {
		return fmt.Errorf("deleting the %s pods: %w", namespace, err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		list, err := pods.List(ctx, metav1.ListOptions{})
		if err == nil && len(list.Items) == 0 {
			// The agent's watch delivers the deletions within milliseconds;
			// give it a moment so no old pod shares an IP with a new one.
			time.Sleep(200 * time.Millisecond)
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("the %s pods were not gone within 30s", namespace)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// createRunningPods creates pods bound to the node on the given network
// namespaces and sets their IPs, a few in parallel.
func (s *suite) createRunningPods(ctx context.Context, namespace string, names, roles []string, nets []*simnode.Pod) error {
	pods := s.fast.CoreV1().Pods(namespace)
	return parallel(ctx, len(names), 8, func(i int) error {
		created, err := pods.Create(ctx, newPodObject(namespace, names[i], roles[i]), metav1.CreateOptions{})
		if err != nil {
			return err
		}
		setRunning(created, nets[i].IP.String())
		_, err = pods.UpdateStatus(ctx, created, metav1.UpdateOptions{})
		return err
	})
}

// addNetns creates only the network namespaces (the objects come later).
func (s *suite) addNetns(ctx context.Context, names []string) ([]*simnode.Pod, error) {
	veths := make([]string, len(names))
	for i := range names {
		veths[i] = s.nextVeth()
	}
	nets := make([]*simnode.Pod, len(names))
	err := parallel(ctx, len(names), 8, func(i int) error {
		p, err := s.env.Node.AddPod(names[i], netip.Addr{}, veths[i])
		nets[i] = p
		return err
	})
	for _, p := range nets {
		if p != nil {
			s.netns = append(s.netns, p.Name)
		}
	}
	return nets, err
}

// parallel runs f(0..n-1) on workers goroutines and returns the first error.
func parallel(ctx context.Context, n, workers int, f func(i int) error) error {
	jobs := make(chan int)
	var wg sync.WaitGroup
	var once sync.Once
	var first error
	for range min(workers, n) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range jobs {
				if err := f(i); err != nil {
					once.Do(func() { first = err })
				}
			}
		}()
	}
	for i := range n {
		if ctx.Err() != nil {
			break
		}
		jobs <- i
	}
	close(jobs)
	wg.Wait()
	if first == nil {
		first = ctx.Err()
	}
	return first
}

// subprocess is a started subcommand with its output.
type subprocess struct {
	// cmd is the process.
	cmd *exec.Cmd
	// stdout delivers its output line by line.
	stdout *bufio.Reader
	// stderr collects its complaints.
	stderr *bytes.Buffer
}

// startSub starts `loadgen <sub>` (inside the pod when net is not nil) and
// writes opts as JSON to its stdin.
func (s *suite) startSub(ctx context.Context, net *simnode.Pod, sub string, opts any) (*subprocess, error) {
	var cmd *exec.Cmd
	if net != nil {
		cmd = net.Command(ctx, s.loadgen, sub)
	} else {
		cmd = exec.CommandContext(ctx, s.loadgen, sub)
	}
	cmd.Env = harness.CleanEnviron()
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	in, err := json.Marshal(opts)
	if err != nil {
		return nil, err
	}
	cmd.Stdin = bytes.NewReader(in)
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	p := &subprocess{cmd: cmd, stdout: bufio.NewReader(out), stderr: &bytes.Buffer{}}
	cmd.Stderr = p.stderr
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting bench %s: %w", sub, err)
	}
	return p, nil
}

// line reads one output line, or fails after timeout.
func (p *subprocess) line(timeout time.Duration) (string, error) {
	type result struct {
		s   string
		err error
	}
	ch := make(chan result, 1)
	go func() {
		l, err := p.stdout.ReadString('\n')
		ch <- result{strings.TrimSpace(l), err}
	}()
	select {
	case r := <-ch:
		if r.err != nil && r.s == "" {
			_ = p.cmd.Wait()
			return "", fmt.Errorf("%s: %w: %s", strings.Join(p.cmd.Args, " "), r.err, strings.TrimSpace(p.stderr.String()))
		}
		return r.s, nil
	case <-time.After(timeout):
		_ = p.cmd.Process.Kill()
		return "", fmt.Errorf("%s printed nothing within %s", strings.Join(p.cmd.Args, " "), timeout)
	}
}

// result decodes the process's final JSON line and waits for it to exit.
func (p *subprocess) result(timeout time.Duration, v any) error {
	l, err := p.line(timeout)
	if err != nil {
		return err
	}
	if err := json.Unmarshal([]byte(l), v); err != nil {
		return fmt.Errorf("%s printed %.200q: %w", strings.Join(p.cmd.Args, " "), l, err)
	}
	if err := p.cmd.Wait(); err != nil {
		return fmt.Errorf("%s: %w: %s", strings.Join(p.cmd.Args, " "), err, strings.TrimSpace(p.stderr.String()))
	}
	return nil
}

// stop sends SIGTERM and waits.
func (p *subprocess) stop() error {
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	_, _ = io.Copy(io.Discard, p.stdout)
	return p.cmd.Wait()
}

// runLoad runs one load process per network namespace (nil: the node
// itself), all with the same options and a shared start, and merges what
// they measured.
func (s *suite) runLoad(ctx context.Context, nets []*simnode.Pod, o bench.LoadOptions) (bench.LoadResult, error) {
	r, _, err := s.runLoadCPU(ctx, nets, o)
	return r, err
}

// runLoadCPU is runLoad that also reads the CPU time each process of pids
// spent in the measured window.
func (s *suite) runLoadCPU(ctx context.Context, nets []*simnode.Pod, o bench.LoadOptions, pids ...int) (bench.LoadResult, []time.Duration, error) {
	o.Start = time.Now().Add(spawnDelay)
	cpu := make(chan []time.Duration, 1)
	go func() { cpu <- cpuInWindow(pids, o.Start.Add(o.Warmup), o.Start.Add(o.Warmup+o.Duration)) }()
	r, err := s.collectLoad(ctx, nets, o)
	return r, <-cpu, err
}

// collectLoad starts the load processes and merges their results.
func (s *suite) collectLoad(ctx context.Context, nets []*simnode.Pod, o bench.LoadOptions) (bench.LoadResult, error) {
	procs := make([]*subprocess, len(nets))
	for i, n := range nets {
		p, err := s.startSub(ctx, n, "loadgen", o)
		if err != nil {
			return bench.LoadResult{}, err
		}
		procs[i] = p
	}
	total := bench.LoadResult{Statuses: map[int]uint64{}, Latency: &bench.Histogram{}}
	bound := spawnDelay + o.Warmup + o.Duration + 30*time.Second
	for _, p := range procs {
		var r bench.LoadResult
		if err := p.result(bound, &r); err != nil {
			return total, err
		}
		total.Merge(r)
	}
	return total, nil
}

// cpuInWindow is the user+system CPU time each of pids used between from
// and to (0 where it cannot be read).
func cpuInWindow(pids []int, from, to time.Time) []time.Duration {
	out := make([]time.Duration, len(pids))
	if len(pids) == 0 {
		return out
	}
	time.Sleep(time.Until(from))
	start := make([]time.Duration, len(pids))
	ok := make([]bool, len(pids))
	for i, pid := range pids {
		var err error
		start[i], err = processCPU(pid)
		ok[i] = err == nil
	}
	time.Sleep(time.Until(to))
	for i, pid := range pids {
		if end, err := processCPU(pid); err == nil && ok[i] {
			out[i] = end - start[i]
		}
	}
	return out
}

// clockTicks is USER_HZ, the unit of /proc/<pid>/stat times (100 on Linux).
const clockTicks = 100

// processCPU is utime+stime of pid from /proc/<pid>/stat.
func processCPU(pid int) (time.Duration, error) {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// The command name may hold spaces; fields start after its ")".
	i := bytes.LastIndexByte(raw, ')')
	if i < 0 {
		return 0, fmt.Errorf("unexpected /proc/%d/stat", pid)
	}
	f := strings.Fields(string(raw[i+1:]))
	// After ")": state(3) ... utime is field 14, stime 15 (1-based overall).
	if len(f) < 13 {
		return 0, fmt.Errorf("short /proc/%d/stat", pid)
	}
	var ticks int64
	for _, s := range f[11:13] {
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return 0, err
		}
		ticks += n
	}
	return time.Duration(ticks) * time.Second / clockTicks, nil
}

// loadAverage is the first field of /proc/loadavg: how busy the shared
// machine was, for reading the figures.
func loadAverage() string {
	raw, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	return strings.Fields(string(raw))[0]
}

// podNets are the network namespaces of pods.
func podNets(pods []*harness.Pod) []*simnode.Pod {
	out := make([]*simnode.Pod, len(pods))
	for i, p := range pods {
		out[i] = p.Net
	}
	return out
}

// newPodObject is a pod bound to this node, Pending, as the scheduler leaves it.
func newPodObject(namespace, name, role string) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: name, Annotations: map[string]string{"iam.amazonaws.com/role": role}},
		Spec: corev1.PodSpec{
			NodeName:           harness.NodeName,
			ServiceAccountName: "default",
			Containers:         []corev1.Container{{Name: "app", Image: "example.invalid/app:1"}},
		},
	}
}

// setRunning sets a pod's IP and phase through the status subresource, as
// the kubelet does once the sandbox has its address.
func setRunning(pod *corev1.Pod, ip string) {
	pod.Status.Phase = corev1.PodRunning
	pod.Status.PodIP = ip
	pod.Status.PodIPs = []corev1.PodIP{{IP: ip}}
	pod.Status.HostIP = simnode.HostIP
}

// stats summarises a load result for notes and details.
type stats struct {
	// CPUPerReqUS is the server process's CPU time per answered request.
	CPUPerReqUS float64 `json:"cpu_us_per_req,omitempty"`
	// HarnessCPUPerReqUS is this program's CPU per request: mostly reading
	// the agent's log pipe, as a container runtime would.
	HarnessCPUPerReqUS float64 `json:"harness_cpu_us_per_req,omitempty"`
	RPS                float64 `json:"rps"`
	P50us              float64 `json:"p50_us"`
	P99us              float64 `json:"p99_us"`
	P999us             float64 `json:"p999_us"`
	OK                 uint64  `json:"ok"`
	Errors             uint64  `json:"errors"`
}

func summarise(r bench.LoadResult) stats {
	us := func(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }
	return stats{RPS: r.RPS(), P50us: us(r.Latency.Quantile(0.5)), P99us: us(r.Latency.Quantile(0.99)), P999us: us(r.Latency.Quantile(0.999)), OK: r.OK, Errors: r.Errors}
}

// checkClean fails a load with errors: a benchmark of failures means nothing.
func checkClean(what string, r bench.LoadResult) error {
	if r.Errors > 0 {
		return fmt.Errorf("%s: %d of %d requests failed (statuses %v), first: %s", what, r.Errors, r.Errors+r.OK, r.Statuses, r.FirstError)
	}
	if r.OK == 0 {
		return fmt.Errorf("%s: no request succeeded", what)
	}
	return nil
}
