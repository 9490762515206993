package credentials

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/ratelimit"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/service/sts"
	ststypes "github.com/aws/aws-sdk-go-v2/service/sts/types"
	"github.com/aws/smithy-go"
	smithyhttp "github.com/aws/smithy-go/transport/http"
	"github.com/sirupsen/logrus"
	"k8s.io/utils/clock"

	"github.com/kube2ra/kube2ra/awsconfig"
)

const (
	// STSSourceName is the STS source's Name, used in metrics and cache keys.
	STSSourceName = "sts"
	// DefaultSessionDuration is DurationSeconds when STSOptions.Duration is 0;
	// also the most STS grants when the base credentials are a role session
	// (role chaining), as on EC2.
	DefaultSessionDuration = time.Hour
	// ChainedMaxSessionDuration is the most AWS grants a session assumed
	// with another role session's credentials (role chaining).
	ChainedMaxSessionDuration = time.Hour
	// MinSessionDuration and MaxSessionDuration bound DurationSeconds.
	MinSessionDuration = 15 * time.Minute
	MaxSessionDuration = 12 * time.Hour
	// defaultSTSMaxAttempts: one retry for connection errors and 5xx; the
	// cache does the rest with backoff.
	defaultSTSMaxAttempts = 2
	// sdkRetryDelayMax bounds the SDK's delay before its one retry, short
	// because a pod's SDK waits at most about a second.
	sdkRetryDelayMax = 100 * time.Millisecond
)

// STSOptions configure the STS source. cmd/kube2ra fills them from flags.
type STSOptions struct {
	// Region is the region whose regional endpoint is used (--region); empty
	// takes the default chain's (AWS_REGION, shared config).
	Region string
	// Endpoint overrides the endpoint URL (--sts-endpoint); empty leaves the
	// SDK's choice: AWS_ENDPOINT_URL_STS, AWS_ENDPOINT_URL, shared config, or
	// https://sts.{region}.amazonaws.com.
	Endpoint string
	// BaseCredentials sign AssumeRole; nil takes the SDK's default chain (on
	// EC2 the node's instance profile through IMDS).
	BaseCredentials aws.CredentialsProvider
	// Duration is DurationSeconds of each session (--iam-role-session-ttl);
	// 0 means DefaultSessionDuration.
	Duration time.Duration
	// MaxAttempts bounds the SDK's attempts per Fetch; 0 means 2. Throttling
	// is never retried by the SDK: the cache backs off instead.
	MaxAttempts int
	// HTTPClient sends the requests; nil takes the SDK's default client
	// (which honours AWS_CA_BUNDLE; a client given here must bring its own CAs).
	HTTPClient *http.Client
	// Clock stamps LastUpdated; the real clock if nil.
	Clock clock.PassiveClock
	// Logger receives debug lines about calls; never secrets.
	Logger logrus.FieldLogger
}

// STSSource fetches credentials with sts:AssumeRole.
type STSSource struct {
	// client is the SDK's STS client, configured once.
	client *sts.Client
	// duration is DurationSeconds of every session.
	duration time.Duration
	// clock stamps LastUpdated.
	clock clock.PassiveClock
	// log receives debug lines.
	log logrus.FieldLogger
	// oneHour holds the roles that refused duration as over their
	// MaxSessionDuration (IAM's default is 1 hour) or over role chaining's
	// hour: they are asked for 1 hour, which every role grants.
	oneHour sync.Map
}

var _ Source = (*STSSource)(nil)

// durationOverRoleMax is how STS starts the refusal of a DurationSeconds
// over the role's MaxSessionDuration, or over the 1 hour of role chaining
// (code ValidationError).
const durationOverRoleMax = "DurationSeconds exceeds the"

