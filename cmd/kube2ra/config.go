package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/sirupsen/logrus"
	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/kube2ra/kube2ra/arn"
	"github.com/kube2ra/kube2ra/cniresults"
	"github.com/kube2ra/kube2ra/credentials"
	"github.com/kube2ra/kube2ra/iptables"
	"github.com/kube2ra/kube2ra/k8s"
	"github.com/kube2ra/kube2ra/proxy"
)

// Credential sources.
const (
	sourceAuto          = "auto"
	sourceRolesAnywhere = "rolesanywhere"
	sourceSTS           = "sts"
)

// Config is every setting of `kube2ra run`, from flags and environment.
type Config struct {
	// Node is this node's name; only its pods are watched.
	Node string
	// HostIP is the node address the proxy binds to and DNATs to.
	HostIP string
	// HostIPv6 is the node's IPv6 address for the IPv6 DNAT rule.
	HostIPv6 string
	// HostIPs are the node's addresses (downward API status.hostIPs), where an empty HostIPv6 is found.
	HostIPs string
	// AppPort is the metadata proxy port.
	AppPort int
	// MetricsPort serves /healthz, /readyz, /metrics and /debug/store; equal
	// to AppPort (kube2iam's default) they share the metadata port.
	MetricsPort int
	// HostInterface is the comma list of pod-facing interfaces for DNAT.
	HostInterface string
	// IPTables installs the DNAT and guard rules when true.
	IPTables bool
	// IPTablesMode picks the iptables backend: auto, nft or legacy.
	IPTablesMode string
	// IPTablesResync is how often the rules are verified and restored.
	IPTablesResync time.Duration
	// IPv6 also redirects fd00:ec2::254.
	IPv6 bool
	// RemoveStartupTaint removes kube2ra.io/agent-not-ready from this node once ready.
	RemoveStartupTaint bool
	// PodIdentity opens the token door (GET /v1/credentials) and redirects the EKS Pod Identity address 169.254.170.23:80 to the proxy port.
	PodIdentity bool
	// CNI installs the chained CNI plugin that writes the redirect into every new pod's network namespace.
	CNI bool
	// CNIBinDir is the host's CNI bin directory the plugin is copied into.
	CNIBinDir string
	// CNIConfDir is the host's CNI configuration directory whose primary conflist gets the plugin's entry.
	CNIConfDir string
	// CNIPluginBinary is the plugin in the agent's image.
	CNIPluginBinary string
	// CNIResync is how often the plugin and its entry are checked besides the directory watch.
	CNIResync time.Duration
	// CNIRepair writes the in-pod rule into running pods that lack it (else they are only reported).
	CNIRepair bool
	// CNINetnsDir is where the runtime bind-mounts pods' network namespaces.
	CNINetnsDir string

	// CredentialSource is auto, rolesanywhere or sts.
	CredentialSource string
	// BaseRoleARN is prepended to bare role names.
	BaseRoleARN string
	// AutoDiscoverBaseARN discovers BaseRoleARN from the source (kube2iam flag).
	AutoDiscoverBaseARN bool
	// DefaultRole is used for pods without a role annotation.
	DefaultRole string
	// IAMRoleKey is the pod annotation naming the role.
	IAMRoleKey string
	// IAMExternalIDKey is the pod annotation naming the external ID.
	IAMExternalIDKey string
	// NamespaceKey is the namespace annotation listing allowed roles.
	NamespaceKey string
	// NamespaceRestrictions enforces NamespaceKey.
	NamespaceRestrictions bool
	// NamespaceRestrictionFormat is glob or regexp.
	NamespaceRestrictionFormat string
	// SessionTTL is the STS session duration.
	SessionTTL time.Duration
	// SessionTags is --session-tags: off, kube2ra (true) or eks; the tags
	// go on AssumeRole (STS) and on every target hop.
	SessionTags string
	// SessionTagsTransitive makes the session tags transitive.
	SessionTagsTransitive bool
	// ClusterName is the eks-cluster-name tag and part of a target role's
	// external ID.
	ClusterName string
	// ClusterARN is the eks-cluster-arn tag; empty leaves the tag out.
	ClusterARN string
	// STSEndpoint overrides the STS endpoint.
	STSEndpoint string
	// Region is the AWS region; discovered when empty.
	Region string

	// RATrustAnchorARN is the Roles Anywhere trust anchor.
	RATrustAnchorARN string
	// RAProfileARN is the Roles Anywhere profile.
	RAProfileARN string
	// RACertificate is the node certificate PEM file.
	RACertificate string
	// RAPrivateKey is the node private key PEM file.
	RAPrivateKey string
	// RAIntermediates is an optional PEM bundle of intermediate CAs.
	RAIntermediates string
	// RAPrivateKeyPasswordFile holds the password of an encrypted key.
	RAPrivateKeyPasswordFile string
	// RAEndpoint overrides the Roles Anywhere endpoint.
	RAEndpoint string
	// RAFIPS uses the FIPS endpoint.
	RAFIPS bool
	// RASessionDuration is the CreateSession duration.
	RASessionDuration time.Duration
	// RARoleSessionName is the old spelling of SessionNaming "pod".
	RARoleSessionName bool
	// SessionNaming is --session-name: node, pod or none; empty takes the
	// source's default (resolvedSessionNaming).
	SessionNaming string

	// MetadataAddr is the upstream metadata service, or "none".
	MetadataAddr string
	// MetadataAllowPaths are extra pass-through path patterns.
	MetadataAllowPaths stringList
	// IMDSv2Required refuses token-less GETs.
	IMDSv2Required bool
	// PodLookupTimeout bounds the wait for an unknown pod IP.
	PodLookupTimeout time.Duration
	// CNIResultsDir is the container runtime's CNI result cache, read for
	// new pods' addresses before the kubelet reports them; "" reads none.
	CNIResultsDir string
	// UpstreamQPS limits calls to STS or Roles Anywhere.
	UpstreamQPS float64
	// UpstreamBurst is the token bucket size for UpstreamQPS.
	UpstreamBurst int
	// CredentialMinTTL is the least lifetime credentials must have left when served.
	CredentialMinTTL time.Duration
	// RateLimit is requests per second per pod IP.
	RateLimit float64
	// PodIdentityAudience is the audience the token door requires.
	PodIdentityAudience string

	// LogFormat is text or json.
	LogFormat string
	// LogLevel is a logrus level.
	LogLevel string
	// Debug enables debug logs and /debug/store.
	Debug bool
	// Kubeconfig is used outside a cluster; in-cluster config otherwise.
	Kubeconfig string
	// ShutdownTimeout bounds draining on SIGTERM.
	ShutdownTimeout time.Duration
	// HandoverDir holds the unix socket the serving agent hands its
	// listening sockets over on to its successor; "" binds them (no handover).
	HandoverDir string

	// kube2iam holds kube2iam's flags that kube2ra has none of its own for, by name (kube2iam.go).
	kube2iam map[string]*kube2iamValue
	// explicit names the flags given on the command line or through the
	// environment (nil when unknown), for notices about defaults that
	// differ from kube2iam's.
	explicit map[string]bool

	// parsed holds what Validate parsed, so run never parses a string twice.
	parsed parsedConfig
}

