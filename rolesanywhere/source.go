// Package rolesanywhere gets credentials from IAM Roles Anywhere: the
// SigV4-X509 request signer, the CreateSession client, the node's
// certificate and key with hot reload, and the credentials.Source that ties
// them together.
package rolesanywhere

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/sirupsen/logrus"
	"k8s.io/utils/clock"

	"github.com/kube2ra/kube2ra/arn"
	"github.com/kube2ra/kube2ra/credentials"
)

const (
	// MinSessionDuration is the shortest session CreateSession grants.
	MinSessionDuration = 900 * time.Second
	// MaxSessionDuration is the longest session CreateSession grants.
	MaxSessionDuration = 43200 * time.Second
	// DefaultSessionDuration is used when Config.SessionDuration is zero.
	DefaultSessionDuration = time.Hour
)

// Config is the Roles Anywhere part of the agent's configuration; plain
// values, filled by cmd/kube2ra from the --ra-* flags.
type Config struct {
	// TrustAnchorARN is --ra-trust-anchor-arn; it fixes partition, region
	// and account.
	TrustAnchorARN string
	// ProfileARN is --ra-profile-arn; same region as the trust anchor.
	ProfileARN string
	// Certificate is --ra-certificate (PEM leaf, optionally with chain).
	Certificate string
	// PrivateKey is --ra-private-key.
	PrivateKey string
	// Intermediates is --ra-intermediates (optional PEM bundle).
	Intermediates string
	// PasswordFile is --ra-private-key-password-file (encrypted PKCS#8).
	PasswordFile string
	// Endpoint is --ra-endpoint; derived from the trust anchor when empty.
	Endpoint string
	// FIPS selects the rolesanywhere-fips endpoint (--ra-fips).
	FIPS bool
	// Region overrides the trust anchor's region for endpoint and signing
	// (--region); AWS requires them to agree, so this is for tests and
	// unusual networks.
	Region string
	// SessionDuration is --ra-session-duration, 900s..43200s in whole seconds;
	// DefaultSessionDuration when zero.
	SessionDuration time.Duration
	// ReloadInterval is how often the key files are polled; DefaultReloadInterval when zero.
	ReloadInterval time.Duration
	// ExpiryWarning is how long before expiry to warn; DefaultExpiryWarning when zero.
	ExpiryWarning time.Duration
	// AttemptTimeout bounds one CreateSession attempt; DefaultAttemptTimeout when zero.
	AttemptTimeout time.Duration
}

// String shows the configuration; it holds paths, never secrets.
func (c Config) String() string {
	return fmt.Sprintf("rolesanywhere.Config{TrustAnchorARN: %s, ProfileARN: %s, Certificate: %s, PrivateKey: %s, Intermediates: %s, PasswordFile: %s, Endpoint: %s, FIPS: %t, Region: %s, SessionDuration: %s}",
		c.TrustAnchorARN, c.ProfileARN, c.Certificate, c.PrivateKey, c.Intermediates, c.PasswordFile, c.Endpoint, c.FIPS, c.Region, c.SessionDuration)
}

// Validate checks the configuration without touching files or network.
func (c Config) Validate() error {
	var errs []error
	ta, err := arn.ParseTrustAnchor(c.TrustAnchorARN)
	if err != nil {
		errs = append(errs, fmt.Errorf("--ra-trust-anchor-arn: %w", err))
	}
	p, err := arn.ParseProfile(c.ProfileARN)
	if err != nil {
		errs = append(errs, fmt.Errorf("--ra-profile-arn: %w", err))
	}
	if ta.Region != "" && p.Region != "" && (ta.Region != p.Region || ta.Partition != p.Partition) {
		errs = append(errs, fmt.Errorf("--ra-profile-arn is in %s/%s but --ra-trust-anchor-arn is in %s/%s; both must be in the same partition and region", p.Partition, p.Region, ta.Partition, ta.Region))
	}
	if c.Region != "" && ta.Region != "" && c.Region != ta.Region {
		// Trust anchors are regional: CreateSession signed for, or sent
		// to, another region finds no trust anchor, for every call.
		errs = append(errs, fmt.Errorf("--region %s is not the trust anchor's region %s: Roles Anywhere serves a trust anchor only in its own region, and pods are told this region too; leave --region empty (chart rolesAnywhere.region) or set it to %s", c.Region, ta.Region, ta.Region))
	}
	if c.Certificate == "" {
		errs = append(errs, errors.New("--ra-certificate is required with Roles Anywhere"))
	}
	if c.PrivateKey == "" {
		errs = append(errs, errors.New("--ra-private-key is required with Roles Anywhere"))
	}
	if d := c.sessionDuration(); d < MinSessionDuration || d > MaxSessionDuration || d%time.Second != 0 {
		errs = append(errs, fmt.Errorf("--ra-session-duration %s is outside 15m..12h (900..43200 whole seconds)", d))
	}
	return errors.Join(errs...)
}

