package k8s

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"

	"github.com/sirupsen/logrus"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/record"

	"github.com/kube2ra/kube2ra/arn"
	"github.com/kube2ra/kube2ra/kubeapi/objects"
)

// fakeNamespaces is a NamespaceGetter over a map.
type fakeNamespaces map[string]*objects.Namespace

func (f fakeNamespaces) Namespace(name string) (*objects.Namespace, bool) {
	ns, ok := f[name]
	return ns, ok
}

func testLogger() logrus.FieldLogger {
	l := logrus.New()
	l.SetOutput(io.Discard)
	return l
}

func namespace(name, rv string, policy *string) *objects.Namespace {
	ns := &objects.Namespace{Meta: objects.Meta{Name: name, UID: types.UID("uid-ns-" + name), ResourceVersion: rv}}
	if policy != nil {
		ns.Annotations = objects.Annotations{{Key: DefaultNamespaceKey, Value: *policy}}
	}
	return ns
}

func ptr(s string) *string { return &s }

func annotatedPod(ns string, ann map[string]string) *Pod {
	return &Pod{UID: "uid-pod", Namespace: ns, Name: "pod", Annotations: ann}
}

// resolveCase is one case of TestResolveRole.
type resolveCase struct {
	name       string
	opts       ResolverOptions
	ns         string
	ann        map[string]string
	want       Role
	wantErr    error
	wantReason DenialReason
}

