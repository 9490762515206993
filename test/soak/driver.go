package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/netip"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kube2ra/kube2ra/credentials"
	"github.com/kube2ra/kube2ra/test/fakeaws/fakeimds"
	"github.com/kube2ra/kube2ra/test/harness"
	"github.com/kube2ra/kube2ra/test/soak/wire"
)

const (
	// apiTimeout bounds one write to the API server.
	apiTimeout = 15 * time.Second
	// clientStopTimeout bounds waiting for a client to exit after its stdin closes.
	clientStopTimeout = 5 * time.Second
	// pauseAckTimeout bounds waiting for every client to acknowledge a pause.
	pauseAckTimeout = 10 * time.Second
	// roleKey is the pod annotation naming the role.
	roleKey = "iam.amazonaws.com/role"
)

// slot is one place for a pod on the node, with a fixed IP that every pod
// created in it reuses.
type slot struct {
	// idx numbers the slot.
	idx int
	// ip is the address every pod of this slot gets.
	ip netip.Addr
	// pod is the current pod, nil while the slot is empty.
	pod *harness.Pod
	// role is the current pod's role annotation.
	role string
	// client is the load client in the current pod.
	client *loadClient
}

// loadClient is one loadclient process in a pod's network namespace.
type loadClient struct {
	// cmd is the process.
	cmd *exec.Cmd
	// stdin carries control words; closing it stops the client.
	stdin io.WriteCloser
	// paused receives an acknowledgement per pause.
	paused chan struct{}
	// done is closed when stdout is drained and the process has exited.
	done chan struct{}
	// lastSlow is the latest slowloris summary.
	lastSlow atomic.Pointer[wire.Result]
	// maxOpen is the most slowloris connections seen open at once.
	maxOpen atomic.Int64
}

// driver runs one flavour: its pods, clients, churn and faults.
type driver struct {
	// env is the simulated node.
	env *harness.Env
	// cfg is the soak's configuration.
	cfg config
	// judge classifies every result.
	judge *judge
	// clientBin is the built loadclient.
	clientBin string
	// roles are the role names the fake AWS knows.
	roles []string
	// namespaces are the pod namespaces.
	namespaces []string
	// basePolicy is each namespace's policy when not being edited.
	basePolicy map[string]string
	// began is when the load started (for the progress log).
	began time.Time
	// logf writes the progress log.
	logf func(format string, args ...any)

	// mu guards everything below (churn and faults write through it).
	mu sync.Mutex
	// model is the API state written.
	model *model
	// slots are the pod places.
	slots []*slot
	// gen numbers pods and veths.
	gen int
	// rnd drives churn choices.
	rnd *rand.Rand
	// counts of churn operations by kind, and API write failures.
	counts map[string]int

	// opMu serialises pod and policy operations (churn, probes, pauses).
	opMu sync.Mutex
	// churnOn lets the churn loop write to the API.
	churnOn atomic.Bool
	// slowClient is the slowloris client while it runs.
	slowClient *loadClient
	// slow is what the slowloris client reported last.
	slow *slowSummary
}

// newDriver prepares a driver on a started environment.
func newDriver(env *harness.Env, cfg config, clientBin string, roles []string, logf func(string, ...any)) *driver {
	sessions := true // STS always; Roles Anywhere because the soak turns --ra-role-session-name on
	d := &driver{
		env: env, cfg: cfg, clientBin: clientBin, roles: roles, logf: logf,
		model:      newModel(sessions),
		basePolicy: map[string]string{},
		rnd:        rand.New(rand.NewPCG(cfg.seed, 7)),
		counts:     map[string]int{},
	}
	d.judge = newJudge(cfg.grace, cfg.tolerance, env.WhoIs)
	return d
}

