package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sirupsen/logrus"
	"k8s.io/apimachinery/pkg/runtime"

	"github.com/kube2ra/kube2ra/cni/install"
	"github.com/kube2ra/kube2ra/iptables"
)

// TestCNIEntryFollowsTheDoors proves the plugin's entry redirects exactly
// the addresses the host rules redirect, to the agent's address and port,
// and refuses what the host's IPv6 guard refuses when IPv6 is off (on a
// kernel with IPv6, as the agent decides it).
func TestCNIEntryFollowsTheDoors(t *testing.T) {
	refuse := func(addrs string) string {
		if !iptables.KernelHasIPv6() {
			return ""
		}
		return `,"refuse":[` + addrs + `]`
	}
	cases := []struct {
		name        string
		podIdentity bool
		ipv6        bool
		want        string
	}{
		{"IMDS only", false, false, `{"type":"kube2ra-cni","nodeIP":"10.0.0.5","port":8181,"redirect":["169.254.169.254:80"]` + refuse(`"[fd00:ec2::254]:80"`) + `,"iptablesBackend":"legacy"}`},
		{"token door", true, false, `{"type":"kube2ra-cni","nodeIP":"10.0.0.5","port":8181,"redirect":["169.254.169.254:80","169.254.170.23:80"]` + refuse(`"[fd00:ec2::254]:80","[fd00:ec2::23]:80"`) + `,"iptablesBackend":"legacy"}`},
		{"IPv6", false, true, `{"type":"kube2ra-cni","nodeIP":"10.0.0.5","nodeIPv6":"fd00::5","port":8181,"redirect":["169.254.169.254:80","[fd00:ec2::254]:80"],"iptablesBackend":"legacy"}`},
		{"token door and IPv6", true, true, `{"type":"kube2ra-cni","nodeIP":"10.0.0.5","nodeIPv6":"fd00::5","port":8181,"redirect":["169.254.169.254:80","169.254.170.23:80","[fd00:ec2::254]:80","[fd00:ec2::23]:80"],"iptablesBackend":"legacy"}`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cfg := validSTS()
			cfg.HostIP, cfg.PodIdentity, cfg.IPv6 = "10.0.0.5", tc.podIdentity, tc.ipv6
			if tc.ipv6 {
				cfg.HostIPv6 = "fd00::5"
			}
			if err := cfg.Validate(); err != nil {
				t.Fatal(err)
			}
			e := cniEntry(cfg, iptables.ModeLegacy)
			if err := e.Validate(); err != nil {
				t.Fatalf("entry does not validate: %v", err)
			}
			got, err := json.Marshal(e)
			if err != nil {
				t.Fatal(err)
			}
			if string(got) != tc.want {
				t.Errorf("entry\n got %s\nwant %s", got, tc.want)
			}
		})
	}
}

// cniAgent is a ready agent with the CNI plugin installed in temporary
// host directories.
func cniAgent(t *testing.T) (*agent, *iptables.Fake) {
	t.Helper()
	a, f := readyAgent(t)
	root := t.TempDir()
	a.cfg.CNI = true
	a.cfg.CNIBinDir, a.cfg.CNIConfDir, a.cfg.CNIPluginBinary = filepath.Join(root, "bin"), filepath.Join(root, "net.d"), filepath.Join(root, "kube2ra-cni")
	for _, d := range []string{a.cfg.CNIBinDir, a.cfg.CNIConfDir} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(a.cfg.CNIPluginBinary, []byte("plugin"), 0o755); err != nil {
		t.Fatal(err)
	}
	conf := `{"cniVersion":"1.0.0","name":"bridge","plugins":[{"type":"bridge"}]}`
	if err := os.WriteFile(filepath.Join(a.cfg.CNIConfDir, "10-bridge.conflist"), []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := a.cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	opts := cniOptions(a.cfg, iptables.ModeNFT)
	inst, err := install.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := inst.Ensure(context.Background()); err != nil {
		t.Fatal(err)
	}
	a.cni, a.cniEntry = inst, opts.Entry
	return a, f
}

// TestDecideRulesCNI proves the plugin follows the host rules' decision:
// kept while the DaemonSet exists (a restart, an upgrade, a reboot), gone
// with binary and entry when it is deleted.
func TestDecideRulesCNI(t *testing.T) {
	for _, tc := range []struct {
		name          string
		owner         fakeOwner
		wantInstalled bool
		wantLog       string
	}{
		{"DaemonSet exists: plugin kept", fakeOwner{false, "DaemonSet kube2ra still exists"}, true, "keeping the DNAT and guard rules and the CNI plugin"},
		{"DaemonSet deleted: plugin removed", fakeOwner{true, "DaemonSet kube2ra deleted"}, false, "CNI plugin binary and conflist entry removed"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a, _ := cniAgent(t)
			var out bytes.Buffer
			l := logrus.New()
			l.SetOutput(&out)
			a.log, a.owner = l, tc.owner
			a.decideRules()
			st, err := install.Inspect(a.cfg.CNIBinDir, a.cfg.CNIConfDir, &a.cniEntry)
			if err != nil {
				t.Fatal(err)
			}
			if st.Installed() != tc.wantInstalled || (!tc.wantInstalled && (st.BinaryPresent || st.Entries != 0)) {
				t.Errorf("after decideRules: %+v, want installed %v", st, tc.wantInstalled)
			}
			if !strings.Contains(out.String(), tc.wantLog) {
				t.Errorf("log %q, want %q", out.String(), tc.wantLog)
			}
		})
	}
}