// flagGiven reports whether the flag name was given; where the flags given
// are unknown (a Config built in code), whether its value differs from the
// default (differs).
func (c *Config) flagGiven(name string, differs bool) bool {
	if c.explicit == nil {
		return differs
	}
	return c.explicit[name]
}

// parsedConfig is the typed form of the settings that have one, each
// produced by the parser of the package that uses it.
type parsedConfig struct {
	// hostIP and hostIPv6 are --host-ip and --host-ipv6 (zero without --ipv6).
	hostIP, hostIPv6 netip.Addr
	// hostIPv6First is the IPv6 address --host-ip gave on an IPv6-first
	// dual-stack node, which Validate replaced with the IPv4 address of
	// --host-ips; zero otherwise.
	hostIPv6First netip.Addr
	// interfaces is --host-interface (nil with --iptables=false).
	interfaces []iptables.InterfaceSpec
	// iptablesMode is --iptables-mode.
	iptablesMode iptables.Mode
	// baseRoleARN is --base-role-arn with exactly one trailing slash; zero when unset.
	baseRoleARN arn.Base
	// policyFormat is --namespace-restriction-format.
	policyFormat k8s.PolicyFormat
	// metadataURL is the upstream metadata service's base URL, "" for none.
	metadataURL string
	// logLevel is --log-level, or debug with --debug.
	logLevel logrus.Level
	// sessionNaming is --session-name with the source's default applied.
	sessionNaming credentials.SessionNaming
	// tagMode is --session-tags.
	tagMode credentials.TagMode
}

// boolOrString is a flag that takes a value or, bare, "true" (as the bool
// flag it once was).
type boolOrString struct{ s *string }

func (b boolOrString) String() string {
	if b.s == nil {
		return ""
	}
	return *b.s
}
func (b boolOrString) Set(v string) error { *b.s = v; return nil }
func (b boolOrString) IsBoolFlag() bool   { return true }

// stringList is a repeatable flag that also accepts comma lists.
type stringList []string

func (s *stringList) String() string { return strings.Join(*s, ",") }

func (s *stringList) Set(v string) error {
	for _, p := range strings.Split(v, ",") {
		if p = strings.TrimSpace(p); p != "" {
			*s = append(*s, p)
		}
	}
	return nil
}

// NewConfig returns the defaults.
func NewConfig() *Config {
	return &Config{
		AppPort:                    8181,
		MetricsPort:                9181,
		HostInterface:              "cni0",
		IPTables:                   true,
		IPTablesMode:               "auto",
		IPTablesResync:             30 * time.Second,
		CredentialSource:           sourceAuto,
		AutoDiscoverBaseARN:        true,
		IAMRoleKey:                 k8s.DefaultRoleKey,
		IAMExternalIDKey:           k8s.DefaultExternalIDKey,
		NamespaceKey:               k8s.DefaultNamespaceKey,
		NamespaceRestrictions:      true,
		NamespaceRestrictionFormat: "glob",
		SessionTTL:                 time.Hour,
		SessionTags:                string(credentials.TagsOff),
		RASessionDuration:          time.Hour,
		IMDSv2Required:             true,
		PodLookupTimeout:           time.Second,
		UpstreamQPS:                10,
		UpstreamBurst:              50,
		CredentialMinTTL:           credentials.DefaultMinTTL,
		RateLimit:                  200,
		PodIdentityAudience:        k8s.DefaultPodIdentityAudience,
		LogFormat:                  "text",
		LogLevel:                   "info",
		ShutdownTimeout:            10 * time.Second,
		RemoveStartupTaint:         true,
		CNIBinDir:                  "/opt/cni/bin",
		CNIConfDir:                 "/etc/cni/net.d",
		CNIPluginBinary:            "/kube2ra-cni",
		CNIResync:                  30 * time.Second,
		CNIRepair:                  true,
		CNINetnsDir:                "/run/netns",
	}
}

