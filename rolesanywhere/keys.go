package rolesanywhere

import (
	"bytes"
	"crypto"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"slices"
	"time"
)

// KeyFiles names the files that make up a node's Roles Anywhere identity.
type KeyFiles struct {
	// Certificate is the PEM leaf certificate, optionally followed by its
	// intermediates (--ra-certificate).
	Certificate string
	// PrivateKey is the PEM private key: PKCS#1, PKCS#8, SEC1 or encrypted
	// PKCS#8 (--ra-private-key).
	PrivateKey string
	// Intermediates is an optional PEM bundle of intermediate CAs
	// (--ra-intermediates).
	Intermediates string
	// PasswordFile optionally holds the password of an encrypted PKCS#8 key
	// (--ra-private-key-password-file).
	PasswordFile string
}

// KeyPair is one consistent identity: a leaf certificate, the intermediates
// to send with it and the private key that belongs to it. It is immutable;
// rotation replaces the whole KeyPair.
type KeyPair struct {
	// Leaf is the end-entity certificate; its serial is the credential ID.
	Leaf *x509.Certificate
	// Intermediates are sent in X-Amz-X509-Chain, in file order.
	Intermediates []*x509.Certificate
	// Signer is the private key of Leaf. Never logged.
	Signer crypto.Signer
	// Algorithm follows from the key type.
	Algorithm Algorithm
}

// Serial is the leaf's serial number in decimal, as in the credential scope.
func (kp *KeyPair) Serial() string { return kp.Leaf.SerialNumber.String() }

// String describes the pair without any key material.
func (kp *KeyPair) String() string {
	return fmt.Sprintf("certificate serial %s subject %q notAfter %s (%d intermediates)",
		kp.Serial(), kp.Leaf.Subject.String(), kp.Leaf.NotAfter.UTC().Format(time.RFC3339), len(kp.Intermediates))
}

// keyMaterial is the raw content of the files of one KeyFiles.
type keyMaterial struct {
	cert, key, intermediates, password []byte
}

// equal reports whether both reads saw the same bytes.
func (m keyMaterial) equal(o keyMaterial) bool {
	return bytes.Equal(m.cert, o.cert) && bytes.Equal(m.key, o.key) &&
		bytes.Equal(m.intermediates, o.intermediates) && bytes.Equal(m.password, o.password)
}

// readKeyMaterial reads every named file; errors name the file and the flag.
func readKeyMaterial(f KeyFiles) (keyMaterial, error) {
	var m keyMaterial
	var err error
	if f.Certificate == "" {
		return m, errors.New("no certificate file given: set --ra-certificate to the node's PEM certificate")
	}
	if f.PrivateKey == "" {
		return m, errors.New("no private key file given: set --ra-private-key to the node's PEM private key")
	}
	if m.cert, err = os.ReadFile(f.Certificate); err != nil {
		return m, fmt.Errorf("reading certificate file %s (--ra-certificate) failed: %w", f.Certificate, err)
	}
	if m.key, err = os.ReadFile(f.PrivateKey); err != nil {
		return m, fmt.Errorf("reading private key file %s (--ra-private-key) failed: %w", f.PrivateKey, err)
	}
	if f.Intermediates != "" {
		if m.intermediates, err = os.ReadFile(f.Intermediates); err != nil {
			return m, fmt.Errorf("reading intermediates file %s (--ra-intermediates) failed: %w", f.Intermediates, err)
		}
	}
	if f.PasswordFile != "" {
		if m.password, err = os.ReadFile(f.PasswordFile); err != nil {
			return m, fmt.Errorf("reading private key password file %s (--ra-private-key-password-file) failed: %w", f.PasswordFile, err)
		}
	}
	return m, nil
}

// LoadKeyPair reads and checks the files at time now. It refuses, with an
// error naming the file: unreadable or garbled files, a key that does not
// belong to the certificate, a certificate outside its validity period, one
// without the digitalSignature key usage, a CA certificate, and key types
// Roles Anywhere does not accept.
func LoadKeyPair(f KeyFiles, now time.Time) (*KeyPair, error) {
	m, err := readKeyMaterial(f)
	if err != nil {
		return nil, err
	}
	return parseKeyMaterial(f, m, now)
}

