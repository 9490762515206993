//go:build integration

package controlplane_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/kube2ra/kube2ra/test/controlplane"
)

// shared is the package's control plane, started once in TestMain.
var shared *controlplane.ControlPlane

// childEnv makes the test binary act as a child of a test: "crash" for
// TestCrashedOwnerLeavesNoProcesses, "netns" for TestRunsInsideNetworkNamespace.
const childEnv = "KUBE2RA_CONTROLPLANE_CHILD"

func TestMain(m *testing.M) {
	switch os.Getenv(childEnv) {
	case "crash":
		os.Exit(runCrashChild())
	case "netns":
		os.Exit(runNetnsChild())
	}
	var err error
	shared, err = controlplane.Start(context.Background(), controlplane.Options{})
	if err != nil {
		fmt.Fprintln(os.Stderr, "starting the test control plane:", err)
		os.Exit(1)
	}
	code := m.Run()
	if err := shared.Stop(); err != nil {
		fmt.Fprintln(os.Stderr, "stopping the test control plane:", err)
		code = 1
	}
	os.Exit(code)
}

// runCrashChild starts a control plane, prints the pids of its processes and
// waits to be killed.
func runCrashChild() int {
	cp, err := controlplane.Start(context.Background(), controlplane.Options{})
	if err != nil {
		fmt.Println("ERROR", err)
		return 1
	}
	fmt.Println("DIR", cp.Dir)
	for _, name := range []string{"etcd", "kube-apiserver"} {
		pid, _ := os.ReadFile(filepath.Join(cp.Dir, name+".pid"))
		fmt.Println("PID", strings.SplitN(string(pid), "\n", 2)[0])
	}
	time.Sleep(time.Minute)
	return 0
}

// bindEnv passes the BindAddress to the "netns" child.
const bindEnv = "KUBE2RA_CONTROLPLANE_BIND"

// runNetnsChild starts a control plane on $KUBE2RA_CONTROLPLANE_BIND, lists
// namespaces through it, prints "READY <url>" and stops when stdin closes.
func runNetnsChild() int {
	cp, err := controlplane.Start(context.Background(), controlplane.Options{BindAddress: os.Getenv(bindEnv)})
	if err != nil {
		fmt.Println("ERROR", strings.ReplaceAll(err.Error(), "\n", " | "))
		return 1
	}
	defer cp.Stop()
	client := kubernetes.NewForConfigOrDie(cp.AdminConfig())
	if _, err := client.CoreV1().Namespaces().Get(context.Background(), "default", metav1.GetOptions{}); err != nil {
		fmt.Println("ERROR getting namespace default inside the network namespace:", err)
		return 1
	}
	fmt.Println("READY", cp.URL(), cp.StartupDuration.Milliseconds())
	_, _ = io.Copy(io.Discard, os.Stdin)
	return 0
}

func adminClient(t *testing.T) kubernetes.Interface {
	t.Helper()
	client, err := kubernetes.NewForConfig(shared.AdminConfig())
	if err != nil {
		t.Fatalf("building the admin client: %v", err)
	}
	return client
}

func createNamespace(t *testing.T, client kubernetes.Interface, name string) {
	t.Helper()
	ctx := context.Background()
	_, err := client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("creating namespace %s: %v", name, err)
	}
	t.Cleanup(func() {
		_ = client.CoreV1().Namespaces().Delete(context.Background(), name, metav1.DeleteOptions{})
	})
}

// createRunningPod creates a pod bound to node and gives it an IP and phase
// Running through the status subresource, as a kubelet would.
func createRunningPod(t *testing.T, client kubernetes.Interface, ns, name, node, ip string) *corev1.Pod {
	t.Helper()
	ctx := context.Background()
	pod, err := client.CoreV1().Pods(ns).Create(ctx, &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Spec: corev1.PodSpec{
			NodeName:   node,
			Containers: []corev1.Container{{Name: "app", Image: "example.invalid/app:1"}},
		},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("creating pod %s/%s: %v", ns, name, err)
	}
	pod.Status.Phase = corev1.PodRunning
	pod.Status.PodIP = ip
	pod.Status.PodIPs = []corev1.PodIP{{IP: ip}}
	pod, err = client.CoreV1().Pods(ns).UpdateStatus(ctx, pod, metav1.UpdateOptions{})
	if err != nil {
		t.Fatalf("setting the status of pod %s/%s: %v", ns, name, err)
	}
	return pod
}

