package fakera

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/sirupsen/logrus"
)

const (
	// minDuration and maxDuration bound durationSeconds.
	minDuration, maxDuration = 900, 43200
	// dateWindow is how far X-Amz-Date may be from the server's clock.
	dateWindow = 5 * time.Minute
	// maxBodyBytes bounds the request body.
	maxBodyBytes = 64 << 10
	// amzDate is the X-Amz-Date layout.
	amzDate = "20060102T150405Z"
	// algRSA and algECDSA are the accepted signing algorithms.
	algRSA, algECDSA = "AWS4-X509-RSA-SHA256", "AWS4-X509-ECDSA-SHA256"
)

// MessageRoleSessionNameRefused is what Roles Anywhere answers (403
// AccessDeniedException) when a request sets roleSessionName and the
// profile's acceptRoleSessionName is false.
const MessageRoleSessionNameRefused = "Not authorized to set roleSessionName."

// sessionNamePattern is the IAM role session name syntax.
var sessionNamePattern = regexp.MustCompile(`^[\w+=,.@-]{2,64}$`)

// apiError is an error answer in the REST-JSON shape.
type apiError struct {
	status  int
	code    string
	message string
}

func (e *apiError) Error() string { return e.code + ": " + e.message }

func denied(format string, args ...any) *apiError {
	return &apiError{http.StatusForbidden, "AccessDeniedException", fmt.Sprintf(format, args...)}
}

func invalid(format string, args ...any) *apiError {
	return &apiError{http.StatusBadRequest, "ValidationException", fmt.Sprintf(format, args...)}
}

func notFound(format string, args ...any) *apiError {
	return &apiError{http.StatusNotFound, "ResourceNotFoundException", fmt.Sprintf(format, args...)}
}

// requestBody is the CreateSession JSON body; the ARNs may also come here.
type requestBody struct {
	DurationSeconds int    `json:"durationSeconds"`
	RoleSessionName string `json:"roleSessionName"`
	ProfileArn      string `json:"profileArn"`
	RoleArn         string `json:"roleArn"`
	TrustAnchorArn  string `json:"trustAnchorArn"`
}

// verified is a request that passed every check.
type verified struct {
	// leaf is the authenticated certificate.
	leaf *x509.Certificate
	// trustAnchorARN, profileARN, roleARN name what was asked for.
	trustAnchorARN, profileARN, roleARN string
	// body is the decoded body.
	body requestBody
	// duration is the granted session length in seconds.
	duration int
}

func (s *Server) serveHTTP(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(io.LimitReader(r.Body, maxBodyBytes+1))
	if err != nil {
		return // the client went away
	}
	s.countRequest()
	if s.injector.Intercept(w, r) {
		return
	}
	now := s.clock.Now()
	log := s.logger.WithFields(logrus.Fields{"remote": r.RemoteAddr, "path": r.URL.Path})
	if len(body) > maxBodyBytes {
		s.refuse(w, log, invalid("Request body is too large"))
		return
	}
	if r.Method != http.MethodPost || r.URL.Path != "/sessions" {
		s.refuse(w, log, &apiError{http.StatusNotFound, "UnknownOperationException", "No operation matches " + r.Method + " " + r.URL.Path})
		return
	}
	v, aerr := s.verify(r, body, now)
	if aerr != nil {
		s.refuse(w, log, aerr)
		return
	}
	is := s.issue(v, now)
	log.WithFields(logrus.Fields{
		"serial": is.Serial, "role": is.RoleARN, "session": is.SessionName, "accessKeyId": is.AccessKeyID,
	}).Info("fakera: CreateSession granted")
	writeSession(w, is, v)
}

// refuse logs and writes an error answer.
func (s *Server) refuse(w http.ResponseWriter, log logrus.FieldLogger, e *apiError) {
	s.record(e.status)
	log.Info("fakera: CreateSession refused: " + e.Error())
	writeError(w, e)
}

