package proxy

import (
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/kube2ra/kube2ra/k8s"
	"github.com/kube2ra/kube2ra/test/fakeaws/fakeimds"
)

// TestHostileRequests sends requests a pod could use to reach the node's
// secrets, byte for byte over TCP (net/http clients would normalise many of
// them), against a proxy whose upstream records everything. None may reach
// the upstream, none may carry the node's secrets or the pod's credentials
// back, and each gets its documented status:
//
//	400: bytes that never belong in an IMDS path (%-encoding, "\", ";", "?",
//	     "#", spaces, controls, non-ASCII, absolute-form, overlong), bad TTL
//	404: non-canonical structure ("//", "." and ".." segments), unknown
//	     version, mixed case, paths off the allowlist, another role's name
//	401: bad, expired, foreign or another IP's token
//	403: X-Forwarded-For on the token PUT
//	405: wrong method on a known route
//	413: a body on a metadata request
//	431: oversized headers (net/http's own limit)
func TestHostileRequests(t *testing.T) {
	e := newTestEnv(t, Options{})
	valid := e.srv.tokens.mint(loopback, time.Hour)
	expired := e.srv.tokens.mint(loopback, -time.Second)
	otherIP := e.srv.tokens.mint(netip.MustParseAddr("10.0.0.9"), time.Hour)
	otherKey, err := newTokenMinter(e.srv.clock)
	if err != nil {
		t.Fatal(err)
	}
	foreign := otherKey.mint(loopback, time.Hour)
	tampered := []byte(valid)
	tampered[len(tampered)-1] ^= 2
	creds := "/latest/meta-data/iam/security-credentials/"

	tests := []struct {
		name string
		req  string
		want int
	}{
		{"double slash before version", rawGet("//latest" + creds[len("/latest"):]), 404},
		{"double slash in path", rawGet("/latest//meta-data/iam/security-credentials/"), 404},
		{"double slash before role", rawGet(creds + "/" + testRoleName), 404},
		{"dot-dot to user-data", rawGet(creds + "../../user-data"), 404},
		{"dot-dot to node role via iam/info", rawGet("/latest/meta-data/iam/info/../security-credentials/node-instance-role"), 404},
		{"dot segment", rawGet("/latest/meta-data/./iam/security-credentials/"), 404},
		{"dot-dot through an allowed prefix to the node role", rawGet("/latest/meta-data/placement/../iam/security-credentials/node-instance-role"), 404},
		{"dot-dot through an allowed prefix to user-data", rawGet("/latest/meta-data/network/../../user-data"), 404},
		{"dot segment inside an allowed prefix", rawGet("/latest/meta-data/placement/./region"), 404},
		{"dot-led segment inside an allowed prefix", rawGet("/latest/meta-data/placement/..0"), 404},
		{"double slash inside an allowed prefix", rawGet("/latest/meta-data/placement//region"), 404},
		{"dot-dot version escape", rawGet("/latest/../latest/user-data"), 404},
		{"encoded slash", rawGet("/latest/meta-data/iam%2Fsecurity-credentials/"), 400},
		{"encoded slash lower case", rawGet("/latest/meta-data/iam%2fsecurity-credentials%2f"), 400},
		{"encoded dots", rawGet(creds + "%2e%2e/%2e%2e/user-data"), 400},
		{"double-encoded dots", rawGet(creds + "%252e%252e/user-data"), 400},
		{"encoded backslash", rawGet(creds + "..%5c..%5cuser-data"), 400},
		{"encoded role name", rawGet(creds + "pod%2drole"), 400},
		{"backslash", rawGet(creds + "..\\..\\user-data"), 400},
		{"dot-dot-semicolon", rawGet(creds + "..;/..;/user-data"), 400},
		{"semicolon after listing", rawGet("/latest/meta-data/iam/security-credentials;/"), 400},
		{"NUL after role", rawGet(creds + testRoleName + "%00"), 400},
		{"query on credentials", rawGet(creds + testRoleName + "?role=node-instance-role"), 400},
		{"empty query on listing", rawGet(creds + "?"), 400},
		{"fragment", rawGet(creds + "#x"), 400},
		{"non-ASCII", rawGet("/latest/meta-data/\xc4\xb1am/security-credentials/"), 400},
		{"raw UTF-8 dot", rawGet(creds + "\xe2\x80\xa4\xe2\x80\xa4/user-data"), 400},
		{"trailing space", "GET " + creds + "  HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", 400},
		{"encoded trailing space", rawGet(creds + "%20"), 400},
		{"absolute-form target", rawGet("http://169.254.169.254/latest/user-data"), 400},
		{"asterisk target", rawMethod("OPTIONS", "*"), 400},
		{"overlong path", rawGet("/latest/meta-data/" + strings.Repeat("a/", 200)), 400},
		{"mixed-case meta-data", rawGet("/latest/Meta-Data/iam/security-credentials/"), 404},
		{"upper-case IAM", rawGet("/latest/meta-data/IAM/security-credentials/"), 404},
		{"upper-case version", rawGet("/LATEST/meta-data/iam/security-credentials/"), 404},
		{"mixed-case user-data", rawGet("/latest/User-Data"), 404},
		{"unknown version", rawGet("/v2/meta-data/iam/security-credentials/"), 404},
		{"another role's credentials", rawGet(creds + "node-instance-role"), 404},
		{"role name with trailing dot", rawGet(creds + testRoleName + "."), 404},
		{"path below credentials", rawGet(creds + testRoleName + "/Token"), 404},
		{"user-data", rawGet("/latest/user-data"), 404},
		{"user-data with slash", rawGet("/latest/user-data/"), 404},
		{"user-data dated", rawGet("/2021-07-15/user-data"), 404},
		{"pkcs7", rawGet("/latest/dynamic/instance-identity/pkcs7"), 404},
		{"signature", rawGet("/latest/dynamic/instance-identity/signature"), 404},
		{"rsa2048", rawGet("/latest/dynamic/instance-identity/rsa2048"), 404},
		{"identity-credentials", rawGet("/latest/meta-data/identity-credentials/ec2/security-credentials/ec2-instance"), 404},
		{"identity-credentials info", rawGet("/latest/meta-data/identity-credentials/ec2/info"), 404},
		{"identity-credentials listing", rawGet("/latest/meta-data/identity-credentials/"), 404},
		{"instance tags", rawGet("/latest/meta-data/tags/instance/Secret"), 404},
		{"public keys", rawGet("/latest/meta-data/public-keys/0/openssh-key"), 404},
		{"unknown iam path", rawGet("/latest/meta-data/iam/node"), 404},
		{"node's extended credentials", rawGet("/latest/meta-data/iam/security-credentials-extended/node-instance-role"), 404},
		{"node's extended credentials in upper case", rawGet("/latest/meta-data/IAM/SECURITY-CREDENTIALS-EXTENDED/node-instance-role"), 404},
		{"extended listing in mixed case", rawGet("/latest/meta-data/iam/Security-Credentials-Extended/"), 404},
		{"credentials in mixed case", rawGet("/latest/meta-data/iam/Security-Credentials/node-instance-role"), 404},
		{"dot-dot from extended to the node role", rawGet("/latest/meta-data/iam/security-credentials-extended/../security-credentials/node-instance-role"), 404},
		{"encoded dash in extended", rawGet("/latest/meta-data/iam/security-credentials%2dextended/"), 400},
		{"identity-credentials in upper case", rawGet("/latest/meta-data/IDENTITY-CREDENTIALS/ec2/security-credentials/ec2-instance"), 404},
		{"identity-credentials info in mixed case", rawGet("/latest/meta-data/Identity-Credentials/ec2/info"), 404},
		{"GET the token route", rawGet("/latest/api/token"), 405},
		{"POST credentials", rawMethod("POST", creds+testRoleName, "Content-Length: 0"), 405},
		{"PUT credentials", rawMethod("PUT", creds+testRoleName, ttlHeader+": 60"), 405},
		{"DELETE user-data", rawMethod("DELETE", "/latest/user-data"), 405},
		{"huge header", rawGet(creds, "X-Big: "+strings.Repeat("a", 64<<10)), 431},
		{"many headers", rawGet(creds, strings.Repeat("X-A: b\r\n", 3000)+"X-End: 1"), 431},
		{"body on GET", rawGet(creds, "Content-Length: 4096"), 413},
		{"X-Forwarded-For on token PUT", rawMethod("PUT", "/latest/api/token", ttlHeader+": 21600", "X-Forwarded-For: 127.0.0.1"), 403},
		{"Forwarded on token PUT", rawMethod("PUT", "/latest/api/token", ttlHeader+": 21600", "Forwarded: for=127.0.0.1"), 403},
		{"token PUT without TTL", rawMethod("PUT", "/latest/api/token"), 400},
		{"token PUT with TTL too long", rawMethod("PUT", "/latest/api/token", ttlHeader+": 21601"), 400},
		{"token PUT with TTL zero", rawMethod("PUT", "/latest/api/token", ttlHeader+": 0"), 400},
		{"token PUT with negative TTL", rawMethod("PUT", "/latest/api/token", ttlHeader+": -5"), 400},
		{"token PUT with query", rawMethod("PUT", "/latest/api/token?ttl=60", ttlHeader+": 60"), 400},
		{"expired token", rawGet(creds+testRoleName, tokenHeader+": "+expired), 401},
		{"token from another process", rawGet(creds+testRoleName, tokenHeader+": "+foreign), 401},
		{"token for another IP", rawGet(creds+testRoleName, tokenHeader+": "+otherIP), 401},
		{"tampered token", rawGet(creds+testRoleName, tokenHeader+": "+string(tampered)), 401},
		{"empty token", rawGet(creds+testRoleName, tokenHeader+":"), 401},
		{"node's upstream-style token", rawGet(creds+testRoleName, tokenHeader+": AQAEAFakeUpstreamTokenxxxxxxxxxxxxxxxxxxxxxxxxxx=="), 401},
		{"valid token on user-data", rawGet("/latest/user-data", tokenHeader+": "+valid), 404},
	}
	c := testCredentials()
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := rawRequest(t, e.addr, tt.req)
			if r.status != tt.want {
				t.Errorf("status %d, want %d (body %q)", r.status, tt.want, r.body)
			}
			for _, secret := range []string{fakeimds.SecretMarker, c.AccessKeyID, c.SecretAccessKey, c.SessionToken, "node-instance-role"} {
				if strings.Contains(r.body, secret) {
					t.Errorf("response carries %q: %q", secret, r.body)
				}
			}
		})
	}
	if got := e.upstreamPaths(); len(got) != 0 {
		t.Errorf("hostile requests reached the upstream: %q", got)
	}
	if strings.Contains(e.logs.String(), valid) || strings.Contains(e.logs.String(), foreign) {
		t.Error("a token was logged")
	}

	// Positive controls on the same server: the canonical forms work.
	for _, ok := range []string{creds, creds + testRoleName, "/2021-07-15/meta-data/iam/security-credentials/" + testRoleName} {
		if r := rawRequest(t, e.addr, rawGet(ok, tokenHeader+": "+valid)); r.status != http.StatusOK {
			t.Errorf("canonical %s: status %d", ok, r.status)
		}
	}
}

