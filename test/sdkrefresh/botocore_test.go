package sdkrefresh

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	awscreds "github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/prometheus/client_golang/prometheus"
	clocktesting "k8s.io/utils/clock/testing"

	"github.com/kube2ra/kube2ra/credentials"
	"github.com/kube2ra/kube2ra/k8s"
	"github.com/kube2ra/kube2ra/proxy"
	"github.com/kube2ra/kube2ra/test/fakeaws/fakests"
)

const (
	region        = "eu-west-1"
	nodeKeyID     = "AKIANODE000000000001"
	nodeSecretKey = "nodeSecret/0000000000000000000000000000"
	nodeARN       = "arn:aws:iam::111122223333:user/node"
	roleARN       = "arn:aws:iam::111122223333:role/app"
	roleName      = "app"
	// callEvery is the fake time between two API calls of the simulated
	// program: often enough to catch any window of expired credentials.
	callEvery = 10 * time.Second
	// minSimulated is the least fake time each session length runs.
	minSimulated = 4 * time.Hour
)

// sessionLengths sample what the chart allows (900..43200 s): the short
// sessions where botocore's extension overlaps the whole lifetime, the
// common hour, and the longest.
var sessionLengths = []time.Duration{
	15 * time.Minute, 20 * time.Minute, 25 * time.Minute, 30 * time.Minute, 45 * time.Minute,
	time.Hour, 3 * time.Hour, 12 * time.Hour,
}

// TestBotocoreNeverSignsWithExpiredCredentials runs the installed botocore's
// refresh code, unchanged but for its clocks, against kube2ra's proxy and
// credential cache on the same fake clock, for each session length, and
// counts the API calls it would sign with credentials STS says had expired.
func TestBotocoreNeverSignsWithExpiredCredentials(t *testing.T) {
	py := botocorePython(t)
	for _, d := range sessionLengths {
		t.Run(d.String(), func(t *testing.T) {
			sim := newSimulation(t, d, 0)
			run := max(minSimulated, 3*d)
			out := sim.runBotocore(t, py, run, int64(d/time.Second))
			expired, worst, errs := sim.result()
			t.Logf("%s sessions over %s: %d calls, %d upstream calls, botocore %s", d, run, sim.calls(), sim.upstream.Load(), strings.TrimSpace(out))
			if expired > 0 {
				t.Errorf("%d of %d calls signed with expired credentials (the worst %s after expiry)", expired, sim.calls(), worst)
			}
			if len(errs) > 0 {
				t.Errorf("%d calls failed to get credentials, first: %s", len(errs), errs[0])
			}
		})
	}
}

// botocorePython is an interpreter that imports botocore: python3 on PATH
// (the machine image's pyenv), else Debian's (python3-botocore, installed
// by hack/install-test-deps.sh).
func botocorePython(t *testing.T) string {
	t.Helper()
	for _, py := range []string{"python3", "/usr/bin/python3"} {
		out, err := exec.Command(py, "-c", "import sys, botocore; print(sys.executable, botocore.__version__)").Output()
		if err == nil {
			f := strings.Fields(string(out))
			t.Logf("botocore %s under %s", f[1], f[0])
			return f[0]
		}
	}
	t.Fatal("no python3 imports botocore: run hack/install-test-deps.sh (installs python3-botocore)")
	return ""
}

// simulation is one session length: fake STS, the real STS source, the
// credential cache and the proxy, all on one fake clock, and what the
// Python driver reported.
type simulation struct {
	// clock is the fake time of everything but request signing.
	clock *clocktesting.FakeClock
	// fake is the STS endpoint; it knows each key's expiry.
	fake *fakests.Server
	// imds is the proxy's address.
	imds string
	// control is the driver's clock and report endpoint.
	control string
	// upstream counts AssumeRole calls; inflight those not yet answered.
	upstream, inflight atomic.Int64

	// mu guards the report.
	mu sync.Mutex
	// signed counts reported calls; expired those whose key had expired.
	signed, expired int
	// worst is the latest a call came after its key's expiry.
	worst time.Duration
	// errs are the calls botocore could not make.
	errs []string
}

