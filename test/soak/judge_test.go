package main

import (
	"net/netip"
	"testing"
	"time"

	"github.com/kube2ra/kube2ra/test/harness"
	"github.com/kube2ra/kube2ra/test/soak/wire"
)

var (
	ipA   = netip.MustParseAddr("10.200.0.20")
	t0    = time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	roleX = harness.RoleARN("r01")
	roleY = harness.RoleARN("r02")
)

// keys maps the access keys the tests use to what the fake issued them for.
var keys = map[string][2]string{
	"AKX-A": {roleX, "ns.a"},
	"AKX-B": {roleX, "ns.b"},
	"AKY-B": {roleY, "ns.b"},
}

func newTestJudge() *judge {
	return newJudge(3*time.Second, 10*time.Second, func(ak string) (string, string, bool) {
		k, ok := keys[ak]
		return k[0], k[1], ok
	})
}

func at(d time.Duration) time.Time { return t0.Add(d) }

func creds(s, e time.Duration, ak string) wire.Result {
	return wire.Result{Kind: wire.KindCreds, Start: at(s).UnixNano(), End: at(e).UnixNano(), Status: 200, AccessKeyID: ak}
}

func status(kind string, s, e time.Duration, code int) wire.Result {
	return wire.Result{Kind: kind, Start: at(s).UnixNano(), End: at(e).UnixNano(), Status: code}
}

// ownerChange: pod a (role X) owns the IP from 0 s; at 10 s it is deleted and
// pod b (role Y) takes the IP, the write taking 100 ms.
func ownerChange(j *judge) {
	j.set(ipA, at(0), at(100*time.Millisecond), entitlement{role: roleX, session: "ns.a"})
	j.set(ipA, at(10*time.Second), at(10*time.Second+100*time.Millisecond), entitlement{role: roleY, session: "ns.b"})
}

func TestJudgeCredentialAnswers(t *testing.T) {
	tests := []struct {
		name                   string
		result                 wire.Result
		lag                    *lag
		ok, late, wrong, stale int
	}{
		{name: "answer for the current owner is right", result: creds(5*time.Second, 5*time.Second+time.Millisecond, "AKX-A"), ok: 1},
		{name: "answer for the old owner during the write is right", result: creds(10*time.Second+50*time.Millisecond, 10*time.Second+60*time.Millisecond, "AKX-A"), ok: 1},
		{name: "answer for the old owner within grace after the write is late", result: creds(12*time.Second, 12*time.Second+time.Millisecond, "AKX-A"), late: 1},
		{name: "answer for the old owner after grace is wrong", result: creds(14*time.Second, 14*time.Second+time.Millisecond, "AKX-A"), wrong: 1},
		{name: "same role but another pod's session is wrong", result: creds(5*time.Second, 5*time.Second+time.Millisecond, "AKX-B"), wrong: 1},
		{name: "the new owner's role before its write began is wrong", result: creds(9*time.Second, 9*time.Second+time.Millisecond, "AKY-B"), wrong: 1},
		{name: "a key the fake never issued is wrong", result: creds(5*time.Second, 5*time.Second+time.Millisecond, "ASIANODEROLE0000FAKE"), wrong: 1},
		{
			name:   "old owner after grace but before the agent caught up with the API is stale, not wrong",
			result: creds(14*time.Second, 14*time.Second+time.Millisecond, "AKX-A"),
			lag:    &lag{from: at(8 * time.Second), until: at(13 * time.Second)},
			stale:  1,
		},
		{
			name:   "old owner after the lag's end plus grace is wrong",
			result: creds(17*time.Second, 17*time.Second+time.Millisecond, "AKX-A"),
			lag:    &lag{from: at(8 * time.Second), until: at(13 * time.Second)},
			wrong:  1,
		},
		{
			name:   "a lag does not excuse another pod's session",
			result: creds(5*time.Second, 5*time.Second+time.Millisecond, "AKX-B"),
			lag:    &lag{from: at(0), until: at(20 * time.Second)},
			wrong:  1,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			j := newTestJudge()
			ownerChange(j)
			if tc.lag != nil {
				j.addLag(tc.lag.from, tc.lag.until)
			}
			j.record(ipA, "ns/pod", tc.result)
			j.finish()
			got := [4]int{j.t.ok, j.t.late, len(j.t.wrong), len(j.t.stale)}
			want := [4]int{tc.ok, tc.late, tc.wrong, tc.stale}
			if got != want {
				t.Fatalf("ok, late, wrong, stale = %v, want %v (wrong: %v)", got, want, j.t.wrong)
			}
		})
	}
}

