package fakera

import (
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	clocktesting "k8s.io/utils/clock/testing"
)

const (
	vectorTrustAnchor = "arn:aws:rolesanywhere:eu-central-1:123456789012:trust-anchor/0f1e2d3c-4b5a-6978-8a9b-0c1d2e3f4a5b"
	vectorProfile     = "arn:aws:rolesanywhere:eu-central-1:123456789012:profile/9a8b7c6d-5e4f-3a2b-1c0d-e9f8a7b6c5d4"
	vectorRole        = "arn:aws:iam::123456789012:role/app-role"
	// otherRole is also in the profile, so a request altered to ask for it
	// is refused only because the signature no longer matches.
	otherRole = "arn:aws:iam::123456789012:role/other-role"
)

var vectorFiles = []string{"rsa.request.json", "ecdsa.request.json", "rsa-chain.request.json"}

func testdata(t *testing.T) string {
	t.Helper()
	dir, err := TestdataDir()
	if err != nil {
		t.Fatal(err)
	}
	return dir
}

func readCert(t *testing.T, path string) *x509.Certificate {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(data)
	if block == nil {
		t.Fatalf("%s: no PEM", path)
	}
	c, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func loadVector(t *testing.T, name string) RecordedRequest {
	t.Helper()
	rr, err := LoadRecordedRequest(filepath.Join(testdata(t), name))
	if err != nil {
		t.Fatal(err)
	}
	return rr
}

func vectorTime(t *testing.T, rr RecordedRequest) time.Time {
	t.Helper()
	ts, err := time.Parse(amzDate, rr.Headers.Get("X-Amz-Date"))
	if err != nil {
		t.Fatal(err)
	}
	return ts
}

// vectorServer is a fake configured like the account the vectors were
// recorded against, with its clock at the recording time.
func vectorServer(t *testing.T, at time.Time, window bool, mutate func(*Profile)) (*Server, *clocktesting.FakePassiveClock) {
	t.Helper()
	clk := clocktesting.NewFakePassiveClock(at)
	p := Profile{ARN: vectorProfile, RoleARNs: []string{vectorRole, otherRole}, AcceptRoleSessionName: true, DurationSeconds: 43200}
	if mutate != nil {
		mutate(&p)
	}
	s, err := New(Options{
		TrustAnchors:      []TrustAnchor{{ARN: vectorTrustAnchor, CAs: []*x509.Certificate{readCert(t, filepath.Join(testdata(t), "root-ca.pem"))}}},
		Profiles:          []Profile{p},
		Clock:             clk,
		DisableTimeWindow: !window,
	})
	if err != nil {
		t.Fatal(err)
	}
	return s, clk
}

// replay sends rr through the handler and returns the answer.
func replay(s *Server, rr RecordedRequest) *httptest.ResponseRecorder {
	w := httptest.NewRecorder()
	s.Handler().ServeHTTP(w, rr.HTTPRequest())
	return w
}

func errorCode(w *httptest.ResponseRecorder) (string, string) {
	var body struct {
		Message string `json:"message"`
	}
	_ = json.Unmarshal(w.Body.Bytes(), &body)
	return w.Header().Get("X-Amzn-ErrorType"), body.Message
}

func TestRecordedRequestsOfTheOfficialHelperAreAccepted(t *testing.T) {
	for _, name := range vectorFiles {
		t.Run(name, func(t *testing.T) {
			rr := loadVector(t, name)
			s, _ := vectorServer(t, vectorTime(t, rr).Add(30*time.Second), true, nil)
			w := replay(s, rr)
			if w.Code != http.StatusCreated {
				code, msg := errorCode(w)
				t.Fatalf("status %d %s: %s", w.Code, code, msg)
			}
			var resp sessionResponse
			if err := json.Unmarshal(w.Body.Bytes(), &resp); err != nil {
				t.Fatal(err)
			}
			if len(resp.CredentialSet) != 1 || resp.CredentialSet[0].Credentials.AccessKeyID == "" || resp.CredentialSet[0].RoleArn != vectorRole {
				t.Fatalf("unexpected response %s", w.Body.String())
			}
			acc := s.Accepted()
			if len(acc) != 1 || acc[0].RoleARN != vectorRole {
				t.Fatalf("accepted log %+v", acc)
			}
			auth, _ := parseAuthorization(rr.Headers.Get("Authorization"))
			if acc[0].Serial != auth.serial {
				t.Fatalf("logged serial %s, request serial %s", acc[0].Serial, auth.serial)
			}
			id, ok := s.WhoIs(acc[0].AccessKeyID)
			if !ok || !strings.HasPrefix(id.Arn, "arn:aws:sts::123456789012:assumed-role/app-role/") || id.Account != "123456789012" {
				t.Fatalf("WhoIs = %+v, %v", id, ok)
			}
		})
	}
}

// alteration is one single change to a recorded request.
type alteration struct {
	name   string
	change func(rr *RecordedRequest)
}

// alterations lists, for rr, a change to each signed header (value changed,
// and header removed), the query, the body and the signature. Each keeps
// the request otherwise well-formed and authorised, so only the signature
// check (or, for the certificate, the serial binding) can refuse it.
func alterations(t *testing.T, rr RecordedRequest) []alteration {
	t.Helper()
	auth, err := parseAuthorization(rr.Headers.Get("Authorization"))
	if err != nil {
		t.Fatal(err)
	}
	root := readCert(t, filepath.Join(testdata(t), "root-ca.pem"))
	var out []alteration
	for _, h := range auth.signedHeaders {
		h := h
		switch h {
		case "host":
			out = append(out, alteration{"header host changed", func(rr *RecordedRequest) { rr.Host = "127.0.0.1:18444" }})
			continue
		case "x-amz-date":
			out = append(out, alteration{"header x-amz-date changed by one second", func(rr *RecordedRequest) {
				ts, _ := time.Parse(amzDate, rr.Headers.Get("X-Amz-Date"))
				rr.Headers.Set("X-Amz-Date", ts.Add(time.Second).Format(amzDate))
			}})
		case "x-amz-x509":
			out = append(out, alteration{"header x-amz-x509 replaced by another trusted leaf", func(rr *RecordedRequest) {
				other := "leaf-ec.pem"
				if strings.Contains(rr.Headers.Get("Authorization"), "ECDSA") {
					other = "leaf-rsa.pem"
				}
				rr.Headers.Set("X-Amz-X509", b64(readCert(t, filepath.Join(testdata(t), other)).Raw))
			}})
		case "x-amz-x509-chain":
			out = append(out, alteration{"header x-amz-x509-chain extended by the (still valid) root", func(rr *RecordedRequest) {
				rr.Headers.Set("X-Amz-X509-Chain", rr.Headers.Get("X-Amz-X509-Chain")+","+b64(root.Raw))
			}})
		default:
			out = append(out, alteration{"header " + h + " changed", func(rr *RecordedRequest) {
				rr.Headers.Set(h, rr.Headers.Get(h)+"x")
			}})
		}
		out = append(out, alteration{"header " + h + " removed", func(rr *RecordedRequest) { rr.Headers.Del(h) }})
	}
	out = append(out,
		alteration{"query asks for another role of the profile", func(rr *RecordedRequest) {
			rr.RawQuery = strings.Replace(rr.RawQuery, "role%2Fapp-role", "role%2Fother-role", 1)
		}},
		alteration{"query gains a parameter", func(rr *RecordedRequest) { rr.RawQuery += "&extra=1" }},
		alteration{"body duration changed", func(rr *RecordedRequest) {
			rr.Body = strings.Replace(rr.Body, `"durationSeconds":`, `"durationSeconds":1`, 1)
		}},
		alteration{"body gains whitespace", func(rr *RecordedRequest) { rr.Body += " " }},
		alteration{"signature last hex digit flipped", func(rr *RecordedRequest) {
			a := rr.Headers.Get("Authorization")
			last := a[len(a)-1]
			flip := byte('0')
			if last == '0' {
				flip = '1'
			}
			rr.Headers.Set("Authorization", a[:len(a)-1]+string(flip))
		}},
		alteration{"signature of another request", func(rr *RecordedRequest) {
			a := rr.Headers.Get("Authorization")
			i := strings.Index(a, "Signature=")
			rr.Headers.Set("Authorization", a[:i]+"Signature="+strings.Repeat("ab", len(a[i+len("Signature="):])/2))
		}},
	)
	return out
}

func TestRecordedRequestsAreRejectedAfterAnySingleChange(t *testing.T) {
	for _, name := range vectorFiles {
		rr := loadVector(t, name)
		for _, alt := range alterations(t, rr) {
			t.Run(name+"/"+alt.name, func(t *testing.T) {
				s, _ := vectorServer(t, vectorTime(t, rr), false, nil)
				// The unaltered request passes on this very server...
				if w := replay(s, rr.Clone()); w.Code != http.StatusCreated {
					code, msg := errorCode(w)
					t.Fatalf("unaltered request refused: %d %s %s", w.Code, code, msg)
				}
				// ...and the altered one is refused as unauthenticated.
				altered := rr.Clone()
				alt.change(&altered)
				w := replay(s, altered)
				code, msg := errorCode(w)
				if w.Code != http.StatusForbidden || code != "AccessDeniedException" {
					t.Fatalf("altered request answered %d %s %q, want 403 AccessDeniedException", w.Code, code, msg)
				}
				if got := len(s.Accepted()); got != 1 {
					t.Fatalf("%d requests accepted, want only the unaltered one", got)
				}
			})
		}
	}
}

func TestQueryOrderDoesNotMatterBecauseItIsCanonicalised(t *testing.T) {
	rr := loadVector(t, "rsa.request.json")
	parts := strings.Split(rr.RawQuery, "&")
	for i, j := 0, len(parts)-1; i < j; i, j = i+1, j-1 {
		parts[i], parts[j] = parts[j], parts[i]
	}
	rr.RawQuery = strings.Join(parts, "&")
	s, _ := vectorServer(t, vectorTime(t, rr), false, nil)
	if w := replay(s, rr); w.Code != http.StatusCreated {
		code, msg := errorCode(w)
		t.Fatalf("reordered query refused: %d %s %s", w.Code, code, msg)
	}
}

func TestAuthorizationRules(t *testing.T) {
	rsaReq := loadVector(t, "rsa.request.json")
	ecReq := loadVector(t, "ecdsa.request.json")
	at := vectorTime(t, rsaReq)
	for _, tc := range []struct {
		name     string
		rr       RecordedRequest
		now      time.Time
		window   bool
		profile  func(*Profile)
		status   int
		code     string
		contains string
	}{
		{"date outside the five minute window", rsaReq, at.Add(6 * time.Minute), true, nil, 403, "AccessDeniedException", "Signature expired"},
		{"date in the future beyond the window", rsaReq, at.Add(-6 * time.Minute), true, nil, 403, "AccessDeniedException", "Signature expired"},
		{"certificate not yet valid at request time", rsaReq, at.Add(-24 * time.Hour), false, nil, 403, "AccessDeniedException", "Untrusted certificate"},
		{"role not in the profile", rsaReq, at, false, func(p *Profile) { p.RoleARNs = []string{otherRole} }, 403, "AccessDeniedException", "not in the role list"},
		{"session name refused by the profile", ecReq, at, false, func(p *Profile) { p.AcceptRoleSessionName = false }, 403, "AccessDeniedException", "Not authorized to set roleSessionName."},
		{"duration above the profile's", rsaReq, at, false, func(p *Profile) { p.DurationSeconds = 900 }, 400, "ValidationException", "exceeds"},
		{"unknown profile", rsaReq, at, false, func(p *Profile) { p.ARN = strings.Replace(vectorProfile, "9a8b", "0000", 1) }, 404, "ResourceNotFoundException", "Profile"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, _ := vectorServer(t, tc.now, tc.window, tc.profile)
			w := replay(s, tc.rr.Clone())
			code, msg := errorCode(w)
			if w.Code != tc.status || code != tc.code || !strings.Contains(msg, tc.contains) {
				t.Fatalf("got %d %s %q, want %d %s containing %q", w.Code, code, msg, tc.status, tc.code, tc.contains)
			}
		})
	}
}

