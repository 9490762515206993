package k8s

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"math/big"
	"strings"
	"sync"
	"time"

	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/clock"
)

// Verifier defaults.
const (
	// DefaultPodIdentityAudience is the audience kube2ra's projected tokens
	// carry (--pod-identity-audience). It is kube2ra's own, so a token
	// minted for kube2ra is useless to STS (IRSA's sts.amazonaws.com) and
	// to EKS's agent (pods.eks.amazonaws.com), and theirs are useless here.
	DefaultPodIdentityAudience = "kube2ra"
	// DefaultTokenClockSkew is the leeway on exp, nbf and iat: the same
	// minute Kubernetes' own token validator allows.
	DefaultTokenClockSkew = time.Minute
	// DefaultVerifiedTokenTTL bounds how long a verified token is answered
	// from the cache without checking its signature again. A signing key the
	// API server withdraws ends its cached tokens sooner: at the key
	// source's next read (DefaultKeysMaxAge), when its kid is gone.
	DefaultVerifiedTokenTTL = 5 * time.Minute
	// DefaultVerifiedTokens bounds the verified-token cache: one entry per
	// live token, and a node runs at most a few hundred pods, each with one
	// or two tokens alive at a time.
	DefaultVerifiedTokens = 4096
	// maxTokenBytes: Kubernetes tokens are about 1 KiB; a larger header is
	// not one and is refused before any parsing.
	maxTokenBytes = 8 << 10
)

// TokenRejection says why a ServiceAccount token was refused.
type TokenRejection string

// Rejections. Each maps to one HTTP status in the proxy and is the
// "result" label of kube2ra_pod_identity_requests_total.
const (
	// TokenMissing: no Authorization header.
	TokenMissing TokenRejection = "missing_token"
	// TokenMalformed: not a compact JWS with the claims kube2ra reads.
	TokenMalformed TokenRejection = "malformed_token"
	// TokenBadSignature: the signature does not verify, the algorithm is
	// not one Kubernetes signs with, or no current key has the token's kid.
	TokenBadSignature TokenRejection = "bad_signature"
	// TokenExpired: exp is past (beyond the clock skew).
	TokenExpired TokenRejection = "expired"
	// TokenNotYetValid: nbf or iat is in the future (beyond the clock skew).
	TokenNotYetValid TokenRejection = "not_yet_valid"
	// TokenWrongAudience: the audience is not kube2ra's.
	TokenWrongAudience TokenRejection = "wrong_audience"
	// TokenWrongIssuer: another issuer than this cluster's API server.
	TokenWrongIssuer TokenRejection = "wrong_issuer"
	// TokenNotPodBound: a valid token that names no pod (a Secret-based or
	// unbound TokenRequest token): kube2ra cannot tell which pod calls.
	TokenNotPodBound TokenRejection = "not_pod_bound"
	// TokenServiceAccountReplaced: the token's ServiceAccount was deleted
	// (and perhaps created again under its name, with another UID).
	TokenServiceAccountReplaced TokenRejection = "service_account_replaced"
	// TokenPodNotHere: the token's pod is not a live pod of this node
	// (deleted, finished, on another node, or replaced by a namesake).
	TokenPodNotHere TokenRejection = "pod_not_on_node"
)

// TokenError is a refused ServiceAccount token. Detail never contains the
// token.
type TokenError struct {
	// Reason classifies the refusal.
	Reason TokenRejection
	// Detail is a sentence for the log and the caller: what was wrong.
	Detail string
}

func (e *TokenError) Error() string { return fmt.Sprintf("token refused (%s): %s", e.Reason, e.Detail) }

// Unauthenticated is true for a token that does not prove who calls
// (401), false for one that does but names a caller kube2ra will not serve
// (403) or for a request without a usable token at all (400).
func (e *TokenError) Unauthenticated() bool {
	switch e.Reason {
	case TokenBadSignature, TokenExpired, TokenNotYetValid, TokenWrongAudience, TokenWrongIssuer, TokenServiceAccountReplaced:
		return true
	}
	return false
}

// ErrTokenKeys wraps a failure to read the cluster's signing keys: the
// token cannot be judged now (503, which SDKs retry).
var ErrTokenKeys = errors.New("the cluster's ServiceAccount signing keys are not available")

func reject(reason TokenRejection, format string, args ...any) error {
	return &TokenError{Reason: reason, Detail: fmt.Sprintf(format, args...)}
}

// BoundPodRef is the pod a token is bound to.
type BoundPodRef struct {
	// Namespace of the pod.
	Namespace string
	// Name of the pod.
	Name string
	// UID of the pod.
	UID types.UID
}

