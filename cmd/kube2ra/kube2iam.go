package main

import (
	"flag"
	"fmt"
	"io"
	"net/netip"
	"strconv"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/kube2ra/kube2ra/iptables"
	"github.com/kube2ra/kube2ra/proxy"
)

// kube2iamHandling says what kube2ra does with one of kube2iam's flags.
type kube2iamHandling string

const (
	// kube2iamSame: kube2ra has the flag, under the same name and with the
	// same meaning (its default may differ: README, "Migrating from kube2iam").
	kube2iamSame kube2iamHandling = "same"
	// kube2iamMapped: accepted and turned into the kube2ra setting that has
	// kube2iam's meaning.
	kube2iamMapped kube2iamHandling = "mapped"
	// kube2iamIgnored: accepted and ignored, with a warning at start saying why.
	kube2iamIgnored kube2iamHandling = "ignored"
)

// kube2iamValueKind is the type of a kube2iam-only flag's value.
type kube2iamValueKind int

const (
	kube2iamBool kube2iamValueKind = iota
	kube2iamString
	kube2iamDuration
)

// kube2iamFlag is one flag of kube2iam and kube2ra's answer to it.
type kube2iamFlag struct {
	// name is the flag's name, without dashes.
	name string
	// handling is what kube2ra does with it.
	handling kube2iamHandling
	// kind is the value's type (kube2iam-only flags; same-named flags are kube2ra's own).
	kind kube2iamValueKind
	// note is the reason printed when the flag is given (mapped and ignored flags).
	note string
	// secret values are never printed.
	secret bool
	// loud warnings are logged at error level: the flag asked for less security.
	loud bool
}

// kube2iamFlags is every flag of kube2iam's addFlags (jtblin/kube2iam,
// cmd/main.go), in its order: the one list the parser binds, the README's
// migration table is checked against, and the start-up warnings come from.
func kube2iamFlags() []kube2iamFlag {
	backoffHow := "kube2ra waits for an unknown pod IP by watching, not polling, for up to --pod-lookup-timeout; set that instead"
	kubeconfigHow := "kube2ra reaches the API server with its pod's in-cluster configuration (ServiceAccount token, cluster CA) or with --kubeconfig; to keep another server or token, write them into a kubeconfig (clusters[].cluster.server, users[].user.token or tokenFile) and pass --kubeconfig"
	return []kube2iamFlag{
		{name: "kubeconfig", handling: kube2iamSame},
		{name: "api-server", handling: kube2iamIgnored, kind: kube2iamString, note: kubeconfigHow},
		{name: "api-token", handling: kube2iamIgnored, kind: kube2iamString, secret: true, note: kubeconfigHow},
		{name: "app-port", handling: kube2iamSame},
		{name: "metrics-port", handling: kube2iamSame},
		{name: "base-role-arn", handling: kube2iamSame},
		{name: "debug", handling: kube2iamSame},
		{name: "default-role", handling: kube2iamSame},
		{name: "iam-role-key", handling: kube2iamSame},
		{name: "iam-external-id", handling: kube2iamSame},
		{name: "iam-role-session-ttl", handling: kube2iamSame},
		{name: "iam-role-error-ttl", handling: kube2iamIgnored, kind: kube2iamDuration,
			note: "kube2ra remembers a failed credential request for 1s, doubling with each consecutive failure up to 30s; there is no separate error TTL"},
		{name: "insecure", handling: kube2iamIgnored, kind: kube2iamBool, loud: true,
			note: "kube2ra always verifies the API server's TLS certificate; it never talks to it insecurely"},
		{name: "metadata-addr", handling: kube2iamSame},
		{name: "iptables", handling: kube2iamSame},
		{name: "auto-discover-base-arn", handling: kube2iamSame},
		{name: "auto-discover-default-role", handling: kube2iamIgnored, kind: kube2iamBool, loud: true,
			note: "kube2ra never serves the node's own role to pods: a pod without an annotation gets no credentials (404) unless --default-role names a role made for it"},
		{name: "host-interface", handling: kube2iamSame},
		{name: "namespace-restrictions", handling: kube2iamSame},
		{name: "namespace-restriction-format", handling: kube2iamSame},
		{name: "namespace-key", handling: kube2iamSame},
		{name: "cache-resync-period", handling: kube2iamIgnored, kind: kube2iamDuration,
			note: "kube2ra's informers react to every change and never resync periodically"},
		{name: "resolve-duplicate-cache-ips", handling: kube2iamIgnored, kind: kube2iamBool,
			note: "kube2ra never serves an IP claimed by two live pods: such a caller gets 404 until one pod holds it"},
		{name: "host-ip", handling: kube2iamSame},
		{name: "node", handling: kube2iamSame},
		{name: "backoff-max-interval", handling: kube2iamIgnored, kind: kube2iamDuration,
			note: backoffHow},
		{name: "backoff-max-elapsed-time", handling: kube2iamMapped, kind: kube2iamDuration,
			note: "read as --pod-lookup-timeout (at most " + maxPodLookupTimeout.String() + ") unless that is set: both bound how long a request from an unknown pod IP waits for the pod (kube2ra watches rather than polls)"},
		{name: "log-format", handling: kube2iamSame},
		{name: "log-level", handling: kube2iamSame},
		{name: "use-regional-sts-endpoint", handling: kube2iamIgnored, kind: kube2iamBool,
			note: "kube2ra always calls the regional STS endpoint (--sts-endpoint overrides it)"},
		{name: "verbose", handling: kube2iamMapped, kind: kube2iamBool,
			note: "read as --log-level=debug, as kube2iam does (kube2ra's --debug also opens /debug/store)"},
		{name: "version", handling: kube2iamMapped, kind: kube2iamBool,
			note: "prints the version and exits, as `kube2ra version` does"},
	}
}

