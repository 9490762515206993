package handover

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/kube2ra/kube2ra/proxy"
)

// successorEnv makes the test binary a successor agent (see TestMain): it
// takes over the listener on the address in successorAddrEnv from the
// offer in the directory named by successorEnv.
const (
	successorEnv     = "HANDOVER_TEST_SUCCESSOR_DIR"
	successorAddrEnv = "HANDOVER_TEST_SUCCESSOR_ADDR"
	// successorStopEnv set to "warm" makes it connect and then wait for
	// ever without taking over (to be killed mid-warm-up).
	successorStopEnv = "HANDOVER_TEST_SUCCESSOR_STOP"
)

func TestMain(m *testing.M) {
	if dir := os.Getenv(successorEnv); dir != "" {
		os.Exit(runSuccessor(dir, os.Getenv(successorAddrEnv), os.Getenv(successorStopEnv)))
	}
	os.Exit(m.Run())
}

// runSuccessor is the second process: a new agent that warms up, takes the
// listener, serves "new" on it and tells the old agent; it prints each step.
func runSuccessor(dir, addr, stop string) int {
	ctx := context.Background()
	c, err := Dial(ctx, dir, "v2")
	if err != nil || c == nil {
		fmt.Printf("dial failed: %v %v\n", c, err)
		return 1
	}
	fmt.Println("warming")
	if stop == "warm" {
		select {}
	}
	in, err := c.Take(ctx)
	if err != nil {
		fmt.Printf("take failed: %v\n", err)
		return 1
	}
	srv, err := newAgentServer("new", addr, nil)
	if err != nil {
		fmt.Printf("ops server: %v\n", err)
		return 1
	}
	if err := srv.ListenWith(in.Listen); err != nil {
		fmt.Printf("listen failed: %v\n", err)
		return 1
	}
	if u := in.Unused(); len(u) != 0 {
		fmt.Printf("listeners left unused: %v\n", u)
		return 1
	}
	go func() { _ = srv.Serve(ctx) }()
	if err := c.Serving(); err != nil {
		fmt.Printf("serving failed: %v\n", err)
		return 1
	}
	fmt.Println("serving")
	select {}
}

// newAgentServer is an agent's ops server (the real one, with its drain):
// /metrics says who answers, /readyz fails with ready's error.
func newAgentServer(who, addr string, ready func(context.Context) error) (*proxy.OpsServer, error) {
	reg := prometheus.NewRegistry()
	g := prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "handover_test_agent", Help: "Which agent answered."}, []string{"who"})
	g.WithLabelValues(who).Set(1)
	reg.MustRegister(g)
	return proxy.NewOpsServer(proxy.OpsOptions{Addr: addr, Gatherer: reg, Ready: ready})
}

// whoAnswered reads newAgentServer's /metrics answer.
func whoAnswered(body string) string {
	for _, who := range []string{"old", "new"} {
		if strings.Contains(body, `handover_test_agent{who="`+who+`"}`) {
			return who
		}
	}
	return "unknown"
}

// oldAgent is the serving agent of a test: its ops server on a loopback
// port, answering /readyz 503 while a successor warms up, and its offer.
type oldAgent struct {
	addr  string
	srv   *proxy.OpsServer
	offer *Offer
	done  chan error
}

func startOld(t *testing.T, dir string, warmup time.Duration) *oldAgent {
	t.Helper()
	a := &oldAgent{addr: "127.0.0.1:" + freePort(t), done: make(chan error, 1)}
	var err error
	a.srv, err = newAgentServer("old", a.addr, func(context.Context) error {
		if p, ok := a.offer.Successor(); ok {
			return fmt.Errorf("successor pid %d is taking over", p.PID)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := a.srv.Listen(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	go func() { _ = a.srv.Serve(ctx) }()
	a.offer, err = Open(OfferOptions{Dir: dir, Listeners: a.srv.Listeners, Version: "v1", WarmupTimeout: warmup,
		State: func() []byte { return []byte("state of v1") }})
	if err != nil {
		t.Fatal(err)
	}
	go func() { a.done <- a.offer.Serve(ctx) }()
	t.Cleanup(cancel)
	return a
}

// freePort is a loopback port free a moment ago (the ops server also binds
// 127.0.0.1 beside a non-loopback host, so the test uses 127.0.0.1 itself).
func freePort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	return port
}

// get asks addr for path and returns the status and body.
func get(addr, path string) (int, string, error) {
	resp, err := http.Get("http://" + addr + path)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}

// startSuccessor starts the successor process and returns its output lines.
func startSuccessor(t *testing.T, dir, addr, stop string) (*exec.Cmd, <-chan string) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), successorEnv+"="+dir, successorAddrEnv+"="+addr, successorStopEnv+"="+stop)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	lines := make(chan string, 10)
	go func() {
		s := bufio.NewScanner(out)
		for s.Scan() {
			lines <- s.Text()
		}
		close(lines)
	}()
	return cmd, lines
}