func TestPodStatusObservedByNodeScopedInformer(t *testing.T) {
	t.Logf("control plane start to /readyz: %s", shared.StartupDuration)
	fmt.Printf("BENCH controlplane_start_ms %d ms\n", shared.StartupDuration.Milliseconds())

	client := adminClient(t)
	const ns = "smoke"
	createNamespace(t, client, ns)

	factory := informers.NewSharedInformerFactoryWithOptions(client, 0,
		informers.WithTweakListOptions(func(o *metav1.ListOptions) {
			o.FieldSelector = fields.OneTermEqualSelector("spec.nodeName", "node-a").String()
		}))
	podInformer := factory.Core().V1().Pods().Informer()
	running := make(chan *corev1.Pod, 10)
	_, err := podInformer.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { notifyRunning(running, obj) },
		UpdateFunc: func(_, obj any) { notifyRunning(running, obj) },
	})
	if err != nil {
		t.Fatalf("adding the event handler: %v", err)
	}
	stop := make(chan struct{})
	t.Cleanup(func() { close(stop); factory.Shutdown() })
	factory.Start(stop)
	syncCtx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if !cache.WaitForCacheSync(syncCtx.Done(), podInformer.HasSynced) {
		t.Fatalf("the pod informer did not sync within 10s")
	}

	// node-b first: if it were observed, it would arrive before node-a's pod.
	createRunningPod(t, client, ns, "on-node-b", "node-b", "10.1.0.8")
	createRunningPod(t, client, ns, "on-node-a", "node-a", "10.1.0.7")

	select {
	case pod := <-running:
		if pod.Name != "on-node-a" {
			t.Fatalf("observed pod %s on node %s; the field selector should only admit node-a", pod.Name, pod.Spec.NodeName)
		}
		ip, err := netip.ParseAddr(pod.Status.PodIP)
		if err != nil || ip != netip.MustParseAddr("10.1.0.7") || len(pod.Status.PodIPs) != 1 || pod.Status.PodIPs[0].IP != "10.1.0.7" {
			t.Fatalf("observed pod IPs %q/%v, want 10.1.0.7", pod.Status.PodIP, pod.Status.PodIPs)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("the informer did not observe pod on-node-a running with an IP within 10s")
	}

	var names []string
	for _, obj := range podInformer.GetStore().List() {
		names = append(names, obj.(*corev1.Pod).Name)
	}
	if len(names) != 1 || names[0] != "on-node-a" {
		t.Fatalf("informer store holds %v, want only [on-node-a] (pod on-node-b is on another node)", names)
	}
}

func notifyRunning(ch chan<- *corev1.Pod, obj any) {
	pod, ok := obj.(*corev1.Pod)
	if ok && pod.Status.Phase == corev1.PodRunning && pod.Status.PodIP != "" {
		ch <- pod
	}
}

func TestRBACIsEnforced(t *testing.T) {
	ctx := context.Background()
	admin := adminClient(t)
	const ns = "rbac"
	createNamespace(t, admin, ns)

	t.Run("user without bindings is forbidden", func(t *testing.T) {
		cfg, err := shared.UserConfig("nobody", "some-group")
		if err != nil {
			t.Fatal(err)
		}
		client := kubernetes.NewForConfigOrDie(cfg)
		_, err = client.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{})
		if !apierrors.IsForbidden(err) {
			t.Fatalf("listing pods as an unbound user: got %v, want Forbidden", err)
		}
	})

	t.Run("user with a bound ClusterRole is allowed, through a kubeconfig file", func(t *testing.T) {
		_, err := admin.RbacV1().ClusterRoles().Create(ctx, &rbacv1.ClusterRole{
			ObjectMeta: metav1.ObjectMeta{Name: "test-pod-reader"},
			Rules:      []rbacv1.PolicyRule{{APIGroups: []string{""}, Resources: []string{"pods"}, Verbs: []string{"get", "list", "watch"}}},
		}, metav1.CreateOptions{})
		if err != nil {
			t.Fatalf("creating the ClusterRole: %v", err)
		}
		_, err = admin.RbacV1().ClusterRoleBindings().Create(ctx, &rbacv1.ClusterRoleBinding{
			ObjectMeta: metav1.ObjectMeta{Name: "test-pod-reader"},
			RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: "test-pod-reader"},
			Subjects:   []rbacv1.Subject{{Kind: rbacv1.GroupKind, APIGroup: rbacv1.GroupName, Name: "pod-readers"}},
		}, metav1.CreateOptions{})
		if err != nil {
			t.Fatalf("creating the ClusterRoleBinding: %v", err)
		}
		path, err := shared.UserKubeconfig("reader", "pod-readers")
		if err != nil {
			t.Fatal(err)
		}
		cfg, err := clientcmd.BuildConfigFromFlags("", path)
		if err != nil {
			t.Fatalf("loading the user kubeconfig %s: %v", path, err)
		}
		client := kubernetes.NewForConfigOrDie(cfg)
		// RBAC bindings take effect through the authorizer's informers: allow
		// a moment.
		deadline := time.Now().Add(5 * time.Second)
		for {
			_, err = client.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{})
			if err == nil || time.Now().After(deadline) {
				break
			}
			time.Sleep(50 * time.Millisecond)
		}
		if err != nil {
			t.Fatalf("listing pods as a user bound to a pod-reading ClusterRole: %v", err)
		}
		_, err = client.CoreV1().Secrets(ns).List(ctx, metav1.ListOptions{})
		if !apierrors.IsForbidden(err) {
			t.Fatalf("listing secrets (not granted): got %v, want Forbidden", err)
		}
	})
}

