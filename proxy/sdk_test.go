package proxy

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials/ec2rolecreds"
	"github.com/aws/aws-sdk-go-v2/feature/ec2/imds"

	"github.com/kube2ra/kube2ra/k8s"
)

// The tests in this file run SDKs nobody here wrote against the proxy on
// loopback: aws-sdk-go-v2 in process, and botocore through boto3, AWS CLI v1
// and AWS CLI v2 as separate processes. Each must obtain exactly the
// credentials the fake CredentialGetter returned, over IMDSv2 and over
// IMDSv1. "IMDSv1" is a client that fell back after its token PUT was
// refused: the SDKs have no switch to skip the PUT, so a small front on
// loopback answers 403 to PUTs (the SDKs' documented fallback trigger) and
// relays everything else to the proxy unchanged.

// v1Front refuses token PUTs and relays the rest; it counts GETs that
// carried a token anyway.
type v1Front struct {
	url        string
	mu         sync.Mutex
	tokenGETs  int
	plainGETs  int
	refusedPUT int
}

func newV1Front(t *testing.T, target string) *v1Front {
	t.Helper()
	f := &v1Front{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f.mu.Lock()
		switch {
		case r.Method == http.MethodPut:
			f.refusedPUT++
		case r.Header.Get(tokenHeader) != "":
			f.tokenGETs++
		default:
			f.plainGETs++
		}
		f.mu.Unlock()
		if r.Method == http.MethodPut {
			w.WriteHeader(http.StatusForbidden)
			return
		}
		req, err := http.NewRequestWithContext(r.Context(), r.Method, target+r.RequestURI, nil)
		if err != nil {
			w.WriteHeader(http.StatusBadGateway)
			return
		}
		req.Header = r.Header.Clone()
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			w.WriteHeader(http.StatusBadGateway)
			return
		}
		defer resp.Body.Close()
		for k, v := range resp.Header {
			w.Header()[k] = v
		}
		w.WriteHeader(resp.StatusCode)
		_, _ = io.Copy(w, resp.Body)
	}))
	t.Cleanup(srv.Close)
	f.url = srv.URL
	return f
}

func (f *v1Front) counts() (plain, withToken, refusedPUT int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.plainGETs, f.tokenGETs, f.refusedPUT
}

// imdsMode is how a client talks to the proxy.
type imdsMode struct {
	name string
	// v1 routes the client through a v1Front.
	v1 bool
	// required turns IMDSv2Required on in the proxy.
	required bool
	// wantCreds is false when the client must end up without credentials.
	wantCreds bool
}

var imdsModes = []imdsMode{
	{name: "IMDSv2", wantCreds: true},
	{name: "IMDSv1", v1: true, wantCreds: true},
	{name: "IMDSv1 refused when IMDSv2 is required", v1: true, required: true, wantCreds: false},
}

// endpointFor starts a proxy for mode and returns the env and the URL the client should use.
func endpointFor(t *testing.T, mode imdsMode, opts Options) (*testEnv, string, *v1Front) {
	t.Helper()
	opts.IMDSv2Required = mode.required
	e := newTestEnv(t, opts)
	if !mode.v1 {
		return e, e.url, nil
	}
	f := newV1Front(t, e.url)
	return e, f.url, f
}

// checkIMDSVersionUsed asserts from the proxy's log lines that credential
// requests came with a token (v2) or without (v1).
func checkIMDSVersionUsed(t *testing.T, e *testEnv, mode imdsMode) {
	t.Helper()
	if !mode.wantCreds {
		return
	}
	n := 0
	for _, line := range strings.Split(strings.TrimSpace(e.logs.String()), "\n") {
		var l map[string]any
		if json.Unmarshal([]byte(line), &l) != nil || l["route"] != routeCredentials {
			continue
		}
		n++
		if l["imdsv2"] != !mode.v1 {
			t.Errorf("credential request with imdsv2=%v in %s mode: %s", l["imdsv2"], mode.name, line)
		}
	}
	if n == 0 {
		t.Errorf("no credential request in the proxy log:\n%s", e.logs.String())
	}
}

