package fakests_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
	awscreds "github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/sts"
	ststypes "github.com/aws/aws-sdk-go-v2/service/sts/types"
	"github.com/aws/smithy-go"
	clocktesting "k8s.io/utils/clock/testing"

	"github.com/kube2ra/kube2ra/test/fakeaws/fakests"
)

const (
	account   = "111122223333"
	nodeKey   = "AKIANODE000000000001"
	nodeARN   = "arn:aws:iam::111122223333:user/node"
	otherKey  = "AKIAOTHER00000000002"
	otherARN  = "arn:aws:iam::111122223333:user/other"
	appRole   = "arn:aws:iam::111122223333:role/app"
	extRole   = "arn:aws:iam::111122223333:role/path/ext"
	tagRole   = "arn:aws:iam::111122223333:role/tagged"
	chainRole = "arn:aws:iam::111122223333:role/chained"
	region    = "eu-west-1"
)

var (
	nodeSecret  = "nodeSecret/0000000000000000000000000000"
	otherSecret = "otherSecret/000000000000000000000000000"
)

// start runs a fake with two users: node may assume every role, other none.
func start(t *testing.T, mutate ...func(*fakests.Options)) *fakests.Server {
	t.Helper()
	opts := fakests.Options{
		Region: region,
		Principals: []fakests.Principal{
			{AccessKeyID: nodeKey, SecretAccessKey: nodeSecret, ARN: nodeARN},
			{AccessKeyID: otherKey, SecretAccessKey: otherSecret, ARN: otherARN},
		},
		Roles: []fakests.Role{
			{ARN: appRole, Trust: []string{nodeARN}},
			{ARN: extRole, Trust: []string{nodeARN}, ExternalID: "ext-123"},
			{ARN: tagRole, Trust: []string{nodeARN}, AllowTagSession: true},
			{ARN: chainRole, Trust: []string{appRole}, MaxSessionDuration: 12 * time.Hour},
		},
	}
	for _, m := range mutate {
		m(&opts)
	}
	s, err := fakests.Start(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return s
}

// client is aws-sdk-go-v2's own STS client pointed at the fake, no retries.
func client(s *fakests.Server, key, secret, token string) *sts.Client {
	return sts.New(sts.Options{
		Region:           region,
		BaseEndpoint:     aws.String(s.URL()),
		Credentials:      awscreds.NewStaticCredentialsProvider(key, secret, token),
		RetryMaxAttempts: 1,
	})
}

// outcome checks err against wantCode ("" for success) and returns the API
// error's code and message, and whether the call failed.
func outcome(t *testing.T, err error, wantCode string) (code, msg string, failed bool) {
	t.Helper()
	if wantCode == "" {
		if err != nil {
			t.Fatalf("want success, got %v", err)
		}
		return "", "", false
	}
	if err == nil {
		t.Fatalf("want %s, got success", wantCode)
	}
	code, msg = apiCode(t, err)
	return code, msg, true
}

func apiCode(t *testing.T, err error) (string, string) {
	t.Helper()
	var ae smithy.APIError
	if !errors.As(err, &ae) {
		t.Fatalf("want an STS API error, got %v", err)
	}
	return ae.ErrorCode(), ae.ErrorMessage()
}

func TestAssumeRoleIssuesCredentialsThatIdentifyTheSession(t *testing.T) {
	s := start(t)
	ctx := context.Background()
	out, err := client(s, nodeKey, nodeSecret, "").AssumeRole(ctx, &sts.AssumeRoleInput{
		RoleArn: aws.String(extRole), RoleSessionName: aws.String("ns.pod"), ExternalId: aws.String("ext-123"), DurationSeconds: aws.Int32(900),
	})
	if err != nil {
		t.Fatal(err)
	}
	c := out.Credentials
	if !strings.HasPrefix(*c.AccessKeyId, "ASIA") || len(*c.AccessKeyId) != 20 || *c.SecretAccessKey == "" || *c.SessionToken == "" {
		t.Fatalf("credentials do not look like STS's: key %q", *c.AccessKeyId)
	}
	if d := time.Until(*c.Expiration); d < 14*time.Minute || d > 16*time.Minute {
		t.Errorf("expiration in %s, want 15m", d)
	}
	wantARN := "arn:aws:sts::" + account + ":assumed-role/ext/ns.pod"
	if *out.AssumedRoleUser.Arn != wantARN || !strings.HasSuffix(*out.AssumedRoleUser.AssumedRoleId, ":ns.pod") {
		t.Errorf("assumed role user = %s %s, want %s", *out.AssumedRoleUser.Arn, *out.AssumedRoleUser.AssumedRoleId, wantARN)
	}
	sess, ok := s.Session(*c.AccessKeyId)
	if !ok || sess.RoleARN != extRole || sess.SessionName != "ns.pod" || sess.ExternalID != "ext-123" || sess.SourceARN != nodeARN {
		t.Errorf("Session(%s) = %+v, %v", *c.AccessKeyId, sess, ok)
	}

	who, err := client(s, *c.AccessKeyId, *c.SecretAccessKey, *c.SessionToken).GetCallerIdentity(ctx, &sts.GetCallerIdentityInput{})
	if err != nil {
		t.Fatal(err)
	}
	if *who.Arn != wantARN || *who.Account != account {
		t.Errorf("GetCallerIdentity = %s %s, want %s", *who.Arn, *who.Account, wantARN)
	}
	if _, err := client(s, *c.AccessKeyId, *c.SecretAccessKey, "forged").GetCallerIdentity(ctx, &sts.GetCallerIdentityInput{}); err == nil {
		t.Error("issued key with a wrong session token was accepted")
	} else if code, _ := apiCode(t, err); code != "InvalidClientTokenId" {
		t.Errorf("wrong session token: code %s, want InvalidClientTokenId", code)
	}
	if s.Calls("AssumeRole") != 1 || s.Calls("GetCallerIdentity") != 2 || s.TotalCalls() != 3 || s.Issued() != 1 {
		t.Errorf("counters: AssumeRole %d, GetCallerIdentity %d, total %d, issued %d", s.Calls("AssumeRole"), s.Calls("GetCallerIdentity"), s.TotalCalls(), s.Issued())
	}
}

func TestAssumeRoleEnforcesTrustAndConditions(t *testing.T) {
	s := start(t)
	tags := []ststypes.Tag{{Key: aws.String("kubernetes-namespace"), Value: aws.String("ns")}}
	for _, tc := range []struct {
		name        string
		key, secret string
		in          sts.AssumeRoleInput
		wantCode    string
		wantStatus  int
		wantMessage string
	}{
		{name: "trusted caller gets the role", key: nodeKey, secret: nodeSecret,
			in: sts.AssumeRoleInput{RoleArn: aws.String(appRole), RoleSessionName: aws.String("a.b")}},
		{name: "untrusted caller is denied with STS's message", key: otherKey, secret: otherSecret,
			in:       sts.AssumeRoleInput{RoleArn: aws.String(appRole), RoleSessionName: aws.String("a.b")},
			wantCode: "AccessDenied", wantStatus: 403,
			wantMessage: "User: " + otherARN + " is not authorized to perform: sts:AssumeRole on resource: " + appRole},
		{name: "unknown role reads like a denial", key: nodeKey, secret: nodeSecret,
			in:       sts.AssumeRoleInput{RoleArn: aws.String("arn:aws:iam::111122223333:role/nope"), RoleSessionName: aws.String("a.b")},
			wantCode: "AccessDenied", wantStatus: 403},
		{name: "missing external ID is denied", key: nodeKey, secret: nodeSecret,
			in:       sts.AssumeRoleInput{RoleArn: aws.String(extRole), RoleSessionName: aws.String("a.b")},
			wantCode: "AccessDenied", wantStatus: 403},
		{name: "wrong external ID is denied", key: nodeKey, secret: nodeSecret,
			in:       sts.AssumeRoleInput{RoleArn: aws.String(extRole), RoleSessionName: aws.String("a.b"), ExternalId: aws.String("ext-999")},
			wantCode: "AccessDenied", wantStatus: 403},
		{name: "tags without sts:TagSession are denied", key: nodeKey, secret: nodeSecret,
			in:       sts.AssumeRoleInput{RoleArn: aws.String(appRole), RoleSessionName: aws.String("a.b"), Tags: tags},
			wantCode: "AccessDenied", wantStatus: 403, wantMessage: "User: " + nodeARN + " is not authorized to perform: sts:TagSession on resource: " + appRole},
		{name: "tags with sts:TagSession are accepted", key: nodeKey, secret: nodeSecret,
			in: sts.AssumeRoleInput{RoleArn: aws.String(tagRole), RoleSessionName: aws.String("a.b"), Tags: tags}},
		{name: "session name with a space is invalid", key: nodeKey, secret: nodeSecret,
			in:       sts.AssumeRoleInput{RoleArn: aws.String(appRole), RoleSessionName: aws.String("a b")},
			wantCode: "ValidationError", wantStatus: 400},
		{name: "one-character session name is invalid", key: nodeKey, secret: nodeSecret,
			in:       sts.AssumeRoleInput{RoleArn: aws.String(appRole), RoleSessionName: aws.String("a")},
			wantCode: "ValidationError", wantStatus: 400},
		{name: "65-character session name is invalid", key: nodeKey, secret: nodeSecret,
			in:       sts.AssumeRoleInput{RoleArn: aws.String(appRole), RoleSessionName: aws.String(strings.Repeat("a", 65))},
			wantCode: "ValidationError", wantStatus: 400},
		{name: "duration under 900 s is invalid", key: nodeKey, secret: nodeSecret,
			in:       sts.AssumeRoleInput{RoleArn: aws.String(appRole), RoleSessionName: aws.String("a.b"), DurationSeconds: aws.Int32(899)},
			wantCode: "ValidationError", wantStatus: 400},
		{name: "duration over 43200 s is invalid", key: nodeKey, secret: nodeSecret,
			in:       sts.AssumeRoleInput{RoleArn: aws.String(appRole), RoleSessionName: aws.String("a.b"), DurationSeconds: aws.Int32(43201)},
			wantCode: "ValidationError", wantStatus: 400},
		{name: "duration over the role's maximum is invalid", key: nodeKey, secret: nodeSecret,
			in:       sts.AssumeRoleInput{RoleArn: aws.String(appRole), RoleSessionName: aws.String("a.b"), DurationSeconds: aws.Int32(7200)},
			wantCode: "ValidationError", wantStatus: 400, wantMessage: "The requested DurationSeconds exceeds the MaxSessionDuration set for this role."},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := client(s, tc.key, tc.secret, "").AssumeRole(context.Background(), &tc.in)
			code, msg, failed := outcome(t, err, tc.wantCode)
			if !failed {
				return
			}
			var re interface{ HTTPStatusCode() int }
			if !errors.As(err, &re) || re.HTTPStatusCode() != tc.wantStatus || code != tc.wantCode {
				t.Fatalf("got %v, want %s with HTTP %d", err, tc.wantCode, tc.wantStatus)
			}
			if tc.wantMessage != "" && msg != tc.wantMessage {
				t.Errorf("message %q, want %q", msg, tc.wantMessage)
			}
		})
	}
}

