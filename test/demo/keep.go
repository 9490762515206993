package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/kube2ra/kube2ra/test/harness"
)

// exposeTimeout bounds making one pod's namespace reachable from the host.
const exposeTimeout = 5 * time.Second

// exposeToHost makes a pod's network namespace usable by name from another
// terminal (`ip netns exec <pod netns> ...`). simnode creates pod namespaces
// from inside the node's `ip netns exec`, whose private mount namespace keeps
// their /run/netns bind mounts from the host. So a short-lived process enters
// the pod's network namespace, and its namespace is bind-mounted onto the
// same name in the mount namespace of the demo's parent, which is the
// host's. The parent's final `ip netns del` of the demo's prefix removes it.
func exposeToHost(ctx context.Context, p *harness.Pod) error {
	hostMnt := fmt.Sprintf("/proc/%d/ns/mnt", os.Getppid())
	same, err := sameLink(hostMnt, "/proc/self/ns/mnt")
	if err != nil || same {
		return err
	}
	nsPath := filepath.Join("/run/netns", p.Net.Netns)
	var st syscall.Stat_t
	if err := syscall.Stat(nsPath, &st); err != nil {
		return fmt.Errorf("pod network namespace %s: %w", nsPath, err)
	}
	want := fmt.Sprintf("net:[%d]", st.Ino)

	ctx, cancel := context.WithTimeout(ctx, exposeTimeout)
	defer cancel()
	holder := p.Net.Command(ctx, "sleep", "30")
	if err := holder.Start(); err != nil {
		return fmt.Errorf("starting a process in %s: %w", p.Net.Netns, err)
	}
	defer func() {
		_ = holder.Process.Kill()
		_ = holder.Wait()
	}()
	// `ip netns exec` enters the namespace, then execs sleep: wait for that.
	holderNet := fmt.Sprintf("/proc/%d/ns/net", holder.Process.Pid)
	for {
		if link, err := os.Readlink(holderNet); err == nil && link == want {
			break
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("no process entered %s: %w", p.Net.Netns, ctx.Err())
		case <-time.After(10 * time.Millisecond):
		}
	}
	out, err := exec.CommandContext(ctx, "nsenter", "--mount="+hostMnt, "--", "mount", "--bind", holderNet, nsPath).CombinedOutput()
	if err != nil {
		return fmt.Errorf("bind-mounting %s in the host's mount namespace: %w: %s", nsPath, err, strings.TrimSpace(string(out)))
	}
	return nil
}

func sameLink(a, b string) (bool, error) {
	la, err := os.Readlink(a)
	if err != nil {
		return false, err
	}
	lb, err := os.Readlink(b)
	if err != nil {
		return false, err
	}
	return la == lb, nil
}
