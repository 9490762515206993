package harness

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/sirupsen/logrus"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/kube2ra/kube2ra/iptables"
	"github.com/kube2ra/kube2ra/test/chart"
	"github.com/kube2ra/kube2ra/test/controlplane"
	"github.com/kube2ra/kube2ra/test/fakeaws/fakeimds"
	"github.com/kube2ra/kube2ra/test/fakeaws/fakera"
	"github.com/kube2ra/kube2ra/test/fakeaws/fakests"
	"github.com/kube2ra/kube2ra/test/simnode"
	"github.com/kube2ra/kube2ra/trustroots"
)

// Flavour is how the node gets credentials.
type Flavour string

const (
	// RolesAnywhere: a node off AWS, no metadata service, Roles Anywhere.
	RolesAnywhere Flavour = "rolesanywhere"
	// EC2: an instance with a metadata service and an instance role, STS.
	EC2 Flavour = "ec2"
)

// Fixed identities of the simulated account.
const (
	// Account is the simulated AWS account.
	Account = "123456789012"
	// NodeName is the simulated node's name.
	NodeName = "node-e2e"
	// RARegion is the trust anchor's region.
	RARegion = "eu-central-1"
	// EC2Region is the instance's region.
	EC2Region = "eu-west-1"
	// TrustAnchorARN is the Roles Anywhere trust anchor.
	TrustAnchorARN = "arn:aws:rolesanywhere:" + RARegion + ":" + Account + ":trust-anchor/0f1e2d3c-4b5a-6978-8a9b-0c1d2e3f4a5b"
	// ProfileARN is the Roles Anywhere profile.
	ProfileARN = "arn:aws:rolesanywhere:" + RARegion + ":" + Account + ":profile/9a8b7c6d-5e4f-3a2b-1c0d-e9f8a7b6c5d4"
	// AppPort and MetricsPort are the agent's ports.
	AppPort, MetricsPort = 8181, 9181
	// AgentUser is the identity the agent authenticates as, bound to the
	// chart's rendered ClusterRole.
	AgentUser = "system:serviceaccount:kube-system:kube2ra"
)

// Options configure Start.
type Options struct {
	// Flavour picks the credential source; RolesAnywhere by default.
	Flavour Flavour
	// Roles are role names the fake AWS lets the node hand out.
	Roles []string
	// AgentArgs are added to the agent's command line (later flags win).
	AgentArgs []string
	// AgentEnv is added to the agent's environment.
	AgentEnv []string
	// Log mirrors the agent's output; nil keeps it only in memory.
	Log io.Writer
	// NoAgent leaves the agent unstarted (Env.Agent is prepared).
	NoAgent bool
	// IPv6 makes the node and its bridge pods dual-stack and runs the agent
	// with --ipv6, its IPv6 address given only as HOST_IPS (status.hostIPs).
	IPv6 bool
	// PodIdentity opens the token door: the agent runs with --pod-identity
	// and the chart's pod-identity RBAC, and the chart's admission policy is
	// installed.
	PodIdentity bool
	// MetricsPort is the agent's --metrics-port; 0 means MetricsPort.
	// AppPort shares the metadata port, as kube2iam's chart does.
	MetricsPort int
}

// Env is a running simulated node with its control plane and fake AWS.
type Env struct {
	// Flavour is the credential source in use.
	Flavour Flavour
	// Node is the simulated node (this process runs inside it).
	Node *simnode.Node
	// CP is the real kube-apiserver and etcd.
	CP *controlplane.ControlPlane
	// Kube is an admin client.
	Kube kubernetes.Interface
	// STS is the fake STS, on the node IP so pods can call it too.
	STS *fakests.Server
	// STSURL is the fake STS's URL as pods and the agent reach it.
	STSURL string
	// RA is the fake Roles Anywhere endpoint (RolesAnywhere flavour).
	RA *fakera.Server
	// IMDS is the upstream metadata service (EC2 flavour).
	IMDS *fakeimds.Server
	// PKI is the node's certificate material (RolesAnywhere flavour).
	PKI *PKI
	// Agent is the kube2ra process.
	Agent *Agent
	// Dir holds files of this environment.
	Dir string

	mu sync.Mutex
	// pods are the pods created through the Env, by namespace/name.
	pods map[string]*Pod
	// closers run on Close, last first.
	closers []func()
}

