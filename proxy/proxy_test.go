package proxy

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/client-go/tools/record"
	clocktesting "k8s.io/utils/clock/testing"

	"github.com/kube2ra/kube2ra/credentials"
	"github.com/kube2ra/kube2ra/k8s"
	"github.com/kube2ra/kube2ra/test/fakeaws/fakeimds"
)

func TestCredentialDocumentIsExactlyIMDSFormat(t *testing.T) {
	e := newTestEnv(t, Options{})
	c := e.creds.creds
	status, body, hdr := httpGet(t, e.url+"/latest/meta-data/iam/security-credentials/"+testRoleName, nil)
	if status != http.StatusOK {
		t.Fatalf("status %d, body %q", status, body)
	}
	// EC2's own layout (AWS's documented example, and what curl shows on
	// an instance): a field a line, "Name" : "value".
	want := fmt.Sprintf("{\n  \"Code\" : \"Success\",\n  \"LastUpdated\" : \"%s\",\n  \"Type\" : \"AWS-HMAC\",\n  \"AccessKeyId\" : \"%s\",\n  \"SecretAccessKey\" : \"%s\",\n  \"Token\" : \"%s\",\n  \"Expiration\" : \"%s\"\n}",
		c.LastUpdated.Format("2006-01-02T15:04:05Z"), c.AccessKeyID, c.SecretAccessKey, c.SessionToken, c.Expiration.Format("2006-01-02T15:04:05Z"))
	if body != want {
		t.Errorf("body\n got %s\nwant %s", body, want)
	}
	if ct := hdr.Get("Content-Type"); ct != "text/plain" {
		t.Errorf("Content-Type %q, want text/plain as IMDS", ct)
	}
	// What scripts written against EC2 do: grep AccessKeyId | cut -d'"' -f4.
	for _, line := range strings.Split(body, "\n") {
		if strings.Contains(line, "AccessKeyId") {
			if f := strings.Split(line, `"`); len(f) < 4 || f[3] != c.AccessKeyID {
				t.Errorf("cut -d'\"' -f4 of the AccessKeyId line %q is not the key ID %s", line, c.AccessKeyID)
			}
		}
	}
}

// The extended document is the IMDS document with AccountId last, as EC2
// and the SDKs' own test fixtures have it; the legacy one has no AccountId.
func TestExtendedCredentialDocumentIsExactlyIMDSFormat(t *testing.T) {
	e := newTestEnv(t, Options{})
	c := e.creds.creds
	for _, path := range []string{"/latest/meta-data/iam/security-credentials-extended/" + testRoleName, "/2021-07-15/meta-data/iam/security-credentials-extended/" + testRoleName + "/"} {
		status, body, hdr := httpGet(t, e.url+path, nil)
		if status != http.StatusOK {
			t.Fatalf("%s: status %d, body %q", path, status, body)
		}
		want := fmt.Sprintf("{\n  \"Code\" : \"Success\",\n  \"LastUpdated\" : \"%s\",\n  \"Type\" : \"AWS-HMAC\",\n  \"AccessKeyId\" : \"%s\",\n  \"SecretAccessKey\" : \"%s\",\n  \"Token\" : \"%s\",\n  \"Expiration\" : \"%s\",\n  \"AccountId\" : \"%s\"\n}",
			c.LastUpdated.Format("2006-01-02T15:04:05Z"), c.AccessKeyID, c.SecretAccessKey, c.SessionToken, c.Expiration.Format("2006-01-02T15:04:05Z"), testAccountID)
		if body != want {
			t.Errorf("%s: body\n got %s\nwant %s", path, body, want)
		}
		if ct := hdr.Get("Content-Type"); ct != "text/plain" {
			t.Errorf("%s: Content-Type %q, want text/plain as IMDS", path, ct)
		}
	}
	// Reading the extended document first must not change the legacy one.
	if _, body, _ := httpGet(t, e.url+"/latest/meta-data/iam/security-credentials/"+testRoleName, nil); strings.Contains(body, "AccountId") {
		t.Errorf("the legacy document carries AccountId: %s", body)
	}
	// The first serving is an ordinary credentials line, not a refusal.
	for _, line := range strings.Split(strings.TrimSpace(e.logs.String()), "\n") {
		var l map[string]any
		if err := json.Unmarshal([]byte(line), &l); err != nil {
			t.Fatal(err)
		}
		if l["route"] == routeExtendedCredentials && (l["msg"] != "credentials served to pod" || l["reason"] != nil || l["level"] != "info") {
			t.Errorf("extended credentials logged as %s", line)
		}
	}
	if got := counterValue(t, e.reg, "kube2ra_http_requests_total", map[string]string{"route": routeExtendedCredentials, "code": "200"}); got != 2 {
		t.Errorf("kube2ra_http_requests_total{route=%q} = %v, want 2", routeExtendedCredentials, got)
	}
}