// BindFlags registers every run flag on fs.
func (c *Config) BindFlags(fs *flag.FlagSet) {
	fs.StringVar(&c.Node, "node", c.Node, "this node's name; only pods scheduled here are served (env NODE_NAME)")
	fs.StringVar(&c.HostIP, "host-ip", c.HostIP, "node IP the proxy listens on and DNAT targets (env HOST_IP)")
	fs.StringVar(&c.HostIPv6, "host-ipv6", c.HostIPv6, "node IPv6 address for the IPv6 DNAT rule (with --ipv6); empty: the IPv6 one of --host-ips, else of the Node object's addresses")
	fs.StringVar(&c.HostIPs, "host-ips", c.HostIPs, "the node's addresses, comma separated (env HOST_IPS, the downward API's status.hostIPs); --ipv6 finds --host-ipv6 there")
	fs.IntVar(&c.AppPort, "app-port", c.AppPort, "metadata proxy port on --host-ip")
	fs.IntVar(&c.MetricsPort, "metrics-port", c.MetricsPort, "port for /healthz, /readyz, /metrics (and /debug/store with --debug); equal to --app-port, as kube2iam's default, they are served there to direct connections only, never to pods through the 169.254.169.254 DNAT")
	fs.StringVar(&c.HostInterface, "host-interface", c.HostInterface, "pod-facing interfaces to redirect, comma separated: exact (cni0), wildcard (cali+), negation (!eth0)")
	fs.BoolVar(&c.IPTables, "iptables", c.IPTables, "install the DNAT rules for 169.254.169.254 and the guard that refuses pod traffic escaping them (without them pods reach the real metadata service)")
	fs.StringVar(&c.IPTablesMode, "iptables-mode", c.IPTablesMode, "iptables backend: auto (the one holding the host's rules), nft or legacy")
	fs.DurationVar(&c.IPTablesResync, "iptables-resync", c.IPTablesResync, "how often the rules are verified and restored if flushed")
	fs.BoolVar(&c.IPv6, "ipv6", c.IPv6, "also redirect the IPv6 metadata address fd00:ec2::254 (needs --host-ipv6)")
	fs.BoolVar(&c.RemoveStartupTaint, "remove-startup-taint", c.RemoveStartupTaint, "once the rules are in place (or, with --iptables=false, once ready) remove the kube2ra.io/agent-not-ready taint from this node, and only this node (needs get and patch on nodes)")
	fs.BoolVar(&c.PodIdentity, "pod-identity", c.PodIdentity, "open the token door (GET /v1/credentials with the pod's projected ServiceAccount token, the EKS Pod Identity protocol) and redirect the EKS Pod Identity address 169.254.170.23:80 ([fd00:ec2::23]:80 with --ipv6), from pods and from the node's own processes, to the proxy port; off by default: on EKS, AWS's Pod Identity Agent claims the same address")
	fs.BoolVar(&c.CNI, "cni", c.CNI, "install the chained CNI plugin kube2ra-cni: every new pod gets the redirect inside its own network namespace, also right after a reboot and under eBPF dataplanes; the agent keeps its entry last in the primary conflist and removes both when its DaemonSet is deleted")
	fs.StringVar(&c.CNIBinDir, "cni-bin-dir", c.CNIBinDir, "the host's CNI bin directory, mounted into the agent (k3s: /var/lib/rancher/k3s/data/cni, GKE: /home/kubernetes/bin, MicroK8s: /var/snap/microk8s/current/opt/cni/bin)")
	fs.StringVar(&c.CNIConfDir, "cni-conf-dir", c.CNIConfDir, "the host's CNI configuration directory, mounted into the agent; its first file by name is the primary configuration (k3s: /var/lib/rancher/k3s/agent/etc/cni/net.d, MicroK8s: /var/snap/microk8s/current/args/cni-network)")
	fs.StringVar(&c.CNIPluginBinary, "cni-plugin-binary", c.CNIPluginBinary, "the kube2ra-cni binary to copy into --cni-bin-dir (the image ships it at /kube2ra-cni)")
	fs.DurationVar(&c.CNIResync, "cni-resync", c.CNIResync, "how often the plugin binary and its conflist entry are checked besides the directory watch, and this node's pods for the in-pod rule")
	fs.BoolVar(&c.CNIRepair, "cni-repair", c.CNIRepair, "write the in-pod rule into running pods that lack it (started before the plugin was installed, or while a primary CNI had dropped its entry); needs CAP_SYS_ADMIN and --cni-netns-dir; false only reports them (metric, Event, /readyz)")
	fs.StringVar(&c.CNINetnsDir, "cni-netns-dir", c.CNINetnsDir, "where the container runtime bind-mounts pods' network namespaces (containerd, CRI-O), mounted into the agent; a pod's is the one holding its address")

	fs.StringVar(&c.CredentialSource, "credential-source", c.CredentialSource, "where credentials come from: auto (rolesanywhere when --ra-trust-anchor-arn is set, else sts), rolesanywhere or sts")
	fs.StringVar(&c.BaseRoleARN, "base-role-arn", c.BaseRoleARN, "prefix for bare role names, e.g. arn:aws:iam::123456789012:role/ (default: discovered)")
	fs.BoolVar(&c.AutoDiscoverBaseARN, "auto-discover-base-arn", c.AutoDiscoverBaseARN, "discover --base-role-arn from the instance profile (sts) or the trust anchor (rolesanywhere)")
	fs.StringVar(&c.DefaultRole, "default-role", c.DefaultRole, "role for pods without a role annotation (exempt from namespace restrictions); empty: none")
	fs.StringVar(&c.IAMRoleKey, "iam-role-key", c.IAMRoleKey, "pod annotation naming the role")
	fs.StringVar(&c.IAMExternalIDKey, "iam-external-id", c.IAMExternalIDKey, "pod annotation naming the sts:AssumeRole external ID")
	fs.StringVar(&c.NamespaceKey, "namespace-key", c.NamespaceKey, "namespace annotation with a JSON array of allowed role patterns")
	fs.BoolVar(&c.NamespaceRestrictions, "namespace-restrictions", c.NamespaceRestrictions, "enforce the namespace's allowed roles (a namespace without the annotation allows none)")
	fs.StringVar(&c.NamespaceRestrictionFormat, "namespace-restriction-format", c.NamespaceRestrictionFormat, "allowed-roles pattern syntax: glob or regexp (anchored)")
	fs.DurationVar(&c.SessionTTL, "iam-role-session-ttl", c.SessionTTL, "STS session duration (15m to 12h; 1h at most when the base credentials are themselves a role; a role whose MaxSessionDuration is shorter gets 1h, with a warning)")
	fs.Var(boolOrString{&c.SessionTags}, "session-tags", "session tags on AssumeRole (sts) and on target-role hops (both sources): off, kube2ra or true (kubernetes-namespace, -pod-name, -service-account, -node), or eks (those and EKS Pod Identity's eks-cluster-arn, eks-cluster-name, kubernetes-pod-uid; needs --cluster-name); the trust policy needs sts:TagSession")
	fs.BoolVar(&c.SessionTagsTransitive, "session-tags-transitive", c.SessionTagsTransitive, "make the session tags transitive (TransitiveTagKeys), so they pass on to roles the pod assumes in turn")
	fs.StringVar(&c.ClusterName, "cluster-name", c.ClusterName, "this cluster's name: the eks-cluster-name session tag, and part of a target role's external ID (region/account/cluster/namespace/serviceaccount, as EKS Pod Identity); required for target roles with session tags off and for --session-tags=eks")
	fs.StringVar(&c.ClusterARN, "cluster-arn", c.ClusterARN, "the eks-cluster-arn session tag (arn:PARTITION:eks:REGION:ACCOUNT:cluster/NAME); its region and account are those of target-role external IDs; empty: the tag is left out and the external ID takes the agent's region and the first role's account")
	fs.StringVar(&c.STSEndpoint, "sts-endpoint", c.STSEndpoint, "STS endpoint URL (default: the regional endpoint; AWS_ENDPOINT_URL_STS also works)")
	fs.StringVar(&c.Region, "region", c.Region, "AWS region (default: the trust anchor's region, or the instance's)")

	fs.StringVar(&c.RATrustAnchorARN, "ra-trust-anchor-arn", c.RATrustAnchorARN, "IAM Roles Anywhere trust anchor ARN")
	fs.StringVar(&c.RAProfileARN, "ra-profile-arn", c.RAProfileARN, "IAM Roles Anywhere profile ARN")
	fs.StringVar(&c.RACertificate, "ra-certificate", c.RACertificate, "node certificate PEM file (may be followed by its intermediates); reloaded when it changes")
	fs.StringVar(&c.RAPrivateKey, "ra-private-key", c.RAPrivateKey, "node private key PEM file (PKCS#1, PKCS#8 or SEC1); reloaded when it changes")
	fs.StringVar(&c.RAIntermediates, "ra-intermediates", c.RAIntermediates, "optional PEM bundle of intermediate CA certificates")
	fs.StringVar(&c.RAPrivateKeyPasswordFile, "ra-private-key-password-file", c.RAPrivateKeyPasswordFile, "file holding the password of an encrypted private key")
	fs.StringVar(&c.RAEndpoint, "ra-endpoint", c.RAEndpoint, "Roles Anywhere endpoint URL (default: https://rolesanywhere.<region>.amazonaws.com)")
	fs.BoolVar(&c.RAFIPS, "ra-fips", c.RAFIPS, "use the Roles Anywhere FIPS endpoint")
	fs.DurationVar(&c.RASessionDuration, "ra-session-duration", c.RASessionDuration, "Roles Anywhere session duration (15m to 12h)")
	fs.BoolVar(&c.RARoleSessionName, "ra-role-session-name", c.RARoleSessionName, "old spelling of --session-name=pod")
	fs.StringVar(&c.SessionNaming, "session-name", c.SessionNaming, "what role sessions are named after, which decides which pods share one: node (one session per node and role), pod (namespace.pod, one per pod) or none (Roles Anywhere names it after the certificate serial); default node with rolesanywhere, pod with sts (README: Capacity)")

	fs.StringVar(&c.MetadataAddr, "metadata-addr", c.MetadataAddr, "upstream metadata service host[:port] for allowed paths, or none (default: 169.254.169.254 with sts, none with rolesanywhere)")
	fs.Var(&c.MetadataAllowPaths, "metadata-allow-path", "extra pass-through path pattern relative to the version, e.g. meta-data/tags/instance/** (* and ? per segment, ** at the end; a pattern that could match iam/, identity-credentials/ or api/ in any letter case is refused), repeatable")
	fs.BoolVar(&c.IMDSv2Required, "imdsv2-required", c.IMDSv2Required, "refuse metadata GETs without an IMDSv2 token (401, and an IMDSv1Refused Event on the pod), as IMDS with HttpTokens=required; false allows IMDSv1")
	fs.DurationVar(&c.PodLookupTimeout, "pod-lookup-timeout", c.PodLookupTimeout, "how long a request from an unknown IP waits for the pod to appear")
	fs.StringVar(&c.CNIResultsDir, "cni-results-dir", c.CNIResultsDir, "the container runtime's CNI result cache (libcni's, "+cniresults.DefaultDir+" on the host), read so a new pod is known by its address before the kubelet reports it to the API server (the API stays the authority); empty reads none")
	fs.Float64Var(&c.UpstreamQPS, "upstream-qps", c.UpstreamQPS, "calls per second to STS or Roles Anywhere from this node")
	fs.IntVar(&c.UpstreamBurst, "upstream-burst", c.UpstreamBurst, "burst of calls to STS or Roles Anywhere")
	fs.DurationVar(&c.CredentialMinTTL, "credential-min-ttl", c.CredentialMinTTL, "never serve credentials with less than this left (below 11m boto3 and the AWS CLI sign with expired credentials)")
	fs.Float64Var(&c.RateLimit, "rate-limit", c.RateLimit, "metadata requests per second per pod IP (429 beyond)")
	fs.StringVar(&c.PodIdentityAudience, "pod-identity-audience", c.PodIdentityAudience, "audience the token door (--pod-identity) requires of projected ServiceAccount tokens; pods.eks.amazonaws.com accepts tokens projected for EKS Pod Identity")

	fs.StringVar(&c.LogFormat, "log-format", c.LogFormat, "log format: text or json")
	fs.StringVar(&c.LogLevel, "log-level", c.LogLevel, "log level: debug, info, warn or error")
	fs.BoolVar(&c.Debug, "debug", c.Debug, "debug logs and the /debug/store page on the metrics port")
	fs.StringVar(&c.Kubeconfig, "kubeconfig", c.Kubeconfig, "kubeconfig file (default: in-cluster configuration)")
	fs.DurationVar(&c.ShutdownTimeout, "shutdown-timeout", c.ShutdownTimeout, "how long SIGTERM waits for requests in flight (and for a successor warming up to take the sockets over)")
	fs.StringVar(&c.HandoverDir, "handover-dir", c.HandoverDir, "directory (the agent's alone, made 0700) for the handover socket: a new agent on the node takes the serving agent's listening sockets over from it instead of binding them, so an upgrade (maxSurge) never refuses a connection; empty binds the ports (an upgrade then needs maxUnavailable)")

	c.bindKube2iamFlags(fs)
}