func TestResolveRole(t *testing.T) {
	namespaces := fakeNamespaces{
		"apps":    namespace("apps", "1", ptr(`["app","team/*"]`)),
		"open":    namespace("open", "1", ptr(`["*"]`)),
		"none":    namespace("none", "1", nil),
		"broken":  namespace("broken", "1", ptr(`app`)),
		"badre":   namespace("badre", "1", ptr(`["app(["]`)),
		"regexps": namespace("regexps", "1", ptr(`["app"]`)),
		"gov":     namespace("gov", "1", ptr(`["gov-*"]`)),
		"chain":   namespace("chain", "1", ptr(`["app","arn:aws:iam::444455556666:role/target"]`)),
	}
	base := StaticBaseARN(testBase)
	tests := []resolveCase{
		{name: "bare name allowed by policy", opts: ResolverOptions{BaseRoleARN: base, NamespaceRestrictions: true},
			ns: "apps", ann: map[string]string{DefaultRoleKey: "app"},
			want: Role{ARN: testBase + "app", Name: "app", AccountID: "123456789012"}},
		{name: "path role allowed by glob", opts: ResolverOptions{BaseRoleARN: base, NamespaceRestrictions: true},
			ns: "apps", ann: map[string]string{DefaultRoleKey: "team/db"},
			want: Role{ARN: testBase + "team/db", Name: "db", AccountID: "123456789012"}},
		{name: "full ARN allowed by a bare pattern", opts: ResolverOptions{BaseRoleARN: base, NamespaceRestrictions: true},
			ns: "apps", ann: map[string]string{DefaultRoleKey: testBase + "app"},
			want: Role{ARN: testBase + "app", Name: "app", AccountID: "123456789012"}},
		{name: "app-admin is not app", opts: ResolverOptions{BaseRoleARN: base, NamespaceRestrictions: true},
			ns: "apps", ann: map[string]string{DefaultRoleKey: "app-admin"}, wantReason: DeniedByNamespace},
		{name: "role of another account denied by bare patterns", opts: ResolverOptions{BaseRoleARN: base, NamespaceRestrictions: true},
			ns: "open", ann: map[string]string{DefaultRoleKey: "arn:aws:iam::210987654321:role/app"}, wantReason: DeniedByNamespace},
		{name: "namespace without policy denies a pod role", opts: ResolverOptions{BaseRoleARN: base, NamespaceRestrictions: true},
			ns: "none", ann: map[string]string{DefaultRoleKey: "app"}, wantReason: DeniedByNamespace},
		{name: "unknown namespace denies", opts: ResolverOptions{BaseRoleARN: base, NamespaceRestrictions: true},
			ns: "ghost", ann: map[string]string{DefaultRoleKey: "app"}, wantReason: DeniedByNamespace},
		{name: "unparsable policy denies", opts: ResolverOptions{BaseRoleARN: base, NamespaceRestrictions: true},
			ns: "broken", ann: map[string]string{DefaultRoleKey: "app"}, wantReason: DeniedInvalidPolicy},
		{name: "invalid regexp policy denies", opts: ResolverOptions{BaseRoleARN: base, NamespaceRestrictions: true, Format: PolicyRegexp},
			ns: "badre", ann: map[string]string{DefaultRoleKey: "app"}, wantReason: DeniedInvalidPolicy},
		{name: "regexp policy allows the exact role", opts: ResolverOptions{BaseRoleARN: base, NamespaceRestrictions: true, Format: PolicyRegexp},
			ns: "regexps", ann: map[string]string{DefaultRoleKey: "app"}, want: Role{ARN: testBase + "app", Name: "app", AccountID: "123456789012"}},
		{name: "regexp policy is anchored", opts: ResolverOptions{BaseRoleARN: base, NamespaceRestrictions: true, Format: PolicyRegexp},
			ns: "regexps", ann: map[string]string{DefaultRoleKey: "app-admin"}, wantReason: DeniedByNamespace},
		{name: "restrictions off allows any valid role", opts: ResolverOptions{BaseRoleARN: base},
			ns: "none", ann: map[string]string{DefaultRoleKey: "anything"}, want: Role{ARN: testBase + "anything", Name: "anything", AccountID: "123456789012"}},
		{name: "invalid role annotation denies and does not fall back to the default",
			opts: ResolverOptions{BaseRoleARN: base, DefaultRole: "fallback", NamespaceRestrictions: true},
			ns:   "open", ann: map[string]string{DefaultRoleKey: "arn:aws:iam::123456789012:user/bob"}, wantReason: DeniedInvalidRole},
		{name: "dot-dot path under a glob the namespace allows is invalid, not allowed", opts: ResolverOptions{BaseRoleARN: base, NamespaceRestrictions: true},
			ns: "apps", ann: map[string]string{DefaultRoleKey: "team/../admin"}, wantReason: DeniedInvalidRole},
		{name: "asterisk in a role path is invalid even where every role is allowed", opts: ResolverOptions{BaseRoleARN: base, NamespaceRestrictions: true},
			ns: "open", ann: map[string]string{DefaultRoleKey: testBase + "*/app"}, wantReason: DeniedInvalidRole},
		{name: "percent in a role path is invalid", opts: ResolverOptions{BaseRoleARN: base},
			ns: "none", ann: map[string]string{DefaultRoleKey: "team%2f/app"}, wantReason: DeniedInvalidRole},
		{name: "bare role without base ARN denies", opts: ResolverOptions{NamespaceRestrictions: true},
			ns: "open", ann: map[string]string{DefaultRoleKey: "app"}, wantReason: DeniedInvalidRole},
		{name: "no role and no default", opts: ResolverOptions{BaseRoleARN: base, NamespaceRestrictions: true},
			ns: "apps", ann: nil, wantErr: ErrNoRole},
		{name: "empty role annotation counts as none", opts: ResolverOptions{BaseRoleARN: base, NamespaceRestrictions: true},
			ns: "apps", ann: map[string]string{DefaultRoleKey: "  "}, wantErr: ErrNoRole},
		{name: "default role is used and exempt from policy", opts: ResolverOptions{BaseRoleARN: base, DefaultRole: "node-default", NamespaceRestrictions: true},
			ns: "none", ann: nil, want: Role{ARN: testBase + "node-default", Name: "node-default", AccountID: "123456789012", Default: true}},
		{name: "default role named explicitly is exempt too", opts: ResolverOptions{BaseRoleARN: base, DefaultRole: "node-default", NamespaceRestrictions: true},
			ns: "none", ann: map[string]string{DefaultRoleKey: testBase + "node-default"}, want: Role{ARN: testBase + "node-default", Name: "node-default", AccountID: "123456789012"}},
		{name: "default role exempt even under an unparsable policy", opts: ResolverOptions{BaseRoleARN: base, DefaultRole: "node-default", NamespaceRestrictions: true},
			ns: "broken", ann: nil, want: Role{ARN: testBase + "node-default", Name: "node-default", AccountID: "123456789012", Default: true}},
		{name: "external ID passed through when allowed", opts: ResolverOptions{BaseRoleARN: base, NamespaceRestrictions: true, ExternalIDAllowed: true},
			ns: "apps", ann: map[string]string{DefaultRoleKey: "app", DefaultExternalIDKey: "ext-1"},
			want: Role{ARN: testBase + "app", Name: "app", AccountID: "123456789012", ExternalID: "ext-1"}},
		{name: "external ID refused for Roles Anywhere", opts: ResolverOptions{BaseRoleARN: base, NamespaceRestrictions: true},
			ns: "apps", ann: map[string]string{DefaultRoleKey: "app", DefaultExternalIDKey: "ext-1"}, wantReason: DeniedExternalID},
		{name: "custom annotation keys", opts: ResolverOptions{BaseRoleARN: base, Keys: AnnotationKeys{Role: "example.com/role"}},
			ns: "none", ann: map[string]string{"example.com/role": "custom", DefaultRoleKey: "ignored"},
			want: Role{ARN: testBase + "custom", Name: "custom", AccountID: "123456789012"}},
		{name: "GovCloud base and policy", opts: ResolverOptions{BaseRoleARN: StaticBaseARN("arn:aws-us-gov:iam::123456789012:role/"), NamespaceRestrictions: true},
			ns: "gov", ann: map[string]string{DefaultRoleKey: "gov-app"},
			want: Role{ARN: "arn:aws-us-gov:iam::123456789012:role/gov-app", Name: "gov-app", AccountID: "123456789012"}},
		{name: "China full ARN under a commercial base is not matched by bare patterns", opts: ResolverOptions{BaseRoleARN: base, NamespaceRestrictions: true},
			ns: "gov", ann: map[string]string{DefaultRoleKey: "arn:aws-cn:iam::123456789012:role/gov-app"}, wantReason: DeniedByNamespace},
	}
	const target = "arn:aws:iam::444455556666:role/target"
	tests = append(tests, []resolveCase{
		{name: "target role allowed with its first role serves the target's name and account", opts: ResolverOptions{BaseRoleARN: base, NamespaceRestrictions: true},
			ns: "chain", ann: map[string]string{DefaultRoleKey: "app", TargetRoleKey: target},
			want: Role{ARN: testBase + "app", TargetARN: target, Name: "target", AccountID: "444455556666"}},
		{name: "target role not in the policy is denied", opts: ResolverOptions{BaseRoleARN: base, NamespaceRestrictions: true},
			ns: "apps", ann: map[string]string{DefaultRoleKey: "app", TargetRoleKey: target}, wantReason: DeniedByNamespace},
		{name: "first role not in the policy is denied even when the target is", opts: ResolverOptions{BaseRoleARN: base, NamespaceRestrictions: true},
			ns: "chain", ann: map[string]string{DefaultRoleKey: "other", TargetRoleKey: target}, wantReason: DeniedByNamespace},
		{name: "the default role's exemption does not cover its target", opts: ResolverOptions{BaseRoleARN: base, DefaultRole: "node-default", NamespaceRestrictions: true},
			ns: "apps", ann: map[string]string{TargetRoleKey: target}, wantReason: DeniedByNamespace},
		{name: "a bare target name takes the base ARN", opts: ResolverOptions{BaseRoleARN: base, NamespaceRestrictions: true},
			ns: "apps", ann: map[string]string{DefaultRoleKey: "app", TargetRoleKey: "team/x"},
			want: Role{ARN: testBase + "app", TargetARN: testBase + "team/x", Name: "x", AccountID: "123456789012"}},
		{name: "an invalid target is denied", opts: ResolverOptions{BaseRoleARN: base},
			ns: "none", ann: map[string]string{DefaultRoleKey: "app", TargetRoleKey: "arn:aws:iam::444455556666:user/bob"}, wantReason: DeniedInvalidRole},
		{name: "a target in another partition is denied", opts: ResolverOptions{BaseRoleARN: base},
			ns: "none", ann: map[string]string{DefaultRoleKey: "app", TargetRoleKey: "arn:aws-cn:iam::444455556666:role/t"}, wantReason: DeniedInvalidRole},
	}...)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.opts.Logger = testLogger()
			r, err := NewRoleResolver(namespaces, tt.opts)
			if err != nil {
				t.Fatal(err)
			}
			got, err := r.ResolveRole(context.Background(), annotatedPod(tt.ns, tt.ann))
			switch {
			case tt.wantReason != "":
				var d *DenialError
				if !errors.As(err, &d) || d.Reason != tt.wantReason {
					t.Fatalf("ResolveRole = %+v, %v; want denial %s", got, err, tt.wantReason)
				}
				if got != (Role{}) {
					t.Fatalf("denial returned a role %+v", got)
				}
				if d.Detail == "" || d.Namespace != tt.ns {
					t.Fatalf("denial %+v lacks detail or namespace", d)
				}
				if tt.ann[TargetRoleKey] != "" && tt.wantReason == DeniedByNamespace && !strings.Contains(d.Detail, "hop") {
					t.Errorf("denial of a chained pod does not name the hop: %s", d.Detail)
				}
			case tt.wantErr != nil:
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("ResolveRole = %+v, %v; want %v", got, err, tt.wantErr)
				}
			default:
				if err != nil || got != tt.want {
					t.Fatalf("ResolveRole = %+v, %v; want %+v", got, err, tt.want)
				}
			}
		})
	}
}

