package controlplane

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"
)

const (
	// stopGrace is how long a process gets to exit after SIGTERM before its
	// whole process group is killed.
	stopGrace = 10 * time.Second
	// logTailBytes bounds how much of a process's log goes into an error.
	logTailBytes = 4096
	// logTailLines bounds the same in lines.
	logTailLines = 40
	// ownerFile names the file in a run directory that records which test
	// process owns it, so a later Start can tell a live run from a crashed one.
	ownerFile = "owner"
	// pidSuffix ends the pidfile of each child process in a run directory.
	pidSuffix = ".pid"
)

// process is one child (etcd or kube-apiserver) in its own process group.
type process struct {
	name    string        // "etcd" or "kube-apiserver", used in messages and file names
	cmd     *exec.Cmd     // the running command
	logPath string        // where its stdout and stderr go
	done    chan struct{} // closed when the process has exited and waitErr is set
	waitErr error         // the result of cmd.Wait, readable after done is closed
}

// startProcess starts binary in its own process group with output to logPath
// and records its pid in dir (for the stale-run cleanup of a later Start).
func startProcess(name, binary string, args []string, dir, logPath string) (*process, error) {
	logFile, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, fmt.Errorf("creating the %s log %s: %w", name, logPath, err)
	}
	cmd := exec.Command(binary, args...)
	cmd.Dir = dir
	cmd.Stdout = logFile
	cmd.Stderr = logFile
	cmd.SysProcAttr = &syscall.SysProcAttr{
		// Own group: Stop kills the process and anything it spawned at once.
		Setpgid: true,
		// If the test binary dies (panic, SIGKILL, timeout), the kernel kills
		// the child too.
		Pdeathsig: syscall.SIGKILL,
	}
	p := &process{name: name, cmd: cmd, logPath: logPath, done: make(chan struct{})}
	started := make(chan error, 1)
	go func() {
		// Pdeathsig fires when the *thread* that forked the child exits, not
		// the process. Go may retire idle threads, so fork from a locked thread
		// and keep it (blocked in Wait) for the child's whole life.
		runtime.LockOSThread()
		// Deliberately no UnlockOSThread: the thread ends with this goroutine,
		// after the child has exited.
		if err := cmd.Start(); err != nil {
			logFile.Close()
			started <- err
			return
		}
		started <- nil
		p.waitErr = cmd.Wait()
		logFile.Close()
		close(p.done)
	}()
	if err := <-started; err != nil {
		return nil, fmt.Errorf("starting %s (%s): %w", name, binary, err)
	}
	pidfile := filepath.Join(dir, name+pidSuffix)
	// The binary path lets a later cleanup check the pid still belongs to it.
	content := fmt.Sprintf("%d\n%s\n", cmd.Process.Pid, binary)
	if err := os.WriteFile(pidfile, []byte(content), 0o600); err != nil {
		p.kill()
		return nil, fmt.Errorf("writing the %s pidfile %s: %w", name, pidfile, err)
	}
	return p, nil
}

// exited reports whether the process has ended.
func (p *process) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// kill sends SIGKILL to the whole process group and waits for the exit.
func (p *process) kill() {
	_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
	<-p.done
}

// stop asks the process group to terminate and kills it after stopGrace.
func (p *process) stop() error {
	if p.exited() {
		return nil
	}
	if err := syscall.Kill(-p.cmd.Process.Pid, syscall.SIGTERM); err != nil && !errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("sending SIGTERM to the %s process group %d: %w", p.name, p.cmd.Process.Pid, err)
	}
	select {
	case <-p.done:
	case <-time.After(stopGrace):
		p.kill()
	}
	// The group may hold children that outlive the leader; end them too.
	_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
	return nil
}

// describeExit says how the process ended, for error messages.
func (p *process) describeExit() string {
	if p.waitErr == nil {
		return "exited with status 0"
	}
	return p.waitErr.Error()
}

