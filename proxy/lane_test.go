package proxy

import (
	"bufio"
	"bytes"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	clocktesting "k8s.io/utils/clock/testing"
)

// TestLaneTakesTheSDKRoutesOnly: the requests an SDK repeats are the lane's;
// pass-through reads, other methods and everything else stay net/http's.
func TestLaneTakesTheSDKRoutesOnly(t *testing.T) {
	cases := []struct {
		method, target string
		want           bool
	}{
		{"PUT", "/latest/api/token", true},
		{"GET", "/latest/meta-data/iam/security-credentials/", true},
		{"GET", "/latest/meta-data/iam/security-credentials/pod-role", true},
		{"GET", "/latest/meta-data/iam/security-credentials-extended/pod-role", true},
		{"GET", PodIdentityPath, true},
		{"GET", "/latest/api/token", false},
		{"PUT", "/latest/api/token/", false},
		{"PUT", "/latest/meta-data/iam/security-credentials/pod-role", false},
		{"GET", "/latest/meta-data/placement/region", false},
		{"GET", "/latest/meta-data/iam/info", false},
		{"GET", "/healthz", false},
	}
	for _, tc := range cases {
		if got := laneTakes(tc.method, []byte(tc.target)); got != tc.want {
			t.Errorf("laneTakes(%s %s) = %v, want %v", tc.method, tc.target, got, tc.want)
		}
	}
}

// TestLaneAnswersAsNetHTTPDoes: the metadata server's answers on keep-alive
// connections (which the lane serves) are net/http's answers to the same
// requests, refusals included, byte for byte but for the Date.
func TestLaneAnswersAsNetHTTPDoes(t *testing.T) {
	for _, v2 := range []bool{false, true} {
		clk := clocktesting.NewFakePassiveClock(time.Now())
		e := newTestEnv(t, Options{Clock: clk, IMDSv2Required: v2})
		plain := httptest.NewServer(e.srv.Handler())
		t.Cleanup(plain.Close)
		const creds = "/latest/meta-data/iam/security-credentials/"
		sequences := [][]string{
			{"PUT /latest/api/token", "X-aws-ec2-metadata-token-ttl-seconds: 21600"},
			{"PUT /latest/api/token", "X-aws-ec2-metadata-token-ttl-seconds: 0"},
			{"PUT /latest/api/token"},
			{"PUT /latest/api/token", "X-aws-ec2-metadata-token-ttl-seconds: 60", "X-Forwarded-For: 10.0.0.1"},
			{"GET " + creds, "X-aws-ec2-metadata-token: TOKEN"},
			{"GET " + creds + "pod-role", "X-aws-ec2-metadata-token: TOKEN"},
			{"GET " + creds + "pod-role", "X-aws-ec2-metadata-token: TOKEN", "X-aws-ec2-metadata-token: TOKEN"},
			{"GET /latest/meta-data/iam/security-credentials-extended/pod-role", "X-aws-ec2-metadata-token: TOKEN"},
			{"GET " + creds + "other-role", "X-aws-ec2-metadata-token: TOKEN"},
			{"GET " + creds + "pod-role", "X-aws-ec2-metadata-token: not-a-token"},
			{"GET " + creds + "pod-role"},
			{"GET " + creds + "pod-role/"},
			{"GET " + creds + "a/../pod-role", "X-aws-ec2-metadata-token: TOKEN"},
			{"GET /latest/meta-data/iam//security-credentials/pod-role", "X-aws-ec2-metadata-token: TOKEN"},
			{"GET " + creds + "app+role=,.@-_", "X-aws-ec2-metadata-token: TOKEN"},
			{"GET " + PodIdentityPath, "Authorization: token"},
		}
		for _, seq := range sequences {
			lane := exchange(t, e.addr, seq)
			netHTTP := exchange(t, strings.TrimPrefix(plain.URL, "http://"), seq)
			if lane != netHTTP {
				t.Errorf("IMDSv2 required %v, %q:\nthe lane answered\n%s\nnet/http answered\n%s", v2, seq, lane, netHTTP)
			}
		}
	}
}

// exchange gets a token on a keep-alive connection, then sends seq's
// request with TOKEN replaced by it, and returns the second answer as text
// with its Date and the minted token blanked.
func exchange(t *testing.T, addr string, seq []string) string {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	br := bufio.NewReader(c)
	send := func(line string, fields ...string) string {
		var b strings.Builder
		b.WriteString(line + " HTTP/1.1\r\nHost: 169.254.169.254\r\nUser-Agent: test/1\r\n")
		for _, f := range fields {
			b.WriteString(f + "\r\n")
		}
		b.WriteString("\r\n")
		if _, err := io.WriteString(c, b.String()); err != nil {
			t.Fatal(err)
		}
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("%s: %v", line, err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body = io.NopCloser(bytes.NewReader(body))
		resp.Header.Set("Date", "-")
		var out bytes.Buffer
		_ = resp.Write(&out)
		return out.String()
	}
	tokResp := send("PUT /latest/api/token", "X-aws-ec2-metadata-token-ttl-seconds: 60")
	token := tokResp[strings.LastIndex(tokResp, "\r\n")+2:]
	fields := make([]string, 0, len(seq)-1)
	for _, f := range seq[1:] {
		fields = append(fields, strings.ReplaceAll(f, "TOKEN", token))
	}
	return strings.ReplaceAll(send(seq[0], fields...), token, "MINTED")
}
