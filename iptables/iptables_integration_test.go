//go:build integration

package iptables_test

import (
	"bufio"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/kube2ra/kube2ra/iptables"
	"github.com/kube2ra/kube2ra/test/syncbuf"
)

const target = "10.198.0.1:8181"

// TestInterfaceSpecs: before the rules exist no pod reaches the server via
// the metadata address; after EnsureRules exactly the pods behind matching
// interfaces do, and the nat table holds exactly the expected rules.
func TestInterfaceSpecs(t *testing.T) {
	cases := []struct {
		name string
		spec string
		pods map[string]bool // node-side interface -> reaches after install
		save []string
	}{
		{name: "exact", spec: "cni0", pods: map[string]bool{"cni0": true, "cni1": false}, save: []string{"cni0"}},
		{name: "wildcard", spec: "cali+", pods: map[string]bool{"cali1a": true, "cali2b": true, "cni0": false}, save: []string{"cali+"}},
		{name: "negation", spec: "!eth0", pods: map[string]bool{"eth0": false, "cni0": true}, save: []string{"!eth0"}},
		{name: "several", spec: "cni0,cali+,!eth+", pods: map[string]bool{"cni0": true, "cali1": true, "eth1": false},
			save: []string{"cni0", "cali+", "!eth+"}},
	}
	eachBackend(t, func(t *testing.T, mode iptables.Mode) {
		concurrently(t, len(cases), func(i int) string { return cases[i].name }, func(t *testing.T, i int) {
			tc := cases[i]
			n := newNode(t, mode, false)
			pods := map[*pod]bool{}
			none := map[*pod]bool{}
			for iface, reach := range tc.pods {
				p := n.addPod(iface)
				pods[p] = reach
				none[p] = false
			}
			expectReach(t, metadataURL, none)
			expectSave(t, n, "4", builtinChains)
			expectGuardSave(t, n, "4", builtinFilterChains)

			ops := n.mustOps(tc.spec, "ensure", "present")
			if !ops[0].Changed || !ops[1].Present {
				t.Errorf("ensure changed=%v, present=%v; want true, true", ops[0].Changed, ops[1].Present)
			}
			expectSave(t, n, "4", wantSave("4", target, tc.save...))
			expectGuardSave(t, n, "4", wantGuardSave("4", tc.save...))
			expectReach(t, metadataURL, pods)
		})
	})
}

// TestWildcardCoversInterfaceCreatedLater: a pod interface that appears
// after the rules are installed is redirected without touching the rules.
func TestWildcardCoversInterfaceCreatedLater(t *testing.T) {
	eachBackend(t, func(t *testing.T, mode iptables.Mode) {
		n := newNode(t, mode, false)
		n.mustOps("cali+", "ensure")
		before := n.save("4")
		late := n.addPod("cali9f8e7d6c5b")
		other := n.addPod("cni0")
		expectReach(t, metadataURL, map[*pod]bool{late: true, other: false})
		ops := n.mustOps("cali+", "present", "ensure")
		if !ops[0].Present || ops[1].Changed {
			t.Errorf("after the new interface: present=%v, ensure changed=%v; want true, false", ops[0].Present, ops[1].Changed)
		}
		expectSave(t, n, "4", before)
	})
}

