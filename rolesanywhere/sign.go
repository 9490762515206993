package rolesanywhere

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"net/http"
	"net/url"
	"sort"
	"strings"
	"time"
)

// Algorithm is the signing algorithm named in the string to sign and the
// Authorization header.
type Algorithm string

const (
	// AlgorithmRSA signs with RSA PKCS#1 v1.5 over SHA-256.
	AlgorithmRSA Algorithm = "AWS4-X509-RSA-SHA256"
	// AlgorithmECDSA signs with ECDSA over SHA-256 (any supported curve),
	// ASN.1 DER encoded.
	AlgorithmECDSA Algorithm = "AWS4-X509-ECDSA-SHA256"
)

const (
	// SigningName is the service name in the credential scope.
	SigningName = "rolesanywhere"
	// HeaderDate carries the signing time.
	HeaderDate = "X-Amz-Date"
	// HeaderX509 carries the leaf certificate, standard base64 of its DER.
	HeaderX509 = "X-Amz-X509"
	// HeaderX509Chain carries the intermediates, comma-joined standard base64 DER.
	HeaderX509Chain = "X-Amz-X509-Chain"
	// DateFormat is the layout of X-Amz-Date.
	DateFormat = "20060102T150405Z"
	// scopeDateFormat is the layout of the date in the credential scope.
	scopeDateFormat = "20060102"
	// scopeTerminator ends every SigV4 credential scope.
	scopeTerminator = "aws4_request"
)

// unsignedHeaders are never part of the signature: the Authorization header
// carries it, and the others are routinely rewritten by proxies and HTTP
// stacks (the official helper skips the same ones).
var unsignedHeaders = map[string]bool{
	"authorization":   true,
	"user-agent":      true,
	"x-amzn-trace-id": true,
	"content-length":  true,
	"expect":          true,
}

// SigningInput is everything a SigV4-X509 signature covers. It is plain data
// so that recorded requests can be replayed through Sign.
type SigningInput struct {
	// Method is the HTTP method, e.g. POST.
	Method string
	// Path is the request path as sent (escaped form), e.g. /sessions.
	Path string
	// RawQuery is the query string as sent, without '?'.
	RawQuery string
	// Host is the Host header value.
	Host string
	// Header holds the other headers to sign; those in unsignedHeaders are
	// skipped. X-Amz-Date, X-Amz-X509 (and the chain, if any) must be here.
	Header http.Header
	// Body is the request payload.
	Body []byte
	// Region is the signing region (the trust anchor's).
	Region string
	// Time is the signing time; it must equal the X-Amz-Date header.
	Time time.Time
}

// Signature is a computed SigV4-X509 signature.
type Signature struct {
	// Algorithm is the signing algorithm.
	Algorithm Algorithm
	// Credential is "<serial decimal>/<scope>".
	Credential string
	// SignedHeaders is the ';'-joined sorted lowercase list of signed headers.
	SignedHeaders string
	// Hex is the lowercase hex of the raw signature.
	Hex string
}

// Authorization is the Authorization header value for s.
func (s Signature) Authorization() string {
	return fmt.Sprintf("%s Credential=%s, SignedHeaders=%s, Signature=%s", s.Algorithm, s.Credential, s.SignedHeaders, s.Hex)
}

// AlgorithmFor returns the signing algorithm for a public key, or an error
// for key types Roles Anywhere does not accept.
func AlgorithmFor(pub crypto.PublicKey) (Algorithm, error) {
	switch k := pub.(type) {
	case *rsa.PublicKey:
		return AlgorithmRSA, nil
	case *ecdsa.PublicKey:
		switch k.Curve.Params().BitSize {
		case 256, 384:
			return AlgorithmECDSA, nil
		}
		return "", fmt.Errorf("ECDSA curve %s is not supported by Roles Anywhere; use P-256 or P-384", k.Curve.Params().Name)
	default:
		return "", fmt.Errorf("key type %T is not supported by Roles Anywhere; use RSA or ECDSA P-256/P-384", pub)
	}
}

