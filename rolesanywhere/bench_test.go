package rolesanywhere

import (
	"context"
	"net/http"
	"testing"
	"time"

	"github.com/kube2ra/kube2ra/credentials"
	"github.com/kube2ra/kube2ra/test/fakeaws/fakera"
)

func BenchmarkSignRequest(b *testing.B) {
	now := time.Now()
	root := newRootCA(b, now)
	for _, kind := range []keyKind{rsa2048, p256, p384} {
		b.Run(string(kind), func(b *testing.B) {
			key := testKeys.fresh(b, kind)
			leaf := root.leaf(b, key, now, leafOpts{})
			alg, _ := AlgorithmFor(leaf.PublicKey)
			pair := &KeyPair{Leaf: leaf, Signer: key, Algorithm: alg}
			body := []byte(`{"durationSeconds":3600}`)
			for b.Loop() {
				req, _ := http.NewRequest(http.MethodPost, "https://rolesanywhere.eu-west-1.amazonaws.com/sessions?profileArn=a&roleArn=b&trustAnchorArn=c", nil)
				req.Header.Set("Content-Type", "application/json")
				if err := SignRequest(req, body, pair, "eu-west-1", now); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkFetchAgainstFake(b *testing.B) {
	now := time.Now()
	root := newRootCA(b, now)
	key := testKeys.fresh(b, p256)
	leaf := root.leaf(b, key, now, leafOpts{})
	dir := b.TempDir()
	files := KeyFiles{Certificate: writeFile(b, dir, "tls.crt", certPEM(leaf)), PrivateKey: writeFile(b, dir, "tls.key", keyPEM(b, key, sec1))}
	f, err := fakera.Start(fakera.Options{
		TrustAnchors: []fakera.TrustAnchor{{ARN: testTrustAnchor, CAs: root.certs()}},
		Profiles:     []fakera.Profile{{ARN: testProfile, RoleARNs: []string{testRole}}},
	})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(f.Close)
	src, err := NewSource(Config{TrustAnchorARN: testTrustAnchor, ProfileARN: testProfile, Certificate: files.Certificate, PrivateKey: files.PrivateKey, Endpoint: f.URL()}, Deps{HTTPClient: f.Client()})
	if err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		if _, err := src.Fetch(context.Background(), credentials.Request{RoleARN: testRole}); err != nil {
			b.Fatal(err)
		}
	}
}
