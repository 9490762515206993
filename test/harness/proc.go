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

// ProcRSSParts reads how a process's resident set splits (RssAnon, RssFile
// in /proc/<pid>/status, in KiB): its own memory, and the pages of files it
// maps (mostly its binary, which the page cache shares and can drop).
func ProcRSSParts(pid int) (anonKiB, fileKiB int, err error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, 0, err
	}
	found := 0
	for _, line := range strings.Split(string(b), "\n") {
		fields := strings.Fields(line)
		if len(fields) < 2 {
			continue
		}
		var dst *int
		switch fields[0] {
		case "RssAnon:":
			dst = &anonKiB
		case "RssFile:":
			dst = &fileKiB
		default:
			continue
		}
		if *dst, err = strconv.Atoi(fields[1]); err != nil {
			return 0, 0, fmt.Errorf("harness: /proc/%d/status line %q: %w", pid, line, err)
		}
		found++
	}
	if found != 2 {
		return 0, 0, fmt.Errorf("harness: no RssAnon and RssFile in /proc/%d/status", pid)
	}
	return anonKiB, fileKiB, nil
}
