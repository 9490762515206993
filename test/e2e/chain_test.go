//go:build e2e

package e2e

import (
	"fmt"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kube2ra/kube2ra/credentials"
	"github.com/kube2ra/kube2ra/k8s"
	"github.com/kube2ra/kube2ra/test/fakeaws/fakests"
	"github.com/kube2ra/kube2ra/test/harness"
)

// Account B of the cross-account tests: the target roles live there.
const (
	accountB = "444455556666"
	// targetRole trusts the web role of the cluster's account, with tags.
	targetRole = "arn:aws:iam::" + accountB + ":role/shared-data"
	// closedRole exists but trusts no role the cluster has.
	closedRole = "arn:aws:iam::" + accountB + ":role/closed"
	// unlistedRole trusts web but no namespace allows it.
	unlistedRole = "arn:aws:iam::" + accountB + ":role/unlisted"
	// untaggedRole trusts web for sts:AssumeRole but not sts:TagSession.
	untaggedRole = "arn:aws:iam::" + accountB + ":role/untagged"
	clusterName  = "k2r-e2e"
	// sessionCap is the namespace's session policy; podDeny a pod's own,
	// and cappedWithDeny what STS must receive for that pod: both.
	sessionCap     = `{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"s3:*","Resource":"*"}]}`
	podDeny        = `{"Version": "2012-10-17", "Statement": [{"Effect": "Deny", "Action": "s3:DeleteObject", "Resource": "*"}]}`
	cappedWithDeny = `{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"s3:*","Resource":"*"},{"Effect":"Deny","Action":"s3:DeleteObject","Resource":"*"}]}`
)