func (r BoundPodRef) String() string {
	return r.Namespace + "/" + r.Name + " (UID " + string(r.UID) + ")"
}

// TokenClaims is what a verified token says about its caller.
type TokenClaims struct {
	// Pod is the pod the token is bound to.
	Pod BoundPodRef
	// ServiceAccount is the ServiceAccount's name.
	ServiceAccount string
	// ServiceAccountUID is the UID of the ServiceAccount the token was
	// issued for: a namesake created after it was deleted has another.
	ServiceAccountUID types.UID
	// Node is the node the token's pod was scheduled on when the token was
	// issued; empty for API servers before 1.30, which do not say.
	Node string
	// Expiry is the token's exp.
	Expiry time.Time
	// KeyID is the kid of the signing key that verified the token.
	KeyID string
}

// SigningKeys is the cluster's current token signing keys and issuer.
type SigningKeys struct {
	// Issuer is the iss every token must carry.
	Issuer string
	// Keys are the public keys by kid.
	Keys map[string]crypto.PublicKey
	// Fetched is when the keys were read (zero when unknown).
	Fetched time.Time
}

// KeySource returns the cluster's signing keys. Refresh asks again (a kid
// it did not know, or a periodic re-read); it may return the current keys
// when it was asked very recently. Fresh returns the keys last read without
// reading or waiting for a read, and false when there are none or they are
// due to be read again.
type KeySource interface {
	Keys(ctx context.Context) (*SigningKeys, error)
	Refresh(ctx context.Context) (*SigningKeys, error)
	Fresh() (*SigningKeys, bool)
}

// TokenVerifierOptions configure a TokenVerifier.
type TokenVerifierOptions struct {
	// Keys gives the signing keys; required.
	Keys KeySource
	// Audience every token must carry; DefaultPodIdentityAudience when empty.
	Audience string
	// ClockSkew is the leeway on exp, nbf and iat; DefaultTokenClockSkew when zero.
	ClockSkew time.Duration
	// VerifiedTTL bounds the reuse of a verification; DefaultVerifiedTokenTTL when zero.
	VerifiedTTL time.Duration
	// MaxVerified bounds the verified-token cache; DefaultVerifiedTokens when zero.
	MaxVerified int
	// Clock tells time; the real clock when nil.
	Clock clock.PassiveClock
}

// TokenVerifier checks projected ServiceAccount tokens locally against the
// API server's published keys (OIDC discovery), so a request costs no API
// call, and remembers verified tokens by their SHA-256 (never the token)
// until they expire.
type TokenVerifier struct {
	// opts are the options with defaults applied.
	opts TokenVerifierOptions
	// clock tells time.
	clock clock.PassiveClock
	// mu guards verified.
	mu sync.Mutex
	// verified maps a token's SHA-256 to its claims and how long they hold.
	verified map[[sha256.Size]byte]verifiedToken
	// digests are *tokenDigest for tokenSum.
	digests sync.Pool
}

// verifiedToken is one remembered verification.
type verifiedToken struct {
	// claims are the token's claims.
	claims TokenClaims
	// until is min(exp, verification time + VerifiedTTL).
	until time.Time
}

// NewTokenVerifier builds a verifier.
func NewTokenVerifier(opts TokenVerifierOptions) (*TokenVerifier, error) {
	if opts.Keys == nil {
		return nil, errors.New("k8s.NewTokenVerifier needs a key source")
	}
	if opts.Audience == "" {
		opts.Audience = DefaultPodIdentityAudience
	}
	if opts.ClockSkew <= 0 {
		opts.ClockSkew = DefaultTokenClockSkew
	}
	if opts.VerifiedTTL <= 0 {
		opts.VerifiedTTL = DefaultVerifiedTokenTTL
	}
	if opts.MaxVerified <= 0 {
		opts.MaxVerified = DefaultVerifiedTokens
	}
	if opts.Clock == nil {
		opts.Clock = clock.RealClock{}
	}
	return &TokenVerifier{opts: opts, clock: opts.Clock, verified: make(map[[sha256.Size]byte]verifiedToken)}, nil
}

// Audience is the audience tokens must carry.
func (v *TokenVerifier) Audience() string { return v.opts.Audience }

