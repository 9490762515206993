package fakests

import (
	"bytes"
	"compress/flate"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base32"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/xml"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"
)

const (
	// apiVersion is the only STS API version.
	apiVersion = "2011-06-15"
	// xmlNamespace is the namespace of every STS response.
	xmlNamespace = "https://sts.amazonaws.com/doc/2011-06-15/"
	// maxBodyBytes bounds what the fake reads from a request.
	maxBodyBytes = 1 << 20
	// defaultDuration is DurationSeconds when the caller sends none.
	defaultDuration = time.Hour
	// minDuration and maxDuration bound DurationSeconds.
	minDuration = 15 * time.Minute
	maxDuration = 12 * time.Hour
	// chainedMaxDuration bounds sessions a role session assumes.
	chainedMaxDuration = time.Hour
	// maxTags is how many session tags one call may pass.
	maxTags = 50
	// maxPolicyChars is the most characters an inline session policy may have.
	maxPolicyChars = 2048
	// packedLimitBytes is the compressed size of policy and tags the fake
	// takes as 100% of STS's (undocumented) packed limit.
	packedLimitBytes = 2048
	// awsTimeFormat is how STS writes Expiration.
	awsTimeFormat = "2006-01-02T15:04:05Z"
)

var (
	// sessionNameRE is RoleSessionName's pattern.
	sessionNameRE = regexp.MustCompile(`^[\w+=,.@-]*$`)
	// externalIDRE is ExternalId's pattern.
	externalIDRE = regexp.MustCompile(`^[\w+=,.@:/-]*$`)
	// tagRE is the pattern of tag keys and values.
	tagRE = regexp.MustCompile(`^[\p{L}\p{Z}\p{N}_.:/=+\-@]*$`)
)

// apiError is an STS error answer.
type apiError struct {
	status  int
	code    string
	message string
}

func (s *Server) serveHTTP(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(io.LimitReader(r.Body, maxBodyBytes+1))
	if err != nil {
		return // the client went away
	}
	if len(body) > maxBodyBytes {
		writeError(w, apiError{http.StatusRequestEntityTooLarge, "RequestEntityTooLarge", "Request body too large"})
		return
	}
	params, perr := requestParams(r, body)
	action := params.Get("Action")

	s.countCall(action)
	if s.injector.Intercept(w, r) {
		return
	}
	if perr != nil {
		writeError(w, *perr)
		return
	}

	c, aerr := s.authenticate(r, body)
	if aerr != nil {
		writeError(w, *aerr)
		return
	}
	if v := params.Get("Version"); v != apiVersion {
		if v == "" {
			v = "NO_VERSION_SPECIFIED"
		}
		writeError(w, apiError{http.StatusBadRequest, "InvalidAction", fmt.Sprintf("Could not find operation %s for version %s", action, v)})
		return
	}
	switch action {
	case "AssumeRole":
		s.assumeRole(w, c, params)
	case "GetCallerIdentity":
		writeXML(w, getCallerIdentityResponse{
			Result: callerIdentityResult{Arn: c.arn, UserID: c.userID, Account: c.account},
			Meta:   responseMetadata{RequestID: requestID()},
		})
	default:
		writeError(w, apiError{http.StatusBadRequest, "InvalidAction", fmt.Sprintf("Could not find operation %s for version %s", action, apiVersion)})
	}
}

// requestParams merges the query string and, for a form POST, the body.
func requestParams(r *http.Request, body []byte) (url.Values, *apiError) {
	params := r.URL.Query()
	if r.Method == http.MethodGet {
		return params, nil
	}
	if r.Method != http.MethodPost {
		return params, &apiError{http.StatusMethodNotAllowed, "InvalidAction", "Only GET and POST are supported"}
	}
	if ct, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type")); ct != "application/x-www-form-urlencoded" {
		return params, &apiError{http.StatusBadRequest, "InvalidAction", "Could not find operation for Content-Type " + r.Header.Get("Content-Type")}
	}
	form, err := url.ParseQuery(string(body))
	if err != nil {
		return params, &apiError{http.StatusBadRequest, "MalformedQueryString", "The query string is malformed: " + err.Error()}
	}
	for k, vs := range form {
		params[k] = append(params[k], vs...)
	}
	return params, nil
}