// CredentialScope is "<yyyymmdd>/<region>/rolesanywhere/aws4_request".
func CredentialScope(t time.Time, region string) string {
	return t.UTC().Format(scopeDateFormat) + "/" + region + "/" + SigningName + "/" + scopeTerminator
}

// CanonicalRequest builds the SigV4 canonical request of in and returns it
// with the signed headers list.
func CanonicalRequest(in SigningInput) (canonical, signedHeaders string, err error) {
	query, err := CanonicalQuery(in.RawQuery)
	if err != nil {
		return "", "", err
	}
	headers, signed := canonicalHeaders(in.Host, in.Header)
	sum := sha256.Sum256(in.Body)
	var b strings.Builder
	b.WriteString(in.Method)
	b.WriteByte('\n')
	b.WriteString(CanonicalURI(in.Path))
	b.WriteByte('\n')
	b.WriteString(query)
	b.WriteByte('\n')
	b.WriteString(headers)
	b.WriteByte('\n')
	b.WriteString(signed)
	b.WriteByte('\n')
	b.WriteString(hex.EncodeToString(sum[:]))
	return b.String(), signed, nil
}

// StringToSign is the SigV4 string to sign for a canonical request.
func StringToSign(alg Algorithm, t time.Time, region, canonicalRequest string) string {
	sum := sha256.Sum256([]byte(canonicalRequest))
	return string(alg) + "\n" + t.UTC().Format(DateFormat) + "\n" + CredentialScope(t, region) + "\n" + hex.EncodeToString(sum[:])
}

// Sign computes the signature of in with key, whose certificate is leaf.
// RSA signatures are deterministic; ECDSA ones are not.
func Sign(in SigningInput, leaf *x509.Certificate, key crypto.Signer) (Signature, error) {
	alg, err := AlgorithmFor(leaf.PublicKey)
	if err != nil {
		return Signature{}, err
	}
	if got := in.Header.Get(HeaderDate); got != in.Time.UTC().Format(DateFormat) {
		return Signature{}, fmt.Errorf("signing: %s header %q does not match the signing time %s", HeaderDate, got, in.Time.UTC().Format(DateFormat))
	}
	canonical, signed, err := CanonicalRequest(in)
	if err != nil {
		return Signature{}, err
	}
	digest := sha256.Sum256([]byte(StringToSign(alg, in.Time, in.Region, canonical)))
	raw, err := key.Sign(rand.Reader, digest[:], crypto.SHA256)
	if err != nil {
		return Signature{}, fmt.Errorf("signing the request with the %s key failed: %w", alg, err)
	}
	return Signature{
		Algorithm:     alg,
		Credential:    leaf.SerialNumber.String() + "/" + CredentialScope(in.Time, in.Region),
		SignedHeaders: signed,
		Hex:           hex.EncodeToString(raw),
	}, nil
}

// SignRequest signs req in place with pair at now: it sets X-Amz-Date,
// X-Amz-X509, X-Amz-X509-Chain (when pair has intermediates) and
// Authorization. body must be exactly what req will send.
func SignRequest(req *http.Request, body []byte, pair *KeyPair, region string, now time.Time) error {
	now = now.UTC().Truncate(time.Second)
	req.Header.Set(HeaderDate, now.Format(DateFormat))
	req.Header.Set(HeaderX509, base64.StdEncoding.EncodeToString(pair.Leaf.Raw))
	if len(pair.Intermediates) > 0 {
		req.Header.Set(HeaderX509Chain, EncodeChain(pair.Intermediates))
	} else {
		req.Header.Del(HeaderX509Chain)
	}
	req.Header.Del("Authorization")
	host := req.Host
	if host == "" {
		host = req.URL.Host
	}
	sig, err := Sign(SigningInput{
		Method:   req.Method,
		Path:     req.URL.EscapedPath(),
		RawQuery: req.URL.RawQuery,
		Host:     host,
		Header:   req.Header,
		Body:     body,
		Region:   region,
		Time:     now,
	}, pair.Leaf, pair.Signer)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", sig.Authorization())
	return nil
}

// EncodeChain is the X-Amz-X509-Chain value for certs.
func EncodeChain(certs []*x509.Certificate) string {
	parts := make([]string, len(certs))
	for i, c := range certs {
		parts[i] = base64.StdEncoding.EncodeToString(c.Raw)
	}
	return strings.Join(parts, ",")
}