// envName is the environment variable that can set a flag.
func envName(flagName string) string {
	return "KUBE2RA_" + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

// legacyEnv are the downward-API variables the DaemonSet sets, as kube2iam reads them.
var legacyEnv = map[string]string{"node": "NODE_NAME", "host-ip": "HOST_IP", "host-ips": "HOST_IPS"}

// applyEnv sets every flag not given on the command line from its
// environment variable; flags win.
func applyEnv(fs *flag.FlagSet, getenv func(string) string) error {
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	var errs []error
	fs.VisitAll(func(f *flag.Flag) {
		if set[f.Name] {
			return
		}
		name := envName(f.Name)
		v := getenv(name)
		if v == "" && legacyEnv[f.Name] != "" {
			name = legacyEnv[f.Name]
			v = getenv(name)
		}
		if v == "" {
			return
		}
		if err := fs.Set(f.Name, v); err != nil {
			errs = append(errs, fmt.Errorf("invalid value %q in environment variable %s for --%s: %w", v, name, f.Name, err))
		}
	})
	return errors.Join(errs...)
}

// resolvedSource is the credential source after "auto".
func (c *Config) resolvedSource() string {
	if c.CredentialSource != sourceAuto {
		return c.CredentialSource
	}
	if c.RATrustAnchorARN != "" {
		return sourceRolesAnywhere
	}
	return sourceSTS
}

// resolvedMetadataAddr is the upstream metadata address after defaults.
func (c *Config) resolvedMetadataAddr() string {
	if c.MetadataAddr != "" {
		return c.MetadataAddr
	}
	if c.resolvedSource() == sourceRolesAnywhere {
		return proxy.MetadataAddrNone
	}
	return proxy.DefaultMetadataAddr
}

// Validate checks every setting and names each problem with the accepted form.
// maxPodLookupTimeout bounds --pod-lookup-timeout: a request waits no
// longer for its pod to appear.
const maxPodLookupTimeout = 30 * time.Second

func (c *Config) Validate() error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	var p parsedConfig

	if c.Node == "" {
		bad("--node is empty: set it or NODE_NAME to this node's name (the downward API's spec.nodeName)")
	}
	if c.HostIP == "" {
		bad("--host-ip is empty: set it or HOST_IP to this node's IP (the downward API's status.hostIP)")
	} else if ip, err := netip.ParseAddr(c.HostIP); err != nil || ip.IsUnspecified() {
		bad("--host-ip %q is not a usable IP address: give the node's own IP, e.g. 10.0.1.23", c.HostIP)
	} else {
		p.hostIP = ip
		if ip.Is6() && !ip.Is4In6() {
			// An IPv6-first dual-stack node: status.hostIP is its IPv6
			// address, but pods reach 169.254.169.254 over IPv4, so the
			// redirect and the listener need the node's IPv4 address.
			if v4, ok := firstIPv4(strings.Split(c.HostIPs, ",")); ok {
				p.hostIPv6First = ip
				c.HostIP, p.hostIP = v4.String(), v4
			} else {
				bad("--host-ip %s is IPv6 and --host-ips (HOST_IPS) has no IPv4 address: pods reach 169.254.169.254 over IPv4 and are redirected to the node's IPv4 address; set --host-ip to it (the chart gives HOST_IPS, the downward API's status.hostIPs, on Kubernetes 1.29 and later; IPv6-only nodes are not supported)", c.HostIP)
			}
		}
	}
	for name, port := range map[string]int{"--app-port": c.AppPort, "--metrics-port": c.MetricsPort} {
		if port < 1 || port > 65535 {
			bad("%s %d is out of range: use 1..65535", name, port)
		}
	}
	if c.IPTables {
		ifaces, err := iptables.ParseInterfaces(c.HostInterface)
		if err != nil {
			bad("--host-interface: %v", err)
		}
		p.interfaces = ifaces
	}
	if mode, err := iptables.ParseMode(c.IPTablesMode); err != nil {
		bad("--iptables-mode: %v", err)
	} else {
		p.iptablesMode = mode
	}
	if c.HandoverDir != "" && !filepath.IsAbs(c.HandoverDir) {
		bad("--handover-dir %q is not an absolute path: use the directory the chart mounts, e.g. /run/kube2ra", c.HandoverDir)
	}
	if c.IPTablesResync < time.Second {
		bad("--iptables-resync %s is too short: use 1s or more", c.IPTablesResync)
	}
	if c.CNI {
		for _, name := range []string{"--cni-bin-dir", "--cni-conf-dir", "--cni-plugin-binary", "--cni-netns-dir"} {
			if path := c.cniPath(name); !filepath.IsAbs(path) {
				bad("%s %q is not an absolute path: give the host directory as mounted into the agent, e.g. %s", name, path, NewConfig().cniPath(name))
			}
		}
		if c.CNIResync < time.Second {
			bad("--cni-resync %s is too short: use 1s or more", c.CNIResync)
		}
	}
	if c.IPv6 && c.HostIPv6 != "" { // empty: found at start (--host-ips, then the Node object)
		if ip, err := netip.ParseAddr(c.HostIPv6); err != nil || !ip.Is6() || ip.Is4In6() {
			bad("--host-ipv6 %q is not an IPv6 address: set the node's IPv6 address, or leave it empty to find it in --host-ips (HOST_IPS) or the Node object", c.HostIPv6)
		} else {
			p.hostIPv6 = ip
		}
	}
	for _, s := range strings.Split(c.HostIPs, ",") {
		if s = strings.TrimSpace(s); s != "" {
			if _, err := netip.ParseAddr(s); err != nil {
				bad("--host-ips entry %q is not an IP address: give the node's addresses, comma separated (the downward API's status.hostIPs)", s)
			}
		}
	}

	switch c.CredentialSource {
	case sourceAuto, sourceRolesAnywhere, sourceSTS:
	default:
		bad("--credential-source %q is unknown: use auto, rolesanywhere or sts", c.CredentialSource)
	}
	if c.BaseRoleARN != "" {
		if base, err := arn.ParseBase(c.BaseRoleARN); err != nil {
			bad("--base-role-arn: %v", err)
		} else {
			p.baseRoleARN = base
		}
	}
	for name, key := range map[string]string{"--iam-role-key": c.IAMRoleKey, "--iam-external-id": c.IAMExternalIDKey, "--namespace-key": c.NamespaceKey} {
		if problems := validation.IsQualifiedName(key); len(problems) > 0 {
			bad("%s %q is not a valid annotation key (%s): use prefix/name, e.g. %s", name, key, strings.Join(problems, "; "), k8s.DefaultRoleKey)
		}
	}
	if format, err := k8s.ParsePolicyFormat(c.NamespaceRestrictionFormat); err != nil {
		bad("--namespace-restriction-format: %v", err)
	} else {
		p.policyFormat = format
	}
	if c.SessionTTL < 15*time.Minute || c.SessionTTL > 12*time.Hour {
		bad("--iam-role-session-ttl %s is out of range: STS accepts 15m to 12h", c.SessionTTL)
	}
	if c.STSEndpoint != "" && !strings.HasPrefix(c.STSEndpoint, "https://") && !strings.HasPrefix(c.STSEndpoint, "http://") {
		bad("--sts-endpoint %q is not a URL: use https://host[:port]", c.STSEndpoint)
	}

	switch c.resolvedSource() {
	case sourceRolesAnywhere:
		if _, err := arn.ParseTrustAnchor(c.RATrustAnchorARN); err != nil {
			bad("--ra-trust-anchor-arn: %v", err)
		}
		if _, err := arn.ParseProfile(c.RAProfileARN); err != nil {
			bad("--ra-profile-arn: %v", err)
		}
		for name, path := range map[string]string{"--ra-certificate": c.RACertificate, "--ra-private-key": c.RAPrivateKey} {
			if path == "" {
				bad("%s is empty: give the node's PEM file (with rolesanywhere)", name)
			} else if _, err := os.Stat(path); err != nil {
				bad("%s %q cannot be read: %w", name, path, err)
			}
		}
		for name, path := range map[string]string{"--ra-intermediates": c.RAIntermediates, "--ra-private-key-password-file": c.RAPrivateKeyPasswordFile} {
			if path == "" {
				continue
			}
			if _, err := os.Stat(path); err != nil {
				bad("%s %q cannot be read: %w", name, path, err)
			}
		}
		if c.RASessionDuration < 15*time.Minute || c.RASessionDuration > 12*time.Hour {
			bad("--ra-session-duration %s is out of range: Roles Anywhere accepts 15m to 12h", c.RASessionDuration)
		}
		if c.RAEndpoint != "" && !strings.HasPrefix(c.RAEndpoint, "https://") && !strings.HasPrefix(c.RAEndpoint, "http://") {
			bad("--ra-endpoint %q is not a URL: use https://host[:port]", c.RAEndpoint)
		}
	case sourceSTS:
		if c.RATrustAnchorARN != "" || c.RAProfileARN != "" {
			bad("--ra-* flags are set but --credential-source is sts: drop them or use --credential-source=rolesanywhere")
		}
	}

	if naming, err := c.resolvedSessionNaming(); err != nil {
		bad("%v", err)
	} else {
		p.sessionNaming = naming
	}

	if addr := c.resolvedMetadataAddr(); addr != proxy.MetadataAddrNone {
		if base, err := proxy.ParseMetadataAddr(addr); err != nil {
			bad("--metadata-addr: %v", err)
		} else {
			p.metadataURL = base
		}
	}
	if err := proxy.ValidateAllowPaths(c.MetadataAllowPaths); err != nil {
		bad("--metadata-allow-path: %v", err)
	}
	if v := c.kube2iam["backoff-max-elapsed-time"]; v != nil && v.given && !c.flagGiven("pod-lookup-timeout", c.PodLookupTimeout != NewConfig().PodLookupTimeout) {
		// kube2iam's bound on waiting for an unknown pod IP (its default
		// 2s, often raised against first-request 404s) is this one.
		if d, err := time.ParseDuration(v.raw); err == nil && d > 0 {
			c.PodLookupTimeout = min(d, maxPodLookupTimeout)
		}
	}
	if c.PodLookupTimeout <= 0 || c.PodLookupTimeout > maxPodLookupTimeout {
		bad("--pod-lookup-timeout %s is out of range: use more than 0 and at most %s", c.PodLookupTimeout, maxPodLookupTimeout)
	}
	if c.CNIResultsDir != "" && !filepath.IsAbs(c.CNIResultsDir) {
		bad("--cni-results-dir %q is not an absolute path: give the runtime's result cache as mounted into the agent, e.g. %s, or \"\" to go without", c.CNIResultsDir, cniresults.DefaultDir)
	}
	if c.UpstreamQPS <= 0 {
		bad("--upstream-qps %g must be positive", c.UpstreamQPS)
	}
	if c.UpstreamBurst < 1 {
		bad("--upstream-burst %d must be at least 1", c.UpstreamBurst)
	}
	if c.CredentialMinTTL < 0 || c.CredentialMinTTL > maxCredentialMinTTL {
		bad("--credential-min-ttl %s is out of range: use 0 to %s", c.CredentialMinTTL, maxCredentialMinTTL)
	} else if d := c.sessionDuration(); c.CredentialMinTTL+minServableSpan > d {
		bad("--credential-min-ttl %s leaves sessions of %s less than %s to be served: lengthen the session (%s) or lower --credential-min-ttl", c.CredentialMinTTL, d, minServableSpan, c.sessionDurationFlag())
	}
	if c.RateLimit <= 0 {
		bad("--rate-limit %g must be positive (requests per second per pod)", c.RateLimit)
	}
	if c.PodIdentityAudience == "" || strings.ContainsAny(c.PodIdentityAudience, " \t\r\n") {
		bad("--pod-identity-audience %q must be one non-empty word without spaces, e.g. %s", c.PodIdentityAudience, k8s.DefaultPodIdentityAudience)
	}
	switch c.LogFormat {
	case "text", "json":
	default:
		bad("--log-format %q is unknown: use text or json", c.LogFormat)
	}
	if lvl, err := logrus.ParseLevel(c.LogLevel); err != nil {
		bad("--log-level %q is unknown: use debug, info, warn or error", c.LogLevel)
	} else {
		p.logLevel = lvl
	}
	if c.Debug || c.kube2iam["verbose"].on() {
		p.logLevel = logrus.DebugLevel
	}
	if c.ShutdownTimeout < 0 || c.ShutdownTimeout > 5*time.Minute {
		bad("--shutdown-timeout %s is out of range: use 0 to 5m", c.ShutdownTimeout)
	}
	if mode, err := credentials.ParseTagMode(c.SessionTags); err != nil {
		bad("--session-tags: %v", err)
	} else {
		p.tagMode = mode
		if mode == credentials.TagsEKS && c.ClusterName == "" {
			bad("--session-tags=eks needs --cluster-name (the eks-cluster-name tag): set it, or the chart's clusterName")
		}
	}
	if c.ClusterName != "" && !validClusterName(c.ClusterName) {
		bad("--cluster-name %q is not usable in a session tag and an external ID: use 1-100 letters, digits and - _ . (a Kubernetes-style name)", c.ClusterName)
	}
	if c.ClusterARN != "" {
		if _, _, name, err := parseClusterARN(c.ClusterARN); err != nil {
			bad("--cluster-arn: %v", err)
		} else if c.ClusterName != "" && name != c.ClusterName {
			bad("--cluster-arn names cluster %q but --cluster-name is %q: make them agree", name, c.ClusterName)
		}
	}
	if len(errs) > 0 {
		return errors.Join(errs...)
	}
	c.parsed = p
	return nil
}