// NewSTSSource loads the SDK configuration (default chain unless
// BaseCredentials is given) and builds the STS client. It makes no call.
func NewSTSSource(ctx context.Context, opts STSOptions) (*STSSource, error) {
	duration := opts.Duration
	if duration == 0 {
		duration = DefaultSessionDuration
	}
	if duration < MinSessionDuration || duration > MaxSessionDuration || duration%time.Second != 0 {
		return nil, fmt.Errorf("sts: session duration %s is outside %s..%s in whole seconds; set --iam-role-session-ttl within that range", duration, MinSessionDuration, MaxSessionDuration)
	}
	maxAttempts := opts.MaxAttempts
	if maxAttempts == 0 {
		maxAttempts = defaultSTSMaxAttempts
	}
	log := opts.Logger
	if log == nil {
		l := logrus.New()
		l.Out = discard{}
		log = l
	}
	cfg, err := awsconfig.Load(ctx, awsconfig.Options{Region: opts.Region, Credentials: opts.BaseCredentials, Logger: SDKLogger(log)})
	if err != nil {
		return nil, fmt.Errorf("sts: loading the AWS SDK configuration (environment, shared config files) failed: %w; fix the AWS_* environment or ~/.aws files", err)
	}
	if cfg.Region == "" {
		return nil, errors.New("sts: no region configured; set --region or AWS_REGION so the regional STS endpoint can be used")
	}
	client := sts.NewFromConfig(cfg, func(o *sts.Options) {
		if opts.Endpoint != "" {
			o.BaseEndpoint = aws.String(opts.Endpoint)
		}
		if opts.HTTPClient != nil {
			o.HTTPClient = opts.HTTPClient
		}
		o.Retryer = retry.NewStandard(func(so *retry.StandardOptions) {
			so.MaxAttempts = maxAttempts
			so.RateLimiter = ratelimit.None
			so.Backoff = retry.BackoffDelayerFunc(func(int, error) (time.Duration, error) {
				return rand.N(sdkRetryDelayMax), nil
			})
			// The default list without the throttle codes.
			so.Retryables = []retry.IsErrorRetryable{
				retry.NoRetryCanceledError{},
				retry.RetryableError{},
				retry.RetryableConnectionError{},
				retry.RetryableHTTPStatusCode{Codes: retry.DefaultRetryableHTTPStatusCodes},
				retry.RetryableErrorCode{Codes: retry.DefaultRetryableErrorCodes},
			}
		})
	})
	if opts.HTTPClient == nil {
		// The region's endpoint (HTTPS in every partition), unless
		// --sts-endpoint, AWS_ENDPOINT_URL(_STS) or the profile names
		// another, which the client has resolved.
		endpoint := "https://sts." + cfg.Region + ".amazonaws.com"
		if ep, err := sts.NewDefaultEndpointResolverV2().ResolveEndpoint(ctx, sts.EndpointParameters{Region: aws.String(cfg.Region)}); err == nil {
			endpoint = ep.URI.String()
		}
		if base := client.Options().BaseEndpoint; base != nil && *base != "" {
			endpoint = *base
		}
		if err := awsconfig.CheckTrust(cfg, "the STS endpoint (--sts-endpoint, else the region's)", endpoint); err != nil {
			return nil, fmt.Errorf("sts: %w", err)
		}
	}
	clk := opts.Clock
	if clk == nil {
		clk = clock.RealClock{}
	}
	return &STSSource{client: client, duration: duration, clock: clk, log: log.WithField("source", STSSourceName)}, nil
}

// Name is "sts".
func (s *STSSource) Name() string { return STSSourceName }

// Fetch calls sts:AssumeRole for req with the base credentials. A request
// with a target role is ChainSource's: the STS source alone refuses it.
func (s *STSSource) Fetch(ctx context.Context, req Request) (Credentials, error) {
	if req.Chained() {
		return Credentials{}, &Error{Kind: KindInvalid, Source: STSSourceName, RoleARN: req.RoleARN, Message: "a request with a target role needs the chain source (NewChainSource)"}
	}
	return s.assume(ctx, assumeInput{roleARN: req.RoleARN, externalID: req.ExternalID, sessionName: req.SessionName,
		tags: req.Tags, transitive: req.TransitiveTags, policy: req.Policy, duration: s.duration})
}

// AssumeTarget is the target hop of a chained request: sts:AssumeRole of
// req.TargetRoleARN signed with first, the first role's credentials, for
// at most ChainedMaxSessionDuration (AWS's cap for role chaining), with
// the request's tags and policy.
func (s *STSSource) AssumeTarget(ctx context.Context, req Request, first Credentials) (Credentials, error) {
	base := aws.Credentials{AccessKeyID: first.AccessKeyID, SecretAccessKey: first.SecretAccessKey, SessionToken: first.SessionToken, CanExpire: true, Expires: first.Expiration}
	return s.assume(ctx, assumeInput{roleARN: req.TargetRoleARN, externalID: req.TargetExternalID, sessionName: req.TargetSessionName,
		tags: req.Tags, transitive: req.TransitiveTags, policy: req.Policy, duration: min(s.duration, ChainedMaxSessionDuration), hop: HopTarget},
		func(o *sts.Options) { o.Credentials = staticProvider{base} })
}

