// Package sts gets pod credentials with sts:AssumeRole on EC2 nodes: the
// node's own credentials (its instance profile, through the metadata
// service) sign AssumeRole, and the instance tells the region and the base
// role ARN. It mirrors rolesanywhere: a Config of plain values, a Source
// built without network calls, Check to make it usable, and the
// credentials.Source the cache calls.
package sts

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/feature/ec2/imds"
	"github.com/sirupsen/logrus"

	"github.com/kube2ra/kube2ra/arn"
	"github.com/kube2ra/kube2ra/awsconfig"
	"github.com/kube2ra/kube2ra/credentials"
)

// SourceName is the source's Name, used in metrics, logs and cache keys.
const SourceName = credentials.STSSourceName

// Config is the STS part of the agent's configuration, filled by
// cmd/kube2ra from its flags.
type Config struct {
	// Region is --region; empty: the SDK's (AWS_REGION, shared config), else
	// the instance's, read from the metadata service at Check.
	Region string
	// Endpoint is --sts-endpoint; empty leaves the SDK's choice.
	Endpoint string
	// MetadataURL is the node's metadata service (http URL), where the
	// node's own credentials, region and instance profile are read; empty
	// when there is none (the SDK's default chain must then find base
	// credentials, and Region must be set).
	MetadataURL string
	// SessionDuration is --iam-role-session-ttl.
	SessionDuration time.Duration
}

// Deps are the source's collaborators.
type Deps struct {
	// Logger receives the source's lines and the SDK's own; never secrets.
	Logger logrus.FieldLogger
	// CheckTimeout bounds Check; 0 means DefaultCheckTimeout.
	CheckTimeout time.Duration
}

// DefaultCheckTimeout bounds Check's calls to the metadata service and the
// base credentials' first resolution.
const DefaultCheckTimeout = 30 * time.Second

// Source is the STS credential source. Fetch answers only after Check.
type Source struct {
	cfg Config
	log logrus.FieldLogger
	// checkTimeout bounds Check.
	checkTimeout time.Duration
	// base are the node's own credentials, which sign AssumeRole.
	base aws.CredentialsProvider
	// imds reads the instance's region and profile; nil without MetadataURL.
	imds *imds.Client
	// region is the region in use: Config.Region, the SDK's, or the instance's.
	region string
	// discoveredBase is the base role ARN the instance profile implies.
	discoveredBase atomic.Pointer[string]
	// assumer calls sts:AssumeRole; set by Check.
	assumer atomic.Pointer[credentials.STSSource]
}

var _ credentials.Source = (*Source)(nil)

// NewSource loads the SDK configuration (its warnings go through the
// logger) and prepares the metadata client; it makes no network call.
func NewSource(ctx context.Context, cfg Config, deps Deps) (*Source, error) {
	log := deps.Logger
	if log == nil {
		l := logrus.New()
		l.SetLevel(logrus.PanicLevel)
		log = l
	}
	// The node's own credentials come from the same metadata service
	// kube2ra passes allowed paths to (EC2IMDSEndpoint).
	awsCfg, err := awsconfig.Load(ctx, awsconfig.Options{Logger: credentials.SDKLogger(log), EC2IMDSEndpoint: cfg.MetadataURL})
	if err != nil {
		return nil, fmt.Errorf("sts: loading the AWS configuration (AWS_* environment, ~/.aws files): %w", err)
	}
	s := &Source{cfg: cfg, log: log, checkTimeout: deps.CheckTimeout, base: awsCfg.Credentials, region: cfg.Region}
	if s.checkTimeout == 0 {
		s.checkTimeout = DefaultCheckTimeout
	}
	if cfg.MetadataURL != "" {
		s.imds = imds.NewFromConfig(awsCfg, func(o *imds.Options) {
			o.Endpoint, o.HTTPClient = cfg.MetadataURL, awsconfig.MetadataHTTPClient(awsCfg)
		})
	}
	if s.region == "" {
		s.region = awsCfg.Region
	}
	return s, nil
}

// Check makes the source usable: it discovers the region (when none is
// configured) and the base role ARN from the instance, resolves the node's
// own credentials once, and builds the STS client.
func (s *Source) Check(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, s.checkTimeout)
	defer cancel()
	if s.imds != nil {
		if s.region == "" {
			out, err := s.imds.GetRegion(ctx, &imds.GetRegionInput{})
			if err != nil {
				return fmt.Errorf("sts: no --region given and the instance's region cannot be read from the metadata service: %w", err)
			}
			s.region = out.Region
		}
		if info, err := s.imds.GetIAMInfo(ctx, &imds.GetIAMInfoInput{}); err == nil {
			if base, err := arn.BaseFromInstanceProfile(info.InstanceProfileArn); err == nil {
				b := base.String()
				s.discoveredBase.Store(&b)
			}
		}
	}
	if s.region == "" {
		return errors.New("sts: no region: set --region (or AWS_REGION) when there is no metadata service")
	}
	if _, err := s.base.Retrieve(ctx); err != nil {
		return fmt.Errorf("sts: the node's own credentials (which sign AssumeRole) cannot be resolved: %w", err)
	}
	assumer, err := credentials.NewSTSSource(ctx, credentials.STSOptions{
		Region:          s.region,
		Endpoint:        s.cfg.Endpoint,
		BaseCredentials: s.base,
		Duration:        s.cfg.SessionDuration,
		Logger:          s.log,
	})
	if err != nil {
		// Its errors say "sts:" already.
		return err
	}
	s.assumer.Store(assumer)
	return nil
}

// Name is "sts".
func (s *Source) Name() string { return SourceName }

// Region is the region in use; before Check it may still be empty.
func (s *Source) Region() string { return s.region }

// BaseRoleARN is the base role ARN the instance profile implies, "" when
// it is unknown (no metadata service, no instance profile, or before Check).
func (s *Source) BaseRoleARN() string {
	if b := s.discoveredBase.Load(); b != nil {
		return *b
	}
	return ""
}

// Ready is nil once Check has succeeded.
func (s *Source) Ready() error {
	if s.assumer.Load() == nil {
		return errors.New("sts: not checked yet")
	}
	return nil
}

// Fetch calls sts:AssumeRole for req; before Check it refuses.
func (s *Source) Fetch(ctx context.Context, req credentials.Request) (credentials.Credentials, error) {
	a := s.assumer.Load()
	if a == nil {
		return credentials.Credentials{}, &credentials.Error{Kind: credentials.KindUnavailable, Source: SourceName, RoleARN: req.RoleARN,
			Message: "the STS source is not ready (region, base credentials): see the agent's log"}
	}
	return a.Fetch(ctx, req)
}
