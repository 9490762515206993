// Package awsconfig loads the AWS SDK configuration of kube2ra's own AWS
// clients (STS, and the instance metadata client on EC2 nodes): region,
// HTTP client with AWS_CA_BUNDLE, endpoint settings, and the node's own
// credentials.
//
// It is config.LoadDefaultConfig without the two credential providers a
// node agent cannot use: IAM Identity Center (SSO) and console login
// profiles, which need a person to log in in a browser. Their clients
// (sso, ssooidc, signin) were linked through LoadDefaultConfig's resolver
// list, 0.8 MB of every agent's binary and so of its resident memory on
// every node (docs/performance.md). The configuration sources are the
// SDK's own (config.NewEnvConfig, config.LoadSharedConfigProfile), and so
// are the providers; what is here is their order, the SDK's:
//
//  1. static keys in the environment (AWS_ACCESS_KEY_ID...);
//  2. web identity from the environment (AWS_WEB_IDENTITY_TOKEN_FILE and
//     AWS_ROLE_ARN, as IRSA sets them);
//  3. the profile (AWS_PROFILE, else "default") of the shared files:
//     source_profile chains, static keys, credential_source,
//     web_identity_token_file, credential_process, then role_arn assumed
//     with what came before; a profile naming SSO or a login session is an
//     error that says so;
//  4. the container endpoint (AWS_CONTAINER_CREDENTIALS_RELATIVE_URI or
//     _FULL_URI, as ECS and EKS Pod Identity set them; a full URI over
//     plain HTTP must be loopback or the ECS or EKS agent's address);
//  5. the instance's role from the instance metadata service.
//
// On an upgrade of aws-sdk-go-v2/config, compare this order with its
// resolve_credentials.go (resolveCredentialChain, resolveCredsFromProfile):
// a provider the SDK adds is not here until added.
package awsconfig

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/credentials/ec2rolecreds"
	"github.com/aws/aws-sdk-go-v2/credentials/endpointcreds"
	"github.com/aws/aws-sdk-go-v2/credentials/processcreds"
	"github.com/aws/aws-sdk-go-v2/credentials/stscreds"
	"github.com/aws/aws-sdk-go-v2/feature/ec2/imds"
	"github.com/aws/aws-sdk-go-v2/service/sts"
	"github.com/aws/smithy-go/logging"

	"github.com/kube2ra/kube2ra/trustroots"
)

// Options are what the caller decides; everything else comes from the
// environment and the shared files, as with config.LoadDefaultConfig.
type Options struct {
	// Region wins over AWS_REGION and the profile's region.
	Region string
	// Credentials, when set, are used instead of the chain.
	Credentials aws.CredentialsProvider
	// Logger receives the SDK's warnings.
	Logger logging.Logger
	// EC2IMDSEndpoint is the instance metadata service the instance role
	// is read from; empty for the SDK's (AWS_EC2_METADATA_SERVICE_ENDPOINT,
	// else 169.254.169.254).
	EC2IMDSEndpoint string
}

// Load returns the configuration. It makes no network call: credentials
// are resolved when first used.
func Load(ctx context.Context, o Options) (aws.Config, error) {
	env, err := config.NewEnvConfig()
	if err != nil {
		return aws.Config{}, fmt.Errorf("reading the AWS_* environment: %w", err)
	}
	shared, err := loadProfile(ctx, env, o.Logger)
	if err != nil {
		return aws.Config{}, err
	}
	cfg := aws.Config{
		Region:           firstOf(o.Region, env.Region, shared.Region),
		Logger:           o.Logger,
		ConfigSources:    []interface{}{env, shared},
		AppID:            firstOf(env.AppID, shared.AppID),
		RetryMaxAttempts: env.RetryMaxAttempts,
		RetryMode:        env.RetryMode,
	}
	if cfg.Logger == nil {
		cfg.Logger = logging.Nop{}
	}
	if cfg.RetryMaxAttempts == 0 {
		cfg.RetryMaxAttempts = shared.RetryMaxAttempts
	}
	if cfg.RetryMode == "" {
		cfg.RetryMode = shared.RetryMode
	}
	if base := firstOf(env.BaseEndpoint, shared.BaseEndpoint); base != "" {
		cfg.BaseEndpoint = aws.String(base)
	}
	if cfg.HTTPClient, err = httpClient(firstOf(env.CustomCABundle, shared.CustomCABundle)); err != nil {
		return aws.Config{}, err
	}
	provider := o.Credentials
	if provider == nil {
		if provider, err = chain(&cfg, &env, &shared, o.EC2IMDSEndpoint); err != nil {
			return aws.Config{}, err
		}
	}
	if _, cached := provider.(*aws.CredentialsCache); !cached {
		provider = aws.NewCredentialsCache(provider)
	}
	cfg.Credentials = provider
	return cfg, nil
}