// verify runs every check AWS runs, in an order that needs no secret
// before authentication: request shape, the named anchor (for its CA and
// region), the signature, the chain, then authorization.
func (s *Server) verify(r *http.Request, body []byte, now time.Time) (*verified, *apiError) {
	var rb requestBody
	if len(bytes.TrimSpace(body)) > 0 {
		dec := json.NewDecoder(bytes.NewReader(body))
		if err := dec.Decode(&rb); err != nil {
			return nil, invalid("Request body is not valid JSON: %v", err)
		}
	}
	q := r.URL.Query()
	pick := func(name, fromBody string) string {
		if v := q.Get(name); v != "" {
			return v
		}
		return fromBody
	}
	v := &verified{
		trustAnchorARN: pick("trustAnchorArn", rb.TrustAnchorArn),
		profileARN:     pick("profileArn", rb.ProfileArn),
		roleARN:        pick("roleArn", rb.RoleArn),
		body:           rb,
	}
	for name, val := range map[string]string{"trustAnchorArn": v.trustAnchorARN, "profileArn": v.profileARN, "roleArn": v.roleARN} {
		if val == "" {
			return nil, invalid("1 validation error detected: Value null at '%s' failed to satisfy constraint: Member must not be null", name)
		}
	}

	s.mu.Lock()
	anc := s.anchors[v.trustAnchorARN]
	prof, profOK := s.profiles[v.profileARN]
	s.mu.Unlock()
	if anc == nil {
		return nil, notFound("Trust anchor %s was not found", v.trustAnchorARN)
	}

	leaf, aerr := s.authenticate(r, body, anc, now)
	if aerr != nil {
		return nil, aerr
	}
	v.leaf = leaf

	if !profOK {
		return nil, notFound("Profile %s was not found", v.profileARN)
	}
	if pa, err := parseARN(v.profileARN); err != nil || pa.region != anc.arn.region || pa.account != anc.arn.account {
		return nil, invalid("Profile %s is not in the trust anchor's account and region", v.profileARN)
	}
	if !contains(prof.RoleARNs, v.roleARN) {
		return nil, denied("Role %s is not in the role list of profile %s", v.roleARN, v.profileARN)
	}
	if rb.RoleSessionName != "" {
		if !prof.AcceptRoleSessionName {
			// AWS's own words for a profile with acceptRoleSessionName false
			// (aws/rolesanywhere-credential-helper#19): 403 AccessDeniedException.
			return nil, denied("%s", MessageRoleSessionNameRefused)
		}
		if !sessionNamePattern.MatchString(rb.RoleSessionName) {
			return nil, invalid("1 validation error detected: Value '%s' at 'roleSessionName' failed to satisfy constraint: Member must satisfy regular expression pattern: [\\w+=,.@-]{2,64}", rb.RoleSessionName)
		}
	}
	v.duration = prof.DurationSeconds
	if rb.DurationSeconds != 0 {
		if rb.DurationSeconds < minDuration || rb.DurationSeconds > maxDuration {
			return nil, invalid("1 validation error detected: Value '%d' at 'durationSeconds' failed to satisfy constraint: Member must have value between %d and %d", rb.DurationSeconds, minDuration, maxDuration)
		}
		if rb.DurationSeconds > prof.DurationSeconds {
			return nil, invalid("Requested durationSeconds %d exceeds the profile's %d", rb.DurationSeconds, prof.DurationSeconds)
		}
		v.duration = rb.DurationSeconds
	}
	return v, nil
}

// authorization is a parsed Authorization header.
type authorization struct {
	alg                                       string
	serial, date, region, service, terminator string
	signedHeaders                             []string
	signature                                 []byte
}

// parseAuthorization splits "<ALG> Credential=..., SignedHeaders=..., Signature=...".
func parseAuthorization(h string) (authorization, *apiError) {
	var a authorization
	alg, rest, ok := strings.Cut(h, " ")
	if !ok {
		return a, denied("Authorization header is malformed")
	}
	a.alg = alg
	fields := map[string]string{}
	for _, part := range strings.Split(rest, ",") {
		k, val, ok := strings.Cut(strings.TrimSpace(part), "=")
		if !ok {
			return a, denied("Authorization component %q is malformed", part)
		}
		if _, dup := fields[k]; dup {
			return a, denied("Authorization repeats %s", k)
		}
		fields[k] = val
	}
	cred, sh, sig := fields["Credential"], fields["SignedHeaders"], fields["Signature"]
	if cred == "" || sh == "" || sig == "" || len(fields) != 3 {
		return a, denied("Authorization must have exactly Credential, SignedHeaders and Signature")
	}
	cp := strings.Split(cred, "/")
	if len(cp) != 5 {
		return a, denied("Credential %q is not serial/date/region/service/aws4_request", cred)
	}
	a.serial, a.date, a.region, a.service, a.terminator = cp[0], cp[1], cp[2], cp[3], cp[4]
	a.signedHeaders = strings.Split(sh, ";")
	var err error
	if a.signature, err = hex.DecodeString(sig); err != nil || len(a.signature) == 0 {
		return a, denied("Signature is not hex")
	}
	return a, nil
}

