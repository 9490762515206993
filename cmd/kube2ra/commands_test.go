package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kube2ra/kube2ra/test/fakeaws/fakera"
	"github.com/kube2ra/kube2ra/test/harness"
)

// raFixture is a verifying fake Roles Anywhere endpoint trusting a fresh CA,
// and a node certificate issued by it.
func raFixture(t *testing.T, roles ...string) (*fakera.Server, *harness.PKI) {
	t.Helper()
	pki, err := harness.NewPKI(t.TempDir(), "node-a")
	if err != nil {
		t.Fatal(err)
	}
	srv, err := fakera.Start(fakera.Options{
		TrustAnchors: []fakera.TrustAnchor{{ARN: harness.TrustAnchorARN, CAs: []*x509.Certificate{pki.CA}}},
		Profiles:     []fakera.Profile{{ARN: harness.ProfileARN, RoleARNs: harness.RoleARNs(roles)}},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Close)
	return srv, pki
}

func credentialsArgs(srv *fakera.Server, pki *harness.PKI, role string) []string {
	return []string{
		"--ra-trust-anchor-arn", harness.TrustAnchorARN,
		"--ra-profile-arn", harness.ProfileARN,
		"--ra-certificate", pki.CertPath,
		"--ra-private-key", pki.KeyPath,
		"--ra-endpoint", srv.URL(),
		"--role-arn", harness.RoleARN(role),
	}
}

func TestCredentialsCommandPrintsCredentialProcessJSON(t *testing.T) {
	srv, pki := raFixture(t, "app")
	var out, errOut strings.Builder
	if code := dispatch(append([]string{"credentials"}, credentialsArgs(srv, pki, "app")...), &out, &errOut); code != 0 {
		t.Fatalf("exit %d: %s", code, errOut.String())
	}
	var doc struct {
		Version                                                int
		AccessKeyId, SecretAccessKey, SessionToken, Expiration string
	}
	if err := json.Unmarshal([]byte(out.String()), &doc); err != nil {
		t.Fatalf("not JSON: %q: %v", out.String(), err)
	}
	issued, ok := srv.Issued(doc.AccessKeyId)
	if doc.Version != 1 || !ok || issued.SecretAccessKey != doc.SecretAccessKey || issued.SessionToken != doc.SessionToken || doc.Expiration == "" {
		t.Fatalf("printed credentials are not the ones issued: %+v (issued %v)", doc, ok)
	}
	if strings.Contains(errOut.String(), doc.SecretAccessKey) || strings.Contains(errOut.String(), doc.SessionToken) {
		t.Fatal("the secret or token was logged")
	}
}

func TestCredentialsCommandPrintsTheServicesDenial(t *testing.T) {
	srv, pki := raFixture(t, "app")
	var out, errOut strings.Builder
	code := dispatch(append([]string{"credentials"}, credentialsArgs(srv, pki, "not-in-profile")...), &out, &errOut)
	if code == 0 || out.Len() != 0 {
		t.Fatalf("a denied role: exit %d, stdout %q", code, out.String())
	}
	if !strings.Contains(errOut.String(), "AccessDenied") {
		t.Fatalf("the service's denial is not shown: %q", errOut.String())
	}
}

func TestCredentialsCommandRefusesAMismatchedKeyBeforeAnyCall(t *testing.T) {
	srv, pki := raFixture(t, "app")
	other, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, _ := x509.MarshalPKCS8PrivateKey(other)
	keyPath := filepath.Join(t.TempDir(), "other.key")
	if err := os.WriteFile(keyPath, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	args := credentialsArgs(srv, pki, "app")
	for i := range args {
		if args[i] == pki.KeyPath {
			args[i] = keyPath
		}
	}
	var out, errOut strings.Builder
	if code := dispatch(append([]string{"credentials"}, args...), &out, &errOut); code == 0 {
		t.Fatal("a key that does not match the certificate was accepted")
	}
	if !strings.Contains(strings.ToLower(errOut.String()), "match") {
		t.Fatalf("the error does not say the key does not match: %q", errOut.String())
	}
	if n := srv.Stats().Requests; n != 0 {
		t.Fatalf("%d requests reached the endpoint before the key was checked", n)
	}
}

// TestRunRefusesBadConfigsWithOneLine: each bad value exits 2 with one line
// that names the flag, before anything starts.
func TestRunRefusesBadConfigsWithOneLine(t *testing.T) {
	base := []string{"run", "--node", "n", "--host-ip", "10.0.0.1"}
	cases := map[string]struct {
		args []string
		want string
	}{
		"empty interface list":      {[]string{"--host-interface", ""}, "--host-interface"},
		"bad base ARN":              {[]string{"--base-role-arn", "arn:aws:iam::12:role/"}, "--base-role-arn"},
		"missing certificate":       {[]string{"--credential-source", "rolesanywhere", "--ra-trust-anchor-arn", harness.TrustAnchorARN, "--ra-profile-arn", harness.ProfileARN, "--ra-certificate", "/nonexistent.pem", "--ra-private-key", "/nonexistent.pem"}, "--ra-certificate"},
		"unknown credential source": {[]string{"--credential-source", "vault"}, "--credential-source"},
		"port out of range":         {[]string{"--app-port", "65536"}, "--app-port"},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			var out, errOut strings.Builder
			code := dispatch(append(append([]string{}, base...), tc.args...), &out, &errOut)
			if code != exitUsage {
				t.Fatalf("exit %d, want %d", code, exitUsage)
			}
			lines := strings.Split(strings.TrimSpace(errOut.String()), "\n")
			matching := 0
			for _, l := range lines {
				if strings.Contains(l, tc.want) {
					matching++
				}
			}
			if matching != 1 {
				t.Fatalf("want exactly one line naming %s, got:\n%s", tc.want, errOut.String())
			}
		})
	}
}
