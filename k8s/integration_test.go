//go:build integration

package k8s

// Integration tier: everything here runs against a real etcd and
// kube-apiserver (test/controlplane), and every Watcher runs as the agent,
// a client bound only to the ClusterRole the Helm chart renders. Each test uses its own node name
// and namespace, so their pod stores are independent.

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/kube2ra/kube2ra/kubeapi"
	"github.com/kube2ra/kube2ra/test/chart"
	"github.com/kube2ra/kube2ra/test/controlplane"
)

const (
	// agentUser is the agent's identity: the kube2ra ServiceAccount.
	agentUser = "system:serviceaccount:kube-system:kube2ra"
	// agentRoleName names the test ClusterRole and its binding.
	agentRoleName = "kube2ra-agent-test"
	// eventuallyTimeout bounds waits for the informer to catch up.
	eventuallyTimeout = 15 * time.Second
)

var (
	// cp is the package's control plane, started in TestMain.
	cp *controlplane.ControlPlane
	// admin is a cluster-admin client with a high rate limit for setup.
	admin kubernetes.Interface
	// agentConfig authenticates as agentUser, bound to the chart's ClusterRole only.
	agentConfig *rest.Config
)

func TestMain(m *testing.M) {
	os.Exit(runMain(m))
}

func runMain(m *testing.M) int {
	ctx := context.Background()
	var err error
	cp, err = controlplane.Start(ctx, controlplane.Options{})
	if err != nil {
		fmt.Fprintln(os.Stderr, "starting the control plane:", err)
		return 1
	}
	defer func() {
		if err := cp.Stop(); err != nil {
			fmt.Fprintln(os.Stderr, "stopping the control plane:", err)
		}
	}()
	cfg := cp.AdminConfig()
	cfg.QPS, cfg.Burst = 2000, 4000 // bulk setup (5,000 pods in the benchmark)
	admin, err = kubernetes.NewForConfig(cfg)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	if err := grantAgentRole(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "creating the agent's RBAC:", err)
		return 1
	}
	agentConfig, err = cp.UserConfig(agentUser, "system:serviceaccounts", "system:serviceaccounts:kube-system")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return m.Run()
}

// grantAgentRole creates the ClusterRole the Helm chart renders (read from
// the rendered YAML, not copied, so these tests prove the chart's RBAC is
// enough) and binds the agent's ServiceAccount to it.
func grantAgentRole(ctx context.Context) error {
	rules, err := chart.RenderedAgentRBAC("")
	if err != nil {
		return fmt.Errorf("rendering the chart's ClusterRole: %w", err)
	}
	if _, err := admin.RbacV1().ClusterRoles().Create(ctx, &rbacv1.ClusterRole{
		ObjectMeta: metav1.ObjectMeta{Name: agentRoleName}, Rules: rules,
	}, metav1.CreateOptions{}); err != nil {
		return err
	}
	_, err = admin.RbacV1().ClusterRoleBindings().Create(ctx, &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: agentRoleName},
		RoleRef:    rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: agentRoleName},
		Subjects:   []rbacv1.Subject{{Kind: "ServiceAccount", Name: "kube2ra", Namespace: "kube-system"}},
	}, metav1.CreateOptions{})
	return err
}

// agentClient is a client with the agent's identity.
func agentClient(t testing.TB) kubernetes.Interface {
	t.Helper()
	c, err := kubernetes.NewForConfig(agentConfig)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// agentAPI is the agent's own lean client (kubeapi) with the agent's
// credentials: what the code under test gets.
func agentAPI(t testing.TB) Client {
	t.Helper()
	c, err := kubeapi.New(agentConfig)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// startWatcher runs a Watcher for node as the agent and waits for sync.
func startWatcher(t testing.TB, node string, lookupTimeout time.Duration) *Watcher {
	t.Helper()
	w, err := NewWatcher(agentAPI(t), WatcherOptions{NodeName: node, LookupTimeout: lookupTimeout, Logger: testLogger()})
	if err != nil {
		t.Fatal(err)
	}
	runWatcher(t, w)
	return w
}

// runWatcher starts w until the test ends and waits for its first sync.
func runWatcher(t testing.TB, w *Watcher) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(func() { cancel(); w.Shutdown() })
	w.Start(ctx)
	syncCtx, syncCancel := context.WithTimeout(ctx, 30*time.Second)
	defer syncCancel()
	if err := w.WaitForSync(syncCtx); err != nil {
		t.Fatal(err)
	}
}

// createNamespace creates a namespace, with the allowed-roles annotation
// when policy is not nil.
func createNamespace(t testing.TB, name string, policy *string) {
	t.Helper()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}
	if policy != nil {
		ns.Annotations = map[string]string{DefaultNamespaceKey: *policy}
	}
	if _, err := admin.CoreV1().Namespaces().Create(context.Background(), ns, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
}

// newPod is a minimal pod bound to node.
func newPod(ns, name, node string, ann map[string]string) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Annotations: ann},
		Spec: corev1.PodSpec{
			NodeName:           node,
			ServiceAccountName: "default",
			Containers:         []corev1.Container{{Name: "app", Image: "registry.example/app:1"}},
		},
	}
}

