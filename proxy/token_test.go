package proxy

import (
	"net/http"
	"net/netip"
	"testing"
	"time"

	clocktesting "k8s.io/utils/clock/testing"
)

func TestTokenHeaderKeyIsCanonical(t *testing.T) {
	if got := http.CanonicalHeaderKey(tokenHeader); got != tokenHeaderKey {
		t.Fatalf("tokenHeaderKey %q, but net/http stores %q as %q: tokens would never be seen", tokenHeaderKey, tokenHeader, got)
	}
}

func TestTokenLengthAndReuseOfPooledMACs(t *testing.T) {
	m, err := newTokenMinter(clocktesting.NewFakePassiveClock(time.Now()))
	if err != nil {
		t.Fatal(err)
	}
	tok := m.mint(loopback, time.Minute)
	if len(tok) != tokenEncodedLen {
		t.Fatalf("token length %d, want %d", len(tok), tokenEncodedLen)
	}
	// A pooled MAC must give the same answer every time, and a
	// tampered token must fail after a valid one used the same state.
	for range 3 {
		if !m.valid(tok, loopback) {
			t.Fatal("a freshly minted token is not valid")
		}
		raw, err := tokenEncoding.DecodeString(tok)
		if err != nil {
			t.Fatal(err)
		}
		raw[len(raw)-1] ^= 1
		if m.valid(tokenEncoding.EncodeToString(raw), loopback) {
			t.Fatal("a token with a changed MAC is valid")
		}
	}
}

// TestSuccessorAcceptsThePredecessorsTokens: a successor that adopts the
// serving agent's key (Server.AdoptTokenKey, through the handover) accepts
// the tokens pods hold; with its own key it would answer them 401.
func TestSuccessorAcceptsThePredecessorsTokens(t *testing.T) {
	fc := clocktesting.NewFakePassiveClock(time.Now())
	old, err := newTokenMinter(fc)
	if err != nil {
		t.Fatal(err)
	}
	tok := old.mint(loopback, time.Hour)
	fresh, err := newTokenMinter(fc)
	if err != nil {
		t.Fatal(err)
	}
	if fresh.valid(tok, loopback) {
		t.Fatal("a minter with its own key accepted another's token")
	}
	succ, err := newTokenMinterWithKey(fc, (&Server{tokens: old}).TokenKey())
	if err != nil {
		t.Fatal(err)
	}
	if !succ.valid(tok, loopback) {
		t.Fatal("the successor refused the predecessor's token")
	}
	if _, err := newTokenMinterWithKey(fc, old.key[:16]); err == nil {
		t.Fatal("a 16-byte key was adopted")
	}
}

// valid is validAt now.
func (m *tokenMinter) valid(tok string, ip netip.Addr) bool {
	return m.validAt(tok, ip, m.clock.Now())
}
