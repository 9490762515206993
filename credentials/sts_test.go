package credentials

import (
	"context"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	awscreds "github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/smithy-go"
	"github.com/aws/smithy-go/logging"
	"github.com/sirupsen/logrus"

	"github.com/kube2ra/kube2ra/test/fakeaws/fakests"
)

func TestSTSSourceAssumesTheRequestedRole(t *testing.T) {
	env := newSTSEnv(t)
	req := Request{RoleARN: tagRoleARN, SessionName: SessionName("team-a", "web-0"), Tags: SessionTags("team-a", "web-0", "web", "node-1")}
	creds, err := env.source.Fetch(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(creds.AccessKeyID, "ASIA") || creds.SecretAccessKey == "" || creds.SessionToken == "" {
		t.Fatalf("incomplete credentials %s", creds)
	}
	if want := env.clock.Now().Add(testDuration); !creds.Expiration.Equal(want) {
		t.Errorf("expiration %s, want %s (DurationSeconds from STSOptions.Duration)", creds.Expiration, want)
	}
	if !creds.LastUpdated.Equal(env.clock.Now()) {
		t.Errorf("LastUpdated %s, want the injected clock's %s", creds.LastUpdated, env.clock.Now())
	}
	sess, ok := env.fake.Session(creds.AccessKeyID)
	if !ok {
		t.Fatal("the fake did not issue these credentials")
	}
	if sess.RoleARN != tagRoleARN || sess.SessionName != "team-a.web-0" || sess.SourceARN != nodeARN {
		t.Errorf("issued for %+v", sess)
	}
	want := map[string]string{TagNamespace: "team-a", TagPodName: "web-0", TagServiceAccount: "web", TagNode: "node-1"}
	if len(sess.Tags) != len(want) {
		t.Errorf("tags %v, want %v", sess.Tags, want)
	}
	for k, v := range want {
		if sess.Tags[k] != v {
			t.Errorf("tag %s = %q, want %q", k, sess.Tags[k], v)
		}
	}
	if s := creds.String(); strings.Contains(s, creds.SecretAccessKey) || strings.Contains(s, creds.SessionToken) {
		t.Error("Credentials.String shows a secret")
	}
}

// TestSTSSourceFallsBackToOneHourForARoleWithAShorterMaximum: with a 6 h
// --iam-role-session-ttl, a role left at IAM's default MaxSessionDuration
// (1 h) refuses the call (ValidationError); the source asks again for 1 h,
// which every role grants, and asks that role for 1 h from then on. A role
// allowing 12 h still gets 6 h. Before, every pod of such a role got no
// credentials.
func TestSTSSourceFallsBackToOneHourForARoleWithAShorterMaximum(t *testing.T) {
	env := newSTSEnv(t, func(o *STSOptions) { o.Duration = 6 * time.Hour })
	const longRoleARN = "arn:aws:iam::123456789012:role/long-sessions"
	if err := env.fake.AddRole(fakests.Role{ARN: longRoleARN, Trust: []string{nodeARN}, MaxSessionDuration: 12 * time.Hour}); err != nil {
		t.Fatal(err)
	}
	req := Request{RoleARN: appRoleARN, SessionName: SessionName("ns", "pod")}
	creds, err := env.source.Fetch(context.Background(), req)
	if err != nil {
		t.Fatalf("a 6 h session of a role allowing 1 h: %v, want 1 h credentials", err)
	}
	if want := env.clock.Now().Add(time.Hour); !creds.Expiration.Equal(want) {
		t.Errorf("expiration %s, want %s (1 h)", creds.Expiration, want)
	}
	if got := env.fake.Calls("AssumeRole"); got != 2 {
		t.Errorf("%d AssumeRole calls for the first fetch, want 2 (refused, then 1 h)", got)
	}
	if _, err := env.source.Fetch(context.Background(), req); err != nil || env.fake.Calls("AssumeRole") != 3 {
		t.Errorf("the second fetch: %v after %d calls in all, want one more call asking 1 h straight away", err, env.fake.Calls("AssumeRole"))
	}
	long, err := env.source.Fetch(context.Background(), Request{RoleARN: longRoleARN, SessionName: SessionName("ns", "pod")})
	if err != nil || !long.Expiration.Equal(env.clock.Now().Add(6*time.Hour)) {
		t.Errorf("a role allowing 12 h: %v, expiration %s, want 6 h", err, long.Expiration)
	}
}

func TestSTSSourcePassesTheExternalID(t *testing.T) {
	env := newSTSEnv(t)
	creds, err := env.source.Fetch(context.Background(), Request{RoleARN: extRoleARN, ExternalID: extRoleID, SessionName: "ns.pod"})
	if err != nil {
		t.Fatal(err)
	}
	if sess, _ := env.fake.Session(creds.AccessKeyID); sess.ExternalID != extRoleID {
		t.Errorf("external ID at STS = %q, want %q", sess.ExternalID, extRoleID)
	}
}

func TestSTSSourceMapsErrorsToKinds(t *testing.T) {
	for _, tc := range []struct {
		name      string
		secret    string
		req       Request
		setup     func(*stsEnv)
		duration  time.Duration
		wantKind  ErrorKind
		wantCode  string
		wantInMsg string
		wantCalls int
	}{
		{name: "a bad signature is denied", secret: "wrong-secret", req: Request{RoleARN: appRoleARN, SessionName: "ns.pod"},
			wantKind: KindDenied, wantCode: "SignatureDoesNotMatch", wantCalls: 1},
		{name: "an untrusted role is denied with STS's message", req: Request{RoleARN: deniedRoleARN, SessionName: "ns.pod"},
			wantKind: KindDenied, wantCode: "AccessDenied", wantCalls: 1,
			wantInMsg: "User: " + nodeARN + " is not authorized to perform: sts:AssumeRole on resource: " + deniedRoleARN},
		{name: "a missing external ID is denied", req: Request{RoleARN: extRoleARN, SessionName: "ns.pod"},
			wantKind: KindDenied, wantCode: "AccessDenied", wantCalls: 1},
		{name: "a wrong external ID is denied", req: Request{RoleARN: extRoleARN, ExternalID: "ext-999", SessionName: "ns.pod"},
			wantKind: KindDenied, wantCode: "AccessDenied", wantCalls: 1},
		{name: "an invalid session name is invalid", req: Request{RoleARN: appRoleARN, SessionName: "ns pod"},
			wantKind: KindInvalid, wantCode: "ValidationError", wantInMsg: "roleSessionName", wantCalls: 1},
		{name: "throttling is throttled and not retried by the SDK", req: Request{RoleARN: appRoleARN, SessionName: "ns.pod"},
			setup:    func(e *stsEnv) { e.fake.SetThrottle(true) },
			wantKind: KindThrottled, wantCode: "Throttling", wantInMsg: "Rate exceeded", wantCalls: 1},
		{name: "a 500 is unavailable after one SDK retry", req: Request{RoleARN: appRoleARN, SessionName: "ns.pod"},
			setup:    func(e *stsEnv) { e.fake.SetFailurePercent(100) },
			wantKind: KindUnavailable, wantCode: "InternalFailure", wantCalls: 2},
		{name: "an unreachable endpoint is unavailable", req: Request{RoleARN: appRoleARN, SessionName: "ns.pod"},
			setup:    func(e *stsEnv) { e.fake.SetOutage(true) },
			wantKind: KindUnavailable, wantCalls: 2},
		{name: "no session name is invalid without a call", req: Request{RoleARN: appRoleARN},
			wantKind: KindInvalid, wantInMsg: "session name", wantCalls: 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			env := newSTSEnv(t, func(o *STSOptions) {
				if tc.secret != "" {
					o.BaseCredentials = awscreds.NewStaticCredentialsProvider(nodeKeyID, tc.secret, "")
				}
				if tc.duration != 0 {
					o.Duration = tc.duration
				}
			})
			if tc.setup != nil {
				tc.setup(env)
			}
			_, err := env.source.Fetch(context.Background(), tc.req)
			var e *Error
			if !errors.As(err, &e) {
				t.Fatalf("want *Error, got %v", err)
			}
			if e.Kind != tc.wantKind || e.Code != tc.wantCode || KindOf(err) != tc.wantKind {
				t.Errorf("kind %s code %q, want %s %q (%v)", e.Kind, e.Code, tc.wantKind, tc.wantCode, err)
			}
			if e.Source != STSSourceName || e.RoleARN != tc.req.RoleARN {
				t.Errorf("error names source %q role %q", e.Source, e.RoleARN)
			}
			if !strings.Contains(e.Error(), tc.wantInMsg) {
				t.Errorf("message %q lacks %q", e.Error(), tc.wantInMsg)
			}
			if tc.wantCode != "" {
				var ae smithy.APIError
				if !errors.As(err, &ae) {
					t.Error("the SDK's API error is not reachable with errors.As")
				}
			}
			if got := env.fake.Calls("AssumeRole"); got != tc.wantCalls {
				t.Errorf("%d calls reached STS, want %d", got, tc.wantCalls)
			}
		})
	}
}

