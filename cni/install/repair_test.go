package install

import (
	"context"
	"errors"
	"net/netip"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/kube2ra/kube2ra/cni/plugin"
)

// fakeRules holds the namespaces that have the rule; Apply adds one unless
// it is in failApply.
type fakeRules struct {
	have      map[string]bool
	failApply map[string]bool
	applied   []string
}

func (f *fakeRules) Apply(_ context.Context, path string, cfg plugin.Config) error {
	if err := cfg.Validate(); err != nil {
		return err
	}
	f.applied = append(f.applied, path)
	if f.failApply[path] {
		return errors.New("iptables-nft-restore: exit status 4")
	}
	f.have[path] = true
	return nil
}

func (f *fakeRules) Verify(path string, _ plugin.Config) error {
	if f.have[path] {
		return nil
	}
	return errors.New("chain KUBE2RA-CNI missing in nat")
}

// fakeFinder is a fixed address → namespace map.
type fakeFinder struct {
	m   map[netip.Addr]string
	err error
}

func (f fakeFinder) Find() (map[netip.Addr]string, error) { return f.m, f.err }

func testPod(name, ip string) Pod {
	return Pod{Namespace: "team", Name: name, IPs: []netip.Addr{netip.MustParseAddr(ip)}}
}

// TestRepairPass proves each pod ends up with the rule or reported, and
// counted by the layer that covers it.
func TestRepairPass(t *testing.T) {
	pods := []Pod{
		testPod("covered", "10.1.0.2"),        // ADD wrote the rule
		testPod("started-before", "10.1.0.3"), // no rule: repaired
		testPod("apply-fails", "10.1.0.4"),    // no rule, Apply fails: reported
		testPod("no-netns", "10.1.0.5"),       // its namespace is not found: reported
	}
	finder := fakeFinder{m: map[netip.Addr]string{
		netip.MustParseAddr("10.1.0.2"): "/run/netns/a",
		netip.MustParseAddr("10.1.0.3"): "/run/netns/b",
		netip.MustParseAddr("10.1.0.4"): "/run/netns/c",
	}}
	for _, tc := range []struct {
		name      string
		fix       bool
		hostRules bool
		want      map[Layer]int
		repaired  []string
		applied   []string
		problems  []string
	}{
		{"repair with host rules", true, true, map[Layer]int{LayerInPod: 2, LayerHostOnly: 2}, []string{"team/started-before"}, []string{"/run/netns/b", "/run/netns/c"},
			[]string{"team/apply-fails: writing it failed: iptables-nft-restore: exit status 4; recreate the pod", "team/no-netns: no network namespace"}},
		{"repair without host rules", true, false, map[Layer]int{LayerInPod: 2, LayerNone: 2}, []string{"team/started-before"}, []string{"/run/netns/b", "/run/netns/c"},
			[]string{"team/apply-fails", "team/no-netns"}},
		{"report only", false, true, map[Layer]int{LayerInPod: 1, LayerHostOnly: 3}, nil, nil,
			[]string{"team/apply-fails: not repaired (--cni-repair=false)", "team/no-netns", "team/started-before: not repaired (--cni-repair=false): chain KUBE2RA-CNI missing in nat; recreate the pod"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rules := &fakeRules{have: map[string]bool{"/run/netns/a": true}, failApply: map[string]bool{"/run/netns/c": true}}
			var reported []string
			reg := prometheus.NewRegistry()
			r, err := NewRepairer(RepairOptions{
				Rules: rules, Finder: finder, Entry: testEntry(), Fix: tc.fix,
				Pods:       func() []Pod { return pods },
				HostRules:  func() bool { return tc.hostRules },
				Report:     func(p Pod, msg string) { reported = append(reported, p.Key()) },
				Registerer: reg,
			})
			if err != nil {
				t.Fatal(err)
			}
			cov, err := r.Pass(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			for _, l := range []Layer{LayerInPod, LayerHostOnly, LayerNone} {
				if cov.Pods[l] != tc.want[l] {
					t.Errorf("pods %s = %d, want %d", l, cov.Pods[l], tc.want[l])
				}
				if got := testutil.ToFloat64(r.pods.WithLabelValues(string(l))); got != float64(tc.want[l]) {
					t.Errorf("kube2ra_cni_pods{layer=%q} = %v, want %d", l, got, tc.want[l])
				}
			}
			if strings.Join(cov.Repaired, ",") != strings.Join(tc.repaired, ",") {
				t.Errorf("repaired %v, want %v", cov.Repaired, tc.repaired)
			}
			if strings.Join(rules.applied, ",") != strings.Join(tc.applied, ",") {
				t.Errorf("Apply called on %v, want %v", rules.applied, tc.applied)
			}
			if len(cov.Problems) != len(tc.problems) || len(reported) != len(tc.problems) {
				t.Fatalf("problems %q (reported %v), want %d", cov.Problems, reported, len(tc.problems))
			}
			for i, want := range tc.problems {
				if !strings.HasPrefix(cov.Problems[i], want) {
					t.Errorf("problem %d = %q, want it to start with %q", i, cov.Problems[i], want)
				}
			}
			if p := r.Problem(); !strings.Contains(p, "pod(s) without the CNI plugin's in-pod rule") {
				t.Errorf("Problem() = %q", p)
			}
			// A second pass finds the repaired pod covered and writes nothing more.
			rules.applied = nil
			if cov, _ := r.Pass(context.Background()); tc.fix && len(cov.Repaired) != 0 {
				t.Errorf("second pass repaired %v again", cov.Repaired)
			}
		})
	}
}

// TestRepairFindFailsClosed reports every pod when the namespaces cannot
// be listed, instead of counting them covered.
func TestRepairFindFailsClosed(t *testing.T) {
	r, err := NewRepairer(RepairOptions{
		Rules: &fakeRules{have: map[string]bool{}}, Finder: fakeFinder{err: errors.New("permission denied")}, Entry: testEntry(), Fix: true,
		Pods:      func() []Pod { return []Pod{testPod("a", "10.1.0.2")} },
		HostRules: func() bool { return false },
	})
	if err != nil {
		t.Fatal(err)
	}
	cov, err := r.Pass(context.Background())
	if err == nil || cov.Pods[LayerNone] != 1 || len(cov.Problems) != 1 || !strings.Contains(cov.Problems[0], "permission denied") {
		t.Fatalf("Pass = %+v, %v: want the pod reported uncovered with the reason", cov, err)
	}
}

// TestRepairReportsAfterPasses: with ReportAfter 2 a pod is counted
// uncovered at once but reported only when the next pass still finds it
// so, and a pod covered meanwhile is never reported.
func TestRepairReportsAfterPasses(t *testing.T) {
	finder := fakeFinder{m: map[netip.Addr]string{}}
	var reported []string
	r, err := NewRepairer(RepairOptions{
		Rules: &fakeRules{have: map[string]bool{"/run/netns/b": true}}, Finder: finder, Entry: testEntry(), Fix: true, ReportAfter: 2,
		Pods:      func() []Pod { return []Pod{testPod("stays", "10.1.0.2"), testPod("comes", "10.1.0.3")} },
		HostRules: func() bool { return true },
		Report:    func(p Pod, _ string) { reported = append(reported, p.Key()) },
	})
	if err != nil {
		t.Fatal(err)
	}
	cov, _ := r.Pass(context.Background())
	if cov.Pods[LayerHostOnly] != 2 || len(cov.Problems) != 0 || len(reported) != 0 {
		t.Fatalf("first pass: %+v, reported %v; want both counted host-only, none reported yet", cov, reported)
	}
	finder.m[netip.MustParseAddr("10.1.0.3")] = "/run/netns/b" // its sandbox is back
	r.opts.Finder = finder
	cov, _ = r.Pass(context.Background())
	if len(cov.Problems) != 1 || !strings.HasPrefix(cov.Problems[0], "team/stays: ") || strings.Join(reported, ",") != "team/stays" {
		t.Fatalf("second pass: %+v, reported %v; want only team/stays reported", cov, reported)
	}
}