func expectLine(t *testing.T, lines <-chan string, want string) {
	t.Helper()
	select {
	case l, ok := <-lines:
		if !ok || l != want {
			t.Fatalf("successor said %q (open %v), want %q", l, ok, want)
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("successor did not say %q within 30s", want)
	}
}

// hammer asks addr without pause from several clients (new connections and
// keep-alive ones) until stop, and counts answers by who gave them and the
// requests that failed (refused, reset, or anything else).
type hammer struct {
	answers sync.Map // who → *atomic.Int64
	failed  atomic.Int64
	lastErr atomic.Pointer[string]
	stop    chan struct{}
	wg      sync.WaitGroup
}

func startHammer(addr string) *hammer {
	h := &hammer{stop: make(chan struct{})}
	for i := range 4 {
		tr := &http.Transport{DisableKeepAlives: i%2 == 0}
		client := &http.Client{Transport: tr, Timeout: 5 * time.Second}
		h.wg.Go(func() {
			defer tr.CloseIdleConnections()
			for {
				select {
				case <-h.stop:
					return
				default:
				}
				resp, err := client.Get("http://" + addr + "/metrics")
				var b []byte
				if err == nil {
					b, err = io.ReadAll(resp.Body)
					_ = resp.Body.Close()
				}
				if err == nil && resp.StatusCode != http.StatusOK {
					err = fmt.Errorf("status %d", resp.StatusCode)
				}
				if err != nil {
					h.failed.Add(1)
					msg := err.Error()
					h.lastErr.Store(&msg)
					continue
				}
				n, _ := h.answers.LoadOrStore(whoAnswered(string(b)), new(atomic.Int64))
				n.(*atomic.Int64).Add(1)
			}
		})
	}
	return h
}

func (h *hammer) count(who string) int64 {
	n, ok := h.answers.Load(who)
	if !ok {
		return 0
	}
	return n.(*atomic.Int64).Load()
}

func (h *hammer) finish() { close(h.stop); h.wg.Wait() }

// waitFor polls cond every 10 ms for up to 30 s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestHandoverLosesNoRequest is the upgrade: a client hammers the port while
// a second process takes the listener over and the first stops accepting
// and drains. Not one request may fail, and every answer after the drain is
// the new agent's.
func TestHandoverLosesNoRequest(t *testing.T) {
	dir := t.TempDir()
	old := startOld(t, dir, 0)
	addr := old.addr
	h := startHammer(addr)
	waitFor(t, "answers from the old agent", func() bool { return h.count("old") > 100 })

	_, lines := startSuccessor(t, dir, addr, "")
	expectLine(t, lines, "warming")
	waitFor(t, "the offer to see the successor", func() bool { _, ok := old.offer.Successor(); return ok })
	select {
	case <-old.offer.HandedOver():
	case <-time.After(30 * time.Second):
		t.Fatal("no handover within 30s")
	}
	// The old agent stops accepting and drains, as the agent does.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := old.srv.Drain(ctx); err != nil {
		t.Fatal(err)
	}
	expectLine(t, lines, "serving")
	// Answers read before the drain ended may still be counted for a moment.
	newBefore := h.count("new")
	waitFor(t, "answers from the new agent after the drain", func() bool { return h.count("new") > newBefore+100 })
	oldAfter, newBefore := h.count("old"), h.count("new")
	waitFor(t, "more answers from the new agent", func() bool { return h.count("new") > newBefore+100 })
	h.finish()
	if err := <-old.done; err != nil {
		t.Errorf("offer.Serve: %v", err)
	}
	if n := h.failed.Load(); n != 0 {
		t.Errorf("%d requests failed across the handover (last: %s)", n, *h.lastErr.Load())
	}
	if got := h.count("old"); got != oldAfter {
		t.Errorf("the old agent answered %d requests after it drained", got-oldAfter)
	}
	t.Logf("answers: old %d, new %d, failed %d", h.count("old"), h.count("new"), h.failed.Load())
}