func TestCredentialRoutes(t *testing.T) {
	denied := &k8s.DenialError{Reason: k8s.DeniedByNamespace, Role: testRoleARN, Namespace: "team-a", Detail: "not allowed"}
	tests := []struct {
		name       string
		path       string
		podErr     error
		role       k8s.Role
		roleErr    error
		credErr    error
		wantStatus int
		wantBody   string // exact, or "" to skip
		wantReason string // denials_total reason, "" for none
	}{
		{name: "listing without slash names the role", path: "/latest/meta-data/iam/security-credentials", wantStatus: 200, wantBody: testRoleName},
		{name: "listing with slash names the role", path: "/latest/meta-data/iam/security-credentials/", wantStatus: 200, wantBody: testRoleName},
		{name: "dated version lists the role", path: "/2021-07-15/meta-data/iam/security-credentials/", wantStatus: 200, wantBody: testRoleName},
		{name: "own role gets credentials", path: "/latest/meta-data/iam/security-credentials/" + testRoleName, wantStatus: 200},
		{name: "another role name is 404", path: "/latest/meta-data/iam/security-credentials/node-instance-role", wantStatus: 404, wantReason: reasonRoleNameMismatch},
		{name: "role name differing in case is 404", path: "/latest/meta-data/iam/security-credentials/Pod-Role", wantStatus: 404, wantReason: reasonRoleNameMismatch},
		{name: "unknown pod is 404", path: "/latest/meta-data/iam/security-credentials/", podErr: k8s.ErrPodNotFound, wantStatus: 404, wantReason: reasonPodNotFound},
		{name: "ambiguous IP is 404", path: "/latest/meta-data/iam/security-credentials/" + testRoleName, podErr: k8s.ErrAmbiguousIP, wantStatus: 404, wantReason: reasonAmbiguousIP},
		{name: "wrapped not-found is 404", path: "/latest/meta-data/iam/security-credentials/", podErr: fmt.Errorf("after 1s: %w", k8s.ErrPodNotFound), wantStatus: 404, wantReason: reasonPodNotFound},
		{name: "unsynced cache is 503", path: "/latest/meta-data/iam/security-credentials/", podErr: k8s.ErrNotSynced, wantStatus: 503, wantReason: reasonNotSynced},
		{name: "lookup failure is 500", path: "/latest/meta-data/iam/security-credentials/", podErr: errTest, wantStatus: 500, wantReason: reasonLookupError},
		{name: "no role is 404 on the listing", path: "/latest/meta-data/iam/security-credentials/", roleErr: k8s.ErrNoRole, wantStatus: 404, wantReason: reasonNoRole},
		{name: "no role is 404 on iam/info", path: "/latest/meta-data/iam/info", roleErr: k8s.ErrNoRole, wantStatus: 404, wantReason: reasonNoRole},
		{name: "no role is 404 on iam/", path: "/latest/meta-data/iam/", roleErr: k8s.ErrNoRole, wantStatus: 404, wantReason: reasonNoRole},
		{name: "namespace denial is 404", path: "/latest/meta-data/iam/security-credentials/" + testRoleName, roleErr: denied, wantStatus: 404, wantReason: string(k8s.DeniedByNamespace)},
		{name: "namespace unreadable while the watch is not current is 503", path: "/latest/meta-data/iam/security-credentials/" + testRoleName, roleErr: fmt.Errorf("reading namespace team-a live: %w", k8s.ErrNotSynced), wantStatus: 503, wantReason: reasonNotSynced},
		{name: "role without name is 404", path: "/latest/meta-data/iam/security-credentials/", role: k8s.Role{ARN: testRoleARN}, wantStatus: 404, wantReason: string(k8s.DeniedInvalidRole)},
		{name: "throttled credentials are 503", path: "/latest/meta-data/iam/security-credentials/" + testRoleName, credErr: &credentials.Error{Kind: credentials.KindThrottled, Code: "ThrottlingException"}, wantStatus: 503},
		{name: "unavailable credentials are 503", path: "/latest/meta-data/iam/security-credentials/" + testRoleName, credErr: &credentials.Error{Kind: credentials.KindUnavailable}, wantStatus: 503},
		{name: "denied credentials are 500", path: "/latest/meta-data/iam/security-credentials/" + testRoleName, credErr: &credentials.Error{Kind: credentials.KindDenied, Code: "AccessDenied", Message: "trust policy"}, wantStatus: 500},
		{name: "invalid credentials request is 500", path: "/latest/meta-data/iam/security-credentials/" + testRoleName, credErr: &credentials.Error{Kind: credentials.KindInvalid}, wantStatus: 500},
		{name: "extended listing without slash names the role", path: "/latest/meta-data/iam/security-credentials-extended", wantStatus: 200, wantBody: testRoleName},
		{name: "extended listing with slash names the role", path: "/latest/meta-data/iam/security-credentials-extended/", wantStatus: 200, wantBody: testRoleName},
		{name: "dated version lists the role under extended", path: "/2021-07-15/meta-data/iam/security-credentials-extended/", wantStatus: 200, wantBody: testRoleName},
		{name: "own role gets extended credentials", path: "/latest/meta-data/iam/security-credentials-extended/" + testRoleName, wantStatus: 200},
		{name: "another role name is 404 under extended", path: "/latest/meta-data/iam/security-credentials-extended/node-instance-role", wantStatus: 404, wantReason: reasonRoleNameMismatch},
		{name: "no role is 404 on the extended listing, so SDKs fall back", path: "/latest/meta-data/iam/security-credentials-extended/", roleErr: k8s.ErrNoRole, wantStatus: 404, wantReason: reasonNoRole},
		{name: "no role is 404 on the extended document", path: "/latest/meta-data/iam/security-credentials-extended/" + testRoleName, roleErr: k8s.ErrNoRole, wantStatus: 404, wantReason: reasonNoRole},
		{name: "namespace denial is 404 under extended", path: "/latest/meta-data/iam/security-credentials-extended/" + testRoleName, roleErr: denied, wantStatus: 404, wantReason: string(k8s.DeniedByNamespace)},
		{name: "unknown pod is 404 under extended", path: "/latest/meta-data/iam/security-credentials-extended/", podErr: k8s.ErrPodNotFound, wantStatus: 404, wantReason: reasonPodNotFound},
		{name: "throttled extended credentials are 503", path: "/latest/meta-data/iam/security-credentials-extended/" + testRoleName, credErr: &credentials.Error{Kind: credentials.KindThrottled, Code: "ThrottlingException"}, wantStatus: 503},
		{name: "role without account is 500 on the extended document", path: "/latest/meta-data/iam/security-credentials-extended/" + testRoleName, role: k8s.Role{ARN: testRoleARN, Name: testRoleName}, wantStatus: 500},
		{name: "role without account still gets the legacy document", path: "/latest/meta-data/iam/security-credentials/" + testRoleName, role: k8s.Role{ARN: testRoleARN, Name: testRoleName}, wantStatus: 200},
		{name: "path below the extended credentials is 404", path: "/latest/meta-data/iam/security-credentials-extended/" + testRoleName + "/x", wantStatus: 404, wantReason: reasonPathNotAllowed},
		{name: "iam listing", path: "/latest/meta-data/iam", wantStatus: 200, wantBody: "info\nsecurity-credentials/"},
		{name: "unknown iam path is 404", path: "/latest/meta-data/iam/foo", wantStatus: 404, wantReason: reasonPathNotAllowed},
		{name: "path below the credentials is 404", path: "/latest/meta-data/iam/security-credentials/" + testRoleName + "/x", wantStatus: 404, wantReason: reasonPathNotAllowed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newTestEnv(t, Options{})
			e.pods.set(tt.podErr)
			role := testRole()
			if tt.role != (k8s.Role{}) {
				role = tt.role
			}
			e.roles.set(role, tt.roleErr)
			e.creds.set(tt.credErr)
			status, body, _ := httpGet(t, e.url+tt.path, nil)
			if status != tt.wantStatus {
				t.Fatalf("status %d, want %d (body %q)", status, tt.wantStatus, body)
			}
			if tt.wantBody != "" && body != tt.wantBody {
				t.Errorf("body %q, want %q", body, tt.wantBody)
			}
			if status != 200 {
				for _, leak := range []string{"denied", "trust policy", "AccessDenied", "Throttling", "team-a", testRoleARN} {
					if strings.Contains(body, leak) {
						t.Errorf("error body %q reveals %q; reasons belong in the log", body, leak)
					}
				}
			}
			if tt.wantReason != "" {
				if got := counterValue(t, e.reg, "kube2ra_denials_total", map[string]string{"reason": tt.wantReason}); got != 1 {
					t.Errorf("kube2ra_denials_total{reason=%q} = %v, want 1", tt.wantReason, got)
				}
				if !strings.Contains(e.logs.String(), `"reason":"`+tt.wantReason+`"`) {
					t.Errorf("log has no reason %q:\n%s", tt.wantReason, e.logs.String())
				}
			}
			if len(e.up.Requests()) != 0 {
				t.Errorf("credential routes reached the upstream: %q", e.upstreamPaths())
			}
		})
	}
}