// runPod creates a pod on node and sets its status as a kubelet would:
// the given phase and IPs.
func runPod(t testing.TB, ctx context.Context, p *corev1.Pod, phase corev1.PodPhase, ips ...string) *corev1.Pod {
	t.Helper()
	created, err := admin.CoreV1().Pods(p.Namespace).Create(ctx, p, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("creating pod %s/%s: %v", p.Namespace, p.Name, err)
	}
	if len(ips) == 0 && phase == "" {
		return created
	}
	return setStatus(t, ctx, created, phase, ips...)
}

// setStatus writes phase and IPs through the status subresource.
func setStatus(t testing.TB, ctx context.Context, p *corev1.Pod, phase corev1.PodPhase, ips ...string) *corev1.Pod {
	t.Helper()
	p = p.DeepCopy()
	p.Status.Phase = phase
	p.Status.PodIPs = nil
	for _, ip := range ips {
		p.Status.PodIPs = append(p.Status.PodIPs, corev1.PodIP{IP: ip})
	}
	if len(ips) > 0 {
		p.Status.PodIP = ips[0]
	}
	updated, err := admin.CoreV1().Pods(p.Namespace).UpdateStatus(ctx, p, metav1.UpdateOptions{})
	if err != nil {
		t.Fatalf("setting status of pod %s/%s: %v", p.Namespace, p.Name, err)
	}
	return updated
}

// deletePod deletes with the given grace period (0: at once; otherwise the
// pod stays terminating, since no kubelet finishes it).
func deletePod(t testing.TB, ctx context.Context, p *corev1.Pod, grace int64) {
	t.Helper()
	err := admin.CoreV1().Pods(p.Namespace).Delete(ctx, p.Name, metav1.DeleteOptions{GracePeriodSeconds: &grace})
	if err != nil && !apierrors.IsNotFound(err) {
		t.Fatalf("deleting pod %s/%s: %v", p.Namespace, p.Name, err)
	}
}