// staticProvider hands out one set of credentials (a first hop's).
type staticProvider struct{ creds aws.Credentials }

func (p staticProvider) Retrieve(context.Context) (aws.Credentials, error) { return p.creds, nil }

// assumeInput is one sts:AssumeRole call.
type assumeInput struct {
	// roleARN, externalID and sessionName are the call's.
	roleARN, externalID, sessionName string
	// tags are the session tags; transitive makes all of them transitive.
	tags       []Tag
	transitive bool
	// policy is the inline session policy, "" for none.
	policy string
	// duration is DurationSeconds.
	duration time.Duration
	// hop is set for a chained request's target hop.
	hop Hop
}

// assume makes one sts:AssumeRole call.
func (s *STSSource) assume(ctx context.Context, a assumeInput, optFns ...func(*sts.Options)) (Credentials, error) {
	if a.sessionName == "" {
		return Credentials{}, &Error{Kind: KindInvalid, Source: STSSourceName, RoleARN: a.roleARN, Hop: a.hop, Message: "a role session name is required by sts:AssumeRole; derive one with SessionName(namespace, pod)"}
	}
	if _, capped := s.oneHour.Load(a.roleARN); capped {
		a.duration = min(a.duration, time.Hour)
	}
	in := &sts.AssumeRoleInput{
		RoleArn:         aws.String(a.roleARN),
		RoleSessionName: aws.String(a.sessionName),
		DurationSeconds: aws.Int32(int32(a.duration / time.Second)),
	}
	if a.externalID != "" {
		in.ExternalId = aws.String(a.externalID)
	}
	if a.policy != "" {
		in.Policy = aws.String(a.policy)
	}
	for _, t := range a.tags {
		in.Tags = append(in.Tags, ststypes.Tag{Key: aws.String(t.Key), Value: aws.String(t.Value)})
		if a.transitive {
			in.TransitiveTagKeys = append(in.TransitiveTagKeys, t.Key)
		}
	}
	out, err := s.client.AssumeRole(ctx, in, optFns...)
	if err != nil && a.duration > time.Hour {
		if e := stsError(a.roleARN, err); e.Kind == KindInvalid && strings.Contains(e.Message, durationOverRoleMax) {
			// The role allows less than --iam-role-session-ttl: 1 hour
			// from now on, which is every role's minimum maximum.
			if _, known := s.oneHour.LoadOrStore(a.roleARN, true); !known {
				s.log.WithFields(logrus.Fields{"role": a.roleARN, "requested": a.duration}).
					Warn("the role's MaxSessionDuration is shorter than --iam-role-session-ttl: its sessions are asked for 1h; raise the role's maximum session duration in IAM to get longer ones")
			}
			in.DurationSeconds = aws.Int32(int32(time.Hour / time.Second))
			out, err = s.client.AssumeRole(ctx, in, optFns...)
		}
	}
	if err != nil {
		e := stsError(a.roleARN, err)
		e.Hop = a.hop
		s.log.WithFields(logrus.Fields{"role": a.roleARN, "session": a.sessionName, "hop": a.hop, "kind": e.Kind.String(), "code": e.Code}).Debug("sts:AssumeRole failed")
		return Credentials{}, e
	}
	c := out.Credentials
	if c == nil || c.AccessKeyId == nil || c.SecretAccessKey == nil || c.SessionToken == nil || c.Expiration == nil {
		return Credentials{}, &Error{Kind: KindUnavailable, Source: STSSourceName, RoleARN: a.roleARN, Hop: a.hop, Message: "sts:AssumeRole answered without complete credentials"}
	}
	creds := Credentials{
		AccessKeyID:     *c.AccessKeyId,
		SecretAccessKey: *c.SecretAccessKey,
		SessionToken:    *c.SessionToken,
		Expiration:      c.Expiration.UTC(),
		LastUpdated:     s.clock.Now().UTC(),
	}
	s.log.WithFields(logrus.Fields{"role": a.roleARN, "session": a.sessionName, "hop": a.hop, "accessKeyID": creds.AccessKeyID, "expiration": creds.Expiration}).Debug("sts:AssumeRole succeeded")
	return creds, nil
}

