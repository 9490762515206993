package k8s

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sirupsen/logrus"
	"k8s.io/utils/clock"
)

// Paths of the API server's OIDC discovery (KEP-1393). Every
// ServiceAccount may read them through the default ClusterRoleBinding
// system:service-account-issuer-discovery; the chart grants them to
// kube2ra as well, for clusters that removed it.
const (
	oidcConfigPath = "/.well-known/openid-configuration"
	jwksPath       = "/openid/v1/jwks"
)

// Key source timing.
const (
	// DefaultKeysMaxAge is how long fetched keys are used before they are
	// read again on the next verification, so a withdrawn key stops
	// verifying within this time.
	DefaultKeysMaxAge = 5 * time.Minute
	// DefaultKeysMinInterval is the least time between two reads, so a
	// flood of tokens with unknown key IDs costs one read per interval.
	DefaultKeysMinInterval = 10 * time.Second
	// DefaultKeysMaxStale is how long the last keys are still used while
	// the API server cannot be read: pods keep their credentials through
	// a short API outage, but not forever with keys nobody confirmed.
	DefaultKeysMaxStale = time.Hour
	// DefaultKeysReadTimeout bounds one read of the keys. A read runs on
	// its own, not under the request that set it off: a caller hanging up
	// neither ends it nor counts as a failed read.
	DefaultKeysReadTimeout = 10 * time.Second
)

// RawGetter reads a path of the API server (the REST client's DoRaw).
type RawGetter func(ctx context.Context, path string) ([]byte, error)

// APIServerKeys is a KeySource reading the API server's OIDC discovery
// document (for the issuer) and its JWKS (for the keys). One read runs at
// a time, detached from the callers waiting for it (each may give up
// without ending it), and bounded by its own timeout.
type APIServerKeys struct {
	// get reads a path of the API server.
	get RawGetter
	// clock tells time.
	clock clock.PassiveClock
	// log receives read failures.
	log logrus.FieldLogger
	// maxAge, minInterval, maxStale and readTimeout are the timings above.
	maxAge, minInterval, maxStale, readTimeout time.Duration
	// fresh is the keys last read, for Fresh without the lock.
	fresh atomic.Pointer[SigningKeys]
	// mu guards the fields below; it is never held during a read.
	mu sync.Mutex
	// keys are the last keys read, nil before the first success.
	keys *SigningKeys
	// fetched is when keys were read.
	fetched time.Time
	// tried is when the last read began.
	tried time.Time
	// lastErr is the last read's failure.
	lastErr error
	// reading is the read under way, nil when none is.
	reading *keyRead
}

// keyRead is one read of the keys, shared by every caller waiting for it.
type keyRead struct {
	// started is when the read began.
	started time.Time
	// done is closed when keys and err are set.
	done chan struct{}
	// keys and err are what the read gives its callers: the keys read, or
	// the last ones when it failed, or the error.
	keys *SigningKeys
	err  error
}

var _ KeySource = (*APIServerKeys)(nil)

// NewAPIServerKeys builds a key source on get; clk may be nil.
func NewAPIServerKeys(get RawGetter, clk clock.PassiveClock, log logrus.FieldLogger) *APIServerKeys {
	if clk == nil {
		clk = clock.RealClock{}
	}
	return &APIServerKeys{get: get, clock: clk, log: log, maxAge: DefaultKeysMaxAge, minInterval: DefaultKeysMinInterval, maxStale: DefaultKeysMaxStale, readTimeout: DefaultKeysReadTimeout}
}

// Keys returns the keys, reading them when none are known or they are
// older than DefaultKeysMaxAge. ctx bounds only the wait for a read.
func (k *APIServerKeys) Keys(ctx context.Context) (*SigningKeys, error) {
	k.mu.Lock()
	if k.keys != nil && k.clock.Since(k.fetched) < k.maxAge {
		keys := k.keys
		k.mu.Unlock()
		return keys, nil
	}
	return k.awaitReadLocked(ctx)
}