// eventually retries check until it succeeds or eventuallyTimeout passes.
// Tests poll here; the product never does.
func eventually(t testing.TB, what string, check func() error) {
	t.Helper()
	deadline := time.Now().Add(eventuallyTimeout)
	for {
		err := check()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: still failing after %s: %v", what, eventuallyTimeout, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// findName looks ip up and returns the pod's name or the error.
func findName(w *Watcher, ip string) (string, error) {
	p, err := w.FindPod(context.Background(), netip.MustParseAddr(ip))
	if err != nil {
		return "", err
	}
	return p.Name, nil
}

// expectOwner waits until ip resolves to name.
func expectOwner(t testing.TB, w *Watcher, ip, name string) {
	t.Helper()
	eventually(t, fmt.Sprintf("lookup of %s returns %s", ip, name), func() error {
		got, err := findName(w, ip)
		if err != nil || got != name {
			return fmt.Errorf("got %q, %v", got, err)
		}
		return nil
	})
}

func TestIntegrationAgentRBACIsMinimal(t *testing.T) {
	ctx := context.Background()
	c := agentClient(t)
	if _, err := c.CoreV1().Pods("").List(ctx, metav1.ListOptions{Limit: 1}); err != nil {
		t.Fatalf("the agent cannot list pods: %v", err)
	}
	if _, err := c.CoreV1().Secrets("default").List(ctx, metav1.ListOptions{Limit: 1}); !apierrors.IsForbidden(err) {
		t.Fatalf("the agent listing secrets: %v; want Forbidden (the tests would prove nothing with a broad role)", err)
	}
	if _, err := c.CoreV1().Pods("default").Create(ctx, newPod("default", "nope", "n", nil), metav1.CreateOptions{}); !apierrors.IsForbidden(err) {
		t.Fatalf("the agent creating a pod: %v; want Forbidden", err)
	}
}

// TestIntegrationIPReuse walks one IP through reuse: old pod terminating,
// new pod on the same IP, a Completed pod still holding it, two live pods.
func TestIntegrationIPReuse(t *testing.T) {
	const node, ns, ip = "node-reuse", "reuse", "10.20.0.5"
	ctx := context.Background()
	createNamespace(t, ns, nil)
	w := startWatcher(t, node, 300*time.Millisecond)

	a := runPod(t, ctx, newPod(ns, "a", node, nil), corev1.PodRunning, ip)
	expectOwner(t, w, ip, "a")

	// A is being deleted (graceful; no kubelet finishes it, so it stays
	// terminating). From the moment the agent sees that, A is never the answer.
	deletePod(t, ctx, a, 30)
	eventually(t, "the agent sees a terminating", func() error {
		for _, e := range w.Snapshot() {
			if e.IP == ip && len(e.Holders) == 1 && strings.HasSuffix(e.Holders[0], "(terminating)") {
				return nil
			}
		}
		return fmt.Errorf("snapshot %+v", w.Snapshot())
	})
	if got, err := findName(w, ip); !errors.Is(err, ErrPodNotFound) {
		t.Fatalf("lookup while only terminating a holds %s = %q, %v; want ErrPodNotFound", ip, got, err)
	}

	// B gets the IP while A is still terminating: B wins.
	runPod(t, ctx, newPod(ns, "b", node, nil), corev1.PodRunning, ip)
	expectOwner(t, w, ip, "b")

	// A Completed pod that still reports the IP never wins.
	runPod(t, ctx, newPod(ns, "done", node, nil), corev1.PodSucceeded, ip)
	eventually(t, "the agent sees the completed pod", func() error {
		if w.CachedPods() != 3 {
			return fmt.Errorf("%d pods cached", w.CachedPods())
		}
		return nil
	})
	if got, err := findName(w, ip); err != nil || got != "b" {
		t.Fatalf("lookup with a Completed pod on %s = %q, %v; want b", ip, got, err)
	}

	// A second live pod on the IP: deny, never guess.
	d := runPod(t, ctx, newPod(ns, "d", node, nil), corev1.PodRunning, ip)
	eventually(t, "two live pods on one IP are refused", func() error {
		if got, err := findName(w, ip); !errors.Is(err, ErrAmbiguousIP) {
			return fmt.Errorf("got %q, %v", got, err)
		}
		return nil
	})
	deletePod(t, ctx, d, 0)
	expectOwner(t, w, ip, "b")

	// A goes away for good; B stays the owner.
	deletePod(t, ctx, a, 0)
	eventually(t, "a leaves the cache", func() error {
		if w.CachedPods() != 2 {
			return fmt.Errorf("%d pods cached", w.CachedPods())
		}
		return nil
	})
	if got, err := findName(w, ip); err != nil || got != "b" {
		t.Fatalf("after a is gone: %q, %v; want b", got, err)
	}
}

// churnSlot is the ground truth for one IP of the churn test.
type churnSlot struct {
	// ip is the slot's address.
	ip netip.Addr
	// mu guards the maps.
	mu sync.Mutex
	// fence counts confirmed ownership changes.
	fence int64
	// assigned holds every pod UID ever given this IP.
	assigned map[types.UID]bool
	// retiredAt is the fence at which a pod's loss of the IP was confirmed.
	retiredAt map[types.UID]int64
}

// TestIntegrationChurn recycles a small IP pool through at least 500 pod
// create/delete cycles (immediate deletes, graceful deletes overlapping
// the next pod, Completed pods keeping the IP) while lookups run
// concurrently, and counts wrong answers: a pod that never had the IP, a
// terminating pod, or a pod that had lost the IP before the lookup began
// (as confirmed by the agent answering with its successor). Run with -race.
func TestIntegrationChurn(t *testing.T) {
	const (
		node, ns = "node-churn", "churn"
		ips      = 8
		cycles   = 504 // 63 per IP
		lookers  = 4
	)
	ctx := context.Background()
	createNamespace(t, ns, nil)
	w := startWatcher(t, node, 100*time.Millisecond)

	slots := make([]*churnSlot, ips)
	for i := range slots {
		slots[i] = &churnSlot{ip: netip.AddrFrom4([4]byte{10, 30, 0, byte(i + 1)}), assigned: map[types.UID]bool{}, retiredAt: map[types.UID]int64{}}
	}

	var (
		lookups, answered, notFound, ambiguous, wrong atomic.Int64
		wrongMu                                       sync.Mutex
		wrongs                                        []string
		done                                          = make(chan struct{})
		lookerWG                                      sync.WaitGroup
	)
	for l := range lookers {
		lookerWG.Add(1)
		go func() {
			defer lookerWG.Done()
			rng := rand.New(rand.NewPCG(uint64(l), 42))
			for {
				select {
				case <-done:
					return
				default:
				}
				s := slots[rng.IntN(ips)]
				s.mu.Lock()
				startFence := s.fence
				s.mu.Unlock()
				p, err := w.FindPod(ctx, s.ip)
				lookups.Add(1)
				switch {
				case errors.Is(err, ErrPodNotFound):
					notFound.Add(1)
					continue
				case errors.Is(err, ErrAmbiguousIP):
					ambiguous.Add(1)
					continue
				case err != nil:
					t.Errorf("lookup of %s: %v", s.ip, err)
					return
				}
				answered.Add(1)
				s.mu.Lock()
				var why string
				switch at, retired := s.retiredAt[p.UID]; {
				case !s.assigned[p.UID]:
					why = "pod never had this IP"
				case p.Terminating:
					why = "pod is terminating"
				case retired && at <= startFence:
					why = fmt.Sprintf("pod lost the IP at fence %d, before the lookup began (fence %d)", at, startFence)
				}
				s.mu.Unlock()
				if why != "" {
					wrong.Add(1)
					wrongMu.Lock()
					wrongs = append(wrongs, fmt.Sprintf("%s -> %s: %s", s.ip, p.Key(), why))
					wrongMu.Unlock()
				}
			}
		}()
	}

	start := time.Now()
	var workers sync.WaitGroup
	for i, s := range slots {
		workers.Add(1)
		go func() {
			defer workers.Done()
			var lingering []*corev1.Pod // previous owner still in the API (terminating or Completed)
			for c := range cycles / ips {
				p := newPod(ns, fmt.Sprintf("ip%d-c%d", i, c), node, nil)
				created, err := admin.CoreV1().Pods(ns).Create(ctx, p, metav1.CreateOptions{})
				if err != nil {
					t.Errorf("create: %v", err)
					return
				}
				s.mu.Lock()
				s.assigned[created.UID] = true
				s.mu.Unlock()
				created = setStatus(t, ctx, created, corev1.PodRunning, s.ip.String())

				// Fence: the agent answers with the new pod, so it has seen
				// every earlier owner leave (one ordered watch stream).
				deadline := time.Now().Add(eventuallyTimeout)
				for {
					got, err := w.FindPod(ctx, s.ip)
					if err == nil && got.UID == created.UID {
						break
					}
					if time.Now().After(deadline) {
						t.Errorf("the agent never answered %s with %s: %v, %v", s.ip, created.Name, got, err)
						return
					}
				}
				s.mu.Lock()
				s.fence++
				for uid := range s.assigned {
					if _, ok := s.retiredAt[uid]; !ok && uid != created.UID {
						s.retiredAt[uid] = s.fence
					}
				}
				s.mu.Unlock()
				for _, old := range lingering {
					deletePod(t, ctx, old, 0)
				}
				lingering = nil

				switch c % 3 {
				case 0: // deleted at once; the IP is free before the next pod
					deletePod(t, ctx, created, 0)
				case 1: // graceful delete: still terminating when the next pod takes the IP
					deletePod(t, ctx, created, 30)
					lingering = append(lingering, created)
				case 2: // Completed: keeps reporting the IP while the next pod takes it
					lingering = append(lingering, setStatus(t, ctx, created, corev1.PodSucceeded, s.ip.String()))
				}
			}
			for _, old := range lingering {
				deletePod(t, ctx, old, 0)
			}
		}()
	}
	workers.Wait()
	elapsed := time.Since(start)
	close(done)
	lookerWG.Wait()

	t.Logf("churn: %d create/delete cycles over %d IPs in %s; %d concurrent lookups: %d answered, %d not found, %d ambiguous, %d wrong",
		cycles, ips, elapsed.Round(time.Millisecond), lookups.Load(), answered.Load(), notFound.Load(), ambiguous.Load(), wrong.Load())
	fmt.Printf("BENCH k8s_churn_cycles %d\nBENCH k8s_churn_lookups %d\nBENCH k8s_churn_wrong_answers %d\n", cycles, lookups.Load(), wrong.Load())
	if wrong.Load() != 0 {
		t.Fatalf("%d wrong answers, e.g. %v", wrong.Load(), wrongs[:min(len(wrongs), 10)])
	}
	if answered.Load() == 0 {
		t.Fatal("no lookup was answered: the test proved nothing")
	}
	eventually(t, "the store empties once every pod is deleted", func() error {
		if n := w.CachedPods(); n != 0 {
			return fmt.Errorf("%d pods still cached", n)
		}
		if s := w.Snapshot(); len(s) != 0 {
			return fmt.Errorf("index still has %+v", s)
		}
		return nil
	})
}

func TestIntegrationLookupWaitsForLatePod(t *testing.T) {
	const node, ns, timeout = "node-late", "late", 2 * time.Second
	ctx := context.Background()
	createNamespace(t, ns, nil)
	w := startWatcher(t, node, timeout)

	type result struct {
		pod     *Pod
		err     error
		elapsed time.Duration
	}
	res := make(chan result, 1)
	start := time.Now()
	go func() {
		p, err := w.FindPod(ctx, netip.MustParseAddr("10.40.0.1"))
		res <- result{p, err, time.Since(start)}
	}()
	time.Sleep(200 * time.Millisecond) // the lookup is waiting before the pod exists
	runPod(t, ctx, newPod(ns, "late", node, nil), corev1.PodRunning, "10.40.0.1")
	created := time.Since(start)
	r := <-res
	if r.err != nil || r.pod.Name != "late" {
		t.Fatalf("FindPod = %+v, %v; want the pod created after the lookup began", r.pod, r.err)
	}
	if r.elapsed >= timeout {
		t.Fatalf("answered after %s; want within the %s window", r.elapsed, timeout)
	}
	t.Logf("pod written %s after the lookup began; lookup answered after %s (%s after the write)", created, r.elapsed, r.elapsed-created)
}

func TestIntegrationUnknownIPNotFoundAfterTimeoutNotBefore(t *testing.T) {
	const node, timeout = "node-unknown", 500 * time.Millisecond
	w := startWatcher(t, node, timeout)
	start := time.Now()
	_, err := w.FindPod(context.Background(), netip.MustParseAddr("10.50.0.1"))
	elapsed := time.Since(start)
	if !errors.Is(err, ErrPodNotFound) {
		t.Fatalf("FindPod = %v; want ErrPodNotFound", err)
	}
	if elapsed < timeout || elapsed > timeout+time.Second {
		t.Fatalf("not found after %s; want just after the %s timeout", elapsed, timeout)
	}
}

func TestIntegrationOtherNodesNeverCached(t *testing.T) {
	const node, ns = "node-mine", "nodes"
	ctx := context.Background()
	createNamespace(t, ns, nil)
	for i := range 3 {
		runPod(t, ctx, newPod(ns, fmt.Sprintf("mine-%d", i), node, nil), corev1.PodRunning, fmt.Sprintf("10.60.0.%d", i+1))
	}
	for i := range 20 {
		runPod(t, ctx, newPod(ns, fmt.Sprintf("theirs-%d", i), "node-theirs", nil), corev1.PodRunning, fmt.Sprintf("10.61.0.%d", i+1))
	}
	// One more on another node after the watcher started.
	w := startWatcher(t, node, 100*time.Millisecond)
	runPod(t, ctx, newPod(ns, "theirs-late", "node-theirs", nil), corev1.PodRunning, "10.61.1.1")
	runPod(t, ctx, newPod(ns, "mine-late", node, nil), corev1.PodRunning, "10.60.1.1")
	expectOwner(t, w, "10.60.1.1", "mine-late")
	if n := w.CachedPods(); n != 4 {
		t.Fatalf("the store holds %d pods; want this node's 4 only", n)
	}
	for _, p := range w.Pods() {
		if p.NodeName != node {
			t.Fatalf("pod %s of node %s is in the store", p.Key(), p.NodeName)
		}
	}
	if _, err := findName(w, "10.61.0.1"); !errors.Is(err, ErrPodNotFound) {
		t.Fatalf("lookup of another node's pod IP = %v; want ErrPodNotFound", err)
	}
}

// roleEvents records RoleListener calls.
type roleEvents struct {
	// mu guards calls.
	mu sync.Mutex
	// calls are "changed ns/name arn" and "gone ns/name".
	calls []string
}

func (r *roleEvents) PodRoleChanged(p *Pod, role Role) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.calls = append(r.calls, "changed "+p.Key()+" "+role.ARN)
}

func (r *roleEvents) PodRoleGone(p *Pod) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.calls = append(r.calls, "gone "+p.Key())
}