func TestSTSEndpointFromTheSDKEnvironment(t *testing.T) {
	env := newSTSEnv(t)
	t.Setenv("AWS_ENDPOINT_URL_STS", env.fake.URL())
	src, err := NewSTSSource(context.Background(), STSOptions{
		Region:          testRegion,
		BaseCredentials: awscreds.NewStaticCredentialsProvider(nodeKeyID, nodeSecretKey, ""),
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := src.Fetch(context.Background(), Request{RoleARN: appRoleARN, SessionName: "ns.pod"}); err != nil {
		t.Fatalf("AWS_ENDPOINT_URL_STS was not used: %v", err)
	}
	if env.fake.Calls("AssumeRole") != 1 {
		t.Errorf("the fake saw %d calls", env.fake.Calls("AssumeRole"))
	}
}

func TestSTSEndpointOptionWinsOverTheEnvironment(t *testing.T) {
	env := newSTSEnv(t)
	t.Setenv("AWS_ENDPOINT_URL_STS", "http://127.0.0.1:1") // nothing listens there
	src, err := NewSTSSource(context.Background(), STSOptions{
		Region:          testRegion,
		Endpoint:        env.fake.URL(),
		BaseCredentials: awscreds.NewStaticCredentialsProvider(nodeKeyID, nodeSecretKey, ""),
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := src.Fetch(context.Background(), Request{RoleARN: appRoleARN, SessionName: "ns.pod"}); err != nil {
		t.Fatalf("--sts-endpoint did not win: %v", err)
	}
}

// hostRecorder is an HTTP transport that records where requests would go
// and answers none, so endpoint resolution is checked without a network.
type hostRecorder struct {
	mu    sync.Mutex
	hosts []string
}

func (h *hostRecorder) RoundTrip(r *http.Request) (*http.Response, error) {
	h.mu.Lock()
	h.hosts = append(h.hosts, r.URL.Scheme+"://"+r.URL.Host)
	h.mu.Unlock()
	return nil, errors.New("recorded, not sent")
}

func TestSTSUsesTheRegionalEndpoint(t *testing.T) {
	for _, region := range []string{"eu-west-1", "us-east-1", "ap-southeast-2"} {
		t.Run(region, func(t *testing.T) {
			isolateAWSEnv(t)
			rec := &hostRecorder{}
			src, err := NewSTSSource(context.Background(), STSOptions{
				Region:          region,
				BaseCredentials: awscreds.NewStaticCredentialsProvider(nodeKeyID, nodeSecretKey, ""),
				HTTPClient:      &http.Client{Transport: rec},
				MaxAttempts:     1,
			})
			if err != nil {
				t.Fatal(err)
			}
			_, err = src.Fetch(context.Background(), Request{RoleARN: appRoleARN, SessionName: "ns.pod"})
			if KindOf(err) != KindUnavailable {
				t.Errorf("a transport error should be unavailable: %v", err)
			}
			want := "https://sts." + region + ".amazonaws.com"
			if len(rec.hosts) != 1 || rec.hosts[0] != want {
				t.Errorf("requests went to %v, want %s", rec.hosts, want)
			}
		})
	}
}

func TestNewSTSSourceRejectsBadOptions(t *testing.T) {
	isolateAWSEnv(t)
	base := awscreds.NewStaticCredentialsProvider(nodeKeyID, nodeSecretKey, "")
	for _, tc := range []struct {
		name string
		opts STSOptions
		want string
	}{
		{name: "no region anywhere", opts: STSOptions{BaseCredentials: base}, want: "--region"},
		{name: "duration under 15 minutes", opts: STSOptions{Region: testRegion, BaseCredentials: base, Duration: time.Minute}, want: "--iam-role-session-ttl"},
		{name: "duration over 12 hours", opts: STSOptions{Region: testRegion, BaseCredentials: base, Duration: 13 * time.Hour}, want: "--iam-role-session-ttl"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := NewSTSSource(context.Background(), tc.opts)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("got %v, want an error naming %s", err, tc.want)
			}
		})
	}
}

// TestSTSSDKLogsGoThroughLogrus: the SDK's own warnings (retries, clock
// skew) come out of the process logger, so --log-format json stays JSON.
// Without config.WithLogger the SDK writes plain "SDK … WARN" lines.
func TestSTSSDKLogsGoThroughLogrus(t *testing.T) {
	isolateAWSEnv(t)
	var out strings.Builder
	log := logrus.New()
	log.SetOutput(&out)
	log.SetFormatter(&logrus.JSONFormatter{})
	src, err := NewSTSSource(context.Background(), STSOptions{
		Region:          "eu-west-1",
		BaseCredentials: awscreds.NewStaticCredentialsProvider(nodeKeyID, nodeSecretKey, ""),
		Logger:          log,
	})
	if err != nil {
		t.Fatal(err)
	}
	src.client.Options().Logger.Logf(logging.Warn, "retrying %s", "AssumeRole")
	var line map[string]any
	if err := json.Unmarshal([]byte(out.String()), &line); err != nil {
		t.Fatalf("the SDK's warning is not one JSON line (%v): %q", err, out.String())
	}
	if line["level"] != "warning" || line["msg"] != "retrying AssumeRole" || line["component"] != "aws-sdk" {
		t.Errorf("SDK warning logged as %v", line)
	}
}

// stsTrustChildEnv makes this test binary, run again, build an STS source
// and print whether it could: the system trust store is read once per
// process, so an empty one needs a process of its own.
const stsTrustChildEnv = "KUBE2RA_TEST_STS_TRUST_ENDPOINT"

// stsTrustChild is TestMain's child mode; it reports whether it ran.
func stsTrustChild() bool {
	endpoint, ok := os.LookupEnv(stsTrustChildEnv)
	if !ok {
		return false
	}
	region := os.Getenv("AWS_REGION") // --region
	if region == "" {
		region = "eu-west-1"
	}
	_, err := NewSTSSource(context.Background(), STSOptions{
		Region:          region,
		Endpoint:        endpoint,
		BaseCredentials: awscreds.NewStaticCredentialsProvider(nodeKeyID, nodeSecretKey, ""),
	})
	if err != nil {
		fmt.Print("ERROR " + err.Error())
	} else {
		fmt.Print("OK")
	}
	return true
}

// With no CA certificate on the system, an STS source that would verify
// HTTPS is refused when it is built, saying so; a CA bundle of its own or a
// plain HTTP endpoint needs none.
func TestSTSSourceRefusesHTTPSWithNoCertificateAuthority(t *testing.T) {
	dir := t.TempDir() // empty: the system store
	bundle := filepath.Join(t.TempDir(), "bundle.pem")
	// Any certificate makes a bundle: the test server's own.
	srv := httptest.NewTLSServer(http.NotFoundHandler())
	srv.Close()
	if err := os.WriteFile(bundle, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}), 0o644); err != nil {
		t.Fatal(err)
	}
	run := func(endpoint string, env ...string) string {
		cmd := exec.Command(os.Args[0])
		cmd.Env = append([]string{
			stsTrustChildEnv + "=" + endpoint, "HOME=" + dir,
			"SSL_CERT_FILE=" + filepath.Join(dir, "none.pem"), "SSL_CERT_DIR=" + dir,
			"AWS_CONFIG_FILE=/dev/null", "AWS_SHARED_CREDENTIALS_FILE=/dev/null",
		}, env...)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("child: %v: %s", err, out)
		}
		return string(out)
	}
	got := run("")
	for _, want := range []string{"ERROR sts: the STS endpoint", "https://sts.eu-west-1.amazonaws.com", "trusts no certificate authority", "AWS_CA_BUNDLE"} {
		if !strings.Contains(got, want) {
			t.Errorf("the regional endpoint: %q lacks %q", got, want)
		}
	}
	if got := run("", "AWS_REGION=cn-north-1"); !strings.Contains(got, "https://sts.cn-north-1.amazonaws.com.cn is HTTPS") {
		t.Errorf("a China region names its own endpoint: %q", got)
	}
	if got := run("https://sts.example.test"); !strings.Contains(got, "ERROR sts: the STS endpoint (--sts-endpoint, else the region's) https://sts.example.test") {
		t.Errorf("--sts-endpoint over HTTPS: %q", got)
	}
	if got := run("", "AWS_ENDPOINT_URL_STS=https://sts.env.test"); !strings.Contains(got, "https://sts.env.test is HTTPS") {
		t.Errorf("AWS_ENDPOINT_URL_STS over HTTPS: %q", got)
	}
	if got := run("", "AWS_CA_BUNDLE="+bundle); got != "OK" {
		t.Errorf("with AWS_CA_BUNDLE: %q, want OK", got)
	}
	if got := run("http://127.0.0.1:1"); got != "OK" {
		t.Errorf("--sts-endpoint over plain HTTP: %q, want OK", got)
	}
	if got := run("", "AWS_ENDPOINT_URL_STS=http://127.0.0.1:1"); got != "OK" {
		t.Errorf("AWS_ENDPOINT_URL_STS over plain HTTP: %q, want OK", got)
	}
}

func TestMain(m *testing.M) {
	if stsTrustChild() {
		os.Exit(0)
	}
	os.Exit(m.Run())
}
