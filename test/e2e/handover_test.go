//go:build e2e

package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kube2ra/kube2ra/test/harness"
)

// testHandoverUnderLoad is an upgrade on the simulated node: a pod asks for
// its credentials without pause through the real DNAT while a second
// kube2ra process starts with the same flags and --handover-dir, warms up,
// takes the first one's listening sockets over, and the first one drains
// and then gets SIGTERM. Every request gets the pod's credentials: not one
// refused, reset or failed (AgentRestartUnderLoadFailsClosed is the same
// load without the handover, and sees refusals). The new agent's first
// answers are cache hits: it prefetched before it took traffic.
func testHandoverUnderLoad(t *testing.T, env *harness.Env) {
	handoverUnderLoad(t, env, "handover", nil)
}

// testHandoverToAnotherPort is the same upgrade with a new --app-port (a
// values change in the same helm upgrade): the DNAT rules must move to the
// new port only once the new agent serves it, while the old one still
// answers on the old port, and the old agent must not move them back.
func testHandoverToAnotherPort(t *testing.T, env *harness.Env) {
	newPort := fmt.Sprint(harness.AppPort + 1)
	handoverUnderLoad(t, env, "handover-port", func(args []string) []string {
		out := append([]string(nil), args...)
		for i := range out[:len(out)-1] {
			if out[i] == "--app-port" {
				out[i+1] = newPort
				return out
			}
		}
		t.Fatalf("the agent's arguments have no --app-port: %q", args)
		return nil
	})
	// The rules lead to the new port, and stay there.
	if save := iptablesSave(t); !strings.Contains(save, ":"+newPort) {
		t.Fatalf("after the handover the DNAT does not lead to port %s:\n%s", newPort, save)
	}
}

// handoverUnderLoad runs the upgrade for a pod in namespace ns; nextArgs,
// if set, changes the new agent's arguments.
func handoverUnderLoad(t *testing.T, env *harness.Env, ns string, nextArgs func([]string) []string) {
	dir := t.TempDir()
	restartAgent(t, env, "--handover-dir", dir)
	// The old agent's log since this start (the harness keeps every run's).
	from := len(env.Agent.Log())
	oldLog := func() string { return env.Agent.Log()[from:] }
	args := env.Agent.Args
	if nextArgs != nil {
		args = nextArgs(args)
	}
	next := harness.NewAgent(env.Agent.Binary, env.Agent.MetricsURL, args, env.Agent.Env, nil)
	t.Cleanup(func() {
		// The next test gets the environment's own agent back.
		if err := next.Stop(); err != nil {
			t.Error(err)
		}
		restartAgent(t, env)
	})
	mustNamespace(t, env, ns, `["web"]`)
	p := mustPod(t, env, harness.PodSpec{Namespace: ns, Name: "web", Annotations: roleAnnotation(roleWeb)})
	getCreds(t, p, roleWeb, true)

	stopAsking := askWithoutPause(p, credsPath+roleWeb)
	stop := make(chan struct{})
	time.Sleep(300 * time.Millisecond)
	t0 := time.Now()
	// When each step of the handover shows in the logs (10 ms resolution).
	steps := map[string]time.Duration{}
	var stepsMu sync.Mutex
	stepsDone := make(chan struct{})
	go func() {
		defer close(stepsDone)
		for {
			for _, s := range []struct {
				who  func() string // a log
				line string
			}{
				{oldLog, "a successor is warming up"}, {next.Log, "informers synced"}, {next.Log, "DNAT and guard rules in place"},
				{next.Log, "serving the predecessor's sockets"}, {oldLog, "drained"}, {next.Log, "kube2ra ready"},
			} {
				stepsMu.Lock()
				if _, seen := steps[s.line]; !seen && strings.Contains(s.who(), s.line) {
					steps[s.line] = time.Since(t0)
				}
				stepsMu.Unlock()
			}
			select {
			case <-stop:
				return
			case <-time.After(10 * time.Millisecond):
			}
		}
	}()
	if err := next.Start(); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the first agent to hand over and drain", func() error {
		if !strings.Contains(oldLog(), "handover done: waiting for SIGTERM") {
			return fmt.Errorf("not yet; new agent:\n%s", next.LogTail(5))
		}
		return nil
	})
	if !strings.Contains(oldLog(), "a successor is warming up") {
		t.Errorf("the first agent never saw its successor warm up:\n%s", env.Agent.LogTail(20))
	}
	// The DaemonSet deletes the old pod once the new one is Ready.
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := next.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	mid, err := next.Metrics()
	if err != nil {
		t.Fatal(err)
	}
	if err := env.Agent.Stop(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond)
	results := stopAsking()
	close(stop)
	<-stepsDone

	var ok int
	var slowest time.Duration
	for _, r := range results {
		slowest = max(slowest, r.took)
		if r.took > 200*time.Millisecond {
			t.Logf("a request took %s, from %s after the new agent started", r.took.Round(time.Millisecond), r.at.Sub(t0).Round(time.Millisecond))
		}
		if r.err != nil {
			t.Errorf("during the handover a request failed: %v", r.err)
			continue
		}
		assertNoSecrets(t, env, "during the handover", r.body)
		var c imdsCreds
		if r.code != 200 || json.Unmarshal([]byte(r.body), &c) != nil {
			t.Errorf("during the handover: status %d %q", r.code, r.body)
			continue
		}
		if role, _, found := env.WhoIs(c.AccessKeyId); !found || role != harness.RoleARN(roleWeb) {
			t.Fatalf("during the handover the pod got credentials for %q (found %v)", role, found)
		}
		ok++
	}
	after, err := next.Metrics()
	if err != nil {
		t.Fatal(err)
	}
	misses := harness.Sum(after, "kube2ra_credential_cache_misses_total")
	hits := harness.Sum(after, "kube2ra_credential_cache_hits_total") - harness.Sum(mid, "kube2ra_credential_cache_hits_total")
	t.Logf("handover steps after the new agent started: %v", steps)
	t.Logf("handover under load: %d answers with the pod's role, the slowest in %s; the new agent: %v hits after ready, %v misses in all", ok, slowest.Round(time.Millisecond), hits, misses)
	if misses != 0 || hits == 0 {
		t.Errorf("the new agent missed its cache %v times (hits %v): it must prefetch before it takes traffic", misses, hits)
	}
	if !next.Running() {
		t.Fatalf("the new agent stopped:\n%s", next.LogTail(20))
	}
	getCreds(t, p, roleWeb, true)
}

// podAnswer is one answer a pod got, or the error, when it asked and how
// long it took.
type podAnswer struct {
	code int
	body string
	err  error
	at   time.Time
	took time.Duration
}

// askWithoutPause has p GET path (with an IMDSv2 token) again and again,
// each as soon as the last is answered, until the returned stop is called;
// stop returns every answer.
func askWithoutPause(p *harness.Pod, path string) (stop func() []podAnswer) {
	var answers []podAnswer
	quit, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case <-quit:
				return
			default:
			}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			start := time.Now()
			code, body, err := p.PodGet(ctx, path, true)
			cancel()
			answers = append(answers, podAnswer{code, body, err, start, time.Since(start)})
		}
	}()
	return func() []podAnswer {
		close(quit)
		<-done
		return answers
	}
}