// TestTokenRouteIsExact proves that only PUT /latest/api/token, byte for
// byte, mints an IMDSv2 token. Every other spelling carries a valid TTL, so
// only the path or method can refuse it, and gets what IMDS gives: 405 for
// another method on the route, 403 for a dated version's token route (IMDS
// mints under latest only), 404 for any other spelling, 400 for bytes that
// never belong in a path. None carries a token or reaches the upstream.
func TestTokenRouteIsExact(t *testing.T) {
	e := newTestEnv(t, Options{})
	valid := e.srv.tokens.mint(loopback, time.Hour)
	ttl := ttlHeader + ": 21600"
	tests := []struct {
		name string
		req  string
		want int
	}{
		{"trailing slash", rawMethod("PUT", "/latest/api/token/", ttl), 404},
		{"path below the route", rawMethod("PUT", "/latest/api/token/x", ttl), 404},
		{"path below the route with a slash", rawMethod("PUT", "/latest/api/token/x/", ttl), 404},
		{"upper-case API", rawMethod("PUT", "/latest/API/token", ttl), 404},
		{"capitalised Token", rawMethod("PUT", "/latest/api/Token", ttl), 404},
		{"upper-case everything", rawMethod("PUT", "/latest/API/TOKEN", ttl), 404},
		{"upper-case version", rawMethod("PUT", "/LATEST/api/token", ttl), 404},
		{"api directory", rawMethod("PUT", "/latest/api", ttl), 404},
		{"api directory with a slash", rawMethod("PUT", "/latest/api/", ttl), 404},
		{"another name under api", rawMethod("PUT", "/latest/api/tokens", ttl), 404},
		{"token route under meta-data", rawMethod("PUT", "/latest/meta-data/api/token", ttl), 405},
		{"dated version", rawMethod("PUT", "/2021-07-15/api/token", ttl), 403},
		{"dated version with a slash", rawMethod("PUT", "/2021-07-15/api/token/", ttl), 404},
		{"double slash", rawMethod("PUT", "/latest//api/token", ttl), 404},
		{"dot segment", rawMethod("PUT", "/latest/./api/token", ttl), 404},
		{"dot-dot segment", rawMethod("PUT", "/latest/api/../api/token", ttl), 404},
		{"encoded slash", rawMethod("PUT", "/latest/api%2ftoken", ttl), 400},
		{"encoded trailing slash", rawMethod("PUT", "/latest/api/token%2f", ttl), 400},
		{"GET", rawGet("/latest/api/token", ttl), 405},
		{"GET with a valid token", rawGet("/latest/api/token", ttl, tokenHeader+": "+valid), 405},
		{"HEAD", rawMethod("HEAD", "/latest/api/token", ttl), 405},
		{"POST", rawMethod("POST", "/latest/api/token", ttl, "Content-Length: 0"), 405},
		{"PATCH", rawMethod("PATCH", "/latest/api/token", ttl, "Content-Length: 0"), 405},
		{"GET with a trailing slash", rawGet("/latest/api/token/", tokenHeader+": "+valid), 404},
		{"GET below the route", rawGet("/latest/api/token/x", tokenHeader+": "+valid), 404},
		{"GET in upper case", rawGet("/latest/API/token", tokenHeader+": "+valid), 404},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := rawRequest(t, e.addr, tt.req)
			if r.status != tt.want {
				t.Errorf("status %d, want %d (body %q)", r.status, tt.want, r.body)
			}
			if r.header.Get(ttlHeader) != "" || len(r.body) == tokenEncodedLen {
				t.Errorf("a refused token request looks like a token answer: %q, %v", r.body, r.header)
			}
		})
	}
	if got := counterValue(t, e.reg, "kube2ra_imds_tokens_issued_total", nil); got != 0 {
		t.Errorf("%v tokens issued to requests that are not PUT /latest/api/token", got)
	}
	if got := e.upstreamPaths(); len(got) != 0 {
		t.Errorf("token-route variants reached the upstream: %q", got)
	}

	// Positive control on the same server: the exact route mints one.
	r := rawRequest(t, e.addr, rawMethod("PUT", tokenPath, ttl))
	if r.status != http.StatusOK || r.header.Get(ttlHeader) != "21600" || !e.srv.tokens.valid(r.body, loopback) {
		t.Errorf("PUT %s: status %d, TTL %q, token valid %v", tokenPath, r.status, r.header.Get(ttlHeader), e.srv.tokens.valid(r.body, loopback))
	}
}

