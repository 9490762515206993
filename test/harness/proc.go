package harness

import (
	"bufio"
	"fmt"
	"os"
	"strconv"
	"strings"
)

// ProcMemory reads a process's resident set (VmRSS) and its peak (VmHWM)
// from /proc/<pid>/status, in KiB.
func ProcMemory(pid int) (rssKiB, hwmKiB int, err error) {
	if pid == 0 {
		return 0, 0, fmt.Errorf("harness: no process to read memory of (pid 0: is the agent running?)")
	}
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 2 {
			continue
		}
		switch fields[0] {
		case "VmRSS:":
			rssKiB, err = strconv.Atoi(fields[1])
		case "VmHWM:":
			hwmKiB, err = strconv.Atoi(fields[1])
		}
		if err != nil {
			return 0, 0, fmt.Errorf("harness: /proc/%d/status line %q: %w", pid, sc.Text(), err)
		}
	}
	if err := sc.Err(); err != nil {
		return 0, 0, err
	}
	if rssKiB == 0 {
		return 0, 0, fmt.Errorf("harness: no VmRSS in /proc/%d/status", pid)
	}
	return rssKiB, hwmKiB, nil
}