// TestChainedTargetRole: a pod (metadata door) and a ServiceAccount (token
// door) name a target role in another account; on each credential source
// aws-sdk-go-v2, boto3 and the JavaScript SDK v3 get the target role's
// credentials, a signed GetCallerIdentity answers the target's ARN, and the
// session STS recorded shows the chain through the first role, EKS Pod
// Identity's tag set with the pod's values, the namespace's session policy
// cap (with the pod's own Deny), and one hour asked at most.
// A target outside allowed-roles is 404 with an Event naming the second
// hop; a target that does not trust the first role is refused by STS and
// the Event names the second hop too.
func TestChainedTargetRole(t *testing.T) {
	for _, flavour := range flavours() {
		t.Run(string(flavour), func(t *testing.T) {
			region := harness.RARegion
			if flavour == harness.EC2 {
				region = harness.EC2Region
			}
			clusterARN := fmt.Sprintf("arn:aws:eks:%s:%s:cluster/%s", region, harness.Account, clusterName)
			env := startEnvWith(t, harness.Options{Flavour: flavour, Roles: allRoles, PodIdentity: true,
				AgentArgs: []string{"--session-tags=eks", "--cluster-name", clusterName, "--cluster-arn", clusterARN}})
			webARN := harness.RoleARN(roleWeb)
			for _, r := range []fakests.Role{
				{ARN: targetRole, Trust: []string{webARN}, AllowTagSession: true, MaxSessionDuration: 12 * time.Hour},
				{ARN: closedRole, Trust: []string{"arn:aws:iam::" + accountB + ":role/someone"}, AllowTagSession: true},
				{ARN: unlistedRole, Trust: []string{webARN}, AllowTagSession: true},
				{ARN: untaggedRole, Trust: []string{webARN}},
			} {
				if err := env.STS.AddRole(r); err != nil {
					t.Fatal(err)
				}
			}
			ctx := ctxT(t)
			const ns = "xacct"
			mustPodIdentityLabelledNamespace(t, env, ns, fmt.Sprintf(`["%s", "%s", "%s", "%s"]`, roleWeb, targetRole, closedRole, untaggedRole))
			// The operator caps every session in the namespace; one pod
			// narrows its own further with a Deny.
			nsObj, err := env.Kube.CoreV1().Namespaces().Get(ctx, ns, metav1.GetOptions{})
			if err != nil {
				t.Fatal(err)
			}
			nsObj.Annotations[k8s.SessionPolicyKey] = sessionCap
			if _, err := env.Kube.CoreV1().Namespaces().Update(ctx, nsObj, metav1.UpdateOptions{}); err != nil {
				t.Fatal(err)
			}
			if err := env.CreateServiceAccount(ctx, ns, "data-sa", map[string]string{k8s.DefaultRoleKey: roleWeb, k8s.TargetRoleKey: targetRole}); err != nil {
				t.Fatal(err)
			}

			// Metadata door: the pod's own annotations.
			imdsPod := mustPod(t, env, harness.PodSpec{Namespace: ns, Name: "web-1",
				Annotations: map[string]string{k8s.DefaultRoleKey: roleWeb, k8s.TargetRoleKey: targetRole, k8s.SessionPolicyKey: podDeny}})
			// Token door: the ServiceAccount's annotations.
			tokenPod := mustPod(t, env, harness.PodSpec{Namespace: ns, Name: "data-1", ServiceAccount: "data-sa"})
			projectToken(t, env, tokenPod)

			for _, p := range []*harness.Pod{imdsPod, tokenPod} {
				door, policy := "metadata door", cappedWithDeny
				if p == tokenPod {
					door, policy = "token door", sessionCap
				}
				check := func(client string, c harness.ClientCreds, arn string) {
					t.Helper()
					assertTargetSession(t, env, door+", "+client, p, c, policy)
					if want := ":assumed-role/shared-data/"; !strings.Contains(arn, want) || !strings.HasPrefix(arn, "arn:aws:sts::"+accountB+":") {
						t.Errorf("%s, %s: GetCallerIdentity says %q, want the target role's session in account %s", door, client, arn, accountB)
					}
				}
				goCreds, arn, err := env.GoSDKCallerIdentity(ctx, p)
				if err != nil {
					t.Fatalf("%s, aws-sdk-go-v2: %v", door, err)
				}
				check("aws-sdk-go-v2", goCreds, arn)

				boto, err := env.Boto3(ctx, p)
				if err != nil {
					t.Fatalf("%s, boto3: %v", door, err)
				}
				assertTargetSession(t, env, door+", boto3", p, boto, policy)
				cliArn, err := env.CLIv1CallerIdentity(ctx, p)
				if err != nil {
					t.Fatalf("%s, AWS CLI v1 (botocore): %v", door, err)
				}
				check("botocore", boto, cliArn)

				js, err := env.JSSDK(ctx, p)
				if err != nil {
					t.Fatalf("%s, JavaScript SDK v3: %v", door, err)
				}
				check("JavaScript SDK v3", js.ClientCreds, js.Arn)
			}

			// The second hop outside allowed-roles: 404 and an Event naming the hop.
			unlisted := mustPod(t, env, harness.PodSpec{Namespace: ns, Name: "unlisted",
				Annotations: map[string]string{k8s.DefaultRoleKey: roleWeb, k8s.TargetRoleKey: unlistedRole}})
			expectStatus(t, env, unlisted, credsPath+"unlisted", true, 404)
			waitForEvent(t, env, ns, "unlisted", k8s.ReasonRoleDenied, "second hop (target role) refused")

			// The second hop refused by the target's trust policy: the
			// first hop succeeded, STS refused the second, the Event says so.
			closed := mustPod(t, env, harness.PodSpec{Namespace: ns, Name: "closed",
				Annotations: map[string]string{k8s.DefaultRoleKey: roleWeb, k8s.TargetRoleKey: closedRole}})
			if code, _, err := closed.PodGet(ctx, credsPath+"closed", true); err != nil || code == 200 {
				t.Fatalf("a target that does not trust the first role: %d %v", code, err)
			}
			waitForEvent(t, env, ns, "closed", credentials.ReasonUpstreamAccessDenied, "second hop")
			if n := len(env.STS.Sessions(closedRole)); n != 0 {
				t.Errorf("%d sessions issued for the closed role", n)
			}

			// A target whose trust policy lacks sts:TagSession while tags
			// are on: the Event says so.
			untagged := mustPod(t, env, harness.PodSpec{Namespace: ns, Name: "untagged",
				Annotations: map[string]string{k8s.DefaultRoleKey: roleWeb, k8s.TargetRoleKey: untaggedRole}})
			if code, _, err := untagged.PodGet(ctx, credsPath+"untagged", true); err != nil || code == 200 {
				t.Fatalf("a target without sts:TagSession: %d %v", code, err)
			}
			waitForEvent(t, env, ns, "untagged", credentials.ReasonUpstreamAccessDenied, "sts:TagSession")
		})
	}
}

