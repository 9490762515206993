package awsconfig

import (
	"context"
	"encoding/pem"
	"fmt"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"

	"github.com/kube2ra/kube2ra/test/fakeaws/fakeimds"
	"github.com/kube2ra/kube2ra/test/fakeaws/fakests"
)

const (
	region     = "eu-west-1"
	baseKey    = "AKIABASE000000000001"
	baseSecret = "baseSecret/00000000000000000000000000000"
	baseARN    = "arn:aws:iam::111122223333:user/base"
	appRole    = "arn:aws:iam::111122223333:role/app"
)

// isolate clears every AWS_* setting and points the shared files and HOME
// at an empty directory, so only what a test writes is read.
func isolate(t *testing.T) string {
	t.Helper()
	for _, kv := range os.Environ() {
		if k, _, _ := strings.Cut(kv, "="); strings.HasPrefix(k, "AWS_") {
			t.Setenv(k, "")
			os.Unsetenv(k)
		}
	}
	dir := t.TempDir()
	t.Setenv("HOME", dir)
	t.Setenv("AWS_CONFIG_FILE", filepath.Join(dir, "config"))
	t.Setenv("AWS_SHARED_CREDENTIALS_FILE", filepath.Join(dir, "credentials"))
	return dir
}

func write(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}

func retrieve(t *testing.T, o Options) (aws.Config, aws.Credentials, error) {
	t.Helper()
	cfg, err := Load(context.Background(), o)
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	creds, err := cfg.Credentials.Retrieve(context.Background())
	return cfg, creds, err
}

// TestEnvironmentKeysComeFirst: keys in the environment win over a
// profile's, and the region follows Options, then AWS_REGION, then the
// profile.
func TestEnvironmentKeysComeFirst(t *testing.T) {
	dir := isolate(t)
	write(t, filepath.Join(dir, "credentials"), "[default]\naws_access_key_id = AKIAPROFILE\naws_secret_access_key = p\n")
	write(t, filepath.Join(dir, "config"), "[default]\nregion = ap-south-1\n")

	cfg, creds, err := retrieve(t, Options{})
	if err != nil || creds.AccessKeyID != "AKIAPROFILE" || cfg.Region != "ap-south-1" {
		t.Fatalf("the profile: %q in %q (%v)", creds.AccessKeyID, cfg.Region, err)
	}
	t.Setenv("AWS_ACCESS_KEY_ID", "AKIAENV")
	t.Setenv("AWS_SECRET_ACCESS_KEY", "e")
	t.Setenv("AWS_REGION", "us-east-2")
	cfg, creds, err = retrieve(t, Options{})
	if err != nil || creds.AccessKeyID != "AKIAENV" || cfg.Region != "us-east-2" {
		t.Fatalf("the environment: %q in %q (%v); want its keys and region first", creds.AccessKeyID, cfg.Region, err)
	}
	cfg, creds, err = retrieve(t, Options{Region: "sa-east-1", Credentials: aws.CredentialsProviderFunc(func(context.Context) (aws.Credentials, error) {
		return aws.Credentials{AccessKeyID: "AKIAGIVEN", SecretAccessKey: "g"}, nil
	})})
	if err != nil || creds.AccessKeyID != "AKIAGIVEN" || cfg.Region != "sa-east-1" {
		t.Fatalf("given credentials and region: %q in %q (%v); want them used as given", creds.AccessKeyID, cfg.Region, err)
	}
}

