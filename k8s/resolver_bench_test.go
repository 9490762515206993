package k8s

import (
	"context"
	"testing"
)

// BenchmarkResolveRole is one cached credential request's role resolution:
// a pod naming a role its namespace's glob policy allows.
func BenchmarkResolveRole(b *testing.B) {
	namespaces := fakeNamespaces{"apps": namespace("apps", "1", ptr(`["app-*", "other"]`))}
	r, err := NewRoleResolver(namespaces, ResolverOptions{BaseRoleARN: StaticBaseARN(testBase), NamespaceRestrictions: true, Logger: testLogger()})
	if err != nil {
		b.Fatal(err)
	}
	pod := &Pod{UID: "u", Namespace: "apps", Name: "p", Annotations: map[string]string{DefaultRoleKey: "app-web"}}
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := r.ResolveRole(ctx, pod); err != nil {
			b.Fatal(err)
		}
	}
}
