package main

import (
	"fmt"
	"io"
	"net/netip"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/kube2ra/kube2ra/test/soak/wire"
)

// entitlement is what an IP may receive at some moment, by the API state the
// driver wrote: the role ARN and session name of the one live pod that owns
// the IP, when its namespace allows that role; role "" means nothing (no
// owner, several owners, no role, or a role the policy refuses).
type entitlement struct {
	// role is the role ARN, "" for none.
	role string
	// session is the session name the fake must have issued, "" when the
	// flavour does not name sessions after pods.
	session string
}

// roleName is the last path segment of the role ARN.
func (e entitlement) roleName() string {
	if i := strings.LastIndexByte(e.role, '/'); i >= 0 {
		return e.role[i+1:]
	}
	return e.role
}

// change is one API write that set an IP's entitlement. The API applied it
// at some moment between from and to (the call's start and end), so the old
// state may hold until to and the new one from from.
type change struct {
	// from and to bracket the API call.
	from, to time.Time
	// state is the entitlement after the call.
	state entitlement
}

// window is a fault, from injection to the end of the fault (a restart
// finished, an outage lifted). Errors up to tolerance after its end are its
// own; after that they are unexplained.
type window struct {
	// name says what was injected.
	name string
	// start and end bracket the fault; end is zero while it lasts.
	start, end time.Time
	// tolerated is false for faults that must not cause errors (slowloris).
	tolerated bool
	// errors counts errors by "kind:class".
	errors map[string]int
	// lastErr is the end of the last error attributed to the window.
	lastErr time.Time
	// probe is how long a pod created after the fault took to get its
	// credentials; negative when it never did.
	probe time.Duration
	// note is fault-specific evidence (new serial seen, rules restored...).
	note string
	// answered counts other pods' credential answers inside the window, for
	// the faults where they must keep flowing.
	answered, failed int
}

// contains reports whether [s, e] lies inside the window itself.
func (w *window) contains(s, e time.Time) bool {
	return !w.start.After(s) && (w.end.IsZero() || !e.After(w.end))
}

// errorCount is the total of w.errors.
func (w *window) errorCount() int {
	n := 0
	for _, c := range w.errors {
		n += c
	}
	return n
}

// recovery is from the fault's end to the end of its last error.
func (w *window) recovery() time.Duration {
	if w.lastErr.IsZero() || w.lastErr.Before(w.end) {
		return 0
	}
	return w.lastErr.Sub(w.end)
}

// judge keeps every IP's entitlement history and the fault windows, and
// classifies each result as it arrives.
type judge struct {
	// grace is how long after an API write kube2ra may still act on the old
	// state (informer propagation).
	grace time.Duration
	// tolerance is how long after a fault's end its errors are still its own.
	tolerance time.Duration
	// errLog receives one line per failed request, when set.
	errLog io.Writer
	// whoIs names the role and session the fake AWS issued a key for.
	whoIs func(accessKeyID string) (role, session string, ok bool)

	mu sync.Mutex
	// timelines are the entitlement changes per IP, in order.
	timelines map[netip.Addr][]change
	// windows are the faults in order.
	windows []*window
	// t is the tally.
	t tally
	// waiters are probes waiting for an IP's first good credential answer.
	waiters map[netip.Addr]*waiter
	// pending are the results not yet classified.
	pending []pending
	// suspects are answers that matched no entitlement; finish decides
	// whether an API outage explains them.
	suspects []suspect
	// drops are readings of the kernel's softnet backlog drop counter.
	drops []dropReading
	// lags are spans in which the agent's view of the API lagged behind:
	// from a kube-apiserver going down until the agent served a pod created
	// after it came back.
	lags []lag
}

// suspect is a credential answer that matched no entitlement when it arrived.
type suspect struct {
	ip            netip.Addr
	s, e          time.Time
	role, session string
	byName        bool
	at            string
}

// dropReading is the kernel's count of packets dropped because a CPU's
// input backlog was full (/proc/net/softnet_stat), at a moment.
type dropReading struct {
	at    time.Time
	total uint64
}

