package rolesanywhere

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/sirupsen/logrus"
	"k8s.io/utils/clock"

	"github.com/kube2ra/kube2ra/credentials"
	"github.com/kube2ra/kube2ra/trustroots"
)

const (
	// SourceName is the Source's Name and the Source field of its errors.
	SourceName = "rolesanywhere"
	// sessionsPath is the CreateSession resource.
	sessionsPath = "/sessions"
	// DefaultAttemptTimeout bounds one HTTP attempt (connect to last byte).
	DefaultAttemptTimeout = 10 * time.Second
	// maxResponseBytes bounds what is read from the service.
	maxResponseBytes = 1 << 20
	// headerErrorType carries the error code in AWS REST-JSON errors.
	headerErrorType = "X-Amzn-ErrorType"
	// headerRequestID carries AWS's request id, useful in logs.
	headerRequestID = "X-Amzn-Requestid"
)

// RetryPolicy bounds the retries of CreateSession on throttling, 5xx and
// network errors. Every attempt is signed anew.
type RetryPolicy struct {
	// MaxAttempts is the total number of attempts; 3 when zero.
	MaxAttempts int
	// BaseDelay is the first backoff ceiling, doubled per retry; 100ms when zero.
	BaseDelay time.Duration
	// MaxDelay caps the backoff ceiling; 2s when zero.
	MaxDelay time.Duration
}

// withDefaults fills the zero fields.
func (p RetryPolicy) withDefaults() RetryPolicy {
	if p.MaxAttempts <= 0 {
		p.MaxAttempts = 3
	}
	if p.BaseDelay <= 0 {
		p.BaseDelay = 100 * time.Millisecond
	}
	if p.MaxDelay <= 0 {
		p.MaxDelay = 2 * time.Second
	}
	return p
}

// backoff is the full-jitter delay before retry number n (1-based).
func (p RetryPolicy) backoff(n int) time.Duration {
	ceiling := p.BaseDelay << min(n-1, 20)
	if ceiling > p.MaxDelay || ceiling <= 0 {
		ceiling = p.MaxDelay
	}
	return rand.N(ceiling) + 1
}

// CreateSessionInput is one CreateSession call.
type CreateSessionInput struct {
	// TrustAnchorARN names the trust anchor (query parameter).
	TrustAnchorARN string
	// ProfileARN names the profile (query parameter).
	ProfileARN string
	// RoleARN is the role to assume (query parameter).
	RoleARN string
	// DurationSeconds is the session length, 900..43200.
	DurationSeconds int
	// RoleSessionName is sent only when not empty.
	RoleSessionName string
}

// ClientOptions configures a Client.
type ClientOptions struct {
	// Endpoint is the service base URL, e.g. https://rolesanywhere.eu-central-1.amazonaws.com.
	Endpoint string
	// Region is the signing region (the trust anchor's).
	Region string
	// HTTPClient sends the requests; a client with sane timeouts when nil.
	HTTPClient *http.Client
	// AttemptTimeout bounds each attempt; DefaultAttemptTimeout when zero.
	AttemptTimeout time.Duration
	// Retry bounds the retries.
	Retry RetryPolicy
	// Clock is the signing and backoff time source; the real clock when nil.
	Clock clock.Clock
	// Logger receives one debug line per attempt; discarded when nil.
	Logger logrus.FieldLogger
}

// Client calls Roles Anywhere CreateSession, which aws-sdk-go-v2 has no
// client for, signing with the key pair current at each attempt.
type Client struct {
	// endpoint is the parsed base URL.
	endpoint *url.URL
	// region is the signing region.
	region string
	// keys supplies the pair for each signature.
	keys KeyPairProvider
	// http sends requests.
	http *http.Client
	// attemptTimeout bounds one attempt.
	attemptTimeout time.Duration
	// retry bounds retries.
	retry RetryPolicy
	// clock is the time source.
	clock clock.Clock
	// logger receives attempt logs.
	logger logrus.FieldLogger
}

// NewClient checks the options and builds a Client.
func NewClient(keys KeyPairProvider, opts ClientOptions) (*Client, error) {
	u, err := url.Parse(opts.Endpoint)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return nil, fmt.Errorf("the Roles Anywhere endpoint %q is not an http(s) URL; set --ra-endpoint like https://rolesanywhere.eu-central-1.amazonaws.com", opts.Endpoint)
	}
	if opts.Region == "" {
		return nil, errors.New("no signing region for Roles Anywhere; it comes from the trust anchor ARN")
	}
	if opts.HTTPClient == nil {
		// The default client verifies the endpoint with the system's CAs.
		if err := trustroots.Check("the Roles Anywhere endpoint (--ra-endpoint, else the trust anchor's region)", opts.Endpoint); err != nil {
			return nil, err
		}
		opts.HTTPClient = NewHTTPClient()
	}
	if opts.AttemptTimeout <= 0 {
		opts.AttemptTimeout = DefaultAttemptTimeout
	}
	if opts.Clock == nil {
		opts.Clock = clock.RealClock{}
	}
	if opts.Logger == nil {
		opts.Logger = discardLogger()
	}
	u.Path = strings.TrimRight(u.Path, "/")
	return &Client{
		endpoint:       u,
		region:         opts.Region,
		keys:           keys,
		http:           opts.HTTPClient,
		attemptTimeout: opts.AttemptTimeout,
		retry:          opts.Retry.withDefaults(),
		clock:          opts.Clock,
		logger:         opts.Logger.WithField("component", "rolesanywhere-client"),
	}, nil
}

