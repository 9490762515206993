package endpoint

import (
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"
)

// answer is what the test handler writes, so a response proves it came from
// the handler the Endpoint was built with.
const answer = "fake endpoint answer"

// serveBound is how long a test waits for Serve to return after Close.
const serveBound = 5 * time.Second

func handler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, answer) })
}

// get asks url with c and returns the body.
func get(c *http.Client, url string) (string, error) {
	resp, err := c.Get(url)
	if err != nil {
		return "", err
	}
	defer func() { _ = resp.Body.Close() }()
	b, err := io.ReadAll(resp.Body)
	return string(b), err
}

// listen is a loopback listener closed at the end of the test.
func listen(t *testing.T) net.Listener {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listening on loopback: %v", err)
	}
	t.Cleanup(func() { _ = l.Close() })
	return l
}

// wantServeClosed waits up to serveBound for one Serve to return and checks
// it returned http.ErrServerClosed.
func wantServeClosed(t *testing.T, served <-chan error) {
	t.Helper()
	select {
	case err := <-served:
		if !errors.Is(err, http.ErrServerClosed) {
			t.Errorf("Serve returned %v, want http.ErrServerClosed", err)
		}
	case <-time.After(serveBound):
		t.Fatalf("Serve still serving %v after Close; nothing would ever stop it", serveBound)
	}
}

// started is an Endpoint serving, where to reach it, and, for Serve, what
// Serve returned.
type started struct {
	e      *Endpoint
	url    string
	client *http.Client
	served <-chan error
}

func TestEndpointServesUntilClosed(t *testing.T) {
	tests := []struct {
		name   string
		start  func(t *testing.T) started
		scheme string
	}{
		{
			name: "Start serves plain HTTP on loopback",
			start: func(*testing.T) started {
				e := Start(handler())
				return started{e: e, url: e.URL(), client: e.Client()}
			},
			scheme: "http://127.0.0.1:",
		},
		{
			name: "StartTLS serves HTTPS that Client trusts",
			start: func(*testing.T) started {
				e := StartTLS(handler())
				return started{e: e, url: e.URL(), client: e.Client()}
			},
			scheme: "https://127.0.0.1:",
		},
		{
			name: "Serve answers on the given listener and returns ErrServerClosed after Close",
			start: func(t *testing.T) started {
				e, l := New(handler()), listen(t)
				served := make(chan error, 1)
				go func() { served <- e.Serve(l) }()
				return started{e: e, url: "http://" + l.Addr().String(), client: http.DefaultClient, served: served}
			},
			scheme: "http://127.0.0.1:",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := tt.start(t)
			t.Cleanup(s.e.Close)
			if !strings.HasPrefix(s.url, tt.scheme) {
				t.Fatalf("URL = %q, want prefix %q", s.url, tt.scheme)
			}
			if body, err := get(s.client, s.url); err != nil || body != answer {
				t.Fatalf("GET %s = %q, %v; want %q", s.url, body, err, answer)
			}
			s.e.Close()
			s.e.Close() // idempotent: must neither panic nor block
			if s.served != nil {
				wantServeClosed(t, s.served)
			}
			if _, err := get(s.client, s.url); err == nil {
				t.Errorf("GET %s after Close succeeded; the server is still up", s.url)
			}
		})
	}
}

func TestStartTLSIsNotTrustedByDefaultClient(t *testing.T) {
	e := StartTLS(handler())
	t.Cleanup(e.Close)
	if _, err := get(http.DefaultClient, e.URL()); err == nil {
		t.Fatal("http.DefaultClient trusted the test certificate; Client() would prove nothing")
	}
}

func TestURLAndClientBeforeStart(t *testing.T) {
	e := New(handler())
	if got := e.URL(); got != "" {
		t.Errorf("URL of an Endpoint that never started = %q, want empty", got)
	}
	if got := e.Client(); got != http.DefaultClient {
		t.Errorf("Client of an Endpoint that never started = %p, want http.DefaultClient", got)
	}
	e.Close()
	e.Close()
}

func TestURLStaysAfterClose(t *testing.T) {
	e := Start(handler())
	url := e.URL()
	e.Close()
	if got := e.URL(); got != url {
		t.Errorf("URL after Close = %q, want %q (where the fake was)", got, url)
	}
}

func TestServeAfterCloseRefusesAndClosesListener(t *testing.T) {
	e, l := New(handler()), listen(t)
	e.Close()
	served := make(chan error, 1)
	go func() { served <- e.Serve(l) }()
	wantServeClosed(t, served)
	if _, err := l.Accept(); !errors.Is(err, net.ErrClosed) {
		t.Errorf("listener after a refused Serve: Accept = %v, want net.ErrClosed", err)
	}
}

func TestCloseStopsEveryServeServer(t *testing.T) {
	const servers = 3
	e := New(handler())
	served := make(chan error, servers)
	urls := make([]string, 0, servers)
	for range servers {
		l := listen(t)
		urls = append(urls, "http://"+l.Addr().String())
		go func() { served <- e.Serve(l) }()
	}
	for _, u := range urls {
		if body, err := get(http.DefaultClient, u); err != nil || body != answer {
			t.Fatalf("GET %s = %q, %v; want %q", u, body, err, answer)
		}
	}
	e.Close()
	for range servers {
		wantServeClosed(t, served)
	}
}

// TestConcurrentUseIsRaceFree is for -race: Serve, URL, Client and Close
// from many goroutines, Close racing the Serves it must still stop.
func TestConcurrentUseIsRaceFree(t *testing.T) {
	const workers = 8
	e := Start(handler())
	var wg sync.WaitGroup
	served := make(chan error, workers)
	for range workers {
		l := listen(t)
		wg.Go(func() {
			_ = e.URL()
			_ = e.Client()
			served <- e.Serve(l)
		})
		wg.Go(e.Close)
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(serveBound):
		t.Fatalf("Serve or Close still running %v after Close", serveBound)
	}
	for range workers {
		wantServeClosed(t, served)
	}
}
