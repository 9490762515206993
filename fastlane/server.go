// Package fastlane answers the plain requests a metadata server gets most
// (an SDK's token PUT and credential GETs on a keep-alive connection)
// without net/http's per-request allocations, and hands any connection that
// sends something else, with the bytes it sent, to a net/http server
// running the same handler.
//
// Why: a node agent's heap holds its informers' caches, so every byte a
// request allocates costs the collector a share of marking that heap; net/http
// allocates about 2.4 KB and starts a goroutine per request. The lane parses
// a strict subset of HTTP/1.1 (see parse) into a request and header map it
// reuses for the connection's life, and writes each answer with one write.
// The handler, and every check in it, is the same one net/http runs.
package fastlane

import (
	"context"
	"errors"
	"fmt"
	"log"
	"net"
	"net/http"
	"net/url"
	"runtime/debug"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// bufSize is a connection's read buffer: a request whose request line and
// header fields do not fit goes to net/http, whose MaxHeaderBytes applies.
const bufSize = 4 << 10

// maxResponseBytes bounds an answer the lane buffers; a handler writing
// more has its connection closed.
const maxResponseBytes = 64 << 10

// acceptBackoffMax caps the wait after a failed Accept (as net/http's).
const acceptBackoffMax = time.Second

// pollInterval is how often Shutdown looks whether the last connection closed.
const pollInterval = 10 * time.Millisecond

// Server is the lane in front of an http.Server.
type Server struct {
	// HTTP is the server that gets every connection the lane gives up. Its
	// Handler (read at the first Serve), ConnContext, ConnState, timeouts
	// and ErrorLog are the lane's too.
	HTTP *http.Server
	// Takes reports whether the lane answers a request of this method and
	// target itself; other requests move their connection to HTTP.
	Takes func(method string, target []byte) bool

	// once starts HTTP on the handoff listener.
	once sync.Once
	// handler is HTTP.Handler.
	handler http.Handler
	// handoff is the listener HTTP serves.
	handoff *handoffListener
	// hook is HTTP's ConnState hook as given, nil if none.
	hook func(net.Conn, http.ConnState)
	// baseCtx is every connection's context before ConnContext.
	baseCtx context.Context

	// mu guards listeners and conns.
	mu sync.Mutex
	// listeners are the listeners Serve accepts on.
	listeners map[net.Listener]struct{}
	// conns are the connections the lane serves.
	conns map[*conn]struct{}
	// keepAlivesOff answers with Connection: close and closes idle connections.
	keepAlivesOff atomic.Bool
	// shuttingDown is set by Shutdown and Close.
	shuttingDown atomic.Bool
}

// start wires HTTP to the handoff listener, once.
func (s *Server) start(addr net.Addr) {
	s.once.Do(func() {
		s.handler = s.HTTP.Handler
		if s.handler == nil {
			s.handler = http.DefaultServeMux
		}
		s.hook = s.HTTP.ConnState
		// A handed-off connection stays the lane's until net/http counted
		// it, so a count of open connections never dips between the two.
		s.HTTP.ConnState = func(c net.Conn, st http.ConnState) {
			if s.hook != nil {
				s.hook(c, st)
			}
			if rc, ok := c.(*replayConn); ok && st == http.StateNew {
				s.release(rc.lane, http.StateHijacked)
			}
		}
		s.baseCtx = context.WithValue(context.Background(), http.ServerContextKey, s.HTTP)
		s.handoff = newHandoffListener(addr)
		go func() {
			if err := s.HTTP.Serve(s.handoff); err != nil && !errors.Is(err, http.ErrServerClosed) && !errors.Is(err, net.ErrClosed) {
				s.logf("fastlane: net/http stopped serving handed-off connections: %v", err)
			}
		}()
	})
}

// Serve accepts connections on ln until it is closed. After Shutdown or
// Close it returns http.ErrServerClosed, as http.Server.Serve does.
func (s *Server) Serve(ln net.Listener) error {
	s.start(ln.Addr())
	s.mu.Lock()
	if s.shuttingDown.Load() {
		s.mu.Unlock()
		return http.ErrServerClosed
	}
	if s.listeners == nil {
		s.listeners = map[net.Listener]struct{}{}
	}
	s.listeners[ln] = struct{}{}
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.listeners, ln)
		s.mu.Unlock()
	}()
	var backoff time.Duration
	for {
		nc, err := ln.Accept()
		if err != nil {
			if s.shuttingDown.Load() {
				return http.ErrServerClosed
			}
			if errors.Is(err, net.ErrClosed) {
				return err
			}
			// Out of file descriptors and the like pass; wait and retry.
			backoff = min(max(2*backoff, 5*time.Millisecond), acceptBackoffMax)
			s.logf("fastlane: accept error: %v; retrying in %v", err, backoff)
			time.Sleep(backoff)
			continue
		}
		backoff = 0
		c := &conn{s: s, nc: nc}
		if !s.track(c) {
			_ = nc.Close()
			return http.ErrServerClosed
		}
		go c.serve()
	}
}

