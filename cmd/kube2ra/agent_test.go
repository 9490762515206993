package main

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/sirupsen/logrus"
	clocktesting "k8s.io/utils/clock/testing"

	"github.com/kube2ra/kube2ra/iptables"
	"github.com/kube2ra/kube2ra/rolesanywhere"
	"github.com/kube2ra/kube2ra/test/harness"
)

// fakeRules is iptables.Fake with the two verbs the agent needs besides
// iptables.Rules.
type fakeRules struct{ *iptables.Fake }

func (fakeRules) Monitor(ctx context.Context, _ time.Duration) error { <-ctx.Done(); return nil }
func (fakeRules) Backend() iptables.Mode                             { return iptables.Mode("fake") }

// fakeOwner is a fixed answer to "is the agent's own DaemonSet gone?".
type fakeOwner struct {
	remove bool
	why    string
}

func (o fakeOwner) Gone() (bool, string) { return o.remove, o.why }

// expiredRASource is a Roles Anywhere source whose node certificate has
// expired by the source's clock, so its readiness fails.
func expiredRASource(t *testing.T) *sourceParts {
	t.Helper()
	pki, err := harness.NewPKI(t.TempDir(), "node-a")
	if err != nil {
		t.Fatal(err)
	}
	clk := clocktesting.NewFakeClock(time.Now())
	ra, err := rolesanywhere.NewSource(rolesanywhere.Config{
		TrustAnchorARN: harness.TrustAnchorARN, ProfileARN: harness.ProfileARN,
		Certificate: pki.CertPath, PrivateKey: pki.KeyPath,
	}, rolesanywhere.Deps{Clock: clk})
	if err != nil {
		t.Fatal(err)
	}
	clk.SetTime(time.Now().Add(100 * 365 * 24 * time.Hour))
	return &sourceParts{name: sourceRolesAnywhere, ra: ra}
}

// readyAgent is an agent past every start-up step with rules installed.
func readyAgent(t *testing.T) (*agent, *iptables.Fake) {
	t.Helper()
	f := iptables.NewFake()
	if _, err := f.EnsureRules(context.Background()); err != nil {
		t.Fatal(err)
	}
	a := &agent{cfg: validSTS(), log: logrus.New(), source: &sourceParts{name: sourceSTS}, rules: fakeRules{f}}
	a.synced.Store(true)
	a.sourceReady.Store(true)
	a.rulesReady.Store(true)
	return a, f
}

func TestReadyNamesWhatIsMissing(t *testing.T) {
	cases := []struct {
		name   string
		mutate func(t *testing.T, a *agent, f *iptables.Fake)
		want   string // substring of the error; "" means ready
	}{
		{"all steps done and rules in place", func(*testing.T, *agent, *iptables.Fake) {}, ""},
		{"informers not synced", func(_ *testing.T, a *agent, _ *iptables.Fake) { a.synced.Store(false) }, "pod and namespace informers not synced"},
		{"credential source not ready", func(_ *testing.T, a *agent, _ *iptables.Fake) { a.sourceReady.Store(false) }, "credential source not ready"},
		{"credential source failing", func(t *testing.T, a *agent, _ *iptables.Fake) { a.source = expiredRASource(t) }, "credential source: certificate serial"},
		{"rules not installed yet", func(_ *testing.T, a *agent, _ *iptables.Fake) { a.rulesReady.Store(false) }, "DNAT and guard rules not installed"},
		{"rules check fails", func(_ *testing.T, _ *agent, f *iptables.Fake) { f.SetErrors(nil, errors.New("xtables lock"), nil) }, "could not check the DNAT and guard rules: xtables lock"},
		{"DNAT flushed", func(_ *testing.T, _ *agent, f *iptables.Fake) { f.Flush() }, "DNAT or guard rules are not as installed"},
		{"guard flushed", func(_ *testing.T, _ *agent, f *iptables.Fake) { f.FlushFilter() }, "DNAT or guard rules are not as installed"},
		{"interface coverage problem", func(_ *testing.T, a *agent, _ *iptables.Fake) {
			p := "pods on eth9 are not covered by --host-interface"
			a.coverageProblem.Store(&p)
		}, "pods on eth9 are not covered by --host-interface"},
		{"coverage fine again", func(_ *testing.T, a *agent, _ *iptables.Fake) {
			p := ""
			a.coverageProblem.Store(&p)
		}, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			a, f := readyAgent(t)
			tc.mutate(t, a, f)
			err := a.ready(context.Background())
			if got, want := testutil.ToFloat64(a.readyGauge()), map[bool]float64{true: 1, false: 0}[tc.want == ""]; got != want {
				t.Errorf("kube2ra_ready = %v, want %v", got, want)
			}
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("ready() = %v, want nil", err)
			case tc.want != "" && err == nil:
				t.Fatalf("ready() = nil, want an error naming %q", tc.want)
			case tc.want != "" && !strings.Contains(err.Error(), tc.want):
				t.Fatalf("ready() = %q, want it to name %q", err, tc.want)
			}
		})
	}
}

func TestReadyWithoutIPTablesNeedsNoRules(t *testing.T) {
	a, _ := readyAgent(t)
	a.rules = nil // --iptables=false
	if err := a.ready(context.Background()); err != nil {
		t.Fatalf("ready() = %v, want nil with --iptables=false", err)
	}
}

func TestDecideRulesRemovesOnlyWhenUninstalled(t *testing.T) {
	cases := []struct {
		name        string
		owner       fakeOwner
		removeErr   error
		wantRemoved bool   // the rules are gone afterwards
		wantLog     string // substring of the log
	}{
		{"DaemonSet still exists: rules kept", fakeOwner{false, "DaemonSet kube2ra still exists (rolling update or restart)"}, nil, false, "keeping the DNAT and guard rules"},
		{"owner unknown: rules kept", fakeOwner{false, "POD_NAME/POD_NAMESPACE not set"}, nil, false, "keeping the DNAT and guard rules"},
		{"DaemonSet deleted: rules removed", fakeOwner{true, "DaemonSet kube2ra deleted"}, nil, true, "DNAT and guard rules removed"},
		{"DaemonSet being deleted: rules removed", fakeOwner{true, "DaemonSet kube2ra is being deleted"}, nil, true, "DNAT and guard rules removed"},
		{"remove fails: the operator is told to clean up", fakeOwner{true, "DaemonSet kube2ra deleted"}, errors.New("xtables lock"), false, "run `kube2ra cleanup` on this node"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			a, f := readyAgent(t)
			var out bytes.Buffer
			l := logrus.New()
			l.SetOutput(&out)
			a.log, a.owner = l, tc.owner
			f.SetErrors(nil, nil, tc.removeErr)
			a.decideRules()
			if got := !f.Installed(); got != tc.wantRemoved {
				t.Errorf("rules removed = %v, want %v", got, tc.wantRemoved)
			}
			if wantCalls := map[bool]int{false: 0, true: 1}[tc.owner.remove]; f.Calls().Remove != wantCalls {
				t.Errorf("Remove called %d times, want %d", f.Calls().Remove, wantCalls)
			}
			if !strings.Contains(out.String(), tc.wantLog) || !strings.Contains(out.String(), tc.owner.why) {
				t.Errorf("log %q, want it to contain %q and the reason %q", out.String(), tc.wantLog, tc.owner.why)
			}
		})
	}
}
