package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"time"

	"github.com/kube2ra/kube2ra/test/harness"
)

// flavourReport is what one flavour's run measured.
type flavourReport struct {
	flavour harness.Flavour
	// loadTime is how long the load ran.
	loadTime time.Duration
	// pods is the number of pod slots under load.
	pods int
	// t is the judge's tally, windows its faults.
	t       tally
	windows []*window
	// cold is the agent's usage before any load; start is idle after the
	// warm-up, peak during the load, end idle after it; restarted is the
	// new agent's after the SIGKILL.
	cold, start, peak, end, restarted usage
	// settledIn is how long after the load stopped the end reading was taken.
	settledIn time.Duration
	// slow is the last slowloris summary.
	slow *slowSummary
	// counts are the churn operations.
	counts map[string]int
	// breaks are the broken invariants.
	breaks []string
	// kernelDrops is how many packets the kernel dropped during the run.
	kernelDrops uint64
	// fatal is a failure that stopped the run early.
	fatal error
}

// slowSummary is what the slowloris client and the other pods saw.
type slowSummary struct {
	conns, maxOpen, opened, closed, answered, dialErrs int
	maxLife                                            time.Duration
}

// sec scales a duration written for the 150-second flavour run.
func (d *driver) sec(full time.Duration) time.Duration {
	return max(time.Duration(float64(full)*d.cfg.scale), 2*time.Second)
}

// hold waits for dur while the load and churn run, or until ctx ends.
func hold(ctx context.Context, dur time.Duration) error {
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(dur):
		return nil
	}
}

// fault is one injected failure.
type fault struct {
	// name is how the table names it.
	name string
	// tolerated is false when pods must not notice it at all.
	tolerated bool
	// inject runs the fault from its start to its end and may note evidence.
	inject func(ctx context.Context, w *window) error
}

