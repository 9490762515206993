//go:build integration

package chart_test

import (
	"os"
	"path"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/kube2ra/kube2ra/test/chart"
)

// agentFlags are the agent's flag names, the contract cmd/kube2ra owns (the
// Flags list in the helpers' brief). The chart may pass no other.
var agentFlags = []string{
	"node", "host-ip", "app-port", "metrics-port", "host-interface", "iptables",
	"iptables-mode", "iptables-resync", "ipv6", "credential-source", "base-role-arn",
	"auto-discover-base-arn", "default-role", "auto-discover-default-role", "iam-role-key",
	"iam-external-id", "namespace-key", "namespace-restrictions", "namespace-restriction-format",
	"iam-role-session-ttl", "session-tags", "sts-endpoint", "region", "ra-trust-anchor-arn",
	"ra-profile-arn", "ra-certificate", "ra-private-key", "ra-intermediates",
	"ra-private-key-password-file", "ra-endpoint", "ra-fips", "ra-session-duration",
	"ra-role-session-name", "session-name", "metadata-addr", "metadata-allow-path", "imdsv2-required",
	"pod-lookup-timeout", "upstream-qps", "upstream-burst", "credential-min-ttl", "rate-limit",
	"log-format", "log-level", "debug", "kubeconfig", "shutdown-timeout",
	"pod-identity", "pod-identity-audience",
	"session-tags-transitive", "cluster-name", "cluster-arn",
	"cni", "cni-bin-dir", "cni-conf-dir", "cni-plugin-binary", "cni-resync", "cni-repair", "cni-netns-dir",
	"cni-results-dir",
	"handover-dir",
}

// repeatableFlags may appear more than once.
var repeatableFlags = []string{"metadata-allow-path"}

// wantClusterRules is everything the agent may do cluster-wide.
var wantClusterRules = []rbacv1.PolicyRule{
	{APIGroups: []string{""}, Resources: []string{"pods", "namespaces"}, Verbs: []string{"get", "list", "watch"}},
	{APIGroups: []string{""}, Resources: []string{"events"}, Verbs: []string{"create", "patch"}},
	// its own node's startup taint (the code patches --node only)
	{APIGroups: []string{""}, Resources: []string{"nodes"}, Verbs: []string{"get", "patch"}},
}

// podIdentityClusterRules are added with podIdentity.enabled: the ServiceAccounts' role
// annotations and the API server's OIDC discovery, to verify tokens locally.
var podIdentityClusterRules = []rbacv1.PolicyRule{
	{APIGroups: []string{""}, Resources: []string{"serviceaccounts"}, Verbs: []string{"list", "watch"}},
	{NonResourceURLs: []string{"/.well-known/openid-configuration", "/openid/v1/jwks"}, Verbs: []string{"get"}},
}

// clusterRulesFor is the ClusterRole's rules for a value set.
func clusterRulesFor(set valueSet) []rbacv1.PolicyRule {
	if set.name == "pod-identity" {
		return append(append([]rbacv1.PolicyRule{}, wantClusterRules...), podIdentityClusterRules...)
	}
	return wantClusterRules
}

// wantNamespaceRules is everything the agent may do in its own namespace: read and watch its
// own DaemonSet, by name.
var wantNamespaceRules = []rbacv1.PolicyRule{
	{APIGroups: []string{"apps"}, Resources: []string{"daemonsets"}, ResourceNames: []string{chart.ReleaseName}, Verbs: []string{"get", "list", "watch"}},
}

// agentDaemonSet returns the rendered DaemonSet, decoded strictly (an unknown field fails).
func agentDaemonSet(t *testing.T, objects []*unstructured.Unstructured) *appsv1.DaemonSet {
	t.Helper()
	obj := chart.Find(objects, "DaemonSet", chart.ReleaseName)
	if obj == nil {
		t.Fatalf("no DaemonSet %s rendered", chart.ReleaseName)
	}
	var ds appsv1.DaemonSet
	if err := chart.Convert(obj, &ds); err != nil {
		t.Fatal(err)
	}
	return &ds
}