// kube2iamValue is the value of a kube2iam-only flag: kept as given, after
// checking its type as kube2iam would.
type kube2iamValue struct {
	// flag is the table entry.
	flag kube2iamFlag
	// raw is the value as given; "" when not given.
	raw string
	// given is whether the flag was set (command line or environment).
	given bool
}

func (v *kube2iamValue) String() string {
	if v == nil || !v.given {
		if v != nil && v.flag.kind == kube2iamBool {
			return "false"
		}
		return ""
	}
	if v.flag.secret {
		return "(set, not shown)"
	}
	return v.raw
}

func (v *kube2iamValue) Set(s string) error {
	switch v.flag.kind {
	case kube2iamBool:
		b, err := strconv.ParseBool(s)
		if err != nil {
			return fmt.Errorf("kube2iam's --%s takes true or false", v.flag.name)
		}
		s = strconv.FormatBool(b)
	case kube2iamDuration:
		if _, err := time.ParseDuration(s); err != nil {
			return fmt.Errorf("kube2iam's --%s takes a duration such as 30s", v.flag.name)
		}
	}
	v.raw, v.given = s, true
	return nil
}

// IsBoolFlag lets a bool flag stand alone (`--verbose`), as in kube2iam.
func (v *kube2iamValue) IsBoolFlag() bool { return v.flag.kind == kube2iamBool }

// on is whether a bool flag was given as true.
func (v *kube2iamValue) on() bool { return v != nil && v.given && v.raw == "true" }

// bindKube2iamFlags registers kube2iam's flags that kube2ra has no flag of
// its own for; their values land in c.kube2iam.
func (c *Config) bindKube2iamFlags(fs *flag.FlagSet) {
	if c.kube2iam == nil {
		c.kube2iam = map[string]*kube2iamValue{}
	}
	for _, f := range kube2iamFlags() {
		if f.handling == kube2iamSame {
			continue
		}
		v := c.kube2iam[f.name]
		if v == nil {
			v = &kube2iamValue{flag: f}
			c.kube2iam[f.name] = v
		}
		fs.Var(v, f.name, fmt.Sprintf("kube2iam's flag, %s: %s", f.handling, f.note))
	}
}

