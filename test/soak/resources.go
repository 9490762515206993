package main

import (
	"fmt"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/kube2ra/kube2ra/test/harness"
)

// usage is one reading of the agent process.
type usage struct {
	// goroutines is go_goroutines from /metrics.
	goroutines int
	// rssKiB is VmRSS from /proc/PID/status.
	rssKiB int
	// fds is the number of entries in /proc/PID/fd.
	fds int
	// heapKiB is go_memstats_heap_inuse_bytes: what RSS holds for live
	// objects, as opposed to memory the runtime keeps for reuse.
	heapKiB int
}

func (u usage) String() string {
	return fmt.Sprintf("%d goroutines, %.1f MiB RSS (%.1f MiB heap in use), %d fds", u.goroutines, float64(u.rssKiB)/1024, float64(u.heapKiB)/1024, u.fds)
}

// scrapeClient never keeps a connection, so the scrape itself leaves no
// open file in the agent.
var scrapeClient = &http.Client{Timeout: 3 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}

// readUsage reads the agent's goroutines, RSS and open files.
func readUsage(a *harness.Agent) (usage, error) {
	pid := a.PID()
	if pid == 0 {
		return usage{}, fmt.Errorf("the agent is not running")
	}
	resp, err := scrapeClient.Get(a.MetricsURL + "/metrics")
	if err != nil {
		return usage{}, fmt.Errorf("scraping the agent's metrics: %w", err)
	}
	m, err := harness.ParseMetrics(resp.Body)
	resp.Body.Close()
	if err != nil {
		return usage{}, err
	}
	u := usage{goroutines: int(m["go_goroutines"]), heapKiB: int(m["go_memstats_heap_inuse_bytes"] / 1024)}
	if u.rssKiB, _, err = harness.ProcMemory(pid); err != nil {
		return usage{}, err
	}
	fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		return usage{}, err
	}
	u.fds = len(fds)
	return u, nil
}

// peakTracker samples the agent every second and keeps the maxima.
type peakTracker struct {
	mu   sync.Mutex
	peak usage
	stop chan struct{}
	done chan struct{}
}

func trackPeak(a *harness.Agent, every time.Duration) *peakTracker {
	p := &peakTracker{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(p.done)
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-p.stop:
				return
			case <-t.C:
				if u, err := readUsage(a); err == nil {
					p.observe(u)
				}
			}
		}
	}()
	return p
}

func (p *peakTracker) observe(u usage) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.peak.goroutines = max(p.peak.goroutines, u.goroutines)
	p.peak.rssKiB = max(p.peak.rssKiB, u.rssKiB)
	p.peak.fds = max(p.peak.fds, u.fds)
	p.peak.heapKiB = max(p.peak.heapKiB, u.heapKiB)
}

// finish stops sampling and returns the peak.
func (p *peakTracker) finish() usage {
	close(p.stop)
	<-p.done
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.peak
}

// settled reports whether end is back near start: goroutines within 10%,
// RSS within 20%, open files at most the start count.
func settled(start, end usage) (bool, []string) {
	var why []string
	if float64(end.goroutines) > float64(start.goroutines)*1.10 {
		why = append(why, fmt.Sprintf("goroutines %d > start %d + 10%%", end.goroutines, start.goroutines))
	}
	if float64(end.rssKiB) > float64(start.rssKiB)*1.20 {
		why = append(why, fmt.Sprintf("RSS %.1f MiB > start %.1f MiB + 20%%", float64(end.rssKiB)/1024, float64(start.rssKiB)/1024))
	}
	if end.fds > start.fds {
		why = append(why, fmt.Sprintf("open files %d > start %d", end.fds, start.fds))
	}
	return len(why) == 0, why
}

// softnetDrops is the kernel's total of packets dropped because a CPU's
// input backlog (net.core.netdev_max_backlog) was full; veth pairs deliver
// through that backlog, so bursts on a busy machine lose packets.
func softnetDrops() (uint64, error) {
	b, err := os.ReadFile("/proc/net/softnet_stat")
	if err != nil {
		return 0, err
	}
	var total uint64
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		n, err := strconv.ParseUint(f[1], 16, 64)
		if err != nil {
			return 0, fmt.Errorf("reading /proc/net/softnet_stat: %w", err)
		}
		total += n
	}
	return total, nil
}

// trackDrops records the drop counter every quarter second until stop closes.
func trackDrops(j *judge, stop <-chan struct{}) {
	t := time.NewTicker(250 * time.Millisecond)
	defer t.Stop()
	for {
		if n, err := softnetDrops(); err == nil {
			j.addDrops(time.Now(), n)
		}
		select {
		case <-stop:
			return
		case <-t.C:
		}
	}
}