// setup creates the namespaces and the first pod in every slot.
func (d *driver) setup(ctx context.Context) error {
	for i := 0; i < d.cfg.namespaces; i++ {
		ns := fmt.Sprintf("soak-%02d", i)
		policy := d.policyFor(i)
		if err := d.env.CreateNamespace(ctx, ns, policy); err != nil {
			return fmt.Errorf("creating namespace %s: %w", ns, err)
		}
		d.namespaces = append(d.namespaces, ns)
		d.basePolicy[ns] = policy
		d.model.policies[ns] = policy
	}
	for i := 0; i < d.cfg.pods; i++ {
		s := &slot{idx: i, ip: netip.AddrFrom4([4]byte{10, 200, 0, byte(20 + i)})}
		d.slots = append(d.slots, s)
		role := d.roles[i%len(d.roles)]
		switch {
		case i%11 == 5:
			role = "" // no annotation: 404, never a role
		case i%7 == 3:
			role = d.roles[(i+8)%len(d.roles)] // most likely refused by the policy
		}
		if err := d.createPod(ctx, s, d.namespaces[i%len(d.namespaces)], role); err != nil {
			return err
		}
	}
	return nil
}

// policyFor is namespace i's allowed-roles: exact names, globs, full ARNs,
// one unparsable and one absent, so every kind is read under load.
func (d *driver) policyFor(i int) string {
	r := func(k int) string { return d.roles[k%len(d.roles)] }
	switch {
	case i == 7:
		return `["r01", ` // unparsable: denies everything
	case i == 13:
		return "" // no policy: denies everything
	case i%5 == 0:
		return `["r0*"]`
	case i%5 == 1:
		return fmt.Sprintf(`["arn:aws:iam::%s:role/%s", "%s"]`, harness.Account, r(i), r(i+5))
	case i%5 == 2:
		return `["r1*", "` + r(i) + `"]`
	default:
		return fmt.Sprintf(`["%s", "%s"]`, r(i), r(i+5))
	}
}

// timed runs an API write and returns the interval it took.
func timed(f func() error) (time.Time, time.Time, error) {
	from := time.Now()
	err := f()
	return from, time.Now(), err
}

// createPod makes a new pod (network namespace and object) in slot s, records
// its entitlement and starts its client. The caller holds no lock.
func (d *driver) createPod(ctx context.Context, s *slot, ns, role string) error {
	d.mu.Lock()
	d.gen++
	name := fmt.Sprintf("p%02d-%d", s.idx, d.gen)
	veth := fmt.Sprintf("vs%d", d.gen)
	d.mu.Unlock()
	var ann map[string]string
	if role != "" {
		ann = map[string]string{roleKey: role}
	}
	ctx, cancel := context.WithTimeout(ctx, apiTimeout)
	defer cancel()
	var p *harness.Pod
	from, to, err := timed(func() error {
		var err error
		p, err = d.env.CreatePod(ctx, harness.PodSpec{Namespace: ns, Name: name, Annotations: ann, IP: s.ip, HostVeth: veth})
		return err
	})
	if err != nil {
		_ = d.env.DeletePod(context.Background(), ns, name)
		d.count("api write failed")
		return fmt.Errorf("creating pod %s/%s: %w", ns, name, err)
	}
	d.mu.Lock()
	d.model.pods[ns+"/"+name] = podModel{namespace: ns, name: name, role: role, ip: s.ip}
	d.judge.set(s.ip, from, to, d.model.entitled(s.ip))
	s.pod, s.role = p, role
	d.mu.Unlock()
	c, err := d.startClient(p, 0)
	if err != nil {
		return err
	}
	s.client = c
	return nil
}