// goSDKClientFor starts a proxy for mode and an aws-sdk-go-v2 IMDS client
// pointed at it (through the IMDSv1 front when mode asks for one).
func goSDKClientFor(t *testing.T, mode imdsMode) (*testEnv, *imds.Client, *v1Front) {
	t.Helper()
	e, endpoint, front := endpointFor(t, mode, Options{})
	return e, imds.New(imds.Options{Endpoint: endpoint}), front
}

func TestGoSDKCredentialsAndRegion(t *testing.T) {
	for _, mode := range imdsModes {
		t.Run(mode.name, func(t *testing.T) {
			e, client, front := goSDKClientFor(t, mode)
			want := e.creds.creds
			provider := ec2rolecreds.New(func(o *ec2rolecreds.Options) { o.Client = client })
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			got, err := provider.Retrieve(ctx)
			if !mode.wantCreds {
				if err == nil {
					t.Fatalf("got credentials %s without a token while IMDSv2 is required", got.AccessKeyID)
				}
				return
			}
			if err != nil {
				t.Fatalf("Retrieve: %v", err)
			}
			if got.AccessKeyID != want.AccessKeyID || got.SecretAccessKey != want.SecretAccessKey || got.SessionToken != want.SessionToken {
				t.Errorf("credentials %s differ from the getter's %s", got.AccessKeyID, want.AccessKeyID)
			}
			if !got.CanExpire || !got.Expires.Equal(want.Expiration) {
				t.Errorf("expiry %v (can expire %v), want %v", got.Expires, got.CanExpire, want.Expiration)
			}
			region, err := client.GetRegion(ctx, &imds.GetRegionInput{})
			if err != nil {
				t.Fatalf("GetRegion: %v", err)
			}
			if region.Region != e.up.Region() {
				t.Errorf("region %q, want the upstream's %q", region.Region, e.up.Region())
			}
			checkIMDSVersionUsed(t, e, mode)
			if front != nil {
				if _, withToken, refused := front.counts(); withToken != 0 || refused == 0 {
					t.Errorf("v1 mode: %d GETs with token, %d refused PUTs", withToken, refused)
				}
			}
		})
	}
}

// TestGoSDKRoleNamesWithIAMPunctuation: IAM role names may carry "+", "=",
// ",", "@", ".", "_" and "-", and SDKs put the name in the document's
// path as the listing gave it; the path gate lets each through (it once
// answered 400 to "+=,@").
func TestGoSDKRoleNamesWithIAMPunctuation(t *testing.T) {
	for _, name := range []string{"app+prod", "svc@team", "a=b", "x,y", "path.role_with-all+=,@"} {
		t.Run(name, func(t *testing.T) {
			e, client, _ := goSDKClientFor(t, imdsModes[0])
			e.roles.set(k8s.Role{ARN: "arn:aws:iam::" + testAccountID + ":role/" + name, Name: name, AccountID: testAccountID}, nil)
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			got, err := ec2rolecreds.New(func(o *ec2rolecreds.Options) { o.Client = client }).Retrieve(ctx)
			if err != nil {
				t.Fatalf("Retrieve for role %q: %v", name, err)
			}
			if got.AccessKeyID != e.creds.creds.AccessKeyID {
				t.Errorf("credentials %s, want the getter's %s", got.AccessKeyID, e.creds.creds.AccessKeyID)
			}
		})
	}
}