// flagValues parses the container's arguments: "run", then --name=value only.
func flagValues(t *testing.T, args []string) map[string][]string {
	t.Helper()
	if len(args) == 0 || args[0] != "run" {
		t.Fatalf("the agent's arguments must start with the run subcommand, got %q", args)
	}
	flags := map[string][]string{}
	for _, arg := range args[1:] {
		name, value, ok := strings.Cut(strings.TrimPrefix(arg, "--"), "=")
		if !strings.HasPrefix(arg, "--") || !ok {
			t.Errorf("argument %q is not of the form --flag=value", arg)
			continue
		}
		if !slices.Contains(agentFlags, name) {
			t.Errorf("argument %q names no flag of the agent (see the Flags contract)", arg)
		}
		if len(flags[name]) > 0 && !slices.Contains(repeatableFlags, name) {
			t.Errorf("flag --%s is passed twice", name)
		}
		flags[name] = append(flags[name], value)
	}
	return flags
}

// TestDaemonSetKeepsItsSecurityPromises checks, for every value set, what the
// chart promises about the pod: host network wiring, downward-API identity,
// probes on the metrics port, the smallest capability set on a read-only root,
// the shared xtables lock, and flags that the agent actually has.
func TestDaemonSetKeepsItsSecurityPromises(t *testing.T) {
	for _, set := range valueSets(t) {
		t.Run(set.name, func(t *testing.T) {
			ds := agentDaemonSet(t, renderObjects(t, set))
			spec := ds.Spec.Template.Spec

			// The node's resolver: the agent's AWS calls must not wait on cluster DNS.
			if !spec.HostNetwork || spec.DNSPolicy != corev1.DNSDefault {
				t.Errorf("hostNetwork %v, dnsPolicy %q: want hostNetwork with Default", spec.HostNetwork, spec.DNSPolicy)
			}
			if spec.PriorityClassName != "system-node-critical" {
				t.Errorf("priorityClassName %q, want system-node-critical", spec.PriorityClassName)
			}
			if !slices.ContainsFunc(spec.Tolerations, func(tol corev1.Toleration) bool {
				return tol.Operator == corev1.TolerationOpExists && tol.Key == "" && tol.Effect == ""
			}) {
				t.Errorf("tolerations %+v do not tolerate every taint", spec.Tolerations)
			}
			if len(spec.Containers) != 1 {
				t.Fatalf("%d containers, want the agent alone", len(spec.Containers))
			}
			c := spec.Containers[0]
			flags := flagValues(t, c.Args)
			// With the handover the new agent runs beside the old one until it
			// serves the old one's sockets (maxSurge, nothing unavailable);
			// without it the ports are bound anew (maxUnavailable).
			handover := len(flags["handover-dir"]) == 1
			if s := ds.Spec.UpdateStrategy; s.Type != appsv1.RollingUpdateDaemonSetStrategyType || s.RollingUpdate == nil || s.RollingUpdate.MaxUnavailable == nil {
				t.Errorf("updateStrategy %+v, want RollingUpdate with maxUnavailable", s)
			} else if handover && !setsValue(t, set, "updateStrategy") && (s.RollingUpdate.MaxSurge == nil || s.RollingUpdate.MaxSurge.String() != "1" || s.RollingUpdate.MaxUnavailable.String() != "0") {
				t.Errorf("default updateStrategy %+v with --handover-dir, want maxSurge 1 and maxUnavailable 0", s.RollingUpdate)
			} else if !handover && (s.RollingUpdate.MaxUnavailable.String() == "0" || s.RollingUpdate.MaxSurge != nil && s.RollingUpdate.MaxSurge.String() != "0") {
				t.Errorf("updateStrategy %+v without --handover-dir: a surge pod could never bind the ports the old one holds", s.RollingUpdate)
			}
			if handover {
				// A hostNetwork pod's declared port is a host port to the
				// scheduler: the surge pod would stay Pending beside the old one.
				if len(c.Ports) != 0 {
					t.Errorf("container ports %v with --handover-dir: want none", c.Ports)
				}
				i := slices.IndexFunc(c.VolumeMounts, func(m corev1.VolumeMount) bool { return m.MountPath == flags["handover-dir"][0] })
				if i < 0 {
					t.Errorf("--handover-dir=%v is not mounted", flags["handover-dir"])
				} else if v := slices.IndexFunc(spec.Volumes, func(v corev1.Volume) bool { return v.Name == c.VolumeMounts[i].Name }); v < 0 || spec.Volumes[v].HostPath == nil {
					t.Errorf("--handover-dir=%v is not a hostPath volume: the successor pod must find the socket", flags["handover-dir"])
				}
			}

			for name, field := range map[string]string{
				"NODE_NAME": "spec.nodeName", "HOST_IP": "status.hostIP",
				"POD_NAME": "metadata.name", "POD_NAMESPACE": "metadata.namespace",
			} {
				i := slices.IndexFunc(c.Env, func(e corev1.EnvVar) bool { return e.Name == name })
				if i < 0 || c.Env[i].ValueFrom == nil || c.Env[i].ValueFrom.FieldRef == nil || c.Env[i].ValueFrom.FieldRef.FieldPath != field {
					t.Errorf("env %s is not taken from the downward API's %s", name, field)
				}
			}
			if flags["node"][0] != "$(NODE_NAME)" || flags["host-ip"][0] != "$(HOST_IP)" {
				t.Errorf("--node=%v --host-ip=%v, want the downward-API variables", flags["node"], flags["host-ip"])
			}

			// The probes target the one container port that is --metrics-port:
			// "metrics", or "proxy" when it equals --app-port (kube2iam's layout).
			opsPort := ""
			for _, p := range c.Ports {
				if flags["metrics-port"][0] == strconv.Itoa(int(p.ContainerPort)) {
					if opsPort != "" {
						t.Errorf("container ports %v declare --metrics-port=%v twice", c.Ports, flags["metrics-port"])
					}
					opsPort = p.Name
				}
			}
			if handover {
				opsPort = flags["metrics-port"][0]
			} else if want := map[bool]string{true: "proxy", false: "metrics"}[flags["metrics-port"][0] == flags["app-port"][0]]; opsPort != want {
				t.Errorf("container ports %v: --metrics-port=%v is port %q, want %q", c.Ports, flags["metrics-port"], opsPort, want)
			}
			for probe, wantPath := range map[*corev1.Probe]string{c.LivenessProbe: "/healthz", c.ReadinessProbe: "/readyz"} {
				if probe == nil || probe.HTTPGet == nil || probe.HTTPGet.Path != wantPath || probe.HTTPGet.Port.String() != opsPort {
					t.Errorf("probe %+v, want GET %s on the --metrics-port container port %q", probe, wantPath, opsPort)
				}
			}
			if len(c.Resources.Requests) == 0 || c.Resources.Limits.Memory().IsZero() {
				t.Errorf("resources %+v: want requests and a memory limit", c.Resources)
			}

			sc := c.SecurityContext
			if sc == nil || sc.Capabilities == nil || !reflect.DeepEqual(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) {
				t.Fatalf("securityContext %+v must drop ALL capabilities", sc)
			}
			iptables := flags["iptables"][0] == "true"
			cni := len(flags["cni"]) == 1 && flags["cni"][0] == "true"
			repair := cni && flags["cni-repair"][0] == "true"
			// The agent is root when it writes iptables rules or the host's
			// root-owned CNI directories; SYS_ADMIN only to enter pods'
			// network namespaces for repair.
			root := iptables || cni
			wantAdd := []corev1.Capability(nil)
			switch {
			case repair:
				wantAdd = []corev1.Capability{"NET_ADMIN", "NET_RAW", "SYS_ADMIN"}
			case root:
				wantAdd = []corev1.Capability{"NET_ADMIN", "NET_RAW"}
			default:
				if sc.RunAsNonRoot == nil || !*sc.RunAsNonRoot || sc.RunAsUser == nil || *sc.RunAsUser == 0 {
					t.Errorf("without iptables and the CNI plugin the agent must run as non-root, got runAsUser %v runAsNonRoot %v", sc.RunAsUser, sc.RunAsNonRoot)
				}
			}
			if !reflect.DeepEqual(sc.Capabilities.Add, wantAdd) {
				t.Errorf("capabilities added %v, want %v", sc.Capabilities.Add, wantAdd)
			}
			if sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem ||
				sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation ||
				(sc.Privileged != nil && *sc.Privileged) ||
				sc.SeccompProfile == nil || sc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
				t.Errorf("securityContext %+v: want read-only root, no privilege escalation, not privileged, seccomp RuntimeDefault", sc)
			}

			mounts := map[string]string{} // volume name -> mount path
			for _, m := range c.VolumeMounts {
				mounts[m.Name] = m.MountPath
			}
			// Host paths: the xtables lock at its own place; with the CNI
			// plugin its two directories (and, for repair, the network
			// namespaces read-only) under /host at the paths the flags name.
			wantHost := map[string]string{}
			if root {
				wantHost["/run/xtables.lock"] = "/run/xtables.lock"
			}
			if cni {
				for _, f := range []string{"cni-bin-dir", "cni-conf-dir"} {
					wantHost[strings.TrimPrefix(flags[f][0], "/host")] = flags[f][0]
				}
			}
			if repair {
				wantHost[strings.TrimPrefix(flags["cni-netns-dir"][0], "/host")] = flags["cni-netns-dir"][0]
			}
			// The runtime's CNI result cache, read as root (its files are 0600).
			if root {
				wantHost["/var/lib/cni/results"] = "/host/var/lib/cni/results"
				if got := flags["cni-results-dir"]; len(got) != 1 || got[0] != "/host/var/lib/cni/results" {
					t.Errorf("--cni-results-dir %q, want the mounted /host/var/lib/cni/results", got)
				}
				i := slices.IndexFunc(c.VolumeMounts, func(m corev1.VolumeMount) bool { return m.MountPath == "/host/var/lib/cni/results" })
				if i < 0 || !c.VolumeMounts[i].ReadOnly {
					t.Errorf("the CNI result cache must be mounted read-only (mounts %+v)", c.VolumeMounts)
				}
			} else if len(flags["cni-results-dir"]) > 0 {
				t.Errorf("--cni-results-dir %q without root: the agent could not read the runtime's 0600 files", flags["cni-results-dir"])
			}
			if handover {
				// The root agent alone, in a directory of its own.
				if !root {
					t.Errorf("--handover-dir with the non-root agent: it cannot own the host directory")
				}
				wantHost["/run/kube2ra"] = flags["handover-dir"][0]
			}
			gotHost := map[string]string{}
			for _, v := range spec.Volumes {
				if v.HostPath == nil {
					continue
				}
				gotHost[v.HostPath.Path] = mounts[v.Name]
				wantType := corev1.HostPathDirectoryOrCreate
				if v.HostPath.Path == "/run/xtables.lock" {
					wantType = corev1.HostPathFileOrCreate
				}
				if v.HostPath.Type == nil || *v.HostPath.Type != wantType {
					t.Errorf("host path volume %+v: want type %s", v, wantType)
				}
			}
			if !reflect.DeepEqual(gotHost, wantHost) {
				t.Errorf("host paths (host -> container) %v, want exactly %v (iptables %v, cni %v, repair %v)", gotHost, wantHost, iptables, cni, repair)
			}
			if repair {
				i := slices.IndexFunc(c.VolumeMounts, func(m corev1.VolumeMount) bool { return m.MountPath == flags["cni-netns-dir"][0] })
				if m := c.VolumeMounts[i]; !m.ReadOnly || m.MountPropagation == nil || *m.MountPropagation != corev1.MountPropagationHostToContainer {
					t.Errorf("network namespace mount %+v: want read-only with HostToContainer propagation (new pods' namespaces appear)", m)
				}
			}

			if certs, ok := flags["ra-certificate"]; ok {
				key := flags["ra-private-key"]
				certDir := mounts["node-certificate"]
				if certDir == "" || len(key) != 1 || path.Dir(certs[0]) != certDir || path.Dir(key[0]) != certDir {
					t.Errorf("--ra-certificate=%v --ra-private-key=%v are not in the mounted node certificate volume (%q)", certs, key, certDir)
				}
				if len(flags["ra-trust-anchor-arn"]) != 1 || len(flags["ra-profile-arn"]) != 1 {
					t.Errorf("Roles Anywhere flags without trust anchor or profile: %v", flags)
				}
			}
		})
	}
}

