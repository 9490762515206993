package k8s

import (
	"context"
	"errors"
	"reflect"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kube2ra/kube2ra/kubeapi/objects"
)

// fakeAccounts maps namespace/name to a ServiceAccount's role.
type fakeAccounts map[string]string

func (f fakeAccounts) ServiceAccountRole(namespace, name string) (string, bool) {
	role, ok := f[namespace+"/"+name]
	return role, ok
}

// fakeTargetAccounts adds target roles to fakeAccounts.
type fakeTargetAccounts struct {
	fakeAccounts
	targets  map[string]string
	policies map[string]string
}

func (f fakeTargetAccounts) ServiceAccountTargetRole(namespace, name string) string {
	return f.targets[namespace+"/"+name]
}

func (f fakeTargetAccounts) ServiceAccountSessionPolicy(namespace, name string) string {
	return f.policies[namespace+"/"+name]
}

// TestServiceAccountTargetRole: a ServiceAccount's target role goes with
// its role on the token door, a pod's own target annotation wins, and the
// namespace policy must allow the target too.
func TestServiceAccountTargetRole(t *testing.T) {
	const target = "arn:aws:iam::444455556666:role/target"
	namespaces := fakeNamespaces{"apps": namespace("apps", "1", ptr(`["sa-role", "`+target+`", "own-target"]`))}
	resolver, err := NewRoleResolver(namespaces, ResolverOptions{BaseRoleARN: StaticBaseARN(testBase), NamespaceRestrictions: true, Logger: testLogger()})
	if err != nil {
		t.Fatal(err)
	}
	accounts := fakeTargetAccounts{
		fakeAccounts: fakeAccounts{"apps/web": "sa-role", "apps/wide": "sa-role"},
		targets:      map[string]string{"apps/web": target, "apps/wide": "arn:aws:iam::444455556666:role/not-allowed"},
	}
	roles, err := NewServiceAccountRoles(resolver, accounts, "")
	if err != nil {
		t.Fatal(err)
	}
	got, err := roles.ResolveRole(context.Background(), &Pod{Namespace: "apps", Name: "p", ServiceAccount: "web"})
	if err != nil || got.ARN != testBase+"sa-role" || got.TargetARN != target || got.Name != "target" {
		t.Errorf("ServiceAccount target: %+v, %v", got, err)
	}
	got, err = roles.ResolveRole(context.Background(), &Pod{Namespace: "apps", Name: "p", ServiceAccount: "web", Annotations: map[string]string{TargetRoleKey: "own-target"}})
	if err != nil || got.TargetARN != testBase+"own-target" {
		t.Errorf("pod's own target: %+v, %v", got, err)
	}
	var d *DenialError
	if _, err := roles.ResolveRole(context.Background(), &Pod{Namespace: "apps", Name: "p", ServiceAccount: "wide"}); !errors.As(err, &d) || !strings.Contains(d.Detail, "second hop") {
		t.Errorf("ServiceAccount target outside the policy: %v", err)
	}
}

func TestServiceAccountRoles(t *testing.T) {
	namespaces := fakeNamespaces{"apps": namespace("apps", "1", ptr(`["sa-role", "pod-role", "irsa-role"]`))}
	resolver, err := NewRoleResolver(namespaces, ResolverOptions{BaseRoleARN: StaticBaseARN(testBase), NamespaceRestrictions: true, Logger: testLogger()})
	if err != nil {
		t.Fatal(err)
	}
	accounts := fakeAccounts{
		"apps/web":    "sa-role",
		"apps/irsa":   testBase + "irsa-role", // what ServiceAccounts returns for eks.amazonaws.com/role-arn
		"apps/plain":  "",
		"apps/denied": "admin",
	}
	roles, err := NewServiceAccountRoles(resolver, accounts, "")
	if err != nil {
		t.Fatal(err)
	}
	pod := func(sa string, ann map[string]string) *Pod {
		return &Pod{UID: "u", Namespace: "apps", Name: "p", ServiceAccount: sa, Annotations: ann}
	}
	tests := []struct {
		name    string
		pod     *Pod
		want    string
		wantErr func(error) bool
	}{
		{"the ServiceAccount's role", pod("web", nil), testBase + "sa-role", nil},
		{"the ServiceAccount's IRSA role ARN", pod("irsa", nil), testBase + "irsa-role", nil},
		{"the pod's annotation wins", pod("web", map[string]string{DefaultRoleKey: "pod-role"}), testBase + "pod-role", nil},
		{"no role anywhere", pod("plain", nil), "", func(err error) bool { return errors.Is(err, ErrNoRole) }},
		{"the namespace policy applies to the ServiceAccount's role", pod("denied", nil), "", func(err error) bool {
			var d *DenialError
			return errors.As(err, &d) && d.Reason == DeniedByNamespace
		}},
		{"a ServiceAccount the cache lacks cannot be judged", pod("gone", nil), "", func(err error) bool { return errors.Is(err, ErrNotSynced) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := len(tt.pod.Annotations)
			role, err := roles.ResolveRole(context.Background(), tt.pod)
			if tt.wantErr != nil {
				if !tt.wantErr(err) {
					t.Fatalf("ResolveRole = %+v, %v", role, err)
				}
				return
			}
			if err != nil || role.ARN != tt.want {
				t.Fatalf("ResolveRole = %q, %v; want %s", role.ARN, err, tt.want)
			}
			if len(tt.pod.Annotations) != before {
				t.Fatal("the pod's (informer-shared) annotations were modified")
			}
		})
	}
}

