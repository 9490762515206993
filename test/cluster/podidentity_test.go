//go:build e2ecluster

package cluster

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kube2ra/kube2ra/test/harness"
)

const (
	// piNS is the namespace opted into the chart's admission policy.
	piNS = "pi-apps"
	// piURI is what the policy injects and the SDKs call.
	piURI = "http://169.254.170.23/v1/credentials"
	// stolenSecret holds tokens of web-sa that the thief pod presents.
	stolenSecret = "stolen-tokens"
	// podIdentityBoto3 is the client image's boto3 that speaks EKS Pod
	// Identity (hack/cluster-images.sh); Debian's 1.26 does not.
	podIdentityBoto3 = "/opt/boto3"
	// policyTimeout bounds the wait for the chart's admission policy to take
	// effect (the API server loads policies from an informer).
	policyTimeout = 30 * time.Second
)

// podIdentity is the token door on the real node (issue 18): the chart with
// podIdentity.enabled, its MutatingAdmissionPolicy served by the real API
// server, pods created from plain manifests in a labelled namespace, the
// kubelet projecting their tokens, and boto3's and aws-sdk-go-v2's
// container-credential providers with nothing but the injected variables
// (the metadata service is disabled for them, so no answer can come through
// the IP door; Debian's AWS CLI 2.9 is shown to get nothing). Each gets its ServiceAccount's role
// (iam.amazonaws.com/role, and IRSA's eks.amazonaws.com/role-arn). A token
// of another audience, another pod's token of another ServiceAccount, and a
// ServiceAccount token bound to no pod are refused.
func (w *world) podIdentity(ctx context.Context) {
	t := w.t
	w.podIdentityNamespace(ctx)
	w.waitPolicy(ctx)

	// The victim runs, so its token is a live pod's: presented from the
	// thief's address it must be refused for that address.
	victim := w.piPod("pi-victim", "web-sa", corev1.Container{Name: "c", Command: []string{"sleep", "600"}})
	if _, err := w.kube.CoreV1().Pods(piNS).Create(ctx, victim, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	sdkPods := w.startPodIdentityClients(ctx, "pi")
	w.stealTokens(ctx, victim.Name)
	refused := w.refusedPod()
	if _, err := w.kube.CoreV1().Pods(piNS).Create(ctx, refused, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}

	figure("podidentity_sdk_clients_ok", w.podIdentityClientsOK(ctx, sdkPods))

	msgs, _, err := w.waitPodDone(ctx, piNS, refused.Name, 2*time.Minute)
	if err != nil {
		t.Fatalf("%v\n%s", err, podLogs(piNS, refused.Name, 20))
	}
	for _, want := range []struct{ container, status, message string }{
		{"audience", "401", "audience"},
		{"stolen", "403", "does not have the address"},
		{"unbound", "403", "pod"},
	} {
		status, body, _ := strings.Cut(msgs[want.container], " ")
		if status != want.status || !strings.Contains(body, want.message) {
			t.Errorf("the door answered the %s token with %s %s, want %s and a message with %q", want.container, status, body, want.status, want.message)
		}
	}
	for _, name := range []string{victim.Name, refused.Name} {
		w.deletePod(ctx, piNS, name)
	}
}

// startPodIdentityClients creates, in piNS, a pod of the three SDK clients
// for each ServiceAccount that names a role (prefix-web: web-sa's
// iam.amazonaws.com/role, prefix-irsa: irsa-sa's IRSA annotation), with
// the metadata service disabled for them so only the token door can
// answer, and checks the chart's policy mutated them. It returns pod name
// → the role it must get.
func (w *world) startPodIdentityClients(ctx context.Context, prefix string) map[string]string {
	t := w.t
	sdkPods := map[string]string{prefix + "-web": allowedRole, prefix + "-irsa": otherRole}
	for name, role := range sdkPods {
		sa := map[string]string{allowedRole: "web-sa", otherRole: "irsa-sa"}[role]
		pod := w.clientPod(name, "")
		pod.Namespace, pod.Annotations, pod.Spec.ServiceAccountName = piNS, nil, sa
		for i, c := range pod.Spec.Containers {
			// Only the token door may answer.
			env := append(c.Env, corev1.EnvVar{Name: "AWS_EC2_METADATA_DISABLED", Value: "true"})
			if c.Name == "boto3" {
				env = append(env, corev1.EnvVar{Name: "PYTHONPATH", Value: podIdentityBoto3})
			}
			pod.Spec.Containers[i].Env = env
		}
		got, err := w.kube.CoreV1().Pods(piNS).Create(ctx, pod, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if err := injected(got); err != nil {
			t.Fatalf("the chart's admission policy did not mutate %s: %v", name, err)
		}
	}
	return sdkPods
}

// podIdentityClientsOK waits for the pods of startPodIdentityClients,
// deletes them, and counts the clients that got exactly their pod's role
// through the token door (boto3 and aws-sdk-go-v2, 4 of 4); Debian's AWS
// CLI 2.9 must refuse the door's address.
func (w *world) podIdentityClientsOK(ctx context.Context, sdkPods map[string]string) int {
	t := w.t
	ok := 0
	for name, role := range sdkPods {
		msgs, codes, err := w.waitPodDone(ctx, piNS, name, 2*time.Minute)
		if err != nil {
			t.Fatalf("%v\n%s", err, podLogs(piNS, name, 20))
		}
		var goOut struct{ AccessKeyID, Source, Error string }
		if err := json.Unmarshal([]byte(msgs["go"]), &goOut); err != nil || codes["go"] != 0 {
			t.Errorf("%s: aws-sdk-go-v2 (exit %d): %q", name, codes["go"], msgs["go"])
		} else if got := w.roleOfKey(goOut.AccessKeyID); got != harness.RoleARN(role) {
			t.Errorf("%s: aws-sdk-go-v2 got a key the fake AWS issued for %q, want %s", name, got, harness.RoleARN(role))
		} else if !strings.Contains(goOut.Source, "Endpoint") {
			t.Errorf("%s: aws-sdk-go-v2's credentials came from %q, want its container (endpoint) provider", name, goOut.Source)
		} else {
			ok++
		}
		want := ":assumed-role/" + role + "/"
		if codes["boto3"] != 0 || !strings.Contains(msgs["boto3"], want) || !strings.HasPrefix(msgs["boto3"], "arn:aws:sts::"+harness.Account) {
			t.Errorf("%s: boto3 (exit %d) was identified by the fake STS as %q, want an ARN with %q", name, codes["boto3"], msgs["boto3"], want)
		} else {
			ok++
		}
		// Debian's AWS CLI 2.9 predates the protocol (README): it refuses
		// the address and, with IMDS off, must end without credentials.
		if codes["cli"] == 0 || !strings.Contains(msgs["cli"], "169.254.170.23") {
			t.Errorf("%s: AWS CLI 2.9 (exit %d) said %q, want a refusal of the host 169.254.170.23", name, codes["cli"], msgs["cli"])
		}
		w.deletePod(ctx, piNS, name)
	}
	return ok
}

// podIdentityNamespace makes the labelled namespace, its ServiceAccounts
// (one per way of naming a role, one naming none) and the fake AWS CA,
// unless an earlier scenario of the run made them.
func (w *world) podIdentityNamespace(ctx context.Context) {
	t := w.t
	if _, err := w.kube.CoreV1().Namespaces().Get(ctx, piNS, metav1.GetOptions{}); err == nil {
		return
	} else if !apierrors.IsNotFound(err) {
		t.Fatal(err)
	}
	allowed, _ := json.Marshal([]string{allowedRole, otherRole})
	if _, err := w.kube.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{
		Name: piNS, Labels: map[string]string{"kube2ra.io/pod-identity": "enabled"},
		Annotations: map[string]string{"iam.amazonaws.com/allowed-roles": string(allowed)},
	}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	for name, ann := range map[string]map[string]string{
		"web-sa":   {"iam.amazonaws.com/role": allowedRole},
		"irsa-sa":  {"eks.amazonaws.com/role-arn": harness.RoleARN(otherRole)},
		"thief-sa": nil,
	} {
		if _, err := w.kube.CoreV1().ServiceAccounts(piNS).Create(ctx, &corev1.ServiceAccount{
			ObjectMeta: metav1.ObjectMeta{Name: name, Annotations: ann},
		}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := w.kube.CoreV1().ConfigMaps(piNS).Create(ctx, &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Name: caConfigMap}, Data: map[string]string{"ca.crt": string(w.tls.caPEM)},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
}

// waitPolicy waits until a dry-run pod in piNS comes back mutated.
func (w *world) waitPolicy(ctx context.Context) {
	probe := w.piPod("policy-probe", "web-sa", corev1.Container{Name: "c", Command: []string{"true"}})
	if err := waitFor(ctx, "the chart's MutatingAdmissionPolicy in effect", policyTimeout, nil, func() error {
		got, err := w.kube.CoreV1().Pods(piNS).Create(ctx, probe, metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
		if err != nil {
			return err
		}
		return injected(got)
	}); err != nil {
		w.t.Fatal(err)
	}
}

// piPod is a plain pod of the client image in piNS running as sa.
func (w *world) piPod(name, sa string, containers ...corev1.Container) *corev1.Pod {
	for i := range containers {
		containers[i].Image, containers[i].ImagePullPolicy = w.images["client"].Ref, corev1.PullNever
	}
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: piNS},
		Spec: corev1.PodSpec{
			ServiceAccountName: sa, RestartPolicy: corev1.RestartPolicyNever,
			AutomountServiceAccountToken: boolPtr(false), TerminationGracePeriodSeconds: int64Ptr(0),
			Containers: containers,
		},
	}
}

// injected is nil when the policy gave every container of pod the two
// variables and the token mount, and the pod the projected token volume.
func injected(pod *corev1.Pod) error {
	vol := false
	for _, v := range pod.Spec.Volumes {
		vol = vol || (v.Name == "kube2ra-pod-identity-token" && v.Projected != nil)
	}
	if !vol {
		return fmt.Errorf("pod %s has no kube2ra-pod-identity-token volume", pod.Name)
	}
	for _, c := range pod.Spec.Containers {
		env := map[string]string{}
		for _, e := range c.Env {
			env[e.Name] = e.Value
		}
		if env["AWS_CONTAINER_CREDENTIALS_FULL_URI"] != piURI || env["AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE"] == "" {
			return fmt.Errorf("container %s of pod %s has env %v", c.Name, pod.Name, env)
		}
	}
	return nil
}

// stealTokens puts two tokens of web-sa into a Secret: one bound to the
// running victim pod (as its kubelet would project it), one bound to no
// pod at all.
func (w *world) stealTokens(ctx context.Context, victim string) {
	t := w.t
	var pod *corev1.Pod
	if err := waitFor(ctx, "pod "+victim+" running", 2*time.Minute, nil, func() error {
		p, err := w.kube.CoreV1().Pods(piNS).Get(ctx, victim, metav1.GetOptions{})
		if err != nil {
			return err
		}
		if p.Status.Phase != corev1.PodRunning || p.Status.PodIP == "" {
			return fmt.Errorf("phase %s, IP %q", p.Status.Phase, p.Status.PodIP)
		}
		pod = p
		return nil
	}); err != nil {
		t.Fatalf("%v\n%s", err, podLogs(piNS, victim, 10))
	}
	tokens := map[string][]byte{}
	for key, bound := range map[string]*authenticationv1.BoundObjectReference{
		"bound":   {Kind: "Pod", APIVersion: "v1", Name: pod.Name, UID: pod.UID},
		"unbound": nil,
	} {
		tr, err := w.kube.CoreV1().ServiceAccounts(piNS).CreateToken(ctx, "web-sa", &authenticationv1.TokenRequest{
			Spec: authenticationv1.TokenRequestSpec{Audiences: []string{"kube2ra"}, BoundObjectRef: bound},
		}, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		tokens[key] = []byte(tr.Status.Token)
	}
	if _, err := w.kube.CoreV1().Secrets(piNS).Create(ctx, &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: stolenSecret}, Data: tokens,
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
}

// refusedPod runs as thief-sa (no role) and presents three tokens to the
// door with curl, retrying 503 as the SDKs do (the agent may not know a
// brand-new pod's IP yet), each container writing "<status> <body>": its own
// token projected for another audience, the victim's token, and web-sa's
// token bound to no pod. It sets AWS_CONTAINER_CREDENTIALS_FULL_URI itself,
// so the policy leaves it alone.
func (w *world) refusedPod() *corev1.Pod {
	ask := func(name, file string) corev1.Container {
		return corev1.Container{
			Name:    name,
			Command: []string{"sh", "-c", `for i in $(seq 50); do code=$(curl -s -m 5 -o /tmp/body -w '%{http_code}' -H "Authorization: $(cat "$AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE")" "$AWS_CONTAINER_CREDENTIALS_FULL_URI"); [ "$code" = 503 ] || break; sleep 0.2; done; printf '%s %s' "$code" "$(cat /tmp/body)" >/dev/termination-log`},
			Env: []corev1.EnvVar{
				{Name: "AWS_CONTAINER_CREDENTIALS_FULL_URI", Value: piURI},
				{Name: "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE", Value: file},
			},
			VolumeMounts: []corev1.VolumeMount{{Name: "tokens", MountPath: "/tokens", ReadOnly: true}},
		}
	}
	pod := w.piPod("pi-refused", "thief-sa",
		ask("audience", "/tokens/sts"), ask("stolen", "/tokens/bound"), ask("unbound", "/tokens/unbound"))
	expiry := int64(600)
	pod.Spec.Volumes = []corev1.Volume{{Name: "tokens", VolumeSource: corev1.VolumeSource{Projected: &corev1.ProjectedVolumeSource{
		Sources: []corev1.VolumeProjection{
			{ServiceAccountToken: &corev1.ServiceAccountTokenProjection{Audience: "sts.amazonaws.com", ExpirationSeconds: &expiry, Path: "sts"}},
			{Secret: &corev1.SecretProjection{LocalObjectReference: corev1.LocalObjectReference{Name: stolenSecret}}},
		},
	}}}}
	return pod
}