// Verify checks raw's signature, issuer, audience, times and pod binding
// and returns its claims, or a *TokenError, or an error wrapping
// ErrTokenKeys when the keys cannot be read.
func (v *TokenVerifier) Verify(ctx context.Context, raw string) (TokenClaims, error) {
	if raw == "" {
		return TokenClaims{}, reject(TokenMissing, "no token in the Authorization header; set AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE to the pod's projected ServiceAccount token")
	}
	if len(raw) > maxTokenBytes {
		return TokenClaims{}, reject(TokenMalformed, "the token is %d bytes, more than any ServiceAccount token (%d)", len(raw), maxTokenBytes)
	}
	sum := v.tokenSum(raw)
	now := v.clock.Now()
	v.mu.Lock()
	e, ok := v.verified[sum]
	v.mu.Unlock()
	if ok && now.Before(e.until) && v.keyStillCurrent(e.claims.KeyID) {
		return e.claims, nil
	}
	claims, err := v.verify(ctx, raw, now)
	if err != nil {
		return TokenClaims{}, err
	}
	until := now.Add(v.opts.VerifiedTTL)
	if claims.Expiry.Before(until) {
		until = claims.Expiry
	}
	v.remember(sum, verifiedToken{claims: claims, until: until}, now)
	return claims, nil
}

// tokenSum is the SHA-256 of raw, the verified-token cache's key. It
// hashes through a pooled digest and buffer: converting the ~1 KiB token
// to a []byte was the token door's largest allocation per request.
func (v *TokenVerifier) tokenSum(raw string) [sha256.Size]byte {
	d, _ := v.digests.Get().(*tokenDigest)
	if d == nil {
		d = &tokenDigest{h: sha256.New()}
	}
	d.h.Reset()
	for rest := raw; rest != ""; {
		n := copy(d.buf[:], rest)
		d.h.Write(d.buf[:n])
		rest = rest[n:]
	}
	var sum [sha256.Size]byte
	copy(sum[:], d.h.Sum(d.buf[:0]))
	clear(d.buf[:]) // no piece of a token outlives its check
	v.digests.Put(d)
	return sum
}

// tokenDigest is a SHA-256 state and a buffer to feed it a string with.
type tokenDigest struct {
	// h is the digest.
	h hash.Hash
	// buf carries the string into h, a piece at a time.
	buf [512]byte
}

// mayPredate says whether keys may predate the token's key: they were read
// before the token was issued (iat, with the clock skew), so a key published
// in between is missing from them. iat is read before the signature is
// checked, which is safe: it only chooses between two refusals (retry
// later, or bad signature).
func (v *TokenVerifier) mayPredate(keys *SigningKeys, payload string) bool {
	if keys.Fetched.IsZero() {
		return false
	}
	var p struct {
		IssuedAt json.Number `json:"iat"`
	}
	if err := decodeSegment(payload, &p); err != nil {
		return false
	}
	issued, err := unixClaim(p.IssuedAt, "iat", false)
	if err != nil || issued.IsZero() {
		return false
	}
	return keys.Fetched.Before(issued.Add(v.opts.ClockSkew))
}

// keyStillCurrent says whether the key that verified a remembered token is
// still one of the API server's, as the key source last read them: a
// withdrawn key ends every token it signed at the next read of the keys,
// not up to VerifiedTTL later. It never reads or waits for a read (a cache
// hit must not wait on the API server): keys due to be read again send the
// token to a full verification, which reads them.
func (v *TokenVerifier) keyStillCurrent(kid string) bool {
	keys, fresh := v.opts.Keys.Fresh()
	if !fresh {
		return false
	}
	_, ok := keys.Keys[kid]
	return ok
}

// remember stores a verification, keeping the cache within MaxVerified:
// expired entries go first, then arbitrary ones (a dropped entry only
// costs one more signature check).
func (v *TokenVerifier) remember(sum [sha256.Size]byte, e verifiedToken, now time.Time) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if len(v.verified) >= v.opts.MaxVerified {
		for k, old := range v.verified {
			if !now.Before(old.until) {
				delete(v.verified, k)
			}
		}
		for k := range v.verified {
			if len(v.verified) < v.opts.MaxVerified {
				break
			}
			delete(v.verified, k)
		}
	}
	v.verified[sum] = e
}

// jwsHeader is the protected header of a token.
type jwsHeader struct {
	Alg string `json:"alg"`
	Kid string `json:"kid"`
}

// audience is a JWT aud: a string or an array of strings.
type audience []string

func (a *audience) UnmarshalJSON(b []byte) error {
	if len(b) > 0 && b[0] == '"' {
		var s string
		if err := json.Unmarshal(b, &s); err != nil {
			return err
		}
		*a = audience{s}
		return nil
	}
	var list []string
	if err := json.Unmarshal(b, &list); err != nil {
		return err
	}
	*a = list
	return nil
}