// Pod is a pod: its network namespace and its object in the API.
type Pod struct {
	// Namespace and Name of the Pod object.
	Namespace, Name string
	// Net is the pod's network namespace.
	Net *simnode.Pod
	// Object is the Pod as last written.
	Object *corev1.Pod
	// Env is what the pod's containers have in their environment beyond a
	// clean one (the token door's variables, after ProjectToken).
	Env []string
}

// Start builds everything. The caller must be inside simnode (TestMain calls
// simnode.Reexec).
func Start(ctx context.Context, opts Options) (_ *Env, err error) {
	if opts.Flavour == "" {
		opts.Flavour = RolesAnywhere
	}
	binary, err := FindBinary()
	if err != nil {
		return nil, err
	}
	e := &Env{Flavour: opts.Flavour, pods: map[string]*Pod{}}
	defer func() {
		if err != nil {
			e.Close()
		}
	}()
	if e.Dir, err = os.MkdirTemp("", "kube2ra-env-"); err != nil {
		return nil, err
	}
	e.closers = append(e.closers, func() { _ = os.RemoveAll(e.Dir) })
	if e.Node, err = simnode.Setup(); err != nil {
		return nil, err
	}
	e.closers = append(e.closers, e.Node.Close, func() {
		// Rules the agent kept on exit (fail closed) would outlive this Env.
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_ = iptables.RemoveAll(ctx, logrus.New())
	})

	if e.CP, err = controlplane.Start(ctx, controlplane.Options{}); err != nil {
		return nil, err
	}
	e.closers = append(e.closers, func() { _ = e.CP.Stop() })
	if e.Kube, err = kubernetes.NewForConfig(e.CP.AdminConfig()); err != nil {
		return nil, err
	}
	values := ""
	if opts.PodIdentity {
		// Host-network processes reach 169.254.170.23 through nat OUTPUT,
		// which needs a route there first.
		if err := e.Node.RouteViaUplink("169.254.170.23/32"); err != nil {
			return nil, err
		}
		if values, err = chart.ValuesFile(PodIdentityValues); err != nil {
			return nil, err
		}
		if err := e.installPodIdentityPolicy(ctx); err != nil {
			return nil, err
		}
		opts.AgentArgs = append([]string{"--pod-identity"}, opts.AgentArgs...)
	}
	agentKubeconfig, err := e.agentIdentity(ctx, values)
	if err != nil {
		return nil, err
	}

	roles := append([]string{}, opts.Roles...)
	metricsPort := MetricsPort
	if opts.MetricsPort != 0 {
		metricsPort = opts.MetricsPort
	}
	args := []string{
		"run",
		"--node", NodeName,
		"--host-ip", simnode.HostIP,
		"--app-port", fmt.Sprint(AppPort),
		"--metrics-port", fmt.Sprint(metricsPort),
		"--host-interface", simnode.Bridge + ",cali+",
		"--iptables-resync", "2s",
		"--kubeconfig", agentKubeconfig,
		"--debug",
		"--log-level", "info",
	}
	if err := e.startSTS(); err != nil {
		return nil, err
	}
	// trustEnv makes the agent trust HTTPS fakes.
	var trustEnv []string
	switch e.Flavour {
	case RolesAnywhere:
		if e.PKI, err = NewPKI(e.Dir, NodeName); err != nil {
			return nil, err
		}
		// Over HTTPS, as AWS: the agent verifies it with the system's CAs
		// plus its certificate (trustEnv), so it holds the trust store a
		// node's agent holds after its first call.
		e.RA, err = fakera.StartTLS(fakera.Options{
			TrustAnchors: []fakera.TrustAnchor{{ARN: TrustAnchorARN, CAs: []*x509Cert{e.PKI.CA}}},
			Profiles:     []fakera.Profile{{ARN: ProfileARN, RoleARNs: RoleARNs(roles), AcceptRoleSessionName: true, DurationSeconds: 3600}},
			OnIssue: func(i fakera.Issued) {
				_ = e.STS.AddPrincipal(fakests.Principal{AccessKeyID: i.AccessKeyID, SecretAccessKey: i.SecretAccessKey, SessionToken: i.SessionToken, ARN: i.AssumedRoleARN, Expiration: i.Expiration})
			},
		})
		if err != nil {
			return nil, err
		}
		e.closers = append(e.closers, e.RA.Close)
		if trustEnv, err = trustOnTopOfTheSystem(e.Dir, e.RA.Certificate()); err != nil {
			return nil, err
		}
		args = append(args,
			"--ra-trust-anchor-arn", TrustAnchorARN,
			"--ra-profile-arn", ProfileARN,
			"--ra-certificate", e.PKI.CertPath,
			"--ra-private-key", e.PKI.KeyPath,
			"--ra-endpoint", e.RA.URL(),
			// Target roles are assumed through STS with the Roles Anywhere
			// session's credentials.
			"--sts-endpoint", e.STSURL,
		)
	case EC2:
		if err := e.Node.AddMetadataAddress(); err != nil {
			return nil, err
		}
		// Hop limit 1, as EKS recommends: kube2ra on the node gets tokens,
		// a pod reaching the metadata service directly would not.
		e.IMDS = fakeimds.New(fakeimds.Options{Addr: simnode.MetadataIP + ":80", AccountID: Account, Region: EC2Region, HopLimit: 1})
		if err := e.IMDS.Start(); err != nil {
			return nil, err
		}
		e.closers = append(e.closers, func() { _ = e.IMDS.Stop() })
		node := e.IMDS.Credentials()
		nodeARN := "arn:aws:sts::" + Account + ":assumed-role/node-instance-role/" + e.IMDS.InstanceID()
		if err := e.STS.AddPrincipal(fakests.Principal{AccessKeyID: node.AccessKeyID, SecretAccessKey: node.SecretAccessKey, SessionToken: node.Token, ARN: nodeARN}); err != nil {
			return nil, err
		}
		for _, arn := range RoleARNs(roles) {
			if err := e.STS.AddRole(fakests.Role{ARN: arn, Trust: []string{nodeARN}, AllowTagSession: true}); err != nil {
				return nil, err
			}
		}
		args = append(args, "--credential-source", "sts", "--sts-endpoint", e.STSURL)
	default:
		return nil, fmt.Errorf("harness: unknown flavour %q", e.Flavour)
	}
	agentEnv := append(append(cleanAgentEnv(e.Dir), trustEnv...), opts.AgentEnv...)
	if opts.IPv6 {
		if err := e.Node.EnableIPv6(); err != nil {
			return nil, err
		}
		args = append(args, "--ipv6")
		agentEnv = append(agentEnv, "HOST_IPS="+simnode.HostIP+","+simnode.HostIPv6)
	}
	args = append(args, opts.AgentArgs...)
	e.Agent = NewAgent(binary, fmt.Sprintf("http://%s:%d", simnode.HostIP, metricsPort), args, agentEnv, opts.Log)
	e.closers = append(e.closers, func() { _ = e.Agent.Stop() })
	if opts.NoAgent {
		return e, nil
	}
	if err := e.Agent.Start(); err != nil {
		return nil, err
	}
	readyCtx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	if err := e.Agent.WaitReady(readyCtx); err != nil {
		return nil, err
	}
	return e, nil
}

