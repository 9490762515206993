package proxy

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/sirupsen/logrus"

	"github.com/kube2ra/kube2ra/credentials"
	"github.com/kube2ra/kube2ra/k8s"
	"github.com/kube2ra/kube2ra/test/fakeaws/fakeimds"
	"github.com/kube2ra/kube2ra/test/syncbuf"
)

const (
	testRoleName  = "pod-role"
	testAccountID = "123456789012"
	testRoleARN   = "arn:aws:iam::" + testAccountID + ":role/team/" + testRoleName
)

var loopback = netip.MustParseAddr("127.0.0.1")

// fakePods maps IPs to pods, or fails with err.
type fakePods struct {
	mu   sync.Mutex
	byIP map[netip.Addr]*k8s.Pod
	err  error
	// hold, when set, keeps every lookup waiting until it is closed or the
	// request gives up.
	hold chan struct{}
}

func (f *fakePods) FindPod(ctx context.Context, ip netip.Addr) (*k8s.Pod, error) {
	f.mu.Lock()
	hold := f.hold
	f.mu.Unlock()
	if hold != nil {
		select {
		case <-hold:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.err != nil {
		return nil, f.err
	}
	if p, ok := f.byIP[ip]; ok {
		return p, nil
	}
	return nil, k8s.ErrPodNotFound
}

// holdLookups keeps every pod lookup waiting until the returned function
// releases them (or the request gives up).
func (f *fakePods) holdLookups() (release func()) {
	hold := make(chan struct{})
	f.mu.Lock()
	f.hold = hold
	f.mu.Unlock()
	return func() { close(hold) }
}

func (f *fakePods) set(err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.err = err
}

// fakeRoles gives every pod role, or fails with err.
type fakeRoles struct {
	mu   sync.Mutex
	role k8s.Role
	err  error
}

func (f *fakeRoles) ResolveRole(_ context.Context, _ *k8s.Pod) (k8s.Role, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.role, f.err
}

func (f *fakeRoles) set(role k8s.Role, err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.role, f.err = role, err
}

// fakeCreds returns creds, or fails with err, and counts calls.
type fakeCreds struct {
	mu    sync.Mutex
	creds credentials.Credentials
	err   error
	calls atomic.Int64
}

func (f *fakeCreds) GetCredentials(_ context.Context, _ *k8s.Pod, _ k8s.Role) (credentials.Credentials, error) {
	f.calls.Add(1)
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.creds, f.err
}

func (f *fakeCreds) set(err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.err = err
}

// testPod is the pod that owns 127.0.0.1 in these tests.
func testPod() *k8s.Pod {
	return &k8s.Pod{UID: "uid-1", Namespace: "team-a", Name: "app-7d9f", ServiceAccount: "app",
		NodeName: "node-1", IPs: []netip.Addr{loopback}}
}

func testRole() k8s.Role {
	return k8s.Role{ARN: testRoleARN, Name: testRoleName, AccountID: testAccountID}
}

// testCredentials are what the fake getter hands out: distinct from the
// fake upstream's node credentials, with seconds precision as IMDS has.
func testCredentials() credentials.Credentials {
	now := time.Now().UTC().Truncate(time.Second)
	return credentials.Credentials{
		AccessKeyID:     "ASIAPODROLE000TEST01",
		SecretAccessKey: "pod/Secret+Key0123456789abcdefghijklmnopq",
		SessionToken:    "IQoJb3JpZ2luX2VjEPodSessionToken//+test==",
		Expiration:      now.Add(time.Hour),
		LastUpdated:     now.Add(-time.Minute),
	}
}

// testEnv is a proxy on loopback with fakes behind it and a recording
// fake upstream.
type testEnv struct {
	srv   *Server
	url   string
	addr  string
	up    *fakeimds.Server
	pods  *fakePods
	roles *fakeRoles
	creds *fakeCreds
	reg   *prometheus.Registry
	logs  *syncbuf.Buffer
}

// newTestEnv starts a fake upstream (unless opts.MetadataAddr is "none")
// and a proxy on 127.0.0.1; both stop at the end of the test.
func newTestEnv(t testing.TB, opts Options) *testEnv {
	t.Helper()
	e := &testEnv{
		pods:  &fakePods{byIP: map[netip.Addr]*k8s.Pod{loopback: testPod()}},
		roles: &fakeRoles{role: testRole()},
		creds: &fakeCreds{creds: testCredentials()},
		reg:   prometheus.NewRegistry(),
		logs:  &syncbuf.Buffer{},
	}
	if opts.MetadataAddr == "" {
		e.up = fakeimds.New(fakeimds.Options{})
		if err := e.up.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = e.up.Stop() })
		opts.MetadataAddr = e.up.Addr()
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	opts.Listener = ln
	opts.Registerer = e.reg
	if opts.Logger == nil {
		l := logrus.New()
		l.SetOutput(e.logs)
		l.SetFormatter(&logrus.JSONFormatter{})
		opts.Logger = l
	}
	e.srv, err = New(opts, e.pods, e.roles, e.creds)
	if err != nil {
		t.Fatal(err)
	}
	if err := e.srv.Listen(); err != nil {
		t.Fatal(err)
	}
	e.addr = e.srv.Addr().String()
	e.url = "http://" + e.addr
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- e.srv.Serve(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Serve: %v", err)
			}
		case <-time.After(15 * time.Second):
			t.Error("Serve did not return after its context ended")
		}
	})
	return e
}

