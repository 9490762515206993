// Package trustroots checks, before the agent first calls AWS, that it has
// certificate authorities to verify AWS's TLS certificates with.
//
// Go reads the system trust store from files (on Linux the first of
// /etc/ssl/certs/ca-certificates.crt and its siblings, or SSL_CERT_FILE,
// plus the directories /etc/ssl/certs or SSL_CERT_DIR). In an image without
// them the store is empty, and every HTTPS call to AWS fails, only when it
// is made, with "certificate signed by unknown authority". Check turns that
// into an error at start that names the cause and the fix.
package trustroots

import (
	"crypto/x509"
	"fmt"
	"net/url"
	"os"
	"strings"
)

// Check returns nil when endpoint is not HTTPS, or when the system trust
// store holds at least one certificate; otherwise an error naming what
// (e.g. "the Roles Anywhere endpoint"), the endpoint, where Go looked and
// how to fix it.
func Check(what, endpoint string) error {
	u, err := url.Parse(endpoint)
	if err != nil || u.Scheme != "https" {
		// Not a TLS endpoint; a malformed one is its caller's error.
		return nil
	}
	pool, err := x509.SystemCertPool()
	if err != nil {
		return fmt.Errorf("%s %s is HTTPS, and the system's certificate authorities cannot be read (%s): %w; %s", what, endpoint, where(), err, fix)
	}
	if pool.Equal(x509.NewCertPool()) {
		return fmt.Errorf("%s %s is HTTPS, and the agent trusts no certificate authority: the system trust store is empty (%s), so no AWS certificate can be verified; %s", what, endpoint, where(), fix)
	}
	return nil
}

// fix is what to do about an empty trust store.
const fix = "the kube2ra image carries Debian's bundle at /etc/ssl/certs/ca-certificates.crt: " +
	"an image built otherwise needs the ca-certificates package, or SSL_CERT_FILE naming a PEM bundle " +
	"(AWS_CA_BUNDLE too, for STS)"

// where says which files Go read the system trust store from.
func where() string {
	file := "/etc/ssl/certs/ca-certificates.crt and the other usual bundle files"
	if f := os.Getenv("SSL_CERT_FILE"); f != "" {
		file = "SSL_CERT_FILE=" + f
	}
	dirs := "the directories " + strings.ReplaceAll(DefaultCertDirs, ":", " and ")
	if d := os.Getenv("SSL_CERT_DIR"); d != "" {
		dirs = "SSL_CERT_DIR=" + d
	}
	return file + "; " + dirs
}

// DefaultCertDirs are the directories Go reads on Linux when SSL_CERT_DIR
// is not set, as SSL_CERT_DIR writes them: one that adds a directory keeps
// these first.
const DefaultCertDirs = "/etc/ssl/certs:/etc/pki/tls/certs"