func TestNewRoleResolverRejectsBadConfiguration(t *testing.T) {
	tests := []struct {
		name string
		opts ResolverOptions
	}{
		{name: "invalid base role ARN", opts: ResolverOptions{BaseRoleARN: StaticBaseARN("arn:aws:iam::1:role/")}},
		{name: "invalid default role", opts: ResolverOptions{BaseRoleARN: StaticBaseARN(testBase), DefaultRole: "bad name"}},
		{name: "invalid default role ARN without base", opts: ResolverOptions{DefaultRole: "arn:aws:iam::123456789012:user/x"}},
		{name: "unknown format", opts: ResolverOptions{Format: "regex"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.opts.Logger = testLogger()
			if _, err := NewRoleResolver(fakeNamespaces{}, tt.opts); err == nil {
				t.Fatal("NewRoleResolver succeeded; want a configuration error")
			}
		})
	}
}

func TestBaseRoleARNSuppliedLater(t *testing.T) {
	var base string
	r, err := NewRoleResolver(fakeNamespaces{"ns": namespace("ns", "1", nil)}, ResolverOptions{BaseRoleARN: func() string { return base }, DefaultRole: "dflt", Logger: testLogger()})
	if err != nil {
		t.Fatal(err)
	}
	pod := annotatedPod("ns", nil)
	var d *DenialError
	if _, err := r.ResolveRole(context.Background(), pod); !errors.As(err, &d) || d.Reason != DeniedInvalidRole {
		t.Fatalf("before the base is known: %v; want an InvalidRole denial", err)
	}
	base = "arn:aws-cn:iam::123456789012:role/"
	got, err := r.ResolveRole(context.Background(), pod)
	if err != nil || got.ARN != base+"dflt" {
		t.Fatalf("after the base is known: %+v, %v; want %sdflt", got, err, base)
	}
	// Normalised names are remembered with the base they were read
	// against: a changed base changes the answer.
	base = "arn:aws:iam::210987654321:role/team/"
	got, err = r.ResolveRole(context.Background(), pod)
	if err != nil || got.ARN != base+"dflt" || got.AccountID != "210987654321" || got.Name != "dflt" {
		t.Fatalf("after the base changed: %+v, %v; want %sdflt", got, err, base)
	}
}