// authenticate verifies the SigV4 Authorization header against the secret of
// the access key it names, as STS does.
func (s *Server) authenticate(r *http.Request, body []byte) (caller, *apiError) {
	h := r.Header.Get("Authorization")
	if h == "" {
		return caller{}, &apiError{http.StatusForbidden, "MissingAuthenticationToken", "Request is missing Authentication Token"}
	}
	a, problem := parseAuthorization(h)
	if problem != "" {
		return caller{}, &apiError{http.StatusBadRequest, "IncompleteSignature", problem}
	}
	if a.terminator != "aws4_request" {
		return caller{}, sigMismatch("Credential should be scoped with a valid terminator: 'aws4_request', not '" + a.terminator + "'.")
	}
	if a.service != serviceName {
		return caller{}, sigMismatch("Credential should be scoped to correct service: '" + serviceName + "'. ")
	}
	if a.region != s.region {
		return caller{}, sigMismatch("Credential should be scoped to a valid region. ")
	}
	amzDate := r.Header.Get("X-Amz-Date")
	if amzDate == "" {
		return caller{}, &apiError{http.StatusBadRequest, "IncompleteSignature", "Authorization header requires existence of either a 'X-Amz-Date' or a 'Date' header."}
	}
	signedAt, err := time.Parse(amzDateFormat, amzDate)
	if err != nil {
		return caller{}, &apiError{http.StatusBadRequest, "IncompleteSignature", "Date must be in ISO-8601 'basic format'. Got '" + amzDate + "'."}
	}
	if a.scopeDate != signedAt.Format(scopeDateFormat) {
		return caller{}, sigMismatch("Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date from HTTP: '" + a.scopeDate + "' != '" + signedAt.Format(scopeDateFormat) + "', from '" + amzDate + "'.")
	}
	now := s.signingClock.Now().UTC()
	if signedAt.Before(now.Add(-maxClockSkew)) {
		return caller{}, sigMismatch(fmt.Sprintf("Signature expired: %s is now earlier than %s (%s - 5 min.)", amzDate, now.Add(-maxClockSkew).Format(amzDateFormat), now.Format(amzDateFormat)))
	}
	if signedAt.After(now.Add(maxClockSkew)) {
		return caller{}, sigMismatch(fmt.Sprintf("Signature not yet current: %s is still later than %s (%s + 5 min.)", amzDate, now.Add(maxClockSkew).Format(amzDateFormat), now.Format(amzDateFormat)))
	}
	if !contains(a.signedHeaders, "host") {
		return caller{}, sigMismatch("'Host' must be a 'SignedHeader' in the AWS Authorization.")
	}
	if !contains(a.signedHeaders, "x-amz-date") {
		return caller{}, sigMismatch("'X-Amz-Date' must be a 'SignedHeader' in the AWS Authorization.")
	}
	token := r.Header.Get("X-Amz-Security-Token")
	if token != "" && !contains(a.signedHeaders, "x-amz-security-token") {
		return caller{}, sigMismatch("'X-Amz-Security-Token' must be a 'SignedHeader' in the AWS Authorization.")
	}

	secret, wantToken, c, aerr := s.lookupKey(a.accessKeyID)
	if aerr != nil && aerr.code == "InvalidClientTokenId" && s.issuedElsewhere != nil {
		if p, ok := s.issuedElsewhere(a.accessKeyID); ok && s.AddPrincipal(p) == nil {
			secret, wantToken, c, aerr = s.lookupKey(a.accessKeyID)
		}
	}
	if aerr != nil {
		return caller{}, aerr
	}
	canonical, err := canonicalRequest(r, body, a.signedHeaders)
	if err != nil {
		return caller{}, sigMismatch("The request signature we calculated does not match the signature you provided. " + err.Error())
	}
	want := signature(secret, amzDate, a.scopeDate, a.region, a.service, canonical)
	if subtle.ConstantTimeCompare([]byte(want), []byte(strings.ToLower(a.signature))) != 1 {
		return caller{}, sigMismatch("The request signature we calculated does not match the signature you provided. Check your AWS Secret Access Key and signing method. Consult the service documentation for details.")
	}
	if subtle.ConstantTimeCompare([]byte(token), []byte(wantToken)) != 1 {
		return caller{}, &apiError{http.StatusForbidden, "InvalidClientTokenId", "The security token included in the request is invalid."}
	}
	if sess, ok := s.issuedSession(a.accessKeyID); ok && !s.clock.Now().Before(sess.Expiration) {
		return caller{}, &apiError{http.StatusBadRequest, "ExpiredToken", "The security token included in the request is expired"}
	}
	return c, nil
}

