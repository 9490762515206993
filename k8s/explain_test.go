package k8s

import (
	"testing"
)

// TestCheckPolicyNamesTheMatchingPattern: CheckPolicy reports the first
// pattern that allows the role, from the policy ResolveRole compiles, and
// agrees with ResolveRole on allow and deny.
func TestCheckPolicyNamesTheMatchingPattern(t *testing.T) {
	namespaces := fakeNamespaces{
		"apps":   namespace("apps", "1", ptr(`["web","team/*","*"]`)),
		"none":   namespace("none", "1", nil),
		"broken": namespace("broken", "1", ptr(`web`)),
		"re":     namespace("re", "1", ptr(`["w.b","team/.*"]`)),
	}
	tests := []struct {
		name        string
		format      PolicyFormat
		ns, role    string
		wantMatch   int
		wantPresent bool
		wantErr     bool
		wantPattern string
	}{
		{name: "glob: the exact name is the first pattern", format: PolicyGlob, ns: "apps", role: testBase + "web",
			wantMatch: 0, wantPresent: true, wantPattern: testBase + "web"},
		{name: "glob: a path role meets the path pattern before the catch-all", format: PolicyGlob, ns: "apps", role: testBase + "team/db",
			wantMatch: 1, wantPresent: true, wantPattern: testBase + "team/*"},
		{name: "glob: another account matches nothing", format: PolicyGlob, ns: "apps", role: "arn:aws:iam::999999999999:role/web",
			wantMatch: -1, wantPresent: true},
		{name: "regexp: patterns are anchored expressions after the quoted base", format: PolicyRegexp, ns: "re", role: testBase + "team/db",
			wantMatch: 1, wantPresent: true},
		{name: "regexp: anchoring keeps a longer name out", format: PolicyRegexp, ns: "re", role: testBase + "web-admin",
			wantMatch: -1, wantPresent: true},
		{name: "no annotation: nothing is present to match", format: PolicyGlob, ns: "none", role: testBase + "web",
			wantMatch: -1},
		{name: "unparsable annotation: an error, no match", format: PolicyGlob, ns: "broken", role: testBase + "web",
			wantMatch: -1, wantPresent: true, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, err := NewRoleResolver(namespaces, ResolverOptions{BaseRoleARN: StaticBaseARN(testBase), NamespaceRestrictions: true, Format: tt.format, Logger: testLogger()})
			if err != nil {
				t.Fatal(err)
			}
			c := r.CheckPolicy(namespaces[tt.ns], tt.role)
			if c.Match != tt.wantMatch || c.Present != tt.wantPresent || (c.Err != nil) != tt.wantErr {
				t.Fatalf("CheckPolicy = match %d present %v err %v; want match %d present %v err %v", c.Match, c.Present, c.Err, tt.wantMatch, tt.wantPresent, tt.wantErr)
			}
			if tt.wantPattern != "" && c.Patterns[c.Match] != tt.wantPattern {
				t.Errorf("matching pattern %q, want %q", c.Patterns[c.Match], tt.wantPattern)
			}
			if c.Key != DefaultNamespaceKey || c.Format != tt.format {
				t.Errorf("key %q format %q, want %q %q", c.Key, c.Format, DefaultNamespaceKey, tt.format)
			}
			// The check must agree with the decision.
			_, resolveErr := r.resolve(&Pod{Namespace: tt.ns, Name: "p", Annotations: map[string]string{DefaultRoleKey: tt.role}})
			if allowed := resolveErr == nil; allowed != (c.Match >= 0) {
				t.Errorf("ResolveRole allowed=%v (%v) but CheckPolicy match %d", allowed, resolveErr, c.Match)
			}
		})
	}
}