// TestRBACIsExactlyWhatTheAgentNeeds pins the rendered rules for every value
// set, checks the bindings point at the DaemonSet's ServiceAccount, and that
// RenderedAgentRBAC (what the agent's integration tests bind) returns them.
func TestRBACIsExactlyWhatTheAgentNeeds(t *testing.T) {
	for _, set := range valueSets(t) {
		t.Run(set.name, func(t *testing.T) {
			objects := renderObjects(t, set)
			sa := agentDaemonSet(t, objects).Spec.Template.Spec.ServiceAccountName

			var clusterRole rbacv1.ClusterRole
			var role rbacv1.Role
			var clusterBinding rbacv1.ClusterRoleBinding
			var binding rbacv1.RoleBinding
			for kind, into := range map[string]any{"ClusterRole": &clusterRole, "Role": &role, "ClusterRoleBinding": &clusterBinding, "RoleBinding": &binding} {
				obj := chart.Find(objects, kind, chart.ReleaseName)
				if obj == nil {
					t.Fatalf("no %s %s rendered", kind, chart.ReleaseName)
				}
				if err := chart.Convert(obj, into); err != nil {
					t.Fatal(err)
				}
			}
			if want := clusterRulesFor(set); !reflect.DeepEqual(clusterRole.Rules, want) {
				t.Errorf("ClusterRole rules %+v, want exactly %+v", clusterRole.Rules, want)
			}
			if !reflect.DeepEqual(role.Rules, wantNamespaceRules) || role.Namespace != chart.Namespace {
				t.Errorf("Role %s/%s rules %+v, want exactly %+v in %s", role.Namespace, role.Name, role.Rules, wantNamespaceRules, chart.Namespace)
			}
			wantSubject := []rbacv1.Subject{{Kind: "ServiceAccount", Name: sa, Namespace: chart.Namespace}}
			if clusterBinding.RoleRef.Kind != "ClusterRole" || clusterBinding.RoleRef.Name != clusterRole.Name || !reflect.DeepEqual(clusterBinding.Subjects, wantSubject) {
				t.Errorf("ClusterRoleBinding %+v does not bind ClusterRole %s to %+v", clusterBinding, clusterRole.Name, wantSubject)
			}
			if binding.RoleRef.Kind != "Role" || binding.RoleRef.Name != role.Name || !reflect.DeepEqual(binding.Subjects, wantSubject) {
				t.Errorf("RoleBinding %+v does not bind Role %s to %+v", binding, role.Name, wantSubject)
			}

			rules, err := chart.RenderedAgentRBAC(set.file)
			if err != nil {
				t.Fatal(err)
			}
			if want := clusterRulesFor(set); !reflect.DeepEqual(rules, want) {
				t.Errorf("RenderedAgentRBAC = %+v, want %+v", rules, want)
			}
			nsRules, err := chart.RenderedAgentNamespaceRBAC(set.file)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(nsRules, wantNamespaceRules) {
				t.Errorf("RenderedAgentNamespaceRBAC = %+v, want %+v", nsRules, wantNamespaceRules)
			}
		})
	}
}