func sigMismatch(msg string) *apiError {
	return &apiError{http.StatusForbidden, "SignatureDoesNotMatch", msg}
}

// lookupKey finds the secret, expected session token and identity of an
// access key: a configured principal or an issued session.
func (s *Server) lookupKey(accessKeyID string) (secret, token string, c caller, aerr *apiError) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if p, ok := s.principals[accessKeyID]; ok {
		if !p.Expiration.IsZero() && !s.clock.Now().Before(p.Expiration) {
			return "", "", caller{}, &apiError{http.StatusBadRequest, "ExpiredToken", "The security token included in the request is expired"}
		}
		c, _ := parseCallerARN(p.ARN) // validated by AddPrincipal
		c.chain = []string{p.ARN}
		return p.SecretAccessKey, p.SessionToken, c, nil
	}
	if sess, ok := s.sessions[accessKeyID]; ok {
		_, account, _ := parseRoleARN(sess.RoleARN)
		c := caller{
			arn:      sess.AssumedRoleARN,
			trustARN: sess.RoleARN,
			account:  account,
			userID:   sess.AssumedRoleID,
			chained:  true,
			chain:    append(append([]string(nil), sess.Chain...), sess.AssumedRoleARN),
		}
		for _, k := range sess.TransitiveTagKeys {
			if c.transitive == nil {
				c.transitive = map[string]string{}
			}
			c.transitive[k] = sess.Tags[k]
		}
		return sess.secretAccessKey, sess.sessionToken, c, nil
	}
	return "", "", caller{}, &apiError{http.StatusForbidden, "InvalidClientTokenId", "The security token included in the request is invalid."}
}

func (s *Server) issuedSession(accessKeyID string) (Session, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	sess, ok := s.sessions[accessKeyID]
	if !ok {
		return Session{}, false
	}
	return *sess, true
}