// TestReadinessWhileWarming: the serving agent reports a successor from its
// hello until it leaves, and a successor that dies mid-warm-up (SIGKILL)
// leaves the old agent serving, and ready again, and a later successor can
// still take over.
func TestSuccessorDiesMidWarmup(t *testing.T) {
	dir := t.TempDir()
	old := startOld(t, dir, 0)
	addr := old.addr
	if code, _, err := get(addr, "/readyz"); err != nil || code != http.StatusOK {
		t.Fatalf("/readyz before any successor: %d %v", code, err)
	}
	if _, ok := old.offer.Successor(); ok {
		t.Fatal("a successor reported before any connected")
	}
	cmd, lines := startSuccessor(t, dir, addr, "warm")
	expectLine(t, lines, "warming")
	p, ok := old.offer.Successor()
	if !ok || p.PID != cmd.Process.Pid || p.Version != "v2" {
		t.Fatalf("successor while warming: %+v %v, want pid %d version v2", p, ok, cmd.Process.Pid)
	}
	if code, _, err := get(addr, "/readyz"); err != nil || code != http.StatusServiceUnavailable {
		t.Fatalf("/readyz while a successor warms up: %d %v, want 503", code, err)
	}
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the offer to forget the dead successor", func() bool { _, ok := old.offer.Successor(); return !ok })
	code, body, err := get(addr, "/metrics")
	if err != nil || code != http.StatusOK || whoAnswered(body) != "old" {
		t.Fatalf("after its successor died the old agent answered %d %s (%v), want 200 from old", code, whoAnswered(body), err)
	}
	if code, _, err := get(addr, "/readyz"); err != nil || code != http.StatusOK {
		t.Fatalf("/readyz after the successor died: %d %v, want 200", code, err)
	}
	select {
	case <-old.offer.HandedOver():
		t.Fatal("handed over to a successor that died")
	default:
	}
	_, lines = startSuccessor(t, dir, addr, "")
	expectLine(t, lines, "warming")
	expectLine(t, lines, "serving")
	<-old.offer.HandedOver()
}

// TestWarmupTimeout: a successor that never takes over stops holding the
// serving agent unready after the warm-up bound.
func TestWarmupTimeout(t *testing.T) {
	dir := t.TempDir()
	old := startOld(t, dir, 200*time.Millisecond)
	_, lines := startSuccessor(t, dir, old.addr, "warm")
	expectLine(t, lines, "warming")
	waitFor(t, "the warm-up bound to drop the successor", func() bool { _, ok := old.offer.Successor(); return !ok })
}

// TestWaitForSuccessor: on SIGTERM the serving agent waits for a warming
// successor: true once it took over, false when there is none or the wait
// ends first.
func TestWaitForSuccessor(t *testing.T) {
	dir := t.TempDir()
	old := startOld(t, dir, 0)
	if old.offer.WaitForSuccessor(context.Background()) {
		t.Fatal("WaitForSuccessor true without any successor")
	}
	c, err := Dial(context.Background(), dir, "v2")
	if err != nil || c == nil {
		t.Fatalf("Dial: %v %v", c, err)
	}
	short, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if old.offer.WaitForSuccessor(short) {
		t.Fatal("WaitForSuccessor true before the successor took over")
	}
	got := make(chan bool)
	go func() { got <- old.offer.WaitForSuccessor(context.Background()) }()
	in, err := c.Take(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	if string(in.State) != "state of v1" {
		t.Errorf("state %q came with the listeners, want the offer's", in.State)
	}
	if err := c.Serving(); err != nil {
		t.Fatal(err)
	}
	if !<-got {
		t.Fatal("WaitForSuccessor false after the successor took over")
	}
}

// TestDialWithoutOffer: no socket, or a stale one nobody listens on, means
// no agent serves: bind as on a first install.
func TestDialWithoutOffer(t *testing.T) {
	dir := t.TempDir()
	if c, err := Dial(context.Background(), dir, "v2"); c != nil || err != nil {
		t.Fatalf("Dial without socket: %v %v", c, err)
	}
	ln, err := net.ListenUnix("unixpacket", &net.UnixAddr{Name: SocketPath(dir), Net: "unixpacket"})
	if err != nil {
		t.Fatal(err)
	}
	ln.SetUnlinkOnClose(false)
	_ = ln.Close()
	if c, err := Dial(context.Background(), dir, "v2"); c != nil || err != nil {
		t.Fatalf("Dial to a stale socket: %v %v", c, err)
	}
	// Open replaces the stale socket.
	offer, err := Open(OfferOptions{Dir: dir, Listeners: func() []net.Listener { return nil }})
	if err != nil {
		t.Fatal(err)
	}
	defer offer.Close()
	st, err := os.Stat(offer.Path())
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Errorf("handover socket mode %o, want 600", st.Mode().Perm())
	}
	dst, _ := os.Stat(dir)
	if dst.Mode().Perm() != 0o700 {
		t.Errorf("handover directory mode %o, want 700", dst.Mode().Perm())
	}
}

// TestPrepareDirRefusesForeignOwner: a directory another uid owns could
// hold a socket posing as the agent.
func TestPrepareDirRefusesForeignOwner(t *testing.T) {
	dir, owner := "/", "belongs to uid 0"
	if os.Geteuid() == 0 {
		dir, owner = t.TempDir(), "belongs to uid 12345"
		if err := os.Chown(dir, 12345, 12345); err != nil {
			t.Fatal(err)
		}
	}
	err := PrepareDir(dir)
	if err == nil || !strings.Contains(err.Error(), owner) {
		t.Fatalf("PrepareDir on a foreign directory: %v", err)
	}
	if _, err := Open(OfferOptions{Dir: dir, Listeners: func() []net.Listener { return nil }}); err == nil {
		t.Fatal("Open accepted a foreign directory")
	}
}