// SetKeepAlivesEnabled(false) answers every request after this with
// Connection: close and closes idle connections, as http.Server's does.
func (s *Server) SetKeepAlivesEnabled(v bool) {
	s.keepAlivesOff.Store(!v)
	s.HTTP.SetKeepAlivesEnabled(v)
	if !v {
		s.closeIdle()
	}
}

// Shutdown closes the listeners, closes idle connections, and waits until
// every connection (the lane's and net/http's) is closed or ctx ends.
func (s *Server) Shutdown(ctx context.Context) error {
	s.shuttingDown.Store(true)
	s.closeListeners()
	httpErr := make(chan error, 1)
	go func() { httpErr <- s.HTTP.Shutdown(ctx) }()
	tick := time.NewTicker(pollInterval)
	defer tick.Stop()
	for {
		s.closeIdle()
		if s.open() == 0 {
			return <-httpErr
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
		}
	}
}

// Close closes the listeners and every connection now.
func (s *Server) Close() error {
	s.shuttingDown.Store(true)
	s.closeListeners()
	s.mu.Lock()
	for c := range s.conns {
		_ = c.nc.Close()
	}
	s.mu.Unlock()
	return s.HTTP.Close()
}

func (s *Server) closeListeners() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for ln := range s.listeners {
		_ = ln.Close()
	}
}

// closeIdle closes the connections waiting for their next request.
func (s *Server) closeIdle() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for c := range s.conns {
		if c.state.CompareAndSwap(stateIdle, stateClosed) {
			_ = c.nc.Close()
		}
	}
}

// track records c; false once shutting down.
func (s *Server) track(c *conn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.shuttingDown.Load() {
		return false
	}
	if s.conns == nil {
		s.conns = map[*conn]struct{}{}
	}
	s.conns[c] = struct{}{}
	if s.hook != nil {
		s.hook(c.nc, http.StateNew)
	}
	return true
}

// release forgets c, telling the hook why.
func (s *Server) release(c *conn, st http.ConnState) {
	s.mu.Lock()
	_, ok := s.conns[c]
	delete(s.conns, c)
	s.mu.Unlock()
	if ok && s.hook != nil {
		s.hook(c.nc, st)
	}
}

// open is the number of connections the lane serves.
func (s *Server) open() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.conns)
}

func (s *Server) logf(format string, args ...any) {
	if s.HTTP.ErrorLog != nil {
		s.HTTP.ErrorLog.Printf(format, args...)
		return
	}
	log.Printf(format, args...)
}

// Connection states, for closeIdle.
const (
	// stateNew: before the first request (never closed as idle, as in net/http).
	stateNew int32 = iota
	// stateActive: reading or answering a request.
	stateActive
	// stateIdle: waiting for the next request.
	stateIdle
	// stateClosed: closed by closeIdle.
	stateClosed
)

// conn is one connection the lane serves.
type conn struct {
	// s is the lane.
	s *Server
	// nc is the socket.
	nc net.Conn
	// state is one of the state constants.
	state atomic.Int32

	// buf holds bytes read and not yet consumed, buf[:n].
	buf []byte
	n   int
	// req is the request being served, reused.
	req http.Request
	// tmpl is req's starting value: the connection's context and fields.
	tmpl *http.Request
	// w is the response being written, reused.
	w response
}