func TestRoleChainingIsLimitedToOneHour(t *testing.T) {
	s := start(t)
	ctx := context.Background()
	out, err := client(s, nodeKey, nodeSecret, "").AssumeRole(ctx, &sts.AssumeRoleInput{RoleArn: aws.String(appRole), RoleSessionName: aws.String("first")})
	if err != nil {
		t.Fatal(err)
	}
	c := out.Credentials
	session := client(s, *c.AccessKeyId, *c.SecretAccessKey, *c.SessionToken)
	_, err = session.AssumeRole(ctx, &sts.AssumeRoleInput{RoleArn: aws.String(chainRole), RoleSessionName: aws.String("second"), DurationSeconds: aws.Int32(7200)})
	if code, msg := apiCode(t, err); code != "ValidationError" || !strings.Contains(msg, "role chaining") {
		t.Errorf("chained 2 h session: %s %s", code, msg)
	}
	if _, err := session.AssumeRole(ctx, &sts.AssumeRoleInput{RoleArn: aws.String(chainRole), RoleSessionName: aws.String("second")}); err != nil {
		t.Errorf("a role trusted by the caller's role: %v", err)
	}
}

func TestSignatureVerification(t *testing.T) {
	s := start(t)
	ctx := context.Background()
	in := &sts.AssumeRoleInput{RoleArn: aws.String(appRole), RoleSessionName: aws.String("a.b")}

	t.Run("wrong secret is SignatureDoesNotMatch 403", func(t *testing.T) {
		_, err := client(s, nodeKey, "not-the-secret", "").AssumeRole(ctx, in)
		if code, _ := apiCode(t, err); code != "SignatureDoesNotMatch" {
			t.Errorf("code %s", code)
		}
	})
	t.Run("unknown access key is InvalidClientTokenId", func(t *testing.T) {
		_, err := client(s, "AKIAUNKNOWN000000000", nodeSecret, "").AssumeRole(ctx, in)
		if code, _ := apiCode(t, err); code != "InvalidClientTokenId" {
			t.Errorf("code %s", code)
		}
	})
	t.Run("signature scoped to another region is rejected", func(t *testing.T) {
		c := sts.New(sts.Options{Region: "us-west-2", BaseEndpoint: aws.String(s.URL()), RetryMaxAttempts: 1,
			Credentials: awscreds.NewStaticCredentialsProvider(nodeKey, nodeSecret, "")})
		_, err := c.AssumeRole(ctx, in)
		if code, msg := apiCode(t, err); code != "SignatureDoesNotMatch" || !strings.Contains(msg, "region") {
			t.Errorf("got %s %s", code, msg)
		}
	})

	form := "Action=AssumeRole&Version=2011-06-15&RoleArn=" + appRole + "&RoleSessionName=a.b"
	for _, tc := range []struct {
		name     string
		signAt   time.Time
		service  string
		tamper   func(r *http.Request)
		noSign   bool
		wantCode string
		status   int
	}{
		{name: "a correctly signed raw request passes", signAt: time.Now(), service: "sts", status: 200},
		{name: "missing Authorization is MissingAuthenticationToken", noSign: true, wantCode: "MissingAuthenticationToken", status: 403},
		{name: "body changed after signing", signAt: time.Now(), service: "sts", wantCode: "SignatureDoesNotMatch", status: 403,
			tamper: func(r *http.Request) { setBody(r, strings.Replace(form, "a.b", "x.y", 1)) }},
		{name: "signed header changed after signing", signAt: time.Now(), service: "sts", wantCode: "SignatureDoesNotMatch", status: 403,
			tamper: func(r *http.Request) {
				r.Header.Set("X-Amz-Date", time.Now().Add(time.Second).UTC().Format("20060102T150405Z"))
			}},
		{name: "signature hex altered", signAt: time.Now(), service: "sts", wantCode: "SignatureDoesNotMatch", status: 403,
			tamper: func(r *http.Request) {
				h := r.Header.Get("Authorization")
				last := h[len(h)-1]
				repl := byte('0')
				if last == '0' {
					repl = '1'
				}
				r.Header.Set("Authorization", h[:len(h)-1]+string(repl))
			}},
		{name: "signed 10 minutes ago is expired", signAt: time.Now().Add(-10 * time.Minute), service: "sts", wantCode: "SignatureDoesNotMatch", status: 403},
		{name: "signed 10 minutes ahead is not yet current", signAt: time.Now().Add(10 * time.Minute), service: "sts", wantCode: "SignatureDoesNotMatch", status: 403},
		{name: "signed for another service", signAt: time.Now(), service: "iam", wantCode: "SignatureDoesNotMatch", status: 403},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, err := http.NewRequest(http.MethodPost, s.URL()+"/", strings.NewReader(form))
			if err != nil {
				t.Fatal(err)
			}
			r.Header.Set("Content-Type", "application/x-www-form-urlencoded; charset=utf-8")
			if !tc.noSign {
				sum := sha256.Sum256([]byte(form))
				err := v4.NewSigner().SignHTTP(ctx, aws.Credentials{AccessKeyID: nodeKey, SecretAccessKey: nodeSecret}, r, hex.EncodeToString(sum[:]), tc.service, region, tc.signAt)
				if err != nil {
					t.Fatal(err)
				}
			}
			if tc.tamper != nil {
				tc.tamper(r)
			}
			resp, err := http.DefaultClient.Do(r)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tc.status {
				t.Fatalf("HTTP %d, want %d: %s", resp.StatusCode, tc.status, body)
			}
			if tc.wantCode == "" {
				if !bytes.Contains(body, []byte("<AssumeRoleResponse")) || !bytes.Contains(body, []byte("<AssumeRoleResult><AssumedRoleUser>")) {
					t.Errorf("not the AssumeRole response shape: %s", body)
				}
				return
			}
			for _, want := range []string{"<ErrorResponse", "<Error><Type>Sender</Type><Code>" + tc.wantCode + "</Code><Message>", "<RequestId>"} {
				if !bytes.Contains(body, []byte(want)) {
					t.Errorf("error body lacks %q: %s", want, body)
				}
			}
		})
	}
}