// TestEnsureConvergesFromAnyState: running twice, and every half-installed
// or stale state a crash or an older configuration can leave, ends in
// exactly one correct set, compared as iptables-save text.
func TestEnsureConvergesFromAnyState(t *testing.T) {
	jump := []string{"-d", "169.254.169.254/32", "-p", "tcp", "-m", "tcp", "--dport", "80", "-m", "comment", "--comment", "kube2ra", "-j", "KUBE2RA"}
	oldJump := []string{"-d", "169.254.169.254/32", "-p", "tcp", "--dport", "80", "-j", "KUBE2RA"}
	dnat := func(iface, to string) []string {
		return []string{"-d", "169.254.169.254/32", "-i", iface, "-p", "tcp", "--dport", "80", "-j", "DNAT", "--to-destination", to}
	}
	guardJump := []string{"-d", "169.254.169.254/32", "-p", "tcp", "-m", "tcp", "--dport", "80", "-m", "comment", "--comment", "kube2ra", "-j", "KUBE2RA-GUARD"}
	cases := []struct {
		name   string
		setup  [][]string // iptables -t nat arguments
		filter [][]string // iptables -t filter arguments
	}{
		{name: "nothing, twice"},
		{name: "stale guard rule, duplicate jump in INPUT, none in FORWARD", filter: [][]string{
			{"-N", "KUBE2RA-GUARD"}, {"-A", "KUBE2RA-GUARD", "-i", "cni0", "-p", "tcp", "--dport", "80", "-j", "REJECT"},
			append([]string{"-A", "INPUT"}, guardJump...), append([]string{"-A", "INPUT"}, guardJump...)}},
		{name: "flushed filter table", filter: [][]string{{"-N", "KUBE2RA-GUARD"}}},
		{name: "chain without jump", setup: [][]string{
			{"-N", "KUBE2RA"}, append([]string{"-A", "KUBE2RA"}, dnat("cni0", target)...)}},
		{name: "stale port and duplicate jumps", setup: [][]string{
			{"-N", "KUBE2RA"}, append([]string{"-A", "KUBE2RA"}, dnat("cni0", "10.198.0.1:9999")...),
			append([]string{"-A", "PREROUTING"}, jump...), append([]string{"-A", "PREROUTING"}, jump...),
			append([]string{"-I", "PREROUTING", "1"}, jump...)}},
		{name: "stale host IP and a jump from an older version", setup: [][]string{
			{"-N", "KUBE2RA"}, append([]string{"-A", "KUBE2RA"}, dnat("cni0", "10.198.0.77:8181")...),
			append([]string{"-A", "KUBE2RA"}, dnat("weave", target)...),
			append([]string{"-A", "PREROUTING"}, oldJump...)}},
		{name: "flushed chain behind a jump", setup: [][]string{
			{"-N", "KUBE2RA"}, append([]string{"-A", "PREROUTING"}, jump...)}},
	}
	eachBackend(t, func(t *testing.T, mode iptables.Mode) {
		concurrently(t, len(cases), func(i int) string { return cases[i].name }, func(t *testing.T, i int) {
			tc := cases[i]
			n := newNode(t, mode, false)
			p := n.addPod("cni0")
			for _, args := range tc.setup {
				n.ipt("4", append([]string{"-t", "nat"}, args...)...)
			}
			for _, args := range tc.filter {
				n.ipt("4", append([]string{"-t", "filter"}, args...)...)
			}
			ops := n.mustOps("cni0,!eth0", "ensure", "ensure", "present")
			if !ops[0].Changed || ops[1].Changed || !ops[2].Present {
				t.Errorf("changed %v then %v, present %v; want true, false, true", ops[0].Changed, ops[1].Changed, ops[2].Present)
			}
			expectSave(t, n, "4", wantSave("4", target, "cni0", "!eth0"))
			expectGuardSave(t, n, "4", wantGuardSave("4", "cni0", "!eth0"))
			expectReach(t, metadataURL, map[*pod]bool{p: true})
		})
	})
}

