package rolesanywhere

import (
	"bytes"
	"context"
	"crypto"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/sirupsen/logrus"
	clocktesting "k8s.io/utils/clock/testing"

	"github.com/kube2ra/kube2ra/credentials"
	"github.com/kube2ra/kube2ra/test/fakeaws/fakera"
)

const (
	testTrustAnchor = "arn:aws:rolesanywhere:eu-west-1:111122223333:trust-anchor/6f1a2b3c-0000-4000-8000-000000000001"
	testProfile     = "arn:aws:rolesanywhere:eu-west-1:111122223333:profile/6f1a2b3c-0000-4000-8000-000000000002"
	testRole        = "arn:aws:iam::111122223333:role/app"
	testOtherRole   = "arn:aws:iam::111122223333:role/not-in-profile"
)

// fakeEnv is a fake Roles Anywhere endpoint trusting one root CA.
type fakeEnv struct {
	root *testCA
	fake *fakera.Server
}

// startFake starts a fake trusting root; tls picks HTTPS.
func startFake(t *testing.T, root *testCA, tls bool, profile fakera.Profile) *fakeEnv {
	t.Helper()
	if profile.ARN == "" {
		profile.ARN = testProfile
	}
	if profile.RoleARNs == nil {
		profile.RoleARNs = []string{testRole}
	}
	opts := fakera.Options{
		TrustAnchors: []fakera.TrustAnchor{{ARN: testTrustAnchor, CAs: []*x509.Certificate{root.cert}}},
		Profiles:     []fakera.Profile{profile},
	}
	start := fakera.Start
	if tls {
		start = fakera.StartTLS
	}
	f, err := start(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(f.Close)
	return &fakeEnv{root: root, fake: f}
}

// identity writes a leaf and key for kind/format under dir, optionally
// issued by an intermediate (placed in the certificate file or a bundle).
type identity struct {
	files KeyFiles
	leaf  *x509.Certificate
	key   []byte
}

func newIdentity(t *testing.T, dir string, root *testCA, kind keyKind, format keyFormat, viaIntermediate, bundle bool, now time.Time) identity {
	t.Helper()
	key := testKeys.fresh(t, kind)
	issuer := root
	var chain []*x509.Certificate
	if viaIntermediate {
		issuer = root.intermediate(t, now)
		chain = append(chain, issuer.cert)
	}
	leaf := issuer.leaf(t, key, now, leafOpts{})
	kp := keyPEM(t, key, format)
	id := identity{leaf: leaf, key: kp}
	id.files.PrivateKey = writeFile(t, dir, "tls.key", kp)
	if bundle && len(chain) > 0 {
		id.files.Certificate = writeFile(t, dir, "tls.crt", certPEM(leaf))
		id.files.Intermediates = writeFile(t, dir, "ca.crt", certPEM(chain...))
	} else {
		id.files.Certificate = writeFile(t, dir, "tls.crt", certPEM(append([]*x509.Certificate{leaf}, chain...)...))
	}
	return id
}

// newTestSource builds a Source against env for files.
func newTestSource(t *testing.T, env *fakeEnv, files KeyFiles, mutate func(*Config, *Deps)) *Source {
	t.Helper()
	cfg := Config{
		TrustAnchorARN: testTrustAnchor,
		ProfileARN:     testProfile,
		Certificate:    files.Certificate,
		PrivateKey:     files.PrivateKey,
		Intermediates:  files.Intermediates,
		PasswordFile:   files.PasswordFile,
		Endpoint:       env.fake.URL(),
	}
	deps := Deps{HTTPClient: env.fake.Client(), Retry: RetryPolicy{BaseDelay: time.Millisecond, MaxDelay: 5 * time.Millisecond}}
	if mutate != nil {
		mutate(&cfg, &deps)
	}
	s, err := NewSource(cfg, deps)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// checkIssued asserts creds are exactly what the fake issued for role to
// the certificate with serial.
func checkIssued(t *testing.T, f *fakera.Server, creds credentials.Credentials, role, serial string) {
	t.Helper()
	is, ok := f.Issued(creds.AccessKeyID)
	if !ok {
		t.Fatalf("fake never issued %s", creds.AccessKeyID)
	}
	if is.SecretAccessKey != creds.SecretAccessKey || is.SessionToken != creds.SessionToken || !is.Expiration.Equal(creds.Expiration) {
		t.Fatal("credentials differ from what the fake issued")
	}
	if is.RoleARN != role || is.Serial != serial {
		t.Fatalf("issued for role %s serial %s, want %s %s", is.RoleARN, is.Serial, role, serial)
	}
}

func TestRoundTripAgainstTheVerifyingFake(t *testing.T) {
	now := time.Now()
	root := newRootCA(t, now)
	type tc struct {
		kind            keyKind
		format          keyFormat
		viaIntermediate bool
	}
	var cases []tc
	for _, kind := range []keyKind{rsa2048, rsa4096, p256, p384} {
		formats := []keyFormat{pkcs1, pkcs8}
		if kind == p256 || kind == p384 {
			formats = []keyFormat{sec1, pkcs8}
		}
		for _, format := range formats {
			for _, inter := range []bool{false, true} {
				cases = append(cases, tc{kind, format, inter})
			}
		}
	}
	for i, c := range cases {
		name := fmt.Sprintf("%s/%s/intermediate=%t", c.kind, c.format, c.viaIntermediate)
		t.Run(name, func(t *testing.T) {
			env := startFake(t, root, i%2 == 0, fakera.Profile{})
			id := newIdentity(t, t.TempDir(), root, c.kind, c.format, c.viaIntermediate, i%4 == 1, now)
			src := newTestSource(t, env, id.files, nil)
			creds, err := src.Fetch(context.Background(), credentials.Request{RoleARN: testRole})
			if err != nil {
				t.Fatal(err)
			}
			checkIssued(t, env.fake, creds, testRole, id.leaf.SerialNumber.String())
			if got := creds.Expiration.Sub(now); got < 59*time.Minute || got > 61*time.Minute {
				t.Fatalf("expiration in %s, want the 1h default", got)
			}
		})
	}
}

func TestRoundTripWithEncryptedPKCS8Key(t *testing.T) {
	now := time.Now()
	root := newRootCA(t, now)
	env := startFake(t, root, true, fakera.Profile{})
	pubPEM := mustRead(t, "testdata/ec-aes256-sha256.pub.pem")
	pub := parsePublicKey(t, pubPEM)
	leaf := root.leaf(t, publicOnly{pub}, now, leafOpts{})
	files := KeyFiles{
		Certificate:  writeFile(t, t.TempDir(), "tls.crt", certPEM(leaf)),
		PrivateKey:   "testdata/ec-aes256-sha256.p8.pem",
		PasswordFile: "testdata/password.txt",
	}
	src := newTestSource(t, env, files, nil)
	creds, err := src.Fetch(context.Background(), credentials.Request{RoleARN: testRole})
	if err != nil {
		t.Fatal(err)
	}
	checkIssued(t, env.fake, creds, testRole, leaf.SerialNumber.String())
}

func TestFetchRules(t *testing.T) {
	now := time.Now()
	root := newRootCA(t, now)
	env := startFake(t, root, false, fakera.Profile{AcceptRoleSessionName: true, DurationSeconds: 43200})
	id := newIdentity(t, t.TempDir(), root, p256, sec1, false, false, now)

	t.Run("the request's session name is sent, and none when it has none", func(t *testing.T) {
		src := newTestSource(t, env, id.files, nil)
		for _, name := range []string{"default.web-1", ""} {
			creds, err := src.Fetch(context.Background(), credentials.Request{RoleARN: testRole, SessionName: name})
			if err != nil {
				t.Fatal(err)
			}
			is, _ := env.fake.Issued(creds.AccessKeyID)
			want := name
			if name == "" {
				want = fmt.Sprintf("%x", id.leaf.SerialNumber.Bytes())
			}
			if is.SessionName != want {
				t.Fatalf("asked for %q: session %q, want %q", name, is.SessionName, want)
			}
			acc := env.fake.Accepted()
			if last := acc[len(acc)-1]; last.AccessKeyID != creds.AccessKeyID || last.RoleSessionName != name {
				t.Fatalf("asked for %q: last accepted %+v", name, last)
			}
		}
	})
	t.Run("session duration is sent", func(t *testing.T) {
		src := newTestSource(t, env, id.files, func(c *Config, _ *Deps) { c.SessionDuration = 2 * time.Hour })
		creds, err := src.Fetch(context.Background(), credentials.Request{RoleARN: testRole})
		if err != nil {
			t.Fatal(err)
		}
		if got := creds.Expiration.Sub(now); got < 119*time.Minute || got > 121*time.Minute {
			t.Fatalf("expiration in %s, want 2h", got)
		}
	})
	t.Run("refusals are typed and carry the service message, without network for local ones", func(t *testing.T) {
		src := newTestSource(t, env, id.files, nil)
		before := env.fake.Stats().Requests
		for _, rc := range []struct {
			name    string
			req     credentials.Request
			kind    credentials.ErrorKind
			code    string
			message string
			network bool
		}{
			{"external ID", credentials.Request{RoleARN: testRole, ExternalID: "x"}, credentials.KindInvalid, "", "no external ID", false},
			{"session tags", credentials.Request{RoleARN: testRole, Tags: []credentials.Tag{{Key: "k", Value: "v"}}}, credentials.KindInvalid, "", "session tags", false},
			{"not a role ARN", credentials.Request{RoleARN: "app"}, credentials.KindInvalid, "", "not an ARN", false},
			{"role in another partition", credentials.Request{RoleARN: "arn:aws-cn:iam::111122223333:role/app"}, credentials.KindInvalid, "", "partition", false},
			{"role not in the profile", credentials.Request{RoleARN: testOtherRole}, credentials.KindDenied, "AccessDeniedException", "not in the role list", true},
		} {
			_, err := src.Fetch(context.Background(), rc.req)
			var e *credentials.Error
			if !errors.As(err, &e) || e.Kind != rc.kind || e.Code != rc.code || !strings.Contains(e.Message, rc.message) || e.Source != "rolesanywhere" {
				t.Fatalf("%s: error %#v", rc.name, err)
			}
			if rc.network {
				before++
			}
			if got := env.fake.Stats().Requests; got != before {
				t.Fatalf("%s: fake saw %d requests, want %d", rc.name, got, before)
			}
		}
	})
}

func TestClientRetriesThrottlingAndServerErrorsButNotDenials(t *testing.T) {
	now := time.Now()
	root := newRootCA(t, now)
	env := startFake(t, root, false, fakera.Profile{})
	id := newIdentity(t, t.TempDir(), root, p256, sec1, false, false, now)
	src := newTestSource(t, env, id.files, nil)
	ctx := context.Background()
	ok := credentials.Request{RoleARN: testRole}

	env.fake.FailNext(1)
	env.fake.ThrottleNext(1)
	before := env.fake.Stats().Requests
	if _, err := src.Fetch(ctx, ok); err != nil {
		t.Fatalf("one 500 and one 429 then success: %v", err)
	}
	if n := env.fake.Stats().Requests - before; n != 3 {
		t.Fatalf("%d attempts, want 3", n)
	}

	env.fake.ThrottleNext(10)
	before = env.fake.Stats().Requests
	_, err := src.Fetch(ctx, ok)
	if credentials.KindOf(err) != credentials.KindThrottled || !strings.Contains(err.Error(), "ThrottlingException") {
		t.Fatalf("persistent throttling: %v", err)
	}
	if n := env.fake.Stats().Requests - before; n != 3 {
		t.Fatalf("%d attempts, want the 3 of the policy", n)
	}
	env.fake.ThrottleNext(0)

	env.fake.SetOutage(true)
	_, err = src.Fetch(ctx, ok)
	if credentials.KindOf(err) != credentials.KindUnavailable {
		t.Fatalf("outage: %v", err)
	}
	env.fake.SetOutage(false)

	before = env.fake.Stats().Requests
	_, err = src.Fetch(ctx, credentials.Request{RoleARN: testOtherRole})
	if credentials.KindOf(err) != credentials.KindDenied {
		t.Fatalf("denial: %v", err)
	}
	if n := env.fake.Stats().Requests - before; n != 1 {
		t.Fatalf("a denial was retried: %d attempts", n)
	}
}

func TestClientStopsRetryingWhenTheContextEnds(t *testing.T) {
	now := time.Now()
	root := newRootCA(t, now)
	env := startFake(t, root, false, fakera.Profile{})
	id := newIdentity(t, t.TempDir(), root, p256, sec1, false, false, now)
	src := newTestSource(t, env, id.files, func(_ *Config, d *Deps) {
		d.Retry = RetryPolicy{MaxAttempts: 100, BaseDelay: 50 * time.Millisecond, MaxDelay: 50 * time.Millisecond}
	})
	env.fake.SetFailurePercent(100)
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := src.Fetch(ctx, credentials.Request{RoleARN: testRole})
	if err == nil || time.Since(start) > 2*time.Second {
		t.Fatalf("err %v after %s", err, time.Since(start))
	}
	if n := env.fake.Stats().Requests; n >= 100 {
		t.Fatalf("%d attempts despite the deadline", n)
	}
}

func TestClientMapsErrorShapes(t *testing.T) {
	now := time.Now()
	root := newRootCA(t, now)
	id := newIdentity(t, t.TempDir(), root, p256, sec1, false, false, now)
	for _, tc := range []struct {
		name    string
		status  int
		header  string
		body    string
		kind    credentials.ErrorKind
		code    string
		message string
	}{
		{"code in X-Amzn-ErrorType with URL suffix", 403, "AccessDeniedException:http://internal.amazon.com/coral/com.amazon.coral.service/", `{"message":"Untrusted certificate"}`, credentials.KindDenied, "AccessDeniedException", "Untrusted certificate"},
		{"code in __type with namespace", 400, "", `{"__type":"com.amazonaws.rolesanywhere#ValidationException","Message":"bad duration"}`, credentials.KindInvalid, "ValidationException", "bad duration"},
		{"code in code field", 404, "", `{"code":"ResourceNotFoundException","message":"no profile"}`, credentials.KindInvalid, "ResourceNotFoundException", "no profile"},
		{"throttling exception", 400, "ThrottlingException", `{"message":"Rate exceeded"}`, credentials.KindThrottled, "ThrottlingException", "Rate exceeded"},
		{"bare 429", 429, "", ``, credentials.KindThrottled, "", ""},
		{"bare 503", 503, "", `<html>busy</html>`, credentials.KindUnavailable, "", ""},
		{"bare 403", 403, "", ``, credentials.KindDenied, "", ""},
		{"201 that is not JSON", 201, "", `nope`, credentials.KindUnavailable, "", ""},
		{"201 without credentials", 201, "", `{"credentialSet":[]}`, credentials.KindUnavailable, "", ""},
		{"201 with a bad expiration", 201, "", `{"credentialSet":[{"credentials":{"accessKeyId":"ASIA1","secretAccessKey":"s","sessionToken":"t","expiration":"tomorrow"}}]}`, credentials.KindUnavailable, "", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if tc.header != "" {
					w.Header().Set("X-Amzn-ErrorType", tc.header)
				}
				w.WriteHeader(tc.status)
				_, _ = w.Write([]byte(tc.body))
			}))
			t.Cleanup(srv.Close)
			pair, err := LoadKeyPair(id.files, now)
			if err != nil {
				t.Fatal(err)
			}
			c, err := NewClient(staticPair{pair}, ClientOptions{Endpoint: srv.URL, Region: "eu-west-1", Retry: RetryPolicy{MaxAttempts: 1}})
			if err != nil {
				t.Fatal(err)
			}
			_, err = c.CreateSession(context.Background(), CreateSessionInput{TrustAnchorARN: testTrustAnchor, ProfileARN: testProfile, RoleARN: testRole, DurationSeconds: 900})
			var e *credentials.Error
			if !errors.As(err, &e) {
				t.Fatalf("error %v is not a *credentials.Error", err)
			}
			if e.Kind != tc.kind || e.Code != tc.code || e.Message != tc.message || e.RoleARN != testRole {
				t.Fatalf("got kind %s code %q message %q, want %s %q %q", e.Kind, e.Code, e.Message, tc.kind, tc.code, tc.message)
			}
		})
	}
}

