package rolesanywhere

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/x509"
	"encoding/pem"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestLoadKeyPairAcceptsEveryKeyFormat(t *testing.T) {
	now := time.Now()
	ca := newRootCA(t, now)
	for _, tc := range []struct {
		kind   keyKind
		format keyFormat
		alg    Algorithm
	}{
		{rsa2048, pkcs1, AlgorithmRSA},
		{rsa2048, pkcs8, AlgorithmRSA},
		{p256, sec1, AlgorithmECDSA},
		{p256, pkcs8, AlgorithmECDSA},
		{p384, sec1, AlgorithmECDSA},
		{p384, pkcs8, AlgorithmECDSA},
	} {
		t.Run(string(tc.kind)+"/"+string(tc.format), func(t *testing.T) {
			dir := t.TempDir()
			key := testKeys.fresh(t, tc.kind)
			leaf := ca.leaf(t, key, now, leafOpts{})
			pair, err := LoadKeyPair(KeyFiles{
				Certificate: writeFile(t, dir, "tls.crt", certPEM(leaf)),
				PrivateKey:  writeFile(t, dir, "tls.key", keyPEM(t, key, tc.format)),
			}, now)
			if err != nil {
				t.Fatal(err)
			}
			if pair.Algorithm != tc.alg || pair.Serial() != leaf.SerialNumber.String() || len(pair.Intermediates) != 0 {
				t.Fatalf("pair %v alg %s", pair, pair.Algorithm)
			}
		})
	}
}

func TestLoadKeyPairReadsChainFromCertificateFileAndIntermediatesBundle(t *testing.T) {
	now := time.Now()
	root := newRootCA(t, now)
	inter := root.intermediate(t, now)
	key := testKeys.fresh(t, p256)
	leaf := inter.leaf(t, key, now, leafOpts{})
	dir := t.TempDir()
	keyFile := writeFile(t, dir, "tls.key", keyPEM(t, key, sec1))
	for _, tc := range []struct {
		name              string
		cert, bundle      []byte
		wantIntermediates int
	}{
		{"chain after the leaf in the certificate file", certPEM(leaf, inter.cert), nil, 1},
		{"chain in the intermediates bundle", certPEM(leaf), certPEM(inter.cert), 1},
		{"chain in both is sent once", certPEM(leaf, inter.cert), certPEM(inter.cert), 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := KeyFiles{Certificate: writeFile(t, t.TempDir(), "tls.crt", tc.cert), PrivateKey: keyFile}
			if tc.bundle != nil {
				f.Intermediates = writeFile(t, t.TempDir(), "ca.crt", tc.bundle)
			}
			pair, err := LoadKeyPair(f, now)
			if err != nil {
				t.Fatal(err)
			}
			if len(pair.Intermediates) != tc.wantIntermediates || !pair.Intermediates[0].Equal(inter.cert) {
				t.Fatalf("intermediates %d", len(pair.Intermediates))
			}
		})
	}
}

func TestLoadKeyPairDecryptsOpenSSLEncryptedPKCS8(t *testing.T) {
	now := time.Now()
	ca := newRootCA(t, now)
	for _, name := range []string{"ec-aes256-sha256", "rsa-aes128-sha1"} {
		t.Run(name, func(t *testing.T) {
			pubPEM, err := os.ReadFile(filepath.Join("testdata", name+".pub.pem"))
			if err != nil {
				t.Fatal(err)
			}
			block, _ := pem.Decode(pubPEM)
			pub, err := x509.ParsePKIXPublicKey(block.Bytes)
			if err != nil {
				t.Fatal(err)
			}
			leaf := ca.leaf(t, publicOnly{pub}, now, leafOpts{})
			pair, err := LoadKeyPair(KeyFiles{
				Certificate:  writeFile(t, t.TempDir(), "tls.crt", certPEM(leaf)),
				PrivateKey:   filepath.Join("testdata", name+".p8.pem"),
				PasswordFile: filepath.Join("testdata", "password.txt"),
			}, now)
			if err != nil {
				t.Fatal(err)
			}
			if pair.Serial() != leaf.SerialNumber.String() {
				t.Fatal("wrong pair")
			}
		})
	}
}

