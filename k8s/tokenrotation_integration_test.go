//go:build integration

package k8s

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kube2ra/kube2ra/test/controlplane"
)

// agentClock is the agent's clock in the rotation test: real time plus an
// offset the test only ever moves forward. Real time keeps token iat and
// exp meaningful against the real API server; the offset lets the test put
// the agent exactly before and after its key cache's deadlines (minutes)
// without waiting for them.
type agentClock struct {
	// mu guards offset.
	mu sync.Mutex
	// offset is how far the agent's time is ahead of the real time.
	offset time.Duration
}

func (c *agentClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return time.Now().Add(c.offset)
}

func (c *agentClock) Since(t time.Time) time.Duration { return c.Now().Sub(t) }

// advanceTo moves the agent's time to at least t; it never goes back.
func (c *agentClock) advanceTo(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if d := t.Sub(time.Now().Add(c.offset)); d > 0 {
		c.offset += d
	}
}

// jwksReads records when (agent time) the key source read the JWKS.
type jwksReads struct {
	// clock is the agent's clock.
	clock *agentClock
	// mu guards at.
	mu sync.Mutex
	// at are the read times, oldest first.
	at []time.Time
}

func (r *jwksReads) observe(path string) {
	if path != jwksPath {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.at = append(r.at, r.clock.Now())
}

// count and last are the number of reads so far and the latest one's time.
func (r *jwksReads) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.at)
}

func (r *jwksReads) last() time.Time {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.at[len(r.at)-1]
}

