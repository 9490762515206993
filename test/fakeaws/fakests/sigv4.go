package fakests

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"time"
)

const (
	// sigV4Algorithm is the only signing algorithm STS accepts in the
	// Authorization header.
	sigV4Algorithm = "AWS4-HMAC-SHA256"
	// amzDateFormat is the layout of X-Amz-Date.
	amzDateFormat = "20060102T150405Z"
	// scopeDateFormat is the layout of the date in the credential scope.
	scopeDateFormat = "20060102"
	// maxClockSkew is how far a request's signing time may be from the
	// server's clock, as AWS enforces.
	maxClockSkew = 5 * time.Minute
	// serviceName is the signing name of STS.
	serviceName = "sts"
)

// authHeader is a parsed SigV4 Authorization header.
type authHeader struct {
	accessKeyID   string
	scopeDate     string
	region        string
	service       string
	terminator    string
	signedHeaders []string
	signature     string
}

// parseAuthorization splits "AWS4-HMAC-SHA256 Credential=AKID/date/region/sts/aws4_request,
// SignedHeaders=a;b, Signature=hex". It returns a description of what is wrong
// for the error message when the header is malformed.
func parseAuthorization(h string) (authHeader, string) {
	var a authHeader
	alg, rest, ok := strings.Cut(strings.TrimSpace(h), " ")
	if !ok || alg != sigV4Algorithm {
		return a, "Authorization header requires '" + sigV4Algorithm + "' algorithm"
	}
	fields := map[string]string{}
	for _, part := range strings.Split(rest, ",") {
		k, v, ok := strings.Cut(strings.TrimSpace(part), "=")
		if !ok {
			return a, fmt.Sprintf("Authorization header requires each component to be of the form key=value, got '%s'", strings.TrimSpace(part))
		}
		fields[k] = v
	}
	for _, k := range []string{"Credential", "SignedHeaders", "Signature"} {
		if fields[k] == "" {
			return a, "Authorization header requires '" + k + "' parameter"
		}
	}
	cred := strings.Split(fields["Credential"], "/")
	if len(cred) != 5 {
		return a, "Credential should be scoped to a valid region, service and terminator: " + fields["Credential"]
	}
	a.accessKeyID, a.scopeDate, a.region, a.service, a.terminator = cred[0], cred[1], cred[2], cred[3], cred[4]
	a.signedHeaders = strings.Split(fields["SignedHeaders"], ";")
	a.signature = fields["Signature"]
	return a, ""
}

// canonicalRequest re-derives the SigV4 canonical request from what was
// actually received, so any change on the wire breaks the signature.
func canonicalRequest(r *http.Request, body []byte, signedHeaders []string) (string, error) {
	var b strings.Builder
	b.WriteString(r.Method)
	b.WriteByte('\n')
	b.WriteString(canonicalURI(r.URL))
	b.WriteByte('\n')
	b.WriteString(canonicalQuery(r.URL.Query()))
	b.WriteByte('\n')
	for _, name := range signedHeaders {
		if name != strings.ToLower(name) {
			return "", fmt.Errorf("signed header %q is not lower case", name)
		}
		var values []string
		switch name {
		case "host":
			values = []string{r.Host}
		case "content-length":
			values = r.Header.Values("Content-Length")
			if len(values) == 0 && r.ContentLength >= 0 {
				values = []string{strconv.FormatInt(r.ContentLength, 10)}
			}
		default:
			values = r.Header.Values(name)
		}
		if len(values) == 0 {
			return "", fmt.Errorf("signed header %q is not in the request", name)
		}
		b.WriteString(name)
		b.WriteByte(':')
		for i, v := range values {
			if i > 0 {
				b.WriteByte(',')
			}
			b.WriteString(strings.Join(strings.Fields(v), " "))
		}
		b.WriteByte('\n')
	}
	b.WriteByte('\n')
	b.WriteString(strings.Join(signedHeaders, ";"))
	b.WriteByte('\n')
	sum := sha256.Sum256(body)
	b.WriteString(hex.EncodeToString(sum[:]))
	return b.String(), nil
}

// canonicalURI encodes the path the way the AWS signer does for every
// service but S3: the escaped path, escaped once more.
func canonicalURI(u *url.URL) string {
	p := u.EscapedPath()
	if p == "" {
		return "/"
	}
	return uriEncode(p, false)
}

// canonicalQuery sorts parameters by name then value and strictly encodes them.
func canonicalQuery(q url.Values) string {
	if len(q) == 0 {
		return ""
	}
	pairs := make([]string, 0, len(q))
	for k, vs := range q {
		for _, v := range vs {
			pairs = append(pairs, uriEncode(k, true)+"="+uriEncode(v, true))
		}
	}
	sort.Strings(pairs)
	return strings.Join(pairs, "&")
}

// uriEncode is RFC 3986 encoding of everything but unreserved characters;
// '/' is kept unless encodeSlash.
func uriEncode(s string, encodeSlash bool) string {
	const hexDigits = "0123456789ABCDEF"
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case 'A' <= c && c <= 'Z', 'a' <= c && c <= 'z', '0' <= c && c <= '9',
			c == '-', c == '_', c == '.', c == '~':
			b.WriteByte(c)
		case c == '/' && !encodeSlash:
			b.WriteByte(c)
		default:
			b.WriteByte('%')
			b.WriteByte(hexDigits[c>>4])
			b.WriteByte(hexDigits[c&0x0f])
		}
	}
	return b.String()
}

// signature computes the hex SigV4 signature of a canonical request.
func signature(secret, amzDate, scopeDate, region, service, canonical string) string {
	sum := sha256.Sum256([]byte(canonical))
	scope := scopeDate + "/" + region + "/" + service + "/aws4_request"
	stringToSign := sigV4Algorithm + "\n" + amzDate + "\n" + scope + "\n" + hex.EncodeToString(sum[:])
	key := hmacSHA256([]byte("AWS4"+secret), scopeDate)
	key = hmacSHA256(key, region)
	key = hmacSHA256(key, service)
	key = hmacSHA256(key, "aws4_request")
	return hex.EncodeToString(hmacSHA256(key, stringToSign))
}

func hmacSHA256(key []byte, data string) []byte {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(data))
	return m.Sum(nil)
}
