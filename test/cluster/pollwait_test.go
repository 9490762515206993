//go:build e2ecluster

package cluster

import (
	"strings"
	"testing"
)

// TestUnansweredWait: the upgrade's gap is the time the poller waited while
// asking, not the time between its answers.
func TestUnansweredWait(t *testing.T) {
	line := func(msg string) string { return "2026-12-06T19:21:49.4Z stdout F " + msg }
	poll := func(ms, put, get, code, body string) string {
		return strings.Join([]string{
			line("T put 0.0003 0.0009 " + put + " 200"), line("T get 0.0003 0.0008 " + get),
			line(ms + " " + code + " " + body),
		}, "\n")
	}
	cases := []struct {
		name          string
		log           string
		from          int64
		wantGap, wEnd int64
	}{
		{"answered polls: their requests' time, however far apart", strings.Join([]string{
			poll("1000", "0.002", "0.003", "200", allowedRole),
			poll("1500", "0.010", "0.020", "200", allowedRole), // 470 ms after the last: a stall, not a wait
			poll("1600", "0.001", "0.001", "200", allowedRole),
		}, "\n"), 0, 30, 1500},
		{"refused polls: from the first one's start to the next answer", strings.Join([]string{
			poll("1000", "0.002", "0.003", "200", allowedRole),
			poll("1100", "0.000", "0.000", "000", ""),
			poll("1200", "0.000", "0.000", "000", ""),
			poll("1305", "0.002", "0.003", "200", allowedRole),
		}, "\n"), 0, 205, 1305},
		{"an answer with another role is no answer", strings.Join([]string{
			poll("1000", "0.002", "0.003", "200", "node-role"),
			poll("1120", "0.002", "0.008", "200", allowedRole),
		}, "\n"), 0, 125, 1120},
		{"before from: not counted", strings.Join([]string{
			poll("1000", "0.400", "0.003", "200", allowedRole),
			poll("1600", "0.002", "0.003", "200", allowedRole),
		}, "\n"), 1500, 5, 1600},
	}
	for _, c := range cases {
		gap, end := unansweredWaitIn(c.log, c.from)
		if gap != c.wantGap || end != c.wEnd {
			t.Errorf("%s: gap %d ending at %d, want %d ending at %d", c.name, gap, end, c.wantGap, c.wEnd)
		}
	}
}