// aws-sdk-go-v2's ec2rolecreds (v1.20.15 here) and botocore (1.43) still
// read security-credentials/ only; Java v2, Ruby and PHP read
// security-credentials-extended/ first, for AccountId, and fall back on a
// 404. None of those is on this machine, so the Go SDK's own IMDS client
// (its token PUT, token header, retries and IMDSv1 fallback) walks the
// extended directory the way they do: the listing names the role, the
// document carries the credentials and the role's account, and a pod
// without a role gets the 404 that makes those SDKs fall back.
func TestGoSDKIMDSClientReadsExtendedCredentials(t *testing.T) {
	for _, mode := range imdsModes {
		t.Run(mode.name, func(t *testing.T) {
			e, client, _ := goSDKClientFor(t, mode)
			want := e.creds.creds
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			read := func(path string) (string, error) {
				out, err := client.GetMetadata(ctx, &imds.GetMetadataInput{Path: path})
				if err != nil {
					return "", err
				}
				defer out.Content.Close()
				b, err := io.ReadAll(out.Content)
				return string(b), err
			}
			name, err := read("iam/security-credentials-extended/")
			if !mode.wantCreds {
				if err == nil {
					t.Fatalf("listed role %q without a token while IMDSv2 is required", name)
				}
				return
			}
			if err != nil || name != testRoleName {
				t.Fatalf("extended listing = %q, %v; want %q", name, err, testRoleName)
			}
			body, err := read("iam/security-credentials-extended/" + name)
			if err != nil {
				t.Fatalf("extended document: %v", err)
			}
			var doc struct {
				Code, AccessKeyID, SecretAccessKey, Token, AccountID string
				Expiration                                           time.Time
			}
			if err := json.Unmarshal([]byte(body), &doc); err != nil {
				t.Fatalf("extended document %q: %v", body, err)
			}
			if doc.Code != "Success" || doc.AccessKeyID != want.AccessKeyID || doc.SecretAccessKey != want.SecretAccessKey ||
				doc.Token != want.SessionToken || !doc.Expiration.Equal(want.Expiration) {
				t.Errorf("extended document carries other credentials than the getter's %s", want.AccessKeyID)
			}
			if doc.AccountID != testAccountID {
				t.Errorf("AccountId %q, want the role's account %s", doc.AccountID, testAccountID)
			}
			e.roles.set(k8s.Role{}, k8s.ErrNoRole)
			_, err = read("iam/security-credentials-extended/")
			var status interface{ HTTPStatusCode() int }
			if !errors.As(err, &status) || status.HTTPStatusCode() != http.StatusNotFound {
				t.Errorf("extended listing for a pod without a role: %v; want the 404 SDKs fall back on", err)
			}
		})
	}
}

func TestGoSDKV2OnlyClient(t *testing.T) {
	e := newTestEnv(t, Options{IMDSv2Required: true})
	client := imds.New(imds.Options{Endpoint: e.url, EnableFallback: aws.FalseTernary})
	got, err := ec2rolecreds.New(func(o *ec2rolecreds.Options) { o.Client = client }).Retrieve(context.Background())
	if err != nil || got.AccessKeyID != testCredentials().AccessKeyID {
		t.Fatalf("Retrieve = %v, %v", got.AccessKeyID, err)
	}
}

func TestGoSDKRegionOffAWS(t *testing.T) {
	e := newTestEnv(t, Options{MetadataAddr: MetadataAddrNone, Region: "ca-central-1"})
	client := imds.New(imds.Options{Endpoint: e.url})
	region, err := client.GetRegion(context.Background(), &imds.GetRegionInput{})
	if err != nil || region.Region != "ca-central-1" {
		t.Fatalf("GetRegion = %+v, %v", region, err)
	}
	doc, err := client.GetInstanceIdentityDocument(context.Background(), &imds.GetInstanceIdentityDocumentInput{})
	if err != nil || doc.AvailabilityZone != "ca-central-1a" {
		t.Fatalf("GetInstanceIdentityDocument = %+v, %v", doc, err)
	}
}

// pythonWithBoto3 is the interpreter that has boto3 and awscli (v1)
// installed, resolved once so that tests can run it with HOME elsewhere
// (a pyenv shim would look for its versions under $HOME).
var pythonWithBoto3 = sync.OnceValues(func() (string, error) {
	out, err := exec.Command("python3", "-c", "import sys, boto3, awscli; print(sys.executable)").CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("python3 with boto3 and awscli (v1) is needed: install them with `pip install boto3 awscli`: %v: %s", err, out)
	}
	return strings.TrimSpace(string(out)), nil
})

// awsCLIv2 is Debian's AWS CLI v2.
const awsCLIv2 = "/usr/bin/aws"

func needPython(t *testing.T) string {
	t.Helper()
	py, err := pythonWithBoto3()
	if err != nil {
		t.Fatal(err)
	}
	return py
}

func needCLIv2(t *testing.T) {
	t.Helper()
	out, err := exec.Command(awsCLIv2, "--version").CombinedOutput()
	if err != nil || !strings.HasPrefix(string(out), "aws-cli/2.") {
		t.Fatalf("AWS CLI v2 is needed at %s: install it with `apt-get install awscli` (Debian 12 ships v2): %v: %s", awsCLIv2, err, out)
	}
}

