package fastlane

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// connCtxKey carries, in a request's context, what ConnContext saw.
type connCtxKey struct{}

// lane is a running lane on loopback and what its hooks recorded.
type lane struct {
	srv   *Server
	addr  string
	open  atomic.Int64 // ConnState's count of open connections
	laned atomic.Int64 // requests the lane answered
	netht atomic.Int64 // requests net/http answered
	hold  chan struct{}
	held  chan struct{}
}

// startLane serves a handler that reports what it saw. The lane takes
// GET /lane/... and PUT /lane/put; /slow waits on hold.
func startLane(t *testing.T, configure func(*http.Server)) *lane {
	t.Helper()
	l := &lane{hold: make(chan struct{}), held: make(chan struct{}, 8)}
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if _, ok := w.(*response); ok {
			l.laned.Add(1)
		} else {
			l.netht.Add(1)
		}
		if r.URL.Path == "/lane/slow" {
			l.held <- struct{}{}
			<-l.hold
		}
		c, _ := r.Context().Value(connCtxKey{}).(net.Conn)
		_, isSock := c.(syscall.Conn)
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Header().Set("X-Seen", r.Header.Get("X-Aws-Ec2-Metadata-Token"))
		fmt.Fprintf(w, "%s %s host=%s remote=%v conn=%v sock=%v ua=%q", r.Method, r.RequestURI, r.Host,
			r.RemoteAddr != "", c != nil && c.RemoteAddr().String() == r.RemoteAddr, isSock, r.UserAgent())
	})
	hs := &http.Server{
		Handler:           h,
		ReadHeaderTimeout: time.Second,
		IdleTimeout:       5 * time.Second,
		WriteTimeout:      5 * time.Second,
		MaxHeaderBytes:    16 << 10,
		ConnContext: func(ctx context.Context, c net.Conn) context.Context {
			return context.WithValue(ctx, connCtxKey{}, c)
		},
		ConnState: func(_ net.Conn, st http.ConnState) {
			switch st {
			case http.StateNew:
				l.open.Add(1)
			case http.StateClosed, http.StateHijacked:
				l.open.Add(-1)
			}
		},
	}
	if configure != nil {
		configure(hs)
	}
	l.srv = &Server{HTTP: hs, Takes: func(method string, target []byte) bool {
		return bytes.HasPrefix(target, []byte("/lane/"))
	}}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l.addr = ln.Addr().String()
	done := make(chan error, 1)
	go func() { done <- l.srv.Serve(ln) }()
	t.Cleanup(func() {
		_ = l.srv.Close()
		if err := <-done; err != http.ErrServerClosed {
			t.Errorf("Serve returned %v after Close, want http.ErrServerClosed", err)
		}
	})
	return l
}

// client is one raw keep-alive connection to the lane.
type client struct {
	t  *testing.T
	c  net.Conn
	br *bufio.Reader
}

func (l *lane) dial(t *testing.T) *client {
	t.Helper()
	c, err := net.Dial("tcp", l.addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	return &client{t: t, c: c, br: bufio.NewReader(c)}
}

func (cl *client) send(raw string) {
	cl.t.Helper()
	if _, err := io.WriteString(cl.c, raw); err != nil {
		cl.t.Fatal(err)
	}
}

func (cl *client) read() (*http.Response, string) {
	cl.t.Helper()
	resp, err := http.ReadResponse(cl.br, nil)
	if err != nil {
		cl.t.Fatalf("reading a response: %v", err)
	}
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		cl.t.Fatal(err)
	}
	return resp, string(b)
}

func get(path, extra string) string {
	return "GET " + path + " HTTP/1.1\r\nHost: 169.254.169.254\r\nUser-Agent: sdk/1\r\n" + extra + "\r\n"
}

// TestLaneAnswersKeepAliveRequests: requests of the lane's shape are
// answered by the lane, one after another on one connection, with what
// net/http would have given the handler.
func TestLaneAnswersKeepAliveRequests(t *testing.T) {
	l := startLane(t, nil)
	cl := l.dial(t)
	for i := range 3 {
		cl.send(get(fmt.Sprintf("/lane/r%d", i), "x-aws-ec2-metadata-token: tok\r\n"))
		resp, body := cl.read()
		want := fmt.Sprintf(`GET /lane/r%d host=169.254.169.254 remote=true conn=true sock=true ua="sdk/1"`, i)
		if resp.StatusCode != 200 || body != want || resp.Header.Get("X-Seen") != "tok" || resp.Close {
			t.Fatalf("request %d: %d close=%v %q %q, want 200 keep-alive %q", i, resp.StatusCode, resp.Close, body, resp.Header, want)
		}
		if resp.ContentLength != int64(len(want)) || resp.Header.Get("Date") == "" {
			t.Fatalf("request %d: Content-Length %d Date %q", i, resp.ContentLength, resp.Header.Get("Date"))
		}
	}
	if l.laned.Load() != 3 || l.netht.Load() != 0 {
		t.Fatalf("lane answered %d, net/http %d; want 3 and 0", l.laned.Load(), l.netht.Load())
	}
}