// tokenPayload is the claims Kubernetes puts in a projected token.
type tokenPayload struct {
	Issuer    string      `json:"iss"`
	Subject   string      `json:"sub"`
	Audience  audience    `json:"aud"`
	Expiry    json.Number `json:"exp"`
	NotBefore json.Number `json:"nbf"`
	IssuedAt  json.Number `json:"iat"`
	K8s       *struct {
		Namespace string `json:"namespace"`
		Pod       *struct {
			Name string `json:"name"`
			UID  string `json:"uid"`
		} `json:"pod"`
		ServiceAccount struct {
			Name string `json:"name"`
			UID  string `json:"uid"`
		} `json:"serviceaccount"`
		Node *struct {
			Name string `json:"name"`
		} `json:"node"`
	} `json:"kubernetes.io"`
}

// verify does the checks Verify caches.
func (v *TokenVerifier) verify(ctx context.Context, raw string, now time.Time) (TokenClaims, error) {
	parts := strings.Split(raw, ".")
	if len(parts) != 3 {
		return TokenClaims{}, reject(TokenMalformed, "the token is not a JWT (want three dot-separated parts, got %d)", len(parts))
	}
	var hdr jwsHeader
	if err := decodeSegment(parts[0], &hdr); err != nil {
		return TokenClaims{}, reject(TokenMalformed, "the token's header: %v", err)
	}
	sig, err := base64.RawURLEncoding.DecodeString(parts[2])
	if err != nil {
		return TokenClaims{}, reject(TokenMalformed, "the token's signature is not base64url: %v", err)
	}
	keys, err := v.opts.Keys.Keys(ctx)
	if err != nil {
		return TokenClaims{}, fmt.Errorf("%w: %w", ErrTokenKeys, err)
	}
	key, ok := keys.Keys[hdr.Kid]
	if !ok {
		// The signer may have rotated: read the keys again (the source
		// bounds how often).
		if keys, err = v.opts.Keys.Refresh(ctx); err != nil {
			return TokenClaims{}, fmt.Errorf("%w: %w", ErrTokenKeys, err)
		}
		if key, ok = keys.Keys[hdr.Kid]; !ok {
			if keys.Fetched.Before(now) && v.mayPredate(keys, parts[1]) {
				// Not read during this call (the source bounds how often),
				// and read before the token was issued: a key the API server
				// published since is not known yet. Unsure, so no
				// credentials, but a status SDKs retry.
				return TokenClaims{}, fmt.Errorf("%w: the token's key ID %q is not among the keys read at %s, which are read again at most every %s; retry",
					ErrTokenKeys, hdr.Kid, keys.Fetched.UTC().Format(time.RFC3339), DefaultKeysMinInterval)
			}
			return TokenClaims{}, reject(TokenBadSignature, "no current signing key of the API server has the token's key ID %q", hdr.Kid)
		}
	}
	if err := verifySignature(hdr.Alg, key, parts[0]+"."+parts[1], sig); err != nil {
		return TokenClaims{}, reject(TokenBadSignature, "%v", err)
	}

	// Only a signed payload is parsed further.
	var p tokenPayload
	if err := decodeSegment(parts[1], &p); err != nil {
		return TokenClaims{}, reject(TokenMalformed, "the token's claims: %v", err)
	}
	if p.Issuer != keys.Issuer {
		return TokenClaims{}, reject(TokenWrongIssuer, "issuer %q is not this cluster's (%q)", p.Issuer, keys.Issuer)
	}
	found := false
	for _, a := range p.Audience {
		found = found || a == v.opts.Audience
	}
	if !found {
		return TokenClaims{}, reject(TokenWrongAudience, "audience %q does not include %q; project the token with audience %q", []string(p.Audience), v.opts.Audience, v.opts.Audience)
	}
	exp, err := unixClaim(p.Expiry, "exp", true)
	if err != nil {
		return TokenClaims{}, err
	}
	if !now.Before(exp.Add(v.opts.ClockSkew)) {
		return TokenClaims{}, reject(TokenExpired, "the token expired at %s", exp.UTC().Format(time.RFC3339))
	}
	for _, c := range []struct {
		name string
		val  json.Number
	}{{"nbf", p.NotBefore}, {"iat", p.IssuedAt}} {
		t, err := unixClaim(c.val, c.name, false)
		if err != nil {
			return TokenClaims{}, err
		}
		if !t.IsZero() && t.After(now.Add(v.opts.ClockSkew)) {
			return TokenClaims{}, reject(TokenNotYetValid, "the token's %s is %s, in the future", c.name, t.UTC().Format(time.RFC3339))
		}
	}
	if p.K8s == nil || p.K8s.Pod == nil || p.K8s.Pod.Name == "" || p.K8s.Pod.UID == "" || p.K8s.Namespace == "" || p.K8s.ServiceAccount.Name == "" || p.K8s.ServiceAccount.UID == "" {
		return TokenClaims{}, reject(TokenNotPodBound, "the token is not bound to a pod; use a projected serviceAccountToken volume, not a Secret or an unbound TokenRequest")
	}
	if want := "system:serviceaccount:" + p.K8s.Namespace + ":" + p.K8s.ServiceAccount.Name; p.Subject != want {
		return TokenClaims{}, reject(TokenMalformed, "subject %q does not match the token's namespace and ServiceAccount (%q)", p.Subject, want)
	}
	c := TokenClaims{
		Pod:               BoundPodRef{Namespace: p.K8s.Namespace, Name: p.K8s.Pod.Name, UID: types.UID(p.K8s.Pod.UID)},
		ServiceAccount:    p.K8s.ServiceAccount.Name,
		ServiceAccountUID: types.UID(p.K8s.ServiceAccount.UID),
		Expiry:            exp,
		KeyID:             hdr.Kid,
	}
	if p.K8s.Node != nil {
		c.Node = p.K8s.Node.Name
	}
	return c, nil
}

