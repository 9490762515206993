package faults

import (
	"context"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	clocktesting "k8s.io/utils/clock/testing"
)

// decisions draws n decisions and returns their faults.
func decisions(in *Injector, n int) []Fault {
	out := make([]Fault, n)
	for i := range out {
		out[i], _ = in.decide()
	}
	return out
}

// tally counts each fault in fs.
func tally(fs []Fault) map[Fault]int {
	m := map[Fault]int{}
	for _, f := range fs {
		m[f]++
	}
	return m
}

func TestKnobsDecideTheirFaults(t *testing.T) {
	tests := []struct {
		name string
		turn func(*Injector)
		want []Fault
	}{
		{"no knob lets every request through", func(*Injector) {}, []Fault{None, None, None}},
		{"FailNext fails exactly the next n", func(in *Injector) { in.FailNext(2) }, []Fault{Fail, Fail, None}},
		{"ThrottleNext throttles exactly the next n", func(in *Injector) { in.ThrottleNext(2) }, []Fault{Throttle, Throttle, None}},
		{"failures come before throttles", func(in *Injector) { in.ThrottleNext(1); in.FailNext(1) }, []Fault{Fail, Throttle, None}},
		{"FailNext(0) cancels pending failures", func(in *Injector) { in.FailNext(5); in.FailNext(0) }, []Fault{None}},
		{"100 percent failure fails every request", func(in *Injector) { in.SetFailurePercent(100) }, []Fault{Fail, Fail, Fail}},
		{"a percent above 100 counts as 100", func(in *Injector) { in.SetThrottlePercent(250) }, []Fault{Throttle, Throttle}},
		{"a negative percent counts as 0", func(in *Injector) { in.SetFailurePercent(-3) }, []Fault{None, None}},
		{"pending failures come before a throttle share", func(in *Injector) { in.SetThrottlePercent(100); in.FailNext(1) }, []Fault{Fail, Throttle}},
		{"a failure share comes before pending throttles", func(in *Injector) { in.ThrottleNext(1); in.SetFailurePercent(100) }, []Fault{Fail, Fail}},
		{"an outage drops every request", func(in *Injector) { in.SetOutage(true) }, []Fault{Outage, Outage}},
		{"an outage wins over failures", func(in *Injector) { in.SetOutage(true); in.FailNext(1); in.SetFailurePercent(100) }, []Fault{Outage, Outage}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := New(Options{})
			tt.turn(in)
			got := decisions(in, len(tt.want))
			for i := range got {
				if got[i] != tt.want[i] {
					t.Fatalf("decisions %v, want %v", got, tt.want)
				}
			}
		})
	}
}

func TestOutageWindowStartsAndEndsWithoutConsumingOtherKnobs(t *testing.T) {
	in := New(Options{})
	in.FailNext(1)
	in.SetOutage(true)
	if got := decisions(in, 3); tally(got)[Outage] != 3 {
		t.Fatalf("during the outage: %v", got)
	}
	in.SetOutage(false)
	if got := decisions(in, 2); got[0] != Fail || got[1] != None {
		t.Fatalf("after the outage the pending failure comes first: %v", got)
	}
	if c := in.Counts(); c != (Counts{Dropped: 3, Failed: 1}) {
		t.Fatalf("counts %+v", c)
	}
}

func TestSharesAreExactOverEveryHundredRequests(t *testing.T) {
	for _, p := range []int{1, 7, 30, 50, 99} {
		in := New(Options{Seed: 42})
		in.SetFailurePercent(p)
		got := decisions(in, 10*deckSize)
		for block := 0; block < 10; block++ {
			if n := tally(got[block*deckSize : (block+1)*deckSize])[Fail]; n != p {
				t.Fatalf("%d%%: block %d failed %d of %d", p, block, n, deckSize)
			}
		}
		if c := in.Counts(); c.Failed != 10*p {
			t.Fatalf("%d%%: counted %d failures", p, c.Failed)
		}
	}
}

func TestThrottleShareAppliesToTheRequestsNotFailed(t *testing.T) {
	in := New(Options{Seed: 7})
	in.SetFailurePercent(50)
	in.SetThrottlePercent(50)
	got := tally(decisions(in, 1000))
	if got[Fail] != 500 || got[Throttle] != 250 || got[None] != 250 {
		t.Fatalf("tally %v, want 500 fail, 250 throttle, 250 none", got)
	}
}

func TestSameSeedGivesSameDecisionsAndNoLockStep(t *testing.T) {
	run := func(seed uint64) []Fault {
		in := New(Options{Seed: seed})
		in.SetFailurePercent(50)
		return decisions(in, deckSize)
	}
	a, b, c := run(1), run(1), run(2)
	same := func(x, y []Fault) bool {
		for i := range x {
			if x[i] != y[i] {
				return false
			}
		}
		return true
	}
	if !same(a, b) {
		t.Fatal("the same seed gave different decisions")
	}
	if same(a, c) {
		t.Fatal("different seeds gave the same decisions")
	}
	// A client making two calls per operation must not always fail its second.
	var odd int
	for i := 1; i < len(a); i += 2 {
		if a[i] == Fail {
			odd++
		}
	}
	if odd == 0 || odd == deckSize/2 {
		t.Fatalf("50%% failures fell in lock-step on odd requests: %d of %d", odd, deckSize/2)
	}
}

func TestSettingAShareStartsAFreshDeck(t *testing.T) {
	in := New(Options{Seed: 3})
	in.SetFailurePercent(30)
	decisions(in, 40) // part of a deck
	in.SetFailurePercent(30)
	if n := tally(decisions(in, deckSize))[Fail]; n != 30 {
		t.Fatalf("the hundred after re-setting failed %d, want 30", n)
	}
}