// addDrops records a drop counter reading.
func (j *judge) addDrops(at time.Time, total uint64) {
	j.mu.Lock()
	defer j.mu.Unlock()
	j.drops = append(j.drops, dropReading{at: at, total: total})
}

// droppedDuring is how many packets the kernel dropped between the last
// reading before s and the first reading after e.
func (j *judge) droppedDuring(s, e time.Time) uint64 {
	var before, after *dropReading
	for i := range j.drops {
		r := &j.drops[i]
		if !r.at.After(s) {
			before = r
		}
		if r.at.After(e) && after == nil {
			after = r
		}
	}
	if before == nil || after == nil {
		return 0
	}
	return after.total - before.total
}

// lag is a span in which the agent could not see API writes.
type lag struct {
	from, until time.Time
}

// waiter is a probe: the first credential answer at an IP after since that
// is right for the IP's current owner (role and session).
type waiter struct {
	since time.Time
	want  entitlement
	done  chan time.Time
}

// tally is what the soak counts.
type tally struct {
	// requests by kind.
	requests map[string]int
	// ok are credential answers for the role the pod had at that moment.
	ok int
	// late are credential answers for a role revoked at most grace earlier.
	late int
	// maxLate is the largest such lateness.
	maxLate time.Duration
	// expected404 are refusals while the IP was entitled to nothing.
	expected404 int
	// propagation are refusals or errors within grace of an entitlement change.
	propagation int
	// wrong are credential answers for a role or session the IP was not entitled to.
	wrong []string
	// stale are answers for the state before a write the agent could not
	// see yet because its watch was still reconnecting after an API outage.
	stale []string
	// leaks are answers holding the node's secrets.
	leaks []string
	// forbiddenServed are hostile requests answered 200.
	forbiddenServed []string
	// forbiddenRefused counts hostile requests by the status they got.
	forbiddenRefused map[int]int
	// malformed are 200 answers with a bad shape.
	malformed []string
	// unexplained are errors outside any fault window.
	unexplained []string
	// unexplainedByKind counts them by kind:class.
	unexplainedByKind map[string]int
	// netDrops count timeouts outside fault windows while the kernel
	// dropped packets of the simulated network, by kind:class.
	netDrops map[string]int
	// latencies are credential answer durations (ok ones), for percentiles.
	latencies []time.Duration
}

func newJudge(grace, tolerance time.Duration, whoIs func(string) (string, string, bool)) *judge {
	return &judge{
		grace: grace, tolerance: tolerance, whoIs: whoIs,
		timelines: map[netip.Addr][]change{},
		waiters:   map[netip.Addr]*waiter{},
		t: tally{
			requests:          map[string]int{},
			forbiddenRefused:  map[int]int{},
			unexplainedByKind: map[string]int{},
			netDrops:          map[string]int{},
		},
	}
}

// set records an API write that gave ip the entitlement e.
func (j *judge) set(ip netip.Addr, from, to time.Time, e entitlement) {
	j.mu.Lock()
	defer j.mu.Unlock()
	tl := j.timelines[ip]
	if n := len(tl); n > 0 && tl[n-1].state == e {
		return
	}
	j.timelines[ip] = append(tl, change{from: from, to: to, state: e})
}

// openWindow starts a fault window now.
func (j *judge) openWindow(name string, tolerated bool, now time.Time) *window {
	j.mu.Lock()
	defer j.mu.Unlock()
	w := &window{name: name, start: now, tolerated: tolerated, errors: map[string]int{}, probe: -1}
	j.windows = append(j.windows, w)
	return w
}

// closeWindow ends w at now.
func (j *judge) closeWindow(w *window, now time.Time) {
	j.mu.Lock()
	defer j.mu.Unlock()
	w.end = now
}

// setProbe and setNote record a window's evidence.
func (j *judge) setProbe(w *window, d time.Duration, note string) {
	j.mu.Lock()
	defer j.mu.Unlock()
	w.probe = d
	if note != "" {
		if w.note != "" {
			w.note += "; "
		}
		w.note += note
	}
}