func TestUntrustedCAIsDenied(t *testing.T) {
	rr := loadVector(t, "rsa.request.json")
	// Trust only the intermediate: leaf-rsa is issued by the root, so it
	// does not chain.
	s, err := New(Options{
		TrustAnchors:      []TrustAnchor{{ARN: vectorTrustAnchor, CAs: []*x509.Certificate{readCert(t, filepath.Join(testdata(t), "int-ca.pem"))}}},
		Profiles:          []Profile{{ARN: vectorProfile, RoleARNs: []string{vectorRole}, DurationSeconds: 3600}},
		Clock:             clocktesting.NewFakePassiveClock(vectorTime(t, rr)),
		DisableTimeWindow: true,
	})
	if err != nil {
		t.Fatal(err)
	}
	w := replay(s, rr)
	if code, msg := errorCode(w); w.Code != 403 || !strings.Contains(msg, "Untrusted certificate") {
		t.Fatalf("got %d %s %q", w.Code, code, msg)
	}
}

func TestChainRequestWithoutItsIntermediateIsDenied(t *testing.T) {
	rr := loadVector(t, "rsa-chain.request.json")
	rr.Headers.Del("X-Amz-X509-Chain")
	// The signature lists x-amz-x509-chain, so it fails first; the
	// point is that no path accepts the leaf without its intermediate.
	s, _ := vectorServer(t, vectorTime(t, rr), false, nil)
	if w := replay(s, rr); w.Code != 403 {
		t.Fatalf("got %d", w.Code)
	}
}