// isolatedEnv is a process environment with nothing of the host's AWS
// setup: a fresh HOME, no AWS_* variables, no proxies, no config or
// credential files, and only the metadata endpoint under test.
func isolatedEnv(t *testing.T, endpoint string, v2Only bool, extra ...string) []string {
	t.Helper()
	home := t.TempDir()
	env := []string{
		"HOME=" + home,
		"PATH=" + os.Getenv("PATH"),
		"LANG=C.UTF-8",
		"AWS_CONFIG_FILE=/dev/null",
		"AWS_SHARED_CREDENTIALS_FILE=/dev/null",
		"AWS_EC2_METADATA_DISABLED=false",
		"AWS_EC2_METADATA_SERVICE_ENDPOINT=" + endpoint + "/",
		// botocore's default is 1 s and one attempt; the machine running
		// the tests may be loaded, and timing is not what is tested here.
		"AWS_METADATA_SERVICE_TIMEOUT=10",
		"AWS_METADATA_SERVICE_NUM_ATTEMPTS=1",
		"AWS_PAGER=",
	}
	if v2Only {
		env = append(env, "AWS_EC2_METADATA_V1_DISABLED=true")
	}
	return append(env, extra...)
}

// run runs a command with env and a time bound.
func run(t *testing.T, env []string, name string, args ...string) (string, string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = env
	cmd.Dir = t.TempDir()
	var stdout, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	return stdout.String(), stderr.String(), err
}

const boto3Script = `
import json, boto3, botocore.utils
s = boto3.Session()
c = s.get_credentials()
out = {"found": c is not None}
if c is not None:
    f = c.get_frozen_credentials()
    exp = getattr(c, "_expiry_time", None)
    out.update(access_key=f.access_key, secret_key=f.secret_key, token=f.token, method=c.method,
               expiry=exp.strftime("%Y-%m-%dT%H:%M:%SZ") if exp else None)
out["region"] = botocore.utils.IMDSRegionProvider(s._session).provide()
print(json.dumps(out))
`

func TestBoto3CredentialsAndRegion(t *testing.T) {
	py := needPython(t)
	for _, mode := range imdsModes {
		t.Run(mode.name, func(t *testing.T) {
			t.Parallel()
			e, endpoint, _ := endpointFor(t, mode, Options{})
			want := e.creds.creds
			stdout, stderr, err := run(t, isolatedEnv(t, endpoint, !mode.v1), py, "-c", boto3Script)
			if err != nil {
				t.Fatalf("boto3: %v\n%s", err, stderr)
			}
			var got struct {
				Found     bool   `json:"found"`
				AccessKey string `json:"access_key"`
				SecretKey string `json:"secret_key"`
				Token     string `json:"token"`
				Method    string `json:"method"`
				Expiry    string `json:"expiry"`
				Region    string `json:"region"`
			}
			if err := json.Unmarshal([]byte(stdout), &got); err != nil {
				t.Fatalf("boto3 output %q: %v\n%s", stdout, err, stderr)
			}
			if !mode.wantCreds {
				if got.Found {
					t.Fatalf("boto3 found credentials (%s) without a token while IMDSv2 is required", got.Method)
				}
				return
			}
			if !got.Found || got.AccessKey != want.AccessKeyID || got.SecretKey != want.SecretAccessKey || got.Token != want.SessionToken {
				t.Fatalf("boto3 got %s via %q, want %s", got.AccessKey, got.Method, want.AccessKeyID)
			}
			if got.Method != "iam-role" || got.Expiry != want.Expiration.Format("2006-01-02T15:04:05Z") {
				t.Errorf("method %q expiry %q", got.Method, got.Expiry)
			}
			if got.Region != e.up.Region() {
				t.Errorf("botocore region %q, want %q", got.Region, e.up.Region())
			}
			checkIMDSVersionUsed(t, e, mode)
		})
	}
}

func TestBoto3RegionOffAWS(t *testing.T) {
	py := needPython(t)
	e := newTestEnv(t, Options{MetadataAddr: MetadataAddrNone, Region: "sa-east-1", AvailabilityZone: "sa-east-1c"})
	stdout, stderr, err := run(t, isolatedEnv(t, e.url, true), py, "-c", boto3Script)
	if err != nil || !strings.Contains(stdout, `"region": "sa-east-1"`) {
		t.Fatalf("boto3 off AWS: %v %s\n%s", err, stdout, stderr)
	}
}