func TestJudgeListingIsJudgedByName(t *testing.T) {
	j := newTestJudge()
	ownerChange(j)
	j.record(ipA, "ns/pod", wire.Result{Kind: wire.KindList, Start: at(5 * time.Second).UnixNano(), End: at(5 * time.Second).UnixNano(), Status: 200, RoleName: "r01"})
	j.record(ipA, "ns/pod", wire.Result{Kind: wire.KindList, Start: at(5 * time.Second).UnixNano(), End: at(5 * time.Second).UnixNano(), Status: 200, RoleName: "r02"})
	j.finish()
	if j.t.ok != 1 || len(j.t.wrong) != 1 {
		t.Fatalf("ok %d wrong %v, want the owner's name right and the next owner's name wrong", j.t.ok, j.t.wrong)
	}
}

func TestJudgeRefusalsAndErrors(t *testing.T) {
	tests := []struct {
		name                             string
		result                           wire.Result
		window                           *window
		expected404, propagation, unexpl int
		inWindow                         int
	}{
		{name: "404 while entitled to nothing is expected", result: status(wire.KindCreds, 5*time.Second, 5*time.Second, 404), expected404: 1},
		{name: "404 within grace of a grant is expected", result: status(wire.KindCreds, 11*time.Second, 11*time.Second, 404), expected404: 1},
		{name: "503 within grace of a grant is an error", result: status(wire.KindCreds, 11*time.Second, 11*time.Second, 503), unexpl: 1},
		{name: "404 long after a grant is unexplained", result: status(wire.KindCreds, 15*time.Second, 15*time.Second, 404), unexpl: 1},
		{
			name:   "503 inside a tolerated fault window is the window's",
			result: status(wire.KindCreds, 15*time.Second, 15*time.Second, 503),
			window: &window{name: "outage", start: at(14 * time.Second), end: at(16 * time.Second), tolerated: true}, inWindow: 1,
		},
		{
			name:   "503 within the tolerance after a window is the window's",
			result: status(wire.KindCreds, 25*time.Second, 25*time.Second, 503),
			window: &window{name: "outage", start: at(14 * time.Second), end: at(16 * time.Second), tolerated: true}, inWindow: 1,
		},
		{
			name:   "503 after the tolerance is unexplained",
			result: status(wire.KindCreds, 27*time.Second, 27*time.Second, 503),
			window: &window{name: "outage", start: at(14 * time.Second), end: at(16 * time.Second), tolerated: true}, unexpl: 1,
		},
		{
			name:   "an error during slowloris is counted and not tolerated",
			result: wire.Result{Kind: wire.KindList, Start: at(15 * time.Second).UnixNano(), End: at(18 * time.Second).UnixNano(), Err: wire.ErrTimeout},
			window: &window{name: "slowloris", start: at(14 * time.Second), end: at(20 * time.Second)}, unexpl: 1, inWindow: 1,
		},
		{name: "a foreign role name refused is right", result: status(wire.KindForeign, 15*time.Second, 15*time.Second, 404)},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			j := newTestJudge()
			// Nothing until 10 s, then role Y.
			j.set(ipA, at(0), at(100*time.Millisecond), entitlement{})
			j.set(ipA, at(10*time.Second), at(10*time.Second+100*time.Millisecond), entitlement{role: roleY, session: "ns.b"})
			if tc.window != nil {
				w := j.openWindow(tc.window.name, tc.window.tolerated, tc.window.start)
				j.closeWindow(w, tc.window.end)
			}
			j.record(ipA, "ns/pod", tc.result)
			j.finish()
			unexpl := 0
			for _, n := range j.t.unexplainedByKind {
				unexpl += n
			}
			inWindow := 0
			for _, w := range j.windows {
				inWindow += w.errorCount()
			}
			got := [4]int{j.t.expected404, j.t.propagation, unexpl, inWindow}
			want := [4]int{tc.expected404, tc.propagation, tc.unexpl, tc.inWindow}
			if got != want {
				t.Fatalf("expected404, propagation, unexplained, in window = %v, want %v", got, want)
			}
		})
	}
}