// parseKeyMaterial turns file contents into a checked KeyPair.
func parseKeyMaterial(f KeyFiles, m keyMaterial, now time.Time) (*KeyPair, error) {
	certs, err := parseCertificates(m.cert)
	if err != nil {
		return nil, fmt.Errorf("certificate file %s (--ra-certificate): %w", f.Certificate, err)
	}
	leaf := certs[0]
	chain := certs[1:]
	if len(m.intermediates) > 0 {
		more, err := parseCertificates(m.intermediates)
		if err != nil {
			return nil, fmt.Errorf("intermediates file %s (--ra-intermediates): %w", f.Intermediates, err)
		}
		chain = appendUnique(chain, more)
	}
	if err := checkLeaf(leaf, now); err != nil {
		return nil, fmt.Errorf("certificate file %s (--ra-certificate): %w", f.Certificate, err)
	}
	password := bytes.TrimRight(m.password, "\r\n")
	signer, err := parsePrivateKey(m.key, password, f.PasswordFile != "")
	if err != nil {
		return nil, fmt.Errorf("private key file %s (--ra-private-key): %w", f.PrivateKey, err)
	}
	alg, err := AlgorithmFor(signer.Public())
	if err != nil {
		return nil, fmt.Errorf("private key file %s (--ra-private-key): %w", f.PrivateKey, err)
	}
	pub, ok := signer.Public().(interface{ Equal(crypto.PublicKey) bool })
	if !ok || !pub.Equal(leaf.PublicKey) {
		return nil, fmt.Errorf("private key file %s (--ra-private-key) does not match certificate file %s (serial %s, subject %q): their public keys differ; point both flags at files of the same key pair",
			f.PrivateKey, f.Certificate, leaf.SerialNumber, leaf.Subject.String())
	}
	return &KeyPair{Leaf: leaf, Intermediates: chain, Signer: signer, Algorithm: alg}, nil
}

// checkLeaf applies Roles Anywhere's end-entity rules that can be checked
// locally.
func checkLeaf(leaf *x509.Certificate, now time.Time) error {
	id := fmt.Sprintf("certificate serial %s (subject %q)", leaf.SerialNumber, leaf.Subject.String())
	if now.Before(leaf.NotBefore) {
		return fmt.Errorf("%s is not valid yet: valid from %s, now is %s; check the node's clock or wait for the certificate to become valid",
			id, leaf.NotBefore.UTC().Format(time.RFC3339), now.UTC().Format(time.RFC3339))
	}
	if now.After(leaf.NotAfter) {
		return fmt.Errorf("%s has expired: valid until %s, now is %s; renew the node certificate",
			id, leaf.NotAfter.UTC().Format(time.RFC3339), now.UTC().Format(time.RFC3339))
	}
	if leaf.KeyUsage&x509.KeyUsageDigitalSignature == 0 {
		return fmt.Errorf("%s has no digitalSignature key usage, which Roles Anywhere requires; reissue it with keyUsage=digitalSignature", id)
	}
	if leaf.BasicConstraintsValid && leaf.IsCA {
		return fmt.Errorf("%s is a CA certificate; Roles Anywhere needs an end-entity certificate (CA:FALSE)", id)
	}
	switch leaf.SignatureAlgorithm {
	case x509.MD2WithRSA, x509.MD5WithRSA, x509.SHA1WithRSA, x509.DSAWithSHA1, x509.ECDSAWithSHA1:
		return fmt.Errorf("%s is signed with %s; Roles Anywhere requires SHA-256 or stronger", id, leaf.SignatureAlgorithm)
	}
	return nil
}

// parseCertificates returns every CERTIFICATE block of a PEM file; other
// block types are an error (a private key in a certificate file is a
// mistake worth stopping for).
func parseCertificates(data []byte) ([]*x509.Certificate, error) {
	var certs []*x509.Certificate
	rest := data
	for {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			return nil, fmt.Errorf("found a PEM block of type %q where only CERTIFICATE blocks belong", block.Type)
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("certificate %d in the file cannot be parsed: %w", len(certs)+1, err)
		}
		certs = append(certs, c)
	}
	if len(certs) == 0 {
		return nil, errors.New("no PEM certificate found; the file must hold a -----BEGIN CERTIFICATE----- block")
	}
	if len(bytes.TrimSpace(rest)) > 0 {
		return nil, fmt.Errorf("garbled data after certificate %d; the file must hold only PEM certificates", len(certs))
	}
	return certs, nil
}