// TestMonitorRestoresFlushedNatTable: `iptables -t nat -F` (and -X), then
// `iptables -F` (the filter table's guard), while the monitor runs; the
// rules are back within the resync interval each time, counted in
// kube2ra_iptables_restores_total.
func TestMonitorRestoresFlushedNatTable(t *testing.T) {
	const interval = time.Second
	eachBackend(t, func(t *testing.T, mode iptables.Mode) {
		n := newNode(t, mode, false)
		p := n.addPod("cni0")
		n.mustOps("cni0", "ensure")
		want := wantSave("4", target, "cni0") + wantGuardSave("4", "cni0")
		both := func() string { return n.save("4") + n.saveTable("4", "filter") }

		req := helperRequest{Interfaces: "cni0", Ops: []string{"monitor"}, MonitorInterval: interval}
		n.fillRequest(&req)
		b, _ := json.Marshal(req)
		ctx, cancel := context.WithTimeout(context.Background(), commandTimeout)
		defer cancel()
		cmd := n.helperCmd(ctx, "rules", "K2R_IPT_REQUEST="+string(b))
		stdin, _ := cmd.StdinPipe()
		stdout, _ := cmd.StdoutPipe()
		var logs syncbuf.Buffer
		cmd.Stderr = &logs
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		defer func() { stdin.Close(); _ = cmd.Wait() }()
		out := bufio.NewReader(stdout)
		if line, err := out.ReadString('\n'); err != nil || strings.TrimSpace(line) != "monitoring" {
			t.Fatalf("monitor did not start: %q %v\n%s", line, err, logs.String())
		}

		flushes := []struct {
			table string
			verbs []string
		}{{"nat", []string{"-F"}}, {"nat", []string{"-F", "-X"}}, {"filter", []string{"-F"}}}
		for i, fl := range flushes {
			flush := fl.verbs
			for _, verb := range flush {
				n.ipt("4", "-t", fl.table, verb)
			}
			flushed := time.Now()
			if got := both(); got == want {
				t.Fatal("flush left the rules in place")
			}
			for both() != want {
				// at most one interval until the next check, plus the
				// restore itself (about ten iptables commands)
				if time.Since(flushed) > interval+2*time.Second {
					t.Fatalf("rules not restored %s after %v; tables:\n%s\nlogs:\n%s", time.Since(flushed), flush, both(), logs.String())
				}
				time.Sleep(50 * time.Millisecond)
			}
			// The restore ends with a verification; flushing again before
			// it is logged would make that check fail and the count differ.
			for strings.Count(logs.String(), "rules restored") < i+1 {
				if time.Since(flushed) > interval+3*time.Second {
					t.Fatalf("restore not logged:\n%s", logs.String())
				}
				time.Sleep(20 * time.Millisecond)
			}
			t.Logf("%s: restored %s after iptables -t %s %s", mode, time.Since(flushed).Round(10*time.Millisecond), fl.table, strings.Join(flush, " then "))
		}
		expectReach(t, metadataURL, map[*pod]bool{p: true})

		stdin.Close()
		var res helperResult
		if err := json.NewDecoder(out).Decode(&res); err != nil {
			t.Fatalf("monitor result: %v\n%s", err, logs.String())
		}
		if res.Restores != float64(len(flushes)) || res.Present != 1 {
			t.Errorf("restores_total=%v rules_present=%v; want %d and 1\n%s", res.Restores, res.Present, len(flushes), logs.String())
		}
		if !strings.Contains(logs.String(), "level=warning") {
			t.Errorf("no warning logged for the restore:\n%s", logs.String())
		}
	})
}

// TestRemove: Remove deletes every jump (duplicates too) and the chains,
// DNAT and guard, leaving only the built-in chains; again with nothing installed it
// succeeds; RemoveAll (kube2ra cleanup) does the same without configuration.
func TestRemove(t *testing.T) {
	jump := []string{"-A", "PREROUTING", "-d", "169.254.169.254/32", "-p", "tcp", "-m", "tcp", "--dport", "80", "-m", "comment", "--comment", "kube2ra", "-j", "KUBE2RA"}
	eachBackend(t, func(t *testing.T, mode iptables.Mode) {
		n := newNode(t, mode, false)
		p := n.addPod("cni0")
		n.mustOps("cni0", "ensure")
		n.ipt("4", append([]string{"-t", "nat"}, jump...)...)
		expectReach(t, metadataURL, map[*pod]bool{p: true})

		n.mustOps("cni0", "remove", "present", "remove")
		expectSave(t, n, "4", builtinChains)
		expectGuardSave(t, n, "4", builtinFilterChains)
		expectReach(t, metadataURL, map[*pod]bool{p: false})

		n.mustOps("cni0", "ensure", "removeall", "removeall")
		expectSave(t, n, "4", builtinChains)
		expectGuardSave(t, n, "4", builtinFilterChains)
		expectReach(t, metadataURL, map[*pod]bool{p: false})
	})
}

// TestIPv6: with IPv6 on, fd00:ec2::254 is redirected to the IPv6 host
// address through ip6tables, next to the IPv4 rules; Remove clears both.
func TestIPv6(t *testing.T) {
	eachBackend(t, func(t *testing.T, mode iptables.Mode) {
		n := newNode(t, mode, true)
		p := n.addPod("cali1")
		q := n.addPod("eth0")
		expectReach(t, metadataURLv6, map[*pod]bool{p: false, q: false})
		ops := n.mustOps("cali+", "ensure", "ensure", "present")
		if !ops[0].Changed || ops[1].Changed || !ops[2].Present {
			t.Errorf("changed %v then %v, present %v; want true, false, true", ops[0].Changed, ops[1].Changed, ops[2].Present)
		}
		expectSave(t, n, "6", wantSave("6", "[fd00:198::1]:8181", "cali+"))
		expectSave(t, n, "4", wantSave("4", target, "cali+"))
		expectGuardSave(t, n, "6", wantGuardSave("6", "cali+"))
		expectGuardSave(t, n, "4", wantGuardSave("4", "cali+"))
		expectReach(t, metadataURLv6, map[*pod]bool{p: true, q: false})

		n.ipt("6", "-t", "nat", "-F")
		if ops := n.mustOps("cali+", "present", "remove"); ops[0].Present {
			t.Error("present=true with the IPv6 rules flushed")
		}
		expectSave(t, n, "6", builtinChains)
		expectSave(t, n, "4", builtinChains)
		expectGuardSave(t, n, "6", builtinFilterChains)
		expectGuardSave(t, n, "4", builtinFilterChains)
	})
}

