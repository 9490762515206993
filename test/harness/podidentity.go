package harness

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	admissionv1 "k8s.io/api/admissionregistration/v1"
	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kube2ra/kube2ra/test/chart"
	"github.com/kube2ra/kube2ra/test/simnode"
)

// PodIdentityValues is the chart value set the token-door environment
// renders its RBAC and admission policy from.
const PodIdentityValues = "pod-identity"

// The variables the chart's admission policy injects.
const (
	envFullURI   = "AWS_CONTAINER_CREDENTIALS_FULL_URI"
	envTokenFile = "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE"
)

// installPodIdentityPolicy creates the chart's MutatingAdmissionPolicy and
// binding, rendered from the pod-identity value set, for real.
func (e *Env) installPodIdentityPolicy(ctx context.Context) error {
	file, err := chart.ValuesFile(PodIdentityValues)
	if err != nil {
		return err
	}
	manifest, err := chart.Render(ctx, file)
	if err != nil {
		return err
	}
	objects, err := chart.Objects(manifest)
	if err != nil {
		return err
	}
	n := 0
	for _, obj := range objects {
		switch obj.GetKind() {
		case "MutatingAdmissionPolicy":
			var p admissionv1.MutatingAdmissionPolicy
			if err := chart.Convert(obj, &p); err != nil {
				return err
			}
			if _, err := e.Kube.AdmissionregistrationV1().MutatingAdmissionPolicies().Create(ctx, &p, metav1.CreateOptions{}); err != nil {
				return fmt.Errorf("harness: creating the chart's MutatingAdmissionPolicy: %w", err)
			}
			n++
		case "MutatingAdmissionPolicyBinding":
			var b admissionv1.MutatingAdmissionPolicyBinding
			if err := chart.Convert(obj, &b); err != nil {
				return err
			}
			if _, err := e.Kube.AdmissionregistrationV1().MutatingAdmissionPolicyBindings().Create(ctx, &b, metav1.CreateOptions{}); err != nil {
				return fmt.Errorf("harness: creating the chart's MutatingAdmissionPolicyBinding: %w", err)
			}
			n++
		}
	}
	if n != 2 {
		return fmt.Errorf("harness: the %s value set rendered %d admission objects, want a policy and a binding", PodIdentityValues, n)
	}
	return e.waitForPodIdentityPolicy(ctx)
}

// policyProbeNamespace is a labelled namespace the harness probes the
// admission policy in.
const policyProbeNamespace = "kube2ra-policy-probe"

// waitForPodIdentityPolicy waits until the API server applies the new
// policy (it loads policies from an informer): a dry-run pod in a labelled
// namespace comes back mutated.
func (e *Env) waitForPodIdentityPolicy(ctx context.Context) error {
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: policyProbeNamespace, Labels: map[string]string{"kube2ra.io/pod-identity": "enabled"}}}
	if _, err := e.Kube.CoreV1().Namespaces().Create(ctx, ns, metav1.CreateOptions{}); err != nil {
		return err
	}
	probe := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: policyProbeNamespace, Name: "probe"},
		Spec:       corev1.PodSpec{ServiceAccountName: "default", Containers: []corev1.Container{{Name: "app", Image: "example.invalid/app:1"}}},
	}
	var last error
	for {
		got, err := e.Kube.CoreV1().Pods(policyProbeNamespace).Create(ctx, probe, metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
		if err == nil {
			if _, _, err = InjectedEnv(got); err == nil {
				return nil
			}
		}
		last = err
		select {
		case <-ctx.Done():
			return fmt.Errorf("harness: the pod-identity admission policy never mutated a pod: %v", last)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// CreateServiceAccount creates a ServiceAccount (no controller-manager
// runs to make them).
func (e *Env) CreateServiceAccount(ctx context.Context, namespace, name string, annotations map[string]string) error {
	_, err := e.Kube.CoreV1().ServiceAccounts(namespace).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: name, Annotations: annotations}}, metav1.CreateOptions{})
	return err
}

