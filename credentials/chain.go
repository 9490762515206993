package credentials

import (
	"context"
	"errors"
	"fmt"

	"github.com/aws/aws-sdk-go-v2/aws"

	"github.com/kube2ra/kube2ra/arn"
)

// ChainSource is the Source the cache wraps. A request without a target
// role goes to the first-hop source as it stands; a request with one gets
// the first role's credentials from the first-hop source (Roles Anywhere
// CreateSession or STS AssumeRole with the node's credentials) and then
// the target role's from STS, signed with them. One Fetch is the whole
// chain, so the cache's key, single flight, prefetch and refresh-ahead
// cover both hops, and the first role's credentials never leave Fetch.
type ChainSource struct {
	// first issues the first role's credentials.
	first Source
	// target assumes target roles; nil when the agent has no STS client
	// for them (then chained requests are refused).
	target TargetAssumer
}

// TargetAssumer assumes a chained request's target role with the first
// role's credentials; *STSSource is the real one.
type TargetAssumer interface {
	AssumeTarget(ctx context.Context, req Request, first Credentials) (Credentials, error)
}

var (
	_ Source        = (*ChainSource)(nil)
	_ TargetAssumer = (*STSSource)(nil)
)

// NewChainSource builds the chain over first; target assumes target roles.
func NewChainSource(first Source, target TargetAssumer) (*ChainSource, error) {
	if first == nil {
		return nil, errors.New("credentials: NewChainSource needs the first-hop source")
	}
	return &ChainSource{first: first, target: target}, nil
}

// Name is the first-hop source's name.
func (c *ChainSource) Name() string { return c.first.Name() }

// Fetch fetches req: one call without a target role, two with one.
func (c *ChainSource) Fetch(ctx context.Context, req Request) (Credentials, error) {
	if !req.Chained() {
		return c.first.Fetch(ctx, req)
	}
	invalid := func(msg string) error {
		return &Error{Kind: KindInvalid, Source: STSSourceName, RoleARN: req.TargetRoleARN, Hop: HopTarget, Message: msg}
	}
	if c.target == nil {
		return Credentials{}, invalid("the agent has no STS client for target roles; see its start-up log")
	}
	first, err := arn.ParseRole(req.RoleARN)
	if err != nil {
		return Credentials{}, &Error{Kind: KindInvalid, Source: c.first.Name(), RoleARN: req.RoleARN, Hop: HopFirst, Message: err.Error()}
	}
	target, err := arn.ParseRole(req.TargetRoleARN)
	if err != nil {
		return Credentials{}, invalid(err.Error())
	}
	if target.Partition != first.Partition {
		return Credentials{}, invalid(fmt.Sprintf("the target role is in partition %s and the first role in %s: credentials of one partition cannot assume a role in another; pick a target in %s", target.Partition, first.Partition, first.Partition))
	}
	firstCreds, err := c.first.Fetch(ctx, req.FirstHop())
	if err != nil {
		var e *Error
		if errors.As(err, &e) {
			marked := *e
			marked.Hop = HopFirst
			return Credentials{}, &marked
		}
		return Credentials{}, &Error{Kind: KindUnavailable, Source: c.first.Name(), RoleARN: req.RoleARN, Hop: HopFirst, Err: err}
	}
	return c.target.AssumeTarget(ctx, req, firstCreds)
}

// NewTargetSTSSource is the STS client of target hops: opts.BaseCredentials
// is replaced by a provider that refuses (every call is signed with a
// first hop's credentials, never the node's), and sessions last
// ChainedMaxSessionDuration unless opts.Duration is shorter.
func NewTargetSTSSource(ctx context.Context, opts STSOptions) (*STSSource, error) {
	opts.BaseCredentials = aws.CredentialsProviderFunc(func(context.Context) (aws.Credentials, error) {
		return aws.Credentials{}, errors.New("credentials: the target-hop STS client signs only with a first hop's credentials")
	})
	if opts.Duration == 0 || opts.Duration > ChainedMaxSessionDuration {
		opts.Duration = ChainedMaxSessionDuration
	}
	return NewSTSSource(ctx, opts)
}