// assumeRole validates the call like STS, checks trust, and issues a session.
func (s *Server) assumeRole(w http.ResponseWriter, c caller, p url.Values) {
	roleARN := p.Get("RoleArn")
	sessionName := p.Get("RoleSessionName")
	externalID, hasExternalID := p.Get("ExternalId"), p.Has("ExternalId")

	var problems []string
	switch {
	case roleARN == "":
		problems = append(problems, "Value null at 'roleArn' failed to satisfy constraint: Member must not be null")
	case len(roleARN) < 20 || len(roleARN) > 2048:
		problems = append(problems, fmt.Sprintf("Value '%s' at 'roleArn' failed to satisfy constraint: Member must have length between 20 and 2048", roleARN))
	}
	switch {
	case sessionName == "":
		problems = append(problems, "Value null at 'roleSessionName' failed to satisfy constraint: Member must not be null")
	case len(sessionName) < 2:
		problems = append(problems, fmt.Sprintf("Value '%s' at 'roleSessionName' failed to satisfy constraint: Member must have length greater than or equal to 2", sessionName))
	case len(sessionName) > 64:
		problems = append(problems, fmt.Sprintf("Value '%s' at 'roleSessionName' failed to satisfy constraint: Member must have length less than or equal to 64", sessionName))
	case !sessionNameRE.MatchString(sessionName):
		problems = append(problems, fmt.Sprintf("Value '%s' at 'roleSessionName' failed to satisfy constraint: Member must satisfy regular expression pattern: [\\w+=,.@-]*", sessionName))
	}
	if hasExternalID && (len(externalID) < 2 || len(externalID) > 1224 || !externalIDRE.MatchString(externalID)) {
		problems = append(problems, fmt.Sprintf("Value '%s' at 'externalId' failed to satisfy constraint: Member must have length between 2 and 1224 and satisfy regular expression pattern: [\\w+=,.@:\\/-]*", externalID))
	}
	duration := defaultDuration
	if v := p.Get("DurationSeconds"); v != "" {
		n, err := strconv.Atoi(v)
		switch {
		case err != nil:
			problems = append(problems, fmt.Sprintf("Value '%s' at 'durationSeconds' failed to satisfy constraint: Member must be an integer", v))
		case time.Duration(n)*time.Second < minDuration:
			problems = append(problems, fmt.Sprintf("Value '%d' at 'durationSeconds' failed to satisfy constraint: Member must have value greater than or equal to 900", n))
		case time.Duration(n)*time.Second > maxDuration:
			problems = append(problems, fmt.Sprintf("Value '%d' at 'durationSeconds' failed to satisfy constraint: Member must have value less than or equal to 43200", n))
		default:
			duration = time.Duration(n) * time.Second
		}
	}
	tags, tagProblems := parseTags(p)
	problems = append(problems, tagProblems...)
	transitive, transitiveProblems := parseTransitiveTagKeys(p, tags)
	problems = append(problems, transitiveProblems...)
	policy, hasPolicy := p.Get("Policy"), p.Has("Policy")
	if hasPolicy && (len(policy) < 1 || len(policy) > maxPolicyChars) {
		problems = append(problems, fmt.Sprintf("Value at 'policy' failed to satisfy constraint: Member must have length less than or equal to %d", maxPolicyChars))
	}
	if len(problems) > 0 {
		writeError(w, apiError{http.StatusBadRequest, "ValidationError", fmt.Sprintf("%d validation error%s detected: %s", len(problems), plural(len(problems)), strings.Join(problems, "; "))})
		return
	}

	denied := func(action string) {
		writeError(w, apiError{http.StatusForbidden, "AccessDenied", fmt.Sprintf("User: %s is not authorized to perform: %s on resource: %s", c.arn, action, roleARN)})
	}
	s.mu.Lock()
	role, ok := s.roles[roleARN]
	s.mu.Unlock()
	// STS does not reveal whether a role exists: unknown roles, untrusted
	// callers and a wrong ExternalId all read the same.
	if !ok || !trusts(role, c) {
		denied("sts:AssumeRole")
		return
	}
	if role.ExternalID != "" && subtle.ConstantTimeCompare([]byte(role.ExternalID), []byte(externalID)) != 1 {
		denied("sts:AssumeRole")
		return
	}
	if len(tags) > 0 && !role.AllowTagSession {
		denied("sts:TagSession")
		return
	}
	if duration > role.MaxSessionDuration {
		writeError(w, apiError{http.StatusBadRequest, "ValidationError", "The requested DurationSeconds exceeds the MaxSessionDuration set for this role."})
		return
	}
	if c.chained && duration > chainedMaxDuration {
		writeError(w, apiError{http.StatusBadRequest, "ValidationError", "The requested DurationSeconds exceeds the 1 hour session limit for roles assumed by role chaining."})
		return
	}
	if hasPolicy {
		if msg := checkPolicyDocument(policy); msg != "" {
			writeError(w, apiError{http.StatusBadRequest, "MalformedPolicyDocument", msg})
			return
		}
	}
	// Tags the caller's session passes on are the new session's too, and
	// stay transitive; the call may not set them again.
	for k, v := range c.transitive {
		for passed := range tags {
			if strings.EqualFold(passed, k) {
				writeError(w, apiError{http.StatusBadRequest, "InvalidParameterValue", "One or more of the specified session tag keys conflict with a transitive session tag key: " + passed})
				return
			}
		}
		if tags == nil {
			tags = map[string]string{}
		}
		tags[k] = v
		transitive = append(transitive, k)
	}
	sort.Strings(transitive)
	packed := packedPolicyPercent(policy, tags)
	if packed > 100 {
		writeError(w, apiError{http.StatusBadRequest, "PackedPolicyTooLarge", fmt.Sprintf("Packed size of consumed session policies and session tags exceeds the limit (%d%%).", packed)})
		return
	}
	askedSeconds, _ := strconv.Atoi(p.Get("DurationSeconds"))

	partition, account, name := parseRoleARNName(roleARN)
	roleID := "AROA" + stableID(roleARN)
	sess := &Session{
		AccessKeyID:       "ASIA" + randomID(16),
		RoleARN:           roleARN,
		AssumedRoleARN:    "arn:" + partition + ":sts::" + account + ":assumed-role/" + name + "/" + sessionName,
		AssumedRoleID:     roleID + ":" + sessionName,
		SessionName:       sessionName,
		ExternalID:        externalID,
		Tags:              tags,
		TransitiveTagKeys: transitive,
		Policy:            policy,
		DurationSeconds:   askedSeconds,
		SourceARN:         c.arn,
		Chain:             c.chain,
		Expiration:        s.clock.Now().UTC().Add(duration).Truncate(time.Second),
		secretAccessKey:   randomSecret(30),
		sessionToken:      "FwoGZXIvYXdzE" + randomSecret(180),
	}
	s.mu.Lock()
	sess.seq = len(s.sessions)
	s.sessions[sess.AccessKeyID] = sess
	s.mu.Unlock()

	resp := assumeRoleResponse{
		Result: assumeRoleResult{
			Credentials: credentialsXML{
				AccessKeyID:     sess.AccessKeyID,
				SecretAccessKey: sess.secretAccessKey,
				SessionToken:    sess.sessionToken,
				Expiration:      sess.Expiration.Format(awsTimeFormat),
			},
			AssumedRoleUser: assumedRoleUser{Arn: sess.AssumedRoleARN, AssumedRoleID: sess.AssumedRoleID},
		},
		Meta: responseMetadata{RequestID: requestID()},
	}
	if len(tags) > 0 || hasPolicy {
		resp.Result.PackedPolicySize = &packed
	}
	writeXML(w, resp)
}