// authenticate verifies the signature, the certificate and its chain to
// the anchor, and returns the leaf.
func (s *Server) authenticate(r *http.Request, body []byte, anc *anchor, now time.Time) (*x509.Certificate, *apiError) {
	a, aerr := parseAuthorization(r.Header.Get("Authorization"))
	if aerr != nil {
		return nil, aerr
	}
	if a.alg != algRSA && a.alg != algECDSA {
		return nil, denied("Unsupported signing algorithm %s", a.alg)
	}
	// Headers the signature must cover: otherwise they could be swapped.
	required := []string{"host", "x-amz-date", "x-amz-x509"}
	if len(r.Header.Values("X-Amz-X509-Chain")) > 0 {
		required = append(required, "x-amz-x509-chain")
	}
	for i, h := range a.signedHeaders {
		if h == "" || h != strings.ToLower(h) || (i > 0 && a.signedHeaders[i-1] >= h) {
			return nil, denied("SignedHeaders must be lowercase, sorted and unique")
		}
	}
	for _, h := range required {
		if !contains(a.signedHeaders, h) {
			return nil, denied("Header %s must be signed", h)
		}
	}

	dateHeader := r.Header.Get("X-Amz-Date")
	t, err := time.Parse(amzDate, dateHeader)
	if err != nil {
		return nil, denied("X-Amz-Date %q is not in the format %s", dateHeader, amzDate)
	}
	if s.window && (now.Sub(t) > dateWindow || t.Sub(now) > dateWindow) {
		return nil, denied("Signature expired: %s is now earlier than %s or later than %s", dateHeader,
			now.Add(-dateWindow).UTC().Format(amzDate), now.Add(dateWindow).UTC().Format(amzDate))
	}
	if a.date != t.Format("20060102") {
		return nil, denied("Credential date %s does not match X-Amz-Date %s", a.date, dateHeader)
	}
	if a.region != anc.arn.region {
		return nil, denied("Credential should be scoped to a valid region, not '%s'", a.region)
	}
	if a.service != "rolesanywhere" || a.terminator != "aws4_request" {
		return nil, denied("Credential should be scoped to correct service: 'rolesanywhere'")
	}

	leaf, err := decodeCert(r.Header.Get("X-Amz-X509"))
	if err != nil {
		return nil, denied("X-Amz-X509 is not a base64 DER certificate: %v", err)
	}
	var intermediates []*x509.Certificate
	if chain := r.Header.Get("X-Amz-X509-Chain"); chain != "" {
		for _, part := range strings.Split(chain, ",") {
			c, err := decodeCert(part)
			if err != nil {
				return nil, denied("X-Amz-X509-Chain holds something that is not a base64 DER certificate: %v", err)
			}
			intermediates = append(intermediates, c)
		}
	}
	if leaf.SerialNumber.String() != a.serial {
		return nil, denied("Credential serial %s does not match the certificate serial %s", a.serial, leaf.SerialNumber)
	}
	switch pub := leaf.PublicKey.(type) {
	case *rsa.PublicKey:
		if a.alg != algRSA {
			return nil, denied("Algorithm %s does not fit an RSA certificate", a.alg)
		}
	case *ecdsa.PublicKey:
		if a.alg != algECDSA {
			return nil, denied("Algorithm %s does not fit an EC certificate", a.alg)
		}
		if n := pub.Curve.Params().BitSize; n != 256 && n != 384 {
			return nil, denied("EC curve %s is not supported", pub.Curve.Params().Name)
		}
	default:
		return nil, denied("Certificate key type is not supported")
	}

	sts, aerr := stringToSign(r, body, a)
	if aerr != nil {
		return nil, aerr
	}
	digest := sha256.Sum256([]byte(sts))
	switch pub := leaf.PublicKey.(type) {
	case *rsa.PublicKey:
		err = rsa.VerifyPKCS1v15(pub, crypto.SHA256, digest[:], a.signature)
	case *ecdsa.PublicKey:
		if !ecdsa.VerifyASN1(pub, digest[:], a.signature) {
			err = fmt.Errorf("ECDSA verification failed")
		}
	}
	if err != nil {
		return nil, denied("The request signature we calculated does not match the signature you provided")
	}

	// Trust: chain to the anchor's CA, everything valid now.
	ipool := x509.NewCertPool()
	for _, c := range intermediates {
		ipool.AddCert(c)
	}
	if _, err := leaf.Verify(x509.VerifyOptions{
		Roots:         anc.pool,
		Intermediates: ipool,
		CurrentTime:   now,
		KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageAny},
	}); err != nil {
		return nil, denied("Untrusted certificate. Insufficient certificate: %v", err)
	}
	if leaf.KeyUsage&x509.KeyUsageDigitalSignature == 0 {
		return nil, denied("Untrusted certificate. Insufficient certificate: key usage must include digitalSignature")
	}
	if leaf.BasicConstraintsValid && leaf.IsCA {
		return nil, denied("Untrusted certificate. Insufficient certificate: end-entity certificate must not be a CA")
	}
	switch leaf.SignatureAlgorithm {
	case x509.MD2WithRSA, x509.MD5WithRSA, x509.SHA1WithRSA, x509.DSAWithSHA1, x509.ECDSAWithSHA1:
		return nil, denied("Untrusted certificate. Insufficient certificate: signature algorithm %s is too weak", leaf.SignatureAlgorithm)
	}
	return leaf, nil
}