// upstreamPaths lists the request targets the fake upstream received.
func (e *testEnv) upstreamPaths() []string {
	var out []string
	for _, r := range e.up.Requests() {
		out = append(out, r.Method+" "+r.RequestURI)
	}
	return out
}

// rawResponse is what a raw request got back.
type rawResponse struct {
	status int
	header http.Header
	body   string
}

// rawRequest writes req byte for byte (no client normalises it) and reads
// one response. req must end with the blank line.
func rawRequest(t testing.TB, addr, req string) rawResponse {
	t.Helper()
	return rawRequestFrom(t, netip.Addr{}, addr, req)
}

// rawRequestFrom is rawRequest from a chosen local address (127.0.0.x).
func rawRequestFrom(t testing.TB, local netip.Addr, addr, req string) rawResponse {
	t.Helper()
	d := net.Dialer{Timeout: 5 * time.Second}
	if local.IsValid() {
		d.LocalAddr = &net.TCPAddr{IP: local.AsSlice()}
	}
	conn, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(conn, req); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("reading the response to %q: %v", req, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return rawResponse{status: resp.StatusCode, header: resp.Header, body: string(body)}
}

// get builds a raw GET for target with extra header lines.
func rawGet(target string, headers ...string) string {
	return rawMethod("GET", target, headers...)
}

// rawMethod builds a raw request. A GET or PUT without a body is sent as an
// SDK sends it, on a keep-alive connection: the shape the lane (package
// fastlane) takes when it can. Anything else asks for Connection: close, so
// net/http does not wait for a body or a HEAD answer's bytes that never come.
func rawMethod(method, target string, headers ...string) string {
	var b strings.Builder
	b.WriteString(method + " " + target + " HTTP/1.1\r\nHost: 169.254.169.254\r\n")
	keepAlive := method == "GET" || method == "PUT"
	for _, h := range headers {
		if strings.HasPrefix(h, "Content-Length:") && h != "Content-Length: 0" {
			keepAlive = false
		}
	}
	if !keepAlive {
		b.WriteString("Connection: close\r\n")
	}
	for _, h := range headers {
		b.WriteString(h + "\r\n")
	}
	b.WriteString("\r\n")
	return b.String()
}

// httpGet does a GET with net/http and returns status and body.
func httpGet(t testing.TB, url string, header http.Header) (int, string, http.Header) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range header {
		req.Header[k] = v
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body), resp.Header
}

// putToken asks the proxy for a token with ttl (header value as given).
func putToken(t testing.TB, url, ttl string, header http.Header) (int, string, http.Header) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPut, url+"/latest/api/token", nil)
	if err != nil {
		t.Fatal(err)
	}
	if ttl != "" {
		req.Header.Set(ttlHeader, ttl)
	}
	for k, v := range header {
		req.Header[k] = v
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body), resp.Header
}

// counterValue reads one labelled counter from the registry (0 if absent).
func counterValue(t testing.TB, reg *prometheus.Registry, name string, labels map[string]string) float64 {
	t.Helper()
	return findMetric(t, reg, name, labels).GetCounter().GetValue()
}

// histogramCount is how many observations the labelled histogram holds.
func histogramCount(t testing.TB, reg *prometheus.Registry, name string, labels map[string]string) uint64 {
	t.Helper()
	return findMetric(t, reg, name, labels).GetHistogram().GetSampleCount()
}

// findMetric is the first series of name whose labels include labels; nil
// (whose getters read zero) when there is none.
func findMetric(t testing.TB, reg *prometheus.Registry, name string, labels map[string]string) *dto.Metric {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	metric:
		for _, m := range mf.GetMetric() {
			for _, lp := range m.GetLabel() {
				if want, ok := labels[lp.GetName()]; ok && want != lp.GetValue() {
					continue metric
				}
			}
			return m
		}
	}
	return nil
}

// errTest is a generic failure for fakes.
var errTest = errors.New("test failure")

func netDial(addr string) (net.Conn, error) { return net.DialTimeout("tcp", addr, 5*time.Second) }

// serveInTest listens and serves s until the test ends, then requires Serve
// to return nil after the shutdown; it returns the bound address.
func serveInTest(t testing.TB, s *Server) net.Addr {
	t.Helper()
	if err := s.Listen(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Serve after shutdown: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Error("Serve did not return within 10s of the shutdown")
		}
	})
	return s.Addr()
}
