package k8s

import (
	"context"
	"crypto"
	"crypto/sha256"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	clocktesting "k8s.io/utils/clock/testing"

	"github.com/kube2ra/kube2ra/test/tokensigner"
)

const testIssuer = "https://kubernetes.default.svc.cluster.local"

// fakeKeys is a KeySource over keys the test publishes. Like
// APIServerKeys it keeps serving what it read last until Refresh; it
// counts refreshes.
type fakeKeys struct {
	mu        sync.Mutex
	keys      map[string]crypto.PublicKey
	served    map[string]crypto.PublicKey
	err       error
	refreshes int
}

func newFakeKeys(t *testing.T, keys ...tokensigner.Key) *fakeKeys {
	f := &fakeKeys{}
	f.set(t, keys...)
	return f
}

func (f *fakeKeys) set(t *testing.T, keys ...tokensigner.Key) {
	t.Helper()
	raw, err := tokensigner.JWKS(keys...)
	if err != nil {
		t.Fatal(err)
	}
	parsed, err := ParseJWKS(raw)
	if err != nil {
		t.Fatal(err)
	}
	f.mu.Lock()
	f.keys = parsed
	f.mu.Unlock()
}

func (f *fakeKeys) Keys(context.Context) (*SigningKeys, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.err != nil {
		return nil, f.err
	}
	if f.served == nil {
		f.served = f.keys
	}
	return &SigningKeys{Issuer: testIssuer, Keys: f.served}, nil
}

func (f *fakeKeys) Fresh() (*SigningKeys, bool) {
	keys, err := f.Keys(context.Background())
	return keys, err == nil
}

func (f *fakeKeys) Refresh(ctx context.Context) (*SigningKeys, error) {
	f.mu.Lock()
	f.refreshes++
	f.served = f.keys
	f.mu.Unlock()
	return f.Keys(ctx)
}