func setBody(r *http.Request, body string) {
	r.Body = io.NopCloser(strings.NewReader(body))
	r.ContentLength = int64(len(body))
}

func TestIssuedSessionsExpireOnTheFakeClock(t *testing.T) {
	clk := clocktesting.NewFakePassiveClock(time.Now())
	s := start(t, func(o *fakests.Options) { o.Clock = clk })
	ctx := context.Background()
	out, err := client(s, nodeKey, nodeSecret, "").AssumeRole(ctx, &sts.AssumeRoleInput{RoleArn: aws.String(appRole), RoleSessionName: aws.String("a.b"), DurationSeconds: aws.Int32(900)})
	if err != nil {
		t.Fatal(err)
	}
	c := out.Credentials
	if !c.Expiration.Equal(clk.Now().Add(15 * time.Minute).Truncate(time.Second)) {
		t.Errorf("expiration %s not 15 min after the fake clock's %s", c.Expiration, clk.Now())
	}
	clk.SetTime(clk.Now().Add(16 * time.Minute))
	_, err = client(s, *c.AccessKeyId, *c.SecretAccessKey, *c.SessionToken).GetCallerIdentity(ctx, &sts.GetCallerIdentityInput{})
	if code, _ := apiCode(t, err); code != "ExpiredToken" {
		t.Errorf("expired session: code %s", code)
	}
}