// TestProfileAssumesItsRoleWithItsSourceProfile: role_arn with
// source_profile is sts:AssumeRole signed with the source profile's keys
// (the fake verifies the signature and the role's trust) at the endpoint
// AWS_ENDPOINT_URL_STS names.
func TestProfileAssumesItsRoleWithItsSourceProfile(t *testing.T) {
	dir := isolate(t)
	fake, err := fakests.Start(fakests.Options{Region: region,
		Principals: []fakests.Principal{{AccessKeyID: baseKey, SecretAccessKey: baseSecret, ARN: baseARN}},
		Roles:      []fakests.Role{{ARN: appRole, Trust: []string{baseARN}, ExternalID: "ext-1"}}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(fake.Close)
	write(t, filepath.Join(dir, "credentials"), fmt.Sprintf("[base]\naws_access_key_id = %s\naws_secret_access_key = %s\n", baseKey, baseSecret))
	write(t, filepath.Join(dir, "config"), fmt.Sprintf("[profile app]\nregion = %s\nrole_arn = %s\nsource_profile = base\nexternal_id = ext-1\nrole_session_name = node-agent\n", region, appRole))
	t.Setenv("AWS_PROFILE", "app")
	t.Setenv("AWS_ENDPOINT_URL_STS", fake.URL())

	_, creds, err := retrieve(t, Options{})
	if err != nil {
		t.Fatalf("assuming the profile's role: %v", err)
	}
	if !fake.Matches(creds.AccessKeyID, creds.SecretAccessKey, creds.SessionToken) || fake.Calls("AssumeRole") != 1 {
		t.Fatalf("credentials %q are not the fake's session (%d AssumeRole calls)", creds.AccessKeyID, fake.Calls("AssumeRole"))
	}
	if s, ok := fake.Session(creds.AccessKeyID); !ok || s.RoleARN != appRole || s.SessionName != "node-agent" || s.ExternalID != "ext-1" {
		t.Fatalf("session %+v; want %s as node-agent with the profile's external ID", s, appRole)
	}
}

// TestWebIdentityFromTheEnvironment: IRSA's variables assume the role with
// the token file's token.
func TestWebIdentityFromTheEnvironment(t *testing.T) {
	dir := isolate(t)
	sts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_ = r.ParseForm()
		if r.Form.Get("Action") != "AssumeRoleWithWebIdentity" || r.Form.Get("RoleArn") != appRole ||
			r.Form.Get("WebIdentityToken") != "the-token" || r.Form.Get("RoleSessionName") != "irsa" {
			http.Error(w, "<ErrorResponse><Error><Code>AccessDenied</Code><Message>wrong request "+r.Form.Encode()+"</Message></Error></ErrorResponse>", http.StatusForbidden)
			return
		}
		_, _ = io.WriteString(w, `<AssumeRoleWithWebIdentityResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/"><AssumeRoleWithWebIdentityResult><Credentials>`+
			`<AccessKeyId>ASIAWEB</AccessKeyId><SecretAccessKey>s</SecretAccessKey><SessionToken>t</SessionToken><Expiration>2099-01-01T00:00:00Z</Expiration>`+
			`</Credentials></AssumeRoleWithWebIdentityResult></AssumeRoleWithWebIdentityResponse>`)
	}))
	t.Cleanup(sts.Close)
	token := filepath.Join(dir, "token")
	write(t, token, "the-token")
	t.Setenv("AWS_WEB_IDENTITY_TOKEN_FILE", token)
	t.Setenv("AWS_ROLE_ARN", appRole)
	t.Setenv("AWS_ROLE_SESSION_NAME", "irsa")
	t.Setenv("AWS_REGION", region)
	t.Setenv("AWS_ENDPOINT_URL_STS", sts.URL)

	if _, creds, err := retrieve(t, Options{}); err != nil || creds.AccessKeyID != "ASIAWEB" {
		t.Fatalf("web identity: %q, %v", creds.AccessKeyID, err)
	}
	t.Setenv("AWS_ROLE_ARN", "")
	if _, err := Load(context.Background(), Options{}); err == nil || !strings.Contains(err.Error(), "AWS_ROLE_ARN") {
		t.Fatalf("a token file without a role: %v; want an error naming AWS_ROLE_ARN", err)
	}
}