func TestJudge404AfterARoleChangeWithinGraceIsPropagation(t *testing.T) {
	j := newTestJudge()
	ownerChange(j)
	j.record(ipA, "ns/pod", status(wire.KindCreds, 11*time.Second, 11*time.Second, 404))
	j.record(ipA, "ns/pod", status(wire.KindCreds, 15*time.Second, 15*time.Second, 404))
	j.finish()
	if j.t.propagation != 1 || j.t.unexplainedByKind["creds:404"] != 1 {
		t.Fatalf("propagation %d, unexplained %v; want the 404 within grace excused and the later one not", j.t.propagation, j.t.unexplainedByKind)
	}
}

func TestJudgeLeaksAndForbiddenAnswers(t *testing.T) {
	j := newTestJudge()
	ownerChange(j)
	j.record(ipA, "ns/pod", wire.Result{Kind: wire.KindForbidden, Path: "user-data", Start: at(time.Second).UnixNano(), End: at(time.Second).UnixNano(), Status: 200, Leak: "node secret marker"})
	j.record(ipA, "ns/pod", wire.Result{Kind: wire.KindForbidden, Path: "dot-dot", Start: at(time.Second).UnixNano(), End: at(time.Second).UnixNano(), Status: 404})
	j.finish()
	if len(j.t.leaks) != 1 || len(j.t.forbiddenServed) != 1 || j.t.forbiddenRefused[404] != 1 {
		t.Fatalf("leaks %v, served %v, refused %v", j.t.leaks, j.t.forbiddenServed, j.t.forbiddenRefused)
	}
}

func TestJudgeUsesWritesRecordedAfterTheAnswerArrived(t *testing.T) {
	j := newTestJudge()
	j.set(ipA, at(0), at(100*time.Millisecond), entitlement{})
	// The client prints its answer while the driver's write is still in flight.
	j.record(ipA, "ns/pod", creds(10*time.Second+50*time.Millisecond, 10*time.Second+51*time.Millisecond, "AKY-B"))
	j.set(ipA, at(10*time.Second), at(10*time.Second+100*time.Millisecond), entitlement{role: roleY, session: "ns.b"})
	j.finish()
	if j.t.ok != 1 || len(j.t.wrong) != 0 {
		t.Fatalf("ok %d, wrong %v: an answer inside the write's interval must be right", j.t.ok, j.t.wrong)
	}
}

func TestJudgeProbeWaitsForTheNewOwnersOwnSession(t *testing.T) {
	j := newTestJudge()
	ownerChange(j)
	done := j.wait(ipA, at(10*time.Second), entitlement{role: roleY, session: "ns.b"})
	j.record(ipA, "ns/pod", creds(11*time.Second, 11*time.Second+time.Millisecond, "AKX-A")) // late answer for the old owner
	select {
	case <-done:
		t.Fatal("a late answer for the old owner ended the probe")
	default:
	}
	j.record(ipA, "ns/pod", creds(12*time.Second, 12*time.Second+time.Millisecond, "AKY-B"))
	select {
	case <-done:
	default:
		t.Fatal("the new owner's answer did not end the probe")
	}
}

func TestModelEntitlement(t *testing.T) {
	ip := netip.MustParseAddr("10.200.0.30")
	tests := []struct {
		name     string
		pods     []podModel
		policies map[string]string
		want     entitlement
	}{
		{"one pod with an allowed role", []podModel{{"a", "p", "r01", ip}}, map[string]string{"a": `["r01"]`}, entitlement{roleX, "a.p"}},
		{"glob allows", []podModel{{"a", "p", "r01", ip}}, map[string]string{"a": `["r0*"]`}, entitlement{roleX, "a.p"}},
		{"full ARN glob allows", []podModel{{"a", "p", "r01", ip}}, map[string]string{"a": `["arn:aws:iam::123456789012:role/r*"]`}, entitlement{roleX, "a.p"}},
		{"whole ARN must match", []podModel{{"a", "p", "r01", ip}}, map[string]string{"a": `["r0"]`}, entitlement{}},
		{"unparsable policy denies", []podModel{{"a", "p", "r01", ip}}, map[string]string{"a": `["r01", `}, entitlement{}},
		{"object policy denies", []podModel{{"a", "p", "r01", ip}}, map[string]string{"a": `{"not":"an array"}`}, entitlement{}},
		{"missing policy denies", []podModel{{"a", "p", "r01", ip}}, map[string]string{}, entitlement{}},
		{"no annotation gets nothing", []podModel{{"a", "p", "", ip}}, map[string]string{"a": `["*"]`}, entitlement{}},
		{"two live pods on one IP get nothing", []podModel{{"a", "p", "r01", ip}, {"a", "q", "r01", ip}}, map[string]string{"a": `["*"]`}, entitlement{}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			m := newModel(true)
			for _, p := range tc.pods {
				m.pods[p.namespace+"/"+p.name] = p
			}
			m.policies = tc.policies
			if got := m.entitled(ip); got != tc.want {
				t.Fatalf("entitled = %+v, want %+v", got, tc.want)
			}
		})
	}
}

