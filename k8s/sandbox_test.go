package k8s

import (
	"context"
	"errors"
	"net/netip"
	"slices"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
)

// fakeSandboxes is the node's sandbox record, set by the test.
type fakeSandboxes struct {
	mu      sync.Mutex
	claims  []SandboxClaim
	changed chan struct{}
}

func newFakeSandboxes(claims ...SandboxClaim) *fakeSandboxes {
	return &fakeSandboxes{claims: claims, changed: make(chan struct{})}
}

func (f *fakeSandboxes) Claims(ip netip.Addr) []SandboxClaim {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []SandboxClaim
	for _, c := range f.claims {
		if slices.Contains(c.IPs, ip) {
			out = append(out, c)
		}
	}
	return out
}

func (f *fakeSandboxes) Changes() <-chan struct{} {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.changed
}

// add records a sandbox, as the runtime does when its network is up.
func (f *fakeSandboxes) add(c SandboxClaim) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.claims = append(f.claims, c)
	close(f.changed)
	f.changed = make(chan struct{})
}

var _ SandboxIPs = (*fakeSandboxes)(nil)

// sandboxOf is pod's sandbox with ip, as the runtime records it.
func sandboxOf(p *corev1.Pod, ip string) SandboxClaim {
	return SandboxClaim{Namespace: p.Namespace, Name: p.Name, UID: p.UID, SandboxID: "sb-" + p.Name, IPs: []netip.Addr{netip.MustParseAddr(ip)}}
}

// TestFindPodByItsSandbox: a pod whose IP only the node's runtime knows yet
// is found at once; every doubt leaves the lookup to the API (it waits,
// then fails as without a record).
func TestFindPodByItsSandbox(t *testing.T) {
	fresh := testPod("fresh", corev1.PodPending) // scheduled, no IP in the API yet
	hostNet := testPod("hostnet", corev1.PodPending)
	hostNet.Spec.HostNetwork = true
	elsewhere := testPod("elsewhere", corev1.PodPending)
	elsewhere.Spec.NodeName = "node-b"
	renamed := sandboxOf(fresh, "10.0.0.9")
	renamed.UID = "uid-an-earlier-pod-of-that-name"
	tests := []struct {
		name    string
		pods    []*corev1.Pod
		claims  []SandboxClaim
		want    string // pod name found; "" for ErrPodNotFound after the timeout
		wantIPs []string
	}{
		{name: "a new pod is known by its sandbox before the kubelet reports its IP",
			pods: []*corev1.Pod{fresh}, claims: []SandboxClaim{sandboxOf(fresh, "10.0.0.9")}, want: "fresh", wantIPs: []string{"10.0.0.9"}},
		{name: "a sandbox of an earlier pod with the same name (another UID) gives nothing",
			pods: []*corev1.Pod{fresh}, claims: []SandboxClaim{renamed}},
		{name: "two sandboxes claiming one address give nothing",
			pods: []*corev1.Pod{fresh, testPod("other", corev1.PodPending)}, claims: []SandboxClaim{sandboxOf(fresh, "10.0.0.9"), sandboxOf(testPod("other", corev1.PodPending), "10.0.0.9")}},
		{name: "stale records of pods that are gone do not make the address ambiguous",
			pods: []*corev1.Pod{fresh}, claims: []SandboxClaim{renamed, sandboxOf(testPod("gone", corev1.PodRunning), "10.0.0.9"), sandboxOf(fresh, "10.0.0.9")}, want: "fresh", wantIPs: []string{"10.0.0.9"}},
		{name: "a live pod's second record on the address makes it nobody's, whatever the order",
			pods: []*corev1.Pod{fresh, testPod("other", corev1.PodPending)}, claims: []SandboxClaim{sandboxOf(testPod("other", corev1.PodPending), "10.0.0.9"), renamed, sandboxOf(fresh, "10.0.0.9")}},
		{name: "once the API has the pod's addresses a record of another is ignored",
			pods: []*corev1.Pod{testPod("fresh", corev1.PodRunning, "10.0.0.8")}, claims: []SandboxClaim{sandboxOf(fresh, "10.0.0.9")}},
		{name: "a live pod holding the address in the API wins over a record",
			pods: []*corev1.Pod{fresh, testPod("api", corev1.PodRunning, "10.0.0.9")}, claims: []SandboxClaim{sandboxOf(fresh, "10.0.0.9")}, want: "api", wantIPs: []string{"10.0.0.9"}},
		{name: "a terminating pod is not given an address",
			pods: []*corev1.Pod{terminating(testPod("fresh", corev1.PodPending))}, claims: []SandboxClaim{sandboxOf(fresh, "10.0.0.9")}},
		{name: "a host-network pod is not given an address",
			pods: []*corev1.Pod{hostNet}, claims: []SandboxClaim{sandboxOf(hostNet, "10.0.0.9")}},
		{name: "another node's pod is not given an address",
			pods: []*corev1.Pod{elsewhere}, claims: []SandboxClaim{sandboxOf(elsewhere, "10.0.0.9")}},
		{name: "a record of a pod not in the cache gives nothing",
			claims: []SandboxClaim{sandboxOf(fresh, "10.0.0.9")}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w, _, clk := newTestWatcherWith(t, newFakeSandboxes(tt.claims...), true, tt.pods...)
			if tt.want != "" {
				p, err := w.FindPod(context.Background(), netip.MustParseAddr("10.0.0.9"))
				if err != nil || p.Name != tt.want {
					t.Fatalf("FindPod = %+v, %v; want pod %s at once", p, err, tt.want)
				}
				var ips []string
				for _, ip := range p.IPs {
					ips = append(ips, ip.String())
				}
				if !slices.Equal(ips, tt.wantIPs) {
					t.Errorf("pod IPs %v, want %v", ips, tt.wantIPs)
				}
				return
			}
			res := findAsync(t, w, clk, "10.0.0.9")
			clk.Step(testLookupTimeout)
			if r := receive(t, res); !errors.Is(r.err, ErrPodNotFound) {
				t.Fatalf("FindPod = %+v, %v; want ErrPodNotFound", r.pod, r.err)
			}
		})
	}
}