func TestIAMInfoIsSyntheticForThePodRole(t *testing.T) {
	e := newTestEnv(t, Options{})
	status, body, _ := httpGet(t, e.url+"/latest/meta-data/iam/info", nil)
	if status != 200 {
		t.Fatalf("status %d", status)
	}
	var doc map[string]string
	if err := json.Unmarshal([]byte(body), &doc); err != nil {
		t.Fatalf("iam/info is not JSON: %v: %s", err, body)
	}
	if doc["Code"] != "Success" || doc["InstanceProfileArn"] != "arn:aws:iam::123456789012:instance-profile/team/"+testRoleName {
		t.Errorf("iam/info = %v", doc)
	}
	if !regexp.MustCompile(`^AIPA[A-Z2-7]{17}$`).MatchString(doc["InstanceProfileId"]) {
		t.Errorf("InstanceProfileId %q is not in IAM's format", doc["InstanceProfileId"])
	}
	if _, err := time.Parse("2006-01-02T15:04:05Z", doc["LastUpdated"]); err != nil {
		t.Errorf("LastUpdated %q: %v", doc["LastUpdated"], err)
	}
	if strings.Contains(body, "node-instance-role") {
		t.Errorf("iam/info reveals the node's profile: %s", body)
	}
}

func TestTokens(t *testing.T) {
	fc := clocktesting.NewFakeClock(time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC))
	e := newTestEnv(t, Options{Clock: fc, IMDSv2Required: true})
	credPath := e.url + "/latest/meta-data/iam/security-credentials/" + testRoleName

	t.Run("PUT without TTL is 400", func(t *testing.T) {
		if status, _, _ := putToken(t, e.url, "", nil); status != 400 {
			t.Errorf("status %d, want 400", status)
		}
	})
	for _, ttl := range []string{"0", "21601", "-1", "abc", "+5", "5.0", "0x10", "999999999999999999999"} {
		t.Run("PUT with TTL "+ttl+" is 400", func(t *testing.T) {
			if status, _, _ := putToken(t, e.url, ttl, nil); status != 400 {
				t.Errorf("status %d, want 400", status)
			}
		})
	}
	t.Run("PUT with two TTL headers is 400", func(t *testing.T) {
		if status, _, _ := putToken(t, e.url, "", http.Header{ttlHeader: {"60", "120"}}); status != 400 {
			t.Errorf("status %d, want 400", status)
		}
	})
	t.Run("PUT with X-Forwarded-For is 403", func(t *testing.T) {
		if status, _, _ := putToken(t, e.url, "60", http.Header{"X-Forwarded-For": {"127.0.0.1"}}); status != 403 {
			t.Errorf("status %d, want 403", status)
		}
	})
	t.Run("PUT with empty X-Forwarded-For is 403", func(t *testing.T) {
		r := rawRequest(t, e.addr, rawMethod("PUT", "/latest/api/token", ttlHeader+": 60", "X-Forwarded-For:"))
		if r.status != 403 {
			t.Errorf("status %d, want 403", r.status)
		}
	})

	status, tok, hdr := putToken(t, e.url, "21600", nil)
	if status != 200 || tok == "" {
		t.Fatalf("PUT: status %d token %q", status, tok)
	}
	if got := hdr.Get(ttlHeader); got != "21600" {
		t.Errorf("TTL header echoed as %q, want 21600", got)
	}
	t.Run("GET with the token gets credentials", func(t *testing.T) {
		if status, _, _ := httpGet(t, credPath, http.Header{tokenHeader: {tok}}); status != 200 {
			t.Errorf("status %d", status)
		}
	})
	t.Run("GET without token is 401 when IMDSv2 is required", func(t *testing.T) {
		if status, _, _ := httpGet(t, credPath, nil); status != 401 {
			t.Errorf("status %d, want 401", status)
		}
	})
	t.Run("GET with a tampered token is 401", func(t *testing.T) {
		bad := []byte(tok)
		bad[10] ^= 1
		if status, _, _ := httpGet(t, credPath, http.Header{tokenHeader: {string(bad)}}); status != 401 {
			t.Errorf("status %d, want 401", status)
		}
	})
	t.Run("GET with a token from another process is 401", func(t *testing.T) {
		other, err := newTokenMinter(fc)
		if err != nil {
			t.Fatal(err)
		}
		if status, _, _ := httpGet(t, credPath, http.Header{tokenHeader: {other.mint(loopback, time.Hour)}}); status != 401 {
			t.Errorf("status %d, want 401", status)
		}
	})
	t.Run("GET with a token minted for another IP is 401", func(t *testing.T) {
		r := rawRequestFrom(t, netip.MustParseAddr("127.0.0.2"), e.addr, rawGet("/latest/meta-data/iam/security-credentials/", tokenHeader+": "+tok))
		if r.status != 401 {
			t.Errorf("status %d, want 401", r.status)
		}
	})
	t.Run("GET with two token headers is 401", func(t *testing.T) {
		r := rawRequest(t, e.addr, rawGet("/latest/meta-data/iam/security-credentials/", tokenHeader+": "+tok, tokenHeader+": "+tok))
		if r.status != 401 {
			t.Errorf("status %d, want 401", r.status)
		}
	})
	t.Run("GET with an expired token is 401", func(t *testing.T) {
		_, short, _ := putToken(t, e.url, "1", nil)
		if status, _, _ := httpGet(t, credPath, http.Header{tokenHeader: {short}}); status != 200 {
			t.Fatalf("fresh 1-second token: status %d", status)
		}
		fc.Step(time.Second)
		if status, _, _ := httpGet(t, credPath, http.Header{tokenHeader: {short}}); status != 401 {
			t.Errorf("expired token: status %d, want 401", status)
		}
	})
	if got := counterValue(t, e.reg, "kube2ra_imds_tokens_issued_total", nil); got != 2 {
		t.Errorf("kube2ra_imds_tokens_issued_total = %v, want 2", got)
	}
	if strings.Contains(e.logs.String(), tok) {
		t.Error("a session token was logged")
	}
}