// staticPair is a KeyPairProvider with one fixed pair.
type staticPair struct{ p *KeyPair }

func (s staticPair) Current() *KeyPair { return s.p }

func TestClientSendsTheRequestShapeOfTheOfficialHelper(t *testing.T) {
	now := time.Now()
	root := newRootCA(t, now)
	id := newIdentity(t, t.TempDir(), root, rsa2048, pkcs1, true, true, now)
	var got *http.Request
	var body []byte
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got = r.Clone(context.Background())
		buf := new(bytes.Buffer)
		_, _ = buf.ReadFrom(r.Body)
		body = buf.Bytes()
		w.WriteHeader(201)
		_, _ = w.Write([]byte(`{"credentialSet":[{"credentials":{"accessKeyId":"ASIA1","secretAccessKey":"s","sessionToken":"t","expiration":"2030-01-01T00:00:00Z"}}]}`))
	}))
	t.Cleanup(srv.Close)
	pair, err := LoadKeyPair(id.files, now)
	if err != nil {
		t.Fatal(err)
	}
	c, err := NewClient(staticPair{pair}, ClientOptions{Endpoint: srv.URL + "/", Region: "eu-west-1"})
	if err != nil {
		t.Fatal(err)
	}
	creds, err := c.CreateSession(context.Background(), CreateSessionInput{TrustAnchorARN: testTrustAnchor, ProfileARN: testProfile, RoleARN: testRole, DurationSeconds: 900, RoleSessionName: "a.b"})
	if err != nil {
		t.Fatal(err)
	}
	if creds.AccessKeyID != "ASIA1" || !creds.Expiration.Equal(time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)) {
		t.Fatalf("creds %v", creds)
	}
	if got.Method != "POST" || got.URL.Path != "/sessions" {
		t.Fatalf("%s %s", got.Method, got.URL.Path)
	}
	wantQuery := "profileArn=arn%3Aaws%3Arolesanywhere%3Aeu-west-1%3A111122223333%3Aprofile%2F6f1a2b3c-0000-4000-8000-000000000002&roleArn=arn%3Aaws%3Aiam%3A%3A111122223333%3Arole%2Fapp&trustAnchorArn=arn%3Aaws%3Arolesanywhere%3Aeu-west-1%3A111122223333%3Atrust-anchor%2F6f1a2b3c-0000-4000-8000-000000000001"
	if got.URL.RawQuery != wantQuery {
		t.Fatalf("query %s", got.URL.RawQuery)
	}
	var b map[string]any
	if err := json.Unmarshal(body, &b); err != nil || b["durationSeconds"] != float64(900) || b["roleSessionName"] != "a.b" || len(b) != 2 {
		t.Fatalf("body %s", body)
	}
	auth := got.Header.Get("Authorization")
	if !strings.HasPrefix(auth, "AWS4-X509-RSA-SHA256 Credential="+id.leaf.SerialNumber.String()+"/") ||
		!strings.Contains(auth, "/eu-west-1/rolesanywhere/aws4_request, SignedHeaders=content-type;host;x-amz-date;x-amz-x509;x-amz-x509-chain, Signature=") {
		t.Fatalf("Authorization %s", auth)
	}
	if got.Header.Get("X-Amz-Content-Sha256") != "" || got.Header.Get("X-Amz-X509-Chain") == "" || strings.Contains(got.Header.Get("X-Amz-X509-Chain"), ",") {
		t.Fatalf("headers %v", got.Header)
	}
}

