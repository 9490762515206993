package k8s

import (
	"context"
	"errors"
	"strings"
	"sync"
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

// mustJWKS publishes keys as the API server does.
func mustJWKS(t *testing.T, keys ...tokensigner.Key) []byte {
	t.Helper()
	jwks, err := tokensigner.JWKS(keys...)
	if err != nil {
		t.Fatal(err)
	}
	return jwks
}

// hangingAPIServer is a fakeAPIServer whose reads can be held: while gate
// is set, each read says it began on entered and waits for the gate to
// close or its context to end, as client-go's DoRaw does.
type hangingAPIServer struct {
	fakeAPIServer
	mu      sync.Mutex
	gate    chan struct{}
	entered chan struct{}
}

func (h *hangingAPIServer) get(ctx context.Context, path string) ([]byte, error) {
	h.mu.Lock()
	gate := h.gate
	h.mu.Unlock()
	if gate != nil {
		select {
		case h.entered <- struct{}{}:
		default:
		}
		select {
		case <-gate:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.fakeAPIServer.get(ctx, path)
}

func (h *hangingAPIServer) setJWKS(jwks []byte) {
	h.mu.Lock()
	h.jwks = jwks
	h.mu.Unlock()
}

// TestKeyReadSurvivesACallerHangingUp: a request that sets off a key read
// (a token with an unknown kid) and hangs up while the API server answers
// does not end the read or count as a failed one: the next caller, at
// once, gets the keys that read found, so a new signer's token is accepted
// (not refused or told to retry for 10 s).
func TestKeyReadSurvivesACallerHangingUp(t *testing.T) {
	keyA, keyB := newRSAKey(t, "a"), newRSAKey(t, "b")
	jwksA := mustJWKS(t, keyA)
	jwksAB := mustJWKS(t, keyA, keyB)
	api := &hangingAPIServer{fakeAPIServer: fakeAPIServer{issuer: testIssuer, jwks: jwksA}, entered: make(chan struct{}, 1)}
	clk := clocktesting.NewFakeClock(tokenNow)
	v := newTestVerifier(t, NewAPIServerKeys(api.get, clk, testLogger()), clk)
	if _, err := v.Verify(context.Background(), sign(t, keyA, goodClaims())); err != nil {
		t.Fatal(err)
	}

	// B is published; the keys may be read again.
	clk.Step(DefaultKeysMinInterval)
	api.setJWKS(jwksAB)
	gate := make(chan struct{})
	api.mu.Lock()
	api.gate = gate
	api.mu.Unlock()
	attacker, hangUp := context.WithCancel(context.Background())
	returned := make(chan error, 1)
	go func() {
		_, err := v.Verify(attacker, sign(t, newRSAKey(t, "made-up"), goodClaims()))
		returned <- err
	}()
	<-api.entered // the read the made-up kid set off is under way
	hangUp()
	if err := <-returned; err == nil {
		t.Fatal("the caller that hung up was served")
	}
	close(gate) // the API server answers

	issued := goodClaims()
	issued.IssuedAt = clk.Now()
	if _, err := v.Verify(context.Background(), sign(t, keyB, issued)); err != nil {
		t.Fatalf("the new signer's token right after a caller hung up on the key read: %v, want it accepted", err)
	}
}

// TestWithdrawnKeyEndsWhileCallersHangUp: a withdrawn signing key stops
// verifying within DefaultKeysMaxAge (what docs/security.md promises)
// even while a pod sends a made-up kid every DefaultKeysMinInterval and
// hangs up at once, each time beside a caller that waits for the keys.
func TestWithdrawnKeyEndsWhileCallersHangUp(t *testing.T) {
	keyA, keyB := newRSAKey(t, "a"), newRSAKey(t, "b")
	jwksAB := mustJWKS(t, keyA, keyB)
	jwksB := mustJWKS(t, keyB)
	api := &hangingAPIServer{fakeAPIServer: fakeAPIServer{issuer: testIssuer, jwks: jwksAB}, entered: make(chan struct{}, 1)}
	clk := clocktesting.NewFakeClock(tokenNow)
	keys := NewAPIServerKeys(api.get, clk, testLogger())
	v := newTestVerifier(t, keys, clk)
	tokA := sign(t, keyA, goodClaims())
	if _, err := v.Verify(context.Background(), tokA); err != nil {
		t.Fatal(err)
	}
	withdrawn := clk.Now()
	api.setJWKS(jwksB)

	hungUp, hangUp := context.WithCancel(context.Background())
	hangUp()
	made := sign(t, newRSAKey(t, "made-up"), goodClaims())
	for clk.Since(withdrawn) < DefaultKeysMaxAge {
		clk.Step(DefaultKeysMinInterval)
		_, _ = v.Verify(hungUp, made)
		// Another caller asks for the keys and waits for them.
		if _, err := keys.Refresh(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	var te *TokenError
	if _, err := v.Verify(context.Background(), tokA); !errors.As(err, &te) || te.Reason != TokenBadSignature {
		t.Fatalf("a token of the key withdrawn %s ago: %v, want %s", clk.Since(withdrawn), err, TokenBadSignature)
	}
}
