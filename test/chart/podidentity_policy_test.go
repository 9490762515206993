//go:build integration

package chart_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"

	"github.com/kube2ra/kube2ra/test/chart"
)

const (
	// policyReadyTimeout bounds the wait for a new admission policy to take
	// effect (the API server loads policies from an informer).
	policyReadyTimeout = 30 * time.Second
	tokenVolume        = "kube2ra-pod-identity-token"
	fullURI            = "http://169.254.170.23/v1/credentials"
	tokenFile          = "/var/run/secrets/kube2ra/serviceaccount/token"
)

// plainPod is a pod as a user writes it, with nothing of kube2ra's.
func plainPod(ns, name string, labels map[string]string, env ...corev1.EnvVar) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: labels},
		Spec: corev1.PodSpec{
			ServiceAccountName: "default",
			Containers: []corev1.Container{
				{Name: "app", Image: "registry.example/app:1", Env: env},
				{Name: "sidecar", Image: "registry.example/sidecar:1"},
			},
		},
	}
}

// injected reports whether pod got the token door's volume and variables in every container.
func injected(pod *corev1.Pod) error {
	var vol *corev1.Volume
	for i := range pod.Spec.Volumes {
		if pod.Spec.Volumes[i].Name == tokenVolume {
			vol = &pod.Spec.Volumes[i]
		}
	}
	if vol == nil || vol.Projected == nil || len(vol.Projected.Sources) != 1 || vol.Projected.Sources[0].ServiceAccountToken == nil {
		return fmt.Errorf("no projected token volume %s: %+v", tokenVolume, pod.Spec.Volumes)
	}
	sat := vol.Projected.Sources[0].ServiceAccountToken
	if sat.Audience != "kube2ra" || sat.ExpirationSeconds == nil || *sat.ExpirationSeconds != 3600 || sat.Path != "token" {
		return fmt.Errorf("token source %+v, want audience kube2ra, 3600 s, path token", sat)
	}
	for _, c := range pod.Spec.Containers {
		env := map[string]string{}
		for _, e := range c.Env {
			env[e.Name] = e.Value
		}
		if env["AWS_CONTAINER_CREDENTIALS_FULL_URI"] != fullURI || env["AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE"] != tokenFile {
			return fmt.Errorf("container %s env %v", c.Name, env)
		}
		mounted := false
		for _, m := range c.VolumeMounts {
			mounted = mounted || (m.Name == tokenVolume && m.MountPath+"/token" == tokenFile && m.ReadOnly)
		}
		if !mounted {
			return fmt.Errorf("container %s mounts %+v", c.Name, c.VolumeMounts)
		}
	}
	return nil
}

// TestPodIdentityPolicyInjects applies the chart's MutatingAdmissionPolicy
// and binding for real and creates pods from plain manifests: those in a
// labelled namespace get the volume and variables, the rest are untouched.
func TestPodIdentityPolicyInjects(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), apiTimeout)
	defer cancel()
	a := newApplier(ctx, t)
	client, err := kubernetes.NewForConfig(cp.AdminConfig())
	if err != nil {
		t.Fatal(err)
	}
	file, err := chart.ValuesFile("pod-identity")
	if err != nil {
		t.Fatal(err)
	}
	objects := renderObjects(t, valueSet{name: "pod-identity", file: file})
	applied := 0
	for _, obj := range objects {
		if k := obj.GetKind(); k != "MutatingAdmissionPolicy" && k != "MutatingAdmissionPolicyBinding" {
			continue
		}
		if err := a.apply(ctx, obj, false); err != nil {
			t.Fatalf("the API server refused the chart's %s (is admissionregistration.k8s.io/v1 served?): %v", obj.GetKind(), err)
		}
		applied++
		t.Cleanup(func() { _ = a.delete(context.Background(), obj) })
	}
	if applied != 2 {
		t.Fatalf("the pod-identity value set rendered %d policy objects, want a policy and a binding", applied)
	}

	on, off := "pi-inject-on", "pi-inject-off"
	for ns, labels := range map[string]map[string]string{on: {"kube2ra.io/pod-identity": "enabled"}, off: nil} {
		if _, err := client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns, Labels: labels}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = client.CoreV1().Namespaces().Delete(context.Background(), ns, metav1.DeleteOptions{}) })
	}

	// The policy is loaded asynchronously: wait until a dry-run pod is mutated.
	probe := plainPod(on, "probe", nil)
	if err := wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, policyReadyTimeout, true, func(ctx context.Context) (bool, error) {
		got, err := client.CoreV1().Pods(on).Create(ctx, probe, metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
		return err == nil && injected(got) == nil, nil
	}); err != nil {
		t.Fatalf("the policy never mutated a pod in %s: %v", on, err)
	}

	preset := corev1.EnvVar{Name: "AWS_CONTAINER_CREDENTIALS_FULL_URI", Value: "http://127.0.0.1:9/own"}
	tests := []struct {
		name   string
		pod    *corev1.Pod
		inject bool
	}{
		{"a plain pod in a labelled namespace is injected", plainPod(on, "plain", nil), true},
		{"a pod in an unlabelled namespace is left alone", plainPod(off, "plain", nil), false},
		{"a pod with the opt-out label is left alone", plainPod(on, "opted-out", map[string]string{"kube2ra.io/pod-identity-injection": "disabled"}), false},
		{"a pod that sets the variable itself is left alone", plainPod(on, "preset", nil, preset), false},
		{"a pod with volumes of its own keeps them and gains the token", func() *corev1.Pod {
			p := plainPod(on, "withvolumes", nil)
			p.Spec.Volumes = []corev1.Volume{{Name: "data", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}}}
			return p
		}(), true},
		{"a host-network pod is injected (it has a token too)", func() *corev1.Pod {
			p := plainPod(on, "hostnet", nil)
			p.Spec.HostNetwork = true
			return p
		}(), true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := client.CoreV1().Pods(tt.pod.Namespace).Create(ctx, tt.pod, metav1.CreateOptions{})
			if err != nil {
				t.Fatal(err)
			}
			err = injected(got)
			if len(tt.pod.Spec.Volumes) > 0 && (len(got.Spec.Volumes) != len(tt.pod.Spec.Volumes)+1 || got.Spec.Volumes[0].Name != tt.pod.Spec.Volumes[0].Name) {
				t.Errorf("volumes %+v, want the pod's own followed by the token", got.Spec.Volumes)
			}
			switch {
			case tt.inject && err != nil:
				t.Fatalf("not injected: %v", err)
			case !tt.inject && err == nil:
				t.Fatal("injected")
			case !tt.inject:
				for _, v := range got.Spec.Volumes {
					if v.Name == tokenVolume {
						t.Fatalf("the token volume was added: %+v", got.Spec.Volumes)
					}
				}
				if len(got.Spec.Containers[0].Env) != len(tt.pod.Spec.Containers[0].Env) {
					t.Fatalf("env changed: %+v", got.Spec.Containers[0].Env)
				}
			}
		})
	}
}