// decodeSegment decodes one base64url JSON segment of a JWS.
func decodeSegment(seg string, into any) error {
	b, err := base64.RawURLEncoding.DecodeString(seg)
	if err != nil {
		return fmt.Errorf("not base64url: %w", err)
	}
	d := json.NewDecoder(bytes.NewReader(b))
	d.UseNumber()
	if err := d.Decode(into); err != nil {
		return fmt.Errorf("not JSON: %w", err)
	}
	return nil
}

// unixClaim parses a NumericDate claim; a missing optional one is zero.
func unixClaim(n json.Number, name string, required bool) (time.Time, error) {
	if n == "" {
		if required {
			return time.Time{}, reject(TokenMalformed, "the token has no %s claim", name)
		}
		return time.Time{}, nil
	}
	f, err := n.Float64()
	if err != nil {
		return time.Time{}, reject(TokenMalformed, "the token's %s claim %q is not a number", name, n.String())
	}
	return time.Unix(int64(f), 0), nil
}

// verifySignature checks a JWS signature with the algorithms Kubernetes
// signs ServiceAccount tokens with (RS256 for RSA keys, ES256/384/512 for
// ECDSA keys). Anything else, "none" and HMAC included, is refused.
func verifySignature(alg string, key crypto.PublicKey, signed string, sig []byte) error {
	digest := func(h hash.Hash) []byte {
		h.Write([]byte(signed))
		return h.Sum(nil)
	}
	switch k := key.(type) {
	case *rsa.PublicKey:
		if alg != "RS256" {
			return fmt.Errorf("algorithm %q does not match the RSA signing key (RS256)", alg)
		}
		if err := rsa.VerifyPKCS1v15(k, crypto.SHA256, digest(sha256.New()), sig); err != nil {
			return errors.New("the signature does not verify with the API server's key")
		}
		return nil
	case *ecdsa.PublicKey:
		var h hash.Hash
		switch want := ecAlg(k); {
		case alg != want:
			return fmt.Errorf("algorithm %q does not match the ECDSA signing key (%s)", alg, want)
		case alg == "ES256":
			h = sha256.New()
		case alg == "ES384":
			h = sha512.New384()
		default:
			h = sha512.New()
		}
		size := (k.Curve.Params().BitSize + 7) / 8
		if len(sig) != 2*size {
			return fmt.Errorf("an %s signature is %d bytes, not %d", alg, 2*size, len(sig))
		}
		r, s := new(big.Int).SetBytes(sig[:size]), new(big.Int).SetBytes(sig[size:])
		if !ecdsa.Verify(k, digest(h), r, s) {
			return errors.New("the signature does not verify with the API server's key")
		}
		return nil
	default:
		return fmt.Errorf("signing key type %T is not supported", key)
	}
}

// ecAlg is the JWS algorithm of an ECDSA key's curve.
func ecAlg(k *ecdsa.PublicKey) string {
	switch k.Curve.Params().BitSize {
	case 256:
		return "ES256"
	case 384:
		return "ES384"
	default:
		return "ES512"
	}
}