// parseTags reads Tags.member.N.Key/Value and validates them like STS.
func parseTags(p url.Values) (map[string]string, []string) {
	var tags map[string]string
	var problems []string
	seen := map[string]bool{}
	for i := 1; ; i++ {
		prefix := "Tags.member." + strconv.Itoa(i)
		if !p.Has(prefix+".Key") && !p.Has(prefix+".Value") {
			break
		}
		k, v := p.Get(prefix+".Key"), p.Get(prefix+".Value")
		if i > maxTags {
			problems = append(problems, "Value at 'tags' failed to satisfy constraint: Member must have length less than or equal to 50")
			break
		}
		if len(k) < 1 || len(k) > 128 || !tagRE.MatchString(k) {
			problems = append(problems, fmt.Sprintf("Value '%s' at 'tags.%d.member.key' failed to satisfy constraint: Member must have length between 1 and 128 and satisfy regular expression pattern: [\\p{L}\\p{Z}\\p{N}_.:/=+\\-@]+", k, i))
			continue
		}
		if len(v) > 256 || !tagRE.MatchString(v) {
			problems = append(problems, fmt.Sprintf("Value '%s' at 'tags.%d.member.value' failed to satisfy constraint: Member must have length less than or equal to 256 and satisfy regular expression pattern: [\\p{L}\\p{Z}\\p{N}_.:/=+\\-@]*", v, i))
			continue
		}
		if seen[strings.ToLower(k)] {
			problems = append(problems, "Duplicate tag keys found. Please note that Tag keys are case insensitive.")
			continue
		}
		seen[strings.ToLower(k)] = true
		if tags == nil {
			tags = map[string]string{}
		}
		tags[k] = v
	}
	return tags, problems
}