// TestCredentialProcess: a profile's credential_process is run.
func TestCredentialProcess(t *testing.T) {
	dir := isolate(t)
	script := filepath.Join(dir, "creds.sh")
	if err := os.WriteFile(script, []byte("#!/bin/sh\necho '{\"Version\": 1, \"AccessKeyId\": \"AKIAPROC\", \"SecretAccessKey\": \"p\"}'\n"), 0o700); err != nil {
		t.Fatal(err)
	}
	write(t, filepath.Join(dir, "config"), "[default]\ncredential_process = "+script+"\n")
	if _, creds, err := retrieve(t, Options{}); err != nil || creds.AccessKeyID != "AKIAPROC" {
		t.Fatalf("credential_process: %q, %v", creds.AccessKeyID, err)
	}
}

// TestInstanceRole: with nothing else set, the instance role comes from
// the metadata service Options names.
func TestInstanceRole(t *testing.T) {
	isolate(t)
	imds := fakeimds.New(fakeimds.Options{})
	if err := imds.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = imds.Stop() })
	_, creds, err := retrieve(t, Options{Region: region, EC2IMDSEndpoint: imds.URL()})
	if err != nil || creds.AccessKeyID != imds.Credentials().AccessKeyID || creds.SecretAccessKey != imds.Credentials().SecretAccessKey {
		t.Fatalf("the instance role: %q, %v; want %q", creds.AccessKeyID, err, imds.Credentials().AccessKeyID)
	}
}

// TestContainerEndpoint: a full URI on loopback is asked with the token
// file's token (EKS Pod Identity); over plain HTTP any other host is
// refused before a request is made.
func TestContainerEndpoint(t *testing.T) {
	dir := isolate(t)
	agent := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "pod-token" {
			http.Error(w, `{"code":"AccessDenied","message":"bad token"}`, http.StatusForbidden)
			return
		}
		_, _ = io.WriteString(w, `{"AccessKeyId":"ASIAPOD","SecretAccessKey":"s","Token":"t","Expiration":"2099-01-01T00:00:00Z"}`)
	}))
	t.Cleanup(agent.Close)
	token := filepath.Join(dir, "eks-pod-identity-token")
	write(t, token, "pod-token\n")
	t.Setenv("AWS_CONTAINER_CREDENTIALS_FULL_URI", agent.URL+"/v1/credentials")
	t.Setenv("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE", token)
	if _, creds, err := retrieve(t, Options{}); err != nil || creds.AccessKeyID != "ASIAPOD" {
		t.Fatalf("the container endpoint: %q, %v", creds.AccessKeyID, err)
	}
	t.Setenv("AWS_CONTAINER_CREDENTIALS_FULL_URI", "http://10.1.2.3/v1/credentials")
	if _, err := Load(context.Background(), Options{}); err == nil || !strings.Contains(err.Error(), "only loopback") {
		t.Fatalf("a plain-HTTP endpoint on another host: %v; want it refused", err)
	}
	for host, want := range map[string]bool{"169.254.170.23": true, "169.254.170.2": true, "fd00:ec2::23": true, "::1": true, "169.254.169.254": false} {
		if got, err := allowedContainerHost(host); err != nil || got != want {
			t.Errorf("allowedContainerHost(%s) = %v, %v; want %v", host, got, err, want)
		}
	}
}

// TestProfilesThatNeedAPersonAreRefused: SSO, console login and MFA
// profiles give an error that says why, instead of hanging or failing later.
func TestProfilesThatNeedAPersonAreRefused(t *testing.T) {
	for _, tc := range []struct{ profile, want string }{
		{"[default]\nsso_start_url = https://example.awsapps.com/start\nsso_region = eu-west-1\nsso_account_id = 111122223333\nsso_role_name = admin\n", "IAM Identity Center"},
		{"[default]\nsso_session = corp\n[sso-session corp]\nsso_start_url = https://example.awsapps.com/start\nsso_region = eu-west-1\n", "IAM Identity Center"},
		{"[default]\nlogin_session = arn:aws:iam::111122223333:user/me\n", "console login"},
		{"[default]\nrole_arn = " + appRole + "\nsource_profile = base\nmfa_serial = arn:aws:iam::111122223333:mfa/me\n[profile base]\naws_access_key_id = A\naws_secret_access_key = B\n", "mfa_serial"},
		{"[default]\nrole_arn = " + appRole + "\ncredential_source = Somewhere\n", "credential_source"},
	} {
		dir := isolate(t)
		write(t, filepath.Join(dir, "config"), tc.profile)
		_, err := Load(context.Background(), Options{Region: region})
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("profile %q: %v; want an error about %s", tc.profile, err, tc.want)
		}
	}
}