func TestServiceAccountCacheKeepsOnlyRoleAnnotations(t *testing.T) {
	sa := &corev1.ServiceAccount{
		ObjectMeta: metav1.ObjectMeta{Namespace: "apps", Name: "web", UID: "u", ResourceVersion: "7",
			Annotations: map[string]string{DefaultRoleKey: "a", IRSARoleKey: "b", "kubectl.kubernetes.io/last-applied-configuration": "{...}"},
			Labels:      map[string]string{"x": "y"}},
		Secrets: []corev1.ObjectReference{{Name: "web-token"}},
	}
	// The agent's type has no secrets or labels: they are dropped on decoding.
	out, err := transformServiceAccount([]string{DefaultRoleKey, IRSARoleKey})(roundTrip[objects.ServiceAccount](sa))
	if err != nil {
		t.Fatal(err)
	}
	got := out.(*objects.ServiceAccount)
	want := &objects.ServiceAccount{Meta: objects.Meta{Namespace: "apps", Name: "web", UID: "u", ResourceVersion: "7",
		Annotations: objects.Annotations{{Key: DefaultRoleKey, Value: "a"}, {Key: IRSARoleKey, Value: "b"}}}}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("trimmed to %+v", got)
	}
}

// recordingResolver remembers the Pod the token door's resolver passed on.
type recordingResolver struct{ got *Pod }

func (r *recordingResolver) ResolveRole(_ context.Context, pod *Pod) (Role, error) {
	r.got = pod
	return Role{ARN: pod.Annotations[DefaultRoleKey]}, nil
}

// TestServiceAccountRolesMemoSeesEveryChange: the token door reuses the
// pod-with-its-ServiceAccount's-role copy only while the pod object and the
// ServiceAccount's role, target role and session policy are all unchanged;
// the next request after any change sees it.
func TestServiceAccountRolesMemoSeesEveryChange(t *testing.T) {
	accounts := fakeTargetAccounts{
		fakeAccounts: fakeAccounts{"apps/web": "role-1"},
		targets:      map[string]string{"apps/web": "target-1"},
		policies:     map[string]string{"apps/web": "policy-1"},
	}
	rec := &recordingResolver{}
	roles, err := NewServiceAccountRoles(rec, accounts, "")
	if err != nil {
		t.Fatal(err)
	}
	pod := &Pod{UID: "u", Namespace: "apps", Name: "p", ServiceAccount: "web"}
	resolve := func(p *Pod) *Pod {
		t.Helper()
		if _, err := roles.ResolveRole(context.Background(), p); err != nil {
			t.Fatal(err)
		}
		return rec.got
	}
	check := func(step string, got *Pod, role, target, policy string) {
		t.Helper()
		if a := got.Annotations; a[DefaultRoleKey] != role || a[TargetRoleKey] != target || a[SessionPolicyKey] != policy {
			t.Errorf("%s: the resolver saw role %q, target %q, policy %q; want %q, %q, %q",
				step, a[DefaultRoleKey], a[TargetRoleKey], a[SessionPolicyKey], role, target, policy)
		}
	}

	first := resolve(pod)
	check("first request", first, "role-1", "target-1", "policy-1")
	if resolve(pod) != first {
		t.Error("a repeat request with nothing changed built a new copy")
	}
	accounts.fakeAccounts["apps/web"] = "role-2"
	check("ServiceAccount role changed", resolve(pod), "role-2", "target-1", "policy-1")
	accounts.targets["apps/web"] = "target-2"
	check("ServiceAccount target changed", resolve(pod), "role-2", "target-2", "policy-1")
	accounts.policies["apps/web"] = "policy-2"
	check("ServiceAccount policy changed", resolve(pod), "role-2", "target-2", "policy-2")
	// The pod changed (a new object from the watcher): its own target wins.
	changed := *pod
	changed.Annotations = map[string]string{TargetRoleKey: "own-target"}
	check("pod changed", resolve(&changed), "role-2", "own-target", "policy-2")
	// Changes the ServiceAccount's values do not show (a new external ID).
	for _, id := range []string{"ext-1", "ext-2"} {
		ext := *pod
		ext.Annotations = map[string]string{DefaultExternalIDKey: id}
		if got := resolve(&ext).Annotations[DefaultExternalIDKey]; got != id {
			t.Errorf("pod's external ID changed: the resolver saw %q, want %q", got, id)
		}
	}
	if pod.Annotations != nil {
		t.Error("the pod's (informer-shared) annotations were modified")
	}
}