// last returns the most recent call.
func (r *roleEvents) last() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.calls) == 0 {
		return ""
	}
	return r.calls[len(r.calls)-1]
}

// agentEvents lists the Events about an object and sums their counts.
func agentEvents(ctx context.Context, eventNamespace, kind, name, reason string) (int32, []string, error) {
	sel := fields.Set{"involvedObject.kind": kind, "involvedObject.name": name, "reason": reason}.AsSelector().String()
	list, err := admin.CoreV1().Events(eventNamespace).List(ctx, metav1.ListOptions{FieldSelector: sel})
	if err != nil {
		return 0, nil, err
	}
	var n int32
	var msgs []string
	for _, e := range list.Items {
		n += max(e.Count, 1)
		msgs = append(msgs, e.Message)
	}
	return n, msgs, nil
}

// TestIntegrationAnnotationChangesTakeEffect changes a live pod's role and
// its namespace's policy and checks lookups, denials, Events and the
// RoleListener follow without a restart.
func TestIntegrationAnnotationChangesTakeEffect(t *testing.T) {
	const node, ns, ip = "node-ann", "ann", "10.70.0.1"
	ctx := context.Background()
	createNamespace(t, ns, ptr(`["app"]`))
	client := agentAPI(t)
	w, err := NewWatcher(client, WatcherOptions{NodeName: node, Logger: testLogger()})
	if err != nil {
		t.Fatal(err)
	}
	events, err := NewEventRecorder(client, EventOptions{NodeName: node, Logger: testLogger()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(events.Shutdown)
	r, err := NewRoleResolver(w, ResolverOptions{BaseRoleARN: StaticBaseARN(testBase), NamespaceRestrictions: true, Events: events, Logger: testLogger()})
	if err != nil {
		t.Fatal(err)
	}
	listener := &roleEvents{}
	if _, err := NewRoleNotifier(w, r, listener, testLogger()); err != nil {
		t.Fatal(err)
	}
	runWatcher(t, w)

	pod := runPod(t, ctx, newPod(ns, "p", node, map[string]string{DefaultRoleKey: "app"}), corev1.PodRunning, ip)
	resolve := func() (Role, error) {
		p, err := w.FindPod(ctx, netip.MustParseAddr(ip))
		if err != nil {
			return Role{}, err
		}
		return r.ResolveRole(ctx, p)
	}
	expectRole := func(what, arn string) {
		t.Helper()
		eventually(t, what, func() error {
			if role, err := resolve(); err != nil || role.ARN != arn {
				return fmt.Errorf("got %+v, %v", role, err)
			}
			if want := "changed ann/p " + arn; listener.last() != want {
				return fmt.Errorf("listener last heard %q; want %q", listener.last(), want)
			}
			return nil
		})
	}
	expectDenied := func(what string, reason DenialReason) {
		t.Helper()
		eventually(t, what, func() error {
			var d *DenialError
			if role, err := resolve(); !errors.As(err, &d) || d.Reason != reason {
				return fmt.Errorf("got %+v, %v; want a %s denial", role, err, reason)
			}
			if listener.last() != "gone ann/p" {
				return fmt.Errorf("listener last heard %q; want gone", listener.last())
			}
			return nil
		})
	}
	patch := func(obj string, name string, key, value string) {
		t.Helper()
		body := fmt.Sprintf(`{"metadata":{"annotations":{%q:%q}}}`, key, value)
		var err error
		if obj == "pod" {
			_, err = admin.CoreV1().Pods(ns).Patch(ctx, name, types.MergePatchType, []byte(body), metav1.PatchOptions{})
		} else {
			_, err = admin.CoreV1().Namespaces().Patch(ctx, name, types.MergePatchType, []byte(body), metav1.PatchOptions{})
		}
		if err != nil {
			t.Fatal(err)
		}
	}

	expectRole("the initial role is allowed", testBase+"app")

	patch("pod", "p", DefaultRoleKey, "app-admin")
	expectDenied("the pod's new role app-admin is not allowed by [app]", DeniedByNamespace)
	eventually(t, "a RoleDenied Event on the pod", func() error {
		n, msgs, err := agentEvents(ctx, ns, "Pod", "p", ReasonRoleDenied)
		if err != nil || n == 0 {
			return fmt.Errorf("%d events, %v", n, err)
		}
		if !strings.Contains(strings.Join(msgs, "\n"), testBase+"app-admin") {
			return fmt.Errorf("messages %q do not name the role", msgs)
		}
		return nil
	})

	patch("namespace", ns, DefaultNamespaceKey, `["app-*"]`)
	expectRole("the namespace's new policy allows app-admin", testBase+"app-admin")

	patch("namespace", ns, DefaultNamespaceKey, `app-admin`)
	expectDenied("an unparsable policy denies", DeniedInvalidPolicy)
	eventually(t, "an InvalidRolePolicy Event on the namespace", func() error {
		n, msgs, err := agentEvents(ctx, metav1.NamespaceDefault, "Namespace", ns, ReasonInvalidRolePolicy)
		if err != nil || n == 0 {
			return fmt.Errorf("%d events, %v", n, err)
		}
		if !strings.Contains(strings.Join(msgs, "\n"), "not a JSON array") {
			return fmt.Errorf("messages %q do not say what is wrong", msgs)
		}
		return nil
	})

	patch("namespace", ns, DefaultNamespaceKey, `["app-admin"]`)
	expectRole("a fixed policy allows again", testBase+"app-admin")

	deletePod(t, ctx, pod, 30)
	eventually(t, "a terminating pod's role is gone", func() error {
		if listener.last() != "gone ann/p" {
			return fmt.Errorf("listener last heard %q", listener.last())
		}
		return nil
	})
	deletePod(t, ctx, pod, 0)
}

// TestIntegrationDenialEventsAreRateLimited denies one pod 100 times a
// second for two seconds and counts the Events that reach the API server.
func TestIntegrationDenialEventsAreRateLimited(t *testing.T) {
	const node, ns = "node-hot", "hot"
	ctx := context.Background()
	createNamespace(t, ns, ptr(`["app"]`))
	client := agentAPI(t)
	w := startWatcher(t, node, 100*time.Millisecond)
	events, err := NewEventRecorder(client, EventOptions{NodeName: node, Logger: testLogger()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(events.Shutdown)
	r, err := NewRoleResolver(w, ResolverOptions{BaseRoleARN: StaticBaseARN(testBase), NamespaceRestrictions: true, Events: events, Logger: testLogger()})
	if err != nil {
		t.Fatal(err)
	}
	runPod(t, ctx, newPod(ns, "hot", node, map[string]string{DefaultRoleKey: "forbidden"}), corev1.PodRunning, "10.80.0.1")
	eventually(t, "the pod is known", func() error { _, err := findName(w, "10.80.0.1"); return err })
	for range 200 {
		p, err := w.FindPod(ctx, netip.MustParseAddr("10.80.0.1"))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := r.ResolveRole(ctx, p); err == nil {
			t.Fatal("forbidden role allowed")
		}
		time.Sleep(10 * time.Millisecond)
	}
	var n int32
	eventually(t, "the Events arrive", func() error {
		var err error
		n, _, err = agentEvents(ctx, ns, "Pod", "hot", ReasonRoleDenied)
		if err != nil || n < DefaultEventBurst {
			return fmt.Errorf("%d events, %v", n, err)
		}
		return nil
	})
	time.Sleep(time.Second) // let any straggler arrive before the final count
	n, _, _ = agentEvents(ctx, ns, "Pod", "hot", ReasonRoleDenied)
	t.Logf("200 denials in about 2 s made %d events", n)
	if n > DefaultEventBurst+1 {
		t.Fatalf("200 denials made %d events; want a handful (at most %d)", n, DefaultEventBurst+1)
	}
}