func newRSAKey(t testing.TB, id string) tokensigner.Key {
	t.Helper()
	k, err := tokensigner.NewRSA(id)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func newECKey(t testing.TB, id string) tokensigner.Key {
	t.Helper()
	k, err := tokensigner.NewECDSA(id)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

var tokenNow = time.Unix(1_800_000_000, 0)

// goodClaims is a pod-bound token for kube2ra, issued a minute ago, valid an hour.
func goodClaims() tokensigner.Claims {
	return tokensigner.Claims{
		Issuer: testIssuer, Audience: []string{DefaultPodIdentityAudience},
		Namespace: "apps", ServiceAccount: "web", PodName: "web-1", PodUID: "uid-web-1", Node: "node-a",
		IssuedAt: tokenNow.Add(-time.Minute), Expiry: tokenNow.Add(time.Hour),
	}
}

func sign(t *testing.T, k tokensigner.Key, c tokensigner.Claims) string {
	t.Helper()
	tok, err := k.Sign(c)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func signRaw(t *testing.T, k tokensigner.Key, header, payload map[string]any) string {
	t.Helper()
	tok, err := k.SignRaw(header, payload)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func newTestVerifier(t *testing.T, keys KeySource, clk *clocktesting.FakeClock) *TokenVerifier {
	t.Helper()
	v, err := NewTokenVerifier(TokenVerifierOptions{Keys: keys, Clock: clk})
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func TestVerifyTokenRejections(t *testing.T) {
	rsaKey := newRSAKey(t, "rsa-1")
	ecKey := newECKey(t, "ec-1")
	stranger := newRSAKey(t, "rsa-1") // same kid, other key
	with := func(f func(*tokensigner.Claims)) tokensigner.Claims {
		c := goodClaims()
		f(&c)
		return c
	}
	header := map[string]any{"alg": "RS256", "kid": "rsa-1"}
	tests := []struct {
		name  string
		token string
		want  TokenRejection // "" means accepted
	}{
		{"an RS256 pod-bound token is accepted", sign(t, rsaKey, goodClaims()), ""},
		{"an ES256 pod-bound token is accepted", sign(t, ecKey, goodClaims()), ""},
		{"a token without the node claim (API servers before 1.30) is accepted", sign(t, rsaKey, with(func(c *tokensigner.Claims) { c.Node = "" })), ""},
		{"an audience list that includes kube2ra's is accepted", sign(t, rsaKey, with(func(c *tokensigner.Claims) { c.Audience = []string{"other", DefaultPodIdentityAudience} })), ""},
		{"an empty token is missing", "", TokenMissing},
		{"two parts are not a JWT", "abc.def", TokenMalformed},
		{"a header that is not base64 is malformed", "!!!." + strings.SplitN(sign(t, rsaKey, goodClaims()), ".", 2)[1], TokenMalformed},
		{"a signature that is not base64 is malformed", sign(t, rsaKey, goodClaims()) + "!", TokenMalformed},
		{"an oversized token is malformed", strings.Repeat("a", maxTokenBytes+1), TokenMalformed},
		{"another key with the same kid does not verify", sign(t, stranger, goodClaims()), TokenBadSignature},
		{"an unknown kid does not verify", signRaw(t, rsaKey, map[string]any{"alg": "RS256", "kid": "nobody"}, goodClaims().Payload()), TokenBadSignature},
		{"alg none is refused", noneToken(t, goodClaims()), TokenBadSignature},
		{"HS256 is refused", signRaw(t, rsaKey, map[string]any{"alg": "HS256", "kid": "rsa-1"}, goodClaims().Payload()), TokenBadSignature},
		{"ES256 claimed for an RSA key is refused", signRaw(t, rsaKey, map[string]any{"alg": "ES256", "kid": "rsa-1"}, goodClaims().Payload()), TokenBadSignature},
		{"a tampered payload does not verify", tamper(t, sign(t, rsaKey, goodClaims())), TokenBadSignature},
		{"a wrong audience is refused", sign(t, rsaKey, with(func(c *tokensigner.Claims) { c.Audience = []string{"sts.amazonaws.com"} })), TokenWrongAudience},
		{"no audience is refused", sign(t, rsaKey, with(func(c *tokensigner.Claims) { c.Audience = nil })), TokenWrongAudience},
		{"another issuer is refused", sign(t, rsaKey, with(func(c *tokensigner.Claims) { c.Issuer = "https://evil.example" })), TokenWrongIssuer},
		{"an expired token is refused", sign(t, rsaKey, with(func(c *tokensigner.Claims) { c.Expiry = tokenNow.Add(-DefaultTokenClockSkew - time.Second) })), TokenExpired},
		{"a token expired within the clock skew is accepted", sign(t, rsaKey, with(func(c *tokensigner.Claims) { c.Expiry = tokenNow.Add(-DefaultTokenClockSkew + time.Second) })), ""},
		{"a token issued beyond the clock skew in the future is refused", sign(t, rsaKey, with(func(c *tokensigner.Claims) { c.IssuedAt = tokenNow.Add(DefaultTokenClockSkew + time.Second) })), TokenNotYetValid},
		{"a token issued within the clock skew in the future is accepted", sign(t, rsaKey, with(func(c *tokensigner.Claims) { c.IssuedAt = tokenNow.Add(DefaultTokenClockSkew - time.Second) })), ""},
		{"a token bound to no pod is refused", sign(t, rsaKey, with(func(c *tokensigner.Claims) { c.Unbound = true })), TokenNotPodBound},
		{"a token naming no ServiceAccount UID is refused", signRaw(t, rsaKey, header, withoutAccountUID(goodClaims().Payload())), TokenNotPodBound},
		{"a token without exp is malformed", signRaw(t, rsaKey, header, without(goodClaims().Payload(), "exp")), TokenMalformed},
		{"a subject that disagrees with the claims is malformed", signRaw(t, rsaKey, header, with2(goodClaims().Payload(), "sub", "system:serviceaccount:apps:admin")), TokenMalformed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v := newTestVerifier(t, newFakeKeys(t, rsaKey, ecKey), clocktesting.NewFakeClock(tokenNow))
			claims, err := v.Verify(context.Background(), tt.token)
			if tt.want == "" {
				if err != nil {
					t.Fatalf("Verify: %v, want accepted", err)
				}
				if claims.Pod != (BoundPodRef{Namespace: "apps", Name: "web-1", UID: "uid-web-1"}) || claims.ServiceAccount != "web" {
					t.Fatalf("claims = %+v", claims)
				}
				return
			}
			var te *TokenError
			if !errors.As(err, &te) || te.Reason != tt.want {
				t.Fatalf("Verify: %v, want a TokenError %s", err, tt.want)
			}
			if tt.token != "" && strings.Contains(err.Error(), tt.token) {
				t.Fatal("the error contains the token")
			}
		})
	}
}

func noneToken(t *testing.T, c tokensigner.Claims) string {
	k := newRSAKey(t, "rsa-1")
	tok := signRaw(t, k, map[string]any{"alg": "none", "kid": "rsa-1"}, c.Payload())
	return tok[:strings.LastIndex(tok, ".")+1]
}

// tamper re-encodes the payload with another pod name, keeping the signature.
func tamper(t *testing.T, tok string) string {
	parts := strings.Split(tok, ".")
	other := goodClaims()
	other.PodName = "admin-pod"
	k := newRSAKey(t, "x")
	forged := strings.Split(signRaw(t, k, map[string]any{}, other.Payload()), ".")
	return parts[0] + "." + forged[1] + "." + parts[2]
}

func without(m map[string]any, key string) map[string]any { delete(m, key); return m }

// withoutAccountUID drops kubernetes.io.serviceaccount.uid.
func withoutAccountUID(m map[string]any) map[string]any {
	delete(m["kubernetes.io"].(map[string]any)["serviceaccount"].(map[string]any), "uid")
	return m
}

func with2(m map[string]any, key string, v any) map[string]any { m[key] = v; return m }

func TestVerifyTokenSignerRotation(t *testing.T) {
	old := newRSAKey(t, "old")
	next := newRSAKey(t, "next")
	keys := newFakeKeys(t, old)
	clk := clocktesting.NewFakeClock(tokenNow)
	v := newTestVerifier(t, keys, clk)
	ctx := context.Background()
	oldTok := sign(t, old, goodClaims())
	if _, err := v.Verify(ctx, oldTok); err != nil {
		t.Fatalf("old key's token: %v", err)
	}

	// The API server starts signing with a new key and publishes both.
	keys.set(t, old, next)
	c := goodClaims()
	c.PodUID = "uid-web-1"
	newTok := sign(t, next, c)
	if _, err := v.Verify(ctx, newTok); err != nil {
		t.Fatalf("new key's token after rotation: %v", err)
	}
	if keys.refreshes != 1 {
		t.Fatalf("an unknown kid made %d refreshes, want 1", keys.refreshes)
	}

	// The old key is withdrawn: its token is still answered from the cache
	// until VerifiedTTL, then refused.
	keys.set(t, next)
	if _, err := v.Verify(ctx, oldTok); err != nil {
		t.Fatalf("old token within the verified TTL: %v", err)
	}
	clk.Step(DefaultVerifiedTokenTTL)
	_, _ = keys.Refresh(ctx) // the periodic re-read (APIServerKeys: DefaultKeysMaxAge)
	var te *TokenError
	if _, err := v.Verify(ctx, oldTok); !errors.As(err, &te) || te.Reason != TokenBadSignature {
		t.Fatalf("old token after its key was withdrawn: %v, want bad_signature", err)
	}
	if _, err := v.Verify(ctx, newTok); err != nil {
		t.Fatalf("new token after the old key was withdrawn: %v", err)
	}
}

func TestVerifiedTokenCache(t *testing.T) {
	key := newRSAKey(t, "k")
	ctx := context.Background()

	t.Run("a verified token is not checked again until it expires", func(t *testing.T) {
		keys := newFakeKeys(t, key)
		clk := clocktesting.NewFakeClock(tokenNow)
		v := newTestVerifier(t, keys, clk)
		c := goodClaims()
		c.Expiry = tokenNow.Add(2 * time.Minute)
		tok := sign(t, key, c)
		if _, err := v.Verify(ctx, tok); err != nil {
			t.Fatal(err)
		}
		// The same key ID now holds another key: a second signature check
		// would fail, so a success is the cache's.
		keys.set(t, newRSAKey(t, "k"))
		_, _ = keys.Refresh(ctx) // the key source reads them again
		if _, err := v.Verify(ctx, tok); err != nil {
			t.Fatalf("cached token: %v (its signature was checked again)", err)
		}
		// The cache entry ends at exp, not at exp + skew, so the next
		// check is a full one (which the other key fails).
		clk.Step(2 * time.Minute)
		if _, err := v.Verify(ctx, tok); err == nil {
			t.Fatal("after exp: accepted, want a full check")
		}
	})

	t.Run("a withdrawn key ends the tokens it verified at once", func(t *testing.T) {
		keys := newFakeKeys(t, key)
		v := newTestVerifier(t, keys, clocktesting.NewFakeClock(tokenNow))
		tok := sign(t, key, goodClaims())
		if _, err := v.Verify(ctx, tok); err != nil {
			t.Fatal(err)
		}
		keys.set(t, newRSAKey(t, "other"))
		_, _ = keys.Refresh(ctx) // the key source reads them again (its max age)
		var te *TokenError
		if _, err := v.Verify(ctx, tok); !errors.As(err, &te) || te.Reason != TokenBadSignature {
			t.Fatalf("cached token of a withdrawn key: %v, want %s", err, TokenBadSignature)
		}
	})

	t.Run("keys that cannot be read are not bypassed by the cache", func(t *testing.T) {
		keys := newFakeKeys(t, key)
		v := newTestVerifier(t, keys, clocktesting.NewFakeClock(tokenNow))
		tok := sign(t, key, goodClaims())
		if _, err := v.Verify(ctx, tok); err != nil {
			t.Fatal(err)
		}
		keys.mu.Lock()
		keys.err = errors.New("keys gone")
		keys.mu.Unlock()
		if _, err := v.Verify(ctx, tok); !errors.Is(err, ErrTokenKeys) {
			t.Fatalf("cached token without keys: %v, want ErrTokenKeys", err)
		}
	})

	t.Run("the cache is bounded", func(t *testing.T) {
		v, err := NewTokenVerifier(TokenVerifierOptions{Keys: newFakeKeys(t, key), Clock: clocktesting.NewFakeClock(tokenNow), MaxVerified: 3})
		if err != nil {
			t.Fatal(err)
		}
		for i := range 10 {
			c := goodClaims()
			c.PodUID = "uid-" + string(rune('a'+i))
			if _, err := v.Verify(ctx, sign(t, key, c)); err != nil {
				t.Fatal(err)
			}
		}
		if n := len(v.verified); n > 3 {
			t.Fatalf("cache holds %d tokens, want at most 3", n)
		}
	})

	t.Run("a refused token is not cached", func(t *testing.T) {
		v := newTestVerifier(t, newFakeKeys(t, key), clocktesting.NewFakeClock(tokenNow))
		c := goodClaims()
		c.Audience = []string{"other"}
		_, _ = v.Verify(ctx, sign(t, key, c))
		if len(v.verified) != 0 {
			t.Fatal("a refused token was cached")
		}
	})
}

func TestVerifyTokenCustomAudienceAndSkew(t *testing.T) {
	key := newRSAKey(t, "k")
	v, err := NewTokenVerifier(TokenVerifierOptions{Keys: newFakeKeys(t, key), Clock: clocktesting.NewFakeClock(tokenNow),
		Audience: "pods.eks.amazonaws.com", ClockSkew: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	c := goodClaims()
	c.Audience = []string{"pods.eks.amazonaws.com"}
	if _, err := v.Verify(context.Background(), sign(t, key, c)); err != nil {
		t.Fatalf("EKS audience: %v", err)
	}
	c.Expiry = tokenNow.Add(-10 * time.Second)
	var te *TokenError
	if _, err := v.Verify(context.Background(), sign(t, key, c)); !errors.As(err, &te) || te.Reason != TokenExpired {
		t.Fatalf("10 s past exp with 5 s skew: %v, want expired", err)
	}
	c = goodClaims()
	if _, err := v.Verify(context.Background(), sign(t, key, c)); !errors.As(err, &te) || te.Reason != TokenWrongAudience {
		t.Fatalf("kube2ra audience with the EKS audience configured: %v, want wrong_audience", err)
	}
}

// BenchmarkVerifyToken is the cost of the two paths: a full check (RS256
// signature, claims) for a token seen the first time, and a cache hit
// (SHA-256 of the token and a map lookup) for every later request.
func BenchmarkVerifyToken(b *testing.B) {
	key := newRSAKey(b, "k")
	tok, err := key.Sign(goodClaims())
	if err != nil {
		b.Fatal(err)
	}
	keys := &fakeKeys{}
	raw, _ := tokensigner.JWKS(key)
	if keys.keys, err = ParseJWKS(raw); err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	b.Run("full", func(b *testing.B) {
		v, _ := NewTokenVerifier(TokenVerifierOptions{Keys: keys, Clock: clocktesting.NewFakeClock(tokenNow)})
		for b.Loop() {
			if _, err := v.verify(ctx, tok, tokenNow); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("cached", func(b *testing.B) {
		v, _ := NewTokenVerifier(TokenVerifierOptions{Keys: keys, Clock: clocktesting.NewFakeClock(tokenNow)})
		for b.Loop() {
			if _, err := v.Verify(ctx, tok); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// TestNewSignerKeyWithinTheReadIntervalIsRetried: a token of a key the API
// server published after the agent's last read, arriving before the keys
// may be read again, gets an error the door answers 503 (SDKs retry), not a
// 401 (SDKs give up); once the interval has passed it is accepted. A kid
// still unknown after a real read is a bad signature.
func TestNewSignerKeyWithinTheReadIntervalIsRetried(t *testing.T) {
	ctx := context.Background()
	keyA, keyB := newRSAKey(t, "a"), newRSAKey(t, "b")
	jwksA := mustJWKS(t, keyA)
	jwksAB := mustJWKS(t, keyA, keyB)
	api := &fakeAPIServer{issuer: testIssuer, jwks: jwksA}
	clk := clocktesting.NewFakeClock(tokenNow)
	v := newTestVerifier(t, NewAPIServerKeys(api.get, clk, testLogger()), clk)
	if _, err := v.Verify(ctx, sign(t, keyA, goodClaims())); err != nil {
		t.Fatal(err)
	}

	api.jwks = jwksAB // B published, the agent read the keys 3 s ago
	clk.Step(3 * time.Second)
	issuedNow := goodClaims()
	issuedNow.IssuedAt = clk.Now()
	tokB := sign(t, keyB, issuedNow)
	var te *TokenError
	if _, err := v.Verify(ctx, tokB); !errors.Is(err, ErrTokenKeys) || errors.As(err, &te) {
		t.Fatalf("B token within the read interval: %v, want ErrTokenKeys (503, retried), not a refusal", err)
	}
	clk.Step(DefaultKeysMinInterval)
	if _, err := v.Verify(ctx, tokB); err != nil {
		t.Fatalf("B token after the interval: %v", err)
	}

	// A kid still unknown to keys read after the token was issued is not
	// published: a bad signature, whether the keys were read just now or
	// cannot be read again yet.
	clk.Step(DefaultKeysMinInterval)
	stranger := sign(t, newRSAKey(t, "made-up"), goodClaims())
	for _, when := range []string{"after a fresh read", "within the read interval"} {
		if _, err := v.Verify(ctx, stranger); !errors.As(err, &te) || te.Reason != TokenBadSignature {
			t.Fatalf("unknown kid of a token older than the keys, %s: %v, want %s", when, err, TokenBadSignature)
		}
	}
}

// TestCachedTokenDoesNotWaitForAKeyRead: while one request's key read hangs
// on a slow API server, a token verified before is answered from the cache
// at once (its key is checked against the keys last read, not by a read).
func TestCachedTokenDoesNotWaitForAKeyRead(t *testing.T) {
	ctx := context.Background()
	key := newRSAKey(t, "a")
	jwks, err := tokensigner.JWKS(key)
	if err != nil {
		t.Fatal(err)
	}
	api := &fakeAPIServer{issuer: testIssuer, jwks: jwks}
	release := make(chan struct{})
	var hung atomic.Bool
	get := func(ctx context.Context, path string) ([]byte, error) {
		if hung.Load() {
			<-release
		}
		return api.get(ctx, path)
	}
	clk := clocktesting.NewFakeClock(tokenNow)
	v := newTestVerifier(t, NewAPIServerKeys(get, clk, testLogger()), clk)
	tok := sign(t, key, goodClaims())
	if _, err := v.Verify(ctx, tok); err != nil {
		t.Fatal(err)
	}
	clk.Step(DefaultKeysMinInterval)
	hung.Store(true)
	done := make(chan struct{})
	go func() {
		defer close(done)
		_, _ = v.Verify(ctx, sign(t, newRSAKey(t, "new"), goodClaims())) // unknown kid: reads, and hangs
	}()
	defer func() { close(release); <-done }()
	time.Sleep(50 * time.Millisecond) // the read is under way

	answered := make(chan error, 1)
	go func() { _, err := v.Verify(ctx, tok); answered <- err }()
	select {
	case err := <-answered:
		if err != nil {
			t.Fatalf("cached token: %v", err)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("a cached token waited for another request's key read")
	}
}

// TestTokenSumIsTheTokensSHA256: the verified-token cache's key is the
// whole token's SHA-256 at every length (the pooled buffer feeds it in
// pieces), so two tokens share an entry only if they are the same token.
func TestTokenSumIsTheTokensSHA256(t *testing.T) {
	v := &TokenVerifier{}
	for _, n := range []int{1, 511, 512, 513, 1024, 1500, maxTokenBytes} {
		raw := strings.Repeat("x", n-1) + "y"
		if got, want := v.tokenSum(raw), sha256.Sum256([]byte(raw)); got != want {
			t.Errorf("%d-byte token: key %x, want its SHA-256 %x", n, got, want)
		}
		other := strings.Repeat("x", n-1) + "z"
		if v.tokenSum(other) == v.tokenSum(raw) {
			t.Errorf("%d-byte tokens differing in the last byte share a key", n)
		}
	}
}