// TestRoleNamesMemoIsBounded: the memo of normalised names starts over
// past maxMemoisedRoles, and answers as arn.NormalizeRole does.
func TestRoleNamesMemoIsBounded(t *testing.T) {
	base, err := arn.ParseBase("arn:aws:iam::123456789012:role/")
	if err != nil {
		t.Fatal(err)
	}
	var m roleNames
	for i := range maxMemoisedRoles + 10 {
		name := fmt.Sprintf("role-%d", i)
		n, err := m.normalize(name, base)
		want, werr := arn.NormalizeRole(name, base)
		if err != nil || werr != nil || n.role != want || n.arn != want.String() {
			t.Fatalf("%s: %+v %v, want %+v %v", name, n, err, want, werr)
		}
	}
	if len(m.byName) > maxMemoisedRoles {
		t.Fatalf("%d names remembered, more than %d", len(m.byName), maxMemoisedRoles)
	}
	if _, err := m.normalize("not a role/", base); err == nil {
		t.Fatal("an invalid name normalised")
	}
}

func TestPolicyCompiledOncePerResourceVersion(t *testing.T) {
	namespaces := fakeNamespaces{"apps": namespace("apps", "1", ptr(`["app"]`))}
	r, err := NewRoleResolver(namespaces, ResolverOptions{BaseRoleARN: StaticBaseARN(testBase), NamespaceRestrictions: true, Logger: testLogger()})
	if err != nil {
		t.Fatal(err)
	}
	pod := annotatedPod("apps", map[string]string{DefaultRoleKey: "app"})
	if _, err := r.ResolveRole(context.Background(), pod); err != nil {
		t.Fatal(err)
	}
	first := r.policies["apps"].policy
	for range 10 {
		if _, err := r.ResolveRole(context.Background(), pod); err != nil {
			t.Fatal(err)
		}
	}
	if r.policies["apps"].policy != first {
		t.Fatal("the policy was recompiled without a namespace change")
	}
	// A new resourceVersion with the same annotation (a label changed) keeps the compiled policy.
	namespaces["apps"] = namespace("apps", "2", ptr(`["app"]`))
	if _, err := r.ResolveRole(context.Background(), pod); err != nil {
		t.Fatal(err)
	}
	if r.policies["apps"].policy != first {
		t.Fatal("the policy was recompiled although only the resourceVersion changed")
	}
	// A changed annotation takes effect at once.
	namespaces["apps"] = namespace("apps", "3", ptr(`["other"]`))
	var d *DenialError
	if _, err := r.ResolveRole(context.Background(), pod); !errors.As(err, &d) || d.Reason != DeniedByNamespace {
		t.Fatalf("after the policy changed: %v; want a NamespacePolicy denial", err)
	}
}