func TestUnknownTrustAnchorIsNotFound(t *testing.T) {
	rr := loadVector(t, "rsa.request.json")
	rr.RawQuery = strings.Replace(rr.RawQuery, "0f1e2d3c", "00000000", 1)
	s, _ := vectorServer(t, vectorTime(t, rr), false, nil)
	w := replay(s, rr)
	if code, _ := errorCode(w); w.Code != 404 || code != "ResourceNotFoundException" {
		t.Fatalf("got %d %s", w.Code, code)
	}
}

func TestKnobsAnswerWithTheServiceErrorShapes(t *testing.T) {
	rr := loadVector(t, "rsa.request.json")
	s, _ := vectorServer(t, vectorTime(t, rr), false, nil)
	s.FailNext(1)
	if w := replay(s, rr.Clone()); w.Code != 500 || w.Header().Get("X-Amzn-ErrorType") != "InternalServerException" {
		t.Fatalf("FailNext: %d %v", w.Code, w.Header())
	}
	s.ThrottleNext(1)
	if w := replay(s, rr.Clone()); w.Code != 429 || w.Header().Get("X-Amzn-ErrorType") != "ThrottlingException" {
		t.Fatalf("ThrottleNext: %d %v", w.Code, w.Header())
	}
	if w := replay(s, rr.Clone()); w.Code != 201 {
		t.Fatalf("after the knobs: %d", w.Code)
	}
	st := s.Stats()
	if st.Requests != 3 || st.Failed != 1 || st.Throttled != 1 || st.Accepted != 1 {
		t.Fatalf("stats %+v", st)
	}
}