// validClusterName: EKS cluster names are 1-100 of [0-9A-Za-z_-]; '.' is
// allowed too for clusters named like DNS names off AWS. None of these
// needs sanitising in a tag value or an external ID.
func validClusterName(s string) bool {
	if len(s) < 1 || len(s) > 100 {
		return false
	}
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' || r == '.') {
			return false
		}
	}
	return true
}

// parseClusterARN splits arn:PARTITION:eks:REGION:ACCOUNT:cluster/NAME.
func parseClusterARN(s string) (region, account, name string, err error) {
	parts := strings.SplitN(s, ":", 6)
	if len(parts) != 6 || parts[0] != "arn" || !arn.KnownPartition(parts[1]) || parts[2] != "eks" || parts[3] == "" || len(parts[4]) != 12 || !strings.HasPrefix(parts[5], "cluster/") {
		return "", "", "", fmt.Errorf("%q is not arn:PARTITION:eks:REGION:ACCOUNT:cluster/NAME", s)
	}
	name = strings.TrimPrefix(parts[5], "cluster/")
	if !validClusterName(name) {
		return "", "", "", fmt.Errorf("%q names no valid cluster", s)
	}
	return parts[3], parts[4], name, nil
}

const (
	// maxCredentialMinTTL bounds --credential-min-ttl: the shortest session
	// (15m) must keep some servable time.
	maxCredentialMinTTL = 14 * time.Minute
	// minServableSpan is the least time a session must be servable, so a
	// refresh has room to happen before the pod needs the next one.
	minServableSpan = time.Minute
)