// sessionDuration applies the default.
func (c Config) sessionDuration() time.Duration {
	if c.SessionDuration == 0 {
		return DefaultSessionDuration
	}
	return c.SessionDuration
}

// Deps are the Source's collaborators; nil fields get defaults.
type Deps struct {
	// Logger receives the Source's logs; discarded when nil.
	Logger logrus.FieldLogger
	// Registerer gets the certificate metrics; none when nil.
	Registerer prometheus.Registerer
	// Clock is the time source; the real clock when nil.
	Clock clock.Clock
	// HTTPClient sends CreateSession; NewHTTPClient() when nil.
	HTTPClient *http.Client
	// Retry bounds CreateSession retries.
	Retry RetryPolicy
	// OnSessionNamesRefused, when set, is called once, the first time the
	// profile refuses a custom role session name, with the profile ARN and
	// what the operator should do (the agent records a Kubernetes Event).
	OnSessionNamesRefused func(profileARN, message string)
}

// Source is the credentials.Source backed by Roles Anywhere CreateSession.
type Source struct {
	// cfg is the validated configuration.
	cfg Config
	// trustAnchor is the parsed trust anchor ARN.
	trustAnchor arn.ARN
	// region is the signing and endpoint region.
	region string
	// keys follows the certificate and key on disk.
	keys *KeyPairWatcher
	// client calls CreateSession.
	client *Client
	// clock is the time source.
	clock clock.Clock
	// logger receives the Source's logs.
	logger logrus.FieldLogger
	// names remembers whether the profile refuses custom session names.
	names *sessionNameFallback
}

var _ credentials.Source = (*Source)(nil)

// NewSource validates cfg and loads the certificate and key, refusing a bad
// pair before any network call. Call Run to follow certificate rotation.
func NewSource(cfg Config, deps Deps) (*Source, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("invalid Roles Anywhere configuration: %w", err)
	}
	if deps.Logger == nil {
		deps.Logger = discardLogger()
	}
	if deps.Clock == nil {
		deps.Clock = clock.RealClock{}
	}
	ta, _ := arn.ParseTrustAnchor(cfg.TrustAnchorARN)
	region := cfg.Region
	if region == "" {
		region = ta.Region
	}
	endpoint := cfg.Endpoint
	if endpoint == "" {
		endpoint = EndpointFor(ta.Partition, region, cfg.FIPS)
	}
	keys, err := NewKeyPairWatcher(KeyFiles{
		Certificate:   cfg.Certificate,
		PrivateKey:    cfg.PrivateKey,
		Intermediates: cfg.Intermediates,
		PasswordFile:  cfg.PasswordFile,
	}, WatcherOptions{
		Interval:      cfg.ReloadInterval,
		ExpiryWarning: cfg.ExpiryWarning,
		Logger:        deps.Logger,
		Registerer:    deps.Registerer,
		Clock:         deps.Clock,
	})
	if err != nil {
		return nil, err
	}
	client, err := NewClient(keys, ClientOptions{
		Endpoint:       endpoint,
		Region:         region,
		HTTPClient:     deps.HTTPClient,
		AttemptTimeout: cfg.AttemptTimeout,
		Retry:          deps.Retry,
		Clock:          deps.Clock,
		Logger:         deps.Logger,
	})
	if err != nil {
		return nil, err
	}
	logger := deps.Logger.WithField("component", "rolesanywhere")
	names, err := newSessionNameFallback(cfg.ProfileARN, deps, logger)
	if err != nil {
		return nil, err
	}
	return &Source{
		cfg:         cfg,
		trustAnchor: ta,
		region:      region,
		keys:        keys,
		client:      client,
		clock:       deps.Clock,
		logger:      logger,
		names:       names,
	}, nil
}

// Name is "rolesanywhere".
func (s *Source) Name() string { return SourceName }