// stringToSign rebuilds the SigV4 canonical request from what arrived.
func stringToSign(r *http.Request, body []byte, a authorization) (string, *apiError) {
	// Canonical URI: decode each segment, re-encode with the SigV4 set.
	segs := strings.Split(r.URL.EscapedPath(), "/")
	for i, seg := range segs {
		d, err := url.PathUnescape(seg)
		if err != nil {
			return "", invalid("Path is not valid URL encoding")
		}
		segs[i] = awsEscape(d)
	}
	uri := strings.Join(segs, "/")
	if uri == "" {
		uri = "/"
	}

	// Canonical query: decode every pair, re-encode, sort by name then value.
	var pairs []string
	if r.URL.RawQuery != "" {
		for _, kv := range strings.Split(r.URL.RawQuery, "&") {
			if kv == "" {
				continue
			}
			k, val, _ := strings.Cut(kv, "=")
			dk, err1 := url.QueryUnescape(k)
			dv, err2 := url.QueryUnescape(val)
			if err1 != nil || err2 != nil {
				return "", invalid("Query string is not valid URL encoding")
			}
			pairs = append(pairs, awsEscape(dk)+"="+awsEscape(dv))
		}
	}
	sort.Slice(pairs, func(i, j int) bool {
		ki, vi, _ := strings.Cut(pairs[i], "=")
		kj, vj, _ := strings.Cut(pairs[j], "=")
		if ki != kj {
			return ki < kj
		}
		return vi < vj
	})

	var hb strings.Builder
	for _, h := range a.signedHeaders {
		var vals []string
		if h == "host" {
			vals = []string{r.Host}
		} else {
			vals = r.Header.Values(h)
		}
		if len(vals) == 0 {
			return "", denied("Signed header %s is missing from the request", h)
		}
		for i, val := range vals {
			vals[i] = strings.Join(strings.FieldsFunc(val, func(c rune) bool { return c == ' ' }), " ")
		}
		hb.WriteString(h + ":" + strings.Join(vals, ",") + "\n")
	}
	payload := sha256.Sum256(body)
	canonical := strings.Join([]string{
		r.Method, uri, strings.Join(pairs, "&"), hb.String(), strings.Join(a.signedHeaders, ";"), hex.EncodeToString(payload[:]),
	}, "\n")
	crHash := sha256.Sum256([]byte(canonical))
	scope := strings.Join([]string{a.date, a.region, a.service, a.terminator}, "/")
	return a.alg + "\n" + r.Header.Get("X-Amz-Date") + "\n" + scope + "\n" + hex.EncodeToString(crHash[:]), nil
}