// publicOnly lets ca.leaf issue a certificate for a key whose private half
// only exists encrypted on disk.
type publicOnly struct{ pub crypto.PublicKey }

func (p publicOnly) Public() crypto.PublicKey { return p.pub }
func (p publicOnly) Sign(io.Reader, []byte, crypto.SignerOpts) ([]byte, error) {
	panic("not a signer")
}

func TestLoadKeyPairRefusesBadMaterialWithAClearMessage(t *testing.T) {
	now := time.Now()
	ca := newRootCA(t, now)
	key := testKeys.fresh(t, p256)
	other := testKeys.fresh(t, p256)
	rsaKey := testKeys.fresh(t, rsa2048)
	good := ca.leaf(t, key, now, leafOpts{})
	dir := t.TempDir()
	goodKey := writeFile(t, dir, "good.key", keyPEM(t, key, sec1))
	goodCert := writeFile(t, dir, "good.crt", certPEM(good))
	cert := func(name string, c *x509.Certificate) string { return writeFile(t, dir, name, certPEM(c)) }
	for _, tc := range []struct {
		name  string
		files KeyFiles
		want  []string
	}{
		{"key does not match certificate",
			KeyFiles{Certificate: goodCert, PrivateKey: writeFile(t, dir, "other.key", keyPEM(t, other, pkcs8))},
			[]string{"other.key", "does not match certificate file", "good.crt", good.SerialNumber.String()}},
		{"RSA key for an EC certificate",
			KeyFiles{Certificate: goodCert, PrivateKey: writeFile(t, dir, "rsa.key", keyPEM(t, rsaKey, pkcs1))},
			[]string{"rsa.key", "does not match"}},
		{"expired certificate",
			KeyFiles{Certificate: cert("expired.crt", ca.leaf(t, key, now, leafOpts{notBefore: now.Add(-48 * time.Hour), notAfter: now.Add(-time.Hour)})), PrivateKey: goodKey},
			[]string{"expired.crt", "has expired", "renew"}},
		{"certificate not valid yet",
			KeyFiles{Certificate: cert("future.crt", ca.leaf(t, key, now, leafOpts{notBefore: now.Add(time.Hour)})), PrivateKey: goodKey},
			[]string{"future.crt", "not valid yet"}},
		{"no digitalSignature key usage",
			KeyFiles{Certificate: cert("keyenc.crt", ca.leaf(t, key, now, leafOpts{keyUsage: x509.KeyUsageKeyEncipherment})), PrivateKey: goodKey},
			[]string{"keyenc.crt", "no digitalSignature key usage"}},
		{"CA certificate",
			KeyFiles{Certificate: cert("ca.crt", ca.leaf(t, key, now, leafOpts{isCA: true, keyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign})), PrivateKey: goodKey},
			[]string{"ca.crt", "CA certificate"}},
		{"garbage certificate file",
			KeyFiles{Certificate: writeFile(t, dir, "garbage.crt", []byte("hello, not a certificate")), PrivateKey: goodKey},
			[]string{"garbage.crt", "no PEM certificate found"}},
		{"garbled certificate inside PEM",
			KeyFiles{Certificate: writeFile(t, dir, "garbled.crt", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: []byte("garbled")})), PrivateKey: goodKey},
			[]string{"garbled.crt", "cannot be parsed"}},
		{"private key in the certificate file",
			KeyFiles{Certificate: writeFile(t, dir, "mixed.crt", append(certPEM(good), keyPEM(t, key, sec1)...)), PrivateKey: goodKey},
			[]string{"mixed.crt", `"EC PRIVATE KEY"`}},
		{"garbage key file",
			KeyFiles{Certificate: goodCert, PrivateKey: writeFile(t, dir, "garbage.key", []byte("not a key"))},
			[]string{"garbage.key", "no PEM private key found"}},
		{"garbled key inside PEM",
			KeyFiles{Certificate: goodCert, PrivateKey: writeFile(t, dir, "garbled.key", pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: []byte("garbled")}))},
			[]string{"garbled.key", "cannot be parsed"}},
		{"missing certificate file",
			KeyFiles{Certificate: filepath.Join(dir, "absent.crt"), PrivateKey: goodKey},
			[]string{"absent.crt", "--ra-certificate", "no such file"}},
		{"missing key file",
			KeyFiles{Certificate: goodCert, PrivateKey: filepath.Join(dir, "absent.key")},
			[]string{"absent.key", "--ra-private-key", "no such file"}},
		{"garbage intermediates bundle",
			KeyFiles{Certificate: goodCert, PrivateKey: goodKey, Intermediates: writeFile(t, dir, "bundle.crt", []byte("junk"))},
			[]string{"bundle.crt", "--ra-intermediates"}},
		{"encrypted key without password file",
			KeyFiles{Certificate: goodCert, PrivateKey: filepath.Join("testdata", "ec-aes256-sha256.p8.pem")},
			[]string{"ec-aes256-sha256.p8.pem", "--ra-private-key-password-file"}},
		{"encrypted key with the wrong password",
			KeyFiles{Certificate: goodCert, PrivateKey: filepath.Join("testdata", "ec-aes256-sha256.p8.pem"), PasswordFile: writeFile(t, dir, "wrong.txt", []byte("wrong\n"))},
			[]string{"ec-aes256-sha256.p8.pem", "password"}},
		{"scrypt-encrypted key",
			KeyFiles{Certificate: goodCert, PrivateKey: filepath.Join("testdata", "ec-scrypt.p8.pem"), PasswordFile: filepath.Join("testdata", "password.txt")},
			[]string{"ec-scrypt.p8.pem", "not supported", "openssl pkcs8"}},
		{"legacy encrypted PEM",
			KeyFiles{Certificate: goodCert, PrivateKey: writeFile(t, dir, "legacy.key", pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Headers: map[string]string{"Proc-Type": "4,ENCRYPTED", "DEK-Info": "AES-256-CBC,00"}, Bytes: []byte("x")}))},
			[]string{"legacy.key", "legacy OpenSSL format"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := LoadKeyPair(tc.files, now)
			if err == nil {
				t.Fatal("accepted")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
		})
	}
}