// TestBlockedPathsNeverPassThroughWhateverThePatterns proves the request-time
// lock through the whole handler: with patterns that newAllowlist refuses at
// start ("**" and friends, forced in here) and an upstream that cleans paths
// and folds letter case, no spelling of iam/, identity-credentials/ or api/
// reaches the upstream, while an ordinary path still does.
func TestBlockedPathsNeverPassThroughWhateverThePatterns(t *testing.T) {
	up := fakeimds.New(fakeimds.Options{})
	if err := up.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = up.Stop() })
	s, err := New(Options{HostIP: "127.0.0.1", MetadataAddr: up.Addr()},
		&fakePods{byIP: map[netip.Addr]*k8s.Pod{loopback: testPod()}}, &fakeRoles{role: testRole()}, &fakeCreds{creds: testCredentials()})
	if err != nil {
		t.Fatal(err)
	}
	if s.allow, err = compileAllowlist([]string{"**", "meta-data/**", "meta-data/IAM/**", "API/**"}); err != nil {
		t.Fatal(err)
	}
	for _, target := range []string{
		"/latest/meta-data/IAM/security-credentials/node-instance-role",
		"/latest/meta-data/Iam/Security-Credentials-Extended/node-instance-role",
		"/latest/META-DATA/iam/info",
		"/latest/meta-data/IDENTITY-CREDENTIALS/ec2/security-credentials/ec2-instance",
		"/latest/meta-data/identity-Credentials/ec2/info",
		"/latest/API/token",
		"/latest/Api/Token/",
	} {
		req := httptest.NewRequest(http.MethodGet, target, nil)
		req.RemoteAddr = "127.0.0.1:40000"
		rec := httptest.NewRecorder()
		s.Handler().ServeHTTP(rec, req)
		if rec.Code != http.StatusNotFound || strings.Contains(rec.Body.String(), fakeimds.SecretMarker) {
			t.Errorf("GET %s: %d %q; want 404 without the node's secrets", target, rec.Code, rec.Body.String())
		}
	}
	if got := up.Requests(); len(got) != 0 {
		t.Errorf("blocked paths reached the upstream: %+v", got)
	}
	req := httptest.NewRequest(http.MethodGet, "/latest/meta-data/tags/instance/Secret", nil)
	req.RemoteAddr = "127.0.0.1:40000"
	rec := httptest.NewRecorder()
	s.Handler().ServeHTTP(rec, req)
	if rec.Code != http.StatusOK || len(up.Requests()) == 0 {
		t.Errorf("control: a path the forced patterns allow was not passed through (%d)", rec.Code)
	}
}