// ProjectToken does the kubelet's part of a projected serviceAccountToken
// volume, which the simulated node has no kubelet for: it asks the
// TokenRequest API for a token bound to the pod, with the audience and
// lifetime of the pod's volume, and writes it to a file of the pod's own
// (no trailing newline, as the kubelet writes it). The pod's containers
// see AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE pointing there: pods of the
// simulated node share the test's file system, so the mount path of the
// spec cannot be used as is. It returns the file.
func (e *Env) ProjectToken(ctx context.Context, p *Pod) (string, error) {
	pod := p.Object
	var src *corev1.ServiceAccountTokenProjection
	for _, v := range pod.Spec.Volumes {
		if v.Projected == nil {
			continue
		}
		for _, s := range v.Projected.Sources {
			if s.ServiceAccountToken != nil && strings.HasPrefix(v.Name, "kube2ra") {
				src = s.ServiceAccountToken
			}
		}
	}
	if src == nil {
		return "", fmt.Errorf("harness: pod %s/%s has no kube2ra token volume (was it not mutated?)", p.Namespace, p.Name)
	}
	tok, err := e.Kube.CoreV1().ServiceAccounts(pod.Namespace).CreateToken(ctx, pod.Spec.ServiceAccountName, &authenticationv1.TokenRequest{
		Spec: authenticationv1.TokenRequestSpec{
			Audiences:         []string{src.Audience},
			ExpirationSeconds: src.ExpirationSeconds,
			BoundObjectRef:    &authenticationv1.BoundObjectReference{Kind: "Pod", APIVersion: "v1", Name: pod.Name, UID: pod.UID},
		},
	}, metav1.CreateOptions{})
	if err != nil {
		return "", fmt.Errorf("harness: TokenRequest for pod %s/%s: %w", p.Namespace, p.Name, err)
	}
	dir := filepath.Join(e.Dir, "tokens", pod.Namespace, pod.Name)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", err
	}
	path := filepath.Join(dir, src.Path)
	if err := os.WriteFile(path, []byte(tok.Status.Token), 0o600); err != nil {
		return "", err
	}
	p.Env = append(containerEnv(pod), envTokenFile+"="+path)
	return path, nil
}

// containerEnv is the first container's literal variables (what the
// admission policy injected), for the processes that play it.
func containerEnv(pod *corev1.Pod) []string {
	var env []string
	if len(pod.Spec.Containers) == 0 {
		return nil
	}
	for _, v := range pod.Spec.Containers[0].Env {
		if v.ValueFrom == nil {
			env = append(env, v.Name+"="+v.Value)
		}
	}
	return env
}

// InjectedEnv returns the token door's two variables from the pod's first
// container, or an error when the admission policy did not add them.
func InjectedEnv(pod *corev1.Pod) (fullURI, tokenFile string, err error) {
	for _, kv := range containerEnv(pod) {
		name, value, _ := strings.Cut(kv, "=")
		switch name {
		case envFullURI:
			fullURI = value
		case envTokenFile:
			tokenFile = value
		}
	}
	if fullURI == "" || tokenFile == "" {
		return "", "", fmt.Errorf("pod %s/%s has no %s and %s: %v", pod.Namespace, pod.Name, envFullURI, envTokenFile, containerEnv(pod))
	}
	return fullURI, tokenFile, nil
}

// CreateHostNetworkPod creates a Running host-network pod object on the
// node (its processes are the test's own, in the node namespace).
func (e *Env) CreateHostNetworkPod(ctx context.Context, namespace, name, serviceAccount string) (*Pod, error) {
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: name},
		Spec: corev1.PodSpec{
			NodeName: NodeName, ServiceAccountName: serviceAccount, HostNetwork: true,
			Containers: []corev1.Container{{Name: "app", Image: "example.invalid/app:1"}},
		},
	}
	created, err := e.Kube.CoreV1().Pods(namespace).Create(ctx, pod, metav1.CreateOptions{})
	if err != nil {
		return nil, err
	}
	created.Status.Phase = corev1.PodRunning
	created.Status.PodIP, created.Status.PodIPs = simnode.HostIP, []corev1.PodIP{{IP: simnode.HostIP}}
	created.Status.HostIP = simnode.HostIP
	if created, err = e.Kube.CoreV1().Pods(namespace).UpdateStatus(ctx, created, metav1.UpdateOptions{}); err != nil {
		return nil, err
	}
	return &Pod{Namespace: namespace, Name: name, Object: created}, nil
}

// GoSDKOnNode runs the aws-sdk-go-v2 default chain (test/e2e/podclient)
// as a host-network process: in the node namespace, with env added to a
// clean environment.
func (e *Env) GoSDKOnNode(ctx context.Context, env []string) (ClientCreds, error) {
	bin, err := e.podClient()
	if err != nil {
		return ClientCreds{}, err
	}
	ctx, cancel := context.WithTimeout(ctx, clientTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin)
	cmd.Env = append(e.clientEnv(), env...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	var c ClientCreds
	if jerr := json.Unmarshal(out, &c); jerr != nil && err == nil {
		err = fmt.Errorf("podclient printed %q: %w", out, jerr)
	}
	if err != nil {
		err = fmt.Errorf("podclient on the node: %w: %s%s", err, out, lastLines(stderr.String(), 8))
	}
	return c, err
}
