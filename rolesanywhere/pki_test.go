package rolesanywhere

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// keyKind names a test key type.
type keyKind string

const (
	rsa2048 keyKind = "RSA-2048"
	rsa4096 keyKind = "RSA-4096"
	p256    keyKind = "P-256"
	p384    keyKind = "P-384"
)

// keyFormat names a PEM private key encoding.
type keyFormat string

const (
	pkcs1 keyFormat = "PKCS#1"
	pkcs8 keyFormat = "PKCS#8"
	sec1  keyFormat = "SEC1"
)

// keyCache avoids generating RSA-4096 keys more than once per kind.
type keyCache struct {
	mu   sync.Mutex
	keys map[keyKind][]crypto.Signer
}

var testKeys = &keyCache{keys: map[keyKind][]crypto.Signer{}}

// fresh returns a new key of kind (RSA-4096 ones are reused after two, as
// generating them is slow on small machines).
func (c *keyCache) fresh(t testing.TB, kind keyKind) crypto.Signer {
	t.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	if kind == rsa4096 && len(c.keys[kind]) >= 2 {
		return c.keys[kind][len(c.keys[kind])%2]
	}
	var k crypto.Signer
	var err error
	switch kind {
	case rsa2048:
		k, err = rsa.GenerateKey(rand.Reader, 2048)
	case rsa4096:
		k, err = rsa.GenerateKey(rand.Reader, 4096)
	case p256:
		k, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	case p384:
		k, err = ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	default:
		t.Fatalf("unknown key kind %s", kind)
	}
	if err != nil {
		t.Fatal(err)
	}
	c.keys[kind] = append(c.keys[kind], k)
	return k
}

// testCA is a certificate authority for tests.
type testCA struct {
	cert *x509.Certificate
	key  crypto.Signer
}

// serials hands out unique serial numbers.
type serials struct {
	mu sync.Mutex
	n  int64
}

var testSerials = &serials{n: 1000}

func (s *serials) next() *big.Int {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.n++
	// Large, like real CA serials, to exercise decimal formatting.
	v := new(big.Int).Lsh(big.NewInt(s.n), 80)
	return v.Add(v, big.NewInt(s.n))
}

// newRootCA makes a self-signed root valid around now.
func newRootCA(t testing.TB, now time.Time) *testCA {
	t.Helper()
	key := testKeys.fresh(t, p256)
	tmpl := &x509.Certificate{
		SerialNumber:          testSerials.next(),
		Subject:               pkix.Name{Organization: []string{"kube2ra test"}, CommonName: "test root"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(10 * 365 * 24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return &testCA{cert: cert, key: key}
}

// certs is the CA certificate as a trust list.
func (ca *testCA) certs() []*x509.Certificate { return []*x509.Certificate{ca.cert} }

// intermediate makes a CA signed by ca.
func (ca *testCA) intermediate(t testing.TB, now time.Time) *testCA {
	t.Helper()
	key := testKeys.fresh(t, p384)
	tmpl := &x509.Certificate{
		SerialNumber:          testSerials.next(),
		Subject:               pkix.Name{Organization: []string{"kube2ra test"}, CommonName: "test intermediate"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(5 * 365 * 24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, key.Public(), ca.key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return &testCA{cert: cert, key: key}
}

// leafOpts shape a leaf certificate.
type leafOpts struct {
	notBefore, notAfter time.Time
	keyUsage            x509.KeyUsage
	isCA                bool
	cn                  string
}

// leaf issues an end-entity certificate for key.
func (ca *testCA) leaf(t testing.TB, key crypto.Signer, now time.Time, o leafOpts) *x509.Certificate {
	t.Helper()
	if o.notBefore.IsZero() {
		o.notBefore = now.Add(-time.Minute)
	}
	if o.notAfter.IsZero() {
		o.notAfter = now.Add(30 * 24 * time.Hour)
	}
	if o.keyUsage == 0 {
		o.keyUsage = x509.KeyUsageDigitalSignature
	}
	if o.cn == "" {
		o.cn = "node-test"
	}
	tmpl := &x509.Certificate{
		SerialNumber:          testSerials.next(),
		Subject:               pkix.Name{Organization: []string{"kube2ra test"}, CommonName: o.cn},
		NotBefore:             o.notBefore,
		NotAfter:              o.notAfter,
		KeyUsage:              o.keyUsage,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		BasicConstraintsValid: true,
		IsCA:                  o.isCA,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, key.Public(), ca.key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return cert
}

// certPEM encodes certificates as PEM.
func certPEM(certs ...*x509.Certificate) []byte {
	var out []byte
	for _, c := range certs {
		out = append(out, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})...)
	}
	return out
}

// keyPEM encodes key in format.
func keyPEM(t testing.TB, key crypto.Signer, format keyFormat) []byte {
	t.Helper()
	var block *pem.Block
	switch format {
	case pkcs1:
		k, ok := key.(*rsa.PrivateKey)
		if !ok {
			t.Fatalf("PKCS#1 needs an RSA key, got %T", key)
		}
		block = &pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(k)}
	case sec1:
		k, ok := key.(*ecdsa.PrivateKey)
		if !ok {
			t.Fatalf("SEC1 needs an EC key, got %T", key)
		}
		der, err := x509.MarshalECPrivateKey(k)
		if err != nil {
			t.Fatal(err)
		}
		block = &pem.Block{Type: "EC PRIVATE KEY", Bytes: der}
	case pkcs8:
		der, err := x509.MarshalPKCS8PrivateKey(key)
		if err != nil {
			t.Fatal(err)
		}
		block = &pem.Block{Type: "PRIVATE KEY", Bytes: der}
	default:
		t.Fatalf("unknown key format %s", format)
	}
	return pem.EncodeToMemory(block)
}

// writeFile writes data to dir/name and returns the path.
func writeFile(t testing.TB, dir, name string, data []byte) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestChainWarningsNameWhatAWSWouldRefuse: intermediates none of which
// signed the certificate, and intermediates outside their validity, are
// named (AWS would answer only "Untrusted certificate"); a good chain and a
// certificate the root signed directly give none.
func TestChainWarningsNameWhatAWSWouldRefuse(t *testing.T) {
	now := time.Now()
	root := newRootCA(t, now)
	inter, other := root.intermediate(t, now), root.intermediate(t, now)
	viaInter := inter.leaf(t, testKeys.fresh(t, p256), now, leafOpts{})
	direct := root.leaf(t, testKeys.fresh(t, p256), now, leafOpts{})
	for _, tc := range []struct {
		name  string
		pair  *KeyPair
		at    time.Time
		wants []string
	}{
		{"a good chain", &KeyPair{Leaf: viaInter, Intermediates: []*x509.Certificate{inter.cert}}, now, nil},
		{"signed by the root, no intermediates", &KeyPair{Leaf: direct}, now, nil},
		{"the issuer missing from the intermediates", &KeyPair{Leaf: viaInter, Intermediates: []*x509.Certificate{other.cert}}, now,
			[]string{"no intermediate certificate", "test intermediate", "add the issuing CA's certificate"}},
		{"an expired intermediate", &KeyPair{Leaf: viaInter, Intermediates: []*x509.Certificate{inter.cert}}, now.Add(6 * 365 * 24 * time.Hour),
			[]string{"is valid only from", "replace it"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := strings.Join(tc.pair.ChainWarnings(tc.at), "\n")
			if len(tc.wants) == 0 && got != "" {
				t.Fatalf("warnings %q, want none", got)
			}
			for _, w := range tc.wants {
				if !strings.Contains(got, w) {
					t.Errorf("warnings %q lack %q", got, w)
				}
			}
		})
	}
}
