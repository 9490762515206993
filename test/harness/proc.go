package harness

import (
	"bufio"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
)

// ProcMemory reads a process's resident set (VmRSS) and its peak (VmHWM)
// from /proc/<pid>/status, in KiB.
func ProcMemory(pid int) (rssKiB, hwmKiB int, err error) {
	v, err := procStatusKiB(pid, "VmRSS", "VmHWM")
	if err != nil {
		return 0, 0, err
	}
	if v["VmRSS"] == 0 {
		return 0, 0, fmt.Errorf("harness: no VmRSS in /proc/%d/status", pid)
	}
	return v["VmRSS"], v["VmHWM"], nil
}

// ProcRSSParts reads how a process's resident set splits (RssAnon, RssFile
// in /proc/<pid>/status, in KiB): its own memory, and the pages of files it
// maps (mostly its binary, which the page cache shares and can drop).
func ProcRSSParts(pid int) (anonKiB, fileKiB int, err error) {
	v, err := procStatusKiB(pid, "RssAnon", "RssFile")
	if err != nil {
		return 0, 0, err
	}
	anon, okAnon := v["RssAnon"]
	file, okFile := v["RssFile"]
	if !okAnon || !okFile {
		return 0, 0, fmt.Errorf("harness: no RssAnon and RssFile in /proc/%d/status", pid)
	}
	return anon, file, nil
}

// procStatusKiB reads the named lines ("VmRSS", without the colon) of
// /proc/<pid>/status; a name the file lacks is absent from the map.
func procStatusKiB(pid int, names ...string) (map[string]int, error) {
	if pid == 0 {
		return nil, fmt.Errorf("harness: no process to read memory of (pid 0: is the agent running?)")
	}
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return nil, err
	}
	defer f.Close()
	out := map[string]int{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 2 || !slices.Contains(names, strings.TrimSuffix(fields[0], ":")) {
			continue
		}
		n, err := strconv.Atoi(fields[1])
		if err != nil {
			return nil, fmt.Errorf("harness: /proc/%d/status line %q: %w", pid, sc.Text(), err)
		}
		out[strings.TrimSuffix(fields[0], ":")] = n
	}
	return out, sc.Err()
}
