package main

import (
	"context"
	"fmt"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/sirupsen/logrus"

	"github.com/kube2ra/kube2ra/credentials"
	"github.com/kube2ra/kube2ra/k8s"
	"github.com/kube2ra/kube2ra/kubeapi/objects"
	"github.com/kube2ra/kube2ra/rolesanywhere"
	"github.com/kube2ra/kube2ra/sts"
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
	// sts is the STS source, nil with Roles Anywhere.
	sts *sts.Source
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
		ev.Event(k8s.NodeRef(n.node), objects.EventTypeWarning, k8s.ReasonSessionNamesRefused, "profile "+profileARN+": "+message)
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
		src, err := sts.NewSource(ctx, sts.Config{
			Region:          cfg.Region,
			Endpoint:        cfg.STSEndpoint,
			MetadataURL:     cfg.parsed.metadataURL,
			SessionDuration: cfg.SessionTTL,
		}, sts.Deps{Logger: log.WithField("component", "sts"), CheckTimeout: sourceCheckTimeout})
		if err != nil {
			return nil, err
		}
		p.source, p.sts, p.region, p.naming = src, src, src.Region(), cfg.parsed.sessionNaming
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

// check makes the source usable: Roles Anywhere's key pair is loaded;
// STS discovers the region and base role ARN from the instance and resolves
// the node's own credentials.
func (p *sourceParts) check(ctx context.Context) error {
	if p.ra != nil {
		if err := p.ra.Ready(); err != nil {
			return fmt.Errorf("roles anywhere: %w", err)
		}
		return nil
	}
	if err := p.sts.Check(ctx); err != nil {
		return err
	}
	p.region = p.sts.Region()
	return nil
}

// baseARN is the base role ARN the source implies, "" if none.
func (p *sourceParts) baseARN() string {
	if p.ra != nil {
		return p.ra.BaseRoleARN()
	}
	return p.sts.BaseRoleARN()
}

// ready is the source's part of /readyz after start.
func (p *sourceParts) ready() error {
	if p.ra != nil {
		return p.ra.Ready()
	}
	if p.sts != nil {
		return p.sts.Ready()
	}
	return nil
}

// run runs the source's background work (certificate reload).
func (p *sourceParts) run(ctx context.Context) {
	if p.ra != nil {
		p.ra.Run(ctx)
	}
}