// faults are the flavour's failures, in the order they are injected.
func (d *driver) faults() []fault {
	env := d.env
	var list []fault
	upstream := "STS"
	if env.Flavour == harness.RolesAnywhere {
		upstream = "Roles Anywhere"
	}
	setFail := func(p int) {
		if env.RA != nil {
			env.RA.SetFailurePercent(p)
		} else {
			env.STS.SetFailurePercent(p)
		}
	}
	setThrottle := func(on bool) {
		if env.RA != nil {
			env.RA.SetThrottlePercent(map[bool]int{true: 100, false: 0}[on])
		} else {
			env.STS.SetThrottle(on)
		}
	}
	setOutage := func(on bool) {
		if env.RA != nil {
			env.RA.SetOutage(on)
		} else {
			env.STS.SetOutage(on)
		}
	}
	list = append(list,
		fault{name: upstream + " 5xx on 30% of calls", tolerated: true, inject: func(ctx context.Context, w *window) error {
			setFail(30)
			defer setFail(0)
			return hold(ctx, d.sec(15*time.Second))
		}},
		fault{name: upstream + " throttling every call", tolerated: true, inject: func(ctx context.Context, w *window) error {
			setThrottle(true)
			defer setThrottle(false)
			return hold(ctx, d.sec(10*time.Second))
		}},
		fault{name: upstream + " outage (connections dropped)", tolerated: true, inject: func(ctx context.Context, w *window) error {
			setOutage(true)
			defer setOutage(false)
			return hold(ctx, d.cfg.outage)
		}},
		fault{name: "kube-apiserver restart", tolerated: true, inject: func(ctx context.Context, w *window) error {
			d.churnOn.Store(false)
			d.opMu.Lock() // no churn write straddles the restart
			err := env.CP.RestartAPIServer(ctx, d.cfg.apiDowntime)
			d.opMu.Unlock()
			d.churnOn.Store(true)
			if err != nil {
				return err
			}
			back := time.Now()
			// The agent's watches reconnect with client-go's backoff; until
			// then it serves its last view. A pod created now is served once
			// the agent sees the API again: that ends the lag.
			probe, err := d.freshPod(ctx, 60*time.Second)
			if err != nil {
				d.judge.addLag(w.start, time.Now())
				return fmt.Errorf("the agent never saw the API again: %w", err)
			}
			caughtUp := time.Now()
			d.judge.addLag(w.start, caughtUp)
			d.judge.setProbe(w, probe, fmt.Sprintf("API down %.1fs; the agent saw writes again %.1fs after it was back", back.Sub(w.start).Seconds(), caughtUp.Sub(back).Seconds()))
			return nil
		}},
	)
	if env.Flavour == harness.RolesAnywhere {
		list = append(list, fault{name: "node certificate rotation", tolerated: true, inject: func(ctx context.Context, w *window) error {
			before := len(env.RA.Accepted())
			if err := env.PKI.Rotate(); err != nil {
				return err
			}
			serial := env.PKI.Serial.String()
			rotated := time.Now()
			// The agent re-reads its key files every 2 s; every new pod needs
			// a CreateSession, which must soon be signed with the new
			// certificate and never fail for the swap.
			var seen []string
			for time.Since(rotated) < 30*time.Second {
				probe, err := d.freshPod(ctx, 30*time.Second)
				if err != nil {
					return err
				}
				accepted := env.RA.Accepted()
				for _, a := range accepted[before:] {
					if a.Serial == serial {
						d.judge.setProbe(w, probe, fmt.Sprintf("new certificate used %.2fs after the swap", a.Time.Sub(rotated).Seconds()))
						return nil
					}
				}
				for _, a := range accepted[before:] {
					seen = append(seen, a.Serial)
				}
				before = len(accepted)
				time.Sleep(500 * time.Millisecond)
			}
			return fmt.Errorf("no CreateSession signed with the new certificate (serial %s) within 30s of the rotation; serials seen: %v", serial, seen)
		}})
	} else {
		list = append(list, fault{name: "metadata service restart (3s down)", tolerated: true, inject: func(ctx context.Context, w *window) error {
			if err := env.IMDS.Stop(); err != nil {
				return err
			}
			if err := hold(ctx, 3*time.Second); err != nil {
				return err
			}
			return env.IMDS.Restart() // forgets every token, as a rebooted service would
		}})
	}
	list = append(list,
		fault{name: "nat table flush", tolerated: true, inject: func(ctx context.Context, w *window) error {
			if out, err := exec.CommandContext(ctx, "iptables", "-t", "nat", "-F").CombinedOutput(); err != nil {
				return fmt.Errorf("iptables -t nat -F: %w: %s", err, out)
			}
			flushed := time.Now()
			for ctx.Err() == nil {
				out, _ := exec.CommandContext(ctx, "iptables", "-t", "nat", "-S", "PREROUTING").Output()
				if strings.Contains(string(out), "KUBE2RA") {
					d.judge.setProbe(w, -1, fmt.Sprintf("rules restored %.2fs after the flush", time.Since(flushed).Seconds()))
					return nil
				}
				time.Sleep(100 * time.Millisecond)
			}
			return ctx.Err()
		}},
		fault{name: fmt.Sprintf("slowloris (%d connections, 1 byte/s)", d.cfg.slowConns), tolerated: false, inject: func(ctx context.Context, w *window) error {
			p, err := d.slowPod(ctx)
			if err != nil {
				return err
			}
			c, err := d.startClient(p, d.cfg.slowConns)
			if err != nil {
				return err
			}
			d.slowClient = c
			err = hold(ctx, d.sec(15*time.Second))
			if last := c.lastSlow.Load(); last != nil {
				d.slow = &slowSummary{conns: d.cfg.slowConns, maxOpen: int(c.maxOpen.Load()), opened: last.Opened, closed: last.Closed,
					answered: last.Answered, dialErrs: last.DialErrs, maxLife: time.Duration(last.MaxLife) * time.Millisecond}
			}
			d.stopClient(c)
			d.slowClient = nil
			return err
		}},
	)
	return list
}