// resolvedSessionNaming is --session-name (or --ra-role-session-name, its
// old spelling), else the source's default: node with Roles Anywhere, whose
// CreateSession quota (10/s per account and region) per-pod sessions
// exceed on a thousand nodes; pod with STS, per pod as kube2iam was.
func (c *Config) resolvedSessionNaming() (credentials.SessionNaming, error) {
	name := c.SessionNaming
	if c.RARoleSessionName {
		if name != "" && name != string(credentials.SessionNamingPod) {
			return "", fmt.Errorf("--ra-role-session-name (the old spelling of --session-name=pod) contradicts --session-name=%s: drop --ra-role-session-name", name)
		}
		name = string(credentials.SessionNamingPod)
	}
	sts := c.resolvedSource() == sourceSTS
	if name == "" {
		if sts {
			return credentials.SessionNamingPod, nil
		}
		return credentials.SessionNamingNode, nil
	}
	naming, err := credentials.ParseSessionNaming(name)
	if err != nil {
		return "", fmt.Errorf("--session-name: %w", err)
	}
	if naming == credentials.SessionNamingNone && sts {
		return "", errors.New("--session-name=none: sts:AssumeRole requires a session name; use pod (namespace.pod) or node")
	}
	return naming, nil
}

// sessionDuration is the lifetime of the credentials the source issues.
func (c *Config) sessionDuration() time.Duration {
	if c.resolvedSource() == sourceRolesAnywhere {
		return c.RASessionDuration
	}
	return c.SessionTTL
}