func TestAWSCLIv2ExportCredentials(t *testing.T) {
	needCLIv2(t)
	for _, mode := range imdsModes {
		t.Run(mode.name, func(t *testing.T) {
			t.Parallel()
			e, endpoint, _ := endpointFor(t, mode, Options{})
			want := e.creds.creds
			stdout, stderr, err := run(t, isolatedEnv(t, endpoint, !mode.v1), awsCLIv2, "configure", "export-credentials", "--format", "process")
			if !mode.wantCreds {
				if err == nil {
					t.Fatalf("AWS CLI v2 exported credentials without a token while IMDSv2 is required: %s", redact(stdout))
				}
				return
			}
			if err != nil {
				t.Fatalf("aws configure export-credentials: %v\n%s", err, stderr)
			}
			var got struct {
				Version         int
				AccessKeyID     string `json:"AccessKeyId"`
				SecretAccessKey string
				SessionToken    string
				Expiration      string
			}
			if err := json.Unmarshal([]byte(stdout), &got); err != nil {
				t.Fatalf("output: %v", err)
			}
			if got.AccessKeyID != want.AccessKeyID || got.SecretAccessKey != want.SecretAccessKey || got.SessionToken != want.SessionToken {
				t.Fatalf("AWS CLI v2 got %s, want %s", got.AccessKeyID, want.AccessKeyID)
			}
			exp, err := time.Parse(time.RFC3339, got.Expiration)
			if err != nil || !exp.Equal(want.Expiration) {
				t.Errorf("expiration %q, want %v", got.Expiration, want.Expiration)
			}
			checkIMDSVersionUsed(t, e, mode)
		})
	}
}

// TestAWSCLIv1SignsWithTheCredentials runs `aws sts get-caller-identity`
// from AWS CLI v1 (which has no export-credentials) against a local STS
// stand-in that checks the SigV4 signature with the expected secret: the
// CLI can only produce that signature if it got exactly these credentials.
func TestAWSCLIv1SignsWithTheCredentials(t *testing.T) {
	py := needPython(t)
	for _, mode := range imdsModes {
		t.Run(mode.name, func(t *testing.T) {
			t.Parallel()
			e, endpoint, _ := endpointFor(t, mode, Options{})
			want := e.creds.creds
			sts := newSigningCheckSTS(t, want.SecretAccessKey)
			env := isolatedEnv(t, endpoint, !mode.v1, "AWS_DEFAULT_REGION=us-east-1", "AWS_MAX_ATTEMPTS=1")
			stdout, stderr, err := run(t, env, py, "-m", "awscli", "sts", "get-caller-identity", "--endpoint-url", sts.url, "--output", "json")
			if !mode.wantCreds {
				if err == nil || sts.requests() != 0 {
					t.Fatalf("AWS CLI v1 signed a request without a token while IMDSv2 is required")
				}
				if !strings.Contains(stderr, "Unable to locate credentials") {
					t.Errorf("stderr %q", stderr)
				}
				return
			}
			if err != nil {
				t.Fatalf("aws sts get-caller-identity: %v\n%s", err, stderr)
			}
			if !strings.Contains(stdout, "assumed-role/"+testRoleName) {
				t.Errorf("stdout %q", stdout)
			}
			akid, token, sigErr := sts.last()
			if sigErr != nil {
				t.Fatalf("signature check: %v", sigErr)
			}
			if akid != want.AccessKeyID || token != want.SessionToken {
				t.Errorf("signed with %s (token match %v), want %s", akid, token == want.SessionToken, want.AccessKeyID)
			}
			checkIMDSVersionUsed(t, e, mode)
		})
	}
}

// signingCheckSTS answers GetCallerIdentity after checking the request's
// SigV4 signature against the secret it was given.
type signingCheckSTS struct {
	url    string
	secret string
	mu     sync.Mutex
	n      int
	akid   string
	token  string
	err    error
}

