package fakeimds

import (
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	clocktesting "k8s.io/utils/clock/testing"
)

func start(t *testing.T, o Options) *Server {
	t.Helper()
	s := New(o)
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Stop() })
	return s
}

func do(t *testing.T, method, url string, hdr map[string]string) (int, string, http.Header) {
	t.Helper()
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), resp.Header
}

func TestServesInstanceMetadata(t *testing.T) {
	s := start(t, Options{Region: "us-west-2"})
	tests := []struct{ path, want string }{
		{"/latest/meta-data/placement/region", "us-west-2"},
		{"/latest/meta-data/placement/availability-zone/", "us-west-2b"},
		{"/latest/meta-data/iam/security-credentials/", "node-instance-role"},
		{"/2021-07-15/meta-data/instance-id", s.InstanceID()},
		{"/latest/meta-data/placement/", "availability-zone\navailability-zone-id\nregion"},
	}
	for _, tt := range tests {
		if status, body, _ := do(t, "GET", s.URL()+tt.path, nil); status != 200 || body != tt.want {
			t.Errorf("GET %s = %d %q, want %q", tt.path, status, body, tt.want)
		}
	}
	_, body, _ := do(t, "GET", s.URL()+"/latest/meta-data/iam/security-credentials/node-instance-role", nil)
	var creds map[string]string
	if err := json.Unmarshal([]byte(body), &creds); err != nil || creds["AccessKeyId"] != s.Credentials().AccessKeyID {
		t.Errorf("instance credentials %s (%v)", body, err)
	}
	for _, p := range []string{"/latest/user-data", "/latest/dynamic/instance-identity/pkcs7", "/latest/meta-data/iam/security-credentials/node-instance-role",
		"/latest/meta-data/iam/security-credentials-extended/node-instance-role", "/latest/meta-data/IAM/Security-Credentials/node-instance-role"} {
		if _, body, _ := do(t, "GET", s.URL()+p, nil); !strings.Contains(body, SecretMarker) {
			t.Errorf("%s does not carry the secret marker", p)
		}
	}
	if status, _, _ := do(t, "GET", s.URL()+"/latest/meta-data/nothing", nil); status != 404 {
		t.Errorf("unknown path: %d", status)
	}
}

func TestTokens(t *testing.T) {
	fc := clocktesting.NewFakeClock(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	s := start(t, Options{RequireToken: true, Clock: fc})
	path := s.URL() + "/latest/meta-data/instance-id"
	if status, _, _ := do(t, "GET", path, nil); status != 401 {
		t.Errorf("token required, none sent: %d", status)
	}
	if status, _, _ := do(t, "PUT", s.URL()+"/latest/api/token", map[string]string{TTLHeader: "60", "X-Forwarded-For": "1.2.3.4"}); status != 403 {
		t.Errorf("PUT with X-Forwarded-For: %d", status)
	}
	if status, _, _ := do(t, "PUT", s.URL()+"/latest/api/token", map[string]string{TTLHeader: "21601"}); status != 400 {
		t.Errorf("PUT with TTL 21601: %d", status)
	}
	status, tok, hdr := do(t, "PUT", s.URL()+"/latest/api/token", map[string]string{TTLHeader: "60"})
	if status != 200 || hdr.Get(TTLHeader) != "60" {
		t.Fatalf("PUT: %d, ttl header %q", status, hdr.Get(TTLHeader))
	}
	if status, _, _ := do(t, "GET", path, map[string]string{TokenHeader: tok}); status != 200 {
		t.Errorf("valid token: %d", status)
	}
	if status, _, _ := do(t, "GET", path, map[string]string{TokenHeader: "forged"}); status != 401 {
		t.Errorf("forged token: %d", status)
	}
	other := start(t, Options{})
	if status, _, _ := do(t, "GET", other.URL()+"/latest/meta-data/instance-id", map[string]string{TokenHeader: tok}); status != 401 {
		t.Errorf("token of another instance: %d", status)
	}
	fc.Step(61 * time.Second)
	if status, _, _ := do(t, "GET", path, map[string]string{TokenHeader: tok}); status != 401 {
		t.Errorf("expired token: %d", status)
	}
	s.SetRequireToken(false)
	if status, _, _ := do(t, "GET", path, nil); status != 200 {
		t.Errorf("v1 with tokens optional: %d", status)
	}
	s.SetTokenPUTStatus(http.StatusNotFound)
	if status, _, _ := do(t, "PUT", s.URL()+"/latest/api/token", map[string]string{TTLHeader: "60"}); status != 404 {
		t.Errorf("forced PUT status: %d", status)
	}
	if s.TokensIssued() != 1 {
		t.Errorf("TokensIssued = %d", s.TokensIssued())
	}
}

func TestRecordsRequestsAndRestarts(t *testing.T) {
	s := start(t, Options{})
	_, tok, _ := do(t, "PUT", s.URL()+"/latest/api/token", map[string]string{TTLHeader: "60"})
	do(t, "GET", s.URL()+"/latest/meta-data/mac", map[string]string{"X-Forwarded-For": "10.0.0.1", TokenHeader: tok})
	reqs := s.Requests()
	if len(reqs) != 2 || reqs[1].RequestURI != "/latest/meta-data/mac" || reqs[1].Header.Get("X-Forwarded-For") != "10.0.0.1" {
		t.Fatalf("recorded %+v", reqs)
	}
	addr := s.Addr()
	if err := s.Restart(); err != nil {
		t.Fatal(err)
	}
	if s.Addr() != addr {
		t.Errorf("restart moved from %s to %s", addr, s.Addr())
	}
	if status, _, _ := do(t, "GET", s.URL()+"/latest/meta-data/mac", map[string]string{TokenHeader: tok}); status != 401 {
		t.Errorf("a token from before the restart: %d, want 401", status)
	}
	s.ResetRequests()
	if len(s.Requests()) != 0 {
		t.Error("ResetRequests kept requests")
	}
}