// TestFindPodServesATerminatingPodWhileItsSandboxHoldsTheAddress: a pod
// being deleted keeps its address, and its credentials, while the node's
// only record of the address is its own sandbox (a preStop hook's aws call,
// an SDK refresh while draining); any doubt (no record, a second record,
// another UID, an address the API does not give it) leaves it nobody's.
func TestFindPodServesATerminatingPodWhileItsSandboxHoldsTheAddress(t *testing.T) {
	draining := terminating(testPod("draining", corev1.PodRunning, "10.0.0.9"))
	earlier := sandboxOf(draining, "10.0.0.9")
	earlier.UID = "uid-an-earlier-pod-of-that-name"
	moved := terminating(testPod("draining", corev1.PodRunning, "10.0.0.8"))
	newcomer := testPod("newcomer", corev1.PodPending)
	tests := []struct {
		name   string
		pods   []*corev1.Pod
		claims []SandboxClaim
		want   string // pod name found; "" for ErrPodNotFound after the timeout
	}{
		{name: "its sandbox is the address's one record: served",
			pods: []*corev1.Pod{draining}, claims: []SandboxClaim{sandboxOf(draining, "10.0.0.9")}, want: "draining"},
		{name: "its sandbox is gone (no record): the address may be another's",
			pods: []*corev1.Pod{draining}},
		{name: "a new pod's sandbox has the address too: the newcomer's, never the old pod's",
			pods: []*corev1.Pod{draining, newcomer}, claims: []SandboxClaim{sandboxOf(draining, "10.0.0.9"), sandboxOf(newcomer, "10.0.0.9")}, want: "newcomer"},
		{name: "a record of a pod the cache does not hold has the address too",
			pods: []*corev1.Pod{draining}, claims: []SandboxClaim{sandboxOf(draining, "10.0.0.9"), sandboxOf(testPod("unknown", corev1.PodPending), "10.0.0.9")}},
		{name: "the only record is the newcomer's: the newcomer is found",
			pods: []*corev1.Pod{draining, newcomer}, claims: []SandboxClaim{sandboxOf(newcomer, "10.0.0.9")}, want: "newcomer"},
		{name: "a record of an earlier pod of that name (another UID)",
			pods: []*corev1.Pod{draining}, claims: []SandboxClaim{earlier}},
		{name: "the API gives the pod another address",
			pods: []*corev1.Pod{moved}, claims: []SandboxClaim{sandboxOf(moved, "10.0.0.9")}},
		{name: "a live pod with the address in the API wins",
			pods: []*corev1.Pod{draining, testPod("live", corev1.PodRunning, "10.0.0.9")}, claims: []SandboxClaim{sandboxOf(draining, "10.0.0.9")}, want: "live"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w, _, clk := newTestWatcherWith(t, newFakeSandboxes(tt.claims...), true, tt.pods...)
			if tt.want != "" {
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second) // an answer is at once
				defer cancel()
				p, err := w.FindPod(ctx, netip.MustParseAddr("10.0.0.9"))
				if err != nil || p.Name != tt.want {
					t.Fatalf("FindPod = %+v, %v; want pod %s at once", p, err, tt.want)
				}
				return
			}
			res := findAsync(t, w, clk, "10.0.0.9")
			clk.Step(testLookupTimeout)
			if r := receive(t, res); !errors.Is(r.err, ErrPodNotFound) {
				t.Fatalf("FindPod = %+v, %v; want ErrPodNotFound", r.pod, r.err)
			}
		})
	}
	// Without the runtime's records a terminating pod is never served.
	w, _, clk := newTestWatcherWith(t, nil, true, draining)
	res := findAsync(t, w, clk, "10.0.0.9")
	clk.Step(testLookupTimeout)
	if r := receive(t, res); !errors.Is(r.err, ErrPodNotFound) {
		t.Fatalf("without records: FindPod = %+v, %v; want ErrPodNotFound", r.pod, r.err)
	}
}