func TestTokenlessGETIsAllowedUnlessRequired(t *testing.T) {
	e := newTestEnv(t, Options{})
	if status, _, _ := httpGet(t, e.url+"/latest/meta-data/iam/security-credentials/", nil); status != 200 {
		t.Errorf("IMDSv1 GET: status %d, want 200", status)
	}
	if status, _, _ := httpGet(t, e.url+"/latest/meta-data/iam/security-credentials/", http.Header{tokenHeader: {"garbage"}}); status != 401 {
		t.Errorf("GET with a bad token: status %d, want 401 even when tokens are optional", status)
	}
}

func TestXForwardedForOnGETDoesNotChangeTheCaller(t *testing.T) {
	e := newTestEnv(t, Options{})
	other := &k8s.Pod{Namespace: "other", Name: "other", IPs: []netip.Addr{netip.MustParseAddr("10.9.9.9")}}
	e.pods.byIP[netip.MustParseAddr("10.9.9.9")] = other
	delete(e.pods.byIP, loopback)
	status, _, _ := httpGet(t, e.url+"/latest/meta-data/iam/security-credentials/", http.Header{"X-Forwarded-For": {"10.9.9.9"}, "X-Real-Ip": {"10.9.9.9"}})
	if status != 404 {
		t.Errorf("status %d: the caller is the TCP peer, not a header", status)
	}
}