// The agent hears of every namespace in the cluster but keeps a compiled
// policy only for namespaces its node's pods asked from; a namespace
// change refreshes a kept policy at once and still reports a bad one
// nobody asked for.
func TestNamespaceChangesKeepPoliciesOnlyOfNamespacesAskedFrom(t *testing.T) {
	namespaces := fakeNamespaces{"apps": namespace("apps", "1", ptr(`["app"]`))}
	rec := record.NewFakeRecorder(10)
	r, err := NewRoleResolver(namespaces, ResolverOptions{BaseRoleARN: StaticBaseARN(testBase), NamespaceRestrictions: true, Events: rec, Logger: testLogger()})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 50 {
		r.NamespaceChanged(namespace(fmt.Sprintf("other-%d", i), "1", ptr(`["team-*"]`)))
	}
	r.NamespaceChanged(namespaces["apps"])
	if len(r.policies) != 0 {
		t.Fatalf("%d policies kept for namespaces no pod asked from; want 0", len(r.policies))
	}
	r.NamespaceChanged(namespace("broken", "1", ptr(`team-*`)))
	select {
	case ev := <-rec.Events:
		if !strings.Contains(ev, ReasonInvalidRolePolicy) || !strings.Contains(ev, "not a JSON array") {
			t.Errorf("event %q; want InvalidRolePolicy saying what is wrong", ev)
		}
	default:
		t.Error("no InvalidRolePolicy event for a bad policy no pod asked under")
	}

	pod := annotatedPod("apps", map[string]string{DefaultRoleKey: "app"})
	if _, err := r.ResolveRole(context.Background(), pod); err != nil {
		t.Fatal(err)
	}
	if len(r.policies) != 1 || r.policies["apps"] == nil {
		t.Fatalf("policies kept after a request from apps: %v; want apps only", r.policies)
	}
	// The informer's change reaches the kept policy before any request.
	changed := namespace("apps", "2", ptr(`["other"]`))
	r.NamespaceChanged(changed)
	if e := r.policies["apps"]; e.raw != `["other"]` || e.resourceVersion != "2" {
		t.Fatalf("kept policy after the change: %q at %s; want [\"other\"] at 2", e.raw, e.resourceVersion)
	}
	namespaces["apps"] = changed
	var d *DenialError
	if _, err := r.ResolveRole(context.Background(), pod); !errors.As(err, &d) || d.Reason != DeniedByNamespace {
		t.Fatalf("after the policy changed: %v; want a NamespacePolicy denial", err)
	}
	r.NamespaceDeleted("apps")
	if len(r.policies) != 0 {
		t.Fatalf("%d policies kept after apps was deleted; want 0", len(r.policies))
	}
}