// sessionDurationFlag names the flag that sets sessionDuration.
func (c *Config) sessionDurationFlag() string {
	if c.resolvedSource() == sourceRolesAnywhere {
		return "--ra-session-duration"
	}
	return "--iam-role-session-ttl"
}

// LifetimeWarnings are the start-up warnings about how session length and
// --credential-min-ttl meet the SDKs' refresh logic (docs/design.md,
// "Credential lifetime and the SDKs"). A valid Config may have some.
func (c *Config) LifetimeWarnings() []string {
	var out []string
	minTTL := c.CredentialMinTTL
	if minTTL == 0 {
		minTTL = credentials.DefaultMinTTL
	}
	if minTTL < credentials.SDKMinTTL {
		out = append(out, fmt.Sprintf("--credential-min-ttl %s is below %s: boto3 and the AWS CLI keep using instance credentials for up to %s after reading them, so they will sign requests with expired credentials", minTTL, credentials.SDKMinTTL, credentials.BotocoreExtensionMaxUse))
	}
	d := c.sessionDuration()
	if span := d - minTTL; span > 0 && span < d/2 {
		out = append(out, fmt.Sprintf("sessions of %s are served for only %s each (none is served with less than --credential-min-ttl %s left, which the SDKs need), so each pod's role is refreshed upstream about every %s; set %s to %s or more to halve the upstream calls", d, span, minTTL, span, c.sessionDurationFlag(), 2*minTTL))
	}
	return out
}