// TestInheritedListen: an inherited address is adopted, another is bound,
// and what nothing used is reported and closed.
func TestInheritedListen(t *testing.T) {
	a, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ak, _ := addrKey(a.Addr())
	bk, _ := addrKey(b.Addr())
	in := &Inherited{lns: map[netip.AddrPort]net.Listener{ak: a, bk: b}}
	got, err := in.Listen("tcp", a.Addr().String())
	if err != nil || got != a {
		t.Fatalf("Listen(%s) = %v, %v; want the inherited listener", a.Addr(), got, err)
	}
	fresh, err := in.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer fresh.Close()
	if fresh == a || fresh == b {
		t.Fatal("a new address got an inherited listener")
	}
	if u := in.Unused(); len(u) != 1 || u[0] != b.Addr().String() {
		t.Fatalf("Unused = %v, want [%s]", u, b.Addr())
	}
	in.Close()
	if _, err := b.Accept(); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("unused listener not closed: %v", err)
	}
	var none *Inherited
	ln, err := none.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	_ = ln.Close()
	_ = a.Close()
}

// TestRemoveStale: `kube2ra cleanup` removes a socket nobody listens on and
// leaves a serving agent's, which its successor needs.
func TestRemoveStale(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	if removed, err := RemoveStale(ctx, dir); removed || err != nil {
		t.Fatalf("RemoveStale without a socket: %v %v", removed, err)
	}
	offer, err := Open(OfferOptions{Dir: dir, Listeners: func() []net.Listener { return nil }})
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = offer.Serve(ctx) }()
	if err := SaveState(dir, []byte("key")); err != nil {
		t.Fatal(err)
	}
	if removed, err := RemoveStale(ctx, dir); removed || err != nil {
		t.Fatalf("RemoveStale with a serving agent: %v %v", removed, err)
	}
	if _, err := os.Stat(offer.Path()); err != nil {
		t.Fatalf("the serving agent's socket is gone: %v", err)
	}
	if _, err := os.Stat(StatePath(dir)); err != nil {
		t.Fatalf("the serving agent's saved state is gone: %v", err)
	}
	if _, ok := offer.Successor(); ok {
		t.Error("RemoveStale's probe counted as a successor")
	}
	offer.Close() // the socket file stays, as when an agent is killed
	if removed, err := RemoveStale(ctx, dir); !removed || err != nil {
		t.Fatalf("RemoveStale with a stale socket: %v %v", removed, err)
	}
	if _, err := os.Stat(offer.Path()); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("stale socket still there: %v", err)
	}
	if _, err := os.Stat(StatePath(dir)); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the stale agent's saved state is still there: %v", err)
	}
}

// TestSavedStateRoundTrip: the state one agent saves is what the next
// loads; none is nil, not an error; the file is 0600 and the directory
// 0700; a file too large to be kube2ra's is refused, not truncated.
func TestSavedStateRoundTrip(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "kube2ra")
	if got, err := LoadState(dir); got != nil || err != nil {
		t.Fatalf("LoadState before the directory exists = %q, %v; want nil, nil", got, err)
	}
	for _, state := range [][]byte{[]byte("first key"), []byte("second key, longer")} {
		if err := SaveState(dir, state); err != nil {
			t.Fatal(err)
		}
		if got, err := LoadState(dir); err != nil || !bytes.Equal(got, state) {
			t.Fatalf("LoadState = %q, %v; want %q", got, err, state)
		}
	}
	if st, err := os.Stat(StatePath(dir)); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("state file: %v, %v; want mode 0600", st, err)
	}
	if st, err := os.Stat(dir); err != nil || st.Mode().Perm() != 0o700 {
		t.Fatalf("state directory: %v, %v; want mode 0700", st, err)
	}
	if leftovers, _ := filepath.Glob(filepath.Join(dir, "."+StateName+"-*")); len(leftovers) != 0 {
		t.Fatalf("temporary files left: %v", leftovers)
	}
	if err := os.WriteFile(StatePath(dir), bytes.Repeat([]byte{1}, maxStateBytes+1), 0o600); err != nil {
		t.Fatal(err)
	}
	if got, err := LoadState(dir); err == nil || !strings.Contains(err.Error(), "not kube2ra's") {
		t.Fatalf("LoadState of an oversized file = %d bytes, %v; want an error", len(got), err)
	}
	if err := RemoveState(dir); err != nil {
		t.Fatal(err)
	}
	if got, err := LoadState(dir); got != nil || err != nil {
		t.Fatalf("LoadState after RemoveState = %q, %v", got, err)
	}
}