// A role annotation with a dot element, "%" or "*" in its path is refused
// where it is parsed, and the pod's Event names the annotation, its value
// and what a role path may hold.
func TestMalformedRolePathIsNamedInTheEvent(t *testing.T) {
	rec := record.NewFakeRecorder(10)
	r, err := NewRoleResolver(fakeNamespaces{"apps": namespace("apps", "1", ptr(`["team/*"]`))},
		ResolverOptions{BaseRoleARN: StaticBaseARN(testBase), NamespaceRestrictions: true, Events: rec, Logger: testLogger()})
	if err != nil {
		t.Fatal(err)
	}
	_, err = r.ResolveRole(context.Background(), annotatedPod("apps", map[string]string{DefaultRoleKey: "team/../admin"}))
	var d *DenialError
	if !errors.As(err, &d) || d.Reason != DeniedInvalidRole || d.Role != "team/../admin" {
		t.Fatalf("ResolveRole = %v; want an InvalidRole denial of the annotation value", err)
	}
	ev := <-rec.Events
	for _, want := range []string{"Warning", ReasonRoleDenied, DefaultRoleKey, "team/../admin", `".." element`, "letters, digits and +=,.@_-"} {
		if !strings.Contains(ev, want) {
			t.Errorf("event %q does not mention %q", ev, want)
		}
	}
	// The default role is the operator's: a bad one stops the resolver at start.
	_, err = NewRoleResolver(fakeNamespaces{}, ResolverOptions{BaseRoleARN: StaticBaseARN(testBase), DefaultRole: "ops/../node-default", Logger: testLogger()})
	if err == nil || !strings.Contains(err.Error(), "--default-role") || !strings.Contains(err.Error(), `".." element`) {
		t.Errorf("NewRoleResolver with default role ops/../node-default: %v; want a --default-role error naming the .. element", err)
	}
}

func TestDenialsRecordEvents(t *testing.T) {
	namespaces := fakeNamespaces{
		"apps":   namespace("apps", "1", ptr(`["app"]`)),
		"broken": namespace("broken", "1", ptr(`not json`)),
	}
	rec := record.NewFakeRecorder(100)
	r, err := NewRoleResolver(namespaces, ResolverOptions{BaseRoleARN: StaticBaseARN(testBase), NamespaceRestrictions: true, Events: rec, Logger: testLogger()})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.ResolveRole(context.Background(), annotatedPod("apps", map[string]string{DefaultRoleKey: "app-admin"})); err == nil {
		t.Fatal("app-admin allowed")
	}
	ev := <-rec.Events
	for _, want := range []string{"Warning", ReasonRoleDenied, testBase + "app-admin", "apps", testBase + "app"} {
		if !strings.Contains(ev, want) {
			t.Errorf("event %q does not mention %q", ev, want)
		}
	}
	if _, err := r.ResolveRole(context.Background(), annotatedPod("broken", map[string]string{DefaultRoleKey: "app"})); err == nil {
		t.Fatal("role allowed under an unparsable policy")
	}
	podEvent, nsEvent := <-rec.Events, <-rec.Events
	if !strings.Contains(podEvent, ReasonRoleDenied) || !strings.Contains(nsEvent, ReasonInvalidRolePolicy) || !strings.Contains(nsEvent, "not a JSON array") {
		t.Errorf("events %q and %q; want RoleDenied on the pod and InvalidRolePolicy naming the problem", podEvent, nsEvent)
	}
	// No role at all is not a denial and records nothing.
	if _, err := r.ResolveRole(context.Background(), annotatedPod("apps", nil)); !errors.Is(err, ErrNoRole) {
		t.Fatal(err)
	}
	select {
	case ev := <-rec.Events:
		t.Fatalf("unexpected event %q", ev)
	default:
	}
}

// TestChainedDenialNamesTheHop: the Event of a chained pod says whether
// its own role or its target role is missing from allowed-roles.
func TestChainedDenialNamesTheHop(t *testing.T) {
	const target = "arn:aws:iam::444455556666:role/target"
	namespaces := fakeNamespaces{
		"first-only":  namespace("first-only", "1", ptr(`["app"]`)),
		"target-only": namespace("target-only", "1", ptr(`["`+target+`"]`)),
	}
	events := record.NewFakeRecorder(10)
	r, err := NewRoleResolver(namespaces, ResolverOptions{BaseRoleARN: StaticBaseARN(testBase), NamespaceRestrictions: true, Events: events, Logger: testLogger()})
	if err != nil {
		t.Fatal(err)
	}
	for ns, want := range map[string]string{"first-only": "second hop (target role) refused", "target-only": "first hop refused"} {
		_, err := r.ResolveRole(context.Background(), annotatedPod(ns, map[string]string{DefaultRoleKey: "app", TargetRoleKey: target}))
		var d *DenialError
		if !errors.As(err, &d) || !strings.HasPrefix(d.Detail, want) {
			t.Errorf("namespace %s: %v, want a denial starting %q", ns, err, want)
		}
		if ev := <-events.Events; !strings.Contains(ev, want) {
			t.Errorf("namespace %s: Event %q does not say %q", ns, ev, want)
		}
	}
}