// wait registers a probe for ip's first credential answer after since for
// exactly want (the new pod's role and session).
func (j *judge) wait(ip netip.Addr, since time.Time, want entitlement) <-chan time.Time {
	j.mu.Lock()
	defer j.mu.Unlock()
	w := &waiter{since: since, want: want, done: make(chan time.Time, 1)}
	j.waiters[ip] = w
	return w.done
}

// verdict of a credential answer.
type verdict int

const (
	verdictOK verdict = iota
	verdictLate
	verdictWrong
)

// validity is the span in which state i of tl may have been in force: from
// its own call's start to the next call's end (open at the end).
func validity(tl []change, i int) (time.Time, time.Time) {
	to := time.Unix(1<<40, 0)
	if i+1 < len(tl) {
		to = tl[i+1].to
	}
	return tl[i].from, to
}

// judgeAnswer decides a 200 credential answer for (role, session) to ip over
// [s, e]; session "" skips the session check; byName compares role names
// only (the listing route names the role, it has no key).
func (j *judge) judgeAnswer(ip netip.Addr, s, e time.Time, role, session string, byName bool) (verdict, time.Duration) {
	tl := j.timelines[ip]
	best, late := verdictWrong, time.Duration(0)
	for i, c := range tl {
		if c.state.role == "" {
			continue
		}
		if byName {
			if c.state.roleName() != role {
				continue
			}
		} else if c.state.role != role || (c.state.session != "" && c.state.session != session) {
			continue
		}
		from, to := validity(tl, i)
		switch {
		case !from.After(e) && !s.After(to):
			return verdictOK, 0
		case to.Before(s) && !s.After(to.Add(j.grace)):
			if best == verdictWrong || s.Sub(to) < late {
				best, late = verdictLate, s.Sub(to)
			}
		}
	}
	return best, late
}

// noneValid reports whether ip may have been entitled to nothing during
// [s, e], allowing grace after the change that ended that state.
func (j *judge) noneValid(ip netip.Addr, s, e time.Time) bool {
	tl := j.timelines[ip]
	if len(tl) == 0 {
		return true
	}
	if tl[0].from.After(e) {
		return true // before the first write the IP belonged to no pod
	}
	for i, c := range tl {
		if c.state.role != "" {
			continue
		}
		from, to := validity(tl, i)
		if !from.After(e) && !s.After(to.Add(j.grace)) {
			return true
		}
	}
	return false
}

// nearChange reports whether an entitlement change of ip ended within grace
// before s, or during the request.
func (j *judge) nearChange(ip netip.Addr, s, e time.Time) bool {
	for _, c := range j.timelines[ip] {
		if !c.from.After(e) && !c.to.Add(j.grace).Before(s) {
			return true
		}
	}
	return false
}

// windowFor is the fault window an error over [s, e] belongs to, or nil.
func (j *judge) windowFor(s, e time.Time) *window {
	// The latest fault first: an error belongs to the most recent cause.
	for i := len(j.windows) - 1; i >= 0; i-- {
		w := j.windows[i]
		end := w.end
		if end.IsZero() {
			end = time.Unix(1<<40, 0)
		}
		if !w.start.After(e) && !s.After(end.Add(j.tolerance)) {
			return w
		}
	}
	return nil
}

// pending is a result waiting to be classified.
type pending struct {
	ip  netip.Addr
	pod string
	r   wire.Result
}

// record keeps one result from the client of pod at ip for finish, which
// classifies every result against the complete history: a client can print
// an answer before the driver has recorded the API write that explains it.
// Probes are answered at once.
func (j *judge) record(ip netip.Addr, pod string, r wire.Result) {
	if r.Kind == wire.KindSlow || r.Kind == wire.KindPaused {
		return
	}
	j.mu.Lock()
	defer j.mu.Unlock()
	j.pending = append(j.pending, pending{ip: ip, pod: pod, r: r})
	if w := j.waiters[ip]; w != nil && r.Status == 200 && r.Kind == wire.KindCreds && time.Unix(0, r.Start).After(w.since) {
		if role, session, ok := j.whoIs(r.AccessKeyID); ok && w.want.role == role && (w.want.session == "" || w.want.session == session) {
			w.done <- time.Unix(0, r.End)
			delete(j.waiters, ip)
		}
	}
}