// startSTS serves the fake STS on the node IP, where both the agent and pods
// (through their default route) reach it.
func (e *Env) startSTS() error {
	region := RARegion
	if e.Flavour == EC2 {
		region = EC2Region
	}
	sts, err := fakests.New(fakests.Options{Region: region})
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", simnode.HostIP+":0")
	if err != nil {
		return err
	}
	go func() { _ = sts.Serve(ln) }()
	e.STS, e.STSURL = sts, "http://"+ln.Addr().String()
	e.closers = append(e.closers, sts.Close)
	return nil
}

// agentIdentity binds the chart's rendered ClusterRole (and namespace Role)
// to the agent's user and returns a kubeconfig for it, so every test runs the
// agent with exactly the permissions the chart grants.
func (e *Env) agentIdentity(ctx context.Context, valuesFile string) (string, error) {
	rules, err := chart.RenderedAgentRBAC(valuesFile)
	if err != nil {
		return "", fmt.Errorf("harness: rendering the chart's ClusterRole: %w", err)
	}
	nsRules, err := chart.RenderedAgentNamespaceRBAC(valuesFile)
	if err != nil {
		return "", fmt.Errorf("harness: rendering the chart's Role: %w", err)
	}
	if _, err := e.Kube.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "kube-system"}}, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return "", err
	}
	subject := []rbacv1.Subject{{Kind: rbacv1.UserKind, APIGroup: rbacv1.GroupName, Name: AgentUser}}
	if _, err := e.Kube.RbacV1().ClusterRoles().Create(ctx, &rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: "kube2ra"}, Rules: rules}, metav1.CreateOptions{}); err != nil {
		return "", err
	}
	if _, err := e.Kube.RbacV1().ClusterRoleBindings().Create(ctx, &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "kube2ra"},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: "kube2ra"},
		Subjects:   subject,
	}, metav1.CreateOptions{}); err != nil {
		return "", err
	}
	if _, err := e.Kube.RbacV1().Roles("kube-system").Create(ctx, &rbacv1.Role{ObjectMeta: metav1.ObjectMeta{Name: "kube2ra"}, Rules: nsRules}, metav1.CreateOptions{}); err != nil {
		return "", err
	}
	if _, err := e.Kube.RbacV1().RoleBindings("kube-system").Create(ctx, &rbacv1.RoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "kube2ra"},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: "kube2ra"},
		Subjects:   subject,
	}, metav1.CreateOptions{}); err != nil {
		return "", err
	}
	return e.CP.UserKubeconfig(AgentUser)
}

