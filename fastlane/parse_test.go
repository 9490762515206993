package fastlane

import (
	"bufio"
	"bytes"
	"net/http"
	"net/url"
	"reflect"
	"strings"
	"testing"
)

// laneRead parses b as the lane does and builds the request the handler
// would get; n is the bytes it consumed.
func laneRead(b []byte) (*http.Request, int, parseResult) {
	var rq request
	res := parse(b, &rq)
	if res != parsed {
		return nil, 0, res
	}
	c := &conn{buf: b, n: len(b)}
	c.tmpl = &http.Request{Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1, Header: http.Header{}, URL: &url.URL{}, Body: http.NoBody}
	c.materialise(&rq)
	return &c.req, rq.end, parsed
}

// sdkRequests are what SDKs and tools send, as they send it.
var sdkRequests = []string{
	// aws-sdk-go-v2's token PUT and credential GET.
	"PUT /latest/api/token HTTP/1.1\r\nHost: 169.254.169.254\r\nUser-Agent: aws-sdk-go-v2/1.30.0 os/linux lang/go#1.22 md/GOOS#linux md/GOARCH#amd64 api/ec2imds#1.16.0\r\nContent-Length: 0\r\nAmz-Sdk-Invocation-Id: 3c1a5c9e-8e4b-4c3b-8f0f-3f8f2b1d2e6a\r\nAmz-Sdk-Request: attempt=1; max=3\r\nX-Aws-Ec2-Metadata-Token-Ttl-Seconds: 21600\r\nAccept-Encoding: gzip\r\n\r\n",
	"GET /latest/meta-data/iam/security-credentials/app-role HTTP/1.1\r\nHost: 169.254.169.254\r\nUser-Agent: aws-sdk-go-v2/1.30.0\r\nX-Aws-Ec2-Metadata-Token: AQAEAK1dBQ==\r\nAccept-Encoding: gzip\r\n\r\n",
	// botocore (lower-case names, keep-alive).
	"PUT /latest/api/token HTTP/1.1\r\nHost: 169.254.169.254\r\nAccept-Encoding: identity\r\nuser-agent: Botocore/1.34.0 ua/2.0 os/linux#6.1\r\nx-aws-ec2-metadata-token-ttl-seconds: 21600\r\nContent-Length: 0\r\n\r\n",
	"GET /latest/meta-data/iam/security-credentials/ HTTP/1.1\r\nHost: 169.254.169.254\r\nAccept-Encoding: identity\r\nx-aws-ec2-metadata-token: tok\r\nConnection: keep-alive\r\n\r\n",
	// The token door.
	"GET /v1/credentials HTTP/1.1\r\nHost: 169.254.170.23\r\nAuthorization: eyJhbGciOiJSUzI1NiJ9.e30.sig\r\nUser-Agent: aws-sdk-java/2.25\r\n\r\n",
	// Repeated fields, empty values, odd spacing, another field's case.
	"GET /latest/meta-data/iam/security-credentials/r HTTP/1.1\r\nhOsT: 169.254.169.254:80\r\nX-Custom: a\r\nx-custom: b\r\nEmpty:\r\nSpaced: \t v \t\r\nweird_name!#: x\r\n\r\n",
}

// hostileRequests must never be parsed by the lane.
var hostileRequests = []string{
	"GET /x HTTP/1.0\r\nHost: h\r\n\r\n",
	"GET /x HTTP/1.1\r\n\r\n",
	"GET /x HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
	"GET /x HTTP/1.1\r\nHost: a b\r\n\r\n",
	"GET /x?q=1 HTTP/1.1\r\nHost: h\r\n\r\n",
	"GET /x#f HTTP/1.1\r\nHost: h\r\n\r\n",
	"GET /%2e%2e/x HTTP/1.1\r\nHost: h\r\n\r\n",
	"GET http://h/x HTTP/1.1\r\nHost: h\r\n\r\n",
	"GET  /x HTTP/1.1\r\nHost: h\r\n\r\n",
	"GET /x  HTTP/1.1\r\nHost: h\r\n\r\n",
	"HEAD /x HTTP/1.1\r\nHost: h\r\n\r\n",
	"POST /x HTTP/1.1\r\nHost: h\r\n\r\n",
	"get /x HTTP/1.1\r\nHost: h\r\n\r\n",
	"PUT /latest/api/token HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhello",
	"PUT /x HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\nContent-Length: 0\r\n\r\n",
	"PUT /x HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
	"GET /x HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\n\r\n",
	"GET /x HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n",
	"GET /x HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n",
	"GET /x HTTP/1.1\r\nHost: h\r\nX: a\r\n b\r\n\r\n",
	"GET /x HTTP/1.1\r\nHost: h\r\nX : a\r\n\r\n",
	"GET /x HTTP/1.1\r\nHost: h\r\nX: a\x00b\r\n\r\n",
	"GET /x HTTP/1.1\r\nHost: h\r\nX: caf\xc3\xa9\r\n\r\n",
	"GET /x HTTP/1.1\nHost: h\n\n",
	"GET /x HTTP/1.1\r\nHost: h\nX: y\r\n\r\n",
	"GET /x HTTP/1.1\r\nHost: h\r\nX: y\rZ: w\r\n\r\n",
	"GET /x HTTP/1.1\r\n: empty-name\r\nHost: h\r\n\r\n",
	"GET /\x7f HTTP/1.1\r\nHost: h\r\n\r\n",
}