func TestConfigValidate(t *testing.T) {
	base := Config{TrustAnchorARN: testTrustAnchor, ProfileARN: testProfile, Certificate: "c", PrivateKey: "k"}
	for _, tc := range []struct {
		name   string
		mutate func(*Config)
		want   string
	}{
		{"valid with default duration", func(*Config) {}, ""},
		{"shortest duration", func(c *Config) { c.SessionDuration = 15 * time.Minute }, ""},
		{"longest duration", func(c *Config) { c.SessionDuration = 12 * time.Hour }, ""},
		{"duration too short", func(c *Config) { c.SessionDuration = 899 * time.Second }, "--ra-session-duration"},
		{"duration too long", func(c *Config) { c.SessionDuration = 43201 * time.Second }, "--ra-session-duration"},
		{"fractional duration", func(c *Config) { c.SessionDuration = time.Hour + time.Millisecond }, "--ra-session-duration"},
		{"trust anchor is a profile", func(c *Config) { c.TrustAnchorARN = testProfile }, "--ra-trust-anchor-arn"},
		{"profile missing", func(c *Config) { c.ProfileARN = "" }, "--ra-profile-arn"},
		{"regions differ", func(c *Config) { c.ProfileARN = strings.Replace(testProfile, "eu-west-1", "us-east-1", 1) }, "same partition and region"},
		{"--region is the trust anchor's", func(c *Config) { c.Region = "eu-west-1" }, ""},
		{"--region is another", func(c *Config) { c.Region = "us-east-1" }, "--region us-east-1 is not the trust anchor's region eu-west-1"},
		{"certificate missing", func(c *Config) { c.Certificate = "" }, "--ra-certificate"},
		{"key missing", func(c *Config) { c.PrivateKey = "" }, "--ra-private-key"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := base
			tc.mutate(&c)
			err := c.Validate()
			if tc.want == "" && err != nil || tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)) {
				t.Fatalf("Validate() = %v, want %q", err, tc.want)
			}
		})
	}
}