// assertTargetSession checks that c is exactly a session the fake STS
// issued for the target role, assumed with the web role's session, tagged
// as EKS Pod Identity tags it with p's values, asking one hour at most.
func assertTargetSession(t *testing.T, env *harness.Env, what string, p *harness.Pod, c harness.ClientCreds, wantPolicy string) {
	t.Helper()
	if !env.STS.Matches(c.AccessKeyID, c.SecretAccessKey, c.SessionToken) {
		t.Fatalf("%s: credentials %s are not a session the fake STS issued (first hop or node credentials?)", what, c.AccessKeyID)
	}
	s, _ := env.STS.Session(c.AccessKeyID)
	if s.RoleARN != targetRole {
		t.Fatalf("%s: session of %s, want the target %s", what, s.RoleARN, targetRole)
	}
	if len(s.Chain) == 0 || !strings.Contains(s.Chain[len(s.Chain)-1], ":assumed-role/"+roleWeb+"/") {
		t.Errorf("%s: chain %v, want it to end with the web role's session", what, s.Chain)
	}
	if s.DurationSeconds == 0 || s.DurationSeconds > 3600 {
		t.Errorf("%s: the chained session asked for %d s, want at most 3600", what, s.DurationSeconds)
	}
	sa := p.Object.Spec.ServiceAccountName
	want := map[string]string{
		"eks-cluster-arn":            fmt.Sprintf("arn:aws:eks:%s:%s:cluster/%s", env.Region(), harness.Account, clusterName),
		"eks-cluster-name":           clusterName,
		"kubernetes-namespace":       p.Namespace,
		"kubernetes-service-account": sa,
		"kubernetes-pod-name":        p.Name,
		"kubernetes-pod-uid":         string(p.Object.UID),
	}
	for k, v := range want {
		if s.Tags[k] != v {
			t.Errorf("%s: tag %s = %q, want %q (all: %v)", what, k, s.Tags[k], v, s.Tags)
		}
	}
	if s.Policy != wantPolicy {
		t.Errorf("%s: session policy %q, want %q", what, s.Policy, wantPolicy)
	}
	if s.ExternalID != "" {
		t.Errorf("%s: external ID %q sent with session tags on (EKS sends none then)", what, s.ExternalID)
	}
}

// waitForEvent waits for a Warning Event with reason on pod ns/name whose
// message contains want.
func waitForEvent(t *testing.T, env *harness.Env, ns, name, reason, want string) {
	t.Helper()
	eventually(t, fmt.Sprintf("a %s Event on %s/%s saying %q", reason, ns, name, want), func() error {
		evs, err := env.Kube.CoreV1().Events(ns).List(ctxT(t), metav1.ListOptions{FieldSelector: "involvedObject.name=" + name + ",reason=" + reason})
		if err != nil {
			return err
		}
		for _, ev := range evs.Items {
			if strings.Contains(ev.Message, want) {
				return nil
			}
		}
		return fmt.Errorf("%d %s Events, none saying %q", len(evs.Items), reason, want)
	})
}

// TestChainedTargetRoleExternalID: with session tags off, the target hop
// carries EKS Pod Identity's external ID region/account/cluster/namespace/
// serviceaccount (no --cluster-arn: the agent's region and the first
// role's account), so a target role's trust policy pinning it admits
// exactly that service account: a pod of another service account in the
// same namespace, with the same roles, is refused at the second hop.
func TestChainedTargetRoleExternalID(t *testing.T) {
	env := startEnvWith(t, harness.Options{Flavour: harness.RolesAnywhere, Roles: allRoles, AgentArgs: []string{"--cluster-name", clusterName}})
	const ns = "pinned"
	pinned := fmt.Sprintf("%s/%s/%s/%s/%s", harness.RARegion, harness.Account, clusterName, ns, "reader")
	if err := env.STS.AddRole(fakests.Role{ARN: targetRole, Trust: []string{harness.RoleARN(roleWeb)}, ExternalID: pinned}); err != nil {
		t.Fatal(err)
	}
	mustNamespace(t, env, ns, fmt.Sprintf(`["%s", "%s"]`, roleWeb, targetRole))
	ann := map[string]string{k8s.DefaultRoleKey: roleWeb, k8s.TargetRoleKey: targetRole}
	reader := mustPod(t, env, harness.PodSpec{Namespace: ns, Name: "reader-1", ServiceAccount: "reader", Annotations: ann})
	other := mustPod(t, env, harness.PodSpec{Namespace: ns, Name: "other-1", ServiceAccount: "other", Annotations: ann})

	c, arn, err := env.GoSDKCallerIdentity(ctxT(t), reader)
	if err != nil {
		t.Fatalf("aws-sdk-go-v2: %v", err)
	}
	s, ok := env.STS.Session(c.AccessKeyID)
	if !ok || s.RoleARN != targetRole || s.ExternalID != pinned || len(s.Tags) != 0 || !strings.Contains(arn, ":assumed-role/shared-data/") {
		t.Fatalf("session %+v (GetCallerIdentity %q): want the target's, with external ID %q and no tags", s, arn, pinned)
	}
	if code, _, err := other.PodGet(ctxT(t), credsPath+"shared-data", true); err != nil || code == 200 {
		t.Fatalf("another service account's pod got %d %v, want a refusal", code, err)
	}
	waitForEvent(t, env, ns, "other-1", credentials.ReasonUpstreamAccessDenied, "second hop")
}
