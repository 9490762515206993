package harness

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"time"
)

// x509Cert is a parsed certificate.
type x509Cert = x509.Certificate

// PKI is a test trust anchor CA and one node certificate, laid out the way
// the kubelet projects a Secret: tls.crt and tls.key are links through
// `..data`, which Rotate swaps in one rename.
type PKI struct {
	// CA is the trust anchor's certificate.
	CA *x509.Certificate
	// CertPath and KeyPath are what the agent is given.
	CertPath, KeyPath string
	// Serial is the current node certificate's serial.
	Serial *big.Int

	caKey    *ecdsa.PrivateKey
	dir      string
	nodeName string
}

// NewPKI creates the CA and the first node certificate under dir/certs.
func NewPKI(dir, nodeName string) (*PKI, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "kube2ra test trust anchor"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, err
	}
	ca, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	p := &PKI{CA: ca, caKey: key, dir: filepath.Join(dir, "certs"), nodeName: nodeName}
	p.CertPath, p.KeyPath = filepath.Join(p.dir, "tls.crt"), filepath.Join(p.dir, "tls.key")
	if err := os.MkdirAll(p.dir, 0o700); err != nil {
		return nil, err
	}
	if err := p.Rotate(); err != nil {
		return nil, err
	}
	for _, name := range []string{"tls.crt", "tls.key"} {
		if err := os.Symlink(filepath.Join("..data", name), filepath.Join(p.dir, name)); err != nil {
			return nil, err
		}
	}
	return p, nil
}

// Rotate issues a new node key and certificate and swaps them in atomically.
func (p *PKI) Rotate() error {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	if err != nil {
		return err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: p.nodeName},
		NotBefore:    now.Add(-time.Minute),
		NotAfter:     now.Add(12 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, p.CA, &key.PublicKey, p.caKey)
	if err != nil {
		return err
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return err
	}
	version := fmt.Sprintf("..%d", time.Now().UnixNano())
	vdir := filepath.Join(p.dir, version)
	if err := os.Mkdir(vdir, 0o700); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(vdir, "tls.crt"), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(vdir, "tls.key"), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		return err
	}
	tmp := filepath.Join(p.dir, "..data_tmp")
	_ = os.Remove(tmp)
	if err := os.Symlink(version, tmp); err != nil {
		return err
	}
	if err := os.Rename(tmp, filepath.Join(p.dir, "..data")); err != nil {
		return err
	}
	p.Serial = serial
	return nil
}