func TestSourceDerivesNameRegionEndpointAndBaseRoleARN(t *testing.T) {
	now := time.Now()
	root := newRootCA(t, now)
	id := newIdentity(t, t.TempDir(), root, p256, sec1, false, false, now)
	src, err := NewSource(Config{TrustAnchorARN: testTrustAnchor, ProfileARN: testProfile, Certificate: id.files.Certificate, PrivateKey: id.files.PrivateKey}, Deps{})
	if err != nil {
		t.Fatal(err)
	}
	if src.Name() != "rolesanywhere" || src.Region() != "eu-west-1" || src.BaseRoleARN() != "arn:aws:iam::111122223333:role/" {
		t.Fatalf("name %s region %s base %s", src.Name(), src.Region(), src.BaseRoleARN())
	}
	if got := src.client.endpoint.String(); got != "https://rolesanywhere.eu-west-1.amazonaws.com" {
		t.Fatalf("endpoint %s", got)
	}
	if err := src.Validate(); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		partition, region string
		fips              bool
		want              string
	}{
		{"aws", "us-east-1", true, "https://rolesanywhere-fips.us-east-1.amazonaws.com"},
		{"aws-us-gov", "us-gov-west-1", true, "https://rolesanywhere-fips.us-gov-west-1.amazonaws.com"},
		{"aws-cn", "cn-north-1", false, "https://rolesanywhere.cn-north-1.amazonaws.com.cn"},
		{"aws-iso", "us-iso-east-1", false, "https://rolesanywhere.us-iso-east-1.c2s.ic.gov"},
		{"aws-iso-b", "us-isob-east-1", false, "https://rolesanywhere.us-isob-east-1.sc2s.sgov.gov"},
		{"aws-iso-e", "eu-isoe-west-1", false, "https://rolesanywhere.eu-isoe-west-1.cloud.adc-e.uk"},
		{"aws-iso-f", "us-isof-south-1", false, "https://rolesanywhere.us-isof-south-1.csp.hci.ic.gov"},
		{"aws-eusc", "eusc-de-east-1", false, "https://rolesanywhere.eusc-de-east-1.amazonaws.eu"},
	} {
		if got := EndpointFor(tc.partition, tc.region, tc.fips); got != tc.want {
			t.Errorf("EndpointFor(%s, %s, %t) = %s, want %s", tc.partition, tc.region, tc.fips, got, tc.want)
		}
	}
}

