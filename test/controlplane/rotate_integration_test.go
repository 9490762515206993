//go:build integration

package controlplane_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"slices"
	"strings"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/kube2ra/kube2ra/test/controlplane"
)

// TestRotateServiceAccountKeys proves the signer rotation the k8s tier
// relies on, as the API server itself sees it: after (B, A+B) tokens are
// signed by B and the JWKS publishes both while A's tokens still pass
// TokenReview; after (B, B) only B is published and A's tokens fail.
func TestRotateServiceAccountKeys(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	cp, kube := startOwn(t, ctx)
	sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "rotated"}}
	if _, err := kube.CoreV1().ServiceAccounts("default").Create(ctx, sa, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	a := cp.ServiceAccountKey()
	b, err := cp.NewServiceAccountKey()
	if err != nil {
		t.Fatal(err)
	}
	if a.KeyID == "" || a.KeyID == b.KeyID {
		t.Fatalf("key IDs %q and %q: want two different non-empty IDs", a.KeyID, b.KeyID)
	}

	expect := func(t *testing.T, step string, tokens map[string]string, signer string, published []string, accepted map[string]bool) {
		t.Helper()
		if got := publishedKeyIDs(t, ctx, kube); !slices.Equal(got, sortedCopy(published)) {
			t.Fatalf("%s: /openid/v1/jwks publishes %q, want %q", step, got, sortedCopy(published))
		}
		tok := token(t, ctx, kube)
		if kid := tokenKeyID(t, tok); kid != signer {
			t.Fatalf("%s: a new token has kid %q, want %q", step, kid, signer)
		}
		tokens[step] = tok
		for name, want := range accepted {
			if got := tokenReviewed(t, ctx, kube, tokens[name]); got != want {
				t.Fatalf("%s: TokenReview of the token issued at %q: authenticated %v, want %v", step, name, got, want)
			}
		}
	}
	tokens := map[string]string{}
	expect(t, "start", tokens, a.KeyID, []string{a.KeyID}, map[string]bool{"start": true})

	t.Run("bad keys are refused without touching the API server", func(t *testing.T) {
		for _, tt := range []struct {
			name    string
			signing controlplane.ServiceAccountKey
			verify  []controlplane.ServiceAccountKey
			want    string
		}{
			{"signing key not among the verifying keys", b, []controlplane.ServiceAccountKey{a}, "is not among the verifying keys"},
			{"no verifying keys", b, nil, "is not among the verifying keys"},
			{"a key without a path", controlplane.ServiceAccountKey{}, []controlplane.ServiceAccountKey{a}, "has no Path"},
			{"a key file that does not exist", b, []controlplane.ServiceAccountKey{b, {Path: cp.Dir + "/missing.key"}}, "missing.key cannot be read"},
		} {
			t.Run(tt.name, func(t *testing.T) {
				err := cp.RotateServiceAccountKeys(ctx, 0, tt.signing, tt.verify...)
				if err == nil || !strings.Contains(err.Error(), tt.want) {
					t.Fatalf("RotateServiceAccountKeys: %v, want an error saying %q", err, tt.want)
				}
			})
		}
		if _, err := kube.CoreV1().ServiceAccounts("default").Get(ctx, "rotated", metav1.GetOptions{}); err != nil {
			t.Fatalf("the API server does not answer after refused rotations: %v", err)
		}
	})

	if err := cp.RotateServiceAccountKeys(ctx, 0, b, a, b); err != nil {
		t.Fatal(err)
	}
	expect(t, "signing B, verifying A+B", tokens, b.KeyID, []string{a.KeyID, b.KeyID}, map[string]bool{"start": true, "signing B, verifying A+B": true})
	// A plain restart keeps the rotated keys.
	if err := cp.RestartAPIServer(ctx, 0); err != nil {
		t.Fatal(err)
	}
	if err := cp.RotateServiceAccountKeys(ctx, 0, b, b); err != nil {
		t.Fatal(err)
	}
	expect(t, "signing B, verifying B", tokens, b.KeyID, []string{b.KeyID}, map[string]bool{"start": false, "signing B, verifying A+B": true, "signing B, verifying B": true})
}

func token(t *testing.T, ctx context.Context, kube kubernetes.Interface) string {
	t.Helper()
	secs := int64(600)
	tr, err := kube.CoreV1().ServiceAccounts("default").CreateToken(ctx, "rotated", &authenticationv1.TokenRequest{
		Spec: authenticationv1.TokenRequestSpec{Audiences: []string{"rotation-test"}, ExpirationSeconds: &secs}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("TokenRequest: %v", err)
	}
	return tr.Status.Token
}

func tokenReviewed(t *testing.T, ctx context.Context, kube kubernetes.Interface, tok string) bool {
	t.Helper()
	r, err := kube.AuthenticationV1().TokenReviews().Create(ctx, &authenticationv1.TokenReview{
		Spec: authenticationv1.TokenReviewSpec{Token: tok, Audiences: []string{"rotation-test"}}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("TokenReview: %v", err)
	}
	return r.Status.Authenticated
}

// tokenKeyID is the kid of a JWS's protected header.
func tokenKeyID(t *testing.T, tok string) string {
	t.Helper()
	raw, err := base64.RawURLEncoding.DecodeString(strings.SplitN(tok, ".", 2)[0])
	if err != nil {
		t.Fatalf("token header: %v", err)
	}
	var hdr struct {
		Kid string `json:"kid"`
	}
	if err := json.Unmarshal(raw, &hdr); err != nil {
		t.Fatalf("token header: %v", err)
	}
	return hdr.Kid
}

// publishedKeyIDs are the kids of the API server's JWKS, sorted.
func publishedKeyIDs(t *testing.T, ctx context.Context, kube kubernetes.Interface) []string {
	t.Helper()
	raw, err := kube.Discovery().RESTClient().Get().AbsPath("/openid/v1/jwks").DoRaw(ctx)
	if err != nil {
		t.Fatalf("reading /openid/v1/jwks: %v", err)
	}
	var set struct {
		Keys []struct {
			Kid string `json:"kid"`
		} `json:"keys"`
	}
	if err := json.Unmarshal(raw, &set); err != nil {
		t.Fatalf("/openid/v1/jwks: %v", err)
	}
	var kids []string
	for _, k := range set.Keys {
		kids = append(kids, k.Kid)
	}
	slices.Sort(kids)
	return kids
}

func sortedCopy(s []string) []string {
	s = slices.Clone(s)
	slices.Sort(s)
	return s
}