// TestReadyNamesAMissingCNIEntry proves /readyz says when a primary CNI
// rewrote the conflist without kube2ra's entry.
func TestReadyNamesAMissingCNIEntry(t *testing.T) {
	a, _ := cniAgent(t)
	if err := a.ready(context.Background()); err != nil {
		t.Fatalf("ready() = %v with the plugin installed", err)
	}
	conf := `{"cniVersion":"1.0.0","name":"bridge","plugins":[{"type":"bridge"}]}`
	if err := os.WriteFile(filepath.Join(a.cfg.CNIConfDir, "10-bridge.conflist"), []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	err := a.ready(context.Background())
	if err == nil || !strings.Contains(err.Error(), "10-bridge.conflist has no kube2ra-cni entry") {
		t.Fatalf("ready() = %v, want it to name the conflist without the entry", err)
	}
}

// TestExplainNodeCNI: explain --node shows the pod layer: where the entry
// is, and which pods the in-pod rule covers; a missing entry and a pod
// without the rule are problems.
func TestExplainNodeCNI(t *testing.T) {
	pods := []runtime.Object{testPod("shop", "web-1", "127.0.0.2", nil)}
	dirs := func(t *testing.T, withEntry bool) []string {
		root := t.TempDir()
		bin, conf, netns := filepath.Join(root, "bin"), filepath.Join(root, "net.d"), filepath.Join(root, "netns")
		for _, d := range []string{bin, conf, netns} {
			if err := os.Mkdir(d, 0o755); err != nil {
				t.Fatal(err)
			}
		}
		args := []string{"--host-ip=10.0.0.5", "--cni", "--cni-bin-dir=" + bin, "--cni-conf-dir=" + conf, "--cni-netns-dir=" + netns, "--iptables-mode=nft", "--host-interface=lo"}
		conflist := `{"cniVersion":"1.0.0","name":"bridge","plugins":[{"type":"bridge"}]}`
		if err := os.WriteFile(filepath.Join(conf, "10-bridge.conflist"), []byte(conflist), 0o644); err != nil {
			t.Fatal(err)
		}
		if withEntry {
			cfg := NewConfig()
			cfg.Node, cfg.HostIP, cfg.CNI, cfg.CNIBinDir, cfg.CNIConfDir, cfg.CNIPluginBinary = tNode, "10.0.0.5", true, bin, conf, filepath.Join(root, "kube2ra-cni")
			if err := cfg.Validate(); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(cfg.CNIPluginBinary, []byte("plugin"), 0o755); err != nil {
				t.Fatal(err)
			}
			inst, err := install.New(cniOptions(cfg, iptables.ModeNFT))
			if err != nil {
				t.Fatal(err)
			}
			if _, err := inst.Ensure(context.Background()); err != nil {
				t.Fatal(err)
			}
		}
		return args
	}
	t.Run("installed, a pod without the rule", func(t *testing.T) {
		out, code := runExplainNode(t, pods, checkedRules{}, dirs(t, true)...)
		checkOutput(t, out, code, exitDenied, []string{
			"plugin installed: ", "entry 2 of 2 (last) in ", "(backend nft)",
			"pods covered in-pod: 0; only by the host rule: 1; by neither: 0",
			"PROBLEM: shop/web-1: no network namespace in the runtime's directory (--cni-netns-dir) holds its address",
		}, nil)
	})
	t.Run("entry missing", func(t *testing.T) {
		out, code := runExplainNode(t, pods, checkedRules{}, dirs(t, false)...)
		checkOutput(t, out, code, exitDenied, []string{"PROBLEM: CNI plugin not installed: the kube2ra-cni binary is not in the CNI bin directory; ", "10-bridge.conflist has no kube2ra-cni entry"}, nil)
	})
	t.Run("without --cni the host rules alone", func(t *testing.T) {
		out, code := runExplainNode(t, pods, checkedRules{}, "--host-interface=lo")
		checkOutput(t, out, code, exitServed, []string{"--cni=false: no in-pod rule"}, []string{"PROBLEM"})
	})
}

// TestReadyWaitsForTheFirstRepairPass: the agent is not ready before its
// repair has checked the running pods once.
func TestReadyWaitsForTheFirstRepairPass(t *testing.T) {
	a, _ := cniAgent(t)
	rep, err := install.NewRepairer(install.RepairOptions{
		Rules: install.PluginRules{}, Finder: install.NetnsDir{Dir: t.TempDir()}, Entry: a.cniEntry,
		Pods: func() []install.Pod { return nil }, HostRules: func() bool { return true },
	})
	if err != nil {
		t.Fatal(err)
	}
	a.repair = rep
	if err := a.ready(context.Background()); err == nil || !strings.Contains(err.Error(), "first check of the running pods") {
		t.Fatalf("ready() = %v before the first pass, want it named", err)
	}
	if _, err := rep.Pass(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := a.ready(context.Background()); err != nil {
		t.Fatalf("ready() = %v after a pass with nothing to fix", err)
	}
}
