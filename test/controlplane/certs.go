package controlplane

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"time"
)

// certValidity is long enough for any test run and short enough that a leaked
// test key is worthless soon.
const certValidity = 24 * time.Hour

// authority is the throwaway certificate authority of one control plane: it
// signs the serving certificate and every client certificate.
type authority struct {
	cert    *x509.Certificate // the CA certificate
	certPEM []byte            // cert, PEM-encoded, as written to ca.crt
	key     crypto.Signer     // the CA private key; never leaves the process except as ca.key in Dir
}

// keyPair is a PEM-encoded certificate and its private key.
type keyPair struct {
	certPEM []byte // the leaf certificate
	keyPEM  []byte // its private key (PKCS#8)
}

// newAuthority creates a self-signed ECDSA P-256 CA (fast to generate, and
// kube-apiserver accepts ECDSA everywhere).
func newAuthority(now time.Time) (*authority, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generating the control plane CA key: %w", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          newSerial(),
		Subject:               pkix.Name{CommonName: "kube2ra-test-ca"},
		NotBefore:             now.Add(-time.Minute),
		NotAfter:              now.Add(certValidity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, fmt.Errorf("self-signing the control plane CA: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("parsing the control plane CA just created: %w", err)
	}
	return &authority{cert: cert, certPEM: pemBlock("CERTIFICATE", der), key: key}, nil
}

// serving issues the kube-apiserver serving certificate for the given names
// and addresses.
func (a *authority) serving(now time.Time, dnsNames []string, ips []net.IP) (keyPair, error) {
	return a.issue(now, &x509.Certificate{
		Subject:     pkix.Name{CommonName: "kube-apiserver"},
		DNSNames:    dnsNames,
		IPAddresses: ips,
		KeyUsage:    x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	})
}

// client issues a client certificate: kube-apiserver's x509 authenticator
// takes the user name from CN and the groups from O.
func (a *authority) client(now time.Time, user string, groups []string) (keyPair, error) {
	if user == "" {
		return keyPair{}, fmt.Errorf("a client certificate needs a user name (the CN); got an empty one")
	}
	return a.issue(now, &x509.Certificate{
		Subject:     pkix.Name{CommonName: user, Organization: groups},
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	})
}

func (a *authority) issue(now time.Time, tmpl *x509.Certificate) (keyPair, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return keyPair{}, fmt.Errorf("generating a key for %q: %w", tmpl.Subject.CommonName, err)
	}
	tmpl.SerialNumber = newSerial()
	tmpl.NotBefore = now.Add(-time.Minute)
	tmpl.NotAfter = now.Add(certValidity)
	der, err := x509.CreateCertificate(rand.Reader, tmpl, a.cert, key.Public(), a.key)
	if err != nil {
		return keyPair{}, fmt.Errorf("signing the certificate for %q: %w", tmpl.Subject.CommonName, err)
	}
	keyPEM, err := privateKeyPEM(key)
	if err != nil {
		return keyPair{}, err
	}
	return keyPair{certPEM: pemBlock("CERTIFICATE", der), keyPEM: keyPEM}, nil
}

// newServiceAccountKey returns a PEM private key for signing service account
// tokens (kube-apiserver derives the verifying public key from the same
// file) and the key ID kube-apiserver gives it.
func newServiceAccountKey() (pemKey []byte, keyID string, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, "", fmt.Errorf("generating the service account signing key: %w", err)
	}
	// SEC1, not PKCS#8: kube-apiserver's --service-account-key-file parser
	// reads public keys out of "EC PRIVATE KEY" blocks but not "PRIVATE KEY".
	der, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return nil, "", fmt.Errorf("encoding the service account signing key: %w", err)
	}
	keyID, err = serviceAccountKeyID(key.Public())
	if err != nil {
		return nil, "", err
	}
	return pemBlock("EC PRIVATE KEY", der), keyID, nil
}

// serviceAccountKeyID is the "kid" kube-apiserver puts in the tokens a key
// signs and in its JWKS: base64url(SHA-256(PKIX DER of the public key)).
func serviceAccountKeyID(pub crypto.PublicKey) (string, error) {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return "", fmt.Errorf("encoding the service account public key: %w", err)
	}
	sum := sha256.Sum256(der)
	return base64.RawURLEncoding.EncodeToString(sum[:]), nil
}

func privateKeyPEM(key crypto.Signer) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("encoding a private key as PKCS#8: %w", err)
	}
	return pemBlock("PRIVATE KEY", der), nil
}

func pemBlock(typ string, der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})
}

func newSerial() *big.Int {
	// 128 random bits, as CAs do; a failing crypto/rand panics in Go 1.24+.
	n, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 128))
	return n
}

// writeFiles writes name→content pairs with owner-only permissions: they
// include private keys.
func writeFiles(files map[string][]byte) error {
	for path, content := range files {
		if err := os.WriteFile(path, content, 0o600); err != nil {
			return fmt.Errorf("writing %s: %w", path, err)
		}
	}
	return nil
}