// TestFindPodWokenByANewSandbox: a lookup waiting for an unknown address
// answers when the runtime records the pod's sandbox, without waiting for
// the API or the timeout.
func TestFindPodWokenByANewSandbox(t *testing.T) {
	fresh := testPod("fresh", corev1.PodPending)
	sandboxes := newFakeSandboxes()
	w, _, clk := newTestWatcherWith(t, sandboxes, true, fresh)
	res := findAsync(t, w, clk, "10.0.0.9")
	assertPending(t, res, "before the sandbox exists")
	sandboxes.add(sandboxOf(fresh, "10.0.0.9"))
	if r := receive(t, res); r.err != nil || r.pod.Name != "fresh" {
		t.Fatalf("FindPod = %+v, %v; want pod fresh", r.pod, r.err)
	}
}

// TestFindPodAnsweredWhenTheWatchBecomesCurrent: a pod known only by its
// sandbox is given its address only while the pod watch is current; a
// lookup that arrived before (an agent just started, its snapshot not yet
// checked) is answered when the watch becomes current, not after its
// timeout. It waited for the timeout before, and with the fake clock of
// TestFindPodByItsSandbox hung forever when the lookup came first.
func TestFindPodAnsweredWhenTheWatchBecomesCurrent(t *testing.T) {
	fresh := testPod("fresh", corev1.PodPending)
	w, _, clk := newTestWatcherWith(t, newFakeSandboxes(sandboxOf(fresh, "10.0.0.9")), true, fresh)
	for deadline := time.Now().Add(5 * time.Second); !w.podTracker.isCurrent(); time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the pod watch never became current")
		}
	}
	setCurrent := func(current bool) {
		w.podTracker.mu.Lock()
		defer w.podTracker.mu.Unlock()
		w.podTracker.setLocked(current, "a test says so")
	}
	setCurrent(false)
	res := findAsync(t, w, clk, "10.0.0.9")
	assertPending(t, res, "while the pod watch is not current")
	setCurrent(true)
	if r := receive(t, res); r.err != nil || r.pod == nil || r.pod.Name != "fresh" {
		t.Fatalf("FindPod = %+v, %v; want pod fresh once the watch is current", r.pod, r.err)
	}
}