func TestKnobs(t *testing.T) {
	s := start(t)
	ctx := context.Background()
	in := &sts.AssumeRoleInput{RoleArn: aws.String(appRole), RoleSessionName: aws.String("a.b")}
	c := client(s, nodeKey, nodeSecret, "")

	t.Run("throttle answers 400 Throttling Rate exceeded", func(t *testing.T) {
		s.ThrottleNext(1)
		_, err := c.AssumeRole(ctx, in)
		var re interface{ HTTPStatusCode() int }
		if code, msg := apiCode(t, err); code != "Throttling" || msg != "Rate exceeded" || !errors.As(err, &re) || re.HTTPStatusCode() != 400 {
			t.Errorf("got %v", err)
		}
		if _, err := c.AssumeRole(ctx, in); err != nil {
			t.Errorf("after ThrottleNext(1) the next call should pass: %v", err)
		}
	})
	t.Run("failure answers 500", func(t *testing.T) {
		s.FailNext(1)
		_, err := c.AssumeRole(ctx, in)
		var re interface{ HTTPStatusCode() int }
		if !errors.As(err, &re) || re.HTTPStatusCode() != 500 {
			t.Errorf("got %v", err)
		}
		s.SetFailurePercent(100)
		if _, err := c.AssumeRole(ctx, in); err == nil {
			t.Error("100% failure let a call through")
		}
		s.SetFailurePercent(0)
	})
	t.Run("outage drops connections", func(t *testing.T) {
		s.SetOutage(true)
		_, err := c.AssumeRole(ctx, in)
		var ae smithy.APIError
		if err == nil || errors.As(err, &ae) {
			t.Errorf("want a connection error, got %v", err)
		}
		s.SetOutage(false)
		if _, err := c.AssumeRole(ctx, in); err != nil {
			t.Errorf("after the outage: %v", err)
		}
	})
	t.Run("latency delays answers", func(t *testing.T) {
		s.SetLatency(300 * time.Millisecond)
		defer s.SetLatency(0)
		tctx, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
		defer cancel()
		if _, err := c.AssumeRole(tctx, in); err == nil {
			t.Error("a 300 ms answer beat a 100 ms deadline")
		}
	})
}