func TestGlobMatch(t *testing.T) {
	tests := []struct {
		pattern, s string
		want       bool
	}{
		{"abc", "abc", true},
		{"abc", "abcd", false},
		{"a*", "a/b:c", true},
		{"*c", "abc", true},
		{"a*c*e", "abcde", true},
		{"a*c*e", "abcdf", false},
		{"a*a", "a", false},
	}
	for _, tc := range tests {
		if got := globMatch(tc.pattern, tc.s); got != tc.want {
			t.Errorf("globMatch(%q, %q) = %v, want %v", tc.pattern, tc.s, got, tc.want)
		}
	}
}

func TestSettled(t *testing.T) {
	start := usage{goroutines: 50, rssKiB: 40000, fds: 17}
	if ok, why := settled(start, usage{goroutines: 55, rssKiB: 48000, fds: 17}); !ok {
		t.Fatalf("within limits judged unsettled: %v", why)
	}
	for _, end := range []usage{{goroutines: 56, rssKiB: 40000, fds: 17}, {goroutines: 50, rssKiB: 48001, fds: 17}, {goroutines: 50, rssKiB: 40000, fds: 18}} {
		if ok, _ := settled(start, end); ok {
			t.Errorf("%+v judged settled against %+v", end, start)
		}
	}
}

func TestJudgeTimeoutOnKernelDropsIsTheNetworks(t *testing.T) {
	j := newTestJudge()
	j.set(ipA, at(0), at(100*time.Millisecond), entitlement{role: roleY, session: "ns.b"})
	j.addDrops(at(time.Second), 10)
	j.addDrops(at(5*time.Second), 10)
	j.addDrops(at(9*time.Second), 12)
	timeout := func(s time.Duration) wire.Result {
		return wire.Result{Kind: wire.KindList, Start: at(s).UnixNano(), End: at(s + 3*time.Second).UnixNano(), Err: wire.ErrTimeout}
	}
	j.record(ipA, "ns/pod", timeout(1500*time.Millisecond)) // no drops between 1 s and 5 s
	j.record(ipA, "ns/pod", timeout(5500*time.Millisecond)) // 2 drops between 5 s and 9 s
	j.finish()
	if j.t.unexplainedByKind["list:timeout"] != 1 || j.t.netDrops["list:timeout"] != 1 {
		t.Fatalf("unexplained %v, network %v: want the timeout without drops unexplained and the one with drops the network's", j.t.unexplainedByKind, j.t.netDrops)
	}
}

func TestInvariantBreaksCountEveryKind(t *testing.T) {
	clean := &flavourReport{t: tally{requests: map[string]int{"creds": 1}}}
	if got := invariantBreaks(clean); len(got) != 0 {
		t.Fatalf("a clean run breaks %v", got)
	}
	for name, spoil := range map[string]func(*tally){
		"wrong":  func(t *tally) { t.wrong = []string{"x"} },
		"stale":  func(t *tally) { t.stale = []string{"x"} },
		"leak":   func(t *tally) { t.leaks = []string{"x"} },
		"served": func(t *tally) { t.forbiddenServed = []string{"x"} },
	} {
		r := &flavourReport{t: tally{requests: map[string]int{"creds": 1}}}
		spoil(&r.t)
		if got := invariantBreaks(r); len(got) != 1 {
			t.Errorf("%s: breaks %v, want exactly one", name, got)
		}
	}
}