// setsValue reports whether set's values file sets the top-level key.
func setsValue(t *testing.T, set valueSet, key string) bool {
	t.Helper()
	if set.file == "" {
		return false
	}
	b, err := os.ReadFile(set.file)
	if err != nil {
		t.Fatal(err)
	}
	return regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(key) + `:`).Match(b)
}

// TestHostIPsOnlyWhereTheAPIServerHasIt: status.hostIPs is a pod field from
// Kubernetes 1.29; an older API server refuses the whole DaemonSet, so the
// chart sets HOST_IPS only where it exists (the agent reads the Node object
// otherwise).
func TestHostIPsOnlyWhereTheAPIServerHasIt(t *testing.T) {
	for version, want := range map[string]bool{"v1.27.16": false, "v1.28.15-eks-7f9249a": false, "v1.29.0": true, chart.KubeVersion: true} {
		objects, err := chart.Objects(render(t, valueSet{name: "defaults"}, "--kube-version", version))
		if err != nil {
			t.Fatal(err)
		}
		ds := agentDaemonSet(t, objects)
		got := false
		for _, e := range ds.Spec.Template.Spec.Containers[0].Env {
			if e.ValueFrom != nil && e.ValueFrom.FieldRef != nil && e.ValueFrom.FieldRef.FieldPath == "status.hostIPs" {
				got = e.Name == "HOST_IPS"
			}
		}
		if got != want {
			t.Errorf("Kubernetes %s: HOST_IPS from status.hostIPs rendered = %v, want %v", version, got, want)
		}
	}
}

// TestSELinuxOptionsReachTheAgentContainer: seLinuxOptions (spc_t on
// SELinux-enforcing nodes) lands in the agent container's securityContext,
// and nothing is set by default.
func TestSELinuxOptionsReachTheAgentContainer(t *testing.T) {
	for args, want := range map[string]string{"": "", "seLinuxOptions.type=spc_t": "spc_t"} {
		var helmArgs []string
		if args != "" {
			helmArgs = []string{"--set", args}
		}
		objects, err := chart.Objects(render(t, valueSet{name: "defaults"}, helmArgs...))
		if err != nil {
			t.Fatal(err)
		}
		sc := agentDaemonSet(t, objects).Spec.Template.Spec.Containers[0].SecurityContext
		got := ""
		if sc != nil && sc.SELinuxOptions != nil {
			got = sc.SELinuxOptions.Type
		}
		if got != want {
			t.Errorf("--set %q: SELinux type %q, want %q", args, got, want)
		}
	}
}
