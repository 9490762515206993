package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// commandEnv makes this test binary, run again, the kube2ra command with
// the arguments after "--": the system trust store is read once per
// process, so a test of an empty one needs a process of its own.
const commandEnv = "KUBE2RA_TEST_RUN_COMMAND"

func TestMain(m *testing.M) {
	if os.Getenv(commandEnv) != "" {
		for i, a := range os.Args {
			if a == "--" {
				os.Exit(dispatch(os.Args[i+1:], os.Stdout, os.Stderr))
			}
		}
		os.Exit(2)
	}
	os.Exit(m.Run())
}

// An image without CA certificates cannot verify AWS: the agent says so
// before its first call, naming the fix, and calls nobody.
func TestNoCertificateAuthoritiesIsAnErrorAtStart(t *testing.T) {
	srv, pki := raFixture(t, "app")
	empty := t.TempDir()
	missing := filepath.Join(empty, "ca-certificates.crt")
	run := func(endpoint string) (int, string) {
		args := credentialsArgs(srv, pki, "app")
		for i := range args {
			if args[i] == srv.URL() {
				args[i] = endpoint
			}
		}
		cmd := exec.Command(os.Args[0], append([]string{"--", "credentials"}, args...)...)
		cmd.Env = []string{commandEnv + "=1", "HOME=" + empty, "SSL_CERT_FILE=" + missing, "SSL_CERT_DIR=" + empty}
		out, err := cmd.CombinedOutput()
		code := 0
		if ee, ok := err.(*exec.ExitError); ok {
			code = ee.ExitCode()
		} else if err != nil {
			t.Fatal(err)
		}
		return code, string(out)
	}

	code, out := run("https://rolesanywhere.eu-west-1.amazonaws.com")
	if code == 0 {
		t.Fatalf("an HTTPS endpoint with no CA was accepted: %s", out)
	}
	for _, want := range []string{"the Roles Anywhere endpoint", "trusts no certificate authority", "SSL_CERT_FILE=" + missing, "ca-certificates"} {
		if !strings.Contains(out, want) {
			t.Errorf("the error %q lacks %q", out, want)
		}
	}

	// The same store is no obstacle to a plain HTTP endpoint (the fake).
	if code, out := run(srv.URL()); code != 0 || !strings.Contains(out, `"Version": 1`) && !strings.Contains(out, `"Version":1`) {
		t.Fatalf("plain HTTP with no CA: exit %d: %s", code, out)
	}
	if n := srv.Stats().Requests; n != 1 {
		t.Fatalf("the endpoint saw %d requests, want only the plain HTTP run's 1", n)
	}
}