// parseTransitiveTagKeys reads TransitiveTagKeys.member.N: each must be
// the key of a tag the call passes, as STS requires.
func parseTransitiveTagKeys(p url.Values, tags map[string]string) ([]string, []string) {
	var keys, problems []string
	for i := 1; ; i++ {
		name := "TransitiveTagKeys.member." + strconv.Itoa(i)
		if !p.Has(name) {
			break
		}
		k := p.Get(name)
		if _, ok := tags[k]; !ok {
			problems = append(problems, fmt.Sprintf("Value '%s' at 'transitiveTagKeys' failed to satisfy constraint: the key must be one of the session tags passed", k))
			continue
		}
		keys = append(keys, k)
	}
	return keys, problems
}

// checkPolicyDocument is "" when doc is a policy document IAM would parse
// (a JSON object with Version and a Statement of Effect Allow or Deny),
// else STS's MalformedPolicyDocument message.
func checkPolicyDocument(doc string) string {
	var pd struct {
		Version   string          `json:"Version"`
		Statement json.RawMessage `json:"Statement"`
	}
	if err := json.Unmarshal([]byte(doc), &pd); err != nil {
		return "Syntax errors in policy."
	}
	if pd.Version != "2012-10-17" && pd.Version != "2008-10-17" {
		return "The policy must contain a valid version string"
	}
	var statements []map[string]any
	if err := json.Unmarshal(pd.Statement, &statements); err != nil {
		var one map[string]any
		if err := json.Unmarshal(pd.Statement, &one); err != nil || one == nil {
			return "Syntax errors in policy."
		}
		statements = []map[string]any{one}
	}
	if len(statements) == 0 {
		return "Syntax errors in policy."
	}
	for _, st := range statements {
		if e, _ := st["Effect"].(string); e != "Allow" && e != "Deny" {
			return "Syntax errors in policy."
		}
	}
	return ""
}

// packedPolicyPercent is the share of the packed limit that the session
// policy and tags use, compressed as STS packs them.
func packedPolicyPercent(policy string, tags map[string]string) int {
	var b bytes.Buffer
	zw, _ := flate.NewWriter(&b, flate.BestCompression)
	_, _ = zw.Write([]byte(policy))
	keys := make([]string, 0, len(tags))
	for k := range tags {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		_, _ = zw.Write([]byte(k + "=" + tags[k] + ";"))
	}
	_ = zw.Close()
	return (b.Len()*100 + packedLimitBytes - 1) / packedLimitBytes
}

// trusts is the role's trust policy applied to a caller.
func trusts(r Role, c caller) bool {
	for _, t := range r.Trust {
		if t == "*" || t == c.arn || t == c.trustARN {
			return true
		}
		if strings.HasSuffix(t, ":root") {
			if _, account, ok := strings.Cut(strings.TrimSuffix(t, ":root"), ":iam::"); ok && account == c.account {
				return true
			}
		}
	}
	return false
}

// parseRoleARN splits arn:PARTITION:iam::ACCOUNT:role/[PATH/]NAME.
func parseRoleARN(arn string) (partition, account string, ok bool) {
	partition, account, name := parseRoleARNName(arn)
	return partition, account, name != ""
}