// deletePodObject deletes a pod's object (and its network namespace if it
// still has one) and records the new entitlement of its IP.
func (d *driver) deletePodObject(ctx context.Context, p *harness.Pod) error {
	ctx, cancel := context.WithTimeout(ctx, apiTimeout)
	defer cancel()
	ip := p.Net.IP
	from, to, err := timed(func() error { return d.env.DeletePod(ctx, p.Namespace, p.Name) })
	if err != nil {
		d.count("api write failed")
		// The object may be gone even so (the network namespace failed, or
		// the answer was lost): the model must follow the API, not the error.
		if _, gerr := d.env.Kube.CoreV1().Pods(p.Namespace).Get(ctx, p.Name, metav1.GetOptions{}); !apierrors.IsNotFound(gerr) {
			return fmt.Errorf("deleting pod %s/%s: %w", p.Namespace, p.Name, err)
		}
		to = time.Now()
		d.logf("deleting pod %s/%s: %v (the object is gone all the same)", p.Namespace, p.Name, err)
	}
	d.mu.Lock()
	delete(d.model.pods, p.Namespace+"/"+p.Name)
	d.judge.set(ip, from, to, d.model.entitled(ip))
	d.mu.Unlock()
	return nil
}

// setRole changes a live pod's role annotation in place.
func (d *driver) setRole(ctx context.Context, s *slot, role string) error {
	ctx, cancel := context.WithTimeout(ctx, apiTimeout)
	defer cancel()
	p := s.pod
	pods := d.env.Kube.CoreV1().Pods(p.Namespace)
	from, to, err := timed(func() error {
		obj, err := pods.Get(ctx, p.Name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		if obj.Annotations == nil {
			obj.Annotations = map[string]string{}
		}
		if role == "" {
			delete(obj.Annotations, roleKey)
		} else {
			obj.Annotations[roleKey] = role
		}
		_, err = pods.Update(ctx, obj, metav1.UpdateOptions{})
		return err
	})
	if err != nil {
		d.count("api write failed")
		return fmt.Errorf("changing the role of %s/%s: %w", p.Namespace, p.Name, err)
	}
	d.mu.Lock()
	key := p.Namespace + "/" + p.Name
	m := d.model.pods[key]
	m.role = role
	d.model.pods[key] = m
	s.role = role
	d.judge.set(s.ip, from, to, d.model.entitled(s.ip))
	d.mu.Unlock()
	return nil
}

// setPolicy replaces a namespace's allowed-roles.
func (d *driver) setPolicy(ctx context.Context, ns, policy string) error {
	ctx, cancel := context.WithTimeout(ctx, apiTimeout)
	defer cancel()
	from, to, err := timed(func() error { return d.env.SetNamespacePolicy(ctx, ns, policy) })
	if err != nil {
		d.count("api write failed")
		return fmt.Errorf("editing the policy of %s: %w", ns, err)
	}
	d.mu.Lock()
	d.model.policies[ns] = policy
	for _, ip := range d.model.ipsIn(ns) {
		d.judge.set(ip, from, to, d.model.entitled(ip))
	}
	d.mu.Unlock()
	return nil
}

func (d *driver) count(what string) {
	d.mu.Lock()
	d.counts[what]++
	d.mu.Unlock()
}

// churnOnce applies one random change: a new pod on a reused IP (clean, or
// while the old object still claims the IP), a role change in place, or a
// namespace policy edit.
func (d *driver) churnOnce(ctx context.Context) {
	d.opMu.Lock()
	defer d.opMu.Unlock()
	d.mu.Lock()
	s := d.slots[d.rnd.IntN(len(d.slots))]
	dice := d.rnd.IntN(100)
	role := d.roles[d.rnd.IntN(len(d.roles))]
	ns := d.namespaces[d.rnd.IntN(len(d.namespaces))]
	editNS := d.namespaces[d.rnd.IntN(len(d.namespaces))]
	editKind := d.rnd.IntN(3)
	d.mu.Unlock()
	var err error
	switch {
	case dice < 25:
		err = d.policyEdit(ctx, editNS, editKind)
	case s.pod == nil:
		err = d.createPod(ctx, s, ns, role)
		d.count("pod created in empty slot")
	case dice < 55:
		err = d.replacePod(ctx, s, ns, role, false)
	case dice < 70:
		err = d.replacePod(ctx, s, ns, role, true)
	default:
		if dice >= 95 {
			role = ""
		}
		err = d.setRole(ctx, s, role)
		d.count("role changed in place")
	}
	if err != nil {
		d.logf("churn: %v", err)
	}
}

// policyEdit revokes, restores or breaks a namespace's policy.
func (d *driver) policyEdit(ctx context.Context, ns string, kind int) error {
	d.mu.Lock()
	current := d.model.policies[ns]
	base := d.basePolicy[ns]
	d.mu.Unlock()
	policy := base
	what := "policy restored"
	if current == base {
		switch kind {
		case 0:
			policy, what = `["nothing-here"]`, "policy revoked"
		case 1:
			policy, what = `["r0*", "r1*"]`, "policy widened"
		default:
			policy, what = `{"not": "an array"}`, "policy made unparsable"
		}
	}
	d.count(what)
	return d.setPolicy(ctx, ns, policy)
}

// replacePod puts a new pod with the same IP in slot s. With stale, the old
// pod's network namespace goes first while its object stays Running for a
// moment with the IP (a kubelet slow to report), so both objects claim the
// IP and kube2ra must refuse both.
func (d *driver) replacePod(ctx context.Context, s *slot, ns, role string, stale bool) error {
	old := s.pod
	d.stopClient(s.client)
	s.client, s.pod = nil, nil
	if stale {
		d.count("pod replaced, old object lingering")
		if err := d.env.Node.RemovePod(old.Net.Name); err != nil {
			return err
		}
		if err := d.createPod(ctx, s, ns, role); err != nil {
			_ = d.deletePodObject(ctx, old)
			return err
		}
		time.Sleep(d.cfg.staleOverlap)
		return d.deletePodObject(ctx, old)
	}
	d.count("pod replaced on the same IP")
	if err := d.deletePodObject(ctx, old); err != nil {
		return err
	}
	return d.createPod(ctx, s, ns, role)
}

// freshPod replaces a random slot's pod with one whose role is allowed and
// returns how long until its client got good credentials (the recovery
// probe: a new pod needs a new upstream session).
func (d *driver) freshPod(ctx context.Context, timeout time.Duration) (time.Duration, error) {
	d.opMu.Lock()
	defer d.opMu.Unlock()
	d.mu.Lock()
	s := d.slots[d.rnd.IntN(len(d.slots))]
	var ns, role string
	for tries := 0; tries < 1000 && ns == ""; tries++ {
		cns := d.namespaces[d.rnd.IntN(len(d.namespaces))]
		crole := d.roles[d.rnd.IntN(len(d.roles))]
		if policyAllows(d.model.policies[cns], harness.RoleARN(crole)) {
			ns, role = cns, crole
		}
	}
	d.mu.Unlock()
	if ns == "" {
		return -1, errors.New("no namespace allows any role right now")
	}
	if s.pod != nil {
		d.stopClient(s.client)
		s.client = nil
		if err := d.deletePodObject(ctx, s.pod); err != nil {
			return -1, err
		}
		s.pod = nil
	}
	start := time.Now()
	d.mu.Lock()
	name := fmt.Sprintf("p%02d-%d", s.idx, d.gen+1) // the name createPod will give
	d.mu.Unlock()
	served := d.judge.wait(s.ip, start, entitlement{role: harness.RoleARN(role), session: credentials.SessionName(ns, name)})
	if err := d.createPod(ctx, s, ns, role); err != nil {
		return -1, err
	}
	select {
	case at := <-served:
		return at.Sub(start), nil
	case <-time.After(timeout):
		return -1, fmt.Errorf("pod %s/%s (%s) got no credentials within %s", ns, s.pod.Name, role, timeout)
	}
}

// startClient runs the loadclient in pod p (slowloris > 0 for the slowloris mode).
func (d *driver) startClient(p *harness.Pod, slowloris int) (*loadClient, error) {
	args := []string{
		"-interval", d.cfg.interval.String(),
		"-region", d.env.Region(),
		"-marker", fakeimds.SecretMarker,
		"-roles", strings.Join(d.roles, ","),
		"-seed", fmt.Sprint(d.cfg.seed + uint64(p.Net.IP.As4()[3])),
	}
	if d.env.IMDS != nil {
		args = append(args, "-node-key", d.env.IMDS.Credentials().AccessKeyID)
	}
	if slowloris > 0 {
		args = append(args, "-slowloris", fmt.Sprint(slowloris))
	}
	cmd := p.Net.Command(context.Background(), d.clientBin, args...)
	cmd.Env = harness.CleanEnviron()
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	cmd.Stderr = d.cfg.clientLog
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting the load client in %s/%s: %w", p.Namespace, p.Name, err)
	}
	c := &loadClient{cmd: cmd, stdin: stdin, paused: make(chan struct{}, 4), done: make(chan struct{})}
	label := p.Namespace + "/" + p.Name
	ip := p.Net.IP
	go func() {
		defer close(c.done)
		sc := bufio.NewScanner(stdout)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			var r wire.Result
			if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
				d.logf("client %s printed %q: %v", label, sc.Text(), err)
				continue
			}
			switch r.Kind {
			case wire.KindPaused:
				select {
				case c.paused <- struct{}{}:
				default:
				}
			case wire.KindSlow:
				c.lastSlow.Store(&r)
				if int64(r.Open) > c.maxOpen.Load() {
					c.maxOpen.Store(int64(r.Open))
				}
			default:
				d.judge.record(ip, label, r)
			}
		}
		_ = cmd.Wait()
	}()
	return c, nil
}