// CanonicalURI escapes each segment of an (escaped) request path the SigV4
// way; an empty path is "/".
func CanonicalURI(escapedPath string) string {
	if escapedPath == "" {
		return "/"
	}
	segs := strings.Split(escapedPath, "/")
	for i, s := range segs {
		if u, err := url.PathUnescape(s); err == nil {
			s = u
		}
		segs[i] = uriEscape(s)
	}
	return strings.Join(segs, "/")
}

// CanonicalQuery decodes a raw query and re-encodes it the SigV4 way: every
// name and value escaped (only A-Z a-z 0-9 - _ . ~ kept), pairs sorted by
// name then value, joined with '&'.
func CanonicalQuery(rawQuery string) (string, error) {
	if rawQuery == "" {
		return "", nil
	}
	type pair struct{ k, v string }
	var pairs []pair
	for _, part := range strings.Split(rawQuery, "&") {
		if part == "" {
			continue
		}
		k, v, _ := strings.Cut(part, "=")
		dk, err := url.QueryUnescape(k)
		if err != nil {
			return "", fmt.Errorf("query parameter %q is not valid URL encoding: %w", k, err)
		}
		dv, err := url.QueryUnescape(v)
		if err != nil {
			return "", fmt.Errorf("value of query parameter %q is not valid URL encoding: %w", dk, err)
		}
		pairs = append(pairs, pair{uriEscape(dk), uriEscape(dv)})
	}
	sort.Slice(pairs, func(i, j int) bool {
		if pairs[i].k != pairs[j].k {
			return pairs[i].k < pairs[j].k
		}
		return pairs[i].v < pairs[j].v
	})
	var b strings.Builder
	for i, p := range pairs {
		if i > 0 {
			b.WriteByte('&')
		}
		b.WriteString(p.k)
		b.WriteByte('=')
		b.WriteString(p.v)
	}
	return b.String(), nil
}

// canonicalHeaders returns the canonical header block (each line ending in
// '\n') and the signed headers list: host plus every header of h not in
// unsignedHeaders, names lowercased, values trimmed with inner runs of spaces
// collapsed and multiple values joined with ','.
func canonicalHeaders(host string, h http.Header) (block, signed string) {
	values := map[string][]string{"host": {host}}
	for k, vs := range h {
		lk := strings.ToLower(k)
		if unsignedHeaders[lk] || lk == "host" {
			continue
		}
		values[lk] = append(values[lk], vs...)
	}
	names := make([]string, 0, len(values))
	for k := range values {
		names = append(names, k)
	}
	sort.Strings(names)
	var b strings.Builder
	for _, k := range names {
		vs := values[k]
		trimmed := make([]string, len(vs))
		for i, v := range vs {
			trimmed[i] = collapseSpaces(v)
		}
		b.WriteString(k)
		b.WriteByte(':')
		b.WriteString(strings.Join(trimmed, ","))
		b.WriteByte('\n')
	}
	return b.String(), strings.Join(names, ";")
}

// uriEscape percent-encodes every byte but the RFC 3986 unreserved ones,
// with upper-case hex, as SigV4 requires.
func uriEscape(s string) string {
	const hexDigits = "0123456789ABCDEF"
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if 'A' <= c && c <= 'Z' || 'a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '-' || c == '_' || c == '.' || c == '~' {
			b.WriteByte(c)
			continue
		}
		b.WriteByte('%')
		b.WriteByte(hexDigits[c>>4])
		b.WriteByte(hexDigits[c&15])
	}
	return b.String()
}

// collapseSpaces trims leading and trailing spaces and turns every run of
// spaces inside into one, as SigV4 does with header values.
func collapseSpaces(v string) string {
	v = strings.Trim(v, " ")
	if !strings.Contains(v, "  ") {
		return v
	}
	var b strings.Builder
	space := false
	for i := 0; i < len(v); i++ {
		if v[i] == ' ' {
			if space {
				continue
			}
			space = true
		} else {
			space = false
		}
		b.WriteByte(v[i])
	}
	return b.String()
}