// loadProfile reads the shared files' profile; a profile that is not
// there is no profile, as for the SDK.
func loadProfile(ctx context.Context, env config.EnvConfig, logger logging.Logger) (config.SharedConfig, error) {
	profile := firstOf(env.SharedConfigProfile, config.DefaultSharedConfigProfile)
	shared, err := config.LoadSharedConfigProfile(ctx, profile, func(so *config.LoadSharedConfigOptions) {
		if env.SharedConfigFile != "" {
			so.ConfigFiles = []string{env.SharedConfigFile}
		}
		if env.SharedCredentialsFile != "" {
			so.CredentialsFiles = []string{env.SharedCredentialsFile}
		}
		so.Logger = logger
	})
	var missing config.SharedConfigProfileNotExistError
	if errors.As(err, &missing) {
		return config.SharedConfig{}, nil
	}
	if err != nil {
		return config.SharedConfig{}, fmt.Errorf("reading profile %q of the shared AWS files (~/.aws/config, ~/.aws/credentials, AWS_CONFIG_FILE): %w", profile, err)
	}
	return shared, nil
}

// httpClient is the SDK's HTTP client, trusting the PEM bundle at
// caBundle besides nothing else when set (AWS_CA_BUNDLE, as the SDK).
func httpClient(caBundle string) (aws.HTTPClient, error) {
	client := awshttp.NewBuildableClient()
	if caBundle == "" {
		return client, nil
	}
	pem, err := os.ReadFile(caBundle)
	if err != nil {
		return nil, fmt.Errorf("reading the CA bundle %s (AWS_CA_BUNDLE or ca_bundle): %w", caBundle, err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("the CA bundle %s (AWS_CA_BUNDLE or ca_bundle) holds no PEM certificate", caBundle)
	}
	return client.WithTransportOptions(func(tr *http.Transport) {
		if tr.TLSClientConfig == nil {
			tr.TLSClientConfig = &tls.Config{}
		}
		tr.TLSClientConfig.RootCAs = pool
	}), nil
}

// MetadataHTTPClient is cfg's HTTP client for the instance metadata
// service: the same, but never through a proxy. HTTP_PROXY and
// HTTPS_PROXY are for AWS's endpoints; the link-local metadata service
// must be asked directly (through a proxy it fails, or answers with the
// proxy host's identity), whatever NO_PROXY says.
func MetadataHTTPClient(cfg aws.Config) aws.HTTPClient {
	c, ok := cfg.HTTPClient.(*awshttp.BuildableClient)
	if !ok {
		c = awshttp.NewBuildableClient()
	}
	return c.WithTransportOptions(func(tr *http.Transport) { tr.Proxy = nil })
}

// chain is the SDK's default credential chain without SSO and console
// login (see the package comment).
func chain(cfg *aws.Config, env *config.EnvConfig, shared *config.SharedConfig, imdsEndpoint string) (aws.CredentialsProvider, error) {
	switch {
	case env.Credentials.HasKeys():
		return envKeys(env), nil
	case env.WebIdentityTokenFilePath != "":
		return webIdentity(cfg, env.WebIdentityTokenFilePath, env.RoleARN, env.RoleSessionName)
	}
	return fromProfile(cfg, env, shared, imdsEndpoint)
}

// fromProfile is the SDK's resolveCredsFromProfile without SSO and login.
func fromProfile(cfg *aws.Config, env *config.EnvConfig, p *config.SharedConfig, imdsEndpoint string) (aws.CredentialsProvider, error) {
	var (
		provider aws.CredentialsProvider
		err      error
	)
	switch {
	case p.Source != nil:
		provider, err = fromProfile(cfg, env, p.Source, imdsEndpoint)
	case p.Credentials.HasKeys():
		provider = credentials.StaticCredentialsProvider{Value: p.Credentials, Source: []aws.CredentialSource{aws.CredentialSourceProfile}}
	case p.CredentialSource != "":
		provider, err = fromCredentialSource(cfg, env, p, imdsEndpoint)
	case p.WebIdentityTokenFile != "":
		// The web identity's role is the profile's role: nothing more to assume.
		return webIdentity(cfg, p.WebIdentityTokenFile, p.RoleARN, p.RoleSessionName)
	case p.SSOSessionName != "" || p.SSORegion != "" || p.SSOAccountID != "" || p.SSOStartURL != "" || p.SSORoleName != "":
		return nil, fmt.Errorf("AWS profile %q uses IAM Identity Center (SSO), which needs a person to log in; give the agent the instance role, IRSA or Pod Identity, a credential_process, or keys", p.Profile)
	case p.LoginSession != "":
		return nil, fmt.Errorf("AWS profile %q uses a console login session, which needs a person to log in; give the agent the instance role, IRSA or Pod Identity, a credential_process, or keys", p.Profile)
	case p.CredentialProcess != "":
		provider = processcreds.NewProvider(p.CredentialProcess)
	case env.ContainerCredentialsRelativePath != "" || env.ContainerCredentialsEndpoint != "":
		provider, err = fromContainer(cfg, env)
	default:
		provider = instanceRole(cfg, imdsEndpoint)
	}
	if err != nil {
		return nil, err
	}
	if p.RoleARN == "" {
		return provider, nil
	}
	return assumeRole(cfg, provider, p)
}

// fromCredentialSource is a profile's credential_source.
func fromCredentialSource(cfg *aws.Config, env *config.EnvConfig, p *config.SharedConfig, imdsEndpoint string) (aws.CredentialsProvider, error) {
	switch p.CredentialSource {
	case "Ec2InstanceMetadata":
		return instanceRole(cfg, imdsEndpoint), nil
	case "Environment":
		return envKeys(env), nil
	case "EcsContainer":
		if env.ContainerCredentialsRelativePath != "" || env.ContainerCredentialsEndpoint != "" {
			return fromContainer(cfg, env)
		}
		return nil, fmt.Errorf("AWS profile %q has credential_source EcsContainer, but neither AWS_CONTAINER_CREDENTIALS_RELATIVE_URI nor AWS_CONTAINER_CREDENTIALS_FULL_URI is set", p.Profile)
	}
	return nil, fmt.Errorf("AWS profile %q has credential_source %q; it must be EcsContainer, Ec2InstanceMetadata or Environment", p.Profile, p.CredentialSource)
}

// envKeys are the keys in the environment (AWS_ACCESS_KEY_ID...).
func envKeys(env *config.EnvConfig) aws.CredentialsProvider {
	return credentials.StaticCredentialsProvider{Value: env.Credentials, Source: []aws.CredentialSource{aws.CredentialSourceEnvVars}}
}

// fromContainer is the container endpoint the environment names: the ECS
// agent's relative URI first, else a full URI (see localContainerProvider).
func fromContainer(cfg *aws.Config, env *config.EnvConfig) (aws.CredentialsProvider, error) {
	if env.ContainerCredentialsRelativePath != "" {
		return containerProvider(cfg, containerEndpoint+env.ContainerCredentialsRelativePath, env.ContainerAuthorizationToken), nil
	}
	return localContainerProvider(cfg, env.ContainerCredentialsEndpoint, env.ContainerAuthorizationToken)
}

// webIdentity assumes roleARN with the token in file (re-read on each call).
func webIdentity(cfg *aws.Config, file, roleARN, sessionName string) (aws.CredentialsProvider, error) {
	if roleARN == "" {
		return nil, fmt.Errorf("a web identity token file (%s) is set but no role ARN (AWS_ROLE_ARN or role_arn)", file)
	}
	return stscreds.NewWebIdentityRoleProvider(sts.NewFromConfig(*cfg), roleARN, stscreds.IdentityTokenFile(file), func(o *stscreds.WebIdentityRoleOptions) {
		o.RoleSessionName = sessionName
	}), nil
}

// assumeRole assumes the profile's role with base.
func assumeRole(cfg *aws.Config, base aws.CredentialsProvider, p *config.SharedConfig) (aws.CredentialsProvider, error) {
	if p.MFASerial != "" {
		return nil, fmt.Errorf("AWS profile %q assumes its role with MFA (mfa_serial), which needs a person to type a code; remove mfa_serial for the agent's profile", p.Profile)
	}
	withBase := *cfg
	withBase.Credentials = aws.NewCredentialsCache(base)
	return stscreds.NewAssumeRoleProvider(sts.NewFromConfig(withBase), p.RoleARN, func(o *stscreds.AssumeRoleOptions) {
		o.RoleSessionName = p.RoleSessionName
		if d := p.RoleDurationSeconds; d != nil && *d/time.Minute > 15 {
			o.Duration = *d
		}
		if p.ExternalID != "" {
			o.ExternalID = aws.String(p.ExternalID)
		}
	}), nil
}

// instanceRole reads the instance's role credentials from the metadata
// service.
func instanceRole(cfg *aws.Config, endpoint string) aws.CredentialsProvider {
	client := imds.NewFromConfig(*cfg, func(o *imds.Options) {
		o.HTTPClient = MetadataHTTPClient(*cfg)
		if endpoint != "" {
			o.Endpoint = endpoint
		}
	})
	return ec2rolecreds.New(func(o *ec2rolecreds.Options) { o.Client = client })
}

// containerEndpoint is the ECS agent's credentials endpoint that
// AWS_CONTAINER_CREDENTIALS_RELATIVE_URI is relative to.
const containerEndpoint = "http://169.254.170.2"

// containerTokenFileEnv names a file holding the container endpoint's
// authorization token (EKS Pod Identity), re-read on each call.
const containerTokenFileEnv = "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE"

// containerProvider reads credentials from a container endpoint.
func containerProvider(cfg *aws.Config, endpoint, token string) aws.CredentialsProvider {
	provider := endpointcreds.New(endpoint, func(o *endpointcreds.Options) {
		o.AuthorizationToken = token
		if file := os.Getenv(containerTokenFileEnv); file != "" {
			o.AuthorizationTokenProvider = endpointcreds.TokenProviderFunc(func() (string, error) {
				b, err := os.ReadFile(file)
				if err != nil {
					return "", fmt.Errorf("reading the container endpoint's authorization token from %s (%s): %w", file, containerTokenFileEnv, err)
				}
				return string(bytes.TrimSpace(b)), nil
			})
		}
		o.APIOptions = cfg.APIOptions
	})
	return aws.NewCredentialsCache(provider, func(o *aws.CredentialsCacheOptions) { o.ExpiryWindow = 5 * time.Minute })
}

// localContainerProvider is containerProvider for a full URI, which over
// plain HTTP must name a loopback address or the ECS or EKS agent's.
func localContainerProvider(cfg *aws.Config, endpoint, token string) (aws.CredentialsProvider, error) {
	u, err := url.Parse(endpoint)
	if err != nil {
		return nil, fmt.Errorf("AWS_CONTAINER_CREDENTIALS_FULL_URI %q is not a URL: %w", endpoint, err)
	}
	host := u.Hostname()
	if host == "" {
		return nil, fmt.Errorf("AWS_CONTAINER_CREDENTIALS_FULL_URI %q has no host", endpoint)
	}
	if u.Scheme == "http" {
		ok, err := allowedContainerHost(host)
		if err != nil {
			return nil, fmt.Errorf("AWS_CONTAINER_CREDENTIALS_FULL_URI %q: resolving %s: %w", endpoint, host, err)
		}
		if !ok {
			return nil, fmt.Errorf("AWS_CONTAINER_CREDENTIALS_FULL_URI %q: over plain HTTP only loopback and the ECS or EKS agent's address (169.254.170.2, 169.254.170.23, fd00:ec2::23) are allowed; use https or one of those", endpoint)
		}
	}
	return containerProvider(cfg, endpoint, token), nil
}

// containerAgents are the ECS and EKS Pod Identity agents' addresses.
var containerAgents = []net.IP{net.ParseIP("169.254.170.2"), net.ParseIP("169.254.170.23"), net.ParseIP("fd00:ec2::23")}

// allowedContainerHost reports whether every address of host is loopback
// or a container agent's.
func allowedContainerHost(host string) (bool, error) {
	addrs := []string{host}
	if net.ParseIP(host) == nil {
		var err error
		if addrs, err = net.LookupHost(host); err != nil {
			return false, err
		}
	}
	for _, a := range addrs {
		ip := net.ParseIP(a)
		if ip == nil {
			return false, nil
		}
		allowed := ip.IsLoopback()
		for _, agent := range containerAgents {
			allowed = allowed || ip.Equal(agent)
		}
		if !allowed {
			return false, nil
		}
	}
	return len(addrs) > 0, nil
}

// firstOf is the first non-empty value.
func firstOf(values ...string) string {
	for _, v := range values {
		if v != "" {
			return v
		}
	}
	return ""
}

// CheckTrust returns an error naming the fix when cfg's HTTP client would
// verify endpoint, an HTTPS URL, with the system's certificate authorities
// and the system has none (see package trustroots). A CA bundle from
// AWS_CA_BUNDLE or the profile's ca_bundle is its own trust: Load refused
// one without a certificate.
func CheckTrust(cfg aws.Config, what, endpoint string) error {
	if c, ok := cfg.HTTPClient.(*awshttp.BuildableClient); ok {
		if tr := c.GetTransport(); tr.TLSClientConfig != nil && tr.TLSClientConfig.RootCAs != nil {
			return nil
		}
	}
	return trustroots.Check(what, endpoint)
}
