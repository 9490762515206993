//go:build e2ecluster

package cluster

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kube2ra/kube2ra/test/fakeaws/fakests"
	"github.com/kube2ra/kube2ra/test/harness"
)

// The cross-account case off AWS: Roles Anywhere in account A (the
// harness's), the target role in account B.
const (
	chainAccountB  = "444455556666"
	chainTarget    = "arn:aws:iam::" + chainAccountB + ":role/shared-data"
	chainCluster   = "k2r-cluster"
	chainTagsValue = "eks"
)

// chained installs the chart with Roles Anywhere and EKS session tags,
// and runs the three SDK clients in real containers of a pod annotated
// with a role of account A and a target role of account B: each must end
// up with the target's credentials (GetCallerIdentity, signed, answered
// by the fake STS with the target's session in account B), and STS must
// have recorded the chain through the Roles Anywhere session with the
// pod's EKS tags and one hour at most. CLUSTER chained_sdk_clients_ok.
func (w *world) chained(ctx context.Context) {
	t := w.t
	// STS in the trust anchor's region, where the agent sends target hops;
	// it knows the Roles Anywhere sessions the fake Roles Anywhere issued.
	sts, err := fakests.New(fakests.Options{Region: harness.RARegion, IssuedElsewhere: func(id string) (fakests.Principal, bool) {
		i, ok := w.ra.Issued(id)
		return fakests.Principal{AccessKeyID: i.AccessKeyID, SecretAccessKey: i.SecretAccessKey, SessionToken: i.SessionToken, ARN: i.AssumedRoleARN, Expiration: i.Expiration}, ok
	}})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := w.tls.listen(HostIP)
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = sts.Serve(ln) }()
	defer sts.Close()
	stsURL := "https://" + ln.Addr().String()
	first := harness.RoleARN(allowedRole)
	if err := sts.AddRole(fakests.Role{ARN: chainTarget, Trust: []string{first}, AllowTagSession: true, MaxSessionDuration: 12 * time.Hour}); err != nil {
		t.Fatal(err)
	}

	// Both hops allowed in the namespace, for this scenario only.
	nsObj, err := w.kube.CoreV1().Namespaces().Get(ctx, appNS, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	before := nsObj.Annotations["iam.amazonaws.com/allowed-roles"]
	var allowed []string
	if err := json.Unmarshal([]byte(before), &allowed); err != nil {
		t.Fatal(err)
	}
	after, _ := json.Marshal(append(allowed, chainTarget))
	w.setAllowedRoles(ctx, string(after))
	defer w.setAllowedRoles(context.Background(), before)

	clusterARN := fmt.Sprintf("arn:aws:eks:%s:%s:cluster/%s", harness.RARegion, harness.Account, chainCluster)
	w.helm(ctx, append(append([]string{"install", "kube2ra"}, w.chart(0)...), append([]string{"-n", "kube-system"},
		w.values("rolesanywhere", "sts.endpoint="+stsURL, "clusterName="+chainCluster, "clusterArn="+clusterARN, "sessionTags="+chainTagsValue)...)...)...)
	w.waitDaemonSetReady(ctx, 0)

	name := "sdk-chained"
	pod := w.clientPod(name, allowedRole)
	pod.Annotations["iam.amazonaws.com/target-role"] = chainTarget
	for i := range pod.Spec.Containers {
		c := &pod.Spec.Containers[i]
		for j := range c.Env {
			switch c.Env[j].Name {
			case "STS":
				c.Env[j].Value = stsURL
			case "AWS_DEFAULT_REGION":
				c.Env[j].Value = harness.RARegion
			}
		}
		// aws-sdk-go-v2's podclient signs GetCallerIdentity when set.
		c.Env = append(c.Env, corev1.EnvVar{Name: "AWS_ENDPOINT_URL_STS", Value: stsURL})
	}
	msgs, codes := w.runPod(ctx, pod, 2*time.Minute)
	ok := 0
	wantARN := "arn:aws:sts::" + chainAccountB + ":assumed-role/shared-data/"
	var goOut struct{ AccessKeyID, Arn, Error string }
	if err := json.Unmarshal([]byte(msgs["go"]), &goOut); err != nil || codes["go"] != 0 || !strings.HasPrefix(goOut.Arn, wantARN) {
		t.Errorf("%s: aws-sdk-go-v2 (exit %d): %q, want GetCallerIdentity %s...", name, codes["go"], msgs["go"], wantARN)
	} else if s, found := sts.Session(goOut.AccessKeyID); !found || s.RoleARN != chainTarget {
		t.Errorf("%s: aws-sdk-go-v2's key %s is not a target session the fake STS issued", name, goOut.AccessKeyID)
	} else {
		ok++
		want := map[string]string{"eks-cluster-name": chainCluster, "eks-cluster-arn": clusterARN, "kubernetes-namespace": appNS,
			"kubernetes-pod-name": name, "kubernetes-service-account": "default"}
		for k, v := range want {
			if s.Tags[k] != v {
				t.Errorf("%s: the target session's tag %s = %q, want %q (all %v)", name, k, s.Tags[k], v, s.Tags)
			}
		}
		if s.Tags["kubernetes-pod-uid"] == "" || len(s.Chain) == 0 || !strings.Contains(s.Chain[len(s.Chain)-1], ":assumed-role/"+allowedRole+"/") || s.DurationSeconds > 3600 {
			t.Errorf("%s: target session %+v: want a pod UID tag, a chain through the Roles Anywhere session of %s, at most 3600 s", name, s, allowedRole)
		}
	}
	for _, c := range []string{"cli", "boto3"} {
		if codes[c] != 0 || !strings.HasPrefix(msgs[c], wantARN) {
			t.Errorf("%s: %s (exit %d) was identified by the fake STS as %q, want %s...", name, c, codes[c], msgs[c], wantARN)
		} else {
			ok++
		}
	}
	figure("chained_sdk_clients_ok", ok)
	w.deletePod(ctx, appNS, name)
	w.uninstall(ctx, "chained")
}

// setAllowedRoles sets the app namespace's allowed-roles annotation.
func (w *world) setAllowedRoles(ctx context.Context, value string) {
	patch, _ := json.Marshal(map[string]any{"metadata": map[string]any{"annotations": map[string]string{"iam.amazonaws.com/allowed-roles": value}}})
	if _, err := w.kube.CoreV1().Namespaces().Patch(ctx, appNS, "application/merge-patch+json", patch, metav1.PatchOptions{}); err != nil {
		w.t.Error(err)
	}
}