func TestPassthroughUsesOwnTokenAndFreshRequest(t *testing.T) {
	e := newTestEnv(t, Options{})
	_, clientTok, _ := putToken(t, e.url, "60", nil)
	status, body, _ := httpGet(t, e.url+"/latest/meta-data/instance-id", http.Header{
		tokenHeader:       {clientTok},
		"X-Forwarded-For": {"10.1.2.3"},
		"Authorization":   {"secret-client-header"},
		"Cookie":          {"a=b"},
		"X-Custom":        {"1"},
	})
	if status != 200 || body != e.up.InstanceID() {
		t.Fatalf("status %d body %q, want 200 %q", status, body, e.up.InstanceID())
	}
	var gets []fakeimds.Request
	for _, r := range e.up.Requests() {
		if r.Method == http.MethodGet {
			gets = append(gets, r)
		}
	}
	if len(gets) != 1 || gets[0].RequestURI != "/latest/meta-data/instance-id" {
		t.Fatalf("upstream saw %q", e.upstreamPaths())
	}
	h := gets[0].Header
	for _, k := range []string{"X-Forwarded-For", "Forwarded", "X-Real-Ip", "Authorization", "Cookie", "X-Custom", "Via"} {
		if v := h.Values(k); len(v) > 0 {
			t.Errorf("upstream got %s: %q", k, v)
		}
	}
	if got := h.Get(tokenHeader); got == "" || got == clientTok {
		t.Errorf("upstream token %q: want kube2ra's own token, not empty, not the client's", got)
	}
	if e.up.TokensIssued() != 1 {
		t.Errorf("upstream issued %d tokens, want 1 (kube2ra's own)", e.up.TokensIssued())
	}
	if ua := h.Get("User-Agent"); ua != upstreamUserAgent {
		t.Errorf("upstream User-Agent %q", ua)
	}
	// A second request reuses the cached upstream token.
	httpGet(t, e.url+"/latest/meta-data/instance-type", nil)
	if e.up.TokensIssued() != 1 {
		t.Errorf("upstream issued %d tokens after two reads, want the cached one reused", e.up.TokensIssued())
	}
	if got := counterValue(t, e.reg, "kube2ra_passthrough_requests_total", map[string]string{"code": "200"}); got < 2 {
		t.Errorf("kube2ra_passthrough_requests_total{code=200} = %v", got)
	}
}

func TestPassthroughUpstreamTokenLifecycle(t *testing.T) {
	t.Run("upstream without IMDSv2 is read with v1", func(t *testing.T) {
		e := newTestEnv(t, Options{})
		e.up.SetTokenPUTStatus(http.StatusForbidden)
		if status, body, _ := httpGet(t, e.url+"/latest/meta-data/placement/region", nil); status != 200 || body != e.up.Region() {
			t.Fatalf("status %d body %q", status, body)
		}
		reqs := e.up.Requests()
		if last := reqs[len(reqs)-1]; last.Header.Get(tokenHeader) != "" {
			t.Error("v1 fallback still sent a token")
		}
	})
	t.Run("upstream restart invalidates the cached token and it is renewed", func(t *testing.T) {
		e := newTestEnv(t, Options{})
		e.up.SetRequireToken(true)
		httpGet(t, e.url+"/latest/meta-data/instance-id", nil)
		if err := e.up.Restart(); err != nil {
			t.Fatal(err)
		}
		if status, _, _ := httpGet(t, e.url+"/latest/meta-data/instance-id", nil); status != 200 {
			t.Fatalf("after upstream restart: status %d", status)
		}
		if e.up.TokensIssued() != 2 {
			t.Errorf("upstream issued %d tokens, want 2 (one renewal)", e.up.TokensIssued())
		}
	})
	t.Run("token refreshed before expiry", func(t *testing.T) {
		fc := clocktesting.NewFakeClock(time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC))
		up := fakeimds.New(fakeimds.Options{Clock: fc, RequireToken: true})
		if err := up.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = up.Stop() })
		e := newTestEnv(t, Options{Clock: fc, MetadataAddr: up.Addr()})
		e.up = up
		httpGet(t, e.url+"/latest/meta-data/instance-id", nil)
		fc.Step(upstreamTokenTTL - upstreamTokenRefreshBefore + time.Second)
		if status, _, _ := httpGet(t, e.url+"/latest/meta-data/instance-id", nil); status != 200 {
			t.Fatalf("status %d", status)
		}
		if up.TokensIssued() != 2 {
			t.Errorf("upstream issued %d tokens, want a refresh before the 6 h TTL ran out", up.TokensIssued())
		}
	})
	t.Run("upstream down is 502", func(t *testing.T) {
		e := newTestEnv(t, Options{})
		_ = e.up.Stop()
		if status, _, _ := httpGet(t, e.url+"/latest/meta-data/instance-id", nil); status != 502 {
			t.Errorf("status %d, want 502", status)
		}
	})
	t.Run("upstream 404 is passed back", func(t *testing.T) {
		e := newTestEnv(t, Options{})
		if status, _, _ := httpGet(t, e.url+"/latest/meta-data/spot/instance-action", nil); status != 404 {
			t.Errorf("status %d, want the upstream's 404", status)
		}
	})
}

