package k8s

import (
	"context"
	"errors"
	"strings"
	"testing"

	"k8s.io/client-go/tools/record"

	"github.com/kube2ra/kube2ra/kubeapi/objects"
)

func TestSessionPolicy(t *testing.T) {
	const (
		readS3   = `{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"s3:Get*","Resource":"*"}]}`
		denyPut  = "{\n  \"Version\": \"2012-10-17\",\n  \"Statement\": {\"Effect\": \"Deny\", \"Action\": \"s3:PutObject\", \"Resource\": \"*\"}\n}"
		capAllow = `{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":["s3:*","sqs:*"],"Resource":"*"}]}`
	)
	for _, tc := range []struct {
		name     string
		pod, cap string
		want     string
		wantErr  string
	}{
		{name: "none", want: ""},
		{name: "the pod's alone, packed", pod: readS3, want: readS3},
		{name: "the namespace cap alone applies to every pod", cap: capAllow, want: capAllow},
		{name: "a pod's Deny statements join the cap: the stricter of the two", pod: denyPut, cap: capAllow,
			want: `{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":["s3:*","sqs:*"],"Resource":"*"},{"Effect":"Deny","Action":"s3:PutObject","Resource":"*"}]}`},
		{name: "a pod's Allow under a cap is refused, not dropped", pod: readS3, cap: capAllow, wantErr: "the pod's iam.amazonaws.com/session-policy annotation is not usable: statement 1 allows"},
		{name: "not JSON", pod: `{"Version":`, wantErr: "pod's iam.amazonaws.com/session-policy annotation is not usable: it is not a JSON policy document"},
		{name: "a field IAM does not have", pod: `{"Version":"2012-10-17","Statment":[]}`, wantErr: "unknown field"},
		{name: "wrong version", pod: `{"Version":"2020-01-01","Statement":[{"Effect":"Allow"}]}`, wantErr: `Version is "2020-01-01"`},
		{name: "no Effect", pod: `{"Version":"2012-10-17","Statement":[{"Action":"*"}]}`, wantErr: "statement 1 has no Effect"},
		{name: "a bad cap names the namespace", cap: `[]`, wantErr: "the namespace's iam.amazonaws.com/session-policy"},
		{name: "over 2,048 characters packed", pod: `{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"s3:*","Resource":"arn:aws:s3:::` + strings.Repeat("b", 2000) + `"}]}`,
			wantErr: "more than AWS's 2048"},
		{name: "whitespace does not count against the limit", pod: `{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"s3:*","Resource":"arn:aws:s3:::` + strings.Repeat("b", 1900) + `"}]}` + strings.Repeat(" ", 500),
			want: `{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"s3:*","Resource":"arn:aws:s3:::` + strings.Repeat("b", 1900) + `"}]}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := SessionPolicy(tc.pod, tc.cap)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("SessionPolicy = %q, %v; want an error containing %q", got, err, tc.wantErr)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("SessionPolicy = %q, %v\nwant %q", got, err, tc.want)
			}
		})
	}
}

// TestResolverSessionPolicy: the resolved role carries the policy; a bad
// one is a denial with an Event naming the annotation, never a silent
// drop; Roles Anywhere carries it only on a target hop.
func TestResolverSessionPolicy(t *testing.T) {
	const policy = `{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"s3:GetObject","Resource":"*"}]}`
	capped := namespace("capped", "1", ptr(`["app"]`))
	const limit = `{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"s3:*","Resource":"*"}]}`
	capped.Annotations = append(capped.Annotations, objects.Annotation{Key: SessionPolicyKey, Value: limit})
	namespaces := fakeNamespaces{"apps": namespace("apps", "1", ptr(`["app","arn:aws:iam::444455556666:role/t"]`)), "capped": capped}
	for _, tc := range []struct {
		name       string
		ns         string
		ann        map[string]string
		needTarget bool
		want       string
		wantErr    string
	}{
		{name: "the pod's policy", ns: "apps", ann: map[string]string{DefaultRoleKey: "app", SessionPolicyKey: policy}, want: policy},
		{name: "the namespace cap without a pod policy", ns: "capped", ann: map[string]string{DefaultRoleKey: "app"}, want: limit},
		{name: "a malformed policy is denied", ns: "apps", ann: map[string]string{DefaultRoleKey: "app", SessionPolicyKey: "s3:*"}, wantErr: "session-policy annotation is not usable"},
		{name: "Roles Anywhere without a target is denied", ns: "apps", needTarget: true, ann: map[string]string{DefaultRoleKey: "app", SessionPolicyKey: policy}, wantErr: "takes none: name a target role"},
		{name: "Roles Anywhere with a target carries it", ns: "apps", needTarget: true,
			ann: map[string]string{DefaultRoleKey: "app", TargetRoleKey: "arn:aws:iam::444455556666:role/t", SessionPolicyKey: policy}, want: policy},
	} {
		t.Run(tc.name, func(t *testing.T) {
			events := record.NewFakeRecorder(10)
			r, err := NewRoleResolver(namespaces, ResolverOptions{BaseRoleARN: StaticBaseARN(testBase), NamespaceRestrictions: true, SessionPolicyNeedsTarget: tc.needTarget, Events: events, Logger: testLogger()})
			if err != nil {
				t.Fatal(err)
			}
			role, err := r.ResolveRole(context.Background(), annotatedPod(tc.ns, tc.ann))
			if tc.wantErr != "" {
				var d *DenialError
				if !errors.As(err, &d) || d.Reason != DeniedSessionPolicy || !strings.Contains(d.Detail, tc.wantErr) {
					t.Fatalf("ResolveRole = %+v, %v; want an InvalidSessionPolicy denial saying %q", role, err, tc.wantErr)
				}
				if ev := <-events.Events; !strings.Contains(ev, "RoleDenied") || !strings.Contains(ev, tc.wantErr) {
					t.Errorf("Event %q", ev)
				}
				return
			}
			if err != nil || role.SessionPolicy != tc.want {
				t.Fatalf("ResolveRole = %+v, %v; want policy %q", role, err, tc.want)
			}
		})
	}
}
