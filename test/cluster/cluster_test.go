//go:build e2ecluster

package cluster

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"k8s.io/apimachinery/pkg/types"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/kube2ra/kube2ra/test/controlplane"
	"github.com/kube2ra/kube2ra/test/fakeaws/endpoint"
	"github.com/kube2ra/kube2ra/test/fakeaws/fakeimds"
	"github.com/kube2ra/kube2ra/test/fakeaws/fakera"
	"github.com/kube2ra/kube2ra/test/fakeaws/fakests"
	"github.com/kube2ra/kube2ra/test/harness"
)

const (
	appNS       = "apps"
	allowedRole = "app-a"
	otherRole   = "app-b"
	deniedRole  = "not-allowed"
	certSecret  = "kube2ra-node-cert"
	// caConfigMap holds the fake AWS endpoints' CA, mounted at caDir.
	caConfigMap, caDir = "fake-aws-ca", "/etc/fake-aws-ca"
	// nodeRole is the instance role the fake IMDS hands out: a pod that
	// sees it got the node's own credentials.
	nodeRole = "node-instance-role"
)

// world is the node, the fake AWS and the clients of one test run.
type world struct {
	t      *testing.T
	node   *Node
	kube   kubernetes.Interface
	images map[string]Image
	repo   string
	sts    *fakests.Server
	stsURL string
	ra     *fakera.Server
	raURL  string
	imds   *fakeimds.Server
	pki    *harness.PKI
	tls    *fakeAWSTLS
	start  time.Time
	// registry serves the agent's image and the chart; published are the
	// versions pushed to it, in order.
	registry  *Registry
	published []published
}

// published is one release in the tier's registry: the chart's version,
// which is also its appVersion and so the agent image's tag, and the
// image's manifest digest.
type published struct{ version, digest string }

// agentRepository and chartRepository are where the tier publishes, as a
// user would in their own registry.
const agentRepository, chartRepository = "kube2ra/kube2ra", "charts"

// figure prints one named measurement.
func figure(name string, value any) { fmt.Printf("CLUSTER %s %v\n", name, value) }

func TestMain(m *testing.M) {
	if os.Geteuid() != 0 {
		fmt.Fprintln(os.Stderr, "test/cluster needs root (network namespaces, containerd, kubelet): run `make e2e-cluster` as root")
		os.Exit(1)
	}
	code := m.Run()
	Cleanup()
	os.Exit(code)
}

func TestCluster(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 25*time.Minute)
	defer cancel()
	w := &world{t: t, start: time.Now()}
	var err error
	if w.repo, err = filepath.Abs("../.."); err != nil {
		t.Fatal(err)
	}
	if w.images, err = BuildImages(ctx, w.repo); err != nil {
		t.Fatal(err)
	}
	t.Logf("images ready after %s", time.Since(w.start).Round(time.Second))
	t.Run("ImageTrustsAWS", func(t *testing.T) {
		// The fakes here are trusted through SSL_CERT_FILE; AWS itself only
		// through the image's own bundle, where Go looks first.
		bundle, err := ImageFile(w.images["kube2ra"].Archive, "/etc/ssl/certs/ca-certificates.crt")
		if err != nil {
			t.Fatalf("no CA bundle, so no call to AWS could be verified: %v", err)
		}
		if missing := MissingAWSRoots(bundle); len(missing) > 0 {
			t.Fatalf("the image's CA bundle lacks %v, which AWS's endpoints chain to", missing)
		}
		fmt.Printf("CLUSTER image_ca_bundle_bytes %d\n", len(bundle))
	})
	// The node gets the sandbox and client images by import; the agent's
	// image it pulls from the registry, as a user's node does.
	nodeImages := map[string]Image{"pause": w.images["pause"], "client": w.images["client"]}
	if w.node, err = StartNode(ctx, nodeImages, ""); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			w.dumpLogs()
		}
		w.node.Stop()
		_ = w.node.CP.Stop()
	})
	t.Logf("node Ready after %s", time.Since(w.start).Round(time.Second))
	if w.kube, err = kubernetes.NewForConfig(w.node.CP.AdminConfig()); err != nil {
		t.Fatal(err)
	}
	w.startFakeAWS(ctx)
	w.publish(ctx)
	w.createNamespace(ctx)

	t.Run("RolesAnywhere", func(t *testing.T) {
		w.t = t
		// The token door too: Roles Anywhere behind it is what no other
		// agent offers.
		w.install(ctx, "rolesanywhere", "podIdentity.enabled=true")
		w.fromRegistry(ctx, 0)
		w.credentials(ctx, "rolesanywhere")
		w.podIdentity(ctx)
		w.uninstall(ctx, "rolesanywhere")
	})
	t.Run("Chained", func(t *testing.T) {
		w.t = t
		w.chained(ctx)
	})
	t.Run("STS", func(t *testing.T) {
		w.t = t
		w.install(ctx, "sts")
		w.credentials(ctx, "sts")
		w.terminatingPod(ctx)
		w.coldStart(ctx)
		w.ipReuse(ctx)
		w.upgrade(ctx, "")
		w.fromRegistry(ctx, 1)
		w.nodeRestart(ctx)
		w.newNode(ctx, false)
		w.newNode(ctx, true)
		w.uninstall(ctx, "sts")
	})
	t.Run("CNI", func(t *testing.T) {
		w.t = t
		w.cniScenario(ctx)
	})
	figure("tier_seconds", int(time.Since(w.start).Seconds()))
}