func TestListingsAreFiltered(t *testing.T) {
	e := newTestEnv(t, Options{})
	tests := []struct{ path, want string }{
		{"/", "latest"},
		{"/latest", "dynamic\nmeta-data"},
		{"/latest/", "dynamic\nmeta-data"},
		{"/latest/meta-data/", "ami-id\nami-launch-index\nevents/\nhostname\niam/\ninstance-id\ninstance-life-cycle\ninstance-type\nlocal-hostname\nlocal-ipv4\nmac\nnetwork/\nplacement/\nservices/"},
		{"/latest/meta-data", "ami-id\nami-launch-index\nevents/\nhostname\niam/\ninstance-id\ninstance-life-cycle\ninstance-type\nlocal-hostname\nlocal-ipv4\nmac\nnetwork/\nplacement/\nservices/"},
		{"/latest/dynamic/", "instance-identity/"},
		{"/latest/dynamic/instance-identity/", "document"},
		{"/latest/meta-data/placement/", "availability-zone\navailability-zone-id\nregion"},
	}
	for _, tt := range tests {
		status, body, _ := httpGet(t, e.url+tt.path, nil)
		if status != 200 || body != tt.want {
			t.Errorf("GET %s = %d %q, want %q", tt.path, status, body, tt.want)
		}
	}
	e.roles.set(k8s.Role{}, k8s.ErrNoRole)
	if _, body, _ := httpGet(t, e.url+"/latest/meta-data/", nil); strings.Contains(body, "iam") {
		t.Errorf("meta-data listing for a pod without role shows iam: %q", body)
	}
}

func TestOffAWSAnswersRegionSynthetically(t *testing.T) {
	e := newTestEnv(t, Options{MetadataAddr: MetadataAddrNone, Region: "ap-southeast-2"})
	tests := []struct {
		path       string
		wantStatus int
		want       string
	}{
		{"/latest/meta-data/placement/region", 200, "ap-southeast-2"},
		{"/latest/meta-data/placement/availability-zone", 200, "ap-southeast-2a"},
		{"/latest/meta-data/placement/availability-zone/", 200, "ap-southeast-2a"},
		{"/latest/meta-data/placement/", 200, "availability-zone\nregion"},
		{"/latest/meta-data/", 200, "iam/\nplacement/"},
		{"/latest/dynamic/instance-identity/", 200, "document"},
		{"/latest/meta-data/instance-id", 404, ""},
		{"/latest/meta-data/network/interfaces/macs/", 404, ""},
		{"/latest/user-data", 404, ""},
	}
	for _, tt := range tests {
		status, body, _ := httpGet(t, e.url+tt.path, nil)
		if status != tt.wantStatus || (tt.want != "" && body != tt.want) {
			t.Errorf("GET %s = %d %q, want %d %q", tt.path, status, body, tt.wantStatus, tt.want)
		}
	}
	_, body, _ := httpGet(t, e.url+"/latest/dynamic/instance-identity/document", nil)
	var doc map[string]any
	if err := json.Unmarshal([]byte(body), &doc); err != nil || doc["region"] != "ap-southeast-2" || doc["availabilityZone"] != "ap-southeast-2a" {
		t.Errorf("identity document %s (%v)", body, err)
	}
}

func TestNewRefusesOffAWSWithoutRegion(t *testing.T) {
	_, err := New(Options{MetadataAddr: MetadataAddrNone, HostIP: "127.0.0.1"}, &fakePods{}, &fakeRoles{}, &fakeCreds{})
	if err == nil || !strings.Contains(err.Error(), "region") {
		t.Errorf("err = %v, want one that asks for a region", err)
	}
}

func TestNewRefusesBadOptions(t *testing.T) {
	for name, o := range map[string]Options{
		"no host IP":         {},
		"host name":          {HostIP: "localhost"},
		"every interface":    {HostIP: "0.0.0.0"},
		"every v6 interface": {HostIP: "::"},
		"bad allow path":     {HostIP: "127.0.0.1", AllowPaths: []string{"../user-data"}},
		"allow path reaching the node's credentials in upper case": {HostIP: "127.0.0.1", AllowPaths: []string{"meta-data/IAM/security-credentials/**"}},
		"allow path reaching everything":                           {HostIP: "127.0.0.1", AllowPaths: []string{"**"}},
		"https upstream":                                           {HostIP: "127.0.0.1", MetadataAddr: "https://169.254.169.254"},
		"upstream with path":                                       {HostIP: "127.0.0.1", MetadataAddr: "http://169.254.169.254/latest"},
		"negative rate":                                            {HostIP: "127.0.0.1", RateLimit: -1},
	} {
		if _, err := New(o, &fakePods{}, &fakeRoles{}, &fakeCreds{}); err == nil {
			t.Errorf("%s: New accepted %+v", name, o)
		}
	}
	if _, err := New(Options{HostIP: "127.0.0.1"}, nil, &fakeRoles{}, &fakeCreds{}); err == nil {
		t.Error("New accepted a nil PodFinder")
	}
}

