package credentials

import (
	"context"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	awscreds "github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/prometheus/client_golang/prometheus"
	clocktesting "k8s.io/utils/clock/testing"

	"github.com/kube2ra/kube2ra/test/fakeaws/fakests"
)

const (
	testRegion    = "eu-west-1"
	nodeKeyID     = "AKIANODE000000000001"
	nodeSecretKey = "nodeSecret/0000000000000000000000000000"
	nodeARN       = "arn:aws:iam::111122223333:user/node"
	appRoleARN    = "arn:aws:iam::111122223333:role/app"
	extRoleARN    = "arn:aws:iam::111122223333:role/ext"
	tagRoleARN    = "arn:aws:iam::111122223333:role/tagged"
	deniedRoleARN = "arn:aws:iam::111122223333:role/not-for-nodes"
	extRoleID     = "ext-123"
	// testDuration is the shortest session STS grants: refreshes happen
	// within minutes of fake time.
	testDuration = 15 * time.Minute
)

// awsEnvVars are the variables the SDK's default chain reads that could
// make a test depend on the machine it runs on.
var awsEnvVars = []string{
	"AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_STS", "AWS_REGION", "AWS_DEFAULT_REGION", "AWS_PROFILE",
	"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_MAX_ATTEMPTS", "AWS_RETRY_MODE",
	"AWS_IGNORE_CONFIGURED_ENDPOINT_URLS", "AWS_EC2_METADATA_DISABLED",
}

// isolateAWSEnv unsets the SDK's environment and points its files at
// nothing, restoring everything when the test ends.
func isolateAWSEnv(t *testing.T) {
	t.Helper()
	for _, v := range awsEnvVars {
		if _, ok := os.LookupEnv(v); ok {
			t.Setenv(v, "")
			os.Unsetenv(v)
		}
	}
	dir := t.TempDir()
	t.Setenv("AWS_CONFIG_FILE", filepath.Join(dir, "config"))
	t.Setenv("AWS_SHARED_CREDENTIALS_FILE", filepath.Join(dir, "credentials"))
	// A forgotten endpoint must not reach the real IMDS from a test.
	t.Setenv("AWS_EC2_METADATA_DISABLED", "true")
}

// stsEnv is the fake STS on loopback, a fake clock it issues sessions by,
// and the real STS source pointed at it.
type stsEnv struct {
	fake   *fakests.Server
	clock  *clocktesting.FakeClock
	source *STSSource
}

func newSTSEnv(t *testing.T, mutate ...func(*STSOptions)) *stsEnv {
	t.Helper()
	isolateAWSEnv(t)
	clk := clocktesting.NewFakeClock(time.Now().Truncate(time.Second))
	fake, err := fakests.Start(fakests.Options{
		Region:     testRegion,
		Clock:      clk,
		Principals: []fakests.Principal{{AccessKeyID: nodeKeyID, SecretAccessKey: nodeSecretKey, ARN: nodeARN}},
		Roles: []fakests.Role{
			{ARN: appRoleARN, Trust: []string{nodeARN}},
			{ARN: extRoleARN, Trust: []string{nodeARN}, ExternalID: extRoleID},
			{ARN: tagRoleARN, Trust: []string{nodeARN}, AllowTagSession: true},
			{ARN: deniedRoleARN, Trust: []string{"arn:aws:iam::111122223333:user/someone-else"}},
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(fake.Close)
	opts := STSOptions{
		Region:          testRegion,
		Endpoint:        fake.URL(),
		BaseCredentials: awscreds.NewStaticCredentialsProvider(nodeKeyID, nodeSecretKey, ""),
		Duration:        testDuration,
		Clock:           clk,
	}
	for _, m := range mutate {
		m(&opts)
	}
	src, err := NewSTSSource(context.Background(), opts)
	if err != nil {
		t.Fatal(err)
	}
	return &stsEnv{fake: fake, clock: clk, source: src}
}

// cacheEnv is a CredentialCache around the real STS source and the fake.
type cacheEnv struct {
	*stsEnv
	cache *CredentialCache
	reg   *prometheus.Registry
}

func newCacheEnv(t *testing.T, mutate func(*CacheOptions)) *cacheEnv {
	t.Helper()
	env := newSTSEnv(t)
	reg := prometheus.NewRegistry()
	opts := CacheOptions{Source: env.source, Clock: env.clock, Registerer: reg}
	if mutate != nil {
		mutate(&opts)
	}
	c, err := NewCredentialCache(opts)
	if err != nil {
		t.Fatal(err)
	}
	return &cacheEnv{stsEnv: env, cache: c, reg: reg}
}

// run starts the refresher until the test ends.
func (e *cacheEnv) run(t *testing.T) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		e.cache.Run(ctx)
		close(done)
	}()
	t.Cleanup(func() {
		cancel()
		<-done
	})
}

// cached reports whether servable credentials for req are in memory.
func (e *cacheEnv) cached(req Request) bool {
	c := e.cache
	c.mu.RLock()
	defer c.mu.RUnlock()
	en := c.findLocked(c.hash(req), req)
	return en != nil && en.hasCreds && c.clock.Now().Before(en.servableUntil)
}

// present says whether the cache still holds an entry for req, servable or not.
func (e *cacheEnv) present(req Request) bool {
	c := e.cache
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.findLocked(c.hash(req), req) != nil
}

// calls is how many AssumeRole requests reached the fake.
func (e *cacheEnv) calls() int { return e.fake.Calls("AssumeRole") }

// eventually polls cond in real time; background work on a fake clock still
// takes real time to run.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting until %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// consistently checks that cond holds for a while of real time.
func consistently(t *testing.T, what string, d time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		if !cond() {
			t.Fatalf("no longer true: %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func get(t *testing.T, c *CredentialCache, req Request) Credentials {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	creds, err := c.Get(ctx, req)
	if err != nil {
		t.Fatalf("Get(%s, %s): %v", req.RoleARN, req.SessionName, err)
	}
	return creds
}

// stubSource answers from a function and counts calls.
type stubSource struct {
	mu    sync.Mutex
	n     int
	fetch func(ctx context.Context, req Request) (Credentials, error)
}

func (s *stubSource) Name() string { return "stub" }

func (s *stubSource) Fetch(ctx context.Context, req Request) (Credentials, error) {
	s.mu.Lock()
	s.n++
	s.mu.Unlock()
	return s.fetch(ctx, req)
}

func (s *stubSource) calls() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.n
}

// gaugeValue gathers reg and returns the one series of the gauge name.
func gaugeValue(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
		if len(f.GetMetric()) != 1 {
			t.Fatalf("%s: %d series, want 1", name, len(f.GetMetric()))
		}
		return f.GetMetric()[0].GetGauge().GetValue()
	}
	t.Fatalf("%s is not gathered", name)
	return 0
}