// startFakeAWS serves STS and Roles Anywhere on the host's end of the node
// link (pods reach it through the node's default route) and the metadata
// service on 169.254.169.254 inside the node's namespace.
func (w *world) startFakeAWS(ctx context.Context) {
	t := w.t
	var err error
	if w.tls, err = newFakeAWSTLS(HostIP); err != nil {
		t.Fatal(err)
	}
	if w.sts, err = fakests.New(fakests.Options{Region: harness.EC2Region}); err != nil {
		t.Fatal(err)
	}
	ln, err := w.tls.listen(HostIP)
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = w.sts.Serve(ln) }()
	t.Cleanup(w.sts.Close)
	w.stsURL = "https://" + ln.Addr().String()

	if w.pki, err = harness.NewPKI(t.TempDir(), NodeName); err != nil {
		t.Fatal(err)
	}
	roles := harness.RoleARNs([]string{allowedRole, otherRole, deniedRole})
	if w.ra, err = fakera.New(fakera.Options{
		TrustAnchors: []fakera.TrustAnchor{{ARN: harness.TrustAnchorARN, CAs: []*x509.Certificate{w.pki.CA}}},
		Profiles:     []fakera.Profile{{ARN: harness.ProfileARN, RoleARNs: roles, AcceptRoleSessionName: true, DurationSeconds: 3600}},
		OnIssue: func(i fakera.Issued) {
			_ = w.sts.AddPrincipal(fakests.Principal{AccessKeyID: i.AccessKeyID, SecretAccessKey: i.SecretAccessKey, SessionToken: i.SessionToken, ARN: i.AssumedRoleARN})
		},
	}); err != nil {
		t.Fatal(err)
	}
	raLn, err := w.tls.listen(HostIP)
	if err != nil {
		t.Fatal(err)
	}
	ep := endpoint.New(w.ra.Handler())
	go func() { _ = ep.Serve(raLn) }()
	t.Cleanup(ep.Close)
	w.raURL = "https://" + raLn.Addr().String()

	// The metadata service only the node reaches (EC2 hop limit 1).
	if _, err := inNode(ctx, "ip", "addr", "add", "169.254.169.254/32", "dev", "lo"); err != nil {
		t.Fatal(err)
	}
	imdsLn, err := ListenInNode("169.254.169.254:80")
	if err != nil {
		t.Fatal(err)
	}
	w.imds = fakeimds.New(fakeimds.Options{AccountID: harness.Account, Region: harness.EC2Region, RoleName: nodeRole})
	imdsEP := endpoint.New(w.imds.Handler())
	go func() { _ = imdsEP.Serve(imdsLn) }()
	t.Cleanup(imdsEP.Close)
	node := w.imds.Credentials()
	nodeARN := "arn:aws:sts::" + harness.Account + ":assumed-role/" + nodeRole + "/" + w.imds.InstanceID()
	if err := w.sts.AddPrincipal(fakests.Principal{AccessKeyID: node.AccessKeyID, SecretAccessKey: node.SecretAccessKey, SessionToken: node.Token, ARN: nodeARN}); err != nil {
		t.Fatal(err)
	}
	for _, arn := range roles {
		if err := w.sts.AddRole(fakests.Role{ARN: arn, Trust: []string{nodeARN}, AllowTagSession: true}); err != nil {
			t.Fatal(err)
		}
	}
}