// classify decides one result; the caller holds mu.
func (j *judge) classify(ip netip.Addr, pod string, r wire.Result) {
	s, e := time.Unix(0, r.Start), time.Unix(0, r.End)
	j.t.requests[r.Kind]++
	at := fmt.Sprintf("%s+%dms %s (%s) %s %s token=%v keepalive=%v", s.Format("15:04:05.000"), e.Sub(s).Milliseconds(), pod, ip, r.Kind, r.Path, r.Token, r.KeepAlive)
	if r.Leak != "" {
		j.t.leaks = append(j.t.leaks, fmt.Sprintf("%s: status %d carries %s", at, r.Status, r.Leak))
	}
	if r.Status == 200 && r.Bad != "" {
		j.t.malformed = append(j.t.malformed, fmt.Sprintf("%s: %s", at, r.Bad))
	}
	if r.Kind == wire.KindCreds && r.Status == 200 {
		for _, w := range j.windows {
			if w.contains(s, e) {
				w.answered++
			}
		}
	}

	switch {
	case r.Kind == wire.KindForbidden:
		switch {
		case r.Status == 200:
			j.t.forbiddenServed = append(j.t.forbiddenServed, at)
		case r.Status != 0:
			j.t.forbiddenRefused[r.Status]++
		default:
			j.errorLocked(ip, at, r, s, e)
		}
		return
	case r.Status == 200 && (r.Kind == wire.KindCreds || r.Kind == wire.KindForeign):
		role, session, ok := j.whoIs(r.AccessKeyID)
		if !ok {
			j.t.wrong = append(j.t.wrong, fmt.Sprintf("%s: access key %s was not issued by the fake AWS", at, r.AccessKeyID))
			return
		}
		v, late := j.judgeAnswer(ip, s, e, role, session, false)
		j.countVerdict(v, late, at, role, session, ip, s, e, false)
		if v == verdictOK {
			j.t.latencies = append(j.t.latencies, e.Sub(s))
		}
		return
	case r.Status == 200 && r.Kind == wire.KindList:
		v, late := j.judgeAnswer(ip, s, e, r.RoleName, "", true)
		j.countVerdict(v, late, at, r.RoleName, "", ip, s, e, true)
		return
	case r.Status == 200:
		return // token, pass-through: shape and leaks checked above
	case r.Kind == wire.KindForeign && r.Status == 404:
		return // asking for another role's name must be refused
	case (r.Kind == wire.KindList || r.Kind == wire.KindCreds) && r.Status == 404 && j.noneValid(ip, s, e):
		j.t.expected404++
		return
	}
	if (r.Kind == wire.KindList || r.Kind == wire.KindCreds) && r.Status == 404 && j.nearChange(ip, s, e) {
		j.t.propagation++
		return
	}
	j.errorLocked(ip, at, r, s, e)
}

func (j *judge) countVerdict(v verdict, late time.Duration, at, role, session string, ip netip.Addr, s, e time.Time, byName bool) {
	switch v {
	case verdictOK:
		j.t.ok++
	case verdictLate:
		j.t.late++
		j.t.maxLate = max(j.t.maxLate, late)
	default:
		j.suspects = append(j.suspects, suspect{ip: ip, s: s, e: e, role: role, session: session, byName: byName, at: at})
	}
}

// addLag records that the agent's view lagged the API from from to until.
func (j *judge) addLag(from, until time.Time) {
	j.mu.Lock()
	defer j.mu.Unlock()
	j.lags = append(j.lags, lag{from: from, until: until})
}