// appendUnique appends the certificates of more that are not in certs yet.
func appendUnique(certs, more []*x509.Certificate) []*x509.Certificate {
	for _, m := range more {
		dup := false
		for _, c := range certs {
			if bytes.Equal(c.Raw, m.Raw) {
				dup = true
				break
			}
		}
		if !dup {
			certs = append(certs, m)
		}
	}
	return certs
}

// parsePrivateKey finds the private key block of a PEM file. Error messages
// never include key bytes.
func parsePrivateKey(data, password []byte, havePassword bool) (crypto.Signer, error) {
	rest := data
	for {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			return nil, errors.New("no PEM private key found; the file must hold an RSA PRIVATE KEY, EC PRIVATE KEY, PRIVATE KEY or ENCRYPTED PRIVATE KEY block")
		}
		if _, encrypted := block.Headers["Proc-Type"]; encrypted {
			return nil, fmt.Errorf("the %s block is encrypted in the legacy OpenSSL format, which is not supported; convert it with `openssl pkcs8 -topk8 -v2 aes-256-cbc` and give the password with --ra-private-key-password-file", block.Type)
		}
		var key any
		var err error
		switch block.Type {
		case "EC PARAMETERS":
			continue
		case "RSA PRIVATE KEY":
			key, err = x509.ParsePKCS1PrivateKey(block.Bytes)
		case "EC PRIVATE KEY":
			key, err = x509.ParseECPrivateKey(block.Bytes)
		case "PRIVATE KEY":
			key, err = x509.ParsePKCS8PrivateKey(block.Bytes)
		case "ENCRYPTED PRIVATE KEY":
			if !havePassword {
				return nil, errors.New("the private key is encrypted; give its password with --ra-private-key-password-file")
			}
			var der []byte
			der, err = decryptPKCS8(block.Bytes, password)
			if err == nil {
				key, err = x509.ParsePKCS8PrivateKey(der)
				if err != nil {
					err = fmt.Errorf("%w (is the password right?)", errWrongPassword)
				}
			}
		default:
			return nil, fmt.Errorf("PEM block of type %q is not a private key this agent reads (RSA PRIVATE KEY, EC PRIVATE KEY, PRIVATE KEY, ENCRYPTED PRIVATE KEY)", block.Type)
		}
		if err != nil {
			return nil, fmt.Errorf("the %s block cannot be parsed: %w", block.Type, err)
		}
		signer, ok := key.(crypto.Signer)
		if !ok {
			return nil, fmt.Errorf("the %s block holds a %T, which cannot sign", block.Type, key)
		}
		return signer, nil
	}
}

// ChainWarnings names what in the pair's intermediates would make Roles
// Anywhere refuse the certificate as untrusted, which AWS says only as
// "Untrusted certificate" at the first call: intermediates none of which
// signed the certificate (the leaf's issuer is missing, unless the trust
// anchor's CA signed it directly), and intermediates outside their
// validity at now. They are warnings, not refusals: a trust anchor may
// hold the leaf's issuer itself, and an extra expired certificate off the
// path does no harm.
func (p *KeyPair) ChainWarnings(now time.Time) []string {
	var out []string
	if len(p.Intermediates) > 0 && !slices.ContainsFunc(p.Intermediates, func(c *x509.Certificate) bool { return p.Leaf.CheckSignatureFrom(c) == nil }) {
		out = append(out, fmt.Sprintf("no intermediate certificate (--ra-intermediates, or after the certificate in --ra-certificate) signed the certificate, whose issuer is %q: unless the trust anchor's CA signed it directly, Roles Anywhere refuses it as untrusted; add the issuing CA's certificate", p.Leaf.Issuer.String()))
	}
	for _, c := range p.Intermediates {
		if now.After(c.NotAfter) || now.Before(c.NotBefore) {
			out = append(out, fmt.Sprintf("intermediate certificate %q (serial %s) is valid only from %s to %s: Roles Anywhere refuses a chain through it; replace it with the CA's current certificate",
				c.Subject.String(), c.SerialNumber, c.NotBefore.UTC().Format(time.RFC3339), c.NotAfter.UTC().Format(time.RFC3339)))
		}
	}
	return out
}