func newSimulation(t *testing.T, session, minTTL time.Duration) *simulation {
	t.Helper()
	clk := clocktesting.NewFakeClock(time.Now().Truncate(time.Second))
	fake, err := fakests.Start(fakests.Options{
		Region:     region,
		Clock:      clk,
		Principals: []fakests.Principal{{AccessKeyID: nodeKeyID, SecretAccessKey: nodeSecretKey, ARN: nodeARN}},
		Roles:      []fakests.Role{{ARN: roleARN, Trust: []string{nodeARN}, MaxSessionDuration: 12 * time.Hour}},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(fake.Close)
	src, err := credentials.NewSTSSource(context.Background(), credentials.STSOptions{
		Region:          region,
		Endpoint:        fake.URL(),
		BaseCredentials: awscreds.NewStaticCredentialsProvider(nodeKeyID, nodeSecretKey, ""),
		Duration:        session,
		Clock:           clk,
	})
	if err != nil {
		t.Fatal(err)
	}
	sim := &simulation{clock: clk, fake: fake}
	cache, err := credentials.NewCredentialCache(credentials.CacheOptions{
		Source: countingSource{Source: src, sim: sim}, Clock: clk, MinTTL: minTTL,
		Registerer: prometheus.NewRegistry(), QPS: -1,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); cache.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })

	pod := &k8s.Pod{UID: "uid-app", Namespace: "ns", Name: "app", NodeName: "node"}
	req := credentials.Request{RoleARN: roleARN, SessionName: credentials.SessionName(pod.Namespace, pod.Name)}
	cache.Track(string(pod.UID), req)

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv, err := proxy.New(proxy.Options{Listener: ln, IMDSv2Required: true, MetadataAddr: proxy.MetadataAddrNone, Region: region},
		onePod{pod}, oneRole{}, cacheGetter{cache: cache, req: req})
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Listen(); err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.Serve(ctx) }()
	sim.imds = "http://" + srv.Addr().String()

	cln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	control := &http.Server{Handler: sim.controlHandler(), ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = control.Serve(cln) }()
	t.Cleanup(func() { _ = control.Close() })
	sim.control = cln.Addr().String()
	return sim
}

// runBotocore runs the driver for the given fake time and returns its summary line.
func (s *simulation) runBotocore(t *testing.T, py string, run time.Duration, seed int64) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, py, "testdata/botocore_clock.py",
		"--control", s.control,
		"--start", fmt.Sprint(s.clock.Now().Unix()),
		"--seconds", fmt.Sprint(int64(run/time.Second)),
		"--call-every", fmt.Sprint(int64(callEvery/time.Second)),
		"--seed", fmt.Sprint(seed))
	home := t.TempDir()
	cmd.Env = append(cleanEnv(), "HOME="+home, "AWS_CONFIG_FILE=/dev/null", "AWS_SHARED_CREDENTIALS_FILE=/dev/null",
		"AWS_EC2_METADATA_SERVICE_ENDPOINT="+s.imds, "AWS_REGION="+region)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("botocore driver: %v: %s%s", err, out, stderr.String())
	}
	return string(out)
}

// cleanEnv is the test's environment without anything that would point
// botocore at other credentials (keys, profiles, container endpoints).
func cleanEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "AWS_") {
			continue
		}
		env = append(env, kv)
	}
	return env
}