// TestLaneAnswersLikeNetHTTP: the same handler's answer, through the lane
// and through net/http, differs only in its Date.
func TestLaneAnswersLikeNetHTTP(t *testing.T) {
	var viaLane atomic.Int64
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if _, ok := w.(*response); ok {
			viaLane.Add(1)
		}
		switch r.URL.Path {
		case "/lane/text":
			w.Header().Set("Content-Type", "text/plain")
			w.Header().Set("Content-Length", "5")
			w.Header().Add("X-Multi", "a")
			w.Header().Add("X-Multi", "b")
			w.Header().Set("X-Injected", "v\r\nSet-Cookie: evil")
			_, _ = io.WriteString(w, "hello")
		case "/lane/sniffed":
			_, _ = io.WriteString(w, "<html>hi</html>")
		case "/lane/status":
			w.WriteHeader(http.StatusUnauthorized)
		case "/lane/nocontent":
			w.WriteHeader(http.StatusNoContent)
		case "/lane/twice":
			w.WriteHeader(http.StatusNotFound)
			w.WriteHeader(http.StatusOK)
			_, _ = io.WriteString(w, "x")
		case "/lane/odd":
			w.WriteHeader(599)
		}
	})
	lanes := []*lane{}
	for range 2 {
		lanes = append(lanes, startLane(t, func(s *http.Server) { s.Handler = handler }))
	}
	// The second serves through net/http only.
	lanes[1].srv.Takes = func(string, []byte) bool { return false }
	paths := []string{"/lane/text", "/lane/sniffed", "/lane/status", "/lane/nocontent", "/lane/twice", "/lane/odd"}
	for _, path := range paths {
		var got [2]string
		for i, l := range lanes {
			cl := l.dial(t)
			cl.send(get(path, ""))
			raw, err := readRaw(cl.br)
			if err != nil {
				t.Fatalf("%s: %v", path, err)
			}
			got[i] = raw
		}
		if got[0] != got[1] {
			t.Errorf("%s through the lane:\n%s\nthrough net/http:\n%s", path, got[0], got[1])
		}
	}
	if n := viaLane.Load(); n != int64(len(paths)) {
		t.Fatalf("the lane answered %d requests, want %d (the first server's)", n, len(paths))
	}
}

// readRaw reads one response as text, its Date field blanked.
func readRaw(br *bufio.Reader) (string, error) {
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		return "", err
	}
	resp.Header.Set("Date", "-")
	var b bytes.Buffer
	if err := resp.Write(&b); err != nil {
		return "", err
	}
	return b.String(), nil
}

// TestLaneHandsOffWithTheBytesRead: a request the lane does not take, or
// cannot read as its grammar, goes to net/http on the same connection, which
// then serves the connection's later requests; the handler sees the same
// connection context.
func TestLaneHandsOffWithTheBytesRead(t *testing.T) {
	l := startLane(t, nil)
	cl := l.dial(t)
	cl.send(get("/lane/first", ""))
	if resp, _ := cl.read(); resp.StatusCode != 200 {
		t.Fatal(resp.Status)
	}
	// Not taken (a path), then within the grammar but after the hand-off.
	cl.send(get("/other", ""))
	_, body := cl.read()
	if want := `GET /other host=169.254.169.254 remote=true conn=true sock=true ua="sdk/1"`; body != want {
		t.Fatalf("net/http's handler saw %q, want %q", body, want)
	}
	cl.send(get("/lane/after", ""))
	if resp, body := cl.read(); resp.StatusCode != 200 || !strings.HasPrefix(body, "GET /lane/after") {
		t.Fatal(resp.Status, body)
	}
	if l.laned.Load() != 1 || l.netht.Load() != 2 {
		t.Fatalf("lane answered %d, net/http %d; want 1 and 2", l.laned.Load(), l.netht.Load())
	}
}

// TestLaneLeavesRefusalsToNetHTTP: what the lane cannot read gets net/http's
// own answer.
func TestLaneLeavesRefusalsToNetHTTP(t *testing.T) {
	l := startLane(t, nil)
	cases := []struct {
		name, raw string
		status    int
	}{
		{"no Host", "GET /lane/x HTTP/1.1\r\n\r\n", http.StatusBadRequest},
		{"two Hosts", "GET /lane/x HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", http.StatusBadRequest},
		{"a header over the lane's buffer", get("/lane/x", "X-Big: "+strings.Repeat("a", 6000)+"\r\n"), http.StatusOK},
		{"headers over MaxHeaderBytes", get("/lane/x", "X-Big: "+strings.Repeat("a", 30000)+"\r\n"), http.StatusRequestHeaderFieldsTooLarge},
		{"chunked body", "PUT /lane/put HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", http.StatusOK},
		{"a body", "PUT /lane/put HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\n\r\nab", http.StatusOK},
		{"query", get("/lane/x?a=b", ""), http.StatusOK},
		{"bare LF", "GET /lane/x HTTP/1.1\nHost: h\n\n", http.StatusOK},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before := l.laned.Load()
			cl := l.dial(t)
			cl.send(tc.raw)
			resp, _ := cl.read()
			if resp.StatusCode != tc.status {
				t.Fatalf("status %d, want %d", resp.StatusCode, tc.status)
			}
			if l.laned.Load() != before {
				t.Fatal("the lane answered it")
			}
		})
	}
}