func TestRateLimitPerCallerIP(t *testing.T) {
	fc := clocktesting.NewFakeClock(time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC))
	e := newTestEnv(t, Options{Clock: fc, RateLimit: 1, RateLimitBurst: 2})
	path := "/latest/meta-data/iam/security-credentials/"
	for i, want := range []int{200, 200, 429} {
		if status, _, _ := httpGet(t, e.url+path, nil); status != want {
			t.Errorf("request %d: status %d, want %d", i, status, want)
		}
	}
	other := rawRequestFrom(t, netip.MustParseAddr("127.0.0.3"), e.addr, rawGet(path))
	if other.status == 429 {
		t.Error("another caller IP was limited by 127.0.0.1's bucket")
	}
	fc.Step(time.Second)
	if status, _, _ := httpGet(t, e.url+path, nil); status != 200 {
		t.Errorf("after a second: status %d, want 200", status)
	}
	if got := counterValue(t, e.reg, "kube2ra_denials_total", map[string]string{"reason": "RateLimited"}); got != 1 {
		t.Errorf("denials{RateLimited} = %v", got)
	}
}

func TestRequestLogLine(t *testing.T) {
	e := newTestEnv(t, Options{})
	httpGet(t, e.url+"/latest/meta-data/iam/security-credentials/"+testRoleName, nil)
	var line map[string]any
	if err := json.Unmarshal([]byte(strings.Split(strings.TrimSpace(e.logs.String()), "\n")[0]), &line); err != nil {
		t.Fatalf("log line is not JSON: %v\n%s", err, e.logs.String())
	}
	want := map[string]any{"pod": "app-7d9f", "namespace": "team-a", "role": testRoleARN, "status": float64(200),
		"path": "/latest/meta-data/iam/security-credentials/" + testRoleName, "client_ip": "127.0.0.1", "route": routeCredentials}
	for k, v := range want {
		if line[k] != v {
			t.Errorf("log field %s = %v, want %v", k, line[k], v)
		}
	}
	if _, ok := line["duration_ms"].(float64); !ok {
		t.Errorf("log line has no duration_ms: %v", line)
	}
	c := testCredentials()
	for _, secret := range []string{c.SecretAccessKey, c.SessionToken} {
		if strings.Contains(e.logs.String(), secret) {
			t.Errorf("the log contains a secret")
		}
	}
}

func TestRequestMetrics(t *testing.T) {
	e := newTestEnv(t, Options{})
	for range 3 {
		httpGet(t, e.url+"/latest/meta-data/iam/security-credentials/"+testRoleName, nil)
	}
	httpGet(t, e.url+"/latest/user-data", nil)
	httpGet(t, e.url+"/latest/user-data", nil)
	if got := counterValue(t, e.reg, "kube2ra_http_requests_total", map[string]string{"route": routeCredentials, "code": "200"}); got != 3 {
		t.Errorf("requests{credentials,200} = %v, want 3", got)
	}
	if got := counterValue(t, e.reg, "kube2ra_http_requests_total", map[string]string{"route": routePassthrough, "code": "404"}); got != 2 {
		t.Errorf("requests{passthrough,404} = %v, want 2", got)
	}
	if got := histogramCount(t, e.reg, "kube2ra_http_request_duration_seconds", map[string]string{"route": routeCredentials}); got != 3 {
		t.Errorf("duration{credentials} counted %d requests, want 3", got)
	}
	if got := counterValue(t, e.reg, "kube2ra_denials_total", map[string]string{"reason": reasonPathNotAllowed}); got != 2 {
		t.Errorf("denials{PathNotAllowed} = %v, want 2", got)
	}
	mfs, _ := e.reg.Gather()
	var names []string
	for _, mf := range mfs {
		names = append(names, mf.GetName())
	}
	if !strings.Contains(strings.Join(names, " "), "kube2ra_http_request_duration_seconds") {
		t.Errorf("no duration histogram among %q", names)
	}
}

func TestMetricsRegistrationTwiceFails(t *testing.T) {
	reg := prometheus.NewRegistry()
	o := Options{HostIP: "127.0.0.1", Registerer: reg}
	if _, err := New(o, &fakePods{}, &fakeRoles{}, &fakeCreds{}); err != nil {
		t.Fatal(err)
	}
	if _, err := New(o, &fakePods{}, &fakeRoles{}, &fakeCreds{}); err == nil {
		t.Error("a second proxy registered the same metrics without error")
	}
}

func TestBodyLimit(t *testing.T) {
	e := newTestEnv(t, Options{})
	r := rawRequest(t, e.addr, rawGet("/latest/meta-data/iam/security-credentials/", "Content-Length: 5000"))
	if r.status != http.StatusRequestEntityTooLarge {
		t.Errorf("status %d, want 413", r.status)
	}
}