// runFlavour stands up a node of the flavour and runs the whole soak on it.
func runFlavour(ctx context.Context, cfg config, flavour harness.Flavour, clientBin string, logf func(string, ...any)) *flavourReport {
	rep := &flavourReport{flavour: flavour, pods: cfg.pods}
	roles := make([]string, cfg.roles)
	for i := range roles {
		roles[i] = fmt.Sprintf("r%02d", i)
	}
	// The load client reads with and without IMDSv2 tokens, as a fleet of
	// old and new SDKs does; IMDSv1 refusal has its own e2e test.
	args := []string{"--debug=false", "--log-level", "warn", "--imdsv2-required=false"}
	if flavour == harness.RolesAnywhere {
		// Sessions named after pods make every answer checkable down to the pod.
		args = append(args, "--ra-role-session-name")
	}
	logFile, err := os.Create(cfg.outPath("agent-" + string(flavour) + ".log"))
	if err != nil {
		rep.fatal = err
		return rep
	}
	defer logFile.Close()
	env, err := harness.Start(ctx, harness.Options{Flavour: flavour, Roles: roles, AgentArgs: args, Log: logFile})
	if err != nil {
		rep.fatal = fmt.Errorf("starting the %s node: %w", flavour, err)
		return rep
	}
	defer env.Close()
	if flavour == harness.EC2 && cfg.hardenIMDS {
		undo, err := hardenInstance(env)
		if err != nil {
			rep.fatal = err
			return rep
		}
		defer undo()
	}
	d := newDriver(env, cfg, clientBin, roles, logf)
	stopDrops := make(chan struct{})
	go trackDrops(d.judge, stopDrops)
	defer close(stopDrops)
	if errLog, err := os.Create(cfg.outPath("errors-" + string(flavour) + ".log")); err == nil {
		defer errLog.Close()
		d.judge.errLog = errLog
	}
	if err := d.run(ctx, rep); err != nil {
		rep.fatal = err
	}
	d.stopAll()
	d.judge.finish()
	d.mu.Lock()
	rep.counts = d.counts
	rep.slow = d.slow
	d.mu.Unlock()
	d.judge.mu.Lock()
	rep.t, rep.windows = d.judge.t, d.judge.windows
	if n := len(d.judge.drops); n > 1 {
		rep.kernelDrops = d.judge.drops[n-1].total - d.judge.drops[0].total
	}
	d.judge.mu.Unlock()
	rep.breaks = append(rep.breaks, invariantBreaks(rep)...)
	return rep
}

// run is the flavour's timeline: setup, idle reading, load with churn and
// faults one after another, idle reading again, then SIGKILL and restart.
func (d *driver) run(ctx context.Context, rep *flavourReport) error {
	if err := d.setup(ctx); err != nil {
		return err
	}
	if err := d.pauseAll(); err != nil {
		return err
	}
	time.Sleep(d.sec(3 * time.Second)) // prefetches land, the idle state settles
	cold, err := readUsage(d.env.Agent)
	if err != nil {
		return err
	}
	rep.cold = cold
	d.logf("cold: %s", cold)

	d.began = time.Now()
	peak := trackPeak(d.env.Agent, time.Second)
	d.resumeAll()
	churnCtx, stopChurn := context.WithCancel(ctx)
	defer stopChurn()
	d.churnOn.Store(true)
	go d.churnLoop(churnCtx, d.cfg.churnEvery)

	// Warm-up, then the idle reading the end is compared with: the agent
	// has served every kind of request once and its heap has found its
	// working size, so growth from here on is what the faults and the
	// churn left behind.
	if err := hold(ctx, d.sec(10*time.Second)); err != nil {
		return err
	}
	d.churnOn.Store(false)
	d.waitChurnIdle()
	if err := d.pauseAll(); err != nil {
		return err
	}
	time.Sleep(2 * time.Second)
	start, err := readUsage(d.env.Agent)
	if err != nil {
		return err
	}
	rep.start = start
	d.logf("start (idle after warm-up): %s", start)
	d.resumeAll()
	d.churnOn.Store(true)
	for _, f := range d.faults() {
		d.logf("fault: %s", f.name)
		w := d.judge.openWindow(f.name, f.tolerated, time.Now())
		err := f.inject(ctx, w)
		d.judge.closeWindow(w, time.Now())
		if err != nil {
			rep.breaks = append(rep.breaks, fmt.Sprintf("%s: %v", f.name, err))
			if ctx.Err() != nil {
				return ctx.Err()
			}
		}
		if f.tolerated && w.probe < 0 {
			// Recovery probe: a pod created now needs a new upstream session.
			probe, err := d.freshPod(ctx, 30*time.Second)
			if err != nil {
				rep.breaks = append(rep.breaks, fmt.Sprintf("%s: not recovered: %v", f.name, err))
			} else if w.probe < 0 {
				d.judge.setProbe(w, probe, "")
			}
		}
		if err := hold(ctx, d.sec(5*time.Second)); err != nil {
			return err
		}
	}

	// Load stops: the agent must give back what it took.
	d.churnOn.Store(false)
	d.waitChurnIdle()
	rep.loadTime = time.Since(d.began)
	if err := d.pauseAll(); err != nil {
		return err
	}
	stopped := time.Now()
	var end usage
	for {
		time.Sleep(time.Second)
		end, err = readUsage(d.env.Agent)
		if err != nil {
			return err
		}
		if ok, _ := settled(start, end); ok || time.Since(stopped) > d.cfg.settleMax {
			break
		}
	}
	rep.peak = peak.finish()
	rep.peak.goroutines = max(rep.peak.goroutines, end.goroutines)
	rep.end, rep.settledIn = end, time.Since(stopped)
	d.logf("end: %s (after %s)", end, rep.settledIn.Round(time.Second))

	// SIGKILL under load; the new agent must serve.
	d.resumeAll()
	d.churnOn.Store(true)
	if err := hold(ctx, d.sec(3*time.Second)); err != nil {
		return err
	}
	d.logf("fault: agent SIGKILL + restart")
	w := d.judge.openWindow("agent SIGKILL + restart", true, time.Now())
	if err := d.env.Agent.Kill(); err != nil {
		return err
	}
	if err := d.env.Agent.Start(); err != nil {
		return err
	}
	readyCtx, cancel := context.WithTimeout(ctx, 60*time.Second)
	err = d.env.Agent.WaitReady(readyCtx)
	cancel()
	d.judge.closeWindow(w, time.Now())
	if err != nil {
		return err
	}
	probe, err := d.freshPod(ctx, 30*time.Second)
	if err != nil {
		rep.breaks = append(rep.breaks, fmt.Sprintf("agent SIGKILL + restart: the new agent does not serve: %v", err))
	}
	d.judge.setProbe(w, probe, fmt.Sprintf("ready %.2fs after the kill", w.end.Sub(w.start).Seconds()))
	if err := hold(ctx, d.sec(10*time.Second)); err != nil {
		return err
	}
	d.churnOn.Store(false)
	rep.loadTime += d.sec(13 * time.Second)
	if u, err := readUsage(d.env.Agent); err == nil {
		rep.restarted = u
	}
	return nil
}