// NewHTTPClient is an HTTP client with connection timeouts suited to an
// AWS API endpoint and the proxy taken from the environment.
func NewHTTPClient() *http.Client {
	return &http.Client{
		Transport: &http.Transport{
			Proxy:                 http.ProxyFromEnvironment,
			DialContext:           (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
			TLSHandshakeTimeout:   5 * time.Second,
			ResponseHeaderTimeout: 10 * time.Second,
			IdleConnTimeout:       90 * time.Second,
			MaxIdleConnsPerHost:   4,
			ForceAttemptHTTP2:     true,
		},
		// CreateSession never redirects; following one would re-send a
		// signed request somewhere else.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

// createSessionBody is the JSON body of CreateSession.
type createSessionBody struct {
	DurationSeconds int    `json:"durationSeconds"`
	RoleSessionName string `json:"roleSessionName,omitempty"`
}

// createSessionOutput is the 201 response of CreateSession.
type createSessionOutput struct {
	CredentialSet []struct {
		AssumedRoleUser struct {
			Arn           string `json:"arn"`
			AssumedRoleID string `json:"assumedRoleId"`
		} `json:"assumedRoleUser"`
		Credentials struct {
			AccessKeyID     string `json:"accessKeyId"`
			SecretAccessKey string `json:"secretAccessKey"`
			SessionToken    string `json:"sessionToken"`
			Expiration      string `json:"expiration"`
		} `json:"credentials"`
		RoleArn string `json:"roleArn"`
	} `json:"credentialSet"`
	SubjectArn string `json:"subjectArn"`
}

// CreateSession asks Roles Anywhere for credentials, retrying throttling,
// 5xx and network failures within the RetryPolicy. Failures are
// *credentials.Error with the service's code and message.
func (c *Client) CreateSession(ctx context.Context, in CreateSessionInput) (credentials.Credentials, error) {
	body, err := json.Marshal(createSessionBody{DurationSeconds: in.DurationSeconds, RoleSessionName: in.RoleSessionName})
	if err != nil {
		return credentials.Credentials{}, c.fail(in, credentials.KindInvalid, "", "", err)
	}
	q := url.Values{}
	q.Set("profileArn", in.ProfileARN)
	q.Set("roleArn", in.RoleARN)
	q.Set("trustAnchorArn", in.TrustAnchorARN)
	target := *c.endpoint
	target.Path += sessionsPath
	target.RawQuery = strings.ReplaceAll(q.Encode(), "+", "%20")

	var lastErr error
	for attempt := 1; attempt <= c.retry.MaxAttempts; attempt++ {
		if attempt > 1 {
			delay := c.retry.backoff(attempt - 1)
			select {
			case <-ctx.Done():
				return credentials.Credentials{}, c.fail(in, credentials.KindUnavailable, "", "", fmt.Errorf("giving up after %d attempts: %w (last error: %v)", attempt-1, ctx.Err(), lastErr))
			case <-c.clock.After(delay):
			}
		}
		creds, err := c.attempt(ctx, target.String(), body, in, attempt)
		if err == nil {
			return creds, nil
		}
		lastErr = err
		if ctx.Err() != nil {
			return credentials.Credentials{}, err
		}
		switch credentials.KindOf(err) {
		case credentials.KindThrottled, credentials.KindUnavailable:
			continue
		default:
			return credentials.Credentials{}, err
		}
	}
	return credentials.Credentials{}, lastErr
}

// attempt signs and sends one request.
func (c *Client) attempt(ctx context.Context, target string, body []byte, in CreateSessionInput, n int) (credentials.Credentials, error) {
	ctx, cancel := context.WithTimeout(ctx, c.attemptTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, target, bytes.NewReader(body))
	if err != nil {
		return credentials.Credentials{}, c.fail(in, credentials.KindInvalid, "", "", err)
	}
	req.Header.Set("Content-Type", "application/json")
	pair := c.keys.Current()
	if err := SignRequest(req, body, pair, c.region, c.clock.Now()); err != nil {
		return credentials.Credentials{}, c.fail(in, credentials.KindInvalid, "", "", err)
	}
	start := c.clock.Now()
	log := c.logger.WithFields(logrus.Fields{"role": in.RoleARN, "attempt": n, "serial": pair.Serial()})
	resp, err := c.http.Do(req)
	if err != nil {
		log.WithError(err).Debug("CreateSession request failed")
		return credentials.Credentials{}, c.fail(in, credentials.KindUnavailable, "", "", fmt.Errorf("calling %s failed: %w", c.endpoint.Redacted(), err))
	}
	defer func() { _ = resp.Body.Close() }()
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxResponseBytes))
	log = log.WithFields(logrus.Fields{"status": resp.StatusCode, "requestId": resp.Header.Get(headerRequestID), "duration": c.clock.Since(start).String()})
	if err != nil {
		log.WithError(err).Debug("CreateSession response could not be read")
		return credentials.Credentials{}, c.fail(in, credentials.KindUnavailable, "", "", fmt.Errorf("reading the response from %s failed: %w", c.endpoint.Redacted(), err))
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		e := c.apiError(in, resp, data)
		log.WithField("code", e.Code).Debug("CreateSession refused")
		return credentials.Credentials{}, e
	}
	var out createSessionOutput
	if err := json.Unmarshal(data, &out); err != nil {
		return credentials.Credentials{}, c.fail(in, credentials.KindUnavailable, "", "", fmt.Errorf("CreateSession answered %d with a body that is not JSON: %w", resp.StatusCode, err))
	}
	if len(out.CredentialSet) == 0 {
		return credentials.Credentials{}, c.fail(in, credentials.KindUnavailable, "", "", fmt.Errorf("CreateSession answered %d without credentials", resp.StatusCode))
	}
	cs := out.CredentialSet[0].Credentials
	if cs.AccessKeyID == "" || cs.SecretAccessKey == "" || cs.SessionToken == "" {
		return credentials.Credentials{}, c.fail(in, credentials.KindUnavailable, "", "", errors.New("CreateSession answered with incomplete credentials"))
	}
	exp, err := time.Parse(time.RFC3339Nano, cs.Expiration)
	if err != nil {
		return credentials.Credentials{}, c.fail(in, credentials.KindUnavailable, "", "", fmt.Errorf("CreateSession answered with expiration %q, which is not an RFC 3339 time: %w", cs.Expiration, err))
	}
	log.WithField("accessKeyId", cs.AccessKeyID).Debug("CreateSession succeeded")
	return credentials.Credentials{
		AccessKeyID:     cs.AccessKeyID,
		SecretAccessKey: cs.SecretAccessKey,
		SessionToken:    cs.SessionToken,
		Expiration:      exp.UTC(),
		LastUpdated:     c.clock.Now().UTC(),
	}, nil
}

// fail builds a *credentials.Error for in.
func (c *Client) fail(in CreateSessionInput, kind credentials.ErrorKind, code, msg string, err error) *credentials.Error {
	return &credentials.Error{Kind: kind, Source: SourceName, RoleARN: in.RoleARN, Code: code, Message: msg, Err: err}
}

// apiError decodes an AWS REST-JSON error: the code from X-Amzn-ErrorType,
// else from the body's __type or code; the message from message/Message.
func (c *Client) apiError(in CreateSessionInput, resp *http.Response, data []byte) *credentials.Error {
	var body struct {
		Type     string `json:"__type"`
		Code     string `json:"code"`
		Message  string `json:"message"`
		MessageU string `json:"Message"`
	}
	_ = json.Unmarshal(data, &body)
	code := sanitizeErrorCode(resp.Header.Get(headerErrorType))
	if code == "" {
		code = sanitizeErrorCode(body.Type)
	}
	if code == "" {
		code = sanitizeErrorCode(body.Code)
	}
	msg := body.Message
	if msg == "" {
		msg = body.MessageU
	}
	var err error
	if msg == "" && code == "" {
		err = fmt.Errorf("HTTP %d from %s", resp.StatusCode, c.endpoint.Redacted())
	}
	return c.fail(in, classify(code, resp.StatusCode), code, msg, err)
}

// sanitizeErrorCode strips the namespace ("aws.protocols#X") and the
// ":http://..." suffix AWS sometimes puts around an error code.
func sanitizeErrorCode(code string) string {
	code, _, _ = strings.Cut(code, ":")
	if i := strings.LastIndexByte(code, '#'); i >= 0 {
		code = code[i+1:]
	}
	return strings.TrimSpace(code)
}

// classify maps an AWS error code and HTTP status to an ErrorKind.
func classify(code string, status int) credentials.ErrorKind {
	switch code {
	case "AccessDeniedException", "AccessDenied", "UnauthorizedException", "UnrecognizedClientException", "InvalidSignatureException", "ExpiredTokenException":
		return credentials.KindDenied
	case "ValidationException", "ResourceNotFoundException", "InvalidParameterException", "BadRequestException", "SerializationException":
		return credentials.KindInvalid
	case "ThrottlingException", "Throttling", "TooManyRequestsException", "RequestLimitExceeded", "SlowDown":
		return credentials.KindThrottled
	}
	switch {
	case status == http.StatusTooManyRequests:
		return credentials.KindThrottled
	case status >= 500:
		return credentials.KindUnavailable
	case status == http.StatusUnauthorized || status == http.StatusForbidden:
		return credentials.KindDenied
	default:
		return credentials.KindInvalid
	}
}

// discardLogger is a logger that writes nothing.
func discardLogger() logrus.FieldLogger {
	l := logrus.New()
	l.SetOutput(io.Discard)
	return l
}