// cleanAgentEnv is an environment without the host's AWS settings, so the
// agent sees only what the test gives it.
func cleanAgentEnv(dir string) []string {
	return []string{"HOME=" + dir, "AWS_CONFIG_FILE=/dev/null", "AWS_SHARED_CREDENTIALS_FILE=/dev/null"}
}

// trustOnTopOfTheSystem writes cert into its own directory under dir and
// returns the environment in which Go trusts it besides the system's CAs
// (the bundle file it reads anyway, and its usual directories).
func trustOnTopOfTheSystem(dir string, cert *x509.Certificate) ([]string, error) {
	if cert == nil {
		return nil, errors.New("harness: the fake endpoint is not HTTPS")
	}
	caDir := filepath.Join(dir, "fake-aws-ca")
	if err := os.MkdirAll(caDir, 0o755); err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(caDir, "fake-aws.pem"), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Raw}), 0o644); err != nil {
		return nil, err
	}
	return []string{"SSL_CERT_DIR=" + trustroots.DefaultCertDirs + ":" + caDir}, nil
}

// CleanEnviron is os.Environ without any AWS_* variable.
func CleanEnviron() []string {
	var out []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "AWS_") {
			out = append(out, kv)
		}
	}
	return out
}

// RoleARN is the full ARN of a role name in the simulated account.
func RoleARN(name string) string { return "arn:aws:iam::" + Account + ":role/" + name }