// waitChurnIdle returns once no churn operation is in flight (churnOn is
// already false, so none starts after it).
func (d *driver) waitChurnIdle() {
	d.opMu.Lock()
	defer d.opMu.Unlock()
}

// invariantBreaks lists what the issue says must never happen.
func invariantBreaks(r *flavourReport) []string {
	var out []string
	add := func(n int, what string, examples []string) {
		if n == 0 {
			return
		}
		msg := fmt.Sprintf("%d %s", n, what)
		for i, e := range examples {
			if i == 5 {
				msg += fmt.Sprintf("\n      ... and %d more", len(examples)-5)
				break
			}
			msg += "\n      " + e
		}
		out = append(out, msg)
	}
	add(len(r.t.wrong), "wrong-role answers", r.t.wrong)
	// The agent checks answers live while its watch is not current, so a
	// write it missed during an API outage is never answered either.
	add(len(r.t.stale), "stale answers (a state the agent missed while its watch was broken)", r.t.stale)
	add(len(r.t.leaks), "answers with the node's secrets", r.t.leaks)
	add(len(r.t.forbiddenServed), "forbidden requests answered 200", r.t.forbiddenServed)
	add(len(r.t.malformed), "malformed 200 answers", r.t.malformed)
	n := 0
	for _, c := range r.t.unexplainedByKind {
		n += c
	}
	add(n, "errors outside fault windows (or during slowloris)", r.t.unexplained)
	if r.fatal == nil && r.end.goroutines > 0 {
		if ok, why := settled(r.start, r.end); !ok {
			out = append(out, "resources not given back after the load: "+strings.Join(why, "; "))
		}
	}
	if r.t.requests["creds"] == 0 {
		out = append(out, "no credential requests were made")
	}
	return out
}

// imdsGuardRule stands for the instance settings security.md asks for on
// EC2 (HttpTokens=required, HttpPutResponseHopLimit=1): the metadata
// service's answers never reach a pod directly. On EC2 the hop limit drops
// them one hop out; here the fake service runs on the node itself, so its
// answers to the pod subnet are dropped in OUTPUT. kube2ra's own answers
// leave from HOST_IP:8181 (un-DNATed only after OUTPUT) and pass.
var imdsGuardRule = []string{"OUTPUT", "-s", "169.254.169.254/32", "-p", "tcp", "--sport", "80", "-d", "10.200.0.0/24", "-m", "comment", "--comment", "soak: IMDS hop limit 1", "-j", "DROP"}

// hardenInstance configures the fake instance as security.md requires and
// returns how to undo it.
func hardenInstance(env *harness.Env) (func(), error) {
	env.IMDS.SetRequireToken(true)
	if out, err := exec.Command("iptables", append([]string{"-A"}, imdsGuardRule...)...).CombinedOutput(); err != nil {
		return nil, fmt.Errorf("emulating the IMDS hop limit: iptables: %w: %s", err, out)
	}
	return func() { _ = exec.Command("iptables", append([]string{"-D"}, imdsGuardRule...)...).Run() }, nil
}