func TestNewSourceRefusesAMismatchedKeyBeforeAnyNetworkCall(t *testing.T) {
	now := time.Now()
	root := newRootCA(t, now)
	env := startFake(t, root, false, fakera.Profile{})
	a := newIdentity(t, t.TempDir(), root, p256, sec1, false, false, now)
	b := newIdentity(t, t.TempDir(), root, p256, sec1, false, false, now)
	_, err := NewSource(Config{TrustAnchorARN: testTrustAnchor, ProfileARN: testProfile, Certificate: a.files.Certificate, PrivateKey: b.files.PrivateKey, Endpoint: env.fake.URL()}, Deps{})
	if err == nil || !strings.Contains(err.Error(), "does not match") {
		t.Fatalf("err %v", err)
	}
	if n := env.fake.Stats().Requests; n != 0 {
		t.Fatalf("%d requests", n)
	}
}

func TestReadyFailsOnceTheCertificateExpires(t *testing.T) {
	now := time.Now()
	root := newRootCA(t, now)
	id := newIdentity(t, t.TempDir(), root, p256, sec1, false, false, now)
	clk := clocktesting.NewFakeClock(now)
	src, err := NewSource(Config{TrustAnchorARN: testTrustAnchor, ProfileARN: testProfile, Certificate: id.files.Certificate, PrivateKey: id.files.PrivateKey}, Deps{Clock: clk})
	if err != nil {
		t.Fatal(err)
	}
	if err := src.Ready(); err != nil {
		t.Fatal(err)
	}
	clk.SetTime(id.leaf.NotAfter.Add(time.Second))
	if err := src.Ready(); err == nil || !strings.Contains(err.Error(), "expired") {
		t.Fatalf("Ready() = %v after expiry", err)
	}
}