// controlHandler answers the driver: POST /clock moves the fake clock and
// waits for the cache to act on it; POST /signed reports one API call.
func (s *simulation) controlHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /clock", func(w http.ResponseWriter, r *http.Request) {
		var body struct{ T float64 }
		if err := json.NewDecoder(r.Body).Decode(&body); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		to := time.Unix(int64(body.T), 0)
		if to.After(s.clock.Now()) {
			s.clock.SetTime(to)
		}
		s.settle()
	})
	mux.HandleFunc("POST /signed", func(w http.ResponseWriter, r *http.Request) {
		var body struct {
			T     float64
			AKID  string `json:"akid"`
			Error string `json:"error"`
		}
		if err := json.NewDecoder(r.Body).Decode(&body); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		at := time.Unix(int64(body.T), 0)
		s.mu.Lock()
		defer s.mu.Unlock()
		s.signed++
		if body.Error != "" {
			s.errs = append(s.errs, at.UTC().Format(time.RFC3339)+": "+body.Error)
			return
		}
		sess, ok := s.fake.Session(body.AKID)
		if !ok {
			s.errs = append(s.errs, fmt.Sprintf("%s: key %q was never issued by STS", at.UTC().Format(time.RFC3339), body.AKID))
			return
		}
		// AWS refuses a session from its expiry on.
		if late := at.Sub(sess.Expiration); late >= 0 {
			s.expired++
			s.worst = max(s.worst, late)
		}
	})
	return mux
}

// settle waits until the cache's refresher is asleep on the fake clock and
// no upstream call is open, so the driver's next read sees what the cache
// would serve at that time. A refresh still starting is harmless: the
// cache keeps serving the old credentials until the min TTL.
func (s *simulation) settle() {
	deadline := time.Now().Add(2 * time.Second)
	for time.Now().Before(deadline) {
		if s.clock.HasWaiters() && s.inflight.Load() == 0 {
			return
		}
		time.Sleep(100 * time.Microsecond)
	}
}

func (s *simulation) calls() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.signed
}

func (s *simulation) result() (expired int, worst time.Duration, errs []string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.expired, s.worst, append([]string(nil), s.errs...)
}

// countingSource counts upstream calls, and those still open for settle.
type countingSource struct {
	credentials.Source
	sim *simulation
}

func (c countingSource) Fetch(ctx context.Context, req credentials.Request) (credentials.Credentials, error) {
	c.sim.upstream.Add(1)
	c.sim.inflight.Add(1)
	defer c.sim.inflight.Add(-1)
	return c.Source.Fetch(ctx, req)
}

// onePod is the only pod on the node, whatever the caller's address.
type onePod struct{ pod *k8s.Pod }

func (o onePod) FindPod(context.Context, netip.Addr) (*k8s.Pod, error) { return o.pod, nil }

// oneRole is the pod's role.
type oneRole struct{}

func (oneRole) ResolveRole(context.Context, *k8s.Pod) (k8s.Role, error) {
	return k8s.Role{ARN: roleARN, Name: roleName}, nil
}

// cacheGetter serves the tracked request from the cache, as cmd/kube2ra does.
type cacheGetter struct {
	cache *credentials.CredentialCache
	req   credentials.Request
}

func (g cacheGetter) GetCredentials(ctx context.Context, _ *k8s.Pod, _ k8s.Role) (credentials.Credentials, error) {
	return g.cache.Get(ctx, g.req)
}

// TestBotocoreSignsWithExpiredCredentialsBelowTheFloor is the control: with
// the old 1-minute min TTL botocore's extension outlives short sessions, so
// the test above would catch a min TTL that fell back below the SDKs' floor.
func TestBotocoreSignsWithExpiredCredentialsBelowTheFloor(t *testing.T) {
	py := botocorePython(t)
	sim := newSimulation(t, 15*time.Minute, time.Minute)
	sim.runBotocore(t, py, minSimulated, 1)
	expired, worst, _ := sim.result()
	t.Logf("1-minute min TTL, 15-minute sessions: %d of %d calls signed with expired credentials, up to %s late", expired, sim.calls(), worst)
	if expired == 0 {
		t.Error("no call signed with expired credentials: the simulation no longer reproduces botocore's extension, so the test above proves nothing")
	}
}