// logTail returns the last lines of a log file, bounded in lines and bytes.
func logTail(path string) string {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Sprintf("(cannot read %s: %v)", path, err)
	}
	defer f.Close()
	info, err := f.Stat()
	if err != nil {
		return fmt.Sprintf("(cannot stat %s: %v)", path, err)
	}
	offset := max(info.Size()-logTailBytes, 0)
	buf, err := io.ReadAll(io.NewSectionReader(f, offset, info.Size()-offset))
	if err != nil {
		return fmt.Sprintf("(cannot read %s: %v)", path, err)
	}
	buf = bytes.TrimRight(buf, "\n")
	if offset > 0 {
		// Drop the partial first line.
		if i := bytes.IndexByte(buf, '\n'); i >= 0 {
			buf = buf[i+1:]
		}
	}
	lines := strings.Split(string(buf), "\n")
	if len(lines) > logTailLines {
		lines = lines[len(lines)-logTailLines:]
	}
	if len(lines) == 1 && lines[0] == "" {
		return "(the log is empty)"
	}
	return strings.Join(lines, "\n")
}

// cleanStaleRuns removes run directories under root whose owning test process
// is gone, first killing the process groups they recorded. It is best effort:
// a crashed run must not keep a later one from starting.
func cleanStaleRuns(root string) {
	entries, err := os.ReadDir(root)
	if err != nil {
		return
	}
	for _, e := range entries {
		if !e.IsDir() {
			continue
		}
		dir := filepath.Join(root, e.Name())
		owner, err := os.ReadFile(filepath.Join(dir, ownerFile))
		if err != nil {
			// A directory without an owner file is either being set up right
			// now (the owner is written first thing) or garbage; only remove
			// it once it is clearly old.
			if info, statErr := os.Stat(dir); statErr == nil && time.Since(info.ModTime()) > time.Hour {
				_ = os.RemoveAll(dir)
			}
			continue
		}
		if ownerAlive(strings.TrimSpace(string(owner))) {
			continue
		}
		pidfiles, _ := filepath.Glob(filepath.Join(dir, "*"+pidSuffix))
		for _, pf := range pidfiles {
			killRecorded(pf)
		}
		_ = os.RemoveAll(dir)
	}
}

// ownerRecord identifies the current process by pid and kernel start time, so
// a recycled pid is not mistaken for the original owner.
func ownerRecord() string {
	pid := os.Getpid()
	return fmt.Sprintf("%d %s", pid, processStartTime(pid))
}

// ownerAlive reports whether the process recorded by ownerRecord still runs.
func ownerAlive(record string) bool {
	fields := strings.Fields(record)
	if len(fields) != 2 {
		return false
	}
	pid, err := strconv.Atoi(fields[0])
	if err != nil || pid <= 0 {
		return false
	}
	start := processStartTime(pid)
	return start != "" && start == fields[1]
}

// processStartTime returns field 22 of /proc/<pid>/stat (start time in clock
// ticks since boot), or "" when the process does not exist.
func processStartTime(pid int) string {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return ""
	}
	// The command name (field 2) may contain spaces; fields after it are
	// counted from the last ')'.
	i := bytes.LastIndexByte(stat, ')')
	if i < 0 {
		return ""
	}
	fields := strings.Fields(string(stat[i+1:]))
	// After ')' comes field 3 (state); field 22 is at index 19.
	if len(fields) < 20 {
		return ""
	}
	return fields[19]
}

// killRecorded kills the process group recorded in a pidfile, but only if the
// pid still runs the recorded binary (pids are recycled).
func killRecorded(pidfile string) {
	content, err := os.ReadFile(pidfile)
	if err != nil {
		return
	}
	lines := strings.SplitN(strings.TrimSpace(string(content)), "\n", 2)
	if len(lines) != 2 {
		return
	}
	pid, err := strconv.Atoi(lines[0])
	if err != nil || pid <= 1 {
		return
	}
	exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid))
	if err != nil {
		return
	}
	exe = strings.TrimSuffix(exe, " (deleted)")
	want := lines[1]
	if resolved, err := filepath.EvalSymlinks(want); err == nil {
		want = resolved
	}
	if exe != want {
		return
	}
	_ = syscall.Kill(-pid, syscall.SIGKILL)
	_ = syscall.Kill(pid, syscall.SIGKILL)
}