// stopClient closes the client's stdin and waits for it (killing it if it lingers).
func (d *driver) stopClient(c *loadClient) {
	if c == nil {
		return
	}
	_ = c.stdin.Close()
	select {
	case <-c.done:
	case <-time.After(clientStopTimeout):
		_ = c.cmd.Process.Kill()
		<-c.done
	}
}

// clients are the running load clients.
func (d *driver) clients() []*loadClient {
	var out []*loadClient
	for _, s := range d.slots {
		if s.client != nil {
			out = append(out, s.client)
		}
	}
	return out
}

// pauseAll stops every client's requests and waits until each has closed
// its idle connections.
func (d *driver) pauseAll() error {
	d.opMu.Lock()
	cs := d.clients()
	d.opMu.Unlock()
	for _, c := range cs {
		_, _ = io.WriteString(c.stdin, wire.Pause+"\n")
	}
	deadline := time.After(pauseAckTimeout)
	for _, c := range cs {
		select {
		case <-c.paused:
		case <-c.done:
		case <-deadline:
			return errors.New("a load client did not acknowledge the pause")
		}
	}
	return nil
}

// resumeAll starts every client's requests again.
func (d *driver) resumeAll() {
	d.opMu.Lock()
	defer d.opMu.Unlock()
	for _, c := range d.clients() {
		_, _ = io.WriteString(c.stdin, wire.Resume+"\n")
	}
}

// stopAll stops every client.
func (d *driver) stopAll() {
	for _, s := range d.slots {
		d.stopClient(s.client)
		s.client = nil
	}
	d.stopClient(d.slowClient)
	d.slowClient = nil
}

// churnLoop changes something every interval while churnOn is set.
func (d *driver) churnLoop(ctx context.Context, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if d.churnOn.Load() {
				d.churnOnce(ctx)
			}
		}
	}
}

// buildClient compiles the load client once.
func buildClient(dir string) (string, error) {
	return harness.BuildProgram(dir, "loadclient", "./test/soak/loadclient")
}

// slowPod creates the pod the slowloris runs from (no role; it never gets one).
func (d *driver) slowPod(ctx context.Context) (*harness.Pod, error) {
	ns := d.namespaces[0]
	ip := netip.AddrFrom4([4]byte{10, 200, 0, 250})
	p, err := d.env.CreatePod(ctx, harness.PodSpec{Namespace: ns, Name: "slowloris", IP: ip, HostVeth: "vslow"})
	if err != nil {
		return nil, err
	}
	d.mu.Lock()
	d.model.pods[ns+"/slowloris"] = podModel{namespace: ns, name: "slowloris", ip: ip}
	d.mu.Unlock()
	return p, nil
}