// Fresh returns the keys last read while they are younger than
// DefaultKeysMaxAge, without reading or waiting for a read.
func (k *APIServerKeys) Fresh() (*SigningKeys, bool) {
	keys := k.fresh.Load()
	if keys == nil || k.clock.Since(keys.Fetched) >= k.maxAge {
		return nil, false
	}
	return keys, true
}

// Refresh reads the keys again unless a read began within
// DefaultKeysMinInterval; it joins a read already under way. ctx bounds
// only the wait for the read.
func (k *APIServerKeys) Refresh(ctx context.Context) (*SigningKeys, error) {
	k.mu.Lock()
	return k.awaitReadLocked(ctx)
}

// awaitReadLocked, called with mu held and releasing it, waits for the
// read under way, or starts one unless the last began within minInterval
// (then the last keys are the answer). A caller whose ctx ends stops
// waiting; the read goes on for the others and the next callers.
func (k *APIServerKeys) awaitReadLocked(ctx context.Context) (*SigningKeys, error) {
	r := k.reading
	if r == nil {
		now := k.clock.Now()
		if !k.tried.IsZero() && now.Sub(k.tried) < k.minInterval {
			defer k.mu.Unlock()
			return k.lastLocked(now)
		}
		r = &keyRead{started: now, done: make(chan struct{})}
		k.tried, k.reading = now, r
		go k.run(r)
	}
	k.mu.Unlock()
	select {
	case <-r.done:
		return r.keys, r.err
	case <-ctx.Done():
		return nil, fmt.Errorf("stopped waiting for the signing keys to be read: %w", ctx.Err())
	}
}

// run does read r, under readTimeout and no caller's context, and records
// it: new keys, or the failure, falling back to the last keys while they
// are not older than maxStale.
func (k *APIServerKeys) run(r *keyRead) {
	ctx, cancel := context.WithTimeout(context.Background(), k.readTimeout)
	keys, err := k.read(ctx)
	cancel()
	k.mu.Lock()
	now := k.clock.Now()
	k.reading = nil
	if err != nil {
		k.lastErr = err
		r.keys, r.err = k.lastLocked(now)
	} else {
		k.keys, k.fetched, k.lastErr = keys, r.started, nil
		k.fresh.Store(keys)
		r.keys = keys
	}
	k.mu.Unlock()
	if err != nil && k.log != nil {
		k.log.WithError(err).Warn("reading the cluster's ServiceAccount signing keys failed")
	}
	close(r.done)
}

// lastLocked is the last keys read, unless too old or none.
func (k *APIServerKeys) lastLocked(now time.Time) (*SigningKeys, error) {
	switch {
	case k.keys != nil && now.Sub(k.fetched) < k.maxStale:
		return k.keys, nil
	case k.lastErr != nil:
		return nil, k.lastErr
	case k.keys == nil:
		return nil, errors.New("the signing keys were not read yet")
	default:
		return nil, fmt.Errorf("the signing keys were last read at %s, longer ago than %s", k.fetched.UTC().Format(time.RFC3339), k.maxStale)
	}
}

// read fetches the discovery document and the JWKS.
func (k *APIServerKeys) read(ctx context.Context) (*SigningKeys, error) {
	raw, err := k.get(ctx, oidcConfigPath)
	if err != nil {
		return nil, fmt.Errorf("reading %s from the API server (kube2ra needs get on that non-resource URL): %w", oidcConfigPath, err)
	}
	var disc struct {
		Issuer string `json:"issuer"`
	}
	if err := json.Unmarshal(raw, &disc); err != nil || disc.Issuer == "" {
		return nil, fmt.Errorf("the API server's %s has no issuer (is --service-account-issuer set?): %v", oidcConfigPath, err)
	}
	raw, err = k.get(ctx, jwksPath)
	if err != nil {
		return nil, fmt.Errorf("reading %s from the API server (kube2ra needs get on that non-resource URL): %w", jwksPath, err)
	}
	keys, err := ParseJWKS(raw)
	if err != nil {
		return nil, fmt.Errorf("the API server's %s: %w", jwksPath, err)
	}
	return &SigningKeys{Issuer: disc.Issuer, Keys: keys, Fetched: k.clock.Now()}, nil
}