func TestOutageDropsTheConnection(t *testing.T) {
	rr := loadVector(t, "rsa.request.json")
	s, err := Start(Options{
		TrustAnchors:      []TrustAnchor{{ARN: vectorTrustAnchor, CAs: []*x509.Certificate{readCert(t, filepath.Join(testdata(t), "root-ca.pem"))}}},
		Profiles:          []Profile{{ARN: vectorProfile, RoleARNs: []string{vectorRole}}},
		Clock:             clocktesting.NewFakePassiveClock(vectorTime(t, rr)),
		DisableTimeWindow: true,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	s.SetOutage(true)
	req, _ := http.NewRequest(rr.Method, s.URL()+rr.Path+"?"+rr.RawQuery, strings.NewReader(rr.Body))
	req.Header = rr.Headers.Clone()
	req.Host = rr.Host
	resp, err := s.Client().Do(req)
	if err == nil {
		_ = resp.Body.Close()
		t.Fatalf("outage answered %d", resp.StatusCode)
	}
	if st := s.Stats(); st.Dropped != 1 {
		t.Fatalf("stats %+v", st)
	}
}

func TestIssuedCredentialsAreRememberedAndExpire(t *testing.T) {
	rr := loadVector(t, "rsa-chain.request.json") // asks for 900 s
	s, clk := vectorServer(t, vectorTime(t, rr), false, nil)
	w := replay(s, rr)
	if w.Code != 201 {
		t.Fatalf("status %d", w.Code)
	}
	var resp sessionResponse
	_ = json.Unmarshal(w.Body.Bytes(), &resp)
	c := resp.CredentialSet[0].Credentials
	is, ok := s.Issued(c.AccessKeyID)
	if !ok || is.SecretAccessKey != c.SecretAccessKey || is.SessionToken != c.SessionToken || is.RoleARN != vectorRole {
		t.Fatalf("Issued = %+v, %v", is, ok)
	}
	exp, err := time.Parse(time.RFC3339, c.Expiration)
	if err != nil || !exp.Equal(vectorTime(t, rr).Add(900*time.Second)) {
		t.Fatalf("expiration %q (%v)", c.Expiration, err)
	}
	if is.SessionName != "4d" { // serial 77 in hex, AWS's default session name
		t.Fatalf("default session name %q", is.SessionName)
	}
	clk.SetTime(exp)
	if _, ok := s.WhoIs(c.AccessKeyID); ok {
		t.Fatal("WhoIs knows expired credentials")
	}
}

func b64(der []byte) string { return base64.StdEncoding.EncodeToString(der) }