// kube2iamNotice is one start-up message about a kube2iam flag given.
type kube2iamNotice struct {
	// loud notices are errors: the flag asked for less security than kube2ra gives.
	loud bool
	// text names the flag and the reason.
	text string
}

// Kube2iamNotices says, once per kube2iam flag given, what kube2ra did with
// it; secret values are never part of it.
func (c *Config) Kube2iamNotices() []kube2iamNotice {
	var out []kube2iamNotice
	for _, f := range kube2iamFlags() {
		v := c.kube2iam[f.name]
		if v == nil || !v.given {
			continue
		}
		text := fmt.Sprintf("--%s is kube2iam's and is %s: %s", f.name, f.handling, f.note)
		out = append(out, kube2iamNotice{loud: f.loud && v.raw != "false", text: text})
	}
	if len(out) == 0 || c.explicit == nil {
		return out
	}
	// A kube2iam DaemonSet's arguments: say which defaults changed under
	// them, unless they set the flag themselves.
	for _, d := range kube2iamChangedDefaults {
		if !c.explicit[d.flag] {
			out = append(out, kube2iamNotice{text: "--" + d.flag + " is not set and kube2ra's default differs from kube2iam's: " + d.note})
		}
	}
	return out
}

// kube2iamChangedDefaults are kube2ra's defaults a kube2iam DaemonSet would
// meet without setting them (README, "What else differs").
var kube2iamChangedDefaults = []struct{ flag, note string }{
	{"namespace-restrictions", "kube2ra enforces iam.amazonaws.com/allowed-roles (true; kube2iam false), so a namespace without it allows no role; annotate the namespaces, or pass --namespace-restrictions=false to keep kube2iam's behaviour"},
	{"imdsv2-required", "IMDSv1 reads (no token) get 401 and an IMDSv1Refused Event (true; kube2iam answered them); pass --imdsv2-required=false to answer them"},
	{"metadata-allow-path", "only an allowlist of metadata paths goes to the real service (kube2iam passed every path but the credentials); add the ones your pods read"},
	{"iptables", "kube2ra installs the DNAT rule itself (true; kube2iam false)"},
	{"host-interface", "cni0 (kube2iam docker0); name your CNI's pod interfaces, e.g. cali+ or !eth0"},
}

// writeKube2iamNotices prints the notices for `run --dry-run`.
func (c *Config) writeKube2iamNotices(w io.Writer) {
	for _, n := range c.Kube2iamNotices() {
		fmt.Fprintf(w, "kube2ra run: warning: %s\n", n.text)
	}
}

// logKube2iamNotices logs each notice once at start.
func (c *Config) logKube2iamNotices(log logrus.FieldLogger) {
	for _, n := range c.Kube2iamNotices() {
		if n.loud {
			log.Error(n.text)
			continue
		}
		log.Warn(n.text)
	}
}

// sharesMetadataPort is kube2iam's layout: --metrics-port equal to --app-port.
func (c *Config) sharesMetadataPort() bool { return c.MetricsPort == c.AppPort }

// shareMetadataPort puts the ops routes on the metadata port when the ports
// are one, and else /healthz alone, as kube2iam answered it on its app
// port whatever its --metrics-port (kube2iam's chart aims both probes
// there); pods reaching the port through any of the DNATed addresses never
// get them.
func (a *agent) shareMetadataPort() error {
	p := proxy.SharedPort{
		Ops:           a.ops,
		MetadataAddrs: []netip.Addr{iptables.MetadataIPv4, iptables.MetadataIPv6, iptables.PodIdentityIPv4, iptables.PodIdentityIPv6},
	}
	if !a.cfg.sharesMetadataPort() {
		p.Only = proxy.HealthzPath
	}
	return a.server.ShareWith(p)
}