// jwk is one JSON Web Key as the API server publishes it.
type jwk struct {
	Kty string `json:"kty"`
	Kid string `json:"kid"`
	Use string `json:"use"`
	N   string `json:"n"`
	E   string `json:"e"`
	Crv string `json:"crv"`
	X   string `json:"x"`
	Y   string `json:"y"`
}

// ParseJWKS parses a JSON Web Key Set of RSA and ECDSA signing keys, by
// kid. Keys for other uses and of other types are skipped; a set with no
// usable key is an error.
func ParseJWKS(raw []byte) (map[string]crypto.PublicKey, error) {
	var set struct {
		Keys []jwk `json:"keys"`
	}
	if err := json.Unmarshal(raw, &set); err != nil {
		return nil, fmt.Errorf("not a JSON Web Key Set: %w", err)
	}
	out := make(map[string]crypto.PublicKey, len(set.Keys))
	for _, k := range set.Keys {
		if k.Kid == "" || (k.Use != "" && k.Use != "sig") {
			continue
		}
		key, err := k.publicKey()
		if err != nil {
			return nil, fmt.Errorf("key %q: %w", k.Kid, err)
		}
		if key != nil {
			out[k.Kid] = key
		}
	}
	if len(out) == 0 {
		return nil, errors.New("no RSA or ECDSA signing key with a key ID")
	}
	return out, nil
}

// publicKey decodes the key; nil for a type kube2ra does not use.
func (k jwk) publicKey() (crypto.PublicKey, error) {
	num := func(s, what string) (*big.Int, error) {
		b, err := base64.RawURLEncoding.DecodeString(s)
		if err != nil || len(b) == 0 {
			return nil, fmt.Errorf("%s is not base64url: %v", what, err)
		}
		return new(big.Int).SetBytes(b), nil
	}
	switch k.Kty {
	case "RSA":
		n, err := num(k.N, "n")
		if err != nil {
			return nil, err
		}
		e, err := num(k.E, "e")
		if err != nil {
			return nil, err
		}
		if !e.IsInt64() || e.Int64() < 3 || e.Int64() > 1<<31-1 {
			return nil, errors.New("the RSA exponent is out of range")
		}
		if n.BitLen() < 2048 {
			return nil, fmt.Errorf("the RSA key has %d bits, fewer than 2048", n.BitLen())
		}
		return &rsa.PublicKey{N: n, E: int(e.Int64())}, nil
	case "EC":
		var curve elliptic.Curve
		switch k.Crv {
		case "P-256":
			curve = elliptic.P256()
		case "P-384":
			curve = elliptic.P384()
		case "P-521":
			curve = elliptic.P521()
		default:
			return nil, fmt.Errorf("curve %q is not supported", k.Crv)
		}
		size := (curve.Params().BitSize + 7) / 8
		x, errX := base64.RawURLEncoding.DecodeString(k.X)
		y, errY := base64.RawURLEncoding.DecodeString(k.Y)
		if errX != nil || errY != nil || len(x) != size || len(y) != size {
			return nil, fmt.Errorf("x and y must be %d bytes of base64url each", size)
		}
		// Parsing the uncompressed point checks it is on the curve.
		pub, err := ecdsa.ParseUncompressedPublicKey(curve, append(append([]byte{4}, x...), y...))
		if err != nil {
			return nil, fmt.Errorf("the point is not a valid %s key: %w", k.Crv, err)
		}
		return pub, nil
	default:
		return nil, nil
	}
}