func TestExpiryMetricAndWarning(t *testing.T) {
	now := time.Now().Truncate(time.Second)
	root := newRootCA(t, now)
	key := testKeys.fresh(t, p256)
	leaf := root.leaf(t, key, now, leafOpts{notAfter: now.Add(72 * time.Hour)})
	dir := t.TempDir()
	files := KeyFiles{Certificate: writeFile(t, dir, "tls.crt", certPEM(leaf)), PrivateKey: writeFile(t, dir, "tls.key", keyPEM(t, key, sec1))}
	reg := prometheus.NewRegistry()
	var logs bytes.Buffer
	logger := logrus.New()
	logger.SetOutput(&logs)
	clk := clocktesting.NewFakeClock(now)
	w, err := NewKeyPairWatcher(files, WatcherOptions{Registerer: reg, Logger: logger, Clock: clk})
	if err != nil {
		t.Fatal(err)
	}
	gauge := func() float64 {
		mfs, err := reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		for _, mf := range mfs {
			if mf.GetName() == "kube2ra_rolesanywhere_certificate_expiry_seconds" {
				return mf.GetMetric()[0].GetGauge().GetValue()
			}
		}
		t.Fatal("expiry metric not registered")
		return 0
	}
	if got, want := gauge(), (72 * time.Hour).Seconds(); got != want {
		t.Fatalf("gauge %v, want %v", got, want)
	}
	if !strings.Contains(logs.String(), "expires soon") {
		t.Fatalf("no expiry warning in %q", logs.String())
	}
	clk.Step(time.Hour)
	if _, err := w.Check(); err != nil {
		t.Fatal(err)
	}
	if got, want := gauge(), (71 * time.Hour).Seconds(); got != want {
		t.Fatalf("gauge %v after an hour, want %v", got, want)
	}
	if n := strings.Count(logs.String(), "expires soon"); n != 2 {
		t.Fatalf("%d warnings after an hour, want 2 (hourly)", n)
	}
	// A second watcher on the same registry shares the metric.
	if _, err := NewKeyPairWatcher(files, WatcherOptions{Registerer: reg, Clock: clk}); err != nil {
		t.Fatal(err)
	}
	if n, err := testutil.GatherAndCount(reg, "kube2ra_rolesanywhere_certificate_expiry_seconds"); err != nil || n != 1 {
		t.Fatalf("%d series (%v)", n, err)
	}
}

func TestFormatCredentialProcess(t *testing.T) {
	exp := time.Date(2030, 1, 2, 3, 4, 5, 0, time.FixedZone("x", 3600))
	out, err := FormatCredentialProcess(credentials.Credentials{AccessKeyID: "ASIA1", SecretAccessKey: "s", SessionToken: "t", Expiration: exp})
	if err != nil {
		t.Fatal(err)
	}
	if want := `{"Version":1,"AccessKeyId":"ASIA1","SecretAccessKey":"s","SessionToken":"t","Expiration":"2030-01-02T02:04:05Z"}`; string(out) != want {
		t.Fatalf("got %s", out)
	}
	if _, err := FormatCredentialProcess(credentials.Credentials{}); err == nil {
		t.Fatal("empty credentials formatted")
	}
}

func mustRead(t *testing.T, path string) []byte {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

func parsePublicKey(t *testing.T, pubPEM []byte) crypto.PublicKey {
	t.Helper()
	block, _ := pem.Decode(pubPEM)
	if block == nil {
		t.Fatal("no PEM public key")
	}
	pub, err := x509.ParsePKIXPublicKey(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return pub
}