// TestAutoModePicksTheHostBackend: with rules only in the legacy tables,
// auto installs with iptables-legacy; with rules in nft, or none, with nft.
func TestAutoModePicksTheHostBackend(t *testing.T) {
	cases := []struct {
		name  string
		rules iptables.Mode // backend that gets a host rule first; "" for none
		want  iptables.Mode
	}{
		{name: "legacy host", rules: iptables.ModeLegacy, want: iptables.ModeLegacy},
		{name: "nft host", rules: iptables.ModeNFT, want: iptables.ModeNFT},
		{name: "empty host", want: iptables.ModeNFT},
	}
	concurrently(t, len(cases), func(i int) string { return cases[i].name }, func(t *testing.T, i int) {
		tc := cases[i]
		n := newNode(t, tc.want, false)
		if tc.rules != "" {
			run(t, "ip", "netns", "exec", n.ns, "iptables-"+string(tc.rules), "-w", "-A", "INPUT", "-p", "tcp", "--dport", "22", "-j", "ACCEPT")
		}
		p := n.addPod("cni0")
		res, logs := n.rules(helperRequest{Mode: "auto", Interfaces: "cni0", Ops: []string{"ensure"}})
		if res.NewErr != "" || res.Ops[0].Err != "" {
			t.Fatalf("auto: %s %s\n%s", res.NewErr, res.Ops[0].Err, logs)
		}
		if iptables.Mode(res.Backend) != tc.want {
			t.Errorf("auto chose %s, want %s\n%s", res.Backend, tc.want, logs)
		}
		if !strings.Contains(logs, "iptables backend chosen by detection") {
			t.Errorf("no log line names the chosen backend:\n%s", logs)
		}
		expectSave(t, n, "4", wantSave("4", target, "cni0")) // n.mode == tc.want
		if save := n.saveTable("4", "filter"); !strings.Contains(save, ":KUBE2RA-GUARD") {
			t.Errorf("no guard in the %s filter table:\n%s", tc.want, save)
		}
		expectReach(t, metadataURL, map[*pod]bool{p: true})
	})
}

// TestLegacyCommandsWaitForTheXtablesLock: while another process holds the
// xtables lock, a legacy command waits (--wait) for LockTimeout and then
// fails with iptables' own message; once the lock is free it succeeds.
// XTABLES_LOCKFILE points the binaries at a private lock so the host's
// /run/xtables.lock is never held by the test.
func TestLegacyCommandsWaitForTheXtablesLock(t *testing.T) {
	lock := filepath.Join(t.TempDir(), "xtables.lock")
	f, err := os.OpenFile(lock, os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	n := newNode(t, iptables.ModeLegacy, false)
	n.extra = []string{"XTABLES_LOCKFILE=" + lock}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	res, logs := n.rules(helperRequest{Interfaces: "cni0", Ops: []string{"ensure"}, LockTimeout: time.Second})
	waited := time.Since(start)
	if res.NewErr != "" {
		t.Fatalf("New: %s", res.NewErr)
	}
	if e := res.Ops[0].Err; !strings.Contains(e, "xtables lock") || !strings.Contains(e, "--wait 1") {
		t.Errorf("ensure under a held lock: err %q, want iptables' xtables lock message and the --wait argument\n%s", e, logs)
	}
	if waited < time.Second || waited > 5*time.Second {
		t.Errorf("ensure under a held lock took %s, want about the 1s lock timeout", waited)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_UN); err != nil {
		t.Fatal(err)
	}
	n.mustOps("cni0", "ensure")
	expectSave(t, n, "4", wantSave("4", target, "cni0"))
	expectGuardSave(t, n, "4", wantGuardSave("4", "cni0"))
}