// serve answers requests until the connection closes or moves to net/http.
func (c *conn) serve() {
	s := c.s
	handedOff := false
	defer func() {
		if p := recover(); p != nil && p != http.ErrAbortHandler {
			s.logf("fastlane: panic serving %v: %v\n%s", c.nc.RemoteAddr(), p, debug.Stack())
		}
		if !handedOff {
			_ = c.nc.Close()
			s.release(c, http.StateClosed)
		}
	}()
	c.state.Store(stateNew)
	ctx, cancel := context.WithCancel(context.WithValue(s.baseCtx, http.LocalAddrContextKey, c.nc.LocalAddr()))
	defer cancel()
	if s.HTTP.ConnContext != nil {
		ctx = s.HTTP.ConnContext(ctx, c.nc)
	}
	c.tmpl = (&http.Request{
		Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
		Header:     make(http.Header, 8),
		URL:        &url.URL{},
		Body:       http.NoBody,
		RemoteAddr: c.nc.RemoteAddr().String(),
	}).WithContext(ctx)
	c.buf = make([]byte, bufSize)
	c.w = response{c: c, header: make(http.Header, 4)}

	var rq request
	for first := true; ; first = false {
		switch c.readRequest(&rq, first) {
		case needMore: // the connection ended or timed out
			return
		case handOff:
			handedOff = c.handOff()
			return
		}
		if !s.Takes(rq.method, c.buf[rq.targetStart:rq.targetEnd]) {
			handedOff = c.handOff()
			return
		}
		c.materialise(&rq)
		c.w.reset()
		s.handler.ServeHTTP(&c.w, &c.req)
		closing := s.keepAlivesOff.Load() || s.shuttingDown.Load() || c.w.header.Get("Connection") == "close"
		if !c.w.sent {
			if err := c.w.send(closing); err != nil {
				return
			}
		}
		if closing || c.w.broken {
			return
		}
		// Pipelined bytes stay for the next request.
		c.n = copy(c.buf, c.buf[rq.end:c.n])
	}
}

// readRequest reads until buf holds a whole request of the lane's grammar
// (parsed), something else (handOff), or the connection ended, timed out or
// was closed as idle (needMore). A half request is never handed on: it
// gets no second ReadHeaderTimeout from net/http.
func (c *conn) readRequest(rq *request, first bool) parseResult {
	s := c.s
	waiting := c.n == 0
	if waiting {
		timeout := s.HTTP.IdleTimeout
		if first || timeout <= 0 {
			timeout = s.HTTP.ReadHeaderTimeout
		}
		if !first {
			c.state.Store(stateIdle)
			if (s.keepAlivesOff.Load() || s.shuttingDown.Load()) && c.state.CompareAndSwap(stateIdle, stateClosed) {
				return needMore
			}
		}
		c.setReadDeadline(timeout)
	}
	headerDeadline := false
	for {
		if c.n > 0 {
			if res := parse(c.buf[:c.n], rq); res != needMore {
				return res
			}
			if c.n == len(c.buf) {
				return handOff
			}
			if !headerDeadline {
				// The rest of the request must come within ReadHeaderTimeout.
				c.setReadDeadline(s.HTTP.ReadHeaderTimeout)
				headerDeadline = true
			}
		}
		m, err := c.nc.Read(c.buf[c.n:])
		if m > 0 && waiting {
			waiting = false
			if !first && !c.state.CompareAndSwap(stateIdle, stateActive) {
				return needMore // closed as idle
			}
			c.state.Store(stateActive)
		}
		c.n += m
		if err != nil {
			return needMore
		}
	}
}

func (c *conn) setReadDeadline(d time.Duration) {
	var t time.Time
	if d > 0 {
		t = time.Now().Add(d)
	}
	_ = c.nc.SetReadDeadline(t)
}

// materialise fills c.req from rq: one string holds the request line and
// fields, and the target and values are its substrings.
func (c *conn) materialise(rq *request) {
	block := string(c.buf[:rq.end])
	h := c.tmpl.Header
	clear(h)
	c.req = *c.tmpl
	target := block[rq.targetStart:rq.targetEnd]
	c.req.Method = rq.method
	c.req.RequestURI = target
	*c.req.URL = url.URL{Path: target}
	for i, f := range rq.fields[:rq.nfields] {
		value := block[f.valueStart:f.valueEnd]
		if i == rq.host {
			c.req.Host = value
			continue
		}
		key := canonicalKey(c.buf[f.nameStart:f.nameEnd])
		h[key] = append(h[key], value)
	}
}

// handOff gives the connection, with what was read, to net/http.
func (c *conn) handOff() bool {
	// net/http sets its own deadlines per request.
	_ = c.nc.SetDeadline(time.Time{})
	return c.s.handoff.give(&replayConn{Conn: c.nc, unread: c.buf[:c.n:c.n], lane: c})
}

