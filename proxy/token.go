package proxy

import (
	"bytes"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"fmt"
	"hash"
	"net/http"
	"net/netip"
	"strconv"
	"sync"
	"time"

	"k8s.io/utils/clock"
)

const (
	// tokenHeader carries an IMDSv2 session token on GETs.
	tokenHeader = "X-aws-ec2-metadata-token"
	// tokenHeaderKey is tokenHeader as net/http stores it, for lookups that
	// do not canonicalise (and allocate) on every request.
	tokenHeaderKey = "X-Aws-Ec2-Metadata-Token"
	// ttlHeader asks for (PUT) and reports (response) a token lifetime in seconds.
	ttlHeader = "X-aws-ec2-metadata-token-ttl-seconds"
	// forwardedForHeader on a token PUT means the request went through a
	// proxy; IMDS refuses those so a token cannot be minted from afar.
	forwardedForHeader = "X-Forwarded-For"
	// maxTokenTTLSeconds is IMDS's upper bound (6 hours).
	maxTokenTTLSeconds = 21600
	// tokenFormatVersion is the first byte of every token kube2ra mints.
	tokenFormatVersion = 1
	// tokenKeyBytes is the size of the per-process HMAC key.
	tokenKeyBytes = 32
	// tokenPayloadLen is version (1) + expiry in Unix seconds (8) + caller IP (16).
	tokenPayloadLen = 1 + 8 + 16
	// tokenLen is payload + HMAC-SHA256.
	tokenLen = tokenPayloadLen + sha256.Size
	// tokenEncodedLen is the length of a token as sent.
	tokenEncodedLen = (tokenLen*8 + 5) / 6
)

// tokenEncoding is how tokens are written; decoding refuses any other spelling.
var tokenEncoding = base64.RawURLEncoding.Strict()

// tokenMinter mints and checks IMDSv2 session tokens. A token is
// base64url(version | expiry | caller IP | HMAC-SHA256(key, the rest)); the
// key is random per process unless the agent adopts another
// (Server.AdoptTokenKey): a successor taking the sockets over adopts its
// predecessor's, and an agent started with a handover directory the one
// the last agent saved there, so the tokens pods hold stay valid, as on
// EC2 where a token lives its TTL. Without either, a restart invalidates
// every token and SDKs get 401 (most fetch a new one).
type tokenMinter struct {
	// key is the HMAC key, generated at start; exported only to a successor.
	key []byte
	// clock decides expiry.
	clock clock.PassiveClock
	// macs are keyed HMAC states for reuse (*tokenScratch): every GET with
	// a token checks one, and keying a fresh one costs as much as the check.
	macs sync.Pool
}

// tokenScratch is a keyed HMAC state with the buffers a check needs, so a
// check allocates nothing (the buffers escape through the hash interface).
type tokenScratch struct {
	// mac is the keyed HMAC-SHA256.
	mac hash.Hash
	// src is the token as sent.
	src [tokenEncodedLen]byte
	// buf is the decoded token.
	buf [tokenLen]byte
	// sum is the HMAC computed over buf's payload.
	sum [sha256.Size]byte
}

func newTokenMinter(c clock.PassiveClock) (*tokenMinter, error) {
	key := make([]byte, tokenKeyBytes)
	if _, err := rand.Read(key); err != nil {
		return nil, fmt.Errorf("generating the IMDSv2 token key from crypto/rand failed: %w", err)
	}
	return newTokenMinterWithKey(c, key)
}

// newTokenMinterWithKey mints with a predecessor's key.
func newTokenMinterWithKey(c clock.PassiveClock, key []byte) (*tokenMinter, error) {
	if len(key) != tokenKeyBytes {
		return nil, fmt.Errorf("an IMDSv2 token key has %d bytes, not %d", len(key), tokenKeyBytes)
	}
	m := &tokenMinter{key: bytes.Clone(key), clock: c}
	m.macs.New = func() any { return &tokenScratch{mac: hmac.New(sha256.New, m.key)} }
	return m, nil
}

// sign writes the HMAC of payload into sum.
func (m *tokenMinter) sign(payload []byte, sum *[sha256.Size]byte) {
	t := m.macs.Get().(*tokenScratch)
	t.mac.Reset()
	t.mac.Write(payload)
	copy(sum[:], t.mac.Sum(t.sum[:0]))
	m.macs.Put(t)
}

// parseTTL reads the TTL header of a token PUT: exactly one value, a
// decimal integer in 1..21600.
func parseTTL(h http.Header) (int, bool) {
	vals := h.Values(ttlHeader)
	if len(vals) != 1 {
		return 0, false
	}
	v := vals[0]
	if v == "" || len(v) > 5 {
		return 0, false
	}
	for i := 0; i < len(v); i++ {
		if v[i] < '0' || v[i] > '9' {
			return 0, false
		}
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 || n > maxTokenTTLSeconds {
		return 0, false
	}
	return n, true
}

// mint issues a token for ip valid for ttl.
func (m *tokenMinter) mint(ip netip.Addr, ttl time.Duration) string {
	var buf [tokenLen]byte
	buf[0] = tokenFormatVersion
	binary.BigEndian.PutUint64(buf[1:9], uint64(m.clock.Now().Add(ttl).Unix()))
	a := ip.Unmap().As16()
	copy(buf[9:tokenPayloadLen], a[:])
	var sum [sha256.Size]byte
	m.sign(buf[:tokenPayloadLen], &sum)
	copy(buf[tokenPayloadLen:], sum[:])
	return tokenEncoding.EncodeToString(buf[:])
}

// validAt reports whether tok was minted by this process for ip and has
// not expired at now (the request's start, read once per request). It
// never says why, and the token is never logged.
func (m *tokenMinter) validAt(tok string, ip netip.Addr, now time.Time) bool {
	if len(tok) != tokenEncodedLen {
		return false
	}
	t := m.macs.Get().(*tokenScratch)
	defer m.macs.Put(t)
	copy(t.src[:], tok)
	n, err := tokenEncoding.Decode(t.buf[:], t.src[:])
	if err != nil || n != tokenLen || t.buf[0] != tokenFormatVersion {
		return false
	}
	t.mac.Reset()
	t.mac.Write(t.buf[:tokenPayloadLen])
	if !hmac.Equal(t.mac.Sum(t.sum[:0]), t.buf[tokenPayloadLen:]) {
		return false
	}
	a := ip.Unmap().As16()
	if !hmac.Equal(a[:], t.buf[9:tokenPayloadLen]) {
		return false
	}
	expiry := int64(binary.BigEndian.Uint64(t.buf[1:9]))
	return now.Unix() < expiry
}