func TestServeOnAListener(t *testing.T) {
	s, err := fakests.New(fakests.Options{
		Region:     region,
		Principals: []fakests.Principal{{AccessKeyID: nodeKey, SecretAccessKey: nodeSecret, ARN: nodeARN}},
	})
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- s.Serve(l) }()
	c := sts.New(sts.Options{Region: region, BaseEndpoint: aws.String("http://" + l.Addr().String()), RetryMaxAttempts: 1,
		Credentials: awscreds.NewStaticCredentialsProvider(nodeKey, nodeSecret, "")})
	who, err := c.GetCallerIdentity(context.Background(), &sts.GetCallerIdentityInput{})
	if err != nil || *who.Arn != nodeARN {
		t.Fatalf("GetCallerIdentity = %v, %v", who, err)
	}
	s.Close()
	if err := <-done; !errors.Is(err, http.ErrServerClosed) {
		t.Errorf("Serve returned %v", err)
	}
}

func TestPrincipalWithSessionTokenNeedsIt(t *testing.T) {
	const key, secret, token = "ASIANODEINSTANCE0001", "instanceSecret/0000000000000000000000000", "instance-token"
	instanceARN := "arn:aws:sts::111122223333:assumed-role/node-role/i-0123456789"
	s := start(t, func(o *fakests.Options) {
		o.Principals = append(o.Principals, fakests.Principal{AccessKeyID: key, SecretAccessKey: secret, SessionToken: token, ARN: instanceARN})
		o.Roles = append(o.Roles, fakests.Role{ARN: "arn:aws:iam::111122223333:role/pod", Trust: []string{"arn:aws:iam::111122223333:role/node-role"}})
	})
	ctx := context.Background()
	in := &sts.AssumeRoleInput{RoleArn: aws.String("arn:aws:iam::111122223333:role/pod"), RoleSessionName: aws.String("a.b")}
	if _, err := client(s, key, secret, token).AssumeRole(ctx, in); err != nil {
		t.Fatalf("instance role session trusted by role ARN: %v", err)
	}
	if _, err := client(s, key, secret, "").AssumeRole(ctx, in); err == nil {
		t.Fatal("missing session token accepted")
	}
}