func TestLoadKeyPairErrorsNeverContainKeyMaterial(t *testing.T) {
	now := time.Now()
	ca := newRootCA(t, now)
	key := testKeys.fresh(t, p256)
	other := testKeys.fresh(t, p256)
	dir := t.TempDir()
	otherPEM := keyPEM(t, other, sec1)
	_, err := LoadKeyPair(KeyFiles{
		Certificate: writeFile(t, dir, "tls.crt", certPEM(ca.leaf(t, key, now, leafOpts{}))),
		PrivateKey:  writeFile(t, dir, "tls.key", otherPEM),
	}, now)
	if err == nil {
		t.Fatal("accepted")
	}
	assertNoSecrets(t, err.Error(), secretsOfKey(otherPEM, other))
}

// secretsOfKey lists strings that would reveal key: its PEM body lines and
// the private scalar in decimal.
func secretsOfKey(keyPEM []byte, key crypto.Signer) []string {
	var out []string
	for _, line := range strings.Split(string(keyPEM), "\n") {
		if len(line) > 16 && !strings.HasPrefix(line, "-----") {
			out = append(out, line)
		}
	}
	if k, ok := key.(*ecdsa.PrivateKey); ok {
		if b, err := k.Bytes(); err == nil {
			out = append(out, string(b))
		}
	}
	return out
}

// assertNoSecrets fails when text contains any of secrets.
func assertNoSecrets(t *testing.T, text string, secrets []string) {
	t.Helper()
	for _, s := range secrets {
		if s != "" && strings.Contains(text, s) {
			t.Fatalf("output contains a secret (%d chars starting %q)", len(s), s[:min(4, len(s))])
		}
	}
}
