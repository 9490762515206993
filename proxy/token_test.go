package proxy

import (
	"net/http"
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