// awsEscape percent-encodes all but A-Z a-z 0-9 - _ . ~ with upper-case hex.
func awsEscape(s string) string {
	var b strings.Builder
	for _, c := range []byte(s) {
		switch {
		case c >= 'A' && c <= 'Z', c >= 'a' && c <= 'z', c >= '0' && c <= '9', c == '-', c == '_', c == '.', c == '~':
			b.WriteByte(c)
		default:
			fmt.Fprintf(&b, "%%%02X", c)
		}
	}
	return b.String()
}

// decodeCert parses one standard-base64 DER certificate.
func decodeCert(s string) (*x509.Certificate, error) {
	der, err := base64.StdEncoding.DecodeString(strings.TrimSpace(s))
	if err != nil {
		return nil, err
	}
	return x509.ParseCertificate(der)
}

// sessionResponse is the 201 body of CreateSession.
type sessionResponse struct {
	CredentialSet []credentialResponse `json:"credentialSet"`
	SubjectArn    string               `json:"subjectArn"`
}

// credentialResponse is one entry of credentialSet.
type credentialResponse struct {
	AssumedRoleUser  assumedRoleUser `json:"assumedRoleUser"`
	Credentials      credentialsJSON `json:"credentials"`
	PackedPolicySize int             `json:"packedPolicySize"`
	RoleArn          string          `json:"roleArn"`
	SourceIdentity   string          `json:"sourceIdentity"`
}

// assumedRoleUser names the session.
type assumedRoleUser struct {
	Arn           string `json:"arn"`
	AssumedRoleID string `json:"assumedRoleId"`
}

// credentialsJSON are the issued credentials.
type credentialsJSON struct {
	AccessKeyID     string `json:"accessKeyId"`
	Expiration      string `json:"expiration"`
	SecretAccessKey string `json:"secretAccessKey"`
	SessionToken    string `json:"sessionToken"`
}

// writeSession writes the 201 answer.
func writeSession(w http.ResponseWriter, is Issued, v *verified) {
	ta, _ := parseARN(is.TrustAnchorARN)
	resp := sessionResponse{
		CredentialSet: []credentialResponse{{
			AssumedRoleUser: assumedRoleUser{Arn: is.AssumedRoleARN, AssumedRoleID: is.AssumedRoleID},
			Credentials: credentialsJSON{
				AccessKeyID:     is.AccessKeyID,
				Expiration:      is.Expiration.UTC().Format(time.RFC3339),
				SecretAccessKey: is.SecretAccessKey,
				SessionToken:    is.SessionToken,
			},
			RoleArn:        is.RoleARN,
			SourceIdentity: "CN=" + v.leaf.Subject.CommonName,
		}},
		SubjectArn: "arn:" + ta.partition + ":rolesanywhere:" + ta.region + ":" + ta.account + ":subject/" + uuidFrom(is.Subject),
	}
	data, _ := json.Marshal(resp)
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Amzn-Requestid", uuidFrom(is.AccessKeyID))
	w.Header().Set("Content-Length", strconv.Itoa(len(data)))
	w.WriteHeader(http.StatusCreated)
	_, _ = w.Write(data)
}

// writeError writes the REST-JSON error shape: X-Amzn-ErrorType and
// {"message": ...}.
func writeError(w http.ResponseWriter, e *apiError) {
	data, _ := json.Marshal(map[string]string{"message": e.message})
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Amzn-ErrorType", e.code)
	w.Header().Set("X-Amzn-Requestid", uuidFrom(e.message+time.Now().String()))
	w.WriteHeader(e.status)
	_, _ = w.Write(data)
}

// uuidFrom derives a UUID-shaped string from s.
func uuidFrom(s string) string {
	h := sha256.Sum256([]byte(s))
	x := hex.EncodeToString(h[:16])
	return x[0:8] + "-" + x[8:12] + "-" + x[12:16] + "-" + x[16:20] + "-" + x[20:32]
}

// arnParts is a split ARN.
type arnParts struct {
	partition, service, region, account, resource string
}

// parseARN splits an ARN.
func parseARN(s string) (arnParts, error) {
	p := strings.SplitN(s, ":", 6)
	if len(p) != 6 || p[0] != "arn" || p[1] == "" || p[2] == "" || p[4] == "" || p[5] == "" {
		return arnParts{}, fmt.Errorf("%q is not an ARN", s)
	}
	return arnParts{partition: p[1], service: p[2], region: p[3], account: p[4], resource: p[5]}, nil
}

// contains reports whether list holds s.
func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