// EndpointWarnings are the start-up warnings about AWS endpoints given as
// plain http:// on a host other than loopback: the signed request (with
// the node certificate, for Roles Anywhere) and the credentials in its
// answer cross the network unencrypted, and a signed request can be
// replayed for minutes. Test fakes on loopback are left alone.
func (c *Config) EndpointWarnings() []string {
	var out []string
	for _, e := range []struct{ flag, url string }{{"--sts-endpoint", c.STSEndpoint}, {"--ra-endpoint", c.RAEndpoint}} {
		u, err := url.Parse(e.url)
		if err != nil || u.Scheme != "http" {
			continue
		}
		if ip, err := netip.ParseAddr(u.Hostname()); (err == nil && ip.IsLoopback()) || u.Hostname() == "localhost" {
			continue
		}
		out = append(out, fmt.Sprintf("%s %s is plain http: the signed requests and the credentials AWS answers with cross the network unencrypted, and a captured request can be replayed for minutes; use https://", e.flag, e.url))
	}
	return out
}

// String lists every setting, one key=value per field, for the start-up log.
// The key and password are file paths; the one secret, kube2iam's
// --api-token, prints masked. Fields are sorted for stable output.
func (c *Config) String() string { return strings.Join(c.settings(), " ") }

// settings are the key=value pairs of String, sorted by flag name.
func (c *Config) settings() []string {
	fs := flag.NewFlagSet("print", flag.ContinueOnError)
	c.BindFlags(fs)
	var parts []string
	fs.VisitAll(func(f *flag.Flag) { parts = append(parts, f.Name+"="+f.Value.String()) })
	sort.Strings(parts)
	return parts
}

// printEffective is `run --dry-run`'s answer: every setting, one a line,
// then what the defaults resolve to on this configuration.
func printEffective(w io.Writer, c *Config) {
	fmt.Fprintln(w, "kube2ra run: configuration valid (--dry-run: nothing started)")
	for _, s := range c.settings() {
		fmt.Fprintln(w, "  --"+s)
	}
	metadata := c.parsed.metadataURL
	if metadata == "" {
		metadata = proxy.MetadataAddrNone
	}
	fmt.Fprintf(w, "resolved: credential source %s, metadata service %s, base role ARN %q, log level %s, session naming %s\n",
		c.resolvedSource(), metadata, c.parsed.baseRoleARN.String(), c.parsed.logLevel, c.parsed.sessionNaming)
}

// cniPath is the value of one of the --cni-* path flags.
func (c *Config) cniPath(flag string) string {
	return map[string]string{"--cni-bin-dir": c.CNIBinDir, "--cni-conf-dir": c.CNIConfDir, "--cni-plugin-binary": c.CNIPluginBinary, "--cni-netns-dir": c.CNINetnsDir}[flag]
}

// annotationKeys are the pod and namespace annotations the flags name.
func (c *Config) annotationKeys() k8s.AnnotationKeys {
	return k8s.AnnotationKeys{Role: c.IAMRoleKey, ExternalID: c.IAMExternalIDKey, Namespace: c.NamespaceKey}
}

// resolverOptions are the role rules the flags set, for the agent and for
// explain alike; the caller adds its Events and Logger.
func (c *Config) resolverOptions(base func() string) k8s.ResolverOptions {
	return k8s.ResolverOptions{
		Keys:                  c.annotationKeys(),
		DefaultRole:           c.DefaultRole,
		BaseRoleARN:           base,
		NamespaceRestrictions: c.NamespaceRestrictions,
		Format:                c.parsed.policyFormat,
		// External IDs are an AssumeRole parameter.
		ExternalIDAllowed: c.resolvedSource() == sourceSTS,
		// So are session policies: with Roles Anywhere only a target hop has one.
		SessionPolicyNeedsTarget: c.resolvedSource() == sourceRolesAnywhere,
	}
}