func (w *world) createNamespace(ctx context.Context) {
	t := w.t
	allowed, _ := json.Marshal([]string{allowedRole, otherRole})
	if _, err := w.kube.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{
		Name: appNS, Annotations: map[string]string{"iam.amazonaws.com/allowed-roles": string(allowed)},
	}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	for _, ns := range []string{"kube-system", appNS} {
		if _, err := w.kube.CoreV1().ConfigMaps(ns).Create(ctx, &corev1.ConfigMap{
			ObjectMeta: metav1.ObjectMeta{Name: caConfigMap}, Data: map[string]string{"ca.crt": string(w.tls.caPEM)},
		}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	cert, err := os.ReadFile(w.pki.CertPath)
	if err != nil {
		t.Fatal(err)
	}
	key, err := os.ReadFile(w.pki.KeyPath)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.kube.CoreV1().Secrets("kube-system").Create(ctx, &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: certSecret},
		Type:       corev1.SecretTypeTLS,
		Data:       map[string][]byte{corev1.TLSCertKey: cert, corev1.TLSPrivateKeyKey: key},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
}

// helm runs helm against the control plane.
func (w *world) helm(ctx context.Context, args ...string) string {
	w.t.Helper()
	bin := filepath.Join(controlplane.CacheDir(), "bin", "helm")
	ctx, cancel := context.WithTimeout(ctx, 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, append(args, "--kubeconfig", w.node.CP.Kubeconfig)...)
	cmd.Env = append(harness.CleanEnviron(), "HELM_CACHE_HOME="+w.t.TempDir(), "HELM_CONFIG_HOME="+w.t.TempDir(), "HELM_DATA_HOME="+w.t.TempDir())
	out, err := cmd.CombinedOutput()
	if err != nil {
		w.t.Fatalf("helm %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// values are the chart values a user would set: the image, the endpoints
// (here the fakes), the node's pod interface.
func (w *world) values(flavour string, extra ...string) []string {
	// The image's tag and pull policy are the chart's defaults: its
	// appVersion, IfNotPresent.
	set := []string{
		"image.repository=" + w.registry.Host + "/" + agentRepository,
		"host.interface=" + Bridge,
		"credentialSource=" + flavour,
	}
	switch flavour {
	case "rolesanywhere":
		set = append(set,
			"rolesAnywhere.trustAnchorArn="+harness.TrustAnchorARN,
			"rolesAnywhere.profileArn="+harness.ProfileARN,
			"rolesAnywhere.endpoint="+w.raURL,
			"rolesAnywhere.certificate.existingSecret="+certSecret,
		)
	case "sts":
		set = append(set, "sts.endpoint="+w.stsURL, "sts.region="+harness.EC2Region)
	}
	set = append(set, extra...)
	// The fake endpoints' CA, the way a user adds a private CA bundle.
	caValues, err := json.Marshal(map[string]any{
		"extraVolumes":      []any{map[string]any{"name": "fake-aws-ca", "configMap": map[string]string{"name": caConfigMap}}},
		"extraVolumeMounts": []any{map[string]any{"name": "fake-aws-ca", "mountPath": caDir, "readOnly": true}},
		"extraEnv":          []any{map[string]string{"name": "SSL_CERT_FILE", "value": caDir + "/ca.crt"}},
	})
	if err != nil {
		w.t.Fatal(err)
	}
	valuesFile := filepath.Join(w.t.TempDir(), "ca-values.json")
	if err := os.WriteFile(valuesFile, caValues, 0o600); err != nil {
		w.t.Fatal(err)
	}
	args := []string{"-f", valuesFile}
	for _, s := range set {
		args = append(args, "--set", s)
	}
	return args
}

// install is scenario 1: helm install into kube-system, DaemonSet Ready.
// extra are further --set values.
func (w *world) install(ctx context.Context, flavour string, extra ...string) {
	t := w.t
	begin := time.Now()
	w.helm(ctx, append(append([]string{"install", "kube2ra"}, w.chart(0)...), append([]string{"-n", "kube-system"}, w.values(flavour, extra...)...)...)...)
	w.waitDaemonSetReady(ctx, 0)
	ms := time.Since(begin).Milliseconds()
	figure("install_to_ready_ms_"+flavour, ms)
	if flavour == "rolesanywhere" {
		figure("install_to_ready_ms", ms)
		// The first install: the node pulls the agent's image here.
		figure("registry_install_to_ready_ms", ms)
	}
	t.Logf("%s: DaemonSet Ready %d ms after helm install", flavour, ms)
}

// publish starts the registry and publishes two releases to it as a user
// publishes theirs: the image pushed with skopeo, tagged with the release's
// version, and the chart packaged by hack/release.sh with that version as
// version and appVersion and pushed with helm push. install takes the first, upgrade
// moves to the second.
func (w *world) publish(ctx context.Context) {
	t := w.t
	var err error
	if w.registry, err = StartRegistry(ctx, w.tls.config, w.tls.caPEM); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(w.registry.Stop)
	begin := time.Now()
	pkgDir := t.TempDir()
	for i := range 2 {
		// Semver with the build context's hash: a chart version that exists
		// only in the registry, never in charts/kube2ra.
		version := fmt.Sprintf("0.0.%d-%s", i+1, w.images["kube2ra"].Tag())
		digest, err := w.registry.PushImage(ctx, w.images["kube2ra"].Archive, agentRepository, version)
		if err != nil {
			t.Fatal(err)
		}
		// Packaged as make release packages it: version and appVersion.
		if _, err := run(ctx, filepath.Join(w.repo, "hack", "release.sh"), "chart", version, pkgDir); err != nil {
			t.Fatal(err)
		}
		w.helm(ctx, "push", filepath.Join(pkgDir, "kube2ra-"+version+".tgz"), "oci://"+w.registry.Host+"/"+chartRepository, "--ca-file", w.registry.CAFile)
		w.published = append(w.published, published{version: version, digest: digest})
	}
	figure("registry_publish_ms", time.Since(begin).Milliseconds())
}

// chart is the chart reference and flags for helm install or upgrade of
// the i-th published release.
func (w *world) chart(i int) []string {
	return []string{"oci://" + w.registry.Host + "/" + chartRepository + "/kube2ra", "--version", w.published[i].version, "--ca-file", w.registry.CAFile}
}

// fromRegistry proves the running agent is the i-th published release: helm
// lists that chart version, the pod runs the registry's reference, the
// kubelet pulled it (its Pulled Event, not "already present"), and
// containerd holds it under the digest the registry stored.
func (w *world) fromRegistry(ctx context.Context, i int) {
	t := w.t
	rel := w.published[i]
	ref := w.registry.Host + "/" + agentRepository + ":" + rel.version
	var releases []struct {
		Name, Chart string
		AppVersion  string `json:"app_version"`
	}
	if err := json.Unmarshal([]byte(w.helm(ctx, "list", "-n", "kube-system", "-o", "json")), &releases); err != nil {
		t.Fatal(err)
	}
	if len(releases) != 1 || releases[0].Chart != "kube2ra-"+rel.version || releases[0].AppVersion != rel.version {
		t.Errorf("helm list shows %+v, want the one release of chart kube2ra-%s from the registry", releases, rel.version)
	}
	pods, err := w.kube.CoreV1().Pods("kube-system").List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var pod *corev1.Pod
	for i := range pods.Items {
		if p := &pods.Items[i]; p.DeletionTimestamp == nil && len(p.Spec.Containers) > 0 && p.Spec.Containers[0].Image == ref {
			pod = p
		}
	}
	if pod == nil {
		t.Fatalf("no agent pod runs %s:\n%s", ref, w.agentPodState(ctx))
	}
	wantID := w.registry.Host + "/" + agentRepository + "@" + rel.digest
	if len(pod.Status.ContainerStatuses) == 0 || pod.Status.ContainerStatuses[0].ImageID != wantID {
		t.Errorf("agent pod %s: image ID %+v, want %s (the digest the registry stored)", pod.Name, pod.Status.ContainerStatuses, wantID)
	}
	evs, err := w.kube.CoreV1().Events("kube-system").List(ctx, metav1.ListOptions{FieldSelector: "involvedObject.name=" + pod.Name + ",reason=Pulled"})
	if err != nil {
		t.Fatal(err)
	}
	pulled := ""
	for _, e := range evs.Items {
		if strings.Contains(e.Message, "Successfully pulled image \""+ref+"\"") {
			pulled = e.Message
		}
	}
	if pulled == "" {
		t.Errorf("agent pod %s has no Pulled Event for %s from the kubelet: %+v", pod.Name, ref, evs.Items)
	}
	out, err := run(ctx, "ctr", "--address", Socket, "-n", "k8s.io", "images", "ls")
	if err != nil {
		t.Fatal(err)
	}
	inContainerd := false
	for _, line := range strings.Split(out, "\n") {
		if f := strings.Fields(line); len(f) > 2 && f[0] == ref && f[2] == rel.digest {
			inContainerd = true
		}
	}
	if !inContainerd {
		t.Errorf("containerd has no %s with digest %s:\n%s", ref, rel.digest, out)
	}
	t.Logf("agent %s: %s; image ID %s", pod.Name, pulled, wantID)
	figure(fmt.Sprintf("registry_release_%d_pulled", i+1), pulled != "" && inContainerd)
}

// waitDaemonSetReady waits until the DaemonSet's pod of generation > after
// is Ready on the node.
func (w *world) waitDaemonSetReady(ctx context.Context, after int64) {
	t := w.t
	if err := waitFor(ctx, "the kube2ra DaemonSet Ready", 3*time.Minute, nil, func() error {
		ds, err := w.kube.AppsV1().DaemonSets("kube-system").Get(ctx, "kube2ra", metav1.GetOptions{})
		if err != nil {
			return err
		}
		s := ds.Status
		if s.ObservedGeneration <= after || s.ObservedGeneration < ds.Generation || s.DesiredNumberScheduled != 1 ||
			s.NumberReady != 1 || s.UpdatedNumberScheduled != 1 || s.NumberUnavailable != 0 {
			return fmt.Errorf("status %+v", s)
		}
		return nil
	}); err != nil {
		t.Fatalf("%v\n%s", err, w.agentPodState(ctx))
	}
}

func (w *world) agentPodState(ctx context.Context) string {
	pods, err := w.kube.CoreV1().Pods("kube-system").List(ctx, metav1.ListOptions{})
	if err != nil {
		return err.Error()
	}
	var b strings.Builder
	for _, p := range pods.Items {
		fmt.Fprintf(&b, "pod %s phase %s\n", p.Name, p.Status.Phase)
		for _, c := range p.Status.ContainerStatuses {
			fmt.Fprintf(&b, "  container %s ready=%v restarts=%d state=%+v last=%+v\n", c.Name, c.Ready, c.RestartCount, c.State, c.LastTerminationState)
		}
		b.WriteString(podLogs(p.Namespace, p.Name, 40))
	}
	return b.String()
}

// podLogs is the tail of every container log the kubelet wrote for a pod.
func podLogs(ns, name string, n int) string {
	files, _ := filepath.Glob(dir("kubelet", "logs", ns+"_"+name+"_*", "*", "*.log"))
	var b strings.Builder
	for _, f := range files {
		fmt.Fprintf(&b, "--- %s\n%s\n", f, fileTail(f, n))
	}
	return b.String()
}

func (w *world) dumpLogs() {
	for _, name := range []string{"containerd", "kubelet", "kube-proxy"} {
		fmt.Fprintf(os.Stderr, "===== %s =====\n%s\n", name, fileTail(dir("logs", name+".log"), 40))
	}
}

// clientPod runs the three SDK clients in one pod, each in its own
// container, each writing what it got to its termination message.
func (w *world) clientPod(name, role string) *corev1.Pod {
	region := harness.EC2Region
	env := []corev1.EnvVar{{Name: "AWS_DEFAULT_REGION", Value: region}, {Name: "STS", Value: w.stsURL}, {Name: "AWS_CA_BUNDLE", Value: caDir + "/ca.crt"}}
	ctr := func(cname, script string) corev1.Container {
		return corev1.Container{
			Name: cname, Image: w.images["client"].Ref, ImagePullPolicy: corev1.PullNever,
			Command: []string{"sh", "-c", script + " >/dev/termination-log 2>&1"}, Env: env,
			VolumeMounts: []corev1.VolumeMount{{Name: "ca", MountPath: caDir, ReadOnly: true}},
		}
	}
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: appNS, Annotations: map[string]string{"iam.amazonaws.com/role": role}},
		Spec: corev1.PodSpec{
			RestartPolicy:                 corev1.RestartPolicyNever,
			AutomountServiceAccountToken:  boolPtr(false),
			TerminationGracePeriodSeconds: int64Ptr(0),
			Volumes: []corev1.Volume{{Name: "ca", VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{
				LocalObjectReference: corev1.LocalObjectReference{Name: caConfigMap}}}}},
			Containers: []corev1.Container{
				ctr("go", "podclient"),
				ctr("cli", `aws sts get-caller-identity --endpoint-url "$STS" --query Arn --output text`),
				ctr("boto3", `python3 -c 'import boto3,os; print(boto3.client("sts", endpoint_url=os.environ["STS"]).get_caller_identity()["Arn"])'`),
			},
		},
	}
}

func boolPtr(b bool) *bool    { return &b }
func int64Ptr(i int64) *int64 { return &i }

// runPod creates a pod and waits until it has finished; it returns every
// container's termination message and exit code.
func (w *world) runPod(ctx context.Context, pod *corev1.Pod, timeout time.Duration) (map[string]string, map[string]int32) {
	t := w.t
	t.Helper()
	if _, err := w.kube.CoreV1().Pods(pod.Namespace).Create(ctx, pod, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	msgs, codes, err := w.waitPodDone(ctx, pod.Namespace, pod.Name, timeout)
	if err != nil {
		t.Fatalf("%v\n%s", err, podLogs(pod.Namespace, pod.Name, 20))
	}
	return msgs, codes
}

func (w *world) waitPodDone(ctx context.Context, ns, name string, timeout time.Duration) (map[string]string, map[string]int32, error) {
	msgs, codes := map[string]string{}, map[string]int32{}
	err := waitFor(ctx, "pod "+ns+"/"+name+" finished", timeout, nil, func() error {
		p, err := w.kube.CoreV1().Pods(ns).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		if p.Status.Phase != corev1.PodSucceeded && p.Status.Phase != corev1.PodFailed {
			return fmt.Errorf("phase %s %+v", p.Status.Phase, p.Status.ContainerStatuses)
		}
		for _, c := range p.Status.ContainerStatuses {
			if c.State.Terminated == nil {
				return fmt.Errorf("container %s not terminated", c.Name)
			}
			msgs[c.Name] = strings.TrimSpace(c.State.Terminated.Message)
			codes[c.Name] = c.State.Terminated.ExitCode
		}
		return nil
	})
	return msgs, codes, err
}

func (w *world) deletePod(ctx context.Context, ns, name string) {
	err := w.kube.CoreV1().Pods(ns).Delete(ctx, name, metav1.DeleteOptions{GracePeriodSeconds: int64Ptr(0)})
	if err != nil && !apierrors.IsNotFound(err) {
		w.t.Fatal(err)
	}
}

// roleOfKey names the role the fake AWS issued an access key for.
func (w *world) roleOfKey(accessKeyID string) string {
	if i, ok := w.ra.Issued(accessKeyID); ok {
		return i.RoleARN
	}
	if s, ok := w.sts.Session(accessKeyID); ok {
		return s.RoleARN
	}
	return ""
}

// credentials is scenarios 2 and 8: each SDK client in a real container
// gets exactly its pod's role; a pod asking for a role its namespace does
// not allow gets 404 and a RoleDenied Event.
func (w *world) credentials(ctx context.Context, flavour string) {
	t := w.t
	ok := 0
	for _, role := range []string{allowedRole, otherRole} {
		name := "sdk-" + flavour[:3] + "-" + role
		msgs, codes := w.runPod(ctx, w.clientPod(name, role), 2*time.Minute)
		var goOut struct{ AccessKeyID, Error string }
		if err := json.Unmarshal([]byte(msgs["go"]), &goOut); err != nil || codes["go"] != 0 {
			t.Errorf("%s: aws-sdk-go-v2 (exit %d): %q", name, codes["go"], msgs["go"])
		} else if got := w.roleOfKey(goOut.AccessKeyID); got != harness.RoleARN(role) {
			t.Errorf("%s: aws-sdk-go-v2 got a key the fake AWS issued for %q, want %s", name, got, harness.RoleARN(role))
		} else {
			ok++
		}
		for _, c := range []string{"cli", "boto3"} {
			want := ":assumed-role/" + role + "/"
			if codes[c] != 0 || !strings.Contains(msgs[c], want) || !strings.HasPrefix(msgs[c], "arn:aws:sts::"+harness.Account) {
				t.Errorf("%s: %s (exit %d) was identified by the fake STS as %q, want an ARN with %q", name, c, codes[c], msgs[c], want)
			} else {
				ok++
			}
		}
		w.deletePod(ctx, appNS, name)
	}
	figure("sdk_clients_ok_"+flavour, ok)
	if flavour == "sts" {
		figure("sdk_clients_ok", ok)
	}

	// The denied pod.
	name := "denied-" + flavour[:3]
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: appNS, Annotations: map[string]string{"iam.amazonaws.com/role": deniedRole}},
		Spec: corev1.PodSpec{
			RestartPolicy: corev1.RestartPolicyNever, AutomountServiceAccountToken: boolPtr(false), TerminationGracePeriodSeconds: int64Ptr(0),
			Containers: []corev1.Container{{
				Name: "curl", Image: w.images["client"].Ref, ImagePullPolicy: corev1.PullNever,
				Command: []string{"sh", "-c", "sleep 1; t=$(curl -s -m 5 -X PUT -H 'X-aws-ec2-metadata-token-ttl-seconds: 60' http://169.254.169.254/latest/api/token); curl -s -m 5 -o /dev/null -w '%{http_code}' -H \"X-aws-ec2-metadata-token: $t\" http://169.254.169.254/latest/meta-data/iam/security-credentials/ >/dev/termination-log"},
			}},
		},
	}
	msgs, _ := w.runPod(ctx, pod, 2*time.Minute)
	if msgs["curl"] != "404" {
		t.Errorf("a pod asking for a role its namespace does not allow got HTTP %q, want 404", msgs["curl"])
	}
	if err := waitFor(ctx, "a RoleDenied Event on "+name, 30*time.Second, nil, func() error {
		evs, err := w.kube.CoreV1().Events(appNS).List(ctx, metav1.ListOptions{FieldSelector: "involvedObject.name=" + name + ",reason=RoleDenied"})
		if err != nil {
			return err
		}
		if len(evs.Items) == 0 {
			return fmt.Errorf("none yet")
		}
		return nil
	}); err != nil {
		t.Error(err)
	}
	w.deletePod(ctx, appNS, name)
}

// terminatingPod: a pod being deleted still gets its role while its
// sandbox stands, as kube2iam served it until its containers exited. Its
// container fetches nothing until SIGTERM, then runs the AWS CLI (a new
// process: a fresh fetch from 169.254.169.254, as a preStop hook's would)
// and writes the ARN STS saw; a finalizer keeps the pod object so the
// test can read that after the container exits.
func (w *world) terminatingPod(ctx context.Context) {
	t := w.t
	const name, finalizer = "draining", "kube2ra.test/hold"
	pod := w.clientPod(name, allowedRole)
	pod.Finalizers = []string{finalizer}
	pod.Spec.TerminationGracePeriodSeconds = int64Ptr(60)
	cli := pod.Spec.Containers[1]
	cli.Command = []string{"sh", "-c", `trap 'aws sts get-caller-identity --endpoint-url "$STS" --query Arn --output text >/dev/termination-log 2>&1; exit $?' TERM; while :; do sleep 0.2; done`}
	pod.Spec.Containers = []corev1.Container{cli}
	if _, err := w.kube.CoreV1().Pods(appNS).Create(ctx, pod, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	defer func() {
		// Let the pod go whatever happened.
		patch := []byte(`{"metadata":{"finalizers":null}}`)
		if _, err := w.kube.CoreV1().Pods(appNS).Patch(ctx, name, types.MergePatchType, patch, metav1.PatchOptions{}); err != nil && !apierrors.IsNotFound(err) {
			t.Error(err)
		}
	}()
	if err := waitFor(ctx, "pod "+name+" running", 2*time.Minute, nil, func() error {
		p, err := w.kube.CoreV1().Pods(appNS).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		if len(p.Status.ContainerStatuses) == 0 || p.Status.ContainerStatuses[0].State.Running == nil {
			return fmt.Errorf("phase %s", p.Status.Phase)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Second) // the shell has set its trap
	if err := w.kube.CoreV1().Pods(appNS).Delete(ctx, name, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	msgs, codes, err := w.waitPodDone(ctx, appNS, name, 2*time.Minute)
	if err != nil {
		t.Fatalf("%v\n%s", err, podLogs(appNS, name, 20))
	}
	ok := codes["cli"] == 0 && strings.Contains(msgs["cli"], ":assumed-role/"+allowedRole+"/")
	if !ok {
		t.Errorf("the AWS CLI run at SIGTERM in a terminating pod (exit %d): %q, want the ARN of %s: a pod being deleted gets its role while its sandbox stands", codes["cli"], msgs["cli"], allowedRole)
	}
	figure("terminating_pod_served", ok)
}

// uninstall is scenario 7: after helm uninstall no kube2ra rule is left in
// the node's iptables.
func (w *world) uninstall(ctx context.Context, flavour string) {
	t := w.t
	w.helm(ctx, "uninstall", "kube2ra", "-n", "kube-system", "--wait", "--timeout", "2m")
	if err := waitFor(ctx, "the agent pod gone", 2*time.Minute, nil, func() error {
		pods, err := w.kube.CoreV1().Pods("kube-system").List(ctx, metav1.ListOptions{})
		if err != nil {
			return err
		}
		if len(pods.Items) > 0 {
			return fmt.Errorf("%d pods left", len(pods.Items))
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	left := w.rules(ctx)
	figure("rules_left_after_uninstall_"+flavour, len(left))
	if flavour == "sts" {
		figure("rules_left_after_uninstall", len(left))
	}
	if len(left) != 0 {
		t.Errorf("rules left in the node after helm uninstall:\n%s", strings.Join(left, "\n"))
	}
}

// rules are the node's iptables rules (both backends) that are kube2ra's
// (its chains, or either door's address).
func (w *world) rules(ctx context.Context) []string {
	var out []string
	for _, b := range []string{"iptables-legacy", "iptables-nft"} {
		for _, table := range []string{"nat", "filter"} {
			s, err := inNode(ctx, b+"-save", "-t", table)
			if err != nil {
				continue
			}
			for _, line := range strings.Split(s, "\n") {
				l := strings.ToLower(line)
				if strings.Contains(l, "kube2ra") || strings.Contains(l, "169.254.169.254") || strings.Contains(l, "169.254.170.23") {
					out = append(out, b+" "+table+": "+line)
				}
			}
		}
	}
	return out
}

// percentile is the nearest-rank percentile: the smallest value at least
// p of the values are at or below. Over the tier's 20 pods the p99 is the
// slowest pod.
func percentile(ms []int64, p float64) int64 {
	s := append([]int64(nil), ms...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	i := max(int(math.Ceil(p*float64(len(s))))-1, 0)
	return s[min(i, len(s)-1)]
}