// RoleARNs maps RoleARN over names.
func RoleARNs(names []string) []string {
	out := make([]string, len(names))
	for i, n := range names {
		out[i] = RoleARN(n)
	}
	return out
}

// Close stops everything, last started first.
func (e *Env) Close() {
	for i := len(e.closers) - 1; i >= 0; i-- {
		e.closers[i]()
	}
	e.closers = nil
}

// CreateNamespace creates a namespace with an allowed-roles annotation (raw
// JSON; "" for none).
func (e *Env) CreateNamespace(ctx context.Context, name, allowedRoles string) error {
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}
	if allowedRoles != "" {
		ns.Annotations = map[string]string{"iam.amazonaws.com/allowed-roles": allowedRoles}
	}
	_, err := e.Kube.CoreV1().Namespaces().Create(ctx, ns, metav1.CreateOptions{})
	return err
}

// SetNamespacePolicy replaces a namespace's allowed-roles annotation ("" removes it).
func (e *Env) SetNamespacePolicy(ctx context.Context, name, allowedRoles string) error {
	ns, err := e.Kube.CoreV1().Namespaces().Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return err
	}
	if ns.Annotations == nil {
		ns.Annotations = map[string]string{}
	}
	if allowedRoles == "" {
		delete(ns.Annotations, "iam.amazonaws.com/allowed-roles")
	} else {
		ns.Annotations["iam.amazonaws.com/allowed-roles"] = allowedRoles
	}
	_, err = e.Kube.CoreV1().Namespaces().Update(ctx, ns, metav1.UpdateOptions{})
	return err
}

// PodSpec describes a pod to create.
type PodSpec struct {
	// Namespace and Name of the pod.
	Namespace, Name string
	// Annotations of the pod (the role, the external ID).
	Annotations map[string]string
	// IP is the pod's address; zero picks the next free one.
	IP netip.Addr
	// ServiceAccount is spec.serviceAccountName; "default" when empty.
	ServiceAccount string
	// HostVeth names the node-side interface ("" for a bridge port, "caliXXX"
	// for a Calico-style routed veth).
	HostVeth string
}

// CreatePod creates the pod's network namespace, then the Pod object bound
// to the node, then sets its IP and phase through the status subresource, as
// the kubelet does once the sandbox has its IP.
func (e *Env) CreatePod(ctx context.Context, spec PodSpec) (*Pod, error) {
	key := spec.Namespace + "/" + spec.Name
	netName := strings.ReplaceAll(spec.Namespace+"-"+spec.Name, "/", "-")
	if len(netName) > 40 {
		netName = netName[:40]
	}
	pn, err := e.Node.AddPod(netName, spec.IP, spec.HostVeth)
	if err != nil {
		return nil, err
	}
	var more []netip.Addr
	if pn.IPv6.IsValid() {
		more = append(more, pn.IPv6)
	}
	obj, err := e.createPodObject(ctx, spec.Namespace, spec.Name, spec.ServiceAccount, spec.Annotations, pn.IP, more...)
	if err != nil {
		_ = e.Node.RemovePod(netName)
		return nil, err
	}
	p := &Pod{Namespace: spec.Namespace, Name: spec.Name, Net: pn, Object: obj}
	e.mu.Lock()
	e.pods[key] = p
	e.mu.Unlock()
	return p, nil
}

// CreatePodObject creates only the API object, Running with ip, on this node.
// More addresses (a dual-stack pod's IPv6) follow ip in status.podIPs.
func (e *Env) CreatePodObject(ctx context.Context, namespace, name string, annotations map[string]string, ip netip.Addr, more ...netip.Addr) (*corev1.Pod, error) {
	return e.createPodObject(ctx, namespace, name, "", annotations, ip, more...)
}

// createPodObject is CreatePodObject running as serviceAccount ("default" when empty).
func (e *Env) createPodObject(ctx context.Context, namespace, name, serviceAccount string, annotations map[string]string, ip netip.Addr, more ...netip.Addr) (*corev1.Pod, error) {
	if serviceAccount == "" {
		serviceAccount = "default"
	}
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: name, Annotations: annotations},
		Spec: corev1.PodSpec{
			NodeName:           NodeName,
			ServiceAccountName: serviceAccount,
			Containers:         []corev1.Container{{Name: "app", Image: "example.invalid/app:1"}},
		},
	}
	created, err := e.Kube.CoreV1().Pods(namespace).Create(ctx, pod, metav1.CreateOptions{})
	if err != nil {
		return nil, err
	}
	created.Status.Phase = corev1.PodRunning
	created.Status.PodIP = ip.String()
	created.Status.PodIPs = []corev1.PodIP{{IP: ip.String()}}
	for _, m := range more {
		created.Status.PodIPs = append(created.Status.PodIPs, corev1.PodIP{IP: m.String()})
	}
	created.Status.HostIP = simnode.HostIP
	return e.Kube.CoreV1().Pods(namespace).UpdateStatus(ctx, created, metav1.UpdateOptions{})
}

// DeletePod deletes the Pod object (immediately, as after the kubelet
// confirmed) and its network namespace.
func (e *Env) DeletePod(ctx context.Context, namespace, name string) error {
	zero := int64(0)
	err := e.Kube.CoreV1().Pods(namespace).Delete(ctx, name, metav1.DeleteOptions{GracePeriodSeconds: &zero})
	if err != nil && !apierrors.IsNotFound(err) {
		return err
	}
	return e.removePodNetwork(namespace, name)
}

// TerminatePod deletes the Pod object gracefully and removes its network
// namespace, as a kubelet does first: with no kubelet to confirm, the
// object stays terminating (deletionTimestamp set) while its IP is free
// for a new pod.
func (e *Env) TerminatePod(ctx context.Context, namespace, name string) error {
	grace := int64(3600)
	if err := e.Kube.CoreV1().Pods(namespace).Delete(ctx, name, metav1.DeleteOptions{GracePeriodSeconds: &grace}); err != nil {
		return err
	}
	return e.removePodNetwork(namespace, name)
}

// removePodNetwork forgets the pod and deletes its network namespace.
func (e *Env) removePodNetwork(namespace, name string) error {
	e.mu.Lock()
	p := e.pods[namespace+"/"+name]
	delete(e.pods, namespace+"/"+name)
	e.mu.Unlock()
	if p != nil {
		return e.Node.RemovePod(p.Net.Name)
	}
	return nil
}

// WhoIs says which role (and session) an access key was issued for, by the
// fake that issued it.
func (e *Env) WhoIs(accessKeyID string) (roleARN, session string, ok bool) {
	if e.RA != nil {
		if i, found := e.RA.Issued(accessKeyID); found {
			return i.RoleARN, i.SessionName, true
		}
	}
	if s, found := e.STS.Session(accessKeyID); found {
		return s.RoleARN, s.SessionName, true
	}
	return "", "", false
}

// UpstreamCalls is the number of credential calls the fake AWS answered.
func (e *Env) UpstreamCalls() int {
	if e.RA != nil {
		return int(e.RA.Stats().Accepted)
	}
	return e.STS.Calls("AssumeRole")
}

// ErrNotServed marks a metadata request the agent did not answer.
var ErrNotServed = errors.New("not served")

// PodGet fetches a metadata path from inside the pod with curl (optionally
// with an IMDSv2 token) and returns the status code and body. A connection
// that fails returns status 0 and the curl error.
func (p *Pod) PodGet(ctx context.Context, path string, token bool) (int, string, error) {
	return p.PodGetAt(ctx, "http://169.254.169.254", path, token)
}

// PodGetAt is PodGet against another metadata endpoint, such as
// http://[fd00:ec2::254].
func (p *Pod) PodGetAt(ctx context.Context, base, path string, token bool) (int, string, error) {
	script := `set -e; url=$BASE; h=""
if [ "$TOKEN" = 1 ]; then t=$(curl -g -sS -f --max-time 2 -X PUT -H 'X-aws-ec2-metadata-token-ttl-seconds: 60' $url/latest/api/token); h="X-aws-ec2-metadata-token: $t"; fi
curl -g -sS --max-time 2 -o /dev/stdout -w '\n%{http_code}' ${h:+-H "$h"} "$url$1"`
	tok := "0"
	if token {
		tok = "1"
	}
	cmd := p.Net.Command(ctx, "sh", "-c", script, "sh", path)
	cmd.Env = append(CleanEnviron(), "TOKEN="+tok, "BASE="+base)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return 0, string(out), fmt.Errorf("%w: %v: %s", ErrNotServed, err, strings.TrimSpace(string(out)))
	}
	s := strings.TrimRight(string(out), "\n")
	i := strings.LastIndexByte(s, '\n')
	if i < 0 {
		return 0, s, fmt.Errorf("unexpected curl output %q", s)
	}
	var code int
	if _, err := fmt.Sscanf(s[i+1:], "%d", &code); err != nil {
		return 0, s, fmt.Errorf("unexpected curl status %q", s[i+1:])
	}
	return code, s[:i], nil
}

// httpGetTimeout bounds a metadata call from the test process itself.
const httpGetTimeout = 3 * time.Second

// Get fetches a URL from the test process (inside the node namespace).
func Get(url string) (int, string, error) {
	c := &http.Client{Timeout: httpGetTimeout}
	resp, err := c.Get(url)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}

// AgentDaemonSet is the name the chart gives the DaemonSet (release kube2ra).
const AgentDaemonSet = "kube2ra"

// CreateAgentOwner creates the agent's DaemonSet and a host-network Pod it
// owns on this node, as a real install has, and returns both names. With
// POD_NAME and POD_NAMESPACE set to the pod, the agent can tell a rolling
// update from an uninstall.
func (e *Env) CreateAgentOwner(ctx context.Context) (string, string, error) {
	labels := map[string]string{"app.kubernetes.io/name": "kube2ra"}
	ds := &appsv1.DaemonSet{
		ObjectMeta: metav1.ObjectMeta{Name: AgentDaemonSet, Namespace: "kube-system"},
		Spec: appsv1.DaemonSetSpec{
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec:       corev1.PodSpec{HostNetwork: true, Containers: []corev1.Container{{Name: "kube2ra", Image: "example.invalid/kube2ra:1"}}},
			},
		},
	}
	created, err := e.Kube.AppsV1().DaemonSets("kube-system").Create(ctx, ds, metav1.CreateOptions{})
	if err != nil {
		return "", "", err
	}
	yes := true
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{
			Name: AgentDaemonSet + "-" + NodeName, Namespace: "kube-system", Labels: labels,
			OwnerReferences: []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: "DaemonSet", Name: created.Name, UID: created.UID, Controller: &yes}},
		},
		Spec: corev1.PodSpec{NodeName: NodeName, HostNetwork: true, Containers: []corev1.Container{{Name: "kube2ra", Image: "example.invalid/kube2ra:1"}}},
	}
	if _, err := e.Kube.CoreV1().Pods("kube-system").Create(ctx, pod, metav1.CreateOptions{}); err != nil {
		return "", "", err
	}
	return created.Name, pod.Name, nil
}

// DeleteAgentOwner deletes the agent's DaemonSet, as `helm uninstall` does.
func (e *Env) DeleteAgentOwner(ctx context.Context, name string) error {
	return e.Kube.AppsV1().DaemonSets("kube-system").Delete(ctx, name, metav1.DeleteOptions{})
}