// TestLanePipelinedAndSplitRequests: two requests in one write, and one
// request in pieces, are each answered once and in order.
func TestLanePipelinedAndSplitRequests(t *testing.T) {
	l := startLane(t, nil)
	cl := l.dial(t)
	cl.send(get("/lane/a", "") + get("/lane/b", ""))
	for _, want := range []string{"GET /lane/a", "GET /lane/b"} {
		if _, body := cl.read(); !strings.HasPrefix(body, want) {
			t.Fatalf("got %q, want %s", body, want)
		}
	}
	raw := get("/lane/c", "")
	for i := 0; i < len(raw); i += 7 {
		cl.send(raw[i:min(i+7, len(raw))])
		time.Sleep(time.Millisecond)
	}
	if _, body := cl.read(); !strings.HasPrefix(body, "GET /lane/c") {
		t.Fatalf("got %q", body)
	}
	if l.laned.Load() != 3 {
		t.Fatalf("lane answered %d, want 3", l.laned.Load())
	}
}

// TestLaneTimesOutSlowAndIdleClients: a request that does not arrive whole
// within ReadHeaderTimeout, and a connection idle past IdleTimeout, are
// closed without an answer.
func TestLaneTimesOutSlowAndIdleClients(t *testing.T) {
	l := startLane(t, func(s *http.Server) {
		s.ReadHeaderTimeout = 200 * time.Millisecond
		s.IdleTimeout = 300 * time.Millisecond
	})
	slow := l.dial(t)
	slow.send("GET /lane/x HTTP/1.1\r\nHost: h\r\n")
	start := time.Now()
	if _, err := slow.br.ReadByte(); err == nil {
		t.Fatal("a half request got an answer")
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("the half request was closed after %v, want about 200ms", d)
	}
	idle := l.dial(t)
	idle.send(get("/lane/x", ""))
	idle.read()
	start = time.Now()
	if _, err := idle.br.ReadByte(); err == nil {
		t.Fatal("an idle connection got bytes")
	}
	if d := time.Since(start); d < 250*time.Millisecond || d > 2*time.Second {
		t.Fatalf("the idle connection was closed after %v, want about 300ms", d)
	}
}

// TestLaneDrains: with keep-alives off, idle connections close, a request
// in progress is answered with Connection: close, and Shutdown waits for it.
func TestLaneDrains(t *testing.T) {
	l := startLane(t, nil)
	idle := l.dial(t)
	idle.send(get("/lane/x", ""))
	idle.read()
	busy := l.dial(t)
	busy.send(get("/lane/slow", ""))
	<-l.held
	handed := l.dial(t)
	handed.send(get("/other", ""))
	handed.read()
	if n := l.open.Load(); n != 3 {
		t.Fatalf("ConnState counts %d open connections, want 3", n)
	}

	shut := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		shut <- l.srv.Shutdown(ctx)
	}()
	if _, err := idle.br.ReadByte(); err == nil {
		t.Fatal("the idle connection stayed open")
	}
	if _, err := handed.br.ReadByte(); err == nil {
		t.Fatal("net/http's idle connection stayed open")
	}
	select {
	case err := <-shut:
		t.Fatalf("Shutdown returned (%v) while a request was in progress", err)
	case <-time.After(100 * time.Millisecond):
	}
	close(l.hold)
	resp, body := busy.read()
	if resp.StatusCode != 200 || !resp.Close || !strings.HasPrefix(body, "GET /lane/slow") {
		t.Fatalf("the request in progress got %d close=%v %q", resp.StatusCode, resp.Close, body)
	}
	if err := <-shut; err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	if n := l.open.Load(); n != 0 {
		t.Fatalf("ConnState counts %d open connections after Shutdown, want 0", n)
	}
}

// TestLaneCountsEachConnectionOnce: however connections end (closed by the
// client, handed off, refused), the ConnState count returns to zero and
// never goes below it.
func TestLaneCountsEachConnectionOnce(t *testing.T) {
	l := startLane(t, nil)
	var wg sync.WaitGroup
	for i := range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cl := l.dial(t)
			switch i % 4 {
			case 0:
				cl.send(get("/lane/x", ""))
			case 1:
				cl.send(get("/other", ""))
			case 2:
				cl.send(get("/lane/x", "") + get("/other", "") + get("/lane/y", ""))
				cl.read()
				cl.read()
			case 3:
				cl.send("GET /lane/x HTTP/1.1\r\n\r\n")
			}
			cl.read()
			_ = cl.c.Close()
		}()
	}
	wg.Wait()
	deadline := time.Now().Add(5 * time.Second)
	for l.open.Load() != 0 && time.Now().Before(deadline) {
		if l.open.Load() < 0 {
			t.Fatalf("ConnState count went to %d", l.open.Load())
		}
		time.Sleep(5 * time.Millisecond)
	}
	if n := l.open.Load(); n != 0 {
		t.Fatalf("ConnState counts %d open connections after every client closed, want 0", n)
	}
}
