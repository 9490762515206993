// Package tokensigner signs ServiceAccount tokens the way kube-apiserver
// does (compact JWS, RS256 or ES256, a kid per key, the kubernetes.io
// claims of a pod-bound token) and publishes its keys as a JWKS, so unit
// tests and benchmarks can exercise token verification without an API
// server. Integration tests use the real one.
package tokensigner

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"math/big"
	"time"
)

// Key is one signing key with its kid.
type Key struct {
	// ID is the kid.
	ID string
	// Signer is the private key (*rsa.PrivateKey or *ecdsa.PrivateKey).
	Signer crypto.Signer
}

// NewRSA makes a 2048-bit RSA key, as kube-apiserver's default.
func NewRSA(id string) (Key, error) {
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return Key{}, err
	}
	return Key{ID: id, Signer: k}, nil
}

// NewECDSA makes a P-256 key.
func NewECDSA(id string) (Key, error) {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return Key{}, err
	}
	return Key{ID: id, Signer: k}, nil
}

// Alg is the JWS algorithm the key signs with.
func (k Key) Alg() string {
	if _, ok := k.Signer.(*ecdsa.PrivateKey); ok {
		return "ES256"
	}
	return "RS256"
}

// Claims are a pod-bound token's claims.
type Claims struct {
	Issuer         string
	Audience       []string
	Namespace      string
	ServiceAccount string
	// ServiceAccountUID is the ServiceAccount's UID; "sa-uid" when empty.
	ServiceAccountUID string
	PodName           string
	PodUID            string
	// Node is the kubernetes.io.node claim; empty leaves it out.
	Node string
	// IssuedAt is iat and nbf; Expiry is exp.
	IssuedAt, Expiry time.Time
	// Unbound leaves out the pod claims (a token bound to nothing).
	Unbound bool
}

// Payload is the claims as kube-apiserver writes them.
func (c Claims) Payload() map[string]any {
	saUID := c.ServiceAccountUID
	if saUID == "" {
		saUID = "sa-uid"
	}
	k8s := map[string]any{
		"namespace":      c.Namespace,
		"serviceaccount": map[string]any{"name": c.ServiceAccount, "uid": saUID},
	}
	if !c.Unbound {
		k8s["pod"] = map[string]any{"name": c.PodName, "uid": c.PodUID}
	}
	if c.Node != "" {
		k8s["node"] = map[string]any{"name": c.Node, "uid": "node-uid"}
	}
	return map[string]any{
		"iss":           c.Issuer,
		"sub":           "system:serviceaccount:" + c.Namespace + ":" + c.ServiceAccount,
		"aud":           c.Audience,
		"exp":           c.Expiry.Unix(),
		"iat":           c.IssuedAt.Unix(),
		"nbf":           c.IssuedAt.Unix(),
		"jti":           "jti-" + c.PodUID,
		"kubernetes.io": k8s,
	}
}

// Sign signs c with k.
func (k Key) Sign(c Claims) (string, error) {
	return k.SignRaw(map[string]any{"alg": k.Alg(), "kid": k.ID}, c.Payload())
}

// SignRaw signs any header and payload with k (for malformed tokens);
// the signature uses k's algorithm whatever the header says.
func (k Key) SignRaw(header, payload map[string]any) (string, error) {
	h, err := json.Marshal(header)
	if err != nil {
		return "", err
	}
	p, err := json.Marshal(payload)
	if err != nil {
		return "", err
	}
	signed := b64(h) + "." + b64(p)
	sum := sha256.Sum256([]byte(signed))
	var sig []byte
	switch s := k.Signer.(type) {
	case *rsa.PrivateKey:
		sig, err = rsa.SignPKCS1v15(rand.Reader, s, crypto.SHA256, sum[:])
	case *ecdsa.PrivateKey:
		var r, ss *big.Int
		r, ss, err = ecdsa.Sign(rand.Reader, s, sum[:])
		if err == nil {
			sig = make([]byte, 64)
			r.FillBytes(sig[:32])
			ss.FillBytes(sig[32:])
		}
	default:
		err = fmt.Errorf("unsupported key %T", k.Signer)
	}
	if err != nil {
		return "", err
	}
	return signed + "." + b64(sig), nil
}

// JWKS is the key set as kube-apiserver serves /openid/v1/jwks.
func JWKS(keys ...Key) ([]byte, error) {
	var out []map[string]string
	for _, k := range keys {
		switch pub := k.Signer.Public().(type) {
		case *rsa.PublicKey:
			out = append(out, map[string]string{"use": "sig", "kty": "RSA", "kid": k.ID, "alg": "RS256",
				"n": b64(pub.N.Bytes()), "e": b64(big.NewInt(int64(pub.E)).Bytes())})
		case *ecdsa.PublicKey:
			raw, err := pub.Bytes() // 0x04 || X || Y
			if err != nil {
				return nil, err
			}
			x, y := raw[1:33], raw[33:]
			out = append(out, map[string]string{"use": "sig", "kty": "EC", "kid": k.ID, "alg": "ES256", "crv": "P-256", "x": b64(x), "y": b64(y)})
		}
	}
	return json.Marshal(map[string]any{"keys": out})
}

func b64(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }
