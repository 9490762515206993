//go:build integration

package chart_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kube2ra/kube2ra/test/chart"
)

// renderFailure renders with a values file holding values and returns helm's
// error message; the render must fail.
func renderFailure(t *testing.T, values string) string {
	t.Helper()
	file := filepath.Join(t.TempDir(), "values.yaml")
	if err := os.WriteFile(file, []byte(values), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), renderTimeout)
	defer cancel()
	manifest, err := chart.Render(ctx, file)
	if err == nil {
		t.Fatalf("helm template accepted values it must refuse:\n%s\nrendered:\n%s", values, manifest)
	}
	var renderErr *chart.RenderError
	if !errors.As(err, &renderErr) {
		t.Fatalf("rendering failed for another reason than helm refusing the values: %v", err)
	}
	return renderErr.Stderr
}

// TestSchemaRefusesBadValues proves values.schema.json stops mistakes at
// install time with a message that names the value.
func TestSchemaRefusesBadValues(t *testing.T) {
	const schemaFailure = "values don't meet the specifications of the schema"
	tests := []struct {
		name   string
		values string
		want   string
	}{
		{
			name:   "misspelt top-level key",
			values: "credentialSourse: sts\n",
			want:   "additional properties 'credentialSourse' not allowed",
		},
		{
			name:   "misspelt nested key",
			values: "rolesAnywhere:\n  certificate:\n    certManager:\n      enable: true\n",
			want:   "at '/rolesAnywhere/certificate/certManager': additional properties 'enable' not allowed",
		},
		{
			name:   "string where a boolean belongs",
			values: "host:\n  ipv6: \"yes\"\n",
			want:   "at '/host/ipv6': got string, want boolean",
		},
		{
			name:   "number where a list belongs",
			values: "extraArgs: 3\n",
			want:   "at '/extraArgs': got number, want array",
		},
		{
			name:   "unknown session naming",
			values: "sessionName: namespace\n",
			want:   "at '/sessionName': value must be one of '', 'node', 'pod', 'none'",
		},
		{
			name:   "unknown credential source",
			values: "credentialSource: kiam\n",
			want:   "at '/credentialSource': value must be one of 'auto', 'rolesanywhere', 'sts'",
		},
		{
			name:   "trust anchor that is not a trust anchor ARN",
			values: "rolesAnywhere:\n  trustAnchorArn: arn:aws:iam::123456789012:role/x\n",
			want:   "at '/rolesAnywhere/trustAnchorArn'",
		},
		{
			name:   "duration without a unit",
			values: "sts:\n  sessionDuration: 3600\n",
			want:   "at '/sts/sessionDuration': got number, want string",
		},
		{
			name:   "port out of range",
			values: "ports:\n  metrics: 70000\n",
			want:   "at '/ports/metrics'",
		},
		{
			name:   "base role ARN with a dot-dot path element",
			values: "baseRoleArn: arn:aws:iam::123456789012:role/team/../\n",
			want:   "at '/baseRoleArn'",
		},
		{
			name:   "default role with a dot-dot path element",
			values: "defaultRole: ops/../admin\n",
			want:   "at '/defaultRole'",
		},
		{
			name:   "default role with an asterisk",
			values: "defaultRole: \"ops/*\"\n",
			want:   "at '/defaultRole'",
		},
		{
			name:   "default role with a percent-encoded path",
			values: "defaultRole: ops%2fx/admin\n",
			want:   "at '/defaultRole'",
		},
		{
			name:   "allow path with a character class",
			values: "metadataAllowPaths: [\"meta-data/[i]am/**\"]\n",
			want:   "at '/metadataAllowPaths/0'",
		},
		{
			name:   "extra argument that is not a flag",
			values: "extraArgs: [\"debug\"]\n",
			want:   "at '/extraArgs/0'",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			msg := renderFailure(t, tt.values)
			if !strings.Contains(msg, schemaFailure) || !strings.Contains(msg, tt.want) {
				t.Errorf("helm's message lacks %q (and %q):\n%s", tt.want, schemaFailure, msg)
			}
		})
	}
}

// TestTemplateRefusesInconsistentValues proves the checks across values (which
// the schema cannot express) fail with a message naming what to set.
func TestTemplateRefusesInconsistentValues(t *testing.T) {
	const (
		anchor  = "arn:aws:rolesanywhere:eu-west-1:123456789012:trust-anchor/0a1b2c3d-4e5f-6789-abcd-ef0123456789"
		profile = "arn:aws:rolesanywhere:eu-west-1:123456789012:profile/0a1b2c3d-4e5f-6789-abcd-ef0123456789"
	)
	tests := []struct {
		name   string
		values string
		want   string
	}{
		{
			name:   "handover with the non-root agent",
			values: "credentialSource: sts\nhost:\n  iptables: false\nhandover:\n  enabled: true\n",
			want:   "handover.enabled: true needs the root agent",
		},
		{
			name:   "surge without the handover",
			values: "credentialSource: sts\nhandover:\n  enabled: false\nupdateStrategy:\n  type: RollingUpdate\n  rollingUpdate:\n    maxSurge: 1\n    maxUnavailable: 0\n",
			want:   "maxSurge needs the handover",
		},
		{
			name:   "roles anywhere without trust anchor",
			values: "credentialSource: rolesanywhere\n",
			want:   "needs rolesAnywhere.trustAnchorArn",
		},
		{
			name:   "roles anywhere without profile",
			values: "credentialSource: rolesanywhere\nrolesAnywhere:\n  trustAnchorArn: " + anchor + "\n  certificate:\n    existingSecret: s\n",
			want:   "needs rolesAnywhere.profileArn",
		},
		{
			name:   "roles anywhere without a certificate source",
			values: "rolesAnywhere:\n  trustAnchorArn: " + anchor + "\n  profileArn: " + profile + "\n",
			want:   "exactly one node certificate source, found 0",
		},
		{
			name: "two certificate sources",
			values: "rolesAnywhere:\n  trustAnchorArn: " + anchor + "\n  profileArn: " + profile +
				"\n  certificate:\n    existingSecret: s\n    certManager:\n      enabled: true\n      issuerRef: {name: ca}\n",
			want: "exactly one node certificate source, found 2 (secret, certManager)",
		},
		{
			name: "cert-manager without issuer",
			values: "rolesAnywhere:\n  trustAnchorArn: " + anchor + "\n  profileArn: " + profile +
				"\n  certificate:\n    certManager:\n      enabled: true\n",
			want: "needs certManager.issuerRef.name",
		},
		{
			name:   "certificate configured for sts",
			values: "credentialSource: sts\nrolesAnywhere:\n  certificate:\n    existingSecret: s\n",
			want:   "does not use Roles Anywhere",
		},
		{
			name:   "service monitor without service",
			values: "metrics:\n  serviceMonitor:\n    enabled: true\n",
			want:   "metrics.serviceMonitor.enabled needs metrics.service.enabled",
		},
		{
			name:   "existing service account without name",
			values: "serviceAccount:\n  create: false\n",
			want:   "serviceAccount.name must name an existing ServiceAccount",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if msg := renderFailure(t, tt.values); !strings.Contains(msg, tt.want) {
				t.Errorf("helm's message lacks %q:\n%s", tt.want, msg)
			}
		})
	}
}