func TestKubectlTalksToIt(t *testing.T) {
	kubectl, err := exec.LookPath("kubectl")
	if err != nil {
		t.Fatalf("kubectl is not on PATH (it comes with the machine image; install it from https://dl.k8s.io): %v", err)
	}
	out, err := exec.Command(kubectl, "--kubeconfig", shared.Kubeconfig, "get", "ns", "default", "-o", "name").CombinedOutput()
	if err != nil || strings.TrimSpace(string(out)) != "namespace/default" {
		t.Fatalf("kubectl get ns default: %v\n%s", err, out)
	}
}

func TestStartFailsWithInstructions(t *testing.T) {
	dir := t.TempDir()
	crashing := filepath.Join(dir, "kube-apiserver")
	if err := os.WriteFile(crashing, []byte("#!/bin/sh\necho 'F0101 something specific broke' >&2\nexit 3\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	racing := filepath.Join(dir, "kube-apiserver-racing")
	if err := os.WriteFile(racing, []byte("#!/bin/sh\necho 'E0101 listen tcp 127.0.0.1:6443: bind: address already in use' >&2\nexit 1\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	busyPort := busy.Addr().(*net.TCPAddr).Port

	tests := []struct {
		name string
		opts controlplane.Options
		want []string
	}{
		{
			name: "missing kube-apiserver says how to build it",
			opts: controlplane.Options{KubeAPIServer: filepath.Join(dir, "no-such-kube-apiserver")},
			want: []string{"kube-apiserver not found", "run hack/install-test-deps.sh (make test-deps)"},
		},
		{
			name: "missing etcd says how to install it",
			opts: controlplane.Options{Etcd: filepath.Join(dir, "no-such-etcd")},
			want: []string{"etcd not found", "apt-get install etcd-server or run hack/install-test-deps.sh"},
		},
		{
			name: "kube-apiserver port in use names the port",
			opts: controlplane.Options{SecurePort: busyPort},
			want: []string{"kube-apiserver cannot listen on 127.0.0.1:" + strconv.Itoa(busyPort), "in use"},
		},
		{
			name: "etcd port in use names the port",
			opts: controlplane.Options{EtcdPort: busyPort},
			want: []string{"etcd cannot listen on 127.0.0.1:" + strconv.Itoa(busyPort), "in use"},
		},
		{
			name: "kube-apiserver losing the race for a picked port is retried, then says the port is in use",
			opts: controlplane.Options{KubeAPIServer: racing},
			want: []string{"kube-apiserver cannot listen on 127.0.0.1:", "in use", "bind: address already in use"},
		},
		{
			name: "crashing kube-apiserver shows its exit and log tail",
			opts: controlplane.Options{KubeAPIServer: crashing},
			want: []string{"kube-apiserver exited during start", "exit status 3", "F0101 something specific broke"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			cp, err := controlplane.Start(ctx, tt.opts)
			if err == nil {
				cp.Stop()
				t.Fatalf("Start succeeded, want an error containing %q", tt.want)
			}
			t.Logf("Start error:\n%v", err)
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error does not contain %q:\n%v", w, err)
				}
			}
		})
	}
}

func TestStopEndsProcessesAndRemovesFiles(t *testing.T) {
	cp, err := controlplane.Start(context.Background(), controlplane.Options{})
	if err != nil {
		t.Fatal(err)
	}
	pids := readPids(t, cp.Dir)
	begin := time.Now()
	if err := cp.Stop(); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	t.Logf("Stop took %s", time.Since(begin))
	for _, pid := range pids {
		if alive(pid) {
			t.Errorf("process %d still runs after Stop", pid)
		}
	}
	if _, err := os.Stat(cp.Dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Dir %s still exists after Stop (stat: %v)", cp.Dir, err)
	}
	if err := cp.Stop(); err != nil {
		t.Errorf("a second Stop: %v", err)
	}
}

// A test binary killed with SIGKILL (no deferred Stop runs) leaves no etcd or
// kube-apiserver behind: Pdeathsig ends them, and the next Start removes the
// directory.
func TestCrashedOwnerLeavesNoProcesses(t *testing.T) {
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"=crash")
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })

	var dir string
	var pids []int
	lines := bufio.NewScanner(stdout)
	for len(pids) < 2 && lines.Scan() {
		line := lines.Text()
		switch {
		case strings.HasPrefix(line, "ERROR"):
			t.Fatalf("the child could not start a control plane: %s", line)
		case strings.HasPrefix(line, "DIR "):
			dir = strings.TrimPrefix(line, "DIR ")
		case strings.HasPrefix(line, "PID "):
			pid, err := strconv.Atoi(strings.TrimPrefix(line, "PID "))
			if err != nil {
				t.Fatalf("bad pid line %q", line)
			}
			pids = append(pids, pid)
		}
	}
	if len(pids) != 2 || dir == "" {
		t.Fatalf("the child printed dir %q and pids %v; want a dir and two pids", dir, pids)
	}
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()

	deadline := time.Now().Add(5 * time.Second)
	for _, pid := range pids {
		for alive(pid) && time.Now().Before(deadline) {
			time.Sleep(20 * time.Millisecond)
		}
		if alive(pid) {
			t.Errorf("process %d outlived its killed owner by 5s", pid)
		}
	}
	if _, err := os.Stat(dir); err != nil {
		t.Fatalf("the crashed run's dir %s should still exist until the next Start: %v", dir, err)
	}
	cp, err := controlplane.Start(context.Background(), controlplane.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer cp.Stop()
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the next Start did not remove the crashed run's dir %s (stat: %v)", dir, err)
	}
}

