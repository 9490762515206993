package trustroots

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// childEnv makes the test binary, run again, print Check's answer: Go reads
// the system trust store once per process, so each store is its own process.
const childEnv = "TRUSTROOTS_CHILD_ENDPOINT"

func TestMain(m *testing.M) {
	if endpoint := os.Getenv(childEnv); endpoint != "" {
		if err := Check("the test endpoint", endpoint); err != nil {
			os.Stdout.WriteString("ERROR " + err.Error())
			os.Exit(0)
		}
		os.Stdout.WriteString("OK")
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// checkIn runs Check in a process whose trust store is SSL_CERT_FILE=file
// and SSL_CERT_DIR=dir only.
func checkIn(t *testing.T, endpoint, file, dir string) string {
	t.Helper()
	cmd := exec.Command(os.Args[0])
	cmd.Env = []string{childEnv + "=" + endpoint, "SSL_CERT_FILE=" + file, "SSL_CERT_DIR=" + dir}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("child: %v: %s", err, out)
	}
	return string(out)
}

func TestCheck(t *testing.T) {
	tmp := t.TempDir()
	empty := filepath.Join(tmp, "empty")
	if err := os.Mkdir(empty, 0o755); err != nil {
		t.Fatal(err)
	}
	bundle := filepath.Join(tmp, "bundle.pem")
	if err := os.WriteFile(bundle, []byte(testCA), 0o644); err != nil {
		t.Fatal(err)
	}
	missing := filepath.Join(tmp, "missing.pem")

	t.Run("an empty store refuses an HTTPS endpoint, naming where it looked and the fix", func(t *testing.T) {
		got := checkIn(t, "https://rolesanywhere.eu-west-1.amazonaws.com", missing, empty)
		for _, want := range []string{
			"ERROR the test endpoint https://rolesanywhere.eu-west-1.amazonaws.com is HTTPS",
			"trusts no certificate authority",
			"SSL_CERT_FILE=" + missing, "SSL_CERT_DIR=" + empty,
			"/etc/ssl/certs/ca-certificates.crt", "ca-certificates package",
		} {
			if !strings.Contains(got, want) {
				t.Errorf("answer %q lacks %q", got, want)
			}
		}
	})
	t.Run("one certificate is a store", func(t *testing.T) {
		if got := checkIn(t, "https://sts.eu-west-1.amazonaws.com", bundle, empty); got != "OK" {
			t.Errorf("got %q, want OK", got)
		}
	})
	t.Run("a certificate in a directory is a store", func(t *testing.T) {
		dir := filepath.Join(tmp, "dir")
		if err := os.Mkdir(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "ca.pem"), []byte(testCA), 0o644); err != nil {
			t.Fatal(err)
		}
		if got := checkIn(t, "https://sts.amazonaws.com", missing, dir); got != "OK" {
			t.Errorf("got %q, want OK", got)
		}
	})
	t.Run("plain HTTP needs no store", func(t *testing.T) {
		if got := checkIn(t, "http://127.0.0.1:8080", missing, empty); got != "OK" {
			t.Errorf("got %q, want OK", got)
		}
	})
	t.Run("a file that is no PEM is no store", func(t *testing.T) {
		junk := filepath.Join(tmp, "junk.pem")
		if err := os.WriteFile(junk, []byte("not a certificate\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		if got := checkIn(t, "https://sts.amazonaws.com", junk, empty); !strings.HasPrefix(got, "ERROR ") {
			t.Errorf("got %q, want an error", got)
		}
	})
}

// testCA is a self-signed CA certificate (ECDSA P-256, made for this test).
const testCA = `-----BEGIN CERTIFICATE-----
MIIBbDCCARGgAwIBAgIBATAKBggqhkjOPQQDAjAdMRswGQYDVQQDExJ0cnVzdHJv
b3RzIHRlc3QgQ0EwHhcNMjYwMTAxMDAwMDAwWhcNNDYwMTAxMDAwMDAwWjAdMRsw
GQYDVQQDExJ0cnVzdHJvb3RzIHRlc3QgQ0EwWTATBgcqhkjOPQIBBggqhkjOPQMB
BwNCAAQcDA8a4rv6nXHYQ1oiybXyzD5/R9lecqmCQV/0il/ZAgKmtcriIPv3XDAV
nr+8xrSSrxWKCY75B/7/FhBg66bco0IwQDAOBgNVHQ8BAf8EBAMCAgQwDwYDVR0T
AQH/BAUwAwEB/zAdBgNVHQ4EFgQUqFalYxmViE85tgLgoLimOK1MKvcwCgYIKoZI
zj0EAwIDSQAwRgIhAOLaIRm2HtgP6AYMjIaJPBBCJnJONroTch4O7exUML16AiEA
5MIKfqH7dG6cwVJlZEy8zGg9tjkEzQbs0VX4he5wVN0=
-----END CERTIFICATE-----
`