func parseRoleARNName(arn string) (partition, account, name string) {
	parts := strings.SplitN(arn, ":", 6)
	if len(parts) != 6 || parts[0] != "arn" || parts[1] == "" || parts[2] != "iam" || parts[3] != "" || len(parts[4]) != 12 || !strings.HasPrefix(parts[5], "role/") {
		return "", "", ""
	}
	res := strings.TrimPrefix(parts[5], "role/")
	name = res[strings.LastIndex(res, "/")+1:]
	return parts[1], parts[4], name
}

// stableID is a deterministic 17-character ID (as in AROA...) for a name.
func stableID(s string) string {
	sum := sha256.Sum256([]byte(s))
	return base32.StdEncoding.EncodeToString(sum[:])[:17]
}

// randomID is n random upper-case base32 characters.
func randomID(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return base32.StdEncoding.EncodeToString(b)[:n]
}

// randomSecret is random bytes in base64, as secrets and tokens look.
func randomSecret(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return base64.StdEncoding.EncodeToString(b)
}

func requestID() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	h := hex.EncodeToString(b)
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:32]
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

func plural(n int) string {
	if n == 1 {
		return ""
	}
	return "s"
}

type errorResponse struct {
	XMLName xml.Name  `xml:"ErrorResponse"`
	Xmlns   string    `xml:"xmlns,attr"`
	Error   errorBody `xml:"Error"`
	// RequestID is at the top level in STS error answers.
	RequestID string `xml:"RequestId"`
}

type errorBody struct {
	Type    string `xml:"Type"`
	Code    string `xml:"Code"`
	Message string `xml:"Message"`
}

type responseMetadata struct {
	RequestID string `xml:"RequestId"`
}

type assumeRoleResponse struct {
	XMLName xml.Name         `xml:"AssumeRoleResponse"`
	Xmlns   string           `xml:"xmlns,attr"`
	Result  assumeRoleResult `xml:"AssumeRoleResult"`
	Meta    responseMetadata `xml:"ResponseMetadata"`
}

type assumeRoleResult struct {
	AssumedRoleUser  assumedRoleUser `xml:"AssumedRoleUser"`
	Credentials      credentialsXML  `xml:"Credentials"`
	PackedPolicySize *int            `xml:"PackedPolicySize,omitempty"`
}

type assumedRoleUser struct {
	Arn           string `xml:"Arn"`
	AssumedRoleID string `xml:"AssumedRoleId"`
}

type credentialsXML struct {
	AccessKeyID     string `xml:"AccessKeyId"`
	SecretAccessKey string `xml:"SecretAccessKey"`
	SessionToken    string `xml:"SessionToken"`
	Expiration      string `xml:"Expiration"`
}

type getCallerIdentityResponse struct {
	XMLName xml.Name             `xml:"GetCallerIdentityResponse"`
	Xmlns   string               `xml:"xmlns,attr"`
	Result  callerIdentityResult `xml:"GetCallerIdentityResult"`
	Meta    responseMetadata     `xml:"ResponseMetadata"`
}

type callerIdentityResult struct {
	Arn     string `xml:"Arn"`
	UserID  string `xml:"UserId"`
	Account string `xml:"Account"`
}

func writeError(w http.ResponseWriter, e apiError) {
	typ := "Sender"
	if e.status >= 500 {
		typ = "Receiver"
	}
	b, _ := xml.Marshal(errorResponse{Xmlns: xmlNamespace, Error: errorBody{Type: typ, Code: e.code, Message: e.message}, RequestID: requestID()})
	w.Header().Set("Content-Type", "text/xml")
	w.WriteHeader(e.status)
	_, _ = w.Write(b)
}

func writeXML(w http.ResponseWriter, v any) {
	switch r := v.(type) {
	case assumeRoleResponse:
		r.Xmlns = xmlNamespace
		v = r
	case getCallerIdentityResponse:
		r.Xmlns = xmlNamespace
		v = r
	}
	b, err := xml.Marshal(v)
	if err != nil {
		writeError(w, apiError{http.StatusInternalServerError, "InternalFailure", err.Error()})
		return
	}
	w.Header().Set("Content-Type", "text/xml")
	_, _ = w.Write(b)
}
