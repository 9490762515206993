package controlplane

import (
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestLogTail(t *testing.T) {
	var long strings.Builder
	for i := range 1000 {
		fmt.Fprintf(&long, "line %d\n", i)
	}
	tests := []struct {
		name    string
		content string
		want    string
	}{
		{name: "short log is returned whole", content: "a\nb\n", want: "a\nb"},
		{name: "empty log says so", content: "", want: "(the log is empty)"},
		{name: "long log keeps the last lines only", content: long.String(),
			want: strings.TrimSuffix(strings.Join(strings.SplitAfter(long.String(), "\n")[1000-logTailLines:], ""), "\n")},
		{name: "a huge last line is cut to the byte limit", content: "first\n" + strings.Repeat("x", 3*logTailBytes) + "\n",
			want: ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "log")
			if err := os.WriteFile(path, []byte(tt.content), 0o600); err != nil {
				t.Fatal(err)
			}
			got := logTail(path)
			if tt.want == "" {
				if len(got) > logTailBytes || strings.Contains(got, "first") {
					t.Fatalf("got %d bytes containing the first line; want at most %d bytes of the end", len(got), logTailBytes)
				}
				return
			}
			if got != tt.want {
				t.Fatalf("got %q, want %q", got, tt.want)
			}
		})
	}
}

// startSleeper starts a process in its own group, as startProcess does. The
// returned channel closes when it exits; the test ends it in any case.
func startSleeper(t *testing.T) (pid int, exited <-chan struct{}) {
	t.Helper()
	cmd := exec.Command("sleep", "60")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting sleep: %v", err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	t.Cleanup(func() { _ = cmd.Process.Kill(); <-done })
	return cmd.Process.Pid, done
}

func exitedWithin(exited <-chan struct{}, d time.Duration) bool {
	select {
	case <-exited:
		return true
	case <-time.After(d):
		return false
	}
}

func TestCleanStaleRuns(t *testing.T) {
	sleepPath, err := exec.LookPath("sleep")
	if err != nil {
		t.Fatal(err)
	}
	sleepPath, _ = filepath.EvalSymlinks(sleepPath)
	finished := exec.Command("true")
	if err := finished.Run(); err != nil {
		t.Fatal(err)
	}
	deadOwner := fmt.Sprintf("%d %s", finished.Process.Pid, "1")
	// Our own pid with another start time: the pid was recycled.
	recycledOwner := fmt.Sprintf("%d 1", os.Getpid())

	tests := []struct {
		name        string
		owner       string // "" for no owner file
		binary      string // recorded in the pidfile; "" for the real one
		wantRemoved bool
		wantKilled  bool
	}{
		{name: "run of a dead owner is killed and removed", owner: deadOwner, wantRemoved: true, wantKilled: true},
		{name: "run whose owner pid was recycled is killed and removed", owner: recycledOwner, wantRemoved: true, wantKilled: true},
		{name: "run of a live owner is left alone", owner: ownerRecord(), wantRemoved: false, wantKilled: false},
		{name: "pid now running another binary is not killed", owner: deadOwner, binary: "/usr/bin/not-sleep", wantRemoved: true, wantKilled: false},
		{name: "fresh dir without owner file is left alone", owner: "", wantRemoved: false, wantKilled: false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			root := t.TempDir()
			dir := filepath.Join(root, "run-1")
			if err := os.Mkdir(dir, 0o700); err != nil {
				t.Fatal(err)
			}
			pid, exited := startSleeper(t)
			if tt.owner != "" {
				if err := os.WriteFile(filepath.Join(dir, ownerFile), []byte(tt.owner+"\n"), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			binary := tt.binary
			if binary == "" {
				binary = sleepPath
			}
			pidfile := fmt.Sprintf("%d\n%s\n", pid, binary)
			if err := os.WriteFile(filepath.Join(dir, "etcd"+pidSuffix), []byte(pidfile), 0o600); err != nil {
				t.Fatal(err)
			}

			cleanStaleRuns(root)

			_, statErr := os.Stat(dir)
			if removed := os.IsNotExist(statErr); removed != tt.wantRemoved {
				t.Errorf("dir removed = %v, want %v", removed, tt.wantRemoved)
			}
			wait := 2 * time.Second
			if !tt.wantKilled {
				wait = 200 * time.Millisecond
			}
			if killed := exitedWithin(exited, wait); killed != tt.wantKilled {
				t.Errorf("process killed = %v, want %v", killed, tt.wantKilled)
			}
		})
	}
}

func TestClientCertificateCarriesUserAndGroups(t *testing.T) {
	now := time.Now()
	ca, err := newAuthority(now)
	if err != nil {
		t.Fatal(err)
	}
	kp, err := ca.client(now, "alice", []string{"team-a", "system:masters"})
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(kp.certPEM)
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	if cert.Subject.CommonName != "alice" || !slices.Equal(cert.Subject.Organization, []string{"team-a", "system:masters"}) {
		t.Fatalf("subject %v, want CN=alice O=[team-a system:masters]", cert.Subject)
	}
	roots := x509.NewCertPool()
	roots.AddCert(ca.cert)
	if _, err := cert.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Fatalf("the client certificate does not verify against its CA for client auth: %v", err)
	}
	if _, err := ca.client(now, "", nil); err == nil {
		t.Fatal("a certificate without a user name was issued; want an error")
	}
}
