package main

import (
	"context"
	"fmt"
	"sync/atomic"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/feature/ec2/imds"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/sirupsen/logrus"
	corev1 "k8s.io/api/core/v1"

	"github.com/kube2ra/kube2ra/arn"
	"github.com/kube2ra/kube2ra/credentials"
	"github.com/kube2ra/kube2ra/k8s"
	"github.com/kube2ra/kube2ra/rolesanywhere"
)

// sourceParts is the chosen credential source with what the agent needs to
// know about it: its region, base role ARN and readiness.
type sourceParts struct {
	// name is sourceSTS or sourceRolesAnywhere.
	name string
	// source fetches credentials.
	source credentials.Source
	// region is answered to pods off AWS and used for endpoints.
	region string
	// naming is what sessions are named after (--session-name).
	naming credentials.SessionNaming
	// ra is the Roles Anywhere source, nil with STS.
	ra *rolesanywhere.Source
	// base is the STS source's base credentials, nil with Roles Anywhere.
	base aws.CredentialsProvider
	// imds reads the node's own metadata (region, instance profile); nil off AWS.
	imds *imds.Client
	// discoveredBase is the base role ARN found at check time.
	discoveredBase atomic.Pointer[string]
	// notices turns the source's warnings into Events on the node.
	notices nodeNotices
}

// nodeNotices records the credential source's warnings as Events on this
// node. The source is built before the Event recorder, so the recorder is
// set later; a warning before that is only logged (by the source).
type nodeNotices struct {
	// node is this node's name.
	node string
	// events records the Events once set.
	events atomic.Pointer[k8s.EventRecorder]
}

// sessionNamesRefused is rolesanywhere.Deps.OnSessionNamesRefused.
func (n *nodeNotices) sessionNamesRefused(profileARN, message string) {
	if ev := n.events.Load(); ev != nil {
		ev.Event(k8s.NodeRef(n.node), corev1.EventTypeWarning, k8s.ReasonSessionNamesRefused, "profile "+profileARN+": "+message)
	}
}

// newSourceParts builds the source without network calls; check verifies it
// (and, for STS, completes it).
func newSourceParts(ctx context.Context, cfg *Config, log logrus.FieldLogger, reg prometheus.Registerer) (*sourceParts, error) {
	p := &sourceParts{name: cfg.resolvedSource(), notices: nodeNotices{node: cfg.Node}}
	switch p.name {
	case sourceRolesAnywhere:
		src, err := rolesanywhere.NewSource(raConfig(cfg), rolesanywhere.Deps{
			Logger:                log.WithField("component", "rolesanywhere"),
			Registerer:            reg,
			OnSessionNamesRefused: p.notices.sessionNamesRefused,
		})
		if err != nil {
			return nil, fmt.Errorf("roles anywhere: %w", err)
		}
		p.source, p.ra, p.region, p.naming = src, src, src.Region(), cfg.parsed.sessionNaming
		if cfg.Region != "" {
			p.region = cfg.Region
		}
		return p, nil
	default:
		// The SDK's own warnings (IMDSv1 fallback, retries) go through logrus.
		opts := []func(*config.LoadOptions) error{config.WithLogger(credentials.SDKLogger(log))}
		if url := cfg.parsed.metadataURL; url != "" {
			// The node's own credentials come from the same metadata service
			// kube2ra passes allowed paths to.
			opts = append(opts, config.WithEC2IMDSEndpoint(url))
		}
		awsCfg, err := config.LoadDefaultConfig(ctx, opts...)
		if err != nil {
			return nil, fmt.Errorf("loading the AWS configuration for STS: %w", err)
		}
		p.base, p.naming = awsCfg.Credentials, cfg.parsed.sessionNaming
		if url := cfg.parsed.metadataURL; url != "" {
			p.imds = imds.NewFromConfig(awsCfg, func(o *imds.Options) { o.Endpoint = url })
		}
		p.region = cfg.Region
		if p.region == "" {
			p.region = awsCfg.Region
		}
		return p, nil
	}
}

func raConfig(cfg *Config) rolesanywhere.Config {
	return rolesanywhere.Config{
		TrustAnchorARN:  cfg.RATrustAnchorARN,
		ProfileARN:      cfg.RAProfileARN,
		Certificate:     cfg.RACertificate,
		PrivateKey:      cfg.RAPrivateKey,
		Intermediates:   cfg.RAIntermediates,
		PasswordFile:    cfg.RAPrivateKeyPasswordFile,
		Endpoint:        cfg.RAEndpoint,
		FIPS:            cfg.RAFIPS,
		Region:          cfg.Region,
		SessionDuration: cfg.RASessionDuration,
	}
}

// check makes the source usable: for STS it discovers the region and base
// role ARN from the instance, resolves the base credentials, and builds the
// STS client (which needs the region).
func (p *sourceParts) check(ctx context.Context, cfg *Config, log logrus.FieldLogger) error {
	if p.ra != nil {
		if err := p.ra.Ready(); err != nil {
			return fmt.Errorf("roles anywhere: %w", err)
		}
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, sourceCheckTimeout)
	defer cancel()
	if p.imds != nil {
		if p.region == "" {
			out, err := p.imds.GetRegion(ctx, &imds.GetRegionInput{})
			if err != nil {
				return fmt.Errorf("sts: no --region given and the instance's region cannot be read from the metadata service: %w", err)
			}
			p.region = out.Region
		}
		if info, err := p.imds.GetIAMInfo(ctx, &imds.GetIAMInfoInput{}); err == nil {
			if base, err := arn.BaseFromInstanceProfile(info.InstanceProfileArn); err == nil {
				b := base.String()
				p.discoveredBase.Store(&b)
			}
		}
	}
	if p.region == "" {
		return fmt.Errorf("sts: no region: set --region (or AWS_REGION) when there is no metadata service")
	}
	if _, err := p.base.Retrieve(ctx); err != nil {
		return fmt.Errorf("sts: the node's own credentials (which sign AssumeRole) cannot be resolved: %w", err)
	}
	src, err := credentials.NewSTSSource(ctx, credentials.STSOptions{
		Region:          p.region,
		Endpoint:        cfg.STSEndpoint,
		BaseCredentials: p.base,
		Duration:        cfg.SessionTTL,
		Logger:          log.WithField("component", "sts"),
	})
	if err != nil {
		return fmt.Errorf("sts: %w", err)
	}
	p.source = src
	return nil
}

// baseARN is the base role ARN the source implies, "" if none.
func (p *sourceParts) baseARN() string {
	if p.ra != nil {
		return p.ra.BaseRoleARN()
	}
	if b := p.discoveredBase.Load(); b != nil {
		return *b
	}
	return ""
}

// ready is the source's part of /readyz after start.
func (p *sourceParts) ready() error {
	if p.ra != nil {
		return p.ra.Ready()
	}
	return nil
}

// run runs the source's background work (certificate reload).
func (p *sourceParts) run(ctx context.Context) {
	if p.ra != nil {
		p.ra.Run(ctx)
	}
}
