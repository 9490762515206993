package proxy

import (
	"context"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/kube2ra/kube2ra/k8s"
	"github.com/kube2ra/kube2ra/test/fakeaws/fakeimds"
)

// handlerTransport serves upstream requests with a handler in memory, so
// the fuzzer runs without sockets.
type handlerTransport struct {
	h http.Handler
}

func (t handlerTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	req.RequestURI = req.URL.RequestURI()
	req.RemoteAddr = "127.0.0.1:1"
	rec := httptest.NewRecorder()
	t.h.ServeHTTP(rec, req)
	return rec.Result(), nil
}

var (
	// credentialTarget is the only shape of target that may return the pod's credentials.
	credentialTarget = regexp.MustCompile(`^/(latest|[0-9]{4}-[0-9]{2}-[0-9]{2})/meta-data/iam/security-credentials/` + testRoleName + `/?$`)
	// forbiddenUpstream are version-relative prefixes never to be asked of the upstream.
	forbiddenUpstream = []string{"meta-data/iam", "meta-data/identity-credentials", "user-data", "dynamic/instance-identity/pkcs7",
		"dynamic/instance-identity/signature", "dynamic/instance-identity/rsa2048", "meta-data/public-keys", "meta-data/tags", "api"}
	// forbiddenUpstreamBytes never appear in a forwarded target.
	forbiddenUpstreamBytes = []string{"/.", "//", "%", "\\", ";", "?", "#"}
)

// nonCanonical is an oracle independent of checkPath: targets a client
// could use to reach something by another spelling.
func nonCanonical(target string) bool {
	// "/." covers ".", ".." and every other segment that starts with a dot.
	if strings.Contains(target, "//") || strings.Contains(target, "/.") || strings.ContainsAny(target, "%\\;?# ") {
		return true
	}
	for i := 0; i < len(target); i++ {
		if target[i] < 0x20 || target[i] >= 0x7f {
			return true
		}
	}
	return len(target) > maxPathLen || !strings.HasPrefix(target, "/")
}

// FuzzPathGate sends arbitrary request targets through the whole handler
// (gate, tokens, router, pass-through) with a fake upstream in memory.
// Invariants: nothing outside the allowlist is forwarded, and what is
// forwarded is the client's own canonical target; the node's secrets never
// come back; the pod's credentials come back only for the canonical
// credential path; a non-canonical target never gets a 200.
func FuzzPathGate(f *testing.F) {
	for _, seed := range []string{
		"/latest/meta-data/iam/security-credentials/",
		"/latest/meta-data/iam/security-credentials/" + testRoleName,
		"/latest/meta-data/placement/availability-zone/",
		"/latest/dynamic/instance-identity/document",
		"/latest/meta-data/",
	} {
		f.Add(uint8(0), seed, false)
	}
	up := fakeimds.New(fakeimds.Options{})
	pods := &fakePods{byIP: map[netip.Addr]*k8s.Pod{loopback: testPod()}}
	creds := &fakeCreds{creds: testCredentials()}
	s, err := New(Options{HostIP: "127.0.0.1", MetadataAddr: "169.254.169.254", UpstreamTransport: handlerTransport{h: up.Handler()}},
		pods, &fakeRoles{role: testRole()}, creds)
	if err != nil {
		f.Fatal(err)
	}
	token := s.tokens.mint(loopback, 100*365*24*time.Hour)
	methods := []string{http.MethodGet, http.MethodHead, http.MethodPut, http.MethodPost, http.MethodOptions}

	f.Fuzz(func(t *testing.T, methodIndex uint8, target string, withToken bool) {
		if strings.ContainsAny(target, " \r\n") {
			return // cannot be one request-target on the wire
		}
		u, err := url.ParseRequestURI(target)
		if err != nil {
			return // net/http answers 400 before any handler runs
		}
		method := methods[int(methodIndex)%len(methods)]
		req := &http.Request{
			Method: method, URL: u, RequestURI: target, Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
			Header: http.Header{}, Host: "169.254.169.254", RemoteAddr: "127.0.0.1:40000", Body: http.NoBody,
		}
		if withToken {
			req.Header.Set(tokenHeader, token)
		}
		if method == http.MethodPut {
			req.Header.Set(ttlHeader, "60")
		}
		up.ResetRequests()
		rec := httptest.NewRecorder()
		s.ServeHTTP(rec, req.WithContext(context.Background()))
		body := rec.Body.String()

		for _, r := range up.Requests() {
			if r.Method == http.MethodPut && r.RequestURI == "/latest/api/token" {
				continue // kube2ra's own upstream token
			}
			if r.RequestURI != target {
				t.Fatalf("target %q forwarded as %q", target, r.RequestURI)
			}
			c, status, _ := checkPath(r.RequestURI)
			if status != 0 || (!s.allow.allows(c.segs) && !s.allow.isAncestor(c.segs)) {
				t.Fatalf("forwarded %q outside the allowlist", r.RequestURI)
			}
			_, rel, _ := strings.Cut(strings.TrimPrefix(r.RequestURI, "/"), "/")
			for _, bad := range forbiddenUpstream {
				if rel == bad || strings.HasPrefix(rel, bad+"/") {
					t.Fatalf("forwarded %q under %q", r.RequestURI, bad)
				}
			}
			for _, bad := range forbiddenUpstreamBytes {
				if strings.Contains(r.RequestURI, bad) {
					t.Fatalf("forwarded %q containing %q", r.RequestURI, bad)
				}
			}
			if len(r.Header.Values("X-Forwarded-For")) > 0 || r.Header.Get(tokenHeader) == token {
				t.Fatalf("forwarded client headers: %v", r.Header)
			}
		}
		if strings.Contains(body, fakeimds.SecretMarker) || strings.Contains(body, "node-instance-role") {
			t.Fatalf("target %q returned the node's secrets: %q", target, body)
		}
		if strings.Contains(body, creds.creds.SecretAccessKey) && !(credentialTarget.MatchString(target) && (method == http.MethodGet || method == http.MethodHead)) {
			t.Fatalf("target %q (%s) returned the pod's credentials", target, method)
		}
		if nonCanonical(target) && rec.Code == http.StatusOK {
			t.Fatalf("non-canonical target %q answered 200", target)
		}
	})
}