func TestConcurrentRequestsTakeEachFaultOnce(t *testing.T) {
	in := New(Options{})
	in.FailNext(50)
	in.ThrottleNext(20)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !in.Intercept(w, r) {
			w.WriteHeader(http.StatusOK)
		}
	}))
	t.Cleanup(srv.Close)
	var mu sync.Mutex
	codes := map[int]int{}
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 25 {
				resp, err := srv.Client().Get(srv.URL)
				if err != nil {
					t.Error(err)
					return
				}
				_ = resp.Body.Close()
				mu.Lock()
				codes[resp.StatusCode]++
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if codes[500] != 50 || codes[429] != 20 || codes[200] != 130 {
		t.Fatalf("status counts %v, want 50×500, 20×429, 130×200", codes)
	}
}

func TestInterceptWritesTheFakesAnswers(t *testing.T) {
	in := New(Options{
		FailAnswer: func(w http.ResponseWriter) {
			w.WriteHeader(http.StatusServiceUnavailable)
			_, _ = w.Write([]byte("fail body"))
		},
		ThrottleAnswer: func(w http.ResponseWriter) {
			w.WriteHeader(http.StatusBadRequest)
			_, _ = w.Write([]byte("throttle body"))
		},
	})
	tests := []struct {
		name     string
		turn     func()
		finished bool
		code     int
		body     string
	}{
		{"a failure writes the fake's failure answer", func() { in.FailNext(1) }, true, 503, "fail body"},
		{"a throttle writes the fake's throttling answer", func() { in.ThrottleNext(1) }, true, 400, "throttle body"},
		{"no fault leaves the answer to the fake", func() {}, false, 200, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.turn()
			w := httptest.NewRecorder()
			if got := in.Intercept(w, httptest.NewRequest(http.MethodPost, "/", nil)); got != tt.finished {
				t.Fatalf("Intercept = %v", got)
			}
			if w.Code != tt.code || w.Body.String() != tt.body {
				t.Fatalf("answer %d %q", w.Code, w.Body.String())
			}
		})
	}
}

func TestOutageDropsTheConnectionUntilItEnds(t *testing.T) {
	in := New(Options{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !in.Intercept(w, r) {
			w.WriteHeader(http.StatusOK)
		}
	}))
	t.Cleanup(srv.Close)
	get := func() (int, error) {
		resp, err := srv.Client().Get(srv.URL)
		if err != nil {
			return 0, err
		}
		_ = resp.Body.Close()
		return resp.StatusCode, nil
	}
	in.SetOutage(true)
	if code, err := get(); err == nil {
		t.Fatalf("during the outage the server answered %d", code)
	}
	in.SetOutage(false)
	if code, err := get(); err != nil || code != 200 {
		t.Fatalf("after the outage: %d %v", code, err)
	}
}

func TestLatencyIsAppliedAndCancelledWithTheRequest(t *testing.T) {
	const latency = 2 * time.Second
	clk := clocktesting.NewFakeClock(time.Unix(0, 0))
	in := New(Options{Clock: clk})
	in.SetLatency(latency)

	// intercept runs Intercept in the background and reports its result and the answer's status.
	intercept := func(ctx context.Context) (<-chan bool, *httptest.ResponseRecorder) {
		w := httptest.NewRecorder()
		r := httptest.NewRequest(http.MethodGet, "/", nil).WithContext(ctx)
		done := make(chan bool, 1)
		go func() { done <- in.Intercept(w, r) }()
		return done, w
	}
	waitForTimer := func() {
		deadline := time.Now().Add(5 * time.Second)
		for !clk.HasWaiters() {
			if time.Now().After(deadline) {
				t.Fatal("Intercept never started its latency timer")
			}
			time.Sleep(time.Millisecond)
		}
	}

	t.Run("the answer waits for the latency", func(t *testing.T) {
		in.FailNext(1)
		done, w := intercept(context.Background())
		waitForTimer()
		clk.Step(latency - time.Millisecond)
		select {
		case <-done:
			t.Fatal("answered before the latency passed")
		case <-time.After(20 * time.Millisecond):
		}
		clk.Step(time.Millisecond)
		select {
		case finished := <-done:
			if !finished || w.Code != http.StatusInternalServerError {
				t.Fatalf("finished %v, code %d", finished, w.Code)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("no answer after the latency passed")
		}
	})
	t.Run("a cancelled request ends the wait unanswered", func(t *testing.T) {
		in.FailNext(1)
		ctx, cancel := context.WithCancel(context.Background())
		done, w := intercept(ctx)
		waitForTimer()
		cancel()
		select {
		case finished := <-done:
			if !finished || w.Body.Len() != 0 || w.Code != http.StatusOK || w.Flushed {
				t.Fatalf("finished %v, wrote %d %q", finished, w.Code, w.Body.String())
			}
		case <-time.After(5 * time.Second):
			t.Fatal("the cancelled request kept waiting")
		}
		if clk.HasWaiters() {
			t.Fatal("the cancelled wait left its timer running")
		}
	})
}

func TestFaultNames(t *testing.T) {
	for f, want := range map[Fault]string{None: "none", Outage: "outage", Fail: "fail", Throttle: "throttle", Fault(9): "unknown"} {
		if f.String() != want {
			t.Errorf("%d.String() = %q, want %q", int(f), f.String(), want)
		}
	}
}