// The control plane runs inside a network namespace with no default route
// (as a simulated node's would), bound to an address only that namespace has.
func TestRunsInsideNetworkNamespace(t *testing.T) {
	ip, err := exec.LookPath("ip")
	if err != nil {
		t.Fatalf("ip (iproute2) is not on PATH; run hack/install-test-deps.sh: %v", err)
	}
	netns := fmt.Sprintf("k2r-cp-%d", os.Getpid())
	const addr = "10.254.77.1"
	run := func(args ...string) {
		t.Helper()
		if out, err := exec.Command(ip, args...).CombinedOutput(); err != nil {
			t.Fatalf("ip %s: %v\n%s (this test needs root)", strings.Join(args, " "), err, out)
		}
	}
	run("netns", "add", netns)
	t.Cleanup(func() { _ = exec.Command(ip, "netns", "del", netns).Run() })
	run("-n", netns, "link", "set", "lo", "up")
	run("-n", netns, "addr", "add", addr+"/32", "dev", "lo")

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, ip, "netns", "exec", netns, os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"=netns", bindEnv+"="+addr)
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })

	var ready string
	lines := bufio.NewScanner(stdout)
	for ready == "" && lines.Scan() {
		switch line := lines.Text(); {
		case strings.HasPrefix(line, "ERROR"):
			t.Fatalf("inside the network namespace: %s", line)
		case strings.HasPrefix(line, "READY "):
			ready = strings.TrimPrefix(line, "READY ")
		}
	}
	if ready == "" {
		t.Fatalf("the child exited without starting a control plane")
	}
	fields := strings.Fields(ready)
	if !strings.HasPrefix(fields[0], "https://"+addr+":") {
		t.Fatalf("URL %s, want one on %s", fields[0], addr)
	}
	t.Logf("inside %s: %s ready in %s ms", netns, fields[0], fields[1])
	// The host namespace has no such address: the server is not there.
	if conn, err := net.DialTimeout("tcp", strings.TrimPrefix(fields[0], "https://"), 300*time.Millisecond); err == nil {
		conn.Close()
		t.Fatalf("%s is reachable from the host namespace; it should exist only inside %s", fields[0], netns)
	}
	stdin.Close()
	if err := cmd.Wait(); err != nil {
		t.Fatalf("the child did not stop cleanly: %v", err)
	}
}

func readPids(t *testing.T, dir string) []int {
	t.Helper()
	var pids []int
	for _, name := range []string{"etcd", "kube-apiserver"} {
		content, err := os.ReadFile(filepath.Join(dir, name+".pid"))
		if err != nil {
			t.Fatalf("reading the %s pidfile: %v", name, err)
		}
		pid, err := strconv.Atoi(strings.SplitN(string(content), "\n", 2)[0])
		if err != nil {
			t.Fatalf("parsing the %s pidfile: %v", name, err)
		}
		pids = append(pids, pid)
	}
	return pids
}

// alive reports whether pid runs and is not a zombie.
func alive(pid int) bool {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	i := strings.LastIndexByte(string(stat), ')')
	return i < 0 || !strings.HasPrefix(strings.TrimSpace(string(stat[i+1:])), "Z")
}