// TestCABundle: AWS_CA_BUNDLE is what the SDK's HTTP client trusts; a
// missing or empty bundle is an error naming it.
func TestCABundle(t *testing.T) {
	dir := isolate(t)
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { _, _ = io.WriteString(w, "ok") }))
	t.Cleanup(srv.Close)
	do := func(cfg aws.Config) error {
		req, _ := http.NewRequest(http.MethodGet, srv.URL, nil)
		resp, err := cfg.HTTPClient.Do(req)
		if err == nil {
			resp.Body.Close()
		}
		return err
	}
	cfg, err := Load(context.Background(), Options{Region: region})
	if err != nil {
		t.Fatal(err)
	}
	if err := do(cfg); err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Fatalf("without a bundle the test server was trusted (%v)", err)
	}
	bundle := filepath.Join(dir, "ca.pem")
	write(t, bundle, string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw})))
	t.Setenv("AWS_CA_BUNDLE", bundle)
	if cfg, err = Load(context.Background(), Options{Region: region}); err != nil {
		t.Fatal(err)
	}
	if err := do(cfg); err != nil {
		t.Fatalf("a server the bundle trusts: %v", err)
	}

	write(t, bundle, "not a certificate")
	if _, err := Load(context.Background(), Options{}); err == nil || !strings.Contains(err.Error(), "AWS_CA_BUNDLE") {
		t.Fatalf("a bundle without certificates: %v", err)
	}
	t.Setenv("AWS_CA_BUNDLE", filepath.Join(dir, "missing.pem"))
	if _, err := Load(context.Background(), Options{}); err == nil || !strings.Contains(err.Error(), "missing.pem") {
		t.Fatalf("a missing bundle: %v", err)
	}
}

// TestMetadataClientNeverGoesThroughAProxy: the SDK's client follows
// HTTP_PROXY/HTTPS_PROXY (AWS's endpoints behind a corporate proxy), the
// metadata service's never does (link-local: through a proxy it fails or
// answers as the proxy's host), and keeps AWS_CA_BUNDLE's trust; the
// SDK's own client is left as it was.
func TestMetadataClientNeverGoesThroughAProxy(t *testing.T) {
	dir := isolate(t)
	srv := httptest.NewTLSServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
	t.Cleanup(srv.Close)
	bundle := filepath.Join(dir, "ca.pem")
	write(t, bundle, string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw})))
	for _, withBundle := range []bool{false, true} {
		if withBundle {
			t.Setenv("AWS_CA_BUNDLE", bundle)
		}
		cfg, err := Load(context.Background(), Options{Region: region})
		if err != nil {
			t.Fatal(err)
		}
		sdk := cfg.HTTPClient.(*awshttp.BuildableClient).GetTransport()
		if sdk.Proxy == nil {
			t.Fatal("the SDK's client no longer follows the environment's proxy: this test proves nothing")
		}
		md := MetadataHTTPClient(cfg).(*awshttp.BuildableClient).GetTransport()
		if md.Proxy != nil {
			t.Errorf("bundle %v: the metadata client has a proxy function", withBundle)
		}
		if cfg.HTTPClient.(*awshttp.BuildableClient).GetTransport().Proxy == nil {
			t.Errorf("bundle %v: making the metadata client took the SDK client's proxy away", withBundle)
		}
		if hasRoots := md.TLSClientConfig != nil && md.TLSClientConfig.RootCAs != nil; hasRoots != withBundle {
			t.Errorf("bundle %v: the metadata client's own CA pool: %v", withBundle, hasRoots)
		}
	}
}