// response buffers one answer and writes it with one write.
type response struct {
	// c is the connection.
	c *conn
	// header is the handler's header map, reused.
	header http.Header
	// status is the status written, 0 before.
	status int
	// body is what the handler wrote.
	body []byte
	// sent is set once the answer went out (Flush, or after the handler).
	sent bool
	// broken is set when the answer could not be sent whole.
	broken bool
	// out is the bytes of the answer on the wire, reused.
	out []byte
	// keys are the header's names, sorted, reused.
	keys []string
}

func (w *response) reset() {
	clear(w.header)
	w.status, w.body, w.sent, w.broken = 0, w.body[:0], false, false
}

func (w *response) Header() http.Header { return w.header }

func (w *response) WriteHeader(code int) {
	if w.status == 0 && code >= 200 && code <= 999 {
		w.status = code
	}
}

// errSent is a write after the answer went out.
var errSent = errors.New("fastlane: write after the response was flushed")

// errTooLarge is an answer over maxResponseBytes; its connection is closed
// without it.
var errTooLarge = fmt.Errorf("fastlane: response over %d bytes, not sent; the connection is closed", maxResponseBytes)

func (w *response) Write(p []byte) (int, error) {
	if w.sent {
		return 0, errSent
	}
	w.WriteHeader(http.StatusOK)
	if len(w.body)+len(p) > maxResponseBytes {
		w.broken = true
		return 0, errTooLarge
	}
	w.body = append(w.body, p...)
	return len(p), nil
}

// FlushError sends the answer as it stands: its body is complete.
func (w *response) FlushError() error {
	if w.sent {
		return nil
	}
	return w.send(false)
}

// send writes the status line, the handler's fields (sorted, as net/http
// writes them), Content-Length, Content-Type when the handler set none,
// Date, and the body, in one write.
func (w *response) send(closing bool) error {
	w.sent = true
	if w.broken {
		return errTooLarge
	}
	status := w.status
	if status == 0 {
		status = http.StatusOK
	}
	bodyAllowed := status != http.StatusNoContent && status != http.StatusNotModified
	out := append(w.out[:0], "HTTP/1.1 "...)
	out = strconv.AppendInt(out, int64(status), 10)
	out = append(out, ' ')
	if text := http.StatusText(status); text != "" {
		out = append(out, text...)
	} else {
		out = append(out, "status code "...)
		out = strconv.AppendInt(out, int64(status), 10)
	}
	out = append(out, "\r\n"...)
	w.keys = w.keys[:0]
	for k := range w.header {
		w.keys = append(w.keys, k)
	}
	slices.Sort(w.keys)
	for _, k := range w.keys {
		switch k {
		case "Content-Length", "Transfer-Encoding", "Connection":
			continue
		}
		if !validFieldName(k) {
			continue
		}
		for _, v := range w.header[k] {
			out = append(out, k...)
			out = append(out, ": "...)
			out = appendFieldValue(out, v)
			out = append(out, "\r\n"...)
		}
	}
	if bodyAllowed {
		if _, ok := w.header["Content-Type"]; !ok && len(w.body) > 0 {
			out = append(out, "Content-Type: "...)
			out = append(out, http.DetectContentType(w.body)...)
			out = append(out, "\r\n"...)
		}
		out = append(out, "Content-Length: "...)
		out = strconv.AppendInt(out, int64(len(w.body)), 10)
		out = append(out, "\r\n"...)
	}
	if closing {
		out = append(out, "Connection: close\r\n"...)
	}
	if _, ok := w.header["Date"]; !ok {
		out = append(out, "Date: "...)
		out = time.Now().UTC().AppendFormat(out, http.TimeFormat)
		out = append(out, "\r\n"...)
	}
	out = append(out, "\r\n"...)
	if bodyAllowed {
		out = append(out, w.body...)
	}
	w.out = out
	if d := w.c.s.HTTP.WriteTimeout; d > 0 {
		_ = w.c.nc.SetWriteDeadline(time.Now().Add(d))
	}
	if _, err := w.c.nc.Write(out); err != nil {
		w.broken = true
		return err
	}
	return nil
}

// validFieldName reports whether k can be written as a field name.
func validFieldName(k string) bool {
	if k == "" {
		return false
	}
	for i := range len(k) {
		if !isTokenByte(k[i]) {
			return false
		}
	}
	return true
}

// appendFieldValue appends v with CR and LF as spaces, as net/http does, so
// a value can never end the field.
func appendFieldValue(out []byte, v string) []byte {
	for i := range len(v) {
		b := v[i]
		if b == '\r' || b == '\n' {
			b = ' '
		}
		out = append(out, b)
	}
	return out
}
