package iptables

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	goipt "github.com/coreos/go-iptables/iptables"
	logtest "github.com/sirupsen/logrus/hooks/test"
)

func TestDetectBackend(t *testing.T) {
	kubeletMangle := "*mangle\n:PREROUTING ACCEPT [0:0]\n:KUBE-IPTABLES-HINT - [0:0]\n:KUBE-KUBELET-CANARY - [0:0]\nCOMMIT\n"
	canaryOnly := "*mangle\n:KUBE-KUBELET-CANARY - [0:0]\nCOMMIT\n"
	rules := func(n int) string {
		var b strings.Builder
		b.WriteString("*nat\n:PREROUTING ACCEPT [0:0]\n")
		for range n {
			b.WriteString("-A PREROUTING -j ACCEPT\n")
		}
		b.WriteString("COMMIT\n")
		return b.String()
	}
	tests := []struct {
		name   string
		out    map[string]string // "binary args" -> output
		failed map[string]bool   // commands that exit non-zero
		want   Mode
	}{
		{name: "nothing anywhere defaults to nft", want: ModeNFT},
		{name: "kubelet hint in nft wins over more legacy rules", want: ModeNFT, out: map[string]string{
			"iptables-nft-save -t mangle": kubeletMangle, "iptables-legacy-save": rules(50)}},
		{name: "kubelet hint in legacy wins over more nft rules", want: ModeLegacy, out: map[string]string{
			"iptables-legacy-save -t mangle": kubeletMangle, "iptables-nft-save": rules(50)}},
		{name: "older kubelet canary counts as a hint", want: ModeLegacy, out: map[string]string{
			"ip6tables-legacy-save -t mangle": canaryOnly}},
		{name: "more legacy rules pick legacy", want: ModeLegacy, out: map[string]string{
			"iptables-legacy-save": rules(3), "ip6tables-legacy-save": rules(1), "iptables-nft-save": rules(2)}},
		{name: "more nft rules pick nft", want: ModeNFT, out: map[string]string{
			"iptables-legacy-save": rules(1), "iptables-nft-save": rules(2)}},
		{name: "a tie picks nft", want: ModeNFT, out: map[string]string{
			"iptables-legacy-save": rules(2), "ip6tables-nft-save": rules(2)}},
		{name: "a failing nft-save counts what it printed", want: ModeLegacy,
			out:    map[string]string{"iptables-legacy-save": rules(1)},
			failed: map[string]bool{"iptables-nft-save": true, "ip6tables-nft-save": true}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			run := func(_ context.Context, bin string, args ...string) (string, error) {
				key := strings.TrimSpace(bin + " " + strings.Join(args, " "))
				if tt.failed[key] {
					return "", errors.New("exit status 1")
				}
				return tt.out[key], nil
			}
			log, _ := logtest.NewNullLogger()
			d := detectBackend(context.Background(), run, log)
			if d.mode != tt.want {
				t.Errorf("detected %s (%s), want %s", d.mode, d.reason, tt.want)
			}
			if d.reason == "" {
				t.Error("detection gave no reason to log")
			}
		})
	}
}

func TestBinaryNames(t *testing.T) {
	for _, c := range []struct {
		mode  Mode
		proto goipt.Protocol
		want  string
	}{
		{ModeNFT, goipt.ProtocolIPv4, "iptables-nft"},
		{ModeNFT, goipt.ProtocolIPv6, "ip6tables-nft"},
		{ModeLegacy, goipt.ProtocolIPv4, "iptables-legacy"},
		{ModeLegacy, goipt.ProtocolIPv6, "ip6tables-legacy"},
	} {
		if got := binaryName(c.mode, c.proto); got != c.want {
			t.Errorf("binaryName(%s, %d) = %s, want %s", c.mode, c.proto, got, c.want)
		}
	}
}

// TestCommandsWaitForTheXtablesLock runs go-iptables as the package
// configures it against a stand-in binary that records its arguments: every
// command must carry "--wait SECONDS" so it queues behind the host's other
// iptables users instead of failing or waiting forever.
func TestCommandsWaitForTheXtablesLock(t *testing.T) {
	dir := t.TempDir()
	argsFile := filepath.Join(dir, "args")
	script := "#!/bin/sh\n" +
		"if [ \"$1\" = --version ]; then echo 'iptables v1.8.9 (legacy)'; exit 0; fi\n" +
		"echo \"$*\" >> '" + argsFile + "'\n"
	bin := filepath.Join(dir, "iptables-legacy")
	if err := os.WriteFile(bin, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	ipt, err := newGoIPTables(bin, goipt.ProtocolIPv4, 2500*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	if err := ipt.Append("nat", "KUBE2RA", "-j", "RETURN"); err != nil {
		t.Fatal(err)
	}
	if _, err := ipt.List("nat", "PREROUTING"); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(argsFile)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(string(data)), "\n")
	if len(lines) != 2 {
		t.Fatalf("recorded %d commands, want 2: %q", len(lines), lines)
	}
	for _, l := range lines {
		if !strings.HasSuffix(l, "--wait 3") {
			t.Errorf("command %q does not end in --wait 3 (2.5s rounded up)", l)
		}
	}
}

func TestMissingBinaryNamesTheFix(t *testing.T) {
	_, err := newGoIPTables("iptables-k2r-does-not-exist", goipt.ProtocolIPv4, time.Second)
	if err == nil || !strings.Contains(err.Error(), "apt-get install iptables") || !strings.Contains(err.Error(), "--iptables-mode") {
		t.Errorf("error = %v, want one naming the package and the mode flag", err)
	}
}
