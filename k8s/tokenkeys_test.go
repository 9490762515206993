package k8s

import (
	"context"
	"errors"
	"strings"
	"testing"

	clocktesting "k8s.io/utils/clock/testing"

	"github.com/kube2ra/kube2ra/test/tokensigner"
)

// fakeAPIServer serves the two discovery paths, counting reads.
type fakeAPIServer struct {
	issuer string
	jwks   []byte
	err    error
	reads  int
}

func (f *fakeAPIServer) get(_ context.Context, path string) ([]byte, error) {
	f.reads++
	if f.err != nil {
		return nil, f.err
	}
	switch path {
	case oidcConfigPath:
		return []byte(`{"issuer":"` + f.issuer + `","jwks_uri":"https://example/openid/v1/jwks"}`), nil
	case jwksPath:
		return f.jwks, nil
	}
	return nil, errors.New("unexpected path " + path)
}

func TestAPIServerKeys(t *testing.T) {
	key := newRSAKey(t, "k1")
	jwks, err := tokensigner.JWKS(key)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()

	t.Run("reads the issuer and keys, then reuses them until they are old", func(t *testing.T) {
		api := &fakeAPIServer{issuer: testIssuer, jwks: jwks}
		clk := clocktesting.NewFakeClock(tokenNow)
		k := NewAPIServerKeys(api.get, clk, testLogger())
		got, err := k.Keys(ctx)
		if err != nil || got.Issuer != testIssuer || got.Keys["k1"] == nil {
			t.Fatalf("Keys = %+v, %v", got, err)
		}
		_, _ = k.Keys(ctx)
		if api.reads != 2 {
			t.Fatalf("%d reads, want 2 (discovery and JWKS, once)", api.reads)
		}
		clk.Step(DefaultKeysMaxAge)
		_, _ = k.Keys(ctx)
		if api.reads != 4 {
			t.Fatalf("%d reads after DefaultKeysMaxAge, want 4", api.reads)
		}
	})

	t.Run("refreshes at most once per interval", func(t *testing.T) {
		api := &fakeAPIServer{issuer: testIssuer, jwks: jwks}
		clk := clocktesting.NewFakeClock(tokenNow)
		k := NewAPIServerKeys(api.get, clk, testLogger())
		for range 10 {
			if _, err := k.Refresh(ctx); err != nil {
				t.Fatal(err)
			}
		}
		if api.reads != 2 {
			t.Fatalf("10 refreshes made %d reads, want 2", api.reads)
		}
		clk.Step(DefaultKeysMinInterval)
		_, _ = k.Refresh(ctx)
		if api.reads != 4 {
			t.Fatalf("a refresh after the interval made %d reads in all, want 4", api.reads)
		}
	})

	t.Run("keeps the last keys through an outage, but not forever", func(t *testing.T) {
		api := &fakeAPIServer{issuer: testIssuer, jwks: jwks}
		clk := clocktesting.NewFakeClock(tokenNow)
		k := NewAPIServerKeys(api.get, clk, testLogger())
		if _, err := k.Keys(ctx); err != nil {
			t.Fatal(err)
		}
		api.err = errors.New("connection refused")
		clk.Step(DefaultKeysMaxAge)
		if _, err := k.Keys(ctx); err != nil {
			t.Fatalf("during a short outage: %v, want the last keys", err)
		}
		clk.Step(DefaultKeysMaxStale)
		if _, err := k.Keys(ctx); err == nil || !strings.Contains(err.Error(), "connection refused") {
			t.Fatalf("after DefaultKeysMaxStale: %v, want the read's error", err)
		}
	})

	t.Run("no keys before the first success", func(t *testing.T) {
		api := &fakeAPIServer{err: errors.New("forbidden")}
		k := NewAPIServerKeys(api.get, clocktesting.NewFakeClock(tokenNow), testLogger())
		if _, err := k.Keys(ctx); err == nil || !strings.Contains(err.Error(), "non-resource URL") {
			t.Fatalf("Keys = %v, want an error naming the permission", err)
		}
	})

	t.Run("a discovery document without an issuer is an error", func(t *testing.T) {
		api := &fakeAPIServer{jwks: jwks}
		k := NewAPIServerKeys(api.get, clocktesting.NewFakeClock(tokenNow), testLogger())
		if _, err := k.Keys(ctx); err == nil || !strings.Contains(err.Error(), "issuer") {
			t.Fatalf("Keys = %v, want an error about the issuer", err)
		}
	})
}

func TestParseJWKSRejections(t *testing.T) {
	tests := []struct{ name, jwks, want string }{
		{"not JSON", `{`, "not a JSON Web Key Set"},
		{"no usable key", `{"keys":[{"kty":"oct","kid":"h","k":"c2VjcmV0"}]}`, "no RSA or ECDSA"},
		{"an encryption key is skipped", `{"keys":[{"kty":"RSA","kid":"e","use":"enc","n":"AQAB","e":"AQAB"}]}`, "no RSA or ECDSA"},
		{"a short RSA key", `{"keys":[{"kty":"RSA","kid":"s","n":"AQAB","e":"AQAB"}]}`, "fewer than 2048"},
		{"an EC point off the curve", `{"keys":[{"kty":"EC","kid":"p","crv":"P-256","x":"` + strings.Repeat("A", 43) + `","y":"` + strings.Repeat("A", 42) + `E"}]}`, "not a valid P-256 key"},
		{"an unknown curve", `{"keys":[{"kty":"EC","kid":"c","crv":"P-192","x":"AA","y":"AA"}]}`, "not supported"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := ParseJWKS([]byte(tt.jwks)); err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("ParseJWKS = %v, want an error containing %q", err, tt.want)
			}
		})
	}
}