// TestIntegrationServiceAccountSignerRotation follows an operator rotating
// the API server's token signer from key A to key B in the documented two
// restarts, with the token door's verifier running throughout and never
// restarted:
//
//  1. A signs and verifies: a pod's A token is accepted.
//  2. B signs, A and B verify: A tokens are still accepted, and the first
//     B token is too: its unknown kid makes the agent read the JWKS again
//     (once; unknown kids within DefaultKeysMinInterval cause no more reads).
//  3. Only B verifies: B tokens are accepted; A tokens keep verifying for
//     as long as the code promises and no longer: until the agent's keys are
//     DefaultKeysMaxAge old (then re-read), whether verified before or not
//     (a cached verification ends when its key is gone from the keys).
//
// The agent's clock is moved forward to each deadline (agentClock); the
// API server, its tokens and its keys are real.
func TestIntegrationServiceAccountSignerRotation(t *testing.T) {
	ctx := context.Background()
	const ns, node, sa = "sa-rotation", "sa-rotation-node", "web"
	// Longer than the whole scenario in agent time (about 11 minutes), so no
	// token expires during it and every refusal is about its key.
	const tokenLifetime = time.Hour
	createNamespace(t, ns, nil)
	createNode(t, ctx, node) // so tokens carry the node claim, as on a real cluster
	createServiceAccount(t, ns, sa, nil)
	clk := &agentClock{}
	reads := &jwksReads{clock: clk}
	d := startTokenDoor(t, node, doorOptions{clock: clk, onRead: reads.observe})
	pod := runPod(t, ctx, podOf(ns, "web", node, sa, nil, false), corev1.PodRunning, "10.78.0.1")
	eventually(t, "the pod is cached", func() error {
		if _, ok, _ := d.watcher.pods.GetStore().GetByKey(ns + "/web"); !ok {
			return errors.New("not cached")
		}
		return nil
	})
	mint := func(t *testing.T) string {
		t.Helper()
		return podTokenLasting(t, ns, sa, pod, DefaultPodIdentityAudience, tokenLifetime)
	}
	accepted := func(t *testing.T, what, tok string) {
		t.Helper()
		got, err := d.auth.AuthenticatePod(ctx, tok)
		if err != nil {
			t.Fatalf("%s: %v, want it accepted", what, err)
		}
		if got.UID != pod.UID {
			t.Fatalf("%s: authenticated pod %s, want %s", what, got.UID, pod.UID)
		}
	}
	refused := func(t *testing.T, what, tok string) {
		t.Helper()
		var te *TokenError
		if _, err := d.auth.AuthenticatePod(ctx, tok); !errors.As(err, &te) || te.Reason != TokenBadSignature {
			t.Fatalf("%s: %v, want it refused (%s)", what, err, TokenBadSignature)
		}
	}
	expectReads := func(t *testing.T, what string, want int) {
		t.Helper()
		if got := reads.count(); got != want {
			t.Fatalf("%s: the agent read the JWKS %d times in all, want %d", what, got, want)
		}
	}
	rotate := func(t *testing.T, signing controlplane.ServiceAccountKey, verifying ...controlplane.ServiceAccountKey) time.Duration {
		t.Helper()
		begin := time.Now()
		if err := cp.RotateServiceAccountKeys(ctx, 0, signing, verifying...); err != nil {
			t.Fatal(err)
		}
		return time.Since(begin)
	}

	keyA := cp.ServiceAccountKey()
	keyB, err := cp.NewServiceAccountKey()
	if err != nil {
		t.Fatal(err)
	}

	// 1. A signs. tokA1 is verified now; tokA2 first in step 2; tokA3 and
	// tokA4 only after A is withdrawn, one on each side of the re-read.
	tokA1, tokA2, tokA3, tokA4 := mint(t), mint(t), mint(t), mint(t)
	for _, tok := range []string{tokA1, tokA2, tokA3, tokA4} {
		expectKeyID(t, tok, keyA.KeyID)
	}
	accepted(t, "an A token while A signs", tokA1)
	expectReads(t, "the first token", 1)

	// 2. B signs, A and B verify.
	restartAB := rotate(t, keyB, keyA, keyB)
	tokB1, tokB2 := mint(t), mint(t)
	expectKeyID(t, tokB1, keyB.KeyID)
	// However fast the restart was, the last read is DefaultKeysMinInterval
	// old, so the agent may read again: what a rotation meets in a cluster,
	// where the last read is minutes old.
	clk.advanceTo(reads.last().Add(DefaultKeysMinInterval))
	begin := time.Now()
	accepted(t, "the first B token (unknown kid)", tokB1)
	pickup := time.Since(begin)
	expectReads(t, "the first B token", 2)
	begin = time.Now()
	accepted(t, "a second B token (kid now known)", tokB2)
	warm := time.Since(begin)
	accepted(t, "an A token first seen while A and B verify", tokA2)
	accepted(t, "the A token verified before the rotation", tokA1)
	expectReads(t, "tokens of known keys", 2)
	unknown := withKeyID(t, tokB1, "no-such-key")
	// Within DefaultKeysMinInterval of the read the keys cannot be read
	// again; the token was issued within the clock skew of that read, so
	// its key may be newer than the keys: refused as retryable (503).
	var te *TokenError
	if _, err := d.auth.AuthenticatePod(ctx, unknown); !errors.Is(err, ErrTokenKeys) || errors.As(err, &te) {
		t.Fatalf("a token with an unknown kid, right after a read: %v, want ErrTokenKeys (503, retried)", err)
	}
	expectReads(t, "an unknown kid within the minimum interval", 2)
	clk.advanceTo(reads.last().Add(DefaultKeysMinInterval))
	refused(t, "a token with an unknown kid, one minimum interval later", unknown)
	expectReads(t, "an unknown kid after the minimum interval", 3)

	// 3. Only B verifies. The API server itself refuses A tokens at once.
	restartB := rotate(t, keyB, keyB)
	withdrawn := clk.Now()
	if apiServerAuthenticates(t, ctx, tokA3) {
		t.Fatal("TokenReview accepts an A token after A was withdrawn: the rotation did not happen")
	}
	if !apiServerAuthenticates(t, ctx, tokB1) {
		t.Fatal("TokenReview refuses a B token while B signs")
	}
	tokB3 := mint(t)
	accepted(t, "a B token minted after A was withdrawn", tokB3)
	accepted(t, "a B token verified before A was withdrawn", tokB1)
	expectReads(t, "B tokens after A was withdrawn", 3)

	// The agent's keys (read at keysRead, when A was still published) are
	// trusted until they are DefaultKeysMaxAge old.
	keysRead := reads.last()
	const margin = 5 * time.Second // far more than one AuthenticatePod call
	if clk.Now().After(keysRead.Add(DefaultKeysMaxAge - margin)) {
		t.Fatalf("the restart took longer than %s: cannot check the agent before its keys' max age", DefaultKeysMaxAge-margin)
	}
	clk.advanceTo(keysRead.Add(DefaultKeysMaxAge - margin))
	accepted(t, "an A token first seen after withdrawal, keys younger than the max age", tokA3)
	expectReads(t, "keys younger than the max age", 3)

	clk.advanceTo(keysRead.Add(DefaultKeysMaxAge))
	refused(t, "an A token first seen once the keys reached the max age", tokA4)
	expectReads(t, "keys at the max age", 4)
	refusedAt := clk.Now()
	refused(t, "the A token verified before the rotation", tokA1)
	refused(t, "the A token verified while A and B verified", tokA2)
	refused(t, "the A token verified just before the re-read (its cache entry ends with its key)", tokA3)
	for name, tok := range map[string]string{"tokB1": tokB1, "tokB2": tokB2, "tokB3": tokB3} {
		accepted(t, "B token "+name+" at the end", tok)
	}

	t.Logf("figure sa_rotation_apiserver_restart_seconds: %.1f (B signs, A+B verify), %.1f (B only)", restartAB.Seconds(), restartB.Seconds())
	t.Logf("figure sa_rotation_new_key_pickup_ms: %.1f (first B token: unknown kid, JWKS read again, no agent restart); %.2f for a B token once the kid is known",
		float64(pickup.Microseconds())/1000, float64(warm.Microseconds())/1000)
	t.Logf("figure sa_rotation_old_key_refused_after: every A token, cached or not, %s after the API server dropped A (keys read %s before it, max age %s)",
		refusedAt.Sub(withdrawn).Round(time.Second), withdrawn.Sub(keysRead).Round(100*time.Millisecond), DefaultKeysMaxAge)
}