func TestSlowHeadersAreCutOff(t *testing.T) {
	e := newTestEnv(t, Options{ReadHeaderTimeout: 200 * time.Millisecond, ReadTimeout: 300 * time.Millisecond})
	conn, err := netDial(e.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_, _ = conn.Write([]byte("GET /latest/meta-data/ HTTP/1.1\r\nHost: x\r\n"))
	start := time.Now()
	_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 1)
	for {
		if _, err := conn.Read(buf); err != nil {
			break
		}
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("a client that never finished its headers was kept %v", d)
	}
}

func TestServeStopsWhenContextEnds(t *testing.T) {
	s, err := New(Options{HostIP: "127.0.0.1", ShutdownTimeout: time.Second}, &fakePods{}, &fakeRoles{}, &fakeCreds{})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Serve(context.Background()); err == nil {
		t.Error("Serve before Listen succeeded")
	}
	if err := s.Listen(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx) }()
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Serve = %v after a graceful stop", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Serve did not return")
	}
}

func TestHandlerWithoutServerRebuildsTarget(t *testing.T) {
	e := newTestEnv(t, Options{})
	req := httptest.NewRequest(http.MethodGet, "/latest/meta-data/iam/security-credentials/", nil)
	req.RequestURI = ""
	req.RemoteAddr = "127.0.0.1:1234"
	rec := httptest.NewRecorder()
	e.srv.Handler().ServeHTTP(rec, req)
	if rec.Code != 200 || rec.Body.String() != testRoleName {
		t.Errorf("%d %q", rec.Code, rec.Body.String())
	}
}

// panickingCreds is a CredentialGetter with a bug.
type panickingCreds struct{}

func (panickingCreds) GetCredentials(context.Context, *k8s.Pod, k8s.Role) (credentials.Credentials, error) {
	panic("bug in the getter")
}

func TestPanicInAConsumerIsA500(t *testing.T) {
	s, err := New(Options{HostIP: "127.0.0.1"}, &fakePods{byIP: map[netip.Addr]*k8s.Pod{loopback: testPod()}}, &fakeRoles{role: testRole()}, panickingCreds{})
	if err != nil {
		t.Fatal(err)
	}
	req := httptest.NewRequest(http.MethodGet, "/latest/meta-data/iam/security-credentials/"+testRoleName, nil)
	req.RemoteAddr = "127.0.0.1:1"
	rec := httptest.NewRecorder()
	s.ServeHTTP(rec, req)
	if rec.Code != http.StatusInternalServerError || strings.Contains(rec.Body.String(), "bug") {
		t.Errorf("%d %q", rec.Code, rec.Body.String())
	}
}

// The 401 does not wait for the pod lookup that names the caller in the
// Event: an old SDK learns at once that it must use a token.
func TestIMDSv1RefusalIsAnsweredBeforeThePodLookup(t *testing.T) {
	rec := record.NewFakeRecorder(10)
	events := k8s.NewPodEvents(k8s.NewRateLimitedRecorder(rec, k8s.EventOptions{Burst: 2, Interval: time.Hour}))
	e := newTestEnv(t, Options{IMDSv2Required: true, Events: events, RequestTimeout: time.Minute})
	defer e.pods.holdLookups()()
	c := &http.Client{Timeout: 10 * time.Second}
	resp, err := c.Get(e.url + "/latest/meta-data/iam/security-credentials/")
	if err != nil {
		t.Fatalf("the 401 waited for the pod lookup: %v", err)
	}
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("status %d, want 401", resp.StatusCode)
	}
}

func TestIMDSv1RefusedRecordsARateLimitedEventOnThePod(t *testing.T) {
	rec := record.NewFakeRecorder(100)
	events := k8s.NewPodEvents(k8s.NewRateLimitedRecorder(rec, k8s.EventOptions{Burst: 2, Interval: time.Hour}))
	e := newTestEnv(t, Options{IMDSv2Required: true, Events: events})
	for range 5 {
		if status, _, _ := httpGet(t, e.url+"/latest/meta-data/iam/security-credentials/", nil); status != 401 {
			t.Fatalf("IMDSv1 GET with IMDSv2 required: status %d, want 401 as IMDS", status)
		}
	}
	_, tok, _ := putToken(t, e.url, "60", nil)
	if status, _, _ := httpGet(t, e.url+"/latest/meta-data/iam/security-credentials/", http.Header{tokenHeader: {tok}}); status != 200 {
		t.Fatalf("GET with a token: status %d", status)
	}
	close(rec.Events)
	var got []string
	for ev := range rec.Events {
		got = append(got, ev)
	}
	if len(got) != 2 {
		t.Fatalf("%d Events for 5 refusals with a burst of 2, want 2: %q", len(got), got)
	}
	if !strings.HasPrefix(got[0], "Warning IMDSv1Refused ") || !strings.Contains(got[0], "--imdsv2-required=false") || !strings.Contains(got[0], "imdsv2Required") {
		t.Errorf("Event %q does not name the reason and the setting", got[0])
	}
	if !strings.Contains(e.logs.String(), `"pod":"`+testPod().Name+`"`) {
		t.Errorf("the refusal's log line does not name the pod:\n%s", e.logs.String())
	}
}