func newSigningCheckSTS(t *testing.T, secret string) *signingCheckSTS {
	t.Helper()
	s := &signingCheckSTS{secret: secret}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		akid, err := verifySigV4(r, body, s.secret)
		s.mu.Lock()
		s.n++
		s.akid, s.token, s.err = akid, r.Header.Get("X-Amz-Security-Token"), err
		s.mu.Unlock()
		if err != nil {
			w.Header().Set("Content-Type", "text/xml")
			w.WriteHeader(http.StatusForbidden)
			_, _ = io.WriteString(w, `<ErrorResponse><Error><Type>Sender</Type><Code>SignatureDoesNotMatch</Code><Message>bad signature</Message></Error><RequestId>1</RequestId></ErrorResponse>`)
			return
		}
		w.Header().Set("Content-Type", "text/xml")
		_, _ = io.WriteString(w, `<GetCallerIdentityResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/"><GetCallerIdentityResult>`+
			`<Arn>arn:aws:sts::123456789012:assumed-role/`+testRoleName+`/kube2ra</Arn><UserId>AROATEST:kube2ra</UserId><Account>123456789012</Account>`+
			`</GetCallerIdentityResult><ResponseMetadata><RequestId>00000000-0000-0000-0000-000000000001</RequestId></ResponseMetadata></GetCallerIdentityResponse>`)
	}))
	t.Cleanup(srv.Close)
	s.url = srv.URL
	return s
}

func (s *signingCheckSTS) requests() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.n
}

func (s *signingCheckSTS) last() (string, string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.n == 0 {
		return "", "", errors.New("no request arrived")
	}
	return s.akid, s.token, s.err
}

// verifySigV4 recomputes an AWS Signature Version 4 (header form) with
// secret and compares it to the request's; it returns the access key ID.
func verifySigV4(r *http.Request, body []byte, secret string) (string, error) {
	auth := r.Header.Get("Authorization")
	rest, ok := strings.CutPrefix(auth, "AWS4-HMAC-SHA256 ")
	if !ok {
		return "", fmt.Errorf("authorization %q is not SigV4", auth)
	}
	parts := map[string]string{}
	for _, p := range strings.Split(rest, ",") {
		k, v, _ := strings.Cut(strings.TrimSpace(p), "=")
		parts[k] = v
	}
	cred := strings.Split(parts["Credential"], "/")
	if len(cred) != 5 || cred[4] != "aws4_request" {
		return "", fmt.Errorf("credential scope %q", parts["Credential"])
	}
	amzDate := r.Header.Get("X-Amz-Date")
	signed := strings.Split(parts["SignedHeaders"], ";")
	var canon strings.Builder
	for _, h := range signed {
		v := r.Header.Get(h)
		if h == "host" {
			v = r.Host
		}
		canon.WriteString(h + ":" + strings.Join(strings.Fields(v), " ") + "\n")
	}
	q := r.URL.Query()
	keys := make([]string, 0, len(q))
	for k := range q {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var query []string
	for _, k := range keys {
		for _, v := range q[k] {
			query = append(query, awsEscape(k)+"="+awsEscape(v))
		}
	}
	path := r.URL.EscapedPath()
	if path == "" {
		path = "/"
	}
	bodyHash := sha256.Sum256(body)
	canonical := strings.Join([]string{r.Method, path, strings.Join(query, "&"), canon.String(), parts["SignedHeaders"], hex.EncodeToString(bodyHash[:])}, "\n")
	crHash := sha256.Sum256([]byte(canonical))
	scope := strings.Join(cred[1:], "/")
	toSign := "AWS4-HMAC-SHA256\n" + amzDate + "\n" + scope + "\n" + hex.EncodeToString(crHash[:])
	key := []byte("AWS4" + secret)
	for _, s := range cred[1:] {
		key = hmacSHA256(key, s)
	}
	sig := hex.EncodeToString(hmacSHA256(key, toSign))
	if !hmac.Equal([]byte(sig), []byte(parts["Signature"])) {
		return cred[0], errors.New("signature does not match the expected secret")
	}
	return cred[0], nil
}

func hmacSHA256(key []byte, data string) []byte {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(data))
	return m.Sum(nil)
}

// awsEscape is SigV4's URI encoding (RFC 3986 unreserved kept).
func awsEscape(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '_' || c == '.' || c == '~' {
			b.WriteByte(c)
		} else {
			fmt.Fprintf(&b, "%%%02X", c)
		}
	}
	return b.String()
}

// redact keeps test output free of secrets.
func redact(s string) string {
	if len(s) > 20 {
		return s[:20] + "..."
	}
	return s
}