// apiServerAuthenticates asks the API server (TokenReview) whether it
// accepts tok for kube2ra's audience.
func apiServerAuthenticates(t *testing.T, ctx context.Context, tok string) bool {
	t.Helper()
	r, err := admin.AuthenticationV1().TokenReviews().Create(ctx, &authenticationv1.TokenReview{
		Spec: authenticationv1.TokenReviewSpec{Token: tok, Audiences: []string{DefaultPodIdentityAudience}}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("TokenReview: %v", err)
	}
	return r.Status.Authenticated
}

// tokenHeader decodes a JWS's protected header.
func tokenHeader(t *testing.T, tok string) map[string]any {
	t.Helper()
	raw, err := base64.RawURLEncoding.DecodeString(strings.SplitN(tok, ".", 2)[0])
	if err != nil {
		t.Fatalf("the token's header is not base64url: %v", err)
	}
	hdr := map[string]any{}
	if err := json.Unmarshal(raw, &hdr); err != nil {
		t.Fatalf("the token's header is not JSON: %v", err)
	}
	return hdr
}

func expectKeyID(t *testing.T, tok, want string) {
	t.Helper()
	if got := tokenHeader(t, tok)["kid"]; got != want {
		t.Fatalf("the token's kid is %v, want %q", got, want)
	}
}

// withKeyID is tok with its header's kid replaced (so its signature no
// longer matches, but the verifier looks the kid up first).
func withKeyID(t *testing.T, tok, kid string) string {
	t.Helper()
	hdr := tokenHeader(t, tok)
	hdr["kid"] = kid
	raw, err := json.Marshal(hdr)
	if err != nil {
		t.Fatal(err)
	}
	return base64.RawURLEncoding.EncodeToString(raw) + tok[strings.Index(tok, "."):]
}