// Run follows certificate rotation until ctx ends.
func (s *Source) Run(ctx context.Context) { s.keys.Run(ctx) }

// KeyPair is the pair the next request will be signed with.
func (s *Source) KeyPair() *KeyPair { return s.keys.Current() }

// BaseRoleARN is arn:<partition>:iam::<account>:role/ of the trust anchor,
// for turning bare role names into ARNs.
func (s *Source) BaseRoleARN() string {
	return arn.BaseFromTrustAnchor(s.trustAnchor).String()
}

// Region is the trust anchor's region (or the override).
func (s *Source) Region() string { return s.region }

// Validate re-checks the configuration and the pair in use.
func (s *Source) Validate() error {
	if err := s.cfg.Validate(); err != nil {
		return err
	}
	return s.Ready()
}

// Ready reports whether the Source can sign a request AWS would accept
// now: a pair is loaded and inside its validity period.
func (s *Source) Ready() error {
	p := s.keys.Current()
	if p == nil {
		return errors.New("no Roles Anywhere certificate loaded")
	}
	return checkLeaf(p.Leaf, s.clock.Now())
}

// Fetch makes one CreateSession call for req, sending req.SessionName as
// roleSessionName when it is set. When the profile refuses custom session
// names, Fetch makes the call again once without one and sends none from
// then on (see sessionNameFallback): the pod still gets its credentials,
// under a session AWS names after the certificate's serial.
func (s *Source) Fetch(ctx context.Context, req credentials.Request) (credentials.Credentials, error) {
	invalid := func(msg string) error {
		return &credentials.Error{Kind: credentials.KindInvalid, Source: SourceName, RoleARN: req.RoleARN, Message: msg}
	}
	if req.ExternalID != "" {
		return credentials.Credentials{}, invalid("Roles Anywhere has no external ID; remove the external-id annotation or use the sts source")
	}
	if len(req.Tags) > 0 {
		return credentials.Credentials{}, invalid("Roles Anywhere CreateSession cannot set session tags; name a target role (iam.amazonaws.com/target-role), which carries them, turn --session-tags off, or use the sts source")
	}
	if req.Policy != "" || req.Chained() {
		return credentials.Credentials{}, invalid("Roles Anywhere CreateSession takes no session policy and no target role; a target role (iam.amazonaws.com/target-role) is assumed through STS by the chain source")
	}
	role, err := arn.ParseRole(req.RoleARN)
	if err != nil {
		return credentials.Credentials{}, invalid(err.Error())
	}
	if role.Partition != s.trustAnchor.Partition {
		return credentials.Credentials{}, invalid(fmt.Sprintf("role is in partition %s but the trust anchor is in %s", role.Partition, s.trustAnchor.Partition))
	}
	in := CreateSessionInput{
		TrustAnchorARN:  s.cfg.TrustAnchorARN,
		ProfileARN:      s.cfg.ProfileARN,
		RoleARN:         req.RoleARN,
		DurationSeconds: int(s.cfg.sessionDuration() / time.Second),
	}
	if err := s.validityError(req.RoleARN); err != nil {
		return credentials.Credentials{}, err
	}
	in.RoleSessionName = s.names.nameToSend(req.SessionName)
	creds, err := s.client.CreateSession(ctx, in)
	if err != nil && in.RoleSessionName != "" && s.names.refusal(err) {
		in.RoleSessionName = ""
		return s.client.CreateSession(ctx, in)
	}
	return creds, err
}

// validityError refuses, without a call AWS would refuse anyway, while the
// node certificate is outside its validity period; the error's code lets
// the agent tell the pod's owner (credentials.ActionableFailure).
func (s *Source) validityError(roleARN string) error {
	p := s.keys.Current()
	if p == nil {
		return &credentials.Error{Kind: credentials.KindUnavailable, Source: SourceName, RoleARN: roleARN, Message: "no Roles Anywhere certificate loaded"}
	}
	now := s.clock.Now()
	var code string
	switch {
	case now.Before(p.Leaf.NotBefore):
		code = credentials.CodeCertificateNotYetValid
	case now.After(p.Leaf.NotAfter):
		code = credentials.CodeCertificateExpired
	default:
		return nil
	}
	return &credentials.Error{Kind: credentials.KindDenied, Source: SourceName, RoleARN: roleARN, Code: code, Message: checkLeaf(p.Leaf, now).Error()}
}