// TestParseSDKRequests: what SDKs send is the lane's, and the handler sees
// exactly the request net/http would have built.
func TestParseSDKRequests(t *testing.T) {
	for _, raw := range sdkRequests {
		got, n, res := laneRead([]byte(raw))
		if res != parsed {
			t.Errorf("the lane did not take an SDK's request (result %d):\n%q", res, raw)
			continue
		}
		if n != len(raw) {
			t.Errorf("consumed %d of %d bytes of %q", n, len(raw), raw)
		}
		agree(t, []byte(raw), got)
	}
}

// TestParseRefusesWhatCouldBeReadTwoWays: every request outside the grammar
// goes to net/http whole.
func TestParseRefusesWhatCouldBeReadTwoWays(t *testing.T) {
	for _, raw := range hostileRequests {
		if _, _, res := laneRead([]byte(raw)); res != handOff {
			t.Errorf("lane result %d, want hand-off, for %q", res, raw)
		}
	}
}

// TestParseWaitsForTheWholeHeader: a request cut anywhere before its blank
// line is not parsed yet.
func TestParseWaitsForTheWholeHeader(t *testing.T) {
	raw := sdkRequests[1]
	for i := range len(raw) - 1 {
		if _, _, res := laneRead([]byte(raw[:i])); res != needMore {
			t.Fatalf("after %d of %d bytes the lane said %d, want needMore", i, len(raw), res)
		}
	}
}

// TestParseLeavesPipelinedBytes: a second request after the first is not
// consumed with it.
func TestParseLeavesPipelinedBytes(t *testing.T) {
	raw := sdkRequests[0] + sdkRequests[1]
	_, n, res := laneRead([]byte(raw))
	if res != parsed || n != len(sdkRequests[0]) {
		t.Fatalf("result %d consumed %d, want parsed and %d", res, n, len(sdkRequests[0]))
	}
}

// FuzzParseAgreesWithNetHTTP: whatever the lane parses, net/http parses to
// the same request, consuming the same bytes.
func FuzzParseAgreesWithNetHTTP(f *testing.F) {
	for _, r := range sdkRequests {
		f.Add([]byte(r))
	}
	for _, r := range hostileRequests {
		f.Add([]byte(r))
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		got, _, res := laneRead(raw)
		if res != parsed {
			return
		}
		agree(t, raw, got)
	})
}

// agree fails unless net/http reads raw to the request the lane built.
func agree(t *testing.T, raw []byte, got *http.Request) {
	t.Helper()
	br := bufio.NewReader(bytes.NewReader(raw))
	want, err := http.ReadRequest(br)
	if err != nil {
		t.Fatalf("the lane parsed what net/http refuses (%v):\n%q", err, raw)
	}
	if strings.EqualFold(want.Header.Get("Connection"), "close") || want.Close {
		t.Fatalf("the lane parsed a request that closes the connection: %q", raw)
	}
	if want.ContentLength != 0 || want.Body != http.NoBody {
		t.Fatalf("the lane parsed a request with a body (%d): %q", want.ContentLength, raw)
	}
	consumedByHTTP := len(raw) - br.Buffered()
	var rq request
	parse(raw, &rq)
	if rq.end != consumedByHTTP {
		t.Fatalf("the lane consumed %d bytes, net/http %d, of %q", rq.end, consumedByHTTP, raw)
	}
	if got.Method != want.Method || got.RequestURI != want.RequestURI || got.Host != want.Host || got.Proto != want.Proto {
		t.Fatalf("lane %s %q host %q %s, net/http %s %q host %q %s, for %q",
			got.Method, got.RequestURI, got.Host, got.Proto, want.Method, want.RequestURI, want.Host, want.Proto, raw)
	}
	if !reflect.DeepEqual(*got.URL, *want.URL) {
		t.Fatalf("lane URL %#v, net/http %#v, for %q", *got.URL, *want.URL, raw)
	}
	if !reflect.DeepEqual(got.Header, want.Header) {
		t.Fatalf("lane header %q, net/http %q, for %q", got.Header, want.Header, raw)
	}
}