// finish decides the suspects: an answer for a state that a write ended
// while the agent's watch was reconnecting after an API outage, given
// before the agent caught up (plus grace), is stale; anything else is wrong.
func (j *judge) finish() {
	j.mu.Lock()
	defer j.mu.Unlock()
	for _, p := range j.pending {
		j.classify(p.ip, p.pod, p.r)
	}
	j.pending = nil
	for _, sp := range j.suspects {
		if j.explainedByLag(sp) {
			j.t.stale = append(j.t.stale, fmt.Sprintf("%s: got %s session %q; entitled: %s", sp.at, sp.role, sp.session, j.describe(sp.ip)))
			continue
		}
		j.t.wrong = append(j.t.wrong, fmt.Sprintf("%s: got %s session %q; entitled: %s", sp.at, sp.role, sp.session, j.describe(sp.ip)))
	}
	j.suspects = nil
}

func (j *judge) explainedByLag(sp suspect) bool {
	tl := j.timelines[sp.ip]
	for i, c := range tl {
		if c.state.role == "" || i+1 >= len(tl) {
			continue
		}
		if sp.byName {
			if c.state.roleName() != sp.role {
				continue
			}
		} else if c.state.role != sp.role || (c.state.session != "" && c.state.session != sp.session) {
			continue
		}
		from, to := validity(tl, i)
		for _, l := range j.lags {
			if !to.Before(l.from) && !to.After(l.until) && !from.After(sp.e) && !sp.s.After(l.until.Add(j.grace)) {
				return true
			}
		}
	}
	return false
}

// describe is ip's recent entitlement history, for a wrong-answer report.
func (j *judge) describe(ip netip.Addr) string {
	tl := j.timelines[ip]
	if len(tl) > 4 {
		tl = tl[len(tl)-4:]
	}
	var parts []string
	for _, c := range tl {
		role := c.state.role
		if role == "" {
			role = "none"
		}
		parts = append(parts, fmt.Sprintf("%s..%s %s %s", c.from.Format("15:04:05.000"), c.to.Format("15:04:05.000"), role, c.state.session))
	}
	return strings.Join(parts, " | ")
}

// errorLocked attributes a failed request to a fault window or records it
// as unexplained.
func (j *judge) errorLocked(ip netip.Addr, at string, r wire.Result, s, e time.Time) {
	class := r.Err
	if class == "" {
		class = fmt.Sprint(r.Status)
	}
	key := r.Kind + ":" + class
	if j.errLog != nil {
		name := "outside any window"
		if w := j.windowFor(s, e); w != nil {
			name = w.name
		}
		fmt.Fprintf(j.errLog, "%s: %s %s [%s]\n", at, key, r.ErrText, name)
	}
	if r.Kind == wire.KindCreds {
		for _, w := range j.windows {
			if w.contains(s, e) {
				w.failed++
			}
		}
	}
	if w := j.windowFor(s, e); w != nil {
		w.errors[key]++
		if e.After(w.lastErr) {
			w.lastErr = e
		}
		if w.tolerated {
			return
		}
	}
	if (r.Err == wire.ErrTimeout || r.Err == wire.ErrReset) && j.droppedDuring(s, e) > 0 {
		// The simulated network lost packets (veth input backlog full on a
		// busy machine): a TCP retransmit, not kube2ra, made this late.
		j.t.netDrops[key]++
		return
	}
	j.t.unexplainedByKind[key]++
	detail := r.ErrText
	if len(j.t.unexplained) < 200 {
		j.t.unexplained = append(j.t.unexplained, fmt.Sprintf("%s: %s %s; entitled: %s", at, key, detail, j.describe(ip)))
	}
}

// percentile of sorted durations.
func percentile(d []time.Duration, p float64) time.Duration {
	if len(d) == 0 {
		return 0
	}
	s := append([]time.Duration(nil), d...)
	sort.Slice(s, func(a, b int) bool { return s[a] < s[b] })
	i := int(p * float64(len(s)-1))
	return s[i]
}