// stsErrorKinds classifies the error codes STS (and the AWS front end)
// answer. Codes not listed are classified by HTTP status.
var stsErrorKinds = map[string]ErrorKind{
	"AccessDenied":                KindDenied,
	"AccessDeniedException":       KindDenied,
	"InvalidClientTokenId":        KindDenied,
	"SignatureDoesNotMatch":       KindDenied,
	"MissingAuthenticationToken":  KindDenied,
	"IncompleteSignature":         KindDenied,
	"UnrecognizedClientException": KindDenied,
	"Throttling":                  KindThrottled,
	"ThrottlingException":         KindThrottled,
	"RequestLimitExceeded":        KindThrottled,
	"TooManyRequestsException":    KindThrottled,
	"RequestThrottled":            KindThrottled,
	"SlowDown":                    KindThrottled,
	"ValidationError":             KindInvalid,
	"ValidationException":         KindInvalid,
	"MalformedPolicyDocument":     KindInvalid,
	"PackedPolicyTooLarge":        KindInvalid,
	"InvalidParameterValue":       KindInvalid,
	"InvalidParameterCombination": KindInvalid,
	"MissingParameter":            KindInvalid,
	"InvalidAction":               KindInvalid,
	"RegionDisabledException":     KindInvalid,
	// The base credentials expired: they are refreshed from their own
	// source, so a later call can succeed.
	"ExpiredToken":          KindUnavailable,
	"ExpiredTokenException": KindUnavailable,
	"InternalFailure":       KindUnavailable,
	"InternalError":         KindUnavailable,
	"ServiceUnavailable":    KindUnavailable,
}

// stsError maps an SDK error to *Error, keeping the service's code and
// message; the SDK's error stays reachable through Unwrap.
func stsError(roleARN string, err error) *Error {
	e := &Error{Kind: KindUnavailable, Source: STSSourceName, RoleARN: roleARN, Err: err}
	status := 0
	var re *awshttp.ResponseError
	if errors.As(err, &re) {
		status = re.HTTPStatusCode()
	}
	var apiErr smithy.APIError
	if errors.As(err, &apiErr) {
		e.Code, e.Message = apiErr.ErrorCode(), apiErr.ErrorMessage()
		// The SDK's own text repeats code and message: show only what it adds.
		summary := fmt.Sprintf("HTTP %d", status)
		if re != nil && re.ServiceRequestID() != "" {
			summary += ", request ID " + re.ServiceRequestID()
		}
		e.Err = &sdkCause{summary: summary, err: err}
		if kind, ok := stsErrorKinds[e.Code]; ok {
			e.Kind = kind
			return e
		}
	}
	var (
		malformed *ststypes.MalformedPolicyDocumentException
		tooLarge  *ststypes.PackedPolicyTooLargeException
		disabled  *ststypes.RegionDisabledException
	)
	switch {
	case errors.As(err, &malformed), errors.As(err, &tooLarge), errors.As(err, &disabled):
		e.Kind = KindInvalid
	case status == http.StatusTooManyRequests:
		e.Kind = KindThrottled
	case status == http.StatusForbidden || status == http.StatusUnauthorized:
		e.Kind = KindDenied
	case status >= 400 && status < 500:
		e.Kind = KindInvalid
	default:
		// 5xx, connection errors, timeouts, missing base credentials.
		e.Kind = KindUnavailable
		var sendErr *smithyhttp.RequestSendError
		if apiErr == nil && errors.As(err, &sendErr) {
			e.Message = "STS did not answer; check the network path to the STS endpoint (--sts-endpoint, --region)"
		}
	}
	return e
}

// sdkCause shortens the SDK's error text but keeps it for errors.As.
type sdkCause struct {
	// summary is what Error shows.
	summary string
	// err is the SDK's error.
	err error
}

func (c *sdkCause) Error() string { return c.summary }
func (c *sdkCause) Unwrap() error { return c.err }

// discard is an io.Writer that drops everything, for the default logger.
type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }
